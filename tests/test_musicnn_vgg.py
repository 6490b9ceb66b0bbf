"""The Keras port of musicnn's VGG taggers (genre_detector.models.musicnn_vgg) against the
original TF1 package, plus .keras and ONNX round trips.

tests/data/musicnn_vgg_reference.npz holds the original networks' taggram and pool5 maps on
real clips (made by train/ports/musicnn_vgg_reference.py in a separate venv with musicnn 0.1.0).
Here the same clips go through the project's own decoding and log-mel (as in
test_musicnn_port.py) and the ported networks; the reference embedding is computed from the
original pool5 in NumPy. Measured on the reference machine: taggram within 3.2e-7 and
embedding / pool5 within 4.2e-6 of the original (pool5 values up to ~4.2), so the 1e-4
bounds leave ~300x / ~25x headroom for other CPUs and BLAS summation orders.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from genre_detector.audio.decode import load_audio
from genre_detector.audio.features import MUSICNN_SETTINGS, log_mel
from genre_detector.models.musicnn import TAGS
from genre_detector.models.musicnn_vgg import (
    EMBEDDING_DIM,
    VGG_BACKBONES,
    build_vgg,
    tags,
    vgg_features,
)

REFERENCE = Path(__file__).parent / "data" / "musicnn_vgg_reference.npz"
TAGGRAM_ATOL = 1e-4  # measured <= 3.2e-7
EMBEDDING_ATOL = 1e-4  # measured <= 4.2e-6 (values up to ~4: batch-normalised, max-pooled)
ONNX_ATOL = 1e-4
PARAMS = 607_030  # per backbone, 1,284 of them BN moving statistics
PATCH = 187  # frames: musicnn's 3 s input, the only length the VGGs accept


def _reference() -> dict[str, np.ndarray]:
    with np.load(REFERENCE) as z:
        return {k: z[k] for k in z.files}


REF = _reference()
CLIPS = json.loads(str(REF["clips"]))


def _embedding(pool5: np.ndarray) -> np.ndarray:
    """The port's embedding from a pool5 map (batch, time, freq, 128), in NumPy."""
    return np.concatenate([pool5.max(axis=(1, 2)), pool5.mean(axis=(1, 2))], axis=1)


def _windows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 4, (n, 96, PATCH)).astype(np.float32)


@pytest.fixture(scope="module")
def vggs():
    return {name: build_vgg(name) for name in VGG_BACKBONES}


def test_vggs_build_with_shipped_weights(vggs):
    x = _windows(3, 0)
    for name, model in vggs.items():
        assert model.count_params() == PARAMS
        assert all(layer.name.startswith(f"{name}_") for layer in model.layers)
        out = model.predict(x, verbose=0)
        assert out["taggram"].shape == (3, len(tags(name))) == (3, 50)
        assert out["embedding"].shape == (3, EMBEDDING_DIM) == (3, 256)
        assert ((out["taggram"] > 0) & (out["taggram"] < 1)).all()
        np.testing.assert_allclose(out["embedding"], _embedding(out["pool5"]), atol=1e-6)
    assert tags("MSD_vgg") is TAGS["MSD_musicnn"] and tags("MTT_vgg") is TAGS["MTT_musicnn"]
    msd, mtt = (vggs[n].get_layer(f"{n}_logits").get_weights()[0] for n in VGG_BACKBONES)
    assert not np.allclose(msd, mtt)
    with pytest.raises(ValueError, match="187 frames"):
        build_vgg("MTT_vgg", weights=False, frames=300)
    with pytest.raises(ValueError, match="unknown"):
        build_vgg("MTT_musicnn", weights=False)


@pytest.mark.parametrize("clip", CLIPS)
def test_port_matches_original_vgg(clip, vggs, data_dir):
    path = data_dir / clip
    if not path.exists():
        pytest.skip(f"reference clip {clip} not found under {data_dir} (set GENRE_DATA)")
    wave = load_audio(path, sample_rate=16000)
    mel = log_mel(wave, MUSICNN_SETTINGS)  # (96, frames)
    n = mel.shape[1] // PATCH  # full patches, as batch_data
    patches = np.stack([mel[:, i * PATCH : (i + 1) * PATCH] for i in range(n)])
    for name, model in vggs.items():
        want_tags, want_pool5 = REF[f"{clip}|{name}|taggram"], REF[f"{clip}|{name}|pool5"]
        assert len(want_tags) == n, f"{clip}: {n} patches here, {len(want_tags)} in the original"
        out = model.predict(patches, verbose=0)
        d_tags = float(np.abs(out["taggram"] - want_tags).max())
        d_emb = float(np.abs(out["embedding"] - _embedding(want_pool5)).max())
        d_pool5 = float(np.abs(out["pool5"] - want_pool5).max())
        print(f"{clip} {name}: max |diff| taggram {d_tags:.2e}, embedding {d_emb:.2e}")
        assert d_tags <= TAGGRAM_ATOL, (clip, name, d_tags)
        assert d_emb <= EMBEDDING_ATOL, (clip, name, d_emb)
        assert d_pool5 <= EMBEDDING_ATOL, (clip, name, d_pool5)


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # keras+numpy 2
def test_vgg_saves_and_loads_as_keras(vggs, tmp_path):
    import keras

    x = _windows(2, 1)
    model = vggs["MTT_vgg"]
    model.save(tmp_path / "vgg.keras")
    reloaded = keras.saving.load_model(tmp_path / "vgg.keras")
    want, got = model.predict(x, verbose=0), reloaded.predict(x, verbose=0)
    assert set(got) == set(want)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])
    both = vgg_features()  # both backbones in one single-output model
    both.save(tmp_path / "both.keras")
    np.testing.assert_array_equal(
        keras.saving.load_model(tmp_path / "both.keras").predict(x, verbose=0),
        both.predict(x, verbose=0),
    )


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # keras+numpy 2
def test_vgg_pair_exports_to_onnx_and_agrees(tmp_path):
    import onnxruntime as ort

    from genre_detector.models.onnx_export import INPUT_NAME, export_onnx

    model = vgg_features()
    model.save(tmp_path / "vgg.keras")
    export_onnx(tmp_path / "vgg.keras", tmp_path / "vgg.onnx", MUSICNN_SETTINGS)
    session = ort.InferenceSession(str(tmp_path / "vgg.onnx"), providers=["CPUExecutionProvider"])
    for n, seed in ((5, 2), (1, 3)):  # dynamic batch
        x = _windows(n, seed)
        want = model(x, training=False).numpy()
        (got,) = session.run(None, {INPUT_NAME: x})
        assert got.shape == want.shape == (n, 2 * (EMBEDDING_DIM + 50))
        diff = float(np.abs(got - want).max())
        print(f"VGG pair ONNX vs Keras, batch {n}: max |diff| {diff:.2e}")
        assert diff <= ONNX_ATOL, diff


def test_embed_vgg_uses_the_served_windows_and_caches_them(tmp_path, monkeypatch, data_dir):
    """train.vgg_embed.embed_vgg: per track one row per musicnn window (at most 5, as
    served), [MSD emb, MSD tags, MTT emb, MTT tags]; a second call reads the cache."""
    import train.vgg_embed as vgg_embed
    from genre_detector.audio.features import window_starts

    monkeypatch.setattr(vgg_embed, "CACHE_DIR", tmp_path)
    s = MUSICNN_SETTINGS
    long = log_mel(load_audio(data_dir / CLIPS[0], sample_rate=s.sample_rate), s)
    short = long[:, :PATCH]  # exactly one window
    feats = vgg_embed.embed_vgg([long, short], ["long", "short"])
    assert [f.shape for f in feats] == [(5, 612), (1, 612)]
    assert len(window_starts(long.shape[1], s)) == 5
    pair = vgg_features()
    direct = pair.predict(long[:, :PATCH][None].astype(np.float32), verbose=0)[0]
    np.testing.assert_allclose(feats[0][0], direct, atol=1e-5)  # window 1 starts at frame 0
    msd_tags = feats[0][:, EMBEDDING_DIM : EMBEDDING_DIM + 50]
    assert ((msd_tags > 0) & (msd_tags < 1)).all()  # sigmoid tags in their place
    assert len(list(tmp_path.rglob("*.npy"))) == 2

    def fail(*a, **k):
        raise AssertionError("computed again instead of read from the cache")

    monkeypatch.setattr(
        vgg_embed, "_pair", lambda: type("M", (), {"weights": [], "predict": fail})()
    )
    monkeypatch.setattr(vgg_embed, "fingerprint", lambda model: next(tmp_path.iterdir()).name)
    again = vgg_embed.embed_vgg([long, short], ["long", "short"])
    np.testing.assert_array_equal(again[1], feats[1])
