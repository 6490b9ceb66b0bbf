"""Tracks in the catalog: the steps of a write, in the caller's transaction (catalog.ingest
owns it and calls them in order: there is no public way here to store a track that skips
the watches), and the owner's reads. Another owner's track is "not found".

    artist = tracks.account_artist(db, conn, owner, key, name)   # locked, created if missing
    pk, row = tracks.insert_row(conn, owner, record, consent, artist)
    tracks.put_vector(db, conn, pk, record); tracks.add_to_artist(db, conn, artist, vector)
    tracks.get(db, owner, track_id)          # None when unknown or not the owner's

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
from genre_detector.catalog.records import Consent, TrackRecord, descriptor_columns
from genre_detector.catalog.schema import account_artists, artists, track_filters, tracks
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


def existing(conn, owner: str, shas: list[str]) -> set[str]:
    """Which of these audio hashes the owner has already."""
    rows = conn.execute(
        sa.select(tracks.c.sha256).where(tracks.c.owner == owner, tracks.c.sha256.in_(shas))
    )
    return {r.sha256 for r in rows}


def fill_descriptors(db, existing: dict, record: TrackRecord) -> dict:
    """A track stored before tempo and key (null), or before mood and voice (those entries
    null), gets them from a new scoring of its audio (the tagger tagging its file again);
    an entry already stored is never overwritten."""
    if _filled(existing.get("descriptors"), record.descriptors) is None:
        return existing
    with db.begin() as conn:
        set_missing_descriptors(conn, existing["owner"], record)
    return by_sha256(db, existing["owner"], record.sha256) or existing


def _filled(stored: dict | None, new: dict | None) -> dict | None:
    """`stored` with its null entries taken from `new`; None when that changes nothing."""
    if new is None:
        return None
    if stored is None:
        return dict(new)
    merged = {**stored, **{k: v for k, v in new.items() if stored.get(k) is None}}
    return merged if merged != stored else None


def set_missing_descriptors(conn, owner: str, record: TrackRecord) -> None:
    if record.descriptors is None:
        return
    row = conn.execute(
        sa.select(tracks.c.pk, tracks.c.descriptors).where(
            tracks.c.owner == owner, tracks.c.sha256 == record.sha256
        )
    ).first()
    merged = _filled(row.descriptors, record.descriptors) if row is not None else None
    if merged is not None:
        conn.execute(tracks.update().where(tracks.c.pk == row.pk).values(descriptors=merged))
        conn.execute(
            track_filters.update()
            .where(track_filters.c.track_pk == row.pk)
            .values(**descriptor_columns(merged))
        )


def insert_row(conn, owner: str, record: TrackRecord, consent: Consent, artist) -> tuple[int, dict]:
    """The track's row (`artist`: its account artist from `account_artist`, or None):
    (pk, the stored track)."""
    if not consent.search:
        raise GenreError("consent_required", "a track needs consent to search to be stored")
    now = clock.now()
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
    conn.execute(  # what search and watches filter on (schema.track_filters)
        track_filters.insert().values(
            track_pk=pk,
            top_genre=record.top_genre,
            top_probability=record.top_probability,
            **descriptor_columns(record.descriptors),
        )
    )
    return pk, _row(conn.execute(sa.select(tracks).where(tracks.c.pk == pk)).one())


def put_vector(db, conn, pk: int, record: TrackRecord) -> None:
    """The track's vector, with its genre and performer (the filters of a search)."""
    performer_pk = _performer(db, conn, record.artist_key, record.artist)
    vectors.put_track(db, conn, pk, record.embedding, record.top_genre, performer_pk)


def add_to_artist(db, conn, artist, vector) -> None:
    """The track's share of its artist's running centroid (O(1))."""
    if artist is not None:
        _shift_artist(db, conn, artist, vector, +1)


def by_sha256(db, owner: str, sha256: str) -> dict | None:
    with db.connect() as conn:
        r = conn.execute(
            sa.select(tracks).where(tracks.c.owner == owner, tracks.c.sha256 == sha256)
        ).first()
    return None if r is None else _row(r)


def count(db, owner: str) -> int:
    """How many tracks the owner has (its quota's use)."""
    with db.connect() as conn:
        return count_in(conn, owner)


def count_in(conn, owner: str) -> int:
    """count(), in the caller's transaction."""
    return conn.execute(
        sa.select(sa.func.count()).select_from(tracks).where(tracks.c.owner == owner)
    ).scalar_one()


def lock_account(db, conn, owner: str) -> None:
    """The owner's uploads take turns until this transaction ends, so its count of tracks
    is exact when checked against its quota. PostgreSQL: a transaction-scoped advisory lock
    per account (there is no account row to lock FOR UPDATE). SQLite: nothing to do, the
    transaction's first write (the artist or the track) takes the database's write lock,
    and the count comes after it."""
    if db.dialect == "postgresql":
        conn.execute(
            sa.text("select pg_advisory_xact_lock(hashtext(:k))"), {"k": "tracks:" + owner}
        )


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


def lock_owned(conn, owner: str, track_id: str):
    """The owner's track (pk, artist_key, artist), locked for the rest of the transaction
    (PostgreSQL: after any watch or redelivery holding it commits); None when unknown or
    another account's."""
    return conn.execute(
        sa.select(tracks.c.pk, tracks.c.artist_key, tracks.c.artist)
        .where(tracks.c.id == track_id, tracks.c.owner == owner)
        .with_for_update()
    ).first()


def remove(db, conn, owner: str, found) -> None:
    """A track found by `lock_owned`: its vector (gone from the index), its row and its
    share of its artist's centroid."""
    vector = vectors.track_vector(db, conn, found.pk)
    artist = account_artist(db, conn, owner, found.artist_key, found.artist, create=False)
    vectors.delete_track(conn, found.pk)
    conn.execute(track_filters.delete().where(track_filters.c.track_pk == found.pk))
    conn.execute(tracks.delete().where(tracks.c.pk == found.pk))
    if artist is not None and vector is not None:
        _shift_artist(db, conn, artist, vector, -1)


def listing(
    db,
    owner: str,
    artist: str | None = None,
    genre: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
    where: list | tuple = (),
    listing: str = "tracks",
) -> tuple[list[dict], str | None]:
    """The owner's tracks, oldest first, `limit` at a time; (rows, next cursor or None).
    `where`: more conditions (search.conditions of descriptor filters), with a `listing`
    name of their own so a cursor is not carried from one filter to another."""
    from genre_detector.catalog.records import artist_key

    if not 1 <= limit <= MAX_LIMIT:
        raise GenreError("bad_parameter", f"limit: 1 to {MAX_LIMIT}, not {limit}")
    q = sa.select(tracks).where(tracks.c.owner == owner)
    if artist:
        q = q.where(tracks.c.artist_key == artist_key(artist))
    if genre:
        q = q.where(tracks.c.top_genre == genre)
    if where:  # on schema.track_filters
        q = q.select_from(
            tracks.join(track_filters, track_filters.c.track_pk == tracks.c.pk)
        ).where(*where)
    if cursor:
        q = q.where(tracks.c.pk > cursors.decode(db, owner, listing, cursor))
    with db.connect() as conn:
        rows = conn.execute(q.order_by(tracks.c.pk).limit(limit + 1)).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    nxt = cursors.encode(db, owner, listing, rows[-1].pk) if more and rows else None
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


def account_artist(db, conn, owner: str, key: str, name: str, create: bool = True):
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


def set_notify(conn, pk: int, notify: bool) -> dict:
    """Give or withdraw the `notify` consent of a track found by `lock_owned` (`search`
    stays: withdraw that by erasing the track); the track as it is now."""
    conn.execute(
        tracks.update()
        .where(tracks.c.pk == pk)
        .values(consent_notify=notify, consented_at=clock.now())
    )
    return _row(conn.execute(sa.select(tracks).where(tracks.c.pk == pk)).one())


MOOD_BLOCKS = ("mood", "gems", "voice", "instruments")


def fill_moods(db, heads, batch: int = 500) -> int:
    """Mood, GEMS, voice and instruments (models.mood_heads.MoodHeads) for every track
    stored without them, from its stored pooled features: the heads are linear in those, so
    the track gets what scoring its audio would give. Returns the number of tracks filled."""
    done, after = 0, 0
    while True:
        with db.begin() as conn:
            rows = conn.execute(
                sa.select(tracks.c.pk, tracks.c.features, tracks.c.descriptors)
                .where(tracks.c.pk > after)
                .order_by(tracks.c.pk)
                .limit(batch)
            ).fetchall()
            for r in rows:
                stored = dict(r.descriptors or {})
                if all(stored.get(b) is not None for b in MOOD_BLOCKS):
                    continue
                features = np.frombuffer(r.features, dtype=np.float32)
                if features.shape[0] != heads.kernel.shape[0]:
                    continue  # features of another backbone: tag the audio again
                blocks = {"tempo": None, "key": None, **stored, **heads.track(features)}
                conn.execute(tracks.update().where(tracks.c.pk == r.pk).values(descriptors=blocks))
                conn.execute(
                    track_filters.update()
                    .where(track_filters.c.track_pk == r.pk)
                    .values(**descriptor_columns(blocks))
                )
                done += 1
        if len(rows) < batch:
            return done
        after = rows[-1].pk


def refill_descriptor_columns(db, batch: int = 1000) -> int:
    """Every track's filter row (schema.track_filters: top genre, bpm, camelot, mood, GEMS,
    voice, instruments) rewritten from its stored fields where it differs or is missing
    (`catalog reindex` runs it: after a change of catalog.records.descriptor_columns, or
    descriptors written by another tool). Returns the number of rows written."""
    tf = track_filters
    names = ["top_genre", "top_probability", *descriptor_columns(None)]
    changed, last = 0, 0
    while True:
        with db.begin() as conn:
            rows = conn.execute(
                sa.select(
                    tracks.c.pk,
                    tracks.c.top_genre.label("t_genre"),
                    tracks.c.top_probability.label("t_probability"),
                    tracks.c.descriptors,
                    tf.c.track_pk,
                    *(tf.c[n] for n in names),
                )
                .select_from(tracks.outerjoin(tf, tf.c.track_pk == tracks.c.pk))
                .where(tracks.c.pk > last)
                .order_by(tracks.c.pk)
                .limit(batch)
            ).fetchall()
            for r in rows:
                values = {
                    "top_genre": r.t_genre,
                    "top_probability": r.t_probability,
                    **descriptor_columns(r.descriptors),
                }
                if r.track_pk is None:
                    conn.execute(tf.insert().values(track_pk=r.pk, **values))
                elif any(getattr(r, k) != v for k, v in values.items()):
                    conn.execute(tf.update().where(tf.c.track_pk == r.pk).values(**values))
                else:
                    continue
                changed += 1
        if len(rows) < batch:
            return changed
        last = rows[-1].pk


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
