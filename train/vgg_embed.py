"""Window features of musicnn's two pretrained VGG taggers (MSD_vgg, MTT_vgg), disk-cached,
for the same windows the musicnn family serves, and their CPU cost against musicnn's pair.

    feats = embed_vgg(mels, keys)        # per track (n_windows, 612) float32
    python -m train.vgg_embed --cost     # CPU ms per 30 s track: VGG pair vs musicnn pair

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

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

CACHE_DIR = Path(".cache/embeddings-vgg")
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
    cache = CACHE_DIR / fingerprint(model)
    out: list[np.ndarray | None] = [None] * len(mels)
    todo = []
    for i, key in enumerate(keys):
        f = cache / f"{hashlib.sha1(key.encode()).hexdigest()}.npy"
        if f.exists():
            out[i] = np.load(f).astype(np.float32)
        else:
            todo.append((i, f))
    for i, f in tqdm(todo, desc="embed windows (VGG)", unit="track", disable=not todo):
        mel = mels[i].astype(np.float32)
        wins = cut_windows(mel, window_starts(mel.shape[1], s), s)
        out[i] = np.asarray(model.predict(wins, batch_size=batch_size, verbose=0), np.float32)
        f.parent.mkdir(parents=True, exist_ok=True)
        np.save(f.with_suffix(".tmp.npy"), out[i])
        f.with_suffix(".tmp.npy").replace(f)
    return out  # type: ignore[return-value]


def cost(repeats: int = 10) -> dict[str, float]:
    """CPU (process) milliseconds per 30 s track (its 5 windows, one batch) through each
    backbone and through each pair, in Keras, on the same input in this process."""
    import keras

    from genre_detector.audio.features import MUSICNN_SETTINGS as s
    from genre_detector.models.musicnn import BACKBONES, build_backbone
    from genre_detector.models.musicnn_vgg import VGG_BACKBONES, build_vgg

    windows = s.max_windows  # a 30 s track has 10 patches, thinned to 5
    x = np.random.default_rng(0).uniform(0, 4, (windows, s.n_mels, s.window_frames))
    x = x.astype(np.float32)

    def pair(nets, name):
        inputs = keras.Input((s.n_mels, s.window_frames))
        outs = [v for net in nets for v in net(inputs).values()]
        return keras.Model(inputs, outs, name=name)

    nets = {b: build_backbone(b) for b in BACKBONES} | {b: build_vgg(b) for b in VGG_BACKBONES}
    nets["musicnn pair"] = pair([nets[b] for b in BACKBONES], "musicnn_pair")
    nets["VGG pair"] = pair([nets[b] for b in VGG_BACKBONES], "vgg_pair")
    ms = {}
    for name, net in nets.items():
        net.predict(x, verbose=0)  # build the predict function, warm up
        t0 = time.process_time()
        for _ in range(repeats):
            net.predict(x, verbose=0)
        ms[name] = (time.process_time() - t0) / repeats * 1000
    return ms


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m train.vgg_embed",
        description=__doc__.split("\n\n")[0],
    )
    ap.add_argument("--cost", action="store_true", help="print CPU ms per 30 s track")
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args(argv)
    if not args.cost:
        ap.print_help()
        return 0
    ms = cost(args.repeats)
    print(f"CPU ms per 30 s track (5 windows of 187 frames, Keras predict, {args.repeats} runs):")
    for name, v in ms.items():
        print(f"  {name:<12} {v:8.1f}")
    print(f"  VGG pair / musicnn pair = {ms['VGG pair'] / ms['musicnn pair']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
