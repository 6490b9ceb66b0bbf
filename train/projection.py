"""Fit the search projection (genre_detector.models.projection) on training artists' track
embeddings, exactly as scoring computes them.

    python -m train.projection     # the shipped one: lda+pca, 64 dims, LDA weight 0.9,
                                   # written to models/musicnn/projection.npz

    emb = track_embeddings(tracks)            # emb.x (n, d_in): each TrackResult.embedding
    proj = fit_projection("lda+pca", emb.x, y, dim=64)

A track's embedding is what `scoring.score_track` puts in TrackResult.embedding: the
statistics (models.track_head.statistics: mean and spread over non-overlapping windows, the
shipped head's std_fallback for a single window) of the musicnn backbone features of its
serving windows (audio.features.window_starts under MUSICNN_SETTINGS: at most 5). Window
features come from train.pretrained's disk cache (.cache/embeddings, Keras on the cached
log-mels) where present, else from the shipped ONNX graph on the same windows; a few
cached tracks are recomputed with ONNX on every run, so a stale cache is an error, not a
silent mismatch. `python -m train.evals.search_quality --verify N` checks the result against
score_track on decoded audio.

Methods (all z-score first with the training tracks' mean and standard deviation):
  standardised  identity (d_out = d_in)
  pca           the top `dim` principal components; pca-whiten: each scaled to unit variance
  lda           shrinkage LDA on the genres (solver "eigen", Ledoit-Wolf shrinkage): its
                n_genres - 1 discriminant directions (d_out <= 8 for nine genres)
  lda+pca       those directions and the top dim - (n_genres - 1) principal components, each
                block scaled to unit total variance on the training tracks, the LDA block
                weighted by `lda_weight` (its share of the variance)
  nca           linear metric learning: Neighbourhood Components Analysis (scikit-learn) to
                `dim` outputs on the top `nca_input` principal components

Chosen by `python -m train.evals.search_quality` (genre precision@10, own artist excluded, 5 artist
folds x 3): LDA 0.812 (macro over genres 0.760), lda+pca 64 dims at weight 0.9 0.809 (0.763:
within one standard error of LDA, at a fixed 64 dimensions that keep 56 principal components
of the sound for ranking within a genre), raw pooled features 0.731 (0.562), PCA and
standardised about 0.72, whitened PCA and NCA no better. runs/search_quality.json has all.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genre_detector.audio.features import MUSICNN_SETTINGS, cut_windows, window_starts
from genre_detector.models.projection import PROJECTION_FILE, Projection
from genre_detector.models.track_head import HEAD_FILE, TrackHead, statistics

REPO = Path(__file__).resolve().parent.parent
MUSICNN_DIR = REPO / "models" / "musicnn"
WINDOW_CACHE = REPO / ".cache" / "embeddings"  # train.pretrained.embed's cache
TRACK_CACHE = REPO / ".cache" / "projection"  # this module's: the track embeddings
METHODS = ("standardised", "pca", "pca-whiten", "lda", "lda+pca", "nca")
DEFAULT_METHOD = "lda+pca"
DEFAULT_DIM = 64
DEFAULT_LDA_WEIGHT = 0.9


# -- embeddings ---------------------------------------------------------------------------


def shipped_musicnn(folder: Path = MUSICNN_DIR, threads: int = 1):
    """The shipped musicnn ONNX graph with its track head (what serving runs), read from the
    shipped folder: no model store needed."""
    from genre_detector.runtime.onnx_predictor import OnnxPredictor
    from genre_detector.runtime.store import ModelInfo

    info = ModelInfo.from_metadata(json.loads((folder / "card.json").read_text()))
    info.head = TrackHead.load(folder / HEAD_FILE)
    return OnnxPredictor(str(folder / "model.onnx"), info, threads)


def _file_key(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def _window_cache_dirs() -> list[Path]:
    fp = MUSICNN_SETTINGS.fingerprint()
    return sorted(WINDOW_CACHE.glob(f"*-{fp}")) if WINDOW_CACHE.is_dir() else []


@dataclass
class Embeddings:
    """The shipped musicnn's view of some tracks, as scoring sees them."""

    x: np.ndarray  # (n, d_in) float32: TrackResult.embedding of each track
    tracks: list  # the n tracks (those that decoded)
    feats: list[np.ndarray]  # per track (n_windows, n_features): the model's window outputs
    start_s: list[np.ndarray]  # per track: its windows' start times (seconds)


def track_embeddings(
    tracks, workers: int = 2, check: int = 3, use_cache: bool = True, log=print
) -> Embeddings:
    """The embedding of every track that decodes (dropped otherwise). `check` tracks taken
    from the window cache are recomputed with ONNX Runtime and must agree (relative error
    < 1e-3)."""
    from train.data import data_fingerprint, load_mels

    s = MUSICNN_SETTINGS
    model = shipped_musicnn(threads=workers)
    head = model.info.head
    key = hashlib.sha1(
        f"{data_fingerprint(tracks)}:{s.fingerprint()}:{_file_key(MUSICNN_DIR / 'model.onnx')}:"
        f"{_file_key(MUSICNN_DIR / HEAD_FILE)}:{sorted(t.rel for t in tracks)}".encode()
    ).hexdigest()[:16]
    cached = TRACK_CACHE / f"{key}.npz"
    by_rel = {t.rel: t for t in tracks}
    if use_cache and cached.exists():
        with np.load(cached) as z:
            cut = np.cumsum(z["n_windows"])[:-1]
            return Embeddings(
                z["x"],
                [by_rel[r] for r in z["rel"]],
                np.split(z["feats"], cut),
                np.split(z["start_s"], cut),
            )
    dirs = _window_cache_dirs()
    x, kept, feats_all, starts_all, from_cache, n_onnx, checked = [], [], [], [], 0, 0, []
    chunk = 48  # log-mels of a chunk at a time (a 60 s clip is 0.7 MB in float16)
    for lo in range(0, len(tracks), chunk):
        part, mels = load_mels(tracks[lo : lo + chunk], s, workers, desc="log-mels (cached)")
        for t, mel in zip(part, mels):
            starts = window_starts(mel.shape[1], s)
            name = f"{hashlib.sha1(str(t.path.resolve()).encode()).hexdigest()}.npy"
            hit = next((d / name for d in dirs if (d / name).exists()), None)
            feats = np.load(hit).astype(np.float32) if hit is not None else None
            if feats is None or len(feats) != len(starts):
                feats = model(cut_windows(mel.astype(np.float32), starts, s))
                n_onnx += 1
            else:
                from_cache += 1
                if len(checked) < check:
                    onnx = model(cut_windows(mel.astype(np.float32), starts, s))
                    err = float(np.abs(onnx - feats).max() / (np.abs(onnx).max() + 1e-12))
                    checked.append(err)
                    if err > 1e-3:
                        raise RuntimeError(
                            f"window cache {hit.parent} disagrees with the shipped ONNX musicnn "
                            f"on {t.rel} (relative error {err:.2g}): stale cache? remove it"
                        )
            start_s = starts * s.frame_seconds
            # as score_track: statistics in float64 (head's fallback, window length), float32
            x.append(statistics(feats, head.std_fallback, start_s, s.window_seconds))
            kept.append(t)
            feats_all.append(feats)
            starts_all.append(start_s)
    emb = Embeddings(np.stack(x).astype(np.float32), kept, feats_all, starts_all)
    log(
        f"embeddings of {len(kept)} tracks ({emb.x.shape[1]} numbers each): {from_cache} from "
        f"the window cache, {n_onnx} computed with ONNX; cache vs ONNX max relative error "
        f"{max(checked, default=0):.2g} on {len(checked)} tracks"
    )
    TRACK_CACHE.mkdir(parents=True, exist_ok=True)
    with open(cached, "wb") as f:
        np.savez(
            f,
            x=emb.x,
            rel=np.array([t.rel for t in kept]),
            feats=np.concatenate(feats_all),
            start_s=np.concatenate(starts_all),
            n_windows=np.array([len(f) for f in feats_all]),
        )
    return emb


# -- fitting ------------------------------------------------------------------------------


def _standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale < 1e-8 * max(scale.max(), 1e-30)] = 1.0  # a constant feature: left at zero
    return mean, scale, (x - mean) / scale


def _signed(m: np.ndarray) -> np.ndarray:
    """Columns flipped so that each one's largest entry is positive (a sign that does not
    depend on the linear algebra library: the same fit, the same version)."""
    return m * np.sign(m[np.argmax(np.abs(m), axis=0), np.arange(m.shape[1])])


def _pca(z: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(components (d, k), their standard deviations (k,)) of centred rows z."""
    _, sv, vt = np.linalg.svd(z - z.mean(axis=0), full_matrices=False)
    k = min(k, len(sv))
    return _signed(vt[:k].T), sv[:k] / np.sqrt(max(len(z) - 1, 1))


def _lda(z: np.ndarray, y) -> np.ndarray:
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    lda = LinearDiscriminantAnalysis(solver="eigen", shrinkage="auto").fit(z, y)
    return _signed(lda.scalings_[:, : len(lda.classes_) - 1])


def _unit_variance(z: np.ndarray, m: np.ndarray) -> np.ndarray:
    """m scaled so that the projected training rows have total variance 1."""
    return m / np.sqrt((z @ m).var(axis=0).sum())


def fit_projection(
    method: str,
    x: np.ndarray,
    y=None,
    dim: int = DEFAULT_DIM,
    lda_weight: float = DEFAULT_LDA_WEIGHT,
    nca_input: int = 128,
    seed: int = 0,
) -> Projection:
    """A Projection of embeddings `x` (n, d_in), with genres `y` for the supervised methods."""
    mean, scale, z = _standardise(x)
    if method == "standardised":
        matrix = np.eye(z.shape[1])
    elif method in ("pca", "pca-whiten"):
        comps, sd = _pca(z, dim)
        matrix = comps / sd if method == "pca-whiten" else comps
    elif method == "lda":
        matrix = _lda(z, y)[:, :dim]
    elif method == "lda+pca":
        lda = _lda(z, y)
        if dim <= lda.shape[1]:
            raise ValueError(f"lda+pca needs dim > {lda.shape[1]} (the LDA directions)")
        comps, _ = _pca(z, dim - lda.shape[1])
        matrix = np.hstack(
            [
                np.sqrt(lda_weight) * _unit_variance(z, lda),
                np.sqrt(1 - lda_weight) * _unit_variance(z, comps),
            ]
        )
    elif method == "nca":
        from sklearn.neighbors import NeighborhoodComponentsAnalysis

        comps, _ = _pca(z, nca_input)
        nca = NeighborhoodComponentsAnalysis(
            n_components=min(dim, comps.shape[1]), init="pca", max_iter=200, random_state=seed
        ).fit(z @ comps, y)
        matrix = comps @ nca.components_.T
    else:
        raise ValueError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
    label = method
    if method in ("pca", "pca-whiten", "nca", "lda+pca"):
        label += f"-{matrix.shape[1]}"
    if method == "lda+pca":
        label += f"-w{lda_weight:g}"
    return Projection(mean, scale, matrix, label)


def main(argv=None) -> int:
    from train.options import DEFAULT_GENRE_MAP, load_tracks

    p = argparse.ArgumentParser(
        prog="python -m train.projection",
        description="Fit the search projection on every shipped training track (both sources) "
        "and write it (choose the method with python -m train.evals.search_quality).",
    )
    p.add_argument("--method", choices=METHODS, default=DEFAULT_METHOD)
    p.add_argument("--dim", type=int, default=DEFAULT_DIM, help="output dimension")
    p.add_argument("--lda-weight", type=float, default=DEFAULT_LDA_WEIGHT, help="lda+pca only")
    p.add_argument("--out", default=str(MUSICNN_DIR / PROJECTION_FILE))
    p.add_argument("--data", action="append", default=None, help="a source (repeatable)")
    p.add_argument("--genre-map", default=DEFAULT_GENRE_MAP)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args(argv)
    tracks = load_tracks(args)
    emb = track_embeddings(tracks, args.workers)
    kept = emb.tracks
    y = np.array([t.genre for t in kept])
    proj = fit_projection(args.method, emb.x, y, args.dim, args.lda_weight)
    out = proj.save(args.out)
    n_artists = len({t.group for t in kept})
    print(
        f"{out}: {proj.method}, {proj.d_in} -> {proj.dim}, version {proj.version}, "
        f"{out.stat().st_size / 1024:.0f} KiB; fitted on {len(kept)} tracks by {n_artists} artists"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
