"""Search and watch by a brief (issue 33): the descriptors as indexed columns, and watch
conditions.

Revision ID: 0005
Revises: 0004 (artists per account)
Create Date: 2026-12-06

* `tracks`: bpm, camelot, quadrant, mood_q1..mood_q4, arousal, valence, gems_<emotion> (the
  nine GEMS), voice_instrumental, voice_female, voice_male, instruments (",piano,strings,":
  the names scoring >= 0.5); b-tree indexes on bpm, camelot, quadrant, arousal, valence and
  voice_instrumental. Filled here from each stored `descriptors` JSON (null where a block is
  null: tracks stored before mood and voice), then by every insert and by `catalog reindex`.
* `watches.conditions`: a watch's mood, bpm, key and voice conditions (JSON, null for none).

The columns are filled by the rule the application uses for new tracks
(catalog.records.descriptor_columns), so a migrated track and a new one cannot differ.
"""

import sqlalchemy as sa
from alembic import op

from genre_detector.catalog.records import DESCRIPTOR_COLUMNS, descriptor_columns

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

INDEXED = ("bpm", "camelot", "quadrant", "arousal", "valence", "voice_instrumental")
BATCH = 1000


def _type(name: str):
    if name == "camelot":
        return sa.String(3)
    if name == "quadrant":
        return sa.String(2)
    if name == "instruments":
        return sa.Text
    return sa.Float


def upgrade() -> None:
    with op.batch_alter_table("tracks") as batch:
        for name in DESCRIPTOR_COLUMNS:
            batch.add_column(sa.Column(name, _type(name), nullable=True))
    for name in INDEXED:
        op.create_index(f"ix_tracks_{name}", "tracks", [name])
    with op.batch_alter_table("watches") as batch:
        batch.add_column(sa.Column("conditions", sa.JSON, nullable=True))
    bind = op.get_bind()
    table = sa.table(
        "tracks",
        sa.column("pk"),
        sa.column("descriptors", sa.JSON),
        *(sa.column(n) for n in DESCRIPTOR_COLUMNS),
    )
    last = 0
    while True:  # by primary key, BATCH rows at a time
        rows = bind.execute(
            sa.select(table.c.pk, table.c.descriptors)
            .where(table.c.pk > last, table.c.descriptors.is_not(None))
            .order_by(table.c.pk)
            .limit(BATCH)
        ).fetchall()
        for r in rows:
            values = descriptor_columns(r.descriptors)
            if any(v is not None for v in values.values()):
                bind.execute(table.update().where(table.c.pk == r.pk).values(**values))
        if len(rows) < BATCH:
            break
        last = rows[-1].pk


def downgrade() -> None:
    with op.batch_alter_table("watches") as batch:
        batch.drop_column("conditions")
    for name in INDEXED:
        op.drop_index(f"ix_tracks_{name}", "tracks")
    with op.batch_alter_table("tracks") as batch:
        for name in DESCRIPTOR_COLUMNS:
            batch.drop_column(name)
