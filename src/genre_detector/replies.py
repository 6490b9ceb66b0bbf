"""Build the JSON replies of the front service from window probabilities (no I/O here)."""

from __future__ import annotations

import numpy as np

from .calibration import Calibration
from .families import LEGACY_NAMES, display_name, research_names
from .features import FeatureSettings, WindowBatch
from .predict import between_genres, timeline, track_probabilities, verdict


def predict_reply(
    batches: dict[FeatureSettings, WindowBatch],
    window_probs: dict[str, np.ndarray],
    infos: dict,
    calibration: Calibration | None,
    request_id: str,
) -> dict:
    """The /predict reply. batches: the track's windows per feature settings; window_probs:
    model name -> what it returned for the track's windows (ModelInfo.window_probs turns
    a track head's features into probabilities); infos: model name -> ModelInfo (labels,
    settings, metrics, tag, head)."""
    labels = next(iter(infos.values())).labels
    window_probs = {
        n: infos[n].window_probs(p, batches[infos[n].settings].start_s)
        for n, p in window_probs.items()
    }
    cal = calibration or Calibration(labels)
    models, raw = {}, {}
    for name, probs in window_probs.items():
        raw[name] = track_probabilities(probs, infos[name].pooling)
        models[name] = {
            "display_name": display_name(name),
            "tag": infos[name].tag,
            **verdict(cal.model(name, raw[name]), labels),
            "metrics": infos[name].metrics,
        }
    combined = cal.ensemble(raw)
    top = labels[int(np.argmax(combined))]
    spans = {
        n: (batches[infos[n].settings].start_s, batches[infos[n].settings].end_s)
        for n in window_probs
    }
    first = batches[infos[next(iter(window_probs))].settings]
    return {
        "request_id": request_id,
        "duration_s": round(first.duration_s, 3),
        "sample_rate": first_rate(batches, infos, window_probs),
        "n_windows": int(max(len(s[0]) for s in spans.values())),
        "labels": labels,
        "models": models,
        "ensemble": {
            **verdict(combined, labels),
            "models": list(models),
            "agreeing_models": sum(m["top_genre"] == top for m in models.values()),
            "n_models": len(models),
            "between_genres": between_genres(combined, labels),
            "calibrated": bool(cal.weights) and cal.covers(models),
            "metrics": cal.metrics.get("ensemble", {}) if cal.covers(models) else {},
        },
        "timeline": timeline(window_probs, spans, cal.ensemble, labels),
        "model_tags": {n: infos[n].tag for n in models},
    }


def first_rate(batches, infos, window_probs) -> int:
    """The sample rate of the finest window grid (the timeline's)."""
    name = max(window_probs, key=lambda n: len(batches[infos[n].settings].windows))
    return int(infos[name].settings.sample_rate)


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
                "metrics": i.metrics,
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
