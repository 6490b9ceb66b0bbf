"""Per-track arrays cached on disk under .cache/, shared by the feature blocks of training
(train/feature_blocks.py, train/vgg_embed.py) and the experiments that read them.

    feats = disk_cached(CACHE / "embeddings-vgg" / key, track_keys, compute)
    # compute(indices) yields the arrays of the tracks not cached yet, each saved as it comes

A folder's name carries what its arrays depend on (weights, settings, code: file_key), so a
change makes a new folder instead of reading stale arrays.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

CACHE = Path(".cache")


def disk_cached(
    folder: Path, keys: list[str], compute: Callable[[list[int]], Iterable[np.ndarray]]
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


def file_key(path: Path) -> str:
    """12 hex digits of the file's sha1: part of a cache folder's name."""
    return hashlib.sha1(path.read_bytes()).hexdigest()[:12]
