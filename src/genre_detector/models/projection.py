"""The search embedding: a track's pooled musicnn features projected to a fixed size (NumPy
only; fitted at training time by `python -m train.projection`, kept beside the musicnn model).

    proj = Projection.load(path)                 # projection.npz
    v = proj.apply(result.embedding)             # TrackResult.embedding -> (proj.dim,) float32
    scores = catalog @ v                         # rows of apply() have unit length: cosine
    proj.version                                 # stored on every catalog row

The input is TrackResult.embedding: [mean, spread] of the musicnn backbone features over
the track's windows (models.track_head.statistics). A projection z-scores it with the
training tracks' `mean` and `scale`, multiplies by `matrix` and scales each row to unit
length, so cosine similarity is a dot product (a row that projects to zero stays zero).
`method` names how `matrix` was fitted (train/projection.py: "standardised", "pca", "lda",
"lda+pca", ...). `version` is a hash of all four: any refit that changes a number changes it,
so vectors made by different projections are never compared (re-embed on a change).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PROJECTION_FILE = "projection.npz"


def _frozen(a, ndim: int, name: str) -> np.ndarray:
    a = np.array(a, dtype=np.float32)  # a copy: the projection never changes under a caller
    if a.ndim != ndim:
        raise ValueError(f"projection {name} must have {ndim} dimension(s), got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"projection {name} has non-finite values")
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class Projection:
    mean: np.ndarray  # (d_in,) subtracted first
    scale: np.ndarray  # (d_in,) then divided by (> 0)
    matrix: np.ndarray  # (d_in, d_out) then multiplied by, then rows scaled to unit length
    method: str  # how matrix was fitted

    def __post_init__(self):
        mean = _frozen(self.mean, 1, "mean")
        scale = _frozen(self.scale, 1, "scale")
        matrix = _frozen(self.matrix, 2, "matrix")
        if not (mean.shape == scale.shape == matrix.shape[:1]):
            raise ValueError(
                f"projection shapes disagree: mean {mean.shape}, scale {scale.shape}, "
                f"matrix {matrix.shape}"
            )
        if np.any(scale <= 0):
            raise ValueError("projection scale must be positive")
        if matrix.shape[1] < 1:
            raise ValueError("projection matrix has no output dimension")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "matrix", matrix)
        object.__setattr__(self, "method", str(self.method))

    @property
    def d_in(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def dim(self) -> int:
        """The length of every projected vector (d_out)."""
        return int(self.matrix.shape[1])

    @property
    def version(self) -> str:
        """First 12 hex digits of a sha256 over the method and the arrays (shapes included)."""
        h = hashlib.sha256(self.method.encode())
        for a in (self.mean, self.scale, self.matrix):
            h.update(str(a.shape).encode())
            h.update(np.ascontiguousarray(a, dtype="<f4").tobytes())
        return h.hexdigest()[:12]

    def apply(self, x) -> np.ndarray:
        """(d_in,) -> (dim,), or (n, d_in) -> (n, dim): float32 rows of unit length (a row
        that projects to zero stays zero)."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim not in (1, 2) or x.shape[-1] != self.d_in:
            raise ValueError(
                f"expected an embedding of length {self.d_in} (or rows of it), got {x.shape}"
            )
        z = ((x - self.mean) / self.scale) @ self.matrix.astype(np.float64)
        norm = np.linalg.norm(z, axis=-1, keepdims=True)
        return np.divide(z, norm, out=np.zeros_like(z), where=norm > 0).astype(np.float32)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        with open(path, "wb") as f:  # np.savez would append .npz to another suffix
            np.savez(
                f, mean=self.mean, scale=self.scale, matrix=self.matrix, method=np.str_(self.method)
            )
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Projection":
        with np.load(path, allow_pickle=False) as z:
            return cls(z["mean"], z["scale"], z["matrix"], str(z["method"]))
