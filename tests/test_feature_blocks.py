"""train/feature_blocks.py: the head's window features by name, cached on disk
(train/cache.py); and train/experiments/quantize_musicnn.py: int8 graphs of the shipped
musicnn backbones that stay close to fp32 on real audio."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from train import feature_blocks
from train.cache import disk_cached


class _Corpus:
    def __init__(self, windows):
        self.windows = windows

    def embeddings(self, model, s):
        return [np.full((n, 3), i, np.float32) for i, n in enumerate(self.windows)]

    def block(self, name, compute):
        return compute()


def test_block_names_accepts_known_blocks_and_names_the_valid_ones():
    assert feature_blocks.block_names("musicnn + vgg") == ["musicnn", "vgg"]
    assert feature_blocks.block_names("musicnn-int8+") == ["musicnn-int8"]
    for bad in ("", "mfcc", "musicnn+musicnn", "vgg+mfcc"):
        with pytest.raises(ValueError, match="valid: musicnn, musicnn-int8, vgg"):
            feature_blocks.block_names(bad)


def test_blocks_join_window_for_window_and_refuse_mismatched_windows(monkeypatch):
    monkeypatch.setitem(
        feature_blocks.BLOCKS,
        "vgg",
        lambda corpus, s: [np.full((n, 2), -1.0, np.float32) for n in corpus.windows],
    )
    out = feature_blocks.window_features(_Corpus([5, 1]), None, None, "musicnn+vgg")
    assert [f.shape for f in out] == [(5, 5), (1, 5)]
    np.testing.assert_array_equal(out[1], [[1, 1, 1, -1, -1]])
    monkeypatch.setitem(
        feature_blocks.BLOCKS, "vgg", lambda corpus, s: [np.zeros((2, 2)), np.zeros((1, 2))]
    )
    with pytest.raises(ValueError, match="track 0: the blocks have different window counts"):
        feature_blocks.window_features(_Corpus([5, 1]), None, None, "musicnn+vgg")


def test_disk_cache_computes_only_what_is_missing(tmp_path):
    calls = []

    def compute(idx):
        calls.append(list(idx))
        return [np.arange(4, dtype=np.float64).reshape(2, 2) + i for i in idx]

    first = disk_cached(tmp_path, ["a", "b", "c"], compute)
    again = disk_cached(tmp_path, ["c", "d", "a"], compute)
    assert calls == [[0, 1, 2], [1]]  # the second call computed only "d"
    assert all(f.dtype == np.float32 for f in first)
    np.testing.assert_array_equal(again[0], first[2])
    np.testing.assert_array_equal(again[1], np.arange(4).reshape(2, 2) + 1)
    assert not list(tmp_path.glob("*.tmp.npy"))
    # a generator is saved as it yields; one that yields too few fails after saving those
    short = tmp_path / "short"

    def gen(idx):
        yield from (np.full((1, 2), i, np.float32) for i in idx[:-1])

    with pytest.raises(ValueError):
        disk_cached(short, ["x", "y", "z"], gen)
    assert len(list(short.glob("*.npy"))) == 2


def test_int8_graphs_are_quantized_and_stay_close_to_fp32(tmp_path, data_dir):
    import onnx

    from train.experiments import quantize_musicnn as q

    windows = q.calibration_windows(Path(data_dir))
    assert windows.shape[1:] == (96, 187) and len(windows) >= 50
    static, dynamic = tmp_path / "s.onnx", tmp_path / "d.onnx"
    q.quantize(q.FP32, windows[::10], static, dynamic)
    ops = {p: {n.op_type for n in onnx.load(str(p)).graph.node} for p in (static, dynamic)}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops[static]
    assert "ConvInteger" in ops[dynamic] and "Conv" not in ops[dynamic]
    clip = [np.concatenate(list(windows[20:25]), axis=1)]  # 5 real windows, one track
    ref = next(feature_blocks.onnx_window_features(q.FP32, clip))
    assert ref.shape == (5, 500)
    for path in (static, dynamic):
        got = next(feature_blocks.onnx_window_features(path, clip))
        assert got.shape == ref.shape
        assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 0.2
        assert np.linalg.norm(got - ref) > 0  # really another graph
    cost = q.cost({"fp32": q.FP32, "int8": dynamic}, threads=1, repeats=2)
    assert all(v["cpu"] > 0 and v["wall"] > 0 for v in cost.values())


def test_a_block_is_computed_once_per_corpus_not_once_per_fold():
    from train.trainer import Corpus

    corpus, calls = Corpus([]), []

    def compute():
        calls.append(1)
        return [np.zeros((1, 2), np.float32)]

    first = corpus.block("vgg", compute)
    assert corpus.block("vgg", compute) is first and len(calls) == 1
    corpus.block("musicnn-int8", compute)
    assert len(calls) == 2
