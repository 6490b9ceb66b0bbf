"""Watches: saved searches of an account that fire on every new matching track.

    w, secret = watches.create(db, owner, {"name": ..., "genres": {"jazz": 0.6},
                                           "like": [track ids], "min_similarity": 0.8,
                                           "exclude_artists": [...], "webhook_url": ...})
    matched = watches.match(db, conn, row, vector)   # in the track's transaction (catalog.ingest)
    watches.queue_deliveries(conn, matched, row)

A watch matches a new track (added with the `notify` consent, by another account) when the
track is not by an excluded artist, when any watched genre's calibrated probability reaches
its minimum (if genres are given), when its cosine similarity to the nearest reference
track reaches min_similarity (if `like` is given), and when its descriptors meet the
watch's conditions (if `mood`, `bpm`, `key` or `voice` are given: the filters of
catalog.filters, e.g. {"mood": "Q4", "bpm": "85-95", "voice": "instrumental"}; a track
without mood or voice meets no condition on them). Each match writes a row and its delivery
(the outbox) in the transaction that adds the track; a track matches a watch at most once.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import uuid

import numpy as np
import sqlalchemy as sa

from genre_detector.catalog import clock, cursors, vectors, webhooks
from genre_detector.catalog import filters as descriptor_filters
from genre_detector.catalog.records import (
    GEMS,
    QUADRANTS,
    VOICES,
    artist_key,
    clean_name,
    descriptor_columns,
)
from genre_detector.catalog.schema import (
    deliveries,
    delivery_attempts,
    tracks,
    watch_matches,
    watches,
)
from genre_detector.config import settings
from genre_detector.errors import GenreError

MAX_LIKE = 20  # reference tracks per watch
MAX_EXCLUDED = 100
DEFAULT_MIN_SIMILARITY = 0.8
ROTATION_OVERLAP = dt.timedelta(hours=24)
CONDITIONS = ("mood", "bpm", "bpm_octave", "key", "compatible", "voice")
FIELDS = {
    "name",
    "genres",
    "like",
    "min_similarity",
    "exclude_artists",
    "webhook_url",
    "active",
    *CONDITIONS,
}
NEEDS = "a watch needs genres, like, a condition (mood, bpm, key, voice), or several"


def _bad(detail: str) -> GenreError:
    return GenreError("bad_parameter", detail)


def validate(db, body: dict, labels: list[str], partial: bool = False) -> dict:
    """The watch's fields from a JSON body, checked (GenreError bad_parameter naming the
    field). `partial`: a PATCH, only the fields given."""
    if not isinstance(body, dict):
        raise _bad("the body: a JSON object")
    unknown = set(body) - FIELDS
    if unknown:
        raise _bad(
            f"unknown field(s) {', '.join(sorted(unknown))}; valid: {', '.join(sorted(FIELDS))}"
        )
    out = {}
    if "name" in body or not partial:
        if not isinstance(body.get("name"), str):
            raise _bad("name: a short text naming the watch")
        name = clean_name(body.get("name"))
        if not name:
            raise _bad("name: a short text naming the watch")
        out["name"] = name
    if "genres" in body or not partial:
        genres = body.get("genres") or {}
        if not isinstance(genres, dict):
            raise _bad("genres: an object of genre -> minimum probability")
        for g, p in genres.items():
            if g not in labels:
                raise _bad(f"genres: {g!r} is not one of {', '.join(labels)}")
            if not isinstance(p, int | float) or isinstance(p, bool) or not 0 <= p <= 1:
                raise _bad(f"genres: the minimum for {g} is a probability from 0 to 1")
        out["genres"] = {g: float(p) for g, p in genres.items()}
    if "like" in body or not partial:
        like = body.get("like") or []
        if not isinstance(like, list) or not all(isinstance(i, str) for i in like):
            raise _bad("like: a list of track ids")
        if len(like) > MAX_LIKE:
            raise _bad(f"like: at most {MAX_LIKE} reference tracks")
        out["like_ids"] = list(dict.fromkeys(like))  # their vectors: in the write's transaction
    if "min_similarity" in body or not partial:
        s = body.get("min_similarity", DEFAULT_MIN_SIMILARITY)
        if not isinstance(s, int | float) or isinstance(s, bool) or not -1 <= s <= 1:
            raise _bad("min_similarity: a cosine similarity from -1 to 1")
        out["min_similarity"] = float(s)
    if "exclude_artists" in body or not partial:
        ex = body.get("exclude_artists") or []
        if not isinstance(ex, list) or not all(isinstance(a, str) for a in ex):
            raise _bad("exclude_artists: a list of artist names")
        if len(ex) > MAX_EXCLUDED:
            raise _bad(f"exclude_artists: at most {MAX_EXCLUDED}")
        out["exclude_artists"] = sorted({artist_key(a) for a in ex if a.strip()})
    if any(c in body for c in CONDITIONS) or not partial:
        given = {c: body[c] for c in CONDITIONS if c in body and body[c] is not None}
        for c, v in given.items():
            if c in ("bpm_octave", "compatible"):
                if not isinstance(v, bool):
                    raise _bad(f"{c}: true or false")
            elif not isinstance(v, str | int | float) or isinstance(v, bool):
                raise _bad(f"{c}: a text, as the search's {c} parameter")
        found = descriptor_filters.from_params(given, labels, genre=False)
        out["conditions"] = None if found.empty() else found.as_dict()
    if "webhook_url" in body or not partial:
        out["webhook_url"] = webhooks.check_url(body.get("webhook_url"))
    if "active" in body:
        if not isinstance(body["active"], bool):
            raise _bad("active: true or false")
        out["active"] = body["active"]
    return out


def _like_vectors(db, conn, like_ids: list[str]) -> bytes | None:
    """The reference tracks' vectors, read in the transaction writing the watch (after its
    first write, so on SQLite no erasure can come between; on PostgreSQL the tracks' rows
    are locked FOR SHARE until it commits): an erasure either comes first (the track is
    refused here) or after (and then finds the watch and drops the track from it)."""
    if not like_ids:
        return None
    found = {
        r.id: r.pk
        for r in conn.execute(
            sa.select(tracks.c.pk, tracks.c.id)
            .where(tracks.c.id.in_(like_ids), tracks.c.consent_search.is_(True))
            .with_for_update(read=True)
        )
    }
    missing = [i for i in like_ids if i not in found]
    if missing:
        raise _bad(f"like: no track {', '.join(missing)} in the catalog")
    vecs = [vectors.track_vector(db, conn, found[i]) for i in like_ids]
    if any(v is None for v in vecs):
        raise _bad("like: a reference track has no vector yet")
    return np.stack(vecs).astype(np.float32).tobytes()


def public(row) -> dict:
    """What the owner sees of a watch (never its secrets)."""
    d = dict(row._mapping)
    out = {
        k: d[k]
        for k in (
            "id",
            "name",
            "genres",
            "min_similarity",
            "exclude_artists",
            "webhook_url",
            "active",
            "disabled_reason",
            "conditions",
        )
    }
    out["like"] = d["like_ids"]
    for k in ("failing_since", "created_at", "updated_at"):
        out[k] = clock.aware(d[k]).isoformat() if d[k] else None
    return out


def create(
    db, owner: str, body: dict, labels: list[str], dry_run: bool = False
) -> tuple[dict, str | None]:
    """(the watch, its signing secret: shown once). `dry_run`: every check of a real create
    (fields, webhook URL, quota, reference tracks) in a transaction rolled back at the end:
    (the watch as it would be, without id, None)."""
    fields = validate(db, body, labels)
    if not fields["genres"] and not fields["like_ids"] and not fields["conditions"]:
        raise _bad(NEEDS)
    limit = settings().watch_limit
    secret, now = webhooks.new_secret(), clock.now()
    with _writing(db, dry_run) as conn:
        if db.dialect == "postgresql":  # concurrent creates of one account take turns
            conn.execute(
                sa.text("select pg_advisory_xact_lock(hashtext(:k))"), {"k": "watches:" + owner}
            )
        # SQLite: the insert comes first, so this transaction holds the write lock before it
        # counts (a count first would run outside any lock and let concurrent creates pass)
        pk = conn.execute(
            watches.insert()
            .values(
                id=uuid.uuid4().hex,
                owner=owner,
                secret=secret,
                active=True,
                created_at=now,
                updated_at=now,
                **fields,
            )
            .returning(watches.c.pk)
        ).scalar_one()
        n = conn.execute(
            sa.select(sa.func.count()).select_from(watches).where(watches.c.owner == owner)
        ).scalar_one()
        if n > limit:  # rolled back with the insert
            raise GenreError(
                "quota_exceeded", f"watches: an account has at most {limit}; delete one first"
            )
        like_vectors = _like_vectors(db, conn, fields["like_ids"])
        conn.execute(watches.update().where(watches.c.pk == pk).values(like_vectors=like_vectors))
        row = conn.execute(sa.select(watches).where(watches.c.pk == pk)).one()
    if dry_run:
        return {**public(row), "id": None}, None
    return public(row), secret


@contextlib.contextmanager
def _writing(db, dry_run: bool):
    """db.begin(), or for a dry run a transaction that is always rolled back."""
    if not dry_run:
        with db.begin() as conn:
            yield conn
        return
    with db.connect() as conn:
        transaction = conn.begin()
        try:
            yield conn
        finally:
            transaction.rollback()


def _own(conn, owner: str, watch_id: str):
    row = conn.execute(
        sa.select(watches).where(watches.c.id == watch_id, watches.c.owner == owner)
    ).first()
    if row is None:
        raise GenreError("not_found", f"no watch {watch_id!r} of yours")
    return row


def count(db, owner: str) -> int:
    """How many watches the owner has (its quota's use)."""
    with db.connect() as conn:
        return conn.execute(
            sa.select(sa.func.count()).select_from(watches).where(watches.c.owner == owner)
        ).scalar_one()


def get(db, owner: str, watch_id: str) -> dict:
    with db.connect() as conn:
        return public(_own(conn, owner, watch_id))


def listing(db, owner: str) -> list[dict]:
    with db.connect() as conn:
        rows = conn.execute(
            sa.select(watches).where(watches.c.owner == owner).order_by(watches.c.pk)
        ).fetchall()
    return [public(r) for r in rows]


def update(db, owner: str, watch_id: str, body: dict, labels: list[str]) -> dict:
    fields = validate(db, body, labels, partial=True)
    with db.begin() as conn:
        row = _own(conn, owner, watch_id)
        genres = fields.get("genres", row.genres)
        like = fields.get("like_ids", row.like_ids)
        conditions = fields.get("conditions", row.conditions)
        if not genres and not like and not conditions:
            raise _bad(NEEDS)
        if fields.get("active") is True:  # re-enabled by its owner: a fresh start
            fields.update(disabled_reason=None, failing_since=None)
        conn.execute(
            watches.update().where(watches.c.pk == row.pk).values(updated_at=clock.now(), **fields)
        )
        if "like_ids" in fields:
            like_vectors = _like_vectors(db, conn, fields["like_ids"])
            conn.execute(
                watches.update().where(watches.c.pk == row.pk).values(like_vectors=like_vectors)
            )
        return public(conn.execute(sa.select(watches).where(watches.c.pk == row.pk)).one())


def delete(db, owner: str, watch_id: str) -> None:
    """The watch, its matches and its deliveries; a delivery being sent meanwhile is recorded
    as cancelled by its worker (its watch is gone), never as an error."""
    with db.begin() as conn:
        row = _own(conn, owner, watch_id)
        conn.execute(
            deliveries.update()
            .where(deliveries.c.watch_pk == row.pk, deliveries.c.status == "pending")
            .values(status="cancelled", last_error="the watch was deleted")
        )
        conn.execute(
            delivery_attempts.delete().where(
                delivery_attempts.c.delivery_pk.in_(
                    sa.select(deliveries.c.pk).where(deliveries.c.watch_pk == row.pk)
                )
            )
        )
        conn.execute(deliveries.delete().where(deliveries.c.watch_pk == row.pk))
        conn.execute(watch_matches.delete().where(watch_matches.c.watch_pk == row.pk))
        conn.execute(watches.delete().where(watches.c.pk == row.pk))


def rotate_secret(db, owner: str, watch_id: str) -> str:
    """A new signing secret (returned once); the old one keeps signing beside it for 24 h
    (then erased by `forget_expired_secrets`, which every delivery worker's housekeeping runs
    every minute)."""
    secret = webhooks.new_secret()
    with db.begin() as conn:
        row = _own(conn, owner, watch_id)
        conn.execute(
            watches.update()
            .where(watches.c.pk == row.pk)
            .values(
                secret=secret,
                previous_secret=row.secret,
                previous_secret_until=clock.now() + ROTATION_OVERLAP,
                updated_at=clock.now(),
            )
        )
    return secret


# ---------------------------------------------------------------- matching (the outbox)


def _camelot_index(code) -> int:
    """0..23 for '1A'..'12B' (-1 for none)."""
    if not isinstance(code, str) or len(code) < 2 or code[-1] not in "AB":
        return -1
    try:
        n = int(code[:-1])
    except ValueError:
        return -1
    return (n - 1) * 2 + (code[-1] == "B") if 1 <= n <= 12 else -1


class _Conditions:
    """Every watch's descriptor conditions as arrays: a track's mood, tempo, key and voice
    are checked against all watches in a few vector operations (no Python loop per watch).
    A value the track lacks (NaN) meets no condition on it. The fit (the score of a watch
    with conditions only) is the mean of the asked quadrants' probability, the GEMS shares
    asked, the tempo's closeness to the range's centre and the voice scores asked."""

    def __init__(self, conditions: list):
        n = len(conditions)
        self.has = np.zeros(n, bool)
        self.quadrant_w = np.zeros((n, len(QUADRANTS)))
        self.gems_min = np.full((n, len(GEMS)), -np.inf)
        self.bpm = np.full((n, 3, 3), np.nan)  # (lo, hi, factor) of up to 3 windows
        self.bpm_centre = np.full((n, 2), np.nan)  # centre, half-width
        self.keys = np.zeros((n, 24), bool)
        self.has_key = np.zeros(n, bool)
        self.voice_min = np.full((n, len(VOICES)), -np.inf)
        self.instrumental_below = np.full(n, np.inf)  # vocal: instrumental < 0.5
        for i, c in enumerate(conditions):
            if not c:
                continue
            f = descriptor_filters.Filters.from_dict(c)
            self.has[i] = True
            total = sum(w for _, w in f.quadrants) or 1.0
            for q, w in f.quadrants:
                self.quadrant_w[i, QUADRANTS.index(q)] = w / total
            for g, lo in f.gems:
                self.gems_min[i, GEMS.index(g)] = lo
            for j, window in enumerate(f.bpm_windows()):
                self.bpm[i, j] = window
            if f.bpm:
                lo, hi = f.bpm
                self.bpm_centre[i] = ((lo + hi) / 2, max((hi - lo) / 2, 1.0))
            for code in f.camelot_codes:
                self.keys[i, _camelot_index(code)] = True
                self.has_key[i] = True
            for v in f.voice:
                if v == "vocal":
                    self.instrumental_below[i] = descriptor_filters.VOICE_MIN
                else:
                    self.voice_min[i, VOICES.index(v)] = descriptor_filters.VOICE_MIN
        self.has_quadrant = self.quadrant_w.sum(axis=1) > 0
        self.has_gems = np.isfinite(self.gems_min).any(axis=1)
        self.has_bpm = ~np.isnan(self.bpm_centre[:, 0])
        self.has_voice = np.isfinite(self.voice_min).any(axis=1) | np.isfinite(
            self.instrumental_below
        )

    def meet(self, values: dict) -> tuple[np.ndarray, np.ndarray]:
        """(which watches' conditions the track meets, their fit in [0, 1])."""
        n = len(self.has)
        if not self.has.any():
            return np.ones(n, bool), np.ones(n)

        def num(name):
            v = values.get(name)
            return np.nan if v is None else float(v)

        ok = np.ones(n, bool)
        terms, count = np.zeros(n), np.zeros(n)
        quadrant = values.get("quadrant")
        probs = np.array([num(f"mood_{q.lower()}") for q in QUADRANTS])
        if quadrant in QUADRANTS:
            ok &= ~self.has_quadrant | (self.quadrant_w[:, QUADRANTS.index(quadrant)] > 0)
            terms += np.where(self.has_quadrant, self.quadrant_w @ np.nan_to_num(probs), 0.0)
        else:
            ok &= ~self.has_quadrant
        count += self.has_quadrant
        gems = np.array([num(f"gems_{g}") for g in GEMS])
        asked = np.isfinite(self.gems_min)
        with np.errstate(invalid="ignore"):
            ok &= ~(asked & ~(gems[None, :] >= self.gems_min)).any(axis=1)
        terms += np.where(asked, np.nan_to_num(gems)[None, :], 0.0).sum(axis=1)
        count += asked.sum(axis=1)
        bpm = num("bpm")
        lo, hi, factor = self.bpm[:, :, 0], self.bpm[:, :, 1], self.bpm[:, :, 2]
        with np.errstate(invalid="ignore"):
            inside = (lo <= bpm) & (bpm <= hi)  # NaN windows and a NaN tempo: False
        ok &= ~self.has_bpm | inside.any(axis=1)
        first = np.argmax(inside, axis=1)
        f_used = np.take_along_axis(factor, first[:, None], axis=1)[:, 0]
        with np.errstate(invalid="ignore"):
            closeness = 1.0 - np.abs(bpm / f_used - self.bpm_centre[:, 0]) / self.bpm_centre[:, 1]
        terms += np.where(self.has_bpm & inside.any(axis=1), closeness, 0.0)
        count += self.has_bpm
        k = _camelot_index(values.get("camelot"))
        ok &= ~self.has_key | (self.keys[:, k] if k >= 0 else False)
        terms += self.has_key
        count += self.has_key
        voice = np.array([num(f"voice_{v}") for v in VOICES])
        vasked = np.isfinite(self.voice_min)
        with np.errstate(invalid="ignore"):
            ok &= ~(vasked & ~(voice[None, :] >= self.voice_min)).any(axis=1)
            below = np.isfinite(self.instrumental_below)
            ok &= ~below | (voice[0] < self.instrumental_below)
        terms += np.where(vasked, np.nan_to_num(voice)[None, :], 0.0).sum(axis=1)
        terms += np.where(below, 1.0 - np.nan_to_num(voice[0]), 0.0)
        count += vasked.sum(axis=1) + below
        fit = np.where(count > 0, terms / np.maximum(count, 1), 1.0)
        return ok | ~self.has, fit


class _Compiled:
    """Every active watch decoded once into arrays (genre minimums as a matrix, reference
    vectors stacked), so matching a new track is a few vector operations instead of a JSON
    decode and a Python loop per watch; rebuilt when the watches' signature changes."""

    def __init__(self, rows, labels: list[str], dim: int, signature):
        self.signature, self.labels = signature, list(labels)
        self.pks = [r.pk for r in rows]
        self.ids = [r.id for r in rows]
        self.owners = np.array([r.owner for r in rows], dtype=object)
        self.exclude = [set(r.exclude_artists or []) for r in rows]
        n = len(rows)
        self.genre_min = np.full((n, len(labels)), np.inf)
        for i, r in enumerate(rows):
            for g, lo in (r.genres or {}).items():
                if g in self.labels:
                    self.genre_min[i, self.labels.index(g)] = lo
        self.has_genres = np.isfinite(self.genre_min).any(axis=1)
        self.min_similarity = np.array([r.min_similarity for r in rows], dtype=np.float64)
        refs, owner_of = [], []
        for i, r in enumerate(rows):
            if r.like_vectors:
                v = np.frombuffer(r.like_vectors, dtype=np.float32).reshape(-1, dim)
                refs.append(v)
                owner_of += [i] * len(v)
        self.refs = np.concatenate(refs) if refs else np.zeros((0, dim), np.float32)
        self.ref_watch = np.asarray(owner_of, dtype=int)
        # `like` given, its vectors or not: a watch never widens to genres-only or to anything
        self.has_like = np.array([bool(r.like_ids) for r in rows], dtype=bool)
        self.has_like[self.ref_watch] = True
        self.conditions = _Conditions([r.conditions for r in rows])

    def match(
        self, probs: np.ndarray, vector: np.ndarray, owner: str, artist_key: str, values=None
    ):
        """[(watch index, score)] of the watches this track matches (`values`: the track's
        descriptor columns, catalog.records.descriptor_columns)."""
        ok = self.owners != owner
        reached = probs[None, :] >= self.genre_min
        genre_score = np.where(reached, probs[None, :], -np.inf).max(axis=1)
        ok &= ~self.has_genres | reached.any(axis=1)
        similarity = np.full(len(self.pks), -np.inf)
        if len(self.refs):
            np.maximum.at(similarity, self.ref_watch, self.refs @ vector)
        ok &= ~self.has_like | (similarity >= self.min_similarity)
        met, fit = self.conditions.meet(values or {})
        ok &= met
        has_conditions = self.conditions.has
        # no criteria: matches nothing, never everything
        ok &= self.has_genres | self.has_like | has_conditions
        score = np.where(self.has_like, similarity, np.where(self.has_genres, genre_score, fit))
        ok &= np.isfinite(score)
        return [
            (int(i), float(score[i]))
            for i in np.flatnonzero(ok)
            if not (artist_key and artist_key in self.exclude[i])
        ]


_COMPILED: dict = {}  # per database URL


def _watches_signature(conn):
    """Changes whenever an active watch is added, changed, disabled or deleted."""
    return tuple(
        conn.execute(
            sa.select(
                sa.func.count(), sa.func.max(watches.c.updated_at), sa.func.sum(watches.c.pk)
            ).where(watches.c.active.is_(True))
        ).one()
    )


def _compiled(db, conn, labels: list[str]) -> _Compiled:
    key = str(db.engine.url)
    signature = _watches_signature(conn)
    found = _COMPILED.get(key)
    if found is None or found.signature != signature or found.labels != labels:
        rows = conn.execute(
            sa.select(
                watches.c.pk,
                watches.c.id,
                watches.c.owner,
                watches.c.genres,
                watches.c.like_ids,
                watches.c.like_vectors,
                watches.c.min_similarity,
                watches.c.exclude_artists,
                watches.c.conditions,
            ).where(watches.c.active.is_(True))
        ).fetchall()
        found = _COMPILED[key] = _Compiled(rows, labels, db.dim, signature)
    return found


def match(db, conn, row: dict, vector) -> list[tuple[int, str, float]]:
    """Inside the transaction adding a track: [(watch pk, watch id, score)] of every active
    watch of other accounts it matches (none without the notify consent)."""
    if "notify" not in row["consent"]:
        return []
    labels = list(row["probabilities"])
    compiled = _compiled(db, conn, labels)
    if not compiled.pks:
        return []
    probs = np.array([row["probabilities"][g] for g in labels])
    v = np.asarray(vector, dtype=np.float32)
    values = descriptor_columns(row.get("descriptors"))
    hits = compiled.match(probs, v, row["owner"], row["artist_key"], values)
    return [(compiled.pks[i], compiled.ids[i], score) for i, score in hits]


def queue_deliveries(conn, matched: list[tuple[int, str, float]], row: dict) -> None:
    """Each match's row and its webhook in the outbox, in the track's transaction."""
    now = clock.now()
    for watch_pk, watch_id, score in matched:
        _record_match(conn, watch_pk, watch_id, row, score, now)


def match_new_track(db, conn, track_pk: int, row: dict, vector) -> int:
    """match + queue_deliveries (for callers that measure matching alone); the number."""
    matched = match(db, conn, row, vector)
    queue_deliveries(conn, matched, row)
    return len(matched)


def _record_match(conn, watch_pk: int, watch_id: str, row: dict, score: float, now) -> None:
    summary = {
        "title": row["title"],
        "artist": row["artist"],
        "artist_id": row.get("artist_id"),
        "genres": {g: round(p, 4) for g, p in row["probabilities"].items()},
        "top3": row["top3"],
        "descriptors": row.get("descriptors"),
    }
    conn.execute(
        watch_matches.insert().values(
            watch_pk=watch_pk, track_id=row["id"], score=score, summary=summary, created_at=now
        )
    )
    data = {
        "watch_id": watch_id,
        "track_id": row["id"],
        "score": round(score, 6),
        **summary,
        "catalog_url": f"{settings().public_url.rstrip('/')}/tracks/{row['id']}/similar",
    }
    _enqueue(conn, watch_pk, "watch.match", data, row["id"], now)


def _enqueue(conn, watch_pk: int, event: str, data: dict, track_id, now) -> str:
    msg_id = "msg_" + uuid.uuid4().hex
    body = json.dumps(  # strict JSON: a NaN or an Infinity is a bug, not a payload
        {"type": event, "timestamp": now.isoformat(), "data": data},
        separators=(",", ":"),
        allow_nan=False,
    )
    conn.execute(
        deliveries.insert().values(
            id=msg_id,
            watch_pk=watch_pk,
            track_id=track_id,
            event_type=event,
            payload=body,
            status="pending",
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
    )
    return msg_id


def forget_track(db, conn, track_id: str, erase: bool = True) -> None:
    """Inside the transaction erasing a track (or withdrawing its notify consent, erase
    False): cancel its deliveries not yet made and drop it from every watch's reference
    tracks (its vector too). Erasure also removes its matches and scrubs the bodies of its
    deliveries, so nothing of the track stays in the catalog (a body already delivered is
    the receiver's)."""
    conn.execute(
        deliveries.update()
        .where(deliveries.c.track_id == track_id, deliveries.c.status == "pending")
        .values(status="cancelled", last_error="the track was erased or its consent withdrawn")
    )
    if erase:
        conn.execute(watch_matches.delete().where(watch_matches.c.track_id == track_id))
        conn.execute(
            deliveries.update()
            .where(deliveries.c.track_id == track_id)
            .values(payload='{"erased":true}')
        )
    # JSON containment differs by engine: read the (few) watches naming it in Python
    for w in conn.execute(sa.select(watches.c.pk, watches.c.like_ids)).fetchall():
        if track_id in (w.like_ids or []):
            remaining = [i for i in w.like_ids if i != track_id]
            vecs = []
            for i in remaining:
                r = conn.execute(sa.select(tracks.c.pk).where(tracks.c.id == i)).first()
                v = None if r is None else vectors.track_vector(db, conn, r.pk)
                if v is not None:
                    vecs.append(v)
            now = clock.now()
            conn.execute(
                watches.update()
                .where(watches.c.pk == w.pk)
                .values(
                    like_ids=remaining,
                    like_vectors=np.stack(vecs).astype(np.float32).tobytes() if vecs else None,
                    updated_at=now,
                )
            )
            if not vecs:  # like was its narrowing criterion: without it, it would widen
                disable(
                    conn,
                    w.pk,
                    "its reference tracks (like) were erased or their notify consent "
                    "withdrawn: edit its criteria and enable it again",
                    now,
                )


def disable(conn, watch_pk: int, reason: str, now) -> bool:
    """Disable an active watch with the reason its owner sees in GET /watches/{id}, and tell
    the owner by a `watch.disabled` event (sent although the watch is disabled). False when
    it was not active (nothing is sent twice)."""
    done = conn.execute(
        watches.update()
        .where(watches.c.pk == watch_pk, watches.c.active.is_(True))
        .values(active=False, disabled_reason=reason, updated_at=now)
    )
    if done.rowcount != 1:
        return False
    wid, name = conn.execute(
        sa.select(watches.c.id, watches.c.name).where(watches.c.pk == watch_pk)
    ).one()
    data = {"watch_id": wid, "name": name, "reason": reason}
    _enqueue(conn, watch_pk, "watch.disabled", data, None, now)
    return True


def send_test(db, owner: str, watch_id: str) -> str:
    """Queue a `watch.test` event for the watch's webhook; returns its webhook-id."""
    with db.begin() as conn:
        row = _own(conn, owner, watch_id)
        return _enqueue(
            conn, row.pk, "watch.test", {"watch_id": row.id, "name": row.name}, None, clock.now()
        )


def forget_expired_secrets(db) -> int:
    """Erase every previous signing secret whose overlap has ended (run by every delivery
    worker's housekeeping, catalog.delivery.housekeeping); returns how many were erased."""
    now = clock.now()
    with db.begin() as conn:
        done = conn.execute(
            watches.update()
            .where(watches.c.previous_secret_until < now)
            .values(previous_secret=None, previous_secret_until=None)
        )
    return done.rowcount


MAX_PAGE = 100


def _page(db, owner: str, listing: str, table, watch_pk: int, limit: int, cursor):
    """Rows of `table` of one watch, newest first, `limit` at a time: (rows, next cursor)."""
    if not 1 <= limit <= MAX_PAGE:
        raise _bad(f"limit: 1 to {MAX_PAGE}, not {limit}")
    q = sa.select(table).where(table.c.watch_pk == watch_pk)
    if cursor:
        q = q.where(table.c.pk < cursors.decode(db, owner, listing, cursor))
    return q.order_by(table.c.pk.desc()).limit(limit + 1)


def _next(db, owner: str, listing: str, rows: list, limit: int):
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, cursors.encode(db, owner, listing, rows[-1].pk)


def matches(db, owner: str, watch_id: str, limit: int = MAX_PAGE) -> list[dict]:
    """The watch's newest matches (the first page of matches_page)."""
    return matches_page(db, owner, watch_id, limit)[0]


def matches_page(
    db, owner: str, watch_id: str, limit: int = MAX_PAGE, cursor: str | None = None
) -> tuple[list[dict], str | None]:
    """The watch's matches, newest first: (page, next cursor or None)."""
    listing = "matches:" + watch_id
    with db.connect() as conn:
        row = _own(conn, owner, watch_id)
        q = _page(db, owner, listing, watch_matches, row.pk, limit, cursor)
        rows = conn.execute(q).fetchall()
    rows, nxt = _next(db, owner, listing, rows, limit)
    return [
        {
            "track_id": r.track_id,
            "score": r.score,
            "artist_id": None,  # matches recorded before artist ids were listed
            **r.summary,
            "created_at": clock.aware(r.created_at).isoformat(),
        }
        for r in rows
    ], nxt


def delivery_log(db, owner: str, watch_id: str, limit: int = MAX_PAGE) -> list[dict]:
    """The watch's newest deliveries (the first page of delivery_page)."""
    return delivery_page(db, owner, watch_id, limit)[0]


def delivery_page(
    db, owner: str, watch_id: str, limit: int = MAX_PAGE, cursor: str | None = None
) -> tuple[list[dict], str | None]:
    """Deliveries, newest first, each with its attempts (status, latency, error, head):
    (page, next cursor or None)."""
    listing = "deliveries:" + watch_id
    with db.connect() as conn:
        row = _own(conn, owner, watch_id)
        q = _page(db, owner, listing, deliveries, row.pk, limit, cursor)
        ds, nxt = _next(db, owner, listing, conn.execute(q).fetchall(), limit)
        attempts = {}
        if ds:
            for a in conn.execute(
                sa.select(delivery_attempts)
                .where(delivery_attempts.c.delivery_pk.in_([d.pk for d in ds]))
                .order_by(delivery_attempts.c.pk)
            ):
                attempts.setdefault(a.delivery_pk, []).append(
                    {
                        "at": clock.aware(a.attempted_at).isoformat(),
                        "status_code": a.status_code,
                        "latency_ms": round(a.latency_ms, 1),
                        "error": a.error,
                        "response": a.response_head,
                    }
                )
    return [
        {
            "id": d.id,
            "event": d.event_type,
            "track_id": d.track_id,
            "status": d.status,
            "attempts": attempts.get(d.pk, []),
            "next_attempt_at": clock.aware(d.next_attempt_at).isoformat()
            if d.status == "pending"
            else None,
            "last_error": d.last_error,
        }
        for d in ds
    ], nxt


def redeliver(db, owner: str, watch_id: str, delivery_id: str) -> dict:
    """Send a delivery again now (same webhook-id, so the receiver can deduplicate)."""
    with db.begin() as conn:
        row = _own(conn, owner, watch_id)
        d = conn.execute(
            sa.select(deliveries).where(
                deliveries.c.id == delivery_id, deliveries.c.watch_pk == row.pk
            )
        ).first()
        if d is None:
            raise GenreError("not_found", f"no delivery {delivery_id!r} of this watch")
        if d.status == "cancelled":
            raise GenreError("conflict", f"this delivery was cancelled ({d.last_error})")
        if d.track_id is not None:
            # locked FOR SHARE (PostgreSQL) until this commits: a withdrawal or erasure
            # waits, then cancels the delivery made pending here
            t = conn.execute(
                sa.select(tracks.c.consent_notify)
                .where(tracks.c.id == d.track_id)
                .with_for_update(read=True)
            ).first()
            if t is None:
                raise GenreError("conflict", "the track of this delivery was erased")
            if not t.consent_notify:
                raise GenreError(
                    "conflict", "the track's owner withdrew the notify consent: not sent again"
                )
        done = conn.execute(
            deliveries.update()
            .where(deliveries.c.pk == d.pk, deliveries.c.status != "cancelled")
            .values(status="pending", next_attempt_at=clock.now())  # a lease held stays held
        )
        if done.rowcount != 1:
            raise GenreError("conflict", "this delivery was cancelled meanwhile")
    return {"id": delivery_id, "status": "pending"}
