"""Tempo in NumPy alone: a multi-band onset envelope, then comb-filtered autocorrelation.

    env = onset_envelope(magnitude, 11025, n_fft=1024, hop_length=256)  # (frames,)
    scores = tempo_scores(env[a:b], frame_rate)                      # (len(BPM_GRID),)
    bpm = BPM_GRID[np.argmax(scores * tempo_prior())]

The steps of Percival & Tzanetakis's streamlined tempo estimation (2014), without its
trained octave decider: log-compressed spectral flux (here summed in a few frequency bands,
each normalised, so a kick drum and a hi-hat weigh alike), a generalised autocorrelation per
block of a few seconds, and every candidate period scored by the autocorrelation at its first
multiples (a comb, which also sharpens the estimate to a fraction of a frame). What remains
ambiguous, a tempo or its half or double, is decided by a log-normal prior around 120 BPM,
as librosa's `beat.tempo` does; the caller reports the other octave when it scores nearly
as well.
"""

from __future__ import annotations

import functools

import numpy as np

# Flux bands (Hz): kick, bass/low toms, snare body, snare/claps, hats/cymbals.
BAND_EDGES_HZ = (0.0, 150.0, 400.0, 1200.0, 3500.0, 5512.5)
SUB_BANDS = 48  # log-spaced sub-bands the flux is taken in (the FFT bins summed)
LOG_GAIN = 1000.0  # log(1 + LOG_GAIN * magnitude / track's loudest sub-band): compression
LOCAL_MEAN_S = 0.5  # s: window of the moving mean subtracted from each band's flux
ACF_POWER = 0.5  # generalised autocorrelation: |FFT|^ACF_POWER (2 = the plain one)
# Candidate tempi: 30 to 300 BPM on a log grid, 0.5 % apart (sub-grid by interpolation).
BPM_GRID = 30.0 * 1.005 ** np.arange(int(np.log(10.0) / np.log(1.005)) + 1)
COMB_WEIGHTS = (1.0, 0.5, 0.33, 0.25)  # autocorrelation at 1, 2, 3, 4 periods
PRIOR_BPM = 120.0  # BPM: centre of the prior on tempo
PRIOR_OCTAVES = 1.0  # its standard deviation in octaves (log2 BPM)


def onset_envelope(
    magnitude: np.ndarray, sample_rate: float, n_fft: int, hop_length: int
) -> np.ndarray:
    """(frames,) float32 onset strength >= 0 from (frames, bins) STFT magnitudes: the
    half-wave rectified flux of log-compressed sub-band magnitudes (SUB_BANDS of them, log
    spaced), summed per band of BAND_EDGES_HZ, less its moving mean, each band scaled to unit
    standard deviation, summed. Zero for silence."""
    mag = np.asarray(magnitude, dtype=np.float32)
    if mag.shape[0] < 2 or not np.any(mag):
        return np.zeros(mag.shape[0], dtype=np.float32)
    starts, groups = _sub_bands(sample_rate, n_fft, mag.shape[1])
    sub = np.add.reduceat(mag, starts, axis=1)  # (frames, sub-bands); no BLAS threads
    log = np.log1p(np.float32(LOG_GAIN) / max(float(sub.max()), 1e-12) * sub)
    flux = np.maximum(np.diff(log, axis=0, prepend=log[:1]), 0.0)
    bands = np.add.reduceat(flux, groups, axis=1)  # (frames, n_bands)
    width = max(1, int(round(LOCAL_MEAN_S * sample_rate / hop_length)))
    kernel = np.ones(width, dtype=np.float32) / width
    env = np.zeros(len(bands), dtype=np.float32)
    for b in bands.T:
        b = np.maximum(b - np.convolve(b, kernel, mode="same"), 0.0)
        sd = b.std()
        if sd > 1e-8:
            env += b / sd
    return env


@functools.lru_cache(maxsize=4)
def _sub_bands(sample_rate: float, n_fft: int, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """The first FFT bin of each log-spaced sub-band (up to SUB_BANDS, from 30 Hz to the top
    band edge; empty ones dropped), and the first sub-band of each band of BAND_EDGES_HZ."""
    hz = np.arange(n_bins) * sample_rate / n_fft
    edges = np.geomspace(30.0, BAND_EDGES_HZ[-1], SUB_BANDS + 1)
    edges[0] = 0.0
    which = np.clip(np.searchsorted(edges, hz, side="right") - 1, 0, SUB_BANDS - 1)
    starts = np.flatnonzero(np.diff(which, prepend=-1))  # where a new sub-band begins
    lower = edges[which[starts]]
    groups = np.unique(np.searchsorted(lower, BAND_EDGES_HZ[:-1]))
    return starts, groups[groups < len(starts)]


def autocorrelation(env: np.ndarray) -> np.ndarray:
    """Generalised autocorrelation of the mean-removed envelope, normalised to 1 at lag 0
    (all zeros for a flat envelope); biased, so long lags weigh less."""
    x = np.asarray(env, dtype=np.float64)
    x = x - x.mean()
    n = len(x)
    spec = np.abs(np.fft.rfft(x, 2 * n)) ** ACF_POWER
    acf = np.fft.irfft(spec, 2 * n)[:n]
    return acf / acf[0] if acf[0] > 1e-12 else np.zeros(n)


def tempo_scores(env: np.ndarray, frame_rate: float) -> np.ndarray:
    """(len(BPM_GRID),) how periodic the envelope is at each candidate tempo: the
    autocorrelation at 1..4 beat periods, weighted by COMB_WEIGHTS (multiples beyond the
    block's last lag count as 0). In [-1, 1]; 0 for a flat envelope."""
    acf = autocorrelation(env)
    lags = 60.0 * frame_rate / BPM_GRID
    out = np.zeros(len(BPM_GRID))
    for k, w in enumerate(COMB_WEIGHTS, start=1):
        out += w * np.interp(k * lags, np.arange(len(acf)), acf, right=0.0)
    return out / sum(COMB_WEIGHTS)


@functools.lru_cache(maxsize=1)
def tempo_prior() -> np.ndarray:
    """(len(BPM_GRID),) log-normal weight of each candidate tempo, 1 at PRIOR_BPM."""
    return np.exp(-0.5 * (np.log2(BPM_GRID / PRIOR_BPM) / PRIOR_OCTAVES) ** 2)


def peak_bpm(curve: np.ndarray) -> tuple[float, int]:
    """(bpm, grid index) of the curve's highest point, refined between grid points by a
    parabola through it and its neighbours."""
    i = int(np.argmax(curve))
    bpm = float(BPM_GRID[i])
    if 0 < i < len(curve) - 1:
        a, b, c = curve[i - 1], curve[i], curve[i + 1]
        den = a - 2 * b + c
        if den < 0:
            shift = 0.5 * (a - c) / den
            bpm *= 1.005 ** float(np.clip(shift, -0.5, 0.5))
    return bpm, i


def score_at(curve: np.ndarray, bpm: float) -> float:
    """The curve read at any tempo (linear in log BPM); 0 outside the grid."""
    pos = np.log(bpm / BPM_GRID[0]) / np.log(1.005)
    return float(np.interp(pos, np.arange(len(curve)), curve, left=0.0, right=0.0))
