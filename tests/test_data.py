"""train.data and train.metrics: two labelled sources mapped onto nine genres, artist-disjoint
splits across sources, cached log-mels per feature settings, per-source metrics."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from tests.expected import NINE
from train.data import Track, artist_folds, list_tracks, read_genre_map, split_by_artist


@pytest.fixture(scope="module")
def genre_map(data_dir) -> dict:
    path = data_dir / "genre_map.csv"
    if not path.exists():
        pytest.skip(f"{path} not found")
    return read_genre_map(path)


@pytest.fixture(scope="module")
def both_sources(data_dir, genre_map) -> list[Track]:
    if not (data_dir / "4q").is_dir():
        pytest.skip("the 4q source is not in the shared data")
    return list_tracks([data_dir / "emotify", data_dir / "4q"], genre_map)


# ----------------------------------------------------------------------------- label map
def test_genre_map_of_the_shared_csv(genre_map):
    assert genre_map[("emotify", "pop")] == genre_map[("emotify", "rock")] == "pop-rock"
    assert genre_map[("emotify", "classical")] == "classical"
    assert genre_map[("4q", "pop-rock")] == "pop-rock"
    assert sorted(set(genre_map.values())) == NINE
    assert read_genre_map(None) == {} and read_genre_map("/does/not/exist.csv") == {}


def test_both_sources_give_565_tracks_in_nine_genres(both_sources, data_dir):
    tracks = both_sources
    assert len(tracks) == 565
    assert sorted({t.genre for t in tracks}) == NINE
    assert {t.source for t in tracks} == {"emotify", "4q"}
    emotify = [t for t in tracks if t.source == "emotify"]
    assert {t.genre for t in emotify} == {"classical", "electronic", "pop-rock"}
    assert sum(t.path.parent.name in ("pop", "rock") for t in emotify) == sum(
        t.genre == "pop-rock" for t in emotify
    )
    for t in tracks[::37]:  # names that do not depend on the mount
        assert t.rel == f"{t.source}/{t.path.relative_to(data_dir / t.source).as_posix()}"
        assert t.path.exists() and t.artist and t.group == t.artist.casefold()
    assert len({t.rel for t in tracks}) == len(tracks)
    # without the map, emotify keeps its own folder names
    assert {t.genre for t in list_tracks(data_dir / "emotify")} == {
        "classical",
        "electronic",
        "pop",
        "rock",
    }


def test_artist_folds_never_split_an_artist_across_sources(both_sources):
    tracks = both_sources
    folds = artist_folds(tracks, 5, seed=0)
    seen = np.zeros(len(tracks), int)
    for train_idx, val_idx in folds:
        seen[val_idx] += 1
        train_groups = {tracks[i].artist.casefold() for i in train_idx}
        val_groups = {tracks[i].artist.casefold() for i in val_idx}
        assert not train_groups & val_groups
        assert {tracks[i].source for i in val_idx} == {"emotify", "4q"}  # both in every fold
    assert (seen == 1).all()  # every track validated exactly once
    train, val = split_by_artist(tracks, 0.2, seed=0)
    assert not {t.group for t in train} & {t.group for t in val}
    assert 0.15 < len(val) / len(tracks) < 0.25


def _write_source(root, clips: dict[str, list[tuple[str, str]]], seed: int) -> None:
    """root/GENRE/NAME.wav (2 s of noise each) and a tracks.csv naming their artists."""
    rng = np.random.default_rng(seed)
    rows = ["path,genre,artist"]
    for folder, items in clips.items():
        (root / folder).mkdir(parents=True)
        for name, artist in items:
            sf.write(
                root / folder / f"{name}.wav",
                (0.1 * rng.standard_normal(2 * 22050)).astype(np.float32),
                22050,
            )
            rows.append(f"{folder}/{name}.wav,{folder},{artist}")
    (root / "tracks.csv").write_text("\n".join(rows) + "\n")


def test_same_artist_in_two_sources_stays_on_one_side(tmp_path):
    """'The Band' in source A and 'THE BAND' in source B (another folder name, mapped to the
    same genre) are one artist: never on both sides of any fold, whatever the seed."""
    a, b = tmp_path / "alpha", tmp_path / "beta"
    _write_source(
        a,
        {
            "rock": [(f"r{i}", "The Band" if i < 3 else f"a-rock-{i}") for i in range(8)],
            "jazz": [(f"j{i}", f"a-jazz-{i}") for i in range(8)],
        },
        0,
    )
    _write_source(
        b,
        {
            "pop-rock": [(f"p{i}", "THE BAND" if i < 3 else f"b-pop-{i}") for i in range(8)],
            "swing": [(f"s{i}", f"b-jazz-{i}") for i in range(8)],
        },
        1,
    )
    csv_map = tmp_path / "map.csv"
    csv_map.write_text(
        "dataset,folder,genre\nalpha,rock,pop-rock\nalpha,jazz,jazz\n"
        "beta,pop-rock,pop-rock\nbeta,swing,jazz\n"
    )
    tracks = list_tracks([a, b], read_genre_map(csv_map))
    assert len(tracks) == 32 and sorted({t.genre for t in tracks}) == ["jazz", "pop-rock"]
    band = [i for i, t in enumerate(tracks) if t.group == "the band"]
    assert len(band) == 6 and {tracks[i].source for i in band} == {"alpha", "beta"}
    for seed in range(10):
        for train_idx, val_idx in artist_folds(tracks, 4, seed):
            assert set(band) <= set(train_idx) or set(band) <= set(val_idx), seed
    # a track without a tracks.csv row is its own artist, named by source and path
    (a / "tracks.csv").write_text("path,genre,artist\n")
    lonely = list_tracks([a])
    assert {t.artist for t in lonely} == {t.rel for t in lonely}


# ----------------------------------------------------------------------------- log-mel cache
def test_cached_log_mels_are_computed_at_each_settings_sample_rate(tmp_path, wav_clip, monkeypatch):
    """The training features of a family must be the serving ones: musicnn's 16 kHz log-mel
    of a 30 s clip has 16000 * 30 / 256 frames, not 22050 * 30 / 256."""
    import train.data as data
    from genre_detector.audio.features import MUSICNN_SETTINGS, FeatureSettings, extract_windows

    monkeypatch.setattr(data, "CACHE_DIR", tmp_path / "cache")
    track = Track(wav_clip, "rock", "x", "gtzan", "gtzan/rock.00000.wav")
    for s in (MUSICNN_SETTINGS, FeatureSettings()):
        kept, mels = data.load_mels([track], s, workers=1)
        assert len(kept) == 1
        served = extract_windows(wav_clip, s).mel  # what serving computes
        assert mels[0].shape == served.shape, s
        np.testing.assert_allclose(mels[0].astype(np.float32), served, atol=0.05)
        # the second call reads the cache and gives the same
        np.testing.assert_array_equal(data.load_mels([track], s, workers=1)[1][0], mels[0])
    assert len(list((tmp_path / "cache").iterdir())) == 2  # one folder per settings set


# ----------------------------------------------------------------------------- metrics
def test_per_source_metrics():
    from train.metrics import classification_metrics

    labels = ["blues", "jazz", "rock"]
    y = np.array([0, 1, 2, 0, 1, 2, 2])
    pred = np.array([0, 1, 2, 1, 1, 0, 0])
    sources = ["a", "a", "a", "b", "b", "b", "b"]
    probs = np.eye(3)[pred] * 0.7 + 0.1
    m = classification_metrics(y, probs, labels, sources)
    assert m["accuracy"] == pytest.approx(4 / 7)
    assert set(m["per_source"]) == {"a", "b"}
    assert m["per_source"]["a"] == {"accuracy": 1.0, "macro_f1": 1.0, "n_tracks": 3}
    b = m["per_source"]["b"]
    assert b["accuracy"] == pytest.approx(1 / 4) and b["n_tracks"] == 4
    # macro-F1 over the genres source b has: blues 0, jazz 2/3, rock 0
    assert b["macro_f1"] == pytest.approx((0 + 2 / 3 + 0) / 3)
    # ece is reported; without sources there is no per-source block
    assert m["ece"] == pytest.approx(abs(4 / 7 - 0.8))
    assert "per_source" not in classification_metrics(y, probs, labels)
    # sources given as a tuple or NumPy array work alike
    assert (
        classification_metrics(y, probs, labels, np.array(sources))["per_source"] == m["per_source"]
    )
