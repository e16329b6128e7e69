"""Opaque keyset cursors for list endpoints."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncSession

from crmcal.crm.errors import Invalid
from crmcal.crm.schemas import MAX_ID

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


# Cursors are opaque to clients, but every string of their documented pattern is a
# position in the list, so the API refuses only what does not match it.
# An empty cursor is the first page.
ID_CURSOR = r"^([0-9]{1,10})?$"
START_CURSOR = r"^(-?[0-9]{1,16}[.][0-9]{1,10})?$"
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _refused() -> Invalid:
    return Invalid("cursor is not one this API handed out")


def decode_id_cursor(cursor: str) -> int:
    """The id a page ends with; bigger than any id (which SQLite could not compare) is
    the end of the list."""
    if not re.fullmatch(ID_CURSOR, cursor):
        raise _refused()
    return min(int(cursor), MAX_ID)


def encode_start_cursor(start: dt.datetime, after_id: int) -> str:
    """A position in a list ordered by a start time, then id: microseconds since 1970."""
    if start.tzinfo is None:
        start = start.replace(tzinfo=dt.UTC)
    return f"{(start - _EPOCH) // dt.timedelta(microseconds=1)}.{after_id}"


def decode_start_cursor(cursor: str) -> tuple[dt.datetime, int]:
    if not re.fullmatch(START_CURSOR, cursor):
        raise _refused()
    micros, after_id = cursor.split(".")
    return _EPOCH + dt.timedelta(microseconds=int(micros)), min(int(after_id), MAX_ID)


async def page_by_id(
    session: AsyncSession, query: Select[Any], id_column: Any, *, limit: int, cursor: str | None
) -> tuple[list[Any], str | None]:
    """One page of ``query`` in id order, and the cursor of the next page (or None)."""
    if cursor:
        query = query.where(id_column > decode_id_cursor(cursor))
    rows = list(await session.scalars(query.order_by(id_column).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, str(rows[-1].id) if more else None
