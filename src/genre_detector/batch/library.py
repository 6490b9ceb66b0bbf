"""The library: the folder (or bucket) of music files a tagging run walks, and its shards.

    tracks = walk(["MUSIC/", "s3://bucket/prefix"])    # [Track(path, key)], stable order
    mine = [t for t in tracks if in_shard(t, *parse_shard("2/4"))]

A library is a folder or bucket of music files; the catalog (genre_detector.catalog) is the
database of consented tracks.

* Walking: files and folders, recursively; audio files by extension (AUDIO_EXTENSIONS),
  hidden files/folders skipped, symlinked files followed (symlinked folders are not).
  Order is sorted by path relative to the argument it was found under: deterministic.
  pyarrow.fs URIs (s3://, gs://, file://) are walked the same way; read_source gives the
  decoder a path or, for a URI, the file's bytes.
* Sharding (`--shard i/n`, 1 <= i <= n): a track belongs to shard
  1 + sha1(relative path) mod n. The relative path is taken from the folder argument,
  so machines that mount the library in different places agree, and adding files to the
  library never moves existing tracks to another shard.
"""

from __future__ import annotations

import hashlib
import os
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
