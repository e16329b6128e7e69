"""The CRM rows of a series: its occurrences read (and locked) in order, whether the
CRM changed them since a run read them, its organizer written, and the occurrences
the CRM has split off from it since a sync."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Select, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from crmcal.crm.tables import Activity, ActivitySeries


async def load_occurrences(
    session: AsyncSession, series_id: int, *, lock: bool = False, fresh: bool = False
) -> list[Activity]:
    """The series' occurrences in order; ``lock``: locked for the transaction's write;
    ``fresh``: as the database has them now (not as the session last loaded them)."""
    query = (
        select(Activity)
        .where(Activity.series_id == series_id)
        .order_by(Activity.original_start_at, Activity.id)
    )
    if lock:
        query = query.with_for_update()
    if lock or fresh:
        query = query.execution_options(populate_existing=True)
    return list(await session.scalars(query))


async def still_as_read(session: AsyncSession, read: Iterable[Activity]) -> bool:
    """Whether occurrences are as this run read them (locked for the transaction's
    write): the CRM changed none of them since."""

    def version(found: Iterable[Activity]) -> set[tuple[Any, ...]]:
        return {(a.id, a.series_id, a.updated_at, a.deleted_at) for a in found}

    read = list(read)
    query = (
        select(Activity)
        .where(Activity.id.in_([a.id for a in read]))
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return version(await session.scalars(query)) == version(read)


def rows_version(series: ActivitySeries, occurrences: list[Activity]) -> tuple[Any, ...]:
    """What tells whether the CRM changed a series since it was read."""
    rows = sorted((o.id, o.updated_at, o.deleted_at) for o in occurrences)
    return series.updated_at, series.deleted_at, rows


async def set_organizer(
    session: AsyncSession, series: ActivitySeries, organizer: str | None
) -> None:
    """Someone else's series (``organizer``), or the owner's own (None): the series and
    every occurrence it has, so that those the horizon makes later follow it too."""
    series.organizer = organizer
    await session.execute(
        update(Activity)
        .where(Activity.series_id == series.id)
        .values(organizer=organizer)
        .execution_options(synchronize_session=False)
    )


def split_off_query(
    series: ActivitySeries, since: dt.datetime, *, trashed_since: bool = False
) -> Select[Activity]:
    """The live occurrences, there at ``since``, that the owner of ``series`` has split
    off into a live series of its own made after ``since``: a split leaves no link from
    the new series to the old, so they are known by owner, times and original start.
    ``trashed_since``: those moved to the trash after ``since`` too (a cancellation the
    calendar has not seen yet)."""
    live = Activity.deleted_at.is_(None)
    return (
        select(Activity)
        .join(ActivitySeries, ActivitySeries.id == Activity.series_id)
        .where(
            ActivitySeries.owner_id == series.owner_id,
            ActivitySeries.deleted_at.is_(None),
            ActivitySeries.created_at > since,
            Activity.series_id != series.id,
            or_(live, Activity.deleted_at > since) if trashed_since else live,
            Activity.created_at <= since,
        )
    )
