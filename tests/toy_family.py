"""A toy model family living outside the package, registered as a plugin:

    GENRE_PLUGINS=tests.toy_family bentoml serve service:GenreDetector

It has its own (small) feature settings, so the service must compute a third feature set
and call it through its own batchable method. Only standard Keras layers: a saved toy model
loads without this module (the model service needs the registry entry, not the builder).
"""

from __future__ import annotations

from genre_detector.audio.features import FeatureSettings
from genre_detector.models.families import Family, register

NAME = "toy"
DISPLAY_NAME = "Toy"
# 32 mel bands, 32-frame (1.5 s) windows every 16 frames, at most 8 per track.
SETTINGS = FeatureSettings(n_mels=32, window_frames=32, window_hop_frames=16, max_windows=8)


def build(input_shape, n_classes):
    """Mean dB per mel band -> softmax: 33 * n_classes weights."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=tuple(input_shape), name="logmel")
    x = layers.Rescaling(1 / 80.0, offset=1.0)(inputs)  # [-80, 0] dB -> [0, 1]
    x = layers.Permute((2, 1))(x)  # (frames, mels)
    x = layers.GlobalAveragePooling1D(name="band_mean")(x)  # (mels,)
    outputs = layers.Dense(n_classes, activation="softmax", name="genre")(x)
    return keras.Model(inputs, outputs, name=NAME)


register(Family(NAME, DISPLAY_NAME, f"{__name__}:build", epochs=2, settings=SETTINGS))
