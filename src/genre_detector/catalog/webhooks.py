"""Webhooks by the Standard Webhooks specification (the `standardwebhooks` package signs):
secrets, URL safety, signing with one or two secrets, and the retry schedule.

    secret = new_secret()                       # "whsec_...", shown once to the subscriber
    check_url("https://example.com/hook")       # GenreError unless https to a public address
    headers = sign_headers([secret], msg_id, body)   # webhook-id, -timestamp, -signature

A receiver verifies with `standardwebhooks.Webhook(secret).verify(body, headers)`: an HMAC-
SHA256 over "id.timestamp.body"; during a rotation both secrets sign (two `v1,` signatures).
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import random
import secrets
import socket
from urllib.parse import urlsplit

from genre_detector.errors import GenreError

# Seconds before attempt 1, 2, ...: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h; then the
# delivery has failed. Multiplied by GENRE_WEBHOOK_BACKOFF_SCALE, each delay +-10 % jitter.
SCHEDULE_S = (0, 5, 300, 1800, 7200, 18000, 36000)
JITTER = 0.1
RESPONSE_HEAD = 1024  # bytes of a reply kept with each attempt
MAX_URL = 2000


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def next_delay(attempts_made: int, scale: float = 1.0, rng=random) -> float | None:
    """Seconds until the next attempt after `attempts_made` failed ones; None: give up."""
    if attempts_made >= len(SCHEDULE_S):
        return None
    base = SCHEDULE_S[attempts_made] * scale
    return base * (1 + rng.uniform(-JITTER, JITTER))


def retry_after(value: str | None, now: dt.datetime | None = None) -> float | None:
    """Seconds a Retry-After header asks for (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    now = now or dt.datetime.now(dt.UTC)
    return max(0.0, (when - now).total_seconds())


def _addresses(host: str) -> list[ipaddress._BaseAddress]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        detail = f"webhook_url: {host!r} does not resolve ({exc})"
        raise GenreError("bad_parameter", detail) from None
    return [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]


def check_url(url: str, allow_private: bool = False) -> str:
    """The URL when a webhook may be sent to it: https to a host whose every address is
    public. With allow_private (GENRE_WEBHOOK_ALLOW_PRIVATE=1: tests, local development)
    http and loopback/private addresses are allowed too. Called when a watch is saved and
    again before every delivery (a name may resolve elsewhere later: DNS rebinding)."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL:
        raise GenreError("bad_parameter", "webhook_url: an https:// URL")
    parts = urlsplit(url)
    schemes = {"https", "http"} if allow_private else {"https"}
    if parts.scheme not in schemes or not parts.hostname:
        raise GenreError("bad_parameter", f"webhook_url: must be https://, not {url!r}")
    if parts.username or parts.password:
        raise GenreError("bad_parameter", "webhook_url: no credentials in the URL")
    if not allow_private:
        for addr in _addresses(parts.hostname):
            if not addr.is_global:
                raise GenreError(
                    "bad_parameter",
                    f"webhook_url: {parts.hostname} is a private or loopback address ({addr})",
                )
    return url


def sign_headers(secrets_: list[str], msg_id: str, body: str, when=None) -> dict:
    """The three Standard Webhooks headers; one `v1,` signature per secret."""
    from standardwebhooks import Webhook

    when = when or dt.datetime.now(dt.UTC)
    signatures = " ".join(Webhook(s).sign(msg_id, when, body) for s in secrets_)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": signatures,
        "content-type": "application/json",
    }
