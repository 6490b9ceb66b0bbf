"""Tempo and key of each track: the `descriptors` block of the reply (docs/api.md), as JSON.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06

Nullable: tracks stored before stay null (their audio was never stored) until the tagger
tags their file again (catalog.ingest.add fills a null block from a new record).
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tracks", sa.Column("descriptors", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tracks") as batch:  # SQLite rebuilds the table
        batch.drop_column("descriptors")
