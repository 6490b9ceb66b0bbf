"""How tracks enter and leave the catalog, for every caller (the API's uploads, the tagger
in-process and on Ray): the track, its vector, its matches against every watch and their
deliveries in one transaction; erasure and withdrawn consent cancel what was not sent.

    row, created = ingest.add(db, owner, record, consent)
    ingest.add_many(db, owner, records, consent)      # the tagger's batches
    ingest.erase(db, owner, track_id)                 # DELETE /tracks/{id}
    ingest.set_notify(db, owner, track_id, False)     # withdraw the notify consent
"""

from __future__ import annotations

from genre_detector.catalog import tracks, watches


def _matcher(db):
    def on_insert(conn, track_pk, row, record):
        watches.match_new_track(db, conn, track_pk, row, record.embedding)

    return on_insert


def _forgetter(db, erase: bool):
    def forget(conn, track_id):
        watches.forget_track(db, conn, track_id, erase=erase)

    return forget


def add(db, owner: str, record, consent) -> tuple[dict, bool]:
    return tracks.add(db, owner, record, consent, on_insert=_matcher(db))


def add_many(db, owner: str, records: list, consent) -> int:
    return tracks.add_many(db, owner, records, consent, on_insert=_matcher(db))


def erase(db, owner: str, track_id: str) -> bool:
    return tracks.delete(db, owner, track_id, on_delete=_forgetter(db, erase=True))


def set_notify(db, owner: str, track_id: str, notify: bool) -> dict | None:
    return tracks.set_notify(db, owner, track_id, notify, on_withdraw=_forgetter(db, erase=False))
