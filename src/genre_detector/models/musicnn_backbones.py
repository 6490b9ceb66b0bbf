"""The fifth family: the pretrained musicnn backbones (MSD and MTT, frozen), whose window
features a trained track head (genre_detector.models.track_head) turns into genres.

    from genre_detector.models.musicnn_backbones import build
    model = build((96, 187), n_classes=9)      # windows (n, 96, 187) -> (n, 500) features
    model.get_layer("backbones")               # the frozen, pretrained part

The stored model is the backbones (what the model service runs, batched, as ONNX); the head
is a logistic regression on each track's mean and spread of those features (fitted by
train/pretrained.py, saved as head.npz beside the model, applied per track by
ModelInfo.window_probs). The backbones' weights are never trained here.
"""

from __future__ import annotations

import keras
from keras import layers

from genre_detector.models.musicnn import BACKBONES, build_backbone

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


def build(input_shape, n_classes: int, backbones=BACKBONES, weights: bool = True) -> keras.Model:
    """Windows -> backbone features; `n_classes` is the head's business (the registry's
    builder signature)."""
    del n_classes
    inputs = keras.Input(shape=tuple(input_shape), name="logmel")
    features = backbone_features(tuple(input_shape), backbones, weights)
    return keras.Model(inputs, features(inputs), name="musicnn")
