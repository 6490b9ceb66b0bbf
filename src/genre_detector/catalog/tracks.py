"""Tracks in the catalog: add (one transaction, idempotent per owner and audio), read,
list, erase. Only the owner reads or erases a track; another owner's track is "not found".

    row, created = tracks.add(db, owner, record, consent)
    tracks.get(db, owner, track_id)          # None when unknown or not the owner's
    tracks.delete(db, owner, track_id)       # the row, its vector and its artist share gone

An artist belongs to the account that uploaded it: (owner, normalised name), with a public
id on every track (`artist_id`), its own spelling, and a running sum and count of its
tracks' vectors, updated in O(1) per add or erase (no other track is read). One account's
uploads never move another's artist.
"""

from __future__ import annotations

import datetime as dt
import uuid

import numpy as np
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from genre_detector.catalog import clock, cursors, vectors
from genre_detector.catalog.records import Consent, TrackRecord
from genre_detector.catalog.schema import account_artists, artists, tracks
from genre_detector.errors import GenreError

MAX_LIMIT = 100


def _row(r) -> dict:
    d = dict(r._mapping)
    d.pop("pk", None)
    d.pop("features", None)
    d["consent"] = [s for s in ("search", "notify") if d.pop(f"consent_{s}")]
    for k in ("consented_at", "created_at"):
        if isinstance(d.get(k), dt.datetime):
            d[k] = clock.aware(d[k]).isoformat()
    return d


def add(db, owner: str, record: TrackRecord, consent: Consent, on_insert=None) -> tuple[dict, bool]:
    """(the stored track, whether this call created it). The same audio (sha256) from the
    same owner is one track: later uploads return it unchanged. The track, its vector and
    its artist's centroid are written in one transaction; `on_insert(conn, track_pk, row,
    record)` runs inside it too (watches write their outbox there: catalog.ingest)."""
    if not consent.search:
        raise GenreError("consent_required", "a track needs consent to search to be stored")
    existing = by_sha256(db, owner, record.sha256)
    if existing is not None:
        return _fill_descriptors(db, existing, record), False
    try:
        with db.begin() as conn:
            row = _insert(db, conn, owner, record, consent, on_insert)
    except sa.exc.IntegrityError:
        # the same audio arrived concurrently: the other transaction's row is the track
        existing = by_sha256(db, owner, record.sha256)
        if existing is None:
            raise
        return existing, False
    return row, True


def add_many(db, owner: str, records: list[TrackRecord], consent: Consent, on_insert=None):
    """Add a batch in one transaction (the tagger's writes); audio the owner already has is
    skipped. Returns the number of tracks created. A concurrent writer of the same audio
    makes the batch fall back to one transaction per track."""
    if not consent.search:
        raise GenreError("consent_required", "a track needs consent to search to be stored")
    try:
        with db.begin() as conn:
            have = _existing(conn, owner, [r.sha256 for r in records])
            fresh = {r.sha256: r for r in records if r.sha256 not in have}
            for record in records:
                if record.sha256 in have:
                    _set_missing_descriptors(conn, owner, record)
            for record in fresh.values():
                _insert(db, conn, owner, record, consent, on_insert)
        return len(fresh)
    except sa.exc.IntegrityError:
        return sum(add(db, owner, r, consent, on_insert)[1] for r in records)


def _existing(conn, owner: str, shas: list[str]) -> set[str]:
    rows = conn.execute(
        sa.select(tracks.c.sha256).where(tracks.c.owner == owner, tracks.c.sha256.in_(shas))
    )
    return {r.sha256 for r in rows}


def _fill_descriptors(db, existing: dict, record: TrackRecord) -> dict:
    """A track stored before tempo and key (null) gets them from a new scoring of its
    audio (the tagger tagging its file again); anything else stays as stored."""
    if existing.get("descriptors") is not None or record.descriptors is None:
        return existing
    with db.begin() as conn:
        _set_missing_descriptors(conn, existing["owner"], record)
    return by_sha256(db, existing["owner"], record.sha256) or existing


def _set_missing_descriptors(conn, owner: str, record: TrackRecord) -> None:
    if record.descriptors is None:
        return
    conn.execute(
        tracks.update()
        .where(
            tracks.c.owner == owner,
            tracks.c.sha256 == record.sha256,
            tracks.c.descriptors.is_(None),
        )
        .values(descriptors=record.descriptors)
    )


def _insert(db, conn, owner: str, record: TrackRecord, consent: Consent, on_insert) -> dict:
    """The track, its vector and its artist's running centroid, in the caller's transaction."""
    now = clock.now()
    artist = _account_artist(db, conn, owner, record.artist_key, record.artist)
    pk = conn.execute(
        tracks.insert()
        .values(
            id=uuid.uuid4().hex,
            owner=owner,
            sha256=record.sha256,
            title=record.title,
            artist=record.artist,
            artist_key=record.artist_key,
            artist_id=None if artist is None else artist.id,
            consent_search=consent.search,
            consent_notify=consent.notify,
            consented_at=now,
            duration_s=record.duration_s,
            top_genre=record.top_genre,
            top_probability=record.top_probability,
            probabilities=record.probabilities,
            top3=record.top3,
            timeline=record.timeline,
            model_tags=record.model_tags,
            descriptors=record.descriptors,
            features=np.asarray(record.features, np.float32).tobytes(),
            embedding_version=record.embedding_version,
            created_at=now,
        )
        .returning(tracks.c.pk)
    ).scalar_one()
    performer_pk = _performer(db, conn, record.artist_key, record.artist)
    vectors.put_track(db, conn, pk, record.embedding, record.top_genre, performer_pk)
    if artist is not None:
        _shift_artist(db, conn, artist, record.embedding, +1)
    row = _row(conn.execute(sa.select(tracks).where(tracks.c.pk == pk)).one())
    if on_insert is not None:
        on_insert(conn, pk, row, record)
    return row


def by_sha256(db, owner: str, sha256: str) -> dict | None:
    with db.connect() as conn:
        r = conn.execute(
            sa.select(tracks).where(tracks.c.owner == owner, tracks.c.sha256 == sha256)
        ).first()
    return None if r is None else _row(r)


def count(db, owner: str) -> int:
    """How many tracks the owner has (its quota's use)."""
    with db.connect() as conn:
        return conn.execute(
            sa.select(sa.func.count()).select_from(tracks).where(tracks.c.owner == owner)
        ).scalar_one()


def get(db, owner: str, track_id: str) -> dict | None:
    with db.connect() as conn:
        r = conn.execute(
            sa.select(tracks).where(tracks.c.id == track_id, tracks.c.owner == owner)
        ).first()
    return None if r is None else _row(r)


def pk_of(db, track_id: str) -> tuple[int, dict] | None:
    """(pk, track) of any searchable track by id (for similar-track queries)."""
    with db.connect() as conn:
        r = conn.execute(
            sa.select(tracks).where(tracks.c.id == track_id, tracks.c.consent_search.is_(True))
        ).first()
    return None if r is None else (r.pk, _row(r))


def delete(db, owner: str, track_id: str, on_delete=None) -> bool:
    """Erase the owner's track: its row, its vector (gone from the index) and its share of
    its artist's centroid, in one transaction (with `on_delete(conn, track_id)`: watches
    cancel what they had not sent). False when unknown or not the owner's."""
    with db.begin() as conn:
        r = conn.execute(
            sa.select(tracks.c.pk, tracks.c.artist_key, tracks.c.artist)
            .where(tracks.c.id == track_id, tracks.c.owner == owner)
            .with_for_update()  # PostgreSQL: after any watch being saved with it commits
        ).first()
        if r is None:
            return False
        if on_delete is not None:
            on_delete(conn, track_id)
        vector = vectors.track_vector(db, conn, r.pk)
        artist = _account_artist(db, conn, owner, r.artist_key, r.artist, create=False)
        vectors.delete_track(conn, r.pk)
        conn.execute(tracks.delete().where(tracks.c.pk == r.pk))
        if artist is not None and vector is not None:
            _shift_artist(db, conn, artist, vector, -1)
    return True


def listing(
    db,
    owner: str,
    artist: str | None = None,
    genre: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[dict], str | None]:
    """The owner's tracks, oldest first, `limit` at a time; (rows, next cursor or None)."""
    from genre_detector.catalog.records import artist_key

    if not 1 <= limit <= MAX_LIMIT:
        raise GenreError("bad_parameter", f"limit: 1 to {MAX_LIMIT}, not {limit}")
    q = sa.select(tracks).where(tracks.c.owner == owner)
    if artist:
        q = q.where(tracks.c.artist_key == artist_key(artist))
    if genre:
        q = q.where(tracks.c.top_genre == genre)
    if cursor:
        q = q.where(tracks.c.pk > cursors.decode(db, owner, "tracks", cursor))
    with db.connect() as conn:
        rows = conn.execute(q.order_by(tracks.c.pk).limit(limit + 1)).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    nxt = cursors.encode(db, owner, "tracks", rows[-1].pk) if more and rows else None
    return [_row(r) for r in rows], nxt


def _upsert(db, table, values: dict, keys: list[str]):
    insert = sqlite_insert(table) if db.dialect == "sqlite" else postgresql_insert(table)
    return insert.values(**values).on_conflict_do_nothing(index_elements=keys)


def _performer(db, conn, key: str, name: str) -> int:
    """The performer's pk (one per normalised name, across accounts; 0 for no artist): the
    track vector's artist_pk, which exclude_same_artist filters on."""
    if not key:
        return 0
    conn.execute(
        _upsert(db, artists, {"artist_key": key, "name": name, "n_tracks": 0}, ["artist_key"])
    )
    return conn.execute(sa.select(artists.c.pk).where(artists.c.artist_key == key)).scalar_one()


def _account_artist(db, conn, owner: str, key: str, name: str, create: bool = True):
    """The owner's artist of this normalised name (None for no artist), created if missing
    (an upsert: concurrent adds race here) and locked for the rest of the transaction, so
    writers of one artist take turns and its sum includes every committed track."""
    if not key:
        return None
    if create:
        values = {
            "id": uuid.uuid4().hex,
            "owner": owner,
            "artist_key": key,
            "name": name,
            "n_tracks": 0,
            "vec_sum": np.zeros(db.dim, np.float64).tobytes(),
        }
        conn.execute(_upsert(db, account_artists, values, ["owner", "artist_key"]))
    return conn.execute(
        sa.select(account_artists)
        .where(account_artists.c.owner == owner, account_artists.c.artist_key == key)
        .with_for_update()
    ).first()


def _shift_artist(db, conn, artist, vector, sign: int) -> None:
    """Add (+1) or remove (-1) one track's vector to the artist's running sum: O(1), no other
    track read. An artist left with no track is removed."""
    n = artist.n_tracks + sign
    if n <= 0:
        vectors.delete_artist(conn, artist.pk)
        conn.execute(account_artists.delete().where(account_artists.c.pk == artist.pk))
        return
    total = np.frombuffer(artist.vec_sum, np.float64) + sign * np.asarray(vector, np.float64)
    conn.execute(
        account_artists.update()
        .where(account_artists.c.pk == artist.pk)
        .values(n_tracks=n, vec_sum=total.tobytes())
    )
    vectors.put_artist(db, conn, artist.pk, total / (np.linalg.norm(total) or 1.0))


def _rebuild_artist(db, conn, artist) -> None:
    """Recompute one artist's sum from its tracks (after a re-embedding)."""
    pks = conn.execute(sa.select(tracks.c.pk).where(tracks.c.artist_id == artist.id)).scalars()
    vecs = [v for v in (vectors.track_vector(db, conn, pk) for pk in pks) if v is not None]
    if not vecs:
        vectors.delete_artist(conn, artist.pk)
        conn.execute(account_artists.delete().where(account_artists.c.pk == artist.pk))
        return
    total = np.sum(np.asarray(vecs, np.float64), axis=0)
    conn.execute(
        account_artists.update()
        .where(account_artists.c.pk == artist.pk)
        .values(n_tracks=len(vecs), vec_sum=total.tobytes())
    )
    vectors.put_artist(db, conn, artist.pk, total / (np.linalg.norm(total) or 1.0))


def set_notify(db, owner: str, track_id: str, notify: bool, on_withdraw=None) -> dict | None:
    """Give or withdraw the `notify` consent of the owner's track (`search` stays: withdraw
    that by erasing the track). None when unknown or not the owner's."""
    with db.begin() as conn:
        r = conn.execute(
            sa.select(tracks.c.pk)
            .where(tracks.c.id == track_id, tracks.c.owner == owner)
            .with_for_update()  # PostgreSQL: after any watch or redelivery holding it commits
        ).first()
        if r is None:
            return None
        conn.execute(
            tracks.update()
            .where(tracks.c.pk == r.pk)
            .values(consent_notify=notify, consented_at=clock.now())
        )
        if not notify and on_withdraw is not None:
            on_withdraw(conn, track_id)
        return _row(conn.execute(sa.select(tracks).where(tracks.c.pk == r.pk)).one())


def reindex(db, projection, batch: int = 500) -> int:
    """Re-embed every track whose embedding was made by another projection than
    `projection` (models.projection.Projection), from its stored pooled features, and
    refresh the artists' centroids. Returns the number of tracks re-embedded. (A change of
    the musicnn backbone itself changes the features: tag the audio again.)"""
    done = 0
    while True:
        with db.begin() as conn:
            rows = conn.execute(
                sa.select(tracks.c.pk, tracks.c.features, tracks.c.top_genre, tracks.c.artist_key)
                .where(tracks.c.embedding_version != projection.version)
                .limit(batch)
            ).fetchall()
            for r in rows:
                vector = projection.apply(np.frombuffer(r.features, dtype=np.float32))
                vectors.delete_track(conn, r.pk)
                performer_pk = _performer(db, conn, r.artist_key, r.artist_key)
                vectors.put_track(db, conn, r.pk, vector, r.top_genre, performer_pk)
                conn.execute(
                    tracks.update()
                    .where(tracks.c.pk == r.pk)
                    .values(embedding_version=projection.version)
                )
        done += len(rows)
        if len(rows) < batch:
            break
    if done:
        with db.begin() as conn:
            for a in conn.execute(sa.select(account_artists)).fetchall():
                _rebuild_artist(db, conn, a)
    return done
