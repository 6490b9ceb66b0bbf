"""Artist-grouped k-fold cross-validation: every clip is validated once, by a model that
never heard its artist. For choosing training settings on more than one 60-track split.

    python -m train.crossval --models feedforward,lenet              # the training defaults
    python -m train.crossval --models feedforward --artist-balance 0   # compare a setting
    python -m train.crossval --models lenet --set eq_db=6 --set mixup_alpha=0.3
    python -m train.crossval --repeats 3 --json runs/a.json   # 3 fold seeds: --seed, +1, +2
    python -m train.experiments.compare runs/a.json runs/b.json   # paired, intervals over artists

Takes the same options as `python -m train` (plus --folds, --only-folds, --repeats and --set
FIELD=VALUE for any other FitConfig field). Fold 1 is the validation split `python -m
train` uses with the same --seed. The fold being scored is used for nothing but its score:
the research families stop early on artists held back from that fold's *training* side
(FitConfig.stop_fraction, train.data.stopping_split) and are distilled from a teacher
cross-fitted on the tracks they fit. Prints each fold's track-level accuracy and the mean
and worst per family, pooled per-genre recall and per-source accuracy, and, with several
families, the calibrated ensemble: its temperatures and pooling weights are fitted on the
out-of-fold predictions of the other folds' artists only (nested), so its accuracy and
expected calibration error are honest. Writes every clip's out-of-fold probabilities to the
--json file (after every fold). Nothing is stored or shipped.

`--repeats N` runs the whole cross-validation N times, the folds (and the training seed)
drawn from --seed, --seed + 1, ...: the JSON's top level is the first (as without
--repeats), `more_repeats` holds the others ({"seed", "folds": fold of each track,
"models": {name: {"per_fold", "mean_accuracy", "out_of_fold_probabilities"}}}), and the
summary adds each model's accuracy over all repeats with its 95 % interval from resampling
artists. Two such files, run with different settings, are compared pairwise, fold for
fold, by `python -m train.experiments.compare` (train/experiments/compare.py).
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
        "--repeats",
        type=int,
        default=1,
        help="cross-validations with fold seeds --seed, --seed + 1, ... (default 1)",
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
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
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


def _model_entries(per_fold, oof, tracks, labels, y, done, lines) -> dict:
    """The JSON entry of every model of one cross-validation, and its summary lines."""
    from train.metrics import classification_metrics

    models = {}
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
        models[name] = entry
    return models


def report(args, configs, tracks, labels, y, repeats, seconds, out: Path, final: bool) -> None:
    """Write the results so far to `out` (after every fold, so a crash keeps the folds done;
    `folds_run` lists them) and, when final, print the summary table. `repeats`: one
    {"seed", "folds", "oof", "per_fold"} per cross-validation run so far."""
    results, lines = None, []
    for r, rep in enumerate(repeats):
        folds, per_fold = rep["folds"], rep["per_fold"]
        ran = per_fold[args.models[0]]
        if not ran:
            continue
        done = np.concatenate([folds[row["fold"] - 1][1] for row in ran])
        which = f"repeat {r + 1} (fold seed {rep['seed']}): " if args.repeats > 1 else ""
        lines.append(
            f"\n{which}{len(ran)} of {args.folds} artist-grouped folds, "
            f"{len(done)} of {len(tracks)} tracks validated; track-level accuracy per fold:"
        )
        models = _model_entries(per_fold, rep["oof"], tracks, labels, y, done, lines)
        fold_of = {int(i): k for k, (_, val_idx) in enumerate(folds, 1) for i in val_idx}
        if results is None:
            results = {
                "data": str(args.data),
                "labels": labels,
                "folds": args.folds,
                "folds_run": [row["fold"] for row in ran],
                "seed": rep["seed"],
                "repeats": args.repeats,
                "early_stopping": "on artists held back from each fold's training side "
                "(settings: stop_fraction); the scored fold is used for nothing else",
                "settings": {n: dataclasses.asdict(c) for n, c in configs.items()},
                "seconds": round(seconds, 1),
                "models": models,
                "tracks": [
                    {
                        "path": t.rel,
                        "source": t.source,
                        "genre": t.genre,
                        "artist": t.artist,
                        "fold": fold_of[i],
                    }
                    for i, t in enumerate(tracks)
                ],
                "more_repeats": [],
            }
        else:
            results["more_repeats"].append(
                {
                    "seed": rep["seed"],
                    "folds": [fold_of[i] for i in range(len(tracks))],
                    "folds_run": [row["fold"] for row in ran],
                    "models": {
                        n: {
                            k: m[k]
                            for k in ("per_fold", "mean_accuracy", "out_of_fold_probabilities")
                            if k in m
                        }
                        for n, m in models.items()
                    },
                }
            )
    if results is None:
        return
    if args.repeats > 1 and final:
        lines.append(f"\nover {len(repeats)} repeats (95 % interval from resampling artists):")
        lines += _over_repeats(results, args.models)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    tmp.replace(out)
    if final:
        print("\n".join(lines) + f"\nresults: {out}  ({seconds:.0f} s)")


def _over_repeats(results: dict, models: list[str]) -> list[str]:
    """Each model's accuracy over all repeats (every track's correctness averaged over the
    repeats that scored it in all), with its artist-bootstrap interval."""
    from train.intervals import accuracy_interval, correctness, repeats_of

    seeds = [r["seed"] for r in repeats_of(results)]
    lines = []
    for name in [*models, "ensemble"]:
        if not all(name in r["probs"] for r in repeats_of(results)):
            continue
        c = correctness(results, name, seeds)
        ok = ~np.isnan(c).any(0)
        groups = [t["artist"].casefold() for t, k in zip(results["tracks"], ok) if k]
        a = accuracy_interval(c[:, ok].mean(0), groups)
        per = " / ".join(f"{100 * np.nanmean(row):.1f}" for row in c)
        lines.append(
            f"  {name:12s} {100 * a['accuracy']:.1f} % [{100 * a['low']:.1f}, "
            f"{100 * a['high']:.1f}]  (per repeat {per} %)"
        )
    return lines


def cross_validate(args, configs, corpus, seed, only_folds, on_fold) -> dict:
    """One artist-grouped cross-validation with fold seed `seed`; calls on_fold(state,
    final) after every fold. Returns {"seed", "folds", "oof", "per_fold"}."""
    import keras

    from train.calibrate import cross_fitted
    from train.data import artist_folds
    from train.metrics import classification_metrics
    from train.trainer import train_family

    tracks, labels, y = corpus.tracks, corpus.labels, corpus.y
    configs = {n: dataclasses.replace(c, seed=seed) for n, c in configs.items()}
    folds = artist_folds(tracks, args.folds, seed)
    oof = {name: np.full((len(tracks), len(labels)), np.nan) for name in args.models}
    per_fold: dict[str, list[dict]] = {name: [] for name in [*args.models, "ensemble"]}
    state = {"seed": seed, "folds": folds, "oof": oof, "per_fold": per_fold}
    for k in only_folds:
        train_idx, val_idx = folds[k - 1]
        for name in args.models:
            tr = train_family(name, corpus, train_idx, val_idx, configs[name])
            if set(tr.stop_idx.tolist()) & set(val_idx.tolist()):  # never: train_family's rule
                raise AssertionError(f"{name} stopped on tracks of the fold it is scored on")
            oof[name][val_idx] = tr.p_val
            m = classification_metrics(y[val_idx], tr.p_val, labels)
            per_fold[name].append(
                {
                    "fold": k,
                    "accuracy": m["accuracy"],
                    "macro_f1": m["macro_f1"],
                    "best_epoch": tr.result.best_epoch,
                    "n_fit": len(tr.fit_idx),
                    "n_stop": len(tr.stop_idx),
                    "recall": {g: v["recall"] for g, v in m["per_genre"].items()},
                    "seconds": round(tr.result.seconds, 1),
                }
            )
            print(
                f"{'' if args.repeats == 1 else f'seed {seed} '}fold {k}: {name} accuracy "
                f"{m['accuracy']:.3f}, best epoch {tr.result.best_epoch} (stopping on "
                f"{len(tr.stop_idx)} training-side tracks), {tr.result.seconds:.0f} s",
                flush=True,
            )
            keras.backend.clear_session()
        final = k == only_folds[-1]
        if len(args.models) > 1 and final:
            # The calibrated ensemble over the folds run: fitted on other artists' tracks only.
            done = np.concatenate([folds[f - 1][1] for f in only_folds])
            honest = cross_fitted(
                {n: oof[n][done] for n in args.models},
                y[done],
                labels,
                [tracks[i].group for i in done],
                seed,
            )
            oof["ensemble"] = np.full_like(oof[args.models[0]], np.nan)
            oof["ensemble"][done] = honest["ensemble"]
            for f in only_folds:
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
                    for f in only_folds
                ]
        on_fold(state, final)
    return state


def main(argv=None) -> int:
    from genre_detector.models.families import family
    from train.options import REPO, fit_config, load_tracks
    from train.trainer import Corpus

    args = parse_args(argv)
    configs = {name: fit_config(args, name, **args.set) for name in args.models}
    corpus = Corpus(load_tracks(args), args.workers).drop_undecodable(
        [family(n).settings for n in args.models]
    )
    out = Path(args.json or REPO / "runs" / f"crossval-{time.strftime('%Y%m%d-%H%M%S')}.json")
    t0 = time.time()
    repeats: list[dict] = []
    for r in range(args.repeats):
        last = r == args.repeats - 1

        def on_fold(state, final_fold, r=r, last=last):
            done = repeats[:r] + [state]
            report(
                args,
                configs,
                corpus.tracks,
                corpus.labels,
                corpus.y,
                done,
                time.time() - t0,
                out,
                final=final_fold and last,
            )

        repeats.append(
            cross_validate(args, configs, corpus, args.seed + r, args.only_folds, on_fold)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
