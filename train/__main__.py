"""Train the four genre models, evaluate them per track, put them in BentoML's model store.

    python -m train                                   # all four on ../shared/data/emotify
    python -m train --models cnn,lstm --data DIR      # DIR laid out as GENRE/*.ext
    python -m train --ship                            # also refresh models/ (shipped models)
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

from train.options import REPO  # noqa: E402  (after the TF log level is set)


def parse_args(argv=None):
    from train.options import add_data_and_fit_options, check_models
    p = argparse.ArgumentParser(prog="python -m train", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_data_and_fit_options(p)
    p.add_argument("--out", default=None, help="run folder for the report (default runs/<time>)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="share of artists held out")
    p.add_argument("--ship", action="store_true",
                   help="also write the trained models, cards and report into models/ (the shipped "
                   "models), only if every model passes the inference check")
    p.add_argument("--no-store", action="store_true", help="do not save into the model store")
    args = p.parse_args(argv)
    check_models(p, args)
    return args


def ship(run: Path, cards: dict[str, dict], models: Path = REPO / "models") -> None:
    """Copy a run's models, cards and report into models/ (what `make serve` imports)."""
    for name, metadata in cards.items():
        dest = models / name
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run / f"{name}.keras", dest / "model.keras")
        (dest / "card.json").write_text(json.dumps(metadata, indent=1) + "\n")
    (models / "report").mkdir(exist_ok=True)
    for f in [run / "report.json", *run.glob("*.png")]:
        shutil.copyfile(f, models / "report" / f.name)
    md = (run / "report.md").read_text()
    (models / "TRAINING_REPORT.md").write_text(md.replace("](", "](report/"))


def main(argv=None) -> int:
    import numpy as np

    from genre_detector.features import FeatureSettings
    from genre_detector.store import code_version, save_to_store
    from train.data import data_fingerprint, list_tracks, load_mels, split_by_artist
    from train.fit import fit, new_model, track_probs, track_windows
    from train.metrics import classification_metrics, collapse_check
    from train.options import fit_config
    from train.report import write_report

    args = parse_args(argv)
    t_start = time.time()
    settings = FeatureSettings()
    tracks = list_tracks(args.data)
    by_artist = any(t.artist != t.path.relative_to(Path(args.data)).as_posix() for t in tracks)
    train_tracks, val_tracks = split_by_artist(tracks, args.val_fraction, args.seed)
    train_tracks, train_mels = load_mels(train_tracks, settings, args.workers, "decode train")
    val_tracks, val_mels = load_mels(val_tracks, settings, args.workers, "decode val")
    labels = sorted({t.genre for t in tracks})
    y_train = np.array([labels.index(t.genre) for t in train_tracks])
    y_val = np.array([labels.index(t.genre) for t in val_tracks])
    print(f"{len(train_tracks)} training / {len(val_tracks)} validation tracks, "
          f"split by {'artist' if by_artist else 'track'}; labels {labels}")
    run_id = time.strftime("%Y%m%d-%H%M%S")
    out = Path(args.out or REPO / "runs" / run_id)
    out.mkdir(parents=True, exist_ok=True)
    fingerprint = data_fingerprint(tracks)
    windows = {"train": track_windows(train_mels, settings), "val": track_windows(val_mels, settings)}
    results, val_probs, failed, cards = {}, [], {}, {}
    for name in args.models:
        cfg = fit_config(args, name)
        model = new_model(name, settings, len(labels), cfg.seed)
        res = fit(model, train_mels, y_train, val_mels, y_val, len(labels), settings, cfg, name,
                  groups=[t.artist for t in train_tracks])
        # Inference-mode predictions on both sides: catches a model that collapsed to one class.
        p_train = track_probs(model, *windows["train"], len(train_tracks))
        p_val = track_probs(model, *windows["val"], len(val_tracks))
        metrics = classification_metrics(y_val, p_val, labels)
        train_metrics = classification_metrics(y_train, p_train, labels)
        collapsed = collapse_check(y_train, p_train, labels)
        if collapsed:
            failed[name] = collapsed
            print(f"ERROR: {name} {collapsed}: not stored, not shipped", file=sys.stderr)
        else:
            val_probs.append(p_val)
        model_file = out / f"{name}.keras"
        model.save(model_file)
        metadata = {
            "architecture": name, "labels": labels, "feature_settings": settings.to_dict(),
            "metrics": {k: metrics[k] for k in ("accuracy", "macro_f1", "log_loss", "n_tracks")},
            "per_genre": metrics["per_genre"], "confusion": metrics["confusion"],
            "train_accuracy": train_metrics["accuracy"], "data": str(args.data),
            "data_fingerprint": fingerprint, "split": f"by {'artist' if by_artist else 'track'}, "
            f"val_fraction={args.val_fraction}, seed={args.seed}",
            "code_version": code_version(), "best_epoch": res.best_epoch,
            "train_seconds": round(res.seconds, 1), "params": int(model.count_params()),
            "fit_config": dataclasses.asdict(cfg),
            "inference_check": collapsed or "ok: predicts every genre on its training tracks",
            "trained_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        tag = "" if args.no_store or collapsed else save_to_store(model_file, metadata)
        results[name] = {"val": metrics, "train": train_metrics, "history": res.history,
                         "best_epoch": res.best_epoch, "seconds": res.seconds, "tag": tag,
                         "inference_check": metadata["inference_check"]}
        print(f"{name}: val accuracy {metrics['accuracy']:.3f}, macro-F1 "
              f"{metrics['macro_f1']:.3f}, train accuracy {train_metrics['accuracy']:.3f}, "
              f"{res.seconds:.0f} s", flush=True)
        cards[name] = metadata
    # The ensemble of the models that passed the inference check (all of them, normally)
    ensemble = classification_metrics(y_val, np.mean(val_probs, axis=0), labels) if val_probs else {}
    report = {"run_id": run_id, "data": str(args.data), "data_fingerprint": fingerprint,
              "labels": labels, "seconds": time.time() - t_start,
              "split": {"by": "artist" if by_artist else "track", "n_train": len(train_tracks),
                        "n_val": len(val_tracks),
                        "val_tracks": [t.path.relative_to(Path(args.data)).as_posix()
                                       for t in val_tracks]},
              "models": results, "ensemble": {"val": ensemble} if ensemble else {}}
    js, md = write_report(out, report)
    if ensemble:
        print(f"ensemble: val accuracy {ensemble['accuracy']:.3f}, "
              f"macro-F1 {ensemble['macro_f1']:.3f}")
    print(f"report: {md} and {js}")
    if args.ship and not failed:      # all or nothing: one collapsed model ships none of the run
        ship(out, cards)
        print(f"shipped: {', '.join(cards)} and the report into {REPO / 'models'}")
    print(f"total training time: {report['seconds']:.0f} s")
    for name, r in results.items():
        print(f"model store tag: {r['tag'] or '(not stored)'}")
    for name, why in failed.items():
        print(f"ERROR: {name} {why}; it was not stored{', and models/ was left as it was' if args.ship else ''} "
              "(train it again, e.g. with another --seed)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
