"""A rule's UNTIL in another form than its start's (RFC 5545 3.3.10): a calendar's rule
comes in however the sync writes it into the CRM (a first import, a series new since,
a rule changed there), stored as spelt; a rule a person gives is refused, unless it is
the stored one sent back as it was read."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from zoneinfo import ZoneInfo

import pytest

from crmcal.crm.errors import Invalid
from crmcal.crm.tables import Activity
from crmcal.db import Database
from crmcal.model import Recurrence
from tests.engine_world import World, at, event
from tests.memory_provider import MemoryCalendar, PartsProvider

BERLIN = ZoneInfo("Europe/Berlin")


@pytest.fixture
async def world(db_url: str) -> AsyncIterator[World]:
    db = Database(db_url)
    try:
        made = World(db, MemoryCalendar())
        made.provider = PartsProvider(made.calendar, part_size=1000)  # it syncs series
        yield await made.setup()
    finally:
        await db.dispose()


def date_until(days: int, start: float = 0) -> str:
    """A daily rule ending, with a date UNTIL, ``days`` days after the day in Berlin (the
    events' zone) of a first start ``start`` hours from ``at(0)``: ``days + 1``
    occurrences, whatever the hour the test runs at (two hours on may be the next day)."""
    day = at(start).astimezone(BERLIN).date() + dt.timedelta(days=days)
    return f"FREQ=DAILY;UNTIL={day:%Y%m%d}"


async def by_subject(world: World) -> dict[str, list[Activity]]:
    found: dict[str, list[Activity]] = {}
    for activity in await world.live_activities():
        found.setdefault(activity.subject, []).append(activity)
    return found


async def test_a_calendars_date_until_beside_a_timed_start_comes_in_however_written(
    world: World,
) -> None:
    world.calendar.put("first", event("First", recurrence=Recurrence(date_until(4))))
    assert (await world.sync()).created == 1  # the first import
    # A series new since, and the first one's rule changed there.
    later = Recurrence(date_until(2, start=2))
    world.calendar.put("later", event("Later", start=2, recurrence=later))
    world.calendar.put("first", event("First", recurrence=Recurrence(date_until(6))))
    report = await world.sync()
    assert (report.created, report.updated, report.problems) == (1, 1, []), report.counts()
    found = await by_subject(world)
    assert (len(found["First"]), len(found["Later"])) == (7, 3)
    assert {a.recurrence for a in found["First"]} == {date_until(6)}  # as spelt
    assert {a.recurrence for a in found["Later"]} == {date_until(2, start=2)}


async def test_a_person_may_send_a_calendars_rule_back_but_not_give_one(world: World) -> None:
    world.calendar.put("first", event("First", recurrence=Recurrence(date_until(4))))
    await world.sync()
    first = min((await world.live_activities()), key=lambda a: a.start_at)
    for scope in ("this", "series"):
        await world.edit_activity(
            first.id, subject=f"Edited {scope}", recurrence=date_until(4), scope=scope
        )
    with pytest.raises(Invalid, match="UNTIL must be a UTC time such as 20270101T235959Z"):
        await world.edit_activity(first.id, recurrence=date_until(3), scope="series")
    assert {a.recurrence for a in await world.live_activities()} == {date_until(4)}
