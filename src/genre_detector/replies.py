"""Build the JSON replies of the front service from window probabilities (no I/O here)."""
from __future__ import annotations

import numpy as np

from .features import WindowBatch
from .names import DISPLAY_NAMES, LEGACY_NAMES
from .predict import ensemble, timeline, track_probabilities, verdict



def predict_reply(batch: WindowBatch, window_probs: dict[str, np.ndarray], infos: dict,
                  request_id: str, sample_rate: int) -> dict:
    """The /predict reply. infos: model name -> ModelInfo (labels, metrics, tag)."""
    labels = next(iter(infos.values())).labels
    models, track = {}, {}
    for name, probs in window_probs.items():
        track[name] = track_probabilities(probs)
        models[name] = {"display_name": DISPLAY_NAMES.get(name, name), "tag": infos[name].tag,
                        **verdict(track[name], labels), "metrics": infos[name].metrics}
    combined = ensemble(list(track.values()))
    top = labels[int(np.argmax(combined))]
    return {
        "request_id": request_id,
        "duration_s": round(batch.duration_s, 3),
        "sample_rate": sample_rate,
        "n_windows": int(len(batch.windows)),
        "labels": labels,
        "models": models,
        "ensemble": {**verdict(combined, labels), "models": list(models),
                     "agreeing_models": sum(m["top_genre"] == top for m in models.values()),
                     "n_models": len(models)},
        "timeline": timeline(list(window_probs.values()), batch.start_s, batch.end_s, labels),
        "model_tags": {n: infos[n].tag for n in models},
    }


def legacy_reply(reply: dict) -> dict:
    """The research prototype's `POST /` shape: exactly four keys, strings inside."""
    out = {}
    for name, legacy in LEGACY_NAMES.items():
        m = reply["models"][name]
        out[legacy] = {"data": {g: str(p) for g, p in m["probabilities"].items()},
                       "metrics": {"accuracy": str(round(m["metrics"]["accuracy"], 4)),
                                   "loss": str(round(m["metrics"].get("log_loss", 0.0), 4))}}
    return out


def models_reply(infos: dict) -> dict:
    labels = next(iter(infos.values())).labels
    return {"labels": labels,
            "models": {n: {"display_name": DISPLAY_NAMES.get(n, n), "tag": i.tag,
                           "architecture": i.architecture, "metrics": i.metrics,
                           "feature_settings": i.settings.to_dict()} for n, i in infos.items()}}
