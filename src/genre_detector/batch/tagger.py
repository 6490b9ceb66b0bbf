"""The engines behind `python -m genre_detector tag`, and the run that drives them.

    python -m genre_detector tag MUSIC/ --out tags.csv                          # in-process
    python -m genre_detector tag MUSIC/ --out tags.csv --url http://a:3000,http://b:3000
    python -m genre_detector tag MUSIC/ --out tags.csv --engine ray [--address auto]

    summary, stats = tag_library(["MUSIC/"], "tags.csv")    # the same, from Python

tag_library walks the library (batch.library), runs an engine, writes the rows
(batch.writers), counts them (batch.rows.Summary) and, with `catalog` (CatalogTarget), stores
every track through catalog.ingest. The engines turn an iterator of tracks into (track, row,
record) triples in library order, and the local ones score every track with
scoring.score_track (batch.stages), so every engine's rows have one format (the remote one
reads the service's reply, made the same way).

* In-process: decoding + the windows of every feature set the models need run in a
  ProcessPoolExecutor of spawned workers with at most `queue` tracks in flight; the windows
  of consecutive tracks pile up to `batch_windows`, then each model runs once on the
  concatenation of its windows and the probabilities are split back per track.
* Remote (--url): every file is POSTed to URL/predict. Tracks go round-robin to the URLs;
  each URL has its own pool of `per_url` threads, which bounds its in-flight requests.
* Ray (--engine ray, genre_detector.batch.ray_engine): the same two steps
  (stages.track_features, then stages.infer_rows on batches of tracks) as Ray Data stages:
  decoding tasks, a model actor pool.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from genre_detector.audio.features import warm_up
from genre_detector.batch.library import Track, in_shard, walk
from genre_detector.batch.rows import Summary, error_row, row_from_reply
from genre_detector.batch.stages import (
    DEFAULT_REFS,
    infer_rows,
    track_features,
    tracks_per_batch,
    windows_of,
)
from genre_detector.batch.writers import PARQUET_ROWS, check_output, open_writer
from genre_detector.errors import parse_error

RETRY_STATUS = {502, 503, 504}  # --url: replies worth another try (Retry-After honoured)
RETRIES = 3  # --url: tries after the first, on those replies and on connection errors
BACKOFF = 2.0  # s: urllib3's backoff_factor: waits 0, 4, 8 s (without a Retry-After)


# ---------------------------------------------------------------- in-process


def _worker_init() -> None:
    from threadpoolctl import threadpool_limits

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    # One BLAS/OpenMP thread per worker: no oversubscription next to the others and the models.
    threadpool_limits(1)
    warm_up()


class InProcessEngine:
    def __init__(
        self,
        refs: Iterable[str] | None = DEFAULT_REFS,
        workers: int | None = None,
        batch_windows: int = 512,
        queue: int | None = None,
    ):
        from genre_detector.runtime.model_set import ModelSet

        self.workers = workers or os.cpu_count() or 1
        self.batch_windows = batch_windows
        self.pool = self._new_pool()  # workers warm up while models load
        try:
            self.models = ModelSet.from_store(list(refs) if refs else None)
        except BaseException:
            self.pool.shutdown(wait=False, cancel_futures=True)
            raise
        self.predictors, self.infos = self.models.predictors, self.models.infos
        self.labels, self.settings = self.models.labels, self.models.settings
        self.model_names = list(self.predictors)
        # Enough tracks in flight to fill the next batch while this one runs the models.
        self.queue = queue or 2 * self.workers + 2 * tracks_per_batch(self.settings, batch_windows)
        self.seconds = {"models": 0.0, "waiting for features": 0.0}

    def _new_pool(self) -> ProcessPoolExecutor:
        pool = ProcessPoolExecutor(
            self.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init
        )
        for _ in range(self.workers):  # start every worker now
            pool.submit(int)
        return pool

    def _submit(self, track: Track) -> Future:
        try:
            return self.pool.submit(track_features, track.path, self.settings)
        except BrokenProcessPool as exc:  # _result replaces the pool
            future = Future()
            future.set_exception(exc)
            return future

    def _result(self, track: Track, future) -> tuple[object, bool]:
        """(features or (reason, detail), whether the pool had to be replaced)."""
        t0 = time.perf_counter()
        try:
            return future.result(), False
        except BrokenProcessPool:  # a decoder crashed a worker; which track is unknown,
            for _ in range(2):  # so retry this one alone in a fresh pool
                self.pool.shutdown(wait=False)
                self.pool = self._new_pool()
                try:
                    return self.pool.submit(
                        track_features, track.path, self.settings
                    ).result(), True
                except BrokenProcessPool:
                    pass
            return ("worker_crashed", "decoding this file killed its worker process twice"), True
        finally:
            self.seconds["waiting for features"] += time.perf_counter() - t0

    def tag(self, tracks: Iterator[Track]) -> Iterator[tuple[Track, dict, object]]:
        pending: deque = deque()
        ready, n_windows = [], 0
        while True:
            while len(pending) < self.queue and (t := next(tracks, None)) is not None:
                pending.append((t, self._submit(t)))
            if not pending:
                break
            track, future = pending.popleft()
            result, new_pool = self._result(track, future)
            if new_pool:  # the old pool took the other pending tracks with it
                pending = deque((t, self._submit(t)) for t, _ in pending)
            ready.append((track, result))
            n_windows += windows_of(result)
            if n_windows >= self.batch_windows:
                yield from self._infer(ready)
                ready, n_windows = [], 0
        yield from self._infer(ready)

    def _infer(self, ready: list) -> Iterator[tuple[Track, dict]]:
        return infer_rows(self.models, ready, self.seconds)

    def stats(self) -> str:
        return "in-process: " + ", ".join(f"{k} {v:.1f} s" for k, v in self.seconds.items())

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


# ---------------------------------------------------------------- remote


def retrying_session(retries: int = RETRIES, backoff: float = BACKOFF):
    """A requests Session whose POSTs are retried by urllib3 on RETRY_STATUS replies and
    connection errors, honouring Retry-After; after the last try the last reply is returned
    (or the connection error raised)."""
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    retry = Retry(
        total=retries,
        backoff_factor=backoff,
        status_forcelist=RETRY_STATUS,
        allowed_methods=frozenset({"POST"}),
        respect_retry_after_header=True,
        raise_on_status=False,
    )
    session = requests.Session()
    for prefix in ("http://", "https://"):
        session.mount(prefix, HTTPAdapter(max_retries=retry))
    return session


class RemoteEngine:
    def __init__(
        self,
        urls: list[str],
        per_url: int = 4,
        timeout: float = 300,
        retries: int = RETRIES,
        backoff: float = BACKOFF,
    ):
        """Raises ValueError when the services cannot be read or serve different models."""
        import requests

        self.urls, self.timeout = [u.rstrip("/") for u in urls], timeout
        self.retries, self.backoff = retries, backoff
        try:
            infos = [requests.get(f"{u}/models", timeout=30).json() for u in self.urls]
        except (requests.RequestException, ValueError) as exc:
            raise ValueError(f"cannot read the models of the --url services: {exc}") from exc
        tags = [{n: m["tag"] for n, m in i["models"].items()} for i in infos]
        if any(i["labels"] != infos[0]["labels"] or t != tags[0] for i, t in zip(infos, tags)):
            raise ValueError(
                "the --url services serve different models: "
                + "; ".join(f"{u}: {t}" for u, t in zip(self.urls, tags))
            )
        self.labels, self.model_names = infos[0]["labels"], list(tags[0])
        self.pools = [
            ThreadPoolExecutor(per_url, thread_name_prefix=f"url{i}") for i in range(len(self.urls))
        ]
        self.queue = 2 * per_url * len(self.urls)
        self.local = threading.local()

    def _post(self, url: str, path: str) -> dict:
        import requests

        session = getattr(self.local, "session", None)
        if session is None:
            session = self.local.session = retrying_session(self.retries, self.backoff)
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            return error_row(path, "not_audio", f"cannot read {path}: {exc.strerror or exc}")
        try:
            r = session.post(
                f"{url}/predict", files={"audio": (Path(path).name, data)}, timeout=self.timeout
            )
        except requests.RequestException as exc:
            return error_row(path, "unreachable", f"{url}: {exc}")
        if r.status_code == 200:
            return row_from_reply(path, r.json())
        code, detail = parse_error(r.content)
        return error_row(path, code or f"http_{r.status_code}", detail or r.text[:300])

    def tag(self, tracks: Iterator[Track]) -> Iterator[tuple[Track, dict, None]]:
        pending: deque = deque()
        i = 0
        while True:
            while len(pending) < self.queue and (t := next(tracks, None)) is not None:
                k = i % len(self.urls)
                pending.append((t, self.pools[k].submit(self._post, self.urls[k], t.path)))
                i += 1
            if not pending:
                break
            track, future = pending.popleft()
            yield track, future.result(), None  # the service's reply: no catalog record

    def stats(self) -> str:
        return f"remote: {len(self.urls)} URL(s)"

    def close(self) -> None:
        for pool in self.pools:
            pool.shutdown(wait=False, cancel_futures=True)


# ---------------------------------------------------------------- the run

CATALOG_BATCH = 32  # tracks per catalog transaction


@dataclass(frozen=True)
class CatalogTarget:
    """Where `tag --catalog` stores the tracks: the database, the owning account and the
    consent the label gives for its own catalog."""

    url: str
    owner: str
    consent: str = "search"
    # path -> (title, artist) for files whose own tags lack them (a label's track list)
    names: dict = field(default_factory=dict, hash=False, compare=False)

    def open(self) -> "CatalogSink":
        from genre_detector.catalog.db import Catalog
        from genre_detector.catalog.records import Consent

        consent = Consent.parse(self.consent)  # refuses before any work without `search`
        return CatalogSink(Catalog.open(self.url), self.owner, consent, self.names)


class CatalogSink:
    """Buffers records and writes them CATALOG_BATCH at a time through catalog.ingest.add_many
    (which also matches the tracks with `notify` against the watches)."""

    def __init__(self, db, owner: str, consent, names: dict | None = None):
        self.db, self.owner, self.consent = db, owner, consent
        self.names = names or {}
        self.pending: list = []
        self.added = 0

    def add(self, record, path: str = "") -> None:
        from genre_detector.catalog.records import clean_name

        title, artist = self.names.get(path, ("", ""))
        if (title and not record.title) or (artist and not record.artist):
            record = dataclasses.replace(
                record,
                title=record.title or clean_name(title),
                artist=record.artist or clean_name(artist),
            )
        self.pending.append(record)
        if len(self.pending) >= CATALOG_BATCH:
            self.flush()

    def flush(self) -> None:
        from genre_detector.catalog import ingest

        if self.pending:
            self.added += ingest.add_many(self.db, self.owner, self.pending, self.consent)
            self.pending = []

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self.db.close()


def tag_library(
    paths: list[str],
    out: str,
    *,
    urls: list[str] = (),
    refs=DEFAULT_REFS,
    workers: int | None = None,
    batch_windows: int = 512,
    per_url: int = 4,
    resume: bool = False,
    overwrite: bool = False,
    shard: tuple[int, int] | None = None,
    labels_from_folders: bool = False,
    progress: bool = True,
    engine=None,
    ray: dict | None = None,
    parquet_rows: int = PARQUET_ROWS,
    catalog: CatalogTarget | None = None,
) -> tuple[Summary, str]:
    """Tag every audio file under `paths` into `out`; returns the summary and engine stats.

    `engine`: an engine to use (and leave open) instead of building one from the options.
    `ray`: run on Ray (genre_detector.batch.ray_engine.RayEngine) with these keyword arguments
    (address, model_actors, model_cpus, decode_cpus); `workers` sizes a local Ray.
    `out`: a .csv or .jsonl file, or a .parquet folder of parts of `parquet_rows` rows.
    `catalog`: also store every track in a catalog database (a label's own catalog), in
    batches of CATALOG_BATCH tracks per transaction; audio already there is skipped."""
    tracks = walk(paths)
    if shard:
        tracks = [t for t in tracks if in_shard(t, *shard)]
    check_output(out, resume, overwrite)  # before minutes of model loading
    sink = catalog.open() if catalog is not None else None  # before the models, too
    if sink is not None and urls:
        raise ValueError(
            "--catalog stores what this machine scores: it does not combine with --url"
        )
    own = engine is None
    if own:
        engine = _engine(urls, refs, workers, batch_windows, per_url, ray)
    try:
        summary = Summary(engine.labels, labels_from_folders)
        writer = open_writer(
            out,
            engine.model_names,
            engine.labels,
            resume,
            overwrite,
            on_existing=lambda row: summary.add(row, resumed=True),
            parquet_rows=parquet_rows,
        )
        todo = [t for t in tracks if t.path not in writer.done]
        _run(engine, todo, writer, summary, sink, progress)
    finally:
        if own:
            engine.close()
    return summary, engine.stats()


def _engine(urls, refs, workers, batch_windows, per_url, ray):
    """The engine the options ask for: through services (urls), on Ray (ray) or in-process."""
    if urls:
        return RemoteEngine(list(urls), per_url)
    if ray is not None:
        from genre_detector.batch.ray_engine import RayEngine

        return RayEngine(refs, num_cpus=workers, batch_windows=batch_windows, **ray)
    return InProcessEngine(refs, workers, batch_windows)


def _run(engine, todo: list[Track], writer, summary: Summary, sink, progress: bool) -> None:
    """Every track of `todo` through the engine into the writer (and the catalog sink),
    counted in the summary, under a progress bar; closes the writer and the sink, also when
    interrupted (Ctrl-C leaves every written row complete)."""
    from tqdm import tqdm

    bar = tqdm(
        total=len(todo),
        unit="track",
        disable=not progress,
        file=sys.stderr,
        smoothing=0.1,
        dynamic_ncols=True,
    )
    t0 = time.perf_counter()
    try:
        for track, row, record in engine.tag(iter(todo)):
            writer.write(row)
            summary.add(row)
            if sink is not None and record is not None:
                sink.add(record, track.path)
            bar.update()
            if row.get("error"):
                bar.set_postfix_str(f"failed {sum(summary.failed.values())}", refresh=False)
    finally:
        summary.seconds = time.perf_counter() - t0
        bar.close()
        writer.close()
        if sink is not None:
            sink.close()
            summary.catalog_added = sink.added
