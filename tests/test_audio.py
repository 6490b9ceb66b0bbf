"""genre_detector.audio.decode.load_audio: every supported container decodes to the same mono
float32 waveform at SAMPLE_RATE, and every bad input raises AudioError with its reason."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from genre_detector.audio.decode import MAX_SECONDS, SAMPLE_RATE, AudioError, load_audio

FFMPEG = shutil.which("ffmpeg")
# The ffmpeg program only makes the M4A test files; decoding them uses PyAV (in-process).
# These skips happen only outside CI: with CI set, tests/conftest.py stops the run first.
NO_FFMPEG = "ffmpeg (to make M4A files) is not installed"
needs_ffmpeg = pytest.mark.skipif(FFMPEG is None, reason=NO_FFMPEG)


# ----------------------------------------------------------------------------- helpers
def _corr(a: np.ndarray, b: np.ndarray) -> float:
    n = min(len(a), len(b))
    return float(np.corrcoef(a[:n].astype(np.float64), b[:n].astype(np.float64))[0, 1])


def _rms_envelope(x: np.ndarray, frame: int = 2048) -> np.ndarray:
    n = len(x) // frame
    return np.sqrt(np.mean(x[: n * frame].astype(np.float64).reshape(n, frame) ** 2, axis=1))


def _envelope_corr(a: np.ndarray, b: np.ndarray) -> float:
    ea, eb = _rms_envelope(a), _rms_envelope(b)
    n = min(len(ea), len(eb))
    return float(np.corrcoef(ea[:n], eb[:n])[0, 1])


def _check_mono(wave: np.ndarray) -> None:
    assert isinstance(wave, np.ndarray)
    assert wave.ndim == 1
    assert wave.dtype == np.float32
    assert np.isfinite(wave).all()


def _expect(reason: str, source, **kwargs) -> AudioError:
    with pytest.raises(AudioError) as info:
        load_audio(source, **kwargs)
    exc = info.value
    assert exc.reason == reason, f"expected {reason}, got {exc.reason}: {exc.detail}"
    assert isinstance(exc.detail, str) and len(exc.detail.strip()) > 5
    assert reason in str(exc)
    assert exc.detail in str(exc)
    return exc


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def ref(wav_clip) -> np.ndarray:
    """The shipped WAV decoded by load_audio: the reference every variant is compared to."""
    return load_audio(wav_clip)


@pytest.fixture(scope="module")
def wav_native(wav_clip) -> tuple[np.ndarray, int]:
    """The shipped WAV read directly with soundfile (float32, native rate)."""
    data, sr = sf.read(wav_clip, dtype="float32")
    return data, sr


def _make_m4a(src, out, *extra):
    subprocess.run(
        [
            FFMPEG,
            "-nostdin",
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-i",
            str(src),
            "-c:a",
            "aac",
            "-b:a",
            "128k",
            *extra,
            str(out),
        ],
        check=True,
        timeout=120,
    )
    return out


@pytest.fixture(scope="module")
def m4a_file(tmp_path_factory, wav_clip):
    """An M4A/AAC with its index (moov atom) first, as streaming-friendly encoders write."""
    if FFMPEG is None:
        pytest.skip(NO_FFMPEG)
    return _make_m4a(
        wav_clip, tmp_path_factory.mktemp("m4a") / "clip.m4a", "-movflags", "+faststart"
    )


@pytest.fixture(scope="module")
def m4a_moov_last(tmp_path_factory, wav_clip):
    """An M4A/AAC as ffmpeg (and many phones/recorders) write it by default: index last."""
    if FFMPEG is None:
        pytest.skip(NO_FFMPEG)
    return _make_m4a(wav_clip, tmp_path_factory.mktemp("m4a") / "clip-moov-last.m4a")


# ----------------------------------------------------------------------------- shipped clips
def test_constants():
    assert SAMPLE_RATE == 22050
    assert MAX_SECONDS == 15 * 60


def test_real_wav_decodes_to_mono_float32(wav_clip, wav_native):
    wave = load_audio(wav_clip)
    _check_mono(wave)
    assert len(wave) == sf.info(str(wav_clip)).frames
    # 16-bit PCM at the target rate: no resampling, so sample-exact with soundfile
    np.testing.assert_array_equal(wave, wav_native[0])
    assert 0.05 < np.abs(wave).max() <= 1.0


def test_real_mp3_decodes_to_about_60_s(mp3_clip):
    wave = load_audio(mp3_clip)
    _check_mono(wave)
    assert abs(len(wave) / SAMPLE_RATE - 60.0) < 0.1
    assert np.abs(wave).max() > 0.05  # (lossy decodes may overshoot full scale)


# ----------------------------------------------------------------------------- variants
# (format, subtype, lossy)
LOSSLESS = [
    ("FLAC", "PCM_16"),
    ("AU", "PCM_16"),
    ("AIFF", "PCM_16"),
    ("WAV", "PCM_U8"),
    ("WAV", "PCM_24"),
    ("WAV", "PCM_32"),
    ("WAV", "FLOAT"),
]


@pytest.mark.parametrize("fmt,subtype", LOSSLESS, ids=[f"{f}-{s}" for f, s in LOSSLESS])
def test_lossless_variants_decode_like_the_original(tmp_path, wav_native, ref, fmt, subtype):
    data, sr = wav_native
    path = tmp_path / f"clip.{fmt.lower()}"
    sf.write(path, data, sr, format=fmt, subtype=subtype)
    wave = load_audio(path)
    _check_mono(wave)
    assert len(wave) == len(ref)
    assert _corr(wave, ref) > (0.9 if subtype == "PCM_U8" else 0.999)
    if subtype in ("PCM_16", "PCM_24", "PCM_32", "FLOAT"):
        np.testing.assert_allclose(wave, ref, atol=1e-4)


def test_ogg_vorbis_decodes(tmp_path, wav_native, ref):
    data, sr = wav_native
    path = tmp_path / "clip.ogg"
    sf.write(path, data, sr, format="OGG", subtype="VORBIS")
    wave = load_audio(path)
    _check_mono(wave)
    assert abs(len(wave) - len(ref)) / SAMPLE_RATE < 0.05
    assert _envelope_corr(wave, ref) > 0.9


@needs_ffmpeg
def test_m4a_decodes_in_process(m4a_file, ref, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")  # no ffmpeg program: PyAV's own decoders
    wave = load_audio(m4a_file)
    _check_mono(wave)
    assert abs(len(wave) - len(ref)) / SAMPLE_RATE < 0.1
    assert _envelope_corr(wave, ref) > 0.9


def test_stereo_is_the_mean_of_its_channels(tmp_path, wav_native):
    data, sr = wav_native
    left = data
    right = np.roll(data, 5000) * 0.5  # a clearly different right channel
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), sr, subtype="FLOAT")
    wave = load_audio(path)
    _check_mono(wave)
    assert len(wave) == len(data)
    np.testing.assert_allclose(wave, (left + right) / 2, atol=1e-6)
    # ... and not just one of the channels
    assert np.abs(wave - left).max() > 0.01
    assert np.abs(wave - right).max() > 0.01


def test_stereo_copy_of_a_mono_clip_decodes_like_it(tmp_path, wav_native, ref):
    data, sr = wav_native
    path = tmp_path / "stereo16.wav"
    sf.write(path, np.stack([data, data], axis=1), sr, subtype="PCM_16")
    np.testing.assert_allclose(load_audio(path), ref, atol=1e-6)


@pytest.mark.parametrize("rate", [48000, 44100])
def test_other_sample_rates_are_resampled(tmp_path, wav_native, ref, rate):
    import soxr

    data, sr = wav_native
    hi = soxr.resample(data, sr, rate, quality="HQ").astype(np.float32)
    path = tmp_path / f"clip_{rate}.wav"
    sf.write(path, hi, rate, subtype="FLOAT")
    duration = len(hi) / rate
    wave = load_audio(path)
    _check_mono(wave)
    assert abs(len(wave) - duration * SAMPLE_RATE) <= 3
    assert abs(len(wave) - len(ref)) <= 3
    assert _corr(wave, ref) > 0.9


# ----------------------------------------------------------------------------- sources
def test_path_bytes_and_file_object_agree(wav_clip, mp3_clip):
    for clip in (wav_clip, mp3_clip):
        from_path = load_audio(clip)
        from_str = load_audio(str(clip))
        data = clip.read_bytes()
        from_bytes = load_audio(data)
        from_bytearray = load_audio(bytearray(data))
        from_memoryview = load_audio(memoryview(data))
        with open(clip, "rb") as f:
            from_file = load_audio(f)
        from_bytesio = load_audio(io.BytesIO(data))
        for other in (
            from_str,
            from_bytes,
            from_bytearray,
            from_memoryview,
            from_file,
            from_bytesio,
        ):
            np.testing.assert_array_equal(other, from_path)


@needs_ffmpeg
def test_m4a_with_index_at_the_end_decodes(m4a_moov_last, ref):
    wave = load_audio(m4a_moov_last)
    _check_mono(wave)
    assert abs(len(wave) - len(ref)) / SAMPLE_RATE < 0.1
    assert _envelope_corr(wave, ref) > 0.9


@needs_ffmpeg
def test_m4a_path_and_bytes_agree(m4a_file):
    np.testing.assert_array_equal(load_audio(m4a_file), load_audio(m4a_file.read_bytes()))


# ----------------------------------------------------------------------------- bad inputs
def test_png_bytes_are_not_audio():
    rng = np.random.default_rng(0)
    _expect("not_audio", b"\x89PNG\r\n\x1a\n" + rng.bytes(4000))


def test_text_file_is_not_audio(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("this is not audio at all\n" * 100)
    _expect("not_audio", path)


def test_missing_file_is_reported(tmp_path):
    exc = _expect("not_audio", tmp_path / "does-not-exist.wav")
    assert "does-not-exist.wav" in exc.detail


def test_empty_file_and_bytes(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    _expect("empty", path)
    _expect("empty", b"")
    _expect("empty", io.BytesIO(b""))


def test_wav_cut_to_30_bytes_is_truncated(wav_clip):
    _expect("truncated", wav_clip.read_bytes()[:30])


def test_wav_with_header_but_no_samples_is_truncated(wav_clip):
    _expect("truncated", wav_clip.read_bytes()[:44])


def test_mp3_cut_to_200_bytes_is_truncated(mp3_clip):
    _expect("truncated", mp3_clip.read_bytes()[:200])


def test_flac_cut_to_200_bytes_is_truncated(wav_native):
    data, sr = wav_native
    buf = io.BytesIO()
    sf.write(buf, data, sr, format="FLAC")
    _expect("truncated", buf.getvalue()[:200])


def test_wav_cut_short_decodes_what_is_there(wav_clip):
    """A WAV cut inside its data is still decodable: only the length decides."""
    data = wav_clip.read_bytes()
    _expect("too_short", data[:2000])
    wave = load_audio(data[: 44 + 2 * SAMPLE_RATE * 5])  # 5 s of 16-bit samples
    assert len(wave) == 5 * SAMPLE_RATE


def test_one_second_clip_is_too_short(tmp_path, wav_native):
    data, sr = wav_native
    path = tmp_path / "short.wav"
    sf.write(path, data[:sr], sr)
    exc = _expect("too_short", path)
    assert "1.00" in exc.detail
    # min_seconds is honoured in both directions
    assert len(load_audio(path, min_seconds=0.5)) == SAMPLE_RATE


def test_long_clip_over_max_seconds_is_too_long(wav_clip):
    _expect("too_long", wav_clip, max_seconds=10)
    _expect("too_long", wav_clip.read_bytes(), max_seconds=29.0)
    assert len(load_audio(wav_clip, max_seconds=31)) > 0


def test_mp3_over_max_seconds_is_too_long(mp3_clip):
    _expect("too_long", mp3_clip, max_seconds=30)


@needs_ffmpeg
def test_m4a_over_max_seconds_is_too_long(m4a_file):
    _expect("too_long", m4a_file, max_seconds=10)


def test_all_zeros_is_silent(tmp_path):
    path = tmp_path / "zeros.wav"
    sf.write(path, np.zeros(5 * SAMPLE_RATE, np.float32), SAMPLE_RATE)
    _expect("silent", path)


def test_very_quiet_noise_is_silent_but_quiet_music_is_not(tmp_path, wav_native):
    data, sr = wav_native
    quiet = tmp_path / "quiet.wav"
    sf.write(
        quiet,
        (np.random.default_rng(0).standard_normal(5 * sr) * 1e-6).astype(np.float32),
        sr,
        subtype="FLOAT",
    )
    _expect("silent", quiet)
    soft = tmp_path / "soft.wav"
    sf.write(soft, data * 0.01, sr, subtype="FLOAT")
    assert np.abs(load_audio(soft)).max() > 1e-4


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_float_wav_with_non_finite_samples(tmp_path, wav_native, bad):
    data, sr = wav_native
    data = data[: 5 * sr].copy()
    data[1000] = bad
    path = tmp_path / "nan.wav"
    sf.write(path, data, sr, subtype="FLOAT")
    _expect("non_finite", path)


@needs_ffmpeg
def test_m4a_without_pyav(monkeypatch, m4a_file):
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` raises ImportError
    exc = _expect("ffmpeg_missing", m4a_file)
    assert "PyAV" in exc.detail and "M4A" in exc.detail


def test_reason_sets():
    assert AudioError.UNDECODABLE == {"not_audio", "empty", "truncated", "ffmpeg_missing"}
    exc = AudioError("silent", "quiet")
    assert isinstance(exc, ValueError)
    assert exc.reason == "silent" and exc.detail == "quiet"
    assert str(exc) == "silent: quiet"


# ----------------------------------------------------------------------------- decode once
def _band_error(got: np.ndarray, want: np.ndarray, rate: int, below_hz: float = 7000) -> float:
    """RMS of the difference below `below_hz`, relative to the RMS of `want` there (a one-sample
    shift of 16 kHz music scores about 0.3, linear interpolation about 0.06)."""
    from scipy.signal import filtfilt, firwin

    n = min(len(got), len(want))
    low = firwin(255, below_hz, fs=rate)
    a = filtfilt(low, 1.0, np.asarray(got[:n], np.float64))
    b = filtfilt(low, 1.0, np.asarray(want[:n], np.float64))
    return float(np.sqrt(np.mean((a - b) ** 2) / np.mean(b**2)))


def test_decode_gives_the_native_rate_and_load_audio_resamples_it(wav_clip, mp3_clip, ref):
    from scipy.signal import resample_poly

    from genre_detector.audio.decode import decode, resample

    wave, sr = decode(wav_clip)
    _check_mono(wave)
    assert sr == sf.info(str(wav_clip)).samplerate == SAMPLE_RATE
    np.testing.assert_array_equal(wave, ref)
    mp3, mp3_sr = decode(mp3_clip)
    assert mp3_sr == sf.info(str(mp3_clip)).samplerate
    assert abs(len(mp3) / mp3_sr - 60.0) < 0.1
    # the research families' rate is the clip's own: load_audio gives decode's samples as is
    assert mp3_sr == SAMPLE_RATE
    np.testing.assert_array_equal(load_audio(mp3_clip, sample_rate=SAMPLE_RATE), mp3)
    # musicnn's 16 kHz: checked against a second resampler (SciPy's polyphase filter, not
    # soxr) below 7 kHz, where both filters pass the music unchanged
    at = load_audio(mp3_clip, sample_rate=16000)
    _check_mono(at)
    assert abs(len(at) - len(mp3) * 16000 / mp3_sr) < 1
    assert _band_error(at, resample_poly(mp3.astype(np.float64), 320, 441), 16000) < 0.01
    w16 = load_audio(wav_clip, sample_rate=16000)
    assert abs(len(w16) - len(ref) * 16000 / SAMPLE_RATE) <= 2
    assert _corr(resample(w16, 16000, SAMPLE_RATE), ref) > 0.95  # same music, up to 8 kHz


def test_decode_checks_the_clip_before_any_resampling(wav_clip, tmp_path, wav_native):
    from genre_detector.audio.decode import decode

    data, sr = wav_native
    path = tmp_path / "short.wav"
    sf.write(path, data[:sr], sr)
    with pytest.raises(AudioError, match="too_short"):
        decode(path)
    with pytest.raises(AudioError, match="too_long"):
        decode(wav_clip, max_seconds=10)
    with pytest.raises(AudioError, match="empty"):
        decode(b"")
