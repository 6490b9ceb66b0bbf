"""The library side of batch tagging: which files, which shard, which rows, how written.

A library is a folder or bucket of music files (the catalog, genre_detector.catalog, is the
database of consented tracks).

    python -m genre_detector tag MUSIC/ --out results.csv      # or results.jsonl

* Walking: files and folders, recursively; audio files by extension (AUDIO_EXTENSIONS),
  hidden files/folders skipped, symlinked files followed (symlinked folders are not).
  Order is sorted by path relative to the argument it was found under: deterministic.
* Sharding (`--shard i/n`, 1 <= i <= n): a track belongs to shard
  1 + sha1(relative path) mod n. The relative path is taken from the folder argument,
  so machines that mount the library in different places agree, and adding files to the
  library never moves existing tracks to another shard.
* Rows: one per track, from a scoring.TrackResult (row_from_result; the remote engine reads
  the service's reply, row_from_reply, into the same columns); CSV, JSONL or
  Parquet by the output's extension (open_writer). CSV/JSONL: every row is one write()
  plus flush(); `--resume` drops a trailing partial line, then skips the paths already in
  the file and appends. Parquet (`--out NAME.parquet`): a folder of part files, each
  written whole to a hidden temp name and renamed into place (ParquetWriter); `--resume`
  deletes a leftover temp file, skips the paths in the complete parts and continues with
  the next part number.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from genre_detector.audio.decode import AUDIO_EXTENSIONS


@dataclass(frozen=True)
class Track:
    path: str  # as written in the output: the argument joined with the relative path
    key: str  # path relative to the folder argument (posix): what sharding hashes


def _is_audio(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in AUDIO_EXTENSIONS


def is_uri(path: str | os.PathLike) -> bool:
    """s3://bucket/key, gs://..., file://...: read through pyarrow.fs, not the local OS."""
    return "://" in str(path)


def _walk_uri(uri: str) -> list[Track]:
    from pyarrow import fs

    filesystem, root = fs.FileSystem.from_uri(uri)
    scheme = uri.split("://", 1)[0]
    info = filesystem.get_file_info(root)
    if info.type == fs.FileType.File:
        infos, base = [info], info.path.rsplit("/", 1)[0]
    elif info.type == fs.FileType.Directory:
        infos, base = filesystem.get_file_info(fs.FileSelector(root, recursive=True)), root
    else:
        raise FileNotFoundError(f"{uri}: no such file or folder")
    base = base.rstrip("/")
    found = []
    for i in infos:
        key = i.path[len(base) :].lstrip("/")
        if (
            i.type == fs.FileType.File
            and _is_audio(i.base_name)
            and not any(part.startswith(".") for part in key.split("/"))
        ):
            found.append(Track(f"{scheme}://{i.path}", key))
    return sorted(found, key=lambda t: t.key)


def read_source(path: str):
    """What the decoder reads: the path itself, or the bytes of a URI (via pyarrow.fs)."""
    if not is_uri(path):
        return path
    from pyarrow import fs

    filesystem, where = fs.FileSystem.from_uri(path)
    with filesystem.open_input_stream(where) as f:
        return f.read()


def walk(paths: Iterable[str | os.PathLike]) -> list[Track]:
    """Every audio file under `paths` (files, folders or pyarrow.fs URIs such as
    s3://bucket/prefix), each once, in a stable order."""
    tracks, seen = [], set()
    for arg in paths:
        root = Path(arg)
        if is_uri(arg):
            found = _walk_uri(str(arg))
        elif root.is_file():
            found = [Track(str(root), root.name)] if _is_audio(root.name) else []
        elif root.is_dir():
            found = []
            for folder, dirs, files in os.walk(root):
                dirs[:] = [d for d in dirs if not d.startswith(".")]
                for name in files:
                    full = Path(folder, name)
                    if _is_audio(name) and full.is_file():
                        found.append(Track(str(full), full.relative_to(root).as_posix()))
            found.sort(key=lambda t: t.key)
        else:
            raise FileNotFoundError(f"{arg}: no such file or folder")
        for t in found:
            if t.path not in seen:
                seen.add(t.path)
                tracks.append(t)
    return tracks


def parse_shard(text: str) -> tuple[int, int]:
    """'2/4' -> (2, 4); shards are numbered 1..n."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard wants i/n (e.g. 2/4), got {text!r}") from None
    if not 1 <= i <= n:
        raise ValueError(f"--shard {text}: need 1 <= i <= n")
    return i, n


def in_shard(track: Track, i: int, n: int) -> bool:
    digest = hashlib.sha1(track.key.encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") % n == i - 1


# ---------------------------------------------------------------- rows


def compact_timeline(windows: list[dict], duration_s: float) -> str:
    """'0-4.5:rock;4.5-60:pop': runs of windows with the same genre, cut where a run starts."""
    runs: list[list] = []
    for w in windows:
        if runs and runs[-1][1] == w["top_genre"]:
            continue
        runs.append([w["start_s"], w["top_genre"]])
    ends = [r[0] for r in runs[1:]] + [duration_s]
    return ";".join(f"{round(a, 1):g}-{round(b, 1):g}:{g}" for (a, g), b in zip(runs, ends))


def _row(path, duration_s, n_windows, top: dict, probabilities: dict, timeline, tags) -> dict:
    """A row; top: model (and "ensemble") -> (genre, probability)."""
    row = {"path": path, "duration_s": round(float(duration_s), 3), "n_windows": int(n_windows)}
    for name, (genre, p) in top.items():
        row[f"{name}_genre"] = genre
        row[f"{name}_probability"] = round(float(p), 4)
    row["probabilities"] = {g: round(float(p), 4) for g, p in probabilities.items()}
    row["timeline"] = compact_timeline(timeline, float(duration_s))
    row["model_tags"] = dict(tags)
    row["error"] = ""
    return row


def row_from_result(path: str, result) -> dict:
    """A row from a scoring.TrackResult (the in-process and Ray engines)."""
    top = {n: (m.verdict.top_genre, m.verdict.top_probability) for n, m in result.models.items()}
    top["ensemble"] = (result.ensemble.top_genre, result.ensemble.top_probability)
    e = result.ensemble
    return _row(
        path,
        result.duration_s,
        result.n_windows,
        top,
        dict(zip(e.labels, e.probabilities)),
        [{"start_s": w.start_s, "top_genre": w.top_genre} for w in result.timeline],
        result.model_tags,
    )


def row_from_reply(path: str, reply: dict) -> dict:
    """A row from the service's /predict reply (the remote engine: a client of the service)."""
    verdicts = [*reply["models"].items(), ("ensemble", reply["ensemble"])]
    return _row(
        path,
        reply["duration_s"],
        reply["n_windows"],
        {n: (m["top_genre"], m["top_probability"]) for n, m in verdicts},
        reply["ensemble"]["probabilities"],
        reply["timeline"],
        reply["model_tags"],
    )


def error_row(path: str, reason: str, detail: str) -> dict:
    detail = " ".join(str(detail).split())  # one line, whatever the message held
    return {"path": path, "error": f"{reason}: {detail}"}


def error_reason(row: dict) -> str:
    return row["error"].split(":", 1)[0] if row.get("error") else ""


class Summary:
    """Running counts over rows (nothing kept per track): successes, failures by reason,
    and with labels_from_folders accuracy per model against each file's parent folder."""

    def __init__(self, labels: list[str], labels_from_folders: bool = False):
        self.labels, self.check = set(labels), labels_from_folders
        self.ok, self.resumed, self.failed = 0, 0, Counter()
        self.catalog_added: int | None = None  # tracks new to the catalog (tag --catalog)
        self.scored, self.correct, self.models = 0, Counter(), []

    def add(self, row: dict, resumed: bool = False) -> None:
        if resumed:
            self.resumed += 1
        elif row.get("error"):
            self.failed[error_reason(row)] += 1
        else:
            self.ok += 1
        truth = Path(row["path"]).parent.name
        if not self.check or row.get("error") or truth not in self.labels:
            return
        self.scored += 1
        for key, genre in row.items():
            if key.endswith("_genre"):
                name = key[: -len("_genre")]
                if name not in self.models:
                    self.models.append(name)
                self.correct[name] += genre == truth

    def report(self, seconds: float) -> str:
        done = self.ok + sum(self.failed.values())
        why = ", ".join(f"{r} {n}" for r, n in self.failed.most_common())
        lines = [
            f"tagged {done} tracks in {seconds:.1f} s ({done / max(seconds, 1e-9):.2f} "
            f"tracks/s): {self.ok} ok, {sum(self.failed.values())} failed"
            + (f" ({why})" if why else "")
            + (f"; {self.resumed} already in the output" if self.resumed else "")
        ]
        if self.catalog_added is not None:
            lines.append(f"catalog: {self.catalog_added} new tracks stored")
        if self.check:
            acc = ", ".join(f"{m} {self.correct[m] / self.scored:.3f}" for m in self.models)
            lines.append(
                f"accuracy over {self.scored} tracks whose folder is a label: " + (acc or "-")
            )
        return "\n".join(lines)


# ---------------------------------------------------------------- writers


def columns(model_names: list[str], labels: list[str]) -> list[str]:
    cols = ["path", "duration_s", "n_windows"]
    for name in [*model_names, "ensemble"]:
        cols += [f"{name}_genre", f"{name}_probability"]
    return cols + [f"p_{g}" for g in labels] + ["timeline", "model_tags", "embedding", "error"]


def _flat(row: dict, cols: list[str]) -> list:
    flat = {**row, **{f"p_{g}": p for g, p in (row.get("probabilities") or {}).items()}}
    if row.get("model_tags"):
        flat["model_tags"] = " ".join(row["model_tags"].values())
    if row.get("embedding") is not None:  # the search embedding, as a JSON list
        flat["embedding"] = json.dumps(row["embedding"], separators=(",", ":"))
    return [flat.get(c) if flat.get(c) is not None else "" for c in cols]


def _nested(row: dict, cols: list[str]) -> dict:
    out = {c: row.get(c) for c in cols if not c.startswith("p_")}
    out["probabilities"] = row.get("probabilities")
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
            self._line(_flat(row, self.cols))

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


def _parquet_row(row: dict, cols: list[str]) -> dict:
    """A row as the Parquet part holds it: flat like the CSV, missing values (and an
    empty error) null."""
    flat = {**row, **{f"p_{g}": p for g, p in (row.get("probabilities") or {}).items()}}
    flat["model_tags"] = " ".join(row["model_tags"].values()) if row.get("model_tags") else None
    flat["error"] = row.get("error") or None
    return {c: flat.get(c) for c in cols}


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
        self.rows.append(_parquet_row(row, self.cols))
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
