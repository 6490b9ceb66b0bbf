"""The watch scripts still run: loadtests/watch_bench.py, loadtests/watch_no_loss.py and
train/evals/notify_quality.py with tiny sizes, their printed tables and their JSON. The real
numbers come from the scripts themselves (loadtests/README.md, "Watches: matching cost,
delivery throughput, nothing lost"); nothing here times anything."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _run(args, timeout, env=None):
    proc = subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    return proc, proc.stdout[-5000:] + proc.stderr[-5000:]


def test_watch_bench_runs(tmp_path):
    out = tmp_path / "bench.json"
    proc, report = _run(
        [
            "loadtests/watch_bench.py",
            *("--engines", "sqlite", "--watches", "30,60", "--tracks", "6", "--rounds", "2"),
            *("--base", "12", "--hooks", "3", "--deliveries", "12", "--dim", "16"),
            *("--workdir", str(tmp_path / "work"), "--out", str(out)),
        ],
        timeout=240,
    )
    assert proc.returncode == 0, report
    assert "(a) matching cost" in proc.stdout and "(b) delivery throughput" in proc.stdout
    assert "missed targets:" in proc.stdout, report
    r = json.loads(out.read_text())
    m = r["engines"]["sqlite"]["matching"]["configs"]
    assert set(m) == {"0", "30", "60"}
    assert all(c["ingests"] == 6 for c in m.values())
    assert m["0"]["matches_per_track"] == 0 and m["0"]["added_ms_median"] == 0
    runs = r["engines"]["sqlite"]["delivery"]["runs"]
    for n in ("1", "2"):
        assert runs[n]["delivered"] == runs[n]["expected"] == 12, runs[n]
        assert runs[n]["duplicates"] == 0 and runs[n]["unverified"] == 0
    assert r["failures"] == []


@pytest.mark.slow
def test_watch_bench_runs_on_postgresql(postgres_url, tmp_path):
    out = tmp_path / "bench.json"
    proc, report = _run(
        [
            "loadtests/watch_bench.py",
            *("--engines", "postgresql", "--postgres-url", postgres_url),
            *("--watches", "30", "--tracks", "4", "--rounds", "2", "--base", "12"),
            *("--hooks", "3", "--deliveries", "9", "--dim", "16"),
            *("--workdir", str(tmp_path / "work"), "--out", str(out)),
        ],
        timeout=300,
    )
    assert proc.returncode == 0, report
    r = json.loads(out.read_text())
    assert set(r["engines"]["postgresql"]["matching"]["configs"]) == {"0", "30"}
    assert r["failures"] == []


def _no_loss_args(tmp_path, *extra):
    return [
        "loadtests/watch_no_loss.py",
        *("--ingests", "40", "--watches", "6", "--base", "12", "--ingest-s", "3"),
        *("--down-s", "3", "--busy-s", "1.5", "--retry-after", "1", "--backoff-scale", "0.003"),
        *("--erase", "2", "--withdraw", "2", "--forget-after", "1.0,1.5"),
        *("--forget-when", "idle", "--max-s", "120"),
        *("--workdir", str(tmp_path / "work"), "--out", str(tmp_path / "no-loss.json")),
        *extra,
    ]


def _check_no_loss(proc, report, tmp_path, killed: bool):
    r = json.loads((tmp_path / "no-loss.json").read_text())
    assert proc.returncode == (0 if r["ok"] else 1), report
    assert proc.returncode == 0, report
    assert "no violations" in proc.stdout
    names = {c["check"] for c in r["checks"]}
    assert "expected pairs delivered at least once" in names and len(names) == 10
    c = r["counts"]
    assert c["ingests"] == 40 and c["watches"] == 6 and c["expected_pairs"] > 0
    assert c["forgotten"] == {"erase": 2, "withdraw": 2}
    assert "503" in c["requests_by_status"] and "200" in c["requests_by_status"]
    assert c["workers_started"] == (2 if killed else 1)
    assert bool(r["kill"]) is killed


def test_watch_no_loss_runs(tmp_path):
    proc, report = _run(_no_loss_args(tmp_path, "--no-kill"), timeout=180)
    _check_no_loss(proc, report, tmp_path, killed=False)


@pytest.mark.slow
def test_watch_no_loss_survives_a_killed_worker(tmp_path):
    """The worker is SIGKILLed while the receiver handles a request: that one is sent again
    after the lease (60 s) with the same webhook-id."""
    proc, report = _run(_no_loss_args(tmp_path, "--kill-at", "3"), timeout=240)
    _check_no_loss(proc, report, tmp_path, killed=True)
    r = json.loads((tmp_path / "no-loss.json").read_text())
    assert r["counts"]["pairs_received_twice_or_more_with_2xx"] >= 1


@pytest.mark.slow
def test_watch_no_loss_on_postgresql(postgres_url, tmp_path):
    proc, report = _run(
        _no_loss_args(
            tmp_path, "--no-kill", "--engine", "postgresql", "--postgres-url", postgres_url
        ),
        timeout=240,
    )
    _check_no_loss(proc, report, tmp_path, killed=False)


def test_notify_quality_probes_score_as_the_catalog_matches(tmp_path, monkeypatch):
    """train.evals.notify_quality's probe scores (match_new_track with the watches in memory)
    decide exactly as a real catalog does at any thresholds: synthetic vectors, no audio."""
    import numpy as np
    import sqlalchemy as sa

    from genre_detector.catalog import ingest, watches
    from genre_detector.catalog.db import Catalog
    from genre_detector.catalog.records import Consent
    from tests.test_catalog_db import _record
    from train.data import Track
    from train.evals.notify_quality import probe_scores

    monkeypatch.setenv("GENRE_WEBHOOK_ALLOW_HOSTS", "127.0.0.1")
    labels = ["blues", "jazz", "pop-rock"]
    rng = np.random.default_rng(0)
    dim, n = 16, 30
    vecs = rng.normal(size=(n, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    probs = rng.dirichlet(np.ones(3), n)
    tracks = [
        Track(Path(f"c{i}.mp3"), labels[i % 3], f"Artist {i}", "src", f"src/c{i}") for i in range(n)
    ]
    refs = [np.array([0, 1, 2]), np.array([3, 4, 5])]
    genres = ["jazz", "blues"]
    arrivals = np.arange(6, n)
    sim, prob = probe_scores(vecs, probs, tracks, labels, arrivals, refs, genres)
    assert np.allclose(sim[0], (vecs[arrivals] @ vecs[refs[0]].T).max(axis=1), atol=1e-6)
    assert np.allclose(prob[1], probs[arrivals, 0])

    def rec(i):
        r = _record(i, labels[int(np.argmax(probs[i]))], tracks[i].artist, vecs[i])
        return dataclasses.replace(r, probabilities=dict(zip(labels, map(float, probs[i]))))

    db = Catalog.open(f"sqlite:///{tmp_path / 'c.sqlite3'}", dim=dim)
    try:
        ids = {i: ingest.add(db, "refs", rec(i), Consent(True, False))[0]["id"] for i in range(6)}
        s_min, p_min = float(np.median(sim)), 0.3
        made = [
            watches.create(
                db,
                "scout",
                {
                    "name": g,
                    "genres": {g: p_min},
                    "like": [ids[int(i)] for i in r],
                    "min_similarity": s_min,
                    "webhook_url": "http://127.0.0.1:9/hook",
                },
                labels,
            )[0]["id"]
            for r, g in zip(refs, genres)
        ]
        clip = {
            ingest.add(db, "arrivals", rec(i), Consent(True, True))[0]["id"]: i for i in arrivals
        }
        with db.connect() as conn:
            got = {
                (r.id, clip[r.track_id])
                for r in conn.execute(
                    sa.text(
                        "select w.id, m.track_id from watch_matches m "
                        "join watches w on w.pk = m.watch_pk"
                    )
                )
            }
    finally:
        db.close()
    want = {
        (made[k], int(i))
        for k in range(2)
        for i, s, p in zip(arrivals, sim[k], prob[k])
        if s >= s_min and p >= p_min
    }
    assert got == want and want


@pytest.mark.slow
def test_notify_quality_runs(tmp_path, data_dir):
    """Six clips per source and genre, two folds, one draw; the end-to-end catalog check
    must agree (about a minute: embeddings of the clips, unless cached)."""
    out = tmp_path / "notify.json"
    proc, report = _run(
        [
            *("-m", "train.evals.notify_quality", "--max-per-genre", "6", "--folds", "2"),
            *("--repeats", "1", "--draws", "1", "--probabilities", "shipped", "--json", str(out)),
        ],
        timeout=900,
    )
    assert proc.returncode == 0, report
    assert "chosen on emotify" in proc.stdout and "chosen on 4q" in proc.stdout, report
    r = json.loads(out.read_text())
    assert set(r["transfer"]) == {"emotify->4q", "4q->emotify"}
    for res in r["transfer"].values():
        for g in res["per_genre"].values():
            assert 0 <= g["recall"] <= 1 and g["correct"] <= g["notifications"]
    assert r["catalog_check"]["checked"] and r["catalog_check"]["disagreements"] == 0
