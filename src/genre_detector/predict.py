"""Turn window probabilities into track results: per-model verdicts, ensemble, timeline.

Pure NumPy, so the front service, the evaluation CLI and the batch tagger share it.
"""
from __future__ import annotations

import numpy as np


def track_probabilities(window_probs: np.ndarray) -> np.ndarray:
    """Mean of the window probabilities, renormalised to sum to exactly 1."""
    p = np.asarray(window_probs, dtype=np.float64).mean(axis=0)
    return p / p.sum()


def verdict(probs: np.ndarray, labels: list[str]) -> dict:
    top = int(np.argmax(probs))
    return {"probabilities": {g: float(p) for g, p in zip(labels, probs)},
            "top_genre": labels[top], "top_probability": float(probs[top])}


def ensemble(track_probs: list[np.ndarray]) -> np.ndarray:
    """Mean of the models' track probabilities."""
    return track_probabilities(np.stack(track_probs))


def timeline(window_probs_by_model: list[np.ndarray], start_s: np.ndarray, end_s: np.ndarray,
             labels: list[str]) -> list[dict]:
    """Genre over time: the ensemble's verdict for each window."""
    mean = np.mean(np.stack(window_probs_by_model), axis=0)
    return [{"start_s": round(float(a), 3), "end_s": round(float(b), 3),
             "top_genre": labels[int(np.argmax(p))], "probability": round(float(np.max(p)), 4)}
            for a, b, p in zip(start_s, end_s, mean)]
