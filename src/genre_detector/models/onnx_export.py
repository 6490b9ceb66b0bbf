"""Export a stored Keras model to ONNX (imports TensorFlow: training and import time only).

    export_onnx("model.keras", "model.onnx", settings)   # settings: the model's FeatureSettings

The route: `model.export(format="tf_saved_model")`, then `python -m tf2onnx.convert` at
opset 17 (in a subprocess: tf2onnx changes TensorFlow's global state). Keras' own
`model.export(format="onnx")` leaves Normalization's mean and variance as dangling graph
inputs, so it is not used. The graph takes one input "windows" (batch, n_mels, frames)
float32 with a dynamic batch and returns what the Keras model does (class probabilities, or
musicnn's window features for its track head); serving runs it with
ONNX Runtime (genre_detector.runtime.onnx_predictor), which never imports TensorFlow.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ONNX_FILE = "model.onnx"
OPSET = 17
INPUT_NAME = "windows"


class OnnxExportError(RuntimeError):
    """The Keras model could not be turned into an ONNX graph."""


def export_onnx(
    model_file: str | Path, out_path: str | Path, settings, timeout: float = 900
) -> Path:
    """Write the ONNX graph of the .keras model at model_file to out_path; return it."""
    import keras
    import tensorflow as tf

    from genre_detector.models import architectures  # noqa: F401  registers the custom layers

    model = keras.models.load_model(model_file, compile=False)
    out_path = Path(out_path)
    spec = tf.TensorSpec(
        (None, settings.n_mels, settings.window_frames), tf.float32, name=INPUT_NAME
    )
    with tempfile.TemporaryDirectory(prefix="genre-onnx-") as tmp:
        saved = Path(tmp) / "saved_model"
        model.export(str(saved), format="tf_saved_model", input_signature=[spec], verbose=False)
        tmp_out = Path(tmp) / ONNX_FILE
        env = {
            **os.environ,
            "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
            "CUDA_VISIBLE_DEVICES": "",
        }
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "tf2onnx.convert",
                "--saved-model",
                str(saved),
                "--output",
                str(tmp_out),
                "--opset",
                str(OPSET),
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
        if proc.returncode != 0 or not tmp_out.exists():
            raise OnnxExportError(
                f"tf2onnx failed ({proc.returncode}) for {model_file}:\n"
                f"{(proc.stdout + proc.stderr)[-3000:]}"
            )
        _check_graph(tmp_out, settings)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp_out, out_path) if _same_fs(tmp_out, out_path) else out_path.write_bytes(
            tmp_out.read_bytes()
        )
    return out_path


def _same_fs(a: Path, b: Path) -> bool:
    try:
        return os.stat(a).st_dev == os.stat(b.parent).st_dev
    except OSError:
        return False


def _check_graph(path: Path, settings) -> None:
    """One float input of shape (batch, n_mels, frames), one output: else OnnxExportError
    (a graph with extra inputs, such as dangling normalisation statistics, cannot serve)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    initialisers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initialisers]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise OnnxExportError(
            f"{path}: expected one input and one output, got inputs "
            f"{[i.name for i in inputs]}, outputs "
            f"{[o.name for o in graph.output]}"
        )
    dims = [d.dim_value or None for d in inputs[0].type.tensor_type.shape.dim]
    if dims[1:] != [settings.n_mels, settings.window_frames]:
        raise OnnxExportError(
            f"{path}: input shape {dims}, expected "
            f"(batch, {settings.n_mels}, {settings.window_frames})"
        )
