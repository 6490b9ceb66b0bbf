"""Where the rows go: CSV, JSON Lines or a folder of Parquet parts, by the --out extension.

    writer = open_writer("tags.csv", model_names, labels, resume=True)
    writer.write(row); writer.close()     # writer.done: the paths already in the output

The columns are columns(model_names, labels); CSV and Parquet hold the same flat row
(flat_row: one place to add a column), JSON Lines the nested one. CSV/JSONL: every row is
one write() plus flush(); `--resume` drops a trailing partial line, then skips the paths
already in the file and appends. Parquet (`--out NAME.parquet`): a folder of part files,
each written whole to a hidden temp name and renamed into place (ParquetWriter); `--resume`
deletes a leftover temp file, skips the paths in the complete parts and continues with the
next part number.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from pathlib import Path

from genre_detector.models.mood_heads import GEMS, INSTRUMENTS, QUADRANTS, VOICE_FIELDS

# The row's `descriptors` block (docs/api.md), one column per field: <block>_<field> (the
# mood's quadrant probabilities: mood_Q1 ... mood_Q4).
_MOOD_FLOATS = (
    *(f"mood_{q}" for q in QUADRANTS),
    "mood_arousal",
    "mood_valence",
    *(f"gems_{g}" for g in GEMS),
    *(f"voice_{v}" for v in VOICE_FIELDS),
    *(f"instruments_{i}" for i in INSTRUMENTS),
)
DESCRIPTOR_COLUMNS = (
    "tempo_bpm",
    "tempo_confidence",
    "tempo_alternative_bpm",
    "key_tonic",
    "key_mode",
    "key_camelot",
    "key_confidence",
    "mood_quadrant",
    *_MOOD_FLOATS,
)
_FLOAT_DESCRIPTORS = {
    "tempo_bpm",
    "tempo_confidence",
    "tempo_alternative_bpm",
    "key_confidence",
    *_MOOD_FLOATS,
}


def descriptor_cells(block: dict | None) -> dict:
    """The descriptors block as <block>_<field> cells (nested fields flattened one level)."""
    out = {}
    for name, fields in (block or {}).items():
        for k, v in (fields or {}).items():
            if isinstance(v, dict):
                out.update({f"{name}_{kk}": vv for kk, vv in v.items()})
            else:
                out[f"{name}_{k}"] = v
    return out


def columns(model_names: list[str], labels: list[str]) -> list[str]:
    cols = ["path", "duration_s", "n_windows"]
    for name in [*model_names, "ensemble"]:
        cols += [f"{name}_genre", f"{name}_probability"]
    tail = ["timeline", "model_tags", "embedding", "error"]
    return cols + [f"p_{g}" for g in labels] + list(DESCRIPTOR_COLUMNS) + tail


def flat_row(row: dict, cols: list[str]) -> dict:
    """A row as CSV and Parquet hold it: the probabilities as p_<genre> columns, the model
    tags as one space-separated string; a value the row lacks (and an empty error) is None."""
    flat = {**row, **{f"p_{g}": p for g, p in (row.get("probabilities") or {}).items()}}
    flat.update(descriptor_cells(row.get("descriptors")))
    flat["model_tags"] = " ".join(row["model_tags"].values()) if row.get("model_tags") else None
    flat["error"] = row.get("error") or None
    return {c: flat.get(c) for c in cols}


def _csv_values(row: dict, cols: list[str]) -> list:
    """flat_row as CSV cells: the search embedding as a JSON list, None as an empty cell."""
    flat = flat_row(row, cols)
    if flat.get("embedding") is not None:
        flat["embedding"] = json.dumps(flat["embedding"], separators=(",", ":"))
    return ["" if v is None else v for v in flat.values()]


def _nested(row: dict, cols: list[str]) -> dict:
    out = {c: row.get(c) for c in cols if not c.startswith("p_") and c not in DESCRIPTOR_COLUMNS}
    out["probabilities"] = row.get("probabilities")
    out["descriptors"] = row.get("descriptors")
    out["model_tags"] = row.get("model_tags")
    return out


PARQUET_ROWS = 1000  # rows per Parquet part unless told otherwise (--parquet-rows)


def output_format(out: str | os.PathLike) -> str:
    """'csv', 'jsonl' or 'parquet' by the extension of --out."""
    suffix = Path(out).suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in {".jsonl", ".ndjson"}:
        return "jsonl"
    if suffix == ".parquet":
        return "parquet"
    raise ValueError(f"--out {out}: use a .csv, .jsonl or .parquet name")


def check_output(out: str | os.PathLike, resume: bool, overwrite: bool) -> str:
    """The format (output_format); refuses to clobber a non-empty file (or, for Parquet, a
    non-empty folder) without resume/overwrite."""
    fmt, path = output_format(out), Path(out)
    if fmt == "parquet":
        if path.exists() and not path.is_dir():
            raise ValueError(
                f"--out {out} is a file: Parquet output is a folder of part files, use another name"
            )
        used = path.is_dir() and any(path.iterdir())
    else:
        used = path.exists() and path.stat().st_size > 0
    if used and not (resume or overwrite):
        raise FileExistsError(
            f"{out} exists: pass --resume to continue it or --overwrite to start over"
        )
    return fmt


def open_writer(
    out: str | os.PathLike,
    model_names: list[str],
    labels: list[str],
    resume: bool = False,
    overwrite: bool = False,
    on_existing=None,
    parquet_rows: int = PARQUET_ROWS,
):
    """The writer for --out, chosen by its extension: RowWriter (.csv, .jsonl) or
    ParquetWriter (.parquet). Both have write(row), close() and .done (paths already in
    the output when resuming; each of their rows also went to on_existing(row))."""
    if output_format(out) == "parquet":
        return ParquetWriter(
            out, model_names, labels, resume, overwrite, on_existing, rows_per_part=parquet_rows
        )
    return RowWriter(out, model_names, labels, resume, overwrite, on_existing)


class RowWriter:
    """Appends rows to a .csv or .jsonl file, one write()+flush() per row."""

    def __init__(
        self,
        out: str | os.PathLike,
        model_names: list[str],
        labels: list[str],
        resume: bool = False,
        overwrite: bool = False,
        on_existing=None,
    ):
        self.path = Path(out)
        fmt = check_output(out, resume, overwrite)
        if fmt == "parquet":
            raise ValueError(f"--out {out}: Parquet goes through ParquetWriter (open_writer)")
        self.jsonl = fmt == "jsonl"
        self.cols = columns(model_names, labels)
        self.done: set[str] = set()
        if resume and self.path.exists():
            self.done = read_done(self.path, self.cols, on_existing)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.f = open(self.path, "a" if resume else "w", encoding="utf-8", newline="")
        if not self.jsonl and self.f.tell() == 0:
            self._line(self.cols)

    def _line(self, values: list) -> None:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(values)
        self.f.write(buf.getvalue())
        self.f.flush()

    def write(self, row: dict) -> None:
        if self.jsonl:
            self.f.write(json.dumps(_nested(row, self.cols), ensure_ascii=False) + "\n")
            self.f.flush()
        else:
            self._line(_csv_values(row, self.cols))

    def close(self) -> None:
        self.f.close()


def _drop_partial_line(path: Path) -> None:
    """Truncate a trailing line without its newline (a write cut short by a crash)."""
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        pos = size
        while pos > 0:  # scan back in blocks for the last newline
            start = max(0, pos - 65536)
            f.seek(start)
            block = f.read(pos - start)
            k = block.rfind(b"\n")
            if k >= 0:
                f.truncate(start + k + 1)
                return
            pos = start
        f.truncate(0)


def read_done(path: str | Path, cols: list[str] | None = None, on_row=None) -> set[str]:
    """Paths of the complete rows of an output file (or Parquet folder); each row also
    goes to on_row(row)."""
    path = Path(path)
    if output_format(path) == "parquet":
        return _read_parquet_done(path, cols, on_row)
    _drop_partial_line(path)
    done = set()
    with open(path, encoding="utf-8", newline="") as f:
        if path.suffix.lower() in {".jsonl", ".ndjson"}:
            rows = (json.loads(line) for line in f if line.strip())
        else:
            rows = csv.DictReader(f)
            if cols is not None and rows.fieldnames not in (None, cols):
                raise ValueError(
                    f"{path} has other columns than this run would write (other "
                    "models or labels?): use another --out"
                )
        for row in rows:
            done.add(row["path"])
            if on_row is not None:
                on_row(row)
    return done


# ---------------------------------------------------------------- Parquet

_PART = re.compile(r"part-(\d+)\.parquet")
_TEMP = re.compile(r"\.part-(\d+)\.parquet\.tmp")


def parquet_schema(cols: list[str]):
    """The columns of the CSV, typed: float for durations/probabilities, int for
    n_windows, string otherwise; every column nullable."""
    import pyarrow as pa

    def kind(c: str):
        if c == "duration_s" or c.endswith("_probability") or c.startswith("p_"):
            return pa.float64()
        if c in _FLOAT_DESCRIPTORS:
            return pa.float64()
        if c == "embedding":
            return pa.list_(pa.float32())
        return pa.int64() if c == "n_windows" else pa.string()

    return pa.schema([pa.field(c, kind(c)) for c in cols])


def parquet_parts(folder: str | Path) -> list[Path]:
    """The complete part files of a Parquet output folder, in part-number order."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m[1]), p) for p in folder.iterdir() if (m := _PART.fullmatch(p.name))]
    return [p for _, p in sorted(found)]


def _read_parquet_done(folder: Path, cols: list[str] | None, on_row) -> set[str]:
    import pyarrow.parquet as pq

    done = set()
    for part in parquet_parts(folder):
        if cols is not None and pq.read_schema(part).names != cols:
            raise ValueError(
                f"{part} has other columns than this run would write (other "
                "models or labels?): use another --out"
            )
        if on_row is None:
            done.update(pq.read_table(part, columns=["path"]).column("path").to_pylist())
            continue
        for row in pq.read_table(part).to_pylist():
            done.add(row["path"])
            on_row(row)
    return done


class ParquetWriter:
    """Writes rows into a folder of Parquet parts: part-00000.parquet, part-00001.parquet...

    A Parquet file is readable only once its footer is written, on close; so rows are
    gathered in memory (`rows_per_part` at most) and each part is written whole to a
    hidden temp name (.part-NNNNN.parquet.tmp, which Parquet readers skip), synced and
    renamed into place. close() writes the last, shorter part; it also runs on Ctrl-C, so
    only a hard kill loses rows (the ones not yet in a part, at most `rows_per_part`).
    `pyarrow.dataset.dataset(out)` or `pandas.read_parquet(out)` reads the whole run."""

    def __init__(
        self,
        out: str | os.PathLike,
        model_names: list[str],
        labels: list[str],
        resume: bool = False,
        overwrite: bool = False,
        on_existing=None,
        rows_per_part: int = PARQUET_ROWS,
    ):
        if rows_per_part < 1:
            raise ValueError(f"--parquet-rows must be at least 1, got {rows_per_part}")
        check_output(out, resume, overwrite)
        self.path, self.rows_per_part = Path(out), rows_per_part
        self.cols = columns(model_names, labels)
        self.schema = parquet_schema(self.cols)
        self.done: set[str] = set()
        self.path.mkdir(parents=True, exist_ok=True)
        for p in self.path.iterdir():  # a part cut short by a crash: never complete
            if _TEMP.fullmatch(p.name):
                p.unlink()
        parts = parquet_parts(self.path)
        if parts and not resume:  # --overwrite (check_output refused anything else)
            for p in parts:
                p.unlink()
            parts = []
        if parts:
            self.done = _read_parquet_done(self.path, self.cols, on_existing)
        self.next_part = int(_PART.fullmatch(parts[-1].name)[1]) + 1 if parts else 0
        self.rows: list[dict] = []

    def write(self, row: dict) -> None:
        self.rows.append(flat_row(row, self.cols))
        if len(self.rows) >= self.rows_per_part:
            self.flush()

    def flush(self) -> None:
        """Write the gathered rows as the next part (nothing if there are none)."""
        if not self.rows:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist(self.rows, schema=self.schema)
        name = f"part-{self.next_part:05d}.parquet"
        tmp = self.path / f".{name}.tmp"
        with open(tmp, "wb") as f:
            pq.write_table(table, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path / name)
        _fsync_dir(self.path)
        self.next_part += 1
        self.rows = []

    def close(self) -> None:
        self.flush()


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
