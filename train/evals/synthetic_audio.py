"""Synthetic audio with a known tempo and key, for tests and train.evals.describe_bench.

    wave = clicks(120.0, seconds=30)                      # a click on every beat
    wave = drum_loop(96.0, swing=0.62)                    # kick, snare, swung hi-hats
    wave = progression("A", "minor", bpm=96.0)            # chords and a bass line in A minor
    cases = synthetic_cases()                             # [Case(name, wave, bpm, tonic, mode)]

Everything at SAMPLE_RATE, seeded, so a test fails the same way twice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 22050
PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
# Chords as (semitones from the tonic, minor triad?) per bar.
MAJOR_PROGRESSIONS = ([(0, 0), (5, 0), (7, 0), (0, 0)], [(0, 0), (9, 1), (5, 0), (7, 0)])
MINOR_PROGRESSIONS = ([(0, 1), (5, 1), (7, 0), (0, 1)], [(0, 1), (8, 0), (10, 0), (0, 1)])


@dataclass
class Case:
    name: str
    wave: np.ndarray
    bpm: float | None  # None: no tempo (noise, silence, sustained chords)
    tonic: str | None
    mode: str | None
    kind: str


def _burst(n: int, freq: float, decay_s: float, sr: int, noise: float = 0.0, seed: int = 0):
    t = np.arange(n) / sr
    env = np.exp(-t / decay_s)
    tone = np.sin(2 * np.pi * freq * t) if freq else 0.0
    if noise:
        tone = tone + noise * np.random.default_rng(seed).standard_normal(n)
    return (env * tone).astype(np.float32)


def _place(out: np.ndarray, sound: np.ndarray, at: float, gain: float, sr: int) -> None:
    i = int(round(at * sr))
    if i >= len(out):
        return
    seg = sound[: len(out) - i]
    out[i : i + len(seg)] += gain * seg


def clicks(bpm: float, seconds: float = 30.0, sr: int = SAMPLE_RATE, accent: bool = True):
    """A 1 kHz click (20 ms) on every beat; the first of every four louder when accent."""
    out = np.zeros(int(seconds * sr), dtype=np.float32)
    click = _burst(int(0.02 * sr), 1000.0, 0.005, sr)
    for i, t in enumerate(np.arange(0, seconds, 60.0 / bpm)):
        _place(out, click, t, 1.0 if (accent and i % 4 == 0) else 0.6, sr)
    return out


def drum_loop(
    bpm: float, seconds: float = 30.0, swing: float = 0.5, sr: int = SAMPLE_RATE, seed: int = 0
):
    """Kick on beats 1 and 3, snare on 2 and 4, hi-hats on eighths, the off-beat eighth at
    `swing` of the beat (0.5 straight, 0.67 triplet swing)."""
    out = np.zeros(int(seconds * sr), dtype=np.float32)
    beat = 60.0 / bpm
    kick = _burst(int(0.25 * sr), 55.0, 0.08, sr)
    snare = _burst(int(0.2 * sr), 180.0, 0.05, sr, noise=1.0, seed=seed)
    hat = _burst(int(0.05 * sr), 0.0, 0.01, sr, noise=1.0, seed=seed + 1)
    hat = np.diff(hat, prepend=0.0).astype(np.float32)  # brighter
    for i, t in enumerate(np.arange(0, seconds, beat)):
        _place(out, kick if i % 2 == 0 else snare, t, 0.9 if i % 2 == 0 else 0.5, sr)
        _place(out, hat, t, 0.25, sr)
        _place(out, hat, t + swing * beat, 0.15, sr)
    return out


def _note(freq: float, n: int, sr: int, harmonics: int = 6) -> np.ndarray:
    t = np.arange(n) / sr
    x = sum(np.sin(2 * np.pi * freq * h * t) / h for h in range(1, harmonics + 1))
    env = np.minimum(1.0, t / 0.02) * np.exp(-t / 1.5)
    return (env * x).astype(np.float32)


def progression(
    tonic: str,
    mode: str,
    bpm: float = 100.0,
    seconds: float = 30.0,
    variant: int = 0,
    sr: int = SAMPLE_RATE,
    tuning_cents: float = 0.0,
):
    """Triads (one per bar of four beats) and a bass root, cycling a progression of the key."""
    root = 48 + PITCH_CLASSES.index(tonic)  # C3 .. B3
    chords = (MAJOR_PROGRESSIONS if mode == "major" else MINOR_PROGRESSIONS)[variant % 2]
    out = np.zeros(int(seconds * sr), dtype=np.float32)
    bar = 4 * 60.0 / bpm
    n = int(bar * sr)
    for i, t in enumerate(np.arange(0, seconds, bar)):
        step, minor = chords[i % len(chords)]
        base = root + step
        for semis in (0, 3 if minor else 4, 7):
            midi = base + semis + 12
            _place(out, _note(_hz(midi, tuning_cents), n, sr), t, 0.2, sr)
        _place(out, _note(_hz(base - 12, tuning_cents), n, sr, 3), t, 0.3, sr)
    return out


def _hz(midi: float, cents: float = 0.0) -> float:
    return 440.0 * 2 ** ((midi - 69 + cents / 100) / 12)


def _mix(*waves) -> np.ndarray:
    x = np.sum([w[: min(len(v) for v in waves)] for w in waves], axis=0)
    return (0.9 * x / np.abs(x).max()).astype(np.float32)


def synthetic_cases(seconds: float = 30.0) -> list[Case]:
    """Clicks, swung drum loops, chord progressions over drums, tempo and key changes,
    noise and silence: the synthetic half of the bench (known tempo and key)."""
    sr, cases = SAMPLE_RATE, []
    for bpm in (60.0, 72.0, 90.0, 105.0, 120.0, 128.0, 140.0, 160.0, 174.0):
        cases.append(Case(f"clicks_{bpm:g}", clicks(bpm, seconds), bpm, None, None, "clicks"))
    for i, (bpm, swing) in enumerate(((85.0, 0.6), (98.0, 0.67), (112.0, 0.5), (126.0, 0.62))):
        w = drum_loop(bpm, seconds, swing, seed=i)
        cases.append(Case(f"drums_{bpm:g}_swing{swing:g}", w, bpm, None, None, "drums"))
    keys = [("C", "major"), ("A", "minor"), ("F#", "major"), ("D#", "minor"), ("G", "major")]
    keys += [("E", "minor"), ("A#", "major"), ("C#", "minor"), ("F", "major"), ("B", "minor")]
    for i, (tonic, mode) in enumerate(keys):
        bpm = (80.0, 95.0, 110.0, 122.0, 136.0)[i % 5]
        chords = progression(tonic, mode, bpm, seconds, i // 2, tuning_cents=(-20, 0, 15)[i % 3])
        w = _mix(chords, 0.6 * drum_loop(bpm, seconds, (0.5, 0.62)[i % 2], seed=i))
        cases.append(Case(f"song_{tonic}{mode[:3]}_{bpm:g}", w, bpm, tonic, mode, "songs"))
    for i, (tonic, mode) in enumerate(keys[:4]):  # chords alone: key, no beat to speak of
        w = progression(tonic, mode, 60.0, seconds, variant=i + 1)
        cases.append(Case(f"chords_{tonic}{mode[:3]}", w, None, tonic, mode, "chords"))
    # Changes: the value held longest (20 s of 30) is the track's.
    a, b = int(seconds * 2 / 3 * sr), int(seconds * sr)
    w = np.concatenate([drum_loop(96.0, seconds)[:a], drum_loop(140.0, seconds)[: b - a]])
    cases.append(Case("tempo_change_96_to_140", w, 96.0, None, None, "changes"))
    w = np.concatenate(
        [progression("D", "major", 100.0, seconds)[:a], progression("G#", "minor", 100.0)[: b - a]]
    )
    w = _mix(w, 0.5 * drum_loop(100.0, seconds))
    cases.append(Case("key_change_Dmaj_to_G#min", w, 100.0, "D", "major", "changes"))
    rng = np.random.default_rng(7)
    noise = (0.3 * rng.standard_normal(int(seconds * sr))).astype(np.float32)
    cases.append(Case("white_noise", noise, None, None, None, "noise"))
    silence = np.zeros(int(seconds * sr), np.float32)
    cases.append(Case("silence", silence, None, None, None, "noise"))
    return cases
