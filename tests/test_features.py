"""genre_detector.audio.features: log-mel windows shared by training and serving."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from genre_detector.audio.decode import MIN_SECONDS, SAMPLE_RATE, load_audio
from genre_detector.audio.features import (
    MUSICNN_SETTINGS,
    FeatureSettings,
    WindowBatch,
    extract_feature_sets,
    extract_windows,
    log_mel,
    window_starts,
)

S = FeatureSettings()
FRAME_S = S.hop_length / S.sample_rate


def _n_frames(n_samples: int, s: FeatureSettings = S) -> int:
    """Centered STFT frames for a waveform of n_samples."""
    return 1 + n_samples // s.hop_length


def _check_batch(
    batch: WindowBatch, n_samples: int, starts: list[int], s: FeatureSettings = S
) -> None:
    """`starts`: the window start frames the caller worked out by hand."""
    n = len(starts)
    assert isinstance(batch, WindowBatch)
    assert batch.windows.shape == (n, s.n_mels, s.window_frames)
    assert batch.windows.dtype == np.float32
    assert np.isfinite(batch.windows).all()
    assert batch.windows.min() >= -s.top_db and batch.windows.max() <= 0.0
    assert batch.mel.shape == (s.n_mels, _n_frames(n_samples, s))
    assert batch.mel.dtype == np.float32
    assert batch.mel.max() == 0.0  # dB re the loudest bin
    assert batch.mel.min() >= -s.top_db
    assert batch.duration_s == pytest.approx(n_samples / s.sample_rate)
    assert batch.start_s.shape == batch.end_s.shape == (n,)
    assert batch.start_s[0] == 0.0
    frame_s = s.hop_length / s.sample_rate
    np.testing.assert_allclose(batch.start_s, np.array(starts) * frame_s, rtol=0, atol=1e-9)
    want_end = np.minimum((np.array(starts) + s.window_frames) * frame_s, n_samples / s.sample_rate)
    np.testing.assert_allclose(batch.end_s, want_end, rtol=0, atol=1e-9)
    assert np.all(np.diff(batch.start_s) > 0)
    assert np.all(batch.end_s > batch.start_s)
    assert batch.end_s[-1] == pytest.approx(batch.duration_s)
    assert np.all(batch.end_s <= batch.duration_s + 1e-9)
    # every window is exactly the mel at its start frame (except a padded short clip)
    for w, i in zip(batch.windows, starts):
        if i + s.window_frames <= batch.mel.shape[1]:
            np.testing.assert_array_equal(w, batch.mel[:, i : i + s.window_frames])


@pytest.fixture(scope="module")
def wave(wav_clip) -> np.ndarray:
    return load_audio(wav_clip)


@pytest.fixture(scope="module")
def batch(wave) -> WindowBatch:
    return extract_windows(wave, S)


# ----------------------------------------------------------------------------- settings
def test_default_settings_are_consistent():
    assert S.sample_rate == SAMPLE_RATE
    assert S.window_seconds == pytest.approx(S.window_frames * S.hop_length / S.sample_rate)
    assert S.window_seconds == pytest.approx(2.97, abs=0.01)
    # a MIN_SECONDS clip is long enough for one full window
    assert S.min_samples <= MIN_SECONDS * SAMPLE_RATE
    assert _n_frames(S.min_samples) == S.window_frames
    assert _n_frames(S.min_samples - S.hop_length) < S.window_frames


def test_settings_round_trip_and_fingerprint():
    d = S.to_dict()
    assert set(d) == {f.name for f in dataclasses.fields(FeatureSettings)}
    assert FeatureSettings.from_dict(d) == S
    # unknown keys (e.g. from a newer version's metadata) are ignored
    assert FeatureSettings.from_dict({**d, "future_field": 1}) == S
    assert S.fingerprint() == FeatureSettings().fingerprint()
    assert len(S.fingerprint()) == 12
    seen = {S.fingerprint()}
    for field, value in [
        ("n_mels", 128),
        ("hop_length", 512),
        ("top_db", 60.0),
        ("max_windows", 10),
        ("fmin", 30.0),
    ]:
        changed = dataclasses.replace(S, **{field: value})
        assert changed.fingerprint() not in seen, field
        seen.add(changed.fingerprint())
        assert FeatureSettings.from_dict(changed.to_dict()) == changed


def test_settings_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        S.n_mels = 1  # type: ignore[misc]


# ----------------------------------------------------------------------------- window_starts
@pytest.mark.parametrize("n_frames", [64, 65, 95, 96, 97, 300, 647, 1000, 1312, 1313, 5000])
def test_window_starts_cover_the_track(n_frames):
    starts = window_starts(n_frames, S)
    last = n_frames - S.window_frames
    assert starts[0] == 0
    assert starts[-1] == last  # the final window reaches the end
    assert np.all(np.diff(starts) > 0)
    assert len(starts) <= S.max_windows
    if len(starts) < S.max_windows:  # dense: at most 1.5 hops apart, overlapping
        assert np.all(np.diff(starts) <= S.window_hop_frames * 3 // 2)
    else:  # thinned: evenly spread
        gaps = np.diff(starts)
        assert gaps.max() - gaps.min() <= 1


# n_frames -> the start frames, worked out by hand from the rule: every 32 frames from 0 to
# last = n_frames - 64; if that misses `last`, the final start moves to `last` when it is
# under 16 frames away (else one more window starts at `last`); over 40 windows, 40 starts
# spread evenly, round(k * last / 39).
WINDOW_STARTS = {
    64: [0],
    65: [0, 1],  # 1 frame past the last start: a second window, not a nudge of the only one
    95: [0, 31],
    96: [0, 32],
    97: [0, 33],  # 33 - 32 = 1 < 16: nudged
    300: [0, 32, 64, 96, 128, 160, 192, 236],  # 236 - 224 = 12 < 16: nudged
    647: [*range(0, 545, 32), 583],  # the real 30 s WAV: 583 - 576 = 7: nudged
    1000: [*range(0, 897, 32), 936],  # 936 - 928 = 8: nudged
    1312: list(range(0, 1249, 32)),  # last = 1248 = 39 x 32: exactly 40 windows
    1313: [*range(0, 1217, 32), 1249],
    5000: [round(k * 4936 / 39) for k in range(40)],  # 155 would-be windows, thinned
}


@pytest.mark.parametrize("n_frames", sorted(WINDOW_STARTS))
def test_window_starts_fixed_reference(n_frames):
    assert window_starts(n_frames, S).tolist() == WINDOW_STARTS[n_frames]


def test_window_starts_musicnn_fixed_reference():
    """musicnn: 187-frame windows every 187 frames, at most 5, nudged within 93 frames."""
    m = MUSICNN_SETTINGS
    assert window_starts(594, m).tolist() == [0, 187, 407]  # 407 - 374 = 33: nudged
    assert window_starts(1000, m).tolist() == [0, 187, 374, 561, 813]  # 813 - 748 = 65: nudged
    # the 30 s WAV at 16 kHz: 1876 frames, 10 windows, thinned to 5 over 0..1689
    assert window_starts(1876, m).tolist() == [0, 422, 844, 1267, 1689]


def test_window_starts_short_track():
    np.testing.assert_array_equal(window_starts(10, S), [0])
    np.testing.assert_array_equal(window_starts(S.window_frames, S), [0])


# ----------------------------------------------------------------------------- log_mel
def test_log_mel_range_and_shape(wave):
    mel = log_mel(wave, S)
    assert mel.shape == (S.n_mels, _n_frames(len(wave)))
    assert mel.dtype == np.float32
    assert mel.max() == 0.0
    assert mel.min() >= -S.top_db


def test_log_mel_puts_a_tone_in_the_right_band():
    t = np.arange(5 * SAMPLE_RATE) / SAMPLE_RATE
    low = log_mel((0.5 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), S)
    high = log_mel((0.5 * np.sin(2 * np.pi * 5000 * t)).astype(np.float32), S)
    band_low = int(np.argmax(low.mean(axis=1)))
    band_high = int(np.argmax(high.mean(axis=1)))
    assert band_low < S.n_mels // 3 < band_high
    assert band_high > band_low + 20


# ----------------------------------------------------------------------------- extract_windows
def test_real_wav_windows(batch, wave):
    # 661794 samples: 1 + 661794 // 1024 = 647 frames; starts every 32 frames up to 544, and
    # the last window starts at 647 - 64 = 583 (576 nudged to reach the end)
    assert len(wave) == 661794
    _check_batch(batch, len(wave), WINDOW_STARTS[647])
    assert batch.duration_s == pytest.approx(30.013, abs=0.01)
    # 30 s at 1.49 s hops: 19 full hops, the last one stretched to reach the end
    assert len(batch.windows) == 19
    # the windows together cover every frame of the mel
    covered = np.zeros(batch.mel.shape[1], bool)
    for a in np.round(batch.start_s / FRAME_S).astype(int):
        covered[a : a + S.window_frames] = True
    assert covered.all()
    # the loudest bin is in a window
    assert batch.windows.max() == 0.0


def test_path_bytes_and_waveform_agree(wav_clip, batch):
    for source in (wav_clip, str(wav_clip), wav_clip.read_bytes()):
        other = extract_windows(source, S)
        np.testing.assert_array_equal(other.windows, batch.windows)
        np.testing.assert_array_equal(other.start_s, batch.start_s)
        np.testing.assert_array_equal(other.end_s, batch.end_s)
        assert other.duration_s == batch.duration_s


def test_load_kwargs_are_passed_to_load_audio(wav_clip):
    from genre_detector.audio.decode import AudioError

    with pytest.raises(AudioError) as info:
        extract_windows(wav_clip, S, max_seconds=10)
    assert info.value.reason == "too_long"


def test_long_track_is_capped_and_spread_over_the_whole_track():
    rng = np.random.default_rng(0)
    seconds = 600
    t = np.arange(seconds * SAMPLE_RATE, dtype=np.float64) / SAMPLE_RATE
    # noise plus a tone whose pitch changes every minute
    tone = np.sin(2 * np.pi * (220.0 * (1 + np.floor(t / 60))) * t)
    wave = (0.05 * rng.standard_normal(t.size) + 0.3 * tone).astype(np.float32)
    batch = extract_windows(wave, S)
    # 13230000 samples: 12920 frames, last start 12856; 40 starts round(k * 12856 / 39)
    _check_batch(batch, len(wave), [round(k * 12856 / 39) for k in range(40)])
    assert len(batch.windows) == S.max_windows
    assert batch.start_s[0] == 0.0
    assert batch.end_s[-1] == pytest.approx(seconds)
    gaps = np.diff(batch.start_s)
    spacing = (seconds - S.window_seconds) / (S.max_windows - 1)
    assert gaps.min() > 0.9 * spacing and gaps.max() < 1.1 * spacing
    # every minute of the track is sampled by some window
    minutes = set((batch.start_s // 60).astype(int))
    assert minutes == set(range(10))


def test_clip_of_exactly_min_samples_gives_one_window():
    rng = np.random.default_rng(1)
    wave = (0.1 * rng.standard_normal(S.min_samples)).astype(np.float32)
    batch = extract_windows(wave, S)
    _check_batch(batch, len(wave), [0])
    assert batch.windows.shape == (1, S.n_mels, S.window_frames)
    assert batch.end_s[0] == pytest.approx(batch.duration_s)


def test_clip_of_min_seconds_is_windowed_without_padding():
    """A MIN_SECONDS (3 s) clip is 65 frames: one window at frame 0 and, so that the last
    window reaches the end, a second one a single frame later."""
    rng = np.random.default_rng(2)
    wave = (0.1 * rng.standard_normal(int(MIN_SECONDS * SAMPLE_RATE))).astype(np.float32)
    batch = extract_windows(wave, S)
    _check_batch(batch, len(wave), [0, 1])  # 66150 samples: 1 + 66150 // 1024 = 65 frames
    assert len(batch.windows) == 2
    assert batch.mel.shape[1] >= S.window_frames
    assert batch.end_s[-1] == pytest.approx(MIN_SECONDS, abs=1e-6)


def test_clip_shorter_than_a_window_is_padded_at_the_floor():
    rng = np.random.default_rng(3)
    wave = (0.1 * rng.standard_normal(S.min_samples // 2)).astype(np.float32)
    batch = extract_windows(wave, S)
    n = batch.mel.shape[1]
    assert n < S.window_frames
    assert batch.windows.shape == (1, S.n_mels, S.window_frames)
    np.testing.assert_array_equal(batch.windows[0, :, :n], batch.mel)
    assert (batch.windows[0, :, n:] == -S.top_db).all()


@pytest.mark.parametrize("scale", [0.1, 0.125, 0.01])
def test_loudness_invariance(wave, batch, scale):
    quiet = extract_windows((wave * scale).astype(np.float32), S)
    assert quiet.windows.shape == batch.windows.shape
    np.testing.assert_allclose(quiet.windows, batch.windows, atol=1e-3)
    np.testing.assert_allclose(quiet.mel, batch.mel, atol=1e-3)


def test_other_settings_change_the_shape(wave):
    s = FeatureSettings(
        n_mels=32, window_frames=32, window_hop_frames=16, max_windows=8, top_db=60.0
    )
    b = extract_windows(wave[: 10 * SAMPLE_RATE], s)
    assert b.windows.shape[1:] == (32, 32)
    # 220500 samples: 216 frames, last start 184; 13 windows every 16 frames would be needed,
    # so 8 spread evenly: round(k * 184 / 7)
    assert len(b.windows) == 8
    np.testing.assert_array_equal(
        np.round(b.start_s / FRAME_S), [0, 26, 53, 79, 105, 131, 158, 184]
    )
    assert b.windows.min() >= -60.0 and b.mel.max() == 0.0
    assert b.end_s[-1] == pytest.approx(10.0)


# ----------------------------------------------------------------------------- scales, musicnn
def test_scale_is_checked_and_db_fingerprints_did_not_change():
    import hashlib
    import json

    with pytest.raises(ValueError, match="unknown scale 'linear'"):
        FeatureSettings(scale="linear")
    assert S.scale == "db" and S.floor == -S.top_db and MUSICNN_SETTINGS.floor == 0.0
    # the feature caches made before scales existed stay valid for the dB scale
    before = {k: v for k, v in S.to_dict().items() if k != "scale"}
    assert (
        S.fingerprint()
        == hashlib.sha1(json.dumps(before, sort_keys=True).encode()).hexdigest()[:12]
    )
    assert dataclasses.replace(S, scale="log10").fingerprint() != S.fingerprint()
    # fixed: the names of the feature caches made with these settings (.cache/features/...)
    assert S.fingerprint() == "bc47ac2170c6"
    assert MUSICNN_SETTINGS.fingerprint() == "68a36f4fd2f1"
    assert FeatureSettings.from_dict(MUSICNN_SETTINGS.to_dict()) == MUSICNN_SETTINGS


@pytest.fixture(scope="module")
def both(wav_clip) -> dict:
    return extract_feature_sets(wav_clip, [S, MUSICNN_SETTINGS])


def test_musicnn_windows(both, wav_clip):
    s = MUSICNN_SETTINGS
    b = both[s]
    n = len(b.windows)
    assert b.windows.shape == (n, 96, 187) and b.windows.dtype == np.float32
    # 480213 samples at 16 kHz: 1876 frames; 10 windows would be needed, thinned to 5
    assert len(load_audio(wav_clip, sample_rate=16000)) == 480213
    assert n == s.max_windows == 5
    assert np.isfinite(b.windows).all() and b.windows.min() >= 0.0  # log10(1 + 1e4 x)
    assert b.windows.max() > 1.0  # not silence
    wave16 = load_audio(wav_clip, sample_rate=16000)
    np.testing.assert_allclose(b.mel, log_mel(wave16, s), atol=1e-5)
    assert b.mel.shape == (96, _n_frames(len(wave16), s))
    # 3 s patches that do not overlap (musicnn's own extractor), the last reaching the end
    starts = np.round(b.start_s * s.sample_rate / s.hop_length).astype(int)
    assert starts.tolist() == [0, 422, 844, 1267, 1689]  # round(k * 1689 / 4)
    assert np.all(np.diff(starts) >= s.window_frames)
    assert starts[-1] == b.mel.shape[1] - s.window_frames
    for w, i in zip(b.windows, starts):
        np.testing.assert_array_equal(w, b.mel[:, i : i + s.window_frames])
    assert b.end_s[-1] == pytest.approx(b.duration_s)


def test_musicnn_short_clip_is_padded_with_silence():
    s = MUSICNN_SETTINGS
    wave = (0.1 * np.random.default_rng(4).standard_normal(s.min_samples // 2)).astype(np.float32)
    b = extract_windows(wave, s)
    n = b.mel.shape[1]
    assert b.windows.shape == (1, 96, 187) and n < 187
    assert (b.windows[0, :, n:] == 0.0).all()  # log10(1 + 0): silence on this scale


def test_feature_sets_decode_once_and_agree_with_single_extraction(
    wav_clip, both, batch, monkeypatch
):
    from genre_detector.audio import features

    calls = []
    real = features.decode
    monkeypatch.setattr(features, "decode", lambda *a, **k: calls.append(a) or real(*a, **k))
    out = extract_feature_sets(wav_clip.read_bytes(), [S, MUSICNN_SETTINGS, S])
    assert len(calls) == 1  # one decode for every settings set
    assert list(out) == [S, MUSICNN_SETTINGS]  # duplicates computed once, order kept
    for s in out:
        np.testing.assert_array_equal(out[s].windows, both[s].windows)
    # the research windows are exactly what extract_windows gives at 22.05 kHz
    np.testing.assert_array_equal(out[S].windows, batch.windows)
    np.testing.assert_array_equal(out[S].start_s, batch.start_s)
    # both describe the same track
    assert out[S].duration_s == pytest.approx(out[MUSICNN_SETTINGS].duration_s, abs=1e-3)
    assert out[S].duration_s == pytest.approx(30.013, abs=0.01)
    assert out[S].end_s[-1] == pytest.approx(out[MUSICNN_SETTINGS].end_s[-1], abs=1e-3)
    # an already decoded (waveform, rate) pair is not decoded again
    wave, sr = real(wav_clip)
    calls.clear()
    again = extract_feature_sets((wave, sr), [MUSICNN_SETTINGS])
    assert calls == [] and list(again) == [MUSICNN_SETTINGS]
    np.testing.assert_array_equal(again[MUSICNN_SETTINGS].windows, both[MUSICNN_SETTINGS].windows)


def test_feature_caches_are_keyed_by_the_feature_code(tmp_path):
    """A change to any module that makes the log-mels changes the caches' key (train/data.py
    and train/pretrained.py put it in their folder names), so stale files are never read."""
    from genre_detector.audio import features

    for name in features.FEATURE_CODE:
        (tmp_path / name).write_text(f"# {name}\n")
    before = features.code_fingerprint(folder=tmp_path)
    assert before == features.code_fingerprint(folder=tmp_path)
    for name in features.FEATURE_CODE:
        (tmp_path / name).write_text(f"# {name}\nx = 1\n")
        after = features.code_fingerprint(folder=tmp_path)
        assert after != before, name
        before = after
    assert len(features.code_fingerprint()) == 12
    import train.data

    src = Path(train.data.__file__).read_text()
    assert "code_fingerprint()" in src  # the mel cache's folder carries it
