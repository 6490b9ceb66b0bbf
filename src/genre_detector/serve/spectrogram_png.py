"""Render a log-mel spectrogram as a small PNG (pure NumPy + zlib, no plotting library)."""

from __future__ import annotations

import base64
import struct
import zlib

import numpy as np

MAX_COLUMNS = 800  # time columns in the picture; longer tracks are averaged down
# A magma-like ramp: dark purple (quiet) -> orange -> pale yellow (loud).
_STOPS = np.array(
    [[0, 0, 4], [80, 18, 123], [182, 54, 121], [251, 136, 97], [252, 253, 191]], dtype=np.float64
)


def _colour(values01: np.ndarray) -> np.ndarray:
    pos = np.clip(values01, 0, 1) * (len(_STOPS) - 1)
    lo = np.floor(pos).astype(int).clip(0, len(_STOPS) - 2)
    frac = (pos - lo)[..., None]
    return (_STOPS[lo] * (1 - frac) + _STOPS[lo + 1] * frac).astype(np.uint8)


def png_bytes(mel_db: np.ndarray, floor_db: float = -80.0) -> bytes:
    """(n_mels, frames) dB in [floor_db, 0] -> PNG, low frequencies at the bottom."""
    mel = np.asarray(mel_db, dtype=np.float32)
    if mel.shape[1] > MAX_COLUMNS:
        edges = np.linspace(0, mel.shape[1], MAX_COLUMNS + 1).astype(int)
        mel = np.add.reduceat(mel, edges[:-1], axis=1) / np.diff(edges)
    rgb = _colour((mel[::-1] - floor_db) / -floor_db)
    h, w = rgb.shape[:2]
    raw = b"".join(b"\x00" + rgb[row].tobytes() for row in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )


def png_data_url(mel_db: np.ndarray, floor_db: float = -80.0) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(mel_db, floor_db)).decode()
