"""Two accounts on one service, one of them over its budget (issue 30): does the polite one
notice?

    python loadtests/accounts_load.py --seconds 60 [--json loadtests/results/accounts.json]

Starts `bentoml serve` with a fresh SQLite catalog and tight budgets (GENRE_SEARCH_PER_MIN,
GENRE_WRITES_PER_MIN below), makes two keys, `polite` and `greedy`, each uploading a few
clips first, then runs Locust (as a library, headless) twice for --seconds each: both
accounts at once, and the polite account alone. Each account's users search (`GET
/tracks/{id}/similar?k=10`, ten to one) and upload (`POST /tracks`, clips it already has:
the duplicate check runs, the models do not); the polite users wait 0.5-1.5 s between
requests and stay within their budget, the greedy ones wait --greedy-wait (0.1 s: 40
requests/s from 4 users, ten times the search budget; 0: a flood at full speed). Printed per
account and run: the share of 429s and the p50/p95 of its answered requests; then the polite
account's p95 with the greedy one beside it over its p95 alone (target: at most 1.2).

Client and server share this machine's CPUs, so the greedy account's own load generator
competes with the service and the polite client. By default the greedy users run in a
process of their own (one gevent loop each: before, the greedy greenlets delayed the polite
ones' reading of their replies inside one loop, which counted as latency), the CPU time of
that process and of the service are measured in each phase, and a third phase runs the
polite account alone beside an idle CPU-bound process burning what the greedy client
burned (`polite alone + burner`): its p95 separates what the flood costs the service from
what generating it costs the machine. `--one-process` runs both accounts in one Locust, as
before.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from gevent import monkey

monkey.patch_all()

import gevent  # noqa: E402
import numpy as np  # noqa: E402
import requests  # noqa: E402
from locust import HttpUser, between, constant, task  # noqa: E402
from locust.env import Environment  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src"))

from loadtests.service_process import ServedService  # noqa: E402

SEARCH_PER_MIN = 240  # default: the polite users' ~2 requests/s in all stay well within it
WRITES_PER_MIN = 30
TARGET_RATIO = 1.2


class Account:
    def __init__(self, name: str, key: str, track_ids: list[str], clips: list[Path]):
        self.name, self.key, self.track_ids, self.clips = name, key, track_ids, clips
        self.status: Counter = Counter()
        self.ms: list[float] = []

    def record(self, status: int, ms: float) -> None:
        self.status[status] += 1
        if status < 400:
            self.ms.append(ms)

    def summary(self) -> dict:
        n = sum(self.status.values())
        ms = np.asarray(self.ms or [np.nan])
        return {
            "requests": n,
            "share_429": round(self.status[429] / n, 3) if n else None,
            "other_errors": sum(c for s, c in self.status.items() if s >= 400 and s != 429),
            "p50_ms": round(float(np.percentile(ms, 50)), 1),
            "p95_ms": round(float(np.percentile(ms, 95)), 1),
        }


def user_class(account: Account, wait):
    class AccountUser(HttpUser):
        wait_time = wait

        def _send(self, method: str, path: str, **kw):
            with self.client.request(
                method,
                path,
                headers={"Authorization": f"Bearer {account.key}"},
                name=f"{account.name} {path.split('/')[1]}",
                catch_response=True,
                **kw,
            ) as r:
                account.record(r.status_code, r.elapsed.total_seconds() * 1000)
                if r.status_code in (200, 201, 429):
                    r.success()  # a 429 is the budget working, not a failure
                else:
                    r.failure(f"{r.status_code}: {r.text[:200]}")

        @task(10)
        def search(self):
            tid = account.track_ids[np.random.randint(len(account.track_ids))]
            self._send("GET", f"/tracks/{tid}/similar?k=10")

        @task(1)
        def upload(self):
            clip = account.clips[np.random.randint(len(account.clips))]
            with open(clip, "rb") as f:
                self._send("POST", "/tracks", files={"audio": f}, data={"consent": "search"})

    AccountUser.__name__ = f"{account.name.title()}User"
    return AccountUser


def run(host: str, accounts: list[tuple[Account, object, int]], seconds: float) -> None:
    classes = []
    for account, wait, users in accounts:
        cls = user_class(account, wait)
        cls.fixed_count = users
        classes.append(cls)
    env = Environment(user_classes=classes, host=host)
    runner = env.create_local_runner()
    runner.start(sum(u for _, _, u in accounts), spawn_rate=100)
    gevent.spawn_later(seconds, runner.quit)
    runner.greenlet.join()


def _greedy_only(args) -> None:
    """The greedy users alone, in this process (started by main): its summary and the CPU
    seconds this process used, as JSON on the last line of stdout."""
    spec = json.loads(args.greedy_only)
    account = Account("greedy", spec["key"], spec["ids"], [Path(c) for c in spec["clips"]])
    before = resource.getrusage(resource.RUSAGE_SELF)
    run(spec["host"], [(account, constant(spec["wait"]), spec["users"])], spec["seconds"])
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(json.dumps({"summary": account.summary(), "cpu_s": cpu}), flush=True)


def _burner(share: float) -> subprocess.Popen:
    """A process that keeps `share` of one CPU busy (10 ms periods), doing nothing useful."""
    code = (
        "import time\n"
        f"busy = 0.01 * {min(max(share, 0.0), 1.0)}\n"
        "while True:\n"
        "    t = time.perf_counter()\n"
        "    while time.perf_counter() - t < busy:\n"
        "        pass\n"
        "    time.sleep(max(0.0, 0.01 - busy))\n"
    )
    return subprocess.Popen([sys.executable, "-c", code])


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--polite-users", type=int, default=2)
    ap.add_argument("--greedy-users", type=int, default=4)
    ap.add_argument("--clips", type=int, default=3, help="clips each account uploads first")
    ap.add_argument(
        "--greedy-wait",
        type=float,
        default=0.1,
        help="seconds each greedy user waits between requests (0: a flood at full speed)",
    )
    ap.add_argument("--search-per-min", type=int, default=SEARCH_PER_MIN)
    ap.add_argument("--writes-per-min", type=int, default=WRITES_PER_MIN)
    ap.add_argument("--json", type=Path)
    ap.add_argument(
        "--one-process",
        action="store_true",
        help="both accounts' users in this one Locust process (no burner phase)",
    )
    ap.add_argument("--greedy-only", help=argparse.SUPPRESS)  # the greedy process (internal)
    args = ap.parse_args(argv)
    if args.greedy_only:
        return _greedy_only(args)
    data = Path(os.environ.get("GENRE_DATA", REPO.parent / "shared" / "data"))
    clips = sorted((data / "gtzan-samples").glob("*.wav"))[: 2 * args.clips]
    db = Path(tempfile.mkdtemp(prefix="accounts-load-")) / "catalog.sqlite3"
    env = {
        "GENRE_DB_URL": f"sqlite:///{db}",
        "GENRE_SEARCH_PER_MIN": str(args.search_per_min),
        "GENRE_WRITES_PER_MIN": str(args.writes_per_min),
        "GENRE_DELIVER_IN_SERVICE": "0",
    }
    svc = ServedService(env)
    try:
        keys = {}
        for name in ("polite", "greedy"):
            out = subprocess.run(
                [sys.executable, "-m", "genre_detector", "keys", "create", name],
                env={**os.environ, **env},
                capture_output=True,
                text=True,
                cwd=REPO,
                check=True,
            )
            keys[name] = out.stdout.strip().splitlines()[-1]
        svc.wait_ready()
        accounts = {}
        for i, name in enumerate(("polite", "greedy")):
            mine = clips[i * args.clips : (i + 1) * args.clips]
            ids = []
            for clip in mine:
                with open(clip, "rb") as f:
                    r = requests.post(
                        f"{svc.url}/tracks",
                        files={"audio": f},
                        data={"consent": "search"},
                        headers={"Authorization": f"Bearer {keys[name]}"},
                        timeout=300,
                    )
                r.raise_for_status()
                ids.append(r.json()["id"])
            accounts[name] = (keys[name], ids, mine)

        def fresh(name):
            return Account(name, *accounts[name])

        polite_wait = between(0.5, 1.5)
        together = {"polite": fresh("polite"), "greedy": fresh("greedy")}
        server_cpu, greedy_cpu, greedy_summary = {}, None, None
        print(f"both accounts, {args.seconds:g} s ...", flush=True)
        cpu0 = svc.cpu_seconds()
        if args.one_process:
            run(
                svc.url,
                [
                    (together["polite"], polite_wait, args.polite_users),
                    (together["greedy"], constant(args.greedy_wait), args.greedy_users),
                ],
                args.seconds,
            )
        else:
            spec = {
                "host": svc.url,
                "key": keys["greedy"],
                "ids": accounts["greedy"][1],
                "clips": [str(c) for c in accounts["greedy"][2]],
                "wait": args.greedy_wait,
                "users": args.greedy_users,
                "seconds": args.seconds,
            }
            greedy = subprocess.Popen(
                [sys.executable, __file__, "--greedy-only", json.dumps(spec)],
                stdout=subprocess.PIPE,
                text=True,
                cwd=REPO,
            )
            time.sleep(0.5)  # its users spawned: both phases overlap fully
            run(svc.url, [(together["polite"], polite_wait, args.polite_users)], args.seconds)
            out, _ = greedy.communicate(timeout=args.seconds + 120)
            got = json.loads(out.strip().splitlines()[-1])
            greedy_cpu = got["cpu_s"]
            greedy_summary = got["summary"]
        server_cpu["together"] = svc.cpu_seconds() - cpu0
        alone = fresh("polite")
        print(f"the polite account alone, {args.seconds:g} s ...", flush=True)
        cpu0 = svc.cpu_seconds()
        run(svc.url, [(alone, polite_wait, args.polite_users)], args.seconds)
        server_cpu["polite_alone"] = svc.cpu_seconds() - cpu0
        burned = None
        if greedy_cpu is not None:
            burned = fresh("polite")
            share = greedy_cpu / args.seconds
            print(
                f"the polite account alone beside a burner of {share:.2f} CPU, "
                f"{args.seconds:g} s ...",
                flush=True,
            )
            burner = _burner(share)
            try:
                cpu0 = svc.cpu_seconds()
                run(svc.url, [(burned, polite_wait, args.polite_users)], args.seconds)
                server_cpu["polite_alone_burner"] = svc.cpu_seconds() - cpu0
            finally:
                burner.kill()
                burner.wait()
    finally:
        svc.stop()
    report = {
        "budgets": {"search_per_min": args.search_per_min, "writes_per_min": args.writes_per_min},
        "seconds": args.seconds,
        "users": {"polite": args.polite_users, "greedy": args.greedy_users},
        "greedy_wait_s": args.greedy_wait,
        "greedy_in_own_process": not args.one_process,
        "together": {
            "polite": together["polite"].summary(),
            "greedy": greedy_summary or together["greedy"].summary(),
        },
        "polite_alone": alone.summary(),
        "server_cpu_s": {k: round(v, 2) for k, v in server_cpu.items()},
        "greedy_client_cpu_s": None if greedy_cpu is None else round(greedy_cpu, 2),
    }
    ratio = report["together"]["polite"]["p95_ms"] / report["polite_alone"]["p95_ms"]
    report["polite_p95_ratio"] = round(ratio, 3)
    report["within_target"] = bool(ratio <= TARGET_RATIO)
    runs = [(f"together: {n}", s) for n, s in report["together"].items()]
    runs.append(("polite alone", report["polite_alone"]))
    if burned is not None:
        report["polite_alone_burner"] = burned.summary()
        runs.append(("polite alone + burner", report["polite_alone_burner"]))
        r2 = report["together"]["polite"]["p95_ms"] / report["polite_alone_burner"]["p95_ms"]
        report["polite_p95_ratio_vs_burner"] = round(r2, 3)
    print(f"{'run':<24} {'requests':>8} {'429 share':>9} {'p50 ms':>8} {'p95 ms':>8}")
    for label, s in runs:
        print(
            f"{label:<24} {s['requests']:>8} {s['share_429']!s:>9} {s['p50_ms']:>8} "
            f"{s['p95_ms']:>8}"
        )
    print(f"service CPU seconds per phase: {report['server_cpu_s']}")
    if greedy_cpu is not None:
        print(f"greedy client CPU seconds: {greedy_cpu:.1f} over {args.seconds:g} s")
    print(
        f"polite p95 beside the greedy account / alone: {ratio:.2f} "
        f"(target <= {TARGET_RATIO}: {'met' if report['within_target'] else 'MISSED'})"
    )
    if burned is not None:
        print(
            "polite p95 beside the greedy account / alone beside a burner of the greedy "
            f"client's CPU: {report['polite_p95_ratio_vs_burner']:.2f}"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
