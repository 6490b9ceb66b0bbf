"""Evaluate the stored models (and their calibrated ensemble) on labelled folders, per track.

    python -m train.evaluate --data DIR [--data DIR2] [--json OUT]   # each laid out as GENRE/*.ext
    python -m train.evaluate --held-out        # the validation artists of the shipped models

Every track is scored by genre_detector.scoring.score_track on the stored models' ONNX
sessions, exactly as the service and the tagger score it (no TensorFlow): each model's
calibrated probabilities and the calibrated ensemble. Genres of the data
(after --genre-map) must be among the models' labels. Without --held-out this scores
whatever you point it at: on the shared clips that includes the models' own training
tracks, so expect numbers above the validation ones; --held-out scores only the tracks the
training run held out (artists the models never heard), from models/report/report.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

# Tracks per model call: at most 16 x 40 research windows (musicnn: 5 per track, ~18 MB
# each in the graph) keep the ONNX sessions' memory small.
EVAL_TRACKS = 16


def evaluate(tracks, refs: list[str] | None = None, workers: int = 2) -> dict:
    """Metrics of every model and the ensemble on `tracks` (train.data.Track), each track
    scored by genre_detector.scoring.score_track on the stored models' ONNX Runtime sessions
    (as the service and the tagger do; no TensorFlow)."""
    from genre_detector.audio.features import WindowBatch, cut_windows, window_starts
    from genre_detector.runtime.model_set import ModelSet
    from genre_detector.scoring.track_result import score_track
    from train.metrics import classification_metrics
    from train.trainer import Corpus

    models = ModelSet.from_store(refs)
    labels = models.labels
    unknown = sorted({t.genre for t in tracks} - set(labels))
    if unknown:
        raise ValueError(f"genres {unknown} of the data are not among the models' labels {labels}")
    corpus = Corpus(tracks, workers).drop_undecodable(models.settings)
    tracks = corpus.tracks
    y = np.array([labels.index(t.genre) for t in tracks])
    sources = [t.source for t in tracks]
    calibrated = {n: [] for n in models.predictors}
    ensemble = []
    mels = {s: corpus.mels(s) for s in models.settings}
    for chunk in range(0, len(tracks), EVAL_TRACKS):
        batches = []  # per track: {settings: WindowBatch}, as the service cuts them
        for i in range(chunk, min(chunk + EVAL_TRACKS, len(tracks))):
            batches.append({})
            for s, track_mels in mels.items():
                mel = track_mels[i].astype(np.float32)
                starts = window_starts(mel.shape[1], s)
                duration = mel.shape[1] * s.frame_seconds
                batches[-1][s] = WindowBatch(
                    cut_windows(mel, starts, s),
                    starts * s.frame_seconds,
                    np.minimum((starts + s.window_frames) * s.frame_seconds, duration),
                    duration,
                    mel=None,
                )
        for b, mine in zip(batches, models.predict_tracks(batches)):
            result = score_track(b, mine, models.infos, models.calibration)
            for n, m in result.models.items():
                calibrated[n].append(m.verdict.probabilities)
            ensemble.append(result.ensemble.probabilities)
    out = {"labels": labels, "n_tracks": len(tracks), "models": {}}
    for name, predictor in models.predictors.items():
        out["models"][name] = {
            **classification_metrics(y, np.stack(calibrated[name]), labels, sources),
            "tag": predictor.info.tag,
        }
    out["ensemble"] = {
        **classification_metrics(y, np.stack(ensemble), labels, sources),
        "tag": "+".join(p.info.tag for p in models.predictors.values()),
    }
    return out


def format_table(result: dict) -> str:
    labels = result["labels"]
    head = (
        f"{'model':<12} {'accuracy':>8} {'macro-F1':>8}  "
        + " ".join(f"{'rec ' + g[:6]:>11}" for g in labels)
        + "  tag"
    )
    rows = [head, "-" * len(head)]
    for name, m in {**result["models"], "ensemble": result["ensemble"]}.items():
        rec = " ".join(f"{m['per_genre'][g]['recall']:>11.2f}" for g in labels)
        rows.append(f"{name:<12} {m['accuracy']:>8.3f} {m['macro_f1']:>8.3f}  {rec}  {m['tag']}")
        rows.append(
            f"{'':<12} per source: "
            + ", ".join(
                f"{s} {v['accuracy']:.3f} ({v['n_tracks']})" for s, v in m["per_source"].items()
            )
        )
    return "\n".join(rows) + f"\n({result['n_tracks']} tracks)"


def main(argv=None) -> int:
    from train.options import DEFAULT_GENRE_MAP, REPO, load_tracks

    p = argparse.ArgumentParser(
        prog="python -m train.evaluate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--data",
        action="append",
        default=None,
        help="a labelled source folder (repeatable; default: the training sources)",
    )
    p.add_argument("--genre-map", default=DEFAULT_GENRE_MAP, help="dataset,folder,genre CSV")
    p.add_argument(
        "--held-out",
        action="store_true",
        help="only the tracks the shipped "
        "models' training run held out (models/report/report.json)",
    )
    p.add_argument("--json", dest="json_out", help="write the metrics as JSON to this file")
    p.add_argument(
        "--models",
        default=None,
        help="comma-separated model-store tags (default: every registered family in the store)",
    )
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="decoding processes")
    args = p.parse_args(argv)
    tracks = load_tracks(args)
    if args.held_out:
        report = json.loads((REPO / "models" / "report" / "report.json").read_text())
        held = set(report["split"]["val_tracks"])
        tracks = [t for t in tracks if t.rel in held]
    refs = [r.strip() for r in args.models.split(",")] if args.models else None
    try:
        result = evaluate(tracks, refs, args.workers)
    except (LookupError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_table(result))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=1))
        print(f"wrote {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
