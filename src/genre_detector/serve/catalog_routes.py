"""The catalog's HTTP routes (the uploads, POST /tracks and POST /similar, are BentoML APIs in
serve/service.py and call `store_upload` / `search_upload` here):

    GET    /tracks?artist=&genre=&limit=&cursor=     the key's own tracks
    GET    /tracks/{id}                              one of them, every stored field
    DELETE /tracks/{id}                              erase it (row, vector, artist share)
    GET    /tracks/{id}/similar?k=&genre=&exclude_same_artist=&min_score=
    GET    /artists/similar?artist=NAME&k=

Writes and owner reads need `Authorization: Bearer KEY` (401 without); another account's
track is 404, never 403. Search answers only consented tracks with public fields. The
database unreachable or locked: 503 db_unavailable with Retry-After, never a 500. Blocking
database calls run in a worker thread, not on the event loop.
"""

from __future__ import annotations

import logging
import threading

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from genre_detector.catalog import keys, search, tracks
from genre_detector.catalog.db import Catalog, CatalogUnavailable
from genre_detector.catalog.records import Consent, record_from_result, sha256_of
from genre_detector.config import settings
from genre_detector.errors import GenreError

logger = logging.getLogger("bentoml.genre_detector")
RETRY_AFTER_S = 5


class CatalogHandle:
    """The service's catalog, opened (and migrated) on first use rather than at import or
    start-up, so that /predict serves while the database is down; a failed open is retried
    by the next request."""

    def __init__(self, url: str | None = None, dim: int | None = None):
        self.url, self.dim = url, dim
        self._db: Catalog | None = None
        self._lock = threading.Lock()

    def get(self) -> Catalog:
        if self._db is None:
            with self._lock:
                if self._db is None:
                    self._db = Catalog.open(self.url or settings().database_url(), dim=self.dim)
                    logger.info("catalog open: %s (%s)", self._db.dialect, self._db.dim)
        return self._db


def error_response(exc: GenreError) -> JSONResponse:
    headers = {"Retry-After": str(RETRY_AFTER_S)} if exc.code == "db_unavailable" else {}
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


def int_param(params, name: str, default: int, lo: int, hi: int) -> int:
    raw = params.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise GenreError("bad_parameter", f"{name}: an integer from {lo} to {hi}") from None
    if not lo <= value <= hi:
        raise GenreError("bad_parameter", f"{name}: {lo} to {hi}, not {value}")
    return value


def float_param(params, name: str, lo: float, hi: float) -> float | None:
    raw = params.get(name)
    if raw in (None, ""):
        return None
    try:
        value = float(raw)
    except ValueError:
        raise GenreError("bad_parameter", f"{name}: a number from {lo:g} to {hi:g}") from None
    if not lo <= value <= hi:
        raise GenreError("bad_parameter", f"{name}: {lo:g} to {hi:g}, not {raw}")
    return value


def bool_param(params, name: str, default: bool) -> bool:
    raw = params.get(name)
    if raw in (None, ""):
        return default
    if raw.lower() in {"1", "true", "yes"}:
        return True
    if raw.lower() in {"0", "false", "no"}:
        return False
    raise GenreError("bad_parameter", f"{name}: true or false, not {raw!r}")


def genre_param(params, labels: list[str]) -> str | None:
    genre = params.get("genre") or None
    if genre is not None and genre not in labels:
        raise GenreError("bad_parameter", f"genre: one of {', '.join(labels)}, not {genre!r}")
    return genre


def search_options(params, labels: list[str]) -> dict:
    """k, genre, exclude_same_artist, min_score from query parameters (or form fields)."""
    return {
        "k": int_param(params, "k", 10, 1, search.MAX_K),
        "genre": genre_param(params, labels),
        "exclude_same_artist": bool_param(params, "exclude_same_artist", True),
        "min_score": float_param(params, "min_score", -1.0, 1.0),
    }


async def store_upload(handle: CatalogHandle, authorization, fields: dict, data: bytes, score):
    """POST /tracks: (status, body). The key, the consent and whether the owner has this
    audio already are checked before `await score()` (-> (TrackResult, projection)) runs,
    so a refused or repeated upload costs no model time."""
    from genre_detector.audio.tags import read_tags

    db = await run_in_threadpool(handle.get)
    owner = await run_in_threadpool(keys.authenticate, db, authorization)
    consent = Consent.parse(fields.get("consent"))
    sha = sha256_of(data)
    existing = await run_in_threadpool(tracks.by_sha256, db, owner, sha)
    if existing is not None:
        return 200, {**existing, "created": False}
    result, projection = await score()
    tag_title, tag_artist = read_tags(data)
    title, artist = fields.get("title") or tag_title, fields.get("artist") or tag_artist
    record = record_from_result(result, projection, sha, title, artist)
    row, created = await run_in_threadpool(tracks.add, db, owner, record, consent)
    return (201 if created else 200), {**row, "created": created}


async def search_upload(handle: CatalogHandle, params, labels, data: bytes, score) -> dict:
    """POST /similar: the catalog's tracks most like an uploaded clip (which is not stored).
    Catalog tracks of the very same audio are left out, and with exclude_same_artist the
    clip's own tagged artist."""
    from genre_detector.audio.tags import read_tags

    opts = search_options(params, labels)
    result, projection = await score()
    artist = read_tags(data)[1] if opts["exclude_same_artist"] else ""
    db = await run_in_threadpool(handle.get)
    results = await run_in_threadpool(
        search.similar_tracks,
        db,
        projection.apply(result.embedding),
        opts["k"],
        opts["genre"],
        artist or None,
        opts["min_score"],
        None,
        sha256_of(data),
    )
    query = {"artist": artist, "genre": result.ensemble.top_genre, **opts}
    return {"results": results, "query": query}


def catalog_app(handle: CatalogHandle, labels: list[str]) -> Starlette:
    """The Starlette app of the GET/DELETE routes, mounted at the root (BentoML mounts it
    passively: it answers only the paths it has)."""

    async def call(fn, *args, **kwargs):
        try:
            return await run_in_threadpool(fn, *args, **kwargs)
        except GenreError as exc:  # CatalogUnavailable, Unauthorized, bad parameters, ...
            return error_response(exc)

    def _owner(request) -> str:
        return keys.authenticate(handle.get(), request.headers.get("authorization"))

    def _list(request):
        owner, p = _owner(request), request.query_params
        rows, cursor = tracks.listing(
            handle.get(),
            owner,
            artist=p.get("artist") or None,
            genre=genre_param(p, labels),
            limit=int_param(p, "limit", 50, 1, tracks.MAX_LIMIT),
            cursor=p.get("cursor") or None,
        )
        return JSONResponse({"tracks": rows, "next_cursor": cursor})

    def _get(request):
        owner, track_id = _owner(request), request.path_params["track_id"]
        row = tracks.get(handle.get(), owner, track_id)
        if row is None:
            raise GenreError("not_found", f"no track {track_id!r} in your catalog")
        return JSONResponse(row)

    def _delete(request):
        owner, track_id = _owner(request), request.path_params["track_id"]
        if not tracks.delete(handle.get(), owner, track_id):
            raise GenreError("not_found", f"no track {track_id!r} in your catalog")
        return Response(status_code=204)

    def _similar(request):
        opts = search_options(request.query_params, labels)
        query, results = search.similar_to_track(
            handle.get(), request.path_params["track_id"], **opts
        )
        return JSONResponse({"results": results, "query": {**query, **opts}})

    def _artists(request):
        p = request.query_params
        artist = (p.get("artist") or "").strip()
        if not artist:
            raise GenreError("bad_parameter", "artist: the name of an artist in the catalog")
        k = int_param(p, "k", 10, 1, search.MAX_K)
        me, results = search.similar_artists(handle.get(), artist, k)
        return JSONResponse({"results": results, "query": {**me, "k": k}})

    def route(path, fn, methods):
        async def endpoint(request):
            return await call(fn, request)

        return Route(path, endpoint, methods=methods)

    return Starlette(
        routes=[
            route("/tracks", _list, ["GET"]),
            route("/tracks/{track_id}", _get, ["GET"]),
            route("/tracks/{track_id}", _delete, ["DELETE"]),
            route("/tracks/{track_id}/similar", _similar, ["GET"]),
            route("/artists/similar", _artists, ["GET"]),
        ]
    )


__all__ = ["CatalogHandle", "CatalogUnavailable", "catalog_app", "search_upload", "store_upload"]
