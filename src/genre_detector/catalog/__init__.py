"""The catalog of consented tracks: a database (SQLite + sqlite-vec embedded, PostgreSQL +
pgvector past one machine), API keys, tracks with their embeddings, and search by sound.

    db = Catalog.open(settings().database_url())     # migrates to the latest schema
    owner = keys.authenticate(db, "gd_...")          # the account a key belongs to
    track, created = tracks.add(db, owner, record)   # one transaction; same audio: same row
    search.similar_tracks(db, vector, k=10, genre="jazz", exclude_artist="...")

Serve (serve/catalog_routes.py) and batch (the tagger's --catalog) call these public
functions; nothing here imports serve or batch.
"""
