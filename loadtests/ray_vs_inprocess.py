"""The library tagger's two local engines side by side: in-process vs Ray Data.

    BENTOML_HOME=/tmp/raybench-home python loadtests/ray_vs_inprocess.py ../shared/data/4q
    python loadtests/ray_vs_inprocess.py FOLDER --limit 60 --model-cpus 1 --json out.json

Tags the same tracks with both engines, one after the other in this process (each engine
built first, models loaded, then timed over the whole run, as `python -m genre_detector tag`
reports it), prints tracks/s of each and Ray / in-process, and checks that every track got
the same top genre from every model and the ensemble. Exits 1 when a top genre differs.
Peak memory: this process (the in-process engine's models) and the Ray processes' sum of
resident memory sampled once a second.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _rows(path: Path) -> dict[str, dict]:
    with open(path, newline="") as f:
        return {r["path"]: r for r in csv.DictReader(f)}


class RaySampler(threading.Thread):
    """Peak summed RSS of the processes whose command line mentions ray (once a second)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak, self.stop = 0, threading.Event()

    def run(self):
        while not self.stop.wait(1.0):
            total = 0
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                    if b"ray" not in cmd or int(pid) == os.getpid():
                        continue
                    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                        if line.startswith("VmRSS:"):
                            total += int(line.split()[1]) * 1024
                except (OSError, ValueError):
                    continue
            self.peak = max(self.peak, total)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", nargs="?", default=str(REPO.parent / "shared" / "data" / "4q"))
    p.add_argument("--limit", type=int, default=0, help="only the first N tracks (0: all)")
    p.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="in-process decoding processes = the local Ray's CPUs",
    )
    p.add_argument("--batch-windows", type=int, default=512)
    p.add_argument("--model-actors", type=int, default=1)
    p.add_argument("--model-cpus", type=float, help="default: the engine's (0 locally)")
    p.add_argument("--decode-cpus", type=float, default=1.0)
    p.add_argument("--json", help="also write the numbers to this file")
    args = p.parse_args(argv)

    from genre_detector.batch.library import walk
    from genre_detector.batch.ray_engine import RayEngine
    from genre_detector.batch.tagger import InProcessEngine, tag_library

    tracks = walk([args.folder])
    if args.limit:
        tracks = tracks[: args.limit]
    if not tracks:
        raise SystemExit(f"no audio files under {args.folder}")
    work = Path(tempfile.mkdtemp(prefix="ray-vs-inprocess-"))
    paths = [t.path for t in tracks]
    results, outs = {}, {}
    sampler = RaySampler()
    sampler.start()
    for name in ("inprocess", "ray"):
        t0 = time.perf_counter()
        if name == "inprocess":
            engine = InProcessEngine(workers=args.workers, batch_windows=args.batch_windows)
        else:
            engine = RayEngine(
                num_cpus=args.workers,
                batch_windows=args.batch_windows,
                model_actors=args.model_actors,
                model_cpus=args.model_cpus,
                decode_cpus=args.decode_cpus,
            )
        start_s = time.perf_counter() - t0
        outs[name] = work / f"{name}.csv"
        try:
            summary, stats = tag_library(paths, str(outs[name]), engine=engine, progress=True)
        finally:
            engine.close()
        done = summary.ok + sum(summary.failed.values())
        results[name] = {
            "tracks": done,
            "ok": summary.ok,
            "seconds": round(summary.seconds, 1),
            "tracks_per_s": round(done / summary.seconds, 3),
            "engine_start_s": round(start_s, 1),
            "stats": stats,
        }
        print(
            f"{name:>9}: {done} tracks in {summary.seconds:.1f} s = "
            f"{done / summary.seconds:.3f} tracks/s (engine start {start_s:.1f} s) | {stats}",
            flush=True,
        )
    sampler.stop.set()

    a, b = _rows(outs["inprocess"]), _rows(outs["ray"])
    genre_cols = [c for c in next(iter(a.values())) if c.endswith("_genre")]
    differ = [
        (path, c, a[path][c], b.get(path, {}).get(c))
        for path in a
        for c in genre_cols
        if a[path][c] != b.get(path, {}).get(c)
    ]
    missing = sorted(set(a) ^ set(b))
    ratio = results["ray"]["tracks_per_s"] / results["inprocess"]["tracks_per_s"]
    results.update(
        {
            "folder": args.folder,
            "n_tracks": len(paths),
            "cpus": os.cpu_count(),
            "ratio_ray_over_inprocess": round(ratio, 3),
            "top_genres_agree": not differ and not missing,
            "disagreements": differ[:20],
            "peak_rss_driver_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
            "peak_rss_ray_processes_mb": sampler.peak // 2**20,
            "options": vars(args),
        }
    )
    print(f"ray / in-process: {ratio:.2f} ({ratio:.0%} of the in-process throughput)")
    print(
        f"top genres ({', '.join(genre_cols)}): "
        + (
            "identical for every track"
            if results["top_genres_agree"]
            else f"{len(differ)} differences, {len(missing)} tracks missing: {differ[:5]}"
        )
    )
    print(
        f"peak RSS: driver {results['peak_rss_driver_mb']} MB, "
        f"Ray processes {results['peak_rss_ray_processes_mb']} MB (summed); outputs in {work}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0 if results["top_genres_agree"] else 1


if __name__ == "__main__":
    sys.exit(main())
