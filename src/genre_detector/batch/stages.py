"""The two steps every tagging engine runs (in-process and on Ray alike):

    features = track_features(path, settings)    # decode + windows, or (reason, detail)
    rows = infer_rows(models, [(track, features), ...])
                                                 # models once per batch, score_track per track

Kept apart from the engines so that batch.tagger and batch.ray_engine both import it and
never each other's internals.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import numpy as np

from genre_detector.audio.decode import AudioError
from genre_detector.audio.features import FeatureSettings, WindowBatch, extract_feature_sets
from genre_detector.audio.tags import read_tags
from genre_detector.batch.library import Track, read_source
from genre_detector.batch.rows import error_row, row_from_result
from genre_detector.catalog.records import TrackRecord, record_from_result, sha256_of
from genre_detector.scoring.track_result import score_track

DEFAULT_REFS = None  # the models to load: every registered family that has one in the store


class Features(dict):
    """FeatureSettings -> WindowBatch (without the whole-track mel), plus what the catalog
    stores of the file: the sha256 of its bytes and the title and artist of its tags."""

    sha256: str = ""
    title: str = ""
    artist: str = ""


def track_features(path: str, settings: list[FeatureSettings]) -> Features | tuple[str, str]:
    """Windows of one file for every settings set, or (reason, detail) when it cannot be used."""
    try:
        source = read_source(path)
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
        batches = extract_feature_sets(data, settings)
    except AudioError as exc:
        return exc.reason, exc.detail
    except OSError as exc:
        return "not_audio", f"cannot read {path}: {exc.strerror or exc}"
    except Exception as exc:  # noqa: BLE001  one bad file != the run
        return "failed", f"{type(exc).__name__}: {exc}"
    out = Features(
        {
            s: WindowBatch(b.windows, b.start_s, b.end_s, b.duration_s, None, b.analysis)
            for s, b in batches.items()
        }
    )
    out.sha256 = sha256_of(data)
    out.title, out.artist = read_tags(data)
    return out


def windows_of(result) -> int:
    """Windows a track sends to the models (its largest feature set); 0 for an error."""
    return max(len(b.windows) for b in result.values()) if isinstance(result, dict) else 0


def tracks_per_batch(settings: list[FeatureSettings], batch_windows: int) -> int:
    """Whole tracks that fill `batch_windows` windows at the most windows per track."""
    return max(1, -(-batch_windows // max(s.max_windows for s in settings)))


def infer_rows(
    models, ready: list, seconds: dict | None = None
) -> Iterator[tuple[Track, dict, TrackRecord | None]]:
    """(track, row, catalog record) for (track, features or (reason, detail)) pairs: every
    model runs once on the concatenated windows of the batch, the outputs are split back per
    track, and each track is scored by scoring.score_track, as in the service. The row has
    the track's search embedding and the record is what the catalog stores (None for a
    failed track, or models without a projection).

    `models`: a runtime.model_set.ModelSet; `seconds["models"]` accumulates the time in the
    models."""
    projection = next((i.projection for i in models.infos.values() if i.projection), None)
    t0 = time.perf_counter()
    outputs = iter(models.predict_tracks([r for _, r in ready if isinstance(r, dict)]))
    if seconds is not None:
        seconds["models"] += time.perf_counter() - t0
    for track, r in ready:
        if not isinstance(r, dict):
            yield track, error_row(track.path, *r), None
            continue
        result = score_track(r, next(outputs), models.infos, models.calibration)
        record = None
        if projection is not None and result.embedding is not None:
            record = record_from_result(result, projection, r.sha256, r.title, r.artist)
        row = row_from_result(track.path, result)
        row["embedding"] = (
            np.round(record.embedding.astype(np.float64), 6).tolist()
            if record is not None
            else None
        )
        yield track, row, record
