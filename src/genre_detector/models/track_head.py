"""A track-level head on window features: what turns musicnn's backbone features into genre
probabilities (NumPy only; the front service, the tagger and training share it).

    head = TrackHead.load(path)                  # head.npz beside the model in the store
    p = head.window_probs(features)              # (n_windows, n_features) -> (n_windows, K)
    track_probabilities(p, "geometric")          # == head.track_probs(features)

The head is a multinomial logistic regression on the track's statistics: the mean *and* the
standard deviation over its windows of every backbone feature (statistics pooling; in 5-fold
artist-grouped cross-validation +1.8 points over the mean alone, models/MODEL_CARD.md).
Window i gets softmax(W_mean f_i + W_std s + b), s the track's spread, so every window has its
own probabilities for the timeline, and their geometric mean is exactly the track's
prediction softmax(W_mean mean + W_std s + b): the pooling every caller already applies.
The spread is taken over windows that do not overlap (given their start times): a clip of
3-6 s has two windows sharing most of their frames, whose spread is far below anything
training saw, so like a one-window track it gets the training tracks' mean spread.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genre_detector.numerics import softmax

HEAD_FILE = "head.npz"


def apart(start_s, window_s: float) -> np.ndarray:
    """Indices of windows that do not overlap: from the first, each next window starting at
    least `window_s` after the last one kept."""
    keep, last = [], -np.inf
    for i, t in enumerate(np.asarray(start_s, dtype=np.float64)):
        if t >= last + window_s - 1e-6:
            keep.append(i)
            last = t
    return np.asarray(keep, dtype=int)


def spread(features: np.ndarray, fallback: np.ndarray, start_s=None, window_s=None) -> np.ndarray:
    """Standard deviation over the windows (unbiased), over those that do not overlap when
    their start times are given; `fallback` when that leaves a single window."""
    features = np.asarray(features, dtype=np.float64)
    if start_s is not None:
        features = features[apart(start_s, window_s)]
    return features.std(axis=0, ddof=1) if len(features) > 1 else np.asarray(fallback)


def statistics(features: np.ndarray, fallback: np.ndarray, start_s=None, window_s=None):
    """The head's input for one track: [mean, spread] of its window features."""
    features = np.asarray(features, dtype=np.float64)
    return np.concatenate([features.mean(axis=0), spread(features, fallback, start_s, window_s)])


@dataclass
class TrackHead:
    w_mean: np.ndarray  # (n_features, n_classes)
    w_std: np.ndarray  # (n_features, n_classes)
    bias: np.ndarray  # (n_classes,)
    std_fallback: np.ndarray  # (n_features,) the training tracks' mean spread

    @property
    def n_features(self) -> int:
        return self.w_mean.shape[0]

    def logits(self, features: np.ndarray, start_s=None, window_s=None) -> np.ndarray:
        f = np.asarray(features, dtype=np.float64)
        if f.ndim != 2 or f.shape[1] != self.n_features:
            raise ValueError(
                f"expected window features of shape (n, {self.n_features}), got {f.shape}"
            )
        if len(f) == 0:
            return np.zeros((0, len(self.bias)))
        s = spread(f, self.std_fallback, start_s, window_s)
        return f @ self.w_mean + s @ self.w_std + self.bias

    def window_probs(self, features: np.ndarray, start_s=None, window_s=None) -> np.ndarray:
        """(n, n_classes) float32 probabilities of one track's windows (`start_s`: their start
        times, `window_s` their length, so that overlapping windows do not fake a spread)."""
        z = self.logits(features, start_s, window_s)
        return (softmax(z, axis=1) if len(z) else z).astype(np.float32)

    def track_probs(self, features: np.ndarray, start_s=None, window_s=None) -> np.ndarray:
        return softmax(self.logits(features, start_s, window_s).mean(axis=0))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        with open(path, "wb") as f:  # np.savez would append .npz to another suffix
            np.savez(
                f,
                w_mean=self.w_mean,
                w_std=self.w_std,
                bias=self.bias,
                std_fallback=self.std_fallback,
            )
        return path

    @classmethod
    def load(cls, path: str | Path) -> "TrackHead":
        with np.load(path) as z:
            return cls(z["w_mean"], z["w_std"], z["bias"], z["std_fallback"])
