"""The GPU fine-tuning script (train/experiments/finetune_musicnn.py) on a tiny real subset, on
CPU: its data round trip, its folds, the network at step 0 being exactly the frozen Keras
port, and a run of a few steps that writes weights build_backbone loads, changed only where it
trains."""

from __future__ import annotations

import json

import numpy as np
import pytest

from genre_detector.models.musicnn import BACKBONES, build_backbone
from genre_detector.models.musicnn_backbones import backbone_features
from train.experiments import finetune_data as fd
from train.experiments import finetune_musicnn as ft

# keras (TensorFlow backend) + numpy 2, as in tests/test_musicnn_port.py
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def tiny(data_dir, tmp_path_factory):
    """2 tracks per genre, their first served window each (18 windows), with parity outputs."""
    out = tmp_path_factory.mktemp("ftdata")
    fd.precompute(
        [str(data_dir / "emotify"), str(data_dir / "4q")],
        str(data_dir / "genre_map.csv"),
        out,
        limit_per_genre=2,
        workers=1,
        max_windows=1,
    )
    return out


def test_stored_windows_are_the_served_windows(data_dir, tiny):
    from genre_detector.audio.features import MUSICNN_SETTINGS, extract_windows

    data = fd.load(tiny)
    assert data["windows"].dtype == np.uint8 and data["windows"].shape[2:] == (96, fd.SPAN)
    assert data["genres"] == sorted(data["genres"]) and len(data["genres"]) == 9
    wins, owner = fd.eval_windows(data, [0])
    served = extract_windows(data_dir / str(data["rel"][0]), MUSICNN_SETTINGS).windows[:1]
    assert wins.shape == served.shape
    # quantization, plus the float16 of the log-mel cache (train.data.load_mels)
    assert np.abs(wins - served).max() <= fd.STEP / 2 + 5e-3
    assert set(data["parity"]) >= {"windows", "MSD_musicnn/penultimate", "MTT_musicnn/taggram"}


def test_folds_are_train_data_folds(data_dir):
    from train.data import artist_folds, list_tracks, read_genre_map

    tracks = list_tracks(
        [data_dir / "emotify", data_dir / "4q"], read_genre_map(data_dir / "genre_map.csv")
    )
    genres = sorted({t.genre for t in tracks})
    y = np.array([genres.index(t.genre) for t in tracks])
    groups = np.array([t.group for t in tracks])
    for (a_tr, a_te), (b_tr, b_te) in zip(
        ft.artist_folds(y, groups, 5, 0), artist_folds(tracks, 5, 0), strict=True
    ):
        assert np.array_equal(a_te, b_te) and np.array_equal(a_tr, b_tr)


def test_step0_is_the_frozen_port(tiny):
    data = fd.load(tiny)
    x, _ = fd.eval_windows(data)
    x = x[:4]
    model, features = ft.build_model(9, ft.Config())
    port = backbone_features((96, fd.WINDOW)).predict(x, verbose=0)
    assert np.abs(features.predict(x, verbose=0) - port).max() < 1e-5
    names = sorted({w.path.split("/")[0] for w in model.trainable_weights})
    assert names == sorted(
        ["genre"] + [f"{b}_{k}" for b in BACKBONES for k in ("midend3_conv", "dense")]
    )
    rng = np.random.default_rng(0)
    kernel = rng.normal(0, 0.1, (400, 9)).astype(np.float32)
    bias = rng.normal(0, 0.1, 9).astype(np.float32)
    model.get_layer("genre").set_weights([kernel, bias])
    z = port[:, ft._penultimate_columns(BACKBONES)] @ kernel + bias
    assert np.abs(model.predict(x, verbose=0) - np.exp(ft.log_softmax(z))).max() < 1e-5


@pytest.mark.slow
def test_tiny_run_trains_only_the_chosen_layers(tiny, tmp_path):
    out = tmp_path / "run"
    metrics = ft.main(["--data", str(tiny), "--out", str(out), "--tiny", "--max-folds", "1"])
    assert metrics["parity"]["ok"] and metrics["parity"]["max_abs_diff"] < 1e-5
    assert len(metrics["folds"]) == 1 and metrics["shipped"] == "refit"
    assert set(metrics["summary"]) == set(ft.METHODS)
    assert json.loads((out / "metrics.json").read_text())["refit"]["epochs"] >= 1
    with np.load(out / "oof.npz") as z:
        held = z["fold"] == 0
        assert np.isfinite(z["finetuned"][held]).all() and np.isnan(z["finetuned"][~held]).all()
    for name in BACKBONES:
        tuned = build_backbone(name, weights=False)
        tuned.load_weights(out / f"{name}.weights.h5")
        base = build_backbone(name)
        changed = set()
        for a, b in zip(tuned.weights, base.weights, strict=True):
            if not np.array_equal(np.asarray(a), np.asarray(b)):
                changed.add(a.path.split("/")[0])
        assert changed and changed <= {f"{name}_midend3_conv", f"{name}_dense"}
    with np.load(out / "genre_head.npz") as z:
        assert z["kernel"].shape == (400, 9) and list(z["backbones"]) == list(BACKBONES)
