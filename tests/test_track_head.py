"""The musicnn track head: a logistic regression on each track's mean and spread of window
features, served per window and pooled geometrically (genre_detector.models.track_head)."""

from __future__ import annotations

import numpy as np
import pytest

from genre_detector.models.track_head import HEAD_FILE, TrackHead, statistics
from genre_detector.runtime.store import ModelInfo
from genre_detector.scoring.pooling import track_probabilities
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
    from genre_detector.audio.features import MUSICNN_SETTINGS

    rng = np.random.default_rng(4)
    head = TrackHead(rng.normal(size=(F, K)), rng.normal(size=(F, K)), np.zeros(K), np.ones(F))
    info = ModelInfo("musicnn", ["a", "b", "c"], MUSICNN_SETTINGS, {}, head=head)
    f = rng.normal(size=(3, F))
    np.testing.assert_array_equal(info.window_probs(f), head.window_probs(f))
    assert info.output_width == F
    plain = ModelInfo("cnn", ["a", "b", "c"], MUSICNN_SETTINGS, {})
    assert plain.window_probs(f) is f and plain.output_width == K


def test_overlapping_windows_do_not_fake_a_spread():
    """A 3-6 s clip has two windows sharing most frames: its spread comes from the training
    tracks, as for one window; windows that do not overlap give their own."""
    from genre_detector.audio.features import MUSICNN_SETTINGS, extract_feature_sets
    from genre_detector.models.track_head import apart

    assert apart([0.0, 0.5], 3.0).tolist() == [0]
    assert apart([0.0, 3.0, 4.0, 6.5], 3.0).tolist() == [0, 1, 3]
    rng = np.random.default_rng(5)
    fallback = np.full(F, 0.7)
    head = TrackHead(rng.normal(size=(F, K)), rng.normal(size=(F, K)), np.zeros(K), fallback)
    f = rng.normal(size=(2, F))
    near = head.track_probs(f, start_s=[0.0, 0.5], window_s=3.0)
    z = f.mean(axis=0) @ head.w_mean + fallback @ head.w_std
    np.testing.assert_allclose(near, np.exp(z) / np.exp(z).sum(), atol=1e-9)
    far = head.track_probs(f, start_s=[0.0, 3.0], window_s=3.0)
    np.testing.assert_allclose(far, head.track_probs(f), atol=1e-12)  # both windows count
    # what the service cuts from a 3.2 s upload: two windows 0.2 s apart
    wave = rng.standard_normal(int(3.2 * 16000)).astype(np.float32) * 0.1
    b = extract_feature_sets((wave, 16000), [MUSICNN_SETTINGS])[MUSICNN_SETTINGS]
    assert len(b.start_s) == 2 and apart(b.start_s, MUSICNN_SETTINGS.window_seconds).size == 1
    info = ModelInfo("musicnn", ["a", "b", "c"], MUSICNN_SETTINGS, {}, head=head)
    np.testing.assert_allclose(
        track_probabilities(info.window_probs(f, b.start_s), "geometric"), near, atol=1e-6
    )


def test_fit_head_without_any_multi_window_track():
    """One window per track (the cost curve's first step): a zero fallback, not a crash."""
    rng = np.random.default_rng(6)
    feats = [rng.normal(size=(1, F)) + (i % K) for i in range(30)]
    y = np.arange(30) % K
    head = fit_head(feats, y, K, FitConfig(head_c=1.0)).head
    np.testing.assert_array_equal(head.std_fallback, np.zeros(F))
    assert (head_track_probs(head, feats).argmax(axis=1) == y).mean() > 0.9


def test_output_width_is_checked_against_labels_or_head():
    """A features model stored without its head (or a head for other labels) fails at
    warm-up, naming the widths, instead of cutting 500 features down to nine 'probabilities'."""
    from genre_detector.audio.features import MUSICNN_SETTINGS
    from genre_detector.runtime.store import check_width

    plain = ModelInfo("musicnn", ["a", "b", "c"], MUSICNN_SETTINGS, {}, tag="genre-musicnn:x")
    with pytest.raises(ValueError, match="returns 500 numbers per window, its labels need 3"):
        check_width(plain, np.zeros((1, 500)))
    check_width(plain, np.zeros((1, 3)))
    rng = np.random.default_rng(7)
    head = TrackHead(rng.normal(size=(F, K)), rng.normal(size=(F, K)), np.zeros(K), np.ones(F))
    with_head = ModelInfo("musicnn", ["a", "b", "c"], MUSICNN_SETTINGS, {}, head=head)
    with pytest.raises(ValueError, match="track head's features need 6"):
        check_width(with_head, np.zeros((1, 3)))
    check_width(with_head, np.zeros((1, F)))


def test_stacked_head_is_one_linear_head_built_from_per_block_regressions():
    """FitConfig(head="stacked"): a regression per feature block, weighed by an out-of-fold
    meta-regression; it folds into one TrackHead (so serving is unchanged) that tells
    unseen tracks apart as well as the joint head does."""
    rng = np.random.default_rng(4)
    feats, y = _tracks(rng)
    test_feats, test_y = _tracks(np.random.default_rng(5))
    groups = [str(i // 2) for i in range(len(y))]  # pairs of tracks share an "artist"
    cfg = FitConfig(head_c=1.0, class_balance=0.75, head="stacked")
    head = fit_head(feats, y, K, cfg, groups, widths=[3, 3]).head
    assert head.w_mean.shape == (F, K) and head.w_std.shape == (F, K)
    assert (head_track_probs(head, test_feats).argmax(axis=1) == test_y).mean() > 0.9
    joint = fit_head(feats, y, K, FitConfig(head_c=1.0, class_balance=0.75), groups).head
    assert not np.allclose(head.w_mean, joint.w_mean)  # really another fit
    with pytest.raises(ValueError, match=r"widths \[4, 4\] do not make 6 features"):
        fit_head(feats, y, K, cfg, groups, widths=[4, 4])
    with pytest.raises(ValueError, match="head='deep': valid: joint, stacked"):
        fit_head(feats, y, K, FitConfig(head="deep"), groups)


def test_stacked_head_folds_block_regressions_through_the_meta_regression(monkeypatch):
    """_stacked's kernel is exactly meta_bias + sum_j (x[:, cols_j] @ k_j + b_j) @ A_j, with
    cols_j block j's mean and spread columns: checked with stand-in regressions whose weights
    depend only on their input's shape, on blocks of unequal widths."""
    import train.pretrained as pretrained

    def fake(x, y, w, c, n):
        rng = np.random.default_rng(1000 * x.shape[1] + len(x))
        return rng.normal(size=(x.shape[1], n)), rng.normal(size=n)

    monkeypatch.setattr(pretrained, "_linear_head", fake)
    rng = np.random.default_rng(6)
    n, widths = 40, [2, 4]
    x = rng.normal(size=(n, 2 * sum(widths)))  # [mean (6), spread (6)]
    y = np.arange(n) % K
    groups = [str(i // 2) for i in range(n)]
    kernel, bias = pretrained._stacked(x, y, np.ones(n), groups, widths, FitConfig(), K)
    cols = [np.r_[0:2, 6:8], np.r_[2:6, 8:12]]
    meta_k, meta_b = fake(np.zeros((n, 2 * K)), None, None, None, K)
    want = meta_b.copy()
    for j, c in enumerate(cols):
        k, b = fake(x[:, c], None, None, None, K)  # the final fit of block j: all n tracks
        want = want + (x[:, c] @ k + b) @ meta_k[j * K : (j + 1) * K]
    np.testing.assert_allclose(x @ kernel + bias, want, atol=1e-9)
