"""ASGI middleware at the HTTP boundary of the front service.

* Upload limit: 413 as soon as Content-Length, or the streamed (chunked) body, passes
  the limit, before BentoML buffers the body.
* CORS for the research prototype's `POST /` (its page is served from another origin).
* Multipart uploads to an API route may carry files only in that route's file field:
  another file field is a 400 naming the right one, before any decoding or inference.
* Every 4xx reply of ours or BentoML's has the JSON shape {"error": code, "detail": text}.
* Drain: once DRAIN.draining is set (SIGTERM, see serving.install_drain_handler) /readyz
  answers 503 and new requests get 503 `shutting_down`; DRAIN.in_flight counts the requests
  being answered, which finish normally.
"""

from __future__ import annotations

import json
import os
import re
import shutil

DEFAULT_MAX_UPLOAD = 50 * 1024 * 1024  # bytes
DEFAULT_DRAIN_SECONDS = 30  # SIGTERM: the longest wait for accepted requests
PROBE_PATHS = ("/readyz", "/livez", "/healthz", "/metrics")
# Requests one replica takes at once (BentoML's max_concurrency: more queue at the platform)
# and the concurrency autoscalers aim at per replica (BentoCloud traffic.concurrency, Knative
# containerConcurrency): the benchmark's 8 users is where one 2-core replica still answers
# within the p95 target. deploy/ reads these (tests/test_deploy.py checks it).
MAX_CONCURRENCY = 64
TARGET_CONCURRENCY = 8
CORS_HEADERS = [
    (b"access-control-allow-origin", b"*"),
    (b"access-control-allow-methods", b"POST, OPTIONS"),
    (b"access-control-allow-headers", b"*"),
    (b"access-control-max-age", b"600"),
]
ERROR_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
}


def max_upload_bytes() -> int:
    return int(os.environ.get("GENRE_MAX_UPLOAD_BYTES", DEFAULT_MAX_UPLOAD))


def drain_seconds() -> float:
    return float(os.environ.get("GENRE_DRAIN_SECONDS", DEFAULT_DRAIN_SECONDS))


class Drain:
    """This process's drain state (one front worker process, one event loop)."""

    def __init__(self) -> None:
        self.draining = False
        self.in_flight = 0


DRAIN = Drain()


def unpooled_request_dirs() -> bool:
    """Remove each request's upload folder when the request ends. BentoML 1.4 keeps emptied
    `bentoml-request-*` folders in a pool (bentoml._internal.context.request_tempdir_pool)
    for reuse until the worker exits, so folders stay in TMPDIR between requests (one per
    request ever in flight at once). Call once in the front's worker; False if that internal
    pool is not there (another BentoML version)."""
    try:
        from bentoml._internal import context

        pool = context.request_tempdir_pool
    except (ImportError, AttributeError):
        return False
    if not hasattr(pool, "release"):
        return False
    pool.release = lambda folder: shutil.rmtree(folder, ignore_errors=True)
    pool.cleanup()
    return True


def _size(n: int) -> str:
    return f"{n / 2**20:g} MB" if n >= 2**20 else f"{n} bytes"


def _part_names(data: bytes, boundary: bytes | None) -> list[bytes]:
    """Names of the file parts whose headers start in data: the regex runs only on the 1 KB
    after each boundary (a regex over the whole upload cost ~30 ms per MB on the event loop)."""
    if not boundary:
        return []
    names, at = [], data.find(boundary)
    while at >= 0:
        names += _FILE_PART.findall(data, at, at + 1024)
        at = data.find(boundary, at + len(boundary))
    return names


_FILE_PART = re.compile(rb'content-disposition:\s*form-data;\s*name="([^"]*)";\s*filename=', re.I)


async def _send_json(send, status: int, body: dict, extra_headers=()) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                *extra_headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


class HttpBoundary:
    def __init__(
        self,
        app,
        max_bytes: int | None = None,
        cors_paths: tuple[str, ...] = ("/",),
        file_fields: dict[str, str] | None = None,
    ):
        self.app = app
        self.max_bytes = max_bytes or max_upload_bytes()
        self.cors_paths = cors_paths
        self.file_fields = file_fields or {}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope["path"] in PROBE_PATHS:
            if DRAIN.draining and scope["path"] == "/readyz":
                return await _send_json(
                    send, 503, {"error": "shutting_down", "detail": "the service is draining"}
                )
            return await self.app(scope, receive, send)
        if DRAIN.draining:
            return await _send_json(
                send,
                503,
                {
                    "error": "shutting_down",
                    "detail": ("the service is shutting down: retry (another replica will answer)"),
                },
                [(b"connection", b"close"), (b"retry-after", b"1")],
            )
        DRAIN.in_flight += 1
        try:
            return await self._handle(scope, receive, send)
        finally:
            DRAIN.in_flight -= 1

    async def _handle(self, scope, receive, send):
        cors = scope["path"] in self.cors_paths
        extra = CORS_HEADERS if cors else []
        if cors and scope["method"] == "OPTIONS":
            await send({"type": "http.response.start", "status": 204, "headers": list(extra)})
            return await send({"type": "http.response.body", "body": b""})
        limit = self.max_bytes
        too_large = {
            "error": "payload_too_large",
            "detail": f"upload exceeds the limit of {_size(limit)}",
        }
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            return await _send_json(send, 413, too_large, extra)
        received, tail = 0, b""
        expected = self.file_fields.get(scope["path"]) if scope["method"] == "POST" else None
        ctype = headers.get(b"content-type", b"").decode("latin-1")
        boundary = None
        if expected is not None and ctype.lower().startswith("multipart/"):
            match = re.search(r'boundary="?([^";]+)"?', ctype)
            if not match:
                return await _send_json(
                    send,
                    400,
                    {"error": "bad_request", "detail": "multipart/form-data without a boundary"},
                    extra,
                )
            boundary = b"--" + match.group(1).encode("latin-1")
        state = {"violation": None, "held": None, "body": b"", "sent": False}

        async def limited_receive():
            # On a violation the app sees a disconnected client; its reply is replaced below
            # (raising here would surface as a 500 from BentoML's endpoint wrapper).
            nonlocal received, tail
            if state["violation"]:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                received += len(chunk)
                if received > limit:
                    state["violation"] = (413, too_large)
                elif (
                    boundary
                    and received == len(chunk)
                    and chunk
                    and not chunk.lstrip(b"\r\n").startswith(boundary[: len(chunk)])
                ):
                    state["violation"] = (
                        400,
                        {"error": "bad_request", "detail": "malformed multipart/form-data body"},
                    )
                elif expected is not None:  # part headers may straddle two chunks
                    for name in _part_names(tail + chunk, boundary):
                        if name.decode(errors="replace") != expected:
                            state["violation"] = (
                                400,
                                {
                                    "error": "missing_file",
                                    "detail": (
                                        "unexpected file field "
                                        f"'{name.decode(errors='replace')}': send "
                                        f"the audio file as multipart/form-data field '{expected}'"
                                    ),
                                },
                            )
                    tail = chunk[-512:]
                if state["violation"]:
                    return {"type": "http.disconnect"}
            return message

        async def shaping_send(message):
            if state["sent"]:
                return
            if state["violation"]:
                state["sent"] = True
                return await _send_json(send, *state["violation"], extra)
            # Hold 4xx replies that are not JSON of our shape, then rewrite them.
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + list(extra)
                if 400 <= message["status"] < 500:
                    state["held"] = message
                    return
                return await send(message)
            if state["held"] is None:
                return await send(message)
            state["body"] += message.get("body", b"")
            if message.get("more_body"):
                return
            await send_shaped(state["held"], state["body"])

        async def send_shaped(start, body: bytes):
            try:
                parsed = json.loads(body or b"null")
            except ValueError:
                parsed = None
            if (
                isinstance(parsed, dict)
                and {"error", "detail"} <= parsed.keys()
                and isinstance(parsed["detail"], str)
            ):
                await send(start)
                return await send({"type": "http.response.body", "body": body})
            status = start["status"]
            if isinstance(parsed, str):
                detail = parsed
            elif isinstance(parsed, dict):
                detail = "; ".join(str(parsed[k]) for k in ("error", "detail") if parsed.get(k))
            else:
                detail = body.decode(errors="replace").strip()
            await _send_json(
                send,
                status,
                {
                    "error": ERROR_CODES.get(status, "client_error"),
                    "detail": str(detail) or f"HTTP {status}",
                },
                extra,
            )

        try:
            await self.app(scope, limited_receive, shaping_send)
        except Exception:
            if not state["violation"]:
                raise
        if state["violation"] and not state["sent"]:
            await _send_json(send, *state["violation"], extra)
