"""Search by sound: tracks and artists whose embeddings are nearest (cosine).

    search.similar_tracks(db, vector, k=10, genre=None, exclude_artist="", min_score=None,
                          exclude_id=None)
    search.similar_artists(db, "Artist name", k=10)

Results carry only what any caller may see of a consented track: id, title, artist, score,
genre and top-3, never its owner or other stored fields.
"""

from __future__ import annotations

import sqlalchemy as sa

from genre_detector.catalog import vectors
from genre_detector.catalog.records import artist_key
from genre_detector.catalog.schema import artists, tracks
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
    """The k most similar searchable tracks, best first: [{id, title, artist, score, genre,
    top3}], score = cosine similarity in [-1, 1]; never `exclude_id` nor a track of the
    audio `exclude_sha256` (the query itself), nor (given) any track of `exclude_artist`
    (compared case-insensitively)."""
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
    query = {k_: track[k_] for k_ in ("id", "title", "artist")}
    query.update(genre=track["top_genre"], top3=track["top3"], descriptors=track["descriptors"])
    return query, results


def similar_artists(db, artist: str, k: int = 10) -> tuple[dict, list[dict]]:
    """(the artist, [{artist, score, n_tracks}] of the k artists whose consented tracks sound
    most like theirs, best first). GenreError not_found for an artist with no such tracks."""
    check_k(k)
    key = artist_key(artist)
    with db.connect() as conn:
        me = conn.execute(sa.select(artists).where(artists.c.artist_key == key)).first()
        centroid = None if me is None else vectors.artist_vector(db, conn, me.pk)
        if centroid is None:
            raise GenreError("not_found", f"no consented tracks by artist {artist!r}")
        hits = vectors.nearest_artists(db, conn, centroid, k + 1)
        rows = conn.execute(
            sa.select(artists).where(artists.c.pk.in_([pk for pk, _ in hits]))
        ).fetchall()
    by_pk = {r.pk: r for r in rows}
    out = [
        {"artist": by_pk[pk].name, "score": round(1.0 - d, 6), "n_tracks": by_pk[pk].n_tracks}
        for pk, d in hits
        if pk in by_pk and pk != me.pk
    ]
    return {"artist": me.name, "n_tracks": me.n_tracks}, out[:k]
