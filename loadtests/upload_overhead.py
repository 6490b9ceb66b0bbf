"""What storing a track costs on top of analysing it: POST /tracks against POST /predict of
the same clips, on one `bentoml serve` started here (embedded SQLite catalog in a temporary
folder), requests one at a time, interleaved so both see the same machine.

    python loadtests/upload_overhead.py [--clips 20] [--json loadtests/results/upload-overhead.json]

For each clip: /predict, then /tracks (new audio: scored and stored), then /predict again;
the overhead of a clip is its /tracks time minus the mean of its two /predict times. Prints
the median and p90 overhead and both medians. Target (issue 21): the median at most 20 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src"))

from loadtests.service_process import ServedService  # noqa: E402


def _clips(n: int) -> list[Path]:
    from genre_detector.config import settings

    data = settings().data
    clips = sorted((data / "gtzan-samples").glob("*.wav")) + sorted((data / "4q").glob("*/*.mp3"))
    return clips[:n]


def _timed(fn) -> tuple[float, requests.Response]:
    t0 = time.perf_counter()
    r = fn()
    return (time.perf_counter() - t0) * 1000, r


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", type=int, default=20)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="upload-overhead-") as tmp:
        env = {"GENRE_DB_URL": f"sqlite:///{tmp}/catalog.sqlite3", "GENRE_DELIVER_IN_SERVICE": "0"}
        key = subprocess.run(
            [sys.executable, "-m", "genre_detector", "keys", "create", "bench"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO,
        ).stdout.split()[-1]
        svc = ServedService(env)
        try:
            svc.wait_ready()
            auth = {"Authorization": f"Bearer {key}"}
            clips = _clips(args.clips)
            warm = clips[0].read_bytes()
            requests.post(f"{svc.url}/predict", files={"audio": ("w", warm)}, timeout=120)
            rows = []
            for clip in clips:
                data = clip.read_bytes()

                def predict(data=data, clip=clip):
                    files = {"audio": (clip.name, data)}
                    return requests.post(f"{svc.url}/predict", files=files, timeout=120)

                def store(data=data, clip=clip):
                    return requests.post(
                        f"{svc.url}/tracks",
                        files={"audio": (clip.name, data)},
                        data={"consent": "search"},
                        headers=auth,
                        timeout=120,
                    )

                p1, r1 = _timed(predict)
                s, r2 = _timed(store)
                p2, r3 = _timed(predict)
                assert r1.ok and r3.ok and r2.status_code == 201, (r2.status_code, r2.text)
                rows.append({"clip": clip.name, "predict_ms": (p1 + p2) / 2, "tracks_ms": s})
        finally:
            svc.stop()
    over = sorted(r["tracks_ms"] - r["predict_ms"] for r in rows)
    result = {
        "clips": len(rows),
        "predict_median_ms": statistics.median(r["predict_ms"] for r in rows),
        "tracks_median_ms": statistics.median(r["tracks_ms"] for r in rows),
        "overhead_median_ms": statistics.median(over),
        "overhead_p90_ms": over[int(0.9 * (len(over) - 1))],
        "rows": rows,
    }
    print(
        f"{len(rows)} clips: /predict median {result['predict_median_ms']:.0f} ms, "
        f"/tracks median {result['tracks_median_ms']:.0f} ms; storing adds "
        f"{result['overhead_median_ms']:.1f} ms (median), {result['overhead_p90_ms']:.1f} ms (p90)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
