"""Search quality of the track embedding: genre precision@10 of "tracks like this one" for
each projection method (train/projection.py) next to baselines. Prints a table, saves JSON.

    python -m train.evals.search_quality                      # runs/search_quality.json
    python -m train.evals.search_quality --verify 6           # first: embeddings == score_track's

Protocol. Queries and catalog are the shared clips (both sources). The tracks are split into
artist-grouped folds (train.data.artist_folds); for each fold the projection is fitted on
the other folds' tracks only, every track is projected (catalog = all tracks) and each of
the fold's tracks queries the catalog: the 10 nearest by cosine similarity, the query's
own artist excluded (so never the query itself). precision@10 = the share of those 10 in
the query's genre, averaged over queries: overall, per source of the query, and macro
over genres (the mean of the nine genres' averages). `--repeats` reshuffles the folds
(seeds 0..R-1) and averages each query's precision over them; "+-" is one standard error
from a bootstrap over query artists (clips of one artist are not independent).

Baselines: random (the expected precision of 10 tracks drawn from the eligible catalog:
the genre prior), cosine on the nine calibrated ensemble probabilities from score_track
with the shipped models (optimistic: those models were trained on most of these very
tracks), the same with a track head refitted per fold (honest), and the raw pooled
features (cosine on the unprojected embedding).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from genre_detector.audio.features import MUSICNN_SETTINGS
from genre_detector.models.projection import Projection
from train.projection import REPO, Embeddings, fit_projection, shipped_musicnn, track_embeddings

K = 10
DEFAULT_SPECS = (
    "standardised",
    "pca:32",
    "pca:64",
    "pca:128",
    "pca:256",
    "pca-whiten:32",
    "pca-whiten:64",
    "pca-whiten:128",
    "lda",
    "lda+pca:64:0.5",
    "lda+pca:64:0.7",
    "lda+pca:64:0.9",
    "lda+pca:128:0.7",
    "nca:64",
)


# -- measuring ----------------------------------------------------------------------------


def _unit(e: np.ndarray) -> np.ndarray:
    e = np.asarray(e, dtype=np.float64)
    n = np.linalg.norm(e, axis=1, keepdims=True)
    return np.divide(e, n, out=np.zeros_like(e), where=n > 0)


def precision_at_k(vectors, genres, groups, queries, k: int = K) -> np.ndarray:
    """Per query: the share of its k most cosine-similar catalog rows (all rows but those
    of the query's own artist) in the query's genre."""
    e = _unit(vectors)
    genres, groups, queries = np.asarray(genres), np.asarray(groups), np.asarray(queries)
    sims = e[queries] @ e.T
    sims[groups[queries][:, None] == groups[None, :]] = -np.inf  # own artist (and itself)
    top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return (genres[top] == genres[queries][:, None]).mean(axis=1)


def random_precision(genres, groups, queries) -> np.ndarray:
    """Per query: the expected precision of k tracks drawn at random from its catalog."""
    genres, groups = np.asarray(genres), np.asarray(groups)
    out = []
    for q in queries:
        ok = groups != groups[q]
        out.append(float(np.mean(genres[ok] == genres[q])))
    return np.array(out)


def summary(prec: np.ndarray, tracks, labels, boot_groups=None, n_boot: int = 1000) -> dict:
    """Overall, per source, macro over genres (overall and per source), per genre; `se`:
    bootstrap over artists of the overall precision."""
    genres = np.array([t.genre for t in tracks])
    sources = np.array([t.source for t in tracks])

    def macro(mask):
        per = [prec[mask & (genres == g)].mean() for g in labels if (mask & (genres == g)).any()]
        return float(np.mean(per))

    every = np.ones(len(tracks), bool)
    out = {
        "precision": float(prec.mean()),
        "macro_genres": macro(every),
        "per_source": {s: float(prec[sources == s].mean()) for s in sorted(set(sources))},
        "macro_genres_per_source": {s: macro(sources == s) for s in sorted(set(sources))},
        "per_genre": {g: float(prec[genres == g].mean()) for g in labels},
    }
    if boot_groups is not None:
        out["se"], out["se_macro"] = bootstrap_se(prec, genres, labels, boot_groups, n_boot)
    return out


def bootstrap_se(prec, genres, labels, groups, n_boot=1000, seed=0, other=None):
    """Standard errors of the mean precision and of its macro over genres, resampling
    artists; with `other` (another method's per-query precision), of the difference."""
    groups = np.asarray(groups)
    uniq, inv = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inv == i) for i in range(len(uniq))]
    diff = prec - (other if other is not None else 0.0)
    rng = np.random.default_rng(seed)
    means, macros = [], []
    for _ in range(n_boot):
        idx = np.concatenate([members[i] for i in rng.integers(0, len(uniq), len(uniq))])
        means.append(diff[idx].mean())
        per = [diff[idx][genres[idx] == g].mean() for g in labels if (genres[idx] == g).any()]
        macros.append(np.mean(per))
    return float(np.std(means, ddof=1)), float(np.std(macros, ddof=1))


# -- what is compared ---------------------------------------------------------------------


def parse_spec(spec: str) -> dict:
    """ "method[:dim[:lda_weight]]" -> fit_projection's keyword arguments."""
    parts = spec.split(":")
    kw: dict = {"method": parts[0]}
    if len(parts) > 1:
        kw["dim"] = int(parts[1])
    if len(parts) > 2:
        kw["lda_weight"] = float(parts[2])
    return kw


def shipped_probabilities(emb: Embeddings, infos, calibration) -> np.ndarray:
    """(n, 9) calibrated ensemble probabilities from score_track, given the shipped musicnn's
    window outputs (the ensemble's other members weigh 0 in the shipped calibration; the
    --verify check compares with all five models on decoded audio). score_track reads only
    the number of windows and their times from a WindowBatch, so the windows themselves
    are left empty here."""
    from genre_detector.audio.features import WindowBatch
    from genre_detector.scoring.track_result import score_track

    name = next(iter(infos))
    s = infos[name].settings
    rows = []
    for feats, start_s in zip(emb.feats, emb.start_s):
        end_s = start_s + s.window_seconds
        batch = WindowBatch(np.zeros((len(feats), 0, 0), np.float32), start_s, end_s, 0.0, None)
        res = score_track({s: batch}, {name: feats}, infos, calibration)
        rows.append(res.ensemble.probabilities)
    return np.stack(rows)


def cv_head_probabilities(emb: Embeddings, train_idx, calibration) -> np.ndarray:
    """Probabilities of every track from a musicnn track head fitted (with the shipped
    settings) on `train_idx` only, pooled and calibrated as the shipped ensemble is."""
    from genre_detector.models.families import family
    from train.fit import FitConfig
    from train.pretrained import fit_head

    labels = calibration.labels
    y = np.array([labels.index(t.genre) for t in emb.tracks])
    cfg = FitConfig(**family("musicnn").fit)
    head = fit_head(
        [emb.feats[i] for i in train_idx],
        y[train_idx],
        len(labels),
        cfg,
        [emb.tracks[i].group for i in train_idx],
    ).head
    window_s = MUSICNN_SETTINGS.window_seconds
    return np.stack(
        [
            calibration.ensemble({"musicnn": head.track_probs(f, s0, window_s)})
            for f, s0 in zip(emb.feats, emb.start_s)
        ]
    )


def shipped_calibration():
    from genre_detector.models.calibration import Calibration

    return Calibration.from_dict(json.loads((REPO / "models" / "calibration.json").read_text()))


# -- checking the embeddings against score_track -------------------------------------------


def verify(emb: Embeddings, n: int, proj: Projection | None = None) -> list[dict]:
    """score_track on decoded audio with every model in the store (ONNX Runtime) vs the
    embeddings and probabilities this script uses, for n tracks spread over the sources."""
    from genre_detector.audio.features import extract_feature_sets
    from genre_detector.runtime.model_set import ModelSet
    from genre_detector.scoring.track_result import score_track

    models = ModelSet.from_store()
    musicnn = shipped_musicnn()
    ours = shipped_probabilities(emb, {"musicnn": musicnn.info}, shipped_calibration())
    picks = np.unique(np.linspace(0, len(emb.tracks) - 1, n).round().astype(int))
    rows = []
    for i in picks:
        t = emb.tracks[i]
        batches = extract_feature_sets(str(t.path), models.settings)
        outs = models.predict({s: b.windows for s, b in batches.items()})
        res = score_track(batches, outs, models.infos, models.calibration)
        e = res.embedding.astype(np.float64)
        b = batches[models.infos["musicnn"].settings]
        row = {
            "track": t.rel,
            "models": sorted(outs),
            "windows_equal": bool(np.allclose(b.start_s, emb.start_s[i])),
            "embedding_max_rel_err": float(np.abs(e - emb.x[i]).max() / np.abs(e).max()),
            "embedding_cosine": float(e @ emb.x[i] / np.linalg.norm(e) / np.linalg.norm(emb.x[i])),
            "ensemble_max_abs_err": float(np.abs(res.ensemble.probabilities - ours[i]).max()),
        }
        if proj is not None:
            row["projected_cosine"] = float(proj.apply(e) @ proj.apply(emb.x[i]))
        rows.append(row)
        print(json.dumps(row))
    return rows


# -- the run ------------------------------------------------------------------------------


def run(emb: Embeddings, specs, repeats: int, folds: int, log=print) -> dict:
    from train.data import artist_folds

    tracks = emb.tracks
    cal = shipped_calibration()
    labels = cal.labels
    genres = np.array([t.genre for t in tracks])
    groups = np.array([t.group for t in tracks])
    n = len(tracks)
    shipped = shipped_probabilities(emb, {"musicnn": shipped_musicnn().info}, cal)
    names = ["random (genre prior)", "probabilities, shipped (optimistic)"]
    names += ["probabilities, head per fold", "raw pooled features"] + list(specs)
    prec = {m: np.zeros((repeats, n)) for m in names}
    dims, seconds = {}, {m: 0.0 for m in names}
    fixed_dims = {names[1]: len(labels), names[2]: len(labels), names[3]: emb.x.shape[1]}
    for r in range(repeats):
        for f, (train_idx, val_idx) in enumerate(artist_folds(tracks, folds, seed=r)):
            assert not set(groups[train_idx]) & set(groups[val_idx])
            prec["random (genre prior)"][r, val_idx] = random_precision(genres, groups, val_idx)
            prec["probabilities, shipped (optimistic)"][r, val_idx] = precision_at_k(
                shipped, genres, groups, val_idx
            )
            t0 = time.time()
            p = cv_head_probabilities(emb, train_idx, cal)
            seconds["probabilities, head per fold"] += time.time() - t0
            prec["probabilities, head per fold"][r, val_idx] = precision_at_k(
                p, genres, groups, val_idx
            )
            prec["raw pooled features"][r, val_idx] = precision_at_k(emb.x, genres, groups, val_idx)
            for spec in specs:
                t0 = time.time()
                proj = fit_projection(x=emb.x[train_idx], y=genres[train_idx], **parse_spec(spec))
                seconds[spec] += time.time() - t0
                dims[spec] = proj.dim
                prec[spec][r, val_idx] = precision_at_k(proj.apply(emb.x), genres, groups, val_idx)
            log(f"repeat {r + 1}/{repeats}, fold {f + 1}/{folds} done")
    mean = {m: p.mean(axis=0) for m, p in prec.items()}
    results = {}
    for m in names:
        results[m] = summary(mean[m], tracks, labels, groups)
        results[m]["per_repeat"] = [float(p.mean()) for p in prec[m]]
        results[m]["dim"] = dims.get(m, fixed_dims.get(m))
        results[m]["fit_seconds_per_fold"] = seconds[m] / (repeats * folds)
    best = max(specs, key=lambda m: results[m]["precision"])
    for m in names:  # paired: each method against the best projection, same queries
        d, dm = bootstrap_se(mean[m], genres, labels, groups, other=mean[best])
        results[m]["vs_best"] = {
            "method": best,
            "diff": results[m]["precision"] - results[best]["precision"],
            "se": d,
            "diff_macro": results[m]["macro_genres"] - results[best]["macro_genres"],
            "se_macro": dm,
        }
    return {
        "k": K,
        "folds": folds,
        "repeats": repeats,
        "n_tracks": n,
        "n_artists": int(len(set(groups))),
        "per_source_tracks": {
            s: int(sum(t.source == s for t in tracks)) for s in {t.source for t in tracks}
        },
        "labels": labels,
        "genre_counts": {g: int((genres == g).sum()) for g in labels},
        "methods": results,
    }


def table(report: dict) -> str:
    sources = sorted(report["per_source_tracks"])
    head = (
        f"{'method':40s} {'dim':>5s} {'P@10':>6s} {'+-':>5s} "
        + " ".join(f"{s:>7s}" for s in sources)
        + f" {'macro':>6s} {'+-':>5s} "
        + " ".join(f"{'m.' + s:>9s}" for s in sources)
        + f" {'worst genre':>16s} {'vs best':>14s}"
    )
    lines = [head, "-" * len(head)]
    for m, r in report["methods"].items():
        worst = min(r["per_genre"], key=r["per_genre"].get)
        vs = r["vs_best"]
        lines.append(
            f"{m:40s} {str(r['dim'] or '-'):>5s} {r['precision']:6.3f} {r['se']:5.3f} "
            + " ".join(f"{r['per_source'][s]:7.3f}" for s in sources)
            + f" {r['macro_genres']:6.3f} {r['se_macro']:5.3f} "
            + " ".join(f"{r['macro_genres_per_source'][s]:9.3f}" for s in sources)
            + f" {worst + ' ' + format(r['per_genre'][worst], '.2f'):>16s}"
            + f" {vs['diff']:+.3f}+-{vs['se']:.3f}"
        )
    return "\n".join(lines)


def per_genre_table(report: dict, methods) -> str:
    labels = report["labels"]
    lines = [f"{'method':40s} " + " ".join(f"{g[:8]:>8s}" for g in labels)]
    lines.append(f"{'(tracks)':40s} " + " ".join(f"{report['genre_counts'][g]:8d}" for g in labels))
    for m in methods:
        pg = report["methods"][m]["per_genre"]
        lines.append(f"{m:40s} " + " ".join(f"{pg[g]:8.3f}" for g in labels))
    return "\n".join(lines)


def main(argv=None) -> int:
    from train.options import DEFAULT_GENRE_MAP, load_tracks

    p = argparse.ArgumentParser(
        prog="python -m train.evals.search_quality", description=__doc__.split("\n\n")[0]
    )
    p.add_argument(
        "--methods", default=",".join(DEFAULT_SPECS), help="method[:dim[:lda_weight]],..."
    )
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3, help="fold shuffles (seeds 0..R-1)")
    p.add_argument("--json", default=str(REPO / "runs" / "search_quality.json"))
    p.add_argument("--verify", type=int, default=0, help="only compare N tracks with score_track")
    p.add_argument("--data", action="append", default=None, help="a source (repeatable)")
    p.add_argument("--genre-map", default=DEFAULT_GENRE_MAP)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args(argv)
    emb = track_embeddings(load_tracks(args), args.workers)
    if args.verify:
        shipped = REPO / "models" / "musicnn" / "projection.npz"
        verify(emb, args.verify, Projection.load(shipped) if shipped.exists() else None)
        return 0
    specs = [s.strip() for s in args.methods.split(",") if s.strip()]
    t0 = time.time()
    report = run(emb, specs, args.repeats, args.folds)
    report["seconds"] = time.time() - t0
    report["command"] = "python -m train.evals.search_quality " + " ".join(argv or sys.argv[1:])
    shipped = REPO / "models" / "musicnn" / "projection.npz"
    if shipped.exists():
        proj = Projection.load(shipped)
        report["shipped"] = {"method": proj.method, "dim": proj.dim, "version": proj.version}
    print()
    print(
        f"genre precision@{K}, own artist excluded; {report['n_tracks']} tracks by "
        f"{report['n_artists']} artists, {args.folds} artist folds x {args.repeats} repeats "
        "(projection fitted without the query's fold); +- one SE (bootstrap over artists)"
    )
    print(table(report))
    print()
    ranked = sorted(specs, key=lambda m: -report["methods"][m]["precision"])[:4]
    base = ["random (genre prior)", "probabilities, head per fold", "raw pooled features"]
    print(per_genre_table(report, base + ranked))
    if "shipped" in report:
        r = report["shipped"]
        print(f"\nshipped {shipped}: {r['method']}, dim {r['dim']}, version {r['version']}")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"\nsaved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
