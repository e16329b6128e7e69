"""The activity change feed: an append-only log with a monotonic sequence number.

Each create/update/delete/restore appends one row in the same transaction as the
change itself. A reader keeps the last ``seq`` it has processed and asks for the
rows after it.

On PostgreSQL a sequence number is drawn when a row is inserted, but
transactions commit in any order, so a reader could see seq 11 before seq 10 has
committed and skip 10 for good. Taking one transaction-scoped advisory lock just
before the insert makes feed rows become visible in sequence order: whoever drew
the lower number commits (and releases the lock) before the next number is drawn.
SQLite already runs one writer at a time.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ScalarSelect, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from crmcal.crm.tables import Activity, ActivityChange, table_of, utcnow

CREATED = "created"
UPDATED = "updated"
DELETED = "deleted"
RESTORED = "restored"

# An arbitrary constant naming the feed's lock among the database's advisory locks.
_FEED_LOCK_KEY = 0x6372_6D63_616C  # "crmcal"


async def record_change(session: AsyncSession, activity: Activity, kind: str, origin: str) -> int:
    """Append a feed row for ``activity``; returns its sequence number."""
    (seq,) = await record_changes(session, [activity], kind, origin)
    return seq


async def record_changes(
    session: AsyncSession,
    changed: list[Activity],
    kind: str,
    origin: str,
    *,
    owner_id: int | None = None,
) -> list[int]:
    """Append one feed row per activity; returns their sequence numbers, ascending.

    Rows name the activity's owner (readers follow their own user's activities),
    or ``owner_id``: another user who must hear of the change, like a previous owner.
    """
    return await record_ids(
        session, [(a.id, owner_id or a.owner_id) for a in changed], kind, origin
    )


async def record_ids(
    session: AsyncSession, changed: list[tuple[int, int]], kind: str, origin: str
) -> list[int]:
    """``record_changes`` for activities known by (id, owner id) alone (an import's
    many occurrences, never loaded as objects)."""
    if not changed:
        return []
    if (await session.connection()).dialect.name == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _FEED_LOCK_KEY})
    now = utcnow()
    rows = [
        {"activity_id": activity_id, "owner_id": owner_id, "kind": kind, "origin": origin,
         "changed_at": now}
        for activity_id, owner_id in changed
    ]  # fmt: skip
    # One multi-row INSERT. Asking for the numbers in row order would make
    # SQLAlchemy send it row by row on SQLite; the rows of one call differ only in
    # their activity, so the numbers are answered in ascending order instead.
    table = table_of(ActivityChange)
    inserted = await session.execute(insert(table).returning(table.c.seq), rows)
    return sorted(inserted.scalars())


async def read_changes(
    session: AsyncSession, after_seq: int = 0, limit: int = 1000, owner_id: int | None = None
) -> list[ActivityChange]:
    """Feed rows after ``after_seq`` in sequence order, optionally of one owner only."""
    query = select(ActivityChange).where(ActivityChange.seq > after_seq)
    if owner_id is not None:
        query = query.where(ActivityChange.owner_id == owner_id)
    return list(await session.scalars(query.order_by(ActivityChange.seq).limit(limit)))


def head() -> ScalarSelect[Any]:
    """The feed's newest position (NULL when empty), to read along with other things."""
    return select(func.max(ActivityChange.seq)).scalar_subquery()


async def latest_seq(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.max(ActivityChange.seq))) or 0)
