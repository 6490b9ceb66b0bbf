"""The files no tagging run can use, shared by the tagger's tests (in-process and Ray)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# relative path -> the error reason its row must carry
BAD = {"broken/cut.wav": "too_short", "broken/junk.mp3": "truncated", "notes.mp3": "not_audio"}


def add_unusable_files(root: Path, gtzan_dir: Path) -> None:
    """BAD's files, plus readme.txt (not audio and not named like it: no row at all)."""
    (root / "broken").mkdir()
    (root / "broken" / "cut.wav").write_bytes((gtzan_dir / "pop.00000.wav").read_bytes()[:100])
    (root / "broken" / "junk.mp3").write_bytes(
        b"ID3\x04\0\0\0\0\0\0" + np.random.default_rng(0).bytes(3000)
    )
    (root / "notes.mp3").write_text("not music, just notes\n" * 20)
    (root / "readme.txt").write_text("not audio and not named like it: no row\n")
