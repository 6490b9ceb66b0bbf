"""The musicnn track head: a logistic regression on each track's mean and spread of window
features, served per window and pooled geometrically (genre_detector.track_head)."""

from __future__ import annotations

import numpy as np
import pytest

from genre_detector.predict import track_probabilities
from genre_detector.store import ModelInfo
from genre_detector.track_head import HEAD_FILE, TrackHead, statistics
from train.fit import FitConfig
from train.pretrained import fit_head, head_track_probs

K, F = 3, 6


def _tracks(rng, n_per_class=20):
    """Class k: windows around a class mean in feature k, with a class-specific spread in
    feature 3 + k (so the spread, not only the mean, tells classes apart)."""
    feats, y = [], []
    for k in range(K):
        for _ in range(n_per_class):
            n = int(rng.integers(2, 6))
            f = rng.normal(0, 0.3, (n, F))
            f[:, k] += 1.0
            f[:, 3 + k] *= 4.0
            feats.append(f.astype(np.float32))
            y.append(k)
    return feats, np.array(y)


def test_window_probabilities_pool_to_the_track_prediction():
    rng = np.random.default_rng(0)
    head = TrackHead(
        rng.normal(size=(F, K)), rng.normal(size=(F, K)), rng.normal(size=K), np.ones(F)
    )
    f = rng.normal(size=(4, F))
    p = head.window_probs(f)
    assert p.shape == (4, K) and p.dtype == np.float32
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-6)
    assert not np.allclose(p[0], p[1])  # each window its own probabilities (the timeline)
    want = head.track_probs(f)
    np.testing.assert_allclose(track_probabilities(p, "geometric"), want, atol=1e-6)
    # = softmax of the linear model on [mean, spread]
    z = np.concatenate([head.w_mean, head.w_std]).T @ statistics(f, head.std_fallback) + head.bias
    np.testing.assert_allclose(want, np.exp(z) / np.exp(z).sum(), atol=1e-9)


def test_one_window_uses_the_training_spread_and_bad_shapes_are_refused():
    rng = np.random.default_rng(1)
    fallback = np.full(F, 0.7)
    head = TrackHead(rng.normal(size=(F, K)), rng.normal(size=(F, K)), np.zeros(K), fallback)
    f = rng.normal(size=(1, F))
    z = f[0] @ head.w_mean + fallback @ head.w_std
    np.testing.assert_allclose(head.track_probs(f), np.exp(z) / np.exp(z).sum(), atol=1e-9)
    assert head.window_probs(np.zeros((0, F))).shape == (0, K)
    with pytest.raises(ValueError, match=r"\(n, 6\)"):
        head.window_probs(np.zeros((2, F + 1)))


def test_fit_head_learns_from_the_spread_and_round_trips(tmp_path):
    rng = np.random.default_rng(2)
    feats, y = _tracks(rng)
    test_feats, test_y = _tracks(np.random.default_rng(3))
    cfg = FitConfig(head_c=1.0, class_balance=0.75)
    res = fit_head(feats, y, K, cfg, groups=[str(i) for i in range(len(y))])
    head = res.head
    p = head_track_probs(head, test_feats)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-9)
    assert (p.argmax(axis=1) == test_y).mean() > 0.9
    # the spread features carry weight: feature 3 + k's spread votes for class k
    assert all(
        head.w_std[3 + k, k] > head.w_std[3 + k, j] for k in range(K) for j in range(K) if j != k
    )
    # the fallback is the training tracks' mean spread
    want = np.mean([f.std(axis=0, ddof=1) for f in feats], axis=0)
    np.testing.assert_allclose(head.std_fallback, want, rtol=1e-6)
    again = TrackHead.load(head.save(tmp_path / HEAD_FILE))
    np.testing.assert_array_equal(
        again.window_probs(test_feats[0]), head.window_probs(test_feats[0])
    )


def test_model_info_applies_its_head_and_reports_its_width():
    from genre_detector.features import MUSICNN_SETTINGS

    rng = np.random.default_rng(4)
    head = TrackHead(rng.normal(size=(F, K)), rng.normal(size=(F, K)), np.zeros(K), np.ones(F))
    info = ModelInfo("musicnn", ["a", "b", "c"], MUSICNN_SETTINGS, {}, head=head)
    f = rng.normal(size=(3, F))
    np.testing.assert_array_equal(info.window_probs(f), head.window_probs(f))
    assert info.output_width == F
    plain = ModelInfo("cnn", ["a", "b", "c"], MUSICNN_SETTINGS, {})
    assert plain.window_probs(f) is f and plain.output_width == K
