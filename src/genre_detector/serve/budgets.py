"""Request budgets: token buckets per API key (search, uploads, watch changes) and per client
address (keyless POST /similar, /predict), kept in this process's memory.

    verdict = BUDGETS.take("search", key_id)      # a token, if one is left
    verdict.ok, verdict.headers()                 # RateLimit-Policy / RateLimit (+ Retry-After)
    BUDGETS.peek("search", key_id)                # what is left, for GET /me

A bucket refills at per_min / 60 per second and holds at most GENRE_BURST_SECONDS of that
(never fewer than MIN_BURST tokens, nor more than per_min). The default, 60 s, lets a key that
rested spend its whole minute at once: the workspace uploads a folder of files in one go.
Lower values smooth such bursts for the other accounts of a replica; 10 s made no difference
to the polite account's p95 in loadtests/accounts_load.py, would refuse a 12-file upload's
11th file (10 tokens) and failed four tests that write more than 10 times at once, so it is
not the default. Buckets are in memory per replica, never in the catalog, so a search costs
no database write: with N replicas a key can use up to N times its budget at once (requests
are spread by the platform, so in practice close to one). A store built for counters (Redis)
would make the bound exact; the service has none today. Quotas (tracks, watches) are counted
in the catalog.

A refusal should cost next to nothing, so BudgetGate (an ASGI middleware wrapped around
everything else, BentoML's metrics, tracing and access log included) answers 429 from a
header check when a request's bucket is already empty: its key (the Authorization header's
digest) identified before by this replica, or its client address for the keyless buckets.
No body is read, no database asked, no route run, no settings parsed but the two a bucket
needs. A request the gate lets through takes its token in the route as before.

Hand-written rather than a library: the headers need a bucket's level and its time to the
next token, which the rate-limit libraries at hand (pyrate-limiter, limits) do not expose in
their public APIs; the bucket itself is a few lines.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import json
import logging
import math
import re
import threading
import time
from dataclasses import dataclass

from genre_detector.config import setting
from genre_detector.errors import GenreError
from genre_detector.serve.http_boundary import CORS_HEADERS, CORS_PATHS, DRAIN

logger = logging.getLogger("bentoml.genre_detector")

WINDOW_S = 60
MIN_BURST = 10  # tokens a bucket always holds when full (a page's few requests at once)
MAX_BUCKETS = 100_000  # past this, full (idle) buckets are dropped: they carry nothing
MAX_KNOWN_KEYS = 10_000  # identified keys remembered for the gate (oldest forgotten first)


LIMITS = {  # each bucket kind's budget per minute, a field of config.Settings
    "search": "search_per_min",
    "uploads": "writes_per_min",  # two buckets of one size
    "watch_changes": "writes_per_min",
    "anonymous": "anonymous_per_min",
    "predict": "predict_per_min",
}


def policy(name: str) -> tuple[int, float]:
    """(the budget per minute, 0: unlimited; the most tokens its bucket holds) of one bucket
    kind, from the two settings it depends on."""
    limit = setting(LIMITS[name])
    return limit, float(min(limit, max(MIN_BURST, limit * setting("burst_seconds") / WINDOW_S)))


@dataclass(frozen=True)
class Verdict:
    name: str
    ok: bool
    limit: int  # tokens per window (0: unlimited)
    remaining: int
    reset_s: int  # seconds until the bucket is full again
    retry_after_s: int  # seconds until the next token (0 when one is left)
    burst: int = 0  # the most tokens the bucket holds

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
            "burst": self.burst if self.limit else None,
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
        self._known: dict[bytes, str] = {}  # Authorization digest -> key id

    def _level(self, name: str, subject: str, limit: int, full: float, now: float) -> float:
        tokens, at = self._buckets.get((name, subject), (full, now))
        return min(full, tokens + (now - at) * limit / WINDOW_S)

    def _verdict(self, name: str, ok: bool, limit: int, full: float, tokens: float) -> Verdict:
        rate = limit / WINDOW_S
        return Verdict(
            name,
            ok,
            limit,
            int(tokens),
            math.ceil((full - tokens) / rate),
            0 if tokens >= 1 else max(1, math.ceil((1 - tokens) / rate)),
            int(full),
        )

    def take(self, name: str, subject: str) -> Verdict:
        """One token of `subject`'s bucket `name`, if there is one."""
        limit, full = policy(name)
        if limit <= 0:
            return Verdict(name, True, 0, 0, 0, 0)
        with self._lock:
            now = self.clock()
            tokens = self._level(name, subject, limit, full, now)
            ok = tokens >= 1
            if ok:
                tokens -= 1
            if len(self._buckets) >= MAX_BUCKETS:
                self._prune(now)
            self._buckets[(name, subject)] = (tokens, now)
        return self._verdict(name, ok, limit, full, tokens)

    def peek(self, name: str, subject: str) -> Verdict:
        limit, full = policy(name)
        if limit <= 0:
            return Verdict(name, True, 0, 0, 0, 0)
        with self._lock:
            tokens = self._level(name, subject, limit, full, self.clock())
        return self._verdict(name, tokens >= 1, limit, full, tokens)

    def remember(self, authorization: str, key_id: str) -> None:
        """This Authorization header identified key `key_id` (kept as a digest, for the gate)."""
        digest = _digest(authorization.encode("latin-1", "replace"))
        with self._lock:
            if digest not in self._known and len(self._known) >= MAX_KNOWN_KEYS:
                del self._known[next(iter(self._known))]
            self._known[digest] = key_id

    def known_key(self, authorization: bytes) -> str | None:
        """The key id this Authorization header identified before, if it did."""
        return self._known.get(_digest(authorization))

    def _prune(self, now: float) -> None:
        policies = {name: policy(name) for name in {name for name, _ in self._buckets}}
        for (name, subject), (tokens, at) in list(self._buckets.items()):
            limit, full = policies[name]
            if limit <= 0 or tokens + (now - at) * limit / WINDOW_S >= full:
                del self._buckets[(name, subject)]


BUDGETS = Budgets()


def _digest(authorization: bytes) -> bytes:
    return hashlib.blake2b(authorization, digest_size=16).digest()


@dataclass(frozen=True)
class GateRule:
    """Requests of `method` on a path matching `path` spend `bucket` with a key, or
    `keyless` (a client address's bucket) without one; None: not gated that way."""

    method: str
    path: re.Pattern
    bucket: str | None
    keyless: str | None = None


class BudgetGate:
    """ASGI middleware, the outermost of the front (serve.bentoml_internals): 429
    rate_limited (with Retry-After and the RateLimit headers) before anything else runs,
    for a request whose bucket is already empty. Peeks, never takes: the route takes the
    token of a request let through. A key this replica has not identified yet goes through
    (the route identifies it). A revoked key whose bucket is empty is told 429 until its
    next token, then 401. While the service drains, everything goes through (the HTTP
    boundary answers 503 shutting_down). Its refusals are not in BentoML's request metrics
    or access log: they are counted in genre_rate_limited_total{bucket} at /metrics, and
    each bucket that refuses is logged when it starts and then once a minute with its
    count."""

    def __init__(
        self,
        app,
        rules: list[GateRule],
        budgets: Budgets | None = None,
        cors_paths: tuple[str, ...] = CORS_PATHS,
        clock=time.monotonic,
    ):
        self.app, self.rules, self.budgets = app, rules, budgets or BUDGETS
        self.cors_paths, self.clock = cors_paths, clock
        # (bucket, subject) -> [refusals not logged yet, since, the last refusal]
        self._refused: dict[tuple[str, str], list] = {}
        self._flushed = clock()

    def verdict(self, scope) -> tuple[Verdict, str] | None:
        """The refusal of this request and whose bucket refused it, or None to let it
        through."""
        method, path = scope.get("method"), scope.get("path", "")
        rule = next((r for r in self.rules if r.method == method and r.path.match(path)), None)
        if rule is None or DRAIN.draining:
            return None
        authorization = None
        for name, value in scope.get("headers") or []:
            if name == b"authorization":
                authorization = value
                break
        if authorization:
            subject = self.budgets.known_key(authorization) if rule.bucket else None
            verdict = None if subject is None else self.budgets.peek(rule.bucket, subject)
        elif rule.keyless:
            subject = client_address(scope)
            verdict = self.budgets.peek(rule.keyless, subject)
        else:
            return None
        return None if verdict is None or verdict.ok else (verdict, subject)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        now = self.clock()
        if now - self._flushed >= 1 and self._refused:
            self._flush(now)
        refusal = self.verdict(scope)
        if refusal is None:
            return await self.app(scope, receive, send)
        verdict, subject = refusal
        self._tally(verdict.name, subject, now)
        error = verdict.error()
        data = json.dumps(error.body()).encode()
        headers = [(k.lower().encode(), v.encode()) for k, v in verdict.headers().items()]
        if scope["path"] in self.cors_paths:
            headers += CORS_HEADERS
        await send(
            {
                "type": "http.response.start",
                "status": error.status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(data)).encode()),
                    *headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": data})

    def _tally(self, bucket: str, subject: str, now: float) -> None:
        """Count a refusal: the first of an episode is logged at once, the rest a line a
        minute per bucket (_flush), so a flood is a line a minute, not a line a request."""
        _refusals().labels(bucket).inc()
        entry = self._refused.get((bucket, subject))
        if entry is None:
            logger.info("429 rate_limited: the %s bucket of %r is empty", bucket, subject)
            if len(self._refused) >= MAX_KNOWN_KEYS:  # the oldest episode, logged and dropped
                oldest = next(iter(self._refused))
                self._log(oldest, self._refused.pop(oldest), now)
            entry = self._refused[(bucket, subject)] = [0, now, now]
        entry[0] += 1
        entry[2] = now

    def _flush(self, now: float) -> None:
        """Log each bucket's refusals of the minute gone by; an episode with none for a
        minute is over (its next refusal is logged as the first again)."""
        self._flushed = now
        for key, entry in list(self._refused.items()):
            count, since, last = entry
            if now - since < WINDOW_S:
                continue
            self._log(key, entry, now)
            if now - last >= WINDOW_S:
                del self._refused[key]
            else:
                entry[0], entry[1] = 0, now

    @staticmethod
    def _log(key: tuple[str, str], entry: list, now: float) -> None:
        if entry[0]:
            logger.info(
                "429 rate_limited: the %s bucket of %r refused %d requests in %.0f s",
                key[0],
                key[1],
                entry[0],
                now - entry[1],
            )


@functools.cache
def _refusals():
    """genre_rate_limited_total{bucket}, shown at /metrics: the process's one Counter, made
    on the first refusal, in the worker, after BentoML has set up prometheus_client's
    multiprocess mode."""
    from prometheus_client import Counter

    return Counter("genre_rate_limited", "requests the budget gate answered 429", ["bucket"])


def client_address(scope) -> str:
    """The client of a request: the peer, or, when the peer is a trusted proxy
    (GENRE_TRUSTED_PROXIES: behind Knative every request comes from the queue-proxy), the
    first hop of its X-Forwarded-For."""
    peer = (scope.get("client") or ("unknown", 0))[0]
    proxies = setting("trusted_proxies")
    if not proxies or not _is_trusted(peer, proxies):
        return peer
    for name, value in scope.get("headers") or []:
        if name == b"x-forwarded-for":
            first = value.decode("latin-1").split(",")[0].strip()
            try:
                addr = ipaddress.ip_address(first)
            except ValueError:
                return peer
            return peer if getattr(addr, "scope_id", None) else str(addr)  # no "%any text"
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
