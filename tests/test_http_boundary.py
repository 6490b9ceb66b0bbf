"""genre_detector.serve.http_boundary.HttpBoundary driven directly as ASGI (no server)."""

from __future__ import annotations

import asyncio
import json
import re

import pytest

from genre_detector.errors import HTTP_CODES
from genre_detector.serve.http_boundary import CORS_HEADERS, HttpBoundary

LIMIT = 1000
ACAO = b"access-control-allow-origin"


# ----------------------------------------------------------------------------- harness
class FakeApp:
    """Inner ASGI app: reads the whole body, then sends a canned reply."""

    def __init__(
        self,
        status: int = 200,
        body: bytes = b'{"ok": true}',
        content_type: bytes = b"application/json",
        chunks: int = 1,
    ):
        self.status, self.body, self.content_type, self.chunks = status, body, content_type, chunks
        self.calls = 0
        self.received = b""

    async def __call__(self, scope, receive, send):
        self.calls += 1
        if scope["type"] == "http":
            while True:
                message = await receive()
                self.received += message.get("body", b"")
                if not message.get("more_body"):
                    break
        await send(
            {
                "type": "http.response.start",
                "status": self.status,
                "headers": [
                    (b"content-type", self.content_type),
                    (b"content-length", str(len(self.body)).encode()),
                ],
            }
        )
        step = max(1, -(-len(self.body) // self.chunks))
        parts = [self.body[i : i + step] for i in range(0, len(self.body), step)] or [b""]
        for i, part in enumerate(parts):
            await send(
                {"type": "http.response.body", "body": part, "more_body": i < len(parts) - 1}
            )


def _scope(method: str = "POST", path: str = "/predict", headers=()) -> dict:
    return {"type": "http", "method": method, "path": path, "headers": list(headers)}


def _run(app, scope, body_chunks=(b"",)):
    """Drive the ASGI app; return (status, headers dict, body bytes, sent messages)."""
    chunks = list(body_chunks)
    sent = []

    async def receive():
        if chunks:
            part = chunks.pop(0)
            return {"type": "http.request", "body": part, "more_body": bool(chunks)}
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    starts = [m for m in sent if m["type"] == "http.response.start"]
    assert len(starts) == 1, sent
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    headers = {}
    for k, v in starts[0]["headers"]:
        headers.setdefault(k.lower(), v)
    return starts[0]["status"], headers, body, sent


def _json(body: bytes) -> dict:
    return json.loads(body)


# ----------------------------------------------------------------------------- upload limit
def test_content_length_over_the_limit_is_413_without_calling_the_app():
    inner = FakeApp()
    app = HttpBoundary(inner, max_bytes=LIMIT)
    status, headers, body, _ = _run(
        app, _scope(headers=[(b"content-length", b"1001")]), [b"x" * 1001]
    )
    assert status == 413
    assert inner.calls == 0
    assert headers[b"content-type"] == b"application/json"
    assert int(headers[b"content-length"]) == len(body)
    reply = _json(body)
    assert reply["error"] == "payload_too_large"
    assert isinstance(reply["detail"], str) and reply["detail"]


def test_413_detail_names_the_default_limit_in_mb():
    app = HttpBoundary(FakeApp(), max_bytes=50 * 1024 * 1024)
    status, _, body, _ = _run(app, _scope(headers=[(b"content-length", b"60000000")]))
    assert status == 413
    assert "50 MB" in _json(body)["detail"]


def test_413_detail_names_a_small_limit_correctly():
    app = HttpBoundary(FakeApp(), max_bytes=LIMIT)
    _, _, body, _ = _run(app, _scope(headers=[(b"content-length", b"5000")]))
    detail = _json(body)["detail"]
    assert re.search(r"\b0 MB", detail) is None, detail


def test_content_length_at_the_limit_passes():
    inner = FakeApp()
    app = HttpBoundary(inner, max_bytes=LIMIT)
    status, _, body, _ = _run(app, _scope(headers=[(b"content-length", b"1000")]), [b"x" * 1000])
    assert status == 200 and _json(body) == {"ok": True}
    assert inner.calls == 1 and inner.received == b"x" * 1000


def test_chunked_body_over_the_limit_is_413():
    inner = FakeApp()
    app = HttpBoundary(inner, max_bytes=LIMIT)
    chunks = [b"x" * 400] * 5  # 2000 bytes, no content-length
    status, _, body, sent = _run(app, _scope(headers=[(b"transfer-encoding", b"chunked")]), chunks)
    assert status == 413
    assert _json(body)["error"] == "payload_too_large"
    assert inner.calls == 1
    assert len(inner.received) <= LIMIT  # the app never saw the excess
    # nothing of the inner app's reply was sent
    assert all(m.get("body") != b'{"ok": true}' for m in sent)


def test_chunked_body_under_the_limit_passes():
    inner = FakeApp()
    app = HttpBoundary(inner, max_bytes=LIMIT)
    status, _, _, _ = _run(app, _scope(), [b"x" * 300] * 3)
    assert status == 200 and inner.received == b"x" * 900


def test_lying_content_length_is_caught_while_streaming():
    inner = FakeApp()
    app = HttpBoundary(inner, max_bytes=LIMIT)
    status, _, _, _ = _run(app, _scope(headers=[(b"content-length", b"10")]), [b"x" * 600] * 2)
    assert status == 413


def test_limit_from_the_environment(monkeypatch):
    monkeypatch.setenv("GENRE_MAX_UPLOAD_BYTES", "2048")
    app = HttpBoundary(FakeApp())
    assert app.max_bytes == 2048
    status, _, _, _ = _run(app, _scope(headers=[(b"content-length", b"4096")]))
    assert status == 413


# ----------------------------------------------------------------------------- CORS
def test_options_preflight_on_root():
    inner = FakeApp()
    app = HttpBoundary(inner, max_bytes=LIMIT)
    status, headers, body, _ = _run(app, _scope("OPTIONS", "/"))
    assert status == 204
    assert body == b""
    assert inner.calls == 0
    assert headers[ACAO] == b"*"
    assert b"POST" in headers[b"access-control-allow-methods"]


def test_post_root_replies_carry_cors():
    app = HttpBoundary(FakeApp(), max_bytes=LIMIT)
    status, headers, body, _ = _run(app, _scope("POST", "/"), [b"abc"])
    assert status == 200 and _json(body) == {"ok": True}
    assert headers[ACAO] == b"*"
    for k, v in CORS_HEADERS:
        assert headers[k] == v


def test_cors_also_on_root_errors():
    app = HttpBoundary(
        FakeApp(status=415, body=b'{"error": "not_audio", "detail": "x"}'), max_bytes=LIMIT
    )
    status, headers, _, _ = _run(app, _scope("POST", "/"))
    assert status == 415 and headers[ACAO] == b"*"
    status, headers, _, _ = _run(app, _scope("POST", "/", [(b"content-length", b"5000")]))
    assert status == 413 and headers[ACAO] == b"*"


@pytest.mark.parametrize("path", ["/predict", "/models", "/ui/index.html", "/healthz"])
def test_other_paths_have_no_cors(path):
    inner = FakeApp()
    app = HttpBoundary(inner, max_bytes=LIMIT)
    _, headers, _, _ = _run(app, _scope("POST", path))
    assert ACAO not in headers
    # OPTIONS elsewhere is the inner app's business
    _, headers, _, _ = _run(app, _scope("OPTIONS", path))
    assert ACAO not in headers
    assert inner.calls == 2


# ----------------------------------------------------------------------------- 4xx shaping
@pytest.mark.parametrize(
    "status,body,content_type",
    [
        (400, b"Bad Request: missing field", b"text/plain"),
        (400, b'{"message": "invalid multipart"}', b"application/json"),
        (422, b'{"detail": [{"loc": ["body"], "msg": "field required"}]}', b"application/json"),
        (404, b"", b"text/plain"),
        (405, b'"Method Not Allowed"', b"application/json"),
        (400, b'{"error": "only error"}', b"application/json"),
        (400, b"[1, 2, 3]", b"application/json"),
    ],
)
def test_foreign_4xx_bodies_are_rewritten(status, body, content_type):
    app = HttpBoundary(
        FakeApp(status=status, body=body, content_type=content_type), max_bytes=LIMIT
    )
    got_status, headers, got_body, _ = _run(app, _scope())
    assert got_status == status
    assert headers[b"content-type"] == b"application/json"
    assert int(headers[b"content-length"]) == len(got_body)
    reply = _json(got_body)
    assert set(reply) == {"error", "detail"}
    assert reply["error"] == HTTP_CODES.get(status, "client_error")
    assert isinstance(reply["detail"], str) and reply["detail"]


def test_rewritten_detail_keeps_the_text():
    app = HttpBoundary(
        FakeApp(status=400, body=b"Bad Request: missing field", content_type=b"text/plain"),
        max_bytes=LIMIT,
    )
    _, _, body, _ = _run(app, _scope())
    assert _json(body) == {"error": "bad_request", "detail": "Bad Request: missing field"}


def test_multi_part_foreign_4xx_body_is_joined_before_rewriting():
    text = b"Unsupported Media Type: " + b"y" * 200
    app = HttpBoundary(
        FakeApp(status=415, body=text, content_type=b"text/plain", chunks=4), max_bytes=LIMIT
    )
    status, _, body, sent = _run(app, _scope())
    assert status == 415
    assert _json(body) == {"error": "unsupported_media_type", "detail": text.decode()}
    assert len([m for m in sent if m["type"] == "http.response.body"]) == 1


@pytest.mark.parametrize("status", [400, 413, 415, 422])
def test_our_own_4xx_bodies_pass_through_unchanged(status):
    own = json.dumps(
        {"error": "too_short", "detail": "1.00 s of audio is too short", "extra": 1}
    ).encode()
    app = HttpBoundary(FakeApp(status=status, body=own, chunks=3), max_bytes=LIMIT)
    got_status, headers, body, _ = _run(app, _scope())
    assert got_status == status
    assert body == own
    assert int(headers[b"content-length"]) == len(own)


@pytest.mark.parametrize(
    "body,content_type",
    [
        (b'{"ok": true}', b"application/json"),
        (b"<html>hello</html>", b"text/html"),
        (b"x" * 5000, b"application/octet-stream"),  # replies are not limited, uploads are
    ],
)
def test_200_replies_pass_through_unchanged(body, content_type):
    app = HttpBoundary(FakeApp(body=body, content_type=content_type, chunks=2), max_bytes=LIMIT)
    status, headers, got, sent = _run(app, _scope())
    assert status == 200 and got == body
    assert headers[b"content-type"] == content_type
    assert len([m for m in sent if m["type"] == "http.response.body"]) == 2


def test_5xx_replies_pass_through_unchanged():
    app = HttpBoundary(
        FakeApp(status=500, body=b"boom", content_type=b"text/plain"), max_bytes=LIMIT
    )
    status, _, body, _ = _run(app, _scope())
    assert status == 500 and body == b"boom"


def test_non_http_scopes_go_straight_to_the_app():
    seen = []

    async def inner(scope, receive, send):
        seen.append(scope["type"])

    async def noop(*_):
        return {"type": "lifespan.startup"}

    asyncio.run(HttpBoundary(inner, max_bytes=LIMIT)({"type": "lifespan"}, noop, noop))
    assert seen == ["lifespan"]
