"""Train and evaluate the mood heads on musicnn's window features: the four arousal-valence
quadrants of 4Q (calibrated), arousal and valence in [0, 1], and the share of listeners who
feel each of the nine GEMS emotions (Emotify). All linear on the track's statistics (mean
and spread of its window features, as the genre head), so the service applies them per
window with NumPy and `catalog reindex` from the pooled features it keeps.

    python -m train moods                       # CV report + models/musicnn/moods.npz
    python -m train moods --labels my.csv       # 4Q-style CSV of your own clips (docs)
    python -m train moods --experiments         # the options compared, with intervals

Evaluation: artist-grouped 5-fold CV, repeated (--repeats) with other artist shuffles; every
number is the mean over repeats with a 95 % interval from resampling artists.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from genre_detector.models.mood_heads import GEMS, QUADRANTS
from train.mood_data import MUSICNN, clip_features, read_4q, read_emotify

RELIABLE_GEMS = ("tenderness", "calmness", "power", "joyful_activation")
NOTICE = (
    "Heads trained by this project on research-use data (4Q audio emotion dataset, Panda et "
    "al. 2018; Emotify, Aljanaki et al. 2016) over the pretrained musicnn features: for "
    "research and evaluation; check the datasets' terms before commercial use."
)


# ---------------------------------------------------------------- features


def genre_fallback() -> np.ndarray:
    """The spread a one-window track gets: the genre head's (scoring uses that one, so the
    statistics here are exactly the catalog's pooled features)."""
    with np.load(MUSICNN / "head.npz") as z:
        return z["std_fallback"]


def track_stats(feats: list[np.ndarray], window_s: float = 187 * 256 / 16000) -> np.ndarray:
    """[mean, spread] per clip, as scoring.track_result computes the embedding (the served
    windows are spread evenly over a clip: for 30 s clips they never overlap)."""
    from genre_detector.models.track_head import statistics

    fb = genre_fallback()
    return np.stack([statistics(f, fb) for f in feats]).astype(np.float64)


# ---------------------------------------------------------------- linear fits


def _standardise(x):
    mu, sd = x.mean(0), x.std(0)
    sd[sd < 1e-8] = 1.0
    return mu, sd


def fit_logistic(x, y, c: float, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(kernel, bias) of a logistic regression on standardised x, standardisation folded in;
    binary: one column (the logit of class 1)."""
    from sklearn.linear_model import LogisticRegression

    mu, sd = _standardise(x)
    clf = LogisticRegression(C=c, max_iter=3000).fit((x - mu) / sd, y)
    coef, b = clf.coef_, clf.intercept_
    kernel = (coef / sd).T
    return kernel, b - mu @ kernel


def fit_ridge(x, y, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.linear_model import Ridge

    mu, sd = _standardise(x)
    r = Ridge(alpha=alpha).fit((x - mu) / sd, y)
    kernel = (r.coef_ / sd).T
    return kernel, r.intercept_ - mu @ kernel


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The temperature minimising the log loss of softmax(logits / T) (binary: one column)."""
    grid = np.exp(np.linspace(np.log(0.2), np.log(5.0), 121))
    return float(min(grid, key=lambda t: _nll(logits / t, y)))


def _nll(z, y):
    if z.ndim == 1 or z.shape[1] == 1:
        z = z.reshape(-1)
        return float(np.mean(np.logaddexp(0, z) - y * z))
    z = z - z.max(1, keepdims=True)
    return float(np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(len(y)), y]))


def _inner_oof(x, y, groups, fit, k=5, seed=0):
    """Out-of-fold logits of `fit` over artist-grouped inner folds (for the temperature)."""
    from sklearn.model_selection import GroupKFold

    out = None
    for tr, va in GroupKFold(n_splits=k, shuffle=True, random_state=seed).split(x, y, groups):
        kernel, bias = fit(x[tr], y[tr])
        z = x[va] @ kernel + bias
        out = np.zeros((len(y), z.shape[1])) if out is None else out
        out[va] = z
    return out


def fit_calibrated(x, y, groups, c, n_classes, seed=0):
    """Logistic regression with its temperature (from inner artist-grouped folds) folded in."""

    def fit(a, b):
        return fit_logistic(a, b, c, n_classes)

    t = fit_temperature(_inner_oof(x, y, groups, fit, seed=seed), y)
    kernel, bias = fit(x, y)
    return kernel / t, bias / t, t


# ---------------------------------------------------------------- the heads as one matrix


def fit_heads(x4, q, arousal, valence, g4, xg, gems, gg, cfg: dict) -> dict:
    """Every head, as columns of one linear map on the statistics:
    [Q1..Q4 logits, arousal logit, valence logit, nine GEMS shares]."""
    sel = selector(x4.shape[1], cfg["features"])
    kq, bq, tq = fit_calibrated(x4[:, sel], q, g4, cfg["c"], 4)
    ka, ba, ta = fit_calibrated(x4[:, sel], arousal, g4, cfg["c_av"], 2)
    kv, bv, tv = fit_calibrated(x4[:, sel], valence, g4, cfg["c_av"], 2)
    kg, bg = fit_ridge(xg[:, sel], gems, cfg["alpha"])
    d = x4.shape[1]
    kernel = np.zeros((d, 15))
    kernel[sel] = np.concatenate([kq, ka, kv, kg], axis=1)
    bias = np.concatenate([bq, ba, bv, bg])
    return {"kernel": kernel, "bias": bias, "temperatures": [tq, ta, tv]}


def selector(d2: int, which: str) -> np.ndarray:
    """Columns of the statistics ([mean, spread] of 500 features) a head reads:
    'all', 'mean' (no spread), 'penultimate' (the two 200-unit layers, mean and spread)."""
    d = d2 // 2
    idx = np.arange(d2)
    if which == "all":
        return idx
    if which == "mean":
        return idx[:d]
    if which == "penultimate":
        pen = np.r_[0:200, 250:450]
        return np.r_[pen, d + pen]
    if which == "penultimate_mean":
        return np.r_[0:200, 250:450]
    raise ValueError(which)


def apply(heads: dict, x: np.ndarray) -> dict:
    z = x @ heads["kernel"] + heads["bias"]
    e = np.exp(z[:, :4] - z[:, :4].max(1, keepdims=True))
    return {
        "q": e / e.sum(1, keepdims=True),
        "arousal": 1 / (1 + np.exp(-z[:, 4])),
        "valence": 1 / (1 + np.exp(-z[:, 5])),
        "gems": np.clip(z[:, 6:], 0, 1),
    }


# ---------------------------------------------------------------- evaluation


def metrics_4q(p, q, arousal, valence, pa, pv) -> dict:
    from sklearn.metrics import f1_score

    from genre_detector.models.calibration import expected_calibration_error

    # the quadrant's own arousal / valence: the two halves of its probabilities
    return {
        "macro_f1": float(f1_score(q, p.argmax(1), average="macro")),
        "accuracy": float(np.mean(p.argmax(1) == q)),
        "arousal_accuracy": float(np.mean((pa > 0.5) == (arousal > 0.5))),
        "valence_accuracy": float(np.mean((pv > 0.5) == (valence > 0.5))),
        "arousal_from_quadrants": float(np.mean((p[:, :2].sum(1) > 0.5) == (arousal > 0.5))),
        "ece": float(expected_calibration_error(p, q)),
    }


def metrics_gems(pred, gems) -> dict:
    from scipy.stats import spearmanr

    return {g: float(spearmanr(pred[:, k], gems[:, k]).statistic) for k, g in enumerate(GEMS)}


def _folds(groups, k, seed):
    from sklearn.model_selection import GroupKFold

    folds = GroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return list(folds.split(groups, groups=groups))


def cross_validate(data: dict, cfg: dict, repeats: int = 3, k: int = 5, n_boot: int = 1000):
    """Out-of-fold predictions per repeat (artist-grouped folds, one artist shuffle each) and
    the metrics: mean over repeats, 95 % interval over artist resamples x repeats."""
    x4, q, a, v, g4 = (data[n] for n in ("x4", "q", "arousal", "valence", "g4"))
    xg, gems, gg = data["xg"], data["gems"], data["gg"]
    reps4, repsg = [], []
    for r in range(repeats):
        p4 = {"q": np.zeros((len(q), 4)), "arousal": np.zeros(len(q)), "valence": np.zeros(len(q))}
        pg = np.zeros_like(gems)
        f4, fg = _folds(g4, k, r), _folds(gg, k, r)
        for (tr4, va4), (trg, vag) in zip(f4, fg):
            h = fit_heads(x4[tr4], q[tr4], a[tr4], v[tr4], g4[tr4], xg[trg], gems[trg],
                          gg[trg], cfg)  # fmt: skip
            o4, og = apply(h, x4[va4]), apply(h, xg[vag])
            for n in p4:
                p4[n][va4] = o4[n]
            pg[vag] = og["gems"]
        reps4.append(p4)
        repsg.append(pg)
    return summarise(data, reps4, repsg, n_boot), reps4, repsg


def _boot(groups, n_boot, seed=0):
    keys, inv = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    members = [np.flatnonzero(inv == i) for i in range(len(keys))]
    rng = np.random.default_rng(seed)
    for _ in range(n_boot):
        yield np.concatenate([members[i] for i in rng.integers(0, len(keys), len(keys))])


def summarise(data, reps4, repsg, n_boot=1000) -> dict:
    q, a, v, gems = data["q"], data["arousal"], data["valence"], data["gems"]

    def m4(p, idx=slice(None)):
        return metrics_4q(p["q"][idx], q[idx], a[idx], v[idx], p["arousal"][idx],
                          p["valence"][idx])  # fmt: skip

    point4 = {key: float(np.mean([m4(p)[key] for p in reps4])) for key in m4(reps4[0])}
    pointg = {g: float(np.mean([metrics_gems(p, gems)[g] for p in repsg])) for g in GEMS}
    boot4 = [m4(reps4[i % len(reps4)], idx) for i, idx in enumerate(_boot(data["g4"], n_boot))]
    bootg = [metrics_gems(repsg[i % len(repsg)][idx], gems[idx])
             for i, idx in enumerate(_boot(data["gg"], n_boot))]  # fmt: skip

    def ci(point, boots):
        return {key: {"value": round(val, 4),
                      "low": round(float(np.percentile([b[key] for b in boots], 2.5)), 4),
                      "high": round(float(np.percentile([b[key] for b in boots], 97.5)), 4)}
                for key, val in point.items()}  # fmt: skip

    return {
        "4q": ci(point4, boot4),
        "gems_spearman": ci(pointg, bootg),
        "n_clips": {"4q": len(q), "emotify": len(gems)},
        "n_artists": {"4q": len(set(data["g4"])), "emotify": len(set(data["gg"]))},
        "repeats": len(reps4),
    }


# ---------------------------------------------------------------- data


def load(labels_csv: Path | None = None) -> dict:
    four = read_4q(csv_path=labels_csv) if labels_csv else read_4q()
    emo = read_emotify()
    f4 = clip_features([c.path for c in four])
    fg = clip_features([c.path for c in emo])
    return {
        "x4": track_stats(f4),
        "q": np.array([QUADRANTS.index(c.quadrant) for c in four]),
        "arousal": np.array([c.arousal for c in four]),
        "valence": np.array([c.valence for c in four]),
        "g4": np.array([c.artist.casefold() for c in four]),
        "xg": track_stats(fg),
        "gems": np.array([[c.gems[g] for g in GEMS] for c in emo]),
        "gg": np.array([c.artist.casefold() for c in emo]),
        "clips4": four,
        "clipsg": emo,
        "windows4": f4,
        "windowsg": fg,
    }


DEFAULT = {"features": "mean", "c": 0.003, "c_av": 0.01, "alpha": 1000.0}


# ---------------------------------------------------------------- training and the card


def train_heads(data: dict, cfg: dict):
    """MoodHeads fitted on every clip (models.mood_heads), without a card yet."""
    from genre_detector.models.mood_heads import MoodHeads, tag_columns
    from genre_detector.models.musicnn import TAGS

    h = fit_heads(data["x4"], data["q"], data["arousal"], data["valence"], data["g4"],
                  data["xg"], data["gems"], data["gg"], cfg)  # fmt: skip
    return MoodHeads(h["kernel"], h["bias"], tag_columns(TAGS), {"temperatures": h["temperatures"]})


def card(data: dict, cfg: dict, cv: dict, labels_csv: Path | None, seconds: float) -> dict:
    return {
        "task": "mood, GEMS emotions (and musicnn's voice and instrument tags)",
        "inputs": "musicnn window features (models/musicnn/model.onnx): per track the mean and "
        "spread over its served windows, as the genre head",
        "outputs": {
            "mood": "calibrated probabilities of the 4Q quadrants (Q1 exuberant, Q2 anxious/"
            "angry, Q3 sad, Q4 calm); arousal and valence: probabilities of high arousal and "
            "positive valence",
            "gems": "predicted share of listeners feeling each GEMS emotion; listeners agree "
            "reliably on " + ", ".join(RELIABLE_GEMS) + " only (Aljanaki et al. 2016)",
            "voice": "the pretrained taggers' own scores (not trained here)",
            "instruments": "the pretrained taggers' own scores (not trained here)",
        },
        "data": {
            "4q": str(labels_csv) if labels_csv else "shared/data/moods/4q.csv",
            "emotify": "shared/data/moods/emotify_gems.csv",
            **cv["n_clips"],
        },
        "config": cfg,
        "evaluation": "artist-grouped 5-fold cross-validation, repeated "
        f"{cv['repeats']}x; 95 % intervals from resampling artists",
        "metrics": {"4q": cv["4q"], "gems_spearman": cv["gems_spearman"]},
        "reliable_gems": list(RELIABLE_GEMS),
        "notice": NOTICE,
        "seconds": round(seconds, 1),
    }


def train_and_write(
    dest: Path, labels_csv: Path | None = None, repeats: int = 3, cfg: dict | None = None
) -> Path:
    """Cross-validate, fit on everything, write `dest` (moods.npz) and its card beside."""
    cfg = dict(cfg or DEFAULT)
    t0 = time.time()
    data = load(labels_csv)
    cv, _, _ = cross_validate(data, cfg, repeats=repeats)
    heads = train_heads(data, cfg)
    heads.card = {**card(data, cfg, cv, labels_csv, time.time() - t0), **heads.card}
    dest.parent.mkdir(parents=True, exist_ok=True)
    heads.save(dest)
    dest.with_name("moods_card.json").write_text(json.dumps(heads.card, indent=1) + "\n")
    print(report_lines(cv))
    print(f"mood heads: {dest} (card {dest.with_name('moods_card.json')})")
    return dest


def report_lines(cv: dict) -> str:
    def f(m):
        return f"{m['value']:.3f} [{m['low']:.3f}, {m['high']:.3f}]"

    lines = [f"4Q ({cv['n_clips']['4q']} clips, {cv['n_artists']['4q']} artists):"]
    lines += [f"  {k}: {f(m)}" for k, m in cv["4q"].items()]
    lines.append(f"GEMS Spearman ({cv['n_clips']['emotify']} clips):")
    lines += [
        f"  {g}: {f(m)}{' (reliable)' if g in RELIABLE_GEMS else ''}"
        for g, m in cv["gems_spearman"].items()
    ]
    return "\n".join(lines)


EXPERIMENTS = [
    {"features": "all", "c": 0.003, "c_av": 0.003, "alpha": 3000.0},
    {"features": "mean", "c": 0.003, "c_av": 0.01, "alpha": 300.0},
    {"features": "mean", "c": 0.003, "c_av": 0.01, "alpha": 1000.0},
    {"features": "mean", "c": 0.003, "c_av": 0.01, "alpha": 3000.0},
    {"features": "penultimate_mean", "c": 0.03, "c_av": 0.03, "alpha": 1000.0},
]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m train moods", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--labels", type=Path, default=None,
                   help="a 4Q-style CSV of your own clips (path, quadrant, arousal, valence, "
                   "artist): replaces 4q.csv; see train/README.md#moods")  # fmt: skip
    p.add_argument("--out", type=Path, default=MUSICNN / "moods.npz",
                   help="where the heads go (models/musicnn/moods.npz: `make models` imports "
                   "them into the store with musicnn)")  # fmt: skip
    p.add_argument("--repeats", type=int, default=3, help="CV repeats (artist shuffles)")
    p.add_argument("--experiments", action="store_true",
                   help="compare the options in EXPERIMENTS (nothing written)")  # fmt: skip
    args = p.parse_args(argv)
    if args.experiments:
        data = load(args.labels)
        for cfg in EXPERIMENTS:
            t0 = time.time()
            cv, _, _ = cross_validate(data, cfg, repeats=args.repeats)
            print(f"== {cfg} ({time.time() - t0:.0f} s)\n{report_lines(cv)}", flush=True)
        return 0
    train_and_write(args.out, args.labels, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
