"""genre_detector.predict and .replies: window probabilities -> track verdicts and replies."""
from __future__ import annotations

import json

import numpy as np
import pytest

from genre_detector.architectures import DISPLAY_NAMES
from genre_detector.features import FeatureSettings, WindowBatch
from genre_detector.predict import ensemble, timeline, track_probabilities, verdict
from genre_detector.replies import LEGACY_NAMES, legacy_reply, models_reply, predict_reply
from genre_detector.store import ModelInfo

LABELS = ["happy", "sad", "angry", "relaxed"]
NAMES = ["feedforward", "lenet", "cnn", "lstm"]
S = FeatureSettings()
# Each probability is rounded to 6 decimals; with 4 labels the rounding errors can add up to
# exactly 1e-6 (e.g. 0.999999), which floating point may land a hair above 1e-6.
SUM_TOL = 1e-6 + 1e-9


def _probs(rng, n: int, k: int = len(LABELS), sharp: float = 1.0) -> np.ndarray:
    logits = sharp * rng.standard_normal((n, k))
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def _batch(n: int = 5) -> WindowBatch:
    hop = S.window_hop_frames * S.hop_length / S.sample_rate
    start = np.arange(n) * hop
    duration = float(start[-1] + S.window_seconds - 0.2)
    return WindowBatch(windows=np.zeros((n, S.n_mels, S.window_frames), np.float32),
                       start_s=start, end_s=np.minimum(start + S.window_seconds, duration),
                       duration_s=duration,
                       mel=np.zeros((S.n_mels, 10), np.float32))


def _infos(names=NAMES) -> dict[str, ModelInfo]:
    return {n: ModelInfo(architecture=n, labels=list(LABELS), settings=S,
                         metrics={"accuracy": 0.5 + 0.1 * i, "log_loss": 1.2 - 0.1 * i,
                                  "macro_f1": 0.4 + 0.05 * i},
                         tag=f"genre-{n}:v{i}abc")
            for i, n in enumerate(names)}


@pytest.fixture
def window_probs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(42)
    return {n: _probs(rng, 5, sharp=2.0) for n in NAMES}


# ----------------------------------------------------------------------------- predict.py
def test_track_probabilities_is_the_normalised_mean():
    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 40):
        w = _probs(rng, n)
        p = track_probabilities(w)
        assert p.shape == (len(LABELS),)
        assert abs(p.sum() - 1.0) < 1e-12
        np.testing.assert_allclose(p, w.astype(np.float64).mean(axis=0), atol=1e-6)
    # unnormalised rows (e.g. float32 softmax drift) are renormalised
    p = track_probabilities(np.array([[0.2, 0.2, 0.2, 0.2], [0.4, 0.0, 0.0, 0.0]]))
    np.testing.assert_allclose(p, [0.5, 1 / 6, 1 / 6, 1 / 6], atol=1e-12)


def test_verdict():
    v = verdict(np.array([0.1, 0.6, 0.2, 0.1]), LABELS)
    assert v["top_genre"] == "sad"
    assert v["top_probability"] == pytest.approx(0.6)
    assert list(v["probabilities"]) == LABELS
    assert all(isinstance(p, float) for p in v["probabilities"].values())


def test_ensemble_is_the_mean_of_the_models():
    rng = np.random.default_rng(1)
    tracks = [track_probabilities(_probs(rng, 6)) for _ in range(4)]
    e = ensemble(tracks)
    np.testing.assert_allclose(e, np.mean(tracks, axis=0), atol=1e-12)
    assert abs(e.sum() - 1.0) < 1e-12
    # one model: the ensemble is that model
    np.testing.assert_allclose(ensemble(tracks[:1]), tracks[0], atol=1e-12)


def test_timeline_matches_the_windows(window_probs):
    b = _batch(5)
    tl = timeline(list(window_probs.values()), b.start_s, b.end_s, LABELS)
    assert len(tl) == len(b.windows)
    mean = np.mean(np.stack(list(window_probs.values())), axis=0)
    for i, entry in enumerate(tl):
        assert set(entry) == {"start_s", "end_s", "top_genre", "probability"}
        assert entry["start_s"] == pytest.approx(b.start_s[i], abs=1e-3)
        assert entry["end_s"] == pytest.approx(b.end_s[i], abs=1e-3)
        assert entry["top_genre"] == LABELS[int(np.argmax(mean[i]))]
        assert entry["probability"] == pytest.approx(mean[i].max(), abs=1e-4)
        assert 1 / len(LABELS) - 1e-4 <= entry["probability"] <= 1.0


def test_timeline_follows_a_genre_change():
    w = np.array([[0.9, 0.05, 0.03, 0.02]] * 3 + [[0.05, 0.05, 0.85, 0.05]] * 2, np.float32)
    b = _batch(5)
    tl = timeline([w, w], b.start_s, b.end_s, LABELS)
    assert [e["top_genre"] for e in tl] == ["happy"] * 3 + ["angry"] * 2


# ----------------------------------------------------------------------------- replies.py
def test_predict_reply_shape(window_probs):
    b, infos = _batch(5), _infos()
    reply = predict_reply(b, window_probs, infos, "abc123", 22050)
    json.dumps(reply)                                # JSON-serialisable as is
    assert {"request_id", "duration_s", "sample_rate", "n_windows", "labels", "models",
            "ensemble", "timeline", "model_tags"} <= set(reply)
    assert reply["request_id"] == "abc123"
    assert reply["duration_s"] == pytest.approx(b.duration_s, abs=1e-3)
    assert reply["sample_rate"] == 22050
    assert reply["n_windows"] == 5
    assert reply["labels"] == LABELS
    assert list(reply["models"]) == NAMES
    for i, name in enumerate(NAMES):
        m = reply["models"][name]
        assert {"display_name", "tag", "probabilities", "top_genre", "top_probability",
                "metrics"} <= set(m)
        assert m["display_name"] == DISPLAY_NAMES[name]
        assert m["tag"] == infos[name].tag
        assert m["metrics"] == infos[name].metrics
        assert list(m["probabilities"]) == LABELS
        assert abs(sum(m["probabilities"].values()) - 1) <= SUM_TOL
        expected = track_probabilities(window_probs[name])
        np.testing.assert_allclose(list(m["probabilities"].values()), expected, atol=1e-6)
        assert m["top_genre"] == LABELS[int(np.argmax(expected))]
        assert m["top_probability"] == pytest.approx(expected.max(), abs=1e-6)
    e = reply["ensemble"]
    assert {"probabilities", "top_genre", "top_probability", "agreeing_models",
            "n_models"} <= set(e)
    assert abs(sum(e["probabilities"].values()) - 1) <= SUM_TOL
    combined = np.mean([track_probabilities(window_probs[n]) for n in NAMES], axis=0)
    np.testing.assert_allclose(list(e["probabilities"].values()), combined, atol=1e-6)
    assert e["top_genre"] == LABELS[int(np.argmax(combined))]
    assert e["n_models"] == 4
    assert e["agreeing_models"] == sum(reply["models"][n]["top_genre"] == e["top_genre"]
                                       for n in NAMES)
    assert 0 <= e["agreeing_models"] <= 4
    assert len(reply["timeline"]) == 5
    assert reply["model_tags"] == {n: infos[n].tag for n in NAMES}


def test_predict_reply_agreement_counts():
    b, infos = _batch(3), _infos()
    happy = np.array([[0.7, 0.1, 0.1, 0.1]] * 3, np.float32)
    sad = np.array([[0.1, 0.7, 0.1, 0.1]] * 3, np.float32)
    probs = {"feedforward": happy, "lenet": happy, "cnn": happy, "lstm": sad}
    e = predict_reply(b, probs, infos, "r", 22050)["ensemble"]
    assert e["top_genre"] == "happy"
    assert e["agreeing_models"] == 3 and e["n_models"] == 4


def test_predict_reply_for_a_subset_of_models(window_probs):
    sub = {n: window_probs[n] for n in ("cnn", "lstm")}
    reply = predict_reply(_batch(5), sub, _infos(), "r", 22050)
    assert list(reply["models"]) == ["cnn", "lstm"]
    assert reply["ensemble"]["n_models"] == 2
    assert set(reply["model_tags"]) == {"cnn", "lstm"}


def test_probabilities_sum_to_one_over_many_random_replies():
    rng = np.random.default_rng(7)
    infos, b = _infos(), _batch(4)
    worst = 0.0
    for _ in range(200):
        probs = {n: _probs(rng, 4, sharp=3.0) for n in NAMES}
        reply = predict_reply(b, probs, infos, "r", 22050)
        for v in [*(m["probabilities"] for m in reply["models"].values()),
                  reply["ensemble"]["probabilities"]]:
            worst = max(worst, abs(sum(v.values()) - 1))
    # the rounded values are multiples of 1e-6 and each is within 5e-7 of the exact one,
    # so with 4 labels their sum is 1, 1 - 1e-6 or 1 + 1e-6
    assert worst <= SUM_TOL


def test_legacy_reply_has_exactly_the_prototype_shape(window_probs):
    reply = predict_reply(_batch(5), window_probs, _infos(), "r", 22050)
    legacy = legacy_reply(reply)
    assert set(legacy) == {"CNN Model", "Le-Net Model", "LSTM Model", "Feed-Forward Model"}
    assert list(legacy) == ["CNN Model", "Le-Net Model", "LSTM Model", "Feed-Forward Model"]
    for name, key in LEGACY_NAMES.items():
        entry = legacy[key]
        assert set(entry) == {"data", "metrics"}
        assert set(entry["data"]) == set(LABELS)
        assert set(entry["metrics"]) == {"accuracy", "loss"}
        for value in [*entry["data"].values(), *entry["metrics"].values()]:
            assert isinstance(value, str)
            float(value)                            # parseable
        assert sum(float(v) for v in entry["data"].values()) == pytest.approx(1, abs=1e-5)
        m = reply["models"][name]
        for g in LABELS:
            assert float(entry["data"][g]) == pytest.approx(m["probabilities"][g])
        assert float(entry["metrics"]["accuracy"]) == pytest.approx(m["metrics"]["accuracy"],
                                                                    abs=1e-4)
        assert float(entry["metrics"]["loss"]) == pytest.approx(m["metrics"]["log_loss"],
                                                                abs=1e-4)
    json.dumps(legacy)


def test_legacy_reply_without_log_loss_reports_zero(window_probs):
    infos = _infos()
    for info in infos.values():
        info.metrics = {"accuracy": 0.75}
    legacy = legacy_reply(predict_reply(_batch(5), window_probs, infos, "r", 22050))
    assert all(v["metrics"] == {"accuracy": "0.75", "loss": "0.0"} for v in legacy.values())


def test_models_reply():
    infos = _infos()
    r = models_reply(infos)
    assert r["labels"] == LABELS
    assert list(r["models"]) == NAMES
    for n in NAMES:
        m = r["models"][n]
        assert m["display_name"] == DISPLAY_NAMES[n]
        assert m["architecture"] == n
        assert m["tag"] == infos[n].tag
        assert FeatureSettings.from_dict(m["feature_settings"]) == S
    json.dumps(r)


def test_model_info_from_metadata():
    md = {"architecture": "cnn", "labels": LABELS, "feature_settings": S.to_dict(),
          "metrics": {"accuracy": 0.8}}
    info = ModelInfo.from_metadata(md, tag="genre-cnn:x")
    assert info.architecture == "cnn" and info.labels == LABELS and info.settings == S
    assert info.metrics == {"accuracy": 0.8} and info.tag == "genre-cnn:x"
    assert info.metadata is md
