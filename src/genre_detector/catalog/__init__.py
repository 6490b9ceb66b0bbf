"""The catalog of consented tracks: a database (SQLite + sqlite-vec embedded, PostgreSQL +
pgvector past one machine), API keys, tracks with their embeddings, and search by sound.

    db = Catalog.open(settings().database_url())     # migrates to the latest schema
    owner = keys.authenticate(db, "gd_...")          # the account a key belongs to
    row, created = ingest.add(db, owner, record, consent)  # one transaction: the track,
                                                     # its vector, watches' matches (outbox)
    search.similar_tracks(db, vector, k=10, genre="jazz", exclude_artist="...")
    delivery.Worker(db).run_once()                   # send due webhooks (at least once)

Serve (serve/catalog_routes.py) and batch (the tagger's --catalog) call these public
functions; nothing here imports serve or batch.
"""
