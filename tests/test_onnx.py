"""The ONNX export of every stored model predicts what the Keras model predicts, and the
model service's ONNX path never imports TensorFlow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from genre_detector.models.families import FAMILIES

pytestmark = pytest.mark.slow
TOLERANCE = 1e-5
REPO = Path(__file__).resolve().parent.parent


def _real_windows(gtzan_dir, emotify_dir, settings) -> np.ndarray:
    from genre_detector.audio.features import extract_feature_sets

    clips = [
        gtzan_dir / "rock.00000.wav",
        gtzan_dir / "classical.00000.wav",
        sorted((emotify_dir / "electronic").glob("*.mp3"))[0],
    ]
    return np.concatenate(
        [extract_feature_sets(c.read_bytes(), [settings])[settings].windows for c in clips]
    )


def test_every_stored_model_has_an_onnx_twin_that_agrees(store_with_models, gtzan_dir, emotify_dir):
    from genre_detector.runtime.keras_predictor import Predictor
    from genre_detector.runtime.model_set import default_refs
    from genre_detector.runtime.onnx_predictor import OnnxPredictor, has_onnx

    refs = default_refs()
    assert refs, "no models in the store"
    diffs = {}
    for name, ref in refs.items():
        assert has_onnx(ref), f"{ref} was stored without model.onnx"
        keras_p, onnx_p = Predictor.from_store(ref), OnnxPredictor.from_store(ref)
        windows = _real_windows(gtzan_dir, emotify_dir, keras_p.info.settings)
        a, b = keras_p(windows), onnx_p(windows)
        # class probabilities, or a track head's window features (musicnn)
        assert a.shape == b.shape == (len(windows), keras_p.info.output_width)
        diffs[name] = float(np.abs(a - b).max())
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=TOLERANCE)
        assert onnx_p(windows[:0]).shape == (0, keras_p.info.output_width)
    print("ONNX vs Keras max abs diff:", json.dumps(diffs))


def test_musicnn_exports_and_agrees(tmp_path, gtzan_dir, emotify_dir):
    """The pretrained family (two nested backbones; the track head is NumPy) exports too,
    whether or not a trained one is shipped yet: built from the pretrained weights."""
    from genre_detector.models.musicnn import BACKBONES, weights_path

    if not all(weights_path(b).exists() for b in BACKBONES):
        pytest.skip("musicnn weights not in models/musicnn")
    import keras

    from genre_detector.models.musicnn_backbones import build
    from genre_detector.models.onnx_export import export_onnx
    from genre_detector.runtime.onnx_predictor import OnnxPredictor
    from genre_detector.runtime.store import ModelInfo

    settings = FAMILIES["musicnn"].settings
    keras.utils.set_random_seed(0)
    model = build((settings.n_mels, settings.window_frames), 9)
    model.save(tmp_path / "model.keras")
    export_onnx(tmp_path / "model.keras", tmp_path / "model.onnx", settings)
    info = ModelInfo("musicnn", [f"g{i}" for i in range(9)], settings, {})
    windows = _real_windows(gtzan_dir, emotify_dir, settings)
    a = model(windows, training=False).numpy()
    b = OnnxPredictor(str(tmp_path / "model.onnx"), info)(windows)
    print("musicnn ONNX vs Keras max abs diff:", float(np.abs(a - b).max()), np.abs(a).max())
    # window features (up to ~10): relative where they are large
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=TOLERANCE)


def test_model_service_on_onnx_never_imports_tensorflow(store_with_models):
    """The generated model service's own __init__ and batch methods, and the front's feature
    function, in a fresh process: nothing the serving image does not install."""
    code = textwrap.dedent("""
        import sys
        import numpy as np
        from genre_detector.serve import service as serving
        models = serving.GenreModels.inner()
        assert models.runtime == "onnx", models.runtime
        for name in serving.SERVED:
            s = serving.INFOS[name].settings
            out = getattr(models, name)(np.zeros((3, s.n_mels, s.window_frames), np.float32))
            assert out.shape == (3, 1, serving.INFOS[name].output_width), out.shape
        # the front's work too: decoding and every feature set (NumPy only)
        from genre_detector.audio.features import extract_feature_sets
        wave = np.random.default_rng(0).standard_normal(16000 * 4).astype(np.float32)
        extract_feature_sets((wave, 16000), list(serving.GROUPS))
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in
                       {"tensorflow", "keras", "tf2onnx", "tf_keras", "librosa", "numba",
                        "llvmlite", "scipy", "sklearn"})
        print("HEAVY", heavy)
        assert not heavy, heavy
    """)
    env = {
        **os.environ,
        "GENRE_RUNTIME": "onnx",
        "PYTHONPATH": os.pathsep.join(
            [str(REPO / "src"), str(REPO), os.environ.get("PYTHONPATH", "")]
        ),
    }
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "HEAVY []" in proc.stdout


def test_keras_runtime_still_selectable(store_with_models, monkeypatch):
    from genre_detector.serve import service as serving

    monkeypatch.setenv("GENRE_RUNTIME", "keras")
    assert serving.model_runtime() == "keras"
    monkeypatch.setenv("GENRE_RUNTIME", "auto")
    assert serving.model_runtime() == "onnx"
    monkeypatch.setenv("GENRE_RUNTIME", "tpu")
    with pytest.raises(ValueError):
        serving.model_runtime()


def test_batch_caps_follow_the_registry(store_with_models):
    from genre_detector.serve import service as serving

    assert FAMILIES["musicnn"].max_batch_windows == FAMILIES["musicnn"].settings.max_windows == 5
    assert serving.batch_cap(["musicnn"]) == 5
    assert serving.batch_cap(["cnn", "lstm"]) == serving.SETTINGS.max_batch
    apis = serving.GenreModels.apis
    assert apis["musicnn"].max_batch_size == 5
    assert apis["cnn"].max_batch_size == serving.SETTINGS.max_batch


def test_onnx_threads_sleep_when_idle_unless_told(monkeypatch):
    from genre_detector.runtime.onnx_predictor import session_options

    key = "session.intra_op.allow_spinning"
    monkeypatch.delenv("GENRE_ONNX_SPIN", raising=False)
    assert session_options().get_session_config_entry(key) == "0"
    monkeypatch.setenv("GENRE_ONNX_SPIN", "1")
    assert session_options().get_session_config_entry(key) == "1"
    monkeypatch.setenv("GENRE_ONNX_SPIN", "yes")
    with pytest.raises(ValueError, match="GENRE_ONNX_SPIN"):
        session_options()


def test_tagging_and_evaluation_never_import_tensorflow(store_with_models, gtzan_dir, tmp_path):
    """A fresh process tags a folder in-process and runs train.evaluate on labelled clips:
    both score on the ONNX Runtime sessions, and TensorFlow/Keras are never imported."""
    folder = tmp_path / "music"
    for genre in ("classical", "rock"):
        (folder / genre).mkdir(parents=True)
        (folder / genre / f"{genre}.00000.wav").symlink_to(gtzan_dir / f"{genre}.00000.wav")
    code = textwrap.dedent(f"""
        import sys
        from genre_detector.batch.tagger import tag_library
        summary, stats = tag_library([{str(folder)!r}], {str(tmp_path / "tags.csv")!r},
                                     workers=1, progress=False)
        assert summary.ok == 2, summary.report(0)
        from pathlib import Path
        from train.data import Track
        from train.evaluate import evaluate
        tracks = [Track(path=Path({str(folder)!r}) / g / (g + ".00000.wav"),
                        genre="pop-rock" if g == "rock" else g, source="gtzan",
                        rel=g, artist=g) for g in ("classical", "rock")]
        result = evaluate(tracks, workers=1)
        assert result["n_tracks"] == 2 and set(result["models"]) >= {{"cnn", "musicnn"}}
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in
                       {{"tensorflow", "keras", "tf2onnx", "tf_keras"}})
        print("HEAVY", heavy)
    """)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(REPO / "src"), str(REPO), os.environ.get("PYTHONPATH", "")]
        ),
    }
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "HEAVY []" in proc.stdout
