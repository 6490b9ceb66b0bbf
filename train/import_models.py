"""Import the shipped models (models/<name>/model.keras + card.json, and model.onnx, the
export that serving runs, so that importing needs no TensorFlow) and the ensemble's
calibration (models/calibration.json) into BentoML's model store, unless an entry with the
same content is already there. Idempotent.

    python -m train.import_models            # honours BENTOML_HOME
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from genre_detector.models.mood_heads import MOODS_FILE
from genre_detector.models.projection import PROJECTION_FILE
from genre_detector.models.track_head import HEAD_FILE
from genre_detector.runtime.store import (
    CALIBRATION_NAME,
    ONNX_FILE,
    add_onnx,
    file_sha,
    save_calibration,
    save_to_store,
    store_name,
)

SHIPPED = Path(__file__).resolve().parent.parent / "models"


def import_models(folder: Path = SHIPPED) -> list[tuple[str, bool]]:
    """[(tag, newly_imported)] for every shipped model."""
    import bentoml

    results = []
    cards = sorted(folder.glob("*/card.json"))
    if not cards:
        raise FileNotFoundError(f"no shipped models found under {folder}/<name>/card.json")
    for card in cards:
        metadata = json.loads(card.read_text())
        model_file = card.parent / "model.keras"
        head_file = card.parent / HEAD_FILE if (card.parent / HEAD_FILE).exists() else None
        projection = card.parent / PROJECTION_FILE
        projection = projection if projection.exists() else None
        moods = card.parent / MOODS_FILE
        moods = moods if moods.exists() else None
        sha = file_sha(model_file)
        head_sha = file_sha(head_file) if head_file else None
        projection_sha = file_sha(projection) if projection else None
        moods_sha = file_sha(moods) if moods else None
        try:
            stored = bentoml.models.list(store_name(metadata["architecture"]))
        except bentoml.exceptions.NotFound:
            stored = []
        existing = [
            m
            for m in stored
            if m.info.metadata.get("model_sha256") == sha
            and m.info.metadata.get("head_sha256") == head_sha
            and m.info.metadata.get("projection_sha256") == projection_sha
            and m.info.metadata.get("moods_sha256") == moods_sha
        ]
        if existing:
            # entries imported before the ONNX export existed get their model.onnx now
            add_onnx(existing[0])
            results.append((str(existing[0].tag), False))
        else:
            onnx_file = card.parent / ONNX_FILE  # shipped beside model.keras: no TensorFlow
            onnx_file = onnx_file if onnx_file.exists() else None
            tag = save_to_store(model_file, metadata, head_file, onnx_file, projection, moods)
            results.append((tag, True))
    calibration = folder / "calibration.json"
    if calibration.exists():
        results.append(_import_calibration(json.loads(calibration.read_text())))
    return results


def _import_calibration(data: dict) -> tuple[str, bool]:
    import bentoml

    from genre_detector.models.calibration import Calibration

    cal = Calibration.from_dict(data)
    try:
        latest = bentoml.models.get(f"{CALIBRATION_NAME}:latest")
        if dict(latest.info.metadata).get("calibration") == cal.to_dict():
            return str(latest.tag), False
    except bentoml.exceptions.NotFound:
        pass
    return save_calibration(cal), True


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.import_models", description=__doc__)
    p.add_argument("--models-dir", type=Path, default=SHIPPED, help="folder of shipped models")
    args = p.parse_args(argv)
    for tag, new in import_models(args.models_dir):
        print(f"{'imported' if new else 'already in store'}: {tag}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
