"""Tempo and key of a track and of each timeline window, from audio.analysis' blocks; mood,
GEMS emotions, voice and instruments from musicnn's window features (models.mood_heads).

    d = describe(analysis, moods)          # Descriptors, or None with neither
    d.as_dict()   # {"tempo": {"bpm", "confidence", "alternative_bpm"},
                  #  "key": {"tonic", "mode", "camelot", "confidence"},
                  #  "mood": {"quadrant", "probabilities", "arousal", "valence"},
                  #  "gems": {...nine emotions}, "voice": {...}, "instruments": {...}}
    window_values(analysis, d, start_s, end_s)   # [(bpm, "A minor"), ...] per window
    moods = MoodInput(heads, features, stats, start_s, end_s)   # what describe reads

The track's value is the one held longest: the tempo curves and key correlations of all
blocks (each BLOCK_S seconds, every BLOCK_HOP_S) are averaged, so a tempo or key that lasts
longer weighs more. A window takes the value of the block centred nearest to it. Rendering
(serve.replies, batch.rows, catalog.records) only reads this.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from genre_detector.audio import rhythm, tonality
from genre_detector.audio.analysis import TrackAnalysis

ALTERNATIVE_RATIO = 0.7  # the half/double tempo is reported when it scores this near the best
OCTAVE_TOLERANCE = 0.04  # blocks within 4 % of the track's tempo agree with it
SALIENT_ACF = 0.15  # a comb score this high (clicks: 0.14-0.19) is a fully clear beat
KEY_TEMPERATURE = 0.05  # softmax temperature over the 24 key correlations (confidence)
TONAL_SPREAD = 0.5  # pitch classes this uneven (std / mean) are fully tonal; white noise: ~0.15


@dataclass(frozen=True)
class Tempo:
    bpm: float | None  # None when the audio has no onsets (silence)
    confidence: float  # 0..1: blocks agreeing x how clear the beat is
    alternative_bpm: float | None  # half or double, when nearly as likely

    def as_dict(self) -> dict:
        r = _round1
        return {"bpm": r(self.bpm), "confidence": round(self.confidence, 2), "alternative_bpm":
                r(self.alternative_bpm)}  # fmt: skip


@dataclass(frozen=True)
class Key:
    tonic: str | None  # sharps: C, C#, ... B; None when there is no pitched content
    mode: str | None  # "major" or "minor"
    confidence: float  # 0..1: its share of a softmax over the 24 keys x how uneven the chroma is

    @property
    def camelot(self) -> str | None:
        return tonality.camelot(self.tonic, self.mode) if self.tonic else None

    @property
    def name(self) -> str | None:
        return f"{self.tonic} {self.mode}" if self.tonic else None

    def as_dict(self) -> dict:
        return {
            "tonic": self.tonic,
            "mode": self.mode,
            "camelot": self.camelot,
            "confidence": round(self.confidence, 2),
        }


BLOCKS = ("tempo", "key", "mood", "gems", "voice", "instruments")


@dataclass(frozen=True)
class MoodInput:
    """musicnn's outputs for one track, with the heads that read them (models.mood_heads)."""

    heads: object  # MoodHeads
    features: np.ndarray  # (n_windows, n_features) window outputs
    stats: np.ndarray  # the track's pooled [mean, spread] (TrackResult.embedding)
    start_s: np.ndarray
    end_s: np.ndarray


@dataclass(frozen=True)
class Descriptors:
    tempo: Tempo | None  # None (with key) where the windows came without audio.analysis
    key: Key | None
    mood: dict | None = None  # None (with gems, voice, instruments) without musicnn
    gems: dict | None = None
    voice: dict | None = None
    instruments: dict | None = None

    def as_dict(self) -> dict:
        return {
            "tempo": self.tempo.as_dict() if self.tempo is not None else None,
            "key": self.key.as_dict() if self.key is not None else None,
            "mood": self.mood,
            "gems": self.gems,
            "voice": self.voice,
            "instruments": self.instruments,
        }


def as_block(d: Descriptors | None) -> dict:
    """The `descriptors` block every rendering shows (docs/api.md); nulls without audio."""
    return d.as_dict() if d is not None else dict.fromkeys(BLOCKS)


def _round1(x: float | None) -> float | None:
    return None if x is None else round(float(x), 1)


def describe(analysis: TrackAnalysis | None, moods: MoodInput | None = None) -> Descriptors | None:
    """The track's tempo and key (None when no analysis came with the windows), and its mood,
    GEMS, voice and instruments (None unless musicnn scored it with its mood heads)."""
    if analysis is None and moods is None:
        return None
    tempo = track_tempo(analysis) if analysis is not None else None
    key = track_key(analysis) if analysis is not None else None
    blocks = moods.heads.track(moods.stats) if moods is not None else {}
    return Descriptors(tempo, key, **blocks)


def window_moods(moods: MoodInput | None, start_s, end_s) -> list[tuple]:
    """(quadrant, arousal, valence) of each timeline window: those of the musicnn window
    centred nearest to it; (None, None, None) without musicnn."""
    if moods is None or not len(moods.features):
        return [(None, None, None)] * len(start_s)
    per = moods.heads.windows(moods.features, moods.stats)
    centres = (np.asarray(moods.start_s) + np.asarray(moods.end_s)) / 2
    return [per[int(np.argmin(np.abs(centres - (s + e) / 2)))] for s, e in zip(start_s, end_s)]


def track_tempo(a: TrackAnalysis) -> Tempo:
    curves = np.asarray(a.tempo_scores, dtype=np.float64)
    mean = curves.mean(axis=0)
    if not np.any(mean > 0):
        return Tempo(None, 0.0, None)
    prior = rhythm.tempo_prior()
    bpm, _ = rhythm.peak_bpm(mean * prior)
    best = rhythm.score_at(mean * prior, bpm)
    alt = max((bpm / 2, bpm * 2), key=lambda b: rhythm.score_at(mean * prior, b))
    alternative = alt if rhythm.score_at(mean * prior, alt) >= ALTERNATIVE_RATIO * best else None
    blocks = np.array([rhythm.peak_bpm(c * prior)[0] for c in curves])
    agree = float(np.mean(np.abs(blocks / bpm - 1) <= OCTAVE_TOLERANCE))
    clear = float(np.clip(rhythm.score_at(mean, bpm) / SALIENT_ACF, 0.0, 1.0))
    return Tempo(bpm, agree * clear, alternative)


def _softmax_top(scores: np.ndarray) -> tuple[int, float]:
    z = (scores - scores.max()) / KEY_TEMPERATURE
    p = np.exp(z) / np.exp(z).sum()
    i = int(np.argmax(scores))
    return i, float(p[i])


def track_key(a: TrackAnalysis) -> Key:
    chroma = np.asarray(a.chroma, dtype=np.float64)
    used = chroma.sum(axis=1) > 0
    if not used.any():
        return Key(None, None, 0.0)
    scores = np.asarray(a.key_scores, dtype=np.float64)[used].mean(axis=0)
    if not np.any(scores):
        return Key(None, None, 0.0)
    i, p = _softmax_top(scores)
    total = chroma.sum(axis=0)
    tonal = float(np.clip(total.std() / total.mean() / TONAL_SPREAD, 0.0, 1.0))
    return Key(*tonality.key_name(i), p * tonal)


def window_values(
    a: TrackAnalysis | None, d: Descriptors | None, start_s, end_s
) -> list[tuple[float | None, str | None]]:
    """(bpm, key name) of each window: those of the block centred nearest to the window's
    centre (the block's own estimate, under the same prior as the track's)."""
    if a is None or d is None or d.tempo is None:
        return [(None, None)] * len(start_s)
    centres = (np.asarray(a.start_s) + np.asarray(a.end_s)) / 2
    out = []
    for s, e in zip(start_s, end_s):
        b = int(np.argmin(np.abs(centres - (s + e) / 2)))
        bpm = None
        curve = np.asarray(a.tempo_scores[b], dtype=np.float64)
        if d.tempo.bpm is not None and np.any(curve > 0):
            bpm = _round1(rhythm.peak_bpm(curve * rhythm.tempo_prior())[0])
        key = None
        if np.any(a.chroma[b] > 0) and np.any(a.key_scores[b]):
            key = " ".join(tonality.key_name(int(np.argmax(a.key_scores[b]))))
        out.append((bpm, key))
    return out
