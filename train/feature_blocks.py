"""The window features a pretrained family's head can read, by name, for training and for the
paired experiments of `train.crossval --set features=...` (FitConfig.features).

    feats = window_features(corpus, model, settings, "musicnn+musicnn-int8")
    # per track (n_windows, d): the blocks side by side, window for window

Blocks (every one computed on exactly the served windows, features.window_starts):

* `musicnn`: the shipped features: both musicnn backbones' penultimate (200) and tags (50),
  from the Keras port (train/pretrained.py's embed, cached on disk);
* `musicnn-int8`: the same outputs from the int8-quantized ONNX graph that
  `python -m train.quantize_musicnn` writes (the dynamic one: the static one was slower
  than fp32 here), to check whether quantization keeps the accuracy;
* `vgg`: both musicnn VGG backbones' pooled embedding and tags (train/vgg_embed.py).

A spec joins names with "+"; each block is cached on disk under .cache/embeddings-<block>,
keyed by the weights (or graph file) and the feature code, so a rerun costs only the fits.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

CACHE = Path(".cache")


def _disk_cached(
    folder: Path, keys: list[str], compute: Callable[[list[int]], list[np.ndarray]]
) -> list[np.ndarray]:
    """Per-track arrays under folder/<sha1(key)>.npy; `compute(indices)` makes the missing."""
    files = [folder / f"{hashlib.sha1(k.encode()).hexdigest()}.npy" for k in keys]
    todo = [i for i, f in enumerate(files) if not f.exists()]
    if todo:
        folder.mkdir(parents=True, exist_ok=True)
        for i, arr in zip(todo, compute(todo), strict=True):  # saved as they come
            tmp = files[i].with_suffix(".tmp.npy")
            np.save(tmp, np.asarray(arr, dtype=np.float32))
            tmp.replace(files[i])
    return [np.load(f).astype(np.float32) for f in files]


def _file_key(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()[:12]


def _int8(corpus, s) -> list[np.ndarray]:
    from genre_detector.audio.features import code_fingerprint
    from train import quantize_musicnn
    from train.quantize_musicnn import INT8, window_features

    if not INT8.exists():
        raise FileNotFoundError(f"{INT8} is missing: run `python -m train.quantize_musicnn`")
    mels = corpus.mels(s)
    code = _file_key(INT8) + _file_key(Path(quantize_musicnn.__file__)) + code_fingerprint()
    folder = CACHE / f"embeddings-int8/{code}-{s.fingerprint()}"
    return _disk_cached(
        folder,
        [str(t.path.resolve()) for t in corpus.tracks],
        lambda idx: window_features(INT8, [mels[i] for i in idx]),
    )


def _vgg(corpus, s) -> list[np.ndarray]:
    from train.vgg_embed import embed_vgg

    return embed_vgg(corpus.mels(s), [str(t.path.resolve()) for t in corpus.tracks])


def block_names(spec: str) -> list[str]:
    """The block names of a spec ("musicnn+vgg"); ValueError names the valid ones."""
    names = [n.strip() for n in spec.split("+") if n.strip()]
    if not names or len(set(names)) < len(names) or not set(names) <= set(BLOCKS):
        valid = ", ".join(BLOCKS)
        raise ValueError(f"features={spec!r}: join distinct blocks with '+'; valid: {valid}")
    return names


def window_features(corpus, model, s, spec: str = "musicnn") -> list[np.ndarray]:
    """Per track, the (n_windows, d) features named by `spec` (see the module doc)."""
    parts = [
        corpus.block(n, lambda n=n: BLOCKS[n](corpus, s))
        if BLOCKS[n]
        else corpus.embeddings(model, s)
        for n in block_names(spec)
    ]
    if len(parts) == 1:
        return parts[0]
    for i, rows in enumerate(zip(*parts, strict=True)):
        if len({r.shape[0] for r in rows}) != 1:
            raise ValueError(f"track {i}: the blocks have different window counts")
    return [np.concatenate(rows, axis=1) for rows in zip(*parts, strict=True)]


def block_widths(spec: str) -> list[int]:
    """The widths of the sub-blocks (one per backbone output) of a spec's features, in
    order: what a stacked head (FitConfig.head) fits one regression on each."""
    return [w for n in block_names(spec) for w in WIDTHS[n]]


# name -> per-track features of a corpus; None: the Keras backbones' (corpus.embeddings)
BLOCKS: dict[str, Callable | None] = {"musicnn": None, "musicnn-int8": _int8, "vgg": _vgg}
# per backbone output: MSD then MTT, [penultimate 200 | VGG embedding 256, 50 tags]
WIDTHS = {
    "musicnn": (200, 50, 200, 50),
    "musicnn-int8": (200, 50, 200, 50),
    "vgg": (256, 50, 256, 50),
}
