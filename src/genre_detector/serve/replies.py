"""Render the front service's JSON replies: /predict from a scoring.TrackResult, the
research prototype's `POST /` from that reply, and GET /models (no I/O here)."""

from __future__ import annotations

from dataclasses import asdict

from genre_detector.models.calibration import Calibration
from genre_detector.models.families import LEGACY_NAMES, display_name, research_names
from genre_detector.scoring.descriptors import as_block
from genre_detector.scoring.track_result import TrackResult, shown_metrics


def predict_reply(
    result: TrackResult, request_id: str, infos: dict, calibration: Calibration | None
) -> dict:
    """The /predict reply: a rendering of scoring.score_track's result. infos: model name ->
    ModelInfo (for the metrics shown next to each model's calibrated probabilities)."""
    cal = calibration or Calibration(result.labels)
    covered = cal.covers(result.models)
    return {
        "request_id": request_id,
        "duration_s": round(result.duration_s, 3),
        "sample_rate": result.sample_rate,
        "n_windows": result.n_windows,
        "labels": result.labels,
        "models": {
            name: {
                "display_name": display_name(name),
                "tag": m.tag,
                **m.verdict.as_dict(),
                "metrics": shown_metrics(name, infos[name], calibration),
            }
            for name, m in result.models.items()
        },
        "ensemble": {
            **result.ensemble.as_dict(),
            "models": list(result.models),
            "agreeing_models": result.agreeing_models,
            "n_models": len(result.models),
            "between_genres": result.between_genres,
            "calibrated": result.calibrated,
            "metrics": cal.metrics.get("ensemble", {}) if covered else {},
        },
        "descriptors": as_block(result.descriptors),
        "timeline": [asdict(w) for w in result.timeline],
        "model_tags": result.model_tags,
    }


# The research prototype's reply lists its models in this order (README's `POST /` too).
PROTOTYPE_ORDER = ("CNN Model", "Le-Net Model", "LSTM Model", "Feed-Forward Model")


def legacy_reply(reply: dict) -> dict:
    """The research prototype's `POST /` shape: exactly its four keys, in its order, strings
    inside."""
    out = {}
    keys = {n: LEGACY_NAMES[n] for n in research_names()}
    for name in sorted(
        keys,
        key=lambda n: PROTOTYPE_ORDER.index(keys[n])
        if keys[n] in PROTOTYPE_ORDER
        else len(PROTOTYPE_ORDER),
    ):
        m = reply["models"][name]
        out[keys[name]] = {
            "data": {g: str(p) for g, p in m["probabilities"].items()},
            "metrics": {
                "accuracy": str(round(m["metrics"]["accuracy"], 4)),
                "loss": str(round(m["metrics"].get("log_loss", 0.0), 4)),
            },
        }
    return out


def models_reply(infos: dict, calibration: Calibration | None = None) -> dict:
    labels = next(iter(infos.values())).labels
    reply = {
        "labels": labels,
        "models": {
            n: {
                "display_name": display_name(n),
                "tag": i.tag,
                "architecture": i.architecture,
                "metrics": shown_metrics(n, i, calibration),
                "feature_settings": i.settings.to_dict(),
            }
            for n, i in infos.items()
        },
    }
    if calibration is not None:
        reply["ensemble"] = {
            "weights": calibration.weights,
            "temperatures": calibration.temperatures,
            "metrics": calibration.metrics.get("ensemble", {}),
        }
    return reply
