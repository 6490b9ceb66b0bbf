"""musicnn's pretrained VGG taggers (MSD_vgg, MTT_vgg) as plain Keras 3 models.

    from genre_detector.audio.features import MUSICNN_SETTINGS, extract_windows
    from genre_detector.models.musicnn_vgg import build_vgg
    model = build_vgg("MTT_vgg")                                 # weights from WEIGHTS_DIR
    windows = extract_windows("track.mp3", MUSICNN_SETTINGS).windows   # (n, 96, 187)
    out = model.predict(windows)            # {"taggram": (n, 50), "embedding": (n, 256)}

A faithful, inference-only port of `vgg(x, is_training, num_classes, 128)` from musicnn
0.1.0 (models.py): input batch normalisation, then five blocks of 3x3 conv (128 filters,
"same", ReLU) -> batch normalisation -> max pooling ((4, 1) stride 2, then (2, 2) stride 2
three times, then (4, 4) stride 4; all "valid"), flatten, dropout (off at inference) and a
dense layer to 50 tags. The model takes our window layout (batch, n_mels=96, frames) of
log10(1 + 10000 * mel power) and transposes it to musicnn's (time, freq). Unlike musicnn's
own network the flatten fixes the input length: 187 frames = 3 s (as the original extractor
insists), pooled to pool5 maps of 2 (time) x 1 (freq) x 128.

Outputs are a dict:

* "taggram": (batch, 50) sigmoid tag probabilities; tag names are TAGS["MSD_musicnn"] for
  MSD_vgg and TAGS["MTT_musicnn"] for MTT_vgg (musicnn uses one label list per dataset).
* "embedding": (batch, 256) = [max over (time, freq) of pool5 per channel (128),
  mean over (time, freq) of pool5 per channel (128)], i.e. channel c is at index c (max)
  and 128 + c (mean). pool5 is exactly what the tag layer sees (its flatten of 2 x 128
  values), and per channel the pair (max, mean) determines the two pooled values up to
  their order in time, so the embedding carries all of the classifier's input, pooled over
  time. (pool5 covers conv5's time rows 0-7 of 11 and frequency columns 0-3 of 6, as in
  the original: its 4x4 "valid" pooling drops the rest.)
* "pool5": (batch, 2, 1, 128) the raw pool5 map (musicnn's own "pool5" feature).

Layer names start with the backbone name, so both backbones can live side by side in one
model; only standard Keras layers are used, so a model saves/loads as .keras and exports to
ONNX. Weights (converted from the original TF1 checkpoints by
`python -m train.ports.convert_musicnn_vgg`) live in models/musicnn/.

Credits: J. Pons and X. Serra, "musicnn: pre-trained convolutional neural networks for
music audio tagging", ISMIR 2019 LBD; https://github.com/jordipons/musicnn. The weights
and architecture are (c) Music Technology Group, Universitat Pompeu Fabra 2019, under the
ISC licence (models/musicnn/LICENSE).
"""

from __future__ import annotations

from pathlib import Path

import keras
from keras import layers

from genre_detector.models.musicnn import N_MELS, TAGS, WEIGHTS_DIR

VGG_BACKBONES = ("MSD_vgg", "MTT_vgg")
FRAMES = 187  # 3 s at 16 kHz, hop 256: the only length the flatten + dense accept
FILTERS = 128
EMBEDDING_DIM = 2 * FILTERS
# (pool size, strides) after each conv block, on (time, freq), padding "valid"
POOLS = (((4, 1), (2, 2)), ((2, 2), (2, 2)), ((2, 2), (2, 2)), ((2, 2), (2, 2)), ((4, 4), (4, 4)))
# the dataset whose 50 tags each backbone predicts (same lists as the musicnn backbones)
TAG_SOURCE = {"MSD_vgg": "MSD_musicnn", "MTT_vgg": "MTT_musicnn"}
OUTPUTS = ("embedding", "taggram")  # what vgg_features concatenates, per backbone


def tags(name: str) -> list[str]:
    return TAGS[TAG_SOURCE[name]]


def weights_path(name: str) -> Path:
    return WEIGHTS_DIR / f"{name}.weights.h5"


def _bn(x, name: str):
    # TF1 tf.layers.batch_normalization: epsilon 1e-3, inference uses the moving statistics.
    return layers.BatchNormalization(epsilon=1e-3, name=name)(x)


def build_vgg(name: str, weights: bool = True, frames: int = FRAMES) -> keras.Model:
    """musicnn's `name` VGG (one of VGG_BACKBONES): (batch, 96, frames) ->
    {"taggram", "embedding", "pool5"}. `weights=False` leaves it untrained; `frames` must
    pool to the 2 x 1 pool5 map the dense layer was trained on (187 does)."""
    if name not in VGG_BACKBONES:
        raise ValueError(f"unknown musicnn VGG {name!r}; valid: {', '.join(VGG_BACKBONES)}")
    p = name
    inputs = keras.Input(shape=(N_MELS, frames), name=f"{p}_logmel")
    x = layers.Permute((2, 1), name=f"{p}_to_time_freq")(inputs)  # (b, t, 96)
    x = layers.Reshape((frames, N_MELS, 1), name=f"{p}_add_channel")(x)  # (b, t, 96, 1)
    x = _bn(x, f"{p}_input_bn")
    for i, (pool, strides) in enumerate(POOLS, start=1):
        # dropout (0.25; 0.5 after the flatten) sits between blocks in training only
        x = layers.Conv2D(FILTERS, 3, padding="same", activation="relu", name=f"{p}_conv{i}")(x)
        x = _bn(x, f"{p}_bn{i}")
        x = layers.MaxPooling2D(pool, strides, padding="valid", name=f"{p}_pool{i}")(x)
    pool5 = x
    if tuple(pool5.shape[1:]) != (2, 1, FILTERS):
        raise ValueError(
            f"{name}: {frames} frames pool to {tuple(pool5.shape[1:3])}, not the (2, 1) "
            f"the pretrained dense layer needs (use {FRAMES} frames)"
        )
    logits = layers.Dense(len(tags(name)), name=f"{p}_logits")(
        layers.Flatten(name=f"{p}_flatten")(pool5)
    )
    taggram = layers.Activation("sigmoid", name=f"{p}_taggram")(logits)
    embedding = layers.Concatenate(name=f"{p}_embedding")(
        [
            layers.GlobalMaxPooling2D(name=f"{p}_maxpool")(pool5),
            layers.GlobalAveragePooling2D(name=f"{p}_meanpool")(pool5),
        ]
    )
    model = keras.Model(
        inputs, {"taggram": taggram, "embedding": embedding, "pool5": pool5}, name=name
    )
    if weights:
        model.load_weights(weights_path(name))
    return model


def vgg_features(
    backbones=VGG_BACKBONES, weights: bool = True, frames: int = FRAMES
) -> keras.Model:
    """One single-output model: windows (batch, 96, frames) -> the concatenation, per
    backbone in order, of [embedding (256), taggram (50)]: (batch, 306 * len(backbones))."""
    inputs = keras.Input(shape=(N_MELS, frames), name="logmel")
    parts = []
    for name in backbones:
        net = build_vgg(name, weights=weights, frames=frames)
        net.trainable = False
        out = net(inputs)
        parts += [out[k] for k in OUTPUTS]
    feats = layers.Concatenate(name="vgg_features")(parts)
    return keras.Model(inputs, feats, name="vgg_backbones")
