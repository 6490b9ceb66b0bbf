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
