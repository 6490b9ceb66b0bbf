"""Measure a calibration honestly: cross-fitted over artist groups, so every track is scored
by temperatures and ensemble weights fitted without it (or its artist).

    honest = cross_fitted({"cnn": p_cnn, "musicnn": p_mn}, y, labels, artists)
    honest["ensemble"], honest["cnn"]     # calibrated, out-of-fit track probabilities
"""

from __future__ import annotations

import warnings

import numpy as np

from genre_detector.models.calibration import Calibration, reliability


def cross_fitted(
    probs: dict[str, np.ndarray],
    y: np.ndarray,
    labels: list[str],
    groups,
    seed: int = 0,
    n_splits: int = 5,
) -> dict:
    from sklearn.model_selection import StratifiedGroupKFold

    y = np.asarray(y)
    # A small validation set (a quick run) has fewer artists, or fewer tracks in its largest
    # genre, than n_splits: StratifiedGroupKFold refuses that, so use fewer folds (>= 2).
    n_splits = max(2, min(n_splits, len(set(groups)), int(np.bincount(y).max())))
    out = {n: np.zeros_like(p, dtype=float) for n, p in probs.items()}
    out["ensemble"] = np.zeros_like(next(iter(probs.values())), dtype=float)
    with warnings.catch_warnings():  # a genre with fewer tracks than folds: expected here
        warnings.simplefilter("ignore", UserWarning)
        folds = list(
            StratifiedGroupKFold(n_splits, shuffle=True, random_state=seed).split(y, y, groups)
        )
    for fit_idx, test_idx in folds:
        cal = Calibration.fit(
            {n: p[fit_idx] for n, p in probs.items()},
            y[fit_idx],
            labels,
            groups=[groups[i] for i in fit_idx],
        )
        for n, p in probs.items():
            out[n][test_idx] = cal.model(n, p[test_idx])
        out["ensemble"][test_idx] = cal.ensemble({n: p[test_idx] for n, p in probs.items()})
    out["reliability"] = reliability(out["ensemble"], y)
    return out
