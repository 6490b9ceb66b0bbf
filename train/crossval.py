"""Artist-grouped k-fold cross-validation: every clip is validated once, by a model that
never heard its artist. For choosing training settings on more than one 60-track split.

    python -m train.crossval --models feedforward,lenet              # the training defaults
    python -m train.crossval --models feedforward --artist-balance 0   # compare a setting
    python -m train.crossval --models lenet --set eq_db=6 --set mixup_alpha=0.3

Takes the same options as `python -m train` (plus --folds and --set FIELD=VALUE for any
other FitConfig field). Fold 1 is the validation split `python -m train` uses with the same
--seed. Prints each fold's track-level accuracy and the mean and worst per family, pooled
per-genre recall and per-source accuracy, and, with several families, the calibrated
ensemble: its temperatures and pooling weights are fitted on the out-of-fold predictions of
the other folds' artists only (nested), so its accuracy and expected calibration error are
honest. Writes every clip's out-of-fold probabilities to the --json file. Nothing is stored
or shipped.
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

    p = argparse.ArgumentParser(
        prog="python -m train.crossval",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_data_and_fit_options(p)
    p.add_argument("--folds", type=int, default=5, help="number of artist-grouped folds")
    p.add_argument(
        "--only-folds",
        default=None,
        help="comma-separated fold numbers (1-based) to run, e.g. 1,3; default all",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="any other FitConfig field, e.g. mixup_alpha=0.3 (repeatable)",
    )
    p.add_argument(
        "--json",
        default=None,
        help="where to write the results (default runs/crossval-<time>.json)",
    )
    args = p.parse_args(argv)
    check_models(p, args)
    if args.folds < 2:
        p.error("--folds must be at least 2")
    try:
        args.only_folds = (
            sorted({int(f) for f in args.only_folds.split(",") if f.strip()})
            if args.only_folds
            else list(range(1, args.folds + 1))
        )
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
        cfg = fit_config(args, args.models[0], **args.set)  # checks names and types
        args.set = {k: getattr(cfg, k) for k in args.set}
    except ValueError as exc:
        p.error(str(exc))
    return args


def summarize(accuracies: list[float]) -> str:
    a = 100 * np.asarray(accuracies)
    return " / ".join(f"{x:.1f}" for x in a) + f" %   mean {a.mean():.1f} %, worst {a.min():.1f} %"


def report(
    args, configs, tracks, labels, y, folds, oof, per_fold, seconds, out: Path, final: bool
) -> None:
    """Write the results so far to `out` (after every fold, so a crash keeps the folds done;
    `folds_run` lists them) and, when final, print the summary table."""
    from train.metrics import classification_metrics

    done = np.concatenate([folds[r["fold"] - 1][1] for r in next(iter(per_fold.values()))])
    results = {
        "data": str(args.data),
        "labels": labels,
        "folds": args.folds,
        "folds_run": [r["fold"] for r in per_fold[args.models[0]]],
        "seed": args.seed,
        "settings": {n: dataclasses.asdict(c) for n, c in configs.items()},
        "seconds": round(seconds, 1),
        "models": {},
    }
    lines = [
        f"\n{len(per_fold[args.models[0]])} of {args.folds} artist-grouped folds, "
        f"{len(done)} of {len(tracks)} tracks validated; track-level accuracy per fold:"
    ]
    for name, rows in per_fold.items():
        if not rows:
            continue
        lines.append(f"  {name:12s} {summarize([r['accuracy'] for r in rows])}")
        entry = {
            "per_fold": rows,
            "mean_accuracy": float(np.mean([r["accuracy"] for r in rows])),
            "worst_accuracy": float(np.min([r["accuracy"] for r in rows])),
        }
        if name in oof:
            pooled = classification_metrics(
                y[done], oof[name][done], labels, [tracks[i].source for i in done]
            )
            entry["pooled"] = {
                k: pooled[k]
                for k in ("accuracy", "macro_f1", "log_loss", "ece", "confusion", "per_source")
            }
            lines.append(
                f"  {'':12s} pooled accuracy {pooled['accuracy']:.3f}, macro-F1 "
                f"{pooled['macro_f1']:.3f}, ECE {pooled['ece']:.3f}; "
                + ", ".join(f"{s} {v['accuracy']:.3f}" for s, v in pooled["per_source"].items())
            )
            entry["recall"] = {g: v["recall"] for g, v in pooled["per_genre"].items()}
            entry["out_of_fold_probabilities"] = [  # null for tracks of folds not run
                None if np.isnan(row[0]) else np.round(row, 5).tolist() for row in oof[name]
            ]
            lines.append(
                f"  {'':12s} recall "
                + ", ".join(f"{g} {r:.2f}" for g, r in entry["recall"].items())
            )
        results["models"][name] = entry
    fold_of = {int(i): k for k, (_, val_idx) in enumerate(folds, 1) for i in val_idx}
    results["tracks"] = [
        {
            "path": t.rel,
            "source": t.source,
            "genre": t.genre,
            "artist": t.artist,
            "fold": fold_of[i],
        }
        for i, t in enumerate(tracks)
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    tmp.replace(out)
    if final:
        print("\n".join(lines) + f"\nresults: {out}  ({seconds:.0f} s)")


def main(argv=None) -> int:
    import keras

    from genre_detector.families import family
    from train.calibrate import cross_fitted
    from train.data import artist_folds
    from train.metrics import classification_metrics
    from train.options import REPO, fit_config, load_tracks
    from train.trainer import Corpus, train_family

    args = parse_args(argv)
    configs = {name: fit_config(args, name, **args.set) for name in args.models}
    corpus = Corpus(load_tracks(args), args.workers).drop_undecodable(
        [family(n).settings for n in args.models]
    )
    tracks, labels, y = corpus.tracks, corpus.labels, corpus.y
    folds = artist_folds(tracks, args.folds, args.seed)
    oof = {name: np.full((len(tracks), len(labels)), np.nan) for name in args.models}
    per_fold: dict[str, list[dict]] = {name: [] for name in [*args.models, "ensemble"]}
    out = Path(args.json or REPO / "runs" / f"crossval-{time.strftime('%Y%m%d-%H%M%S')}.json")
    t0 = time.time()
    for k in args.only_folds:
        train_idx, val_idx = folds[k - 1]
        for name in args.models:
            tr = train_family(name, corpus, train_idx, val_idx, configs[name])
            oof[name][val_idx] = tr.p_val
            m = classification_metrics(y[val_idx], tr.p_val, labels)
            per_fold[name].append(
                {
                    "fold": k,
                    "accuracy": m["accuracy"],
                    "macro_f1": m["macro_f1"],
                    "best_epoch": tr.result.best_epoch,
                    "recall": {g: v["recall"] for g, v in m["per_genre"].items()},
                    "seconds": round(tr.result.seconds, 1),
                }
            )
            print(
                f"fold {k}: {name} accuracy {m['accuracy']:.3f}, best epoch "
                f"{tr.result.best_epoch}, {tr.result.seconds:.0f} s",
                flush=True,
            )
            keras.backend.clear_session()
        final = k == args.only_folds[-1]
        if len(args.models) > 1 and final:
            # The calibrated ensemble over the folds run: fitted on other artists' tracks only.
            done = np.concatenate([folds[f - 1][1] for f in args.only_folds])
            honest = cross_fitted(
                {n: oof[n][done] for n in args.models},
                y[done],
                labels,
                [tracks[i].group for i in done],
                args.seed,
            )
            oof["ensemble"] = np.full_like(oof[args.models[0]], np.nan)
            oof["ensemble"][done] = honest["ensemble"]
            for f in args.only_folds:
                idx = folds[f - 1][1]
                m = classification_metrics(y[idx], oof["ensemble"][idx], labels)
                per_fold["ensemble"].append(
                    {"fold": f, "accuracy": m["accuracy"], "macro_f1": m["macro_f1"]}
                )
            for n in args.models:
                oof[f"{n} (calibrated)"] = np.full_like(oof[n], np.nan)
                oof[f"{n} (calibrated)"][done] = honest[n]
                per_fold[f"{n} (calibrated)"] = [
                    {
                        "fold": f,
                        "accuracy": classification_metrics(
                            y[folds[f - 1][1]], oof[n][folds[f - 1][1]], labels
                        )["accuracy"],
                    }
                    for f in args.only_folds
                ]
        report(
            args,
            configs,
            tracks,
            labels,
            y,
            folds,
            oof,
            per_fold,
            time.time() - t0,
            out,
            final=final,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
