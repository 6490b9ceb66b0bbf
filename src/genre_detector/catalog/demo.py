"""`python -m genre_detector catalog demo`: fill a local catalog with the shared clips
(owner "demo", consent to search and notify) so that a newcomer sees similar tracks and
artists right after `make serve`. Titles and artists come from each source's tracks.csv
(the shared clips carry no tags)."""

from __future__ import annotations

import csv
from pathlib import Path


def track_names(data: Path) -> dict[str, tuple[str, str]]:
    """path -> (title, artist) from every <source>/tracks.csv under `data`."""
    names = {}
    for listing in sorted(Path(data).glob("*/tracks.csv")):
        with open(listing, newline="") as f:
            for row in csv.DictReader(f):
                if row.get("path"):
                    path = str(listing.parent / row["path"])
                    names[path] = (row.get("title") or "", row.get("artist") or "")
    return names
