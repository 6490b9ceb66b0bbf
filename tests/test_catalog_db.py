"""The catalog's database layer on both engines (SQLite + sqlite-vec, and a real PostgreSQL +
pgvector server): migrations, keys, tracks added once per audio, erasure, search with
filters, similar artists, and an unreachable database answered as db_unavailable."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import sqlalchemy as sa

from genre_detector.catalog import ingest, keys, search, tracks
from genre_detector.catalog.db import Catalog, CatalogUnavailable
from genre_detector.catalog.records import Consent, TrackRecord
from genre_detector.errors import GenreError

DIM = 16
GENRES = ["blues", "jazz", "pop-rock"]


def _unit(v):
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v)


def _record(i: int, genre: str, artist: str, vector) -> TrackRecord:
    return TrackRecord(
        sha256=f"{i:064x}",
        title=f"track {i}",
        artist=artist,
        duration_s=30.0,
        top_genre=genre,
        top_probability=0.7,
        probabilities={g: (0.7 if g == genre else 0.15) for g in GENRES},
        top3=[{"genre": genre, "probability": 0.7}],
        timeline=[{"start_s": 0.0, "end_s": 3.0, "top_genre": genre, "probability": 0.7}],
        model_tags={"musicnn": "genre-musicnn:x"},
        features=np.arange(4, dtype=np.float32),
        embedding=_unit(vector),
        embedding_version="v1",
    )


@pytest.fixture
def db(catalog_url):
    catalog = Catalog.open(catalog_url, dim=DIM)
    yield catalog
    catalog.close()


@pytest.fixture
def filled(db):
    """40 tracks in 3 genre clusters by 8 artists, owned by two accounts."""
    rng = np.random.default_rng(0)
    centers = {g: rng.normal(size=DIM) for g in GENRES}
    made = []
    for i in range(40):
        g = GENRES[i % 3]
        owner = "label-a" if i % 2 else "label-b"
        rec = _record(i, g, f"Artist {i % 8}", centers[g] + 0.3 * rng.normal(size=DIM))
        row, created = ingest.add(db, owner, rec, Consent(True, True))
        assert created
        made.append((row, rec, owner))
    return made


def test_migration_records_the_dimension_and_reopens(db, catalog_url):
    assert db.dim == DIM
    again = Catalog.open(catalog_url, dim=999)  # an existing catalog keeps its own size
    assert again.dim == DIM
    again.close()


def test_keys_are_hashed_shown_once_and_revocable(db):
    key = keys.create(db, "label-a")
    assert key.secret.startswith("gd_") and len(key.secret) > 40
    with db.connect() as conn:
        stored = conn.execute(sa.text("select key_hash, prefix from api_keys")).one()
    assert key.secret not in stored.key_hash and stored.key_hash != key.secret
    assert keys.authenticate(db, f"Bearer {key.secret}") == "label-a"
    for bad in (None, "", "Bearer nope", f"Bearer {key.secret}x"):
        with pytest.raises(keys.Unauthorized):
            keys.authenticate(db, bad)
    assert keys.revoke(db, key.id)
    with pytest.raises(keys.Unauthorized):
        keys.authenticate(db, f"Bearer {key.secret}")


def test_same_audio_is_one_track_and_rows_hold_every_field(db, filled):
    row, rec, owner = filled[3]
    again, created = ingest.add(db, owner, rec, Consent(True, False))
    assert not created and again["id"] == row["id"]
    got = tracks.get(db, owner, row["id"])
    assert got["sha256"] == rec.sha256 and got["artist"] == rec.artist
    assert got["probabilities"] == rec.probabilities and got["top3"] == rec.top3
    assert got["timeline"] == rec.timeline and got["consent"] == ["search", "notify"]
    assert got["embedding_version"] == "v1" and "features" not in got and "pk" not in got
    # another account: not found, not forbidden
    other = "label-b" if owner == "label-a" else "label-a"
    assert tracks.get(db, other, row["id"]) is None
    assert ingest.erase(db, other, row["id"]) is False


def test_consent_is_required_and_checked():
    assert Consent.parse("search, notify") == Consent(True, True)
    with pytest.raises(GenreError) as e:
        Consent.parse("notify")
    assert e.value.code == "consent_required"
    with pytest.raises(GenreError) as e:
        Consent.parse("search,sell")
    assert e.value.code == "bad_parameter" and "sell" in e.value.detail


def test_search_is_exact_and_filtered(db, filled):
    row, rec, _ = filled[0]
    results = search.similar_tracks(db, rec.embedding, k=10, exclude_id=row["id"])
    assert len(results) == 10 and row["id"] not in {r["id"] for r in results}
    # against a brute-force ranking of every other track
    others = [(r, x) for r, x, _ in filled if r["id"] != row["id"]]
    exact = sorted(others, key=lambda t: -float(t[1].embedding @ rec.embedding))[:10]
    assert [r["id"] for r in results] == [r["id"] for r, _ in exact]
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    assert abs(scores[0] - float(exact[0][1].embedding @ rec.embedding)) < 1e-4
    assert set(results[0]) == {
        *("id", "title", "artist", "artist_id", "score", "genre", "top3", "descriptors")
    }
    stored = {r["id"]: r["artist_id"] for r, _, _ in filled}
    assert all(r["artist_id"] == stored[r["id"]] and r["artist_id"] for r in results)
    # filters applied inside the search still give k rows
    jazz = search.similar_tracks(db, rec.embedding, k=10, genre="jazz")
    assert len(jazz) == 10 and {r["genre"] for r in jazz} == {"jazz"}
    mine = search.similar_tracks(db, rec.embedding, k=10, exclude_artist="ARTIST 0")
    assert len(mine) == 10 and all(r["artist"] != "Artist 0" for r in mine)
    strict = search.similar_tracks(db, rec.embedding, k=10, min_score=0.9)
    assert all(r["score"] >= 0.9 for r in strict)
    with pytest.raises(GenreError):
        search.similar_tracks(db, rec.embedding, k=0)


def test_erasure_removes_the_vector(db, filled):
    row, rec, owner = filled[5]
    assert search.similar_tracks(db, rec.embedding, k=1)[0]["id"] == row["id"]
    assert ingest.erase(db, owner, row["id"])
    assert tracks.get(db, owner, row["id"]) is None
    assert row["id"] not in {r["id"] for r in search.similar_tracks(db, rec.embedding, k=50)}
    with db.connect() as conn:
        n = conn.execute(sa.text("select count(*) from track_vectors")).scalar_one()
    assert n == len(filled) - 1


def test_listing_pages_with_a_cursor(db, filled):
    owner = "label-a"
    seen, cursor = [], None
    while True:
        page, cursor = tracks.listing(db, owner, limit=7, cursor=cursor)
        seen += [r["id"] for r in page]
        if cursor is None:
            break
    assert sorted(seen) == sorted(r["id"] for r, _, o in filled if o == owner)
    jazz, _ = tracks.listing(db, owner, genre="jazz", limit=100)
    assert jazz and all(r["top_genre"] == "jazz" for r in jazz)
    with pytest.raises(GenreError):
        tracks.listing(db, owner, cursor="bogus!")


def test_similar_artists(db, filled):
    me, results = search.similar_artists(db, "label-a", "artist 1", k=5)
    assert me["artist"] == "Artist 1" and me["n_tracks"] == 5
    assert len(results) == 5 and "Artist 1" not in {r["artist"] for r in results}
    # artists 1 and 4 and 7 share genre clusters with artist 1 (i % 3 over i % 8)
    assert results == sorted(results, key=lambda r: -r["score"])
    with pytest.raises(GenreError) as e:
        search.similar_artists(db, "label-a", "nobody")
    assert e.value.code == "not_found"


def test_concurrent_adds_of_one_audio_make_one_row(db):
    rec = _record(999, "jazz", "Solo", np.ones(DIM))
    results = []

    def add():
        results.append(ingest.add(db, "label-a", rec, Consent(True, False)))

    threads = [threading.Thread(target=add) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(created for _, created in results) == 1
    assert len({row["id"] for row, _ in results}) == 1


def test_an_unreachable_database_is_db_unavailable(tmp_path):
    with pytest.raises(CatalogUnavailable) as e:
        Catalog.open("postgresql://nobody@127.0.0.1:1/none?connect_timeout=2")
    assert e.value.code == "db_unavailable" and e.value.status == 503


def test_a_crash_inside_the_insert_leaves_no_half_track(db, monkeypatch):
    """Everything of a track is one transaction: a failure after the row, its vector and its
    artist were written (here: queueing the watches' deliveries, the last step) leaves
    none of them."""
    from genre_detector.catalog import watches

    rec = _record(7, "jazz", "Crash", np.ones(DIM))

    def boom(conn, matched, row):
        raise RuntimeError("the process died here")

    monkeypatch.setattr(watches, "queue_deliveries", boom)
    with pytest.raises(RuntimeError):
        ingest.add(db, "label-a", rec, Consent(True, True))
    monkeypatch.undo()
    with db.connect() as conn:
        counts = [
            conn.execute(sa.text(f"select count(*) from {t}")).scalar_one()
            for t in ("tracks", "track_vectors", "artists", "account_artists", "artist_vectors")
        ]
    assert counts == [0, 0, 0, 0, 0]
    row, created = ingest.add(db, "label-a", rec, Consent(True, True))
    assert created and tracks.get(db, "label-a", row["id"]) is not None


BLOCK = {
    "tempo": {"bpm": 92.3, "confidence": 0.71, "alternative_bpm": 184.6},
    "key": {"tonic": "A", "mode": "minor", "camelot": "8A", "confidence": 0.55},
}


def test_descriptors_null_until_the_audio_is_scored_again(db):
    """Tracks stored before tempo and key (migration 0003) hold SQL NULL; the tagger tagging
    the same file again fills them; a stored block is never overwritten."""
    from dataclasses import replace

    rec = _record(900, "jazz", "Nobody", np.eye(DIM)[2])
    assert rec.descriptors is None
    row, created = ingest.add(db, "label-a", rec, Consent(True, False))
    assert created and row["descriptors"] is None
    with db.connect() as conn:
        q = "select count(*) from tracks where descriptors is null"
        assert conn.execute(sa.text(q)).scalar_one() == 1
    again, created = ingest.add(
        db, "label-a", replace(rec, descriptors=BLOCK), Consent(True, False)
    )
    assert not created and again["id"] == row["id"] and again["descriptors"] == BLOCK
    assert tracks.get(db, "label-a", row["id"])["descriptors"] == BLOCK
    other = {**BLOCK, "key": {**BLOCK["key"], "tonic": "C", "camelot": "5A"}}
    kept, _ = ingest.add(db, "label-a", replace(rec, descriptors=other), Consent(True, False))
    assert kept["descriptors"] == BLOCK
    (hit,) = search.similar_tracks(db, rec.embedding, k=1)
    assert hit["id"] == row["id"] and hit["descriptors"] == BLOCK
    # the tagger's batches (add_many) fill a null block of audio already stored, too
    old = _record(901, "rock", "Nobody", np.eye(DIM)[3])
    assert ingest.add_many(db, "label-a", [old], Consent(True, False)) == 1
    batch = [replace(old, descriptors=BLOCK), _record(902, "rock", "B", np.eye(DIM)[4])]
    assert ingest.add_many(db, "label-a", batch, Consent(True, False)) == 1  # only 902 is new
    assert tracks.by_sha256(db, "label-a", old.sha256)["descriptors"] == BLOCK
