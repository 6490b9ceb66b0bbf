"""Track-level classification metrics shared by training and `python -m train.evaluate`."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)


def classification_metrics(
    y_true: np.ndarray, probs: np.ndarray, labels: list[str], sources: list[str] | None = None
) -> dict:
    """Accuracy, macro-F1, log-loss, expected calibration error, per-genre precision/recall,
    confusion (rows = true genre) and, given each track's source, accuracy per source."""
    from genre_detector.models.calibration import expected_calibration_error
    from genre_detector.numerics import log_loss

    y_true = np.asarray(y_true)
    y_pred = probs.argmax(axis=1)
    idx = list(range(len(labels)))
    prec, rec, _, support = precision_recall_fscore_support(
        y_true, y_pred, labels=idx, zero_division=0
    )
    out = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=idx, average="macro", zero_division=0)),
        "log_loss": log_loss(probs, y_true),
        "ece": expected_calibration_error(probs, y_true),
        "n_tracks": int(len(y_true)),
        "per_genre": {
            g: {"precision": float(p), "recall": float(r), "support": int(n)}
            for g, p, r, n in zip(labels, prec, rec, support)
        },
        "confusion": confusion_matrix(y_true, y_pred, labels=idx).tolist(),
    }
    if sources is not None:
        src = np.asarray(sources)
        out["per_source"] = {
            s: {
                "accuracy": float(accuracy_score(y_true[src == s], y_pred[src == s])),
                "macro_f1": float(
                    f1_score(
                        y_true[src == s],
                        y_pred[src == s],
                        average="macro",
                        labels=sorted(set(y_true[src == s])),
                        zero_division=0,
                    )
                ),
                "n_tracks": int(np.sum(src == s)),
            }
            for s in sorted(set(sources))
        }
    return out


# A collapsed model (batch-norm statistics gone wrong in inference mode) puts nearly every
# track into one genre. A healthy one may still never choose a small genre the data and its
# teacher rarely separate (the distilled CNN and blues): reported, not refused.
COLLAPSE_SHARE = 0.8  # one genre for more than this share of the training tracks
COLLAPSE_GENRES = 0.5  # or no more than this share of the genres predicted at all


def unused_genres(y_true: np.ndarray, probs: np.ndarray, labels: list[str]) -> list[str]:
    """Genres in y_true that the predictions never choose."""
    y_pred = np.asarray(probs).argmax(axis=1)
    return [labels[c] for c in np.unique(y_true) if not np.any(y_pred == c)]


def collapse_check(y_true: np.ndarray, probs: np.ndarray, labels: list[str]) -> str:
    """'' unless the inference-mode predictions look collapsed, else what is wrong. Meant for
    a model's own training tracks: a healthy model fits them, while one whose batch-norm
    statistics went wrong predicts one genre for nearly everything even though its
    training-mode accuracy reads 99 %. Collapsed: one genre for more than COLLAPSE_SHARE of
    the tracks, or no more than COLLAPSE_GENRES of the genres present ever predicted."""
    y_pred = np.asarray(probs).argmax(axis=1)
    missing = unused_genres(y_true, probs, labels)
    counts = np.bincount(y_pred, minlength=len(labels))
    top = int(counts.argmax())
    share = counts[top] / len(y_pred)
    n_genres = len(np.unique(y_true))
    if share <= COLLAPSE_SHARE and n_genres - len(missing) > COLLAPSE_GENRES * n_genres:
        return ""
    never = f"never predicts {', '.join(missing)}; " if missing else ""
    return (
        f"collapsed: {never}{labels[top]} for {share:.0%} of the {len(y_true)} tracks of its "
        "own training data"
    )
