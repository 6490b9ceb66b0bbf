"""Nothing lost, counted (issue 22): ingests against watches while the receiver is down, then
busy, then fine, and the delivery worker is killed and restarted; every check printed.
Exit 1 on any violation. Writes loadtests/results/watch-no-loss.json.

    python loadtests/watch_no_loss.py                          # SQLite file, ~2 minutes
    python loadtests/watch_no_loss.py --engine postgresql      # pgserver started here
    python loadtests/watch_no_loss.py --ingests 60 --watches 6 --down-s 4 --busy-s 3 --no-kill

The run (times from the first ingest; tracks and watches are synthetic, as in
watch_bench.py):

* a catalog (SQLite file, or PostgreSQL) with `--base` reference tracks (search consent
  only) and `--watches` watches made by `watches.create` (genre, like, both; some excluding
  artists; two owned by an account that also uploads, whose own tracks must never match),
  thresholds set so that a watch matches ~3-12 % of tracks;
* one `python -m genre_detector deliver` worker process from the start (GENRE_WEBHOOK_
  BACKOFF_SCALE `--backoff-scale`: retries after 0, 0.05, 3, 18, 72 ... s at 0.01);
* `--ingests` tracks with the notify consent through `catalog.ingest.add`, evenly over
  `--ingest-s` seconds, by five accounts;
* a receiver on 127.0.0.1 (watch_bench.HookReceiver: verifies every signature with
  `standardwebhooks` against the secret of the watch the body names) that is **down**
  (nothing listens: connection refused) for `--down-s`, then answers **503 with
  Retry-After** `--retry-after` for `--busy-s`, then **200**;
* while down, `--erase` tracks are erased (`ingest.erase`) and `--withdraw` have their
  notify consent withdrawn (`ingest.set_notify`), each `--forget-after` seconds after its
  ingest (default 6-9 s: after its third failed attempt, before its fourth);
* in the 200 phase, at the `--kill-at`-th successful receipt, the receiver SIGKILLs the
  worker *while handling that request* (so it was sent and accepted but never recorded:
  the at-least-once case) and the worker is started again at once. Its other leased
  deliveries come back after delivery.LEASE_S (30 s since issue 28; 60 s before).

It stops when every delivery left is delivered (or after `--max-s`) and checks:
every expected (watch, track) pair (the matches table, less erased and withdrawn tracks)
received with a 2xx at least once; one webhook-id per pair (duplicates only with the same
id); nothing received for an erased or withdrawn track after it was forgotten, and their
deliveries cancelled; every request verified; nothing received that is not in the matches
table, and no match of a watch's own account; Retry-After honoured after each 503; no
delivery failed or left pending.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
for p in (str(REPO / "src"), str(REPO)):
    if p not in sys.path:
        sys.path.insert(0, p)

import sqlalchemy as sa  # noqa: E402

from loadtests.pg import Postgres  # noqa: E402
from loadtests.watch_bench import (  # noqa: E402
    GENRES,
    NOTIFY,
    SEARCH_ONLY,
    HookReceiver,
    Synthetic,
    embedding_dim,
    start_worker,
    watch_specs,
)

RESULTS = REPO / "loadtests" / "results" / "watch-no-loss.json"
UPLOADERS = [f"label-{i}" for i in range(5)]
TOLERANCE_S = 0.05  # clock slack when checking Retry-After


def _q(db, sql: str, **params):
    with db.connect() as conn:
        return conn.execute(sa.text(sql), params).fetchall()


class Run:
    def __init__(self, args, url: str, workdir: Path, dim: int):
        from genre_detector.catalog.db import Catalog

        self.args, self.url, self.workdir = args, url, workdir
        self.db = Catalog.open(url, dim=dim)
        self.syn = Synthetic(dim, args.seed)
        self.secrets: dict[str, list[str]] = {}
        self.watch_owner: dict[str, str] = {}
        self.track_owner: dict[str, str] = {}
        self.ingested_at: dict[str, float] = {}
        self.forgotten: dict[str, tuple[str, float]] = {}  # track -> (how, when)
        self.events: list[tuple[float, str]] = []
        self.worker = None
        self.workers_started = 0
        self.killed = threading.Event()
        self.kill_info: dict = {}
        self.ok_count = 0
        self.lock = threading.Lock()
        self.t0 = 0.0
        self.t0_wall = 0.0
        self.ingest_errors = 0
        self.forget_postponed = 0

    def note(self, what: str) -> None:
        t = time.monotonic() - self.t0 if self.t0 else 0.0
        self.events.append((round(t, 2), what))
        print(f"  [{t:6.1f} s] {what}", flush=True)

    # -- setup

    def setup(self) -> None:
        from genre_detector.catalog import ingest, vectors, watches

        a = self.args
        base = [self.syn.record("base") for _ in range(a.base)]
        ingest.add_many(self.db, "base-owner", base, SEARCH_ONLY)
        rows = _q(self.db, "select pk, id from tracks")
        with self.db.connect() as conn:
            refs = {r.id: vectors.track_vector(self.db, conn, r.pk) for r in rows}
        specs = watch_specs(a.watches, self.syn, refs, a.seed, rates=(0.03, 0.12), per_owner=4)
        for i, s in enumerate(specs):
            if i < 2:
                s["owner"] = UPLOADERS[0]  # an uploader's own watches: never its own tracks
            body = {k: v for k, v in s.items() if k != "owner"}
            w, secret = watches.create(
                self.db, s["owner"], {**body, "webhook_url": self.receiver.url}, GENRES
            )
            self.secrets[w["id"]] = [secret]
            self.watch_owner[w["id"]] = s["owner"]

    # -- the receiver's replies, and the kill

    def answer(self, t: float):
        a = self.args
        if t < self.t0 + a.down_s + a.busy_s:
            return 503, {"Retry-After": str(a.retry_after)}
        with self.lock:
            self.ok_count += 1
            kill = (not a.no_kill) and self.ok_count == a.kill_at and not self.killed.is_set()
            if kill and self.worker is not None and self.worker.poll() is None:
                os.kill(self.worker.pid, signal.SIGKILL)  # mid-request: sent, never recorded
                self.kill_info = {"at_s": round(t - self.t0, 2), "pid": self.worker.pid}
                self.killed.set()
        return 200, {}

    def start_worker(self) -> None:
        self.workers_started += 1
        self.worker = start_worker(self.url, self.workdir, f"deliver-{self.workers_started}")
        self.note(f"worker {self.workers_started} started (pid {self.worker.pid})")

    # -- ingests and forgetting

    def ingest_loop(self, stop: threading.Event) -> None:
        from genre_detector.catalog import ingest
        from genre_detector.catalog.db import CatalogUnavailable

        a = self.args
        rng = np.random.default_rng(a.seed + 5)
        pending_forget: list[tuple[float, str, str]] = []  # (due, how, track)
        want = {"erase": a.erase, "withdraw": a.withdraw}
        step = a.ingest_s / max(a.ingests, 1)
        for i in range(a.ingests):
            if stop.is_set():
                return
            due = self.t0 + i * step
            while time.monotonic() < due:
                self._forget_due(pending_forget)
                time.sleep(min(0.01, max(0.0, due - time.monotonic())))
            owner = UPLOADERS[i % len(UPLOADERS)]
            rec = self.syn.record("track")
            for _ in range(20):
                try:
                    row, _ = ingest.add(self.db, owner, rec, NOTIFY)
                    break
                except CatalogUnavailable:
                    self.ingest_errors += 1
                    time.sleep(0.2)
            else:
                raise RuntimeError("the catalog stayed locked for 20 tries")
            now = time.monotonic()
            self.track_owner[row["id"]] = owner
            self.ingested_at[row["id"]] = now - self.t0
            # choose tracks to forget among those that matched, ingested early enough that
            # the forgetting happens while the receiver is still down
            lo, hi = a.forget_after
            how = max(want, key=want.get)  # erase and withdraw by turns
            if want[how] > 0 and now - self.t0 + hi < a.down_s - 0.2:
                n = _q(
                    self.db, "select count(*) from watch_matches where track_id = :t", t=row["id"]
                )[0][0]
                if n:
                    want[how] -= 1
                    pending_forget.append((now + rng.uniform(lo, hi), how, row["id"]))
            self._forget_due(pending_forget)
        while pending_forget and not stop.is_set():
            self._forget_due(pending_forget)
            time.sleep(0.01)
        self.note(f"{a.ingests} ingests done")

    def _forget_due(self, pending: list) -> None:
        from genre_detector.catalog import ingest

        now = time.monotonic()
        for item in [p for p in pending if p[0] <= now]:
            due, how, track = item
            if self.args.forget_when == "idle" and self._busy(track):
                # a worker holds or is about to take one of its deliveries: try again shortly
                self.forget_postponed += 1
                pending[pending.index(item)] = (now + 0.1, how, track)
                continue
            owner = self.track_owner[track]
            if how == "erase":
                assert ingest.erase(self.db, owner, track)
            else:
                assert ingest.set_notify(self.db, owner, track, False)["consent"] == ["search"]
            self.forgotten[track] = (how, time.monotonic() - self.t0)  # after it committed
            pending.remove(item)

    def _busy(self, track: str) -> bool:
        """Whether a delivery of the track is leased or due within a second (--forget-when
        idle: forget a track only while no worker can be sending it)."""
        rows = _q(
            self.db,
            "select locked_until, next_attempt_at from deliveries "
            "where track_id = :t and status = 'pending'",
            t=track,
        )
        now = dt.datetime.now(dt.UTC)
        soon = now + dt.timedelta(seconds=1)
        for locked_until, next_at in rows:
            locked_until, next_at = _aware(locked_until), _aware(next_at)
            if (locked_until is not None and locked_until > now) or next_at < soon:
                return True
        return False

    # -- the run

    def run(self) -> dict:
        a = self.args
        self.receiver = HookReceiver(self.secrets, answer=self.answer)  # port reserved
        self.setup()
        self.start_worker()
        # the worker starts up (imports, migrations) before the clock starts
        t_end = time.monotonic() + 120
        while b"running" not in self.worker.log_path.read_bytes():
            if time.monotonic() > t_end or self.worker.poll() is not None:
                raise RuntimeError(self.worker.log_path.read_text()[-2000:])
            time.sleep(0.1)
        self.t0 = time.monotonic()
        self.t0_wall = time.time()
        self.note(f"receiver down (connection refused) for {a.down_s} s; ingests start")
        stop = threading.Event()
        ingester = threading.Thread(target=self.ingest_loop, args=(stop,), daemon=True)
        ingester.start()
        up = False
        violations: list[str] = []
        deadline = self.t0 + a.max_s
        last_check = 0.0
        done = False
        while time.monotonic() < deadline:
            now = time.monotonic() - self.t0
            if not up and now >= a.down_s:
                self.receiver.start()
                up = True
                self.note(f"receiver up: 503 Retry-After {a.retry_after} for {a.busy_s} s")
            if self.killed.is_set() and self.workers_started == 1:
                self.worker.wait()
                self.note(f"worker 1 SIGKILLed mid-request (receipt #{a.kill_at})")
                self.start_worker()
            if self.worker.poll() is not None and not self.killed.is_set():
                violations.append(f"the worker exited by itself: {self.worker.returncode}")
                break
            if self.workers_started > 1 and self.worker.poll() is not None:
                violations.append(f"the restarted worker exited: {self.worker.returncode}")
                break
            if not ingester.is_alive() and up and time.monotonic() - last_check > 1.0:
                last_check = time.monotonic()
                left = _q(self.db, "select count(*) from deliveries where status = 'pending'")
                if left[0][0] == 0:
                    done = True
                    break
            time.sleep(0.05)
        stop.set()
        ingester.join(30)
        elapsed = time.monotonic() - self.t0
        self.note("all deliveries settled" if done else f"stopped after {a.max_s} s")
        if self.worker.poll() is None:
            self.worker.send_signal(signal.SIGTERM)
            try:
                self.worker.wait(30)
            except Exception:  # noqa: BLE001
                self.worker.kill()
        self.receiver.stop()
        if not done:
            violations.append(f"deliveries still pending after {a.max_s} s")
        report = self.check(violations)
        report["seconds"] = round(elapsed, 1)
        return report

    # -- the checks

    def check(self, violations: list[str]) -> dict:
        log = self.receiver.entries()
        for e in log:
            e["t"] -= self.t0
        matches = _q(
            self.db,
            "select w.id as watch_id, m.track_id from watch_matches m "
            "join watches w on w.pk = m.watch_pk",
        )
        matched = {(r.watch_id, r.track_id) for r in matches}
        forgotten = set(self.forgotten)
        expected = {p for p in matched if p[1] not in forgotten}
        by_pair: dict = defaultdict(list)
        for e in log:
            if e.get("type") == "watch.match":
                by_pair[(e["watch_id"], e["track_id"])].append(e)
        delivered = {p for p, es in by_pair.items() if any(e["status"] < 300 for e in es)}
        missing = expected - delivered
        multi_id = {p: {e["id"] for e in es} for p, es in by_pair.items()}
        multi_id = {p: ids for p, ids in multi_id.items() if len(ids) > 1}
        dup_pairs = {p for p, es in by_pair.items() if sum(e["status"] < 300 for e in es) > 1}
        after_forget = [
            e
            for e in log
            if e.get("track_id") in self.forgotten and e["t"] >= self.forgotten[e["track_id"]][1]
        ]
        unverified = [e for e in log if not e["verified"]]
        # erasure deletes a track's matches (nothing of it stays): a pair delivered before its
        # track was erased is legitimate; what reached the receiver after is `after_forget`
        phantom = {p for p in set(by_pair) - matched if p[1] not in forgotten}
        own = [
            p
            for p in matched
            if p[1] in self.track_owner and self.watch_owner.get(p[0]) == self.track_owner[p[1]]
        ]
        # Retry-After: the next request with the same id after a 503 waits for it
        early = []
        by_id: dict = defaultdict(list)
        for e in log:
            by_id[e["id"]].append(e)
        for es in by_id.values():
            es.sort(key=lambda e: e["t"])
            for prev, nxt in zip(es, es[1:]):
                gap = nxt["t"] - prev["t"]
                if prev["status"] == 503 and gap < self.args.retry_after - TOLERANCE_S:
                    early.append(round(gap, 3))
        states = dict(
            (r[0], int(r[1]))
            for r in _q(self.db, "select status, count(*) from deliveries group by status")
        )
        forgotten_states = _q(self.db, "select track_id, status from deliveries")
        # a forgotten track's delivery may have gone out before it was forgotten (then
        # "delivered"; anything sent after is `after_forget`); none may stay pending
        not_cancelled = sorted(
            {t for t, s in forgotten_states if t in forgotten and s == "pending"}
        )
        attempts = _q(
            self.db,
            "select status_code, count(*) from delivery_attempts group by status_code",
        )
        resurrected = []
        for d in _q(
            self.db,
            "select pk, id, track_id, status from deliveries where status != 'cancelled'",
        ):
            if d.track_id not in forgotten:
                continue
            times = [
                (round(_aware(a.attempted_at).timestamp() - self.t0_wall, 2), a.status_code)
                for a in _q(
                    self.db,
                    "select attempted_at, status_code from delivery_attempts "
                    "where delivery_pk = :pk order by pk",
                    pk=d.pk,
                )
            ]
            resurrected.append(
                {
                    "delivery": d.id,
                    "track": d.track_id,
                    "status": d.status,
                    "forgotten_at_s": round(self.forgotten[d.track_id][1], 2),
                    "how": self.forgotten[d.track_id][0],
                    "attempts_at_s": times,
                }
            )
        checks = [
            (
                "expected pairs delivered at least once",
                len(expected) - len(missing),
                len(expected),
                not missing,
            ),
            ("pairs with more than one webhook-id", len(multi_id), 0, not multi_id),
            ("requests after a track was erased/withdrawn", len(after_forget), 0, not after_forget),
            (
                "erased/withdrawn tracks' deliveries left pending",
                len(not_cancelled),
                0,
                not not_cancelled,
            ),
            ("requests failing signature verification", len(unverified), 0, not unverified),
            ("received pairs not in the matches table", len(phantom), 0, not phantom),
            ("matches of a watch's own account", len(own), 0, not own),
            ("requests sooner than Retry-After after a 503", len(early), 0, not early),
            ("deliveries failed", states.get("failed", 0), 0, not states.get("failed")),
            ("deliveries left pending", states.get("pending", 0), 0, not states.get("pending")),
        ]
        for name, got, want, ok in checks:
            if not ok:
                violations.append(f"{name}: {got} (want {want})")
        kinds = defaultdict(int)
        for how, _ in self.forgotten.values():
            kinds[how] += 1
        return {
            "ok": not violations,
            "violations": violations,
            "checks": [
                {"check": n, "value": g, "want": w, "ok": bool(ok)} for n, g, w, ok in checks
            ],
            "counts": {
                "ingests": len(self.track_owner),
                "watches": len(self.secrets),
                "matches": len(matched),
                "forgotten": dict(kinds),
                "forgotten_pairs": len(matched) - len(expected),
                "expected_pairs": len(expected),
                "requests": len(log),
                "requests_by_status": {
                    str(k): v for k, v in sorted(_count(e["status"] for e in log).items())
                },
                "attempts_by_status_code": {str(k): int(v) for k, v in attempts},
                "pairs_received_twice_or_more_with_2xx": len(dup_pairs),
                "deliveries_by_status": states,
                "workers_started": self.workers_started,
                "ingest_retries_db_locked": self.ingest_errors,
                "forget_postponed_busy": self.forget_postponed,
            },
            "kill": self.kill_info,
            "events": self.events,
            "examples": {
                "missing": [list(p) for p in sorted(missing)[:5]],
                "after_forget": [
                    {k: e.get(k) for k in ("id", "track_id", "t", "status")}
                    for e in after_forget[:5]
                ],
                "multi_id": [[*p, sorted(ids)] for p, ids in list(multi_id.items())[:5]],
                "forgotten_but_not_cancelled": resurrected[:10],
            },
        }


def _aware(t):
    if t is None:
        return None
    if isinstance(t, str):
        t = dt.datetime.fromisoformat(t)
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def _count(values) -> dict:
    out: dict = defaultdict(int)
    for v in values:
        out[v] += 1
    return out


def print_report(r: dict) -> None:
    c = r["counts"]
    print(
        f"\n{c['ingests']} ingests, {c['watches']} watches, {c['matches']} matches "
        f"({c['forgotten_pairs']} of erased/withdrawn tracks: {dict(c['forgotten'])}); "
        f"{c['requests']} requests received {c['requests_by_status']}; worker started "
        f"{c['workers_started']}x; {c['pairs_received_twice_or_more_with_2xx']} pair(s) "
        f"accepted twice (same webhook-id); deliveries {c['deliveries_by_status']}; "
        f"{r['seconds']} s"
    )
    width = max(len(x["check"]) for x in r["checks"])
    for x in r["checks"]:
        mark = "ok  " if x["ok"] else "FAIL"
        print(f"  {mark} {x['check']:{width}s} {x['value']:>6} (want {x['want']})")
    for x in r["examples"].get("forgotten_but_not_cancelled", []):
        print(
            f"  {x['how']} at {x['forgotten_at_s']} s, yet delivery {x['delivery']} ended "
            f"{x['status']}; its attempts (s, HTTP status): {x['attempts_at_s']}"
        )
    print("\nno violations" if r["ok"] else "\nVIOLATIONS:\n  " + "\n  ".join(r["violations"]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--engine", choices=("sqlite", "postgresql"), default="sqlite")
    p.add_argument("--postgres-url", help="use this server (a database is made and dropped)")
    p.add_argument("--ingests", type=int, default=500)
    p.add_argument("--watches", type=int, default=20)
    p.add_argument("--base", type=int, default=60, help="reference tracks for `like`")
    p.add_argument("--ingest-s", type=float, default=30.0, help="seconds the ingests span")
    p.add_argument("--down-s", type=float, default=12.0, help="receiver refuses connections")
    p.add_argument("--busy-s", type=float, default=8.0, help="then answers 503 Retry-After")
    p.add_argument("--retry-after", type=int, default=2, help="seconds, in each 503")
    p.add_argument("--erase", type=int, default=10, help="tracks erased while down")
    p.add_argument("--withdraw", type=int, default=10, help="tracks withdrawn while down")
    p.add_argument(
        "--forget-after",
        type=lambda s: tuple(float(x) for x in s.split(",")),
        default=(6.0, 9.0),
        help="LO,HI seconds after its ingest a track is forgotten (default 6,9: between "
        "its third and fourth attempt at backoff scale 0.01)",
    )
    p.add_argument(
        "--forget-when",
        choices=("any", "idle"),
        default="any",
        help="any: at the scheduled time, whatever the worker is doing (as users do); idle: "
        "only while none of the track's deliveries is leased or due within a second",
    )
    p.add_argument("--kill-at", type=int, default=100, help="SIGKILL at this 2xx receipt")
    p.add_argument("--no-kill", action="store_true", help="do not kill the worker")
    p.add_argument("--backoff-scale", type=float, default=0.01)
    p.add_argument("--max-s", type=float, default=280.0, help="give up after (seconds)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", type=Path, help="default: a temporary folder, removed")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    os.environ["GENRE_WEBHOOK_BACKOFF_SCALE"] = str(args.backoff_scale)  # the worker's too
    os.environ["GENRE_WEBHOOK_ALLOW_HOSTS"] = "127.0.0.1"
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="watch-no-loss-"))
    workdir.mkdir(parents=True, exist_ok=True)
    dim, _ = embedding_dim()
    print(
        f"watch no-loss: {args.engine}, {args.ingests} ingests, {args.watches} watches; "
        f"receiver down {args.down_s} s, 503 {args.busy_s} s, then 200; "
        + ("no kill" if args.no_kill else f"worker SIGKILLed at 2xx receipt #{args.kill_at}")
        + f"; workdir {workdir}",
        flush=True,
    )
    pg = None
    try:
        if args.engine == "sqlite":
            url = f"sqlite:///{workdir / 'catalog.sqlite3'}"
        else:
            pg = Postgres(args.postgres_url, workdir)
            url = pg.new_database("watch_no_loss")
        run = Run(args, url, workdir, dim)
        try:
            report = run.run()
        finally:
            if run.worker is not None and run.worker.poll() is None:
                run.worker.kill()
            run.db.close()
    finally:
        if pg is not None:
            pg.close()
    report.update(
        engine=args.engine,
        date=time.strftime("%Y-%m-%d %H:%M:%S"),
        command=" ".join(
            ["python loadtests/watch_no_loss.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        settings={
            k: (list(v) if isinstance(v, tuple) else v)
            for k, v in vars(args).items()
            if k not in ("workdir", "out", "postgres_url")
        },
    )
    print_report(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=str))
    print(f"saved {args.out}")
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
