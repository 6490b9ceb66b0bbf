"""Artists per account (issue 30): an artist is (owner, normalised name), with a public id,
a running sum of its searchable tracks' vectors and their count, so one account's uploads
never move another's artist and an add or erase costs O(1).

Revision ID: 0004
Revises: 0003 (tempo and key: tracks.descriptors)
Create Date: 2026-12-06

* `account_artists`: pk, id (public), owner, artist_key, name (the account's own spelling),
  n_tracks, vec_sum (float64 bytes); unique (owner, artist_key).
* `tracks.artist_id`: the track's account artist (null for a track without an artist).
* `artist_vectors` is rebuilt keyed by account_artists.pk (each centroid = its normalised sum).
* `artists` (global by normalised name) stays as the performer index whose pk is
  track_vectors.artist_pk: `exclude_same_artist` removes a performer across accounts.

Today's global artists are split by the accounts whose tracks they hold, each with the sum of
its own tracks' vectors.
"""

import uuid

import numpy as np
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _dim(bind) -> int:
    return int(
        bind.execute(sa.text("select value from catalog_meta where key = 'embedding_dim'")).scalar()
    )


def _vector(dialect: str, value) -> np.ndarray:
    if dialect == "sqlite":
        return np.frombuffer(value, dtype=np.float32).astype(np.float64)
    return np.asarray(value.strip("[]").split(","), dtype=np.float64)


def _param(dialect: str, v: np.ndarray):
    v = np.asarray(v, dtype=np.float32)
    return v.tobytes() if dialect == "sqlite" else "[" + ",".join(f"{x:.7g}" for x in v) + "]"


def upgrade() -> None:
    bind = op.get_bind()
    dialect, dim = bind.dialect.name, _dim(bind)
    op.create_table(
        "account_artists",
        sa.Column("pk", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(32), nullable=False, unique=True),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("artist_key", sa.Text, nullable=False, index=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("n_tracks", sa.Integer, nullable=False),
        sa.Column("vec_sum", sa.LargeBinary, nullable=False),
        sa.UniqueConstraint("owner", "artist_key", name="uq_account_artists_owner_key"),
    )
    with op.batch_alter_table("tracks") as batch:
        batch.add_column(sa.Column("artist_id", sa.String(32), nullable=True))
    op.create_index("ix_tracks_artist_id", "tracks", ["artist_id"])
    op.execute("DROP TABLE artist_vectors")
    if dialect == "sqlite":
        op.execute(
            "CREATE VIRTUAL TABLE artist_vectors USING vec0("
            f"artist_pk integer primary key, centroid float[{dim}] distance_metric=cosine)"
        )
        vector_sql = "SELECT embedding FROM track_vectors WHERE track_pk = :pk"
        cast = ":v"
    else:
        op.execute(
            "CREATE TABLE artist_vectors ("
            "artist_pk integer PRIMARY KEY REFERENCES account_artists(pk) ON DELETE CASCADE, "
            f"centroid vector({dim}) NOT NULL)"
        )
        op.execute(
            "CREATE INDEX artist_vectors_hnsw ON artist_vectors "
            "USING hnsw (centroid vector_cosine_ops)"
        )
        vector_sql = "SELECT embedding::text FROM track_vectors WHERE track_pk = :pk"
        cast = "CAST(:v AS vector)"
    groups: dict[tuple[str, str], list] = {}
    for r in bind.execute(
        sa.text(
            "SELECT pk, owner, artist, artist_key FROM tracks "
            "WHERE artist_key != '' AND consent_search ORDER BY pk"
        )
    ):
        groups.setdefault((r.owner, r.artist_key), []).append(r)
    for (owner, key), rows in groups.items():
        total, n = np.zeros(dim, dtype=np.float64), 0
        for r in rows:
            value = bind.execute(sa.text(vector_sql), {"pk": r.pk}).scalar()
            if value is not None:
                total += _vector(dialect, value)
                n += 1
        if not n:
            continue
        artist_id = uuid.uuid4().hex
        pk = bind.execute(
            sa.text(
                "INSERT INTO account_artists (id, owner, artist_key, name, n_tracks, vec_sum) "
                "VALUES (:id, :o, :k, :name, :n, :s) RETURNING pk"
            ),
            {
                "id": artist_id,
                "o": owner,
                "k": key,
                "name": rows[0].artist,
                "n": n,
                "s": total.tobytes(),
            },
        ).scalar_one()
        centroid = total / (np.linalg.norm(total) or 1.0)
        bind.execute(
            sa.text(f"INSERT INTO artist_vectors (artist_pk, centroid) VALUES (:pk, {cast})"),
            {"pk": pk, "v": _param(dialect, centroid)},
        )
        bind.execute(
            sa.text("UPDATE tracks SET artist_id = :a WHERE owner = :o AND artist_key = :k"),
            {"a": artist_id, "o": owner, "k": key},
        )


def downgrade() -> None:
    raise NotImplementedError(
        "artists per account cannot be merged back into global artists without losing which "
        "account spelt what: restore the catalog's backup instead"
    )
