"""ASGI middleware at the HTTP boundary of the front service.

* Upload limit: 413 as soon as Content-Length, or the streamed (chunked) body, passes
  the limit, before BentoML buffers the body.
* CORS for the research prototype's `POST /` (its page is served from another origin).
* Multipart uploads to an API route may carry files only in that route's file field:
  another file field is a 400 naming the right one, before any decoding or inference.
* Every 4xx reply of ours or BentoML's has the JSON shape {"error": code, "detail": text}
  (codes, statuses and the body: errors.py).
* Drain: once DRAIN.draining is set (SIGTERM, see serve.drain.install_drain_handler) /readyz
  answers 503 and new requests get 503 `shutting_down`; DRAIN.in_flight counts the requests
  being answered, which finish normally.
"""

from __future__ import annotations

import json
import re

from genre_detector.config import Settings, settings
from genre_detector.errors import as_error_body, error_body, status_of

DEFAULT_DRAIN_SECONDS = Settings.drain_seconds  # SIGTERM: the longest wait for requests
PROBE_PATHS = ("/readyz", "/livez", "/healthz", "/metrics")
# Requests one replica takes at once (BentoML's max_concurrency: more queue at the platform)
# and the concurrency autoscalers aim at per replica (BentoCloud traffic.concurrency, Knative
# containerConcurrency): the benchmark's 8 users is where one 2-core replica still answers
# within the p95 target. deploy/ reads these (tests/test_deploy.py checks it).
MAX_CONCURRENCY = 64
TARGET_CONCURRENCY = 8
CORS_PATHS = ("/",)  # the research's React page posts here from another origin
CORS_HEADERS = [
    (b"access-control-allow-origin", b"*"),
    (b"access-control-allow-methods", b"POST, OPTIONS"),
    (b"access-control-allow-headers", b"*"),
    (b"access-control-max-age", b"600"),
]


def max_upload_bytes() -> int:
    return settings().max_upload_bytes


def drain_seconds() -> float:
    return settings().drain_seconds


class Drain:
    """This process's drain state (one front worker process, one event loop)."""

    def __init__(self) -> None:
        self.draining = False
        self.in_flight = 0


DRAIN = Drain()


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


async def _send_error(send, code: str, detail: str, extra_headers=()) -> None:
    await _send_json(send, status_of(code), error_body(code, detail), extra_headers)


def _violation(code: str, detail: str) -> tuple[int, dict]:
    return status_of(code), error_body(code, detail)


class UploadCheck:
    """The checks on one request body, chunk by chunk: the size limit and, for an API
    route's multipart upload, the boundary and the name of every file field."""

    def __init__(self, limit: int, expected: str | None, boundary: bytes | None):
        self.limit, self.expected, self.boundary = limit, expected, boundary
        self.received, self.tail = 0, b""

    def too_large(self) -> tuple[int, dict]:
        return _violation("payload_too_large", f"upload exceeds the limit of {_size(self.limit)}")

    def check(self, chunk: bytes) -> tuple[int, dict] | None:
        """The (status, body) to refuse the request with, or None while the body is fine."""
        self.received += len(chunk)
        if self.received > self.limit:
            return self.too_large()
        boundary, expected = self.boundary, self.expected
        if (
            boundary
            and self.received == len(chunk)
            and chunk
            and not chunk.lstrip(b"\r\n").startswith(boundary[: len(chunk)])
        ):
            return _violation("bad_request", "malformed multipart/form-data body")
        if expected is None:
            return None
        violation = None
        for name in _part_names(self.tail + chunk, boundary):  # headers may straddle chunks
            if name.decode(errors="replace") != expected:
                violation = _violation(
                    "missing_file",
                    f"unexpected file field '{name.decode(errors='replace')}': send "
                    f"the audio file as multipart/form-data field '{expected}'",
                )
        self.tail = chunk[-512:]
        return violation


class Exchange:
    """One request through the boundary: `receive` feeds the body to an UploadCheck, `send`
    adds the CORS headers and gives every 4xx reply the shape {"error": code, "detail": text}
    (a refusal replaces whatever the app answers)."""

    def __init__(self, receive, send, upload: UploadCheck, extra_headers):
        self._receive, self._send, self.upload, self.extra = receive, send, upload, extra_headers
        self.violation: tuple[int, dict] | None = None
        self.held, self.body, self.sent = None, b"", False

    async def receive(self):
        # On a violation the app sees a disconnected client; its reply is replaced in send
        # (raising here would surface as a 500 from BentoML's endpoint wrapper).
        if self.violation:
            return {"type": "http.disconnect"}
        message = await self._receive()
        if message["type"] == "http.request":
            self.violation = self.upload.check(message.get("body", b""))
            if self.violation:
                return {"type": "http.disconnect"}
        return message

    async def send(self, message):
        if self.sent:
            return
        if self.violation:
            return await self.refuse()
        # Hold 4xx replies that are not JSON of our shape, then rewrite them.
        if message["type"] == "http.response.start":
            message["headers"] = list(message.get("headers", [])) + list(self.extra)
            if 400 <= message["status"] < 500:
                self.held = message
                return
            return await self._send(message)
        if self.held is None:
            return await self._send(message)
        self.body += message.get("body", b"")
        if message.get("more_body"):
            return
        await self._send_shaped(self.held, self.body)

    async def refuse(self) -> None:
        """Send the violation's reply (once)."""
        if not self.sent:
            self.sent = True
            await _send_json(self._send, *self.violation, self.extra)

    async def _send_shaped(self, start, body: bytes) -> None:
        shaped = as_error_body(start["status"], body)
        if shaped is None:  # already {"error": code, "detail": text}
            await self._send(start)
            return await self._send({"type": "http.response.body", "body": body})
        await _send_json(self._send, start["status"], shaped, self.extra)


class HttpBoundary:
    def __init__(
        self,
        app,
        max_bytes: int | None = None,
        cors_paths: tuple[str, ...] = CORS_PATHS,
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
            return await self._probe(scope, receive, send)
        if DRAIN.draining:
            return await _send_error(
                send,
                "shutting_down",
                "the service is shutting down: retry (another replica will answer)",
                [(b"connection", b"close"), (b"retry-after", b"1")],
            )
        DRAIN.in_flight += 1
        try:
            return await self._handle(scope, receive, send)
        finally:
            DRAIN.in_flight -= 1

    async def _probe(self, scope, receive, send):
        """Health probes go straight to the app, except /readyz while draining."""
        if DRAIN.draining and scope["path"] == "/readyz":
            return await _send_error(send, "shutting_down", "the service is draining")
        return await self.app(scope, receive, send)

    async def _handle(self, scope, receive, send):
        cors = scope["path"] in self.cors_paths
        extra = CORS_HEADERS if cors else []
        if cors and scope["method"] == "OPTIONS":
            await send({"type": "http.response.start", "status": 204, "headers": list(extra)})
            return await send({"type": "http.response.body", "body": b""})
        headers = dict(scope.get("headers") or [])
        expected = self.file_fields.get(scope["path"]) if scope["method"] == "POST" else None
        upload = UploadCheck(self.max_bytes, expected, None)
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await _send_json(send, *upload.too_large(), extra)
        ctype = headers.get(b"content-type", b"").decode("latin-1")
        if expected is not None and ctype.lower().startswith("multipart/"):
            match = re.search(r'boundary="?([^";]+)"?', ctype)
            if not match:
                return await _send_error(
                    send, "bad_request", "multipart/form-data without a boundary", extra
                )
            upload.boundary = b"--" + match.group(1).encode("latin-1")
        exchange = Exchange(receive, send, upload, extra)
        try:
            await self.app(scope, exchange.receive, exchange.send)
        except Exception:
            if not exchange.violation:
                raise
        if exchange.violation:
            await exchange.refuse()
