"""ASGI middleware at the HTTP boundary of the front service.

* Upload limit: 413 as soon as Content-Length, or the streamed (chunked) body, passes
  the limit, before BentoML buffers the body.
* CORS for the research prototype's `POST /` (its page is served from another origin).
* Every 4xx reply of ours or BentoML's has the JSON shape {"error": code, "detail": text}.
"""
from __future__ import annotations

import json
import os

DEFAULT_MAX_UPLOAD = 50 * 1024 * 1024       # bytes
CORS_HEADERS = [(b"access-control-allow-origin", b"*"),
                (b"access-control-allow-methods", b"POST, OPTIONS"),
                (b"access-control-allow-headers", b"*"),
                (b"access-control-max-age", b"600")]
ERROR_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed",
               413: "payload_too_large", 415: "unsupported_media_type", 422: "unprocessable"}


def max_upload_bytes() -> int:
    return int(os.environ.get("GENRE_MAX_UPLOAD_BYTES", DEFAULT_MAX_UPLOAD))


class _TooLarge(Exception):
    pass


async def _send_json(send, status: int, body: dict, extra_headers=()) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(data)).encode()), *extra_headers]})
    await send({"type": "http.response.body", "body": data})


class HttpBoundary:
    def __init__(self, app, max_bytes: int | None = None, cors_paths: tuple[str, ...] = ("/",)):
        self.app = app
        self.max_bytes = max_bytes or max_upload_bytes()
        self.cors_paths = cors_paths

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        cors = scope["path"] in self.cors_paths
        extra = CORS_HEADERS if cors else []
        if cors and scope["method"] == "OPTIONS":
            await send({"type": "http.response.start", "status": 204, "headers": list(extra)})
            return await send({"type": "http.response.body", "body": b""})
        limit = self.max_bytes
        too_large = {"error": "payload_too_large",
                     "detail": f"upload exceeds the limit of {limit // (1024 * 1024)} MB"}
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            return await _send_json(send, 413, too_large, extra)
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _TooLarge()
            return message

        started = {"status": 0, "held": None, "body": b""}

        async def shaping_send(message):
            # Hold 4xx replies that are not JSON of our shape, then rewrite them.
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + list(extra)
                started["status"] = message["status"]
                if 400 <= message["status"] < 500:
                    started["held"] = message
                    return
                return await send(message)
            if started["held"] is None:
                return await send(message)
            started["body"] += message.get("body", b"")
            if message.get("more_body"):
                return
            await send_shaped(started["held"], started["body"])

        async def send_shaped(start, body: bytes):
            try:
                parsed = json.loads(body or b"null")
            except ValueError:
                parsed = None
            if isinstance(parsed, dict) and {"error", "detail"} <= parsed.keys():
                await send(start)
                return await send({"type": "http.response.body", "body": body})
            status = start["status"]
            detail = parsed if isinstance(parsed, str) else (
                parsed.get("error") or parsed.get("detail") or json.dumps(parsed)
                if isinstance(parsed, dict) else body.decode(errors="replace").strip())
            await _send_json(send, status, {"error": ERROR_CODES.get(status, "client_error"),
                                            "detail": str(detail) or f"HTTP {status}"}, extra)

        try:
            await self.app(scope, limited_receive, shaping_send)
        except _TooLarge:
            if not started["status"]:
                await _send_json(send, 413, too_large, extra)
