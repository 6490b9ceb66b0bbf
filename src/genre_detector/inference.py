"""Run stored Keras models on log-mel windows (imports TensorFlow: model processes only).

predictor = Predictor.from_store("genre-cnn:latest")
out = predictor(windows)            # (n, n_mels, frames) -> (n, info.output_width)
models = ModelSet.from_store()      # every registered family in the store, checked
outs = models.predict(batches)      # {settings: windows} -> {name: window outputs}

A model's window outputs are its class probabilities, or, for a family with a track head
(musicnn), window features that `info.window_probs` turns into probabilities per track.
"""

from __future__ import annotations

import os

import numpy as np

from .store import (
    ModelInfo,
    check_consistent,
    check_width,
    load_calibration,
    load_from_store,
    store_name,
)


def limit_threads(threads: int | None = None) -> None:
    """Cap TensorFlow's CPU thread pools (BentoML sets none); call before the first op."""
    threads = threads or int(os.environ.get("GENRE_TF_THREADS", "0") or 0)
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


def default_refs() -> dict[str, str]:
    """name -> `genre-<name>:latest` for every registered family that has a stored model."""
    import bentoml

    from .families import FAMILIES

    refs = {}
    for name in FAMILIES:
        try:
            bentoml.models.get(f"{store_name(name)}:latest")
        except bentoml.exceptions.NotFound:
            continue
        refs[name] = f"{store_name(name)}:latest"
    return refs


class ModelSet:
    """Models that are served together: one label list (checked), the feature settings each
    needs, and the ensemble's calibration (None: none stored, plain pooling)."""

    def __init__(self, predictors: dict[str, Predictor], calibration=None):
        self.predictors, self.calibration = predictors, calibration
        self.infos = {n: p.info for n, p in predictors.items()}
        self.labels = check_consistent(self.infos, calibration)
        self.settings = list(dict.fromkeys(i.settings for i in self.infos.values()))

    @classmethod
    def from_store(
        cls, refs: list[str] | None = None, calibration: str | None = None, warm_up: bool = True
    ) -> "ModelSet":
        """Load `refs` (store tags/names/families; default: every registered family in the
        store). Raises InconsistentModels if they do not share labels."""
        predictors = {}
        for ref in refs or list(default_refs().values()):
            try:
                p = Predictor.from_store(ref)
            except Exception as exc:  # noqa: BLE001  say which and where
                raise LookupError(
                    f"cannot load model {ref} from the BentoML store "
                    f"({os.environ.get('BENTOML_HOME', '~/bentoml')}): {exc}"
                ) from exc
            if p.info.architecture in predictors:
                raise ValueError(f"two models of family {p.info.architecture}: use one")
            predictors[p.info.architecture] = p
        if not predictors:
            raise LookupError(
                "no genre models in the BentoML store (run `make models` or python -m train)"
            )
        models = cls(
            predictors, load_calibration(calibration) if calibration else load_calibration()
        )
        if warm_up:
            for p in predictors.values():
                p.warm_up()
        return models

    def predict(self, windows: dict) -> dict[str, np.ndarray]:
        """{FeatureSettings: (n, mels, frames)} -> {model: (n, output_width)} for every model
        (ModelInfo.window_probs per track makes probabilities of them)."""
        return {n: p(windows[p.info.settings]) for n, p in self.predictors.items()}
