"""Run a stored model's Keras file (imports TensorFlow): for training and for checking the
exported ONNX graph against it, never for serving, tagging or evaluation (those run
runtime.onnx_predictor through runtime.model_set).

    predictor = Predictor.from_store("genre-cnn:latest")
    out = predictor(windows)            # (n, n_mels, frames) -> (n, info.output_width)
"""

from __future__ import annotations

import numpy as np

from genre_detector.config import settings
from genre_detector.runtime.store import ModelInfo, check_width, load_from_store


def limit_threads(threads: int | None = None) -> None:
    """Cap TensorFlow's CPU thread pools (BentoML sets none); call before the first op."""
    threads = threads or settings().tf_threads
    if threads > 0:
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:  # already initialised in this process
            pass


class Predictor:
    """A model plus its metadata; calls a traced inference function (no Keras predict loop)."""

    def __init__(self, model, info: ModelInfo):
        import tensorflow as tf

        self.model, self.info = model, info
        shape = (None, info.settings.n_mels, info.settings.window_frames)
        self._fn = tf.function(
            lambda x: model(x, training=False),
            reduce_retracing=True,
            input_signature=[tf.TensorSpec(shape, tf.float32)],
        )

    @classmethod
    def from_store(cls, ref: str) -> "Predictor":
        return cls(*load_from_store(ref))

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        windows = np.asarray(windows, dtype=np.float32)
        if windows.ndim != 3 or windows.shape[1:] != (
            self.info.settings.n_mels,
            self.info.settings.window_frames,
        ):
            raise ValueError(
                f"expected windows of shape (n, {self.info.settings.n_mels}, "
                f"{self.info.settings.window_frames}), got {windows.shape}"
            )
        if len(windows) == 0:
            return np.zeros((0, self.info.output_width), dtype=np.float32)
        return self._fn(windows).numpy()

    def warm_up(self) -> None:
        """Run once (the first request is fast), and check the output width: class
        probabilities, or window features as wide as the model's track head expects."""
        s = self.info.settings
        out = self(np.zeros((1, s.n_mels, s.window_frames), np.float32))
        check_width(self.info, out)
