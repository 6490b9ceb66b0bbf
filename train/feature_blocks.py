"""The window features a pretrained family's head can read, by name, for training and for the
paired experiments of `train.crossval --set features=...` (FitConfig.features).

    feats = window_features(corpus, model, settings, "musicnn+musicnn-int8")
    # per track (n_windows, d): the blocks side by side, window for window

Blocks (every one computed on exactly the served windows, features.window_starts):

* `musicnn`: the shipped features: both musicnn backbones' penultimate (200) and tags (50),
  from the Keras port (train/pretrained.py's embed, cached on disk);
* `musicnn-int8`: the same outputs from the int8-quantized ONNX graph that
  `python -m train.experiments.quantize_musicnn` writes (the dynamic one), to check whether
  quantization keeps the accuracy;
* `vgg`: both musicnn VGG backbones' pooled embedding and tags (train/vgg_embed.py).

A spec joins names with "+"; each block is cached on disk under .cache/embeddings-<block>,
keyed by the weights (or graph file) and the feature code (train/cache.py), so a rerun
costs only the fits.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from train.cache import CACHE, disk_cached, file_key

# The int8 (dynamic) musicnn graph `python -m train.experiments.quantize_musicnn` writes.
INT8 = Path(__file__).resolve().parent.parent / ".cache" / "quant" / "musicnn-int8.onnx"


def onnx_window_features(path: Path, mels: list[np.ndarray], batch: int = 64):
    """(n_windows, 500) backbone features of every served window of every track, from the
    ONNX graph at `path` (as train.pretrained.embed does with the Keras model), yielded
    track by track (so a cache can keep each as it comes)."""
    import onnxruntime as ort
    from tqdm import tqdm

    from genre_detector.audio.features import MUSICNN_SETTINGS, cut_windows, window_starts
    from genre_detector.runtime.onnx_predictor import session_options

    s = MUSICNN_SETTINGS
    sess = ort.InferenceSession(
        str(path), sess_options=session_options(), providers=["CPUExecutionProvider"]
    )
    name = sess.get_inputs()[0].name
    for mel in tqdm(mels, desc=f"embed {path.name}", unit="track"):
        wins = cut_windows(mel, window_starts(mel.shape[1], s), s).astype(np.float32)
        yield np.concatenate(
            [sess.run(None, {name: wins[i : i + batch]})[0] for i in range(0, len(wins), batch)]
        )


def _int8(corpus, s) -> list[np.ndarray]:
    from genre_detector.audio.features import code_fingerprint

    if not INT8.exists():
        raise FileNotFoundError(
            f"{INT8} is missing: run `python -m train.experiments.quantize_musicnn`"
        )
    mels = corpus.mels(s)
    code = file_key(INT8) + file_key(Path(__file__)) + code_fingerprint()
    folder = CACHE / f"embeddings-int8/{code}-{s.fingerprint()}"
    return disk_cached(
        folder,
        [str(t.path.resolve()) for t in corpus.tracks],
        lambda idx: onnx_window_features(INT8, [mels[i] for i in idx]),
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
