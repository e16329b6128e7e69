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

from sqlalchemy import ScalarSelect, String, func, insert, literal, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from crmcal import bulk
from crmcal.crm.tables import Activity, ActivityChange, UTCDateTime, table_of, utcnow

CREATED = "created"
UPDATED = "updated"
DELETED = "deleted"
RESTORED = "restored"

# An arbitrary constant naming the feed's lock among the database's advisory locks.
_FEED_LOCK_KEY = 0x6372_6D63_616C  # "crmcal"


async def record_change(session: AsyncSession, activity: Activity, kind: str, origin: str) -> int:
    """Append a feed row for ``activity``; returns its sequence number."""
    await _lock(session)
    table = table_of(ActivityChange)
    row = _row(activity.id, activity.owner_id, kind, origin, utcnow())
    return int((await session.execute(insert(table).returning(table.c.seq), [row])).scalar_one())


async def record_changes(
    session: AsyncSession,
    changed: list[Activity],
    kind: str,
    origin: str,
    *,
    owner_id: int | None = None,
) -> None:
    """Append one feed row per activity.

    Rows name the activity's owner (readers follow their own user's activities),
    or ``owner_id``: another user who must hear of the change, like a previous owner.
    """
    await record_ids(session, [(a.id, owner_id or a.owner_id) for a in changed], kind, origin)


async def record_ids(
    session: AsyncSession, changed: list[tuple[int, int]], kind: str, origin: str
) -> None:
    """``record_changes`` for activities known by (id, owner id) alone (an import's
    many occurrences, never loaded as objects). One multi-row INSERT that asks
    nothing back (``bulk.insert_many``): an import writes thousands."""
    if not changed:
        return
    await _lock(session)
    now = utcnow()
    rows = [_row(activity_id, owner_id, kind, origin, now) for activity_id, owner_id in changed]
    await bulk.insert_many(session, table_of(ActivityChange), rows)


async def record_new(
    session: AsyncSession, ids: list[int], owners: list[int], kind: str, origin: str
) -> None:
    """``record_ids`` for activities this transaction has just inserted with ``ids``,
    each for its own owner (``owners``, the rows' ``owner_id``). When the ids run
    without a gap (an import's on SQLite, see ``bulk.insert_many_ids``), they are all
    this transaction's rows, and the feed's rows are made by the database from theirs:
    one INSERT ... SELECT of the range, in id order, with no row built or bound here
    (an import writes tens of thousands)."""
    if not ids:
        return
    first, last = ids[0], ids[-1]
    if last - first + 1 != len(ids) or ids != list(range(first, last + 1)):
        await record_ids(session, list(zip(ids, owners, strict=True)), kind, origin)
        return
    await _lock(session)
    activities = table_of(Activity)
    made = select(
        activities.c.id, activities.c.owner_id, literal(kind, String()),
        literal(origin, String()), literal(utcnow(), UTCDateTime()),
    ).where(activities.c.id.between(first, last)).order_by(activities.c.id)  # fmt: skip
    columns = ["activity_id", "owner_id", "kind", "origin", "changed_at"]
    await session.execute(insert(table_of(ActivityChange)).from_select(columns, made))


async def _lock(session: AsyncSession) -> None:
    """On PostgreSQL, the feed's lock until the transaction ends (see the top)."""
    if (await session.connection()).dialect.name == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _FEED_LOCK_KEY})


def _row(activity_id: int, owner_id: int, kind: str, origin: str, now: Any) -> dict[str, Any]:
    return {"activity_id": activity_id, "owner_id": owner_id, "kind": kind, "origin": origin,
            "changed_at": now}  # fmt: skip


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
