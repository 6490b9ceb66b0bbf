"""genre_detector.audio.melspec (NumPy only, what the serving image runs) against librosa (the
training environment's reference) on real clips: same filters, same power, same dB."""

import numpy as np
import pytest

from genre_detector.audio import melspec
from genre_detector.audio.decode import load_audio
from genre_detector.audio.features import MUSICNN_SETTINGS, FeatureSettings, log_mel

librosa = pytest.importorskip("librosa")

SETTINGS = [FeatureSettings(), MUSICNN_SETTINGS]


@pytest.mark.parametrize("s", SETTINGS, ids=["research", "musicnn"])
def test_mel_filterbank_equals_librosa(s):
    ours = melspec.mel_filterbank(s.sample_rate, s.n_fft, s.n_mels, s.fmin, s.fmax)
    ref = librosa.filters.mel(
        sr=s.sample_rate, n_fft=s.n_fft, n_mels=s.n_mels, fmin=s.fmin, fmax=s.fmax
    )
    assert ours.dtype == np.float32 and ours.shape == (s.n_mels, s.n_fft // 2 + 1)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-9)


@pytest.mark.parametrize("s", SETTINGS, ids=["research", "musicnn"])
def test_log_mel_equals_librosa_on_a_real_clip(s, mp3_clip):
    wave = load_audio(mp3_clip, sample_rate=s.sample_rate)
    power = melspec.stft_power(wave, s.n_fft, s.hop_length)
    ref_power = (
        np.abs(
            librosa.stft(
                wave, n_fft=s.n_fft, hop_length=s.hop_length, center=True, dtype=np.complex64
            )
        )
        ** 2
    )
    assert power.shape == ref_power.shape == (s.n_fft // 2 + 1, 1 + len(wave) // s.hop_length)
    np.testing.assert_allclose(power, ref_power, rtol=1e-5, atol=1e-6 * ref_power.max())
    ref_mel = (
        librosa.filters.mel(
            sr=s.sample_rate, n_fft=s.n_fft, n_mels=s.n_mels, fmin=s.fmin, fmax=s.fmax
        )
        @ ref_power
    )
    if s.scale == "db":
        ref = librosa.power_to_db(ref_mel, ref=np.max, amin=1e-10, top_db=s.top_db)
    else:
        ref = np.log10(1.0 + 10000.0 * ref_mel)
    ours = log_mel(wave, s)
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-3)  # dB / log10 units


def test_power_to_db_floors_and_references_the_loudest_bin():
    power = np.array([[1e-12, 1e-3], [1.0, 4.0]], dtype=np.float32)
    db = melspec.power_to_db(power, top_db=80.0)
    ref = librosa.power_to_db(power, ref=np.max, amin=1e-10, top_db=80.0)
    np.testing.assert_allclose(db, ref, atol=1e-5)
    assert db.max() == 0.0 and db.min() == pytest.approx(-80.0)


def test_short_wave_gives_one_centred_frame():
    wave = np.ones(100, dtype=np.float32)
    power = melspec.stft_power(wave, 2048, 1024)
    ref = np.abs(librosa.stft(wave, n_fft=2048, hop_length=1024, dtype=np.complex64)) ** 2
    assert power.shape == ref.shape == (1025, 1)
    np.testing.assert_allclose(power, ref, rtol=1e-5, atol=1e-6 * ref.max())
