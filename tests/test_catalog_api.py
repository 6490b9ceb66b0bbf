"""The catalog over real HTTP: `bentoml serve` on a real port with its embedded SQLite catalog,
keys made by the CLI, real clips. Consent, ownership (404, never 403), idempotent uploads,
erasure, search by id and by upload, similar artists, concurrency, and a database that cannot
be reached (503 db_unavailable while /predict keeps working)."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from loadtests.service_process import REPO, ServedService
from tests.catalog_helpers import cli_key
from tests.expected import NINE

pytestmark = pytest.mark.slow
CLIPS = ["blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae"]


_key = cli_key  # keys made by the CLI, as a user makes them


@pytest.fixture(scope="module")
def served(store_with_models, tmp_path_factory):
    env = {
        "GENRE_DB_URL": f"sqlite:///{tmp_path_factory.mktemp('cat') / 'catalog.sqlite3'}",
        "GENRE_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",  # the receiver below is on 127.0.0.1
        "GENRE_WEBHOOK_BACKOFF_SCALE": "0.01",
    }
    svc = ServedService(env)
    try:
        keys = {o: _key(env, o) for o in ("label-a", "label-b", "scout")}
        svc.wait_ready()
        yield svc, keys
    finally:
        svc.stop()


def _auth(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def _post_track(svc, clip: Path, key: str | None, **fields):
    with open(clip, "rb") as f:
        return requests.post(
            f"{svc.url}/tracks",
            files={"audio": (clip.name, f)},
            data=fields,
            headers=_auth(key) if key else {},
            timeout=120,
        )


def test_upload_needs_a_key_and_consent_and_is_stored_once(served, gtzan_dir):
    svc, keys = served
    clip = gtzan_dir / "rock.00000.wav"
    r = _post_track(svc, clip, None, consent="search")
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"
    r = _post_track(svc, clip, "gd_not-a-key", consent="search")
    assert r.status_code == 401
    r = _post_track(svc, clip, keys["label-a"])
    assert r.status_code == 400 and r.json()["error"] == "consent_required"
    r = _post_track(svc, clip, keys["label-a"], consent="search,resell")
    assert r.status_code == 400 and "resell" in r.json()["detail"]
    listed = requests.get(f"{svc.url}/tracks", headers=_auth(keys["label-a"]), timeout=30)
    assert listed.status_code == 200 and listed.json()["tracks"] == []  # nothing stored
    r = _post_track(svc, clip, keys["label-a"], consent="search,notify", title="Rock 0")
    assert r.status_code == 201, r.text
    track = r.json()
    assert track["created"] is True and track["title"] == "Rock 0"
    assert track["consent"] == ["search", "notify"] and set(track["probabilities"]) == set(NINE)
    assert abs(sum(track["probabilities"].values()) - 1) < 1e-6
    with open(clip, "rb") as f:
        predicted = requests.post(f"{svc.url}/predict", files={"audio": f}, timeout=120).json()
    assert track["top_genre"] == predicted["ensemble"]["top_genre"]  # one scoring path
    for g, p in predicted["ensemble"]["probabilities"].items():
        assert abs(track["probabilities"][g] - p) < 1e-6
    assert track["descriptors"] == predicted["descriptors"]  # tempo and key: the same block
    again = _post_track(svc, clip, keys["label-a"], consent="search")
    assert again.status_code == 200 and again.json()["id"] == track["id"]
    assert again.json()["created"] is False


def test_owner_reads_others_get_404(served, gtzan_dir):
    svc, keys = served
    r = _post_track(svc, gtzan_dir / "jazz.00000.wav", keys["label-a"], consent="search")
    assert r.status_code in (200, 201)
    tid = r.json()["id"]
    mine = requests.get(f"{svc.url}/tracks/{tid}", headers=_auth(keys["label-a"]), timeout=30)
    assert mine.status_code == 200
    body = mine.json()
    assert body["id"] == tid and body["owner"] == "label-a" and len(body["sha256"]) == 64
    assert body["timeline"] and body["model_tags"] and body["embedding_version"]
    assert body["descriptors"]["tempo"]["bpm"] > 0 and body["descriptors"]["key"]["camelot"]
    other = requests.get(f"{svc.url}/tracks/{tid}", headers=_auth(keys["label-b"]), timeout=30)
    assert other.status_code == 404 and other.json()["error"] == "not_found"
    gone = requests.delete(f"{svc.url}/tracks/{tid}", headers=_auth(keys["label-b"]), timeout=30)
    assert gone.status_code == 404
    assert requests.get(f"{svc.url}/tracks/{tid}", timeout=30).status_code == 401
    unknown = requests.get(f"{svc.url}/tracks/nope", headers=_auth(keys["label-a"]), timeout=30)
    assert unknown.status_code == 404


def test_similar_by_id_by_upload_and_artists_then_erasure(served, gtzan_dir):
    svc, keys = served
    ids, artist_of, artist_id = {}, {}, {}
    for i, name in enumerate(CLIPS):
        artist = artist_of[name] = "Band A" if i % 2 else "Band B"
        r = _post_track(
            svc, gtzan_dir / f"{name}.00000.wav", keys["label-b"], consent="search", artist=artist
        )
        assert r.status_code in (200, 201), r.text
        ids[name] = r.json()["id"]
        artist_id[r.json()["id"]] = r.json()["artist_id"]
    assert len(set(artist_id.values())) == 2  # label-b's Band A and Band B
    q = ids["classical"]
    scout = _auth(keys["scout"])  # search needs a key
    assert requests.get(f"{svc.url}/tracks/{q}/similar", timeout=30).status_code == 401
    r = requests.get(
        f"{svc.url}/tracks/{q}/similar?k=3&exclude_same_artist=false", headers=scout, timeout=30
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["query"]["id"] == q and len(body["results"]) == 3
    assert q not in {x["id"] for x in body["results"]}
    assert set(body["results"][0]) == {
        *("id", "title", "artist", "artist_id", "score", "genre", "top3", "descriptors")
    }
    assert body["query"]["artist_id"] == artist_id[q]
    known = [x for x in body["results"] if x["id"] in artist_id]  # label-b's, with artists
    assert known and all(x["artist_id"] == artist_id[x["id"]] for x in known)
    scores = [x["score"] for x in body["results"]]
    assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)
    same = requests.get(f"{svc.url}/tracks/{q}/similar?k=20", headers=scout, timeout=30).json()[
        "results"
    ]
    assert same and all(x["artist"] != artist_of["classical"] for x in same)
    for bad in ("k=0", "k=101", "k=x", "genre=polka", "min_score=2", "exclude_same_artist=maybe"):
        r = requests.get(f"{svc.url}/tracks/{q}/similar?{bad}", headers=scout, timeout=30)
        assert r.status_code == 400 and r.json()["error"] == "bad_parameter", bad
        assert bad.split("=")[0] in r.json()["detail"]
    with open(gtzan_dir / "classical.00000.wav", "rb") as f:
        up = requests.post(f"{svc.url}/similar?k=5", files={"audio": f}, timeout=120)
    assert up.status_code == 200, up.text
    assert q not in {x["id"] for x in up.json()["results"]}  # the same audio is the query
    known = [x for x in up.json()["results"] if x["id"] in artist_id]
    assert known and all(x["artist_id"] == artist_id[x["id"]] for x in known)
    artists = requests.get(
        f"{svc.url}/artists/similar?artist=band%20a&k=5", headers=scout, timeout=30
    )
    assert artists.status_code == 200
    assert artists.json()["query"]["artist"] == "Band A"
    assert [a["artist"] for a in artists.json()["results"]] == ["Band B"]
    # erasure: gone from the owner's list and from every search
    d = requests.delete(
        f"{svc.url}/tracks/{ids['jazz']}", headers=_auth(keys["label-b"]), timeout=30
    )
    assert d.status_code == 204
    for name in CLIPS:
        if name == "jazz":
            continue
        r = requests.get(f"{svc.url}/tracks/{ids[name]}/similar?k=100", headers=scout, timeout=30)
        assert ids["jazz"] not in {x["id"] for x in r.json()["results"]}
    assert (
        requests.get(
            f"{svc.url}/tracks/{ids['jazz']}/similar", headers=scout, timeout=30
        ).status_code
        == 404
    )


def test_concurrent_uploads(served, emotify_dir):
    svc, keys = served
    clips = sorted((emotify_dir / "electronic").glob("*.mp3"))[:8]
    with ThreadPoolExecutor(8) as pool:
        different = list(
            pool.map(lambda c: _post_track(svc, c, keys["label-a"], consent="search"), clips)
        )
        same = list(
            pool.map(
                lambda _: _post_track(svc, clips[0], keys["label-b"], consent="search"), range(8)
            )
        )
    assert [r.status_code for r in different] == [201] * 8
    assert len({r.json()["id"] for r in different}) == 8
    assert sum(r.status_code == 201 for r in same) == 1
    assert len({r.json()["id"] for r in same}) == 1


def test_unreachable_database_is_503_and_predict_still_works(store_with_models, wav_clip):
    env = {"GENRE_DB_URL": "postgresql://nobody@127.0.0.1:1/catalog?connect_timeout=2"}
    svc = ServedService(env)
    try:
        svc.wait_ready()
        with open(wav_clip, "rb") as f:
            r = requests.post(
                f"{svc.url}/tracks",
                files={"audio": f},
                data={"consent": "search"},
                headers=_auth("gd_x"),
                timeout=60,
            )
        assert r.status_code == 503 and r.json()["error"] == "db_unavailable"
        assert int(r.headers["Retry-After"]) > 0
        g = requests.get(f"{svc.url}/tracks", headers=_auth("gd_x"), timeout=60)
        assert g.status_code == 503 and g.headers.get("Retry-After")
        with open(wav_clip, "rb") as f:
            assert requests.post(f"{svc.url}/predict", files={"audio": f}, timeout=120).ok
    finally:
        svc.stop()


def test_watch_over_http_is_delivered_by_the_service(served, emotify_dir):
    """The README's curl flow: a scout's watch, a label's upload with notify consent, and
    the service's own delivery worker posting a signed webhook to a real receiver."""
    import time

    from loadtests.webhook_receiver import Receiver

    svc, keys = served
    receiver = Receiver().start()
    try:
        body = {"name": "rock", "genres": {"pop-rock": 0.3}, "webhook_url": receiver.url}
        r = requests.post(f"{svc.url}/watches", json=body, headers=_auth(keys["scout"]), timeout=30)
        assert r.status_code == 201, r.text
        watch = r.json()
        receiver.secrets.append(watch["secret"])
        assert watch["secret"].startswith("whsec_")
        wid = watch["id"]
        listed = requests.get(f"{svc.url}/watches", headers=_auth(keys["scout"]), timeout=30)
        assert [w["id"] for w in listed.json()["watches"]] == [wid]
        assert "secret" not in listed.json()["watches"][0]
        other = requests.get(f"{svc.url}/watches/{wid}", headers=_auth(keys["label-a"]), timeout=30)
        assert other.status_code == 404
        bad = requests.post(
            f"{svc.url}/watches", data="{nope", headers=_auth(keys["scout"]), timeout=30
        )
        assert bad.status_code == 400 and bad.json()["error"] == "bad_request"
        bad = requests.post(
            f"{svc.url}/watches",
            json={"name": "x", "webhook_url": receiver.url},
            headers=_auth(keys["scout"]),
            timeout=30,
        )
        assert bad.status_code == 400 and "genres" in bad.json()["detail"]
        clip = sorted((emotify_dir / "rock").glob("*.mp3"))[1]
        up = _post_track(svc, clip, keys["label-a"], consent="search,notify", title="Loud")
        assert up.status_code == 201, up.text
        deadline = time.time() + 30
        while not receiver.received and time.time() < deadline:
            time.sleep(0.2)
        (got,) = receiver.received
        assert got.verified and got.payload["data"]["track_id"] == up.json()["id"]
        assert got.payload["data"]["title"] == "Loud" and got.payload["data"]["watch_id"] == wid
        matches = requests.get(
            f"{svc.url}/watches/{wid}/matches", headers=_auth(keys["scout"]), timeout=30
        ).json()["matches"]
        assert [m["track_id"] for m in matches] == [up.json()["id"]]
        deadline = time.time() + 10
        while time.time() < deadline:
            log = requests.get(
                f"{svc.url}/watches/{wid}/deliveries", headers=_auth(keys["scout"]), timeout=30
            ).json()["deliveries"]
            if log and log[0]["status"] == "delivered":
                break
            time.sleep(0.2)
        assert log[0]["status"] == "delivered" and log[0]["attempts"][0]["status_code"] == 200
        t = requests.post(f"{svc.url}/watches/{wid}/test", headers=_auth(keys["scout"]), timeout=30)
        assert t.status_code == 202
        deadline = time.time() + 30
        while len(receiver.received) < 2 and time.time() < deadline:
            time.sleep(0.2)
        assert receiver.received[1].payload["type"] == "watch.test"
        gone = requests.delete(f"{svc.url}/watches/{wid}", headers=_auth(keys["scout"]), timeout=30)
        assert gone.status_code == 204
    finally:
        receiver.stop()


def test_demo_fills_a_catalog_with_named_shared_clips(store_with_models, data_dir, tmp_path):
    """`python -m genre_detector catalog demo`: shared clips, owner demo, titles and artists
    from each source's tracks.csv (the clips carry no tags), searchable at once."""
    import csv

    import sqlalchemy as sa

    from genre_detector.catalog import search
    from genre_detector.catalog.db import Catalog

    env = {**os.environ, "GENRE_DB_URL": f"sqlite:///{tmp_path / 'demo.sqlite3'}"}
    out = subprocess.run(
        [sys.executable, "-m", "genre_detector", "catalog", "demo", "--limit", "4"],
        env=env,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "4 ok" in out.stdout and "4 new tracks stored" in out.stdout
    listing = set()  # (title, artist) pairs of the track lists (titles repeat across artists)
    for source in ("4q", "emotify"):
        with open(data_dir / source / "tracks.csv", newline="") as f:
            listing |= {(r["title"], r["artist"]) for r in csv.DictReader(f)}
    db = Catalog.open(env["GENRE_DB_URL"])
    with db.connect() as conn:
        rows = conn.execute(sa.text("select id, owner, title, artist from tracks")).fetchall()
    assert len(rows) == 4 and {r.owner for r in rows} == {"demo"}
    assert all(r.title and (r.title, r.artist) in listing for r in rows)
    _, similar = search.similar_to_track(db, rows[0].id, k=3, exclude_same_artist=False)
    assert len(similar) == 3
    db.close()
