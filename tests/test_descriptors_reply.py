"""The `descriptors` reply contract (docs/api.md): score_track fills tempo and key whatever the
models, every rendering shows the same block, and the documented example has its shape."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from genre_detector.audio.features import MUSICNN_SETTINGS, FeatureSettings, extract_feature_sets
from genre_detector.audio.tonality import PITCH_CLASSES
from genre_detector.batch.rows import row_from_reply, row_from_result
from genre_detector.runtime.store import ModelInfo
from genre_detector.scoring.track_result import score_track
from genre_detector.serve.replies import legacy_reply, predict_reply
from tests.expected import NINE
from train.evals.synthetic_audio import drum_loop, progression

S, M = FeatureSettings(), MUSICNN_SETTINGS
API = Path(__file__).resolve().parents[1] / "docs" / "api.md"


@pytest.fixture(scope="module")
def batches():
    """A 20 s song in A minor at 96 BPM, windows for both feature sets."""
    wave = progression("A", "minor", 96.0, seconds=20) + 0.5 * drum_loop(96.0, seconds=20)
    return extract_feature_sets((wave.astype(np.float32), 22050), [S, M])


def _infos():
    return {
        "cnn": ModelInfo("cnn", list(NINE), S, {"accuracy": 0.6}, tag="genre-cnn:a"),
        "lstm": ModelInfo("lstm", list(NINE), M, {"accuracy": 0.5}, tag="genre-lstm:b"),
    }


MUSICNN = Path(__file__).resolve().parents[1] / "models" / "musicnn"


@pytest.fixture(scope="module")
def musicnn():
    """The shipped musicnn model as the service runs it (ONNX graph, genre and mood heads)."""
    from genre_detector.models.mood_heads import MoodHeads
    from genre_detector.models.track_head import TrackHead
    from genre_detector.runtime.onnx_predictor import OnnxPredictor

    info = ModelInfo.from_metadata(json.loads((MUSICNN / "card.json").read_text()), "m:1")
    info.head = TrackHead.load(MUSICNN / "head.npz")
    info.moods = MoodHeads.load(MUSICNN / "moods.npz")
    return OnnxPredictor(str(MUSICNN / "model.onnx"), info, threads=1)


def _probs(n, seed):
    z = np.random.default_rng(seed).normal(size=(n, 9))
    return (np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)).astype(np.float32)


def _documented() -> dict:
    line = re.search(r'^"descriptors": (\{.*\})$', API.read_text(), re.M)
    assert line, "docs/api.md shows the descriptors block on one line"
    return json.loads(line.group(1))


def _shape(x):
    """The keys and value types of a reply block (floats and ints alike: numbers)."""
    if isinstance(x, dict):
        return {k: _shape(v) for k, v in x.items()}
    return "number" if isinstance(x, (int, float)) and not isinstance(x, bool) else type(x).__name__


def test_documented_block_is_what_the_reply_renders(batches, musicnn):
    infos = {**_infos(), "musicnn": musicnn.info}
    outs = {"cnn": _probs(len(batches[S].windows), 1), "musicnn": musicnn(batches[M].windows)}
    r = score_track(batches, outs, infos, None)
    block = predict_reply(r, "id", infos, None)["descriptors"]
    documented = _documented()
    shape, doc = _shape(block), _shape(documented)
    for name in ("mood", "gems", "voice", "instruments"):  # issue 32's blocks, key by key
        assert shape[name] == doc[name], name
    assert block["mood"]["quadrant"] == max(
        block["mood"]["probabilities"], key=block["mood"]["probabilities"].get
    )
    assert all(0 <= v <= 1 for v in [*block["gems"].values(), *block["voice"].values()])
    assert shape["key"] == doc["key"]
    assert shape["tempo"] == {**doc["tempo"], "alternative_bpm": shape["tempo"]["alternative_bpm"]}
    assert shape["tempo"]["alternative_bpm"] in ("number", "NoneType")  # null: no close octave
    assert documented["key"]["tonic"] in PITCH_CLASSES
    assert (block["key"]["tonic"], block["key"]["mode"], block["key"]["camelot"]) == (
        "A",
        "minor",
        "8A",
    )
    assert abs(block["tempo"]["bpm"] / 96 - 1) <= 0.02


def test_tempo_and_key_whatever_the_models(batches):
    infos = _infos()
    only_cnn = score_track(batches, {"cnn": _probs(len(batches[S].windows), 1)}, infos, None)
    only_lstm = score_track(batches, {"lstm": _probs(len(batches[M].windows), 2)}, infos, None)
    assert only_cnn.descriptors == only_lstm.descriptors is not None
    assert only_cnn.descriptors.mood is None  # no musicnn: no mood, GEMS, voice, instruments
    block = predict_reply(only_cnn, "id", infos, None)["descriptors"]
    assert [block[k] for k in ("mood", "gems", "voice", "instruments")] == [None] * 4


def test_mood_with_musicnn_whatever_the_others(batches, musicnn):
    infos = {**_infos(), "musicnn": musicnn.info}
    out = musicnn(batches[M].windows)
    alone = score_track(batches, {"musicnn": out}, infos, None)
    both = score_track(batches, {"musicnn": out, "lstm": _probs(len(out), 2)}, infos, None)
    assert alone.descriptors == both.descriptors and alone.descriptors.mood is not None
    # per window: its quadrant, arousal and valence, from the musicnn window nearest
    assert all(w.mood in ("Q1", "Q2", "Q3", "Q4") for w in alone.timeline)
    # the windows' logits average to the track's (linear heads): their mean arousal logit is
    # the track's, which is what `catalog reindex` computes from the pooled features
    heads = musicnn.info.moods
    z = heads.logits(alone.embedding)
    d = heads.n_features
    per = out.astype(np.float64) @ heads.kernel[:d] + alone.embedding[d:] @ heads.kernel[d:]
    assert np.allclose((per + heads.bias).mean(axis=0), z, atol=1e-4)


def test_timeline_windows_carry_tempo_and_key(batches):
    infos = _infos()
    r = score_track(batches, {"cnn": _probs(len(batches[S].windows), 1)}, infos, None)
    reply = predict_reply(r, "id", infos, None)
    assert all(abs(w["bpm"] / 96 - 1) <= 0.02 for w in reply["timeline"])
    assert {w["key"] for w in reply["timeline"]} == {"A minor"}
    assert row_from_result("x.mp3", r) == row_from_reply("x.mp3", reply)


def test_windows_cut_from_stored_mels_have_no_descriptors(batches):
    """train.evaluate cuts windows from cached log-mels: no audio, no tempo or key."""
    from dataclasses import replace

    bare = {s: replace(b, analysis=None) for s, b in batches.items()}
    infos = _infos()
    r = score_track(bare, {"cnn": _probs(len(bare[S].windows), 1)}, infos, None)
    assert r.descriptors is None
    assert predict_reply(r, "id", infos, None)["descriptors"] == dict.fromkeys(
        ("tempo", "key", "mood", "gems", "voice", "instruments")
    )
    assert r.timeline[0].bpm is None and r.timeline[0].key is None


def test_the_prototype_reply_keeps_its_four_keys(batches):
    from genre_detector.models.families import research_names

    names = research_names()
    infos = {
        n: ModelInfo(n, list(NINE), S, {"accuracy": 0.5, "log_loss": 1.0}, tag=f"genre-{n}:x")
        for n in names
    }
    outs = {n: _probs(len(batches[S].windows), i) for i, n in enumerate(names)}
    reply = predict_reply(score_track(batches, outs, infos, None), "id", infos, None)
    assert "descriptors" in reply
    assert set(legacy_reply(reply)) == {"CNN Model", "Le-Net Model", "LSTM Model",
                                        "Feed-Forward Model"}  # fmt: skip


def test_the_tagger_writes_the_block_as_columns(batches, musicnn):
    from genre_detector.batch.writers import DESCRIPTOR_COLUMNS, columns, flat_row, parquet_schema

    infos = {**_infos(), "musicnn": musicnn.info}
    outs = {"cnn": _probs(len(batches[S].windows), 1), "musicnn": musicnn(batches[M].windows)}
    r = score_track(batches, outs, infos, None)
    row = row_from_result("x.mp3", r)
    cols = columns(["cnn", "musicnn"], list(NINE))
    flat = flat_row(row, cols)
    block = r.descriptors.as_dict()
    want = {}
    for b, fields in block.items():
        for k, v in fields.items():
            want.update({f"{b}_{q}": p for q, p in v.items()} if k == "probabilities" else
                        {f"{b}_{k}": v})  # fmt: skip
    assert {c: flat[c] for c in DESCRIPTOR_COLUMNS} == want
    assert flat["mood_quadrant"] in ("Q1", "Q2", "Q3", "Q4") and 0 <= flat["gems_calmness"] <= 1
    assert str(parquet_schema(cols).field("voice_instrumental").type) == "double"
    assert flat["key_camelot"] == "8A" and abs(flat["tempo_bpm"] / 96 - 1) <= 0.02
    schema = parquet_schema(cols)
    assert str(schema.field("tempo_bpm").type) == "double"
    assert str(schema.field("key_tonic").type) == "string"
    from genre_detector.batch.rows import error_row

    assert all(flat_row(error_row("y.mp3", "empty", "0 bytes"), cols)[c] is None
               for c in DESCRIPTOR_COLUMNS)  # fmt: skip
