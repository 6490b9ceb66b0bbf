"""Map free-text genre tags ("Hip-Hop", "Reguetón", "Death Metal") to canonical genres.

The mapping is data, in `genre_tokens.csv` beside this file (columns `token,genre`; lines
starting with `#` are comments). Used by `python -m train.collect soundcloud ...`.

    >>> normalise_genre("Hip Hop & Rap")
    'hiphop'
"""

from __future__ import annotations

import csv
import re
import unicodedata
from functools import lru_cache
from pathlib import Path

TOKENS_CSV = Path(__file__).with_name("genre_tokens.csv")
MAX_NGRAM = 4  # longest run of words looked up as one token ("rhythm and blues" is 3)


def fold(text: str) -> str:
    """Lower-case, strip accents, drop everything but letters and digits: "R & B" -> "rb"."""
    return "".join(_words(text))


def _words(text: str) -> list[str]:
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
    return [w for w in re.split(r"[\W_]+", plain) if w]


def load_table(path: str | Path = TOKENS_CSV) -> dict[str, str]:
    """Folded token -> canonical genre, read from the CSV table (re-read when it changes)."""
    return _read_table(str(path), Path(path).stat().st_mtime_ns)


@lru_cache(maxsize=8)
def _read_table(path: str, mtime_ns: int) -> dict[str, str]:
    table: dict[str, str] = {}
    with open(path, newline="", encoding="utf-8") as f:
        lines = (line for line in f if line.strip() and not line.lstrip().startswith("#"))
        for row in csv.DictReader(lines):
            token, genre = fold(row.get("token") or ""), (row.get("genre") or "").strip()
            if not token or not re.fullmatch(r"[a-z0-9]+", genre):
                raise ValueError(
                    f"{path}: bad row {row!r} (want token,genre with a lower-case a-z0-9 genre)"
                )
            if table.get(token, genre) != genre:
                raise ValueError(
                    f"{path}: token {row['token']!r} maps to both {table[token]!r} and {genre!r}"
                )
            table[token] = genre
    if not table:
        raise ValueError(f"{path}: no token,genre rows")
    return table


def canonical_genres(path: str | Path = TOKENS_CSV) -> list[str]:
    """The canonical genres the table can produce, sorted."""
    return sorted(set(load_table(path).values()))


def normalise_genre(tag: str | None, path: str | Path = TOKENS_CSV) -> str | None:
    """Canonical genre for a free-text tag, or None when nothing in the table matches.

    The whole tag is tried first, then runs of its words, longest first and rightmost first,
    so the head word of a compound decides ("Death Metal" -> metal, "Deep House" -> electronic).
    """
    if not tag:
        return None
    table = load_table(path)
    words = _words(tag)
    whole = "".join(words)
    if whole in table:
        return table[whole]
    for n in range(min(len(words) - 1, MAX_NGRAM), 0, -1):
        for start in range(len(words) - n, -1, -1):
            key = "".join(words[start : start + n])
            if key in table:
                return table[key]
    return None
