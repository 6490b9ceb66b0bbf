"""The webhook delivery worker: `python -m genre_detector deliver`, or a thread in the service.

    worker = Worker(db)
    worker.run_once()             # claim due deliveries, send them concurrently, record
    worker.run(stop_event)        # until stopped
    housekeeping(db)              # every worker runs it each HOUSEKEEPING_EVERY_S

At least once, nothing lost: deliveries wait in the database (the outbox) until a worker
runs, so scale to zero loses nothing. A worker claims deliveries by setting a lease
(`locked_until`) in one UPDATE (PostgreSQL: the rows locked FOR UPDATE SKIP LOCKED, so
several workers never take the same one; SQLite: writes are serialised), sends, and records
each attempt. While a send is in flight a heartbeat renews its lease, so no other worker
sends it meanwhile; a worker killed between sending and recording leaves the lease to expire
and another sends again with the same `webhook-id` (the receiver's idempotency key).

No account can stop or slow another's deliveries: every send has one overall deadline
(GENRE_WEBHOOK_TIMEOUT_S) and keeps 1 KB of the reply; up to GENRE_WEBHOOK_CONCURRENCY sends
run at once, shared fairly between the accounts with due deliveries (one share kept free
for the next account to come due), then between each
account's watches; every exception in sending or recording one delivery becomes a recorded
failed attempt with its reason, and the worker goes on. Only 2xx is success; redirects are
not followed; 429/503 honour Retry-After up to an hour; 410 disables the watch; a watch
failing for GENRE_WEBHOOK_DISABLE_AFTER_S is disabled with the reason (and its owner told by
a `watch.disabled` event). A delivery whose watch was deleted counts as cancelled.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import sqlalchemy as sa

from genre_detector.catalog import clock, webhooks
from genre_detector.catalog import watches as watch_rules
from genre_detector.catalog.db import CatalogUnavailable
from genre_detector.catalog.schema import deliveries, delivery_attempts, watches
from genre_detector.config import settings
from genre_detector.errors import GenreError

logger = logging.getLogger("genre_detector.delivery")
LEASE_S = 30.0  # a claimed delivery is another worker's after this unless renewed
HOUSEKEEPING_EVERY_S = 60.0  # how often a worker runs `housekeeping`
MAX_DELAY_S = 30 * 86400.0  # no next attempt is scheduled further out than this


def housekeeping(db) -> dict:
    """The catalog's periodic chores, run by every delivery worker (the service's thread and
    `python -m genre_detector deliver` alike, through Worker.housekeep): today, erasing the
    previous signing secrets whose overlap has ended. Returns what each chore did."""
    return {"expired_secrets_erased": watch_rules.forget_expired_secrets(db)}


class Worker:
    def __init__(self, db, batch: int = 20, name: str | None = None, concurrency=None):
        self.db, self.batch = db, batch
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.settings = settings()
        self.policy = webhooks.Policy.from_settings(self.settings)
        self.concurrency = max(1, concurrency or self.settings.webhook_concurrency)
        self.lease_s = LEASE_S
        self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="webhook-send")
        self._lock = threading.Lock()
        self._inflight: dict[int, str] = {}  # delivery pk -> its account
        self._changed = threading.Event()  # a send finished
        self._closed = threading.Event()
        self._housekept_at: float | None = None  # monotonic time of the last housekeeping
        self._beat = threading.Thread(target=self._heartbeat, name="webhook-lease", daemon=True)
        self._beat.start()

    # ------------------------------------------------------------ claim

    def _due(self, now):
        return sa.and_(
            deliveries.c.status == "pending",
            deliveries.c.next_attempt_at <= now,
            sa.or_(deliveries.c.locked_until.is_(None), deliveries.c.locked_until < now),
        )

    def claim(
        self, limit: int | None = None, skip_owners=(), per_account: int | None = None, busy=None
    ) -> list:
        """Lease up to `limit` due deliveries to this worker, taken round-robin by account,
        then by watch within an account (so 100 watches of one account get one account's
        share), the oldest first; none of the accounts in `skip_owners`, and with
        `per_account`, no account more than that many less its `busy` count. A watch's
        deliveries wait while it is disabled, except the `watch.disabled` event itself.

        Three plain statements in one transaction, each by primary key after the first: the
        ranking (window functions over every due delivery) picks candidates without locking,
        then those still due and not locked by another worker are locked (PostgreSQL: FOR
        UPDATE SKIP LOCKED), then leased. Nested as one UPDATE ... WHERE pk IN (SELECT ...
        FOR UPDATE SKIP LOCKED), the UPDATE's time on PostgreSQL grew with every due row (not
        with the claimed ones) until autovacuum first analyzed the table: with a hostile
        account's backlog of 750 due deliveries one claim took 0.4-1.1 s, with 1,750 up to
        16 s, and every account's deliveries waited on it; now under 50 ms with 2,000."""
        now = clock.now()
        limit = self.batch if limit is None else limit
        sendable = _sendable()
        by_watch = (
            sa.select(
                deliveries.c.pk,
                deliveries.c.next_attempt_at,
                watches.c.owner,
                sa.func.row_number()
                .over(partition_by=deliveries.c.watch_pk, order_by=deliveries.c.next_attempt_at)
                .label("in_watch"),
            )
            .join(watches, watches.c.pk == deliveries.c.watch_pk)
            .where(self._due(now), sendable)
        )
        if skip_owners:
            by_watch = by_watch.where(watches.c.owner.not_in(list(skip_owners)))
        by_watch = by_watch.subquery("by_watch")
        by_account = sa.select(
            by_watch.c.pk,
            by_watch.c.owner,
            by_watch.c.next_attempt_at,
            sa.func.row_number()
            .over(
                partition_by=by_watch.c.owner,
                order_by=(by_watch.c.in_watch, by_watch.c.next_attempt_at),
            )
            .label("in_account"),
        ).subquery("by_account")
        picked = (
            sa.select(by_account.c.pk)
            .order_by(by_account.c.in_account, by_account.c.next_attempt_at)
            .limit(limit)
        )
        if per_account is not None:
            room = {o: per_account - n for o, n in (busy or {}).items()}
            cap = sa.case(room, value=by_account.c.owner, else_=per_account) if room else None
            picked = picked.where(by_account.c.in_account <= (per_account if cap is None else cap))
        with self.db.begin() as conn:
            candidates = conn.execute(picked).scalars().all()
            if not candidates:
                return []
            mine = (
                conn.execute(
                    sa.select(deliveries.c.pk)
                    .where(deliveries.c.pk.in_(candidates), self._due(now))
                    .with_for_update(skip_locked=True)
                )
                .scalars()
                .all()
            )
            if not mine:
                return []
            pks = (
                conn.execute(
                    deliveries.update()
                    .where(deliveries.c.pk.in_(mine), self._due(now))
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
            rows = conn.execute(
                sa.select(
                    deliveries,
                    watches.c.owner,
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
        return _round_robin(rows)

    # ------------------------------------------------------------ send

    def send(self, d) -> dict:
        """One attempt: {status_code, latency_ms, error, head, retry_after}. Never raises:
        whatever goes wrong is the attempt's error."""
        secrets_ = [d.secret]
        if (
            d.previous_secret
            and (clock.aware(d.previous_secret_until) or clock.now()) > clock.now()
        ):
            secrets_.append(d.previous_secret)
        t0 = time.perf_counter()
        out = {"status_code": None, "error": None, "head": None, "retry_after": None}
        try:
            # checked again at every send, and the checked address is the one connected to
            target = webhooks.destination(d.webhook_url, self.policy)
            headers = webhooks.sign_headers(secrets_, d.id, d.payload)
            reply = webhooks.post(
                target, d.payload.encode(), headers, self.settings.webhook_timeout_s
            )
            out["status_code"] = reply.status
            out["head"] = reply.head.decode(errors="replace")
            out["retry_after"] = webhooks.retry_after(reply.headers.get("retry-after"))
            if not 200 <= reply.status < 300:
                out["error"] = f"HTTP {reply.status}" + (
                    " (redirects are not followed)" if 300 <= reply.status < 400 else ""
                )
        except GenreError as exc:  # the address is refused now
            out["error"] = f"refused: {exc.detail}"
        except Exception as exc:  # noqa: BLE001  any failure is this attempt's, never the worker's
            out["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        out["latency_ms"] = (time.perf_counter() - t0) * 1000
        return out

    # ------------------------------------------------------------ record

    def record(self, d, out: dict) -> str:
        """Write the attempt and the delivery's next state; returns that state ("cancelled"
        when the delivery or its watch is gone meanwhile)."""
        now = clock.now()
        attempts = d.attempts + 1
        code = out["status_code"]
        disable = None
        if code is not None and 200 <= code < 300:
            state, values = "delivered", {"delivered_at": now, "last_error": None}
            watch_update = {"failing_since": None}
        elif code == 410:
            state, values = "failed", {"last_error": "410 Gone: the receiver is gone"}
            watch_update, disable = {}, "the receiver answered 410 Gone"
        else:
            delay = webhooks.next_delay(attempts, self.settings.webhook_backoff_scale)
            if delay is not None and out.get("retry_after") is not None and code in (429, 503):
                delay = max(delay, out["retry_after"])  # retry_after is capped at an hour
            if delay is None:
                state, values = "failed", {"last_error": out["error"]}
            else:
                state = "pending"
                values = {
                    "last_error": out["error"],
                    "next_attempt_at": now + dt.timedelta(seconds=min(delay, MAX_DELAY_S)),
                }
            since = clock.aware(d.failing_since) or now
            watch_update = {"failing_since": since}
            if (now - since).total_seconds() > self.settings.webhook_disable_after_s:
                disable = f"deliveries failing since {since.isoformat()} (last: {out['error']})"
        try:
            with self.db.begin() as conn:
                # the attempt only while its delivery exists (its watch may be deleted now)
                conn.execute(
                    delivery_attempts.insert().from_select(
                        [
                            "delivery_pk",
                            "attempted_at",
                            "status_code",
                            "latency_ms",
                            "error",
                            "response_head",
                        ],
                        sa.select(
                            deliveries.c.pk,
                            sa.literal(now, deliveries.c.created_at.type),
                            sa.literal(code, sa.Integer),
                            sa.literal(float(out["latency_ms"]), sa.Float),
                            sa.literal(out["error"], sa.Text),
                            sa.literal(out["head"], sa.Text),
                        ).where(deliveries.c.pk == d.pk),
                    )
                )
                # only a delivery still pending and still ours: one cancelled meanwhile (its
                # track erased or withdrawn, its watch deleted) stays cancelled, and a lease
                # taken over stays the taker's
                done = conn.execute(
                    deliveries.update()
                    .where(
                        deliveries.c.pk == d.pk,
                        deliveries.c.locked_by == self.name,
                        deliveries.c.status == "pending",
                    )
                    .values(status=state, attempts=attempts, locked_until=None, **values)
                )
                if done.rowcount == 0 and not self._exists(conn, d.pk):
                    return "cancelled"
                if watch_update:
                    conn.execute(
                        watches.update().where(watches.c.pk == d.watch_pk).values(**watch_update)
                    )
                if disable and d.event_type != "watch.disabled":
                    watch_rules.disable(conn, d.watch_pk, disable, now)
        except sa.exc.IntegrityError:  # the watch was deleted while this was being sent
            return "cancelled"
        return state

    @staticmethod
    def _exists(conn, pk: int) -> bool:
        found = conn.execute(sa.select(deliveries.c.pk).where(deliveries.c.pk == pk)).first()
        return found is not None

    # ------------------------------------------------------------ leases

    def renew(self, d) -> bool:
        """Right before sending: extend this delivery's lease; False when another worker
        took it over meanwhile, or it was cancelled: then it is not sent."""
        until = clock.now() + dt.timedelta(seconds=self.lease_s)  # the heartbeat extends it
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

    def renew_inflight(self) -> int:
        """Extend the leases of every delivery being sent now (the heartbeat)."""
        with self._lock:
            pks = list(self._inflight)
        if not pks:
            return 0
        until = clock.now() + dt.timedelta(seconds=self.lease_s)
        with self.db.begin() as conn:
            return conn.execute(
                deliveries.update()
                .where(
                    deliveries.c.pk.in_(pks),
                    deliveries.c.locked_by == self.name,
                    deliveries.c.status == "pending",
                )
                .values(locked_until=until)
            ).rowcount

    def _heartbeat(self) -> None:
        last = time.monotonic()
        while not self._closed.wait(min(0.25, self.lease_s / 3)):
            if time.monotonic() - last < self.lease_s / 3:
                continue
            last = time.monotonic()
            try:
                self.renew_inflight()
            except Exception as exc:  # noqa: BLE001  a database outage: the next beat retries
                logger.warning("delivery worker: lease renewal failed: %s", exc)

    # ------------------------------------------------------------ one delivery

    def deliver(self, d) -> str | None:
        """Renew, send, record one claimed delivery; never raises. The state, or None when
        it was not sent (taken over or cancelled, or the database is unreachable)."""
        state, out = None, None
        try:
            if not self.renew(d):
                return None
            out = self.send(d)
            state = self.record(d, out)
        except CatalogUnavailable as exc:  # its lease expires; sent again later
            logger.warning("delivery worker: %s", exc.detail)
            return None
        except Exception as exc:  # noqa: BLE001  a bug or a surprise: recorded, not fatal
            logger.exception("delivery %s: recording failed", d.id)
            reason = f"internal error: {type(exc).__name__}: {str(exc)[:300]}"
            failed = {"status_code": None, "head": None, "retry_after": None, "error": reason}
            failed["latency_ms"] = (out or {}).get("latency_ms", 0.0)
            try:
                state = self.record(d, failed)
            except Exception:  # noqa: BLE001
                logger.exception("delivery %s: the failure could not be recorded", d.id)
                return None
        logger.info(
            "webhook %s %s -> %s (%s, %.0f ms)",
            d.id,
            d.event_type,
            state,
            (out or {}).get("status_code") or (out or {}).get("error"),
            (out or {}).get("latency_ms", 0.0),
        )
        return state

    def _run_one(self, d) -> None:
        try:
            self.deliver(d)
        finally:
            with self._lock:
                self._inflight.pop(d.pk, None)
            self._changed.set()

    def _submit(self, claimed) -> list:
        with self._lock:
            for d in claimed:
                self._inflight[d.pk] = d.owner
        return [self._pool.submit(self._run_one, d) for d in claimed]

    # ------------------------------------------------------------ loops

    def housekeep(self) -> dict | None:
        """`housekeeping(db)` when HOUSEKEEPING_EVERY_S have passed since this worker last
        ran it (at once for a new worker); None when it was not due."""
        now = time.monotonic()
        if self._housekept_at is not None and now - self._housekept_at < HOUSEKEEPING_EVERY_S:
            return None
        self._housekept_at = now
        done = housekeeping(self.db)
        if any(done.values()):
            logger.info("housekeeping: %s", done)
        return done

    def run_once(self) -> int:
        """Housekeeping when due, then claim one batch, send it concurrently, record;
        returns how many were claimed."""
        self.housekeep()
        claimed = self.claim(self.batch)
        for f in self._submit(claimed):
            f.result()
        return len(claimed)

    def fill(self) -> int:
        """Claim as many deliveries as there are free senders, each account getting at most
        its fair share of them (the senders divided by one more than the accounts with
        work)."""
        with self._lock:
            free = self.concurrency - len(self._inflight)
            busy: dict[str, int] = {}
            for owner in self._inflight.values():
                busy[owner] = busy.get(owner, 0) + 1
        if free <= 0:
            return 0
        now = clock.now()
        with self.db.connect() as conn:
            waiting = set(
                conn.execute(
                    sa.select(watches.c.owner)
                    .distinct()
                    .join(deliveries, deliveries.c.watch_pk == watches.c.pk)
                    .where(self._due(now), _sendable())
                    .limit(1000)
                ).scalars()
            )
        accounts = len(waiting | set(busy)) or 1
        # n accounts with work share the senders as if there were n + 1: a sender stays free
        # for an account whose delivery comes due next, so slow receivers of the accounts
        # sending now (up to GENRE_WEBHOOK_TIMEOUT_S each) never make it wait
        share = max(1, self.concurrency // (accounts + 1))
        full = [o for o, n in busy.items() if n >= share]
        claimed = self.claim(min(free, self.batch), skip_owners=full, per_account=share, busy=busy)
        # one account past its share in this batch waits for the next round
        kept, extra = [], {}
        for d in claimed:
            n = busy.get(d.owner, 0) + extra.get(d.owner, 0)
            if n < share:
                kept.append(d)
                extra[d.owner] = extra.get(d.owner, 0) + 1
            else:
                self._release(d)
        self._submit(kept)
        return len(kept)

    def _release(self, d) -> None:
        with self.db.begin() as conn:
            conn.execute(
                deliveries.update()
                .where(deliveries.c.pk == d.pk, deliveries.c.locked_by == self.name)
                .values(locked_until=None)
            )

    def run(self, stop: threading.Event, idle_s: float = 1.0) -> None:
        """Deliver until `stop` is set: nothing stops the loop (a database outage is logged
        and waited out, any other error logged); then waits for the sends in flight."""
        while not stop.is_set():
            try:
                self.housekeep()
                n = self.fill()
            except CatalogUnavailable as exc:
                logger.warning("delivery worker: %s", exc.detail)
                n = 0
            except Exception:  # noqa: BLE001
                logger.exception("delivery worker: claiming failed")
                n = 0
            if n == 0:
                self._changed.wait(idle_s)
                self._changed.clear()
        self.close()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._closed.set()


def _sendable():
    """A watch's deliveries wait while it is disabled, except the `watch.disabled` event."""
    return sa.or_(watches.c.active.is_(True), deliveries.c.event_type == "watch.disabled")


def _round_robin(rows) -> list:
    """The rows in the order they are sent: one per account in turn, and within an account
    one per watch in turn, each watch's oldest first."""
    accounts: dict = {}
    for r in rows:  # already oldest first
        accounts.setdefault(r.owner, {}).setdefault(r.watch_pk, []).append(r)
    per_account = []
    for by_watch in accounts.values():
        queues = list(by_watch.values())
        order = []
        while queues:
            order += [q.pop(0) for q in queues]
            queues = [q for q in queues if q]
        per_account.append(order)
    out = []
    while per_account:
        out += [q.pop(0) for q in per_account]
        per_account = [q for q in per_account if q]
    return out
