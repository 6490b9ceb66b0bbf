"""The catalog's HTTP routes (the uploads, POST /tracks and POST /similar, are BentoML APIs in
serve/service.py and call `store_upload` / `search_upload` here):

    GET    /tracks?artist=&genre=&limit=&cursor=     the key's own tracks
    GET    /tracks/{id}                              one of them, every stored field
    DELETE /tracks/{id}                              erase it (row, vector, artist share)
    GET    /tracks/{id}/similar?k=&genre=&exclude_same_artist=&min_score=
    GET    /artists/similar?artist=NAME&k=
    PATCH  /tracks/{id}          {"consent": "search" | "search,notify"}: withdraw or give notify
    POST   /watches   GET /watches   GET|PATCH|DELETE /watches/{id}
    POST   /watches/{id}/rotate-secret   POST /watches/{id}/test
    GET    /watches/{id}/matches   GET /watches/{id}/deliveries
    POST   /watches/{id}/deliveries/{delivery_id}/redeliver

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

from genre_detector.catalog import ingest, keys, search, tracks, watches
from genre_detector.catalog.db import Catalog, CatalogUnavailable
from genre_detector.catalog.records import Consent, record_from_result, sha256_of
from genre_detector.config import settings
from genre_detector.errors import GenreError

logger = logging.getLogger("bentoml.genre_detector")
RETRY_AFTER_S = 5
MAX_JSON_BYTES = 16 * 1024  # a watch's JSON body


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
                    db = Catalog.open(self.url or settings().database_url(), dim=self.dim)
                    if self.dim and db.dim != self.dim:
                        db.close()
                        raise GenreError(
                            "catalog_unavailable",
                            f"the catalog stores {db.dim}-number embeddings, the served "
                            f"projection makes {self.dim}: use a catalog made for these models",
                        )
                    self._db = db
                    logger.info("catalog open: %s (%s)", db.dialect, db.dim)
        return self._db


def start_delivery_thread(handle: CatalogHandle) -> threading.Thread:
    """The service's own webhook delivery worker (GENRE_DELIVER_IN_SERVICE): a daemon
    thread; what it has not sent when the process ends waits in the outbox."""
    from genre_detector.catalog.delivery import Worker

    stop = threading.Event()

    def loop():
        worker = None
        while not stop.is_set():
            try:
                worker = worker or Worker(handle.get())
                worker.run(stop)
            except CatalogUnavailable as exc:
                logger.warning("delivery worker waits for the catalog: %s", exc.detail)
                stop.wait(RETRY_AFTER_S)
            except Exception:  # noqa: BLE001  never ends silently: logged, then started again
                logger.exception("delivery worker failed; restarting it")
                worker = None
                stop.wait(RETRY_AFTER_S)

    thread = threading.Thread(target=loop, name="webhook-delivery", daemon=True)
    thread.start()
    return thread


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
    row, created = await run_in_threadpool(ingest.add, db, owner, record, consent)
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
        if not ingest.erase(handle.get(), owner, track_id):
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

    async def _json(request) -> dict:
        data = await request.body()
        if len(data) > MAX_JSON_BYTES:
            raise GenreError("payload_too_large", f"the JSON body: at most {MAX_JSON_BYTES} bytes")
        try:
            import json

            return json.loads(data or b"{}")
        except ValueError:
            raise GenreError("bad_request", "the body is not JSON") from None

    def _patch_track(request, body):
        owner, track_id = _owner(request), request.path_params["track_id"]
        consent = Consent.parse(body.get("consent") if isinstance(body, dict) else None)
        row = ingest.set_notify(handle.get(), owner, track_id, consent.notify)
        if row is None:
            raise GenreError("not_found", f"no track {track_id!r} in your catalog")
        return JSONResponse(row)

    def _watch_create(request, body):
        watch, secret = watches.create(handle.get(), _owner(request), body, labels)
        return JSONResponse({**watch, "secret": secret}, status_code=201)

    def _watch_list(request):
        return JSONResponse({"watches": watches.listing(handle.get(), _owner(request))})

    def _watch_get(request):
        wid = request.path_params["watch_id"]
        return JSONResponse(watches.get(handle.get(), _owner(request), wid))

    def _watch_patch(request, body):
        wid = request.path_params["watch_id"]
        return JSONResponse(watches.update(handle.get(), _owner(request), wid, body, labels))

    def _watch_delete(request):
        watches.delete(handle.get(), _owner(request), request.path_params["watch_id"])
        return Response(status_code=204)

    def _watch_rotate(request):
        wid = request.path_params["watch_id"]
        secret = watches.rotate_secret(handle.get(), _owner(request), wid)
        return JSONResponse({"id": wid, "secret": secret, "previous_valid_for_s": 86400})

    def _watch_test(request):
        wid = request.path_params["watch_id"]
        msg = watches.send_test(handle.get(), _owner(request), wid)
        return JSONResponse({"delivery_id": msg, "status": "pending"}, status_code=202)

    def _watch_matches(request):
        wid = request.path_params["watch_id"]
        return JSONResponse({"matches": watches.matches(handle.get(), _owner(request), wid)})

    def _watch_deliveries(request):
        wid = request.path_params["watch_id"]
        log = watches.delivery_log(handle.get(), _owner(request), wid)
        return JSONResponse({"deliveries": log})

    def _watch_redeliver(request):
        p = request.path_params
        out = watches.redeliver(handle.get(), _owner(request), p["watch_id"], p["delivery_id"])
        return JSONResponse(out, status_code=202)

    def json_route(path, fn, methods):
        async def endpoint(request):
            try:
                body = await _json(request)
            except GenreError as exc:
                return error_response(exc)
            return await call(fn, request, body)

        return Route(path, endpoint, methods=methods)

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
            json_route("/tracks/{track_id}", _patch_track, ["PATCH"]),
            json_route("/watches", _watch_create, ["POST"]),
            route("/watches", _watch_list, ["GET"]),
            route("/watches/{watch_id}", _watch_get, ["GET"]),
            json_route("/watches/{watch_id}", _watch_patch, ["PATCH"]),
            route("/watches/{watch_id}", _watch_delete, ["DELETE"]),
            route("/watches/{watch_id}/rotate-secret", _watch_rotate, ["POST"]),
            route("/watches/{watch_id}/test", _watch_test, ["POST"]),
            route("/watches/{watch_id}/matches", _watch_matches, ["GET"]),
            route("/watches/{watch_id}/deliveries", _watch_deliveries, ["GET"]),
            route(
                "/watches/{watch_id}/deliveries/{delivery_id}/redeliver",
                _watch_redeliver,
                ["POST"],
            ),
        ]
    )


__all__ = ["CatalogHandle", "CatalogUnavailable", "catalog_app", "search_upload", "store_upload"]
