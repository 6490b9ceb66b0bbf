"""Find labelled tracks in a `GENRE/*.ext` folder, split them by artist, cache their log-mels.

    from train.data import list_tracks, split_by_artist
    tracks = list_tracks("../shared/data/emotify")
"""
from __future__ import annotations

import csv
import hashlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from genre_detector.audio import AUDIO_EXTENSIONS, AudioError, load_audio
from genre_detector.features import FeatureSettings, log_mel

CACHE_DIR = Path(".cache/features")


@dataclass(frozen=True)
class Track:
    path: Path
    genre: str
    artist: str   # the track's own path when no tracks.csv names an artist


def list_tracks(root: str | Path) -> list[Track]:
    """Every audio file under root/GENRE/, with artists from root/tracks.csv when present."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data folder {root} does not exist")
    artists: dict[str, str] = {}
    meta = root / "tracks.csv"
    if meta.exists():
        with meta.open(newline="") as f:
            for row in csv.DictReader(f):
                if row.get("path") and row.get("artist"):
                    artists[Path(row["path"]).as_posix()] = row["artist"].strip()
    tracks = []
    for genre_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for path in sorted(genre_dir.rglob("*")):
            if path.is_file() and path.suffix.lower() in AUDIO_EXTENSIONS:
                rel = path.relative_to(root).as_posix()
                tracks.append(Track(path, genre_dir.name, artists.get(rel, rel)))
    if not tracks:
        raise FileNotFoundError(f"no audio files found under {root}/GENRE/")
    return tracks


def artist_folds(tracks: list[Track], n_splits: int = 5,
                 seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train indices, validation indices) of n_splits stratified folds; no artist (or,
    without tracks.csv, no track) is on both sides of any fold, and every track is validated
    in exactly one fold."""
    from sklearn.model_selection import StratifiedGroupKFold
    cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return list(cv.split(np.zeros(len(tracks)), [t.genre for t in tracks],
                         [t.artist for t in tracks]))


def split_by_artist(tracks: list[Track], val_fraction: float = 0.2,
                    seed: int = 0) -> tuple[list[Track], list[Track]]:
    """Stratified split where no artist (or, without tracks.csv, no track) is on both sides:
    the first of `artist_folds(tracks, round(1 / val_fraction), seed)`."""
    train_idx, val_idx = artist_folds(tracks, max(2, round(1 / val_fraction)), seed)[0]
    return [tracks[i] for i in train_idx], [tracks[i] for i in val_idx]


def data_fingerprint(tracks: list[Track]) -> str:
    """Hash of the labelled file list (relative names, sizes, genres, artists)."""
    h = hashlib.sha1()
    for t in sorted(tracks, key=lambda t: (t.genre, t.path.name)):
        h.update(f"{t.genre}/{t.path.name}:{t.path.stat().st_size}:{t.artist}\n".encode())
    return h.hexdigest()[:16]


def _cached_mel(args: tuple[Path, FeatureSettings]) -> np.ndarray | str:
    path, settings = args
    key = hashlib.sha1(f"{path.resolve()}:{path.stat().st_size}:{path.stat().st_mtime_ns}"
                       .encode()).hexdigest()
    cache = CACHE_DIR / settings.fingerprint() / f"{key}.npy"
    if cache.exists():
        return np.load(cache)
    try:
        mel = log_mel(load_audio(path), settings)
    except AudioError as exc:
        return f"{path}: {exc}"
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".{id(mel)}.tmp.npy")
    np.save(tmp, mel.astype(np.float16))
    tmp.replace(cache)
    return mel.astype(np.float16)


def load_mels(tracks: list[Track], settings: FeatureSettings, workers: int = 2,
              desc: str = "features") -> tuple[list[Track], list[np.ndarray]]:
    """Log-mel of every track (float16, cached on disk); tracks that fail are reported and dropped."""
    jobs = [(t.path, settings) for t in tracks]
    with ProcessPoolExecutor(workers) as pool:
        results = list(tqdm(pool.map(_cached_mel, jobs, chunksize=4), total=len(jobs), desc=desc))
    kept, mels = [], []
    for track, res in zip(tracks, results):
        if isinstance(res, str):
            tqdm.write(f"skipped {res}")
        else:
            kept.append(track)
            mels.append(res)
    return kept, mels
