"""Search and watch by a brief (issue 33) on both engines (SQLite + sqlite-vec, and a real
PostgreSQL + pgvector server): migration 0005 fills the filter columns of a catalog filled
before it; search by filters returns exactly the tracks a brute-force reading of their stored
descriptors selects, ranked by fit, paged without loss; similar tracks with filters are the
exact nearest among those tracks; watch conditions match at ingest (and never on a track
without mood). Tracks with mood and voice are stored through catalog.ingest from records with
the stored `descriptors` contract (tests/catalog_helpers.py) until the mood heads land."""

from __future__ import annotations

import datetime as dt
import uuid

import numpy as np
import pytest
import sqlalchemy as sa

from genre_detector.catalog import briefs, ingest, search, tracks, watches
from genre_detector.catalog import filters as F
from genre_detector.catalog.db import Catalog
from genre_detector.catalog.records import DESCRIPTOR_COLUMNS, Consent, descriptor_columns
from genre_detector.catalog.schema import track_filters, watch_matches
from genre_detector.catalog.schema import tracks as tracks_table
from tests.catalog_helpers import descriptors, record

DIM = 16
LABELS = ["blues", "jazz", "pop-rock"]
NOTIFY = Consent(True, True)
KEYS = [("A", "minor"), ("C", "major"), ("E", "minor"), ("G", "major"), ("D", "minor")]


def _desc(i: int) -> dict:
    """Track i's descriptors: every fourth without mood and voice (stored before them)."""
    q = ["Q1", "Q2", "Q3", "Q4"][i % 4]
    with_mood = i % 4 != 3 or i % 8 == 3
    return descriptors(
        bpm=60 + (i * 7) % 120,
        key=KEYS[i % 5],
        quadrant=q if with_mood else None,
        gems={"tenderness": (i % 10) / 10},
        voice=({"instrumental": 0.9} if i % 2 else {"female": 0.8}) if with_mood else None,
        instruments=({"piano": 0.7} if i % 3 == 0 else {"guitar": 0.6}) if with_mood else None,
    )


@pytest.fixture
def filled(catalog_url):
    db = Catalog.open(catalog_url, dim=DIM)
    rng = np.random.default_rng(1)
    stored = []
    for i in range(80):
        rec = record(i, LABELS[i % 3], rng.normal(size=DIM), _desc(i), labels=LABELS)
        row, created = ingest.add(db, "label-a" if i % 2 else "label-b", rec, NOTIFY)
        assert created
        stored.append((row, rec))
    yield db, stored
    db.close()


def _brute(stored, f: F.Filters) -> set[str]:
    """The ids whose stored descriptors meet the filters, read in Python."""
    out = set()
    for row, rec in stored:
        c = descriptor_columns(rec.descriptors)
        if f.genres and rec.top_genre not in f.genres:
            continue
        if f.quadrants and c["quadrant"] not in dict(f.quadrants):
            continue
        if any(c[f"gems_{g}"] is None or c[f"gems_{g}"] < lo for g, lo in f.gems):
            continue
        if f.bpm and not any(
            c["bpm"] is not None and a <= c["bpm"] <= b for a, b, _ in f.bpm_windows()
        ):
            continue
        if f.key and c["camelot"] not in f.camelot_codes:
            continue
        ok = True
        for v in f.voice:
            s = c["voice_instrumental" if v == "vocal" else f"voice_{v}"]
            ok &= s is not None and (s < 0.5 if v == "vocal" else s >= 0.5)
        for name in f.instruments:
            ok &= f",{name}," in (c["instruments"] or "")
        if ok:
            out.add(row["id"])
    return out


CASES = [
    {"mood": "Q4"},
    {"mood": "tenderness>=0.5"},
    {"bpm": "85-95"},
    {"bpm": "60-70", "bpm_octave": "true"},
    {"key": "8A"},
    {"key": "A minor", "compatible": "true"},
    {"voice": "instrumental"},
    {"voice": "vocal"},
    {"genre": "jazz", "mood": "Q1", "voice": "female"},
    {"q": "calm instrumental jazz"},
    {"q": "sad piano"},
    {"q": "gloomy 100-180 bpm guitar"},
]


@pytest.mark.parametrize("params", CASES, ids=lambda p: "&".join(f"{k}={v}" for k, v in p.items()))
def test_search_returns_exactly_the_tracks_meeting_every_filter(filled, params):
    db, stored = filled
    f = F.from_params(params, LABELS)
    if "q" in params:
        f = f.merge(briefs.parse(params["q"], LABELS).filters)
    expected = _brute(stored, f)
    seen, fits, cursor = [], [], None
    while True:  # paged 7 at a time, as a client walks the cursor
        page, cursor, why = search.by_filters(db, "scout", f, 7, cursor)
        seen += [r["id"] for r in page]
        fits += [r["fit"] for r in page]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) and set(seen) == expected
    assert fits == sorted(fits, reverse=True) and all(0 <= x <= 1 for x in fits)
    assert expected, params  # each case has tracks to find


def test_ranking_is_by_fit_and_an_empty_answer_says_why(filled):
    db, stored = filled
    f = F.from_params({"bpm": "80-100"}, LABELS)
    page, _, _ = search.by_filters(db, "scout", f, 100)
    bpms = [r["descriptors"]["tempo"]["bpm"] for r in page]
    assert sorted(bpms, key=lambda b: abs(b - 90)) == bpms  # closest to the centre first
    assert page[0]["fit"] == round(1 - abs(bpms[0] - 90) / 10, 4)
    f = F.from_params({"bpm": "300-310", "mood": "Q4"}, LABELS)
    page, cursor, why = search.by_filters(db, "scout", f, 10)
    assert page == [] and cursor is None
    assert why["tracks_meeting_each_filter_alone"]["bpm"] == 0
    assert why["tracks_meeting_each_filter_alone"]["mood"] > 0
    assert "bpm" in why["message"] and why["searchable_tracks"] == len(stored)
    assert why["tracks_without_mood"] == sum(
        1 for _, rec in stored if rec.descriptors["mood"] is None
    )
    # the closest: tracks meeting the most filters (here mood alone), best fit first, each
    # naming what it misses; an empty search with one filter has nothing to relax
    mood_only = _brute(stored, F.from_params({"mood": "Q4"}, LABELS))
    closest = why["closest"]
    assert len(closest) == min(10, len(mood_only)) > 0
    assert {c["id"] for c in closest} <= mood_only
    assert all(c["unmet"] == ["bpm"] and c["artist_id"] for c in closest)
    assert [c["fit"] for c in closest] == sorted((c["fit"] for c in closest), reverse=True)
    _, _, alone = search.by_filters(db, "scout", F.from_params({"bpm": "300-310"}, LABELS), 10)
    assert "closest" not in alone


def test_a_cursor_is_bound_to_its_filters_and_account(filled):
    db, _ = filled
    f = F.from_params({"mood": "Q4"}, LABELS)
    _, cursor, _ = search.by_filters(db, "scout", f, 2)
    assert cursor
    with pytest.raises(Exception) as e:
        search.by_filters(db, "scout", F.from_params({"mood": "Q3"}, LABELS), 2, cursor)
    assert getattr(e.value, "code", None) == "bad_parameter"
    with pytest.raises(Exception) as e:
        search.by_filters(db, "other", f, 2, cursor)
    assert getattr(e.value, "code", None) == "bad_parameter"


def test_similar_with_filters_is_the_exact_nearest_among_those_tracks(filled):
    db, stored = filled
    rng = np.random.default_rng(5)
    for params in ({"mood": "Q1"}, {"voice": "instrumental", "bpm": "60-120"}, {"key": "9A"}):
        f = F.from_params(params, LABELS)
        query = rng.normal(size=DIM).astype(np.float32)
        query /= np.linalg.norm(query)
        got = search.similar_tracks(db, query, k=5, filters=f)
        allowed = _brute(stored, f)
        truth = sorted(
            (
                (float(rec.embedding @ query), row["id"])
                for row, rec in stored
                if row["id"] in allowed
            ),
            reverse=True,
        )[:5]
        assert [r["id"] for r in got] == [i for _, i in truth], params
        for r, (s, _) in zip(got, truth):
            assert abs(r["score"] - s) < 1e-4


def test_the_owner_list_takes_the_same_filters(filled):
    db, stored = filled
    f = F.from_params({"mood": "Q3", "voice": "female"}, LABELS)
    rows, _ = tracks.listing(db, "label-b", where=search.conditions(f), listing="t:x")
    mine = {r["id"] for r, _ in stored if r["owner"] == "label-b"}
    assert {r["id"] for r in rows} == _brute(stored, f) & mine and rows
    assert "bpm" not in rows[0] and rows[0]["descriptors"]["mood"]["quadrant"] == "Q3"


def test_reindex_refills_the_columns_from_the_descriptors(filled):
    db, stored = filled
    with db.begin() as conn:
        conn.execute(track_filters.update().values(bpm=None, quadrant=None, camelot=None))
        conn.execute(track_filters.delete().where(track_filters.c.track_pk <= 3))
    assert tracks.refill_descriptor_columns(db) == len(stored)
    assert tracks.refill_descriptor_columns(db) == 0
    page, _, _ = search.by_filters(db, "x", F.from_params({"bpm": "85-95"}, LABELS), 100)
    assert {r["id"] for r in page} == _brute(stored, F.from_params({"bpm": "85-95"}, LABELS))


def test_migration_0005_fills_the_columns_of_a_catalog_filled_before_it(catalog_url):
    from alembic import command
    from alembic.config import Config

    from genre_detector.catalog.db import MIGRATIONS, _sqlite_engine, engine_url

    url = engine_url(catalog_url)
    engine = _sqlite_engine(url) if url.startswith("sqlite") else sa.create_engine(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"], cfg.attributes["embedding_dim"] = conn, DIM
        command.upgrade(cfg, "0004")
    old = tracks_table  # its columns are those of 0004: 0005 adds a table
    made = {}
    now = dt.datetime.now(dt.UTC)
    with engine.begin() as conn:
        for i in range(12):
            d = None if i == 11 else _desc(i)  # one track from before tempo and key
            rec = record(i, LABELS[i % 3], np.ones(DIM), d, labels=LABELS)
            tid = uuid.uuid4().hex
            conn.execute(
                old.insert().values(
                    id=tid, owner="label-a", sha256=rec.sha256, title=rec.title,
                    artist=rec.artist, artist_key=rec.artist_key, consent_search=True,
                    consent_notify=True, consented_at=now, duration_s=30.0,
                    top_genre=rec.top_genre, top_probability=0.7,
                    probabilities=rec.probabilities, top3=rec.top3, timeline=rec.timeline,
                    model_tags=rec.model_tags, descriptors=d, features=b"\0" * 16,
                    embedding_version="v1", created_at=now,
                )
            )  # fmt: skip
            made[tid] = d
    engine.dispose()
    db = Catalog.open(catalog_url, dim=DIM)  # migrates to head
    with db.connect() as conn:
        rows = conn.execute(
            sa.select(
                tracks_table.c.id, tracks_table.c.top_genre.label("genre"), track_filters
            ).select_from(tracks_table.outerjoin(track_filters))
        ).fetchall()
        indexes = {ix["name"] for ix in sa.inspect(conn).get_indexes("track_filters")}
    assert len(rows) == 12
    for r in rows:
        want = descriptor_columns(made[r.id])
        assert {c: getattr(r, c) for c in DESCRIPTOR_COLUMNS} == pytest.approx(want), r.id
        assert r.top_genre == r.genre and r.top_probability == 0.7
    filled = [r for r in rows if r.quadrant is not None]
    assert filled and all(r.bpm is not None for r in filled)
    assert {
        "ix_track_filters_bpm",
        "ix_track_filters_mood_q4",
        "ix_track_filters_top_genre",
    } <= indexes
    page, _, _ = search.by_filters(db, "x", F.from_params({"mood": "Q1"}, LABELS), 50)
    assert {p["id"] for p in page} == {
        t for t, d in made.items() if d and d["mood"] and d["mood"]["quadrant"] == "Q1"
    }
    db.close()


def test_watch_conditions_match_at_ingest_and_never_without_mood(catalog_url, monkeypatch):
    monkeypatch.setenv("GENRE_WEBHOOK_ALLOW_HOSTS", "127.0.0.1")
    db = Catalog.open(catalog_url, dim=DIM)
    hook = "http://127.0.0.1:9/hook"
    calm, _ = watches.create(
        db,
        "scout",
        {
            "name": "calm",
            "mood": "Q4",
            "bpm": "80-100",
            "voice": "instrumental",
            "webhook_url": hook,
        },
        LABELS,
    )
    assert calm["conditions"]["mood"] == {"Q4": 1.0} and calm["conditions"]["bpm"] == [80.0, 100.0]
    keyed, _ = watches.create(
        db,
        "scout",
        {
            "name": "8A",
            "key": "8A",
            "compatible": True,
            "genres": {"jazz": 0.5},
            "webhook_url": hook,
        },
        LABELS,
    )
    tender, _ = watches.create(
        db, "scout", {"name": "t", "mood": "tenderness>=0.4", "webhook_url": hook}, LABELS
    )
    for bad in (
        {"mood": "Q9"},
        {"bpm": "100-90"},
        {"voice": ["instrumental", "male"]},
        {"bpm": True},
    ):
        with pytest.raises(Exception) as e:
            watches.create(db, "scout", {"name": "x", "webhook_url": hook, **bad}, LABELS)
        assert getattr(e.value, "code", None) == "bad_parameter", bad
    cases = [  # (descriptors, genre, expected watches)
        (descriptors(bpm=90, quadrant="Q4", voice={"instrumental": 0.9}), "blues", {"calm"}),
        (descriptors(bpm=90, quadrant="Q4", voice={"female": 0.9}), "blues", set()),
        (descriptors(bpm=120, quadrant="Q4", voice={"instrumental": 0.9}), "blues", set()),
        (descriptors(bpm=90, quadrant=None), "blues", set()),  # no mood: no mood condition met
        (descriptors(bpm=90, key=("E", "minor")), "jazz", {"8A"}),  # 9A: a neighbour of 8A
        (descriptors(bpm=90, key=("B", "major")), "jazz", set()),  # 1B
        (descriptors(quadrant="Q3", gems={"tenderness": 0.5}), "blues", {"t"}),
        (descriptors(quadrant="Q3", gems={"tenderness": 0.3}), "blues", set()),
    ]
    names = {calm["id"]: "calm", keyed["id"]: "8A", tender["id"]: "t"}
    rng = np.random.default_rng(3)
    for i, (d, genre, expected) in enumerate(cases):
        row, _ = ingest.add(
            db, "label-a", record(100 + i, genre, rng.normal(size=DIM), d, labels=LABELS), NOTIFY
        )
        with db.connect() as conn:
            got = conn.execute(
                sa.select(watch_matches.c.watch_pk, watch_matches.c.score).where(
                    watch_matches.c.track_id == row["id"]
                )
            ).fetchall()
        ids = {w["id"] for w in watches.listing(db, "scout")}
        hit = {
            names[wid]
            for wid in ids
            if any(m["track_id"] == row["id"] for m in watches.matches(db, "scout", wid))
        }
        assert hit == expected, (i, hit)
        assert all(0 <= s <= 1 for _, s in got)
    m = watches.matches(db, "scout", calm["id"])[0]
    assert m["score"] == pytest.approx((0.7 + 1.0 + 0.9) / 3)  # fit: Q4 prob, tempo, voice
    db.close()
