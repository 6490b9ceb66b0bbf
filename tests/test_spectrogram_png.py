"""genre_detector.serve.spectrogram_png: a valid PNG of the log-mel, loud = bright, low at
bottom."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import numpy as np
import pytest

from genre_detector.serve.spectrogram_png import MAX_COLUMNS, png_bytes, png_data_url

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    assert png[:8] == SIGNATURE
    pos, out = 8, []
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind, data = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", png[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + data), f"bad CRC in {kind!r}"
        out.append((kind, data))
        pos += 12 + length
    assert pos == len(png)
    return out


def _header(png: bytes) -> tuple[int, int, int, int]:
    chunks = _chunks(png)
    assert chunks[0][0] == b"IHDR" and chunks[-1] == (b"IEND", b"")
    w, h, depth, colour, _, _, _ = struct.unpack(">IIBBBBB", chunks[0][1])
    return w, h, depth, colour


def _decode(png: bytes) -> np.ndarray:
    """(h, w, 3) uint8 via matplotlib (an independent decoder)."""
    import matplotlib.image

    img = matplotlib.image.imread(io.BytesIO(png), format="png")
    assert img.ndim == 3 and img.shape[2] in (3, 4)
    return np.round(img[..., :3] * 255).astype(np.uint8)


def _brightness(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float64).sum(axis=-1)


def _ramp_mel(n_mels: int = 64, frames: int = 100) -> np.ndarray:
    """Loud at low frequencies (row 0), quiet at high ones."""
    col = np.linspace(0, -80, n_mels, dtype=np.float32)[:, None]
    return np.repeat(col, frames, axis=1)


@pytest.mark.parametrize(
    "n_mels,frames", [(64, 100), (64, 647), (32, 800), (64, 801), (128, 12_000), (64, 1)]
)
def test_header_dimensions(n_mels, frames):
    rng = np.random.default_rng(0)
    mel = -80 * rng.random((n_mels, frames)).astype(np.float32)
    png = png_bytes(mel)
    w, h, depth, colour = _header(png)
    assert (w, h) == (min(frames, MAX_COLUMNS), n_mels)
    assert (depth, colour) == (8, 2)  # 8-bit RGB
    assert _decode(png).shape[:2] == (n_mels, min(frames, MAX_COLUMNS))


def test_max_columns_value():
    assert MAX_COLUMNS == 800


def test_loud_is_bright_and_low_frequencies_are_at_the_bottom():
    img = _decode(png_bytes(_ramp_mel()))
    b = _brightness(img)
    # row 0 of the image is the top: the quietest (highest) band; the last row the loudest
    assert b[-1].mean() > b[0].mean() + 300
    rows = b.mean(axis=1)
    assert np.all(np.diff(rows) >= -1e-9)  # monotonically brighter towards the bottom
    # all columns alike for a time-constant mel
    assert (b == b[:, :1]).all()


def test_loud_bins_brighter_than_quiet_ones():
    rng = np.random.default_rng(1)
    mel = np.full((64, 200), -80.0, np.float32)
    loud = rng.random(mel.shape) < 0.2
    mel[loud] = 0.0
    img = _decode(png_bytes(mel))
    b = _brightness(img)[::-1]  # back to mel row order
    assert b[loud].min() > b[~loud].max()
    # the extremes are the ends of the colour ramp
    assert tuple(img[::-1][~loud][0]) == (0, 0, 4)
    assert tuple(img[::-1][loud][0]) == (252, 253, 191)


def test_values_outside_the_range_are_clipped():
    mel = np.array([[-200.0, 10.0], [-80.0, 0.0]], np.float32)
    img = _decode(png_bytes(mel))[::-1]
    assert tuple(img[0, 0]) == tuple(img[1, 0])  # -200 looks like the floor
    assert tuple(img[0, 1]) == tuple(img[1, 1])  # +10 looks like 0 dB


def test_floor_db_sets_the_dark_end():
    mel = np.full((4, 4), -60.0, np.float32)
    dark = _brightness(_decode(png_bytes(mel, floor_db=-60.0))).max()
    mid = _brightness(_decode(png_bytes(mel, floor_db=-80.0))).min()
    assert dark < mid


def test_long_mel_is_averaged_down_in_time():
    frames = 4000
    mel = np.full((8, frames), -80.0, np.float32)
    mel[:, frames // 2 :] = 0.0  # silent first half, loud second half
    img = _decode(png_bytes(mel))
    b = _brightness(img)
    assert img.shape[1] == MAX_COLUMNS
    assert b[:, : MAX_COLUMNS // 2 - 1].max() < b[:, MAX_COLUMNS // 2 + 1 :].min()


def test_idat_decompresses_to_filtered_rows():
    mel = _ramp_mel(16, 10)
    chunks = dict(_chunks(png_bytes(mel)))
    raw = zlib.decompress(chunks[b"IDAT"])
    assert len(raw) == 16 * (1 + 10 * 3)
    rows = np.frombuffer(raw, np.uint8).reshape(16, 1 + 30)
    assert (rows[:, 0] == 0).all()  # filter type "None"
    np.testing.assert_array_equal(rows[:, 1:].reshape(16, 10, 3), _decode(png_bytes(mel)))


def test_data_url():
    mel = _ramp_mel()
    url = png_data_url(mel)
    prefix = "data:image/png;base64,"
    assert url.startswith(prefix)
    assert base64.b64decode(url[len(prefix) :]) == png_bytes(mel)
