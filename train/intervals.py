"""Accuracy with intervals over artists, from `train.crossval` results: what crossval prints
over its repeats and what `python -m train.experiments.compare` pairs.

    seeds = [r["seed"] for r in repeats_of(run)]
    c = correctness(run, "musicnn", seeds)             # (repeats, tracks): 1, 0 or nan
    accuracy_interval(c.mean(0), artists)              # {"accuracy", "low", "high"}
    paired_difference(c_a, c_b, artists)               # B - A on the same tracks

The 95 % intervals resample *artists* with replacement (all tracks of a drawn artist come
along), not tracks: an artist's clips are alike, so treating them as independent would make
the interval too narrow.
"""

from __future__ import annotations

import numpy as np

N_BOOT = 10000
LEVEL = 0.95


def ratio_intervals(
    num: np.ndarray, den: np.ndarray, groups, n_boot: int = N_BOOT, seed: int = 0, level=LEVEL
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Point estimates sum(num) / sum(den) per column, and their percentile bootstrap interval
    when whole groups (artists) are drawn with replacement. num, den: (n_tracks,) or
    (n_tracks, k). Returns (point, low, high), each of shape (k,) (or scalars for 1-D)."""
    num, den = np.asarray(num, float), np.asarray(den, float)
    flat = num.ndim == 1
    num, den = num.reshape(len(num), -1), den.reshape(len(den), -1)
    keys, inverse = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)
    g_num = np.zeros((len(keys), num.shape[1]))
    g_den = np.zeros((len(keys), den.shape[1]))
    np.add.at(g_num, inverse, num)
    np.add.at(g_den, inverse, den)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(len(keys), np.full(len(keys), 1 / len(keys)), size=n_boot)
    with np.errstate(invalid="ignore", divide="ignore"):
        point = g_num.sum(0) / g_den.sum(0)
        boot = (counts @ g_num) / (counts @ g_den)  # nan where a draw has no track of a column
    tail = 100 * (1 - level) / 2
    low, high = np.full_like(point, np.nan), np.full_like(point, np.nan)
    some = np.isfinite(boot).any(axis=0)  # a column with no track at all stays nan
    if some.any():
        low[some] = np.nanpercentile(boot[:, some], tail, axis=0)
        high[some] = np.nanpercentile(boot[:, some], 100 - tail, axis=0)
    if flat:
        return point[0], low[0], high[0]
    return point, low, high


def paired_difference(correct_a, correct_b, groups, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """Accuracy of B minus accuracy of A on the same tracks (correct_*: 0/1 per track, or its
    mean over repeats), with the artist-bootstrap interval."""
    a, b = np.asarray(correct_a, float), np.asarray(correct_b, float)
    d, lo, hi = ratio_intervals(b - a, np.ones_like(a), groups, n_boot, seed)
    return {"difference": float(d), "low": float(lo), "high": float(hi)}


def accuracy_interval(correct, groups, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    c = np.asarray(correct, float)
    acc, lo, hi = ratio_intervals(c, np.ones_like(c), groups, n_boot, seed)
    return {"accuracy": float(acc), "low": float(lo), "high": float(hi)}


def recall_intervals(correct, y, labels, groups, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """Per-genre recall (share of a genre's tracks called right) with artist-bootstrap
    intervals: {genre: {"recall", "low", "high", "n_tracks"}}."""
    c, y = np.asarray(correct, float), np.asarray(y)
    member = (y[:, None] == np.arange(len(labels))[None, :]).astype(float)
    r, lo, hi = ratio_intervals(c[:, None] * member, member, groups, n_boot, seed)
    return {
        g: {
            "recall": float(r[k]),
            "low": float(lo[k]),
            "high": float(hi[k]),
            "n_tracks": int(member[:, k].sum()),
        }
        for k, g in enumerate(labels)
        if member[:, k].any()
    }


def repeats_of(run: dict) -> list[dict]:
    """The cross-validations in a `train.crossval` result: [{"seed", "folds" (fold of each
    track), "probs": {model: (n_tracks, n_labels) with nan rows for tracks not scored}}]."""
    first = {
        "seed": run["seed"],
        "folds": [t["fold"] for t in run["tracks"]],
        "models": run["models"],
    }
    out = []
    for rep in [first, *run.get("more_repeats", [])]:
        probs = {}
        for name, m in rep["models"].items():
            if "out_of_fold_probabilities" in m:
                rows = m["out_of_fold_probabilities"]
                width = len(run["labels"])
                probs[name] = np.array(
                    [[np.nan] * width if r is None else r for r in rows], dtype=float
                )
        out.append({"seed": rep["seed"], "folds": list(rep["folds"]), "probs": probs})
    return out


def correctness(run: dict, name: str, seeds: list[int]) -> np.ndarray:
    """(len(seeds), n_tracks): 1 right, 0 wrong, nan not scored, per repeat."""
    labels = run["labels"]
    y = np.array([labels.index(t["genre"]) for t in run["tracks"]])
    by_seed = {r["seed"]: r for r in repeats_of(run)}
    rows = []
    for s in seeds:
        p = by_seed[s]["probs"][name]
        c = (np.nan_to_num(p, nan=-1).argmax(1) == y).astype(float)
        c[np.isnan(p).any(1)] = np.nan
        rows.append(c)
    return np.array(rows)
