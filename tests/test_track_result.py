"""genre_detector.scoring.track_result: score_track, the one way from model outputs to a
verdict, and the renderings of its result (the HTTP reply, the tagger's row)."""

from __future__ import annotations

import numpy as np
import pytest

from genre_detector.audio.features import MUSICNN_SETTINGS, FeatureSettings, extract_feature_sets
from genre_detector.batch.rows import row_from_reply, row_from_result
from genre_detector.models.calibration import Calibration
from genre_detector.models.track_head import TrackHead
from genre_detector.runtime.store import ModelInfo
from genre_detector.scoring.track_result import score_track, shown_metrics
from genre_detector.serve.replies import predict_reply
from tests.expected import NINE

S, M = FeatureSettings(), MUSICNN_SETTINGS
F = 6  # backbone features of the toy head


@pytest.fixture(scope="module")
def batches():
    """The real windows of 20 s of noise: 12 research windows, 5 musicnn ones (3 s apart)."""
    wave = (0.1 * np.random.default_rng(1).standard_normal(20 * 22050)).astype(np.float32)
    out = extract_feature_sets((wave, 22050), [S, M])
    return out


def _infos():
    rng = np.random.default_rng(3)
    head = TrackHead(rng.normal(size=(F, 9)), rng.normal(size=(F, 9)), np.zeros(9), np.full(F, 0.5))
    cnn = ModelInfo("cnn", list(NINE), S, {"accuracy": 0.6, "log_loss": 1.1}, tag="genre-cnn:a")
    mn = ModelInfo(
        "musicnn", list(NINE), M, {"accuracy": 0.8}, tag="genre-musicnn:b", pooling="geometric"
    )
    mn.head = head
    return {"cnn": cnn, "musicnn": mn}


def _outputs(batches, rng):
    z = rng.normal(size=(len(batches[S].windows), 9))
    cnn = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    feats = rng.normal(size=(len(batches[M].windows), F)).astype(np.float32)
    return {"cnn": cnn.astype(np.float32), "musicnn": feats}


def test_embedding_is_the_heads_statistics_of_the_track(batches):
    infos, outs = _infos(), _outputs(batches, np.random.default_rng(0))
    r = score_track(batches, outs, infos, None)
    f = outs["musicnn"].astype(np.float64)
    # independent of the code under test: the mean and the unbiased spread of the windows
    # that do not overlap (musicnn's windows are 3 s long and 3 s apart: all of them)
    assert len(f) == 5
    expected = np.concatenate([f.mean(axis=0), f.std(axis=0, ddof=1)])
    assert r.embedding.dtype == np.float32 and r.embedding.shape == (2 * F,)
    np.testing.assert_allclose(r.embedding, expected, rtol=1e-5)
    assert r.embedding_model == "musicnn"
    # the head applied to that embedding is the track's musicnn prediction
    head = infos["musicnn"].head
    z = expected[:F] @ head.w_mean + expected[F:] @ head.w_std + head.bias
    np.testing.assert_allclose(
        r.models["musicnn"].raw, np.exp(z) / np.exp(z).sum(), rtol=1e-5, atol=1e-9
    )


def test_no_embedding_without_a_track_head_model(batches):
    infos, outs = _infos(), _outputs(batches, np.random.default_rng(0))
    r = score_track(batches, {"cnn": outs["cnn"]}, infos, None)
    assert r.embedding is None and r.embedding_model is None
    assert r.n_windows == 12 and r.sample_rate == 22050 and list(r.models) == ["cnn"]


def test_reply_and_row_render_the_same_result(batches, tmp_path):
    """The tagger's in-process row (from the TrackResult) equals the row the remote engine
    reads back from the service's reply: one scoring, two renderings."""
    infos, outs = _infos(), _outputs(batches, np.random.default_rng(5))
    cal = Calibration(
        list(NINE), temperatures={"cnn": 2.0, "musicnn": 0.8}, weights={"cnn": 0.3, "musicnn": 1}
    )
    r = score_track(batches, outs, infos, cal)
    reply = predict_reply(r, "id", infos, cal)
    assert row_from_result("x.mp3", r) == row_from_reply("x.mp3", reply)
    assert reply["ensemble"]["top_genre"] == r.ensemble.top_genre
    assert reply["ensemble"]["calibrated"] is True
    assert len(reply["timeline"]) == r.n_windows == 12


def test_shown_metrics_are_the_calibrated_models():
    infos = _infos()
    cal = Calibration(
        list(NINE), metrics={"models_calibrated": {"cnn": {"accuracy": 0.6, "ece": 0.07}}}
    )
    assert shown_metrics("cnn", infos["cnn"], cal) == {"accuracy": 0.6, "ece": 0.07}
    # a model the calibration did not measure: its card's metrics
    assert shown_metrics("musicnn", infos["musicnn"], cal) == {"accuracy": 0.8}
    assert shown_metrics("cnn", infos["cnn"], None) == {"accuracy": 0.6, "log_loss": 1.1}


def test_score_track_needs_a_model(batches):
    with pytest.raises(ValueError, match="at least one model"):
        score_track(batches, {}, _infos(), None)
