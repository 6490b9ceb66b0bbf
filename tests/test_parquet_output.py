"""Parquet output of the library tagger (`--out NAME.parquet`): a folder of part files.

Fast tests build rows with row_from_reply from small fake replies (no models);
one slow test tags real clips in-process and compares the Parquet folder with the CSV.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from genre_detector.batch.rows import error_row, row_from_reply
from genre_detector.batch.tagger import tag_library
from genre_detector.batch.writers import (
    ParquetWriter,
    RowWriter,
    columns,
    open_writer,
    read_done,
)

MODELS = ["cnn", "lenet"]
LABELS = ["blues", "classical", "pop-rock"]
COLS = columns(MODELS, LABELS)


def _reply(i: int) -> dict:
    p = [0.1 + 0.01 * (i % 7), 0.2, 0.0]
    p[2] = 1 - p[0] - p[1]
    probs = dict(zip(LABELS, p))
    top = max(probs, key=probs.get)
    return {
        "duration_s": 30.0 + i / 7,
        "n_windows": 10 + i % 3,
        "models": {
            m: {"top_genre": LABELS[(i + k) % 3], "top_probability": 0.5 + k / 10}
            for k, m in enumerate(MODELS)
        },
        "ensemble": {"top_genre": top, "top_probability": probs[top], "probabilities": probs},
        "timeline": [{"start_s": 0.0, "top_genre": "blues"}, {"start_s": 4.5, "top_genre": top}],
        "model_tags": {m: f"genre-{m}:v{i % 2}" for m in MODELS},
    }


def _rows(n: int, folder: str = "/music/pop-rock") -> list[dict]:
    """n rows, every fifth an error row (only path and error)."""
    return [
        error_row(f"{folder}/t{i:03d}.mp3", "not_audio", "not an audio file")
        if i % 5 == 3
        else row_from_reply(f"{folder}/t{i:03d}.mp3", _reply(i))
        for i in range(n)
    ]


def _expected(row: dict) -> dict:
    """What a part holds for a row: the CSV's columns, typed, missing values null."""
    flat = {c: row.get(c) for c in COLS}
    for g, p in (row.get("probabilities") or {}).items():
        flat[f"p_{g}"] = p
    flat["model_tags"] = " ".join(row["model_tags"].values()) if "model_tags" in row else None
    flat["error"] = row.get("error") or None
    return flat


def _write(out: Path, rows: list[dict], per_part: int, **kw) -> ParquetWriter:
    w = open_writer(out, MODELS, LABELS, parquet_rows=per_part, **kw)
    for r in rows:
        w.write(r)
    w.close()
    return w


def _read(out: Path) -> list[dict]:
    return ds.dataset(out, format="parquet").to_table().to_pylist()


def test_parts_read_back_as_the_rows(tmp_path):
    out, rows = tmp_path / "tags.parquet", _rows(23)
    w = _write(out, rows, per_part=5)
    assert isinstance(w, ParquetWriter) and w.done == set()
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"part-{i:05d}.parquet" for i in range(5)]  # 5+5+5+5+3, no temp left
    assert [pq.read_metadata(out / n).num_rows for n in names] == [5, 5, 5, 5, 3]
    assert _read(out) == [_expected(r) for r in rows]  # library order, every value
    schema = ds.dataset(out, format="parquet").schema
    assert schema.names == COLS
    assert schema.field("duration_s").type == pa.float64()
    assert schema.field("p_blues").type == pa.float64()
    assert schema.field("cnn_probability").type == pa.float64()
    assert schema.field("n_windows").type == pa.int64()
    assert schema.field("cnn_genre").type == schema.field("error").type == pa.string()
    df = pytest.importorskip("pandas").read_parquet(out)
    assert list(df["path"]) == [r["path"] for r in rows] and list(df.columns) == COLS
    err = df[df["error"].notna()]
    assert len(err) == 4 and err["cnn_genre"].isna().all() and err["p_blues"].isna().all()
    assert read_done(out) == {r["path"] for r in rows}


def test_interrupted_run_resumes_every_row_once_in_order(tmp_path):
    out, rows = tmp_path / "tags.parquet", _rows(31)
    w = open_writer(out, MODELS, LABELS, parquet_rows=4)
    for r in rows[:14]:  # 3 parts written, 2 rows gathered, then a hard kill (no close)
        w.write(r)
    (out / ".part-00003.parquet.tmp").write_bytes(b"PAR1 half a part")  # cut mid-write
    assert len(_read(out)) == 12  # readable as it is: the temp file is hidden
    with pytest.raises(FileExistsError):
        open_writer(out, MODELS, LABELS, parquet_rows=4)

    seen = []
    w = open_writer(out, MODELS, LABELS, resume=True, on_existing=seen.append, parquet_rows=4)
    assert w.done == {r["path"] for r in rows[:12]} and w.next_part == 3
    assert [r["path"] for r in seen] == [r["path"] for r in rows[:12]]
    assert seen[3]["error"].startswith("not_audio: ") and seen[0]["error"] is None
    assert not (out / ".part-00003.parquet.tmp").exists()
    for r in rows:
        if r["path"] not in w.done:
            w.write(r)
    w.close()
    got = _read(out)
    assert [r["path"] for r in got] == [r["path"] for r in rows]  # each once, in order
    assert got == [_expected(r) for r in rows]
    assert len(list(out.iterdir())) == 8  # parts 0-2 + ceil(19 / 4) = 5 new ones

    with pytest.raises(ValueError, match="other columns"):  # another model set
        open_writer(out, ["cnn"], LABELS, resume=True)


def test_existing_output_needs_resume_or_overwrite(tmp_path):
    out = tmp_path / "tags.parquet"
    _write(out, _rows(7), per_part=3)
    with pytest.raises(FileExistsError, match="--resume"):
        open_writer(out, MODELS, LABELS)
    (out / "notes.txt").write_text("mine")
    w = _write(out, _rows(2, "/other"), per_part=3, overwrite=True)
    assert w.done == set()
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "part-00000.parquet"]
    assert [r["path"] for r in pq.read_table(out / "part-00000.parquet").to_pylist()] == [
        "/other/t000.mp3",
        "/other/t001.mp3",
    ]
    empty = tmp_path / "empty.parquet"
    empty.mkdir()
    _write(empty, [], per_part=3).close()  # an empty folder is no output yet; no rows, no part
    assert list(empty.iterdir()) == []
    (tmp_path / "single.parquet").write_bytes(b"PAR1")
    with pytest.raises(ValueError, match="folder"):
        open_writer(tmp_path / "single.parquet", MODELS, LABELS, overwrite=True)
    assert isinstance(open_writer(tmp_path / "t.csv", MODELS, LABELS), RowWriter)
    with pytest.raises(ValueError, match=".parquet"):
        open_writer(tmp_path / "t.txt", MODELS, LABELS)


class FakeEngine:
    """An engine without models: rows from fake replies, keyed by the track's name."""

    model_names, labels = MODELS, LABELS

    def __init__(self, rows: list[dict]):
        self.by_name = {Path(r["path"]).name: r for r in rows}
        self.tagged = 0

    def tag(self, tracks):
        for t in tracks:
            self.tagged += 1
            yield t, {**self.by_name[Path(t.path).name], "path": t.path}, None

    def stats(self) -> str:
        return "fake"

    def close(self) -> None:
        pass


def test_tag_library_writes_and_resumes_parquet(tmp_path):
    music = tmp_path / "music"
    (music / "pop-rock").mkdir(parents=True)
    rows = _rows(11)
    for r in rows:
        (music / "pop-rock" / Path(r["path"]).name).write_bytes(b"x")
    out = tmp_path / "tags.parquet"
    engine = FakeEngine(rows)
    # as if Ctrl-C came after 7 rows: close() still writes the gathered rows as a part
    first = FakeEngine(rows)
    original = first.tag

    def interrupted(tracks):
        for n, pair in enumerate(original(tracks)):
            if n == 7:
                raise KeyboardInterrupt
            yield pair

    first.tag = interrupted
    with pytest.raises(KeyboardInterrupt):
        tag_library([str(music)], str(out), engine=first, progress=False, parquet_rows=3)
    assert len(_read(out)) == 7 and len(list(out.iterdir())) == 3  # 3 + 3 + 1
    summary, _ = tag_library(
        [str(music)],
        str(out),
        engine=engine,
        resume=True,
        progress=False,
        parquet_rows=3,
        labels_from_folders=True,
    )
    assert engine.tagged == 4 and summary.resumed == 7
    assert summary.ok + sum(summary.failed.values()) == 4
    assert summary.scored == 11 - 2  # two error rows, none scored
    got = _read(out)
    assert [Path(r["path"]).name for r in got] == [Path(r["path"]).name for r in rows]
    with pytest.raises(FileExistsError):
        tag_library([str(music)], str(out), engine=engine, progress=False)


def test_cli_refuses_a_bad_part_size():
    from genre_detector.__main__ import main

    with pytest.raises(SystemExit):
        main(["tag", "x", "--out", "t.parquet", "--parquet-rows", "0"])


@pytest.mark.slow
def test_real_clips_in_process_parquet_equals_csv(store_with_models, data_dir, tmp_path):
    from genre_detector.batch.tagger import InProcessEngine

    clips = sorted((data_dir / "gtzan-samples").glob("*.wav"))[:3]
    if len(clips) < 3:
        pytest.skip("fewer than 3 GTZAN clips")
    paths = [str(c) for c in clips]
    engine = InProcessEngine(workers=1)
    try:
        tag_library(paths, str(tmp_path / "t.csv"), engine=engine, progress=False)
        summary, _ = tag_library(
            paths, str(tmp_path / "t.parquet"), engine=engine, progress=False, parquet_rows=2
        )
    finally:
        engine.close()
    assert summary.ok == 3
    with open(tmp_path / "t.csv", newline="") as f:
        want = list(csv.DictReader(f))
    got = pytest.importorskip("pandas").read_parquet(tmp_path / "t.parquet")
    assert list(got.columns) == list(want[0]) and len(got) == 3
    assert sorted(p.name for p in (tmp_path / "t.parquet").iterdir()) == [
        "part-00000.parquet",
        "part-00001.parquet",
    ]
    for g, w in zip(got.to_dict("records"), want):
        for k, v in w.items():
            if v == "":  # the CSV's empty cell: null (NaN in a float column in pandas)
                assert g[k] is None or g[k] != g[k], (k, g[k])
            elif isinstance(g[k], float):
                assert math.isclose(g[k], float(v), abs_tol=1e-6), (k, g[k], v)
            elif k == "embedding":  # a list<float32> in Parquet, a JSON list in the CSV
                assert len(g[k]) == 64
                assert max(abs(a - b) for a, b in zip(g[k], json.loads(v))) < 1e-6
            else:
                assert str(g[k]) == v, (k, g[k], v)
