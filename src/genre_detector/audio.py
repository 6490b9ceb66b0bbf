"""Decode any audio a user has into one mono float32 waveform at the rate a model needs.

    from genre_detector.audio import decode, load_audio, resample
    wave = load_audio("track.mp3")                    # or bytes, or a binary file object
    wave16k = load_audio("track.mp3", sample_rate=16000)
    native, sr = decode("track.mp3")                  # decode once, resample per model

libsndfile (via soundfile) reads WAV, FLAC, OGG/Vorbis, MP3, AU and AIFF in-process;
anything it cannot read (M4A/AAC, ...) goes through ffmpeg when it is installed.
Every failure is reported once, here, as AudioError with a machine-readable `reason`.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
import soundfile as sf

from .errors import UNDECODABLE, GenreError

SAMPLE_RATE = 22050  # Hz: default rate (the research families' features)
MIN_SECONDS = 3.0  # s: shorter clips cannot fill one analysis window (see features.py)
MAX_SECONDS = 15 * 60.0  # s: default limit on decoded duration
SILENCE_PEAK = 1e-4  # full-scale amplitude: a clip whose peak stays below this is silent
FFMPEG_TIMEOUT = 120  # s: wall-clock limit for one ffmpeg decode
# File name extensions treated as audio when walking folders (training data, catalogs).
AUDIO_EXTENSIONS = frozenset(
    {
        ".wav",
        ".mp3",
        ".flac",
        ".ogg",
        ".oga",
        ".au",
        ".snd",
        ".aiff",
        ".aif",
        ".m4a",
        ".aac",
        ".mp4",
        ".opus",
        ".wma",
    }
)

AudioSource = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO]

# Leading bytes of the containers we know; used to tell "truncated" from "not audio".
_MAGIC = (
    b"RIFF",
    b"RIFX",
    b"RF64",
    b"fLaC",
    b"OggS",
    b"ID3",
    b"FORM",
    b".snd",
    b"\xff\xfb",
    b"\xff\xf3",
    b"\xff\xf2",
    b"\xff\xfa",
)


def _has_audio_header(data: bytes) -> bool:
    return data.startswith(_MAGIC) or data[4:8] == b"ftyp"


class AudioError(GenreError):
    """The input could not be turned into a usable waveform (a ValueError).

    `reason` (also `code`) is one of: not_audio, empty, truncated, ffmpeg_missing (the bytes
    are not decodable: HTTP 415) or too_short, too_long, silent, non_finite (decodable but
    unusable: HTTP 422); see errors.AUDIO_REASONS.
    """

    UNDECODABLE = UNDECODABLE

    def __init__(self, reason: str, detail: str):
        super().__init__(reason, detail)
        self.reason = reason


def _read_bytes(source: AudioSource) -> tuple[bytes, str]:
    """Return (bytes, name for messages)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), "the uploaded data"
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            return path.read_bytes(), str(path)
        except OSError as exc:
            raise AudioError("not_audio", f"cannot read {path}: {exc.strerror or exc}") from exc
    return source.read(), str(getattr(source, "name", "the audio stream"))


def _decode_soundfile(data: bytes, max_seconds: float) -> tuple[np.ndarray, int]:
    with sf.SoundFile(io.BytesIO(data)) as f:
        if f.frames > 0 and f.samplerate > 0 and f.frames / f.samplerate > max_seconds + 1:
            raise AudioError(
                "too_long",
                f"{f.frames / f.samplerate:.0f} s is longer than the limit of {max_seconds:.0f} s",
            )
        wave = f.read(dtype="float32", always_2d=True)
        return wave, f.samplerate


FFMPEG_RATE = 44100  # Hz: what ffmpeg decodes to before our own resampling


def _decode_ffmpeg(data: bytes, name: str, max_seconds: float) -> tuple[np.ndarray, int]:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise AudioError(
            "ffmpeg_missing",
            f"{name} is not WAV/FLAC/OGG/MP3/AU/AIFF; decoding "
            "other formats (M4A/AAC, ...) needs ffmpeg, which is not installed",
        )
    # A file, not a pipe: MP4/M4A keep their index at the end, which ffmpeg cannot seek to
    # on stdin. `-t` stops decoding just past the limit so huge uploads cost no memory.
    with tempfile.NamedTemporaryFile(prefix="genre-decode-") as tmp:
        tmp.write(data)
        tmp.flush()
        cmd = [
            ffmpeg,
            "-nostdin",
            "-hide_banner",
            "-loglevel",
            "error",
            "-i",
            tmp.name,
            "-t",
            str(max_seconds + 1),
            "-vn",
            "-f",
            "f32le",
            "-ac",
            "1",
            "-ar",
            str(FFMPEG_RATE),
            "pipe:1",
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, timeout=FFMPEG_TIMEOUT)
        except subprocess.TimeoutExpired as exc:
            raise AudioError(
                "not_audio", f"ffmpeg gave up on {name} after {FFMPEG_TIMEOUT} s"
            ) from exc
    if proc.returncode != 0 or not proc.stdout:
        msg = (
            proc.stderr.decode(errors="replace")
            .replace(f"{tmp.name}: ", "")
            .replace(tmp.name, name)
            .strip()
            .splitlines()
        )
        raise AudioError(
            "not_audio", f"{name} is not decodable audio ({msg[-1] if msg else 'no audio stream'})"
        )
    return np.frombuffer(proc.stdout, dtype="<f4").reshape(-1, 1), FFMPEG_RATE


def resample(wave: np.ndarray, orig_sr: int, target_sr: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited resampling (soxr, high quality); a no-op at the target rate."""
    if orig_sr == target_sr:
        return wave
    import soxr

    return soxr.resample(wave, orig_sr, target_sr, quality="HQ").astype(np.float32, copy=False)


def decode(
    source: AudioSource, *, max_seconds: float = MAX_SECONDS, min_seconds: float = MIN_SECONDS
) -> tuple[np.ndarray, int]:
    """Decode `source` (path, bytes or binary file) to (mono float32, its native rate).

    Checks everything that does not depend on the target rate. Raises AudioError (see its
    docstring for the reasons).
    """
    data, name = _read_bytes(source)
    if len(data) == 0:
        raise AudioError("empty", f"{name} is empty (0 bytes)")
    try:
        wave, sr = _decode_soundfile(data, max_seconds)
    except AudioError:
        raise
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError):
        try:
            wave, sr = _decode_ffmpeg(data, name, max_seconds)
        except AudioError as exc:
            if exc.reason == "not_audio" and _has_audio_header(data):
                raise AudioError(
                    "truncated",
                    f"{name} starts like an audio file but cannot be "
                    f"decoded: cut short or damaged ({len(data)} bytes)",
                ) from exc
            raise
    if wave.size == 0:
        raise AudioError("truncated", f"{name} has a valid header but holds no samples")
    mono = wave.mean(axis=1, dtype=np.float32) if wave.shape[1] > 1 else wave[:, 0]
    if not np.isfinite(mono).all():
        raise AudioError("non_finite", f"{name} contains NaN or infinite samples")
    seconds = len(mono) / sr
    if seconds < min_seconds:
        raise AudioError(
            "too_short",
            f"{seconds:.2f} s of audio is shorter than the "
            f"{min_seconds:.2f} s needed for one analysis window",
        )
    if seconds > max_seconds:
        raise AudioError(
            "too_long", f"{seconds:.0f} s is longer than the limit of {max_seconds:.0f} s"
        )
    if float(np.max(np.abs(mono))) < SILENCE_PEAK:
        raise AudioError("silent", f"{name} is silent (peak below {SILENCE_PEAK:g} full scale)")
    return np.ascontiguousarray(mono), sr


def load_audio(
    source: AudioSource,
    *,
    sample_rate: int = SAMPLE_RATE,
    max_seconds: float = MAX_SECONDS,
    min_seconds: float = MIN_SECONDS,
) -> np.ndarray:
    """Decode `source` (path, bytes or binary file) to mono float32 at `sample_rate`.

    Raises AudioError (see its docstring for the reasons).
    """
    mono, sr = decode(source, max_seconds=max_seconds, min_seconds=min_seconds)
    return resample(mono, sr, sample_rate)
