"""Webhooks by the Standard Webhooks specification (the `standardwebhooks` package signs):
secrets, where a webhook may go, signing with one or two secrets, the retry schedule, and
the one way a webhook is sent (`post`: to the address that was checked, within a deadline).

    secret = new_secret()                       # "whsec_...", shown once to the subscriber
    check_url("https://example.com/hook")       # GenreError unless it may be sent there
    target = destination(url)                   # checked, with the address to connect to
    reply = post(target, body, headers, 15.0)   # one overall deadline, 1 KB of the reply
    headers = sign_headers([secret], msg_id, body)   # webhook-id, -timestamp, -signature

A receiver verifies with `standardwebhooks.Webhook(secret).verify(body, headers)`: an HMAC-
SHA256 over "id.timestamp.body"; during a rotation both secrets sign (two `v1,` signatures).

Where a webhook may go (`destination`, at creation and before every send): https, a port of
GENRE_WEBHOOK_PORTS, and a host whose every address is publicly routable; the address
checked is the one connected to (no second DNS look-up to rebind), TLS still verified
against the host name. Refused: loopback, private, link-local, shared (CGNAT), multicast,
reserved, unspecified, NAT64, 6to4, Teredo, IPv4-compatible, and the IPv4-mapped form of any
refused IPv4 address. GENRE_WEBHOOK_ALLOW_HOSTS names hosts or networks exempt from these
rules (http allowed, any port): a receiver inside the operator's network, the tests'.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import random
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from genre_detector.errors import GenreError

# Seconds before attempt 1, 2, ...: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h; then the
# delivery has failed. Multiplied by GENRE_WEBHOOK_BACKOFF_SCALE, each delay +-10 % jitter.
SCHEDULE_S = (0, 5, 300, 1800, 7200, 18000, 36000)
JITTER = 0.1
RESPONSE_HEAD = 1024  # bytes of a reply kept with each attempt (the rest is never read)
MAX_URL = 2000
RETRY_AFTER_CAP_S = 3600.0  # a longer Retry-After is not honoured: the schedule decides

# The address classes `ipaddress` has no property for (IANA special-purpose registries):
# a prefix table is all they need, and no maintained library is smaller than it (advocate,
# the one SSRF library for requests, is unmaintained and resolves twice).
_PREFIXES = (
    (ipaddress.ip_network("100.64.0.0/10"), "a shared (CGNAT) address"),
    (ipaddress.ip_network("192.0.0.0/24"), "an IETF protocol address"),  # 3.11 calls it global
    (ipaddress.ip_network("64:ff9b::/96"), "a NAT64 address"),
    (ipaddress.ip_network("64:ff9b:1::/48"), "a NAT64 address"),
    (ipaddress.ip_network("2002::/16"), "a 6to4 address"),
    (ipaddress.ip_network("2001::/32"), "a Teredo address"),
    (ipaddress.ip_network("::/96"), "an IPv4-compatible address"),
)


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def next_delay(attempts_made: int, scale: float = 1.0, rng=random) -> float | None:
    """Seconds until the next attempt after `attempts_made` failed ones; None: give up."""
    if attempts_made >= len(SCHEDULE_S):
        return None
    base = SCHEDULE_S[attempts_made] * scale
    return base * (1 + rng.uniform(-JITTER, JITTER))


def retry_after(value: str | None, now: dt.datetime | None = None) -> float | None:
    """Seconds a Retry-After header asks for (delta-seconds or an HTTP date), or None; more
    than RETRY_AFTER_CAP_S (any huge number) is None: the normal schedule applies."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        seconds = float(int(value[:12]))  # a 10^12 s value is already past the cap
    else:
        from email.utils import parsedate_to_datetime

        try:
            when = parsedate_to_datetime(value)
            now = now or dt.datetime.now(dt.UTC)
            seconds = max(0.0, (when - now).total_seconds())
        except (TypeError, ValueError, OverflowError):
            return None
    return seconds if seconds <= RETRY_AFTER_CAP_S else None


# ---------------------------------------------------------------- where a webhook may go


def refusal(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why a webhook may not be sent to this address (the rule's name), or None."""
    if addr.version == 6 and addr.ipv4_mapped is not None:
        inner = refusal(addr.ipv4_mapped)
        return f"the IPv4-mapped form of {inner}" if inner else None
    for test, rule in (
        (addr.is_unspecified, "the unspecified address"),
        (addr.is_loopback, "a loopback address"),
        (addr.is_multicast, "a multicast address"),
        (addr.is_link_local, "a link-local address"),
    ):
        if test:
            return rule
    for net, rule in _PREFIXES:
        if addr.version == net.version and addr in net:
            return rule
    if addr.is_private:
        return "a private address"
    if addr.is_reserved:
        return "a reserved address"
    if not addr.is_global:
        return "an address that is not publicly routable"
    return None


@dataclass(frozen=True)
class Policy:
    """Where webhooks may go: GENRE_WEBHOOK_ALLOW_HOSTS and GENRE_WEBHOOK_PORTS."""

    hosts: frozenset = frozenset()  # host names exempt from the address rules
    networks: tuple = ()  # networks exempt from them
    ports: frozenset = frozenset({443, 80, 8443})

    @classmethod
    def from_settings(cls, s=None) -> "Policy":
        if s is None:
            from genre_detector.config import settings

            s = settings()
        hosts, networks = set(), []
        for entry in s.webhook_allow_hosts:
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                hosts.add(entry.lower().rstrip("."))
        try:
            ports = frozenset(int(p) for p in s.webhook_ports)
        except ValueError:
            raise ValueError(f"GENRE_WEBHOOK_PORTS={','.join(s.webhook_ports)!r}") from None
        return cls(frozenset(hosts), tuple(networks), ports)

    def exempt(self, host: str, addrs: list) -> bool:
        if host.lower().rstrip(".") in self.hosts:
            return True
        return bool(addrs) and all(any(a in n for n in self.networks) for a in addrs)


@dataclass(frozen=True)
class Target:
    """A checked webhook URL and the address it is sent to (pinned: never looked up again)."""

    url: str
    scheme: str
    host: str  # as written (the Host header, TLS SNI and certificate check)
    port: int
    path: str  # with the query
    address: str  # the IP connected to


def _bad(detail: str) -> GenreError:
    return GenreError("bad_parameter", f"webhook_url: {detail}")


def _resolve(host: str, port: int) -> list:
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise _bad(f"the host {host!r} does not resolve") from None
    seen = dict.fromkeys(ipaddress.ip_address(i[4][0].split("%")[0]) for i in infos)
    return list(seen)


def destination(url: str, policy: Policy | None = None) -> Target:
    """The URL checked, with the one address a send connects to; GenreError bad_parameter
    naming the rule (never a resolved address) when a webhook may not go there."""
    policy = policy or Policy.from_settings()
    if not isinstance(url, str) or not url or len(url) > MAX_URL:
        raise _bad("an https:// URL")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise _bad("not a valid URL") from None
    if parts.scheme not in {"https", "http"} or not parts.hostname:
        raise _bad(f"must be https://, not {url[:100]!r}")
    if parts.username or parts.password:
        raise _bad("no credentials in the URL")
    host = parts.hostname
    port = port or (443 if parts.scheme == "https" else 80)
    addrs = _resolve(host, port)
    if not addrs:
        raise _bad(f"the host {host!r} does not resolve")
    if not policy.exempt(host, addrs):
        if parts.scheme != "https":
            raise _bad(f"must be https://, not {url[:100]!r}")
        if port not in policy.ports:
            allowed = ", ".join(str(p) for p in sorted(policy.ports))
            raise _bad(f"port {port} is not allowed (allowed: {allowed})")
        for addr in addrs:
            rule = refusal(addr)
            if rule:
                raise _bad(f"the host {host!r} resolves to {rule} (refused)")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(url, parts.scheme, host, port, path, str(addrs[0]))


def check_url(url: str, policy: Policy | None = None) -> str:
    """The URL when a webhook may be sent to it (see `destination`)."""
    destination(url, policy)
    return url


# ---------------------------------------------------------------- sending


@dataclass
class Reply:
    status: int
    headers: dict  # lower-cased names
    head: bytes  # at most RESPONSE_HEAD bytes of the body


class DeadlineExceeded(Exception):
    pass


def post(target: Target, body: bytes, headers: dict, deadline_s: float) -> Reply:
    """POST to the pinned address within one deadline for everything (connect, TLS, request,
    reply headers, the first RESPONSE_HEAD bytes): a watchdog shuts the socket when it
    passes, so a receiver dripping a byte at a time cannot hold the sender. No redirects,
    no proxies, no retries. Raises DeadlineExceeded or OSError/urllib3 errors."""
    from urllib3.connection import HTTPConnection, HTTPSConnection

    host_header = target.host if ":" not in target.host else f"[{target.host}]"
    if target.port != (443 if target.scheme == "https" else 80):
        host_header += f":{target.port}"
    if target.scheme == "https":
        import certifi

        conn = HTTPSConnection(
            target.address,
            target.port,
            timeout=deadline_s,
            server_hostname=target.host,
            assert_hostname=target.host,
            cert_reqs="CERT_REQUIRED",
            ca_certs=certifi.where(),
        )
    else:
        conn = HTTPConnection(target.address, target.port, timeout=deadline_s)
    expired = threading.Event()

    def cut():
        expired.set()
        sock = conn.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    t0 = time.monotonic()
    watchdog = threading.Timer(deadline_s, cut)
    watchdog.daemon = True
    watchdog.start()
    try:
        conn.request(
            "POST",
            target.path,
            body=body,
            headers={**headers, "Host": host_header, "User-Agent": "genre-detector-webhooks"},
            preload_content=False,
            decode_content=False,
        )
        resp = conn.getresponse()
        if expired.is_set():  # the status line and headers were cut short
            raise DeadlineExceeded(f"no reply within {deadline_s:g} s")
        reply = Reply(resp.status, {k.lower(): v for k, v in resp.headers.items()}, b"")
        try:  # the receiver has answered: a body cut at the deadline keeps what came
            while len(reply.head) < RESPONSE_HEAD and not expired.is_set():
                chunk = resp.read(RESPONSE_HEAD - len(reply.head), decode_content=False)
                if not chunk:
                    break
                reply.head += chunk
        except Exception:  # noqa: BLE001
            pass
        return reply
    except DeadlineExceeded:
        raise
    except Exception:
        if expired.is_set() or time.monotonic() - t0 >= deadline_s:
            raise DeadlineExceeded(f"no reply within {deadline_s:g} s") from None
        raise
    finally:
        watchdog.cancel()
        conn.close()


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
