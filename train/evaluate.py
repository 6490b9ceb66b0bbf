"""Evaluate the stored models (and their ensemble) on a labelled folder, per track.

    python -m train.evaluate --data DIR [--json OUT]      # DIR laid out as GENRE/*.ext

Window probabilities are averaged per track; the ensemble is the mean of the models'
track probabilities. Genres of DIR must be among the models' labels.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def evaluate(data: str | Path, refs: list[str], workers: int = 2) -> dict:
    from genre_detector.inference import Predictor
    from genre_detector.predict import ensemble, track_probabilities
    from train.data import list_tracks, load_mels
    from train.fit import track_windows
    from train.metrics import classification_metrics

    predictors = {ref: Predictor.from_store(ref) for ref in refs}
    first = next(iter(predictors.values())).info
    labels, settings = first.labels, first.settings
    for p in predictors.values():
        if p.info.labels != labels or p.info.settings != settings:
            raise SystemExit(f"{p.info.tag} was trained with other labels or features than "
                             f"{first.tag}; evaluate them separately")
    tracks = list_tracks(data)
    unknown = sorted({t.genre for t in tracks} - set(labels))
    if unknown:
        raise SystemExit(f"genres {unknown} in {data} are not among the models' labels {labels}")
    tracks, mels = load_mels(tracks, settings, workers, "decode")
    y = np.array([labels.index(t.genre) for t in tracks])
    windows, owner = track_windows(mels, settings)
    out = {"labels": labels, "n_tracks": len(tracks), "models": {}}
    per_model = []
    for ref, predictor in predictors.items():
        wp = predictor(windows)
        probs = np.stack([track_probabilities(wp[owner == i]) for i in range(len(tracks))])
        per_model.append(probs)
        out["models"][predictor.info.architecture] = {
            **classification_metrics(y, probs, labels), "tag": predictor.info.tag}
    ens = np.stack([ensemble([p[i] for p in per_model]) for i in range(len(tracks))])
    out["ensemble"] = {**classification_metrics(y, ens, labels),
                       "tag": "+".join(p.info.tag for p in predictors.values())}
    return out


def format_table(result: dict) -> str:
    labels = result["labels"]
    head = f"{'model':<12} {'accuracy':>8} {'macro-F1':>8}  " + " ".join(
        f"{'rec ' + g[:6]:>11}" for g in labels) + "  tag"
    rows = [head, "-" * len(head)]
    for name, m in {**result["models"], "ensemble": result["ensemble"]}.items():
        rec = " ".join(f"{m['per_genre'][g]['recall']:>11.2f}" for g in labels)
        rows.append(f"{name:<12} {m['accuracy']:>8.3f} {m['macro_f1']:>8.3f}  {rec}  {m['tag']}")
    return "\n".join(rows) + f"\n({result['n_tracks']} tracks)"


def main(argv=None) -> int:
    from genre_detector.architectures import ARCHITECTURES
    from genre_detector.store import store_name
    p = argparse.ArgumentParser(prog="python -m train.evaluate", description=__doc__)
    p.add_argument("--data", required=True, help="folder laid out as GENRE/*.ext")
    p.add_argument("--json", dest="json_out", help="write the metrics as JSON to this file")
    p.add_argument("--models", default=",".join(f"{store_name(a)}:latest" for a in ARCHITECTURES),
                   help="comma-separated model-store tags")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="decoding processes")
    args = p.parse_args(argv)
    result = evaluate(args.data, [r.strip() for r in args.models.split(",")], args.workers)
    print(format_table(result))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=1))
        print(f"wrote {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
