"""Decode any audio a user has into one mono float32 waveform at the rate a model needs.

    from genre_detector.audio.decode import decode, load_audio, resample
    wave = load_audio("track.mp3")                    # or bytes, or a binary file object
    wave16k = load_audio("track.mp3", sample_rate=16000)
    native, sr = decode("track.mp3")                  # decode once, resample per model

libsndfile (via soundfile) reads WAV, FLAC, OGG/Vorbis, MP3, AU and AIFF in-process;
anything it cannot read (M4A/AAC, ...) goes through FFmpeg's decoders, in-process too (PyAV).
Every failure is reported once, here, as AudioError with a machine-readable `reason`.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
import soundfile as sf

from genre_detector.errors import UNDECODABLE, GenreError

SAMPLE_RATE = 22050  # Hz: default rate (the research families' features)
MIN_SECONDS = 3.0  # s: shorter clips cannot fill one analysis window (see features.py)
MAX_SECONDS = 15 * 60.0  # s: default limit on decoded duration
SILENCE_PEAK = 1e-4  # full-scale amplitude: a clip whose peak stays below this is silent
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


def _decode_av(data: bytes, name: str, max_seconds: float) -> tuple[np.ndarray, int]:
    """FFmpeg's decoders in-process through PyAV (its wheel bundles them): no ffmpeg
    program, no subprocess and no temp file. Reads from memory with seeking, so MP4/M4A
    with their index at the end decode too; stops just past `max_seconds`."""
    try:
        import av
    except ImportError as exc:
        raise AudioError(
            "ffmpeg_missing",
            f"{name} is not WAV/FLAC/OGG/MP3/AU/AIFF; decoding other formats (M4A/AAC, ...) "
            "needs FFmpeg through PyAV (the `av` package), which is not installed",
        ) from exc
    chunks: list[np.ndarray] = []
    try:
        with av.open(io.BytesIO(data), mode="r", metadata_errors="ignore") as container:
            stream = next((s for s in container.streams if s.type == "audio"), None)
            if stream is None:
                raise AudioError("not_audio", f"{name} holds no audio stream")
            # planar float32, the source's own channels and rate (mixed and resampled later)
            to_float = av.AudioResampler(format="fltp")
            rate, n = 0, 0
            for frame in container.decode(stream):
                for out in to_float.resample(frame):
                    rate = rate or out.sample_rate
                    chunks.append(out.to_ndarray())
                    n += out.samples
                if rate and n > (max_seconds + 1) * rate:
                    break
            for out in to_float.resample(None):  # what the resampler still holds
                rate = rate or out.sample_rate
                chunks.append(out.to_ndarray())
    except av.FFmpegError as exc:
        raise AudioError(
            "not_audio", f"{name} is not decodable audio ({exc.strerror or exc})"
        ) from exc
    if not chunks:
        raise AudioError("not_audio", f"{name} is not decodable audio (no audio frames)")
    return np.ascontiguousarray(np.concatenate(chunks, axis=1).T, dtype=np.float32), rate


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
            wave, sr = _decode_av(data, name, max_seconds)
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
