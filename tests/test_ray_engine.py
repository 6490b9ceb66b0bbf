"""`python -m genre_detector tag --engine ray`: a real local Ray (2 CPUs) against the
in-process engine on a small mixed library, resume, and the KubeRay manifest.

The library is built in tmp_path from symlinks to a few shared clips plus bad files.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import yaml

from genre_detector.batch.tagger import InProcessEngine, tag_library
from tests.unusable_files import BAD, add_unusable_files

REPO = Path(__file__).resolve().parent.parent
MANIFEST = REPO / "deploy" / "ray" / "rayjob.yaml"


@pytest.fixture(scope="module")
def library(tmp_path_factory, emotify_dir, gtzan_dir) -> Path:
    root = tmp_path_factory.mktemp("ray-library")
    for genre in ("rock", "classical"):
        (root / genre).mkdir()
        for clip in sorted((emotify_dir / genre).glob("*.mp3"))[:2]:
            (root / genre / clip.name).symlink_to(clip)
    (root / "more" / "deeper").mkdir(parents=True)
    (root / "more" / "deeper" / "jazz.00000.wav").symlink_to(gtzan_dir / "jazz.00000.wav")
    add_unusable_files(root, gtzan_dir)
    return root


@pytest.fixture(scope="module")
def reference(library, store_with_models, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "inprocess.csv"
    engine = InProcessEngine(workers=2)
    try:
        tag_library([str(library)], str(out), engine=engine, progress=False)
    finally:
        engine.close()
    return out


@pytest.fixture(scope="module")
def ray_engine(store_with_models):
    from genre_detector.batch.ray_engine import RayEngine

    engine = RayEngine(num_cpus=2, batch_windows=64)  # batches of 2 tracks: several blocks
    yield engine
    engine.close()


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _same_rows(got: list[dict], want: list[dict]) -> None:
    assert [r["path"] for r in got] == [r["path"] for r in want]  # library order
    for g, w in zip(got, want):
        assert list(g) == list(w)
        for k in w:
            labels = ("path", "error", "model_tags", "n_windows", "mood_quadrant")
            if k.endswith("_genre") or k in labels:  # names, not numbers
                assert g[k] == w[k], (k, g, w)
            elif k.startswith(("tempo_", "key_")):  # from the audio alone: the same exactly
                assert g[k] == w[k], (k, g, w)
            elif k == "embedding" and w[k]:  # the search embedding, a JSON list
                a, b = json.loads(g[k]), json.loads(w[k])
                assert len(a) == len(b) == 64
                assert max(abs(x - y) for x, y in zip(a, b)) < 2e-3, k
            elif k != "timeline" and w[k]:  # numbers: the models' batches differ
                assert math.isclose(float(g[k]), float(w[k]), abs_tol=2e-4), (k, g, w)


def _close(g, w) -> None:
    if isinstance(w, dict):
        assert list(g) == list(w)
        for k in w:
            if k != "timeline":
                _close(g[k], w[k])
    elif isinstance(w, float):
        assert math.isclose(g, w, abs_tol=2e-4), (g, w)
    elif isinstance(w, list) and w and isinstance(w[0], float):  # the embedding
        assert len(g) == len(w) and max(abs(a - b) for a, b in zip(g, w)) < 2e-4
    else:
        assert g == w


@pytest.mark.slow
def test_ray_rows_match_in_process(library, reference, ray_engine, tmp_path):
    out = tmp_path / "ray.csv"
    summary, stats = tag_library([str(library)], str(out), engine=ray_engine, progress=False)
    got, want = _rows(out), _rows(reference)
    _same_rows(got, want)
    errors = {Path(r["path"]).relative_to(library).as_posix(): r["error"] for r in got}
    for key, reason in BAD.items():
        assert errors[key].startswith(f"{reason}: "), errors[key]
    assert "more/deeper/jazz.00000.wav" in errors and "readme.txt" not in errors
    assert summary.ok == len(want) - len(BAD) and dict(summary.failed) == {
        r: 1 for r in BAD.values()
    }
    assert stats.startswith("ray (local)")


@pytest.mark.slow
def test_ray_stores_the_catalog_like_in_process(library, reference, ray_engine, tmp_path):
    """--catalog on Ray: the model actors' records cross to the driver and every usable
    track is stored once, with the embedding the in-process run wrote."""
    import sqlalchemy as sa

    from genre_detector.batch.tagger import CatalogTarget
    from genre_detector.catalog.db import Catalog

    url = f"sqlite:///{tmp_path / 'ray.sqlite3'}"
    out = tmp_path / "ray.csv"
    summary, _ = tag_library(
        [str(library)],
        str(out),
        engine=ray_engine,
        catalog=CatalogTarget(url, "label", "search"),
        progress=False,
    )
    good = len(_rows(reference)) - len(BAD)
    assert summary.catalog_added == good
    db = Catalog.open(url)
    with db.connect() as conn:
        n = conn.execute(sa.text("select count(*) from track_vectors")).scalar_one()
    db.close()
    assert n == good


@pytest.mark.slow
def test_ray_resume_gives_the_same_file(library, reference, ray_engine, tmp_path):
    full = tmp_path / "full.jsonl"
    tag_library([str(library)], str(full), engine=ray_engine, progress=False)
    # An interrupted run: the first rows, then half a row cut by the crash.
    part = tmp_path / "part.jsonl"
    lines = full.read_text().splitlines(keepends=True)
    part.write_text("".join(lines[:3]) + lines[3][:40])
    summary, _ = tag_library(
        [str(library)], str(part), engine=ray_engine, resume=True, progress=False
    )
    assert summary.resumed == 3 and summary.ok + sum(summary.failed.values()) == len(lines) - 3
    got, want = part.read_text().splitlines(), full.read_text().splitlines()
    assert got[:3] == want[:3] and len(got) == len(want)
    for g, w in zip(got, want):  # the same rows (numbers: the models' batches differ)
        _close(json.loads(g), json.loads(w))
    with pytest.raises(FileExistsError):  # no silent overwrite without --resume
        tag_library([str(library)], str(part), engine=ray_engine, progress=False)


@pytest.mark.slow
def test_cli_engine_ray(library, reference, store_with_models, tmp_path, capsys):
    from genre_detector.__main__ import main

    ray = pytest.importorskip("ray")
    if ray.is_initialized():  # the module's engine: the CLI starts and stops its own Ray
        ray.shutdown()
    out = tmp_path / "cli.csv"
    argv = ["tag", str(library), "--out", str(out), "--engine", "ray", "--workers", "2"]
    rc = main([*argv, "--no-progress"])
    assert rc == 0, capsys.readouterr()
    _same_rows(_rows(out), _rows(reference))
    assert not ray.is_initialized()


def test_kuberay_manifest_names_image_and_command():
    docs = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
    job = next(d for d in docs if d["kind"] == "RayJob")
    assert job["apiVersion"].startswith("ray.io/")
    entry = job["spec"]["entrypoint"]
    assert "python -m genre_detector tag" in entry and "--engine ray" in entry
    assert "s3://" in entry and "--address auto" in entry
    cluster = job["spec"]["rayClusterSpec"]
    pods = [cluster["headGroupSpec"]] + cluster["workerGroupSpecs"]
    images = {c["image"] for p in pods for c in p["template"]["spec"]["containers"]}
    # the [batch] image (make container-batch): the serving image has no Ray
    assert images and all(i.split("/")[-1].startswith("genre-detector-batch:") for i in images)
