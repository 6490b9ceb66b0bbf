"""Train any registered family on a set of tracks: the one code path of `python -m train`
and `python -m train.crossval`.

    corpus = Corpus(tracks, workers=2)
    trained = train_family("cnn", corpus, train_idx, val_idx, cfg)
    trained.p_val        # track probabilities of the validation (scored) tracks

Window families learn from random crops of cached log-mels (train/fit.py) and stop early
on artists held back from the *training* side (`cfg.stop_fraction`,
train.data.stopping_split: `trained.fit_idx` were fitted on, `trained.stop_idx` stopped
on); the validation tracks are only predicted, after training, so their scores are honest.
Pretrained families (musicnn) embed the serving windows once and fit their head on every
training track, with nothing to stop (train/pretrained.py).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from genre_detector.audio.features import FeatureSettings
from genre_detector.models.families import family
from train.data import Track, load_mels, stopping_split
from train.fit import FitConfig, FitResult, fit, new_model, track_probs, track_windows


class Corpus:
    """The tracks and, computed on first use and cached, their log-mels per feature settings."""

    def __init__(self, tracks: list[Track], workers: int = 2):
        self.tracks, self.workers = list(tracks), workers
        self._mels: dict[FeatureSettings, list[np.ndarray]] = {}
        self._embeddings: dict[str, list[np.ndarray]] = {}  # by backbone model, or block
        self._soft: dict[tuple, np.ndarray | None] = {}
        self.labels = sorted({t.genre for t in self.tracks})
        self.y = np.array([self.labels.index(t.genre) for t in self.tracks])

    def drop_undecodable(self, settings: list[FeatureSettings]) -> "Corpus":
        """Decode everything now (for every settings set), keeping the tracks that decode."""
        ok = set(range(len(self.tracks)))
        for s in dict.fromkeys(settings):
            kept, mels = load_mels(self.tracks, s, self.workers, f"decode {s.sample_rate} Hz")
            paths = {t.path for t in kept}
            ok &= {i for i, t in enumerate(self.tracks) if t.path in paths}
            self._mels[s] = mels if len(kept) == len(self.tracks) else None  # type: ignore
        if len(ok) < len(self.tracks):
            return Corpus([self.tracks[i] for i in sorted(ok)], self.workers)
        return self

    def mels(self, s: FeatureSettings) -> list[np.ndarray]:
        if self._mels.get(s) is None:
            kept, mels = load_mels(self.tracks, s, self.workers, f"decode {s.sample_rate} Hz")
            if len(kept) != len(self.tracks):
                raise ValueError("some tracks did not decode: call drop_undecodable first")
            self._mels[s] = mels
        return self._mels[s]

    def embeddings(self, model, s: FeatureSettings) -> list[np.ndarray]:
        from train.pretrained import embed

        if model.name not in self._embeddings:
            self._embeddings[model.name] = embed(
                model, self.mels(s), s, keys=[str(t.path.resolve()) for t in self.tracks]
            )
        return self._embeddings[model.name]

    def block(self, name: str, compute) -> list[np.ndarray]:
        """Per-track features of a named feature block (train/feature_blocks.py), computed
        (or read from its disk cache) once per corpus, not once per fold."""
        key = f"block:{name}"
        if key not in self._embeddings:
            self._embeddings[key] = compute()
        return self._embeddings[key]

    def teacher_targets(self, train_idx, seed: int) -> np.ndarray | None:
        """train.distill.teacher_targets for this training set, computed once: every
        distilled family of a run (or a cross-validation fold) trains on the same ones."""
        from train.distill import teacher_targets

        key = (tuple(int(i) for i in train_idx), seed)
        if key not in self._soft:
            self._soft[key] = teacher_targets(self, train_idx, seed)
        return self._soft[key]


@dataclass
class Trained:
    model: object
    result: FitResult
    p_train: np.ndarray  # inference-mode track probabilities of the fitted tracks (fit_idx)
    p_val: np.ndarray  # ... of the validation tracks (val_idx), used for nothing but scoring
    fit_idx: np.ndarray  # corpus indices of the tracks the weights were fitted on
    stop_idx: np.ndarray  # corpus indices of the tracks early stopping watched (may be empty)


def train_family(name: str, corpus: Corpus, train_idx, val_idx, cfg: FitConfig) -> Trained:
    """Train family `name` on the training side `train_idx` and predict `val_idx`. A window
    family is fitted on part of the training artists and stops on the others
    (`cfg.stop_fraction`); no track of `val_idx` is seen before the final prediction."""
    fam = family(name)
    s, y, n = fam.settings, corpus.y, len(corpus.labels)
    train_idx, val_idx = np.asarray(train_idx), np.asarray(val_idx)
    if set(train_idx.tolist()) & set(val_idx.tolist()):
        raise ValueError("a track is on both the training and the validation side")
    if fam.pretrained:  # a head fitted in one go: nothing to stop, every training track fits
        fit_idx, stop_idx = train_idx, train_idx[:0]
    else:
        fit_idx, stop_idx = stopping_split(corpus.tracks, train_idx, cfg.stop_fraction, cfg.seed)
    soft = None
    if cfg.distill > 0 and not fam.pretrained:  # before the student: the teacher clears Keras
        # cross-fitted on the fitted tracks alone: the stopping artists stay unseen too
        soft = corpus.teacher_targets(fit_idx, cfg.seed)
        if soft is None:
            cfg = dataclasses.replace(cfg, distill=0.0)
    model = new_model(name, s, n, cfg.seed)
    groups = [corpus.tracks[i].group for i in fit_idx]
    if fam.pretrained:
        from train.feature_blocks import block_widths, window_features
        from train.pretrained import fit_head, head_track_probs

        feats = window_features(corpus, model, s, cfg.features)
        f_train, f_val = [feats[i] for i in fit_idx], [feats[i] for i in val_idx]
        res = fit_head(f_train, y[fit_idx], n, cfg, groups, block_widths(cfg.features))
        res.model = model
        return Trained(
            model,
            res,
            head_track_probs(res.head, f_train),
            head_track_probs(res.head, f_val),
            fit_idx,
            stop_idx,
        )
    mels = corpus.mels(s)
    fit_mels, stop_mels = [mels[i] for i in fit_idx], [mels[i] for i in stop_idx]
    res = fit(model, fit_mels, y[fit_idx], stop_mels, y[stop_idx], n, s, cfg, name, groups, soft)
    val_mels = [mels[i] for i in val_idx]  # first touched here, after training
    return Trained(
        model,
        res,
        track_probs(model, *track_windows(fit_mels, s), len(fit_idx)),
        track_probs(model, *track_windows(val_mels, s), len(val_idx)),
        fit_idx,
        stop_idx,
    )
