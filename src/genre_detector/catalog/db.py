"""The catalog's database: one URL, two engines, migrated by Alembic on open.

    db = Catalog.open("sqlite:////path/catalog.sqlite3")   # or postgresql://user@host/db
    with db.begin() as conn:                               # one transaction
        conn.execute(sa.text("select 1"))

* SQLite (the embedded default, no server): the `pysqlite3-binary` build of sqlite3 (the
  standard library's cannot load extensions on every Python build) with `sqlite-vec` loaded
  on every connection; WAL journal, a 15 s busy timeout, foreign keys on.
* PostgreSQL: psycopg 3 with the `vector` extension (pgvector); HNSW indexes.

Every database error that means "not reachable, or busy" (connection refused, the server
gone, a lock held past the timeout, no pooled connection free within the pool timeout)
becomes CatalogUnavailable (HTTP 503 db_unavailable with Retry-After in the service);
anything else is a bug and propagates. All SQL in this package
is written with bound parameters.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from genre_detector.errors import GenreError

MIGRATIONS = Path(__file__).parent / "migrations"
DEFAULT_DIM = 128  # the embedding's stored size when no projection says otherwise
POOL_TIMEOUT_S = 10  # PostgreSQL: the wait for a pooled connection before 503 db_unavailable
SQLITE_BUSY_MS = 15000  # a writer waits this long for the lock before 503 db_unavailable


class CatalogUnavailable(GenreError):
    """The database cannot be reached or is locked: try again later (HTTP 503)."""

    def __init__(self, detail: str):
        super().__init__("db_unavailable", detail)


def strict_json(value) -> str:
    """JSON columns are written strictly: NaN or Infinity raise instead of being stored as
    tokens a strict parser refuses."""
    return json.dumps(value, allow_nan=False)


def engine_url(url: str) -> str:
    """postgresql://... -> the psycopg 3 driver; sqlite URLs as they are."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith(("sqlite://", "postgresql+psycopg://")):
        return url
    raise ValueError(f"unsupported catalog database URL {url!r}: use sqlite:/// or postgresql://")


def _sqlite_engine(url: str) -> sa.Engine:
    import pysqlite3.dbapi2 as sqlite3
    import sqlite_vec

    path = url.split("sqlite:///", 1)[1] if url.startswith("sqlite:///") else ""
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(
        url,
        module=sqlite3,
        connect_args={"timeout": SQLITE_BUSY_MS / 1000, "check_same_thread": False},
        json_serializer=strict_json,
    )

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.enable_load_extension(True)
        sqlite_vec.load(dbapi_conn)
        dbapi_conn.enable_load_extension(False)
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    return engine


@dataclass
class Catalog:
    engine: sa.Engine
    dim: int  # the stored embedding size (fixed by the first migration)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name  # "sqlite" or "postgresql"

    @classmethod
    def open(cls, url: str, *, migrate: bool = True, dim: int | None = None) -> "Catalog":
        """Connect (and bring the schema to the latest migration). `dim`: the embedding size
        a new catalog is created with (default: the stored musicnn model's projection, else
        DEFAULT_DIM); an existing one keeps its own."""
        url = engine_url(url)
        dim = dim or store_dim()
        if url.startswith("sqlite"):
            engine = _sqlite_engine(url)
        else:
            engine = sa.create_engine(
                url,
                pool_pre_ping=True,
                pool_size=8,
                max_overflow=8,
                pool_timeout=POOL_TIMEOUT_S,
                json_serializer=strict_json,
            )
        db = cls(engine, dim or DEFAULT_DIM)
        with db.unavailable_as_503():
            if migrate:
                db.migrate(dim or DEFAULT_DIM)
            db.dim = db.stored_dim() or db.dim
        return db

    def migrate(self, dim: int) -> None:
        """alembic upgrade head, on this engine (creating the schema of a new catalog)."""
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            cfg.attributes["embedding_dim"] = int(dim)
            command.upgrade(cfg, "head")

    def stored_dim(self) -> int | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.text("select value from catalog_meta where key = :k"), {"k": "embedding_dim"}
            ).first()
        return int(row[0]) if row else None

    @contextlib.contextmanager
    def unavailable_as_503(self):
        """Database errors that mean unreachable or locked -> CatalogUnavailable."""
        try:
            yield
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
            raise CatalogUnavailable(_reason(exc)) from exc
        except sa.exc.TimeoutError as exc:  # every pooled connection busy past pool_timeout
            raise CatalogUnavailable(
                "the catalog database has no free connection; try again shortly"
            ) from exc
        except sa.exc.DBAPIError as exc:
            if exc.connection_invalidated:
                raise CatalogUnavailable(_reason(exc)) from exc
            raise

    @contextlib.contextmanager
    def begin(self):
        """A connection in one transaction (committed at the end, rolled back on error)."""
        with self.unavailable_as_503(), self.engine.begin() as conn:
            yield conn

    @contextlib.contextmanager
    def connect(self):
        with self.unavailable_as_503(), self.engine.connect() as conn:
            yield conn

    def ping(self) -> None:
        """CatalogUnavailable unless the database answers now (before costly work)."""
        with self.connect() as conn:
            conn.execute(sa.text("select 1"))

    def close(self) -> None:
        self.engine.dispose()


def store_dim() -> int | None:
    """The search embedding's size of the musicnn model in the model store, if any."""
    try:
        from genre_detector.runtime.store import ModelInfo, resolve

        projection = ModelInfo.from_entry(resolve("musicnn")).projection
    except Exception:  # noqa: BLE001  no store, no model, no projection: the default
        return None
    return None if projection is None else projection.dim


def _reason(exc: Exception) -> str:
    text = str(getattr(exc, "orig", exc)).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    return f"the catalog database is unavailable ({first[:200]}); try again shortly"
