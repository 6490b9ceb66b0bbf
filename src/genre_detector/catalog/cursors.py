"""Opaque, per-account listing cursors.

    token = cursors.encode(db, owner, "tracks", last_pk)
    cursors.decode(db, owner, "tracks", token)        # last_pk, or 400 bad_parameter "cursor"

A cursor carries a row's integer key, but a client never sees it: the key is masked with a
keystream and authenticated with a tag, both HMAC-SHA256 of a random secret kept in the
catalog (catalog_meta.cursor_key, created on first use, shared by every replica). A fresh
random nonce per cursor makes two cursors of the same row differ, so a cursor says nothing
about the catalog's size or growth; the tag binds it to the account and the listing (a
cursor of another account or listing is refused, as is any edited or made-up one). The
standard library's hmac is used because the project has no AEAD library among its
dependencies; HMAC as a PRF for the mask and as the MAC is a textbook construction.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct

import sqlalchemy as sa

from genre_detector.errors import GenreError

META_KEY = "cursor_key"
_NONCE, _TAG = 8, 12
_meta = sa.table("catalog_meta", sa.column("key"), sa.column("value"))


def _secret(db) -> bytes:
    cached = getattr(db, "_cursor_secret", None)
    if cached is not None:
        return cached
    with db.begin() as conn:
        value = conn.execute(sa.select(_meta.c.value).where(_meta.c.key == META_KEY)).scalar()
        if value is None:
            value = secrets.token_hex(32)
            if db.dialect == "sqlite":
                from sqlalchemy.dialects.sqlite import insert
            else:
                from sqlalchemy.dialects.postgresql import insert
            conn.execute(insert(_meta).values(key=META_KEY, value=value).on_conflict_do_nothing())
            value = conn.execute(
                sa.select(_meta.c.value).where(_meta.c.key == META_KEY)
            ).scalar_one()
    db._cursor_secret = bytes.fromhex(value)
    return db._cursor_secret


def _prf(secret: bytes, *parts: bytes) -> bytes:
    return hmac.new(secret, b"\x00".join(parts), hashlib.sha256).digest()


def encode(db, owner: str, listing: str, pk: int) -> str:
    secret, nonce = _secret(db), secrets.token_bytes(_NONCE)
    context = (owner.encode(), listing.encode(), nonce)
    masked = bytes(a ^ b for a, b in zip(struct.pack(">q", pk), _prf(secret, b"mask", *context)))
    tag = _prf(secret, b"tag", *context, masked)[:_TAG]
    return base64.urlsafe_b64encode(nonce + masked + tag).decode().rstrip("=")


def decode(db, owner: str, listing: str, cursor: str) -> int:
    bad = GenreError("bad_parameter", "cursor: not a cursor this service gave you for this list")
    if not isinstance(cursor, str) or len(cursor) > 64:
        raise bad
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except ValueError:
        raise bad from None
    if len(raw) != _NONCE + 8 + _TAG:
        raise bad
    nonce, masked, tag = raw[:_NONCE], raw[_NONCE : _NONCE + 8], raw[_NONCE + 8 :]
    secret = _secret(db)
    context = (owner.encode(), listing.encode(), nonce)
    if not hmac.compare_digest(tag, _prf(secret, b"tag", *context, masked)[:_TAG]):
        raise bad
    mask = _prf(secret, b"mask", *context)
    return struct.unpack(">q", bytes(a ^ b for a, b in zip(masked, mask)))[0]
