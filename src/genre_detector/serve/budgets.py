"""Request budgets: token buckets per API key (search, uploads, watch changes) and per client
address (keyless POST /similar, /predict), kept in this process's memory.

    verdict = BUDGETS.take("search", key_id)      # a token, if one is left
    verdict.ok, verdict.headers()                 # RateLimit-Policy / RateLimit (+ Retry-After)
    BUDGETS.peek("search", key_id)                # what is left, for GET /me

A bucket holds `per_min` tokens (the burst) and refills at per_min / 60 per second. Buckets
are in memory per replica, never in the catalog, so a search costs no database write: with
N replicas a key can use up to N times its budget at once (requests are spread by the
platform, so in practice close to one). A store built for counters (Redis) would make the
bound exact; the service has none today. Quotas (tracks, watches) are counted in the catalog.

Hand-written rather than a library: the headers need a bucket's level and its time to the
next token, which the rate-limit libraries at hand (pyrate-limiter, limits) do not expose in
their public APIs; the bucket itself is a few lines.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from dataclasses import dataclass

from genre_detector.config import settings
from genre_detector.errors import GenreError

WINDOW_S = 60
MAX_BUCKETS = 100_000  # past this, full (idle) buckets are dropped: they carry nothing


def per_minute(name: str) -> int:
    """The budget of one bucket kind, from config.Settings (0: unlimited)."""
    s = settings()
    return {
        "search": s.search_per_min,
        "uploads": s.writes_per_min,  # two buckets of one size
        "watch_changes": s.writes_per_min,
        "anonymous": s.anonymous_per_min,
        "predict": s.predict_per_min,
    }[name]


@dataclass(frozen=True)
class Verdict:
    name: str
    ok: bool
    limit: int  # tokens per window (0: unlimited)
    remaining: int
    reset_s: int  # seconds until the bucket is full again
    retry_after_s: int  # seconds until the next token (0 when one is left)

    def headers(self) -> dict:
        """The IETF draft's fields (draft-ietf-httpapi-ratelimit-headers), plus Retry-After
        on a refusal."""
        if not self.limit:
            return {}
        out = {
            "RateLimit-Policy": f'"{self.name}";q={self.limit};w={WINDOW_S}',
            "RateLimit": f'"{self.name}";r={self.remaining};t={self.reset_s}',
        }
        if not self.ok:
            out["Retry-After"] = str(self.retry_after_s)
        return out

    def error(self) -> GenreError:
        return RateLimited(self)

    def as_dict(self) -> dict:
        return {
            "limit": self.limit or None,
            "window_s": WINDOW_S,
            "remaining": self.remaining if self.limit else None,
            "reset_s": self.reset_s,
        }


class RateLimited(GenreError):
    def __init__(self, verdict: Verdict):
        super().__init__(
            "rate_limited",
            f"{verdict.name}: {verdict.limit} per {WINDOW_S} s; "
            f"try again in {verdict.retry_after_s} s",
        )
        self.verdict = verdict


class Budgets:
    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}  # -> (tokens, at)

    def _level(self, name: str, subject: str, limit: int, now: float) -> float:
        tokens, at = self._buckets.get((name, subject), (float(limit), now))
        return min(float(limit), tokens + (now - at) * limit / WINDOW_S)

    def _verdict(self, name: str, ok: bool, limit: int, tokens: float) -> Verdict:
        rate = limit / WINDOW_S
        return Verdict(
            name,
            ok,
            limit,
            int(tokens),
            math.ceil((limit - tokens) / rate),
            0 if tokens >= 1 else max(1, math.ceil((1 - tokens) / rate)),
        )

    def take(self, name: str, subject: str) -> Verdict:
        """One token of `subject`'s bucket `name`, if there is one."""
        limit = per_minute(name)
        if limit <= 0:
            return Verdict(name, True, 0, 0, 0, 0)
        with self._lock:
            now = self.clock()
            tokens = self._level(name, subject, limit, now)
            ok = tokens >= 1
            if ok:
                tokens -= 1
            if len(self._buckets) >= MAX_BUCKETS:
                self._prune(now)
            self._buckets[(name, subject)] = (tokens, now)
        return self._verdict(name, ok, limit, tokens)

    def peek(self, name: str, subject: str) -> Verdict:
        limit = per_minute(name)
        if limit <= 0:
            return Verdict(name, True, 0, 0, 0, 0)
        with self._lock:
            tokens = self._level(name, subject, limit, self.clock())
        return self._verdict(name, tokens >= 1, limit, tokens)

    def _prune(self, now: float) -> None:
        for (name, subject), (tokens, at) in list(self._buckets.items()):
            limit = per_minute(name)
            if limit <= 0 or tokens + (now - at) * limit / WINDOW_S >= limit:
                del self._buckets[(name, subject)]


BUDGETS = Budgets()


def client_address(scope) -> str:
    """The client of a request: the peer, or, when the peer is a trusted proxy
    (GENRE_TRUSTED_PROXIES: behind Knative every request comes from the queue-proxy), the
    first hop of its X-Forwarded-For."""
    peer = (scope.get("client") or ("unknown", 0))[0]
    proxies = settings().trusted_proxies
    if not proxies or not _is_trusted(peer, proxies):
        return peer
    for name, value in scope.get("headers") or []:
        if name == b"x-forwarded-for":
            first = value.decode("latin-1").split(",")[0].strip()
            try:
                return str(ipaddress.ip_address(first))
            except ValueError:
                return peer
    return peer


def _is_trusted(peer: str, proxies) -> bool:
    try:
        addr = ipaddress.ip_address(peer)
    except ValueError:
        return False
    for p in proxies:
        try:
            if addr in ipaddress.ip_network(p, strict=False):
                return True
        except ValueError:
            continue
    return False
