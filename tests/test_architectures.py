"""genre_detector.models.architectures: the four research families (and musicnn, through the
registry) build, predict, save and load."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from genre_detector.audio.features import MUSICNN_SETTINGS, FeatureSettings
from genre_detector.models.architectures import SpecAugment, build_model
from genre_detector.models.families import FAMILIES, family, model_names, research_names

ARCHITECTURES = research_names()  # the families built by architectures.py

S = FeatureSettings()
INPUT_SHAPE = (S.n_mels, S.window_frames)
N_CLASSES = 9
MAX_TOTAL_BYTES = 40 * 1024 * 1024

# Keras' own saving code calls np.array(tensor) the NumPy-1 way; not ours to fix here.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)


def _windows(n: int, seed: int = 0) -> np.ndarray:
    """Log-mel-like windows: values in [-80, 0] dB with some structure per band."""
    rng = np.random.default_rng(seed)
    base = -60 + 40 * rng.random((n, S.n_mels, 1))
    return np.clip(base + 10 * rng.standard_normal((n, *INPUT_SHAPE)), -80, 0).astype(np.float32)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """name -> (model, path of its .keras file, reloaded model, sample inputs)."""
    keras.utils.set_random_seed(0)
    out = tmp_path_factory.mktemp("models")
    x = _windows(6)
    result = {}
    for name in ARCHITECTURES:
        model = build_model(name, INPUT_SHAPE, N_CLASSES)
        # give the band standardisation real statistics, as training does
        model.get_layer("band_norm").adapt(_windows(16, seed=1))
        path = out / f"{name}.keras"
        model.save(path)
        loaded = keras.models.load_model(path, compile=False)
        result[name] = (model, path, loaded, x)
    return result


def test_the_four_research_families_are_built_here():
    assert ARCHITECTURES == ("feedforward", "lenet", "cnn", "lstm")
    assert model_names() == (*ARCHITECTURES, "musicnn")
    for name in ARCHITECTURES:
        assert family(name).builder == f"genre_detector.models.architectures:{name}"
        assert family(name).settings == S


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_output_is_a_probability_per_class(saved, name):
    model, _, _, x = saved[name]
    assert tuple(model.input_shape) == (None, *INPUT_SHAPE)
    assert tuple(model.output_shape) == (None, N_CLASSES)
    p = np.asarray(model(x, training=False))
    assert p.shape == (len(x), N_CLASSES)
    assert np.isfinite(p).all() and (p >= 0).all()
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
    # inference is deterministic (dropout and SpecAugment off)
    np.testing.assert_array_equal(p, np.asarray(model(x, training=False)))
    # a batch of one works too
    p1 = np.asarray(model(x[:1], training=False))
    np.testing.assert_allclose(p1, p[:1], atol=1e-5)


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_save_and_load_give_the_same_predictions(saved, name):
    model, path, loaded, x = saved[name]
    assert path.exists() and path.stat().st_size < MAX_TOTAL_BYTES
    assert loaded.name == model.name
    np.testing.assert_allclose(
        np.asarray(loaded(x, training=False)), np.asarray(model(x, training=False)), atol=1e-6
    )
    # the adapted band statistics travelled inside the file
    np.testing.assert_allclose(
        np.asarray(loaded.get_layer("band_norm").mean),
        np.asarray(model.get_layer("band_norm").mean),
    )
    assert isinstance(loaded.get_layer("spec_augment"), SpecAugment)


def test_all_four_files_fit_the_budget(saved):
    sizes = {name: path.stat().st_size for name, (_, path, _, _) in saved.items()}
    assert sum(sizes.values()) < MAX_TOTAL_BYTES, sizes


def test_spec_augment_is_identity_at_inference_and_masks_in_training():
    keras.utils.set_random_seed(0)
    layer = SpecAugment(max_freq=16, max_time=24)
    x = np.random.default_rng(0).standard_normal((8, *INPUT_SHAPE)).astype(np.float32) + 5
    np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)
    np.testing.assert_array_equal(np.asarray(layer(x)), x)
    y = np.asarray(layer(x, training=True))
    assert y.shape == x.shape
    assert not np.array_equal(y, x)
    # masking only zeroes values; it never changes the ones it keeps
    kept = y != 0
    np.testing.assert_array_equal(y[kept], x[kept])
    zeroed = ~kept
    assert zeroed.any()
    # each example loses at most one band of <= max_freq bins and one span of <= max_time
    for ex in zeroed:
        full_rows = ex.all(axis=1).sum()
        full_cols = ex.all(axis=0).sum()
        assert full_rows <= 16 and full_cols <= 24
    # config round trip
    clone = SpecAugment.from_config(layer.get_config())
    assert (clone.max_freq, clone.max_time) == (16, 24)


def test_training_mode_differs_from_inference(saved):
    """Dropout and SpecAugment are active with training=True, so outputs change."""
    model, _, _, x = saved["cnn"]
    keras.utils.set_random_seed(1)
    a = np.asarray(model(x, training=True))
    assert not np.allclose(a, np.asarray(model(x, training=False)))


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError) as info:
        build_model("nope", INPUT_SHAPE, N_CLASSES)
    msg = str(info.value)
    assert "nope" in msg
    for name in FAMILIES:
        assert name in msg


def test_lstm_runs_over_time(saved):
    model = saved["lstm"][0]
    lstm_layers = [layer for layer in model.layers if isinstance(layer, keras.layers.LSTM)]
    assert len(lstm_layers) == 1
    steps = lstm_layers[0].input.shape[1]
    assert steps is not None and steps > 1
    # one step per pooled frame: the time axis is pooled by 4 in total
    assert steps == S.window_frames // 4
    # the other families have no recurrent layer
    for name in ("feedforward", "lenet", "cnn"):
        assert not any(isinstance(layer, keras.layers.RNN) for layer in saved[name][0].layers)


def test_musicnn_family_builds_through_the_registry():
    """The fifth family: frozen pretrained backbones on its own windows, giving each window's
    features (penultimate + tags of both backbones) for the track head; nothing trainable."""
    keras.utils.set_random_seed(0)
    s = family("musicnn").settings
    assert s == MUSICNN_SETTINGS
    model = build_model("musicnn", (s.n_mels, s.window_frames), N_CLASSES)
    assert tuple(model.input_shape) == (None, 96, 187)
    assert tuple(model.output_shape) == (None, 500)
    backbones = model.get_layer("backbones")
    assert backbones.weights and not backbones.trainable_weights  # frozen
    assert not model.trainable_weights
    x = np.random.default_rng(0).uniform(0, 3, (2, 96, 187)).astype(np.float32)
    f = np.asarray(model(x, training=False))
    assert f.shape == (2, 500) and np.isfinite(f).all()
    tags = np.concatenate([f[:, 200:250], f[:, 450:500]], axis=1)  # sigmoid tag outputs
    assert (tags >= 0).all() and (tags <= 1).all()
