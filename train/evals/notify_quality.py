"""Notification quality of watches on the shared clips: a watch built from 3
reference tracks of one genre (`like` plus that genre in `genres`), the other clips
arriving one by one; precision and recall of its notifications per genre, with the
`min_similarity` and genre minimum chosen on one source and tested on the other.

    python -m train.evals.notify_quality                       # runs/notify_quality.json
    python -m train.evals.notify_quality --repeats 1 --draws 2 # quicker

Protocol. The clips of both sources are split into artist-grouped folds
(train.data.artist_folds, `--folds` x `--repeats` shuffles). For each fold, the search
projection (train.projection's shipped method: lda+pca, 64 dims, weight 0.9) and the
musicnn track head that gives the calibrated genre probabilities (as
train.evals.search_quality's "head per fold") are fitted on the other folds' tracks only: the
arriving clips are never seen by either. For each source and each genre of that source, a
watch takes 3 reference tracks of the genre from the training side of the fold (of the same
source, three different artists where there are three; `--draws` random draws) and the
fold's clips of that source arrive one by one, so reference and arriving artists are always
apart. A notification is correct when the arriving clip is of the watch's genre: precision
= correct / notifications, recall = correct / clips of the genre that arrived, summed over
folds, draws and repeats.

The matching is catalog.watches.match_new_track itself: each arriving clip is passed to it
(with a stand-in for the database connection that hands it the watches and collects the
matches it would write) against two probe watches per real one, one with the references
and min_similarity -1, one with the genre at minimum 0, which both always match and record
the clip's score: its similarity to the nearest reference, and the genre's probability.
The rule matches a watch with both criteria exactly when the similarity reaches
min_similarity and the probability reaches the genre minimum, so every threshold pair is
evaluated from those two scores. `--check-catalog` (default on) confirms it end to end: a
real SQLite catalog, the watches made by watches.create at the chosen thresholds, every clip
of one fold ingested by catalog.ingest.add, the matches table compared with the prediction.

Thresholds: one (min_similarity, genre minimum) pair for all genres, chosen to maximise the
macro F-beta over the genres of one source (`--beta`, default 1), then applied to the
other source. Also shown: each source's own best pair (the optimistic in-source
bound) and the API's defaults (min_similarity 0.8) with a genre minimum of 0.5.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import namedtuple
from pathlib import Path

import numpy as np

from train.projection import (
    DEFAULT_DIM,
    DEFAULT_LDA_WEIGHT,
    DEFAULT_METHOD,
    REPO,
    fit_projection,
    track_embeddings,
)

N_REFS = 3
SIM_GRID = np.round(np.arange(-1.0, 1.0001, 0.02), 2) + 0.0  # -1: no similarity criterion
PROB_GRID = np.round(np.arange(0.0, 0.9501, 0.05), 2)  # 0: no genre criterion
DEFAULT_POINT = (0.8, 0.5)  # watches.DEFAULT_MIN_SIMILARITY and a plain genre minimum
SOURCES = ("emotify", "4q")

# What match_new_track reads of each watch (the columns it selects).
ProbeWatch = namedtuple(
    "ProbeWatch",
    "pk id genres like_vectors min_similarity exclude_artists owner like_ids conditions",
    defaults=((), None),
)


# -- matching: catalog.watches.match_new_track with the watches in memory -------------------


class _Rows:
    def __init__(self, rows):
        self.rows = rows

    def fetchall(self):
        return list(self.rows)


class ProbeConnection:
    """Stands in for the database connection inside watches.match_new_track: its SELECT of
    the active watches of other accounts returns `watches` (filtered as the SQL would), and
    each match it writes is collected as {watch pk: score}; the outbox rows are dropped."""

    def __init__(self, watches: list[ProbeWatch], owner: str):
        self.watches = [w for w in watches if w.owner != owner]
        self.matched: dict[int, float] = {}

    def execute(self, stmt, *args, **kwargs):
        import sqlalchemy as sa

        if isinstance(stmt, sa.sql.Select):
            return _Rows(self.watches)
        if getattr(stmt, "table", None) is not None and stmt.table.name == "watch_matches":
            params = stmt.compile().params
            self.matched[params["watch_pk"]] = params["score"]
        return None


def track_row(i: int, track, probs: np.ndarray, labels, owner: str = "arrivals") -> dict:
    """The stored track as match_new_track sees it (catalog.tracks._row)."""
    from genre_detector.catalog.records import artist_key

    order = np.argsort(-probs)
    return {
        "id": f"clip{i:05d}",
        "owner": owner,
        "consent": ["search", "notify"],
        "title": track.rel,
        "artist": track.artist,
        "artist_key": artist_key(track.artist),
        "probabilities": {g: float(p) for g, p in zip(labels, probs)},
        "top3": [{"genre": labels[j], "probability": float(probs[j])} for j in order[:3]],
    }


def probe_scores(vectors, probs, tracks, labels, arrivals, refs_by_watch, genre_by_watch):
    """(similarity, probability) of every arriving clip for every watch, as
    match_new_track scores them: arrays (n_watches, n_arrivals)."""
    from genre_detector.catalog import watches as watch_rules

    probes = []
    for k, (refs, g) in enumerate(zip(refs_by_watch, genre_by_watch)):
        like = np.asarray(vectors[refs], dtype=np.float32).tobytes()
        probes.append(ProbeWatch(2 * k, f"like{k}", {}, like, -1.0, [], "scout", list(refs)))
        probes.append(ProbeWatch(2 * k + 1, f"genre{k}", {g: 0.0}, None, -1.0, [], "scout"))
    sim = np.full((len(refs_by_watch), len(arrivals)), np.nan)
    prob = np.full_like(sim, np.nan)
    # the compiled watches match_new_track uses (catalog.watches._Compiled), built from them
    compiled = watch_rules._Compiled(probes, list(labels), vectors.shape[1], None)
    for j, i in enumerate(arrivals):
        row = track_row(i, tracks[i], probs[i], labels)
        p = np.array([row["probabilities"][g] for g in labels])
        hits = dict(
            compiled.match(p, np.asarray(vectors[i], np.float32), row["owner"], row["artist_key"])
        )
        assert len(hits) == len(probes), "a probe watch always matches"
        for k in range(len(refs_by_watch)):
            sim[k, j] = hits[2 * k]
            prob[k, j] = hits[2 * k + 1]
    return sim, prob


# -- the protocol -----------------------------------------------------------------------------


def choose_refs(rng, candidates: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """N_REFS tracks among `candidates`, from as many different artists as there are."""
    by_artist: dict = {}
    for i in rng.permutation(candidates):
        by_artist.setdefault(groups[i], []).append(i)
    artists = list(by_artist)
    picks = [by_artist[a].pop() for a in artists[:N_REFS]]
    rest = [i for a in artists for i in by_artist[a]]
    picks += list(rng.permutation(rest)[: N_REFS - len(picks)])
    return np.array(picks[:N_REFS])


def evaluate(emb, labels, repeats: int, folds: int, draws: int, probabilities: str, log=print):
    """Every watch's scores on its arriving clips: a list of dicts."""
    from train.data import artist_folds
    from train.evals.search_quality import cv_head_probabilities, shipped_calibration

    tracks = emb.tracks
    cal = shipped_calibration()
    genres = np.array([t.genre for t in tracks])
    groups = np.array([t.group for t in tracks])
    sources = np.array([t.source for t in tracks])
    if probabilities == "shipped":
        from train.evals.search_quality import shipped_probabilities
        from train.projection import shipped_musicnn

        fixed = shipped_probabilities(emb, {"musicnn": shipped_musicnn().info}, cal)
    evals, folds_out = [], []
    for r in range(repeats):
        rng = np.random.default_rng(1000 + r)
        for f, (train_idx, test_idx) in enumerate(artist_folds(tracks, folds, seed=r)):
            assert not set(groups[train_idx]) & set(groups[test_idx])
            t0 = time.time()
            proj = fit_projection(
                DEFAULT_METHOD, emb.x[train_idx], genres[train_idx], DEFAULT_DIM, DEFAULT_LDA_WEIGHT
            )
            vectors = proj.apply(emb.x)
            probs = (
                fixed if probabilities == "shipped" else cv_head_probabilities(emb, train_idx, cal)
            )
            folds_out.append({"repeat": r, "fold": f, "projection": proj.method})
            for s in sorted({str(x) for x in sources}):
                arrivals = test_idx[sources[test_idx] == s]
                refs_by_watch, genre_by_watch, draw_of = [], [], []
                for g in labels:
                    cand = train_idx[(sources[train_idx] == s) & (genres[train_idx] == g)]
                    if len(cand) < N_REFS or not (genres[arrivals] == g).any():
                        continue
                    for d in range(draws):
                        refs_by_watch.append(choose_refs(rng, cand, groups))
                        genre_by_watch.append(g)
                        draw_of.append(d)
                if not refs_by_watch:
                    continue
                sim, prob = probe_scores(
                    vectors, probs, tracks, labels, arrivals, refs_by_watch, genre_by_watch
                )
                for k, g in enumerate(genre_by_watch):
                    assert not set(groups[refs_by_watch[k]]) & set(groups[arrivals])
                    evals.append(
                        {
                            "repeat": r,
                            "fold": f,
                            "source": s,
                            "genre": g,
                            "draw": draw_of[k],
                            "refs": refs_by_watch[k],
                            "arrivals": arrivals,
                            "sim": sim[k],
                            "prob": prob[k],
                            "positive": genres[arrivals] == g,
                        }
                    )
                if r == 0 and f == 0:
                    folds_out[-1].setdefault("check", {})[s] = {
                        "vectors": vectors,
                        "probs": probs,
                    }
            log(
                f"repeat {r + 1}/{repeats}, fold {f + 1}/{folds}: {len(evals)} watches so far "
                f"({time.time() - t0:.1f} s)"
            )
    return evals, folds_out


def counts(evals, sources, labels):
    """{(source, genre): (tp, notified, positives)} over the threshold grid: arrays of shape
    (len(SIM_GRID), len(PROB_GRID)) for tp and notified, an int for positives."""
    out = {}
    for e in evals:
        key = (e["source"], e["genre"])
        by_sim = e["sim"][:, None] >= SIM_GRID[None, :]  # (n, S)
        by_prob = e["prob"][:, None] >= PROB_GRID[None, :]  # (n, P)
        notified = by_sim[:, :, None] & by_prob[:, None, :]  # (n, S, P)
        tp, n, pos = out.get(key, (0, 0, 0))
        out[key] = (
            tp + notified[e["positive"]].sum(axis=0),
            n + notified.sum(axis=0),
            pos + int(e["positive"].sum()),
        )
    return out


def scores(tp, notified, positives, beta: float = 1.0):
    precision = np.divide(tp, notified, out=np.zeros(np.shape(tp), float), where=notified > 0)
    recall = np.asarray(tp, float) / max(positives, 1)
    b2 = beta * beta
    denom = b2 * precision + recall
    f = np.divide((1 + b2) * precision * recall, denom, out=np.zeros_like(recall), where=denom > 0)
    return precision, recall, f


def macro_f(c, source, labels, beta):
    fs = [scores(*c[(source, g)], beta)[2] for g in labels if (source, g) in c]
    return np.mean(fs, axis=0)


def at(c, source, labels, si: int, pi: int, beta: float) -> dict:
    rows = {}
    for g in labels:
        if (source, g) not in c:
            continue
        tp, n, pos = c[(source, g)]
        p, r, f = scores(tp[si, pi], n[si, pi], pos, beta)
        rows[g] = {
            "positives": int(pos),
            "notifications": int(n[si, pi]),
            "correct": int(tp[si, pi]),
            "precision": float(p) if n[si, pi] else None,
            "recall": float(r),
            "f": float(f),
        }
    valid = list(rows.values())
    macro = {
        "precision": float(np.mean([x["precision"] or 0.0 for x in valid])),
        "recall": float(np.mean([x["recall"] for x in valid])),
        "f": float(np.mean([x["f"] for x in valid])),
    }
    return {
        "min_similarity": float(SIM_GRID[si]),
        "genre_minimum": float(PROB_GRID[pi]),
        "per_genre": rows,
        "macro": macro,
    }


CRITERIA = {
    "like + genre": (range(len(SIM_GRID)), range(len(PROB_GRID))),
    "like only (genre minimum 0)": (range(len(SIM_GRID)), [0]),
    "genre only (min_similarity -1)": ([0], range(len(PROB_GRID))),
}


def best_index(c, source, labels, beta, criteria: str = "like + genre") -> tuple[int, int]:
    """The grid pair with the best macro F-beta on `source` (within `criteria`)."""
    m = macro_f(c, source, labels, beta)
    sims, probs = CRITERIA[criteria]
    # ties: the stricter pair (fewer notifications)
    flat = [(m[i, j], SIM_GRID[i], PROB_GRID[j], i, j) for i in sims for j in probs]
    best = max(flat, key=lambda x: (round(x[0], 12), x[1], x[2]))
    return best[3], best[4]


# -- end-to-end check through a real catalog -----------------------------------------------------


def check_catalog(emb, labels, evals, folds_out, source: str, si: int, pi: int) -> dict:
    """The watches of repeat 0, fold 0, draw 0 for `source`, made by watches.create at the
    chosen thresholds in a real SQLite catalog; that fold's clips of `source` ingested one by
    one by ingest.add; the matches table vs the prediction from the two probe scores."""
    os.environ["GENRE_WEBHOOK_ALLOW_HOSTS"] = "127.0.0.1"
    import sqlalchemy as sa

    from genre_detector.catalog import ingest, watches
    from genre_detector.catalog.db import Catalog
    from genre_detector.catalog.records import Consent, TrackRecord

    chk = folds_out[0].get("check", {}).get(source)
    picked = [
        e for e in evals if (e["repeat"], e["fold"], e["draw"], e["source"]) == (0, 0, 0, source)
    ]
    if chk is None or not picked:
        return {"checked": False}
    vectors, probs = chk["vectors"], chk["probs"]
    s_min, p_min = float(SIM_GRID[si]), float(PROB_GRID[pi])
    tracks = emb.tracks

    def record(i):
        pr = probs[i]
        order = np.argsort(-pr)
        return TrackRecord(
            sha256=f"{i:064x}",
            title=tracks[i].rel,
            artist=tracks[i].artist,
            duration_s=60.0,
            top_genre=labels[order[0]],
            top_probability=float(pr[order[0]]),
            probabilities={g: float(p) for g, p in zip(labels, pr)},
            top3=[{"genre": labels[j], "probability": float(pr[j])} for j in order[:3]],
            timeline=[],
            model_tags={"musicnn": "per-fold"},
            features=np.asarray(emb.x[i], np.float32),
            embedding=vectors[i],
            embedding_version="per-fold",
        )

    with tempfile.TemporaryDirectory() as tmp:
        db = Catalog.open(f"sqlite:///{tmp}/check.sqlite3", dim=vectors.shape[1])
        try:
            ids = {}
            for e in picked:
                for i in e["refs"]:
                    if i not in ids:
                        ids[i] = ingest.add(db, "references", record(i), Consent(True, False))[0][
                            "id"
                        ]
            made = []
            for e in picked:
                w, _ = watches.create(
                    db,
                    "scout",
                    {
                        "name": f"{e['genre']} like these",
                        "genres": {e["genre"]: p_min},
                        "like": [ids[i] for i in e["refs"]],
                        "min_similarity": s_min,
                        "exclude_artists": sorted({tracks[i].artist for i in e["refs"]}),
                        "webhook_url": "http://127.0.0.1:9/hook",
                    },
                    labels,
                )
                made.append((w["id"], e))
            arrivals = picked[0]["arrivals"]
            clip_of = {}
            for i in arrivals:  # one by one, as uploads arrive
                row, _ = ingest.add(db, "arrivals", record(i), Consent(True, True))
                clip_of[row["id"]] = int(i)
            with db.connect() as conn:
                got = {
                    (r.watch_id, clip_of[r.track_id])
                    for r in conn.execute(
                        sa.text(
                            "select w.id as watch_id, m.track_id from watch_matches m "
                            "join watches w on w.pk = m.watch_pk"
                        )
                    )
                }
        finally:
            db.close()
    predicted = set()
    for wid, e in made:
        hit = (e["sim"] >= s_min) & (e["prob"] >= p_min)
        predicted |= {(wid, int(i)) for i in e["arrivals"][hit]}
    decisions = len(made) * len(arrivals)
    disagree = len(predicted ^ got)
    return {
        "checked": True,
        "source": source,
        "watches": len(made),
        "arrivals": int(len(arrivals)),
        "decisions": decisions,
        "matches_in_catalog": len(got),
        "predicted": len(predicted),
        "disagreements": disagree,
    }


def subsample(tracks, n: int, seed: int = 0) -> list:
    """At most n tracks per (source, genre), drawn with a fixed seed, in their order."""
    rng = np.random.default_rng(seed)
    keep = set()
    by_key: dict = {}
    for i, t in enumerate(tracks):
        by_key.setdefault((t.source, t.genre), []).append(i)
    for idx in by_key.values():
        keep |= set(rng.permutation(idx)[:n].tolist())
    return [t for i, t in enumerate(tracks) if i in keep]


# -- report ------------------------------------------------------------------------------------


def _fmt(x):
    return "   -  " if x is None else f"{x:6.3f}"


def table(title: str, res: dict) -> str:
    lines = [
        f"{title}: min_similarity {res['min_similarity']:.2f}, genre minimum "
        f"{res['genre_minimum']:.2f}",
        f"  {'genre':12s} {'arrived':>7s} {'notified':>8s} {'correct':>7s} {'precision':>9s} "
        f"{'recall':>6s} {'F':>6s}",
    ]
    for g, r in res["per_genre"].items():
        lines.append(
            f"  {g:12s} {r['positives']:7d} {r['notifications']:8d} {r['correct']:7d} "
            f"   {_fmt(r['precision'])} {r['recall']:6.3f} {r['f']:6.3f}"
        )
    m = res["macro"]
    lines.append(
        f"  {'macro':12s} {'':7s} {'':8s} {'':7s}    {m['precision']:6.3f} {m['recall']:6.3f} "
        f"{m['f']:6.3f}"
    )
    return "\n".join(lines)


def main(argv=None) -> int:
    from train.evals.search_quality import shipped_calibration
    from train.options import load_tracks

    args = _parse(argv)
    t_start = time.time()
    tracks = load_tracks(args)
    if args.max_per_genre:
        tracks = subsample(tracks, args.max_per_genre)
    emb = track_embeddings(tracks, args.workers)
    labels = shipped_calibration().labels
    evals, folds_out = evaluate(
        emb, labels, args.repeats, args.folds, args.draws, args.probabilities
    )
    sources = sorted({str(e["source"]) for e in evals})
    c = counts(evals, sources, labels)
    report = {
        "command": "python -m train.evals.notify_quality " + " ".join(argv or sys.argv[1:]),
        "n_tracks": len(emb.tracks),
        "n_artists": len({t.group for t in emb.tracks}),
        "per_source_tracks": {s: sum(t.source == s for t in emb.tracks) for s in sources},
        "folds": args.folds,
        "repeats": args.repeats,
        "draws": args.draws,
        "references_per_watch": N_REFS,
        "probabilities": args.probabilities,
        "projection": f"{DEFAULT_METHOD}, {DEFAULT_DIM} dims, LDA weight {DEFAULT_LDA_WEIGHT}",
        "beta": args.beta,
        "watches_evaluated": len(evals),
        "grid": {"min_similarity": SIM_GRID.tolist(), "genre_minimum": PROB_GRID.tolist()},
        "transfer": {},
        "own_best": {},
        "defaults": {},
    }
    print(
        f"\nnotification quality: {report['n_tracks']} clips by {report['n_artists']} artists "
        f"({report['per_source_tracks']}); {args.folds} artist folds x {args.repeats} repeats, "
        f"{args.draws} draws of {N_REFS} references per genre; projection and genre "
        f"probabilities ({args.probabilities}) fitted without the arriving artists; 'arrived': "
        "clips of the watch's genre that arrived, summed over folds, draws and repeats\n"
    )
    chosen = _transfer(report, c, sources, labels, args.beta)
    _defaults(report, c, sources, labels, args.beta)
    report["criteria"] = _criteria(c, sources, labels, args.beta)
    if args.check and len(sources) > 1:
        tune, test = sources[0], sources[1]
        chk = check_catalog(emb, labels, evals, folds_out, test, *chosen[tune])
        report["catalog_check"] = chk
        if chk.get("checked"):
            print(
                f"catalog check ({test}, fold 1, thresholds chosen on {tune}): "
                f"{chk['watches']} watches x {chk['arrivals']} clips ingested = "
                f"{chk['decisions']} decisions; {chk['matches_in_catalog']} matches in the "
                f"catalog, {chk['predicted']} predicted, {chk['disagreements']} disagreements"
            )
    report["seconds"] = round(time.time() - t_start, 1)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"\nsaved {out}")
    if report.get("catalog_check", {}).get("disagreements"):
        print("error: the catalog's matches differ from the evaluated rule", file=sys.stderr)
        return 1
    return 0


def _parse(argv):
    from train.options import DEFAULT_GENRE_MAP

    p = argparse.ArgumentParser(
        prog="python -m train.evals.notify_quality", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3, help="fold shuffles (seeds 0..R-1)")
    p.add_argument("--draws", type=int, default=5, help="reference draws per genre and fold")
    p.add_argument("--beta", type=float, default=1.0, help="F-beta chooses the thresholds")
    p.add_argument(
        "--probabilities",
        choices=("fold", "shipped"),
        default="fold",
        help="fold: a musicnn head fitted per fold (honest); shipped: the shipped ensemble "
        "(optimistic: trained on most of these clips)",
    )
    p.add_argument("--no-check-catalog", dest="check", action="store_false")
    p.add_argument("--json", default=str(REPO / "runs" / "notify_quality.json"))
    p.add_argument("--data", action="append", default=None, help="a source (repeatable)")
    p.add_argument("--genre-map", default=DEFAULT_GENRE_MAP)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument(
        "--max-per-genre",
        type=int,
        default=0,
        help="keep at most N clips per source and genre (a quick look; 0: all)",
    )
    return p.parse_args(argv)


def _transfer(report: dict, c, sources, labels, beta) -> dict:
    """Each source's own best thresholds, and how they do on the other source (printed and
    put in the report); returns source -> the chosen (min_similarity, genre_minimum) indices."""
    chosen = {}
    for s in sources:
        si, pi = best_index(c, s, labels, beta)
        chosen[s] = (si, pi)
        report["own_best"][s] = at(c, s, labels, si, pi, beta)
    for tune in sources:
        for test in sources:
            if test == tune:
                continue
            si, pi = chosen[tune]
            res = at(c, test, labels, si, pi, beta)
            res["chosen_on"] = tune
            res["in_source_macro_f"] = report["own_best"][tune]["macro"]["f"]
            report["transfer"][f"{tune}->{test}"] = res
            print(
                table(
                    f"chosen on {tune} (macro F {res['in_source_macro_f']:.3f}), tested on {test}",
                    res,
                )
            )
            own = report["own_best"][test]
            print(
                f"  ({test}'s own best pair: {own['min_similarity']:.2f} / "
                f"{own['genre_minimum']:.2f}, macro P {own['macro']['precision']:.3f} "
                f"R {own['macro']['recall']:.3f} F {own['macro']['f']:.3f})\n"
            )
    return chosen


def _defaults(report: dict, c, sources, labels, beta) -> None:
    """The API's default thresholds on each source (printed and put in the report)."""
    d_si = int(np.argmin(np.abs(SIM_GRID - DEFAULT_POINT[0])))
    d_pi = int(np.argmin(np.abs(PROB_GRID - DEFAULT_POINT[1])))
    for s in sources:
        report["defaults"][s] = at(c, s, labels, d_si, d_pi, beta)
        print(table(f"API default min_similarity with genre >= 0.5, on {s}", report["defaults"][s]))
        print()


def _criteria(c, sources, labels, beta) -> dict:
    """What each criterion brings: the same choice restricted to one of them (printed)."""
    criteria = {}
    head = (
        f"{'criteria':32s} {'chosen on':>9s} {'min_sim':>7s} {'genre>=':>7s} {'tested on':>9s} "
        f"{'macro P':>7s} {'macro R':>7s} {'macro F':>7s}"
    )
    print("each criterion alone (thresholds chosen on one source, tested on the other)")
    print(head)
    print("-" * len(head))
    for crit in CRITERIA:
        for tune in sources:
            for test in sources:
                if test == tune:
                    continue
                si, pi = best_index(c, tune, labels, beta, crit)
                res = at(c, test, labels, si, pi, beta)
                criteria[f"{crit}: {tune}->{test}"] = res
                m = res["macro"]
                print(
                    f"{crit:32s} {tune:>9s} {SIM_GRID[si]:7.2f} {PROB_GRID[pi]:7.2f} "
                    f"{test:>9s} {m['precision']:7.3f} {m['recall']:7.3f} {m['f']:7.3f}"
                )
    print()
    return criteria


if __name__ == "__main__":
    sys.exit(main())
