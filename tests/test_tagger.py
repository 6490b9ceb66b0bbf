"""Batch tagging (`python -m genre_detector tag`): real clips, broken files, resume, shards,
and the --url engine against a live `bentoml serve`.

The library is built in tmp_path from symlinks to the shared clips (nothing is copied
into the repository) plus a few bad files made on the spot. Its emotify clips are from the
shipped run's validation split (models/report/report.json, split by artist), so the accuracy
measured on them is on artists the shipped models never trained on.
"""

from __future__ import annotations

import csv
import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from genre_detector.batch.library import in_shard, parse_shard, walk
from genre_detector.batch.tagger import InProcessEngine, tag_library
from genre_detector.batch.writers import read_done
from genre_detector.errors import GenreError
from genre_detector.models.families import model_names
from genre_detector.models.mood_heads import GEMS, INSTRUMENTS
from loadtests.service_process import ServedService
from tests.expected import NINE
from tests.unusable_files import BAD, add_unusable_files

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent
REPORT = REPO / "models" / "report" / "report.json"  # the shipped run's report
CLIPS = {"rock": 3, "classical": 3, "electronic": 3, "pop": 2}  # held-out emotify clips
# The library's folders are the models' genres (emotify's pop and rock are pop-rock), so
# --labels-from-folders scores every clip.
FOLDER = {
    "rock": "pop-rock",
    "pop": "pop-rock",
    "classical": "classical",
    "electronic": "electronic",
}
NAMES = model_names()  # the five families
N_TRACKS = sum(CLIPS.values()) + 1 + len(BAD)  # + one nested GTZAN WAV


def held_out_emotify() -> dict[str, list[str]]:
    """emotify folder -> the file names (sorted) of its clips in the shipped run's validation
    split: tracks by artists no shipped model was trained on."""
    split = json.loads(REPORT.read_text())["split"]
    assert split["by"] == "artist"
    held: dict[str, list[str]] = {}
    for rel in split["val_tracks"]:  # e.g. "emotify/rock/36.mp3"
        source, folder, name = rel.split("/")
        if source == "emotify":
            held.setdefault(folder, []).append(name)
    return {folder: sorted(names) for folder, names in held.items()}


@pytest.fixture(scope="module")
def library(tmp_path_factory, emotify_dir, gtzan_dir) -> Path:
    """CLIPS held-out emotify clips per genre (the first by file name), a GTZAN WAV (a source
    no shipped model was trained on) two folders down, and the unusable files."""
    root = tmp_path_factory.mktemp("library")
    held = held_out_emotify()
    for genre, n in CLIPS.items():
        (root / FOLDER[genre]).mkdir(exist_ok=True)
        assert len(held[genre]) >= n, (genre, held[genre])
        for name in held[genre][:n]:
            clip = emotify_dir / genre / name
            assert clip.is_file(), clip
            (root / FOLDER[genre] / f"{genre}-{name}").symlink_to(clip)
    (root / "more" / "deeper").mkdir(parents=True)
    (root / "more" / "deeper" / "classical.00000.wav").symlink_to(gtzan_dir / "classical.00000.wav")
    add_unusable_files(root, gtzan_dir)
    (root / ".hidden.mp3").write_text("hidden files are skipped")
    return root


@pytest.fixture(scope="module")
def service(store_with_models):
    svc = ServedService()  # starts now, in parallel with the in-process work
    try:
        yield svc
    finally:
        svc.stop()


@pytest.fixture(scope="module")
def engine(store_with_models, service):
    eng = InProcessEngine(workers=2)
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def reference(library, engine, tmp_path_factory):
    """An uninterrupted in-process run: (csv path, summary)."""
    out = tmp_path_factory.mktemp("ref") / "tags.csv"
    summary, _ = tag_library(
        [str(library)], str(out), engine=engine, labels_from_folders=True, progress=False
    )
    return out, summary


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _same(a: str, b: str) -> bool:
    """Cells equal, numbers within 2e-4, and the embedding column's numbers within 1e-5: runs
    with other batch sizes differ in ONNX Runtime's last bits, which can flip the last of the
    6 decimals an embedding number is written with (seen: 0.027316 against 0.027317)."""
    if a.startswith("[") and b.startswith("["):
        x, y = json.loads(a), json.loads(b)
        return len(x) == len(y) and all(math.isclose(p, q, abs_tol=1e-5) for p, q in zip(x, y))
    try:
        return math.isclose(float(a), float(b), abs_tol=2e-4)
    except ValueError:
        return a == b


def test_walk_and_shards_cover_every_track_once(library):
    tracks = walk([str(library)])
    keys = [t.key for t in tracks]
    assert len(tracks) == N_TRACKS and keys == sorted(keys)
    assert "readme.txt" not in keys and ".hidden.mp3" not in keys
    assert "more/deeper/classical.00000.wav" in keys
    assert walk([str(library), str(library / "pop-rock")]) == tracks  # each file once
    shards = [[t.key for t in tracks if in_shard(t, i, 3)] for i in (1, 2, 3)]
    assert sorted(sum(shards, [])) == keys and all(shards)
    # the same library reached by another path is sharded the same way
    other = [t.key for t in walk([f"{library}/../{library.name}"]) if in_shard(t, 2, 3)]
    assert other == shards[1]
    with pytest.raises(ValueError):
        parse_shard("0/3")


def test_rows_errors_and_accuracy(library, reference):
    out, summary = reference
    rows = _rows(out)
    assert len(rows) == N_TRACKS
    by_key = {Path(r["path"]).relative_to(library).as_posix(): r for r in rows}
    for key, reason in BAD.items():
        assert by_key[key]["error"].startswith(f"{reason}: "), by_key[key]["error"]
        assert by_key[key]["ensemble_genre"] == ""
    good = [r for r in rows if not r["error"]]
    assert len(good) == N_TRACKS - len(BAD)
    labels = NINE
    assert list(rows[0]) == (
        ["path", "duration_s", "n_windows"]
        + [f"{n}_{c}" for n in (*NAMES, "ensemble") for c in ("genre", "probability")]
        + [f"p_{g}" for g in labels]
        + [f"tempo_{f}" for f in ("bpm", "confidence", "alternative_bpm")]
        + [f"key_{f}" for f in ("tonic", "mode", "camelot", "confidence")]
        + ["mood_quadrant", "mood_Q1", "mood_Q2", "mood_Q3", "mood_Q4", "mood_arousal"]
        + ["mood_valence", *(f"gems_{g}" for g in GEMS)]
        + [f"voice_{v}" for v in ("instrumental", "female", "male")]
        + [f"instruments_{i}" for i in INSTRUMENTS]
        + ["timeline", "model_tags", "embedding", "error"]
    )
    assert all(float(r["tempo_bpm"]) > 0 and r["key_camelot"] for r in good)
    # issue 32: musicnn is among the models, so every good row has its mood and voice
    for r in good:
        q = [float(r[f"mood_Q{i}"]) for i in range(1, 5)]
        assert abs(sum(q) - 1) < 0.01 and r["mood_quadrant"] == f"Q{int(np.argmax(q)) + 1}"
        assert 0 <= float(r["gems_calmness"]) <= 1 and 0 <= float(r["voice_instrumental"]) <= 1
    for r in good:
        p = [float(r[f"p_{g}"]) for g in labels]
        assert abs(sum(p) - 1) < 1e-3 and r["ensemble_genre"] == labels[int(np.argmax(p))]
        tags = r["model_tags"].split()
        assert [t.split(":")[0] for t in tags] == [f"genre-{n}" for n in NAMES]
        spans = [s.split(":")[0].split("-") for s in r["timeline"].split(";")]
        assert spans[0][0] == "0" and abs(float(spans[-1][1]) - float(r["duration_s"])) < 0.1
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))  # contiguous
    assert by_key["more/deeper/classical.00000.wav"]["ensemble_genre"] == "classical"
    assert summary.ok == len(good) and dict(summary.failed) == {r: 1 for r in BAD.values()}
    assert summary.scored == sum(CLIPS.values())  # "deeper", "broken": not labels
    # Every scored clip is by an artist the shipped models never heard (the shipped run's
    # validation split): "pop-rock/rock-36.mp3" is emotify/rock/36.mp3.
    held = {f"{genre}/{name}" for genre, names in held_out_emotify().items() for name in names}
    scored = [k for k in by_key if k.split("/")[0] in FOLDER.values()]
    assert len(scored) == summary.scored
    assert all(k.split("/")[1].replace("-", "/", 1) in held for k in scored), scored
    # On these 11 the ensemble got 9 right (0.82; on all 56 held-out emotify clips 49, 0.875,
    # as the model card's per-source figure says). Always answering the commonest folder
    # (pop-rock) gets 5 of 11 (0.45), chance 1/9: at least 8 (0.73), so losing two more fails.
    assert summary.correct["ensemble"] >= 8, summary.report(1.0)
    assert "ensemble" in summary.report(1.0)


def _as_from_a_shell() -> None:
    """Start the CLI with Ctrl-C as a shell gives it: handled, not blocked. Signal dispositions
    and masks are inherited across exec, and an earlier test in the same pytest process can
    leave SIGINT ignored or blocked (in full-suite runs the CLI then never saw the Ctrl-C)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])


def test_cli_ctrl_c_then_resume_matches_uninterrupted(library, engine, reference, tmp_path):
    out = tmp_path / "tags.csv"
    cmd = [
        sys.executable,
        "-m",
        "genre_detector",
        "tag",
        str(library),
        "--out",
        str(out),
        "--workers",
        "1",
        "--batch-windows",
        "1",
        "--no-progress",
    ]
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_as_from_a_shell,
    )
    # Interrupt once the header, the bad files and two clips are written (about ten clips
    # are left, seconds of work). No short deadline: on a loaded 2-core machine the start
    # (TensorFlow, four models) can take minutes, and a timer that expires first would let
    # the run finish uninterrupted (a flake seen once, rc 0 and empty stderr).
    wanted, sent, deadline = 1 + len(BAD) + 2, False, time.time() + 600
    while not sent and proc.poll() is None and time.time() < deadline:
        if out.exists() and out.read_text().count("\n") >= wanted:
            proc.send_signal(signal.SIGINT)
            sent = True
        time.sleep(0.02)
    if not sent:
        proc.kill()
    _, err = proc.communicate(timeout=120)
    assert sent, (
        f"no SIGINT sent: {wanted} lines never appeared (rc {proc.returncode}): {err[-2000:]}"
    )
    assert proc.returncode == 130, err[-2000:]
    assert "--resume" in err
    text = out.read_text()
    assert text.endswith("\n") and 1 + 3 <= text.count("\n") < 1 + N_TRACKS
    done = len(_rows(out))
    with open(out, "a") as f:  # as if killed in the middle of a write
        f.write(f"{library}/pop-rock/partial.mp3,60.0,39,po")
    summary, _ = tag_library([str(library)], str(out), engine=engine, resume=True, progress=False)
    assert summary.resumed == done and summary.ok + sum(summary.failed.values()) == N_TRACKS - done
    got, want = _rows(out), _rows(reference[0])
    assert [r["path"] for r in got] == [r["path"] for r in want]
    for g, w in zip(got, want):
        assert all(_same(g[k], w[k]) for k in w), (g, w)


def test_jsonl_has_the_csv_content(library, engine, reference, tmp_path):
    out = tmp_path / "tags.jsonl"
    tag_library([str(library)], str(out), engine=engine, progress=False)
    with pytest.raises(FileExistsError):  # no silent overwrite
        tag_library([str(library)], str(out), engine=engine, progress=False)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(read_done(out)) == len(lines) == N_TRACKS
    for j, c in zip(lines, _rows(reference[0])):
        assert j["path"] == c["path"] and (j["error"] or "") == c["error"]
        if not j["error"]:
            assert all(_same(str(p), c[f"p_{g}"]) for g, p in j["probabilities"].items())
            assert list(j["model_tags"].values()) == c["model_tags"].split()
            assert j["timeline"] == c["timeline"] and j["cnn_genre"] == c["cnn_genre"]


def test_url_engine_matches_in_process(library, service, reference, tmp_path):
    service.wait_ready()
    out = tmp_path / "remote.csv"
    summary, stats = tag_library(
        [str(library)], str(out), urls=[service.url, service.url], per_url=2, progress=False
    )
    got, want = _rows(out), _rows(reference[0])
    assert list(got[0]) == list(want[0])  # same columns
    assert [r["path"] for r in got] == [r["path"] for r in want]
    for g, w in zip(got, want):
        assert g["error"].split(":")[0] == w["error"].split(":")[0]
        for name in (*NAMES, "ensemble"):
            assert g[f"{name}_genre"] == w[f"{name}_genre"], (name, g["path"])
            assert _same(g[f"{name}_probability"], w[f"{name}_probability"])
        assert g["model_tags"] == w["model_tags"]
    assert summary.ok == N_TRACKS - len(BAD) and "remote" in stats


def test_catalog_writes_every_good_track_once(library, engine, reference, tmp_path):
    """--catalog stores each usable track with its embedding (batched inserts); running
    again stores nothing twice; the output's embedding column holds the same vector."""
    import sqlalchemy as sa

    from genre_detector.batch.tagger import CatalogTarget
    from genre_detector.catalog.db import Catalog

    url = f"sqlite:///{tmp_path / 'label.sqlite3'}"
    target = CatalogTarget(url, "label", "search,notify")
    out = tmp_path / "tags.jsonl"
    summary, _ = tag_library(
        [str(library)], str(out), engine=engine, catalog=target, progress=False
    )
    good = N_TRACKS - len(BAD)
    assert summary.catalog_added == good
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    embedded = [r for r in rows if not r["error"]]
    assert all(len(r["embedding"]) == 64 for r in embedded)
    db = Catalog.open(url)
    with db.connect() as conn:
        stored = conn.execute(sa.text("select count(*) from tracks where owner='label'")).scalar()
        vecs = conn.execute(sa.text("select count(*) from track_vectors")).scalar()
    assert stored == vecs == good
    again, _ = tag_library(
        [str(library)], str(out), engine=engine, catalog=target, overwrite=True, progress=False
    )
    assert again.catalog_added == 0
    with db.connect() as conn:
        assert conn.execute(sa.text("select count(*) from tracks")).scalar() == good
    with pytest.raises(GenreError):
        CatalogTarget(url, "label", "notify").open()
    db.close()


def test_profile_measures_the_floor_and_writes_nothing(library, store_with_models, capsys):
    """`tag --profile` (batch.floor): seconds per stage and each model's batch-size sweep,
    the window count of the one track, no output file."""
    from genre_detector.__main__ import main

    before = sorted(library.rglob("*"))
    assert main(["tag", str(library / "more"), "--profile", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("compute floor over 1 tracks, ") and "1 decoding workers:" in out
    assert "decode+features" in out and "tracks/s" in out
    swept = [line.split()[0] for line in out.splitlines() if "best batch" in line]
    assert swept == list(NAMES)
    assert sorted(library.rglob("*")) == before
