"""Train the genre models (every registered family), evaluate them per track on artists they
never heard, fit the calibrated ensemble, and put everything in BentoML's model store.

The validation artists (--val-fraction) are used for nothing but the metrics on the cards
and the calibration: the research families stop early on other artists, held back from
the training side (FitConfig.stop_fraction, train.data.stopping_split), and are distilled
from a teacher cross-fitted on the tracks they fit.

    python -m train                                   # all five families, both sources
    python -m train --models cnn,musicnn --data DIR1 --data DIR2
    python -m train --ship                            # also refresh models/ (shipped models)
    python -m train moods [--labels FILE.csv]         # only the mood heads (train/moods.py)

With musicnn among the models, the run also trains its mood heads (train/moods.py; 4Q and
Emotify, artist-grouped CV in the run's log) and stores them beside its genre head
(--no-moods: keep the shipped ones).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from genre_detector.models.track_head import HEAD_FILE  # noqa: E402
from train.options import REPO  # noqa: E402  (after the TF log level is set)

SUMMARY_KEYS = ("accuracy", "macro_f1", "log_loss", "ece", "n_tracks")


def parse_args(argv=None):
    from train.options import add_data_and_fit_options, check_models

    p = argparse.ArgumentParser(
        prog="python -m train",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_data_and_fit_options(p)
    p.add_argument("--out", default=None, help="run folder for the report (default runs/<time>)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="share of artists held out")
    p.add_argument(
        "--ship",
        action="store_true",
        help="also write the trained models, cards, calibration and report into "
        "models/ (the shipped models), only if every model passes the inference check",
    )
    p.add_argument("--no-store", action="store_true", help="do not save into the model store")
    p.add_argument("--no-moods", action="store_true", help="do not retrain musicnn's mood heads")
    args = p.parse_args(argv)
    check_models(p, args)
    return args


def inference_ok(unused: list[str]) -> str:
    if not unused:
        return "ok: predicts every genre on its training tracks"
    return f"ok (not collapsed), but never predicts {', '.join(unused)} on its training tracks"


def ship(run: Path, cards: dict[str, dict], models: Path = REPO / "models") -> None:
    """Copy a run's models, cards, calibration and report into models/ (what `make serve`
    imports), with each model's ONNX export beside it (importing then needs no TensorFlow;
    tests/test_onnx.py checks the two agree)."""
    from genre_detector.audio.features import FeatureSettings
    from genre_detector.models.onnx_export import export_onnx
    from genre_detector.runtime.store import ONNX_FILE

    for name, metadata in cards.items():
        dest = models / name
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run / f"{name}.keras", dest / "model.keras")
        settings = FeatureSettings.from_dict(metadata["feature_settings"])
        export_onnx(dest / "model.keras", dest / ONNX_FILE, settings)
        if (run / f"{name}.head.npz").exists():
            shutil.copyfile(run / f"{name}.head.npz", dest / HEAD_FILE)
        if (run / f"{name}.moods.npz").exists():  # musicnn's mood heads and their card
            shutil.copyfile(run / f"{name}.moods.npz", dest / "moods.npz")
            shutil.copyfile(run / "moods_card.json", dest / "moods_card.json")
        (dest / "card.json").write_text(json.dumps(metadata, indent=1) + "\n")
    if (run / "calibration.json").exists():
        shutil.copyfile(run / "calibration.json", models / "calibration.json")
    (models / "report").mkdir(exist_ok=True)
    for f in [run / "report.json", *run.glob("*.png")]:
        shutil.copyfile(f, models / "report" / f.name)
    md = (run / "report.md").read_text()
    (models / "TRAINING_REPORT.md").write_text(md.replace("](", "](report/"))


def main(argv=None) -> int:
    from genre_detector.models.families import family
    from genre_detector.runtime.store import save_to_store
    from train.data import artist_split, data_fingerprint
    from train.metrics import classification_metrics, collapse_check
    from train.options import fit_config, load_tracks
    from train.report import write_report
    from train.trainer import Corpus, train_family

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["moods"]:
        from train.moods import main as moods_main

        return moods_main(argv[1:])
    args = parse_args(argv)
    t_start = time.time()
    corpus = Corpus(load_tracks(args), args.workers).drop_undecodable(
        [family(n).settings for n in args.models]
    )
    tracks, labels, y = corpus.tracks, corpus.labels, corpus.y
    train_idx, val_idx = artist_split(tracks, args.val_fraction, args.seed)
    sources = [t.source for t in tracks]
    src_val = [sources[i] for i in val_idx]
    groups = [tracks[i].group for i in val_idx]
    print(
        f"{len(train_idx)} training / {len(val_idx)} validation tracks from "
        f"{len(set(sources))} source(s), no artist on both sides; labels {labels}"
    )
    run_id = time.strftime("%Y%m%d-%H%M%S")
    out = Path(args.out or REPO / "runs" / run_id)
    out.mkdir(parents=True, exist_ok=True)
    fingerprint = data_fingerprint(tracks)
    results, val_probs, failed, cards, stored, stopped_on = {}, {}, {}, {}, {}, {}
    for name in args.models:
        cfg = fit_config(args, name)
        tr = train_family(name, corpus, train_idx, val_idx, cfg)
        assert not set(tr.stop_idx.tolist()) & set(val_idx.tolist())  # scored tracks stay out
        if len(tr.stop_idx):
            stopped_on[name] = tr.stop_idx
        metrics = classification_metrics(y[val_idx], tr.p_val, labels, src_val)
        train_metrics = classification_metrics(y[tr.fit_idx], tr.p_train, labels)
        # Inference-mode predictions of its own training tracks: catches a collapsed model.
        collapsed = collapse_check(y[tr.fit_idx], tr.p_train, labels)
        if collapsed:
            failed[name] = collapsed
            print(f"ERROR: {name} {collapsed}: not stored, not shipped", file=sys.stderr)
        else:
            val_probs[name] = tr.p_val
        model_file = out / f"{name}.keras"
        tr.model.save(model_file)
        head_file = None
        if tr.result.head is not None:  # a pretrained family's track head, beside the model
            head_file = tr.result.head.save(out / f"{name}.head.npz")
        metadata = _card(
            name, args, cfg, tr, labels, y, metrics, train_metrics, collapsed, fingerprint
        )
        moods_file = _moods(name, out, args)
        tag = (
            ""
            if args.no_store or collapsed
            else save_to_store(model_file, metadata, head_file, moods_file=moods_file)
        )
        stored[name] = tag
        results[name] = {
            "val": metrics,
            "train": train_metrics,
            "history": tr.result.history,
            "best_epoch": tr.result.best_epoch,
            "seconds": tr.result.seconds,
            "tag": tag,
            "inference_check": metadata["inference_check"],
        }
        print(
            f"{name}: val accuracy {metrics['accuracy']:.3f}, macro-F1 "
            f"{metrics['macro_f1']:.3f}, train accuracy {train_metrics['accuracy']:.3f}, "
            f"{tr.result.seconds:.0f} s",
            flush=True,
        )
        cards[name] = metadata
    report = {
        "run_id": run_id,
        "data": [str(d) for d in args.data],
        "data_fingerprint": fingerprint,
        "labels": labels,
        "split": {
            "by": "artist",
            "n_train": len(train_idx),
            "n_val": len(val_idx),
            "val_tracks": [tracks[i].rel for i in val_idx],
            # per model, the training-side tracks early stopping watched (never validation)
            "stop_tracks": {n: [tracks[i].rel for i in idx] for n, idx in stopped_on.items()},
        },
        "models": results,
        "ensemble": {},
    }
    if val_probs:
        report["ensemble"] = _ensemble(
            val_probs, y[val_idx], labels, groups, src_val, stored, out, args
        )
    report["seconds"] = time.time() - t_start
    js, md = write_report(out, report)
    _finish(report, js, md, out, cards, stored, failed, args.ship)
    return 1 if failed else 0


def _moods(name: str, out: Path, args) -> Path | None:
    """musicnn's mood heads for the run (train/moods.py), or the shipped ones with
    --no-moods; None for the other families."""
    if name != "musicnn":
        return None
    if args.no_moods:
        shipped = REPO / "models" / "musicnn" / "moods.npz"
        return shipped if shipped.exists() else None
    from train.moods import train_and_write

    return train_and_write(out / "musicnn.moods.npz")


def _card(name, args, cfg, tr, labels, y, metrics, train_metrics, collapsed, fingerprint) -> dict:
    """The model card (store metadata and models/<name>/card.json) of one trained family."""
    from genre_detector.models.families import family
    from genre_detector.runtime.store import code_version
    from train.metrics import unused_genres

    return {
        "architecture": name,
        "labels": labels,
        "feature_settings": family(name).settings.to_dict(),
        "pooling": family(name).pooling,
        "metrics": {k: metrics[k] for k in SUMMARY_KEYS},
        "per_genre": metrics["per_genre"],
        "per_source": metrics["per_source"],
        "confusion": metrics["confusion"],
        "train_accuracy": train_metrics["accuracy"],
        "data": [str(d) for d in args.data],
        "genre_map": str(args.genre_map),
        "data_fingerprint": fingerprint,
        "split": f"by artist across sources, val_fraction={args.val_fraction}, seed={args.seed}",
        "early_stopping": (
            f"on {len(tr.stop_idx)} training-side tracks by artists held back from "
            f"fitting (stop_fraction={cfg.stop_fraction}); the validation tracks of "
            "the metrics were used for nothing else"
            if len(tr.stop_idx)
            else "none (fixed epochs or a head fitted in one go); the validation "
            "tracks of the metrics were used for nothing else"
        ),
        "n_fit_tracks": len(tr.fit_idx),
        "code_version": code_version(),
        "best_epoch": tr.result.best_epoch,
        "train_seconds": round(tr.result.seconds, 1),
        "params": int(tr.model.count_params()),
        "fit_config": dataclasses.asdict(cfg),
        "inference_check": collapsed
        or inference_ok(unused_genres(y[tr.fit_idx], tr.p_train, labels)),
        "trained_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def _ensemble(val_probs, y_val, labels, groups, src_val, stored, out, args) -> dict:
    """Calibration (temperatures, pooling weights) fitted on the validation tracks, which no
    model heard; its own accuracy is measured cross-fitted (fit on 4/5 of the validation
    artists, scored on the other 1/5), so no track scores a fit it was in. Saved beside the
    run (and into the store unless --no-store); returns the report's "ensemble" entry."""
    from genre_detector.models.calibration import Calibration
    from genre_detector.runtime.store import save_calibration
    from train.calibrate import cross_fitted
    from train.metrics import classification_metrics

    cal = Calibration.fit(val_probs, y_val, labels, groups=groups)
    honest = cross_fitted(val_probs, y_val, labels, groups, args.seed)
    ens = classification_metrics(y_val, honest["ensemble"], labels, src_val)
    raw = {n: classification_metrics(y_val, honest[n], labels) for n in val_probs}
    cal.metrics = {
        "ensemble": {k: ens[k] for k in SUMMARY_KEYS},
        "per_source": ens["per_source"],
        "models_calibrated": {n: {k: m[k] for k in SUMMARY_KEYS} for n, m in raw.items()},
        "fitted_on": f"{len(y_val)} validation tracks (artists never heard)",
        "members": {n: stored.get(n, "") for n in val_probs},
    }
    (out / "calibration.json").write_text(json.dumps(cal.to_dict(), indent=1) + "\n")
    if not args.no_store:
        save_calibration(cal)
    return {
        "val": ens,
        "weights": cal.weights,
        "temperatures": cal.temperatures,
        "calibrated_models": raw,
        "reliability": honest["reliability"],
    }


def _finish(report: dict, js, md, out: Path, cards: dict, stored: dict, failed: dict, ship_it):
    """Print the run's summary; ship it into models/ when asked and no model failed."""
    if report["ensemble"]:
        e = report["ensemble"]["val"]
        print(
            f"ensemble (calibrated, cross-fitted): val accuracy {e['accuracy']:.3f}, "
            f"macro-F1 {e['macro_f1']:.3f}, ECE {e['ece']:.3f}; weights "
            + ", ".join(f"{n} {w:.2f}" for n, w in report["ensemble"]["weights"].items())
        )
    print(f"report: {md} and {js}")
    if ship_it and not failed:  # all or nothing: one collapsed model ships none of the run
        ship(out, cards)
        print(f"shipped: {', '.join(cards)}, calibration and report into {REPO / 'models'}")
    print(f"total training time: {report['seconds']:.0f} s")
    for name, tag in stored.items():
        print(f"model store tag of {name}: {tag or '(not stored)'}")
    for name, why in failed.items():
        print(
            f"ERROR: {name} {why}; it was not stored"
            f"{', and models/ was left as it was' if ship_it else ''} "
            "(train it again, e.g. with another --seed)",
            file=sys.stderr,
        )


if __name__ == "__main__":
    sys.exit(main())
