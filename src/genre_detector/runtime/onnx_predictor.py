"""Run stored models' ONNX graphs with ONNX Runtime (no TensorFlow, no Keras).

    predictor = OnnxPredictor.from_store("genre-cnn:latest")
    out = predictor(windows)            # (n, n_mels, frames) -> (n, info.output_width)

The same interface as genre_detector.runtime.keras_predictor.Predictor (info, __call__,
warm_up); the
graph is the `model.onnx` that store.save_to_store exports next to `model.keras`.
Threads: GENRE_ONNX_THREADS (intra-op, per model; 0 or unset: ONNX Runtime decides).
GENRE_ONNX_SPIN=1 lets idle intra-op threads spin-wait for work (ONNX Runtime's default);
the default 0 puts them to sleep, leaving the CPU to the front's decoding and features.
"""

from __future__ import annotations

import os

import numpy as np

from genre_detector.config import settings
from genre_detector.runtime.store import ONNX_FILE, ModelInfo, check_width, resolve


def has_onnx(ref: str) -> bool:
    """Whether the store entry `ref` holds an exported ONNX graph."""
    return os.path.exists(resolve(ref).path_of(ONNX_FILE))


def session_options(threads: int | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    threads = threads if threads is not None else settings().onnx_threads
    if threads > 0:
        opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    spin = settings().onnx_spin
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return opts


class OnnxPredictor:
    """An ONNX Runtime session plus the model's metadata."""

    def __init__(self, path: str, info: ModelInfo, threads: int | None = None):
        import onnxruntime as ort

        self.info, self.path = info, str(path)
        self.session = ort.InferenceSession(
            self.path, sess_options=session_options(threads), providers=["CPUExecutionProvider"]
        )
        self._input = self.session.get_inputs()[0].name

    @classmethod
    def from_store(cls, ref: str, threads: int | None = None) -> "OnnxPredictor":
        entry = resolve(ref)
        path = entry.path_of(ONNX_FILE)
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"{entry.tag} has no {ONNX_FILE}: re-import it "
                "(`make models`) or retrain to export one"
            )
        return cls(path, ModelInfo.from_entry(entry), threads)

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        windows = np.ascontiguousarray(windows, dtype=np.float32)
        s = self.info.settings
        if windows.ndim != 3 or windows.shape[1:] != (s.n_mels, s.window_frames):
            raise ValueError(
                f"expected windows of shape (n, {s.n_mels}, {s.window_frames}), got {windows.shape}"
            )
        if len(windows) == 0:
            return np.zeros((0, self.info.output_width), dtype=np.float32)
        return self.session.run(None, {self._input: windows})[0]

    def warm_up(self) -> None:
        """Run once (the first request is fast), and check the output width: class
        probabilities, or window features as wide as the model's track head expects."""
        s = self.info.settings
        out = self(np.zeros((1, s.n_mels, s.window_frames), np.float32))
        check_width(self.info, out)
