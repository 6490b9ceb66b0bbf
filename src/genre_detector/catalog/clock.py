"""Time as the catalog stores it: aware UTC datetimes. SQLite hands stored datetimes back
without their zone; `aware` puts UTC back on them."""

from __future__ import annotations

import datetime as dt


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def aware(t: dt.datetime | None) -> dt.datetime | None:
    return None if t is None else (t if t.tzinfo else t.replace(tzinfo=dt.UTC))
