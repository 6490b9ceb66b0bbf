"""Watches: saved searches that fire on every new matching track, their matches, and the
webhook outbox (deliveries and every attempt).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04

A match and its delivery are written in the transaction that adds the track (an outbox):
a crash cannot record one without the other. Workers claim due deliveries by setting a
lease (locked_until) in one UPDATE (PostgreSQL: FOR UPDATE SKIP LOCKED; SQLite: writes are
serialised), so several may run at once and a killed one's deliveries are sent again.
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "watches",
        sa.Column("pk", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(32), nullable=False, unique=True),
        sa.Column("owner", sa.String(200), nullable=False, index=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("genres", sa.JSON, nullable=False),  # {genre: minimum probability}
        sa.Column("like_ids", sa.JSON, nullable=False),  # reference track ids
        sa.Column("like_vectors", sa.LargeBinary),  # their embeddings (n, D) float32
        sa.Column("min_similarity", sa.Float, nullable=False),
        sa.Column("exclude_artists", sa.JSON, nullable=False),  # artist keys
        sa.Column("webhook_url", sa.Text, nullable=False),
        sa.Column("secret", sa.Text, nullable=False),
        sa.Column("previous_secret", sa.Text),
        sa.Column("previous_secret_until", sa.DateTime(timezone=True)),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("disabled_reason", sa.Text),
        sa.Column("failing_since", sa.DateTime(timezone=True)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "watch_matches",
        sa.Column("pk", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "watch_pk", sa.Integer, sa.ForeignKey("watches.pk", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("track_id", sa.String(32), nullable=False, index=True),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("summary", sa.JSON, nullable=False),  # title, artist, genres, top3
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("watch_pk", "track_id", name="uq_watch_matches_watch_track"),
    )
    op.create_table(
        "deliveries",
        sa.Column("pk", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(40), nullable=False, unique=True),  # webhook-id
        sa.Column(
            "watch_pk", sa.Integer, sa.ForeignKey("watches.pk", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("track_id", sa.String(32), index=True),  # None for watch.test
        sa.Column("event_type", sa.String(32), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),  # the exact JSON body signed and sent
        sa.Column("status", sa.String(16), nullable=False),  # pending delivered failed cancelled
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True)),
        sa.Column("locked_by", sa.String(64)),
        sa.Column("last_error", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True)),
    )
    op.create_index("deliveries_due", "deliveries", ["status", "next_attempt_at"])
    op.create_table(
        "delivery_attempts",
        sa.Column("pk", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "delivery_pk",
            sa.Integer,
            sa.ForeignKey("deliveries.pk", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("attempted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status_code", sa.Integer),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("response_head", sa.Text),  # the first 1 KB of the reply
    )


def downgrade() -> None:
    op.drop_table("delivery_attempts")
    op.drop_index("deliveries_due", "deliveries")
    op.drop_table("deliveries")
    op.drop_table("watch_matches")
    op.drop_table("watches")
