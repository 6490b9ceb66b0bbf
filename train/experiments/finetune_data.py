"""musicnn's inputs for the GPU fine-tuning (train/experiments/finetune_musicnn.py), computed
once on CPU into one small folder that travels to a machine without our audio stack.

    python -m train.experiments.finetune_data --out .ftdata     # every labelled track (27 MiB)
    data = load(".ftdata")        # numpy, lzma and json only: safe where TensorFlow is not

Per track, the (at most 5) windows serving cuts (features.window_starts with MUSICNN_SETTINGS)
are each stored with a margin of frames around them (a `span` of frames, the serving window
at `eval_off` inside it), so training draws random 3 s crops near every serving position and
evaluation reads exactly the served windows. Values are log10(1 + 10000 * mel power)
(0 .. ~6.7) quantized to uint8 in steps of `step` (0.1: on 40 served windows the backbones'
500 features correlate 0.9996 with the unquantized input's, mean |difference| 0.008 against
a mean |feature| of 0.36) and lzma-compressed. Labels are the nine genres of the
genre map; groups are the artists (case-folded, as train.data.Track.group). `parity.npz`
holds a few served windows with the Keras port's outputs on them, so the device run can check
that its backend computes what TensorFlow computes here.
"""

from __future__ import annotations

import argparse
import json
import lzma
from pathlib import Path

import numpy as np

WINDOW = 187  # frames: musicnn's 3 s input
SPAN = 200  # frames stored per serving window: +-6 frames (0.1 s) of crop jitter
STEP = 0.1  # quantization step of the log10 scale
# lzma with a delta filter along time: ~4.1 bits per value; what travels to the device machine
# (the repository and this folder) must stay under 64 MiB, which is what sets SPAN and STEP
FILTERS = [{"id": lzma.FILTER_DELTA, "dist": 1}, {"id": lzma.FILTER_LZMA2, "preset": 6}]
ARRAY = "windows.u8.xz"
META = "meta.json"
LABELS = "labels.npz"
PARITY = "parity.npz"


def spans(mel: np.ndarray, s, span: int = SPAN):
    """(n, n_mels, span) float32 stretches around the serving windows of one track's log-mel
    and the offset of each serving window inside its stretch."""
    from genre_detector.audio.features import window_starts

    n_frames = mel.shape[1]
    starts = window_starts(n_frames, s)
    if n_frames < span:  # pad a short clip at the floor (silence), as cut_windows does
        mel = np.pad(mel, ((0, 0), (0, span - n_frames)), constant_values=s.floor)
    lo = np.clip(starts - (span - s.window_frames) // 2, 0, mel.shape[1] - span)
    out = np.stack([mel[:, a : a + span] for a in lo]).astype(np.float32)
    return out, (starts - lo).astype(np.int16)


def quantize(x: np.ndarray, step: float = STEP) -> np.ndarray:
    return np.clip(np.round(x / step), 0, 255).astype(np.uint8)


def build(
    tracks,
    mels,
    genres: list[str],
    s=None,
    span: int = SPAN,
    step: float = STEP,
    max_windows: int = 0,
):
    """The stored arrays of `tracks` (train.data.Track) and their cached log-mels;
    `max_windows` keeps only each track's first few served windows (tests)."""
    from genre_detector.audio.features import MUSICNN_SETTINGS

    s = s or MUSICNN_SETTINGS
    n_max = min(s.max_windows, max_windows or s.max_windows)
    q = np.zeros((len(tracks), n_max, s.n_mels, span), np.uint8)
    off = np.zeros((len(tracks), n_max), np.int16)
    n_win = np.zeros(len(tracks), np.int16)
    for i, mel in enumerate(mels):
        x, o = spans(np.asarray(mel, np.float32), s, span)
        x, o = x[:n_max], o[:n_max]
        q[i, : len(x)], off[i, : len(x)], n_win[i] = quantize(x, step), o, len(x)
    return {
        "windows": q,
        "eval_off": off,
        "n_windows": n_win,
        "y": np.array([genres.index(t.genre) for t in tracks], np.int64),
        "groups": np.array([t.group for t in tracks]),
        "rel": np.array([t.rel for t in tracks]),
        "source": np.array([t.source for t in tracks]),
        "genres": list(genres),
        "step": float(step),
        "span": int(span),
        "settings": s.to_dict(),
    }


def eval_windows(data: dict, tracks=None) -> tuple[np.ndarray, np.ndarray]:
    """The served windows (float32, dequantized) of `tracks` (indices; default all) and the
    track index of each."""
    idx = np.arange(len(data["y"])) if tracks is None else np.asarray(tracks)
    wins, owner = [], []
    for i in idx:
        for k in range(int(data["n_windows"][i])):
            o = int(data["eval_off"][i, k])
            wins.append(data["windows"][i, k, :, o : o + WINDOW])
            owner.append(i)
    return np.stack(wins).astype(np.float32) * data["step"], np.asarray(owner)


def save(data: dict, out: str | Path, parity: dict | None = None) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    q = np.ascontiguousarray(data["windows"])
    (out / ARRAY).write_bytes(lzma.compress(q.tobytes(), filters=FILTERS))
    meta = {k: data[k] for k in ("genres", "step", "span", "settings")} | {
        "shape": list(q.shape),
        "dtype": "uint8",
    }
    (out / META).write_text(json.dumps(meta, indent=1))
    np.savez(
        out / LABELS,
        **{k: data[k] for k in ("eval_off", "n_windows", "y", "groups", "rel", "source")},
    )
    if parity is not None:
        np.savez(out / PARITY, **parity)
    return out


def load(folder: str | Path) -> dict:
    folder = Path(folder)
    meta = json.loads((folder / META).read_text())
    raw = lzma.decompress((folder / ARRAY).read_bytes())
    data = dict(meta)
    data["windows"] = np.frombuffer(raw, np.uint8).reshape(meta["shape"])
    with np.load(folder / LABELS) as z:
        data.update({k: z[k] for k in z.files})
    if (folder / PARITY).exists():
        with np.load(folder / PARITY) as z:
            data["parity"] = {k: z[k] for k in z.files}
    return data


def parity_reference(data: dict, n: int = 5) -> dict:
    """n served windows (one per track, spread over the data) and the Keras port's outputs
    on them, computed by whatever backend runs here (TensorFlow on the CPU machines)."""
    from genre_detector.models.musicnn import BACKBONES, build_backbone

    picks = np.linspace(0, len(data["y"]) - 1, n).round().astype(int)
    wins, owner = eval_windows(data, picks)
    first = np.array([np.flatnonzero(owner == i)[0] for i in picks])
    x = wins[first]
    ref = {"windows": x}
    for name in BACKBONES:
        out = build_backbone(name).predict(x, verbose=0)
        ref[f"{name}/taggram"] = np.asarray(out["taggram"])
        ref[f"{name}/penultimate"] = np.asarray(out["penultimate"])
    return ref


def precompute(
    roots=None,
    genre_map=None,
    out=".ftdata",
    limit_per_genre: int = 0,
    workers: int = 2,
    with_parity: bool = True,
    max_windows: int = 0,
) -> Path:
    """Decode (cached: train.data.load_mels), cut, quantize and save; `limit_per_genre` keeps
    the first few tracks of every genre and `max_windows` their first windows (tests)."""
    from genre_detector.audio.features import MUSICNN_SETTINGS
    from train.data import list_tracks, load_mels, read_genre_map
    from train.options import DEFAULT_DATA, DEFAULT_GENRE_MAP

    tracks = list_tracks(roots or DEFAULT_DATA, read_genre_map(genre_map or DEFAULT_GENRE_MAP))
    if limit_per_genre:
        seen: dict[str, int] = {}
        keep = []
        for t in tracks:
            if seen.get(t.genre, 0) < limit_per_genre:
                keep.append(t)
                seen[t.genre] = seen.get(t.genre, 0) + 1
        tracks = keep
    tracks, mels = load_mels(tracks, MUSICNN_SETTINGS, workers=workers, desc="musicnn log-mel")
    genres = sorted({t.genre for t in tracks})
    data = build(tracks, mels, genres, max_windows=max_windows)
    return save(data, out, parity_reference(data) if with_parity else None)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=".ftdata")
    p.add_argument("--data", action="append", default=None)
    p.add_argument("--genre-map", default=None)
    p.add_argument("--limit-per-genre", type=int, default=0)
    p.add_argument("--max-windows", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    a = p.parse_args(argv)
    out = precompute(
        a.data, a.genre_map, a.out, a.limit_per_genre, a.workers, max_windows=a.max_windows
    )
    size = sum(f.stat().st_size for f in out.iterdir()) / 2**20
    print(f"wrote {out} ({size:.1f} MiB)")


if __name__ == "__main__":
    main()
