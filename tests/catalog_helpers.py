"""Helpers the catalog's tests share: API keys made by the CLI as a user makes them, and new
empty databases on the session's PostgreSQL server."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def cli_key(env: dict, owner: str) -> str:
    """`python -m genre_detector keys create OWNER` against the catalog `env` names; the key."""
    out = subprocess.run(
        [sys.executable, "-m", "genre_detector", "keys", "create", owner],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def new_database(postgres_url: str, prefix: str = "catalog") -> str:
    """The URL of a new, empty database on the server of `postgres_url`."""
    import sqlalchemy as sa

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(
        "postgresql+psycopg://" + postgres_url.split("://", 1)[1], isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))  # a generated name, not input
    admin.dispose()
    return postgres_url.replace("/postgres?", f"/{name}?", 1)


# ---------------------------------------------------------------- tracks with descriptors
# Until the mood and voice heads (issue 32) score real audio, tracks with mood, GEMS, voice
# and instruments are stored through the real write path (catalog.ingest) from records whose
# `descriptors` block has the stored contract's shape (docs/api.md): this is what the
# catalog stores, not a stand-in for it.

QUADRANT_AV = {"Q1": (0.8, 0.8), "Q2": (0.8, 0.2), "Q3": (0.2, 0.2), "Q4": (0.2, 0.8)}


def descriptors(
    bpm: float | None = 120.0,
    key: tuple[str, str] | None = ("A", "minor"),
    quadrant: str | None = None,
    gems: dict | None = None,
    voice: dict | None = None,
    instruments: dict | None = None,
) -> dict:
    """A `descriptors` block: tempo and key as today's tracks have them, and (given) mood,
    GEMS, voice and instruments as issue 32 adds them; null blocks where not given."""
    from genre_detector.audio.tonality import camelot
    from genre_detector.catalog.records import GEMS

    out = {
        "tempo": None
        if bpm is None
        else {"bpm": float(bpm), "confidence": 0.8, "alternative_bpm": None},
        "key": None
        if key is None
        else {"tonic": key[0], "mode": key[1], "camelot": camelot(*key), "confidence": 0.6},
        "mood": None,
        "gems": None,
        "voice": None,
        "instruments": None,
    }
    if quadrant is not None:
        probs = {q: 0.1 for q in QUADRANT_AV}
        probs[quadrant] = 0.7
        arousal, valence = QUADRANT_AV[quadrant]
        out["mood"] = {
            "quadrant": quadrant,
            "probabilities": probs,
            "arousal": arousal,
            "valence": valence,
        }
        out["gems"] = {g: 0.1 for g in GEMS} | (gems or {})
    if voice is not None:
        out["voice"] = {"instrumental": 0.1, "female": 0.1, "male": 0.1} | voice
    if instruments is not None:
        out["instruments"] = instruments
    return out


def record(i: int, genre: str, vector, desc: dict | None, artist: str = "", labels=None):
    """A TrackRecord as records.record_from_result builds it, with `desc` as its
    descriptors and `vector` (normalised here) as its embedding."""
    import numpy as np

    from genre_detector.catalog.records import TrackRecord

    labels = labels or [genre]
    v = np.asarray(vector, np.float32)
    return TrackRecord(
        sha256=f"{i:064x}",
        title=f"track {i}",
        artist=artist or f"Artist {i}",
        duration_s=30.0,
        top_genre=genre,
        top_probability=0.7,
        probabilities={g: (0.7 if g == genre else 0.3 / max(1, len(labels) - 1)) for g in labels},
        top3=[{"genre": genre, "probability": 0.7}],
        timeline=[{"start_s": 0.0, "end_s": 3.0, "top_genre": genre, "probability": 0.7}],
        model_tags={"musicnn": "genre-musicnn:x"},
        features=np.arange(4, dtype=np.float32),
        embedding=v / np.linalg.norm(v),
        embedding_version="v1",
        descriptors=desc,
    )
