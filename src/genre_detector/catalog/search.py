"""Search by sound: tracks and artists whose embeddings are nearest (cosine).

    search.similar_tracks(db, vector, k=10, genre=None, exclude_artist="", min_score=None,
                          exclude_id=None)
    search.similar_artists(db, owner, "Artist name", k=10)    # or artist_id="..."

Results carry only what any caller may see of a consented track: id, title, artist, its
artist's id (`artist_id`, the uploading account's artist: GET /artists/similar?artist_id=),
score, genre, top-3 and descriptors, never its owner or other stored fields.
"""

from __future__ import annotations

import numpy as np
import sqlalchemy as sa

from genre_detector.catalog import vectors
from genre_detector.catalog.records import artist_key
from genre_detector.catalog.schema import account_artists, artists, tracks
from genre_detector.errors import GenreError

MAX_K = 100


def check_k(k: int) -> int:
    if not 1 <= k <= MAX_K:
        raise GenreError("bad_parameter", f"k: 1 to {MAX_K}, not {k}")
    return k


def similar_tracks(
    db,
    vector,
    k: int = 10,
    genre: str | None = None,
    exclude_artist: str | None = None,
    min_score: float | None = None,
    exclude_id: str | None = None,
    exclude_sha256: str | None = None,
) -> list[dict]:
    """The k most similar searchable tracks, best first: [{id, title, artist, artist_id,
    score, genre, top3, descriptors}], score = cosine similarity in [-1, 1]; never
    `exclude_id` nor a track of the audio `exclude_sha256` (the query itself), nor (given)
    any track of `exclude_artist` (compared case-insensitively)."""
    check_k(k)
    key = artist_key(exclude_artist) if exclude_artist else None
    # room for the query itself: one row, or the same audio held by up to 5 accounts
    extra = 5 if exclude_sha256 is not None else 1
    with db.connect() as conn:  # one transaction (PostgreSQL's scan settings are per one)
        excluded = None
        if key:  # the artist's integer id (no tracks in the catalog: nothing to exclude)
            excluded = conn.execute(
                sa.select(artists.c.pk).where(artists.c.artist_key == key)
            ).scalar()
        hits = vectors.nearest_tracks(db, conn, vector, k + extra, genre, excluded)
        if not hits:
            return []
        rows = conn.execute(
            sa.select(
                tracks.c.pk,
                tracks.c.id,
                tracks.c.title,
                tracks.c.artist,
                tracks.c.artist_id,
                tracks.c.top_genre,
                tracks.c.top3,
                tracks.c.descriptors,
                tracks.c.sha256,
            ).where(tracks.c.pk.in_([pk for pk, _ in hits]))
        ).fetchall()
    by_pk = {r.pk: r for r in rows}
    out = []
    for pk, distance in hits:
        r = by_pk.get(pk)
        if r is None or r.id == exclude_id or r.sha256 == exclude_sha256:
            continue
        score = round(1.0 - distance, 6)
        if min_score is not None and score < min_score:
            break  # best first: the rest score lower
        out.append(
            {
                "id": r.id,
                "title": r.title,
                "artist": r.artist,
                "artist_id": r.artist_id,
                "score": score,
                "genre": r.top_genre,
                "top3": r.top3,
                "descriptors": r.descriptors,
            }
        )
    return out[:k]


def similar_to_track(
    db,
    track_id: str,
    k: int = 10,
    genre: str | None = None,
    exclude_same_artist: bool = True,
    min_score: float | None = None,
) -> tuple[dict, list[dict]]:
    """(the query track's public fields, the tracks most like it). GenreError not_found for
    an id that is not a searchable track."""
    from genre_detector.catalog.tracks import pk_of

    found = pk_of(db, track_id)
    if found is None:
        raise GenreError("not_found", f"no track {track_id!r} in the catalog")
    pk, track = found
    with db.connect() as conn:
        vector = vectors.track_vector(db, conn, pk)
    if vector is None:
        raise GenreError("not_found", f"no track {track_id!r} in the catalog")
    results = similar_tracks(
        db,
        vector,
        k,
        genre,
        track["artist"] if exclude_same_artist and track["artist"] else None,
        min_score,
        exclude_id=track_id,
    )
    query = {k_: track[k_] for k_ in ("id", "title", "artist", "artist_id")}
    query.update(genre=track["top_genre"], top3=track["top3"], descriptors=track["descriptors"])
    return query, results


def _centroid(rows) -> np.ndarray:
    total = np.sum([np.frombuffer(r.vec_sum, np.float64) for r in rows], axis=0)
    return (total / (np.linalg.norm(total) or 1.0)).astype(np.float32)


def similar_artists(
    db, owner: str | None, artist: str | None = None, k: int = 10, artist_id: str | None = None
) -> tuple[dict, list[dict]]:
    """(the query artist, the k performers whose consented tracks sound most like its,
    best first). The query: an artist id (any account's), or a name: `owner`'s own artist of
    that name if there is one, else that name across every account (the sum of their sums:
    a booker with no uploads can name any performer). Results are one row per performer
    (normalised name): {artist, score (the best of its accounts' centroids), n_tracks (every
    account's tracks), artists: [{id, n_tracks}] (one per account, no owner)}; the query's
    performer is never among them. GenreError not_found for an unknown artist."""
    check_k(k)
    aa = account_artists
    with db.connect() as conn:
        if artist_id:
            rows = conn.execute(sa.select(aa).where(aa.c.id == artist_id)).fetchall()
        else:
            key = artist_key(artist or "")
            rows = (
                conn.execute(
                    sa.select(aa).where(aa.c.artist_key == key, aa.c.owner == owner)
                ).fetchall()
                or conn.execute(
                    sa.select(aa).where(aa.c.artist_key == key).order_by(aa.c.n_tracks.desc())
                ).fetchall()
            )
        if not rows:
            what = f"id {artist_id!r}" if artist_id else repr(artist)
            raise GenreError("not_found", f"no consented tracks by artist {what}")
        me_key = rows[0].artist_key
        query = {
            "artist": rows[0].name,
            "artist_id": rows[0].id if len(rows) == 1 else None,
            "n_tracks": sum(r.n_tracks for r in rows),
        }
        hits = vectors.nearest_artists(db, conn, _centroid(rows), min(4 * k + 10, 1000))
        by_pk = {
            r.pk: r for r in conn.execute(sa.select(aa).where(aa.c.pk.in_([pk for pk, _ in hits])))
        }
        best: dict[str, tuple[float, str]] = {}  # performer -> (score, display name)
        for pk, d in hits:
            r = by_pk.get(pk)
            if r is None or r.artist_key == me_key or r.artist_key in best:
                continue
            best[r.artist_key] = (round(1.0 - d, 6), r.name)
            if len(best) == k:
                break
        every = conn.execute(
            sa.select(aa.c.id, aa.c.artist_key, aa.c.n_tracks)
            .where(aa.c.artist_key.in_(list(best)))
            .order_by(aa.c.pk)
        ).fetchall()
    accounts: dict[str, list[dict]] = {}
    for r in every:
        accounts.setdefault(r.artist_key, []).append({"id": r.id, "n_tracks": r.n_tracks})
    out = [
        {
            "artist": name,
            "score": score,
            "n_tracks": sum(a["n_tracks"] for a in accounts.get(key, [])),
            "artists": accounts.get(key, []),
        }
        for key, (score, name) in best.items()
    ]
    return query, out
