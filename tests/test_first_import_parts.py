"""A first import taken in parts as the calendar delivers them: the CRM is written
while later parts are on their way, and the result is what one listing gives."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import func, select

from crmcal.crm import activities
from crmcal.crm.schemas import MAX_PARTICIPANTS, ActivityCreate
from crmcal.crm.tables import Activity, ActivitySeries
from crmcal.db import Database
from crmcal.model import Attendee, CalendarEvent, Recurrence
from crmcal.providers.base import Unreachable
from crmcal.sync import engine as engine_module
from crmcal.sync import imports as imports_module
from crmcal.sync.tables import Link
from tests.engine_world import World, at, event
from tests.memory_provider import MemoryCalendar, PartsProvider

ONE_PART = 1000  # more than any calendar here: the whole listing in one part


@pytest.fixture
async def world(db_url: str) -> AsyncIterator[World]:
    db = Database(db_url)
    try:
        made = World(db, MemoryCalendar())
        made.provider = PartsProvider(made.calendar, part_size=ONE_PART)
        yield await made.setup()
    finally:
        await db.dispose()


def parts_of(world: World) -> PartsProvider:
    assert isinstance(world.provider, PartsProvider)
    return world.provider


async def live_count(world: World) -> int:
    async with world.db.read() as session:
        query = select(func.count(Activity.id)).where(Activity.deleted_at.is_(None))
        return int(await session.scalar(query) or 0)


async def test_the_first_batch_is_in_the_crm_before_the_last_part_is_handed_over(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_module, "IMPORT_BATCH", 3)
    monkeypatch.setattr(engine_module, "IMPORT_BATCH_MAX", 3)
    for n in range(7):
        world.calendar.put(f"e{n}", event(f"Call {n}", start=n))
    provider = parts_of(world)
    provider.part_size = 3
    in_crm: dict[int, int] = {}

    async def before_part(number: int) -> None:
        in_crm[number] = await live_count(world)

    provider.before_part = before_part
    report = await world.sync()
    assert report.created == 7
    # The batch of each part was written before the next part was handed over.
    assert in_crm == {0: 0, 1: 3, 2: 6}
    assert (await world.connection()).remote_cursor is not None
    assert (await world.sync()).counts() == dict.fromkeys(
        ("created", "updated", "deleted", "conflicts", "skipped"), 0
    )


async def test_a_run_s_batches_grow_from_the_first_to_the_largest(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first batch is written early (small), each next one twice the last up to
    the largest: a batch costs some statements and a commit whatever its size."""
    monkeypatch.setattr(engine_module, "IMPORT_BATCH", 2)
    monkeypatch.setattr(engine_module, "IMPORT_BATCH_MAX", 8)
    for n in range(25):
        world.calendar.put(f"e{n}", event(f"Call {n}", start=n))
    parts_of(world).part_size = 5
    sizes: list[int] = []
    create = imports_module.Imports._create

    async def counted(self: imports_module.Imports, prepared: list[Any]) -> list[Any]:
        sizes.append(len(prepared))
        return await create(self, prepared)

    monkeypatch.setattr(imports_module.Imports, "_create", counted)
    report = await world.sync()
    assert report.created == 25
    # Written as each batch fills: 2, then 4, then 8 and 8 again; the rest at the end.
    assert sizes == [2, 4, 8, 8, 3]
    assert await live_count(world) == 25


async def test_the_crm_side_is_read_while_the_provider_lists(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CRM's activities in range are read while the provider is still listing,
    not after its first part is handed over: the listing takes the server a while,
    with nothing else for the run to do."""
    for n in range(3):
        world.calendar.put(f"e{n}", event(f"Call {n}", start=n))
    mine = await world.add_activity("From the CRM", start=10)
    crm_side = engine_module.Engine._crm_side
    started, read = asyncio.Event(), asyncio.Event()

    async def reading(self: engine_module.Engine) -> set[int]:
        started.set()
        found = await crm_side(self)
        read.set()
        return found

    monkeypatch.setattr(engine_module.Engine, "_crm_side", reading)
    seen: dict[int, bool] = {}

    async def before_part(number: int) -> None:
        await asyncio.sleep(0)  # the run's other tasks have their turn
        if started.is_set():
            await read.wait()  # begun: it ends without the part
        seen[number] = read.is_set()

    provider = parts_of(world)
    provider.part_size = 2
    provider.before_part = before_part
    report = await world.sync()
    assert seen == {0: True, 1: True}
    assert report.created == 4  # 3 imported, 1 sent
    assert mine in {a.id for a in await world.live_activities()}


async def test_a_listing_that_fails_before_its_first_part_leaves_no_crm_read_running(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.calendar.put("e0", event("Call", start=0))
    ended: list[str] = []
    never = asyncio.Event()

    async def reading(self: engine_module.Engine) -> set[int]:
        try:
            await never.wait()  # still reading when the listing fails
        finally:
            ended.append("ended")
        return set()

    async def before_part(number: int) -> None:
        await asyncio.sleep(0)  # the read has begun
        raise Unreachable("the server went away")

    monkeypatch.setattr(engine_module.Engine, "_crm_side", reading)
    parts_of(world).before_part = before_part
    with pytest.raises(Unreachable):
        await world.sync()
    assert ended == ["ended"]  # ended by the run, before it returned


@pytest.mark.parametrize("part_size", [1, 2, ONE_PART])
async def test_a_reconnect_across_parts_pairs_every_event_and_duplicates_nothing(
    world: World, part_size: int
) -> None:
    for n in range(4):
        world.calendar.put(f"f{n}", event(f"From the calendar {n}", start=n))
    mine = [await world.add_activity(f"From the CRM {n}", start=10 + n) for n in range(3)]
    assert (await world.sync()).created == 7  # 4 imported, 3 sent
    first = await world.activity(mine[0])
    # Another client's copy of one of crmcal's events, listed last.
    _, sent = world.calendar.events[f"crmcal-{first.uid}"]
    world.calendar.put("copy", dataclasses.replace(sent, uid="copy"))
    # A new connection to the same calendar: its events carry crmcal's keys or derive
    # the CRM's uids, the CRM's activities' events come in the later parts.
    await world.connect()
    parts_of(world).part_size = part_size
    report = await world.sync()
    assert report.created == 1  # the copy alone
    assert report.skipped == 0
    assert await live_count(world) == 8
    assert len(world.calendar.events) == 8  # nothing sent twice
    assert await world.links() == 8
    async with world.db.read() as session:
        linked = await session.scalar(
            select(Link.remote_id).where(
                Link.connection_id == world.connection_id, Link.activity_id == mine[0]
            )
        )
    assert linked == f"crmcal-{first.uid}"  # the first listed, as in one listing


async def test_an_item_refused_in_one_part_does_not_stop_the_next_parts(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_module, "IMPORT_BATCH", 2)
    crowd = tuple(Attendee(email=f"guest{n}@example.com") for n in range(MAX_PARTICIPANTS + 1))
    world.calendar.put("e0", event("Zero", start=0))
    world.calendar.put("e1", event("One", start=1))
    world.calendar.put("crowded", event("Too many guests", start=2, attendees=crowd))
    world.calendar.put("e3", event("Three", start=3))
    world.calendar.put("e4", event("Four", start=4))
    world.calendar.unreadable["broken"] = '"7"'  # listed last
    provider = parts_of(world)
    provider.part_size = 2
    report = await world.sync()
    assert provider.parts == 3
    assert report.created == 4
    assert {p["item"] for p in report.problems} == {"crowded", "broken"}
    subjects = {a.subject for a in await world.live_activities()}
    assert subjects == {"Zero", "One", "Three", "Four"}


@pytest.mark.parametrize("part_size", [1, ONE_PART])
async def test_calendar_series_of_different_parts_pair_as_in_one_listing(
    world: World, part_size: int
) -> None:
    start = at(0).replace(minute=0)
    data = ActivityCreate(type="meeting", subject="Daily", start=start.isoformat(),
                          end=(start + dt.timedelta(hours=1)).isoformat(), timezone="UTC",
                          recurrence="FREQ=DAILY;COUNT=3")  # fmt: skip
    async with world.db.write() as session:
        await activities.create_activity(session, await world.user(session), data)
    await world.sync()  # the CRM's series goes to the calendar
    async with world.db.read() as session:
        (crm_series,) = await session.scalars(select(ActivitySeries))
    sent_id = f"crmcal-{crm_series.uid}"
    assert sent_id in world.calendar.events
    # Another series of the same title, rule and start made in the calendar, with an
    # occurrence changed on its own, listed first: the CRM's series is the one that
    # carries its key (in a later part), not this one.
    moved = CalendarEvent(summary="Daily, later", start=start + dt.timedelta(days=1, hours=2),
                          end=start + dt.timedelta(days=1, hours=3), timezone="UTC",
                          recurrence_id=start + dt.timedelta(days=1))  # fmt: skip
    world.calendar.put("theirs", CalendarEvent(
        summary="Daily", start=start, end=start + dt.timedelta(hours=1), timezone="UTC",
        recurrence=Recurrence("FREQ=DAILY;COUNT=3"), overrides=(moved,),
    ))  # fmt: skip
    world.calendar.events = {
        "theirs": world.calendar.events["theirs"],
        **{k: v for k, v in world.calendar.events.items() if k != "theirs"},
    }
    await world.connect()
    parts_of(world).part_size = part_size
    report = await world.sync()
    assert report.created == 1
    async with world.db.read() as session:
        series = {s.id: s for s in await session.scalars(select(ActivitySeries))}
        links = {
            link.remote_id: link
            for link in await session.scalars(
                select(Link).where(Link.connection_id == world.connection_id)
            )
        }
        linked_series = {}
        for remote_id, link in links.items():
            activity = await session.get(Activity, link.activity_id)
            assert activity is not None
            linked_series[remote_id] = activity.series_id
    assert len(series) == 2
    assert set(links) == {sent_id, "theirs"}
    assert linked_series[sent_id] == crm_series.id
    assert linked_series["theirs"] != crm_series.id
    assert len(world.calendar.events) == 2


@pytest.mark.parametrize("part_size", [1, 2, ONE_PART])
async def test_a_reconnect_finds_the_series_of_every_part(world: World, part_size: int) -> None:
    start = at(0).replace(minute=0)
    for n in range(3):
        world.calendar.put(f"plain{n}", CalendarEvent(
            summary=f"Weekly {n}", start=start + dt.timedelta(hours=n),
            end=start + dt.timedelta(hours=n, minutes=30), timezone="UTC",
            recurrence=Recurrence("FREQ=WEEKLY;COUNT=4"),
        ))  # fmt: skip
        world.calendar.put(f"single{n}", event(f"Single {n}", start=n + 5))
    assert (await world.sync()).created == 6
    async with world.db.read() as session:
        before = {s.id for s in await session.scalars(select(ActivitySeries))}
    await world.connect()
    parts_of(world).part_size = part_size
    report = await world.sync()
    assert report.created == 0
    async with world.db.read() as session:
        assert {s.id for s in await session.scalars(select(ActivitySeries))} == before
    assert await live_count(world) == 3 * 4 + 3
    assert await world.links() == 6
    assert len(world.calendar.events) == 6
