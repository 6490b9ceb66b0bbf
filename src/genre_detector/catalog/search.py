"""Search by sound and by brief: tracks and artists whose embeddings are nearest (cosine),
and tracks whose descriptors meet filters (catalog.filters), ranked by how well they fit.

    search.similar_tracks(db, vector, k=10, genre=None, exclude_artist="", min_score=None,
                          exclude_id=None, filters=None)
    search.similar_artists(db, owner, "Artist name", k=10)    # or artist_id="..."
    search.by_filters(db, owner, filters, limit=20, cursor=None)   # GET /tracks/search

Results carry only what any caller may see of a consented track: id, title, artist, its
artist's id (`artist_id`, the uploading account's artist: GET /artists/similar?artist_id=),
score, genre, top-3 and descriptors, never its owner or other stored fields.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import sqlalchemy as sa

from genre_detector.catalog import cursors, vectors
from genre_detector.catalog.filters import VOICE_MIN, Filters
from genre_detector.catalog.records import artist_key
from genre_detector.catalog.schema import account_artists, artists, track_filters, tracks
from genre_detector.errors import GenreError

MAX_K = 100
MAX_LIMIT = 100


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
    filters: Filters | None = None,
) -> list[dict]:
    """The k most similar searchable tracks, best first: [{id, title, artist, artist_id,
    score, genre, top3, descriptors}], score = cosine similarity in [-1, 1]; never
    `exclude_id` nor a track of the audio `exclude_sha256` (the query itself), nor (given)
    any track of `exclude_artist` (compared case-insensitively). `filters`
    (catalog.filters): only tracks meeting them (an exact search over those tracks)."""
    check_k(k)
    key = artist_key(exclude_artist) if exclude_artist else None
    # room for the query itself: one row, or the same audio held by up to 5 accounts
    extra = 5 if exclude_sha256 is not None else 1
    with db.connect() as conn:  # one transaction (PostgreSQL's scan settings are per one)
        if filters is not None and not filters.empty():
            tf = track_filters
            where, joined = conditions(filters), tf
            if genre:
                where.append(tf.c.top_genre == genre)
            if key:
                joined = tf.join(tracks, tracks.c.pk == tf.c.track_pk)
                where.append(tracks.c.artist_key != key)
            hits = vectors.nearest_filtered(db, conn, vector, k + extra, joined, tf, where)
        else:
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
    filters: Filters | None = None,
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
        filters=filters,
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


# ---------------------------------------------------------------- search by brief


def conditions(f: Filters, t=track_filters) -> list:
    """The SQL conditions of the filters on schema.track_filters (bound parameters only; a
    null column meets no condition on it). Every stored track has consented to search (a
    withdrawal of search is an erasure), so none is needed for consent."""
    out = []
    if f.genres:
        out.append(t.c.top_genre.in_(list(f.genres)))
    if f.quadrants:
        out.append(t.c.quadrant.in_([q for q, _ in f.quadrants]))
    for g, lo in f.gems:
        out.append(t.c[f"gems_{g}"] >= lo)
    if f.bpm is not None:
        out.append(sa.or_(*(t.c.bpm.between(lo, hi) for lo, hi, _ in f.bpm_windows())))
    if f.key is not None:
        codes = f.camelot_codes
        out.append(t.c.camelot.in_(codes) if len(codes) > 1 else t.c.camelot == codes[0])
    for v in f.voice:
        if v == "vocal":
            out.append(t.c.voice_instrumental < VOICE_MIN)
        else:
            out.append(t.c[f"voice_{v}"] >= VOICE_MIN)
    for name in f.instruments:
        out.append(t.c.instruments.like(f"%,{name},%"))
    return out


def fit(f: Filters, t=track_filters):
    """How well a track meets the filters, in [0, 1] (catalog.filters says how): an SQL
    expression, the mean of one score per filter given."""
    terms = []
    if f.genres:
        terms.append(t.c.top_probability)
    if len(f.quadrants) == 1:  # the bare column: its index gives the order
        terms.append(t.c[f"mood_{f.quadrants[0][0].lower()}"])
    elif f.quadrants:
        total = sum(w for _, w in f.quadrants) or 1.0
        terms.append(
            sum(
                (sa.func.coalesce(t.c[f"mood_{q.lower()}"], 0.0) * (w / total))
                for q, w in f.quadrants
            )
        )
    for g, _ in f.gems:
        terms.append(t.c[f"gems_{g}"])
    if f.bpm is not None:
        lo, hi = f.bpm
        centre, half = (lo + hi) / 2, max((hi - lo) / 2, 1.0)
        whens = [
            (t.c.bpm.between(a, b), 1.0 - sa.func.abs(t.c.bpm / factor - centre) / half)
            for a, b, factor in f.bpm_windows()
        ]
        terms.append(sa.case(*whens, else_=0.0))
    if f.key is not None:
        terms.append(sa.case((t.c.camelot == f.key, 1.0), else_=0.75))
    for v in f.voice:
        if v == "vocal":
            terms.append(1.0 - t.c.voice_instrumental)
        else:
            terms.append(t.c[f"voice_{v}"])
    if not terms:
        return t.c.top_probability
    if len(terms) == 1:  # one column (genre, one quadrant, one emotion, one voice): indexed
        return terms[0]
    return sum(terms[1:], terms[0]) / float(len(terms))


def listing_key(f: Filters) -> str:
    """A short digest of the filters: a cursor is bound to the filters it was made for."""
    return hashlib.sha256(json.dumps(f.as_dict(), sort_keys=True).encode()).hexdigest()[:24]


PUBLIC = ("id", "title", "artist", "artist_id", "top_genre", "top3", "descriptors")


def by_filters(
    db, owner: str, f: Filters, limit: int = 20, cursor: str | None = None
) -> tuple[list[dict], str | None, dict | None]:
    """GET /tracks/search: the search-consented tracks (any account's) meeting every filter,
    best fit first (ties: newest first), `limit` at a time. (results [{id, title, artist,
    genre, top3, descriptors, fit}], next cursor or None, why: None, or when there are no
    results, how many tracks meet each filter alone). The cursor is bound to the account
    and to these filters."""
    if not 1 <= limit <= MAX_LIMIT:
        raise GenreError("bad_parameter", f"limit: 1 to {MAX_LIMIT}, not {limit}")
    listing = "search:" + listing_key(f)
    offset = cursors.decode(db, owner, listing, cursor) if cursor else 0
    ranked = _ranked(f, offset, limit + 1).subquery()
    q = (
        sa.select(ranked.c.fit, *(tracks.c[c] for c in PUBLIC))
        .join_from(ranked, tracks, tracks.c.pk == ranked.c.track_pk)
        .order_by(ranked.c.fit.desc(), ranked.c.track_pk.desc())
    )
    with db.connect() as conn:
        ranked = conn.execute(q).fetchall()
        why = None
        if not ranked and offset == 0:
            why = _why_empty(conn, f)
        if why is not None and len(_groups(f)) > 1:
            why["closest"] = _closest(conn, f, limit)
    more = len(ranked) > limit
    nxt = cursors.encode(db, owner, listing, offset + limit) if more else None
    return [_public(r) for r in ranked[:limit]], nxt, why


def _public(r, **more) -> dict:
    return {
        "id": r.id,
        "title": r.title,
        "artist": r.artist,
        "artist_id": r.artist_id,
        "genre": r.top_genre,
        "top3": r.top3,
        "descriptors": r.descriptors,
        "fit": round(float(r.fit), 4) if r.fit is not None else None,
        **more,
    }


def _groups(f: Filters) -> dict[str, Filters]:
    """The filters given, one per kind (what `why` counts and `closest` relaxes)."""
    parts = {
        "genre": Filters(genres=f.genres),
        "mood": Filters(quadrants=f.quadrants, gems=f.gems),
        "bpm": Filters(bpm=f.bpm, bpm_octave=f.bpm_octave),
        "key": Filters(key=f.key, compatible=f.compatible),
        "voice": Filters(voice=f.voice),
        "instruments": Filters(instruments=f.instruments),
    }
    return {name: part for name, part in parts.items() if not part.empty()}


def _closest(conn, f: Filters, limit: int) -> list[dict]:
    """When no track meets every filter: the tracks meeting the most of them (at least one),
    then the best fit, each naming the filters it does not meet (`unmet`). A scan of the
    narrow filter rows, run only for an empty first page."""
    tf = track_filters
    groups = _groups(f)
    met = {name: sa.case((sa.and_(*conditions(part)), 1), else_=0) for name, part in groups.items()}
    n_met = sum(met.values(), sa.literal(0)).label("n_met")
    score = sa.func.coalesce(fit(f), 0.0).label("fit")
    ranked = (
        sa.select(tf.c.track_pk, n_met, score, *(m.label(f"met_{k}") for k, m in met.items()))
        .where(n_met > 0)
        .order_by(n_met.desc(), score.desc(), tf.c.track_pk.desc())
        .limit(limit)
        .subquery()
    )
    rows = conn.execute(
        sa.select(ranked, *(tracks.c[c] for c in PUBLIC))
        .join_from(ranked, tracks, tracks.c.pk == ranked.c.track_pk)
        .order_by(ranked.c.n_met.desc(), ranked.c.fit.desc(), ranked.c.track_pk.desc())
    ).fetchall()
    return [_public(r, unmet=[k for k in groups if not getattr(r, f"met_{k}")]) for r in rows]


def _ranked(f: Filters, offset: int, n: int):
    """(track_pk, fit) of the matches ranked offset..offset+n, on the narrow rows. A tempo
    range alone (narrower than an octave) or a key alone is ranked by index order: the n
    nearest tempos above and below the centre of each window, or the n newest of each
    Camelot code, then the best of those; anything else sorts every match by its fit."""
    tf = track_filters
    score = fit(f).label("fit")
    need = offset + n
    parts = []
    if f == Filters(bpm=f.bpm, bpm_octave=f.bpm_octave) and f.bpm and f.bpm[1] < 2 * f.bpm[0]:
        centre = (f.bpm[0] + f.bpm[1]) / 2
        for lo, hi, factor in f.bpm_windows():
            mid = centre * factor
            parts += [
                sa.select(tf.c.track_pk, score)
                .where(tf.c.bpm >= mid, tf.c.bpm <= hi)
                .order_by(tf.c.bpm.asc(), tf.c.track_pk.desc())
                .limit(need),
                sa.select(tf.c.track_pk, score)
                .where(tf.c.bpm >= lo, tf.c.bpm < mid)
                .order_by(tf.c.bpm.desc(), tf.c.track_pk.desc())
                .limit(need),
            ]
    elif f == Filters(key=f.key, compatible=f.compatible) and f.key:
        parts = [
            sa.select(tf.c.track_pk, score)
            .where(tf.c.camelot == code)
            .order_by(tf.c.track_pk.desc())
            .limit(need)
            for code in f.camelot_codes
        ]
    if parts:
        best = sa.union(*(sa.select(p.subquery()) for p in parts)).subquery()
        return (
            sa.select(best.c.track_pk, best.c.fit)
            .order_by(best.c.fit.desc(), best.c.track_pk.desc())
            .offset(offset)
            .limit(n)
        )
    return (
        sa.select(tf.c.track_pk, score)
        .where(*conditions(f))
        .order_by(score.desc(), tf.c.track_pk.desc())
        .offset(offset)
        .limit(n)
    )


def _why_empty(conn, f: Filters) -> dict:
    """Why a search found nothing: how many searchable tracks meet each filter alone, and
    how many have no value for it (stored before mood and voice were tagged)."""
    tf = track_filters
    alone = {}
    for name, part in _groups(f).items():
        n = conn.execute(
            sa.select(sa.func.count()).select_from(tf).where(*conditions(part))
        ).scalar_one()
        alone[name] = n
    total = conn.execute(sa.select(sa.func.count()).select_from(tf)).scalar_one()
    no_mood = conn.execute(
        sa.select(sa.func.count()).select_from(tf).where(tf.c.quadrant.is_(None))
    ).scalar_one()
    zero = [n for n, c in alone.items() if c == 0]
    if zero:
        message = f"no searchable track meets {', '.join(zero)} on its own"
    else:
        message = "each filter alone is met by some tracks, but no track meets them all"
    return {
        "message": message,
        "searchable_tracks": total,
        "tracks_meeting_each_filter_alone": alone,
        "tracks_without_mood": no_mood,
    }
