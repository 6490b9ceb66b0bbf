"""The catalog: API keys, tracks, artists, and their vector indexes.

Revision ID: 0001
Revises:
Create Date: 2026-12-04

The embedding size D comes from Catalog.migrate (config attribute `embedding_dim`) and is
recorded in catalog_meta; the vector indexes are engine-specific:
SQLite: sqlite-vec vec0 virtual tables (exact search, cosine distance, the genre and the
artist's integer id as metadata columns filtered during the scan: an integer compares in
place, a text over 12 bytes is read from another table on every comparison). PostgreSQL:
pgvector `vector(D)` columns with HNSW indexes (vector_cosine_ops).
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    dim = int(op.get_context().config.attributes.get("embedding_dim", 128))
    op.create_table(
        "catalog_meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.bulk_insert(
        sa.table("catalog_meta", sa.column("key"), sa.column("value")),
        [{"key": "embedding_dim", "value": str(dim)}],
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("owner", sa.String(200), nullable=False, index=True),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "tracks",
        sa.Column("pk", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(32), nullable=False, unique=True),
        sa.Column("owner", sa.String(200), nullable=False, index=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("artist", sa.Text, nullable=False),
        sa.Column("artist_key", sa.Text, nullable=False, index=True),
        sa.Column("consent_search", sa.Boolean, nullable=False),
        sa.Column("consent_notify", sa.Boolean, nullable=False),
        sa.Column("consented_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("duration_s", sa.Float, nullable=False),
        sa.Column("top_genre", sa.String(32), nullable=False, index=True),
        sa.Column("top_probability", sa.Float, nullable=False),
        sa.Column("probabilities", sa.JSON, nullable=False),
        sa.Column("top3", sa.JSON, nullable=False),
        sa.Column("timeline", sa.JSON, nullable=False),
        sa.Column("model_tags", sa.JSON, nullable=False),
        sa.Column("features", sa.LargeBinary, nullable=False),
        sa.Column("embedding_version", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("owner", "sha256", name="uq_tracks_owner_sha256"),
    )
    op.create_table(
        "artists",
        sa.Column("pk", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("artist_key", sa.Text, nullable=False, unique=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("n_tracks", sa.Integer, nullable=False),
    )
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            "CREATE VIRTUAL TABLE track_vectors USING vec0("
            f"track_pk integer primary key, embedding float[{dim}] distance_metric=cosine, "
            "top_genre text, artist_pk integer)"
        )
        op.execute(
            "CREATE VIRTUAL TABLE artist_vectors USING vec0("
            f"artist_pk integer primary key, centroid float[{dim}] distance_metric=cosine)"
        )
    else:
        op.execute("CREATE EXTENSION IF NOT EXISTS vector")
        op.execute(
            "CREATE TABLE track_vectors ("
            "track_pk integer PRIMARY KEY REFERENCES tracks(pk) ON DELETE CASCADE, "
            f"embedding vector({dim}) NOT NULL, top_genre varchar(32) NOT NULL, "
            "artist_pk integer NOT NULL)"
        )
        op.execute(
            "CREATE INDEX track_vectors_hnsw ON track_vectors "
            "USING hnsw (embedding vector_cosine_ops)"
        )
        op.execute("CREATE INDEX track_vectors_genre ON track_vectors (top_genre)")
        op.execute(
            "CREATE TABLE artist_vectors ("
            "artist_pk integer PRIMARY KEY REFERENCES artists(pk) ON DELETE CASCADE, "
            f"centroid vector({dim}) NOT NULL)"
        )
        op.execute(
            "CREATE INDEX artist_vectors_hnsw ON artist_vectors "
            "USING hnsw (centroid vector_cosine_ops)"
        )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS artist_vectors")
    op.execute("DROP TABLE IF EXISTS track_vectors")
    op.drop_table("artists")
    op.drop_table("tracks")
    op.drop_table("api_keys")
    op.drop_table("catalog_meta")
