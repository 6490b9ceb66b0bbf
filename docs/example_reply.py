"""Print the README's example reply: a real /predict reply for a GTZAN clip, computed from the
models in the store by the service's own scoring (score_track, then the reply's rendering),
shortened the same way every time. tests/test_readme.py keeps the README's block equal to it.

    python docs/example_reply.py [CLIP]        # default ../shared/data/gtzan-samples/rock.00000.wav
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from genre_detector.audio.features import extract_feature_sets  # noqa: E402
from genre_detector.config import settings  # noqa: E402
from genre_detector.runtime.model_set import ModelSet  # noqa: E402
from genre_detector.scoring.track_result import score_track  # noqa: E402
from genre_detector.serve.replies import predict_reply  # noqa: E402

CLIP = settings().data / "gtzan-samples" / "rock.00000.wav"
SHOWN_PROBABILITIES = 2  # per probability map: the two largest, then "..."


def reply_for(clip: Path) -> dict:
    models = ModelSet.from_store()
    batches = extract_feature_sets(clip.read_bytes(), models.settings)
    outputs = models.predict({s: b.windows for s, b in batches.items()})
    result = score_track(batches, outputs, models.infos, models.calibration)
    return predict_reply(result, "8d399800c410464b", models.infos, models.calibration)


def _r(x: float) -> float:
    return round(float(x), 3)


def _probabilities(p: dict) -> dict:
    top = sorted(p.items(), key=lambda kv: -kv[1])[:SHOWN_PROBABILITIES]
    return {**{g: _r(v) for g, v in top}, "...": "..."}


def _verdict(v: dict) -> dict:
    return {
        "probabilities": _probabilities(v["probabilities"]),
        "top_genre": v["top_genre"],
        "top_probability": _r(v["top_probability"]),
        "top3": [{"genre": t["genre"], "probability": _r(t["probability"])} for t in v["top3"]],
    }


def _tag(tag: str) -> str:
    """The store tag without its version (a new one at every import)."""
    return tag.split(":")[0] + ":<version>"


def _metrics(m: dict) -> dict:
    return {k: (_r(v) if isinstance(v, float) else v) for k, v in m.items()}


def shortened(reply: dict) -> str:
    """The reply as the README shows it: the first model in full, the others by their
    verdict, two probabilities per map, one timeline window."""
    names = list(reply["models"])
    first = reply["models"][names[-1]]  # musicnn: the model the calibration keeps
    models = {
        names[-1]: {
            "display_name": first["display_name"],
            "tag": _tag(first["tag"]),
            **_verdict(first),
            "metrics": _metrics(first["metrics"]),
        }
    }
    for n in names[:-1]:
        m = reply["models"][n]
        models[n] = {"top_genre": m["top_genre"], "top_probability": _r(m["top_probability"])}
    e = reply["ensemble"]
    out = {
        "request_id": reply["request_id"],
        "duration_s": reply["duration_s"],
        "sample_rate": reply["sample_rate"],
        "n_windows": reply["n_windows"],
        "labels": reply["labels"],
        "models": models,
        "ensemble": {
            **_verdict(e),
            "agreeing_models": e["agreeing_models"],
            "n_models": e["n_models"],
            "between_genres": e["between_genres"],
            "calibrated": e["calibrated"],
            "metrics": _metrics(e["metrics"]),
        },
        "descriptors": _descriptors(reply["descriptors"]),
        "timeline": [reply["timeline"][0], f"... {len(reply['timeline']) - 1} more windows"],
        "model_tags": {names[-1]: _tag(reply["model_tags"][names[-1]]), "...": "..."},
    }
    return _compact(out)


def _descriptors(d: dict) -> dict:
    """Tempo, key, mood and voice in full; two GEMS emotions and the two strongest
    instruments."""
    out = {k: d[k] for k in ("tempo", "key", "mood")}
    if d.get("gems"):
        out["gems"] = {**{k: d["gems"][k] for k in ("calmness", "power")}, "...": "..."}
    out["voice"] = d.get("voice")
    if d.get("instruments"):
        top = sorted(d["instruments"], key=lambda k: -d["instruments"][k])[:2]
        out["instruments"] = {**{k: d["instruments"][k] for k in top}, "...": "..."}
    return out


def _compact(out: dict) -> str:
    """One line per top-level key, and per model and per ensemble field."""
    lines = ["{"]
    for i, (k, v) in enumerate(out.items()):
        end = "," if i < len(out) - 1 else ""
        if k in {"models", "ensemble"}:
            lines.append(f' "{k}": {{')
            for j, (kk, vv) in enumerate(v.items()):
                comma = "," if j < len(v) - 1 else ""
                lines.append(f"  {json.dumps(kk)}: {json.dumps(vv)}{comma}")
            lines.append(f" }}{end}")
        else:
            lines.append(f" {json.dumps(k)}: {json.dumps(v)}{end}")
    lines.append("}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(shortened(reply_for(Path(sys.argv[1]) if len(sys.argv) > 1 else CLIP)))
