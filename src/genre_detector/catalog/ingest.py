"""How tracks enter and leave the catalog, for every caller (the API's uploads, the tagger
in-process and on Ray). This module owns the transaction and reads top to bottom: a new
track is its row, its vector, its artist's running centroid, its matches against every
watch and their deliveries (the outbox), written in that order in one transaction; an
erasure or a withdrawn notify consent cancels what was not sent, in the same transaction.

    row, created = ingest.add(db, owner, record, consent, quota=10000)   # 403 past it
    ingest.add_many(db, owner, records, consent)      # the tagger's batches
    ingest.erase(db, owner, track_id)                 # DELETE /tracks/{id}
    ingest.set_notify(db, owner, track_id, False)     # withdraw the notify consent
"""

from __future__ import annotations

import sqlalchemy as sa

from genre_detector.catalog import tracks, watches
from genre_detector.errors import GenreError


def _needs_search(consent) -> None:
    if not consent.search:
        raise GenreError("consent_required", "a track needs consent to search to be stored")


def _store(db, conn, owner: str, record, consent, quota: int | None = None) -> dict:
    """One new track, in the caller's transaction, step by step."""
    if quota is not None:
        tracks.lock_account(db, conn, owner)  # PostgreSQL: an account's uploads take turns
    artist = tracks.account_artist(db, conn, owner, record.artist_key, record.artist)
    pk, row = tracks.insert_row(conn, owner, record, consent, artist)  # the track
    if quota is not None and tracks.count_in(conn, owner) > quota:  # rolled back with it
        raise GenreError("quota_exceeded", f"tracks: an account has at most {quota}")
    tracks.put_vector(db, conn, pk, record)  # its vector
    tracks.add_to_artist(db, conn, artist, record.embedding)  # its artist's centroid
    matched = watches.match(db, conn, row, record.embedding)  # every watch it matches
    watches.queue_deliveries(conn, matched, row)  # their webhooks, in the outbox
    return row


def add(db, owner: str, record, consent, quota: int | None = None) -> tuple[dict, bool]:
    """(the stored track, whether this call created it). The same audio (sha256) from the
    same owner is one track: later uploads return it unchanged. `quota`: the most tracks
    the owner may have (403 quota_exceeded past it), counted in the insert's transaction
    under the write lock, so concurrent uploads cannot pass it."""
    _needs_search(consent)
    existing = tracks.by_sha256(db, owner, record.sha256)
    if existing is not None:
        return tracks.fill_descriptors(db, existing, record), False
    try:
        with db.begin() as conn:
            row = _store(db, conn, owner, record, consent, quota)
    except sa.exc.IntegrityError:
        # the same audio arrived concurrently: the other transaction's row is the track
        existing = tracks.by_sha256(db, owner, record.sha256)
        if existing is None:
            raise
        return existing, False
    return row, True


def add_many(db, owner: str, records: list, consent) -> int:
    """A batch in one transaction (the tagger's writes); audio the owner already has is
    skipped. Returns the number of tracks created. A concurrent writer of the same audio
    makes the batch fall back to one transaction per track."""
    _needs_search(consent)
    try:
        with db.begin() as conn:
            have = tracks.existing(conn, owner, [r.sha256 for r in records])
            fresh = {r.sha256: r for r in records if r.sha256 not in have}
            for record in records:
                if record.sha256 in have:  # stored before tempo and key: fill them in
                    tracks.set_missing_descriptors(conn, owner, record)
            for record in fresh.values():
                _store(db, conn, owner, record, consent)
        return len(fresh)
    except sa.exc.IntegrityError:
        return sum(add(db, owner, r, consent)[1] for r in records)


def erase(db, owner: str, track_id: str) -> bool:
    """The owner's track gone: its pending webhooks cancelled and its place in any watch's
    reference tracks taken out, then its vector, row and artist share. False when unknown
    or another account's."""
    with db.begin() as conn:
        found = tracks.lock_owned(conn, owner, track_id)
        if found is None:
            return False
        watches.forget_track(db, conn, track_id, erase=True)
        tracks.remove(db, conn, owner, found)
    return True


def set_notify(db, owner: str, track_id: str, notify: bool) -> dict | None:
    """Give or withdraw the notify consent; a withdrawal cancels the track's pending
    webhooks. None when unknown or another account's."""
    with db.begin() as conn:
        found = tracks.lock_owned(conn, owner, track_id)
        if found is None:
            return None
        row = tracks.set_notify(conn, found.pk, notify)
        if not notify:
            watches.forget_track(db, conn, track_id, erase=False)
        return row
