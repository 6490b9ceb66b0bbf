"""Search and watch by a brief over real HTTP (`bentoml serve` on a real port) on both engines:
GET /tracks/search, the same filters on GET /tracks/{id}/similar, POST /similar and GET
/tracks, watch conditions matched when a real clip is uploaded, and nonsense briefs (empty,
10 KB, only unknown words, contradictory filters) answered 400 with the error contract or an
empty list that says why, never a 500. The catalog is filled before the service starts,
through catalog.ingest with the stored descriptors contract (tests/catalog_helpers.py)."""

from __future__ import annotations

import numpy as np
import pytest
import requests

from genre_detector.catalog import ingest
from genre_detector.catalog.db import Catalog
from genre_detector.catalog.records import Consent
from loadtests.service_process import ServedService
from tests.catalog_helpers import cli_key, descriptors, new_database, record
from tests.expected import NINE

pytestmark = pytest.mark.slow
OPEN_BUDGETS = {f"GENRE_{b}_PER_MIN": "1000000" for b in ("SEARCH", "WRITES", "ANONYMOUS")}
N = 48


def _desc(i: int) -> dict:
    return descriptors(
        bpm=70 + (i * 5) % 60,
        key=[("A", "minor"), ("C", "major"), ("E", "minor")][i % 3],
        quadrant=["Q1", "Q2", "Q3", "Q4"][i % 4],
        voice={"instrumental": 0.9} if i % 2 else {"female": 0.8},
        instruments={"piano": 0.8} if i % 3 == 0 else {},
    )


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def served(request, store_with_models, tmp_path_factory):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('brief') / 'catalog.sqlite3'}"
    else:
        url = new_database(request.getfixturevalue("postgres_url"), "brief")
    db = Catalog.open(url)  # the served projection's size
    rng = np.random.default_rng(0)
    ids = {}
    for i in range(N):
        genre = ["jazz", "blues", "classical"][i % 3]
        rec = record(i, genre, rng.normal(size=db.dim), _desc(i), labels=NINE)
        row, _ = ingest.add(db, "label-b", rec, Consent(True, True))
        ids[row["id"]] = rec
    db.close()
    env = {
        "GENRE_DB_URL": url,
        "GENRE_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
        "GENRE_DELIVER_IN_SERVICE": "0",
        **OPEN_BUDGETS,
    }
    svc = ServedService(env)
    try:
        keys = {o: cli_key(env, o) for o in ("label-a", "label-b", "scout")}
        svc.wait_ready()
        svc.keys, svc.ids = keys, ids
        yield svc
    finally:
        svc.stop()


def _get(svc, path: str, who: str | None = "scout", **params):
    headers = {"Authorization": f"Bearer {svc.keys[who]}"} if who else {}
    return requests.get(svc.url + path, params=params, headers=headers, timeout=60)


def _assert_400(r, names: str):
    assert r.status_code == 400, (r.status_code, r.text)
    body = r.json()
    assert body["error"] == "bad_parameter" and names in body["detail"], body


def test_search_by_brief_reads_the_brief_and_ranks_by_fit(served):
    assert _get(served, "/tracks/search", None, q="calm").status_code == 401
    r = _get(served, "/tracks/search", q="calm instrumental jazz around 90 bpm blorp")
    assert r.status_code == 200, r.text
    body = r.json()
    brief = body["query"]["brief"]
    assert {u["filter"] for u in brief["understood"]} == {"mood", "voice", "genre", "bpm"}
    assert brief["not_understood"] == ["blorp"]
    assert body["query"]["filters"]["bpm"] == [85.0, 95.0]
    for x in body["results"]:
        d = x["descriptors"]
        assert x["genre"] == "jazz" and d["mood"]["quadrant"] == "Q4"
        assert 85 <= d["tempo"]["bpm"] <= 95 and d["voice"]["instrumental"] >= 0.5
        assert set(x) == {
            "id",
            "title",
            "artist",
            "artist_id",
            "genre",
            "top3",
            "descriptors",
            "fit",
        }
    expected = [
        i
        for i, rec in served.ids.items()
        if rec.top_genre == "jazz"
        and rec.descriptors["mood"]["quadrant"] == "Q4"
        and 85 <= rec.descriptors["tempo"]["bpm"] <= 95
        and rec.descriptors["voice"]["instrumental"] >= 0.5
    ]
    assert sorted(x["id"] for x in body["results"]) == sorted(expected)


def test_search_pages_with_a_cursor_and_filters_by_key_and_octave(served):
    seen, cursor = [], None
    while True:
        params = {"mood": "Q1", "limit": 5, **({"cursor": cursor} if cursor else {})}
        r = _get(served, "/tracks/search", **params)
        assert r.status_code == 200, r.text
        seen += [x["fit"] for x in r.json()["results"]]
        cursor = r.json()["next_cursor"]
        if not cursor:
            break
    assert len(seen) == N // 4 and seen == sorted(seen, reverse=True)
    r = _get(served, "/tracks/search", key="8A", compatible="true", bpm="40-45", bpm_octave="true")
    assert r.status_code == 200 and r.json()["results"]
    for x in r.json()["results"]:
        assert x["descriptors"]["key"]["camelot"] in {"8A", "7A", "9A", "8B"}
        assert 80 <= x["descriptors"]["tempo"]["bpm"] <= 90  # double of 40-45


@pytest.mark.parametrize(
    "params, names",
    [
        ({}, "brief (q) or a filter"),
        ({"q": ""}, "brief (q) or a filter"),
        ({"q": "calm " * 2048}, "500 characters"),  # 10 KB
        ({"q": "blorp zzz qwerty"}, "no word of the brief was understood (blorp, zzz"),
        ({"q": "the and with"}, "no word"),
        ({"q": "slow fast"}, "contradictory"),
        ({"q": "instrumental female vocals"}, "contradictory"),
        ({"mood": "Q4", "q": "sad"}, "contradictory"),
        ({"genre": "jazz", "q": "blues"}, "contradictory"),
        ({"bpm": "95-85"}, "bpm"),
        ({"bpm": "x"}, "bpm"),
        ({"mood": "happy>=0.3"}, "mood"),
        ({"key": "Z"}, "key"),
        ({"voice": "robot"}, "voice"),
        ({"genre": "polka"}, "genre"),
        ({"mood": "Q4", "limit": "0"}, "limit"),
        ({"mood": "Q4", "cursor": "forged"}, "cursor"),
    ],
)
def test_nonsense_briefs_are_a_clear_400(served, params, names):
    _assert_400(_get(served, "/tracks/search", **params), names)


def test_a_brief_no_track_meets_is_an_empty_list_that_says_why(served):
    r = _get(served, "/tracks/search", q="calm 200 bpm")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["results"] == [] and body["next_cursor"] is None
    assert body["why"]["tracks_meeting_each_filter_alone"]["bpm"] == 0
    assert "bpm" in body["why"]["message"]
    # the closest fits: calm (Q4) tracks, each naming the filter it misses
    closest = body["why"]["closest"]
    assert closest and all(c["unmet"] == ["bpm"] for c in closest)
    assert all(c["descriptors"]["mood"]["quadrant"] == "Q4" and c["artist_id"] for c in closest)


def test_similar_takes_the_same_filters(served, gtzan_dir):
    q = next(iter(served.ids))
    r = _get(served, f"/tracks/{q}/similar", k=20, mood="Q3", voice="female")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["results"] and body["query"]["filters"]["mood"] == {"Q3": 1.0}
    for x in body["results"]:
        assert x["descriptors"]["mood"]["quadrant"] == "Q3"
        assert x["descriptors"]["voice"]["female"] >= 0.5
    scores = [x["score"] for x in body["results"]]
    assert scores == sorted(scores, reverse=True)
    r = _get(served, f"/tracks/{q}/similar", q="sad piano")
    assert r.status_code == 200 and r.json()["query"]["brief"]["understood"]
    assert all(x["descriptors"]["mood"]["quadrant"] == "Q3" for x in r.json()["results"])
    _assert_400(_get(served, f"/tracks/{q}/similar", q="zzz"), "no word")
    _assert_400(_get(served, f"/tracks/{q}/similar", bpm="1-2"), "bpm")
    with open(gtzan_dir / "jazz.00000.wav", "rb") as f:
        up = requests.post(
            f"{served.url}/similar",
            params={"k": 5, "q": "calm instrumental"},
            files={"audio": f},
            headers={"Authorization": f"Bearer {served.keys['scout']}"},
            timeout=120,
        )
    assert up.status_code == 200, up.text
    assert up.json()["query"]["filters"]["voice"] == ["instrumental"]
    for x in up.json()["results"]:
        assert x["descriptors"]["mood"]["quadrant"] == "Q4"
        assert x["descriptors"]["voice"]["instrumental"] >= 0.5


def test_the_owner_list_takes_the_same_filters(served):
    r = _get(served, "/tracks", "label-b", mood="Q3", limit=100)
    assert r.status_code == 200, r.text
    rows = r.json()["tracks"]
    assert len(rows) == N // 4 and all(t["descriptors"]["mood"]["quadrant"] == "Q3" for t in rows)
    assert r.json()["filters"]["mood"] == {"Q3": 1.0}
    r = _get(served, "/tracks", "label-a", mood="Q3")
    assert r.status_code == 200 and r.json()["tracks"] == []  # another account's tracks: not here
    _assert_400(_get(served, "/tracks", "label-b", q="slow fast"), "contradictory")


def test_watch_conditions_over_http_match_a_real_upload(served, gtzan_dir):
    auth = {"Authorization": f"Bearer {served.keys['scout']}"}
    hook = "http://127.0.0.1:9/hook"

    def watch(**body):
        return requests.post(
            f"{served.url}/watches", json={"webhook_url": hook, **body}, headers=auth, timeout=30
        )

    any_tempo = watch(name="any tempo", bpm="20-320")
    assert any_tempo.status_code == 201, any_tempo.text
    assert any_tempo.json()["conditions"] == {"bpm": [20.0, 320.0], "bpm_octave": False}
    calm = watch(name="calm", mood="Q4", voice="instrumental")
    assert calm.status_code == 201 and calm.json()["conditions"]["voice"] == ["instrumental"]
    for bad, names in (({"mood": "Q7"}, "mood"), ({"bpm": "300-100"}, "bpm"), ({}, "needs")):
        _assert_400(watch(name="bad", **bad), names)
    with open(gtzan_dir / "blues.00000.wav", "rb") as f:
        up = requests.post(
            f"{served.url}/tracks",
            files={"audio": f},
            data={"consent": "search,notify"},
            headers={"Authorization": f"Bearer {served.keys['label-a']}"},
            timeout=120,
        )
    assert up.status_code == 201, up.text
    track = up.json()

    def matched(w):
        r = requests.get(f"{served.url}/watches/{w.json()['id']}/matches", headers=auth, timeout=30)
        return [m["track_id"] for m in r.json()["matches"]]

    assert track["id"] in matched(any_tempo)  # its tempo, from the real scoring path
    if track["descriptors"].get("mood") is None:  # before the mood heads: no mood, no match
        assert track["id"] not in matched(calm)
