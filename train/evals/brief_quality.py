"""How well search by a brief finds what it is asked for, on the shared clips stored in a
catalog (`make demo`, or `python -m genre_detector tag DIR --catalog URL --owner demo
--consent search,notify`): issue 33's "quality you can read".

    python -m train.evals.brief_quality                       # the catalog GENRE_DB_URL names
    python -m train.evals.brief_quality --db sqlite:///catalog.sqlite3 --out report.json

* **Mood words and quadrants**: for each AllMusic mood word of moods/4q.csv (given to at least
  --min-clips clips stored in the catalog) and each quadrant, `q=WORD` (`mood=Qn`) through
  catalog.search.by_filters (GET /tracks/search's function); precision@20 against the clips'
  own labels, over the results that are 4q clips: the share whose quadrant is one the word
  asks for, and the share carrying the word itself.
* **Tempo ranges**: for BPM ranges, the share of results whose annotated tempo
  (gtzan-samples/annotations.csv) falls in the range, with and without bpm_octave, over
  every result (not only the first 20: the annotated clips are few among the catalog's).

Tracks are matched to clips by the sha256 of the file (what the catalog stores). Tracks
stored without mood (before the mood heads, issue 32) meet no mood filter: the report says
how many stored clips have a mood, and a word's precision is null when nothing was found.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
from pathlib import Path

import sqlalchemy as sa

from genre_detector.catalog import briefs, search
from genre_detector.catalog import filters as F
from genre_detector.catalog.db import Catalog
from genre_detector.catalog.schema import track_filters, tracks
from genre_detector.config import settings

K = 20
RANGES = [(60, 90), (90, 120), (120, 150), (150, 180)]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def clip_labels(data: Path) -> tuple[dict, dict]:
    """(sha256 -> {quadrant, words} of the 4q clips, sha256 -> annotated bpm of GTZAN's)."""
    moods, tempo = {}, {}
    with open(data / "moods" / "4q.csv", newline="") as f:
        for row in csv.DictReader(f):
            path = data / row["path"]
            if path.exists():
                words = {" ".join(w.lower().split()) for w in row["moods"].split(";")}
                moods[_sha(path)] = {"quadrant": row["quadrant"], "words": words - {""}}
    annotations = data / "gtzan-samples" / "annotations.csv"
    if annotations.exists():
        with open(annotations, newline="") as f:
            for row in csv.DictReader(f):
                tempo[_sha(data / "gtzan-samples" / row["file"])] = float(row["bpm"])
    return moods, tempo


def _search(db, f, sha_of) -> list[str]:
    page, _, _ = search.by_filters(db, "brief-quality", f, K)
    return [sha_of[r["id"]] for r in page]


def _search_all(db, f, sha_of) -> list[str]:
    """Every result, page by page (the annotated clips are few among the catalog's)."""
    out, cursor = [], None
    while True:
        page, cursor, _ = search.by_filters(db, "brief-quality", f, search.MAX_LIMIT, cursor)
        out += [sha_of[r["id"]] for r in page]
        if cursor is None:
            return out


def report(db, data: Path, labels: list[str], min_clips: int) -> dict:
    moods, tempo = clip_labels(data)
    with db.connect() as conn:
        stored = conn.execute(
            sa.select(tracks.c.id, tracks.c.sha256, track_filters.c.quadrant).join(
                track_filters, track_filters.c.track_pk == tracks.c.pk
            )
        ).fetchall()
    sha_of = {r.id: r.sha256 for r in stored}
    present = {r.sha256 for r in stored}
    with_mood = sum(1 for r in stored if r.sha256 in moods and r.quadrant is not None)
    out = {
        "catalog_tracks": len(stored),
        "4q_clips_stored": len(present & set(moods)),
        "4q_clips_with_mood": with_mood,
        "gtzan_annotated_stored": len(present & set(tempo)),
        "k": K,
        "words": {},
        "quadrants": {},
        "bpm_ranges": {},
    }
    counts: dict[str, int] = {}
    for sha in present & set(moods):
        for w in moods[sha]["words"]:
            counts[w] = counts.get(w, 0) + 1
    for word, n in sorted(counts.items()):
        if n < min_clips or word not in briefs._vocabulary().MOOD_WORDS:
            continue
        reading = briefs.parse(word, labels)
        asked = {q for q, _ in reading.filters.quadrants}
        got = [s for s in _search(db, reading.filters, sha_of) if s in moods]
        out["words"][word] = {
            "clips": n,
            "quadrants": sorted(asked),
            "results_labelled": len(got),
            "precision_quadrant": _share([moods[s]["quadrant"] in asked for s in got]),
            "precision_word": _share([word in moods[s]["words"] for s in got]),
        }
    for q in ("Q1", "Q2", "Q3", "Q4"):
        got = [s for s in _search(db, F.from_params({"mood": q}, labels), sha_of) if s in moods]
        out["quadrants"][q] = {
            "results_labelled": len(got),
            "precision": _share([moods[s]["quadrant"] == q for s in got]),
        }
    for lo, hi in RANGES:
        for octave in (False, True):
            f = F.from_params({"bpm": f"{lo}-{hi}", "bpm_octave": octave}, labels)
            got = [s for s in _search_all(db, f, sha_of) if s in tempo]
            out["bpm_ranges"][f"{lo}-{hi}" + (" octave" if octave else "")] = {
                "results_annotated": len(got),
                "share_in_range": _share([lo <= tempo[s] <= hi for s in got]),
            }
    return out


def _share(hits: list[bool]) -> float | None:
    return round(sum(hits) / len(hits), 3) if hits else None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--db", help="the catalog's URL (default: GENRE_DB_URL)")
    p.add_argument("--data", type=Path, default=None, help="the shared data folder")
    p.add_argument("--min-clips", type=int, default=5)
    p.add_argument("--labels", default="", help="genre labels (default: the catalog's)")
    p.add_argument("--out", type=Path)
    a = p.parse_args(argv)
    db = Catalog.open(a.db or settings().database_url())
    with db.connect() as conn:
        found = sorted(set(conn.execute(sa.select(tracks.c.top_genre).distinct()).scalars()))
    labels = [x for x in a.labels.split(",") if x] or found
    r = report(db, Path(a.data or settings().data), labels, a.min_clips)
    print(
        f"{r['catalog_tracks']} tracks; {r['4q_clips_stored']} 4q clips stored "
        f"({r['4q_clips_with_mood']} with a mood); {r['gtzan_annotated_stored']} annotated "
        f"GTZAN clips; precision@{K} over the labelled results"
    )
    for q, v in r["quadrants"].items():
        print(f"  mood={q:3s} precision {v['precision']} of {v['results_labelled']}")
    for w, v in r["words"].items():
        print(
            f"  q={w:16s} -> {','.join(v['quadrants']):6s} quadrant precision "
            f"{v['precision_quadrant']}, word precision {v['precision_word']} "
            f"of {v['results_labelled']} ({v['clips']} clips stored)"
        )
    for rng, v in r["bpm_ranges"].items():
        print(f"  bpm={rng:14s} share in range {v['share_in_range']} of {v['results_annotated']}")
    if a.out:
        a.out.write_text(json.dumps(r, indent=1) + "\n")
    db.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
