"""genre_detector.models.families: the one registry of model families, plugins (GENRE_PLUGINS), and
the service's refusal to combine models that do not share one label list."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import requests

from genre_detector.audio.features import MUSICNN_SETTINGS, FeatureSettings
from genre_detector.models.families import (
    FAMILIES,
    LEGACY_NAMES,
    Family,
    display_name,
    family,
    model_names,
    register,
    research_names,
)
from genre_detector.runtime.store import InconsistentModels, ModelInfo, check_consistent
from loadtests.service_process import REPO, ServedService
from tests.expected import NINE

FIVE = ("feedforward", "lenet", "cnn", "lstm", "musicnn")
RESEARCH = ("feedforward", "lenet", "cnn", "lstm")
PYTHONPATH = f"{REPO}:{REPO / 'src'}"
SHIPPED = REPO / "models"


def _python(code: str, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": PYTHONPATH, **env},
    )


def _shipped_labels() -> list[str]:
    cards = sorted(SHIPPED.glob("*/card.json"))
    if not cards:
        pytest.skip("no shipped models under models/")
    return json.loads(cards[0].read_text())["labels"]


# ----------------------------------------------------------------------------- registry
def test_the_five_families_in_registry_order():
    assert model_names() == FIVE == tuple(FAMILIES)
    assert research_names() == RESEARCH
    assert LEGACY_NAMES == {
        "feedforward": "Feed-Forward Model",
        "lenet": "Le-Net Model",
        "cnn": "CNN Model",
        "lstm": "LSTM Model",
    }
    assert {n: display_name(n) for n in FIVE} == {
        "feedforward": "Feed-Forward",
        "lenet": "LeNet",
        "cnn": "CNN",
        "lstm": "CNN+LSTM",
        "musicnn": "musicnn",
    }
    assert display_name("not-registered") == "not-registered"


def test_each_family_declares_its_features_and_training():
    for name in RESEARCH:
        f = family(name)
        assert f.settings == FeatureSettings() and not f.pretrained and f.legacy_name
        assert f.builder == f"genre_detector.models.architectures:{name}"
        assert f.epochs > 0
    m = family("musicnn")
    assert m.settings == MUSICNN_SETTINGS and m.pretrained and m.legacy_name is None
    assert (
        m.settings.sample_rate,
        m.settings.n_mels,
        m.settings.window_frames,
        m.settings.scale,
    ) == (16000, 96, 187, "log10")
    assert family("feedforward").fit == {"learning_rate": 5e-4, "distill": 0.8}
    assert family("lstm").fit == {"learning_rate": 1e-3, "weight_ema": 0.7, "distill": 0.8}
    assert family("lstm").epochs == 36
    # every research family learns mostly from musicnn's soft targets; musicnn is the teacher
    assert {n: family(n).fit.get("distill", 0.0) for n in FIVE} == {
        **dict.fromkeys(RESEARCH, 0.8),
        "musicnn": 0.0,
    }


def test_unknown_family_names_the_valid_ones():
    with pytest.raises(ValueError) as info:
        family("transformer")
    assert "transformer" in str(info.value) and ", ".join(FIVE) in str(info.value)


def tiny_builder(input_shape, n_classes):
    import keras

    inputs = keras.Input(shape=tuple(input_shape))
    x = keras.layers.GlobalAveragePooling1D()(inputs)
    return keras.Model(inputs, keras.layers.Dense(n_classes, activation="softmax")(x))


def test_register_adds_a_family_everything_sees():
    """A registered family is built through architectures.build_model like the shipped ones
    (builder named "module:function")."""
    from genre_detector.models.architectures import build_model

    toy = Family(
        "tmp-toy",
        "Temporary toy",
        f"{__name__}:tiny_builder",
        settings=FeatureSettings(n_mels=32, window_frames=32),
    )
    register(toy)
    try:
        assert model_names() == (*FIVE, "tmp-toy") and research_names() == RESEARCH
        assert display_name("tmp-toy") == "Temporary toy"
        model = build_model("tmp-toy", (32, 32), 9)
        assert tuple(model.output_shape) == (None, 9)
        p = np.asarray(model(np.full((2, 32, 32), -40.0, np.float32)))
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
    finally:
        FAMILIES.pop("tmp-toy")
    assert model_names() == FIVE


def test_genre_plugins_env_registers_the_toy_family():
    r = _python(
        """
        import json
        from genre_detector.models.families import FAMILIES, research_names, display_name
        f = FAMILIES["toy"]
        print(json.dumps({"names": list(FAMILIES), "research": list(research_names()),
                          "display": display_name("toy"), "settings": f.settings.to_dict()}))
        """,
        {"GENRE_PLUGINS": " tests.toy_family , "},
    )  # spaces and empty entries ignored
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["names"] == [*FIVE, "toy"] and out["research"] == list(RESEARCH)
    assert out["display"] == "Toy"
    assert FeatureSettings.from_dict(out["settings"]) != FeatureSettings()  # its own features
    assert "toy" not in FAMILIES  # this process is untouched


def test_a_missing_plugin_fails_loudly():
    r = _python("import genre_detector.models.families", {"GENRE_PLUGINS": "tests.no_such_plugin"})
    assert r.returncode != 0 and "tests.no_such_plugin" in r.stderr


# ----------------------------------------------------------------------------- labels


def _info(name: str, labels: list[str]) -> ModelInfo:
    return ModelInfo(
        architecture=name,
        labels=list(labels),
        settings=FeatureSettings(),
        metrics={},
        tag=f"genre-{name}:v1",
    )


def test_check_consistent_returns_the_shared_labels():
    from genre_detector.models.calibration import Calibration

    infos = {n: _info(n, NINE) for n in FIVE}
    assert check_consistent(infos) == NINE
    assert check_consistent(infos, Calibration(list(NINE))) == NINE


def test_check_consistent_names_every_model_and_its_labels():
    old = ["classical", "electronic", "pop", "rock"]
    infos = {
        "feedforward": _info("feedforward", NINE),
        "cnn": _info("cnn", old),
        "musicnn": _info("musicnn", NINE),
    }
    with pytest.raises(InconsistentModels) as info:
        check_consistent(infos)
    msg = str(info.value)
    assert "feedforward (genre-feedforward:v1): " + ", ".join(NINE) in msg
    assert "cnn (genre-cnn:v1): classical, electronic, pop, rock" in msg
    assert "musicnn (genre-musicnn:v1): " + ", ".join(NINE) in msg
    # the same genres in another order cannot be combined either
    with pytest.raises(InconsistentModels, match="lstm"):
        check_consistent({"cnn": _info("cnn", NINE), "lstm": _info("lstm", NINE[::-1])})
    with pytest.raises(InconsistentModels):
        check_consistent({})
    assert issubclass(InconsistentModels, ValueError)


def test_check_consistent_checks_the_calibration_too():
    from genre_detector.models.calibration import Calibration

    infos = {n: _info(n, NINE) for n in ("cnn", "lstm")}
    with pytest.raises(InconsistentModels) as info:
        check_consistent(infos, Calibration(NINE[:-1]))
    assert "ensemble calibration (genre-ensemble): " + ", ".join(NINE[:-1]) in str(info.value)


# ----------------------------------------------------------------------------- served for real
def _make_store(store: Path, script: str, env: dict | None = None) -> dict:
    """A private model store with the shipped models imported, then `script` run in it;
    returns the JSON the script prints last."""
    prelude = textwrap.dedent("""
        import json
        import numpy as np
        from train.import_models import import_models
        imported = import_models()
        """)
    r = _python(prelude + textwrap.dedent(script), {"BENTOML_HOME": str(store), **(env or {})})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_service_refuses_to_start_on_mixed_label_lists(tmp_path):
    """One family retrained with the labels in another order: `bentoml serve` exits non-zero
    naming each model and its labels, rather than averaging mismatched columns."""
    labels = _shipped_labels()
    store = tmp_path / "store"
    made = _make_store(
        store,
        """
        import shutil, tempfile
        from genre_detector.runtime.store import card_metadata, save_to_store
        md = card_metadata("models/cnn/card.json")
        md["labels"] = md["labels"][::-1]
        tag = save_to_store("models/cnn/model.keras", md)
        print(json.dumps({"tag": tag, "imported": [t for t, _ in imported]}))
        """,
    )
    svc = ServedService(env={"BENTOML_HOME": str(store), "PYTHONPATH": PYTHONPATH})
    try:
        rc = svc.proc.wait(240)
    except subprocess.TimeoutExpired:
        svc.stop()
        pytest.fail(f"bentoml serve did not exit on mixed labels:\n{svc.logs()[-3000:]}")
    logs = svc.logs()
    assert rc != 0, logs[-3000:]
    assert "InconsistentModels" in logs and "do not share one label list" in logs, logs[-3000:]
    assert f"cnn ({made['tag']}): {', '.join(labels[::-1])}" in logs, logs[-3000:]
    assert "lenet (genre-lenet:" in logs and f"): {', '.join(labels)}" in logs, logs[-3000:]


TRAIN_TOY = """
    import keras
    from genre_detector.models.families import family
    from genre_detector.audio.features import extract_windows
    from genre_detector.runtime.keras_predictor import Predictor
    from genre_detector.scoring.pooling import track_probabilities
    from genre_detector.runtime.store import card_metadata, save_to_store
    labels = card_metadata("models/cnn/card.json")["labels"]
    toy = family("toy")
    clips = {CLIPS}
    batches = [extract_windows(path, toy.settings) for path in clips]
    x = np.concatenate([b.windows for b in batches])
    y = np.concatenate([np.full(len(b.windows), i % len(labels)) for i, b in enumerate(batches)])
    keras.utils.set_random_seed(0)
    model = toy.build((toy.settings.n_mels, toy.settings.window_frames), len(labels))
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    history = model.fit(x, y, epochs=toy.epochs * 10, batch_size=8, verbose=0).history
    model.save("{KERAS}")
    tag = save_to_store("{KERAS}", {{
        "architecture": "toy", "labels": labels, "feature_settings": toy.settings.to_dict(),
        "metrics": {{"accuracy": float(history["accuracy"][-1]), "macro_f1": 0.5,
                    "log_loss": float(history["loss"][-1]), "n_tracks": len(clips)}},
        "data_fingerprint": "toy", "code_version": "test"}})
    # what the stored model says about the first clip, computed here, not by the service
    served = Predictor.from_store(tag)
    expected = track_probabilities(served(batches[0].windows))
    print(json.dumps({{"tag": tag, "labels": labels, "expected": expected.tolist(),
                      "settings": toy.settings.to_dict(),
                      "n_windows": len(batches[0].windows), "loss": history["loss"]}}))
"""


@pytest.mark.slow
def test_a_plugin_family_is_trained_stored_and_served(tmp_path, gtzan_dir):
    """The registry's promise: register a family (GENRE_PLUGINS), put a model of it in the
    store, and `bentoml serve` serves it next to the shipped ones, with its own features."""
    labels = _shipped_labels()
    store, clip = tmp_path / "store", gtzan_dir / "blues.00000.wav"
    clips = [str(clip), *(str(gtzan_dir / f"{g}.00000.wav") for g in ("classical", "metal"))]
    plugin = {"GENRE_PLUGINS": "tests.toy_family", "PYTHONPATH": PYTHONPATH}
    made = _make_store(store, TRAIN_TOY.format(CLIPS=clips, KERAS=tmp_path / "toy.keras"), plugin)
    assert made["labels"] == labels and made["tag"].startswith("genre-toy:")
    assert made["loss"][-1] < made["loss"][0]  # it did learn something
    settings = FeatureSettings.from_dict(made["settings"])
    svc = ServedService(env={"BENTOML_HOME": str(store), **plugin})
    try:
        svc.wait_ready(timeout=420)
        body = requests.get(f"{svc.url}/models", timeout=10).json()
        assert body["labels"] == labels
        assert list(body["models"])[-1] == "toy" and set(body["models"]) >= {"toy", *RESEARCH}
        toy = body["models"]["toy"]
        assert toy["display_name"] == "Toy" and toy["tag"] == made["tag"]
        assert FeatureSettings.from_dict(toy["feature_settings"]) == settings

        r = requests.post(
            f"{svc.url}/predict",
            params={"models": "toy"},
            timeout=300,
            files={"audio": (clip.name, clip.read_bytes())},
        )
        assert r.status_code == 200, r.text
        reply = r.json()
        assert list(reply["models"]) == ["toy"] and reply["model_tags"] == {"toy": made["tag"]}
        p = reply["models"]["toy"]["probabilities"]
        assert list(p) == labels
        np.testing.assert_allclose([p[g] for g in labels], made["expected"], atol=1e-4)
        assert reply["n_windows"] == made["n_windows"] == settings.max_windows
        assert len(reply["timeline"]) == made["n_windows"]
        e = reply["ensemble"]  # an ensemble of one model is that model
        np.testing.assert_allclose(
            [e["probabilities"][g] for g in labels], made["expected"], atol=1e-4
        )
        assert e["calibrated"] is False and e["n_models"] == 1

        r = requests.post(
            f"{svc.url}/",
            timeout=300,  # the research page: still four
            files={"audio_file": (clip.name, clip.read_bytes())},
        )
        assert r.status_code == 200, r.text
        assert set(r.json()) == set(LEGACY_NAMES.values())
    finally:
        svc.stop()
    assert "toy" not in FAMILIES


def test_the_bento_packs_every_registered_family_and_the_calibration():
    """bentofile.yaml's model list (what `bentoml build` copies into the Bento and the image)
    names exactly the registry's families and the ensemble's calibration."""
    import yaml

    from genre_detector.models.families import FAMILIES
    from genre_detector.runtime.store import CALIBRATION_NAME, store_name

    listed = yaml.safe_load((REPO / "bentofile.yaml").read_text())["models"]
    wanted = [f"{store_name(n)}:latest" for n in FAMILIES] + [f"{CALIBRATION_NAME}:latest"]
    assert sorted(listed) == sorted(wanted)
