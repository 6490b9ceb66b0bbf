"""Mel spectrograms in NumPy alone: what librosa computes, without librosa at serve time.

    power = stft_power(wave, n_fft=2048, hop_length=1024)          # (1 + n_fft // 2, frames)
    mel = mel_filterbank(22050, 2048, 64, 20.0, 11025.0) @ power  # (64, frames)
    db = power_to_db(mel, top_db=80.0)                            # dB re the loudest bin

The same arithmetic as librosa 0.11's `stft(center=True, pad_mode="constant")` with a
periodic Hann window, `filters.mel(htk=False, norm="slaney")` and `power_to_db(ref=np.max)`
(tests/test_melspec.py checks them against librosa on real clips). librosa pulls numba and
llvmlite into the serving image (about 210 MB) and compiles on its first call in every
process (seconds of cold start); the models never needed more than this.
"""

from __future__ import annotations

import functools

import numpy as np

# Slaney's mel scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above.
_F_SP = 200.0 / 3
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    hz = np.asanyarray(hz, dtype=np.float64)
    mel = hz / _F_SP
    high = hz >= _MIN_LOG_HZ
    return np.where(
        high, _MIN_LOG_MEL + np.log(np.maximum(hz, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP, mel
    )


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    mel = np.asanyarray(mel, dtype=np.float64)
    hz = _F_SP * mel
    return np.where(mel >= _MIN_LOG_MEL, _MIN_LOG_HZ * np.exp(_LOGSTEP * (mel - _MIN_LOG_MEL)), hz)


def mel_filterbank(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """(n_mels, 1 + n_fft // 2) float32 triangular filters, Slaney area-normalised."""
    fft_hz = np.fft.rfftfreq(n_fft, 1.0 / sr)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_hz[None, :]
    weights = np.zeros((n_mels, len(fft_hz)), dtype=np.float32)
    for i in range(n_mels):
        rising = -ramps[i] / widths[i]
        falling = ramps[i + 2] / widths[i + 1]
        weights[i] = np.maximum(0, np.minimum(rising, falling))
    weights *= (2.0 / (edges[2 : n_mels + 2] - edges[:n_mels]))[:, None]
    return weights


@functools.lru_cache(maxsize=8)
def hann(n: int) -> np.ndarray:
    """Periodic Hann window (scipy's get_window("hann", n, fftbins=True))."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)


def stft_power(wave: np.ndarray, n_fft: int, hop_length: int) -> np.ndarray:
    """(1 + n_fft // 2, frames) float32 |STFT|^2; frames centred (n_fft // 2 zeros padded
    at each end), so frame t is centred on sample t * hop_length."""
    padded = np.pad(np.asarray(wave, dtype=np.float32), n_fft // 2)
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop_length]
    window = hann(n_fft)
    power = np.empty((len(frames), n_fft // 2 + 1), dtype=np.float32)
    block = max(16, 2**19 // (8 * n_fft))  # frames per FFT call: ~512 KB, cache-sized
    for a in range(0, len(frames), block):
        # float64 like librosa (NumPy's float64 FFT is also the faster one), then complex64
        spec = np.fft.rfft(frames[a : a + block] * window, axis=-1).astype(np.complex64)
        power[a : a + block] = np.abs(spec) ** 2
    return power.T


def power_to_db(power: np.ndarray, top_db: float, amin: float = 1e-10) -> np.ndarray:
    """10 log10(power) re the loudest bin, floored at -top_db (librosa's ref=np.max)."""
    db = 10.0 * np.log10(np.maximum(amin, power))
    db -= 10.0 * np.log10(np.maximum(amin, power.max()))
    return np.maximum(db, db.max() - top_db)
