"""Emptying the trash: activities deleted more than the retention period ago go for good."""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

from sqlalchemy import CursorResult, delete
from sqlalchemy.ext.asyncio import AsyncSession

from crmcal.crm.tables import Activity, ActivitySeries, utcnow

RETENTION = dt.timedelta(days=30)


async def purge_trash(
    session: AsyncSession, *, now: dt.datetime | None = None, retention: dt.timedelta = RETENTION
) -> int:
    """Delete activities trashed before ``now - retention``; returns how many."""
    cutoff = (now or utcnow()) - retention
    result = await session.execute(
        delete(Activity)
        .where(Activity.deleted_at.is_not(None), Activity.deleted_at < cutoff)
        .execution_options(synchronize_session=False)
    )
    # A deleted series goes with its occurrences (they went to the trash with it).
    await session.execute(
        delete(ActivitySeries)
        .where(ActivitySeries.deleted_at.is_not(None), ActivitySeries.deleted_at < cutoff)
        .execution_options(synchronize_session=False)
    )
    # A DELETE answers a CursorResult; execute() is declared to answer any Result.
    return int(cast(CursorResult[Any], result).rowcount or 0)
