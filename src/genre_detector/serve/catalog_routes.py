"""The catalog's HTTP routes. The uploads, POST /tracks and POST /similar, are BentoML APIs in
serve/service.py that read admit -> score -> store: `admit_upload` / `admit_search` here
(key, consent, duplicate, options, the database up: no model time for a refused request),
the service's own scoring, then `store_upload` / `search_upload` here. The rest are the
module-level handlers below, mounted by `catalog_app` (the catalog is in the app's state):

    GET    /tracks?artist=&genre=&limit=&cursor=     the key's own tracks (+ the filters)
    GET    /tracks/search?q=&genre=&mood=&bpm=&bpm_octave=&key=&compatible=&voice=&limit=&cursor=
    GET    /tracks/{id}                              one of them, every stored field
    DELETE /tracks/{id}                              erase it (row, vector, artist share)
    GET    /tracks/{id}/similar?k=&genre=&exclude_same_artist=&min_score=  (+ the filters)
    GET    /artists/similar?artist=NAME|artist_id=ID&k=
    PATCH  /tracks/{id}          {"consent": "search" | "search,notify"}: withdraw or give notify
    POST   /watches[?dry_run=true]   GET /watches   GET|PATCH|DELETE /watches/{id}
    POST   /watches/{id}/rotate-secret   POST /watches/{id}/test
    GET    /watches/{id}/matches   GET /watches/{id}/deliveries
    POST   /watches/{id}/deliveries/{delivery_id}/redeliver

Writes and owner reads need `Authorization: Bearer KEY` (401 with `WWW-Authenticate: Bearer`
without); another account's track is 404, never 403. Every bad input is a 4xx JSON error
naming the field: JSON bodies are cut at GENRE_MAX_JSON_BYTES while they stream, texts a
database cannot store (NUL, lone surrogates) are refused, cursors are opaque and per account
(catalog.cursors). Search answers only consented tracks with public fields. The
database unreachable or locked: 503 db_unavailable with Retry-After, never a 500. Blocking
database calls run in a worker thread, not on the event loop.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from genre_detector.catalog import briefs, filters, ingest, keys, search, tracks, watches
from genre_detector.catalog.db import Catalog, CatalogUnavailable
from genre_detector.catalog.records import Consent, record_from_result, sha256_of
from genre_detector.config import settings
from genre_detector.errors import GenreError
from genre_detector.serve.budgets import BUDGETS, GateRule, RateLimited, client_address

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
    thread; what it has not sent when the process ends waits in the outbox. It runs the
    catalog's housekeeping (catalog.delivery.housekeeping), as `deliver` does."""
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


def error_headers(exc: GenreError, authorization: str | None = None) -> dict:
    """Retry-After on 503 db_unavailable; WWW-Authenticate (RFC 6750) on 401."""
    if exc.code == "db_unavailable":
        return {"Retry-After": str(RETRY_AFTER_S)}
    if isinstance(exc, RateLimited):
        return exc.verdict.headers()
    if exc.code == "unauthorized":
        challenge = 'Bearer realm="genre-detector"'
        if authorization:
            challenge += ', error="invalid_token"'
        return {"WWW-Authenticate": challenge}
    return {}


def error_response(exc: GenreError, authorization: str | None = None) -> JSONResponse:
    return JSONResponse(
        exc.body(), status_code=exc.status, headers=error_headers(exc, authorization)
    )


def check_text(name: str, value: str) -> str:
    """A text from a request that the databases can store: no NUL, valid UTF-8."""
    if "\x00" in value:
        raise GenreError("bad_parameter", f"{name}: no NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise GenreError("bad_parameter", f"{name}: not valid UTF-8 text") from None
    return value


def check_json_texts(value, where: str = "the body") -> None:
    """Every key and string of a parsed JSON body through check_text, naming the field."""
    if isinstance(value, str):
        check_text(where, value)
    elif isinstance(value, dict):
        for k, v in value.items():
            check_text(f"{where} key", k)
            check_json_texts(v, k if where == "the body" else f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            check_json_texts(v, f"{where}[{i}]")


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
    """k, genre, exclude_same_artist, min_score, and the descriptor filters (mood, bpm, key,
    voice, q: `filters`, `brief`) from query parameters (or form fields)."""
    opts = {
        "k": int_param(params, "k", 10, 1, search.MAX_K),
        "genre": genre_param(params, labels),
        "exclude_same_artist": bool_param(params, "exclude_same_artist", True),
        "min_score": float_param(params, "min_score", -1.0, 1.0),
    }
    found, reading = brief_filters(params, labels, genre=False)
    return {**opts, "filters": found, "brief": reading}


def brief_filters(params, labels: list[str], genre: bool = True):
    """(Filters, the brief's reading or None) from the filter parameters and `q` merged: 400
    bad_parameter for a value out of the vocabulary, a brief over 500 characters, a brief
    of which no word was understood, or filters no track could meet at once."""
    found = filters.from_params(params, labels, genre=genre)
    q = params.get("q")
    reading = None
    if q is not None and q.strip():
        reading = briefs.parse(q, labels)
        if not reading.understood:
            words = ", ".join(reading.not_understood[:10]) or "only filler words"
            raise GenreError(
                "bad_parameter",
                f"q: no word of the brief was understood ({words}); the vocabulary: genre "
                "names, AllMusic mood words, tempo words or '90 bpm', key names, voice and "
                "instrument words (docs/api.md#search)",
            )
        if not genre and reading.filters.genres:  # similar: the genre option is single
            if len(reading.filters.genres) > 1:
                raise GenreError("bad_parameter", "q: one genre at most for similar tracks")
        found = found.merge(reading.filters)
    return found, reading


def identify(db, authorization) -> keys.Identity:
    """keys.identify, remembered by this replica's budgets (for BudgetGate's early 429)."""
    who = keys.identify(db, authorization)
    BUDGETS.remember(authorization, who.key_id)
    return who


@dataclass(frozen=True)
class Admitted:
    """An upload to POST /tracks that may be scored: its owner, consent and hash, checked."""

    owner: str
    consent: Consent
    sha256: str
    fields: dict
    data: bytes


async def admit_upload(handle: CatalogHandle, authorization, fields: dict, data: bytes):
    """POST /tracks, before any model time: the key, the consent and whether the owner has
    this audio already. (Admitted, None) to score and store, or (None, (200, the track)).
    One trip to the thread pool (hashing releases the GIL there)."""
    return await run_in_threadpool(_admit_upload, handle, authorization, fields, data)


def _admit_upload(handle: CatalogHandle, authorization, fields: dict, data: bytes):
    db = handle.get()
    who = identify(db, authorization)
    spend(BUDGETS.take("uploads", who.key_id))
    owner = who.owner
    consent = Consent.parse(fields.get("consent"))
    sha = sha256_of(data)
    existing = tracks.by_sha256(db, owner, sha)
    if existing is not None:
        return None, (200, {**existing, "created": False})
    quota = settings().track_quota
    if tracks.count(db, owner) >= quota:
        raise GenreError("quota_exceeded", f"tracks: an account has at most {quota}")
    return Admitted(owner, consent, sha, fields, data), None


def spend(verdict):
    """The verdict of a bucket, or 429 rate_limited when it was empty."""
    if not verdict.ok:
        raise verdict.error()
    return verdict


async def store_upload(handle: CatalogHandle, admitted: Admitted, result, projection):
    """POST /tracks, after scoring: (status, the stored track)."""
    from genre_detector.audio.tags import read_tags

    tag_title, tag_artist = read_tags(admitted.data)
    title = admitted.fields.get("title") or tag_title
    artist = admitted.fields.get("artist") or tag_artist
    record = record_from_result(result, projection, admitted.sha256, title, artist)
    db = await run_in_threadpool(handle.get)
    quota = settings().track_quota  # checked again in the insert's transaction: exact
    row, created = await run_in_threadpool(
        ingest.add, db, admitted.owner, record, admitted.consent, quota
    )
    return (201 if created else 200), {**row, "created": created}


async def admit_search(handle: CatalogHandle, params, labels, authorization, scope):
    """POST /similar, before any model time: the options checked, the database up, and a
    token of the key's search budget, or without a key (the page's "Tracks like this") of
    the client address's small anonymous one (k <= GENRE_ANONYMOUS_MAX_K). (options, the
    bucket's verdict)."""
    opts = search_options(params, labels)
    db = await run_in_threadpool(handle.get)
    if authorization:
        who = await run_in_threadpool(identify, db, authorization)
        return opts, spend(BUDGETS.take("search", who.key_id))
    max_k = settings().anonymous_max_k
    if opts["k"] > max_k:
        raise GenreError("bad_parameter", f"k: at most {max_k} without an API key")
    verdict = spend(BUDGETS.take("anonymous", client_address(scope)))
    await run_in_threadpool(db.ping)
    return opts, verdict


async def search_upload(handle: CatalogHandle, opts: dict, data: bytes, result, projection):
    """POST /similar, after scoring: the catalog's tracks most like an uploaded clip (which
    is not stored). Catalog tracks of the very same audio are left out, and with
    exclude_same_artist the clip's own tagged artist."""
    from genre_detector.audio.tags import read_tags

    artist = read_tags(data)[1] if opts["exclude_same_artist"] else ""
    db = await run_in_threadpool(handle.get)
    genre, found = _similar_args(opts)
    results = await run_in_threadpool(
        search.similar_tracks,
        db,
        projection.apply(result.embedding),
        opts["k"],
        genre,
        artist or None,
        opts["min_score"],
        None,
        sha256_of(data),
        found,
    )
    return {"results": results, "query": query_reply(opts, artist=artist, **_verdict(result))}


def _similar_args(opts: dict) -> tuple[str | None, object]:
    """(the genre filter, the descriptor filters) of similar-track options: a genre named in
    the brief joins the `genre` option."""
    found = opts["filters"]
    genre = opts["genre"]
    if found.genres:
        if genre and genre not in found.genres:
            raise GenreError(
                "bad_parameter", f"contradictory filters: genre {genre} and {found.genres[0]}"
            )
        genre = genre or found.genres[0]
    return genre, found


def _verdict(result) -> dict:
    return {"genre": result.ensemble.top_genre}


def query_reply(opts: dict, **query) -> dict:
    """A search's `query`: what was searched with (the track's or clip's own `genre`) and
    the options (the genre filter as `genre_filter`, the descriptor filters as `filters`, the
    brief's reading as `brief`)."""
    options = {k: v for k, v in opts.items() if k not in ("genre", "filters", "brief")}
    out = {**query, **options, "genre_filter": opts["genre"]}
    if "filters" in opts:
        out["filters"] = opts["filters"].as_dict()
        out["brief"] = opts["brief"].as_dict() if opts["brief"] is not None else None
    return out


# ---------------------------------------------------------------- the routes
# Module-level handlers: each takes the request and finds the catalog and the labels in the
# app's state (catalog_app sets them). `_sync` handlers run in a worker thread.


def _db(request) -> Catalog:
    return request.app.state.catalog.get()


def _labels(request) -> list[str]:
    return request.app.state.labels


def _owner(request) -> str:
    return request.state.identity.owner  # identified by the route (_endpoint)


def _not_found(what: str, ident: str) -> GenreError:
    return GenreError("not_found", f"no {what} {ident!r} of yours")


def list_tracks(request):
    owner, p = _owner(request), request.query_params
    found, reading = brief_filters(p, _labels(request))
    rows, cursor = tracks.listing(
        _db(request),
        owner,
        artist=p.get("artist") or None,
        limit=int_param(p, "limit", 50, 1, tracks.MAX_LIMIT),
        cursor=p.get("cursor") or None,
        where=search.conditions(found),
        listing="tracks:" + search.listing_key(found) if not found.empty() else "tracks",
    )
    reply = {"tracks": rows, "next_cursor": cursor}
    if not found.empty():
        reply["filters"] = found.as_dict()
        reply["brief"] = reading.as_dict() if reading is not None else None
    return JSONResponse(reply)


def search_tracks(request):
    """GET /tracks/search: every search-consented track meeting the filters, best fit first."""
    p = request.query_params
    found, reading = brief_filters(p, _labels(request))
    if found.empty():
        raise GenreError(
            "bad_parameter",
            "a search needs a brief (q) or a filter: genre, mood, bpm, key or voice "
            "(docs/api.md#search)",
        )
    limit = int_param(p, "limit", 20, 1, search.MAX_LIMIT)
    results, nxt, why = search.by_filters(
        _db(request), _owner(request), found, limit, p.get("cursor") or None
    )
    reply = {
        "results": results,
        "next_cursor": nxt,
        "query": {
            "filters": found.as_dict(),
            "brief": reading.as_dict() if reading is not None else None,
            "ranking": "fit: the mean of one score in [0, 1] per filter (docs/api.md#search)",
            "limit": limit,
        },
    }
    if why is not None:
        reply["why"] = why
    return JSONResponse(reply)


def get_track(request):
    owner, track_id = _owner(request), request.path_params["track_id"]
    row = tracks.get(_db(request), owner, track_id)
    if row is None:
        raise _not_found("track", track_id)
    return JSONResponse(row)


def delete_track(request):
    owner, track_id = _owner(request), request.path_params["track_id"]
    if not ingest.erase(_db(request), owner, track_id):
        raise _not_found("track", track_id)
    return Response(status_code=204)


PATCH_TRACK = (
    'consent: "search" (withdraws notify) or "search,notify" (gives it); to withdraw '
    "search, erase the track (DELETE /tracks/{id}); the track was not changed"
)


def patch_track(request, body):
    owner, track_id = _owner(request), request.path_params["track_id"]
    if not isinstance(body, dict) or set(body) != {"consent"}:
        raise GenreError("bad_parameter", f'the body: {{"consent": ...}} only; {PATCH_TRACK}')
    try:
        consent = Consent.parse(body["consent"])
    except GenreError as exc:
        raise GenreError("bad_parameter", PATCH_TRACK) from exc
    row = ingest.set_notify(_db(request), owner, track_id, consent.notify)
    if row is None:
        raise _not_found("track", track_id)
    return JSONResponse(row)


def similar_to_track(request):
    opts = search_options(request.query_params, _labels(request))
    genre, found = _similar_args(opts)
    query, results = search.similar_to_track(
        _db(request),
        request.path_params["track_id"],
        opts["k"],
        genre,
        opts["exclude_same_artist"],
        opts["min_score"],
        filters=found,
    )
    return JSONResponse({"results": results, "query": query_reply(opts, **query)})


def similar_artists(request):
    p = request.query_params
    artist, artist_id = (p.get("artist") or "").strip(), (p.get("artist_id") or "").strip()
    if not artist and not artist_id:
        raise GenreError(
            "bad_parameter", "artist: the name of an artist in the catalog (or artist_id)"
        )
    k = int_param(p, "k", 10, 1, search.MAX_K)
    me, results = search.similar_artists(
        _db(request), _owner(request), artist, k, artist_id=artist_id or None
    )
    return JSONResponse({"results": results, "query": {**me, "k": k}})


def create_watch(request, body):
    """POST /watches; `?dry_run=true`: every check of a real create (the webhook URL's
    included), nothing stored, 200 with the watch as it would be (no id, no secret)."""
    dry_run = bool_param(request.query_params, "dry_run", False)
    watch, secret = watches.create(
        _db(request), _owner(request), body, _labels(request), dry_run=dry_run
    )
    if dry_run:
        return JSONResponse({**watch, "dry_run": True})
    return JSONResponse({**watch, "secret": secret}, status_code=201)


def list_watches(request):
    return JSONResponse({"watches": watches.listing(_db(request), _owner(request))})


def get_watch(request):
    wid = request.path_params["watch_id"]
    return JSONResponse(watches.get(_db(request), _owner(request), wid))


def patch_watch(request, body):
    wid = request.path_params["watch_id"]
    return JSONResponse(watches.update(_db(request), _owner(request), wid, body, _labels(request)))


def delete_watch(request):
    watches.delete(_db(request), _owner(request), request.path_params["watch_id"])
    return Response(status_code=204)


def rotate_watch_secret(request):
    wid = request.path_params["watch_id"]
    secret = watches.rotate_secret(_db(request), _owner(request), wid)
    overlap = int(watches.ROTATION_OVERLAP.total_seconds())
    return JSONResponse({"id": wid, "secret": secret, "previous_valid_for_s": overlap})


def send_test_event(request):
    wid = request.path_params["watch_id"]
    msg = watches.send_test(_db(request), _owner(request), wid)
    return JSONResponse({"delivery_id": msg, "status": "pending"}, status_code=202)


def me(request):
    """GET /me: the key's account, its quotas and what is left of its budgets."""
    who, db, s = request.state.identity, _db(request), settings()
    used = {"tracks": tracks.count(db, who.owner), "watches": watches.count(db, who.owner)}
    limits = {"tracks": s.track_quota, "watches": s.watch_limit}
    return JSONResponse(
        {
            "account": who.owner,
            "key": {"id": who.key_id, "prefix": who.prefix},
            "quotas": {
                q: {"limit": limits[q], "used": used[q], "left": max(0, limits[q] - used[q])}
                for q in limits
            },
            "budgets": {
                b: BUDGETS.peek(b, who.key_id).as_dict()
                for b in ("search", "uploads", "watch_changes")
            },
        }
    )


def _page_params(request) -> dict:
    p = request.query_params
    return {
        "limit": int_param(p, "limit", watches.MAX_PAGE, 1, watches.MAX_PAGE),
        "cursor": p.get("cursor") or None,
    }


def watch_matches(request):
    wid, page = request.path_params["watch_id"], _page_params(request)
    rows, nxt = watches.matches_page(_db(request), _owner(request), wid, **page)
    return JSONResponse({"matches": rows, "next_cursor": nxt})


def watch_deliveries(request):
    wid, page = request.path_params["watch_id"], _page_params(request)
    rows, nxt = watches.delivery_page(_db(request), _owner(request), wid, **page)
    return JSONResponse({"deliveries": rows, "next_cursor": nxt})


def redeliver(request):
    p = request.path_params
    out = watches.redeliver(_db(request), _owner(request), p["watch_id"], p["delivery_id"])
    return JSONResponse(out, status_code=202)


def _check_request_texts(request) -> None:
    for name, value in request.path_params.items():
        check_text(name, value)
    for name, value in request.query_params.multi_items():
        check_text(name, value)


async def read_json(request):
    """The JSON body, read while it streams: 413 payload_too_large as soon as it passes
    GENRE_MAX_JSON_BYTES (or its Content-Length says it will: then nothing is read), 400
    bad_request when it is not JSON (NaN and Infinity included), 400 bad_parameter for
    text a database cannot store."""
    limit = request.app.state.max_json_bytes
    too_large = GenreError("payload_too_large", f"the JSON body: at most {limit} bytes")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise too_large
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:  # stop reading: the rest of the body is never buffered
            raise too_large
    try:
        body = json.loads(bytes(data) or b"{}", parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise GenreError("bad_request", "the body is not JSON") from None
    check_json_texts(body)
    return body


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _admit(request, auth, bucket: str | None):
    """The key of a request (identified in the catalog) and the token it spends, or None."""
    request.state.identity = identify(request.app.state.catalog.get(), auth)
    return None if bucket is None else spend(BUDGETS.take(bucket, request.state.identity.key_id))


def _admit_and_handle(request, auth, bucket: str | None, handler):
    """_admit, then the handler, in one trip to the thread pool (a route without a body)."""
    verdict = _admit(request, auth, bucket)
    try:
        return verdict, handler(request)
    except GenreError as exc:  # a 404 or a bad parameter still reports the bucket spent
        return verdict, error_response(exc, auth)


def _endpoint(handler, with_body: bool, bucket: str | None):
    """A request of a keyed route: one trip to the thread pool for a route without a body
    (each trip queues the request behind whatever else the event loop has ready, other
    accounts' requests included); with a body, the key is checked before the body is read."""

    async def endpoint(request):
        auth, verdict = request.headers.get("authorization"), None
        try:
            _check_request_texts(request)
            if with_body:
                verdict = await run_in_threadpool(_admit, request, auth, bucket)
                response = await run_in_threadpool(handler, request, await read_json(request))
            else:
                verdict, response = await run_in_threadpool(
                    _admit_and_handle, request, auth, bucket, handler
                )
        except GenreError as exc:  # CatalogUnavailable, Unauthorized, bad parameters, ...
            response = error_response(exc, auth)
        if verdict is not None:
            for name, value in verdict.headers().items():
                response.headers.setdefault(name, value)
        return response

    endpoint.__name__ = handler.__name__
    return endpoint


def _route(
    path: str, handler, method: str, with_body: bool = False, bucket: str | None = None
) -> Route:
    """A route that needs a key; `bucket`: the key's budget one request spends."""
    route = Route(path, _endpoint(handler, with_body, bucket), methods=[method])
    route.bucket, route.method = bucket, method
    return route


SEARCH, UPLOADS, WATCHES = "search", "uploads", "watch_changes"
ROUTES = [
    _route("/me", me, "GET"),
    _route("/tracks", list_tracks, "GET"),
    _route("/tracks/search", search_tracks, "GET", bucket=SEARCH),  # before /tracks/{id}
    _route("/tracks/{track_id}", get_track, "GET"),
    _route("/tracks/{track_id}", delete_track, "DELETE", bucket=UPLOADS),
    _route("/tracks/{track_id}", patch_track, "PATCH", with_body=True, bucket=UPLOADS),
    _route("/tracks/{track_id}/similar", similar_to_track, "GET", bucket=SEARCH),
    _route("/artists/similar", similar_artists, "GET", bucket=SEARCH),
    _route("/watches", create_watch, "POST", with_body=True, bucket=WATCHES),
    _route("/watches", list_watches, "GET"),
    _route("/watches/{watch_id}", get_watch, "GET"),
    _route("/watches/{watch_id}", patch_watch, "PATCH", with_body=True, bucket=WATCHES),
    _route("/watches/{watch_id}", delete_watch, "DELETE", bucket=WATCHES),
    _route("/watches/{watch_id}/rotate-secret", rotate_watch_secret, "POST", bucket=WATCHES),
    _route("/watches/{watch_id}/test", send_test_event, "POST", bucket=WATCHES),
    _route("/watches/{watch_id}/matches", watch_matches, "GET"),
    _route("/watches/{watch_id}/deliveries", watch_deliveries, "GET"),
    _route(
        "/watches/{watch_id}/deliveries/{delivery_id}/redeliver", redeliver, "POST", bucket=WATCHES
    ),
]


def _exactly(path: str) -> re.Pattern:
    return re.compile(f"^{re.escape(path)}$")


# What BudgetGate checks before anything runs: every metered route of the catalog, and the
# BentoML APIs of serve/service.py (uploads and POST /similar: before their body is read).
GATE_RULES = [
    *(GateRule(r.method, r.path_regex, r.bucket) for r in ROUTES if r.bucket),
    GateRule("POST", _exactly("/tracks"), UPLOADS),
    GateRule("POST", _exactly("/similar"), SEARCH, "anonymous"),
    GateRule("POST", _exactly("/predict"), None, "predict"),
    GateRule("POST", _exactly("/"), None, "predict"),
]


def catalog_app(handle: CatalogHandle, labels: list[str]) -> Starlette:
    """The Starlette app of the catalog's JSON routes, mounted at the root (BentoML mounts it
    passively: it answers only the paths it has); the handlers find `handle` and `labels`
    in its state."""
    app = Starlette(routes=ROUTES)
    app.state.catalog, app.state.labels = handle, labels
    app.state.max_json_bytes = settings().max_json_bytes
    return app


__all__ = [
    "GATE_RULES",
    "CatalogHandle",
    "CatalogUnavailable",
    "admit_search",
    "admit_upload",
    "catalog_app",
    "search_upload",
    "store_upload",
]
