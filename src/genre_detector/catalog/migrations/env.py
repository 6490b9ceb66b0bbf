"""Alembic's environment for the catalog: run on the connection Catalog.migrate hands over
(no alembic.ini, no URL here)."""

from alembic import context

from genre_detector.catalog.schema import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
