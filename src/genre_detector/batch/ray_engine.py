"""`python -m genre_detector tag --engine ray`: the library tagger on Ray Data.

    python -m genre_detector tag MUSIC/ --out tags.csv --engine ray              # local Ray
    python -m genre_detector tag s3://bucket/music --out tags.csv --engine ray --address auto

The engine has the interface of the others in genre_detector.batch.tagger (labels, model_names,
tag(tracks) -> (track, row) in library order, stats(), close()), so tag_library writes,
resumes, counts and shows progress for it exactly as for the in-process engine.

    paths (a Ray dataset, blocks of `batch` tracks)
      -> map_batches(decode_batch)     Ray tasks, `decode_cpus` each: decode + the windows of
                                       every feature set (stages.track_features, as in-process)
      -> map_batches(ModelActor)       an actor pool of `model_actors`, each loading the
                                       models once (ModelSet.from_store) and running
                                       stages.infer_rows on whole batches of tracks
      -> iter_batches on the driver    rows, in order (preserve_order), one batch at a time

Ray Data's streaming executor bounds the blocks in flight between the stages (back-pressure):
memory does not grow with the library. Ray's dashboard and usage statistics are off, and a
local Ray listens on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import pickle
from typing import Iterable, Iterator

from genre_detector.audio.features import warm_up
from genre_detector.batch.library import Track
from genre_detector.batch.stages import DEFAULT_REFS, infer_rows, track_features, tracks_per_batch

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # before ray is imported anywhere
os.environ.setdefault("RAY_DATA_LOG_LEVEL", "WARNING")  # no INFO line per dataset
DECODE_MEMORY = 512 * 2**20  # bytes reserved per decoding task


def start_ray(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Connect to `address` (a running cluster: "auto", "ray://head:10001", ...) or start a
    local Ray with `num_cpus` (default: every core). True if this call started/connected."""
    import ray

    if ray.is_initialized():
        return False
    common = {
        "include_dashboard": False,
        "log_to_driver": False,
        "configure_logging": True,
        "logging_level": "WARNING",
    }
    if address:
        ray.init(address=address, **common)
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count() or 1, _node_ip_address="127.0.0.1", **common)
    return True


def _describe(refs) -> dict:
    """What the driver needs before any row: labels, model names and feature settings."""
    from genre_detector.runtime.model_set import ModelSet

    models = ModelSet.from_store(list(refs) if refs else None, warm_up=False)
    return {
        "labels": models.labels,
        "model_names": list(models.predictors),
        "settings": models.settings,
    }


def decode_batch(batch, settings):
    """Ray task: paths -> pickled features (or the error) per track, in the same order."""
    import pyarrow as pa

    feats, errors = [], []
    for path in batch.column("path").to_pylist():
        r = track_features(path, settings)
        ok = isinstance(r, dict)
        feats.append(pickle.dumps(r, protocol=5) if ok else None)
        errors.append(None if ok else json.dumps(r))
    return batch.append_column("features", pa.array(feats, pa.binary())).append_column(
        "failure", pa.array(errors, pa.string())
    )


class ModelActor:
    """One per model slot: loads the models once, then turns batches of decoded tracks into
    rows with the in-process engine's code (stages.infer_rows)."""

    def __init__(self, refs, threads: int = 0):
        from genre_detector.runtime.model_set import ModelSet

        self.models = ModelSet.from_store(list(refs) if refs else None, threads=threads)

    def __call__(self, batch):
        import pyarrow as pa

        cols = batch.to_pydict()
        ready = [
            (Track(p, k), pickle.loads(f) if f is not None else tuple(json.loads(e)))
            for p, k, f, e in zip(cols["path"], cols["key"], cols["features"], cols["failure"])
        ]
        rows, records = [], []
        for _, row, record in infer_rows(self.models, ready):
            rows.append(json.dumps(row))
            records.append(pickle.dumps(record, protocol=5) if record is not None else None)
        return pa.table(
            {
                "path": cols["path"],
                "key": cols["key"],
                "row": rows,
                "record": pa.array(records, pa.binary()),
            }
        )


class RayEngine:
    def __init__(
        self,
        refs: Iterable[str] | None = DEFAULT_REFS,
        *,
        address: str | None = None,
        num_cpus: int | None = None,
        batch_windows: int = 512,
        model_actors: int = 1,
        model_cpus: float | None = None,
        decode_cpus: float = 1.0,
    ):
        import ray

        self.refs = list(refs) if refs else None
        self.own = start_ray(address, num_cpus)
        try:  # the model list, while each local CPU warms a decoding worker (as in-process)
            cpus = 0 if address else int(ray.cluster_resources().get("CPU", 1))
            warm = [ray.remote(num_cpus=1)(warm_up).remote() for _ in range(cpus)]
            info = ray.get(ray.remote(max_calls=1, num_cpus=0)(_describe).remote(self.refs))
            ray.get(warm)
        except BaseException:
            self.close()
            raise
        self.labels, self.model_names = info["labels"], info["model_names"]
        self.settings = info["settings"]
        self.batch = tracks_per_batch(self.settings, batch_windows)
        # Locally the models share the cores with decoding, as in-process (their ONNX Runtime
        # threads unreserved); on a cluster each actor reserves a core by default.
        if model_cpus is None:
            model_cpus = 1.0 if address else 0.0
        self.model_actors, self.model_cpus = model_actors, model_cpus
        self.decode_cpus = decode_cpus
        self.address = address

    def dataset(self, tracks: list[Track]):
        import pyarrow as pa
        import ray

        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True  # rows in library order
        ctx.enable_progress_bars = False  # tag_library has its bar
        ctx.print_on_execution_start = False
        table = pa.table({"path": [t.path for t in tracks], "key": [t.key for t in tracks]})
        ds = ray.data.from_arrow(table)
        n_blocks = max(1, -(-len(tracks) // self.batch))
        ds = ds.repartition(n_blocks) if n_blocks > 1 else ds
        ds = ds.map_batches(
            decode_batch,
            fn_kwargs={"settings": self.settings},
            batch_size=None,
            batch_format="pyarrow",
            num_cpus=self.decode_cpus,
            zero_copy_batch=True,
            # What a decoding task may hold (capped tracks: MAX_SECONDS of audio). Remote
            # args unlike the actors' also keep Ray from fusing this stage into the model
            # actors, which would decode and run the models one after the other.
            memory=DECODE_MEMORY,
        )
        threads = max(1, round(self.model_cpus)) if self.model_cpus else 0
        return ds.map_batches(
            ModelActor,
            fn_constructor_kwargs={"refs": self.refs, "threads": threads},
            batch_size=self.batch,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=self.model_actors),
            num_cpus=self.model_cpus,
        )

    def tag(self, tracks: Iterator[Track]) -> Iterator[tuple[Track, dict, object]]:
        todo = list(tracks)
        if not todo:
            return
        for batch in self.dataset(todo).iter_batches(
            batch_size=None, batch_format="pyarrow", prefetch_batches=1
        ):
            cols = batch.to_pydict()
            for p, k, row, rec in zip(cols["path"], cols["key"], cols["row"], cols["record"]):
                yield Track(p, k), json.loads(row), pickle.loads(rec) if rec else None

    def stats(self) -> str:
        where = self.address or "local"
        return (
            f"ray ({where}): {self.model_actors} model actor(s) x {self.model_cpus:g} CPU, "
            f"decoding tasks x {self.decode_cpus:g} CPU, batches of {self.batch} tracks"
        )

    def close(self) -> None:
        import ray

        if self.own and ray.is_initialized():
            ray.shutdown()
