"""Throughput and latency of the service against the research pipeline, in one run.

    python loadtests/benchmark.py                      # what `make bench` runs
    python loadtests/benchmark.py --levels 1,4,8,16 --requests 80 --env GENRE_MAX_BATCH=80
    python loadtests/benchmark.py --baseline-from loadtests/results/benchmark-<date>.json
    python loadtests/benchmark.py --models feedforward,lenet,cnn,lstm   # the research four only

Same machine, same clips (the ten 30 s gtzan-samples WAVs), one after the other so the two
never compete for the CPU:

1. in-process stage costs with the package's own functions (decode = audio.load_audio,
   features = features.extract_windows, each model = inference.Predictor.from_store at the
   batch size of one request and at larger batches) and the *compute floor*: decode +
   features + the four models at their best batch size, as tracks/s;
2. the research pipeline (loadtests/research_baseline.py: Flask, threaded, one process);
3. our service started as users start it (`bentoml serve service:GenreDetector`).

For 2 and 3, at each concurrency level C, C client threads (one `requests` session each,
no think time) send their share of the requests back to back; throughput = successful
tracks / wall time, latency percentiles over all requests. For ours the service log gives
the batch sizes the models really ran, and queueing = end-to-end latency minus the
in-process compute of one request. Results: a markdown table on stdout and a JSON file
(loadtests/results/benchmark-<date>.json). The last line is
`throughput ratio vs research pipeline at 8 users: <x>`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")

from loadtests.latency import tree_rss_mb  # noqa: E402
from loadtests.service_process import ServedService, free_port, wait_http_ready  # noqa: E402

DATA = Path(os.environ.get("GENRE_DATA", REPO.parent / "shared" / "data"))
BATCH_LOG = re.compile(r"model (\w+) ran a batch of (\d+) windows")


# ------------------------------------------------------------------ machine state


class CpuMeter:
    """CPU use of the whole machine and of our processes between start() and stop()."""

    def __init__(self, pids_fn):
        self.pids_fn = pids_fn

    @staticmethod
    def _machine() -> tuple[float, float]:
        v = list(map(int, Path("/proc/stat").read_text().split("\n")[0].split()[1:]))
        idle = v[3] + v[4]
        return sum(v[:8]) - idle, sum(v[:8])

    def _roles(self) -> dict[str, float]:
        """CPU seconds by role: client (this process), front, models, other (arbiter...)."""
        import psutil

        roles: dict[str, float] = defaultdict(float)
        procs: dict[int, psutil.Process] = {}
        for pid in self.pids_fn():  # each process once (the servers are children)
            try:
                p = psutil.Process(pid)
                procs.update((q.pid, q) for q in [p, *p.children(recursive=True)])
            except psutil.Error:
                continue
        for q in procs.values():
            try:
                cmd = " ".join(q.cmdline())
                c = q.cpu_times()
            except psutil.Error:
                continue
            role = (
                "client"
                if q.pid == os.getpid()
                else "models"
                if "--service-name genre_models" in cmd
                else "front"
                if "_bentoml_impl.worker.service" in cmd
                else "research"
                if "research_baseline" in cmd
                else "other"
            )
            roles[role] += c.user + c.system
        return roles

    def start(self) -> None:
        self.t0, self.m0, self.r0 = time.time(), self._machine(), self._roles()

    def stop(self, tracks: int = 0) -> dict:
        wall = time.time() - self.t0
        busy, total = (a - b for a, b in zip(self._machine(), self.m0))
        ticks = os.sysconf("SC_CLK_TCK")
        machine_cores = busy / ticks / wall
        roles = {k: v - self.r0.get(k, 0.0) for k, v in self._roles().items()}
        ours_cores = sum(roles.values()) / wall
        out = {
            "machine_busy_cores": round(machine_cores, 2),
            "ours_cores": round(ours_cores, 2),
            "others_cores": round(max(machine_cores - ours_cores, 0), 2),
            "loadavg_1m": round(os.getloadavg()[0], 2),
        }
        if tracks:
            out["cpu_ms_per_track"] = {
                k: round(v / tracks * 1000) for k, v in sorted(roles.items())
            }
        return out


# ------------------------------------------------------------------ load generation


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def run_level(
    url: str,
    field: str,
    clips: list[tuple[str, bytes]],
    concurrency: int,
    per_client: int,
    timeout: float = 300,
) -> dict:
    """C clients, each sending per_client requests back to back; returns the numbers."""
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(concurrency + 1)

    def client(k: int) -> None:
        session = requests.Session()
        barrier.wait()
        for i in range(per_client):
            name, data = clips[(k * per_client + i) % len(clips)]
            t0 = time.perf_counter()
            try:
                r = session.post(url, files={field: (name, data, "audio/wav")}, timeout=timeout)
                ok = r.status_code == 200 and "error" not in r.json()
                why = "" if ok else f"HTTP {r.status_code}: {r.text[:120]}"
            except (requests.RequestException, ValueError) as exc:
                ok, why = False, repr(exc)[:160]
            dt_ = time.perf_counter() - t0
            with lock:
                (latencies.append(dt_) if ok else failures.append(why))

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(concurrency)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {
        "users": concurrency,
        "requests": concurrency * per_client,
        "ok": len(latencies),
        "failures": len(failures),
        "failure_examples": sorted(set(failures))[:3],
        "wall_s": round(wall, 3),
        "throughput": round(len(latencies) / wall, 3),
        "p50_s": round(percentile(latencies, 50), 4),
        "p95_s": round(percentile(latencies, 95), 4),
        "p99_s": round(percentile(latencies, 99), 4),
        "mean_s": round(statistics.fmean(latencies), 4) if latencies else None,
    }


def measure(
    name: str,
    url: str,
    field: str,
    clips,
    levels: list[int],
    total: int,
    min_per_client: int,
    meter: CpuMeter,
    warmup: int,
    log_fn=None,
) -> list[dict]:
    print(f"\n== {name}: warm-up ({warmup} requests, 2 users)", flush=True)
    run_level(url, field, clips, 2, max(1, warmup // 2))
    results = []
    for c in levels:
        per_client = max(min_per_client, math.ceil(total / c))
        log_before = len(log_fn()) if log_fn else 0
        meter.start()
        r = run_level(url, field, clips, c, per_client)
        r["cpu"] = meter.stop(r["ok"])
        if log_fn:
            r["batches"] = batch_sizes(log_fn()[log_before:])
        results.append(r)
        print(
            f"{name}: {c:>3} users  {r['throughput']:7.2f} tracks/s  p50 {r['p50_s']:.3f} s  "
            f"p95 {r['p95_s']:.3f} s  p99 {r['p99_s']:.3f} s  failures {r['failures']}  "
            f"(cpu: ours {r['cpu']['ours_cores']}, others {r['cpu']['others_cores']} cores; "
            f"ms/track {r['cpu'].get('cpu_ms_per_track')})",
            flush=True,
        )
    return results


def batch_sizes(log: str) -> dict:
    """Mean/max windows per model batch from the service's `ran a batch of` log lines."""
    sizes = defaultdict(list)
    for model, n in BATCH_LOG.findall(log):
        sizes[model].append(int(n))
    return {
        m: {"batches": len(v), "mean": round(statistics.fmean(v), 1), "max": max(v)}
        for m, v in sorted(sizes.items())
    }


# ------------------------------------------------------------------ in-process costs


def _best_of(fn, n: int = 5, cpu: list | None = None) -> float:
    """Median wall time of n calls; appends the median CPU time (all threads) to `cpu`."""
    times, cpus = [], []
    for _ in range(n):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    if cpu is not None:
        cpu.append(float(np.median(cpus)))
    return float(np.median(times))


def _mood_cost(p, sets) -> float | None:
    """Seconds per track of mood, GEMS, voice and instruments (models.mood_heads on the
    musicnn window outputs: the track's blocks and every window's mood), as score_track
    runs them; None without musicnn's mood heads."""
    if p is None or p.info.moods is None:
        return None
    from genre_detector.models.track_head import statistics as pooled

    s, heads, times = p.info.settings, p.info.moods, []
    for b in sets:
        out = p(b[s].windows)
        stats = pooled(out, p.info.head.std_fallback, b[s].start_s, s.window_seconds)
        times.append(_best_of(lambda o=out, x=stats: (heads.track(x), heads.windows(o, x)), 20))
    return round(statistics.fmean(times), 6)


def stage_costs(clips: list[tuple[str, bytes]], batch_multiples=(1, 2, 4, 8, 16)) -> dict:
    """Decode / features / model times per 30 s track with the package's own functions."""
    import bentoml

    from genre_detector.audio.decode import decode as decode_audio
    from genre_detector.audio.features import extract_feature_sets
    from genre_detector.models.families import model_names
    from genre_detector.runtime.keras_predictor import Predictor, limit_threads
    from genre_detector.runtime.store import store_name

    limit_threads()
    # the tags the service uses (serving.model_ref, without importing the service module);
    # like the service, every registered family that has a model in the store
    preds = {}
    for n in model_names():
        try:
            preds[n] = Predictor.from_store(
                os.environ.get(f"GENRE_MODEL_{n.upper()}", f"{store_name(n)}:latest")
            )
        except bentoml.exceptions.NotFound:
            continue
    # every feature set the models need (the research families share one, musicnn has its own)
    settings = list(dict.fromkeys(p.info.settings for p in preds.values()))
    extract_feature_sets(clips[0][1], settings)  # warm-up: imports, mel bases
    decode = [_best_of(lambda d=d: decode_audio(d), 3) for _, d in clips]
    waves = [decode_audio(d) for _, d in clips]  # (native wave, rate)
    features = [_best_of(lambda w=w: extract_feature_sets(w, settings), 3) for w in waves]
    # numpy's OpenBLAS (the mel projection) with its default threads and with one thread:
    # the floor takes the cheaper; the service gets it by limiting BLAS threads (README).
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="blas"):
        features_blas1 = [_best_of(lambda w=w: extract_feature_sets(w, settings), 3) for w in waves]
    sets = [extract_feature_sets(w, settings) for w in waves]
    windows = {s: [b[s].windows for b in sets] for s in settings}
    track_windows = {s: int(round(statistics.fmean(len(b) for b in windows[s]))) for s in settings}
    models = {}
    for name, p in preds.items():
        row = {}
        pool = np.concatenate(windows[p.info.settings])
        per_track = track_windows[p.info.settings]
        for m in batch_multiples:
            x = np.resize(pool, (per_track * m, *pool.shape[1:]))
            p(x)  # trace this shape
            cpu: list[float] = []
            t = _best_of(lambda p=p, x=x: p(x), 5, cpu)
            row[per_track * m] = {
                "batch_s": round(t, 5),
                "per_track_s": round(t / m, 5),
                "cpu_per_track_s": round(cpu[0] / m, 5),
            }
        best = min(row, key=lambda b: row[b]["per_track_s"])
        models[name] = {
            "by_batch": row,
            "request_batch_s": row[per_track]["batch_s"],
            "best_batch": best,
            "best_per_track_s": row[best]["per_track_s"],
        }
    moods = _mood_cost(preds.get("musicnn"), sets)
    dec = statistics.fmean(decode)
    feat_default, feat_blas1 = statistics.fmean(features), statistics.fmean(features_blas1)
    feat = min(feat_default, feat_blas1)
    request_models = sum(m["request_batch_s"] for m in models.values())
    floor_s = dec + feat + sum(m["best_per_track_s"] for m in models.values())
    return {
        "windows_per_track": track_windows[settings[0]],
        "windows_per_track_by_model": {n: track_windows[p.info.settings] for n, p in preds.items()},
        "decode_s": round(dec, 5),
        "features_s": round(feat, 5),
        "features_default_blas_s": round(feat_default, 5),
        "features_blas1_s": round(feat_blas1, 5),
        "models": models,
        "moods_s": moods,
        "request_compute_s": round(dec + feat + request_models + (moods or 0.0), 5),
        "floor_s_per_track": round(floor_s, 5),
        "floor_tracks_per_s": round(1 / floor_s, 3),
    }


# ------------------------------------------------------------------ the two servers


class BaselineServer:
    """loadtests/research_baseline.py in its own process, on a free port."""

    def __init__(self):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(
            Path(os.environ.get("TMPDIR", "/tmp")) / f"research-baseline-{self.port}.log", "w"
        )
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(REPO / "loadtests/research_baseline.py"),
                "--port",
                str(self.port),
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )

    def wait_ready(self, timeout: float = 180) -> float:
        return wait_http_ready(
            self.proc,
            f"{self.url}/healthz",
            timeout,
            "research baseline",
            lambda: Path(self.log.name).read_text(errors="replace"),
        )

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


# ------------------------------------------------------------------ report


def fmt(x, spec=".2f"):
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def report(res: dict) -> str:
    lines = []
    base = {r["users"]: r for r in res.get("baseline") or []}
    floor = res["stages"]["floor_tracks_per_s"]
    lines.append(
        "| users | research tracks/s | research p50 / p95 / p99 (s) | ours tracks/s "
        "| ours p50 / p95 / p99 (s) | ours / research | ours / floor | failed (research, ours) "
        "| other jobs' CPU (cores, research / ours) |"
    )
    lines.append("|---:|---:|---|---:|---|---:|---:|---|---|")
    for r in res["ours"]:
        b = base.get(r["users"])
        ratio = r["throughput"] / b["throughput"] if b and b["throughput"] else None
        lines.append(
            f"| {r['users']} | {fmt(b and b['throughput'])} | "
            + (f"{b['p50_s']:.2f} / {b['p95_s']:.2f} / {b['p99_s']:.2f}" if b else "n/a")
            + f" | {r['throughput']:.2f} | {r['p50_s']:.3f} / {r['p95_s']:.3f} / "
            f"{r['p99_s']:.3f} | "
            f"{fmt(ratio, '.1f')}{'x' if ratio else ''} | {r['throughput'] / floor:.0%} | "
            f"{b['failures'] if b else 'n/a'}, {r['failures']} | "
            f"{fmt(b and b['cpu']['others_cores'])} / {r['cpu']['others_cores']:.2f} |"
        )
    st = res["stages"]
    lines.append("")
    lines.append(
        f"Per-stage cost of one 30 s track in-process ({st['windows_per_track']} windows; "
        "model times at the request's batch and at the best batch):"
    )
    lines.append("")
    lines.append(
        "| stage | ms per track (request batch) | best batch | ms per track (best batch) |"
    )
    lines.append("|---|---:|---:|---:|")
    lines.append(
        f"| decode (audio.decode) | {st['decode_s'] * 1e3:.1f} | | {st['decode_s'] * 1e3:.1f} |"
    )
    lines.append(
        "| features (extract_feature_sets, every model's; numpy BLAS default "
        f"{st['features_default_blas_s'] * 1e3:.1f} ms, "
        f"1 thread {st['features_blas1_s'] * 1e3:.1f} ms) | {st['features_s'] * 1e3:.1f} | | "
        f"{st['features_s'] * 1e3:.1f} |"
    )
    for name, m in st["models"].items():
        lines.append(
            f"| model {name} | {m['request_batch_s'] * 1e3:.1f} | {m['best_batch']} | "
            f"{m['best_per_track_s'] * 1e3:.1f} |"
        )
    if st.get("moods_s") is not None:
        ms = st["moods_s"] * 1e3
        lines.append(
            f"| mood, GEMS, voice, instruments (models.mood_heads) | {ms:.2f} | | {ms:.2f} |"
        )
    lines.append(
        f"| **sum** | **{st['request_compute_s'] * 1e3:.1f}** | | "
        f"**{st['floor_s_per_track'] * 1e3:.1f}** = floor {floor:.2f} tracks/s |"
    )
    lines.append("")
    # Columns: tracks per batch (a model's batch in windows is that times its windows per
    # track, which differ between feature sets); by_batch keys are windows, in that order.
    by_pos = {n: list(m["by_batch"].values()) for n, m in st["models"].items()}
    n_cols = min(len(v) for v in by_pos.values())
    first = next(iter(st["models"].values()))["by_batch"]
    tracks = [int(b) // int(next(iter(first))) for b in list(first)[:n_cols]]
    lines.append("Model cost in ms per track by batch size (tracks per batch), in-process:")
    lines.append("")
    lines.append("| model | " + " | ".join(str(t) for t in tracks) + " |")
    lines.append("|---|" + "---:|" * n_cols)
    for name, rows in by_pos.items():
        lines.append(
            f"| {name} | "
            + " | ".join(f"{r['per_track_s'] * 1e3:.1f}" for r in rows[:n_cols])
            + " |"
        )
    lines.append(
        f"| all {len(by_pos)} | "
        + " | ".join(
            f"{sum(rows[i]['per_track_s'] for rows in by_pos.values()) * 1e3:.1f}"
            for i in range(n_cols)
        )
        + " |"
    )
    lines.append(
        f"| all {len(by_pos)}, CPU ms (all threads) | "
        + " | ".join(
            f"{sum(rows[i]['cpu_per_track_s'] for rows in by_pos.values()) * 1e3:.1f}"
            for i in range(n_cols)
        )
        + " |"
    )
    lines.append("")
    lines.append(
        "| users | ours p50 (s) | compute of one request (s) | queueing + transport p50 (s) "
        "| mean windows per model batch | service CPU ms per track (front / models / client) |"
    )
    lines.append("|---:|---:|---:|---:|---|---|")
    for r in res["ours"]:
        b = r.get("batches", {})
        sizes = ", ".join(f"{m} {v['mean']:.0f}" for m, v in b.items()) or "n/a"
        cpu = r["cpu"].get("cpu_ms_per_track", {})
        lines.append(
            f"| {r['users']} | {r['p50_s']:.3f} | {st['request_compute_s']:.3f} | "
            f"{r['p50_s'] - st['request_compute_s']:.3f} | {sizes} | "
            f"{cpu.get('front', 'n/a')} / {cpu.get('models', 'n/a')} / {cpu.get('client', 'n/a')} |"
        )
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--levels", default="1,4,8,16", help="concurrent users per level")
    p.add_argument(
        "--requests",
        type=int,
        default=80,
        help="requests per level for our service (split over the users)",
    )
    p.add_argument(
        "--baseline-requests",
        type=int,
        default=8,
        help="requests per level for the research pipeline (at least 2 per user)",
    )
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="environment for our service (and the in-process floor), repeatable",
    )
    p.add_argument(
        "--baseline-from",
        type=Path,
        help="reuse the research numbers of an earlier JSON instead of measuring",
    )
    p.add_argument("--skip-baseline", action="store_true", help="measure only our service")
    p.add_argument(
        "--models",
        default="",
        help="comma-separated models each request asks for "
        "(default: the service's default, every served model)",
    )
    p.add_argument("--clips", type=Path, default=DATA / "gtzan-samples")
    p.add_argument(
        "--service-dir",
        type=Path,
        default=REPO,
        help="folder with service.py to serve (to try a modified copy of the service)",
    )
    p.add_argument(
        "--out", type=Path, help="JSON file (default loadtests/results/benchmark-<date>.json)"
    )
    args = p.parse_args()

    levels = [int(x) for x in args.levels.split(",")]
    env = dict(kv.split("=", 1) for kv in args.env)
    os.environ.update(env)  # the in-process floor uses the same threads
    paths = sorted(args.clips.glob("*.wav"))
    if not paths:
        sys.exit(f"no WAV clips in {args.clips} (set GENRE_DATA)")
    clips = [(q.name, q.read_bytes()) for q in paths]
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.out or REPO / "loadtests" / "results" / f"benchmark-{stamp}.json"
    res: dict = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        },
        "service_env": env,
        "service_dir": str(args.service_dir),
        "clips": [q.name for q in paths],
        "levels": levels,
    }
    print(
        f"load average at start: {res['machine']['loadavg_at_start']} on {os.cpu_count()} cores",
        flush=True,
    )

    print("== in-process stage costs (package functions)", flush=True)
    meter = CpuMeter(lambda: [os.getpid()])
    meter.start()
    res["stages"] = stage_costs(clips)
    res["stages"]["cpu"] = meter.stop()
    st = res["stages"]
    print(
        f"decode {st['decode_s'] * 1e3:.1f} ms, features {st['features_s'] * 1e3:.1f} ms, models "
        + ", ".join(
            f"{n} {m['request_batch_s'] * 1e3:.1f} ms (best {m['best_per_track_s'] * 1e3:.1f} "
            f"ms/track at {m['best_batch']})"
            for n, m in st["models"].items()
        )
        + f"; floor {st['floor_tracks_per_s']:.2f} tracks/s",
        flush=True,
    )

    if args.baseline_from:
        res["baseline"] = json.loads(args.baseline_from.read_text())["baseline"]
        res["baseline_source"] = str(args.baseline_from)
    elif not args.skip_baseline:
        srv = BaselineServer()
        try:
            res["baseline_startup_s"] = round(srv.wait_ready(), 1)
            meter = CpuMeter(lambda: [srv.proc.pid, os.getpid()])
            res["baseline"] = measure(
                "research",
                f"{srv.url}/",
                "audio_file",
                clips,
                levels,
                args.baseline_requests,
                2,
                meter,
                warmup=2,
            )
            res["baseline_rss_mb"] = round(tree_rss_mb(srv.proc.pid))
        finally:
            srv.stop()

    svc = ServedService(env=env, cwd=args.service_dir)
    try:
        res["ours_startup_s"] = round(svc.wait_ready(), 1)
        meter = CpuMeter(lambda: [svc.proc.pid, os.getpid()])
        query = f"?models={args.models}" if args.models else ""  # default: every model
        res["ours"] = measure(
            "ours",
            f"{svc.url}/predict{query}",
            "audio",
            clips,
            levels,
            args.requests,
            2,
            meter,
            warmup=16,
            log_fn=svc.logs,
        )
        res["ours_rss_mb"] = round(tree_rss_mb(svc.proc.pid))
    finally:
        svc.stop()

    res["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    base = {r["users"]: r for r in res.get("baseline") or []}
    res["ratios"] = {
        str(r["users"]): {
            "ours_over_research": round(r["throughput"] / base[r["users"]]["throughput"], 2)
            if r["users"] in base and base[r["users"]]["throughput"]
            else None,
            "ours_over_floor": round(r["throughput"] / st["floor_tracks_per_s"], 3),
        }
        for r in res["ours"]
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print()
    print(report(res))
    print(f"\nload average at end: {res['machine']['loadavg_at_end']}; results: {out}")
    at8 = res["ratios"].get("8", {}).get("ours_over_research")
    print(f"throughput ratio vs research pipeline at 8 users: {fmt(at8, '.1f')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
