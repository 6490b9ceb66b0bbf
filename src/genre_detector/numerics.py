"""Probability arithmetic every room shares (NumPy only): one softmax, one safe log, one
log-loss. At the bottom of the package with config and errors: it imports nothing of ours."""

from __future__ import annotations

import numpy as np

EPS = 1e-7  # probabilities are clipped to [EPS, 1] before a logarithm


def safe_log(p, eps: float = EPS) -> np.ndarray:
    """log p in float64, p clipped to [eps, 1] (a zero probability stays finite)."""
    return np.log(np.clip(np.asarray(p, dtype=np.float64), eps, 1.0))


def softmax(z, axis: int = -1) -> np.ndarray:
    """exp(z) normalised along `axis`, shifted by the maximum so it never overflows."""
    z = np.asarray(z)
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def log_loss(p, y) -> float:
    """Mean negative log-probability of the true classes y under p (tracks, classes)."""
    p, y = np.asarray(p), np.asarray(y)
    return float(-np.mean(safe_log(p[np.arange(len(y)), y])))
