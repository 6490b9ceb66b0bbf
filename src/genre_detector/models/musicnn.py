"""The pretrained musicnn taggers (MSD_musicnn, MTT_musicnn) as plain Keras 3 models.

    from genre_detector.audio.features import MUSICNN_SETTINGS, extract_windows
    from genre_detector.models.musicnn import TAGS, build_backbone
    model = build_backbone("MSD_musicnn")                       # weights from WEIGHTS_DIR
    windows = extract_windows("track.mp3", MUSICNN_SETTINGS).windows   # (n, 96, 187)
    out = model.predict(windows)          # {"taggram": (n, 50), "penultimate": (n, 200)}
    top = sorted(zip(out["taggram"].mean(0), TAGS["MSD_musicnn"]), reverse=True)[:5]

A faithful, inference-only port of `build_musicnn` (num_filt_midend=64,
num_units_backend=200) from musicnn 0.1.0 (models.py). The model takes our window layout
(batch, n_mels=96, frames) of log10(1 + 10000 * mel power) and transposes it to musicnn's
(time, freq). The number of frames may vary (the network pools over time); the models were
trained on 187 frames = 3 s. Outputs are a dict: "taggram" (sigmoid tag probabilities, tag
names in TAGS[name]) and "penultimate" (the 200 batch-normalised units before the last
dense layer, musicnn's "penultimate" feature). Layer names start with the backbone name,
so both backbones can live side by side in one model; only standard Keras layers are used,
so such a model saves and loads as .keras. Weights (converted from the original TF1
checkpoints by `python -m train.ports.convert_musicnn`) live in models/musicnn/.

Credits: J. Pons and X. Serra, "musicnn: pre-trained convolutional neural networks for
music audio tagging", ISMIR 2019 LBD; https://github.com/jordipons/musicnn. The weights
and architecture are (c) Music Technology Group, Universitat Pompeu Fabra 2019, under the
ISC licence (models/musicnn/LICENSE).
"""

from __future__ import annotations

from pathlib import Path

import keras
from keras import layers

BACKBONES = ("MSD_musicnn", "MTT_musicnn")
N_MELS = 96
FRAMES = 187  # 3 s at 16 kHz, hop 256: what the networks were trained on
WEIGHTS_DIR = Path(__file__).resolve().parents[3] / "models" / "musicnn"

TAGS = {
    "MSD_musicnn": [
        "rock",
        "pop",
        "alternative",
        "indie",
        "electronic",
        "female vocalists",
        "dance",
        "00s",
        "alternative rock",
        "jazz",
        "beautiful",
        "metal",
        "chillout",
        "male vocalists",
        "classic rock",
        "soul",
        "indie rock",
        "Mellow",
        "electronica",
        "80s",
        "folk",
        "90s",
        "chill",
        "instrumental",
        "punk",
        "oldies",
        "blues",
        "hard rock",
        "ambient",
        "acoustic",
        "experimental",
        "female vocalist",
        "guitar",
        "Hip-Hop",
        "70s",
        "party",
        "country",
        "easy listening",
        "sexy",
        "catchy",
        "funk",
        "electro",
        "heavy metal",
        "Progressive rock",
        "60s",
        "rnb",
        "indie pop",
        "sad",
        "House",
        "happy",
    ],
    "MTT_musicnn": [
        "guitar",
        "classical",
        "slow",
        "techno",
        "strings",
        "drums",
        "electronic",
        "rock",
        "fast",
        "piano",
        "ambient",
        "beat",
        "violin",
        "vocal",
        "synth",
        "female",
        "indian",
        "opera",
        "male",
        "singing",
        "vocals",
        "no vocals",
        "harpsichord",
        "loud",
        "quiet",
        "flute",
        "woman",
        "male vocal",
        "no vocal",
        "pop",
        "soft",
        "sitar",
        "solo",
        "man",
        "classic",
        "choir",
        "voice",
        "new age",
        "dance",
        "male voice",
        "female vocal",
        "beats",
        "harp",
        "cello",
        "no voice",
        "weird",
        "country",
        "metal",
        "female voice",
        "choral",
    ],
}


def weights_path(name: str) -> Path:
    return WEIGHTS_DIR / f"{name}.weights.h5"


def _bn(x, name: str):
    # TF1 tf.layers.batch_normalization: epsilon 1e-3, inference uses the moving statistics.
    return layers.BatchNormalization(epsilon=1e-3, name=name)(x)


def _conv_block(x, p: str, filters: int, kernel: tuple[int, int], padding: str):
    """conv -> relu -> BN -> max over all frequency bins: (b, t, f, 1) -> (b, t, filters)."""
    x = layers.Conv2D(filters, kernel, padding=padding, activation="relu", name=f"{p}_conv")(x)
    x = _bn(x, f"{p}_bn")
    x = layers.MaxPooling2D((1, x.shape[2]), name=f"{p}_freqmax")(x)
    return layers.Reshape((-1, filters), name=f"{p}_squeeze")(x)


def _midend_conv(x, p: str, filters: int):
    """musicnn's conv2d [7, channels] on time-padded maps = a 1-D conv of kernel 7 over time."""
    x = layers.ZeroPadding1D(3, name=f"{p}_pad")(x)
    x = layers.Conv1D(filters, 7, activation="relu", name=f"{p}_conv")(x)
    return _bn(x, f"{p}_bn")


def build_backbone(name: str, weights: bool = True, frames: int | None = None) -> keras.Model:
    """musicnn `name` (one of BACKBONES): (batch, 96, frames) -> {"taggram", "penultimate"}.

    `frames=None` accepts any length (>= 1 frame); `weights=False` leaves it untrained."""
    if name not in BACKBONES:
        raise ValueError(f"unknown musicnn backbone {name!r}; valid: {', '.join(BACKBONES)}")
    p = name
    inputs = keras.Input(shape=(N_MELS, frames), name=f"{p}_logmel")
    x = layers.Permute((2, 1), name=f"{p}_to_time_freq")(inputs)  # (b, t, 96)
    x = layers.Reshape((-1, N_MELS, 1), name=f"{p}_add_channel")(x)  # (b, t, 96, 1)
    x = _bn(x, f"{p}_input_bn")

    # front-end: timbral (7 frames x 40 % / 70 % of the bands) and temporal filters
    padded = layers.ZeroPadding2D(((3, 3), (0, 0)), name=f"{p}_timbral_pad")(x)
    front = [
        _conv_block(padded, f"{p}_timbral74", 204, (7, int(0.4 * N_MELS)), "valid"),
        _conv_block(padded, f"{p}_timbral77", 204, (7, int(0.7 * N_MELS)), "valid"),
        *[_conv_block(x, f"{p}_temporal{k}", 51, (k, 1), "same") for k in (128, 64, 32)],
    ]
    front = layers.Concatenate(name=f"{p}_frontend")(front)  # (b, t, 561)

    # mid-end: three 1-D convs, the last two residual; dense connections to the back-end
    mid1 = _midend_conv(front, f"{p}_midend1", 64)
    mid2 = layers.Add(name=f"{p}_midend2_res")([_midend_conv(mid1, f"{p}_midend2", 64), mid1])
    mid3 = layers.Add(name=f"{p}_midend3_res")([_midend_conv(mid2, f"{p}_midend3", 64), mid2])
    feats = layers.Concatenate(name=f"{p}_midend")([front, mid1, mid2, mid3])  # (b, t, 753)

    # back-end: max and mean over time, stacked on a last axis and flattened, so the
    # features interleave [max_0, mean_0, max_1, mean_1, ...] exactly as in musicnn
    ch = feats.shape[-1]
    pools = [
        layers.Reshape((ch, 1), name=f"{p}_{kind}_col")(pool(name=f"{p}_{kind}pool")(feats))
        for kind, pool in (
            ("max", layers.GlobalMaxPooling1D),
            ("mean", layers.GlobalAveragePooling1D),
        )
    ]
    x = layers.Concatenate(name=f"{p}_pools")(pools)  # (b, 753, 2)
    x = layers.Flatten(name=f"{p}_flatten")(x)  # (b, 1506)
    x = _bn(x, f"{p}_pool_bn")
    x = layers.Dense(200, activation="relu", name=f"{p}_dense")(x)
    penultimate = _bn(x, f"{p}_penultimate")
    logits = layers.Dense(len(TAGS[name]), name=f"{p}_logits")(penultimate)
    taggram = layers.Activation("sigmoid", name=f"{p}_taggram")(logits)

    model = keras.Model(inputs, {"taggram": taggram, "penultimate": penultimate}, name=name)
    if weights:
        model.load_weights(weights_path(name))
    return model
