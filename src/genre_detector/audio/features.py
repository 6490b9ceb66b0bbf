"""Log-mel spectrogram windows: the one feature function shared by training and serving.

    from genre_detector.audio.features import FeatureSettings, extract_windows, extract_feature_sets
    batch = extract_windows("track.mp3", FeatureSettings())   # path, bytes or waveform
    batch.windows.shape  # (n_windows, n_mels, window_frames)
    batches = extract_feature_sets(data, [FeatureSettings(), MUSICNN_SETTINGS])  # one decode
    batches[s].analysis  # tempo and key evidence of the whole track (audio.analysis)

Two scales. "db" (the research families): a track's log-mel in dB relative to its loudest
bin, floored at -top_db, so values lie in [-top_db, 0] whatever the recording level.
"log10" (musicnn): log10(1 + 10000 * mel power), the pretrained network's own input.
Fixed-size windows are cut from it with overlap; a long track keeps at most `max_windows`,
spread evenly over its whole length (not only its start), so cost per request is bounded.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genre_detector.audio import melspec
from genre_detector.audio.analysis import TrackAnalysis, analyse
from genre_detector.audio.decode import SAMPLE_RATE, AudioSource, decode, resample

SCALES = ("db", "log10")


@dataclass(frozen=True)
class FeatureSettings:
    """Everything that defines the model input; saved with every trained model."""

    sample_rate: int = SAMPLE_RATE  # Hz
    n_fft: int = 2048  # samples: 93 ms analysis frame
    hop_length: int = 1024  # samples: 46.4 ms between frames
    n_mels: int = 64  # mel bands
    fmin: float = 20.0  # Hz
    fmax: float = 11025.0  # Hz (Nyquist at 22.05 kHz)
    top_db: float = 80.0  # dB: floor below the track's loudest bin
    window_frames: int = 64  # frames: 64 * 1024 / 22050 = 2.97 s per window
    window_hop_frames: int = 32  # frames: 1.49 s between window starts (50 % overlap)
    max_windows: int = 40  # cap per track: 40 windows cover ~60 s densely
    scale: str = "db"  # "db" (re loudest bin) or "log10" (log10(1 + 1e4 * power))

    def __post_init__(self):
        if self.scale not in SCALES:
            raise ValueError(f"unknown scale {self.scale!r}; valid: {', '.join(SCALES)}")

    @property
    def floor(self) -> float:
        """The value of silence on this scale (pads a just-long-enough clip)."""
        return -self.top_db if self.scale == "db" else 0.0

    @property
    def frame_seconds(self) -> float:
        """Seconds from one frame (STFT hop) to the next."""
        return self.hop_length / self.sample_rate

    @property
    def window_seconds(self) -> float:
        return self.window_frames * self.frame_seconds

    @property
    def min_samples(self) -> int:
        """Samples needed for one full window (centered STFT frames)."""
        return (self.window_frames - 1) * self.hop_length + 1

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureSettings":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def fingerprint(self) -> str:
        d = self.to_dict()
        if d["scale"] == "db":  # the fingerprints (feature caches) from before scales
            del d["scale"]
        return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


# musicnn's input (Pons & Serra 2019): 16 kHz, 512-sample frames every 256 samples, 96 mel
# bands, log10(1 + 10000 x); 187 frames = 3 s patches. Patches do not overlap (as in the
# original extractor), and at most 5 are kept, spread over the track: in 5-fold artist
# cross-validation 5 windows were as accurate as 10 at half the CPU (python -m
# train.experiments.musicnn_cost; models/MODEL_CARD.md).
MUSICNN_SETTINGS = FeatureSettings(
    sample_rate=16000,
    n_fft=512,
    hop_length=256,
    n_mels=96,
    fmin=0.0,
    fmax=8000.0,
    window_frames=187,
    window_hop_frames=187,
    max_windows=5,
    scale="log10",
)


@dataclass
class WindowBatch:
    windows: np.ndarray  # (n, n_mels, window_frames) float32 in [-top_db, 0] dB
    start_s: np.ndarray  # (n,) start time of each window in seconds
    end_s: np.ndarray  # (n,) end time of each window in seconds
    duration_s: float  # decoded duration of the whole track in seconds
    mel: np.ndarray  # (n_mels, frames) the whole track's log-mel, for pictures
    # The track's tempo and key evidence (audio.analysis), the same object in every batch of
    # one extract_feature_sets call; None where windows were cut from stored log-mels.
    analysis: TrackAnalysis | None = None


@functools.lru_cache(maxsize=None)
def _mel_basis(s: FeatureSettings) -> np.ndarray:
    return melspec.mel_filterbank(s.sample_rate, s.n_fft, s.n_mels, s.fmin, s.fmax)


def log_mel(wave: np.ndarray, s: FeatureSettings) -> np.ndarray:
    """(n_mels, frames) float32 log-mel: in dB re the loudest bin, in [-top_db, 0], or
    log10(1 + 10000 * power) >= 0 (scale "log10"). NumPy only (genre_detector.audio.melspec:
    librosa's arithmetic, checked against it by tests/test_melspec.py)."""
    mel = _mel_basis(s) @ melspec.stft_power(wave, s.n_fft, s.hop_length)
    if s.scale == "log10":
        return np.log10(1.0 + 10000.0 * mel).astype(np.float32)
    return melspec.power_to_db(mel, top_db=s.top_db).astype(np.float32)


def window_starts(n_frames: int, s: FeatureSettings) -> np.ndarray:
    """Start frames of the windows: every window_hop_frames, thinned evenly to max_windows."""
    last = max(n_frames - s.window_frames, 0)
    starts = np.arange(0, last + 1, s.window_hop_frames)
    if starts[-1] != last:  # let the final window reach the track's end
        if last - starts[-1] < s.window_hop_frames // 2 and len(starts) > 1:
            starts[-1] = last  # nudge rather than add a near-duplicate
        else:
            starts = np.append(starts, last)
    if len(starts) > s.max_windows:
        starts = np.round(np.linspace(0, last, s.max_windows)).astype(int)
    return starts


def cut_windows(mel: np.ndarray, starts: np.ndarray, s: FeatureSettings) -> np.ndarray:
    if mel.shape[1] < s.window_frames:  # pad a just-long-enough clip at the floor
        mel = np.pad(mel, ((0, 0), (0, s.window_frames - mel.shape[1])), constant_values=s.floor)
    return np.stack([mel[:, i : i + s.window_frames] for i in starts]).astype(np.float32)


def extract_windows(
    source: AudioSource | np.ndarray, s: FeatureSettings = FeatureSettings(), **decode_kwargs
) -> WindowBatch:
    """Decode (unless given a waveform at s.sample_rate) and cut log-mel windows."""
    if isinstance(source, np.ndarray):
        return _windows(source, s)
    return extract_feature_sets(source, [s], **decode_kwargs)[s]


def extract_feature_sets(
    source: AudioSource | tuple[np.ndarray, int],
    settings: list[FeatureSettings] | tuple[FeatureSettings, ...],
    **decode_kwargs,
) -> dict[FeatureSettings, WindowBatch]:
    """Decode once, then the windows of every settings set (each at its own sample rate),
    each carrying the track's tempo and key evidence (audio.analysis, computed once).

    `source` is anything `decode` takes, or an already decoded (waveform, rate) pair."""
    wave, sr = source if isinstance(source, tuple) else decode(source, **decode_kwargs)
    track = analyse(wave, sr)
    out: dict[FeatureSettings, WindowBatch] = {}
    for s in dict.fromkeys(settings):
        out[s] = dataclasses.replace(_windows(resample(wave, sr, s.sample_rate), s), analysis=track)
    return out


def _windows(wave: np.ndarray, s: FeatureSettings) -> WindowBatch:
    mel = log_mel(np.asarray(wave, dtype=np.float32), s)
    starts = window_starts(mel.shape[1], s)
    frame_s = s.frame_seconds
    duration = len(wave) / s.sample_rate
    return WindowBatch(
        windows=cut_windows(mel, starts, s),
        start_s=starts * frame_s,
        end_s=np.minimum((starts + s.window_frames) * frame_s, duration),
        duration_s=duration,
        mel=mel,
    )


def warm_up(settings=(FeatureSettings(),)) -> None:
    """The first decode/feature call in a process pays for imports and caches (soxr, the mel
    bases): make it on 4 s of noise, before any real track."""
    wave = np.random.default_rng(0).standard_normal(16000 * 4).astype(np.float32) * 0.1
    extract_feature_sets((wave, 16000), list(settings))


# The modules whose code turns audio bytes into these log-mels: what caches of features are
# keyed by besides the settings (train/data.py, train/pretrained.py), so that a change to any
# of them is never scored on stale files.
FEATURE_CODE = ("decode.py", "melspec.py", "features.py")


def code_fingerprint(files=FEATURE_CODE, folder=None) -> str:
    """12 hex digits of a sha1 over the source of the feature code."""
    folder = Path(folder) if folder is not None else Path(__file__).parent
    h = hashlib.sha1()
    for name in files:
        h.update(name.encode() + b"\0" + (folder / name).read_bytes())
    return h.hexdigest()[:12]
