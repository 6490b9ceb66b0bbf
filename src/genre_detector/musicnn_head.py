"""The fifth family: the pretrained musicnn backbones (MSD and MTT, frozen) and a small
trained head that turns their features into genres.

    from genre_detector.musicnn_head import build
    model = build((96, 187), n_classes=9)      # windows (n, 96, 187) -> (n, 9) probabilities
    model.get_layer("backbones")               # windows -> features (frozen, pretrained)
    model.get_layer("head")                    # features -> probabilities (trained)

Training embeds every window once with the frozen `backbones` and fits only `head` on those
features (train/pretrained.py); the saved model holds both, so serving runs windows straight
through like any other family.
"""

from __future__ import annotations

import keras
from keras import layers

from .musicnn import BACKBONES, build_backbone

# Per backbone: the 200-unit penultimate layer and the 50 tag probabilities.
OUTPUTS = ("penultimate", "taggram")


def backbone_features(input_shape, backbones=BACKBONES, weights: bool = True) -> keras.Model:
    inputs = keras.Input(shape=input_shape, name="logmel")
    parts = []
    for name in backbones:
        net = build_backbone(name, weights=weights)
        net.trainable = False
        out = net(inputs)
        parts += [out[k] for k in OUTPUTS]
    feats = parts[0] if len(parts) == 1 else layers.Concatenate(name="features")(parts)
    return keras.Model(inputs, feats, name="backbones")


def build_head(n_features: int, n_classes: int) -> keras.Model:
    """A softmax layer on the features: a multinomial logistic regression (its weights come
    from train/pretrained.py, with the feature standardisation folded in)."""
    inputs = keras.Input(shape=(n_features,), name="features")
    outputs = layers.Dense(n_classes, activation="softmax", name="genre")(inputs)
    return keras.Model(inputs, outputs, name="head")


def build(input_shape, n_classes: int, backbones=BACKBONES, weights: bool = True) -> keras.Model:
    inputs = keras.Input(shape=tuple(input_shape), name="logmel")
    features = backbone_features(tuple(input_shape), backbones, weights)
    head = build_head(features.output.shape[-1], n_classes)
    return keras.Model(inputs, head(features(inputs)), name="musicnn")
