"""One cross-validation table from several `train.crossval` runs on the same folds: each
model's out-of-fold predictions from the run that trained it the way it ships, and the
calibrated ensemble cross-fitted over them exactly as `train.crossval` does.

    python -m train.experiments.combine_cv \\
        runs/crossval-distill05.json:feedforward,lenet,lstm,musicnn \\
        runs/crossval-cnn.json:cnn --json models/report/crossval.json

Refuses runs whose tracks, folds or labels differ. Prints one line per model and writes the
metrics (no per-track probabilities) to --json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    from train.calibrate import cross_fitted
    from train.data import Track
    from train.metrics import classification_metrics

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="RUN.json:model,model (the models to take from it)")
    p.add_argument("--json", type=Path, help="write the combined metrics here")
    args = p.parse_args(argv)
    oof, base, seed = {}, None, 0
    for spec in args.runs:
        path, _, names = spec.rpartition(":")
        run = json.loads(Path(path).read_text())
        key = (run["labels"], run["tracks"])
        if base is not None and key != base:
            p.error(f"{path}: other tracks, folds or labels than {args.runs[0]}")
        base, seed = key, run["seed"]
        for name in names.split(","):
            oof[name] = np.asarray(run["models"][name]["out_of_fold_probabilities"])
    labels, tracks = base
    y = np.array([labels.index(t["genre"]) for t in tracks])
    sources = [t["source"] for t in tracks]
    folds = np.array([t["fold"] for t in tracks])
    groups = [Track(Path(t["path"]), t["genre"], t["artist"]).group for t in tracks]
    honest = cross_fitted(oof, y, labels, groups, seed)
    out = {}
    for name, probs in [*oof.items(), ("ensemble", honest["ensemble"])]:
        m = classification_metrics(y, probs, labels, sources)
        recall = {g: v["recall"] for g, v in m["per_genre"].items()}
        out[name] = {
            "accuracy": m["accuracy"],
            "macro_f1": m["macro_f1"],
            "ece": m["ece"],
            "ece_calibrated": (
                classification_metrics(y, honest[name], labels)["ece"] if name in oof else None
            ),
            "per_source": {k: v["accuracy"] for k, v in m["per_source"].items()},
            "per_fold": [
                float((probs[folds == k].argmax(1) == y[folds == k]).mean())
                for k in sorted(set(folds))
            ],
            "recall": recall,
        }
        low = min(recall, key=recall.get)
        print(
            f"{name:12s} accuracy {m['accuracy']:.3f}, macro-F1 {m['macro_f1']:.3f}, ECE "
            f"{m['ece']:.3f}; "
            + ", ".join(f"{k} {v:.3f}" for k, v in sorted(out[name]["per_source"].items()))
            + f"; lowest recall {low} {recall[low]:.2f}; folds "
            + " / ".join(f"{a * 100:.1f}" for a in out[name]["per_fold"])
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"runs": args.runs, "models": out}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
