"""loadtests/catalog_bench.py still runs: tiny sizes on both engines (the PostgreSQL one on
the session's pgserver), its printed tables and its JSON. The real numbers come from the
script itself (loadtests/README.md, "Catalog search and ingest"); nothing here times anything.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODES = {"unfiltered", "own_genre", "other_genre", "exclude_artist"}


def test_catalog_bench_runs_on_both_engines(postgres_url, tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "loadtests" / "catalog_bench.py"),
            *("--n", "300", "--queries", "8", "--warmup", "1", "--dim", "16"),
            *("--features-dim", "8", "--ingest-head", "64", "--ingest-tail", "32"),
            *("--ef-sweep", "40", "--sweep-queries", "4", "--scale-to", "1000000"),
            *("--postgres-url", postgres_url, "--workdir", str(tmp_path / "work")),
            *("--out", str(out)),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = proc.stdout[-4000:] + proc.stderr[-4000:]
    assert proc.returncode == 0, report
    assert "SYNTHETIC" in proc.stdout and "missed targets:" in proc.stdout, report
    r = json.loads(out.read_text())
    assert r["catalog"]["synthetic"] is True and r["catalog"]["n"] == 300
    assert set(r["engines"]) == {"sqlite", "postgresql"}
    for e in r["engines"].values():
        ingest = e["ingest"]
        assert ingest["rows"]["tracks"] == ingest["rows"]["track_vectors"] == 300
        # the real code path before and after the bulk fill, the bulk fill in between
        assert ingest["add_many_empty"]["tracks"] == 64
        assert ingest["add_many_full"]["tracks"] == 32
        assert ingest["bulk"]["tracks"] == 300 - 64 - 32
        assert ingest["artist_refresh_read"]["artist_track_vectors_ms"] > 0
        assert set(e["search"]) == MODES
        for m in e["search"].values():
            assert m["queries"] == 8 and m["p50_ms"] > 0
            assert 0.0 <= m["recall_at_10"] <= 1.0
    # SQLite is exact: its results are NumPy's top 10 (the ground truth is right)
    assert all(m["recall_at_10"] == 1.0 for m in r["engines"]["sqlite"]["search"].values())
    pg = r["engines"]["postgresql"]
    assert pg["sizes"]["track_vectors_hnsw_bytes"] > 0
    assert pg["ingest"]["index_build"]["track_vectors_hnsw_s"] >= 0
    assert set(pg["ef_search_sweep"]) == {"40"}
    assert pg["ef_search_sweep"]["40"]["unfiltered"]["queries"] == 4
    options = pg["genre_filter_options"]
    assert {
        "hnsw_with_filter",
        "scan_whole_graph",
        "exact_genre_btree",
        "partial_hnsw_per_genre",
    } <= set(options)
    # the code searches a genre exactly (recall 1 on PostgreSQL too)
    assert pg["search"]["other_genre"]["recall_at_10"] == 1.0
    assert options["exact_genre_btree"]["other_genre"]["recall_at_10"] == 1.0  # exact
    assert options["partial_hnsw_per_genre"]["index"]["bytes"] > 0
    assert pg["halfvec"]["bytes"] > 0
    assert pg["extrapolated"]["tracks"] == 1_000_000
    assert isinstance(r["missed"], list)


def test_catalog_bench_brief_modes_run_and_find_the_exact_answer(postgres_url, tmp_path):
    """--brief: the one- and three-filter modes on both engines; recall@20 against NumPy's
    exact answer is 1 (the search is exact: a miss is a bug in the SQL or the fit)."""
    out = tmp_path / "brief.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "loadtests" / "catalog_bench.py"),
            *("--brief", "--n", "1500", "--queries", "6", "--warmup", "1", "--dim", "16"),
            *("--features-dim", "8", "--postgres-url", postgres_url),
            *("--workdir", str(tmp_path / "work"), "--out", str(out)),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = proc.stdout[-4000:] + proc.stderr[-4000:]
    assert proc.returncode == 0, report
    r = json.loads(out.read_text())
    assert r["n"] == 1500 and set(r["engines"]) == {"sqlite", "postgresql"}
    for e in r["engines"].values():
        assert set(e["modes"]) == {
            *("mood", "bpm", "genre", "key_compatible", "voice"),
            *("mood+bpm+voice", "genre+mood+key"),
        }
        for m in e["modes"].values():
            assert m["recall_at_20"] == 1.0 and m["p50_ms"] > 0, r
