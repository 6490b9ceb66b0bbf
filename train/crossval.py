"""Artist-grouped k-fold cross-validation: every clip is validated once, by a model that
never heard its artist. For choosing training settings on more than one 60-track split.

    python -m train.crossval --models feedforward,lenet              # the training defaults
    python -m train.crossval --models feedforward --artist-balance 0   # compare a setting
    python -m train.crossval --models lenet --set eq_db=6 --set mixup_alpha=0.3

Takes the same options as `python -m train` (plus --folds and --set FIELD=VALUE for any
other FitConfig field). Fold 1 is the validation split `python -m train` uses with the same
--seed. Prints each fold's track-level accuracy and the mean and worst per family (and of the
families' ensemble when there are several), and writes every clip's out-of-fold
probabilities to the --json file. Nothing is stored or shipped.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def parse_args(argv=None):
    from train.options import add_data_and_fit_options, check_models, fit_config
    p = argparse.ArgumentParser(prog="python -m train.crossval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_and_fit_options(p)
    p.add_argument("--folds", type=int, default=5, help="number of artist-grouped folds")
    p.add_argument("--only-folds", default=None,
                   help="comma-separated fold numbers (1-based) to run, e.g. 1,3; default all")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="any other FitConfig field, e.g. mixup_alpha=0.3 (repeatable)")
    p.add_argument("--json", default=None, help="where to write the results "
                   "(default runs/crossval-<time>.json)")
    args = p.parse_args(argv)
    check_models(p, args)
    if args.folds < 2:
        p.error("--folds must be at least 2")
    try:
        args.only_folds = (sorted({int(f) for f in args.only_folds.split(",") if f.strip()})
                           if args.only_folds else list(range(1, args.folds + 1)))
    except ValueError:
        p.error("--only-folds takes fold numbers, e.g. 1,3")
    if not args.only_folds or not all(1 <= f <= args.folds for f in args.only_folds):
        p.error(f"--only-folds must lie between 1 and {args.folds}")
    try:
        args.set = dict(kv.split("=", 1) for kv in args.set)
    except ValueError:
        p.error("--set takes FIELD=VALUE")
    args.set = {k.strip(): v.strip() for k, v in args.set.items()}
    try:
        cfg = fit_config(args, args.models[0], **args.set)      # checks names and types
        args.set = {k: getattr(cfg, k) for k in args.set}
    except ValueError as exc:
        p.error(str(exc))
    return args


def summarize(accuracies: list[float]) -> str:
    a = 100 * np.asarray(accuracies)
    return (" / ".join(f"{x:.1f}" for x in a)
            + f" %   mean {a.mean():.1f} %, worst {a.min():.1f} %")


def report(args, configs, tracks, labels, y, folds, oof, per_fold, seconds, out: Path,
           final: bool) -> None:
    """Write the results so far to `out` (after every fold, so a crash keeps the folds done;
    `folds_run` lists them) and, when final, print the summary table."""
    from train.metrics import classification_metrics
    done = np.concatenate([folds[r["fold"] - 1][1] for r in next(iter(per_fold.values()))])
    results = {"data": str(args.data), "labels": labels, "folds": args.folds,
               "folds_run": [r["fold"] for r in per_fold[args.models[0]]], "seed": args.seed,
               "settings": {n: dataclasses.asdict(c) for n, c in configs.items()},
               "seconds": round(seconds, 1), "models": {}}
    lines = [f"\n{len(per_fold[args.models[0]])} of {args.folds} artist-grouped folds, "
             f"{len(done)} of {len(tracks)} tracks validated; track-level accuracy per fold:"]
    for name, rows in per_fold.items():
        if not rows:
            continue
        lines.append(f"  {name:12s} {summarize([r['accuracy'] for r in rows])}")
        entry = {"per_fold": rows,
                 "mean_accuracy": float(np.mean([r["accuracy"] for r in rows])),
                 "worst_accuracy": float(np.min([r["accuracy"] for r in rows]))}
        if name in oof:
            pooled = classification_metrics(y[done], oof[name][done], labels)
            entry["pooled"] = {k: pooled[k] for k in ("accuracy", "macro_f1", "confusion")}
            entry["recall"] = {g: v["recall"] for g, v in pooled["per_genre"].items()}
            entry["out_of_fold_probabilities"] = [   # null for tracks of folds not run
                None if np.isnan(row[0]) else np.round(row, 5).tolist() for row in oof[name]]
            lines.append(f"  {'':12s} recall " + ", ".join(f"{g} {r:.2f}"
                                                           for g, r in entry["recall"].items()))
        results["models"][name] = entry
    fold_of = {int(i): k for k, (_, val_idx) in enumerate(folds, 1) for i in val_idx}
    results["tracks"] = [{"path": t.path.relative_to(Path(args.data)).as_posix(),
                          "genre": t.genre, "artist": t.artist, "fold": fold_of[i]}
                         for i, t in enumerate(tracks)]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    tmp.replace(out)
    if final:
        print("\n".join(lines) + f"\nresults: {out}  ({seconds:.0f} s)")


def main(argv=None) -> int:
    import keras

    from genre_detector.features import FeatureSettings
    from train.data import artist_folds, list_tracks, load_mels
    from train.fit import fit, new_model, track_probs, track_windows
    from train.metrics import classification_metrics
    from train.options import REPO, fit_config

    args = parse_args(argv)
    configs = {name: fit_config(args, name, **args.set) for name in args.models}
    settings = FeatureSettings()
    tracks, mels = load_mels(list_tracks(args.data), settings, args.workers, "decode")
    labels = sorted({t.genre for t in tracks})
    y = np.array([labels.index(t.genre) for t in tracks])
    folds = artist_folds(tracks, args.folds, args.seed)
    oof = {name: np.full((len(tracks), len(labels)), np.nan) for name in args.models}
    per_fold: dict[str, list[dict]] = {name: [] for name in [*args.models, "ensemble"]}
    out = Path(args.json or REPO / "runs" / f"crossval-{time.strftime('%Y%m%d-%H%M%S')}.json")
    t0 = time.time()
    for k in args.only_folds:
        train_idx, val_idx = folds[k - 1]
        train_mels, val_mels = [mels[i] for i in train_idx], [mels[i] for i in val_idx]
        val_windows = track_windows(val_mels, settings)
        for name in args.models:
            model = new_model(name, settings, len(labels), configs[name].seed)
            res = fit(model, train_mels, y[train_idx], val_mels, y[val_idx], len(labels),
                      settings, configs[name], f"{name} fold {k}",
                      groups=[tracks[i].artist for i in train_idx])
            oof[name][val_idx] = track_probs(model, *val_windows, len(val_idx))
            m = classification_metrics(y[val_idx], oof[name][val_idx], labels)
            per_fold[name].append({"fold": k, "accuracy": m["accuracy"],
                                   "macro_f1": m["macro_f1"], "best_epoch": res.best_epoch,
                                   "recall": {g: v["recall"] for g, v in m["per_genre"].items()},
                                   "seconds": round(res.seconds, 1)})
            print(f"fold {k}: {name} accuracy {m['accuracy']:.3f}, best epoch "
                  f"{res.best_epoch}, {res.seconds:.0f} s", flush=True)
            keras.backend.clear_session()
        if len(args.models) > 1:
            p = np.mean([oof[name][val_idx] for name in args.models], axis=0)
            oof.setdefault("ensemble", np.full_like(oof[args.models[0]], np.nan))[val_idx] = p
            m = classification_metrics(y[val_idx], p, labels)
            per_fold["ensemble"].append({"fold": k, "accuracy": m["accuracy"],
                                         "macro_f1": m["macro_f1"]})
        report(args, configs, tracks, labels, y, folds, oof, per_fold, time.time() - t0, out,
               final=k == args.only_folds[-1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
