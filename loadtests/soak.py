"""Soak test: a long locust run while sampling the service's memory.

    python loadtests/soak.py --users 24 --duration 600          # 10 minutes
    python loadtests/soak.py --users 24 --duration 120 --env GENRE_MAX_BATCH=80

Starts the service as users do (`bentoml serve service:GenreDetector`, on a free port),
warms it up, then runs loadtests/locustfile.py headless for --duration seconds while
sampling the RSS of the whole process tree (front, model service, arbiter) every
--every seconds. Prints start / end / peak RSS and growth, the p95 and failure count
from locust's CSV, and writes everything to loadtests/results/soak-<date>.json (the CSV
and HTML reports sit beside it). Exit status 1 if a target is missed:
zero failures, p95 < --p95-limit seconds, RSS growth < --max-growth percent.

RSS is reported (a) after a light warm-up ("start") and (b) after --settle seconds of the
real load, when the ramp-up, the first 3-minute tracks and the largest batches have made
their buffers; the growth target is checked on (b) -> end, i.e. what a long-running service
keeps accumulating, not its first allocations. Both growths are printed and saved.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from loadtests.benchmark import CpuMeter  # noqa: E402
from loadtests.latency import tree_rss_mb  # noqa: E402
from loadtests.service_process import ServedService  # noqa: E402

DATA = Path(os.environ.get("GENRE_DATA", REPO.parent / "shared" / "data"))


def rss_by_role(pid: int) -> dict[str, float]:
    """RSS in MB of the front and model-service processes (for finding who grows)."""
    import psutil

    out: dict[str, float] = {}
    try:
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return out
    for q in procs:
        try:
            cmd = " ".join(q.cmdline())
            rss = q.memory_info().rss / 2**20
        except psutil.Error:
            continue
        role = (
            "models"
            if "--service-name genre_models" in cmd
            else "front"
            if "_bentoml_impl.worker.service" in cmd
            else "arbiter"
        )
        out[role] = round(out.get(role, 0) + rss, 1)
    return out


def warm_up(url: str, n: int = 12) -> None:
    clips = sorted((DATA / "gtzan-samples").glob("*.wav"))
    for i in range(n):
        clip = clips[i % len(clips)]
        r = requests.post(
            f"{url}/predict", files={"audio": (clip.name, clip.read_bytes())}, timeout=120
        )
        r.raise_for_status()


def aggregated(stats_csv: Path) -> dict:
    rows = {r["Name"]: r for r in csv.DictReader(stats_csv.open())}
    per_name = {
        n: {
            "requests": int(r["Request Count"]),
            "failures": int(r["Failure Count"]),
            "p50_ms": float(r["50%"]),
            "p95_ms": float(r["95%"]),
            "p99_ms": float(r["99%"]),
        }
        for n, r in rows.items()
    }
    agg = per_name.pop("Aggregated")
    agg["rps"] = float(rows["Aggregated"]["Requests/s"])
    return {"aggregated": agg, "by_name": per_name}


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--users", type=int, default=24)
    p.add_argument("--spawn-rate", type=float, default=4)
    p.add_argument("--duration", type=int, default=600, help="seconds of load")
    p.add_argument("--every", type=float, default=5, help="seconds between RSS samples")
    p.add_argument(
        "--wait-scale",
        default=None,
        help="LOADTEST_WAIT_SCALE for the locustfile (default: its own, 1)",
    )
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="environment for the service, repeatable",
    )
    p.add_argument(
        "--settle",
        type=float,
        default=60,
        help="seconds of load before the steady-state RSS reference sample",
    )
    p.add_argument("--p95-limit", type=float, default=2.0)
    p.add_argument("--max-growth", type=float, default=10.0)
    p.add_argument("--out", type=Path, help="JSON (default loadtests/results/soak-<date>.json)")
    args = p.parse_args()

    env = dict(kv.split("=", 1) for kv in args.env)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.out or REPO / "loadtests" / "results" / f"soak-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    prefix = out.with_suffix("")
    print(
        f"load average at start: {[round(x, 2) for x in os.getloadavg()]} on "
        f"{os.cpu_count()} cores",
        flush=True,
    )

    svc = ServedService(env=env)
    samples: list[tuple[float, float]] = []
    roles: list[tuple[float, dict]] = []
    try:
        startup = svc.wait_ready()
        warm_up(svc.url)
        rss_start = tree_rss_mb(svc.proc.pid)
        print(f"service ready in {startup:.1f} s; RSS after warm-up {rss_start:.0f} MB", flush=True)
        stop = threading.Event()
        t0 = time.time()

        def sample() -> None:
            while not stop.wait(args.every):
                t = round(time.time() - t0, 1)
                samples.append((t, round(tree_rss_mb(svc.proc.pid), 1)))
                roles.append((t, rss_by_role(svc.proc.pid)))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        locust_env = {**os.environ}
        if args.wait_scale is not None:
            locust_env["LOADTEST_WAIT_SCALE"] = args.wait_scale
        cmd = [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(REPO / "loadtests/locustfile.py"),
            "--headless",
            "-u",
            str(args.users),
            "-r",
            str(args.spawn_rate),
            "-t",
            f"{args.duration}s",
            "--host",
            svc.url,
            "--csv",
            str(prefix),
            "--html",
            f"{prefix}.html",
            "--only-summary",
            "--exit-code-on-error",
            "0",
        ]
        print("running:", " ".join(cmd[2:]), flush=True)
        meter = CpuMeter(lambda: [svc.proc.pid, os.getpid()])
        meter.start()
        rc = subprocess.run(cmd, env=locust_env, cwd=REPO).returncode
        cpu = meter.stop()
        stop.set()
        sampler.join()
        rss_end = tree_rss_mb(svc.proc.pid)
    finally:
        svc.stop()

    stats = aggregated(Path(f"{prefix}_stats.csv"))
    agg = stats["aggregated"]
    peak = max([rss_start, rss_end, *(r for _, r in samples)])
    growth_total = (rss_end - rss_start) / rss_start * 100
    # Steady state: from the first sample after --settle s of load (ramp-up, first long
    # tracks and largest batches have allocated their buffers by then) to the end.
    settled = next((r for t, r in samples if t >= args.settle), rss_start)
    growth = (rss_end - settled) / settled * 100
    res = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "users": args.users,
        "duration_s": args.duration,
        "service_env": env,
        "wait_scale": args.wait_scale,
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        "locust_rc": rc,
        "cpu": cpu,
        "rss_mb": {
            "start": round(rss_start),
            "after_settle": round(settled),
            "end": round(rss_end),
            "peak": round(peak),
            "growth_pct_since_start": round(growth_total, 2),
            "growth_pct_steady_state": round(growth, 2),
            "settle_s": args.settle,
            "by_role_first": roles[0][1] if roles else {},
            "by_role_last": roles[-1][1] if roles else {},
        },
        "rss_samples": samples,
        "rss_by_role_samples": roles,
        **stats,
    }
    ok = {
        "zero failures": agg["failures"] == 0 and agg["requests"] > 0,
        f"p95 < {args.p95_limit} s": agg["p95_ms"] < args.p95_limit * 1000,
        f"steady-state RSS growth < {args.max_growth} %": growth < args.max_growth,
    }
    res["targets"] = ok
    out.write_text(json.dumps(res, indent=2))
    print(
        f"\nrequests {agg['requests']} ({agg['rps']:.2f}/s), failures {agg['failures']}, "
        f"p50 {agg['p50_ms']:.0f} ms, p95 {agg['p95_ms']:.0f} ms, p99 {agg['p99_ms']:.0f} ms"
    )
    for name, r in stats["by_name"].items():
        print(
            f"  {name:<22} {r['requests']:>6} requests, {r['failures']} failed, "
            f"p50 {r['p50_ms']:.0f} ms, p95 {r['p95_ms']:.0f} ms"
        )
    print(
        f"RSS of the service tree: start {rss_start:.0f} MB (after warm-up), "
        f"{settled:.0f} MB after {args.settle:.0f} s of load, end {rss_end:.0f} MB, "
        f"peak {peak:.0f} MB; growth {growth_total:+.1f} % since start, "
        f"{growth:+.1f} % in the steady state"
    )
    if roles:
        print(f"  by process, first sample {roles[0][1]} -> last {roles[-1][1]}")
    for target, passed in ok.items():
        print(f"  {'PASS' if passed else 'FAIL'}  {target}")
    print(
        f"CPU during the run: service + locust {cpu['ours_cores']} cores, other jobs "
        f"{cpu['others_cores']} cores (of {os.cpu_count()})"
    )
    print(f"load average at end: {res['loadavg_at_end']}; results: {out}")
    return 0 if all(ok.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
