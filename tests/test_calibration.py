"""genre_detector.models.calibration: expected calibration error, temperatures, the pooled
ensemble,
and its round trip through JSON and the model store."""

from __future__ import annotations

import json

import numpy as np
import pytest

from genre_detector.models.calibration import (
    Calibration,
    expected_calibration_error,
    fit_pool_weights,
    fit_temperature,
    reliability,
    softmax,
)

LABELS = ["blues", "classical", "country"]


def _rows(*conf_and_class) -> np.ndarray:
    """Probability rows over 3 classes: (confidence, predicted class), rest split evenly."""
    out = []
    for conf, k in conf_and_class:
        row = np.full(3, (1 - conf) / 2)
        row[k] = conf
        out.append(row)
    return np.array(out)


# ----------------------------------------------------------------------------- ECE
def test_ece_of_a_hand_computed_case():
    # bin [0.9, 1.0): confidences 0.9, 0.9, 0.95, 0.95 -> mean 0.925, 2 of 4 right
    # bin [0.6, 0.7): confidences 0.6, 0.6             -> mean 0.6,   2 of 2 right
    # bin [0.4, 0.5): confidence 0.4                   -> mean 0.4,   0 of 1 right
    p = _rows((0.9, 0), (0.9, 1), (0.95, 2), (0.95, 0), (0.6, 1), (0.6, 2), (0.4, 0))
    y = np.array([0, 0, 2, 1, 1, 2, 1])
    want = (4 / 7) * abs(0.5 - 0.925) + (2 / 7) * abs(1.0 - 0.6) + (1 / 7) * abs(0.0 - 0.4)
    assert expected_calibration_error(p, y) == pytest.approx(want, abs=1e-12)
    # with one bin it is |overall accuracy - mean confidence|
    assert expected_calibration_error(p, y, bins=1) == pytest.approx(
        abs(4 / 7 - np.mean([0.9, 0.9, 0.95, 0.95, 0.6, 0.6, 0.4])), abs=1e-12
    )


def test_ece_is_zero_when_confidence_equals_accuracy_and_counts_certainty():
    # 0.75 confident and right 3 times in 4: perfectly calibrated
    p = _rows(*[(0.75, 0)] * 4)
    assert expected_calibration_error(p, np.array([0, 0, 0, 1])) == pytest.approx(0.0, abs=1e-12)
    # confidence 1.0 falls in the top bin (not past it); always wrong -> ECE 1
    assert expected_calibration_error(np.eye(3), np.array([1, 2, 0])) == pytest.approx(1.0)


def test_reliability_bins_add_up():
    rng = np.random.default_rng(0)
    p = softmax(2 * rng.standard_normal((200, 3)))
    y = rng.integers(0, 3, 200)
    bins = reliability(p, y)
    assert len(bins) == 10 and sum(b["n"] for b in bins) == 200
    assert bins[0]["lo"] == 0.0 and bins[-1]["hi"] == 1.0
    for b in bins:
        if b["n"]:
            assert b["lo"] <= b["confidence"] < b["hi"] + 1e-12 and 0 <= b["accuracy"] <= 1
        else:
            assert b["confidence"] is None and b["accuracy"] is None
    ece = sum(b["n"] / 200 * abs(b["accuracy"] - b["confidence"]) for b in bins if b["n"])
    assert ece == pytest.approx(expected_calibration_error(p, y))


# ----------------------------------------------------------------------------- temperature
def _synthetic(n: int, k: int = 5, seed: int = 0):
    """Labels drawn from softmax(z): softmax(z) is perfectly calibrated."""
    rng = np.random.default_rng(seed)
    z = 1.5 * rng.standard_normal((n, k))
    q = softmax(z)
    y = np.array([rng.choice(k, p=row) for row in q])
    return z, q, y


@pytest.mark.parametrize("true_t", [0.5, 2.0, 3.0])
def test_temperature_fit_recovers_a_known_temperature(true_t):
    """A model whose logits are the calibrated ones times T is overconfident (T > 1) or
    underconfident (T < 1) by exactly T; the fit must find it."""
    z, q, y = _synthetic(20000)
    p = softmax(z * true_t)
    t = fit_temperature(p, y)
    assert t == pytest.approx(true_t, rel=0.08)
    cal = Calibration(LABELS, temperatures={"m": t})
    fixed = cal.model("m", p)
    np.testing.assert_allclose(fixed, q, atol=0.03)
    assert expected_calibration_error(fixed, y) < 0.02 < expected_calibration_error(p, y)
    np.testing.assert_array_equal(fixed.argmax(axis=1), p.argmax(axis=1))  # ranking kept


def test_model_without_a_temperature_is_unchanged():
    p = softmax(np.random.default_rng(1).standard_normal((4, 3)))
    np.testing.assert_allclose(Calibration(LABELS).model("cnn", p), p, atol=1e-9)
    np.testing.assert_allclose(Calibration(LABELS, {"lstm": 2.0}).model("cnn", p), p, atol=1e-9)


# ----------------------------------------------------------------------------- pooling
def test_pooling_gives_no_weight_to_a_useless_model():
    z, q, y = _synthetic(4000, seed=2)
    rng = np.random.default_rng(3)
    useless = softmax(2 * rng.standard_normal(q.shape))  # confident, unrelated to y
    w = fit_pool_weights({"good": q, "useless": useless}, y)
    assert w["useless"] < 0.05, w
    assert w["good"] == pytest.approx(1.0, abs=0.1), w
    # and the fitted calibration's ensemble is (almost) the good model alone
    cal = Calibration.fit({"good": q, "useless": useless}, y, LABELS)
    assert cal.weights["useless"] < 0.05, cal.weights
    ens = cal.ensemble({"good": q, "useless": useless})
    np.testing.assert_allclose(ens, q, atol=0.05)


def _two_noisy_views(n: int = 3000, k: int = 4, seed: int = 4):
    """Labels and two models seeing independent noisy views of them (equally informative)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    truth = np.eye(k)[y] * 2.0
    a = softmax(truth + 1.5 * rng.standard_normal((n, k)))
    b = softmax(truth + 1.5 * rng.standard_normal((n, k)))
    return y, a, b


def test_pooling_two_informative_models_beats_either():
    """Two models seeing independent noisy views of the truth: the pooled log-loss is lower."""
    from genre_detector.numerics import log_loss

    y, a, b = _two_noisy_views()
    cal = Calibration.fit({"a": a, "b": b}, y, LABELS[:2] + ["x", "y"])
    assert cal.weights["a"] > 0.2 and cal.weights["b"] > 0.2
    pooled = cal.ensemble({"a": a, "b": b})
    assert log_loss(pooled, y) < min(log_loss(cal.model("a", a), y), log_loss(cal.model("b", b), y))


def test_ensemble_is_log_linear_pooling_with_the_fitted_weights():
    rng = np.random.default_rng(5)
    probs = {n: softmax(rng.standard_normal((6, 3))) for n in ("a", "b", "c")}
    cal = Calibration(LABELS, weights={"a": 1.2, "b": 0.3, "c": 0.0})
    want = softmax(1.2 * np.log(probs["a"]) + 0.3 * np.log(probs["b"]))
    np.testing.assert_allclose(cal.ensemble(probs), want, atol=1e-9)
    np.testing.assert_allclose(cal.ensemble(probs).sum(axis=1), 1.0, atol=1e-12)
    # one track (a 1-D row) works the same way
    np.testing.assert_allclose(
        cal.ensemble({n: p[0] for n, p in probs.items()}), want[0], atol=1e-9
    )


def test_ensemble_of_a_subset_and_of_unknown_models():
    rng = np.random.default_rng(6)
    probs = {n: softmax(rng.standard_normal((5, 3))) for n in ("a", "b", "c", "new")}
    cal = Calibration(LABELS, weights={"a": 1.2, "b": 0.3, "c": 0.6})
    assert cal.covers(["a", "b", "c"]) and cal.covers(("c", "b", "a"))
    assert not cal.covers(["a", "b"]) and not cal.covers(["a", "b", "c", "new"])
    # a subset keeps its members' fitted weights
    sub = {n: probs[n] for n in ("a", "b")}
    np.testing.assert_allclose(
        cal.ensemble(sub), softmax(1.2 * np.log(probs["a"]) + 0.3 * np.log(probs["b"])), atol=1e-9
    )
    # a model it was not fitted with gets the mean weight of the fitted members present
    mixed = {n: probs[n] for n in ("a", "b", "new")}
    np.testing.assert_allclose(
        cal.ensemble(mixed),
        softmax(1.2 * np.log(probs["a"]) + 0.3 * np.log(probs["b"]) + 0.75 * np.log(probs["new"])),
        atol=1e-9,
    )
    # only models it does not know, or no calibration at all: the normalised geometric mean
    np.testing.assert_allclose(
        cal.ensemble({"x": probs["new"], "y": probs["c"]}),
        softmax(0.5 * np.log(probs["new"]) + 0.5 * np.log(probs["c"])),
        atol=1e-9,
    )
    np.testing.assert_allclose(
        Calibration(LABELS).ensemble(sub),
        softmax(0.5 * np.log(probs["a"]) + 0.5 * np.log(probs["b"])),
        atol=1e-9,
    )
    # one model alone is that model, whatever its weight
    np.testing.assert_allclose(
        Calibration(LABELS).ensemble({"a": probs["a"]}), probs["a"], atol=1e-9
    )
    # members whose weights are all 0 fall back to the plain geometric mean
    zero = Calibration(LABELS, weights={"a": 0.0, "b": 0.0})
    np.testing.assert_allclose(
        zero.ensemble(sub), softmax(0.5 * np.log(probs["a"]) + 0.5 * np.log(probs["b"])), atol=1e-9
    )


# ----------------------------------------------------------------------------- round trips
def test_to_dict_from_dict_round_trip_through_json():
    z, q, y = _synthetic(500, k=3, seed=7)
    p2 = softmax(2 * z)
    cal = Calibration.fit({"cnn": q, "musicnn": p2}, y, LABELS)
    cal.metrics = {"ensemble": {"accuracy": 0.5, "ece": 0.04}, "fitted_on": "500 tracks"}
    d = json.loads(json.dumps(cal.to_dict()))
    assert set(d) == {"labels", "temperatures", "weights", "metrics"}
    back = Calibration.from_dict(d)
    assert back == cal
    np.testing.assert_array_equal(
        back.ensemble({"cnn": q, "musicnn": p2}), cal.ensemble({"cnn": q, "musicnn": p2})
    )
    # an older file without metrics (or weights) still loads
    minimal = Calibration.from_dict({"labels": LABELS, "temperatures": {"cnn": 1.5}})
    assert minimal.weights == {} and minimal.metrics == {} and minimal.temperatures == {"cnn": 1.5}


def test_store_round_trip(tmp_path):
    import bentoml

    from genre_detector.runtime.store import CALIBRATION_NAME, load_calibration, save_calibration

    cal = Calibration(
        LABELS,
        {"cnn": 1.7, "lstm": 0.9},
        {"cnn": 0.8, "lstm": 0.4},
        {"ensemble": {"accuracy": 0.61}},
    )
    tag = save_calibration(cal)
    try:
        assert tag.startswith(f"{CALIBRATION_NAME}:")
        assert load_calibration(tag) == cal
    finally:
        bentoml.models.delete(tag)  # the shared test store must keep the shipped one only
    assert load_calibration(f"{CALIBRATION_NAME}:doesnotexist") is None


# ----------------------------------------------------------------------------- train.calibrate
def test_cross_fitted_scores_every_track_with_a_fit_that_did_not_see_its_artist():
    from train.calibrate import cross_fitted

    z, q, y = _synthetic(300, k=3, seed=8)
    probs = {"sharp": softmax(3 * z), "flat": softmax(0.3 * z)}
    groups = [f"artist-{i // 3}" for i in range(300)]
    honest = cross_fitted(probs, y, LABELS, groups, seed=0)
    assert set(honest) == {"sharp", "flat", "ensemble", "reliability"}
    for n in ("sharp", "flat", "ensemble"):
        assert honest[n].shape == (300, 3)
        np.testing.assert_allclose(honest[n].sum(axis=1), 1.0, atol=1e-9)
    # temperatures fitted on other artists repair both the over- and the underconfident model
    for n in ("sharp", "flat"):
        assert expected_calibration_error(honest[n], y) < expected_calibration_error(probs[n], y)
    assert sum(b["n"] for b in honest["reliability"]) == 300


def test_cross_fitted_on_a_small_validation_set():
    """A quick run's validation split: 10 tracks, 3 per genre, 5 artists (< 5 per genre)."""
    from train.calibrate import cross_fitted

    rng = np.random.default_rng(9)
    y = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 0])
    probs = {
        "a": softmax(2 * np.eye(3)[y] + rng.standard_normal((10, 3))),
        "b": softmax(rng.standard_normal((10, 3))),
    }
    honest = cross_fitted(probs, y, LABELS, [f"x{i // 2}" for i in range(10)], seed=0)
    assert honest["ensemble"].shape == (10, 3) and np.isfinite(honest["ensemble"]).all()
    np.testing.assert_allclose(honest["ensemble"].sum(axis=1), 1.0, atol=1e-9)


def test_fit_keeps_the_pooled_ensemble_when_it_predicts_held_out_tracks_better():
    y, a, b = _two_noisy_views()
    k = a.shape[1]
    cal = Calibration.fit({"a": a, "b": b}, y, LABELS[:k])
    sel = cal.metrics["selection"]
    assert sel["pooled_log_loss"] < sel["best_alone_log_loss"], sel
    assert cal.weights["a"] > 0.2 and cal.weights["b"] > 0.2, cal.weights


def test_fit_falls_back_to_the_best_model_alone_when_pooling_overfits():
    """A few tracks and many noisy models: fitted pooling weights overfit, the inner
    cross-validation notices, and the calibration keeps the best model alone."""
    rng = np.random.default_rng(5)
    n, k = 60, 4
    y = rng.integers(0, k, n)
    good = softmax(np.eye(k)[y] * 3.0 + rng.standard_normal((n, k)))
    probs = {
        "good": good,
        **{f"noise{i}": softmax(3 * rng.standard_normal((n, k))) for i in range(6)},
    }
    cal = Calibration.fit(probs, y, LABELS[:k])
    sel = cal.metrics["selection"]
    assert sel["best_alone"] == "good"
    if sel["best_alone_log_loss"] < sel["pooled_log_loss"]:
        assert all(w == 0.0 for n_, w in cal.weights.items() if n_ != "good"), cal.weights
        assert cal.weights["good"] == pytest.approx(1.0 / cal.temperatures["good"])
    else:
        pytest.fail(f"pooling did not overfit in this case: {sel}")
