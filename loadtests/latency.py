"""Idle latency, startup time and memory of the real service (issue targets: < 0.5 s for a
30 s clip, < 30 s startup, < 3 GB RSS with four models loaded).

    python loadtests/latency.py [--clip ../shared/data/gtzan-samples/rock.00000.wav] [--n 20]

Starts `bentoml serve` on a free port, posts the clip sequentially, prints the numbers.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from loadtests.service_process import ServedService  # noqa: E402


def tree_rss_mb(pid: int) -> float:
    """Sum of VmRSS over a process and all its descendants."""
    import subprocess

    out = subprocess.run(
        ["ps", "-e", "-o", "pid=,ppid=,rss="], capture_output=True, text=True
    ).stdout
    rows = [tuple(map(int, line.split())) for line in out.splitlines() if line.strip()]
    children: dict[int, list[int]] = {}
    rss = {}
    for p, pp, r in rows:
        children.setdefault(pp, []).append(p)
        rss[p] = r
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        total += rss.get(p, 0)
        stack += children.get(p, [])
    return total / 1024


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--clip", default=str(REPO.parent / "shared/data/gtzan-samples/rock.00000.wav"))
    p.add_argument("--n", type=int, default=20, help="sequential requests after 3 warm-ups")
    args = p.parse_args()
    data = Path(args.clip).read_bytes()
    svc = ServedService()
    try:
        startup = svc.wait_ready()
        print(f"startup until /readyz: {startup:.1f} s")
        print(f"RSS of the whole service after start: {tree_rss_mb(svc.proc.pid):.0f} MB")
        times = []
        for i in range(args.n + 3):
            t0 = time.perf_counter()
            r = requests.post(
                f"{svc.url}/predict", files={"audio": (Path(args.clip).name, data)}, timeout=60
            )
            r.raise_for_status()
            if i >= 3:
                times.append(time.perf_counter() - t0)
        body = r.json()
        times.sort()
        print(f"clip: {args.clip} ({body['duration_s']:.1f} s, {body['n_windows']} windows)")
        print(
            f"end-to-end latency over {args.n} sequential requests: median "
            f"{statistics.median(times) * 1000:.0f} ms, "
            f"p95 {times[int(0.95 * (len(times) - 1))] * 1000:.0f} ms, "
            f"max {times[-1] * 1000:.0f} ms"
        )
        print(f"RSS of the whole service after requests: {tree_rss_mb(svc.proc.pid):.0f} MB")
        print(
            f"ensemble says: {body['ensemble']['top_genre']} "
            f"({body['ensemble']['top_probability']:.2f})"
        )
    finally:
        svc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
