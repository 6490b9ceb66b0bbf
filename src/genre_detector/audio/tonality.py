"""Key in NumPy alone: a tuned pitch-class profile from spectral peaks, matched to key profiles.

    chroma = frame_chroma(magnitude, sample_rate=11025, n_fft=1024)   # (frames / 2, 12)
    scores = key_scores(chroma.sum(axis=0))                           # (24,) majors then minors
    tonic, mode = key_name(int(np.argmax(scores)))                    # ("A", "minor")

As HPCP does (Gomez 2006): the local maxima of each frame's magnitude spectrum between
FMIN_HZ and FMAX_HZ, their frequencies refined by a parabola through the log magnitudes (a
fraction of a bin, which a 10.8 Hz bin grid needs), the track's tuning measured from them and
taken out, and each peak's weight spread over the nearest pitch class with a cosine window.
Percussive frames are damped first by keeping, per bin, the smallest magnitude over a few
frames (a cheap stand-in for harmonic-percussive separation: a drum hit lasts one or two
frames, a note many). The 12-bin profile is correlated with every rotation of a major and a
minor key profile; the best is the key.
"""

from __future__ import annotations

import functools

import numpy as np

PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
MODES = ("major", "minor")
FMIN_HZ = 50.0  # Hz: lowest spectral peak counted (G1 is 49 Hz)
FMAX_HZ = 2500.0  # Hz: highest (above, mostly harmonics and cymbals)
SUSTAIN_FRAMES = 5  # frames (~0.1 s at 23 ms hops): a bin keeps its minimum over these
FRAME_STEP = 2  # every other frame is enough for a key (46 ms apart)
PEAK_FLOOR = 1e-2  # peaks below this fraction of the frame's loudest (-40 dB) are ignored
HARMONICS = 4  # a peak counts for the pitch classes of f, f/2, .. f/HARMONICS (HPCP's)
HARMONIC_DECAY = 0.6  # weight of its h-th: HARMONIC_DECAY ** (h - 1)
TUNING_BINS = 50  # histogram bins per semitone for the tuning estimate
A4_HZ = 440.0  # Hz: reference tuning (the measured deviation is taken out)

# Key profiles, weights of the 12 pitch classes from the tonic (major, minor).
PROFILES = {
    # Krumhansl & Kessler (1982), probe-tone ratings.
    "krumhansl": (
        (6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88),
        (6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17),
    ),
    # Temperley (1999), "What's key for key?".
    "temperley": (
        (5.0, 2.0, 3.5, 2.0, 4.5, 4.0, 2.0, 4.5, 2.0, 3.5, 1.5, 4.0),
        (5.0, 2.0, 3.5, 4.5, 2.0, 4.0, 2.0, 4.5, 3.5, 2.0, 1.5, 4.0),
    ),
    # Faraldo et al. (2016), electronic dance music (EDMA), from their published tables.
    "edma": (
        (0.16519551, 0.04749026, 0.08293076, 0.06687112, 0.09994645, 0.09274123)
        + (0.05294487, 0.13159476, 0.05218986, 0.07443653, 0.06940723, 0.0642515),
        (0.17235348, 0.05336489, 0.0761009, 0.10043649, 0.05621498, 0.08527853)
        + (0.0497915, 0.13451001, 0.07458916, 0.05003023, 0.09187879, 0.05545106),
    ),
    # Sha'ath (2011), KeyFinder's profile.
    "shaath": (
        (6.6, 2.0, 3.5, 2.3, 4.6, 4.0, 2.5, 5.2, 2.4, 3.7, 2.3, 3.4),
        (6.5, 2.7, 3.5, 5.4, 2.6, 3.5, 2.5, 5.2, 4.0, 2.7, 4.3, 3.2),
    ),
}
PROFILE = "edma"  # the one used (docs/api.md: the profiles compared)


def frame_chroma(magnitude: np.ndarray, sample_rate: float, n_fft: int) -> np.ndarray:
    """(frames // FRAME_STEP, 12) float32 pitch-class energy per kept frame (C first),
    the track's tuning taken out."""
    mag = np.asarray(magnitude, dtype=np.float32)
    lo, hi = _bin_range(sample_rate, n_fft, mag.shape[1])
    sustained = _running_min(mag[:, lo - 1 : hi + 1], SUSTAIN_FRAMES)[::FRAME_STEP]
    n_frames = sustained.shape[0]
    out = np.zeros((n_frames, 12), dtype=np.float32)
    if n_frames == 0 or not np.any(sustained):
        return out
    a, b, c = sustained[:, :-2], sustained[:, 1:-1], sustained[:, 2:]
    floor = PEAK_FLOOR * sustained.max(axis=1, keepdims=True)
    t, k = np.nonzero((b > a) & (b >= c) & (b > floor))
    if len(t) == 0:
        return out
    la, lb, lc = (np.log(x[t, k] + np.float32(1e-12)) for x in (a, b, c))
    shift = np.float32(0.5) * (la - lc) / np.minimum(la - 2 * lb + lc, np.float32(-1e-9))
    bins = k + (lo + np.clip(shift, -0.5, 0.5))
    pitch = np.float32(12.0) * np.log2(bins * np.float32(sample_rate / n_fft / A4_HZ)) + 69
    weight = b[t, k]
    pitch -= _tuning(pitch, weight)
    for h in range(1, HARMONICS + 1):  # a peak also counts for the notes it may be a harmonic of
        p = pitch - np.float32(12.0 * np.log2(h))
        nearest = np.rint(p)
        w = weight * np.float32(HARMONIC_DECAY ** (h - 1))
        w = w * np.cos(np.float32(np.pi) * (p - nearest)) ** 2  # 1 on a semitone, 0 between two
        flat = t * 12 + (nearest.astype(np.int64) % 12)
        out += np.bincount(flat, weights=w, minlength=n_frames * 12).reshape(n_frames, 12)
    return out


@functools.lru_cache(maxsize=4)
def _bin_range(sample_rate: float, n_fft: int, n_bins: int) -> tuple[int, int]:
    lo = max(1, int(np.ceil(FMIN_HZ * n_fft / sample_rate)))
    hi = min(n_bins - 2, int(FMAX_HZ * n_fft / sample_rate))
    return lo, hi


def _running_min(x: np.ndarray, width: int) -> np.ndarray:
    """Per bin, the minimum over `width` frames centred on each frame (edges: fewer)."""
    out = x.copy()
    for d in range(1, width // 2 + 1):
        np.minimum(out[d:], x[:-d], out=out[d:])
        np.minimum(out[:-d], x[d:], out=out[:-d])
    return out


def _tuning(pitch: np.ndarray, weight: np.ndarray) -> float:
    """The weighted circular mean of the peaks' deviation from equal temperament, in
    semitones (-0.5, 0.5], from a histogram of TUNING_BINS bins."""
    frac = pitch - np.floor(pitch)
    idx = np.minimum((frac * TUNING_BINS).astype(np.int64), TUNING_BINS - 1)
    hist = np.bincount(idx, weights=weight, minlength=TUNING_BINS)
    z = np.sum(hist * np.exp(2j * np.pi * (np.arange(TUNING_BINS) + 0.5) / TUNING_BINS))
    return float(np.angle(z) / (2 * np.pi)) if abs(z) > 0 else 0.0


@functools.lru_cache(maxsize=len(PROFILES))
def _templates(profile: str) -> np.ndarray:
    """(24, 12) zero-mean, unit-norm rotations: C major .. B major, C minor .. B minor."""
    rows = []
    for mode in PROFILES[profile]:
        p = np.asarray(mode, dtype=np.float64)
        for tonic in range(12):
            rows.append(np.roll(p, tonic))
    t = np.array(rows)
    t -= t.mean(axis=1, keepdims=True)
    return t / np.linalg.norm(t, axis=1, keepdims=True)


def key_scores(chroma: np.ndarray, profile: str = PROFILE) -> np.ndarray:
    """(..., 24) Pearson correlation of 12-bin profiles with each key (majors C..B, then
    minors C..B); 0 for an empty or flat profile."""
    c = np.asarray(chroma, dtype=np.float64)
    c = c - c.mean(axis=-1, keepdims=True)
    norm = np.linalg.norm(c, axis=-1, keepdims=True)
    c = np.divide(c, norm, out=np.zeros_like(c), where=norm > 1e-12)
    return c @ _templates(profile).T


def key_name(index: int) -> tuple[str, str]:
    """(tonic, mode) of key index 0..23 (key_scores' order)."""
    return PITCH_CLASSES[index % 12], MODES[index // 12]


def camelot(tonic: str, mode: str) -> str:
    """The Camelot wheel code: '8B' for C major, '8A' for A minor (its relative)."""
    pc = PITCH_CLASSES.index(tonic)
    major_pc = pc if mode == "major" else (pc + 3) % 12
    return f"{(7 * major_pc + 7) % 12 + 1}{'B' if mode == 'major' else 'A'}"
