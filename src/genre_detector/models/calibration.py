"""Calibrated probabilities: a temperature per model and a fitted ensemble of the models.

    cal = Calibration.fit({"cnn": p_cnn, "musicnn": p_mn}, y)   # held-out track probabilities
    cal.model("cnn", p)            # one model's calibrated probabilities
    cal.ensemble({"cnn": p, ...})  # the calibrated ensemble
    expected_calibration_error(p, y)

The ensemble pools the models log-linearly: p ~ exp(sum_m w_m log p_m) with w_m >= 0 fitted
to minimise the log-loss of tracks by artists the models never heard (out-of-fold
predictions). The scale of the weights is the ensemble's inverse temperature, so one fit
gives both the mixture and the calibration; a model that adds nothing gets weight 0.
Fitted weights can overfit a small set, so `fit` also scores, by an inner cross-validation
on the same tracks, the best single model alone (calibrated) and keeps whichever of the two
predicts held-out tracks better: the ensemble is never knowingly worse than its best member.
Pure NumPy at serving time; fitting uses SciPy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from genre_detector.numerics import EPS, log_loss, safe_log, softmax


def expected_calibration_error(p: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    """Top-label ECE: |accuracy - confidence| averaged over equal-width confidence bins,
    weighted by the share of tracks in each bin."""
    conf, hit = p.max(axis=1), (p.argmax(axis=1) == y).astype(float)
    idx = np.minimum((conf * bins).astype(int), bins - 1)
    return float(
        sum(
            abs(hit[idx == b].mean() - conf[idx == b].mean()) * np.mean(idx == b)
            for b in range(bins)
            if np.any(idx == b)
        )
    )


def reliability(p: np.ndarray, y: np.ndarray, bins: int = 10) -> list[dict]:
    """Per confidence bin: mean confidence, accuracy and count (for the diagram)."""
    conf, hit = p.max(axis=1), (p.argmax(axis=1) == y).astype(float)
    idx = np.minimum((conf * bins).astype(int), bins - 1)
    return [
        {
            "lo": b / bins,
            "hi": (b + 1) / bins,
            "n": int(np.sum(idx == b)),
            "confidence": float(conf[idx == b].mean()) if np.any(idx == b) else None,
            "accuracy": float(hit[idx == b].mean()) if np.any(idx == b) else None,
        }
        for b in range(bins)
    ]


def fit_temperature(p: np.ndarray, y: np.ndarray) -> float:
    """The T minimising the log-loss of softmax(log p / T)."""
    from scipy.optimize import minimize_scalar

    z = safe_log(p)
    res = minimize_scalar(
        lambda t: log_loss(softmax(z / t), y), bounds=(0.05, 20.0), method="bounded"
    )
    return float(res.x)


def fit_pool_weights(probs: dict[str, np.ndarray], y: np.ndarray) -> dict[str, float]:
    """Non-negative log-linear pooling weights minimising the log-loss."""
    from scipy.optimize import minimize

    names = list(probs)
    z = np.stack([safe_log(probs[n]) for n in names])  # (m, tracks, classes)

    def loss(w):
        return log_loss(softmax(np.tensordot(w, z, axes=1)), y)

    best = min(
        (
            minimize(loss, w0, method="L-BFGS-B", bounds=[(0.0, 10.0)] * len(names))
            for w0 in [np.full(len(names), 1.0 / len(names)), *np.eye(len(names))]
        ),
        key=lambda r: r.fun,
    )
    return {n: float(w) for n, w in zip(names, best.x)}


def _inner_cv_losses(
    probs: dict[str, np.ndarray], y: np.ndarray, best: str, groups=None, n_splits: int = 5
) -> tuple[float, float]:
    """Held-out log-loss of the pooled ensemble and of model `best` alone (each refitted on
    the other folds), over (artist-)grouped stratified folds of these tracks."""
    import warnings

    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    n_splits = max(
        2,
        min(
            n_splits,
            int(np.bincount(y).max()),
            len(set(groups)) if groups is not None else n_splits,
        ),
    )
    with warnings.catch_warnings():  # a genre with fewer tracks than folds is expected
        warnings.simplefilter("ignore", UserWarning)
        folds = (
            StratifiedGroupKFold(n_splits, shuffle=True, random_state=0).split(y, y, groups)
            if groups is not None
            else StratifiedKFold(n_splits, shuffle=True, random_state=0).split(y, y)
        )
        folds = list(folds)
    pooled, alone = np.zeros(len(y)), np.zeros(len(y))
    for fit_idx, test_idx in folds:
        w = fit_pool_weights({n: p[fit_idx] for n, p in probs.items()}, y[fit_idx])
        z = sum(w[n] * safe_log(p[test_idx]) for n, p in probs.items())
        pooled[test_idx] = -np.log(
            np.clip(softmax(z)[np.arange(len(test_idx)), y[test_idx]], EPS, 1)
        )
        t = fit_temperature(probs[best][fit_idx], y[fit_idx])
        q = softmax(safe_log(probs[best][test_idx]) / t)
        alone[test_idx] = -np.log(np.clip(q[np.arange(len(test_idx)), y[test_idx]], EPS, 1))
    return float(pooled.mean()), float(alone.mean())


@dataclass
class Calibration:
    labels: list[str]
    temperatures: dict[str, float] = field(default_factory=dict)  # per model
    weights: dict[str, float] = field(default_factory=dict)  # ensemble pooling weights
    metrics: dict = field(default_factory=dict)  # how it was measured

    @classmethod
    def fit(
        cls,
        probs: dict[str, np.ndarray],
        y: np.ndarray,
        labels: list[str],
        groups=None,
        select: bool = True,
    ) -> "Calibration":
        """Temperatures and pooling weights from held-out track probabilities `probs`
        (model -> (tracks, classes)) with true classes `y`; `groups` (artists) keep the
        inner cross-validation of `select` honest."""
        y = np.asarray(y)
        temperatures = {n: fit_temperature(p, y) for n, p in probs.items()}
        cal = cls(
            labels=list(labels), temperatures=temperatures, weights=fit_pool_weights(probs, y)
        )
        if select and len(probs) > 1:
            best = min(
                probs, key=lambda n: log_loss(softmax(safe_log(probs[n]) / temperatures[n]), y)
            )
            pooled, alone = _inner_cv_losses(probs, y, best, groups)
            cal.metrics["selection"] = {
                "pooled_log_loss": pooled,
                "best_alone": best,
                "best_alone_log_loss": alone,
            }
            if alone < pooled:
                cal.weights = {n: (1.0 / temperatures[n] if n == best else 0.0) for n in probs}
        return cal

    def model(self, name: str, p: np.ndarray) -> np.ndarray:
        """A model's calibrated probabilities (unchanged for a model it does not know)."""
        t = self.temperatures.get(name, 1.0)
        return softmax(safe_log(p) / t)

    def covers(self, names) -> bool:
        """Whether the ensemble of exactly these models is the calibrated one."""
        return set(names) == {n for n in self.weights}

    def ensemble(self, probs: dict[str, np.ndarray]) -> np.ndarray:
        """The pooled ensemble of the models given (raw, uncalibrated model probabilities).
        For a subset of the fitted members their fitted weights are used as they are; a model
        without a weight (or an empty calibration) gets the members' mean weight."""
        known = [self.weights[n] for n in probs if n in self.weights]
        default = float(np.mean(known)) if known else 1.0 / max(len(probs), 1)
        if known and sum(known) == 0:
            known, default = [], 1.0 / len(probs)
        w = [self.weights.get(n, default) if known else default for n in probs]
        return softmax(sum(wi * safe_log(p) for wi, p in zip(w, probs.values())))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Calibration":
        return cls(
            labels=list(d["labels"]),
            temperatures=dict(d.get("temperatures", {})),
            weights=dict(d.get("weights", {})),
            metrics=dict(d.get("metrics", {})),
        )
