"""Search and watch by a brief (issue 33): the descriptors as indexed columns, and watch
conditions.

Revision ID: 0005
Revises: 0004 (artists per account)
Create Date: 2026-12-06

* `track_filters`: one narrow row per track (track_pk, top_genre, top_probability, bpm,
  camelot, quadrant, mood_q1..mood_q4, arousal, valence, gems_<emotion> (the nine GEMS),
  voice_instrumental, voice_female, voice_male, instruments (",piano,strings,": the names
  scoring >= 0.5)), with b-tree indexes (INDEXED below); filled here for every track from
  its stored `descriptors` JSON (null where a block is null: tracks stored before mood and
  voice), then by every insert and by `catalog reindex`. A separate table, not columns on
  `tracks`: SQLite keeps a row's columns in order and columns added last would sit behind
  the 4 KB features blob, in overflow pages every filtered scan would read.
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

# One-column filters rank by one column (catalog.search.fit): (column, track_pk) indexes give
# those answers in index order (best first, ties newest first) without sorting every match.
INDEXED = {
    "top_genre": ("top_genre", "top_probability", "track_pk"),
    "bpm": ("bpm", "track_pk"),  # with track_pk: an index-only scan ranks a tempo or key
    "camelot": ("camelot", "track_pk"),  # filter on PostgreSQL (SQLite's carry the rowid)
    "quadrant": ("quadrant",),
    "arousal": ("arousal",),
    "valence": ("valence",),
    **{f"mood_q{k}": (f"mood_q{k}", "track_pk") for k in range(1, 5)},
    **{f"voice_{v}": (f"voice_{v}", "track_pk") for v in ("instrumental", "female", "male")},
    **{
        f"gems_{g}": (f"gems_{g}", "track_pk")
        for g in ("tenderness", "calmness", "power", "joyful_activation")
    },
}
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
    op.create_table(
        "track_filters",
        sa.Column(
            "track_pk",
            sa.Integer,
            sa.ForeignKey("tracks.pk", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("top_genre", sa.String(32), nullable=False),
        sa.Column("top_probability", sa.Float, nullable=False),
        *(sa.Column(name, _type(name), nullable=True) for name in DESCRIPTOR_COLUMNS),
    )
    for name, columns in INDEXED.items():
        op.create_index(f"ix_track_filters_{name}", "track_filters", list(columns))
    with op.batch_alter_table("watches") as batch:
        batch.add_column(sa.Column("conditions", sa.JSON, nullable=True))
    bind = op.get_bind()
    tracks = sa.table(
        "tracks",
        sa.column("pk"),
        sa.column("top_genre"),
        sa.column("top_probability"),
        sa.column("descriptors", sa.JSON),
    )
    filters = sa.table(
        "track_filters",
        sa.column("track_pk"),
        sa.column("top_genre"),
        sa.column("top_probability"),
        *(sa.column(n) for n in DESCRIPTOR_COLUMNS),
    )
    last = 0
    while True:  # by primary key, BATCH rows at a time
        rows = bind.execute(
            sa.select(tracks).where(tracks.c.pk > last).order_by(tracks.c.pk).limit(BATCH)
        ).fetchall()
        if rows:
            bind.execute(
                filters.insert(),
                [
                    {
                        "track_pk": r.pk,
                        "top_genre": r.top_genre,
                        "top_probability": r.top_probability,
                        **descriptor_columns(r.descriptors),
                    }
                    for r in rows
                ],
            )
        if len(rows) < BATCH:
            break
        last = rows[-1].pk


def downgrade() -> None:
    with op.batch_alter_table("watches") as batch:
        batch.drop_column("conditions")
    op.drop_table("track_filters")
