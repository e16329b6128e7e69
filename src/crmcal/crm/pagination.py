"""Opaque keyset cursors for list endpoints."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncSession

from crmcal.crm.errors import Invalid
from crmcal.crm.schemas import MAX_ID

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


def encode_cursor(key: list[Any]) -> str:
    raw = json.dumps(key, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, arity: int) -> list[Any]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        key = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (binascii.Error, ValueError, UnicodeError):
        raise Invalid("cursor is not one this API handed out") from None
    if not isinstance(key, list) or len(key) != arity:
        raise Invalid("cursor is not one this API handed out")
    return key


def decode_id_cursor(cursor: str) -> int:
    (after,) = decode_cursor(cursor, 1)
    # Bounded like every id: a bigger number overflows SQLite's INTEGER.
    if type(after) is not int or not 0 <= after <= MAX_ID:
        raise Invalid("cursor is not one this API handed out")
    return after


async def page_by_id(
    session: AsyncSession, query: Select[Any], id_column: Any, *, limit: int, cursor: str | None
) -> tuple[list[Any], str | None]:
    """One page of ``query`` in id order, and the cursor of the next page (or None)."""
    if cursor:
        query = query.where(id_column > decode_id_cursor(cursor))
    rows = list(await session.scalars(query.order_by(id_column).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, encode_cursor([rows[-1].id]) if more else None
