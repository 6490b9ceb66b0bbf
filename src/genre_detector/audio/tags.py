"""Title and artist from an audio file's own tags (ID3, Vorbis comments, MP4 atoms, ...),
read by mutagen from the uploaded bytes; empty strings when the file has none."""

from __future__ import annotations

import io


def read_tags(data: bytes) -> tuple[str, str]:
    """(title, artist) of the file's tags, "" where missing or unreadable."""
    try:
        import mutagen

        f = mutagen.File(io.BytesIO(data), easy=True)
    except Exception:  # noqa: BLE001  a file mutagen cannot parse simply has no tags here
        return "", ""
    if f is None or not f.tags:
        return "", ""

    def first(name: str) -> str:
        try:
            values = f.tags.get(name) or []
        except (KeyError, ValueError):
            return ""
        return str(values[0]).strip() if values else ""

    return first("title"), first("artist")
