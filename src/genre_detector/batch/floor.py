"""The in-process compute floor behind `python -m genre_detector tag PATH... --profile`.

    print(measure_floor(["sample/"]))    # seconds per stage, each run with nothing else

A benchmark, not a tagging run: it writes nothing, holds every window in memory (use a
sample), and tells how fast the tagger could go on this machine, to compare with what
`tag` reports (loadtests/README.md).
"""

from __future__ import annotations

import time

import numpy as np

from genre_detector.batch.library import walk
from genre_detector.batch.stages import DEFAULT_REFS, track_features
from genre_detector.batch.tagger import InProcessEngine


def measure_floor(
    paths: list[str],
    refs=DEFAULT_REFS,
    workers: int | None = None,
    batch_sizes=(128, 256, 512, 1024, 2048),
    sweep_windows: int = 2048,
) -> str:
    """Seconds per stage with nothing else running: decode + features for every track in
    the worker pool, then each model over all its windows at its fastest batch size (picked
    on the first `sweep_windows` windows)."""
    tracks = walk(paths)
    engine = InProcessEngine(refs, workers)
    try:
        list(engine.pool.map(int, range(4 * engine.workers)))  # workers are warm
        t0 = time.perf_counter()
        results = list(
            engine.pool.map(
                track_features,
                [t.path for t in tracks],
                [engine.settings] * len(tracks),
                chunksize=1,
            )
        )
        seconds = {"decode+features": time.perf_counter() - t0}
    finally:
        engine.close()
    by_settings = {
        s: np.concatenate([r[s].windows for r in results if isinstance(r, dict)])
        for s in engine.settings
    }
    lines = []
    for name, predictor in engine.predictors.items():
        windows = by_settings[predictor.info.settings]
        seconds[name], line = _time_model(predictor, windows, batch_sizes, sweep_windows)
        lines.append(f"  {name:<12} {line}")
    total = sum(seconds.values())
    per_model = {n: len(by_settings[p.info.settings]) for n, p in engine.predictors.items()}
    n_windows = (
        f"{len(windows)} windows"
        if len(set(per_model.values())) == 1
        else "windows " + ", ".join(f"{n} {k}" for n, k in per_model.items())
    )
    head = [
        f"compute floor over {len(tracks)} tracks, {n_windows}, {engine.workers} decoding workers:"
    ]
    head += [f"  {k:<16} {v:7.1f} s" for k, v in seconds.items()]
    head += [
        f"  {'total':<16} {total:7.1f} s  ->  {len(tracks) / total:.2f} tracks/s",
        "model batch-size sweep:",
    ]
    return "\n".join(head + lines)


def _time_model(predictor, windows, batch_sizes, sweep: int) -> tuple[float, str]:
    """(seconds for all `windows` at the best batch size, the sweep's line in ms/window)."""
    sample = windows[:sweep]
    per_window = {}
    for bs in batch_sizes:
        predictor(sample[:bs])  # first call per shape
        t0 = time.perf_counter()
        for i in range(0, len(sample), bs):
            predictor(sample[i : i + bs])
        per_window[bs] = (time.perf_counter() - t0) / len(sample)
    best = min(per_window, key=per_window.get)
    t0 = time.perf_counter()
    for i in range(0, len(windows), best):
        predictor(windows[i : i + best])
    line = f"best batch {best:>5}: " + " ".join(
        f"{bs}={s * 1e3:.2f}" for bs, s in per_window.items()
    )
    return time.perf_counter() - t0, line + " ms/window"
