"""Window features of musicnn's two pretrained VGG taggers (MSD_vgg, MTT_vgg), disk-cached,
for the same windows the musicnn family serves.

    feats = embed_vgg(mels, keys)        # per track (n_windows, 612) float32

(Their CPU against musicnn's, as ONNX graphs the way the service would run them:
`python -m train.experiments.frontier`.)

Per window the features are, in order, MSD_vgg's [embedding (256), taggram (50)] then
MTT_vgg's [embedding (256), taggram (50)] (genre_detector.models.musicnn_vgg.vgg_features;
embedding = per-channel [max, mean] of pool5 over time and frequency). The windows are
exactly those of train/pretrained.py's `embed` for the musicnn family:
cut_windows(mel, window_starts(mel.shape[1], s), s) with s = MUSICNN_SETTINGS (at most 5
non-overlapping 3 s windows spread over the track). The cache lives under
.cache/embeddings-vgg/<fingerprint>/, one .npy per track key; the fingerprint changes with
the VGG weights (every value), the window settings, the feature code and the code of the
port and of this module.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from train.cache import CACHE, disk_cached

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

CACHE_DIR = CACHE / "embeddings-vgg"
_MODEL = None  # the (weights-loaded) VGG pair, built once per process


def _pair():
    global _MODEL
    if _MODEL is None:
        from genre_detector.models.musicnn_vgg import vgg_features

        _MODEL = vgg_features()
    return _MODEL


def fingerprint(model) -> str:
    """Keyed by every weight value, the window settings and the feature/port/embed code."""
    from genre_detector.audio.features import MUSICNN_SETTINGS, code_fingerprint
    from genre_detector.models import musicnn_vgg

    h = hashlib.sha1()
    for w in model.weights:
        h.update(np.ascontiguousarray(w.numpy()).tobytes())
    for source in (musicnn_vgg.__file__, __file__):
        h.update(Path(source).read_bytes())
    return f"{h.hexdigest()[:12]}-{MUSICNN_SETTINGS.fingerprint()}-{code_fingerprint()}"


def embed_vgg(mels: list[np.ndarray], keys: list[str], batch_size: int = 64) -> list[np.ndarray]:
    """Per track, (n_windows, 612) float32: both VGGs' [embedding, taggram] per window.

    `mels` are (96, frames) log-mels at MUSICNN_SETTINGS; `keys` (one per track, e.g. its
    path) name the cache files."""
    from tqdm import tqdm

    from genre_detector.audio.features import MUSICNN_SETTINGS as s
    from genre_detector.audio.features import cut_windows, window_starts

    if len(keys) != len(mels):
        raise ValueError(f"{len(mels)} mels but {len(keys)} keys")
    model = _pair()

    def compute(idx):
        for i in tqdm(idx, desc="embed windows (VGG)", unit="track"):
            mel = mels[i].astype(np.float32)
            wins = cut_windows(mel, window_starts(mel.shape[1], s), s)
            yield model.predict(wins, batch_size=batch_size, verbose=0)

    return disk_cached(CACHE_DIR / fingerprint(model), keys, compute)
