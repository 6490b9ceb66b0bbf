"""genre_detector.scoring.pooling and serve.replies: window probabilities -> verdicts, replies."""

from __future__ import annotations

import json

import numpy as np
import pytest

from genre_detector.audio.features import (
    MUSICNN_SETTINGS,
    FeatureSettings,
    WindowBatch,
    extract_feature_sets,
)
from genre_detector.models.calibration import Calibration
from genre_detector.models.families import LEGACY_NAMES, display_name, family, model_names
from genre_detector.runtime.store import ModelInfo
from genre_detector.scoring.pooling import (
    BETWEEN_RATIO,
    between_genres,
    nearest_windows,
    timeline,
    track_probabilities,
)
from genre_detector.scoring.track_result import Verdict, score_track
from genre_detector.serve.replies import legacy_reply, models_reply, predict_reply
from tests.expected import NINE, PREDICT_KEYS

LABELS = NINE
NAMES = list(model_names())  # the five families, registry order
RESEARCH = ["feedforward", "lenet", "cnn", "lstm"]
S, M = FeatureSettings(), MUSICNN_SETTINGS
PROTOTYPE_KEYS = ["CNN Model", "Le-Net Model", "LSTM Model", "Feed-Forward Model"]
SUM_TOL = 1e-9


def _probs(rng, n: int, k: int = len(LABELS), sharp: float = 1.0) -> np.ndarray:
    logits = sharp * rng.standard_normal((n, k))
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def batches() -> dict[FeatureSettings, WindowBatch]:
    """The real windows of a 9.5 s clip: 5 research windows (1.49 s hops), 3 musicnn ones."""
    wave = (0.1 * np.random.default_rng(0).standard_normal(int(9.5 * 22050))).astype(np.float32)
    out = extract_feature_sets((wave, 22050), [S, M])
    assert (len(out[S].windows), len(out[M].windows)) == (5, 3)
    return out


# The windows of that 9.5 s clip, worked out by hand (not by the feature code).
# Research grid: 209475 samples -> 1 + 209475 // 1024 = 205 frames; windows of 64 frames
# every 32 start at 0, 32, 64, 96, then 128 is nudged to the last start 205 - 64 = 141;
# one frame is 1024 / 22050 s, so the starts are 0, 1.486, 2.972, 4.458, 6.548 s and the ends
# 64 frames later (the last one cut at the clip's end, 9.5 s).
GRID_START = [0.0, 1.486, 2.972, 4.458, 6.548]
GRID_END = [2.972, 4.458, 5.944, 7.43, 9.5]
# musicnn: 152000 samples at 16 kHz -> 1 + 152000 // 256 = 594 frames; 187-frame windows
# every 187 start at 0, 187, then 374 is nudged to 594 - 187 = 407; a frame is 16 ms.
MUSICNN_START = [0.0, 2.992, 6.512]
MUSICNN_END = [2.992, 5.984, 9.5]


def _reply(batches, window_outputs, infos, calibration, request_id) -> dict:
    """The /predict reply as the service builds it: score_track, then the rendering."""
    result = score_track(batches, window_outputs, infos, calibration)
    return predict_reply(result, request_id, infos, calibration)


def _infos(names=NAMES) -> dict[str, ModelInfo]:
    return {
        n: ModelInfo(
            architecture=n,
            labels=list(LABELS),
            settings=family(n).settings,
            metrics={
                "accuracy": 0.5 + 0.1 * i,
                "log_loss": 1.2 - 0.1 * i,
                "macro_f1": 0.4 + 0.05 * i,
            },
            tag=f"genre-{n}:v{i}abc",
        )
        for i, n in enumerate(names)
    }


def _window_probs(rng, batches, names=NAMES, sharp: float = 2.0) -> dict[str, np.ndarray]:
    return {n: _probs(rng, len(batches[family(n).settings].windows), sharp=sharp) for n in names}


@pytest.fixture
def window_probs(batches) -> dict[str, np.ndarray]:
    return _window_probs(np.random.default_rng(42), batches)


def _values(d: dict) -> np.ndarray:
    return np.array([d[g] for g in LABELS])


# ----------------------------------------------------------------------------- pooling
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


def test_verdict_with_top3():
    p = np.array([0.05, 0.30, 0.02, 0.10, 0.03, 0.35, 0.05, 0.06, 0.04])
    v = Verdict.of(p, LABELS).as_dict()
    assert v["top_genre"] == "jazz"
    assert v["top_probability"] == pytest.approx(0.35)
    assert list(v["probabilities"]) == LABELS
    assert all(isinstance(x, float) for x in v["probabilities"].values())
    assert [t["genre"] for t in v["top3"]] == ["jazz", "classical", "electronic"]
    assert [t["probability"] for t in v["top3"]] == pytest.approx([0.35, 0.30, 0.10])
    json.dumps(v)
    # float32 drift is renormalised, so the reply always sums to 1
    v = Verdict.of(np.float32(1.01) * p.astype(np.float32), LABELS).as_dict()
    assert abs(sum(v["probabilities"].values()) - 1) <= SUM_TOL
    assert v["top3"][0] == {"genre": "jazz", "probability": v["top_probability"]}


def test_between_genres():
    base = np.full(len(LABELS), 0.01)
    near = base.copy()
    near[[6, 1]] = [0.5, 0.3]  # runner-up 0.6 x the top: between the two
    assert between_genres(near / near.sum(), LABELS) == ["pop-rock", "classical"]
    clear = base.copy()
    clear[[6, 1]] = [0.7, 0.2]  # 0.29 x: one genre
    assert between_genres(clear / clear.sum(), LABELS) == []
    edge = base.copy()
    edge[[3, 0]] = [0.4, 0.4 * BETWEEN_RATIO]  # exactly the ratio counts as between
    assert between_genres(edge, LABELS) == ["electronic", "blues"]


def test_nearest_windows():
    ref = np.array([1.0, 2.5, 4.0, 5.5, 7.0])
    centers = np.array([1.5, 4.5, 7.5])
    np.testing.assert_array_equal(nearest_windows(ref, centers), [0, 0, 1, 1, 2])
    np.testing.assert_array_equal(nearest_windows(centers, centers), [0, 1, 2])


def _mean(d: dict) -> np.ndarray:
    return np.mean(list(d.values()), axis=0)


def test_timeline_matches_the_windows(batches):
    """Two models on the same 5 windows, 3 genres: each window's combined (here: mean)
    probabilities, its top genre and the window's times, all worked out by hand."""
    b = batches[S]
    three = ["blues", "classical", "jazz"]
    cnn = np.array(
        [[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8], [0.5, 0.4, 0.1], [0.3, 0.3, 0.4]]
    )
    lstm = np.array(
        [[0.4, 0.5, 0.1], [0.2, 0.5, 0.3], [0.3, 0.1, 0.6], [0.1, 0.2, 0.7], [0.1, 0.1, 0.8]]
    )
    spans = {n: (b.start_s, b.end_s) for n in ("cnn", "lstm")}
    tl = timeline({"cnn": cnn, "lstm": lstm}, spans, _mean, three)
    # means: [.5 .4 .1] [.2 .6 .2] [.2 .1 .7] [.3 .3 .4] [.2 .2 .6]
    assert [e["top_genre"] for e in tl] == ["blues", "classical", "jazz", "jazz", "jazz"]
    assert [e["probability"] for e in tl] == pytest.approx([0.5, 0.6, 0.7, 0.4, 0.6], abs=1e-9)
    assert [e["start_s"] for e in tl] == GRID_START
    assert [e["end_s"] for e in tl] == GRID_END
    assert all(set(e) == {"start_s", "end_s", "top_genre", "probability"} for e in tl)


def test_timeline_on_the_finest_grid_aligns_coarser_windows(batches):
    """musicnn's 3 windows are matched to the research grid's 5 by nearest center."""
    b, m = batches[S], batches[M]
    one_hot = np.eye(len(LABELS), dtype=np.float32)
    probs = {
        "cnn": np.full((5, len(LABELS)), 1 / len(LABELS), np.float32),
        "musicnn": one_hot[[0, 5, 8]] * 0.9 + 0.1 / len(LABELS),
    }
    spans = {"cnn": (b.start_s, b.end_s), "musicnn": (m.start_s, m.end_s)}
    seen = []
    tl = timeline(probs, spans, lambda d: seen.append(d) or _mean(d), LABELS)
    assert [e["start_s"] for e in tl] == GRID_START
    # centers: research 1.486, 2.972, 4.458, 5.944, 8.024 s; musicnn 1.496, 4.488, 8.006 s.
    # 2.972 is 1.476 from the first musicnn center and 1.516 from the second; 5.944 is 1.456
    # from the second and 2.062 from the third: the map is 0, 0, 1, 1, 2.
    want = [0, 0, 1, 1, 2]
    np.testing.assert_array_equal(seen[0]["musicnn"], probs["musicnn"][want])
    np.testing.assert_array_equal(seen[0]["cnn"], probs["cnn"])
    assert [e["top_genre"] for e in tl] == ["blues", "blues", "jazz", "jazz", "rnb"]


def test_timeline_follows_a_genre_change(batches):
    b = batches[S]
    w = np.full((5, len(LABELS)), 0.01, np.float32)
    w[:3, 0], w[3:, 5] = 0.92, 0.92
    spans = {"cnn": (b.start_s, b.end_s), "lstm": (b.start_s, b.end_s)}
    tl = timeline({"cnn": w, "lstm": w}, spans, Calibration(LABELS).ensemble, LABELS)
    assert [e["top_genre"] for e in tl] == ["blues"] * 3 + ["jazz"] * 2


# ----------------------------------------------------------------------------- replies
def test_predict_reply_shape(batches, window_probs):
    infos = _infos()
    reply = _reply(batches, window_probs, infos, None, "abc123")
    json.dumps(reply)  # JSON-serialisable as is
    assert PREDICT_KEYS <= set(reply)
    assert reply["request_id"] == "abc123"
    assert reply["duration_s"] == pytest.approx(9.5, abs=1e-3)
    assert reply["sample_rate"] == 22050  # the finest window grid's
    assert reply["n_windows"] == 5
    assert reply["labels"] == LABELS
    assert list(reply["models"]) == NAMES
    raw = {}
    for name in NAMES:
        m = reply["models"][name]
        assert {
            "display_name",
            "tag",
            "probabilities",
            "top_genre",
            "top_probability",
            "top3",
            "metrics",
        } <= set(m)
        assert m["display_name"] == display_name(name)
        assert m["tag"] == infos[name].tag
        assert m["metrics"] == infos[name].metrics
        assert list(m["probabilities"]) == LABELS
        assert abs(sum(m["probabilities"].values()) - 1) <= SUM_TOL
        w = window_probs[name].astype(np.float64)
        raw[name] = w.mean(axis=0) / w.mean(axis=0).sum()  # "mean" pooling, done here
        # no calibration: a model's probabilities are its own, unchanged
        np.testing.assert_allclose(_values(m["probabilities"]), raw[name], atol=1e-6)
        assert m["top_genre"] == LABELS[int(np.argmax(raw[name]))]
        assert m["top_probability"] == pytest.approx(raw[name].max(), abs=1e-6)
        assert [t["genre"] for t in m["top3"]] == [LABELS[i] for i in np.argsort(-raw[name])[:3]]
    e = reply["ensemble"]
    assert {
        "probabilities",
        "top_genre",
        "top_probability",
        "top3",
        "agreeing_models",
        "n_models",
        "models",
        "between_genres",
        "calibrated",
        "metrics",
    } <= set(e)
    assert abs(sum(e["probabilities"].values()) - 1) <= SUM_TOL
    # without a calibration: the normalised geometric mean of the models
    geo = np.prod([raw[n] for n in NAMES], axis=0) ** (1 / len(NAMES))
    pooled = geo / geo.sum()
    np.testing.assert_allclose(_values(e["probabilities"]), pooled, atol=1e-6)
    top, second = np.argsort(-pooled)[:2]
    assert e["top_genre"] == LABELS[top]
    assert e["top3"][0]["genre"] == e["top_genre"]
    # between genres: the runner-up has at least half the top genre's probability
    near = pooled[second] >= 0.5 * pooled[top]
    assert e["between_genres"] == ([LABELS[top], LABELS[second]] if near else [])
    assert e["calibrated"] is False and e["metrics"] == {}
    assert e["n_models"] == 5 and e["models"] == NAMES
    agreeing = sum(int(np.argmax(raw[n])) == top for n in NAMES)
    assert e["agreeing_models"] == agreeing
    assert len(reply["timeline"]) == 5
    assert [t["start_s"] for t in reply["timeline"]] == GRID_START
    assert reply["model_tags"] == {n: infos[n].tag for n in NAMES}


# Top values of a model's windows, varying from window to window, each list averaging 0.8.
TOPS = {5: [0.9, 0.7, 0.8, 0.9, 0.7], 3: [0.9, 0.7, 0.8]}


def _two_level(n_windows: int, top: int) -> np.ndarray:
    """Windows whose mean is 0.8 on genre `top` and 0.025 on each of the 8 others (a ratio
    of 32), each window's own split differing."""
    tops = np.array(TOPS[n_windows])
    w = np.repeat(((1 - tops) / 8)[:, None], len(LABELS), axis=1)
    w[:, top] = tops
    return w.astype(np.float32)


def test_predict_reply_is_calibrated_when_the_calibration_covers_the_models(batches):
    """Every number worked out by hand. A model's track probabilities are 0.8 on its genre and
    0.025 on the others (a ratio of 32 = 2^5). A temperature T turns them into p^(1/T), so
    the ratio becomes 32^(1/T); the log-linear ensemble gives a genre 32 to the power of the
    summed weights of the models whose genre it is, against 1 for a genre of no model."""
    blues, jazz = LABELS.index("blues"), LABELS.index("jazz")
    probs = {n: _two_level(5, blues) for n in RESEARCH}
    probs["musicnn"] = _two_level(3, jazz)
    temperatures = {"feedforward": 1.0, "lenet": 1.25, "cnn": 5 / 3, "lstm": 2.5, "musicnn": 5.0}
    weights = {"feedforward": 0.1, "lenet": 0.2, "cnn": 0.3, "lstm": 0.4, "musicnn": 0.6}
    cal = Calibration(
        LABELS, temperatures, weights, metrics={"ensemble": {"accuracy": 0.7, "ece": 0.05}}
    )
    reply = _reply(batches, probs, _infos(), cal, "r")
    # ratio 32^(1/T) = 32, 16, 8, 4, 2 against 8 genres at 1: top = ratio / (ratio + 8)
    want_top = {"feedforward": 0.8, "lenet": 2 / 3, "cnn": 0.5, "lstm": 1 / 3, "musicnn": 0.2}
    for n, top in want_top.items():
        p = _values(reply["models"][n]["probabilities"])
        genre = jazz if n == "musicnn" else blues
        want = np.full(len(LABELS), (1 - top) / 8)
        want[genre] = top
        np.testing.assert_allclose(p, want, atol=1e-6, err_msg=n)
        assert reply["models"][n]["top_genre"] == LABELS[genre]
    # ensemble: blues 32^(0.1 + 0.2 + 0.3 + 0.4) = 32, jazz 32^0.6 = 8, 7 others 1 (sum 47)
    e = reply["ensemble"]
    want = np.full(len(LABELS), 1 / 47)
    want[blues], want[jazz] = 32 / 47, 8 / 47
    np.testing.assert_allclose(_values(e["probabilities"]), want, atol=1e-6)
    assert e["top_genre"] == "blues" and e["between_genres"] == []  # 8 < 32 / 2
    assert e["calibrated"] is True and e["metrics"] == {"accuracy": 0.7, "ece": 0.05}
    assert e["agreeing_models"] == 4
    # a subset: its members' own weights (lenet 0.2: blues 2; musicnn 0.6: jazz 8; 7 x 1),
    # but not the calibrated ensemble (no metrics claimed)
    sub = {n: probs[n] for n in ("lenet", "musicnn")}
    e = _reply(batches, sub, _infos(), cal, "r")["ensemble"]
    want = np.full(len(LABELS), 1 / 17)
    want[blues], want[jazz] = 2 / 17, 8 / 17
    np.testing.assert_allclose(_values(e["probabilities"]), want, atol=1e-6)
    assert e["top_genre"] == "jazz"
    assert e["calibrated"] is False and e["metrics"] == {} and e["n_models"] == 2


def test_predict_reply_agreement_counts(batches):
    infos = _infos()
    blues = np.full((5, len(LABELS)), 0.3 / 8, np.float32)
    blues[:, 0] = 0.7
    jazz = np.full((5, len(LABELS)), 0.3 / 8, np.float32)
    jazz[:, 5] = 0.7
    probs = {"feedforward": blues, "lenet": blues, "cnn": blues, "lstm": jazz, "musicnn": jazz[:3]}
    e = _reply(batches, probs, infos, None, "r")["ensemble"]
    assert e["top_genre"] == "blues"
    assert e["agreeing_models"] == 3 and e["n_models"] == 5


def test_predict_reply_for_a_subset_of_models(batches, window_probs):
    sub = {n: window_probs[n] for n in ("cnn", "lstm")}
    reply = _reply(batches, sub, _infos(), None, "r")
    assert list(reply["models"]) == ["cnn", "lstm"]
    assert reply["ensemble"]["n_models"] == 2
    assert set(reply["model_tags"]) == {"cnn", "lstm"}
    # musicnn alone: its own (coarser) grid and sample rate
    alone = _reply({M: batches[M]}, {"musicnn": window_probs["musicnn"]}, _infos(), None, "r")
    assert alone["sample_rate"] == 16000 and alone["n_windows"] == 3
    assert [t["start_s"] for t in alone["timeline"]] == MUSICNN_START
    assert [t["end_s"] for t in alone["timeline"]] == MUSICNN_END
    assert alone["duration_s"] == pytest.approx(9.5, abs=1e-3)


def test_probabilities_sum_to_one_over_many_random_replies(batches):
    rng = np.random.default_rng(7)
    infos = _infos()
    worst = 0.0
    for _ in range(200):
        reply = _reply(batches, _window_probs(rng, batches, sharp=3.0), infos, None, "r")
        for v in [
            *(m["probabilities"] for m in reply["models"].values()),
            reply["ensemble"]["probabilities"],
        ]:
            worst = max(worst, abs(sum(v.values()) - 1))
    assert worst <= SUM_TOL


def test_legacy_reply_has_exactly_the_prototype_shape(batches, window_probs):
    reply = _reply(batches, window_probs, _infos(), None, "r")
    legacy = legacy_reply(reply)  # musicnn is in the reply, not here
    assert list(legacy) == PROTOTYPE_KEYS  # the prototype's keys, in its order
    for name, key in LEGACY_NAMES.items():
        entry = legacy[key]
        assert set(entry) == {"data", "metrics"}
        assert list(entry["data"]) == LABELS
        assert set(entry["metrics"]) == {"accuracy", "loss"}
        for value in [*entry["data"].values(), *entry["metrics"].values()]:
            assert isinstance(value, str)
            float(value)  # parseable
        assert sum(float(v) for v in entry["data"].values()) == pytest.approx(1, abs=1e-5)
        m = reply["models"][name]
        for g in LABELS:
            assert float(entry["data"][g]) == pytest.approx(m["probabilities"][g])
        assert float(entry["metrics"]["accuracy"]) == pytest.approx(
            m["metrics"]["accuracy"], abs=1e-4
        )
        assert float(entry["metrics"]["loss"]) == pytest.approx(m["metrics"]["log_loss"], abs=1e-4)
    json.dumps(legacy)


def test_legacy_reply_without_log_loss_reports_zero(batches, window_probs):
    infos = _infos()
    for info in infos.values():
        info.metrics = {"accuracy": 0.75}
    legacy = legacy_reply(_reply(batches, window_probs, infos, None, "r"))
    assert all(v["metrics"] == {"accuracy": "0.75", "loss": "0.0"} for v in legacy.values())


def test_models_reply():
    infos = _infos()
    r = models_reply(infos)
    assert r["labels"] == LABELS
    assert list(r["models"]) == NAMES
    assert "ensemble" not in r
    for n in NAMES:
        m = r["models"][n]
        assert m["display_name"] == display_name(n)
        assert m["architecture"] == n
        assert m["tag"] == infos[n].tag
        assert FeatureSettings.from_dict(m["feature_settings"]) == family(n).settings
    assert FeatureSettings.from_dict(r["models"]["musicnn"]["feature_settings"]) == M
    json.dumps(r)
    cal = Calibration(
        LABELS, {"cnn": 1.3}, {"cnn": 0.9, "musicnn": 0.4}, {"ensemble": {"accuracy": 0.7}}
    )
    r = models_reply(infos, cal)
    assert r["ensemble"] == {
        "weights": {"cnn": 0.9, "musicnn": 0.4},
        "temperatures": {"cnn": 1.3},
        "metrics": {"accuracy": 0.7},
    }
    json.dumps(r)


def test_model_info_from_metadata():
    md = {
        "architecture": "cnn",
        "labels": LABELS,
        "feature_settings": S.to_dict(),
        "metrics": {"accuracy": 0.8},
    }
    info = ModelInfo.from_metadata(md, tag="genre-cnn:x")
    assert info.architecture == "cnn" and info.labels == LABELS and info.settings == S
    assert info.metrics == {"accuracy": 0.8} and info.tag == "genre-cnn:x"
    assert info.metadata is md
    # metadata from before feature scales existed reads as the dB scale
    old = {**md, "feature_settings": {k: v for k, v in S.to_dict().items() if k != "scale"}}
    assert ModelInfo.from_metadata(old).settings == S
