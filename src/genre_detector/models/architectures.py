"""The four model families of the research, adapted to one-channel log-mel windows.

    from genre_detector.models.architectures import build_model
    model = build_model("cnn", input_shape=(64, 64), n_classes=9)   # any registered family

The registry (genre_detector.models.families) names the families and points at these builders.

Every model takes (batch, n_mels, frames) windows in dB and returns class probabilities.
Each starts with per-mel-band standardisation (a Normalization layer adapted on the
training windows, so it travels inside the saved model) and SpecAugment-style masking that
is active only while training. See models/MODEL_CARD.md for how each differs from the paper.
"""

from __future__ import annotations

import keras
from keras import layers


@keras.saving.register_keras_serializable(package="genre_detector")
class SpecAugment(layers.Layer):
    """Zero (= band mean after standardisation) one random frequency band and time span per
    example while training; identity at inference."""

    def __init__(self, max_freq: int = 8, max_time: int = 12, **kwargs):
        super().__init__(**kwargs)
        self.max_freq, self.max_time = max_freq, max_time

    def call(self, x, training=None):
        if not training:
            return x
        ops, rnd = keras.ops, keras.random
        b, f, t = ops.shape(x)[0], ops.shape(x)[1], ops.shape(x)[2]
        mask = ops.ones_like(x)
        for size, axis, length in ((self.max_freq, 1, f), (self.max_time, 2, t)):
            width = rnd.randint((b, 1, 1), 0, size + 1)
            start = rnd.randint((b, 1, 1), 0, length - size)
            pos = ops.reshape(ops.arange(length), (1, -1, 1) if axis == 1 else (1, 1, -1))
            inside = ops.logical_and(pos >= start, pos < start + width)
            mask = mask * ops.cast(ops.logical_not(inside), x.dtype)
        return x * mask

    def get_config(self):
        return {**super().get_config(), "max_freq": self.max_freq, "max_time": self.max_time}


def _stem(input_shape: tuple[int, int]) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    inputs = keras.Input(shape=input_shape, name="logmel")
    x = layers.Normalization(axis=1, name="band_norm")(inputs)
    x = SpecAugment(name="spec_augment")(x)
    return inputs, layers.Reshape((*input_shape, 1))(x)


def _conv(x, filters: int, kernel: int, name: str):
    x = layers.Conv2D(filters, kernel, padding="same", use_bias=False, name=name)(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.Activation("relu")(x)


@keras.saving.register_keras_serializable(package="genre_detector")
class TimePool(layers.Layer):
    """(b, freq, time, ch) -> (b, freq * ch * 2): mean and max over time, frequency kept."""

    def call(self, x):
        ops = keras.ops
        pooled = ops.concatenate([ops.mean(x, axis=2), ops.max(x, axis=2)], axis=-1)
        return ops.reshape(pooled, (-1, pooled.shape[1] * pooled.shape[2]))


def _time_pool(x):
    return TimePool(name="time_pool")(x)


def _head(x, inputs, units: int, n_classes: int, dropout: float, name: str) -> keras.Model:
    x = layers.Dropout(dropout)(x)
    x = layers.Dense(units, activation="relu", name="dense")(x)
    x = layers.Dropout(dropout)(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="genre")(x)
    return keras.Model(inputs, outputs, name=name)


def feedforward(input_shape, n_classes):
    """Research: one conv layer -> flatten -> small dense. Here the conv is strided and time
    is pooled before flattening, so the dense layer sees a spectral profile, not positions."""
    inputs, x = _stem(input_shape)
    x = layers.Conv2D(32, (4, 4), strides=(2, 2), padding="same", name="conv")(x)
    x = layers.BatchNormalization(name="conv_bn")(x)
    x = layers.Activation("relu")(x)
    return _head(_time_pool(x), inputs, 64, n_classes, 0.3, "feedforward")


def lenet(input_shape, n_classes):
    """Research: LeNet, two conv + average-pool pairs, dense 128."""
    inputs, x = _stem(input_shape)
    x = _conv(x, 16, 5, "conv1")
    x = layers.AveragePooling2D((4, 4))(x)
    x = _conv(x, 32, 5, "conv2")
    x = layers.AveragePooling2D((4, 4))(x)
    return _head(_time_pool(x), inputs, 128, n_classes, 0.3, "lenet")


def cnn(input_shape, n_classes):
    """Research: conv 32 / max-pool / conv 64 / max-pool / conv 64 / dense 64."""
    inputs, x = _stem(input_shape)
    x = layers.MaxPooling2D((2, 2))(_conv(x, 32, 3, "conv1"))
    x = layers.MaxPooling2D((2, 2))(_conv(x, 64, 3, "conv2"))
    x = layers.MaxPooling2D((2, 2))(_conv(x, 64, 3, "conv3"))
    return _head(_time_pool(x), inputs, 64, n_classes, 0.3, "cnn")


def lstm(input_shape, n_classes):
    """Research: LeNet's convolutions feeding an LSTM of 128 units. Here the LSTM runs over
    the time axis (one step per pooled frame) instead of over a single reshaped step."""
    inputs, x = _stem(input_shape)
    x = _conv(x, 16, 5, "conv1")
    x = layers.AveragePooling2D((4, 2))(x)
    x = _conv(x, 32, 5, "conv2")
    x = layers.AveragePooling2D((4, 2))(x)  # (freq/16, time/4, 32)
    x = layers.Permute((2, 1, 3))(x)  # (time, freq, ch)
    x = layers.Reshape((x.shape[1], x.shape[2] * x.shape[3]))(x)
    x = layers.Dropout(0.3)(x)
    x = layers.LSTM(128, name="lstm")(x)
    return _head(x, inputs, 64, n_classes, 0.3, "lstm")


def build_model(name: str, input_shape: tuple[int, int], n_classes: int) -> keras.Model:
    """A fresh model of the registered family `name` (ValueError names the valid ones)."""
    from genre_detector.models.families import family

    return family(name).build(tuple(input_shape), n_classes)
