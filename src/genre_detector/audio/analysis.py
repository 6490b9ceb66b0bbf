"""Tempo and key evidence of a whole track, per block of a few seconds, from one cheap STFT.

    analysis = analyse(wave, sample_rate)       # any rate: resampled to ANALYSIS_RATE
    analysis.tempo_scores    # (n_blocks, len(rhythm.BPM_GRID)) periodicity per block
    analysis.key_scores      # (n_blocks, 24) correlation with each key per block

audio.features.extract_feature_sets computes it beside the log-mels (one decode), so that
every caller of scoring.score_track gets the same tempo and key (scoring.descriptors turns
the blocks into the reply's `descriptors` and the timeline's per-window values). The
transform is shared by both: 11025 Hz, 1024-sample frames (93 ms, 10.8 Hz bins; peaks are
interpolated for pitch), 256-sample hops (23 ms, librosa's default onset rate).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from genre_detector.audio import melspec, rhythm, tonality

ANALYSIS_RATE = 11025  # Hz
N_FFT = 1024  # samples: 93 ms frames, 10.8 Hz bins
HOP = 256  # samples: 23.2 ms between frames (43.1 frames/s)
BLOCK_S = 12.0  # s: each block's tempo and key come from this much audio
BLOCK_HOP_S = 3.0  # s: between block starts


@dataclass(frozen=True)
class TrackAnalysis:
    """Block-wise tempo and key evidence of one track (what scoring.descriptors reads)."""

    start_s: np.ndarray  # (n_blocks,) block starts, seconds
    end_s: np.ndarray  # (n_blocks,) block ends, seconds
    tempo_scores: np.ndarray  # (n_blocks, n_bpm) float32, rhythm.tempo_scores per block
    key_scores: np.ndarray  # (n_blocks, 24) float32, tonality.key_scores per block
    chroma: np.ndarray  # (n_blocks, 12) float32 pitch-class weight per block, C first


def magnitude(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """(frames, 1 + N_FFT // 2) float32 STFT magnitudes at ANALYSIS_RATE."""
    from genre_detector.audio.decode import resample

    x = resample(np.asarray(wave, dtype=np.float32), sample_rate, ANALYSIS_RATE)
    return np.sqrt(melspec.stft_power(x, N_FFT, HOP).T)  # float32


def block_bounds(n_frames: int) -> list[tuple[int, int]]:
    """(first, end) frames of the blocks: BLOCK_S long every BLOCK_HOP_S, the last one
    ending at the track's end; one block for a track shorter than BLOCK_S."""
    fps = ANALYSIS_RATE / HOP
    size, hop = int(round(BLOCK_S * fps)), int(round(BLOCK_HOP_S * fps))
    if n_frames <= size:
        return [(0, n_frames)]
    starts = list(range(0, n_frames - size + 1, hop))
    if starts[-1] != n_frames - size:
        starts.append(n_frames - size)
    return [(a, a + size) for a in starts]


def analyse(wave: np.ndarray, sample_rate: int) -> TrackAnalysis:
    """Tempo and key evidence per block of a decoded mono waveform."""
    mag = magnitude(wave, sample_rate)
    fps = ANALYSIS_RATE / HOP
    env = rhythm.onset_envelope(mag, ANALYSIS_RATE, N_FFT, HOP)
    chroma = tonality.frame_chroma(mag, ANALYSIS_RATE, N_FFT)
    bounds = block_bounds(len(env))
    tempo = np.stack([rhythm.tempo_scores(env[a:b], fps) for a, b in bounds])
    step = tonality.FRAME_STEP  # chroma keeps every step-th frame
    block_chroma = np.stack([chroma[a // step : -(-b // step)].sum(axis=0) for a, b in bounds])
    return TrackAnalysis(
        start_s=np.array([a for a, _ in bounds]) / fps,
        end_s=np.minimum(np.array([b for _, b in bounds]) / fps, len(wave) / sample_rate),
        tempo_scores=tempo.astype(np.float32),
        key_scores=tonality.key_scores(block_chroma).astype(np.float32),
        chroma=block_chroma.astype(np.float32),
    )
