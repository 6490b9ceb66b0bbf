"""The mood data sets and the musicnn window features of their clips, as the service computes
them (decode, serving windows, models/musicnn/model.onnx on ONNX Runtime), cached on disk.

    clips = read_4q(DATA)                     # [MoodClip] path, quadrant, arousal, valence, artist
    clips = read_emotify(DATA)                # [MoodClip] with the nine GEMS listener shares
    feats = clip_features([c.path for c in clips])   # per clip (n_windows, 500) float32

Artists: 4q.csv names each clip's artist; Emotify's come from emotify/tracks.csv (the same
file train/data.py reads for the genre heads). A clip without one is its own group.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from genre_detector.models.mood_heads import GEMS  # one place for the names
from train.cache import CACHE, disk_cached, file_key
from train.options import REPO

DATA = REPO.parent / "shared" / "data"
MUSICNN = REPO / "models" / "musicnn"


@dataclass
class MoodClip:
    path: Path
    artist: str
    quadrant: str | None = None
    arousal: float | None = None  # 1 high, 0 low
    valence: float | None = None  # 1 positive, 0 negative
    gems: dict = field(default_factory=dict)
    words: str = ""  # AllMusic mood words (4Q)
    genre: str = ""  # Emotify's folder
    title: str = ""


def read_4q(data: Path = DATA, csv_path: Path | None = None) -> list[MoodClip]:
    """Clips of a 4Q-style CSV: path (relative to `data`), quadrant Q1-Q4, optional arousal
    (high/low or a number in [0, 1]), valence (positive/negative or a number), artist."""
    csv_path = csv_path or data / "moods" / "4q.csv"
    out = []
    with open(csv_path, newline="") as f:
        for row in csv.DictReader(f):
            q = row["quadrant"].strip().upper()
            a, v = row.get("arousal"), row.get("valence")
            out.append(
                MoodClip(
                    path=_resolve(row["path"], data, csv_path),
                    artist=(row.get("artist") or "").strip() or row["path"],
                    quadrant=q,
                    arousal=_level(a, "high", "low", q in ("Q1", "Q2")),
                    valence=_level(v, "positive", "negative", q in ("Q1", "Q4")),
                    words=row.get("moods", ""),
                    title=row.get("title", ""),
                )
            )
    return out


def _resolve(rel: str, data: Path, csv_path: Path) -> Path:
    p = Path(rel)
    if p.is_absolute():
        return p
    for base in (data, csv_path.parent):
        if (base / p).exists():
            return base / p
    return data / p


def _level(value, high: str, low: str, default: bool) -> float:
    if value is None or str(value).strip() == "":
        return float(default)
    v = str(value).strip().lower()
    if v == high:
        return 1.0
    if v == low:
        return 0.0
    return float(v)


def read_emotify(data: Path = DATA) -> list[MoodClip]:
    artists = {}
    with open(data / "emotify" / "tracks.csv", newline="") as f:
        for row in csv.DictReader(f):
            artists[row["path"]] = row["artist"].strip()
    out = []
    with open(data / "moods" / "emotify_gems.csv", newline="") as f:
        for row in csv.DictReader(f):
            rel = row["path"].split("emotify/", 1)[-1]
            out.append(
                MoodClip(
                    path=data / row["path"],
                    artist=artists.get(rel) or row["path"],
                    gems={g: float(row[g]) for g in GEMS},
                    genre=rel.split("/")[0],
                )
            )
    return out


def musicnn_settings():
    from genre_detector.audio.features import FeatureSettings

    card = json.loads((MUSICNN / "card.json").read_text())
    return FeatureSettings.from_dict(card["feature_settings"])


def clip_features(paths: list[Path], threads: int = 1) -> list[np.ndarray]:
    """(n_windows, 500) musicnn window outputs of each clip (the served windows), cached
    under .cache/mood-features/<model>-<settings>-<feature code>."""
    from genre_detector.audio.decode import decode, resample
    from genre_detector.audio.features import code_fingerprint, extract_windows

    s = musicnn_settings()
    onnx = MUSICNN / "model.onnx"
    folder = CACHE / "mood-features" / f"{file_key(onnx)}-{s.fingerprint()}-{code_fingerprint()}"

    def compute(todo):
        import onnxruntime as ort
        from tqdm import tqdm

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        sess = ort.InferenceSession(str(onnx), opts, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        for i in tqdm(todo, desc="musicnn features", unit="clip"):
            wave, sr = decode(str(paths[i]))
            w = extract_windows(resample(wave, sr, s.sample_rate), s).windows
            yield sess.run(None, {name: w})[0]

    keys = [str(Path(p).resolve().relative_to(DATA)) if _under(p) else str(p) for p in paths]
    return disk_cached(folder, keys, compute)


def _under(p) -> bool:
    try:
        Path(p).resolve().relative_to(DATA.resolve())
        return True
    except ValueError:
        return False


if __name__ == "__main__":
    clips = read_4q() + read_emotify()
    feats = clip_features([c.path for c in clips])
    print(len(feats), feats[0].shape)
