"""The models that are scored together, on ONNX Runtime (no TensorFlow anywhere here).

    models = ModelSet.from_store()      # every registered family in the store, checked
    outs = models.predict(windows)      # {settings: windows} -> {name: window outputs}
    score_track(batches, outs, models.infos, models.calibration)   # genre_detector.scoring

A model's window outputs are its class probabilities, or, for a family with a track head
(musicnn), window features that scoring turns into probabilities per track. The tagger
(in-process and on Ray) and `python -m train.evaluate` use this; the service's model service
runs the same OnnxPredictor sessions behind BentoML's batching.
"""

from __future__ import annotations

import os
from typing import Protocol

import numpy as np

from genre_detector.runtime.onnx_predictor import OnnxPredictor
from genre_detector.runtime.store import (
    ModelInfo,
    check_consistent,
    load_calibration,
    resolve,
    store_name,
)


class Predictor(Protocol):
    """What runs one stored model on windows: OnnxPredictor everywhere outside training
    (runtime.keras_predictor.Predictor, the Keras file, only to check an export)."""

    info: ModelInfo

    def __call__(self, windows: np.ndarray) -> np.ndarray: ...

    def warm_up(self) -> None: ...


def batch_cap(name: str) -> int:
    """Most windows a call for family `name`: its registry cap, else GENRE_MAX_BATCH."""
    from genre_detector.config import settings
    from genre_detector.models.families import FAMILIES

    family = FAMILIES.get(name)
    return (family.max_batch_windows if family else None) or settings().max_batch


def default_refs() -> dict[str, str]:
    """name -> `genre-<name>:latest` for every registered family that has a stored model."""
    import bentoml

    from genre_detector.models.families import FAMILIES

    refs = {}
    for name in FAMILIES:
        try:
            resolve(f"{store_name(name)}:latest")
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
        cls,
        refs: list[str] | None = None,
        calibration: str | None = None,
        warm_up: bool = True,
        predictor=OnnxPredictor,
        threads: int | None = None,
    ) -> "ModelSet":
        """Load `refs` (store tags/names/families; default: every registered family in the
        store). Raises InconsistentModels if they do not share labels. `threads`: intra-op
        threads per ONNX session (None: GENRE_ONNX_THREADS)."""
        predictors = {}
        for ref in refs or list(default_refs().values()):
            try:
                p = (
                    predictor.from_store(ref, threads=threads)
                    if threads
                    else predictor.from_store(ref)
                )
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
        (scoring's track heads make probabilities of them). Each model runs on at most its
        family's batch cap of windows a call (musicnn: 5), as in the service: ONNX Runtime's
        memory arena grows with the largest batch it saw (+4.4 GB at 80 musicnn windows,
        loadtests/onnx_batch_memory.py)."""
        out = {}
        for name, p in self.predictors.items():
            w = windows[p.info.settings]
            cap = batch_cap(name)
            if len(w) <= cap:
                out[name] = p(w)
            else:
                out[name] = np.concatenate([p(w[i : i + cap]) for i in range(0, len(w), cap)])
        return out

    def predict_tracks(self, tracks: list[dict]) -> list[dict[str, np.ndarray]]:
        """For several tracks' windows ({FeatureSettings: WindowBatch} each): every model runs
        once on all of them, and its outputs are split back per track, in order."""
        if not tracks:
            return []
        outputs = self.predict(
            {s: np.concatenate([t[s].windows for t in tracks]) for s in self.settings}
        )
        offset = {s: 0 for s in self.settings}
        per_track = []
        for t in tracks:
            mine = {}
            for name, out in outputs.items():
                s = self.infos[name].settings
                mine[name] = out[offset[s] : offset[s] + len(t[s].windows)]
            for s in self.settings:
                offset[s] += len(t[s].windows)
            per_track.append(mine)
        return per_track
