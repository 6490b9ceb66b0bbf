"""Save trained models into BentoML's model store with their metadata, and load them back.

Store names are `genre-<architecture>` (genre-cnn, genre-lstm, ...). Each entry holds
`model.keras` and metadata: labels, feature settings, architecture, metrics, data
fingerprint and code version. Loading rebuilds everything from that saved copy.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from genre_detector import __version__
from genre_detector.audio.features import FeatureSettings
from genre_detector.config import settings

MODEL_FILE = "model.keras"  # what training saved (TensorFlow reads it)
ONNX_FILE = "model.onnx"  # what ONNX Runtime serves (exported from MODEL_FILE)
STORE_PREFIX = "genre-"


def store_name(architecture: str) -> str:
    return f"{STORE_PREFIX}{architecture}"


def code_version() -> str:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{__version__}+{sha}" if sha else __version__


def file_sha(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


@dataclass
class ModelInfo:
    architecture: str
    labels: list[str]
    settings: FeatureSettings
    metrics: dict
    tag: str = ""
    metadata: dict | None = None
    pooling: str = "mean"  # windows -> track (scoring.pooling.track_probabilities)
    # track_head.TrackHead: window features -> probabilities (None: the model gives those)
    head: object = field(default=None, compare=False, repr=False)
    # projection.Projection: the track's pooled features -> its search embedding (None: no
    # catalog embedding from this model)
    projection: object = field(default=None, compare=False, repr=False)
    # mood_heads.MoodHeads: window features -> mood, GEMS, voice, instruments (None: none)
    moods: object = field(default=None, compare=False, repr=False)

    @property
    def output_width(self) -> int:
        """Numbers the model returns per window: features with a track head, else classes."""
        return len(self.labels) if self.head is None else self.head.n_features

    def window_probs(self, outputs, start_s=None):
        """One track's window probabilities from what the model returned for its windows
        (the model's own probabilities, or features for a family with a track head;
        `start_s`, the windows' start times, tells the head which windows overlap)."""
        if self.head is None:
            return outputs
        return self.head.window_probs(outputs, start_s, self.settings.window_seconds)

    @classmethod
    def from_entry(cls, entry) -> "ModelInfo":
        """From a store entry: its metadata, and its track head when it has one."""
        info = cls.from_metadata(dict(entry.info.metadata), str(entry.tag))
        if info.metadata.get("track_head"):
            from genre_detector.models.track_head import TrackHead

            info.head = TrackHead.load(entry.path_of(info.metadata["track_head"]))
            if info.head.bias.shape != (len(info.labels),):
                raise ValueError(
                    f"{info.tag}: its track head has {len(info.head.bias)} classes for "
                    f"{len(info.labels)} labels"
                )
        if info.metadata.get("mood_heads"):
            from genre_detector.models.mood_heads import MoodHeads

            info.moods = MoodHeads.load(entry.path_of(info.metadata["mood_heads"]))
            if info.head is None or info.moods.n_features != info.head.n_features:
                raise ValueError(
                    f"{info.tag}: its mood heads do not read its track head's features"
                )
        if info.metadata.get("projection"):
            from genre_detector.models.projection import Projection

            info.projection = Projection.load(entry.path_of(info.metadata["projection"]))
            if info.head is not None and info.projection.d_in != 2 * info.head.n_features:
                raise ValueError(
                    f"{info.tag}: its projection takes {info.projection.d_in} numbers, the "
                    f"track's pooled features are {2 * info.head.n_features}"
                )
        return info

    @classmethod
    def from_metadata(cls, md: dict, tag: str = "") -> "ModelInfo":
        return cls(
            architecture=md["architecture"],
            labels=list(md["labels"]),
            settings=FeatureSettings.from_dict(md["feature_settings"]),
            metrics=dict(md.get("metrics", {})),
            tag=tag,
            metadata=md,
            pooling=md.get("pooling", "mean"),
        )


def check_width(info: ModelInfo, out) -> None:
    """ValueError unless the model's window outputs are as wide as its info says."""
    if out.shape[-1] != info.output_width:
        what = "track head's features" if info.head is not None else "labels"
        raise ValueError(
            f"{info.tag or info.architecture} returns {out.shape[-1]} numbers per window, "
            f"its {what} need {info.output_width}"
        )


def save_to_store(
    model_file: str | Path,
    metadata: dict,
    head_file: str | Path | None = None,
    onnx_file: str | Path | None = None,
    projection_file: str | Path | None = None,
    moods_file: str | Path | None = None,
) -> str:
    """Copy a saved .keras file (and the family's track head, when it has one) into the
    store under genre-<architecture>; return the tag. `onnx_file`: its ONNX export, copied
    as it is (no TensorFlow needed); without one the .keras file is exported (add_onnx).
    `projection_file`: the search embedding's projection (models.projection), kept beside;
    `moods_file`: the mood heads (models.mood_heads), likewise."""
    import shutil

    import bentoml

    from genre_detector.models.mood_heads import MOODS_FILE
    from genre_detector.models.projection import PROJECTION_FILE
    from genre_detector.models.track_head import HEAD_FILE

    md = {**metadata, "model_sha256": file_sha(model_file)}
    if head_file is not None:
        md.update(track_head=HEAD_FILE, head_sha256=file_sha(head_file))
    if projection_file is not None:
        md.update(projection=PROJECTION_FILE, projection_sha256=file_sha(projection_file))
    if moods_file is not None:
        md.update(mood_heads=MOODS_FILE, moods_sha256=file_sha(moods_file))
    with bentoml.models.create(
        store_name(md["architecture"]),
        metadata=md,
        labels={"task": "music-genre", "architecture": md["architecture"]},
    ) as bento_model:
        shutil.copyfile(model_file, bento_model.path_of(MODEL_FILE))
        if head_file is not None:
            shutil.copyfile(head_file, bento_model.path_of(HEAD_FILE))
        if projection_file is not None:
            shutil.copyfile(projection_file, bento_model.path_of(PROJECTION_FILE))
        if moods_file is not None:
            shutil.copyfile(moods_file, bento_model.path_of(MOODS_FILE))
        if onnx_file is not None:
            shutil.copyfile(onnx_file, bento_model.path_of(ONNX_FILE))
        else:
            add_onnx(bento_model)
    return str(bento_model.tag)


def add_onnx(entry) -> bool:
    """Export the entry's model.keras to model.onnx in the same entry (what ONNX Runtime
    serves, genre_detector.runtime.onnx_predictor) unless it is there; True when the entry has one.
    A model that cannot be exported is logged and stays servable with Keras
    (GENRE_RUNTIME=keras); GENRE_ONNX_EXPORT=0 skips the export."""
    import logging

    target = Path(entry.path_of(ONNX_FILE))
    if target.exists():
        return True
    if not settings().onnx_export:
        return False
    from genre_detector.models.onnx_export import OnnxExportError, export_onnx

    md = dict(entry.info.metadata)
    try:
        export_onnx(
            entry.path_of(MODEL_FILE), target, FeatureSettings.from_dict(md["feature_settings"])
        )
    except (OnnxExportError, OSError, ValueError) as exc:
        logging.getLogger(__name__).warning(
            "no ONNX export for %s (served with Keras only): %s", md.get("architecture"), exc
        )
        return False
    return True


def resolve(ref: str):
    """A store entry from a tag ('genre-cnn:abc'), a name ('genre-cnn') or an architecture
    ('cnn'). The one way the package reads the model store (so the image's CLI and Ray
    workers find the Bento's own models, as `bentoml serve` does)."""
    import bentoml

    if ":" not in ref and not ref.startswith(STORE_PREFIX):
        ref = store_name(ref)
    if (own := settings().bento_models()) is not None:
        # the CLI inside the image (`deliver`, `keys`, `tag`) reads the models the Bento packs,
        # as `bentoml serve` does; ModelStore is BentoML's store class (tests/test_bento.py)
        from bentoml._internal.models import ModelStore

        return bentoml.models.get(ref, _model_store=ModelStore(own))
    return bentoml.models.get(ref)


def load_from_store(ref: str):
    """(keras model, ModelInfo) for a store reference; inference only (not compiled)."""
    import keras

    from genre_detector.models import architectures  # noqa: F401  registers the custom layers

    entry = resolve(ref)
    model = keras.models.load_model(entry.path_of(MODEL_FILE), compile=False)
    return model, ModelInfo.from_entry(entry)


def card_metadata(card_path: str | Path) -> dict:
    return json.loads(Path(card_path).read_text())


CALIBRATION_NAME = f"{STORE_PREFIX}ensemble"


def save_calibration(cal) -> str:
    """Store the ensemble's calibration (genre_detector.models.calibration.Calibration) as metadata
    of a `genre-ensemble` entry; return its tag."""
    import bentoml

    with bentoml.models.create(
        CALIBRATION_NAME,
        metadata={"calibration": cal.to_dict()},
        labels={"task": "music-genre", "architecture": "ensemble"},
    ) as entry:
        pass
    return str(entry.tag)


def load_calibration(ref: str = f"{CALIBRATION_NAME}:latest"):
    """The stored Calibration, or None when the store has none."""
    import bentoml

    from genre_detector.models.calibration import Calibration

    try:
        entry = resolve(ref)
    except bentoml.exceptions.NotFound:
        return None
    return Calibration.from_dict(dict(entry.info.metadata)["calibration"])


class InconsistentModels(ValueError):
    """Models that cannot be served or averaged together (different labels)."""


def check_consistent(infos: dict[str, ModelInfo], calibration=None) -> list[str]:
    """The labels every model shares; InconsistentModels naming each model's labels when they
    differ (retraining only some families with new genres must not mix label orders)."""
    if not infos:
        raise InconsistentModels("no models to serve")
    label_sets = {n: list(i.labels) for n, i in infos.items()}
    first = next(iter(label_sets.values()))
    if calibration is not None and list(calibration.labels) != first:
        label_sets["ensemble calibration"] = list(calibration.labels)
    if any(labels != first for labels in label_sets.values()):
        lines = "; ".join(
            f"{n} ({infos[n].tag if n in infos else 'genre-ensemble'}): {', '.join(labels)}"
            for n, labels in label_sets.items()
        )
        raise InconsistentModels(
            f"the models do not share one label list, so their "
            f"probabilities cannot be combined: {lines}. Retrain or "
            "import a consistent set (python -m train, make models)"
        )
    return first
