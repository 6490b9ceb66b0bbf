"""API keys: created once and shown once, stored only as a SHA-256 hash.

    key = keys.create(db, "label-a")       # "gd_..." : print it now, it cannot be shown again
    keys.authenticate(db, key)             # "label-a" (the owner), or raises Unauthorized
    keys.identify(db, key)                 # Identity(key_id, owner, prefix)
    keys.revoke(db, key_id)

The keys are 256-bit random tokens (secrets.token_urlsafe), so a plain SHA-256 is the right
hash: a slow password hash (bcrypt, argon2) protects low-entropy secrets and would only add
~100 ms to every request here. Lookups compare hashes through the unique index.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass

import sqlalchemy as sa

from genre_detector.catalog import clock
from genre_detector.catalog.schema import api_keys
from genre_detector.errors import GenreError

PREFIX = "gd_"
MAX_OWNER = 200


class Unauthorized(GenreError):
    def __init__(self, detail: str):
        super().__init__("unauthorized", detail)


@dataclass(frozen=True)
class NewKey:
    id: str
    owner: str
    secret: str  # the key itself: shown once


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create(db, owner: str) -> NewKey:
    owner = owner.strip()
    if not owner or len(owner) > MAX_OWNER:
        raise ValueError(f"an owner name of 1 to {MAX_OWNER} characters, not {owner!r}")
    secret = PREFIX + secrets.token_urlsafe(32)
    key = NewKey(uuid.uuid4().hex, owner, secret)
    with db.begin() as conn:
        conn.execute(
            api_keys.insert().values(
                id=key.id,
                owner=owner,
                key_hash=_hash(secret),
                prefix=secret[:10],
                created_at=clock.now(),
            )
        )
    return key


@dataclass(frozen=True)
class Identity:
    key_id: str
    owner: str
    prefix: str


def authenticate(db, authorization: str | None) -> str:
    """The owner of the key in an `Authorization: Bearer KEY` header value (or the bare
    key); Unauthorized when it is missing, unknown or revoked."""
    return identify(db, authorization).owner


def identify(db, authorization: str | None) -> Identity:
    """The key (its id, owner and shown prefix) of an `Authorization: Bearer KEY` header
    value (or the bare key); Unauthorized when it is missing, unknown or revoked."""
    if not authorization:
        raise Unauthorized("send your API key as `Authorization: Bearer KEY`")
    scheme, _, token = authorization.strip().partition(" ")
    secret = token.strip() if scheme.lower() == "bearer" else authorization.strip()
    if not secret.startswith(PREFIX):
        raise Unauthorized("that is not an API key of this service")
    with db.connect() as conn:
        row = conn.execute(
            sa.select(
                api_keys.c.id, api_keys.c.owner, api_keys.c.prefix, api_keys.c.revoked_at
            ).where(api_keys.c.key_hash == _hash(secret))
        ).first()
    if row is None or row.revoked_at is not None:
        raise Unauthorized("unknown or revoked API key")
    return Identity(row.id, row.owner, row.prefix)


def revoke(db, key_id: str) -> bool:
    with db.begin() as conn:
        done = conn.execute(
            api_keys.update()
            .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=clock.now())
        )
    return done.rowcount == 1


def listing(db) -> list[dict]:
    with db.connect() as conn:
        rows = conn.execute(
            sa.select(
                api_keys.c.id,
                api_keys.c.owner,
                api_keys.c.prefix,
                api_keys.c.created_at,
                api_keys.c.revoked_at,
            ).order_by(api_keys.c.created_at)
        )
        return [dict(r._mapping) for r in rows]
