"""The catalog's tables, one definition for both engines (SQLAlchemy Core). The vector
indexes differ by engine and are made by the migration (catalog/migrations): sqlite-vec
`vec0` virtual tables on SQLite, `vector(D)` columns with HNSW indexes on PostgreSQL.
"""

from __future__ import annotations

import sqlalchemy as sa

from genre_detector.catalog.records import GEMS, QUADRANTS

metadata = sa.MetaData()

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("owner", sa.String(200), nullable=False, index=True),  # the account
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),  # sha256 hex
    sa.Column("prefix", sa.String(16), nullable=False),  # shown in listings, not secret
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True)),
)

tracks = sa.Table(
    "tracks",
    metadata,
    sa.Column("pk", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(32), nullable=False, unique=True),  # public id
    sa.Column("owner", sa.String(200), nullable=False, index=True),
    sa.Column("sha256", sa.String(64), nullable=False),  # of the uploaded bytes
    sa.Column("title", sa.Text, nullable=False, default=""),
    sa.Column("artist", sa.Text, nullable=False, default=""),
    sa.Column("artist_key", sa.Text, nullable=False, default="", index=True),  # casefolded
    sa.Column("consent_search", sa.Boolean, nullable=False),
    sa.Column("consent_notify", sa.Boolean, nullable=False),
    sa.Column("consented_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("duration_s", sa.Float, nullable=False),
    sa.Column("top_genre", sa.String(32), nullable=False, index=True),
    sa.Column("top_probability", sa.Float, nullable=False),
    sa.Column("probabilities", sa.JSON, nullable=False),  # the ensemble's, calibrated
    sa.Column("top3", sa.JSON, nullable=False),
    sa.Column("timeline", sa.JSON, nullable=False),
    sa.Column("model_tags", sa.JSON, nullable=False),
    sa.Column(
        "descriptors", sa.JSON(none_as_null=True)
    ),  # tempo and key (docs/api.md); null before 0003
    # the unprojected pooled features (float32 bytes): `reindex` re-projects from them
    sa.Column("features", sa.LargeBinary, nullable=False),
    sa.Column("embedding_version", sa.String(32), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("artist_id", sa.String(32), index=True),  # its account_artists.id (or null)
    sa.UniqueConstraint("owner", "sha256", name="uq_tracks_owner_sha256"),
)

# What search and watches filter on, one narrow row per track (migration 0005): the top genre
# and its probability, and the descriptors as columns (catalog.records.descriptor_columns;
# null where a block is null), so a filtered search reads these rows and not the wide
# tracks rows (features, timeline, JSON), then fetches only the page's tracks.
track_filters = sa.Table(
    "track_filters",
    metadata,
    sa.Column(
        "track_pk", sa.Integer, sa.ForeignKey("tracks.pk", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("top_genre", sa.String(32), nullable=False),
    sa.Column("top_probability", sa.Float, nullable=False),
    sa.Column("bpm", sa.Float),
    sa.Column("camelot", sa.String(3)),
    sa.Column("quadrant", sa.String(2)),
    *(sa.Column(f"mood_{q.lower()}", sa.Float) for q in QUADRANTS),
    sa.Column("arousal", sa.Float),
    sa.Column("valence", sa.Float),
    *(sa.Column(f"gems_{g}", sa.Float) for g in GEMS),
    sa.Column("voice_instrumental", sa.Float),
    sa.Column("voice_female", sa.Float),
    sa.Column("voice_male", sa.Float),
    sa.Column("instruments", sa.Text),  # ",piano,strings,": names scoring >= 0.5
)  # fmt: skip  (its indexes: migration 0005's INDEXED)

# Performers: one row per normalised name across accounts, whose pk is track_vectors'
# artist_pk (exclude_same_artist removes a performer whoever uploaded it). Its name and
# n_tracks are no longer kept up to date (migration 0003): account_artists holds those.
artists = sa.Table(
    "artists",
    metadata,
    sa.Column("pk", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("artist_key", sa.Text, nullable=False, unique=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("n_tracks", sa.Integer, nullable=False),
)

# An account's artist: (owner, normalised name), its own spelling, the running sum of its
# searchable tracks' vectors (float64 bytes) and their count; artist_vectors holds its
# centroid (the normalised sum) under its pk.
account_artists = sa.Table(
    "account_artists",
    metadata,
    sa.Column("pk", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(32), nullable=False, unique=True),
    sa.Column("owner", sa.String(200), nullable=False),
    sa.Column("artist_key", sa.Text, nullable=False, index=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("n_tracks", sa.Integer, nullable=False),
    sa.Column("vec_sum", sa.LargeBinary, nullable=False),
    sa.UniqueConstraint("owner", "artist_key", name="uq_account_artists_owner_key"),
)

watches = sa.Table(
    "watches",
    metadata,
    sa.Column("pk", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(32), nullable=False, unique=True),
    sa.Column("owner", sa.String(200), nullable=False, index=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("genres", sa.JSON, nullable=False),
    sa.Column("like_ids", sa.JSON, nullable=False),
    sa.Column("like_vectors", sa.LargeBinary),
    sa.Column("min_similarity", sa.Float, nullable=False),
    sa.Column("exclude_artists", sa.JSON, nullable=False),
    sa.Column("conditions", sa.JSON(none_as_null=True)),  # mood, bpm, key, voice (0005)
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

watch_matches = sa.Table(
    "watch_matches",
    metadata,
    sa.Column("pk", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("watch_pk", sa.Integer, sa.ForeignKey("watches.pk", ondelete="CASCADE")),
    sa.Column("track_id", sa.String(32), nullable=False),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("summary", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("watch_pk", "track_id", name="uq_watch_matches_watch_track"),
)

deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("pk", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(40), nullable=False, unique=True),
    sa.Column("watch_pk", sa.Integer, sa.ForeignKey("watches.pk", ondelete="CASCADE")),
    sa.Column("track_id", sa.String(32)),
    sa.Column("event_type", sa.String(32), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("locked_until", sa.DateTime(timezone=True)),
    sa.Column("locked_by", sa.String(64)),
    sa.Column("last_error", sa.Text),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("delivered_at", sa.DateTime(timezone=True)),
)

delivery_attempts = sa.Table(
    "delivery_attempts",
    metadata,
    sa.Column("pk", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("delivery_pk", sa.Integer, sa.ForeignKey("deliveries.pk", ondelete="CASCADE")),
    sa.Column("attempted_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("status_code", sa.Integer),
    sa.Column("latency_ms", sa.Float, nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("response_head", sa.Text),
)
