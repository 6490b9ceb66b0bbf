"""Turn window probabilities into track results: per-model verdicts, the calibrated
ensemble, top genres, and a genre-over-time timeline.

Pure NumPy, so the front service, the evaluation CLI and the batch tagger share it.
"""

from __future__ import annotations

import numpy as np

from genre_detector.numerics import safe_log, softmax

# The track "sits between genres" when the runner-up is at least this likely relative to the
# top genre (0.5: the second genre has at least half the top one's probability).
BETWEEN_RATIO = 0.5


POOLINGS = ("mean", "geometric")


def track_probabilities(window_probs: np.ndarray, pooling: str = "mean") -> np.ndarray:
    """The track's probabilities from its windows', renormalised to sum to exactly 1:
    "mean" averages the probabilities; "geometric" averages their logarithms (for a softmax
    model that is the softmax of the mean logits: the prediction on the mean features when
    the head is linear)."""
    p = np.asarray(window_probs, dtype=np.float64)
    if pooling == "geometric":
        p = softmax(safe_log(p, 1e-12).mean(axis=0))
    elif pooling == "mean":
        p = p.mean(axis=0)
    else:
        raise ValueError(f"unknown pooling {pooling!r}; valid: {', '.join(POOLINGS)}")
    return p / p.sum()


def between_genres(probs: np.ndarray, labels: list[str]) -> list[str]:
    """[top, runner-up] when the track sits between them (see BETWEEN_RATIO), else []."""
    order = np.argsort(-np.asarray(probs))
    a, b = probs[order[0]], probs[order[1]]
    return [labels[order[0]], labels[order[1]]] if b >= BETWEEN_RATIO * a else []


def nearest_windows(ref_centers: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """For each reference window, the index of the window whose center is nearest."""
    return np.abs(ref_centers[:, None] - centers[None, :]).argmin(axis=1)


def timeline(
    window_probs: dict[str, np.ndarray], spans: dict[str, tuple], combine, labels: list[str]
) -> list[dict]:
    """Genre over time on the finest window grid among the models: for each of its windows,
    every model's window nearest in time, combined by `combine({model: probs}) -> probs`
    (the calibrated ensemble). spans: model -> (start_s, end_s) arrays of its windows."""
    ref = max(spans, key=lambda n: len(spans[n][0]))
    start, end = spans[ref]
    ref_c = (np.asarray(start) + np.asarray(end)) / 2
    aligned = {}
    for n, p in window_probs.items():
        c = (np.asarray(spans[n][0]) + np.asarray(spans[n][1])) / 2
        aligned[n] = np.asarray(p)[nearest_windows(ref_c, c)]
    mean = combine(aligned)
    return [
        {
            "start_s": round(float(a), 3),
            "end_s": round(float(b), 3),
            "top_genre": labels[int(np.argmax(p))],
            "probability": round(float(np.max(p)), 4),
        }
        for a, b, p in zip(start, end, mean)
    ]
