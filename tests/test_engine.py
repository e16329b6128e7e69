"""The sync engine's decisions, end to end against an in-memory calendar, on both databases."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest
from sqlalchemy import select

from crmcal import metrics
from crmcal.crm import activities, contacts
from crmcal.crm.schemas import DealUpdate
from crmcal.crm.tables import Deal, User, utcnow
from crmcal.db import Database
from crmcal.model import Attendee, Recurrence
from crmcal.providers.base import AuthenticationFailed, ProviderError, Unreachable
from crmcal.sync import engine as engine_module
from crmcal.sync import runner
from crmcal.sync.engine import SyncFailed, SyncRefused
from crmcal.sync.states import ConnectionState, FailureKind
from crmcal.sync.tables import Connection, SyncConflict
from tests.engine_world import World, at, event
from tests.memory_provider import MemoryCalendar, MemoryProvider


async def test_activity_goes_to_the_calendar_with_its_crm_id(world: World) -> None:
    activity_id = await world.add_activity("Demo", location="Room 4", reminder_minutes=15)
    report = await world.sync()
    assert report.created == 1
    _, sent = world.only_event()
    activity = await world.activity(activity_id)
    assert sent.crm_id == activity.uid
    assert (sent.summary, sent.location, sent.reminder_minutes) == ("Demo", "Room 4", 15)
    assert sent.start == at(0)
    assert (await world.sync()).counts() == dict.fromkeys(
        ("created", "updated", "deleted", "conflicts", "skipped"), 0
    )


async def test_crm_edits_and_trash_reach_the_calendar(world: World) -> None:
    activity_id = await world.add_activity("Demo")
    await world.sync()
    await world.edit_activity(activity_id, subject="Demo v2", busy=False)
    assert (await world.sync()).updated == 1
    _, sent = world.only_event()
    assert (sent.summary, sent.busy) == ("Demo v2", False)
    await world.trash_activity(activity_id)
    assert (await world.sync()).deleted == 1
    assert world.events() == {}
    assert await world.links() == 0


async def test_calendar_events_come_in_and_keep_crm_only_fields(world: World) -> None:
    world.calendar.put("e1", event("Lunch with Bob", location="Cafe"))
    world.calendar.put("e2", event(None, start=3))
    report = await world.sync()
    assert report.created == 2
    lunch, untitled = await world.live_activities()
    assert (lunch.subject, lunch.type, lunch.location) == ("Lunch with Bob", "meeting", "Cafe")
    assert untitled.subject == "(no title)"
    await world.edit_activity(lunch.id, done=True)
    await world.sync()
    world.calendar.put("e1", event("Lunch with Bob and Ann", location="Cafe"))
    assert (await world.sync()).updated == 1
    changed = await world.activity(lunch.id)
    assert changed.subject == "Lunch with Bob and Ann"
    assert changed.done is True  # CRM-only field kept
    world.calendar.remove("e1")
    assert (await world.sync()).deleted == 1
    assert (await world.activity(lunch.id)).deleted_at is not None


async def test_cancelled_event_sends_its_activity_to_the_trash(world: World) -> None:
    world.calendar.put("e1", event("Call"))
    await world.sync()
    world.calendar.put("e1", event("Call", cancelled=True))
    await world.sync()
    (activity,) = await world.all_activities()
    assert activity.deleted_at is not None


async def test_calendar_edit_brings_back_an_activity_deleted_only_in_the_crm(
    world: World,
) -> None:
    world.calendar.put("e1", event("Call"))
    await world.sync()
    (activity,) = await world.live_activities()
    await world.trash_activity(activity.id)
    world.calendar.put("e1", event("Call, moved to 3pm", start=2))
    await world.sync()
    restored = await world.activity(activity.id)
    assert restored.deleted_at is None
    assert restored.subject == "Call, moved to 3pm"
    assert len(world.events()) == 1


async def test_crm_edit_recreates_an_event_deleted_in_the_calendar(world: World) -> None:
    activity_id = await world.add_activity("Demo")
    await world.sync()
    event_id, _ = world.only_event()
    world.calendar.remove(event_id)
    await world.edit_activity(activity_id, subject="Demo, new agenda")
    await world.sync()
    _, sent = world.only_event()
    assert sent.summary == "Demo, new agenda"
    assert (await world.activity(activity_id)).deleted_at is None


@pytest.mark.parametrize(
    ("policy", "crm_later", "winner"),
    [
        ("crm", False, "Edited in CRM"),
        ("calendar", True, "Edited in calendar"),
        ("latest", True, "Edited in CRM"),
        ("latest", False, "Edited in calendar"),
    ],
)
async def test_conflicts_follow_the_policy_and_are_recorded(
    world: World, policy: str, crm_later: bool, winner: str
) -> None:
    await world.set_options(conflict_policy=policy)
    activity_id = await world.add_activity("Original")
    await world.sync()
    event_id, sent = world.only_event()
    now = dt.datetime.now(dt.UTC)
    calendar_time = now - dt.timedelta(hours=1) if crm_later else now + dt.timedelta(hours=1)
    world.calendar.put(
        event_id,
        dataclasses.replace(sent, summary="Edited in calendar", last_modified=calendar_time),
    )
    await world.edit_activity(activity_id, subject="Edited in CRM")
    report = await world.sync()
    assert report.conflicts == 1
    assert (await world.activity(activity_id)).subject == winner
    assert world.only_event()[1].summary == winner
    async with world.db.read() as session:
        (conflict,) = await session.scalars(select(SyncConflict))
    assert conflict.policy == policy
    assert conflict.winner == ("crm" if winner == "Edited in CRM" else "calendar")
    assert conflict.crm_version is not None
    assert conflict.calendar_version is not None
    assert conflict.crm_version["subject"] == "Edited in CRM"
    assert conflict.calendar_version["summary"] == "Edited in calendar"
    assert (await world.sync()).conflicts == 0


async def test_same_edit_on_both_sides_is_no_conflict(world: World) -> None:
    activity_id = await world.add_activity("Original")
    await world.sync()
    event_id, sent = world.only_event()
    world.calendar.put(event_id, dataclasses.replace(sent, summary="Same"))
    await world.edit_activity(activity_id, subject="Same")
    assert (await world.sync()).conflicts == 0


async def test_crm_to_calendar_never_writes_the_crm(db_url: str) -> None:
    db = Database(db_url)
    try:
        world = await World(db, MemoryCalendar()).setup(sync_type="crm_to_calendar")
        activity_id = await world.add_activity("Demo")
        world.calendar.put("foreign", event("Private dentist"))
        await world.sync()
        assert [a.subject for a in await world.all_activities()] == ["Demo"]
        crm_event_id = next(i for i, e in world.events().items() if e.crm_id)
        world.calendar.put(crm_event_id, dataclasses.replace(
            world.events()[crm_event_id], summary="Changed in calendar"))  # fmt: skip
        world.calendar.remove("foreign")
        await world.sync()
        assert (await world.activity(activity_id)).subject == "Demo"
        world.calendar.remove(crm_event_id)
        await world.sync()
        assert (await world.activity(activity_id)).deleted_at is None
    finally:
        await db.dispose()


async def test_calendar_to_crm_never_writes_the_calendar(db_url: str) -> None:
    db = Database(db_url)
    try:
        world = await World(db, MemoryCalendar()).setup(sync_type="calendar_to_crm")
        world.calendar.put("e1", event("Imported"))
        activity_id = await world.add_activity("CRM only")
        await world.sync()
        assert list(world.events()) == ["e1"]
        imported = next(a for a in await world.live_activities() if a.subject == "Imported")
        await world.edit_activity(imported.id, subject="Renamed in CRM")
        await world.trash_activity(activity_id)
        await world.sync()
        assert world.events()["e1"].summary == "Imported"
        world.calendar.put("e1", event("Renamed in calendar"))
        await world.sync()
        assert (await world.activity(imported.id)).subject == "Renamed in calendar"
    finally:
        await db.dispose()


async def test_type_filter_and_incoming_type(world: World) -> None:
    await world.set_options(outgoing_activity_types=["call"], incoming_activity_type="lunch")
    call = await world.add_activity("Call", type="call")
    await world.add_activity("Task", type="task")
    world.calendar.put("e1", event("From calendar", start=5))
    await world.sync()
    summaries = sorted(e.summary or "" for e in world.events().values())
    assert summaries == ["Call", "From calendar"]
    imported = next(a for a in await world.live_activities() if a.subject == "From calendar")
    assert imported.type == "lunch"
    # Unchecking a type removes the events crmcal made for it, not calendar-made ones.
    await world.set_options(outgoing_activity_types=["task"])
    await world.sync()
    assert sorted(e.summary or "" for e in world.events().values()) == [
        "From calendar",
        "Task",
    ]
    assert (await world.activity(call)).deleted_at is None


async def test_only_future_items_on_first_connect_unless_backfill(db_url: str) -> None:
    db = Database(db_url)
    try:
        calendar = MemoryCalendar()
        past = dataclasses.replace(event("Past"), start=at(-24 * 5), end=at(-24 * 5 + 1))
        calendar.put("past", past)
        calendar.put("future", event("Future"))
        world = await World(db, calendar).setup(connected_at=dt.datetime.now(dt.UTC))
        await world.add_activity("Old activity", start=-24 * 4)
        await world.sync()
        assert [a.subject for a in await world.live_activities()] == ["Old activity", "Future"]
        assert sorted(e.summary or "" for e in world.events().values()) == ["Future", "Past"]
        await world.set_options(backfill_days=7)
        await world.sync()
        subjects = sorted(a.subject for a in await world.live_activities())
        assert subjects == ["Future", "Old activity", "Past"]
        assert len(world.events()) == 3
    finally:
        await db.dispose()


async def test_stop_and_reconnect_resume_and_reconcile_both_sides(world: World) -> None:
    crm_made = await world.add_activity("CRM made")
    world.calendar.put("e1", event("Calendar made", start=2))
    await world.sync()
    async with world.db.write() as session:
        conn = await session.get(Connection, world.connection_id)
        assert conn is not None
        conn.state = "stopped"
    # During the pause: edits on both sides.
    await world.edit_activity(crm_made, subject="CRM made, edited in pause")
    world.calendar.put("e1", event("Calendar made, edited in pause", start=2))
    world.calendar.put("e2", event("New in pause", start=4))
    async with world.db.write() as session:
        conn = await session.get(Connection, world.connection_id)
        assert conn is not None
        conn.state = "active"
    await world.sync()
    subjects = sorted(a.subject for a in await world.live_activities())
    assert subjects == ["CRM made, edited in pause", "Calendar made, edited in pause",
                        "New in pause"]  # fmt: skip
    assert sorted(e.summary or "" for e in world.events().values()) == subjects
    assert await world.links() == 3


async def test_deleting_and_recreating_the_connection_relinks_without_copies(
    world: World,
) -> None:
    await world.add_activity("CRM made")
    world.calendar.put("e1", event("Calendar made", start=2))
    await world.sync()
    async with world.db.write() as session:
        conn = await session.get(Connection, world.connection_id)
        await session.delete(conn)
    await world.connect()
    world.provider.calls = 0
    await world.sync()
    assert len(await world.all_activities()) == 2
    assert len(world.events()) == 2
    assert await world.links() == 2


async def test_moved_out_and_back_restores_the_same_activity(world: World) -> None:
    world.calendar.put("e1", event("Meeting"))
    await world.sync()
    (activity,) = await world.live_activities()
    moved = world.calendar.events["e1"][1]
    world.calendar.remove("e1")  # moved to another calendar
    await world.sync()
    assert (await world.activity(activity.id)).deleted_at is not None
    world.calendar.put("e1-back", moved)  # moved back: a new href, the same UID
    await world.sync()
    assert (await world.activity(activity.id)).deleted_at is None
    assert len(await world.all_activities()) == 1


async def test_expired_cursor_full_resync_makes_no_copies(world: World) -> None:
    await world.add_activity("A")
    world.calendar.put("e1", event("B", start=2))
    await world.sync()
    world.calendar.expire_cursors()
    report = await world.sync()
    assert report.counts()["created"] == 0
    assert len(await world.all_activities()) == 2
    assert len(world.events()) == 2


async def test_a_first_import_asks_for_contents_and_later_listings_do_not(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[bool] = []
    listing = world.provider.list_changes

    async def spy(calendar_id: str, cursor: str | None, *, with_contents: bool = False):
        asked.append(with_contents)
        return await listing(calendar_id, cursor, with_contents=with_contents)

    monkeypatch.setattr(world.provider, "list_changes", spy)
    fetched: list[str] = []
    fetch = world.provider.fetch

    async def fetch_spy(calendar_id: str, ids: list[str]):
        fetched.extend(ids)
        return await fetch(calendar_id, ids)

    monkeypatch.setattr(world.provider, "fetch", fetch_spy)
    for number in range(5):
        world.calendar.put(f"e{number}", event(f"Call {number}", start=number))
    assert (await world.sync()).created == 5
    assert (asked, fetched) == ([True], [])  # the listing brought every event
    world.calendar.put("e1", event("Call 1 moved", start=9))
    world.calendar.expire_cursors()
    assert (await world.sync()).updated == 1
    assert (asked, fetched) == ([True, False], ["e1"])  # linked: versions, then one fetch


async def test_an_empty_calendar_stops_the_sync_instead_of_deleting(world: World) -> None:
    for n in range(5):
        world.calendar.put(f"e{n}", event(f"Event {n}", start=n))
    await world.sync()
    world.calendar.events.clear()
    world.calendar.expire_cursors()
    with pytest.raises(SyncRefused, match="looks empty"):
        await world.sync()
    assert len(await world.live_activities()) == 5
    await world.sync(force=True)
    assert await world.live_activities() == []


async def test_recurring_events_are_skipped_and_counted(world: World) -> None:
    world.calendar.put("series", event("Weekly", recurrence=Recurrence("FREQ=WEEKLY")))
    report = await world.sync()
    assert report.skipped == 1
    assert await world.all_activities() == []
    assert report.problems == [{"item": "series", "reason": "recurring series are not synced yet"}]


async def test_a_crm_series_is_skipped_as_one_item_and_never_flattened(world: World) -> None:
    first = await world.add_activity("Weekly", recurrence="FREQ=WEEKLY;COUNT=5")
    series_id = (await world.activity(first)).series_id
    assert len(await world.live_activities()) == 5
    report = await world.sync()
    assert world.events() == {}
    assert (report.created, report.skipped) == (0, 1)
    assert report.problems == [
        {"item": f"series {series_id}", "reason": "recurring series are not synced yet"}
    ]
    await world.edit_activity(first, subject="Weekly sync", scope="series")
    report = await world.sync()
    assert world.events() == {}
    assert report.skipped == 1


async def test_attendees_become_participants_without_the_owner(world: World) -> None:
    world.calendar.put(
        "e1",
        event(
            "Review",
            attendees=(
                Attendee("Ann@Acme.test", "Ann"),
                Attendee("owner@crm.test", "Me"),
                Attendee("room1@acme.test", "Room 1", resource=True),
            ),
        ),
    )
    await world.sync()
    (activity,) = await world.live_activities()
    assert [(p.email, p.name) for p in activity.participants] == [("ann@acme.test", "Ann")]


async def test_revoked_permission_puts_the_connection_in_error(world: World) -> None:
    async with world.db.write() as session:
        user = await session.get(User, world.user_id)
        assert user is not None
        user.permissions = ["calendar_sync", "activities.view"]
    with pytest.raises(SyncFailed, match=r"activities\.create"):
        await world.sync_via_runner()
    conn = await world.connection()
    assert conn.state == "error"
    assert "activities.create" in (conn.last_error or "")


async def test_an_event_the_crm_cannot_store_is_reported_and_the_rest_imported(
    world: World,
) -> None:
    far = dt.datetime(2250, 1, 1, 9, tzinfo=dt.UTC)
    world.calendar.put("fine", event("Fine"))
    world.calendar.put("far", dataclasses.replace(event("Far"), start=far, end=far))
    world.calendar.put("also-fine", event("Also fine", start=2))
    report = await world.sync()
    assert report.created == 2
    assert [p["item"] for p in report.problems] == ["far"]
    assert "year" in report.problems[0]["reason"]
    assert sorted(a.subject for a in await world.live_activities()) == ["Also fine", "Fine"]


async def test_a_short_full_listing_trashes_nothing_that_can_still_be_read(world: World) -> None:
    for n in range(4):
        world.calendar.put(f"e{n}", event(f"Event {n}", start=n))
    await world.sync()
    world.calendar.expire_cursors()
    world.provider.hidden = {"e1", "e2"}  # a proxy or server that drops items
    world.calendar.remove("e3")  # really deleted
    report = await world.sync()
    assert report.deleted == 1
    live = sorted(a.subject for a in await world.live_activities())
    assert live == ["Event 0", "Event 1", "Event 2"]


async def test_a_truncated_listing_with_an_edit_behind_it_still_applies_the_edit(
    world: World,
) -> None:
    for n in range(3):
        world.calendar.put(f"e{n}", event(f"Event {n}", start=n))
    await world.sync()
    world.calendar.put("e2", event("Event 2, moved", start=5))
    world.calendar.expire_cursors()
    world.provider.listing_limit = 1  # a truncated page
    await world.sync()
    live = sorted(a.subject for a in await world.live_activities())
    assert live == ["Event 0", "Event 1", "Event 2, moved"]


async def test_trashing_an_unusual_share_of_the_activities_needs_force(world: World) -> None:
    for n in range(20):
        world.calendar.put(f"e{n}", event(f"Event {n}", start=n))
    await world.sync()
    for n in range(11):
        world.calendar.remove(f"e{n}")
    with pytest.raises(SyncRefused, match="11 of the 20 synced events look deleted"):
        await world.sync()
    assert len(await world.live_activities()) == 20
    assert (await world.sync(force=True)).deleted == 11
    assert len(await world.live_activities()) == 9


class EditingDuringUpdate(MemoryProvider):
    """A calendar whose first update lets a CRM user edit an activity meanwhile."""

    def __init__(self, calendar: MemoryCalendar, meanwhile: Any) -> None:
        super().__init__(calendar)
        self.meanwhile = meanwhile

    async def update(
        self, calendar_id: str, event_id: str, etag: str, event: Any, **kw: Any
    ) -> Any:
        if self.meanwhile is not None:
            meanwhile, self.meanwhile = self.meanwhile, None
            await meanwhile()
        return await super().update(calendar_id, event_id, etag, event, **kw)


async def test_a_crm_edit_made_during_a_sync_is_not_overwritten(world: World) -> None:
    await world.set_options(conflict_policy="crm")
    world.calendar.put("ea", event("A", start=1))
    world.calendar.put("eb", event("B", start=2))
    await world.sync()
    a, b = await world.live_activities()
    world.calendar.put("ea", event("A edited in the calendar", start=1))
    world.calendar.put("eb", event("B edited in the calendar", start=2))
    await world.edit_activity(a.id, subject="A edited in the CRM")

    async def edit_b() -> None:  # while the sync writes A, someone edits B in the CRM
        await world.edit_activity(b.id, subject="B edited in the CRM during the sync")

    world.provider = EditingDuringUpdate(world.calendar, edit_b)
    await world.sync()
    assert (await world.activity(b.id)).subject == "B edited in the CRM during the sync"
    # The next sync sees both edits of B and the policy decides (here: the CRM's).
    report = await world.sync()
    assert report.conflicts == 1
    assert world.events()["eb"].summary == "B edited in the CRM during the sync"
    assert (await world.activity(b.id)).subject == "B edited in the CRM during the sync"


async def test_a_conflict_whose_pull_is_left_for_the_next_run_is_recorded_once(
    world: World,
) -> None:
    """Both sides edit B and the calendar wins, but the CRM edits B again while the run
    writes A: the pull is left for the next run, which decides B again with the same
    calendar version. That is one conflict, recorded once (with the CRM's version the
    decision was applied against), and counted once in the connection's totals."""
    await world.set_options(conflict_policy="calendar")
    world.calendar.put("ea", event("A", start=1))
    world.calendar.put("eb", event("B", start=2))
    await world.sync()
    a, b = await world.live_activities()
    # A is settled first (listed first) and written to the calendar: B meanwhile.
    world.calendar.put("ea", event("A", start=1, location="Room 1"))
    world.calendar.put("eb", event("B edited in the calendar", start=2))
    await world.edit_activity(b.id, subject="B edited in the CRM")
    await world.edit_activity(a.id, subject="A edited in the CRM")

    async def edit_b() -> None:  # while the sync writes A, someone edits B in the CRM
        await world.edit_activity(b.id, location="Room 2")

    world.provider = EditingDuringUpdate(world.calendar, edit_b)
    first = await world.sync()
    assert (await world.activity(b.id)).subject == "B edited in the CRM"  # left for later
    second = await world.sync()
    assert (await world.activity(b.id)).subject == "B edited in the calendar"
    assert (await world.activity(b.id)).location == "Room 2"
    async with world.db.read() as session:
        conflicts = list(await session.scalars(select(SyncConflict)))
    assert len(conflicts) == 1, [(c.activity_id, c.crm_version) for c in conflicts]
    (conflict,) = conflicts
    assert conflict.activity_id == b.id
    assert conflict.winner == "calendar"
    assert conflict.crm_version is not None
    assert conflict.crm_version["location"] == "Room 2"  # as the pull was applied
    assert first.conflicts + second.conflicts == 1
    assert (await world.connection()).counts["conflicts"] == 1
    assert (await world.sync()).conflicts == 0


async def test_a_conflict_decided_again_within_a_run_is_recorded_once(world: World) -> None:
    """The CRM wins a conflict, but the calendar changes the event again before the
    write lands (412): the run decides again with the new version. One item, one run:
    one record, saying how it was settled in the end."""
    await world.set_options(conflict_policy="crm")
    world.calendar.put("ea", event("A", start=1))
    await world.sync()
    (a,) = await world.live_activities()
    world.calendar.put("ea", event("A edited in the calendar", start=1))
    await world.edit_activity(a.id, subject="A edited in the CRM")

    async def edit_again() -> None:  # the calendar's user edits A once more meanwhile
        world.calendar.put("ea", event("A edited in the calendar again", start=1))

    world.provider = EditingDuringUpdate(world.calendar, edit_again)
    report = await world.sync()
    assert world.events()["ea"].summary == "A edited in the CRM"
    async with world.db.read() as session:
        conflicts = list(await session.scalars(select(SyncConflict)))
    assert len(conflicts) == 1, [c.calendar_version for c in conflicts]
    assert conflicts[0].calendar_version is not None
    assert conflicts[0].calendar_version["summary"] == "A edited in the calendar again"
    assert report.conflicts == 1


class StoppingDuringUpdate(MemoryProvider):
    """A calendar whose first update stops (or deletes) the connection meanwhile."""

    def __init__(self, world: World, delete: bool) -> None:
        super().__init__(world.calendar)
        self.world, self.deletes, self.done = world, delete, False

    async def update(
        self, calendar_id: str, event_id: str, etag: str, event: Any, **kw: Any
    ) -> Any:
        if not self.done:
            self.done = True
            async with self.world.db.write() as session:
                conn = await session.get(Connection, self.world.connection_id)
                assert conn is not None
                if self.deletes:
                    await session.delete(conn)
                else:
                    conn.state = "stopped"
        return await super().update(calendar_id, event_id, etag, event, **kw)


@pytest.mark.parametrize("delete", [False, True], ids=["stop", "delete"])
async def test_stopping_or_deleting_the_connection_ends_a_running_sync_cleanly(
    world: World, monkeypatch: pytest.MonkeyPatch, delete: bool
) -> None:
    ids = [await world.add_activity(f"Meeting {n}", start=n) for n in range(3)]
    await world.sync_via_runner()
    for activity_id in ids:
        await world.edit_activity(activity_id, subject=f"Moved {activity_id}")
    monkeypatch.setattr(engine_module, "STOP_CHECK_SECONDS", 0.0)
    world.provider = StoppingDuringUpdate(world, delete)
    report = await world.sync_via_runner()  # no error, no foreign-key failure
    assert report.updated <= 1
    moved = [e.summary for e in world.events().values() if (e.summary or "").startswith("Moved")]
    assert len(moved) <= 1  # nothing written after the stop but the write in flight
    async with world.db.read() as session:
        conn = await session.get(Connection, world.connection_id)
    if delete:
        assert conn is None
    else:
        assert conn is not None
        assert (conn.state, conn.last_error) == ("stopped", None)


class Refusing(MemoryProvider):
    def __init__(self, calendar: MemoryCalendar, error: Exception) -> None:
        super().__init__(calendar)
        self.error = error

    async def list_changes(self, *args: Any, **kwargs: Any) -> Any:
        raise self.error


@pytest.mark.parametrize(
    ("error", "waits"),
    [(AuthenticationFailed("Google refused the access: reconnect required"), True),
     (Unreachable("connection refused"), False)],
)  # fmt: skip
async def test_credential_failures_wait_for_the_user_others_back_off(
    world: World, error: Exception, waits: bool
) -> None:
    world.provider = Refusing(world.calendar, error)
    with pytest.raises(SyncFailed) as failed:
        await world.sync_via_runner()
    conn = await world.connection()
    assert conn.state == ConnectionState.ERROR
    if waits:
        assert failed.value.kind == FailureKind.CREDENTIALS
        assert "reconnect required" in (conn.last_error or "")
        assert conn.next_sync_at is None  # never due again by itself
    else:
        assert failed.value.kind == FailureKind.SERVER
        assert conn.next_sync_at is not None
    async with world.db.read() as session:
        later = utcnow() + dt.timedelta(days=1)
        due = list(await session.scalars(select(Connection.id).where(runner.due(later))))
    assert due == ([] if waits else [world.connection_id])


async def test_a_revoked_permission_waits_for_the_user(world: World) -> None:
    async with world.db.write() as session:
        user = await session.get(User, world.user_id)
        assert user is not None
        user.permissions = ["calendar_sync", "activities.view"]
    with pytest.raises(SyncFailed) as failed:
        await world.sync_via_runner()
    assert failed.value.kind == FailureKind.PERMISSION
    assert (await world.connection()).next_sync_at is None


async def test_a_bug_in_a_sync_is_raised_counted_as_unexpected_and_backs_off(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """A sync stopped by an exception no failure kind names is a bug: it goes on up with
    its traceback logged, the connection backs off, and the metrics count it as
    ``unexpected``, not as a failing server."""
    world.provider = Refusing(world.calendar, KeyError("uid"))
    unexpected = metrics.SYNC_ERRORS.labels("memory", "unexpected")
    server = metrics.SYNC_ERRORS.labels("memory", "server")
    before = unexpected._value.get(), server._value.get()
    with pytest.raises(KeyError):
        await world.sync_via_runner()
    assert (unexpected._value.get(), server._value.get()) == (before[0] + 1, before[1])
    conn = await world.connection()
    assert conn.state == ConnectionState.ERROR
    assert conn.last_error == "unexpected error: KeyError: 'uid'"
    assert conn.next_sync_at is not None  # tried again by itself, after the back-off
    (logged,) = [r for r in caplog.records if r.getMessage().startswith("sync of connection")]
    assert logged.exc_info is not None


REFUSAL = "Google does not allow updating the event (403 forbiddenForNonOrganizer)"


class RefusingOne(MemoryProvider):
    """A calendar that refuses writes to one event, as a server does for a meeting of
    another organizer."""

    def __init__(self, calendar: MemoryCalendar, refused: str) -> None:
        super().__init__(calendar)
        self.refused = refused

    async def update(
        self, calendar_id: str, event_id: str, etag: str, event: Any, **kw: Any
    ) -> Any:
        if event_id == self.refused:
            raise ProviderError(
                "Google does not allow updating the event (403 forbiddenForNonOrganizer)"
            )
        return await super().update(calendar_id, event_id, etag, event, **kw)


async def test_one_refused_write_skips_that_item_only_and_clears_when_it_syncs(
    world: World,
) -> None:
    first = await world.add_activity("First", start=1)
    second = await world.add_activity("Second", start=2)
    await world.sync()
    refused = next(i for i, e in world.events().items() if e.summary == "First")
    await world.edit_activity(first, subject="First, moved")
    await world.edit_activity(second, subject="Second, moved")
    world.provider = RefusingOne(world.calendar, refused)
    report = await world.sync()
    assert report.updated == 1
    assert report.skipped == 1
    assert report.problems == [{"item": refused, "reason": REFUSAL}]
    assert (await world.connection()).problems == report.problems
    assert sorted(e.summary or "" for e in world.events().values()) == ["First", "Second, moved"]
    world.provider = MemoryProvider(world.calendar)  # the organizer let us
    await world.edit_activity(first, subject="First, moved again")
    report = await world.sync()
    assert report.problems == []
    assert (await world.connection()).problems == []
    assert sorted(e.summary or "" for e in world.events().values()) == [
        "First, moved again", "Second, moved"
    ]  # fmt: skip


async def test_changes_to_different_fields_are_both_kept_without_a_conflict(
    world: World,
) -> None:
    activity_id = await world.add_activity("Demo", location="Room 4")
    await world.sync()
    event_id, sent = world.only_event()
    world.calendar.put(event_id, dataclasses.replace(sent, start=at(3), end=at(4)))
    await world.edit_activity(activity_id, subject="Demo, new agenda")
    report = await world.sync()
    assert report.conflicts == 0
    activity = await world.activity(activity_id)
    _, now = world.only_event()
    assert (activity.subject, activity.start_at) == ("Demo, new agenda", at(3))
    assert (now.summary, now.start, now.location) == ("Demo, new agenda", at(3), "Room 4")
    assert (await world.sync()).counts()["updated"] == 0


async def test_a_field_changed_on_both_sides_goes_to_the_policy_the_others_merge(
    world: World,
) -> None:
    await world.set_options(conflict_policy="calendar")
    activity_id = await world.add_activity("Demo", location="Room 4")
    await world.sync()
    event_id, sent = world.only_event()
    world.calendar.put(event_id, dataclasses.replace(sent, summary="Calendar title",
                                                     location="Room 5"))  # fmt: skip
    await world.edit_activity(activity_id, subject="CRM title", busy=False)
    report = await world.sync()
    assert report.conflicts == 1
    activity = await world.activity(activity_id)
    _, now = world.only_event()
    for side in ((activity.subject, activity.location, activity.busy),
                 (now.summary, now.location, now.busy)):  # fmt: skip
        assert side == ("Calendar title", "Room 5", False)
    async with world.db.read() as session:
        (conflict,) = await session.scalars(select(SyncConflict))
    assert conflict.winner == "calendar"
    assert conflict.crm_version is not None
    assert conflict.calendar_version is not None
    assert conflict.result is not None
    assert (conflict.crm_version["summary"], conflict.crm_version["busy"]) == ("CRM title", False)
    assert conflict.crm_version["location"] == "Room 4"
    assert conflict.calendar_version["summary"] == "Calendar title"
    assert conflict.calendar_version["location"] == "Room 5"
    assert conflict.calendar_version["last_modified"] is not None
    assert conflict.result["conflicting"] == ["summary"]
    assert (conflict.result["summary"], conflict.result["busy"]) == ("Calendar title", False)


async def test_a_renamed_deal_never_brings_a_deleted_event_back(world: World) -> None:
    await world.set_options(include_deal_and_contact_info=True)
    async with world.db.write() as session:
        deal = Deal(title="Renewal 2027")
        session.add(deal)
        await session.flush()
        deal_id = deal.id
    activity_id = await world.add_activity("Demo", deal_id=deal_id)
    await world.sync()
    event_id, sent = world.only_event()
    assert "Renewal 2027" in (sent.description or "")
    world.calendar.remove(event_id)  # the person deletes the meeting
    async with world.db.write() as session:  # and someone renames the deal
        found = await session.get(Deal, deal_id)
        await contacts.update(session, found, DealUpdate(title="Renewal 2028"))
    await world.sync()
    assert world.events() == {}
    assert (await world.activity(activity_id)).deleted_at is not None


async def test_a_persons_edit_still_beats_a_deletion(world: World) -> None:
    activity_id = await world.add_activity("Demo")
    await world.sync()
    event_id, _ = world.only_event()
    world.calendar.remove(event_id)
    await world.edit_activity(activity_id, note="Bring the contract")
    await world.sync()
    _, again = world.only_event()
    assert again.description == "Bring the contract"


async def test_connecting_again_to_an_unchanged_calendar_records_no_conflicts(
    world: World,
) -> None:
    await world.add_activity("CRM made", location="Room 4", reminder_minutes=10)
    world.calendar.put(
        "e1",
        event(
            "Review",
            start=2,
            attendees=(
                Attendee("owner@crm.test", "Me", "accepted"),
                Attendee("Ann@Acme.test", "Ann"),
                Attendee("room1@acme.test", "Room 1", resource=True),
            ),
            organizer="ann@acme.test",
        ),
    )
    world.calendar.put("e2", event("  Padded title  ", start=4, description="Notes"))
    world.calendar.put("e3", event(None, start=6))
    await world.sync()
    async with world.db.write() as session:
        conn = await session.get(Connection, world.connection_id)
        await session.delete(conn)
    await world.connect()
    report = await world.sync()
    assert report.conflicts == 0
    assert (report.created, report.updated) == (0, 0)
    assert len(await world.all_activities()) == 4
    assert (await world.sync()).counts()["updated"] == 0


async def test_restoring_an_activity_whose_event_still_exists_relinks_it(world: World) -> None:
    world.calendar.put("e1", event("Board meeting"))
    await world.sync()
    (activity,) = await world.live_activities()
    world.calendar.put("e1", event("Board meeting", cancelled=True))
    await world.sync()
    assert (await world.activity(activity.id)).deleted_at is not None
    async with world.db.write() as session:  # the user takes it back out of the trash
        await activities.restore_activity(session, await world.user(session), activity.id)
    await world.sync()
    assert list(world.events()) == ["e1"]  # that event again, no second one
    assert world.events()["e1"].cancelled is False
    world.calendar.expire_cursors()
    await world.sync()
    assert [a.id for a in await world.all_activities()] == [activity.id]
    assert list(world.events()) == ["e1"]
