"""genre_detector.errors: codes and their HTTP status, the body shape, reading bodies back,
and the --url tagger's retries (urllib3 Retry) against a small local HTTP server."""

from __future__ import annotations

import json
import pickle
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from genre_detector.audio.decode import AudioError
from genre_detector.batch.tagger import RemoteEngine
from genre_detector.errors import (
    AUDIO_REASONS,
    UNDECODABLE,
    GenreError,
    as_error_body,
    code_for_status,
    error_body,
    is_error_body,
    parse_error,
    status_of,
)


@pytest.mark.parametrize(
    "code, status",
    [
        ("missing_file", 400),
        ("unknown_model", 400),
        ("bad_request", 400),
        ("not_found", 404),
        ("method_not_allowed", 405),
        ("payload_too_large", 413),
        ("unsupported_media_type", 415),
        ("unprocessable", 422),
        ("shutting_down", 503),
        ("not_audio", 415),
        ("empty", 415),
        ("truncated", 415),
        ("ffmpeg_missing", 415),
        ("too_short", 422),
        ("too_long", 422),
        ("silent", 422),
        ("non_finite", 422),
        ("some_new_reason", 422),
    ],
)
def test_status_of_each_code(code, status):
    assert status_of(code) == status == GenreError(code, "x").status


def test_audio_error_keeps_its_fields_and_status():
    assert (
        UNDECODABLE
        == AudioError.UNDECODABLE
        == {"not_audio", "empty", "truncated", "ffmpeg_missing"}
    )
    for reason in AUDIO_REASONS:
        exc = AudioError(reason, "the detail")
        assert isinstance(exc, ValueError) and isinstance(exc, GenreError)
        assert (exc.reason, exc.code, exc.detail) == (reason, reason, "the detail")
        assert str(exc) == f"{reason}: the detail"
        assert exc.status == (415 if reason in AudioError.UNDECODABLE else 422)
        back = pickle.loads(pickle.dumps(exc))
        assert type(back) is AudioError and (back.reason, back.detail) == (reason, "the detail")


def test_status_to_code_for_foreign_replies():
    assert code_for_status(404) == "not_found" and code_for_status(405) == "method_not_allowed"
    assert code_for_status(418) == "client_error"


def test_body_shape_and_parser_round_trip():
    body = error_body("unknown_model", "unknown model(s) x")
    assert body == {"error": "unknown_model", "detail": "unknown model(s) x"}
    assert GenreError("unknown_model", "unknown model(s) x").body() == body
    raw = json.dumps(body).encode()
    assert parse_error(raw) == ("unknown_model", "unknown model(s) x")
    assert parse_error(raw.decode()) == ("unknown_model", "unknown model(s) x")
    assert is_error_body(raw) and as_error_body(400, raw) is None


@pytest.mark.parametrize(
    "body, parsed",
    [
        (
            b'{"error": "An unexpected error has occurred"}',
            ("An unexpected error has occurred", None),
        ),
        (b'{"detail": "Not Found"}', (None, "Not Found")),
        (b'"just a string"', (None, None)),
        (b"<html>oops</html>", (None, None)),
        (b"", (None, None)),
        (b'[{"error": "x"}]', (None, None)),
    ],
)
def test_parser_on_other_bodies(body, parsed):
    assert parse_error(body) == parsed
    assert not is_error_body(body)


@pytest.mark.parametrize(
    "status, body, want",
    [
        (404, b'{"detail": "Not Found"}', {"error": "not_found", "detail": "Not Found"}),
        (400, b'{"error": "bad", "detail": [1]}', {"error": "bad_request", "detail": "bad; [1]"}),
        (
            405,
            b'"Method Not Allowed"',
            {"error": "method_not_allowed", "detail": "Method Not Allowed"},
        ),
        (422, b" plain text \n", {"error": "unprocessable", "detail": "plain text"}),
        (418, b"", {"error": "client_error", "detail": "HTTP 418"}),
        (400, b'[{"error": "x"}]', {"error": "bad_request", "detail": '[{"error": "x"}]'}),
    ],
)
def test_foreign_bodies_are_reshaped(status, body, want):
    assert as_error_body(status, body) == want


# ------------------------------------------------------------------ --url retries


class _Service:
    """GET /models and POST /predict; `script` holds the replies to give before a 200."""

    REPLY = {
        "duration_s": 3.0,
        "n_windows": 1,
        "models": {"cnn": {"top_genre": "rock", "top_probability": 0.9}},
        "ensemble": {"top_genre": "rock", "top_probability": 0.9, "probabilities": {"rock": 0.9}},
        "timeline": [],
        "model_tags": {"cnn": "cnn:1"},
    }

    def __init__(self):
        self.script: list[tuple[int, dict, bytes]] = []
        self.posts: list[float] = []
        svc = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status, headers, body):
                self.send_response(status)
                for k, v in {"Content-Length": str(len(body)), **headers}.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                info = {"labels": ["rock"], "models": {"cnn": {"tag": "cnn:1"}}}
                self._send(200, {}, json.dumps(info).encode())

            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                svc.posts.append(time.monotonic())
                if svc.script:
                    return self._send(*svc.script.pop(0))
                self._send(200, {}, json.dumps(svc.REPLY).encode())

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def remote(tmp_path):
    svc = _Service()
    clip = tmp_path / "a.wav"
    clip.write_bytes(b"RIFF....")
    engine = RemoteEngine([svc.url], per_url=1, timeout=10, backoff=0.01)
    yield svc, engine, str(clip)
    engine.close()
    svc.close()


def _draining(retry_after: str) -> tuple[int, dict, bytes]:
    body = json.dumps(error_body("shutting_down", "the service is shutting down: retry"))
    return 503, {"Retry-After": retry_after}, body.encode()


def test_remote_retries_5xx_and_honours_retry_after(remote):
    svc, engine, clip = remote
    svc.script = [_draining("1"), (502, {}, b"bad gateway")]
    row = engine._post(svc.url, clip)
    assert row["error"] == "" and row["cnn_genre"] == "rock" and len(svc.posts) == 3
    assert svc.posts[1] - svc.posts[0] >= 0.9  # the 503's Retry-After: 1 was honoured


def test_remote_gives_up_after_the_retries_with_the_last_reply(remote):
    svc, engine, clip = remote
    svc.script = [_draining("0")] * 5
    row = engine._post(svc.url, clip)
    assert row["error"] == "shutting_down: the service is shutting down: retry"
    assert len(svc.posts) == 4  # the first try and 3 retries


def test_remote_does_not_retry_4xx_or_500(remote):
    svc, engine, clip = remote
    body = json.dumps(error_body("not_audio", "the uploaded data is not audio")).encode()
    svc.script = [(415, {}, body)]
    assert engine._post(svc.url, clip)["error"] == "not_audio: the uploaded data is not audio"
    bentoml_500 = b'{"error": "An unexpected error has occurred, please check the server log."}'
    svc.script = [(500, {}, bentoml_500)]
    row = engine._post(svc.url, clip)
    assert row["error"].startswith("An unexpected error has occurred") and len(svc.posts) == 2
    svc.script = [(500, {}, b"")]
    assert engine._post(svc.url, clip)["error"] == "http_500: " and len(svc.posts) == 3


def test_remote_unreachable_and_startup_errors_are_value_errors(remote, tmp_path):
    svc, engine, clip = remote
    svc.close()
    row = engine._post(svc.url, clip)
    assert row["error"].startswith(f"unreachable: {svc.url}:")
    with pytest.raises(ValueError, match="cannot read the models of the --url services"):
        RemoteEngine([svc.url])
