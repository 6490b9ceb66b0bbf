"""What a refused request costs the service (issue 30): the service's CPU per 429 of a key
whose search or upload budget is spent, beside the CPU of a cheap answered request.

    python loadtests/refusal_cost.py [--requests 1000] [--checkout PATH] [--json out.json]

Starts `bentoml serve` (of this checkout, or of --checkout: another checkout's code, to
compare before and after a change) with a fresh SQLite catalog and one search and one
upload token per minute, makes a key, spends both tokens, then sends, one at a time on one
keep-alive connection: --requests `GET /tracks/x/similar` (429), --requests / 5 `POST /tracks`
of a 30 s WAV (429), and --requests `GET /me` (200: the key's lookup and two counts, no
bucket). Prints the service's CPU milliseconds per request of each kind (every process of
`bentoml serve`, from psutil) and the client's median wall time.
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

from loadtests.service_process import ServedService  # noqa: E402


def measure(svc, send, n: int) -> dict:
    walls, statuses = [], {}
    cpu0 = svc.cpu_seconds()
    for _ in range(n):
        t = time.perf_counter()
        status = send()
        walls.append((time.perf_counter() - t) * 1000)
        statuses[status] = statuses.get(status, 0) + 1
    time.sleep(0.5)  # the access log's last lines
    cpu = svc.cpu_seconds() - cpu0
    return {
        "requests": n,
        "statuses": statuses,
        "service_cpu_ms_per_request": round(cpu * 1000 / n, 3),
        "client_wall_p50_ms": round(statistics.median(walls), 2),
    }


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--checkout", type=Path, default=REPO, help="whose service to serve")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    checkout = args.checkout.resolve()
    data = Path(os.environ.get("GENRE_DATA", REPO.parent / "shared" / "data"))
    clip = sorted((data / "gtzan-samples").glob("*.wav"))[0].read_bytes()
    db = Path(tempfile.mkdtemp(prefix="refusal-cost-")) / "catalog.sqlite3"
    env = {
        "GENRE_DB_URL": f"sqlite:///{db}",
        "GENRE_SEARCH_PER_MIN": "1",
        "GENRE_WRITES_PER_MIN": "1",
        "GENRE_DELIVER_IN_SERVICE": "0",
        "PYTHONPATH": f"{checkout / 'src'}{os.pathsep}{checkout}",
    }
    key = (
        subprocess.run(
            [sys.executable, "-m", "genre_detector", "keys", "create", "greedy"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            cwd=checkout,
            check=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    svc = ServedService(env, cwd=checkout)
    report = {"checkout": str(checkout), "requests": args.requests}
    try:
        svc.wait_ready()
        http = requests.Session()
        http.headers["Authorization"] = f"Bearer {key}"
        search = f"{svc.url}/tracks/x/similar"
        assert http.get(search, timeout=30).status_code == 404  # the one token
        consent = {"consent": "search"}
        r = http.post(
            f"{svc.url}/tracks", files={"audio": ("a.wav", b"not audio")}, data=consent, timeout=60
        )
        assert r.status_code == 415, r.text  # the upload token, spent on a file not audio

        def refused_search():
            return http.get(search, timeout=30).status_code

        def refused_upload():
            return http.post(
                f"{svc.url}/tracks", files={"audio": ("a.wav", clip)}, data=consent, timeout=60
            ).status_code

        def me():
            return http.get(f"{svc.url}/me", timeout=30).status_code

        for _ in range(50):  # warm: connections, imports, caches
            refused_search()
            me()
        report["search_429"] = measure(svc, refused_search, args.requests)
        report["upload_429"] = measure(svc, refused_upload, max(1, args.requests // 5))
        report["me_200"] = measure(svc, me, args.requests)
    finally:
        svc.stop()
    for kind in ("search_429", "upload_429", "me_200"):
        r = report[kind]
        print(
            f"{kind:<11} {r['requests']:>5} requests {r['statuses']}: service CPU "
            f"{r['service_cpu_ms_per_request']} ms each, client p50 {r['client_wall_p50_ms']} ms"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
