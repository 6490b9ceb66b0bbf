"""Soft targets from the pretrained family (musicnn) for training the research families.

    soft = teacher_targets(corpus, train_idx, seed=0)   # (len(train_idx), n_classes)

The teacher is the musicnn head, refitted on part of the *training* tracks and asked about
the rest (5-fold, artist-grouped, inside the training set), so every soft target is what
the teacher says about artists it did not fit: the student learns the teacher's honest
similarities between genres, not its memory of the training labels. train.trainer passes
the tracks the student fits (the training side less the artists held back for early
stopping), so neither the scored tracks nor the stopping tracks shape the targets. `fit`
mixes them into each window's target: (1 - cfg.distill) * one-hot + cfg.distill * soft.
"""

from __future__ import annotations

import numpy as np

TEACHER = "musicnn"


def teacher_targets(corpus, train_idx, seed: int = 0, folds: int = 5) -> np.ndarray | None:
    """(len(train_idx), n_classes) teacher probabilities, or None where no teacher can be
    fitted (a genre without training tracks)."""
    import keras

    from genre_detector.models.families import family
    from train.data import artist_folds
    from train.feature_blocks import block_widths, window_features
    from train.fit import FitConfig, new_model
    from train.pretrained import fit_head, head_track_probs

    fam = family(TEACHER)
    cfg = FitConfig(**fam.fit, seed=seed)
    model = new_model(TEACHER, fam.settings, len(corpus.labels), seed)
    feats = window_features(corpus, model, fam.settings, cfg.features)
    train_idx = np.asarray(train_idx)
    tracks = [corpus.tracks[i] for i in train_idx]
    y = corpus.y[train_idx]

    head = None

    def fit_on(idx):
        nonlocal head
        groups = [corpus.tracks[i].group for i in idx]
        head = fit_head(
            [feats[i] for i in idx],
            corpus.y[idx],
            len(corpus.labels),
            cfg,
            groups,
            block_widths(cfg.features),
        ).head

    def ask(idx):
        return head_track_probs(head, [feats[i] for i in idx])

    # as many folds as the rarest genre has artists (at most `folds`), so every inner
    # training part holds every genre; with too few artists the teacher is fitted on all
    artists = [len({t.group for t, c in zip(tracks, y) if c == k}) for k in np.unique(y)]
    k = min(folds, min(artists))
    soft = np.zeros((len(train_idx), len(corpus.labels)), dtype=np.float32)
    try:
        if k < 2 or len(np.unique(y)) < len(corpus.labels):
            raise ValueError("too few artists per genre to cross-fit the teacher")
        for inner_train, inner_val in artist_folds(tracks, k, seed):
            fit_on(train_idx[inner_train])
            soft[inner_val] = ask(train_idx[inner_val])
    except ValueError as exc:  # a genre missing from an inner part (tiny corpora)
        print(f"distill: {exc}; teacher fitted on all training tracks", flush=True)
        try:
            fit_on(train_idx)
            soft = ask(train_idx)
        except ValueError as exc2:  # a genre with no training track at all
            print(f"distill: {exc2}; training on the labels alone", flush=True)
            soft = None
    keras.backend.clear_session()
    return soft
