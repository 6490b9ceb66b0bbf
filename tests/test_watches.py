"""Watches and webhooks on both engines, delivered to a real receiver on 127.0.0.1 that
verifies every signature with `standardwebhooks`: matching on ingest (outbox), never the
owner's own tracks nor twice, retries with the same webhook-id, Retry-After, 410, no
redirects, URL safety, ownership, erasure and withdrawn consent, secret rotation, and two
workers delivering concurrent ingests once each."""

from __future__ import annotations

import datetime as dt
import json
import threading

import numpy as np
import pytest
import sqlalchemy as sa
from standardwebhooks import WebhookVerificationError

from genre_detector.catalog import ingest, watches, webhooks
from genre_detector.catalog.db import Catalog
from genre_detector.catalog.delivery import Worker
from genre_detector.catalog.records import Consent
from genre_detector.errors import GenreError
from loadtests.webhook_receiver import Receiver, verify
from tests.test_catalog_db import DIM, _record, _unit

LABELS = ["blues", "jazz", "pop-rock"]
NOTIFY = Consent(True, True)


@pytest.fixture(autouse=True)
def _local_webhooks(monkeypatch):
    monkeypatch.setenv("GENRE_WEBHOOK_ALLOW_HOSTS", "127.0.0.1")  # the receivers' host
    monkeypatch.setenv("GENRE_WEBHOOK_BACKOFF_SCALE", "0")  # retries due at once
    monkeypatch.setenv("GENRE_PUBLIC_URL", "https://genres.example")


@pytest.fixture
def db(catalog_url):
    catalog = Catalog.open(catalog_url, dim=DIM)
    yield catalog
    catalog.close()


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


def _watch(db, receiver, owner="scout", **body):
    w, secret = watches.create(
        db,
        owner,
        {"name": "jazz finds", "genres": {"jazz": 0.5}, "webhook_url": receiver.url, **body},
        LABELS,
    )
    receiver.secrets.append(secret)
    return w, secret


def _jazz(db, i, owner="artist", consent=NOTIFY, artist="Somebody"):
    rec = _record(i, "jazz", artist, np.eye(DIM)[1] + 0.01 * i)
    return ingest.add(db, owner, rec, consent)[0]


def _drain(worker, rounds=10):
    sent = 0
    for _ in range(rounds):
        n = worker.run_once()
        sent += n
        if n == 0:
            break
    return sent


def test_match_on_ingest_is_signed_verified_and_once(db, receiver):
    w, secret = _watch(db, receiver)
    assert secret.startswith("whsec_") and "secret" not in watches.get(db, "scout", w["id"])
    row = _jazz(db, 1)
    _jazz(db, 2, owner="scout")  # the watch's own account: never matched
    _jazz(db, 3, consent=Consent(True, False))  # no notify consent: never matched
    again = ingest.add(db, "artist", _record(1, "jazz", "Somebody", np.eye(DIM)[1]), NOTIFY)
    assert again[1] is False  # the same audio is the same track: no second match
    with db.connect() as conn:
        n = conn.execute(sa.text("select count(*) from deliveries")).scalar_one()
    assert n == 1  # written with the track, in its transaction
    assert _drain(Worker(db)) == 1
    (got,) = receiver.received
    assert got.verified and got.payload["type"] == "watch.match"
    data = got.payload["data"]
    assert data["watch_id"] == w["id"] and data["track_id"] == row["id"]
    assert data["title"] == "track 1" and data["artist"] == "Somebody"
    assert data["artist_id"] == row["artist_id"] and row["artist_id"]
    assert data["genres"]["jazz"] == pytest.approx(0.7) and data["top3"][0]["genre"] == "jazz"
    assert data["catalog_url"] == f"https://genres.example/tracks/{row['id']}/similar"
    assert "descriptors" in data and data["descriptors"] == row["descriptors"]
    assert got.id.startswith("msg_") and got.headers["webhook-id"] == got.id
    (m,) = watches.matches(db, "scout", w["id"])
    assert m["track_id"] == row["id"] and m["artist_id"] == row["artist_id"]
    (d,) = watches.delivery_log(db, "scout", w["id"])
    assert d["status"] == "delivered" and d["attempts"][0]["status_code"] == 200


def test_the_receiver_rejects_tampering_staleness_and_the_wrong_secret(receiver):
    secret = webhooks.new_secret()
    body = json.dumps({"type": "watch.test", "data": {}})
    headers = webhooks.sign_headers([secret], "msg_1", body)
    assert verify(secret, body.encode(), headers)["type"] == "watch.test"
    with pytest.raises(WebhookVerificationError):
        verify(secret, body.replace("test", "tost").encode(), headers)
    with pytest.raises(WebhookVerificationError):
        verify(webhooks.new_secret(), body.encode(), headers)
    old = webhooks.sign_headers(
        [secret], "msg_1", body, dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    )
    with pytest.raises(WebhookVerificationError):
        verify(secret, body.encode(), old)


def test_retry_after_503_keeps_the_webhook_id(db, receiver):
    _watch(db, receiver)
    receiver.replies = [(503, {"Retry-After": "0"}), (500, {}), (200, {})]
    _jazz(db, 1)
    worker = Worker(db)
    assert _drain(worker) == 3
    ids = {r.id for r in receiver.received}
    assert len(receiver.received) == 3 and len(ids) == 1
    assert all(r.verified for r in receiver.received)
    with db.connect() as conn:
        status, attempts = conn.execute(sa.text("select status, attempts from deliveries")).one()
    assert (status, attempts) == ("delivered", 3)


def test_retry_after_is_honoured(db, receiver, monkeypatch):
    monkeypatch.setenv("GENRE_WEBHOOK_BACKOFF_SCALE", "1")
    _watch(db, receiver)
    receiver.replies = [(429, {"Retry-After": "120"})]
    _jazz(db, 1)
    assert _drain(Worker(db)) == 1  # then nothing is due for two minutes
    with db.connect() as conn:
        nxt = conn.execute(sa.text("select next_attempt_at from deliveries")).scalar_one()
    nxt = nxt if isinstance(nxt, dt.datetime) else dt.datetime.fromisoformat(str(nxt))
    nxt = nxt if nxt.tzinfo else nxt.replace(tzinfo=dt.UTC)
    assert (nxt - dt.datetime.now(dt.UTC)).total_seconds() > 100


def test_410_disables_the_watch(db, receiver):
    w, _ = _watch(db, receiver)
    receiver.replies = [(410, {})]
    _jazz(db, 1)
    _drain(Worker(db))
    got = watches.get(db, "scout", w["id"])
    assert got["active"] is False and "410" in got["disabled_reason"]
    _jazz(db, 2)  # a disabled watch matches nothing new
    assert len(watches.matches(db, "scout", w["id"])) == 1


def test_redirects_are_not_followed(db, receiver):
    _watch(db, receiver)
    receiver.replies = [(302, {"Location": receiver.url + "?elsewhere"})]
    _jazz(db, 1)
    Worker(db).run_once()
    assert len(receiver.received) == 1  # the redirect's target was not requested
    with db.connect() as conn:
        status, error = conn.execute(sa.text("select status, last_error from deliveries")).one()
    assert status == "pending" and "redirect" in error


def test_private_urls_are_refused_outside_the_allow_list(db, receiver, monkeypatch):
    monkeypatch.setenv("GENRE_WEBHOOK_ALLOW_HOSTS", "")
    for url in (receiver.url, "https://127.0.0.1/x", "https://10.0.0.8/x", "ftp://a.example/"):
        with pytest.raises(GenreError) as e:
            watches.create(
                db, "scout", {"name": "x", "genres": {"jazz": 0.5}, "webhook_url": url}, LABELS
            )
        assert e.value.code == "bad_parameter" and "webhook_url" in e.value.detail
    assert webhooks.check_url("https://93.184.215.14/hook") == "https://93.184.215.14/hook"


def test_validation_and_ownership(db, receiver):
    for body, field in [
        ({"name": "x", "webhook_url": receiver.url}, "genres, like"),
        ({"name": "x", "genres": {"polka": 0.5}, "webhook_url": receiver.url}, "polka"),
        ({"name": "x", "genres": {"jazz": 2}, "webhook_url": receiver.url}, "jazz"),
        ({"name": "x", "like": ["nope"], "webhook_url": receiver.url}, "like"),
        ({"name": "x", "genres": {"jazz": 0.5}, "webhook_url": receiver.url, "x": 1}, "x"),
    ]:
        with pytest.raises(GenreError) as e:
            watches.create(db, "scout", body, LABELS)
        assert e.value.code == "bad_parameter" and field in e.value.detail, e.value.detail
    w, _ = _watch(db, receiver)
    for call in (
        lambda: watches.get(db, "other", w["id"]),
        lambda: watches.update(db, "other", w["id"], {"name": "y"}, LABELS),
        lambda: watches.delete(db, "other", w["id"]),
        lambda: watches.rotate_secret(db, "other", w["id"]),
        lambda: watches.matches(db, "other", w["id"]),
    ):
        with pytest.raises(GenreError) as e:
            call()
        assert e.value.code == "not_found"
    assert watches.update(db, "scout", w["id"], {"name": "renamed"}, LABELS)["name"] == "renamed"


def test_like_tracks_and_excluded_artists(db, receiver):
    ref = _jazz(db, 1, owner="producer", artist="Ref")
    w, _ = _watch(
        db,
        receiver,
        owner="producer",
        genres={},
        like=[ref["id"]],
        min_similarity=0.9,
        exclude_artists=["SOMEBODY ELSE"],
    )
    near = ingest.add(db, "a", _record(10, "blues", "New", np.eye(DIM)[1] + 0.05), NOTIFY)[0]
    ingest.add(db, "a", _record(11, "blues", "Far", np.eye(DIM)[5]), NOTIFY)
    ingest.add(db, "a", _record(12, "jazz", "Somebody else", np.eye(DIM)[1]), NOTIFY)
    got = watches.matches(db, "producer", w["id"])
    assert [m["track_id"] for m in got] == [near["id"]]
    assert got[0]["score"] == pytest.approx(
        float(_unit(np.eye(DIM)[1] + 0.05) @ _unit(np.eye(DIM)[1] + 0.01)), abs=1e-4
    )


def test_an_erased_or_withdrawn_track_is_not_delivered(db, receiver):
    _watch(db, receiver)
    erased = _jazz(db, 1)
    withdrawn = _jazz(db, 2)
    kept = _jazz(db, 3)
    assert ingest.erase(db, "artist", erased["id"])
    assert ingest.set_notify(db, "artist", withdrawn["id"], False)["consent"] == ["search"]
    _drain(Worker(db))
    assert [r.payload["data"]["track_id"] for r in receiver.received] == [kept["id"]]
    with db.connect() as conn:
        states = dict(conn.execute(sa.text("select track_id, status from deliveries")).fetchall())
    assert states[erased["id"]] == states[withdrawn["id"]] == "cancelled"


def test_rotation_signs_with_both_secrets(db, receiver):
    w, old = _watch(db, receiver)
    new = watches.rotate_secret(db, "scout", w["id"])
    assert new != old
    _jazz(db, 1)
    _drain(Worker(db))
    (got,) = receiver.received
    assert len(got.headers["webhook-signature"].split()) == 2
    verify(old, got.body, got.headers)
    verify(new, got.body, got.headers)


def test_test_event_and_redelivery(db, receiver):
    w, _ = _watch(db, receiver)
    msg = watches.send_test(db, "scout", w["id"])
    _drain(Worker(db))
    assert receiver.received[0].payload["type"] == "watch.test"
    watches.redeliver(db, "scout", w["id"], msg)
    _drain(Worker(db))
    assert [r.id for r in receiver.received] == [msg, msg]


def test_concurrent_ingests_and_two_workers_deliver_each_pair_once(db, receiver):
    for i in range(3):
        _watch(db, receiver, owner=f"scout{i}")
    threads = [threading.Thread(target=_jazz, args=(db, 100 + i)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    workers = [Worker(db, batch=3), Worker(db, batch=3)]
    runs = [threading.Thread(target=_drain, args=(w, 50)) for w in workers]
    for t in runs:
        t.start()
    for t in runs:
        t.join()
    pairs = [
        (r.payload["data"]["watch_id"], r.payload["data"]["track_id"]) for r in receiver.received
    ]
    assert len(pairs) == 36 and len(set(pairs)) == 36
    assert all(r.verified for r in receiver.received)


def test_a_delivery_cancelled_while_a_worker_holds_it_stays_cancelled(db, receiver):
    """The race the no-loss script found: claimed, then the track erased, then the failed
    attempt recorded: the delivery must stay cancelled, not go back to pending."""
    _watch(db, receiver)
    receiver.replies = [(503, {})]
    row = _jazz(db, 1)
    worker = Worker(db)
    (d,) = worker.claim()
    assert ingest.erase(db, "artist", row["id"])
    assert worker.record(d, worker.send(d)) == "pending"  # what the attempt alone says
    with db.connect() as conn:
        status, payload = conn.execute(sa.text("select status, payload from deliveries")).one()
        matches = conn.execute(sa.text("select count(*) from watch_matches")).scalar_one()
    assert status == "cancelled" and payload == '{"erased":true}' and matches == 0
    assert _drain(Worker(db)) == 0 and len(receiver.received) == 1
