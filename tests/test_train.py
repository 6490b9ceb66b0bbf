"""Training, evaluation and model-store tooling, end to end through the real CLIs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from genre_detector.models.families import DISTILL, model_names
from tests.conftest import REPO
from tests.expected import NINE

SR = 22050
SHIPPED = REPO / "models"


def _synthetic_genre(kind: str, seconds: float, rng) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    if kind == "drone":  # low sustained tones
        f = rng.uniform(80, 200)
        x = np.sin(2 * np.pi * f * t) + 0.5 * np.sin(2 * np.pi * 2 * f * t)
    elif kind == "hiss":  # high-passed noise bursts
        x = np.diff(rng.standard_normal(len(t) + 1)) * (0.5 + 0.5 * np.sin(2 * np.pi * 0.5 * t))
    else:  # "beat": clicks at a tempo
        x = np.zeros_like(t)
        period = int(SR * 60 / rng.uniform(90, 150))
        for i in range(0, len(t) - 200, period):
            x[i : i + 200] += np.hanning(200) * 3
        x += 0.05 * rng.standard_normal(len(t))
    return (0.3 * x / np.max(np.abs(x))).astype(np.float32)


@pytest.fixture(scope="module")
def synthetic_data(tmp_path_factory) -> Path:
    """3 synthetic genres x 10 clips of 8 s, with a tracks.csv naming 'artists'."""
    root = tmp_path_factory.mktemp("synthetic")
    rng = np.random.default_rng(1)
    rows = ["path,genre,artist"]
    for genre in ("drone", "hiss", "beat"):
        (root / genre).mkdir()
        for i in range(10):
            sf.write(root / genre / f"{i}.wav", _synthetic_genre(genre, 8, rng), SR)
            rows.append(f"{genre}/{i}.wav,{genre},{genre}-artist-{i // 2}")
    (root / "tracks.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def two_sources(tmp_path_factory) -> tuple[Path, Path, Path]:
    """The same 3 synthetic genres x 10 clips as two sources: "studio" names its folders
    after the genres, "field" has its own folder names, mapped by a genre-map CSV.
    Returns (studio, field, map.csv)."""
    root = tmp_path_factory.mktemp("two-sources")
    rng = np.random.default_rng(1)
    field_folder = {"drone": "low-hum", "hiss": "noise", "beat": "clicks"}
    rows = {"studio": ["path,genre,artist"], "field": ["path,genre,artist"]}
    for genre in ("drone", "hiss", "beat"):
        for i in range(10):
            source = "studio" if i < 5 else "field"
            folder = genre if source == "studio" else field_folder[genre]
            (root / source / folder).mkdir(parents=True, exist_ok=True)
            sf.write(root / source / folder / f"{i}.wav", _synthetic_genre(genre, 8, rng), SR)
            rows[source].append(f"{folder}/{i}.wav,{folder},{genre}-artist-{i // 2}")
    for source, lines in rows.items():
        (root / source / "tracks.csv").write_text("\n".join(lines) + "\n")
    genre_map = root / "map.csv"
    genre_map.write_text(
        "dataset,folder,genre\n" + "".join(f"field,{f},{g}\n" for g, f in field_folder.items())
    )
    return root / "studio", root / "field", genre_map


def _run(*args, timeout=600, env=None) -> subprocess.CompletedProcess:
    r = subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": f"{REPO}/src:{REPO}", **(env or {})},
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def test_split_keeps_every_artist_on_one_side(emotify_dir):
    from train.data import list_tracks, split_by_artist

    tracks = list_tracks(emotify_dir)
    assert len(tracks) >= 280
    assert {t.genre for t in tracks} == {"classical", "electronic", "pop", "rock"}
    train, val = split_by_artist(tracks, 0.2, seed=0)
    assert not {t.artist for t in train} & {t.artist for t in val}
    assert 0.15 < len(val) / len(tracks) < 0.25
    assert {t.genre for t in val} == {t.genre for t in train}


def test_artist_balance_weights_and_crop_counts():
    from genre_detector.audio.features import FeatureSettings
    from train.fit import crop_weights, random_crops

    y = np.array([0, 0, 0, 0, 1, 1])
    artists = ["a", "a", "a", "b", "c", "d"]  # "a" has three tracks of class 0
    assert crop_weights(y, artists, 0.0) is None and crop_weights(y, None, 0.5) is None
    w = crop_weights(y, artists, 1.0)
    np.testing.assert_allclose([w[y == c].mean() for c in (0, 1)], 1.0)
    assert w[:3].sum() == pytest.approx(w[3])  # power 1: artist "a" weighs as "b"
    s = FeatureSettings()
    mels = [np.zeros((s.n_mels, 200), np.float32) + i for i in range(6)]
    rng = np.random.default_rng(0)
    counts = np.zeros(6)
    for _ in range(200):
        x, _, owner = random_crops(mels, y, np.array([6, 6]), s, rng, w)
        np.testing.assert_array_equal(x[:, 0, 0], owner)  # each window's track is reported
        assert x.shape[1:] == (s.n_mels, s.window_frames)
        counts += np.bincount(x[:, 0, 0].astype(int), minlength=6)
    np.testing.assert_allclose(counts / 200, 6 * w, rtol=0.1)  # expected crops honour weights
    x, yy, _ = random_crops(mels, y, np.array([3, 3]), s, np.random.default_rng(0))
    assert len(x) == 18 and sorted(np.bincount(yy)) == [6, 12]


@pytest.mark.slow
def test_weight_averaging_keeps_training_working(tmp_path):
    from genre_detector.audio.features import FeatureSettings
    from genre_detector.models.architectures import build_model
    from train.fit import FitConfig, fit

    s = FeatureSettings()
    rng = np.random.default_rng(1)
    mels = [
        (
            rng.normal(-40, 3, (s.n_mels, 96))
            + (20 if i % 2 else 0) * (np.arange(s.n_mels)[:, None] > 32)
        ).astype(np.float32)
        for i in range(12)
    ]
    y = np.arange(12) % 2
    model = build_model("feedforward", (s.n_mels, s.window_frames), 2)
    res = fit(
        model,
        mels[:8],
        y[:8],
        mels[8:],
        y[8:],
        2,
        s,
        FitConfig(epochs=4, crops_per_track=4, weight_ema=0.5, artist_balance=0.5),
        groups=["a", "a", "b", "b", "c", "d", "e", "f"],
    )
    assert len(res.history) >= 1 and res.history[res.best_epoch - 1]["val_accuracy"] == 1.0


def _two_band_mels(s, n=12, seed=1):
    """Class 1 (odd i) has 20 dB more in the upper mel bands: a pattern any family learns."""
    rng = np.random.default_rng(seed)
    return [
        (
            rng.normal(-40, 3, (s.n_mels, 96))
            + (20 if i % 2 else 0) * (np.arange(s.n_mels)[:, None] > 32)
        ).astype(np.float32)
        for i in range(n)
    ]


def test_keep_label_first_swaps_only_where_the_teacher_disagrees():
    from train.fit import keep_label_first

    soft = np.array([[0.6, 0.3, 0.1], [0.1, 0.7, 0.2], [0.2, 0.2, 0.6]], np.float32)
    got = keep_label_first(soft, np.array([0, 0, 2]))
    # row 0 and 2 agree with their labels; row 1's label 0 takes the teacher's 0.7
    want = np.array([[0.6, 0.3, 0.1], [0.7, 0.1, 0.2], [0.2, 0.2, 0.6]], np.float32)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(
        soft[1], np.float32([0.1, 0.7, 0.2])
    )  # the teacher's copy untouched
    assert (got.argmax(axis=1) == [0, 0, 2]).all()


def test_fit_config_reads_booleans():
    import argparse

    from train.options import add_data_and_fit_options, fit_config

    p = argparse.ArgumentParser()
    add_data_and_fit_options(p)
    args = p.parse_args([])
    assert fit_config(args, "cnn", distill_keep_label="true").distill_keep_label is True
    assert fit_config(args, "cnn", distill_keep_label="0").distill_keep_label is False


@pytest.mark.slow
def test_distillation_trains_on_the_teachers_soft_targets():
    """With distill=1 the targets are the teacher's alone: a teacher that says the opposite of
    the labels makes a student that predicts the opposite (validated on the true labels)."""
    from genre_detector.audio.features import FeatureSettings
    from genre_detector.models.architectures import build_model
    from train.fit import FitConfig, fit

    s = FeatureSettings()
    mels, y = _two_band_mels(s), np.arange(12) % 2
    flipped = np.eye(2, dtype=np.float32)[1 - y[:8]]
    cfg = FitConfig(epochs=4, crops_per_track=4, distill=1.0, label_smoothing=0.0, patience=8)
    model = build_model("feedforward", (s.n_mels, s.window_frames), 2)
    res = fit(model, mels[:8], y[:8], mels[8:], y[8:], 2, s, cfg, soft_targets=flipped)
    assert res.history[-1]["val_accuracy"] == 0.0  # it learnt the teacher, not the labels
    with pytest.raises(ValueError, match="soft_targets"):
        fit(model, mels[:8], y[:8], mels[8:], y[8:], 2, s, cfg)


@pytest.mark.slow
def test_quick_training_beats_chance_and_lands_in_store(two_sources, tmp_path):
    studio, field, genre_map = two_sources
    out = tmp_path / "run"
    store = {"BENTOML_HOME": str(tmp_path / "store")}  # keep the shared test store clean
    r = _run(
        "-m",
        "train",
        "--data",
        str(studio),
        "--data",
        str(field),
        "--genre-map",
        str(genre_map),
        "--models",
        "feedforward,lstm",
        "--epochs",
        "8",
        "--crops",
        "6",
        "--minutes",
        "1.5",
        "--val-fraction",
        "0.34",
        "--out",
        str(out),
        env=store,
    )
    assert "from 2 source(s), no artist on both sides" in r.stdout
    assert "labels ['beat', 'drone', 'hiss']" in r.stdout  # field's folders mapped
    report = json.loads((out / "report.json").read_text())
    assert report["labels"] == ["beat", "drone", "hiss"]
    assert report["data"] == [str(studio), str(field)]
    assert len(report["split"]["val_tracks"]) == report["split"]["n_val"] >= 6
    for name in ("feedforward", "lstm"):
        val = report["models"][name]["val"]
        assert val["n_tracks"] >= 6
        assert val["accuracy"] > 0.6, f"{name} did not beat chance (1/3): {val['accuracy']}"
        assert set(val["per_source"]) == {"studio", "field"}
        assert sum(v["n_tracks"] for v in val["per_source"].values()) == val["n_tracks"]
        assert 0 <= val["ece"] <= 1
        assert (out / f"confusion_{name}.png").stat().st_size > 1000
        assert (out / f"curves_{name}.png").exists()
    assert (out / "report.md").read_text().startswith("# Training run")
    tags = [
        line.split(": ", 1)[1]
        for line in r.stdout.splitlines()
        if line.startswith("model store tag of ")
    ]
    assert len(tags) == 2 and tags[0].startswith("genre-feedforward:")
    # the calibrated ensemble: fitted on the validation tracks, written and stored
    cal = json.loads((out / "calibration.json").read_text())
    assert cal["labels"] == report["labels"] and set(cal["weights"]) == {"feedforward", "lstm"}
    assert all(t > 0 for t in cal["temperatures"].values())
    assert report["ensemble"]["val"]["n_tracks"] == report["split"]["n_val"]
    assert set(report["ensemble"]["weights"]) == {"feedforward", "lstm"}

    check = _run(
        "-c",
        f"""
import json
from genre_detector.runtime.store import load_from_store
model, info = load_from_store({tags[0]!r})
from genre_detector.runtime.store import load_calibration
cal = load_calibration()
print(json.dumps({{"labels": info.labels, "architecture": info.architecture,
                  "metrics": info.metrics, "metadata": info.metadata,
                  "calibration": cal.to_dict() if cal else None}}))
""",
        env=store,
    )
    info = json.loads(check.stdout.strip().splitlines()[-1])
    assert info["labels"] == ["beat", "drone", "hiss"] and info["architecture"] == "feedforward"
    assert info["metrics"]["accuracy"] == report["models"]["feedforward"]["val"]["accuracy"]
    assert info["metadata"]["data_fingerprint"] == report["data_fingerprint"]
    assert info["metadata"]["code_version"]
    fit_config = info["metadata"]["fit_config"]  # how it was trained, for a rerun
    assert fit_config["epochs"] == 8 and fit_config["crops_per_track"] == 6
    assert fit_config["artist_balance"] == 0.5 and fit_config["weight_ema"] == 0.0  # CLI defaults
    assert fit_config["distill"] == DISTILL  # the registry's: learnt mostly from musicnn
    assert info["metadata"]["inference_check"].startswith("ok")
    assert info["metadata"]["data"] == [str(studio), str(field)]
    assert info["metadata"]["genre_map"] == str(genre_map)
    assert set(info["metadata"]["per_source"]) == {"studio", "field"}
    assert info["calibration"] == cal  # the store has the run's calibration


def test_collapse_check_names_the_missing_genres():
    from train.metrics import collapse_check, unused_genres

    labels = ["classical", "electronic", "pop", "rock"]
    y = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    healthy = np.eye(4)[[0, 0, 1, 3, 2, 3, 3, 3]]  # mistakes, but every genre used
    assert collapse_check(y, healthy, labels) == "" and unused_genres(y, healthy, labels) == []
    collapsed = np.full((8, 4), 0.1)
    collapsed[:, 3] = 0.7  # one genre for everything
    msg = collapse_check(y, collapsed, labels)
    assert msg == (
        "collapsed: never predicts classical, electronic, pop; rock for 100% of the 8 tracks "
        "of its own training data"
    )
    assert collapse_check(y[:4], np.eye(4)[[0, 0, 1, 1]], labels) == ""  # only genres in y count
    # one small genre never chosen, the rest spread: reported by unused_genres, not collapse
    shy = np.eye(4)[[1, 1, 1, 1, 2, 2, 3, 3]]
    assert collapse_check(y, shy, labels) == "" and unused_genres(y, shy, labels) == ["classical"]
    # two of four genres only: collapsed, even though no genre has most of the tracks
    halves = np.eye(4)[[2, 2, 2, 2, 3, 3, 3, 3]]
    assert "never predicts classical, electronic" in collapse_check(y, halves, labels)
    # every genre used, but one of them for 17 of 20 tracks (> 80 %)
    y10 = np.repeat(np.arange(4), 5)
    lopsided = np.eye(4)[[0, 1, 2] + [3] * 17]
    assert collapse_check(y10, lopsided, labels).startswith("collapsed: rock for 85% of the 20")


@pytest.mark.slow  # builds and exports a model / imports the shipped ones
def test_store_round_trip_same_predictions(tmp_path):
    import keras

    from genre_detector.audio.features import FeatureSettings
    from genre_detector.models.architectures import build_model
    from genre_detector.runtime.keras_predictor import Predictor
    from genre_detector.runtime.store import load_from_store, save_to_store

    s = FeatureSettings()
    model = build_model("lenet", (s.n_mels, s.window_frames), 4)
    x = np.random.default_rng(0).uniform(-80, 0, (5, s.n_mels, s.window_frames)).astype("float32")
    model.get_layer("band_norm").adapt(x)
    before = keras.ops.convert_to_numpy(model(x, training=False))
    path = tmp_path / "m.keras"
    model.save(path)
    md = {
        "architecture": "lenet",
        "labels": ["a", "b", "c", "d"],
        "feature_settings": s.to_dict(),
        "metrics": {"accuracy": 0.5, "macro_f1": 0.4, "log_loss": 1.0, "n_tracks": 8},
        "data_fingerprint": "abc",
        "code_version": "test",
    }
    tag = save_to_store(path, md)
    loaded, info = load_from_store(tag)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x, training=False)), before, rtol=1e-5, atol=1e-6
    )
    assert info.settings == s and info.labels == md["labels"] and info.metrics == md["metrics"]
    assert info.tag == tag
    np.testing.assert_allclose(Predictor.from_store(tag)(x), before, rtol=1e-5, atol=1e-6)
    import bentoml

    bentoml.models.delete(tag)  # the shared test store keeps only the shipped models
    with pytest.raises(bentoml.exceptions.NotFound):
        bentoml.models.get(tag)


@pytest.mark.slow  # builds and exports a model / imports the shipped ones
def test_import_models_is_idempotent(store_with_models):
    from train.import_models import import_models

    again = import_models()
    cards = sorted(SHIPPED.glob("*/card.json"))
    has_calibration = (SHIPPED / "calibration.json").exists()
    assert len(again) == len(cards) + has_calibration and not any(new for _, new in again)
    import bentoml

    models = [tag for tag, _ in again if not tag.startswith("genre-ensemble:")]
    assert len(models) == len(cards)
    for tag in models:
        md = bentoml.models.get(tag).info.metadata
        assert set(md) >= {
            "labels",
            "feature_settings",
            "architecture",
            "metrics",
            "data_fingerprint",
            "code_version",
        }
    if has_calibration:
        from genre_detector.runtime.store import load_calibration

        cal = load_calibration(next(t for t, _ in again if t.startswith("genre-ensemble:")))
        assert cal.to_dict() == json.loads((SHIPPED / "calibration.json").read_text())


def test_shipped_models_are_the_five_nine_genre_families_with_a_calibration():
    """What `make models` ships: every registered family, one label list, and the ensemble's
    calibration over them (fails while models/ still holds the old four-genre models)."""
    cards = {p.parent.name: json.loads(p.read_text()) for p in SHIPPED.glob("*/card.json")}
    assert set(cards) == set(model_names())
    for name, card in cards.items():
        assert card["architecture"] == name and card["labels"] == NINE, name
        assert (SHIPPED / name / "model.keras").stat().st_size > 0
        from genre_detector.audio.features import FeatureSettings
        from genre_detector.models.families import family

        assert FeatureSettings.from_dict(card["feature_settings"]) == family(name).settings
        assert card["metrics"]["accuracy"] > 1 / len(NINE)
        # trained the way the registry says (a settings change without a re-ship fails here)
        fit = card["fit_config"]
        assert {k: fit[k] for k in family(name).fit} == family(name).fit, name
        if not family(name).pretrained:
            assert fit["epochs"] == family(name).epochs, name
    cal = json.loads((SHIPPED / "calibration.json").read_text())
    assert cal["labels"] == NINE
    assert set(cal["weights"]) <= set(model_names()) and cal["weights"]
    assert set(cal["temperatures"]) == set(cal["weights"])


@pytest.mark.slow
def test_shipped_models_beat_chance_on_held_out_artists(store_with_models, data_dir):
    """The validation artists of the shipped run were never trained on: every shipped model
    must clearly beat the majority genre there, and score what its card says it scored."""
    from train.data import list_tracks, read_genre_map
    from train.evaluate import evaluate

    report = json.loads((SHIPPED / "report" / "report.json").read_text())
    held = set(report["split"]["val_tracks"])
    tracks = [
        t
        for t in list_tracks(
            [data_dir / "emotify", data_dir / "4q"], read_genre_map(data_dir / "genre_map.csv")
        )
        if t.rel in held
    ]
    assert len(tracks) == len(held) == report["split"]["n_val"]
    result = evaluate(tracks)
    assert result["labels"] == NINE and result["n_tracks"] == len(tracks)
    assert set(result["models"]) == set(model_names())
    majority = max(sum(t.genre == g for t in tracks) for g in NINE) / len(tracks)
    for name, m in result["models"].items():
        assert m["accuracy"] >= max(0.5, majority + 0.05), f"{name}: {m['accuracy']:.3f}"
        card = json.loads((SHIPPED / name / "card.json").read_text())
        assert m["accuracy"] == pytest.approx(card["metrics"]["accuracy"], abs=0.02), name
        assert set(m["per_source"]) == {"emotify", "4q"}
    assert result["ensemble"]["accuracy"] >= 0.6
    assert (
        result["ensemble"]["accuracy"]
        >= max(m["accuracy"] for m in result["models"].values()) - 0.05
    )


@pytest.mark.slow
def test_evaluate_cli_writes_documented_json(store_with_models, emotify_dir, tmp_path):
    data = tmp_path / "emotify"  # named like the source: the genre map applies
    for genre in ("classical", "electronic", "pop", "rock"):
        (data / genre).mkdir(parents=True)
        for clip in sorted((emotify_dir / genre).glob("*.mp3"))[:2]:
            (data / genre / clip.name).symlink_to(clip)
    wave, sr = sf.read(sorted((emotify_dir / "rock").glob("*.mp3"))[2])
    sf.write(data / "rock" / "as_flac.flac", wave[: sr * 20], sr)  # any supported format
    out = tmp_path / "eval.json"
    r = _run("-m", "train.evaluate", "--data", str(data), "--json", str(out))
    assert "ensemble" in r.stdout
    assert "per source: emotify" in r.stdout
    result = json.loads(out.read_text())
    assert result["labels"] == NINE
    assert result["n_tracks"] == 9
    assert set(result["models"]) == set(model_names())
    for m in [*result["models"].values(), result["ensemble"]]:
        assert 0 <= m["accuracy"] <= 1 and 0 <= m["macro_f1"] <= 1 and 0 <= m["ece"] <= 1
        assert np.array(m["confusion"]).shape == (9, 9) and np.array(m["confusion"]).sum() == 9
        # pop and rock were both scored as pop-rock
        assert m["per_genre"]["pop-rock"]["support"] == 5
        assert m["per_source"] == {
            "emotify": {
                k: m["per_source"]["emotify"][k] for k in ("accuracy", "macro_f1", "n_tracks")
            }
        }
        assert m["per_source"]["emotify"]["n_tracks"] == 9
        assert m["per_source"]["emotify"]["accuracy"] == pytest.approx(m["accuracy"])
        assert isinstance(m["tag"], str) and m["tag"]


@pytest.mark.slow
def test_evaluate_cli_refuses_genres_the_models_do_not_know(
    store_with_models, emotify_dir, tmp_path
):
    data = tmp_path / "unmapped"  # no genre-map row: "rock" stays "rock"
    (data / "rock").mkdir(parents=True)
    for clip in sorted((emotify_dir / "rock").glob("*.mp3"))[:1]:
        (data / "rock" / clip.name).symlink_to(clip)
    labels = json.loads(sorted(SHIPPED.glob("*/card.json"))[0].read_text())["labels"]
    if "rock" in labels:
        pytest.skip("the shipped models still know 'rock' (the old four-genre models)")
    r = subprocess.run(
        [sys.executable, "-m", "train.evaluate", "--data", str(data)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": f"{REPO}/src:{REPO}"},
    )
    assert (
        r.returncode == 2
        and "genres ['rock'] of the data are not among the models' labels" in r.stderr
    ), r.stderr[-2000:]


@pytest.mark.slow
def test_crossval_validates_every_track_once_and_fold_1_is_the_training_split(
    synthetic_data, tmp_path
):
    from train.data import list_tracks, split_by_artist

    out = tmp_path / "cv.json"
    r = _run(
        "-m",
        "train.crossval",
        "--data",
        str(synthetic_data),
        "--models",
        "feedforward,lenet",
        "--folds",
        "3",
        "--epochs",
        "6",
        "--crops",
        "6",
        "--set",
        "eq_db=3",
        "--json",
        str(out),
    )
    res = json.loads(out.read_text())
    assert "3 of 3 artist-grouped folds, 30 of 30 tracks validated" in r.stdout
    ff = res["models"]["feedforward"]
    assert [f["fold"] for f in ff["per_fold"]] == [1, 2, 3]
    assert ff["mean_accuracy"] > 0.6, f"did not beat chance (1/3): {ff['per_fold']}"
    assert res["settings"]["feedforward"]["eq_db"] == 3
    assert res["settings"]["feedforward"]["artist_balance"] == 0.5  # the training default
    for name in ("feedforward", "lenet", "ensemble"):
        probs = np.array(res["models"][name]["out_of_fold_probabilities"])
        assert probs.shape == (30, 3) and np.allclose(probs.sum(axis=1), 1, atol=1e-3)
    assert len(res["models"]["ensemble"]["per_fold"]) == 3 and "ensemble" in r.stdout
    folds = {}
    for t in res["tracks"]:
        folds.setdefault(t["fold"], set()).add(t["path"])
    artists = {f: {t["artist"] for t in res["tracks"] if t["fold"] == f} for f in folds}
    assert not (artists[1] & artists[2] or artists[1] & artists[3] or artists[2] & artists[3])
    assert {t["source"] for t in res["tracks"]} == {synthetic_data.name}
    _, val = split_by_artist(list_tracks(synthetic_data), 1 / 3, seed=0)
    assert folds[1] == {t.rel for t in val}
    assert all(p.startswith(f"{synthetic_data.name}/") for p in folds[1])
    pooled = res["models"]["ensemble"]["pooled"]  # the nested-calibrated ensemble
    assert set(pooled["per_source"]) == {synthetic_data.name} and 0 <= pooled["ece"] <= 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "learning_rat=0.1"], "unknown FitConfig field(s) learning_rat; valid: "),
        (["--set", "eq_db=loud"], "eq_db='loud' is not a float"),
        (["--set", "distill_keep_label=maybe"], "distill_keep_label='maybe' is not a bool"),
        (["--set", "seed=3"], "set the seed with --seed"),
        (["--set", "features=musicnn+mfcc"], "join distinct blocks with '+'; valid: musicnn, "),
        (["--set", "head=stackd"], "head='stackd': valid: joint, stacked"),
        (["--only-folds", "1,x"], "--only-folds takes fold numbers"),
        (["--only-folds", "6"], "--only-folds must lie between 1 and 5"),
        (["--models", ","], "--models names no model"),
        (
            ["--models", "cnn,rnn"],
            "unknown model(s) rnn; valid names: feedforward, lenet, cnn, lstm, musicnn",
        ),
    ],
)
def test_crossval_rejects_bad_options_before_any_work(synthetic_data, args, message):
    r = subprocess.run(
        [sys.executable, "-m", "train.crossval", "--data", str(synthetic_data), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": f"{REPO}/src:{REPO}"},
        timeout=300,
    )
    assert r.returncode == 2 and message in r.stderr, r.stderr[-1000:]


def test_ship_copies_models_cards_and_report(tmp_path, monkeypatch):
    """ship() copies the run into models/ and writes each model's ONNX export beside it
    (the export itself is tested in tests/test_onnx.py; here it is recorded)."""
    import genre_detector.models.onnx_export as onnx_export
    from genre_detector.audio.features import FeatureSettings
    from train.__main__ import ship

    exported = []

    def fake_export(keras_file, onnx_file, settings):
        exported.append((Path(keras_file).read_bytes(), settings))
        Path(onnx_file).write_bytes(b"onnx:" + Path(keras_file).read_bytes())

    monkeypatch.setattr(onnx_export, "export_onnx", fake_export)
    run, models = tmp_path / "run", tmp_path / "models"
    run.mkdir()
    for name in ("cnn", "lstm"):
        (run / f"{name}.keras").write_bytes(name.encode())
        (run / f"confusion_{name}.png").write_bytes(b"png")
    (run / "report.json").write_text("{}")
    (run / "calibration.json").write_text('{"labels": ["a"]}')
    (run / "report.md").write_text("# Training run x\n\n![cnn](confusion_cnn.png)\n")
    s = FeatureSettings()
    cards = {n: {"architecture": n, "feature_settings": s.to_dict()} for n in ("cnn", "lstm")}
    ship(run, cards, models)
    assert (models / "calibration.json").read_text() == '{"labels": ["a"]}'
    assert (models / "lstm" / "model.keras").read_bytes() == b"lstm"
    assert json.loads((models / "cnn" / "card.json").read_text()) == cards["cnn"]
    assert (models / "cnn" / "model.onnx").read_bytes() == b"onnx:cnn"  # of the copied model
    assert exported == [(b"cnn", s), (b"lstm", s)]
    assert sorted(p.name for p in (models / "report").iterdir()) == [
        "confusion_cnn.png",
        "confusion_lstm.png",
        "report.json",
    ]
    assert "![cnn](report/confusion_cnn.png)" in (models / "TRAINING_REPORT.md").read_text()


def test_random_eq_and_band_shift_keep_shapes_and_move_bands():
    from train.fit import random_eq, shift_bands

    rng = np.random.default_rng(0)
    x = np.tile(np.linspace(-80, 0, 64, dtype=np.float32)[None, :, None], (5, 1, 16))
    eq = random_eq(x, 6.0, rng)
    assert eq.shape == x.shape and eq.dtype == np.float32
    delta = eq - x  # one smooth curve per window
    assert np.allclose(delta, delta[:, :, :1])
    assert 0 < np.abs(delta).max() <= 6 * (1 + 1 + 1 / 2 + 1 / 3)
    shifted = shift_bands(x, 2, np.random.default_rng(1))
    moved = np.rint((shifted[:, 32, 0] - x[:, 32, 0]) / (80 / 63))  # bands moved per window
    assert shifted.shape == x.shape and set(moved) <= {-2, -1, 0, 1, 2} and len(set(moved)) > 1


@pytest.mark.slow
def test_teacher_targets_are_cross_fitted_on_the_training_tracks_only(synthetic_data):
    """Soft targets are probabilities, one row per training track, and do not depend on the
    validation tracks at all (their labels may be anything)."""
    from train.data import artist_folds, list_tracks
    from train.distill import teacher_targets
    from train.trainer import Corpus

    corpus = Corpus(list_tracks(synthetic_data), workers=1)
    train_idx, val_idx = artist_folds(corpus.tracks, 3, 0)[0]
    soft = teacher_targets(corpus, train_idx)
    assert soft.shape == (len(train_idx), len(corpus.labels))
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, atol=1e-5)
    assert (soft.argmax(1) == corpus.y[train_idx]).mean() > 0.6  # it learnt something
    corpus.y = corpus.y.copy()
    corpus.y[val_idx] = (corpus.y[val_idx] + 1) % len(corpus.labels)  # relabel the others
    np.testing.assert_allclose(teacher_targets(corpus, train_idx), soft, atol=1e-6)


def test_combine_cv_merges_runs_on_the_same_folds_and_refuses_others(tmp_path):
    """train.experiments.combine_cv: models taken from two runs, the ensemble cross-fitted over
    them; a run on other tracks is refused."""
    from train.experiments.combine_cv import main as combine

    rng = np.random.default_rng(0)
    labels = ["a", "b", "c"]
    tracks = [
        {
            "path": f"s/{i}.wav",
            "source": "s",
            "genre": labels[i % 3],
            "artist": f"x{i // 2}",
            "fold": 1 + (i // 2) % 5,
        }
        for i in range(60)
    ]
    y = np.array([i % 3 for i in range(60)])

    def run(path, names, strength, tr=tracks):
        models = {}
        for n in names:
            logits = rng.normal(size=(60, 3)) + strength * np.eye(3)[y]
            p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
            models[n] = {"out_of_fold_probabilities": p.tolist()}
        path.write_text(json.dumps({"labels": labels, "tracks": tr, "seed": 0, "models": models}))
        return path

    a = run(tmp_path / "a.json", ["good", "weak"], 3.0)
    b = run(tmp_path / "b.json", ["other"], 0.5)
    out = tmp_path / "combined.json"
    assert combine([f"{a}:good,weak", f"{b}:other", "--json", str(out)]) == 0
    models = json.loads(out.read_text())["models"]
    assert set(models) == {"good", "weak", "other", "ensemble"}
    assert len(models["ensemble"]["per_fold"]) == 5
    assert models["good"]["accuracy"] > models["other"]["accuracy"]
    assert models["ensemble"]["accuracy"] >= models["other"]["accuracy"]
    c = run(tmp_path / "c.json", ["x"], 1.0, tracks[::-1])
    with pytest.raises(SystemExit):
        combine([f"{a}:good", f"{c}:x"])


@pytest.mark.slow
def test_musicnn_trains_a_track_head_into_the_store_and_serves_it(two_sources, tmp_path):
    """The pretrained family end to end: frozen backbones embed the windows, the track head
    (mean and spread of the window features) is fitted, stored as head.npz beside the
    backbones and their ONNX graph, and the stored pair predicts what training measured."""
    studio, field, genre_map = two_sources
    out = tmp_path / "run"
    store = {"BENTOML_HOME": str(tmp_path / "store")}
    r = _run(
        "-m",
        "train",
        *("--data", str(studio), "--data", str(field), "--genre-map", str(genre_map)),
        *("--models", "musicnn", "--val-fraction", "0.34", "--out", str(out)),
        env=store,
    )
    report = json.loads((out / "report.json").read_text())
    val = report["models"]["musicnn"]["val"]
    assert val["accuracy"] > 0.6, f"musicnn did not beat chance (1/3): {val['accuracy']}"
    assert (out / "musicnn.head.npz").exists()
    # the report shows only pictures it drew (musicnn has no training curves)
    images = re.findall(r"\]\(([^)]+\.png)\)", (out / "report.md").read_text())
    assert "confusion_musicnn.png" in images
    assert all((out / img).exists() for img in images), images
    tag = report["models"]["musicnn"]["tag"]
    assert tag.startswith("genre-musicnn:"), r.stdout[-2000:]
    check = _run(
        "-c",
        f"""
import json, os
from genre_detector.audio.features import extract_feature_sets
from genre_detector.runtime.onnx_predictor import OnnxPredictor
from genre_detector.scoring.pooling import track_probabilities
from genre_detector.runtime.store import resolve
entry = resolve({tag!r})
p = OnnxPredictor.from_store({tag!r})
s = p.info.settings
w = extract_feature_sets(open({str(next(studio.glob("beat/*.wav")))!r}, "rb").read(), [s])[s]
feats = p(w.windows)
probs = p.info.window_probs(feats)
track = track_probabilities(probs, p.info.pooling)
print(json.dumps({{"files": sorted(os.listdir(entry.path)),
                  "md": {{k: entry.info.metadata.get(k) for k in ("track_head", "head_sha256")}},
                  "feats": list(feats.shape), "probs": list(probs.shape),
                  "sum": float(track.sum()), "top": p.info.labels[int(track.argmax())]}}))
""",
        env=store,
    )
    got = json.loads(check.stdout.strip().splitlines()[-1])
    assert {"model.keras", "model.onnx", "head.npz"} <= set(got["files"])
    assert got["md"]["track_head"] == "head.npz" and len(got["md"]["head_sha256"]) == 16
    assert got["feats"][1] == 500 and got["probs"] == [got["feats"][0], 3]
    assert abs(got["sum"] - 1) < 1e-9
    assert got["top"] == "beat"


def _fake_tracks(n_artists=40, per_artist=3, genres=("a", "b", "c", "d")):
    from train.data import Track

    return [
        Track(Path(f"/x/{k}-{j}.wav"), genres[k % len(genres)], f"Artist {k}", "s", f"s/{k}-{j}")
        for k in range(n_artists)
        for j in range(per_artist)
    ]


def test_stopping_split_holds_back_training_artists_only():
    from train.data import artist_folds, stopping_split

    tracks = _fake_tracks()
    train_idx, val_idx = artist_folds(tracks, 5, 0)[0]
    fit_idx, stop_idx = stopping_split(tracks, train_idx, 0.2, seed=0)
    assert sorted([*fit_idx, *stop_idx]) == sorted(train_idx)  # the training side, split
    assert not set(stop_idx) & set(val_idx) and not set(fit_idx) & set(val_idx)
    artists = lambda idx: {tracks[i].group for i in idx}  # noqa: E731
    assert not artists(fit_idx) & artists(stop_idx)  # no artist on both sides
    assert 0.15 <= len(stop_idx) / len(train_idx) <= 0.25
    np.testing.assert_array_equal(stopping_split(tracks, train_idx, 0.2, 0)[1], stop_idx)
    fit_all, none = stopping_split(tracks, train_idx, 0.0, 0)  # 0: no early stopping
    np.testing.assert_array_equal(fit_all, train_idx) and len(none) == 0
    with pytest.raises(ValueError, match="at least 5 artists"):
        stopping_split(tracks, train_idx[:9], 0.2, 0)  # 3 artists cannot give 5 parts


def test_scored_tracks_are_used_for_nothing_but_the_score(monkeypatch):
    """train_family (the one path of `python -m train` and every crossval fold): the log-mels
    `fit` stops on and learns from, and the tracks the teacher is fitted on, are never those
    of the validation tracks; those are only predicted after training."""
    import train.trainer as trainer
    from genre_detector.models.families import family
    from train.data import artist_folds
    from train.fit import FitConfig, FitResult

    tracks = _fake_tracks()
    corpus = trainer.Corpus(tracks)
    s = family("cnn").settings
    corpus._mels[s] = [np.full((s.n_mels, 80), i, np.float16) for i in range(len(tracks))]
    seen = {}

    def fake_fit(model, fit_mels, y_fit, stop_mels, y_stop, n, s, cfg, name, groups, soft):
        seen["fit"], seen["stop"] = (
            [int(m[0, 0]) for m in fit_mels],
            [int(m[0, 0]) for m in stop_mels],
        )
        seen["soft_rows"] = len(soft)
        return FitResult(model, [], 3, 0.0)

    def fake_teacher(idx, seed):
        seen["teacher"] = [int(i) for i in idx]
        return np.full((len(idx), len(corpus.labels)), 1 / len(corpus.labels), np.float32)

    predicted = []

    def fake_probs(model, windows, owner, n):
        predicted.append(sorted({int(v) for v in windows[:, 0, 0]}))
        return np.full((n, len(corpus.labels)), 1 / len(corpus.labels))

    monkeypatch.setattr(trainer, "fit", fake_fit)
    monkeypatch.setattr(trainer, "new_model", lambda *a: object())
    monkeypatch.setattr(trainer, "track_probs", fake_probs)
    monkeypatch.setattr(corpus, "teacher_targets", fake_teacher)
    for k, (train_idx, val_idx) in enumerate(artist_folds(tracks, 5, 0)):
        seen.clear(), predicted.clear()
        tr = trainer.train_family("cnn", corpus, train_idx, val_idx, FitConfig(distill=0.8))
        scored = set(val_idx.tolist())
        assert seen["stop"] and not set(seen["stop"]) & scored, f"fold {k + 1} stopped on scored"
        assert not set(seen["fit"]) & scored and not set(seen["teacher"]) & scored
        assert seen["stop"] == tr.stop_idx.tolist() and seen["fit"] == tr.fit_idx.tolist()
        assert seen["teacher"] == seen["fit"] and seen["soft_rows"] == len(seen["fit"])
        assert sorted(seen["fit"] + seen["stop"]) == sorted(train_idx.tolist())
        stop_artists = {tracks[i].group for i in seen["stop"]}
        assert not stop_artists & {tracks[i].group for i in [*seen["fit"], *val_idx]}
        assert predicted[-1] == sorted(scored)  # the scored tracks: predicted, last
        assert tr.p_val.shape == (len(val_idx), len(corpus.labels))
    with pytest.raises(ValueError, match="both the training and the validation side"):
        trainer.train_family("cnn", corpus, [0, 1, 2], [2, 3], FitConfig())


@pytest.mark.slow
def test_fit_without_stopping_tracks_keeps_the_last_epoch():
    from genre_detector.audio.features import FeatureSettings
    from genre_detector.models.architectures import build_model
    from train.fit import FitConfig, fit

    s = FeatureSettings()
    mels, y = _two_band_mels(s), np.arange(12) % 2
    model = build_model("feedforward", (s.n_mels, s.window_frames), 2)
    res = fit(model, mels, y, [], y[:0], 2, s, FitConfig(epochs=3, crops_per_track=2))
    assert res.best_epoch == 3 and len(res.history) == 3
    assert "val_loss" not in res.history[-1]


def _correct(n_artists, per_artist, p, rng, clustered=True):
    """0/1 per track: per artist all alike (clustered) or per track independent."""
    if clustered:
        return np.repeat(rng.random(n_artists) < p, per_artist).astype(float)
    return (rng.random(n_artists * per_artist) < p).astype(float)


def test_paired_artist_bootstrap_finds_a_real_difference_and_no_phantom_one():
    from train.intervals import paired_difference, recall_intervals

    rng = np.random.default_rng(0)
    groups = np.repeat([f"artist {k}" for k in range(120)], 3)
    a = _correct(120, 3, 0.6, rng)
    # B: right wherever A is, plus all tracks of 24 artists A gets wrong (+20 points)
    wrong = np.flatnonzero(a[::3] == 0)[:24]
    b = a.copy()
    for k in wrong:
        b[3 * k : 3 * k + 3] = 1
    d = paired_difference(a, b, groups, n_boot=4000)
    assert d["difference"] == pytest.approx(24 * 3 / 360)
    assert 0 < d["low"] < d["difference"] < d["high"]  # excludes 0
    # C: as often right as A, but on other artists (swap 20 right artists for 20 wrong ones)
    right = np.flatnonzero(a[::3] == 1)[:20]
    c = a.copy()
    for k in [*right, *np.flatnonzero(a[::3] == 0)[:20]]:
        c[3 * k : 3 * k + 3] = 1 - c[3 * k : 3 * k + 3]
    d0 = paired_difference(a, c, groups, n_boot=4000)
    assert d0["difference"] == 0 and d0["low"] < 0 < d0["high"]  # includes 0
    assert d0["high"] - d0["low"] > 0.05  # 40 artists changed sides: far from certain
    # recall per genre: genre 0 all right, genre 1 half (by artist)
    y = np.repeat(np.arange(120) % 2, 3)
    corr = np.where(y == 0, 1.0, np.repeat(np.arange(120) % 4 == 1, 3))
    r = recall_intervals(corr, y, ["x", "y", "z"], groups, n_boot=2000)
    assert set(r) == {"x", "y"} and r["x"]["recall"] == r["x"]["low"] == 1.0
    assert r["y"]["recall"] == pytest.approx(0.5) and r["y"]["low"] < 0.5 < r["y"]["high"]
    assert r["y"]["n_tracks"] == 180


def test_bootstrap_resamples_artists_not_tracks():
    """The same correctness per track: when an artist's tracks agree the interval must be
    wider than when its tracks are independent (resampling tracks would not see this)."""
    from train.intervals import accuracy_interval

    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(60), 6)
    clustered = accuracy_interval(_correct(60, 6, 0.5, rng), groups, n_boot=3000)
    spread = accuracy_interval(_correct(60, 6, 0.5, rng, clustered=False), groups, n_boot=3000)
    width = lambda r: r["high"] - r["low"]  # noqa: E731
    assert width(clustered) > 1.8 * width(spread)


def _cv_file(path, y, labels, folds, probs_by_seed, artists):
    """A minimal train.crossval result with one or more repeats (seeds 0, 1, ...)."""
    seeds = sorted(probs_by_seed)
    tracks = [
        {"path": f"s/{i}", "source": "s", "genre": labels[c], "artist": artists[i], "fold": f}
        for i, (c, f) in enumerate(zip(y, folds[seeds[0]]))
    ]

    def models(seed):
        return {n: {"out_of_fold_probabilities": p} for n, p in probs_by_seed[seed].items()}

    run = {"labels": labels, "tracks": tracks, "seed": seeds[0], "models": models(seeds[0])}
    run["more_repeats"] = [{"seed": s, "folds": folds[s], "models": models(s)} for s in seeds[1:]]
    path.write_text(json.dumps(run))
    return path


def test_compare_cli_pairs_repeats_fold_for_fold(tmp_path, capsys):
    from train.experiments.compare import main as compare

    labels, n = ["a", "b"], 200
    y = [i % 2 for i in range(n)]
    artists = [f"artist {i // 2}" for i in range(n)]
    folds = {s: [1 + (i // 2 + s) % 5 for i in range(n)] for s in (0, 1)}
    onehot = lambda right: [  # noqa: E731
        [0.9, 0.1] if (c == 0) == r else [0.1, 0.9] for c, r in zip(y, right)
    ]
    good = [i % 10 != 0 for i in range(n)]  # 90 %
    weak = [i % 10 < 6 for i in range(n)]  # 60 %
    a = _cv_file(
        tmp_path / "a.json", y, labels, folds, {s: {"m": onehot(weak)} for s in (0, 1)}, artists
    )
    b = _cv_file(
        tmp_path / "b.json", y, labels, folds, {s: {"m": onehot(good)} for s in (0, 1)}, artists
    )
    out = tmp_path / "cmp.json"
    assert compare([str(a), str(b), "--boot", "2000", "--json", str(out)]) == 0
    r = json.loads(out.read_text())["comparisons"][0]
    assert r["seeds"] == [0, 1] and r["n_tracks"] == n and r["n_artists"] == 100
    assert r["difference"]["difference"] == pytest.approx(0.3) and r["difference"]["low"] > 0
    assert r["accuracy_a"]["accuracy"] == pytest.approx(0.6)
    assert set(r["recall_a"]) == {"a", "b"} and "excludes 0" in capsys.readouterr().out
    # one model against another of the same run; a run on other folds is refused
    assert compare([f"{a}:m", f"{a}:m", "--boot", "200"]) == 0
    other = {0: [1 + i % 5 for i in range(n)]}
    c = _cv_file(tmp_path / "c.json", y, labels, other, {0: {"m": onehot(good)}}, artists)
    with pytest.raises(SystemExit):
        compare([str(a), str(c)])


@pytest.mark.slow
def test_crossval_repeats_write_every_seed_and_compare_reads_them(synthetic_data, tmp_path):
    out = tmp_path / "cv.json"
    r = _run(
        "-m",
        "train.crossval",
        *("--data", str(synthetic_data), "--models", "feedforward", "--folds", "3"),
        *("--epochs", "2", "--crops", "2", "--repeats", "2", "--json", str(out)),
    )
    res = json.loads(out.read_text())
    assert res["seed"] == 0 and [m["seed"] for m in res["more_repeats"]] == [1]
    assert "over 2 repeats (95 % interval from resampling artists)" in r.stdout
    assert res["settings"]["feedforward"]["stop_fraction"] == 0.2
    for rep in [res, *res["more_repeats"]]:
        rows = rep["models"]["feedforward"]["per_fold"]
        assert [f["fold"] for f in rows] == [1, 2, 3]
        assert all(f["n_stop"] > 0 and f["n_fit"] + f["n_stop"] == 20 for f in rows)
    assert res["more_repeats"][0]["folds"] != [t["fold"] for t in res["tracks"]]
    cmp = _run("-m", "train.experiments.compare", f"{out}:feedforward", f"{out}:feedforward")
    assert "B - A +0.0 points" in cmp.stdout and "fold seeds [0, 1]" in cmp.stdout
