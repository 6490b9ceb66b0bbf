"""Find labelled tracks in `GENRE/*.ext` folders (one per source), split them by artist,
cache their log-mels.

    from train.data import list_tracks, read_genre_map, split_by_artist
    tracks = list_tracks(["../shared/data/emotify", "../shared/data/4q"],
                         read_genre_map("../shared/data/genre_map.csv"))

A source is a folder of genre folders; its name (the folder's name) is the `dataset` column
of the genre map, which turns (dataset, folder) into the canonical genre (Emotify's pop and
rock both become pop-rock). An optional `tracks.csv` (path, artist) names each clip's artist;
artists are compared case-insensitively across sources, so an artist is never on both sides
of a split even when two data sets spell them alike.
"""

from __future__ import annotations

import csv
import hashlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from genre_detector.audio.decode import AUDIO_EXTENSIONS, AudioError, load_audio
from genre_detector.audio.features import FeatureSettings, code_fingerprint, log_mel

CACHE_DIR = Path(".cache/features")


@dataclass(frozen=True)
class Track:
    path: Path
    genre: str  # canonical genre (after the genre map)
    artist: str  # the track's own source/path when no tracks.csv names an artist
    source: str = ""  # data set (its folder's name)
    rel: str = ""  # source/path-in-source: a name that does not depend on the mount

    @property
    def group(self) -> str:
        """The key that keeps an artist on one side of every split."""
        return self.artist.casefold()


def read_genre_map(path: str | Path | None) -> dict[tuple[str, str], str]:
    """(dataset, folder) -> canonical genre from a CSV with dataset,folder,genre columns."""
    if path is None or not Path(path).exists():
        return {}
    with Path(path).open(newline="") as f:
        return {
            (r["dataset"].strip(), r["folder"].strip()): r["genre"].strip()
            for r in csv.DictReader(f)
        }


def list_tracks(roots: str | Path | list, genre_map: dict | None = None) -> list[Track]:
    """Every audio file under each root/GENRE/ (genre folders mapped through `genre_map`; a
    folder the map does not name keeps its own name), artists from root/tracks.csv."""
    if isinstance(roots, (str, Path)):
        roots = [roots]
    tracks = [t for root in roots for t in _list_source(Path(root), genre_map or {})]
    return tracks


def _list_source(root: Path, genre_map: dict) -> list[Track]:
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
                genre = genre_map.get((root.name, genre_dir.name), genre_dir.name)
                tracks.append(
                    Track(
                        path,
                        genre,
                        artists.get(rel, f"{root.name}/{rel}"),
                        root.name,
                        f"{root.name}/{rel}",
                    )
                )
    if not tracks:
        raise FileNotFoundError(f"no audio files found under {root}/GENRE/")
    return tracks


def artist_folds(
    tracks: list[Track], n_splits: int = 5, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train indices, validation indices) of n_splits stratified folds; no artist (or,
    without tracks.csv, no track) is on both sides of any fold, and every track is validated
    in exactly one fold."""
    from sklearn.model_selection import StratifiedGroupKFold

    cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return list(
        cv.split(np.zeros(len(tracks)), [t.genre for t in tracks], [t.group for t in tracks])
    )


def artist_split(
    tracks: list[Track], val_fraction: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices) of a stratified split where no artist (or, without
    tracks.csv, no track) is on both sides: the first of `artist_folds(tracks,
    round(1 / val_fraction), seed)`."""
    return artist_folds(tracks, max(2, round(1 / val_fraction)), seed)[0]


def stopping_split(
    tracks: list[Track], train_idx, fraction: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(fit indices, stop indices): the training side `train_idx` (indices into `tracks`)
    split once more by artist, so that early stopping watches artists that the weights are
    not fitted on and that are not scored either. The stop part is the first of
    `artist_folds` over the training tracks with round(1 / fraction) folds (about `fraction`
    of the training artists). fraction 0: no stop part (train the fixed number of epochs)."""
    import warnings

    train_idx = np.asarray(train_idx)
    if fraction <= 0:
        return train_idx, train_idx[:0]
    sub = [tracks[i] for i in train_idx]
    k = max(2, round(1 / fraction))
    if len({t.group for t in sub}) < k:
        raise ValueError(
            f"early stopping on {fraction:.0%} of the training artists needs at least {k} "
            f"artists on the training side, got {len({t.group for t in sub})}"
        )
    with warnings.catch_warnings():  # a genre with fewer artists than k: expected when small
        warnings.simplefilter("ignore", UserWarning)
        inner_fit, inner_stop = artist_folds(sub, k, seed)[0]
    return train_idx[inner_fit], train_idx[inner_stop]


def split_by_artist(
    tracks: list[Track], val_fraction: float = 0.2, seed: int = 0
) -> tuple[list[Track], list[Track]]:
    """artist_split, as the tracks themselves."""
    train_idx, val_idx = artist_split(tracks, val_fraction, seed)
    return [tracks[i] for i in train_idx], [tracks[i] for i in val_idx]


def data_fingerprint(tracks: list[Track]) -> str:
    """Hash of the labelled file list (relative names, sizes, genres, artists)."""
    h = hashlib.sha1()
    for t in sorted(tracks, key=lambda t: (t.genre, t.rel)):
        h.update(f"{t.genre}/{t.rel}:{t.path.stat().st_size}:{t.artist}\n".encode())
    return h.hexdigest()[:16]


def _cached_mel(args: tuple[Path, FeatureSettings]) -> np.ndarray | str:
    path, settings = args
    key = hashlib.sha1(
        f"{path.resolve()}:{path.stat().st_size}:{path.stat().st_mtime_ns}".encode()
    ).hexdigest()
    cache = CACHE_DIR / f"{settings.fingerprint()}-{code_fingerprint()}" / f"{key}.npy"
    if cache.exists():
        return np.load(cache)
    try:
        mel = log_mel(load_audio(path, sample_rate=settings.sample_rate), settings)
    except AudioError as exc:
        return f"{path}: {exc}"
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".{id(mel)}.tmp.npy")
    np.save(tmp, mel.astype(np.float16))
    tmp.replace(cache)
    return mel.astype(np.float16)


def load_mels(
    tracks: list[Track], settings: FeatureSettings, workers: int = 2, desc: str = "features"
) -> tuple[list[Track], list[np.ndarray]]:
    """Log-mel of every track (float16, cached on disk); tracks that fail are reported and
    dropped."""
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
