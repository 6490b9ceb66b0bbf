"""Two accounts on one service, one of them over its budget (issue 30): does the polite one
notice?

    python loadtests/accounts_load.py --seconds 60 [--rounds 3] [--json FILE.json]

Starts `bentoml serve` with a fresh SQLite catalog and tight budgets (GENRE_SEARCH_PER_MIN,
GENRE_WRITES_PER_MIN below), makes two keys, `polite` and `greedy`, each uploading a few
clips first, then runs Locust (as a library, headless) twice for --seconds each: both
accounts at once, and the polite account alone. Each account's users search (`GET
/tracks/{id}/similar?k=10`, ten to one) and upload (`POST /tracks`, clips it already has:
the duplicate check runs, the models do not); the polite users wait 0.5-1.5 s between
requests and stay within their budget, the greedy ones wait --greedy-wait (0.1 s: 40
requests/s from 4 users, ten times the search budget; 0: a flood at full speed). Printed per
account and run: the share of 429s and the p50/p95 of its answered requests; then the polite
account's p95 with the greedy one beside it over its p95 alone (target: at most 1.2), with a
95 % bootstrap interval (the p95 of a few hundred requests moves by more than the target's
20 % between runs). With --rounds N the phases take turns N times and each condition's
requests are pooled, so drift on the machine falls on every condition alike. Search and
upload latencies are also given apart: the uploads (1 in 11 requests, each a 1.3 MB body)
are the slowest tenth, so the overall p95 sits among them.

Client and server share this machine's CPUs, so the greedy account's own load generator
competes with the service and the polite client. By default the greedy users run in a
process of their own (one gevent loop each: before, the greedy greenlets delayed the polite
ones' reading of their replies inside one loop, which counted as latency), the CPU time of
that process and of the service are measured in each phase, and a third phase runs the
polite account alone beside an idle CPU-bound process burning what the greedy client
burned (`polite alone + burner`): its p95 separates what the flood costs the service from
what generating it costs the machine. A fourth phase runs the polite account beside the
other account's users sending about its whole budget and no more (`--full-budget-wait`, 1 s:
4 users, ~220 searches and ~20 uploads a minute against 240 and 30): the polite p95 beside
the flood over the one beside that is what going over the budget adds, and the one beside
that over alone is what the other account's allowed traffic costs. `--one-process` runs
both accounts in one Locust, as before (no burner or full-budget phase).
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
        self.by_kind: dict[str, list[float]] = {"search": [], "upload": []}

    def record(self, status: int, ms: float, kind: str = "search") -> None:
        self.status[status] += 1
        if status < 400:
            self.ms.append(ms)
            self.by_kind[kind].append(ms)

    def raw(self) -> dict:
        """What the greedy process sends back: its statuses and answered latencies."""
        return {"status": dict(self.status), "ms": self.ms, "by_kind": self.by_kind}

    def add_raw(self, raw: dict) -> None:
        self.status.update({int(k): v for k, v in raw["status"].items()})
        self.ms += raw["ms"]
        for kind, v in raw["by_kind"].items():
            self.by_kind[kind] += v

    def summary(self) -> dict:
        n = sum(self.status.values())
        ms = np.asarray(self.ms or [np.nan])
        return {
            "requests": n,
            "share_429": round(self.status[429] / n, 3) if n else None,
            "other_errors": sum(c for s, c in self.status.items() if s >= 400 and s != 429),
            "p50_ms": round(float(np.percentile(ms, 50)), 1),
            "p95_ms": round(float(np.percentile(ms, 95)), 1),
            **{
                f"{kind}_p{q}_ms": round(float(np.percentile(v or [np.nan], q)), 1)
                for kind, v in self.by_kind.items()
                for q in (50, 95)
            },
        }


def user_class(account: Account, wait):
    class AccountUser(HttpUser):
        wait_time = wait

        def _send(self, method: str, path: str, kind: str, **kw):
            with self.client.request(
                method,
                path,
                headers={"Authorization": f"Bearer {account.key}"},
                name=f"{account.name} {path.split('/')[1]}",
                catch_response=True,
                **kw,
            ) as r:
                account.record(r.status_code, r.elapsed.total_seconds() * 1000, kind)
                if r.status_code in (200, 201, 429):
                    r.success()  # a 429 is the budget working, not a failure
                else:
                    r.failure(f"{r.status_code}: {r.text[:200]}")

        @task(10)
        def search(self):
            tid = account.track_ids[np.random.randint(len(account.track_ids))]
            self._send("GET", f"/tracks/{tid}/similar?k=10", "search")

        @task(1)
        def upload(self):
            clip = account.clips[np.random.randint(len(account.clips))]
            with open(clip, "rb") as f:
                self._send(
                    "POST", "/tracks", "upload", files={"audio": f}, data={"consent": "search"}
                )

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
    """The greedy users alone, in this process (started by main): their statuses and
    latencies and the CPU seconds this process used, as JSON on the last line of stdout."""
    spec = json.loads(args.greedy_only)
    account = Account("greedy", spec["key"], spec["ids"], [Path(c) for c in spec["clips"]])
    before = resource.getrusage(resource.RUSAGE_SELF)
    run(spec["host"], [(account, constant(spec["wait"]), spec["users"])], spec["seconds"])
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(json.dumps({"raw": account.raw(), "cpu_s": cpu}), flush=True)


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


def _greedy_beside(
    args, url: str, greedy: tuple, polite: Account, polite_wait, wait: float
) -> dict:
    """The greedy users (waiting `wait` s between requests) in a process of their own while
    the polite ones run here; what the greedy process reports (its raw samples and CPU
    seconds)."""
    key, ids, clips = greedy
    spec = {
        "host": url,
        "key": key,
        "ids": ids,
        "clips": [str(c) for c in clips],
        "wait": wait,
        "users": args.greedy_users,
        "seconds": args.seconds,
    }
    proc = subprocess.Popen(
        [sys.executable, __file__, "--greedy-only", json.dumps(spec)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    time.sleep(0.5)  # its users spawned: both phases overlap fully
    run(url, [(polite, polite_wait, args.polite_users)], args.seconds)
    out, _ = proc.communicate(timeout=args.seconds + 120)
    return json.loads(out.strip().splitlines()[-1])


def _add(totals: dict, name: str, value: float) -> None:
    totals[name] = totals.get(name, 0.0) + value


def _p95(ms) -> float:
    return float(np.percentile(ms, 95))


def _ratio(a: Account, b: Account | None) -> float | None:
    """a's p95 of answered requests over b's."""
    if b is None or not a.ms or not b.ms:
        return None
    return round(_p95(a.ms) / _p95(b.ms), 3)


def _ratio_interval(a: Account, b: Account, n: int = 2000, seed: int = 0) -> tuple[float, float]:
    """A 95 % bootstrap interval of the p95 ratio (each side's requests resampled)."""
    if not a.ms or not b.ms:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    x, y = np.asarray(a.ms), np.asarray(b.ms)
    px = np.percentile(rng.choice(x, (n, len(x))), 95, axis=1)
    py = np.percentile(rng.choice(y, (n, len(y))), 95, axis=1)
    lo, hi = np.percentile(px / py, [2.5, 97.5])
    return round(float(lo), 3), round(float(hi), 3)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60, help="seconds per phase")
    ap.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="rounds of the phases, taking turns; the samples of each condition are pooled",
    )
    ap.add_argument("--polite-users", type=int, default=2)
    ap.add_argument("--greedy-users", type=int, default=4)
    ap.add_argument("--clips", type=int, default=3, help="clips each account uploads first")
    ap.add_argument(
        "--greedy-wait",
        type=float,
        default=0.1,
        help="seconds each greedy user waits between requests (0: a flood at full speed)",
    )
    ap.add_argument(
        "--full-budget-wait",
        type=float,
        default=1.0,
        help="a fourth phase: the polite account beside the other one's users waiting this "
        "long (its whole budget, not more: 4 users at 1 s send ~220 searches and ~20 uploads "
        "a minute); 0: no such phase (not with --one-process)",
    )
    ap.add_argument("--search-per-min", type=int, default=SEARCH_PER_MIN)
    ap.add_argument("--writes-per-min", type=int, default=WRITES_PER_MIN)
    ap.add_argument(
        "--burst-seconds",
        type=float,
        default=10,
        help="GENRE_BURST_SECONDS of the service (the service's default is 60)",
    )
    ap.add_argument("--json", type=Path)
    ap.add_argument(
        "--one-process",
        action="store_true",
        help="both accounts' users in this one Locust process (no burner phase)",
    )
    ap.add_argument(
        "--pin",
        action="store_true",
        help="the service on CPU 0, the load generators (and a burner) on the others (Linux)",
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
        "GENRE_BURST_SECONDS": str(args.burst_seconds),
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
        if args.pin:
            cpus = os.sched_getaffinity(0)
            clients = cpus - {min(cpus)} or cpus
            print(
                f"service on CPU {min(cpus)} ({svc.pin({min(cpus)})} threads), "
                f"load generators on {sorted(clients)}",
                flush=True,
            )
            os.sched_setaffinity(0, clients)  # this process; the greedy one and the burner inherit
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
        # One Account per condition, its samples pooled over the rounds; the conditions take
        # turns (together, alone, alone + burner) so that drift over time (other jobs, a
        # warming cache) falls on all of them alike rather than on whichever ran first.
        together = {"polite": fresh("polite"), "greedy": fresh("greedy")}
        alone, burned, full = fresh("polite"), fresh("polite"), fresh("polite")
        full_greedy = fresh("greedy")  # the other account within its budget
        server_cpu: dict[str, float] = {}
        greedy_cpu, rounds = 0.0, []
        for i in range(args.rounds):
            tag = f"round {i + 1}/{args.rounds}: " if args.rounds > 1 else ""
            one = {"together": fresh("polite"), "alone": fresh("polite")}
            print(f"{tag}both accounts, {args.seconds:g} s ...", flush=True)
            cpu0 = svc.cpu_seconds()
            if args.one_process:
                run(
                    svc.url,
                    [
                        (one["together"], polite_wait, args.polite_users),
                        (together["greedy"], constant(args.greedy_wait), args.greedy_users),
                    ],
                    args.seconds,
                )
                cpu = None
            else:
                got = _greedy_beside(
                    args,
                    svc.url,
                    accounts["greedy"],
                    one["together"],
                    polite_wait,
                    args.greedy_wait,
                )
                together["greedy"].add_raw(got["raw"])
                cpu = got["cpu_s"]
                greedy_cpu += cpu
            _add(server_cpu, "together", svc.cpu_seconds() - cpu0)
            print(f"{tag}the polite account alone, {args.seconds:g} s ...", flush=True)
            cpu0 = svc.cpu_seconds()
            run(svc.url, [(one["alone"], polite_wait, args.polite_users)], args.seconds)
            _add(server_cpu, "polite_alone", svc.cpu_seconds() - cpu0)
            if cpu is not None:
                one["burner"] = fresh("polite")
                share = cpu / args.seconds
                print(
                    f"{tag}the polite account alone beside a burner of {share:.2f} CPU, "
                    f"{args.seconds:g} s ...",
                    flush=True,
                )
                burner = _burner(share)
                try:
                    cpu0 = svc.cpu_seconds()
                    run(svc.url, [(one["burner"], polite_wait, args.polite_users)], args.seconds)
                    _add(server_cpu, "polite_alone_burner", svc.cpu_seconds() - cpu0)
                finally:
                    burner.kill()
                    burner.wait()
            if args.full_budget_wait > 0 and not args.one_process:
                print(
                    f"{tag}the polite account beside the other one within its budget "
                    f"(users waiting {args.full_budget_wait:g} s), {args.seconds:g} s ...",
                    flush=True,
                )
                one["full"] = fresh("polite")
                cpu0 = svc.cpu_seconds()
                got = _greedy_beside(
                    args,
                    svc.url,
                    accounts["greedy"],
                    one["full"],
                    polite_wait,
                    args.full_budget_wait,
                )
                full_greedy.add_raw(got["raw"])
                _add(server_cpu, "beside_full_budget", svc.cpu_seconds() - cpu0)
            together["polite"].add_raw(one["together"].raw())
            alone.add_raw(one["alone"].raw())
            if "burner" in one:
                burned.add_raw(one["burner"].raw())
            if "full" in one:
                full.add_raw(one["full"].raw())
            rounds.append(
                {
                    "polite_p95_ratio": _ratio(one["together"], one["alone"]),
                    "polite_p95_ratio_vs_burner": _ratio(one["together"], one.get("burner")),
                    "polite_p95_ratio_vs_full_budget": _ratio(one["together"], one.get("full")),
                }
            )
    finally:
        svc.stop()
    report = {
        "budgets": {
            "search_per_min": args.search_per_min,
            "writes_per_min": args.writes_per_min,
            "burst_seconds": args.burst_seconds,
        },
        "seconds": args.seconds,
        "rounds": args.rounds,
        "users": {"polite": args.polite_users, "greedy": args.greedy_users},
        "greedy_wait_s": args.greedy_wait,
        "full_budget_wait_s": args.full_budget_wait,
        "greedy_in_own_process": not args.one_process,
        "service_pinned": args.pin,
        "together": {n: a.summary() for n, a in together.items()},
        "polite_alone": alone.summary(),
        "server_cpu_s": {k: round(v, 2) for k, v in server_cpu.items()},
        "greedy_client_cpu_s": None if args.one_process else round(greedy_cpu, 2),
        "per_round": rounds,
    }
    ratio = _ratio(together["polite"], alone)
    lo, hi = _ratio_interval(together["polite"], alone)
    report["polite_p95_ratio"] = ratio
    report["polite_p95_ratio_95ci"] = [lo, hi]
    report["within_target"] = bool(ratio <= TARGET_RATIO)
    runs = [(f"together: {n}", s) for n, s in report["together"].items()]
    runs.append(("polite alone", report["polite_alone"]))
    if burned.status:
        report["polite_alone_burner"] = burned.summary()
        runs.append(("polite alone + burner", report["polite_alone_burner"]))
        report["polite_p95_ratio_vs_burner"] = _ratio(together["polite"], burned)
    if full.status:
        report["beside_full_budget"] = {"polite": full.summary(), "other": full_greedy.summary()}
        runs.append(("beside full: polite", report["beside_full_budget"]["polite"]))
        runs.append(("beside full: other", report["beside_full_budget"]["other"]))
        for name, a, b in (
            ("over_vs_full_budget", together["polite"], full),
            ("full_budget_vs_alone", full, alone),
        ):
            report[f"polite_p95_ratio_{name}"] = _ratio(a, b)
            report[f"polite_p95_ratio_{name}_95ci"] = list(_ratio_interval(a, b))
    print(
        f"{'run':<24} {'requests':>8} {'429 share':>9} {'p50 ms':>8} {'p95 ms':>8}"
        f" {'search p50/p95':>15} {'upload p50/p95':>15}"
    )
    for label, s in runs:
        print(
            f"{label:<24} {s['requests']:>8} {s['share_429']!s:>9} {s['p50_ms']:>8} "
            f"{s['p95_ms']:>8} {s['search_p50_ms']:>7}/{s['search_p95_ms']:<7} "
            f"{s['upload_p50_ms']:>7}/{s['upload_p95_ms']:<7}"
        )
    print(f"service CPU seconds per condition: {report['server_cpu_s']}")
    if not args.one_process:
        print(f"greedy client CPU seconds: {greedy_cpu:.1f} over {args.rounds * args.seconds:g} s")
    if args.rounds > 1:
        print(f"per round, polite p95 ratio (alone / beside a burner): {rounds}")
    print(
        f"polite p95 beside the greedy account / alone: {ratio:.2f} "
        f"[95 % bootstrap interval {lo:.2f}, {hi:.2f}] "
        f"(target <= {TARGET_RATIO}: {'met' if report['within_target'] else 'MISSED'})"
    )
    if burned.status:
        print(
            "polite p95 beside the greedy account / alone beside a burner of the greedy "
            f"client's CPU: {report['polite_p95_ratio_vs_burner']:.2f}"
        )
    if full.status:
        lo2, hi2 = report["polite_p95_ratio_over_vs_full_budget_95ci"]
        lo3, hi3 = report["polite_p95_ratio_full_budget_vs_alone_95ci"]
        print(
            "polite p95 beside the account over its budget / beside it within its budget "
            f"(what going over adds): {report['polite_p95_ratio_over_vs_full_budget']:.2f} "
            f"[{lo2:.2f}, {hi2:.2f}]; beside it within its budget / alone (what its allowed "
            f"traffic costs): {report['polite_p95_ratio_full_budget_vs_alone']:.2f} "
            f"[{lo3:.2f}, {hi3:.2f}]"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
