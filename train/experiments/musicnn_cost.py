"""The musicnn family's cost against its accuracy: how many 3 s windows per track, and
which backbones, are worth their CPU. Prints one table row per setting.

    python -m train.experiments.musicnn_cost                 # both sources, 5 artist-grouped folds

Cost: CPU milliseconds of each backbone per 30 s track (10 windows) at serving batch sizes,
measured here. Accuracy: 5-fold artist-grouped cross-validation of the shipped head recipe
(train/pretrained.py) on the first k of each track's windows spread evenly over it, for
MSD_musicnn, MTT_musicnn and both. Embeddings are cached, so a rerun costs only the fits.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

WINDOW_CAPS = (1, 2, 3, 5, 10)


def spread(n: int, k: int) -> np.ndarray:
    """k window indices spread evenly over n (all of them when k >= n)."""
    return np.arange(n) if k >= n else np.round(np.linspace(0, n - 1, k)).astype(int)


def backbone_ms(backbone, settings, windows: int = 10, repeats: int = 3) -> float:
    """CPU (process) milliseconds for one 30 s track's windows through one backbone."""
    x = (
        np.random.default_rng(0).random(
            (windows, settings.n_mels, settings.window_frames), dtype=np.float32
        )
        * 4
    )
    backbone.predict(x, verbose=0)
    t0 = time.process_time()
    for _ in range(repeats):
        backbone.predict(x, verbose=0)
    return (time.process_time() - t0) / repeats * 1000


def main(argv=None) -> int:
    from genre_detector.models.families import family
    from genre_detector.models.musicnn import BACKBONES, build_backbone
    from train.data import artist_folds
    from train.fit import new_model
    from train.metrics import classification_metrics
    from train.options import add_data_and_fit_options, check_models, fit_config, load_tracks
    from train.pretrained import fit_head, head_track_probs
    from train.trainer import Corpus

    p = argparse.ArgumentParser(
        prog="python -m train.experiments.musicnn_cost",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_data_and_fit_options(p)
    p.add_argument("--folds", type=int, default=5)
    args = p.parse_args(argv)
    args.models = "musicnn"
    check_models(p, args)
    fam, cfg = family("musicnn"), fit_config(args, "musicnn")
    # the served settings, but with enough windows for every cap in the table
    s = dataclasses.replace(fam.settings, max_windows=max(WINDOW_CAPS))
    ms = {b: backbone_ms(build_backbone(b), s) for b in BACKBONES}
    corpus = Corpus(load_tracks(args), args.workers).drop_undecodable([s])
    model = new_model("musicnn", s, len(corpus.labels), cfg.seed)
    feats = corpus.embeddings(model, s)
    width = feats[0].shape[1] // len(BACKBONES)  # per backbone: penultimate + tags
    cols = {b: np.arange(i * width, (i + 1) * width) for i, b in enumerate(BACKBONES)}
    cols["both"] = np.arange(feats[0].shape[1])
    folds = artist_folds(corpus.tracks, args.folds, args.seed)
    y = corpus.y
    print(
        f"{'backbones':<12} {'windows':>7} {'CPU ms/30 s':>11} {'accuracy':>9} {'macro-F1':>9}"
        f" {'min recall':>10}"
    )
    for name, c in cols.items():
        cost_per_window = (sum(ms.values()) if name == "both" else ms[name]) / 10
        for k in WINDOW_CAPS:
            sub = [f[spread(len(f), k)][:, c] for f in feats]
            oof = np.zeros((len(y), len(corpus.labels)))
            for train_idx, val_idx in folds:
                res = fit_head([sub[i] for i in train_idx], y[train_idx], len(corpus.labels), cfg)
                oof[val_idx] = head_track_probs(res.head, [sub[i] for i in val_idx])
            m = classification_metrics(y, oof, corpus.labels)
            rec = min(v["recall"] for v in m["per_genre"].values())
            print(
                f"{name:<12} {k:>7} {cost_per_window * k:>11.0f} {m['accuracy']:>9.3f} "
                f"{m['macro_f1']:>9.3f} {rec:>10.2f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
