"""The Keras port of musicnn (genre_detector.models.musicnn) against the original TF1 package.

tests/data/musicnn_reference.npz holds the original networks' outputs on real clips (made by
train/ports/musicnn_reference.py in a separate venv with musicnn 0.1.0). Here the same clips go
through the project's own decoding and log-mel and the ported networks. Measured on the
reference machine: taggram within 1.1e-6 and penultimate within 4.6e-6 of the original
(our 16 kHz waveform and log-mel equal librosa's bit for bit), so the bounds below leave
~100x / ~20x headroom for other CPUs and BLAS summation orders.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from genre_detector.audio.decode import load_audio
from genre_detector.audio.features import MUSICNN_SETTINGS, log_mel
from genre_detector.models.musicnn import BACKBONES, TAGS, build_backbone

REFERENCE = Path(__file__).parent / "data" / "musicnn_reference.npz"
TAGGRAM_ATOL = 1e-4  # measured <= 1.1e-6
PENULTIMATE_ATOL = 1e-4  # measured <= 4.6e-6 (values are O(1): batch-normalised units)
PARAMS = 792_079  # per backbone, 4,920 of them BN moving statistics
PATCH = 187  # frames: musicnn's 3 s input


def _reference() -> dict[str, np.ndarray]:
    with np.load(REFERENCE) as z:
        return {k: z[k] for k in z.files}


REF = _reference()
CLIPS = json.loads(str(REF["clips"]))


@pytest.fixture(scope="module")
def backbones():
    return {name: build_backbone(name) for name in BACKBONES}


def test_backbones_build_with_shipped_weights(backbones):
    x = np.random.default_rng(0).uniform(0, 4, (3, 96, PATCH)).astype(np.float32)
    for name, model in backbones.items():
        assert model.count_params() == PARAMS
        assert all(layer.name.startswith(f"{name}_") for layer in model.layers)
        out = model.predict(x, verbose=0)
        assert out["taggram"].shape == (3, len(TAGS[name])) == (3, 50)
        assert out["penultimate"].shape == (3, 200)
        assert ((out["taggram"] > 0) & (out["taggram"] < 1)).all()
        longer = model.predict(np.concatenate([x, x], axis=2), verbose=0)  # any length works
        assert longer["taggram"].shape == (3, 50)
    msd, mtt = (backbones[n].get_layer(f"{n}_logits").get_weights()[0] for n in BACKBONES)
    assert not np.allclose(msd, mtt)


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # keras+numpy 2
def test_both_backbones_save_and_load_in_one_keras_model(backbones, tmp_path):
    import keras

    inputs = keras.Input((96, PATCH))
    outs = [backbones[n](inputs)["penultimate"] for n in BACKBONES]
    both = keras.Model(inputs, keras.layers.Concatenate()(outs))
    path = tmp_path / "both.keras"
    both.save(path)
    x = np.random.default_rng(1).uniform(0, 4, (2, 96, PATCH)).astype(np.float32)
    np.testing.assert_array_equal(
        keras.saving.load_model(path).predict(x, verbose=0), both.predict(x, verbose=0)
    )


@pytest.mark.parametrize("clip", CLIPS)
def test_port_matches_original_musicnn(clip, backbones, data_dir):
    path = data_dir / clip
    if not path.exists():
        pytest.skip(f"reference clip {clip} not found under {data_dir} (set GENRE_DATA)")
    wave = load_audio(path, sample_rate=16000)
    mel = log_mel(wave, MUSICNN_SETTINGS)  # (96, frames)
    n = mel.shape[1] // PATCH  # full patches, as batch_data
    patches = np.stack([mel[:, i * PATCH : (i + 1) * PATCH] for i in range(n)])
    for name, model in backbones.items():
        want_tags, want_pen = REF[f"{clip}|{name}|taggram"], REF[f"{clip}|{name}|penultimate"]
        assert len(want_tags) == n, f"{clip}: {n} patches here, {len(want_tags)} in the original"
        out = model.predict(patches, verbose=0)
        d_tags = float(np.abs(out["taggram"] - want_tags).max())
        d_pen = float(np.abs(out["penultimate"] - want_pen).max())
        print(f"{clip} {name}: max |diff| taggram {d_tags:.2e}, penultimate {d_pen:.2e}")
        assert d_tags <= TAGGRAM_ATOL, (clip, name, d_tags)
        assert d_pen <= PENULTIMATE_ATOL, (clip, name, d_pen)
