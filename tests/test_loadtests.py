"""The load-test tooling works: the locustfile against the real service, the research baseline.

python -m pytest -q tests/test_loadtests.py          # ~40 s: serves for real
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from loadtests.service_process import ServedService

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent
# Request names the locustfile gives each user class (loadtests/locustfile.py).
CLASS_ROWS = {
    "TrackUploader": ("POST", "/predict ["),
    "PrototypeFrontEnd": ("POST", "/ [legacy"),
    "ModelsPoller": ("GET", "/models"),
}


def test_locustfile_headless_against_the_service(store_with_models, data_dir, tmp_path):
    svc = ServedService()
    try:
        svc.wait_ready()
        prefix = tmp_path / "locust"
        env = {**os.environ, "GENRE_DATA": str(data_dir), "LOADTEST_WAIT_SCALE": "0.1"}
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "locust",
                "-f",
                str(REPO / "loadtests/locustfile.py"),
                "--headless",
                "-u",
                "5",
                "-r",
                "5",
                "-t",
                "10s",
                "--host",
                svc.url,
                "--csv",
                str(prefix),
                "--only-summary",
            ],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        svc.stop()
    rows = list(csv.DictReader((tmp_path / "locust_stats.csv").open()))
    by_name = {(r["Type"], r["Name"]): r for r in rows}
    agg = by_name[("", "Aggregated")]
    report = proc.stdout[-3000:] + proc.stderr[-3000:]
    assert int(agg["Request Count"]) > 0, report
    assert int(agg["Failure Count"]) == 0, report
    assert proc.returncode == 0, report
    for user_class, (method, prefix_) in CLASS_ROWS.items():
        count = sum(
            int(r["Request Count"])
            for (m, n), r in by_name.items()
            if m == method and n.startswith(prefix_)
        )
        assert count > 0, f"{user_class} made no requests:\n{report}"


def test_research_baseline_answers_with_four_model_outputs(wav_clip):
    from loadtests.research_baseline import GENRES, MODEL_KEYS, create_app

    client = create_app().test_client()
    r = client.post(
        "/",
        data={"audio_file": (io.BytesIO(wav_clip.read_bytes()), wav_clip.name)},
        content_type="multipart/form-data",
    )
    assert r.status_code == 200, r.text
    body = r.get_json()
    assert set(MODEL_KEYS) <= set(body)
    for key in MODEL_KEYS:
        probs = {g: float(p) for g, p in body[key]["data"].items()}
        assert list(probs) == list(GENRES)
        assert abs(sum(probs.values()) - 1) < 1e-4
    assert body["timing_s"]["preprocess"] > 0 and body["timing_s"]["models"] > 0
    assert client.post("/", data={}).status_code == 400


def test_onnx_batch_memory_prints_a_line_per_batch(store_with_models):
    proc = subprocess.run(
        [sys.executable, str(REPO / "loadtests/onnx_batch_memory.py"), "cnn", "--batches", "1,4"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "BENTOML_HOME": str(store_with_models)},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in proc.stdout.splitlines() if "windows:" in line]
    assert [int(line.split()[0]) for line in lines] == [1, 4]
    assert all("ms/window" in line and "RSS +" in line for line in lines)


@pytest.mark.slow
def test_upload_overhead_script_runs(store_with_models, tmp_path):
    """loadtests/upload_overhead.py against a real service: it stores every clip (201) and
    writes the overhead it measured."""
    import json
    import subprocess
    import sys

    out = tmp_path / "overhead.json"
    r = subprocess.run(
        [sys.executable, "loadtests/upload_overhead.py", "--clips", "2", "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["clips"] == 2 and result["tracks_median_ms"] > 0
    assert "storing adds" in r.stdout


@pytest.mark.slow
def test_refusal_cost_script_measures_429s_and_an_answered_request(store_with_models, tmp_path):
    """loadtests/refusal_cost.py against a real service: every request of a spent budget is
    429, every GET /me 200, and the service's CPU per request is reported for each kind."""
    import json

    out = tmp_path / "refusals.json"
    r = subprocess.run(
        [sys.executable, "loadtests/refusal_cost.py", "--requests", "20", "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["search_429"]["statuses"] == {"429": 20}
    assert result["upload_429"]["statuses"] == {"429": 4}
    assert result["me_200"]["statuses"] == {"200": 20}
    for kind in ("search_429", "upload_429", "me_200"):
        assert result[kind]["service_cpu_ms_per_request"] >= 0
        assert result[kind]["client_wall_p50_ms"] > 0
