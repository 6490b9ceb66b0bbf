"""The webhook delivery worker: `python -m genre_detector deliver`, or a thread in the service.

    worker = Worker(db)
    worker.run_once()             # claim due deliveries, send, record; returns how many sent
    worker.run(stop_event)        # until stopped

At least once, nothing lost: deliveries wait in the database (the outbox) until a worker
runs, so scale to zero loses nothing. A worker claims a batch by setting a lease
(`locked_until`) in one UPDATE (PostgreSQL: the rows locked FOR UPDATE SKIP LOCKED, so
several workers never take the same one; SQLite: writes are serialised), sends, and records
each attempt. A worker killed between sending and recording leaves the lease to expire and
another sends again with the same `webhook-id` (the receiver's idempotency key). Only 2xx is
success; redirects are not followed; 429/503 honour Retry-After; 410 disables the watch;
a watch failing for GENRE_WEBHOOK_DISABLE_AFTER_S is disabled with the reason.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import time
import uuid

import sqlalchemy as sa

from genre_detector.catalog import clock, webhooks
from genre_detector.catalog.schema import deliveries, delivery_attempts, watches
from genre_detector.config import settings

logger = logging.getLogger("genre_detector.delivery")
LEASE_S = 60.0  # a claimed delivery is another worker's after this (its sender died)


class Worker:
    def __init__(self, db, batch: int = 20, name: str | None = None, session=None):
        import requests

        self.db, self.batch = db, batch
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.session = session or requests.Session()
        self.settings = settings()
        self.lease_s = LEASE_S

    # ------------------------------------------------------------ claim

    def claim(self) -> list:
        """Lease up to `batch` due deliveries of active watches to this worker."""
        now = clock.now()
        due = (
            sa.select(deliveries.c.pk)
            .where(
                deliveries.c.status == "pending",
                deliveries.c.next_attempt_at <= now,
                sa.or_(deliveries.c.locked_until.is_(None), deliveries.c.locked_until < now),
                deliveries.c.watch_pk.in_(
                    sa.select(watches.c.pk).where(watches.c.active.is_(True))
                ),
            )
            .order_by(deliveries.c.next_attempt_at)
            .limit(self.batch)
            .with_for_update(skip_locked=True)
        )
        with self.db.begin() as conn:
            pks = (
                conn.execute(
                    deliveries.update()
                    .where(deliveries.c.pk.in_(due.scalar_subquery()))
                    .values(
                        locked_until=now + dt.timedelta(seconds=self.lease_s), locked_by=self.name
                    )
                    .returning(deliveries.c.pk)
                )
                .scalars()
                .all()
            )
            if not pks:
                return []
            return conn.execute(
                sa.select(
                    deliveries,
                    watches.c.webhook_url,
                    watches.c.secret,
                    watches.c.previous_secret,
                    watches.c.previous_secret_until,
                    watches.c.failing_since,
                )
                .join(watches, watches.c.pk == deliveries.c.watch_pk)
                .where(deliveries.c.pk.in_(pks))
                .order_by(deliveries.c.next_attempt_at)
            ).fetchall()

    # ------------------------------------------------------------ send

    def send(self, d) -> dict:
        """One attempt: {status_code, latency_ms, error, head, retry_after}."""
        import requests

        secrets_ = [d.secret]
        if (
            d.previous_secret
            and (clock.aware(d.previous_secret_until) or clock.now()) > clock.now()
        ):
            secrets_.append(d.previous_secret)
        t0 = time.perf_counter()
        out = {"status_code": None, "error": None, "head": None, "retry_after": None}
        try:
            webhooks.check_url(d.webhook_url, self.settings.webhook_allow_private)
            headers = webhooks.sign_headers(secrets_, d.id, d.payload)
            r = self.session.post(
                d.webhook_url,
                data=d.payload.encode(),
                headers=headers,
                timeout=self.settings.webhook_timeout_s,
                allow_redirects=False,
            )
            out["status_code"] = r.status_code
            out["head"] = r.content[: webhooks.RESPONSE_HEAD].decode(errors="replace")
            out["retry_after"] = webhooks.retry_after(r.headers.get("retry-after"))
            if not 200 <= r.status_code < 300:
                out["error"] = f"HTTP {r.status_code}" + (
                    " (redirects are not followed)" if 300 <= r.status_code < 400 else ""
                )
        except requests.RequestException as exc:
            out["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        except ValueError as exc:  # GenreError from check_url: the address is refused
            out["error"] = f"refused: {exc}"
        out["latency_ms"] = (time.perf_counter() - t0) * 1000
        return out

    # ------------------------------------------------------------ record

    def record(self, d, out: dict) -> str:
        """Write the attempt and the delivery's next state; returns that state."""
        now = clock.now()
        attempts = d.attempts + 1
        code = out["status_code"]
        watch_update = {}
        if code is not None and 200 <= code < 300:
            state, values = "delivered", {"delivered_at": now, "last_error": None}
            watch_update = {"failing_since": None}
        elif code == 410:
            state, values = "failed", {"last_error": "410 Gone: the receiver is gone"}
            watch_update = {"active": False, "disabled_reason": "the receiver answered 410 Gone"}
        else:
            delay = webhooks.next_delay(attempts, self.settings.webhook_backoff_scale)
            if delay is not None and code in (429, 503) and out["retry_after"] is not None:
                delay = max(delay, out["retry_after"])
            if delay is None:
                state, values = "failed", {"last_error": out["error"]}
            else:
                state = "pending"
                values = {
                    "last_error": out["error"],
                    "next_attempt_at": now + dt.timedelta(seconds=delay),
                }
            since = clock.aware(d.failing_since) or now
            watch_update = {"failing_since": since}
            if (now - since).total_seconds() > self.settings.webhook_disable_after_s:
                watch_update.update(
                    active=False,
                    disabled_reason=f"deliveries failing since {since.isoformat()} "
                    f"(last: {out['error']})",
                )
        with self.db.begin() as conn:
            conn.execute(
                delivery_attempts.insert().values(
                    delivery_pk=d.pk,
                    attempted_at=now,
                    status_code=code,
                    latency_ms=out["latency_ms"],
                    error=out["error"],
                    response_head=out["head"],
                )
            )
            # only a delivery still pending and still ours: one cancelled meanwhile (its track
            # erased or withdrawn) stays cancelled, and a lease taken over stays the taker's
            conn.execute(
                deliveries.update()
                .where(
                    deliveries.c.pk == d.pk,
                    deliveries.c.locked_by == self.name,
                    deliveries.c.status == "pending",
                )
                .values(status=state, attempts=attempts, locked_until=None, **values)
            )
            if watch_update:
                conn.execute(
                    watches.update().where(watches.c.pk == d.watch_pk).values(**watch_update)
                )
        return state

    # ------------------------------------------------------------ loop

    def renew(self, d) -> bool:
        """Right before sending: extend this delivery's lease to cover its send (a slow
        batch must not outlive the lease of its last deliveries); False when another worker
        took it over meanwhile, or it was cancelled: then it is not sent."""
        until = clock.now() + dt.timedelta(seconds=self.settings.webhook_timeout_s + LEASE_S)
        with self.db.begin() as conn:
            done = conn.execute(
                deliveries.update()
                .where(
                    deliveries.c.pk == d.pk,
                    deliveries.c.locked_by == self.name,
                    deliveries.c.status == "pending",
                )
                .values(locked_until=until)
            )
        return done.rowcount == 1

    def run_once(self) -> int:
        claimed = self.claim()
        for d in claimed:
            if not self.renew(d):
                continue
            out = self.send(d)
            state = self.record(d, out)
            logger.info(
                "webhook %s %s -> %s (%s, %.0f ms)",
                d.id,
                d.event_type,
                state,
                out["status_code"] or out["error"],
                out["latency_ms"],
            )
        return len(claimed)

    def run(self, stop: threading.Event, idle_s: float = 1.0) -> None:
        """Deliver until `stop` is set; a database outage is logged and waited out."""
        from genre_detector.catalog.db import CatalogUnavailable

        while not stop.is_set():
            try:
                n = self.run_once()
            except CatalogUnavailable as exc:
                logger.warning("delivery worker: %s", exc.detail)
                n = 0
            if n == 0:
                stop.wait(idle_s)
