"""The error contract: every code, its HTTP status, the reply body and one exception type.

    from genre_detector.errors import GenreError, error_body, parse_error, status_of
    raise GenreError("unknown_model", "unknown model(s) x; valid names: cnn, crnn")
    exc.status                          # 400, from STATUS
    error_body(exc.code, exc.detail)    # {"error": "unknown_model", "detail": "..."}
    parse_error(reply_bytes)            # ("unknown_model", "...") read back

Every 4xx/5xx reply of the service has the JSON shape {"error": code, "detail": text}: the
service builds it with error_body, the HTTP boundary (http_boundary.py) rewrites BentoML's
and Starlette's own error replies into it with as_error_body, and clients (the --url tagger)
read it back with parse_error. Library code raises ordinary exceptions (GenreError, which is
a ValueError, or the built-in ones); only the `main()`s turn them into exit codes.

Adding a code: one entry in REQUEST_CODES (or AUDIO_REASONS for a decode failure).
"""

from __future__ import annotations

import json
from typing import Any

# Why an upload could not become a waveform (audio.AudioError.reason): the bytes are not
# decodable (415) or decodable but unusable (422).
AUDIO_REASONS = {
    "not_audio": 415,
    "empty": 415,
    "truncated": 415,
    "ffmpeg_missing": 415,
    "too_short": 422,
    "too_long": 422,
    "silent": 422,
    "non_finite": 422,
}
UNDECODABLE = frozenset(r for r, s in AUDIO_REASONS.items() if s == 415)
# The service's and the HTTP boundary's own refusals.
REQUEST_CODES = {
    "bad_request": 400,
    "missing_file": 400,
    "unknown_model": 400,
    "payload_too_large": 413,
    "shutting_down": 503,
    # the catalog (catalog/, serve/catalog_routes.py)
    "consent_required": 400,  # POST /tracks without consent to `search`
    "bad_parameter": 400,  # a query parameter or JSON field out of range (named in detail)
    "unauthorized": 401,  # missing, unknown or revoked API key (with WWW-Authenticate)
    "quota_exceeded": 403,  # an account's quota (watches, ...) is used up: detail names it
    "not_found": 404,  # unknown id, or another account's (never 403: no confirmation)
    "rate_limited": 429,  # a key's (or client's) budget is spent: Retry-After, RateLimit
    "conflict": 409,  # the state forbids it now (redeliver a webhook whose track is gone)
    "db_unavailable": 503,  # the catalog's database cannot be reached or is locked
    "catalog_unavailable": 503,  # the served models carry no search embedding (projection)
}
# The code a reply of BentoML or Starlette gets from its status when the boundary reshapes it
# (any other 4xx: client_error).
HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
}
STATUS = {**{c: s for s, c in HTTP_CODES.items()}, **REQUEST_CODES, **AUDIO_REASONS}
DEFAULT_STATUS = 422  # a code not listed: the request was understood but cannot be served


def status_of(code: str) -> int:
    """The HTTP status of an error code."""
    return STATUS.get(code, DEFAULT_STATUS)


def code_for_status(status: int) -> str:
    """The code of an error reply that came with only a status (BentoML's, Starlette's)."""
    return HTTP_CODES.get(status, "client_error")


def error_body(code: str, detail: str) -> dict:
    """The JSON body of every error reply."""
    return {"error": code, "detail": detail}


class GenreError(ValueError):
    """A request or input that cannot be served: a machine-readable `code`, a sentence for
    people in `detail`, and the HTTP status of the code in `status`."""

    def __init__(self, code: str, detail: str):
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail

    @property
    def status(self) -> int:
        return status_of(self.code)

    def body(self) -> dict:
        return error_body(self.code, self.detail)

    def __reduce__(self):  # survives pickling (process pools, Ray) with its fields
        return type(self), (self.code, self.detail)


_NOT_JSON = object()


def _load(body: bytes | str | None) -> Any:
    try:
        return json.loads(body or b"null")
    except ValueError:
        return _NOT_JSON


def parse_error(body: bytes | str | None) -> tuple[Any, Any]:
    """(code, detail) read back from an error reply's body: what error_body put there. A body
    of another shape gives what it holds under the same keys (BentoML's own replies are
    {"error": message}) and None where it holds nothing; a body that is not a JSON object
    gives (None, None)."""
    parsed = _load(body)
    if not isinstance(parsed, dict):
        return None, None
    return parsed.get("error"), parsed.get("detail")


def is_error_body(body: bytes | str | None) -> bool:
    """Whether a reply body already has the shape error_body builds."""
    parsed = _load(body)
    return (
        isinstance(parsed, dict)
        and {"error", "detail"} <= parsed.keys()
        and isinstance(parsed["detail"], str)
    )


def as_error_body(status: int, body: bytes) -> dict | None:
    """An error reply's body in our shape, or None when it has it already. Any other body
    (BentoML's {"error": message}, Starlette's {"detail": text}, a JSON string, plain text)
    gets the code of its status and its text as the detail."""
    if is_error_body(body):
        return None
    parsed = _load(body)
    if isinstance(parsed, str):
        detail = parsed
    elif isinstance(parsed, dict):
        detail = "; ".join(str(parsed[k]) for k in ("error", "detail") if parsed.get(k))
    else:
        detail = body.decode(errors="replace").strip()
    return error_body(code_for_status(status), str(detail) or f"HTTP {status}")
