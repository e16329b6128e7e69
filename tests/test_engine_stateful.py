"""Random edits on both sides, syncs and crashes: afterwards both sides agree, nothing is
duplicated, and no edit is lost that the conflict policy did not decide to drop.

Besides plain edits the calendar side has meetings the user was invited to (another
organizer) and attendees who come and go, full listings may come back short (items
left out, which must not be taken for deletions), and a CRM edit may land while a
sync is running (which must not be overwritten).

Every write uses a fresh subject, so an item can be followed by its values and a
copy shows up as a value seen twice. The model keeps, per item, what each side
did since the last quiet sync; after the next one the item must show a value
the rules allow: a one-sided edit wins, a two-sided edit is the policy's pick of
either, an edit beats a deletion, two deletions delete.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from dateutil.rrule import rrulestr
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import invariant, precondition, rule
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from crmcal.crm.tables import Activity as ActivityRow
from crmcal.crm.tables import ActivitySeries as SeriesRow
from crmcal.db import Database
from crmcal.model import Attendee, CalendarEvent, Recurrence
from crmcal.providers.base import Capabilities, ProviderError, Update
from tests.engine_machine import (
    SERIES_START,
    SeriesWorldMachine,
    WorldMachine,
    daily_series,
    with_own_occurrence,
)
from tests.engine_world import World, event
from tests.memory_provider import Crash, MemoryProvider
from tests.series_model import DELETED, Occurrence, _expansion


class ChaosDatabase(Database):
    """A database whose n-th write transaction 'crashes' before it commits."""

    crash_at: int | None = None
    writes = 0

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        self.writes += 1
        async with super().write() as session:
            yield session
            if self.crash_at is not None and self.writes == self.crash_at:
                raise Crash(f"crash before write {self.writes} committed")


@dataclasses.dataclass
class Item:
    crm_value: str | None = None  # the subject on the CRM side, None if not there
    cal_value: str | None = None  # the summary on the calendar side
    crm_pending: Any = None  # a new value or DELETED since the last quiet sync
    cal_pending: Any = None
    gone: bool = False
    # A meeting someone else organizes: its calendar-owned fields are not edited in
    # the CRM (the API refuses), and crmcal never writes it back.
    invited: bool = False

    def allowed(self) -> set[Any]:
        crm, cal = self.crm_pending, self.cal_pending
        current = self.crm_value if self.crm_value is not None else self.cal_value
        if crm is None and cal is None:
            return {current}
        if cal is None:
            return {crm}
        if crm is None:
            return {cal}
        if crm is DELETED and cal is DELETED:
            return {DELETED}
        if crm is DELETED:
            return {cal}
        if cal is DELETED:
            return {crm}
        return {crm, cal}


class Meddling(MemoryProvider):
    """A calendar that runs ``meanwhile`` (a CRM edit) at its ``at``-th call."""

    meanwhile: Any = None
    at = 0

    def _call(self) -> None:
        super()._call()
        if self.meanwhile is not None and self.calls >= self.at:
            meanwhile, self.meanwhile = self.meanwhile, None
            meanwhile()


def _crash_once(machine: WorldMachine, crash: tuple[str, int] | None) -> None:
    """A sync that ``crash`` cuts at the calendar's or the database's n-th call; none
    without it."""
    if crash is None:
        return
    where, n = crash
    provider, db = machine.world.provider, machine.db
    assert isinstance(db, ChaosDatabase)
    if where == "provider":
        provider.calls, provider.crash_at = 0, n
    else:
        db.writes, db.crash_at = 0, n
    with contextlib.suppress(Crash):
        machine.run(machine.world.sync())
    provider.crash_at = db.crash_at = None


def _crashes(most: int) -> st.SearchStrategy[tuple[str, int] | None]:
    """No crash, or one at the calendar's or the database's n-th call (n up to ``most``)."""
    return st.one_of(
        st.none(),
        st.tuples(st.sampled_from(["provider", "database"]), st.integers(1, most)),
    )


def _sync_meddled(machine: WorldMachine, at: int, meanwhile: Callable[[], None]) -> None:
    """A sync during which ``meanwhile`` runs, at the calendar's ``at``-th call."""
    provider = machine.world.provider
    provider.calls, provider.at, provider.meanwhile = 0, at, meanwhile
    machine.run(machine.world.sync())
    provider.meanwhile = None


class SyncMachine(WorldMachine):
    db: ChaosDatabase

    def __init__(self) -> None:
        super().__init__(TEMPLATE["path"], ChaosDatabase)
        self.world.provider = Meddling(self.world.calendar)
        self.items: list[Item] = []

    def live(self, side: str) -> list[Item]:
        attr = "crm_value" if side == "crm" else "cal_value"
        pending = "crm_pending" if side == "crm" else "cal_pending"
        return [
            i
            for i in self.items
            if not i.gone
            and getattr(i, attr) is not None
            and getattr(i, pending) is not DELETED
            and not (side == "crm" and i.invited)
        ]

    # --- edits in the CRM ------------------------------------------------

    @rule(start=st.integers(0, 48))
    def crm_create(self, start: int) -> None:
        value = self.fresh()
        self.run(self.world.add_activity(value, start=start))
        self.items.append(Item(crm_value=value, crm_pending=value))

    @precondition(lambda self: self.live("crm"))
    @rule(data=st.data())
    def crm_edit(self, data: st.DataObject) -> None:
        item = data.draw(st.sampled_from(self.live("crm")))
        value = self.fresh()
        self.run(self.world.edit_activity(self._activity_id(item), subject=value))
        item.crm_value, item.crm_pending = value, value

    @precondition(lambda self: self.live("crm"))
    @rule(data=st.data())
    def crm_trash(self, data: st.DataObject) -> None:
        item = data.draw(st.sampled_from(self.live("crm")))
        self.run(self.world.trash_activity(self._activity_id(item)))
        item.crm_pending = DELETED

    # --- edits in the calendar -------------------------------------------

    @rule(start=st.integers(0, 48), invited=st.booleans())
    def cal_create(self, start: int, invited: bool) -> None:
        value = self.fresh()
        guests: dict[str, Any] = {}
        if invited:  # a meeting someone else organizes, with the user among its guests
            guests = {"organizer": "boss@elsewhere.test", "attendees": (
                Attendee("boss@elsewhere.test", "Boss", "accepted"),
                Attendee("owner@crm.test", "Owner", "needs_action"))}  # fmt: skip
        self.world.calendar.put(f"ev-{value}", event(value, start=start, **guests))
        self.items.append(Item(cal_value=value, cal_pending=value, invited=invited))

    @precondition(lambda self: self.live("cal"))
    @rule(data=st.data(), shout=st.booleans())
    def cal_attendee_change(self, data: st.DataObject, shout: bool) -> None:
        """A guest is invited in the calendar (a new one each time, so that it is always a
        change; some addresses in capitals): no new title."""
        item = data.draw(st.sampled_from(self.live("cal")))
        event_id, current = self._event(item)
        guest = f"guest{self.fresh()}@acme.test"
        attendees = (*current.attendees, Attendee(guest.upper() if shout else guest, None))
        self.world.calendar.put(event_id, dataclasses.replace(current, attendees=attendees))
        item.cal_pending = item.cal_value  # an edit (it beats a deletion), title unchanged

    @precondition(lambda self: self.live("cal"))
    @rule(data=st.data())
    def cal_edit(self, data: st.DataObject) -> None:
        item = data.draw(st.sampled_from(self.live("cal")))
        event_id, current = self._event(item)
        value = self.fresh()
        self.world.calendar.put(event_id, dataclasses.replace(current, summary=value))
        item.cal_value, item.cal_pending = value, value

    @precondition(lambda self: self.live("cal"))
    @rule(data=st.data())
    def cal_delete(self, data: st.DataObject) -> None:
        item = data.draw(st.sampled_from(self.live("cal")))
        event_id, _ = self._event(item)
        self.world.calendar.remove(event_id)
        item.cal_pending = DELETED

    # --- syncing ---------------------------------------------------------

    @rule(crash=_crashes(most=12))
    def sync(self, crash: tuple[str, int] | None) -> None:
        self._sync(crash)

    @precondition(lambda self: self.live("crm") and self.live("cal"))
    @rule(data=st.data(), hidden=st.integers(1, 3))
    def sync_with_a_short_listing(self, data: st.DataObject, hidden: int) -> None:
        """A full listing leaves out a few events that are still there: nothing is lost."""
        self._sync(None)  # what is left out below was synced before, and is unchanged
        ids = sorted(self.world.events())
        if not ids:
            return
        left_out = data.draw(st.lists(st.sampled_from(ids), min_size=1, max_size=hidden))
        self.world.calendar.expire_cursors()
        self.world.provider.hidden = set(left_out)
        try:
            self.run(self.world.sync(force=True))
        finally:
            self.world.provider.hidden = set()
        self._sync(None)

    @precondition(lambda self: self.live("crm"))
    @rule(data=st.data(), at=st.integers(1, 4))
    def crm_edit_during_a_sync(self, data: st.DataObject, at: int) -> None:
        """A CRM edit lands while a sync runs; it must win or meet the conflict rules."""
        item = data.draw(st.sampled_from(self.live("crm")))
        activity_id, value = self._activity_id(item), self.fresh()
        done: list[bool] = []

        def edit() -> None:
            # From another thread and database connection, as another request would;
            # an activity the running sync already sent to the trash is not edited.
            worker = threading.Thread(
                target=lambda: done.append(asyncio.run(self._edit_elsewhere(activity_id, value)))
            )
            worker.start()
            worker.join()

        _sync_meddled(self, at, edit)
        if done and done[0]:
            item.crm_value, item.crm_pending = value, value
        self._sync(None)

    async def _edit_elsewhere(self, activity_id: int, value: str) -> bool:
        db = Database(self.db.url)
        try:
            other = World(db, self.world.calendar)
            other.user_id = self.world.user_id
            if (await other.activity(activity_id)).deleted_at is not None:
                return False
            await other.edit_activity(activity_id, subject=value)
            return True
        finally:
            await db.dispose()

    def _sync(self, crash: tuple[str, int] | None) -> None:
        _crash_once(self, crash)
        self.run(self.world.sync())
        self._quiet_sync()
        self._check_and_settle()

    # --- checks ----------------------------------------------------------

    def _check_and_settle(self) -> None:
        activities = self.run(self.world.live_activities())
        subjects = [a.subject for a in activities]
        summaries = [e.summary for e in self.world.events().values()]
        assert sorted(subjects) == sorted(s or "" for s in summaries), "sides disagree"
        assert len(set(subjects)) == len(subjects), f"duplicates: {subjects}"
        present = set(subjects)
        for item in self.items:
            if item.gone:
                continue
            allowed = item.allowed()
            values = {v for v in (item.crm_value, item.cal_value) if v is not None}
            values |= {v for v in allowed if isinstance(v, str)}
            shown = values & present
            if DELETED in allowed and not (allowed - {DELETED}):
                assert not shown, f"deleted item still there: {shown}"
                item.gone = True
                continue
            assert len(shown) == 1, f"item {values} shows {shown}, allowed {allowed}"
            (value,) = shown
            assert value in allowed, f"{value} is not one of {allowed}: an edit was lost"
            item.crm_value = item.cal_value = value
            item.crm_pending = item.cal_pending = None

    @invariant()
    def calendar_ids_unique(self) -> None:
        ids = [e.crm_id for e in self.world.events().values() if e.crm_id]
        assert len(ids) == len(set(ids))

    def _activity_id(self, item: Item) -> int:
        for activity in self.run(self.world.live_activities()):
            if activity.subject == item.crm_value:
                return activity.id
        raise AssertionError(f"no activity {item.crm_value}")

    def _event(self, item: Item) -> tuple[str, Any]:
        for event_id, found in self.world.events().items():
            if found.summary == item.cal_value:
                return event_id, found
        raise AssertionError(f"no event {item.cal_value}")


TEMPLATE: dict[str, Path] = {}


@pytest.fixture(autouse=True)
def _template(sqlite_template: Path) -> None:
    TEMPLATE["path"] = sqlite_template


TestSyncMachine = SyncMachine.TestCase
# 15 runs of 25 steps reach every rule (and each crash point) as 30 did, and as many
# of the pairs of rules one after the other (91-103 of them, against 100-108 with 30,
# counted over two seeds), for half the time.
TestSyncMachine.settings = settings(
    max_examples=15,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


# --- series ------------------------------------------------------------------------------


class SeriesMemoryProvider(Meddling):
    """The in-memory calendar as a kind that syncs series (like CalDAV)."""

    capabilities = Capabilities(batch_creates=True, syncs_series=True)


class BatchingSeriesProvider(SeriesMemoryProvider):
    """The in-memory calendar as a kind that syncs series and takes updates and deletes
    in batches (like Google and Graph): each item answers on its own, and a crash cuts
    a batch where it happens."""

    capabilities = Capabilities(batch_creates=True, syncs_series=True, batch_changes=True)
    deleted_in_batches = 0

    async def update_many(self, calendar_id: str, items: Sequence[Update]) -> list[Any]:
        results: list[Any] = []
        for item in items:
            try:
                results.append(await self.update(calendar_id, item.event_id, item.etag,
                                                 item.event, changed=item.changed))  # fmt: skip
            except ProviderError as failure:
                results.append(failure)
        return results

    async def delete_many(
        self, calendar_id: str, items: Sequence[tuple[str, str | None]]
    ) -> list[ProviderError | None]:
        results: list[ProviderError | None] = []
        for event_id, etag in items:
            try:
                await self.delete(calendar_id, event_id, etag)
                self.deleted_in_batches += 1
                results.append(None)
            except ProviderError as failure:
                results.append(failure)
        return results


class SeriesMachine(SeriesWorldMachine):
    """Series operations on both sides of a calendar that syncs series: afterwards every
    occurrence shows the same subject on both sides (or is cancelled on both), the
    calendar holds each occurrence in exactly one series, and no edit is lost that the
    conflict policy did not decide to drop."""

    db: ChaosDatabase
    prefix = "s"

    def __init__(self) -> None:
        super().__init__(TEMPLATE["path"], ChaosDatabase)
        self.world.provider = SeriesMemoryProvider(self.world.calendar)

    def settled(self, side: str | None = None) -> list[Occurrence]:
        return [o for o in self.occurrences.values()
                if isinstance(o.value, str) and not o.gone and DELETED not in
                (o.crm_pending, o.cal_pending) and o.moved_by in (None, side)]  # fmt: skip

    # --- the CRM side ------------------------------------------------------------

    @rule(count=st.integers(2, 5))
    def crm_create_series(self, count: int) -> None:
        self._crm_create_series(count)

    @precondition(lambda self: self.settled("crm"))
    @rule(data=st.data())
    def crm_edit_occurrence(self, data: st.DataObject) -> None:
        occurrence = data.draw(st.sampled_from(self.settled("crm")))
        value = self.fresh()
        self.run(self.world.edit_activity(self._activity(occurrence.key).id, subject=value))
        occurrence.crm_pending, occurrence.own_crm = value, True

    @precondition(lambda self: self.settled("crm"))
    @rule(data=st.data())
    def crm_cancel_occurrence(self, data: st.DataObject) -> None:
        occurrence = data.draw(st.sampled_from(self.settled("crm")))
        self.run(self.world.trash_activity(self._activity(occurrence.key).id))
        occurrence.crm_pending = DELETED

    @precondition(lambda self: self.settled("crm"))
    @rule(data=st.data(), following=st.booleans())
    def crm_edit_series(self, data: st.DataObject, following: bool) -> None:
        """The whole series renamed, or this and the following ones (a split)."""
        occurrence = data.draw(st.sampled_from(self.settled("crm")))
        activity = self._activity(occurrence.key)
        value, scope = self.fresh(), "following" if following else "series"
        members = self.run(self._series_of(activity.series_id))  # before a split
        split = following and occurrence.key > self.run(self._first_of(activity.series_id))
        self.run(self.world.edit_activity(activity.id, subject=value, scope=scope))
        keys = [o.original_start_at for o in members]
        renamed = [key for key in keys if not (following and key < occurrence.key)]
        for key in renamed:
            tracked = self.occurrences.get(key)
            if tracked and split:
                tracked.moved_by = "crm"
        self._renamed(renamed, "crm", value)

    async def _first_of(self, series_id: int | None) -> dt.datetime:
        """The first start of a CRM series (a split there is an edit of all of it)."""
        async with self.db.read() as session:
            found = await session.get(SeriesRow, series_id)
            assert found is not None
            return found.start_at

    async def _series_of(self, series_id: int | None) -> list[Any]:
        async with self.db.read() as session:
            query = select(ActivityRow).where(
                ActivityRow.series_id == series_id, ActivityRow.deleted_at.is_(None)
            )
            return list(await session.scalars(query))

    def _activity(self, key: dt.datetime) -> Any:
        for activity in self.run(self.world.live_activities()):
            if activity.original_start_at == key:
                return activity
        raise AssertionError(f"no occurrence at {key}")

    # --- the calendar side, as another client --------------------------------------

    @rule(count=st.integers(2, 5))
    def cal_create_series(self, count: int) -> None:
        keys, value = self._new_keys(count), self.fresh()
        self.world.calendar.put(f"series-{value}", daily_series(keys[0], count, value))
        for key in keys:
            self.occurrences[key] = Occurrence(key, cal_pending=value)

    @precondition(lambda self: self.settled("calendar"))
    @rule(data=st.data())
    def cal_edit_occurrence(self, data: st.DataObject) -> None:
        occurrence = data.draw(st.sampled_from(self.settled("calendar")))
        event_id, master = self._series_event(occurrence.key)
        value = self.fresh()
        self.world.calendar.put(event_id, with_own_occurrence(master, occurrence.key, value))
        occurrence.cal_pending, occurrence.own_cal = value, True

    @precondition(lambda self: self.settled("calendar"))
    @rule(data=st.data())
    def cal_cancel_occurrence(self, data: st.DataObject) -> None:
        occurrence = data.draw(st.sampled_from(self.settled("calendar")))
        event_id, master = self._series_event(occurrence.key)
        assert master.recurrence is not None
        rule_ = dataclasses.replace(
            master.recurrence, exdates=(*master.recurrence.exdates, occurrence.key)
        )
        others = tuple(o for o in master.overrides if o.recurrence_id != occurrence.key)
        self.world.calendar.put(event_id, dataclasses.replace(master, recurrence=rule_,
                                                              overrides=others))  # fmt: skip
        occurrence.cal_pending = DELETED

    @precondition(lambda self: self.settled("calendar"))
    @rule(data=st.data())
    def cal_edit_series(self, data: st.DataObject) -> None:
        occurrence = data.draw(st.sampled_from(self.settled("calendar")))
        event_id, master = self._series_event(occurrence.key)
        value = self.fresh()
        self.world.calendar.put(event_id, dataclasses.replace(master, summary=value))
        self._renamed(_expansion(master), "calendar", value)

    @precondition(lambda self: self.settled("calendar"))
    @rule(data=st.data())
    def cal_split(self, data: st.DataObject) -> None:
        """Another client's "this and following": the rule ends before an occurrence,
        and a new series (its own title) starts with it."""
        occurrence = data.draw(st.sampled_from(self.settled("calendar")))
        event_id, master = self._series_event(occurrence.key)
        assert master.recurrence is not None
        assert isinstance(master.start, dt.datetime)
        slots = list(rrulestr(master.recurrence.rrule, dtstart=master.start))
        cut = occurrence.key
        if cut == slots[0]:
            return  # the whole series: no split
        value = self.fresh()
        until = cut - dt.timedelta(seconds=1)
        old_rule = Recurrence(f"FREQ=DAILY;UNTIL={until:%Y%m%dT%H%M%SZ}",
                              tuple(m for m in master.recurrence.exdates if m < cut))  # fmt: skip
        new_rule = Recurrence(f"FREQ=DAILY;COUNT={sum(1 for m in slots if m >= cut)}",
                              tuple(m for m in master.recurrence.exdates if m >= cut))  # fmt: skip
        overrides = master.overrides
        self.world.calendar.put(event_id, dataclasses.replace(
            master, recurrence=old_rule,
            overrides=tuple(o for o in overrides if o.recurrence_id and o.recurrence_id < cut),
        ))  # fmt: skip
        self.world.calendar.put(f"split-{value}", CalendarEvent(
            summary=value, start=cut, end=cut + dt.timedelta(hours=1), timezone="UTC",
            recurrence=new_rule,
            overrides=tuple(o for o in overrides if o.recurrence_id and o.recurrence_id >= cut),
        ))  # fmt: skip
        moved = [key for key in _expansion(master) if key >= cut and key in self.occurrences]
        for key in moved:
            self.occurrences[key].moved_by = "calendar"
        self._renamed(moved, "calendar", value)

    def cal_split_during_a_sync(self, data: Any, at: int) -> None:
        """Another client's "this and following" (``cal_split``) lands while a sync runs,
        at its ``at``-th calendar call, whatever the CRM did to that occurrence: a write
        of the series it changed is refused ("changed while syncing"), and the sync
        goes on."""

        def split() -> None:
            for occurrence in self.occurrences.values():
                occurrence.moved_by = None
            self.cal_split(data)

        _sync_meddled(self, at, split)

    def _series_event(self, key: dt.datetime) -> tuple[str, CalendarEvent]:
        for event_id, found in self.world.events().items():
            if key in _expansion(found):
                return event_id, found
        raise AssertionError(f"no series holds {key}")

    # --- syncing and checking -------------------------------------------------------

    @rule(crash=_crashes(most=10))
    def sync(self, crash: tuple[str, int] | None) -> None:
        _crash_once(self, crash)
        report = self.run(self.world.sync())
        assert report.problems == [], report.problems
        self._quiet_sync()
        self._check_and_settle()

    def _check_and_settle(self) -> None:
        self._check_series(self.world.events().values(), skip_gone=True)


TestSeriesMachine = SeriesMachine.TestCase
TestSeriesMachine.settings = settings(
    max_examples=25,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


# --- series splits on both sides, found by the machine above ---------------------------


class _Pick:
    """Stands in for hypothesis' data: draws the occurrence at ``key``."""

    def __init__(self, key: dt.datetime) -> None:
        self.key = key

    def draw(self, strategy: Any) -> Any:
        return next(o for o in strategy.elements if o.key == self.key)


def _nth(series: int, n: int) -> _Pick:
    """The n-th occurrence (from 1) of the series made as the machine's series-th."""
    return _Pick(SERIES_START + dt.timedelta(minutes=series, days=n - 1))


def _play(steps: list[tuple[str, dict[str, Any]]]) -> None:
    machine = SeriesMachine()
    try:
        for name, kwargs in steps:
            getattr(machine, name)(**kwargs)
    finally:
        machine.teardown()


def test_splits_on_both_sides_leave_each_occurrence_in_one_series() -> None:
    """The CRM splits a series at its 4th occurrence while the calendar splits it at
    the 3rd and then the 2nd: after a sync no occurrence shows in two series."""
    _play([
        ("cal_create_series", {"count": 4}),
        ("sync", {"crash": None}),
        ("crm_edit_series", {"data": _nth(1, 4), "following": True}),
        ("cal_create_series", {"count": 2}),
        ("cal_split", {"data": _nth(1, 3)}),
        ("cal_split", {"data": _nth(1, 2)}),
        ("cal_create_series", {"count": 2}),
        ("cal_create_series", {"count": 2}),
        ("sync", {"crash": None}),
    ])  # fmt: skip


def test_splits_on_both_sides_after_a_crash_converge_in_one_sync() -> None:
    """Splits on both sides and a sync that stops at the calendar's 2nd call: the next
    sync converges without a retry left over."""
    _play([
        ("sync", {"crash": None}),
        ("cal_create_series", {"count": 4}),
        ("sync", {"crash": None}),
        ("crm_edit_series", {"data": _nth(1, 4), "following": True}),
        ("cal_create_series", {"count": 2}),
        ("cal_edit_occurrence", {"data": _nth(1, 1)}),
        ("cal_edit_series", {"data": _nth(1, 1)}),
        ("cal_split", {"data": _nth(1, 3)}),
        ("cal_edit_occurrence", {"data": _nth(1, 3)}),
        ("cal_split", {"data": _nth(1, 2)}),
        ("crm_create_series", {"count": 4}),
        ("cal_split", {"data": _nth(1, 4)}),
        ("crm_edit_series", {"data": _nth(1, 1), "following": True}),
        ("crm_create_series", {"count": 2}),
        ("sync", {"crash": ("provider", 2)}),
    ])  # fmt: skip


def test_a_series_made_beside_both_sides_splits_is_not_taken_for_the_split() -> None:
    """The calendar gets a new series a day before the occurrence where it splits a
    series the CRM split one occurrence later: the series whose new part starts at the
    cut is the split, and the one made beside it stays its own."""
    _play([
        ("cal_create_series", {"count": 2}),
        ("cal_create_series", {"count": 2}),
        ("cal_create_series", {"count": 3}),
        ("sync", {"crash": None}),
        ("cal_create_series", {"count": 2}),
        ("crm_edit_series", {"data": _nth(3, 3), "following": True}),
        ("cal_split", {"data": _nth(3, 2)}),
        ("sync", {"crash": None}),
    ])  # fmt: skip


@pytest.mark.parametrize("batching", [False, True], ids=["one-by-one", "batching"])
@pytest.mark.parametrize(
    "crash", [("provider", n) for n in range(1, 6)] + [("database", n) for n in range(1, 8)]
)
def test_a_split_on_both_sides_converges_after_a_crash_anywhere(
    crash: tuple[str, int], batching: bool
) -> None:
    """The CRM's "this and following" went out as a series of its own, but the write of
    the old series' new end was refused: another client split the same series at the
    same occurrence meanwhile. The next sync links the CRM's part to that split and
    deletes crmcal's own series for it (in the run's batch of deletes where the calendar
    takes them); cut off at any of its steps, the sync after it leaves no second series
    (nor a problem) behind."""
    machine = SeriesMachine()
    if batching:
        machine.world.provider = BatchingSeriesProvider(machine.world.calendar)
    try:
        machine.cal_create_series(count=4)
        machine.sync(crash=None)
        machine.crm_edit_series(data=_nth(1, 3), following=True)
        machine.cal_split_during_a_sync(data=_nth(1, 3), at=2)
        # The old series, the calendar's split and crmcal's series for the CRM's part.
        assert len(machine.world.events()) == 3
        machine.sync(crash=crash)
        assert len(machine.world.events()) == 2
        if batching:  # crmcal's copy went in a batch, not alone
            assert isinstance(machine.world.provider, BatchingSeriesProvider)
            assert machine.world.provider.deleted_in_batches >= 1
    finally:
        machine.teardown()


# --- an occurrence the calendar changed while the CRM split its series ------------------


def test_a_calendar_edit_of_an_occurrence_the_crm_split_off_is_kept() -> None:
    """Found by the machine: the calendar changes the 3rd occurrence on its own (and
    cancels others) while the CRM renames "this and following" from it. The occurrence
    keeps the calendar's title on both sides, as its own (a series edit leaves an
    occurrence changed on its own be), so a later edit of its new series leaves it too;
    it was given the CRM's title, and the calendar's edit was lost."""
    _play([
        ("sync", {"crash": ("provider", 1)}),
        ("cal_create_series", {"count": 4}),
        ("sync", {"crash": None}),
        ("cal_cancel_occurrence", {"data": _nth(1, 1)}),
        ("crm_edit_series", {"data": _nth(1, 2), "following": False}),
        ("cal_edit_occurrence", {"data": _nth(1, 3)}),
        ("cal_cancel_occurrence", {"data": _nth(1, 4)}),
        ("cal_cancel_occurrence", {"data": _nth(1, 2)}),
        ("crm_edit_series", {"data": _nth(1, 3), "following": True}),
        ("cal_create_series", {"count": 2}),
        ("cal_create_series", {"count": 2}),
        ("sync", {"crash": None}),
        ("crm_edit_series", {"data": _nth(1, 3), "following": False}),
        ("cal_cancel_occurrence", {"data": _nth(3, 2)}),
        ("sync", {"crash": None}),
    ])  # fmt: skip


@pytest.mark.parametrize("batching", [False, True], ids=["one-by-one", "batching"])
@pytest.mark.parametrize("cut", [2, 3])
def test_calendar_edits_of_occurrences_the_crm_split_off_reach_the_crm(
    cut: int, batching: bool
) -> None:
    """The calendar changes the 3rd occurrence on its own and cancels the 4th while the
    CRM renames the series from the ``cut``-th on ("this and following"): the CRM's
    later part has the 3rd with the calendar's title, as its own, and the 4th in the
    trash; the calendar's new series shows the same."""
    machine = SeriesMachine()
    if batching:
        machine.world.provider = BatchingSeriesProvider(machine.world.calendar)
    third, fourth = _nth(1, 3).key, _nth(1, 4).key
    try:
        machine.cal_create_series(count=4)
        machine.sync(crash=None)
        machine.cal_edit_occurrence(data=_nth(1, 3))  # "s2"
        machine.cal_cancel_occurrence(data=_nth(1, 4))
        machine.crm_edit_series(data=_nth(1, cut), following=True)  # "s3"
        machine.sync(crash=None)
        assert machine.occurrences[third].value == "s2"
        assert machine.occurrences[fourth].gone
        assert machine._activity(third).overrides == ["subject"]
        machine.crm_edit_series(data=_nth(1, 3), following=False)  # "s4"
        machine.sync(crash=None)
        assert machine.occurrences[third].value == "s2"
    finally:
        machine.teardown()


def test_a_crm_edit_of_an_occurrence_split_off_while_it_is_pulled_is_not_lost() -> None:
    """The CRM changes the occurrence it split off just before the sync writes the
    calendar's change of it (its first database write): that write is not made over
    the CRM's edit; the next sync decides the two edits by the conflict policy."""
    machine = SeriesMachine()
    third = _nth(1, 3).key
    try:
        machine.cal_create_series(count=4)
        machine.sync(crash=None)
        machine.cal_edit_occurrence(data=_nth(1, 3))  # "s2"
        machine.crm_edit_series(data=_nth(1, 2), following=True)  # "s3"
        activity_id = machine._activity(third).id
        write, writes = machine.db.write, 0

        @asynccontextmanager
        async def meddled() -> AsyncIterator[AsyncSession]:
            nonlocal writes
            writes += 1
            if writes == 1:
                await machine.world.edit_activity(activity_id, subject="crm's own")
            async with write() as session:
                yield session

        machine.db.write = meddled  # type: ignore[method-assign]
        first = machine.run(machine.world.sync())
        machine.db.write = write  # type: ignore[method-assign]
        assert machine._activity(third).subject == "crm's own"
        assert first.problems == [], first.problems
        occurrence = machine.occurrences[third]
        occurrence.crm_pending, occurrence.own_crm = "crm's own", True
        report = machine.run(machine.world.sync())
        assert report.conflicts == 1, report.counts()
        machine.sync(crash=None)
    finally:
        machine.teardown()


# --- an occurrence the CRM cancelled after splitting it off, split off in the calendar ---


@pytest.mark.parametrize("count", [4, 5], ids=["only-occurrence", "one-of-two"])
@pytest.mark.parametrize("edited", [False, True], ids=["cancelled", "edited-then-cancelled"])
def test_a_crm_cancellation_where_the_calendar_split_later_is_kept(
    count: int, edited: bool
) -> None:
    """Found by the machine: the calendar splits a series at its 4th occurrence, the
    CRM renames it from the 2nd ("this and following") and then cancels the 4th (after
    changing it on its own). The calendar's split is the split of the CRM's later part
    at the 4th, whose first occurrence is now in the trash: the 4th stays cancelled on
    both sides, and every other occurrence is in one series. The calendar's split came
    in as a new series instead, bringing the 4th back as a new activity (and, with a
    5th, showing that one in two series)."""
    machine = SeriesMachine()
    fourth = _nth(1, 4).key
    try:
        machine.cal_create_series(count=count)
        machine.sync(crash=None)
        machine.cal_split(data=_nth(1, 4))
        machine.crm_edit_series(data=_nth(1, 2), following=True)
        if edited:
            machine.crm_edit_occurrence(data=_nth(1, 4))
        machine.crm_cancel_occurrence(data=_nth(1, 4))
        machine.sync(crash=None)
        assert machine.occurrences[fourth].gone
        assert fourth not in {
            a.original_start_at for a in machine.run(machine.world.live_activities())
        }
        machine.sync(crash=None)
    finally:
        machine.teardown()


# --- a series the CRM cancelled whole, split in the calendar meanwhile -------------------


def _crm_cancels(machine: SeriesMachine, *keys: dt.datetime) -> None:
    """The CRM moves these occurrences to the trash (whatever the calendar did to them)."""
    for key in keys:
        machine.run(machine.world.trash_activity(machine._activity(key).id))
        machine.occurrences[key].crm_pending = DELETED


@pytest.mark.parametrize("origin", ["crm", "calendar"])
@pytest.mark.parametrize(("count", "cut"), [(4, 3), (4, 2), (5, 5)], ids=["3of4", "2of4", "5of5"])
def test_a_series_the_crm_cancelled_whole_while_the_calendar_split_it_stays_cancelled(
    origin: str, count: int, cut: int
) -> None:
    """The CRM cancels every occurrence of a series while the calendar splits it ("this
    and following"): both calendar series are left without an occurrence. Nothing comes
    back as an activity, nothing shows in the calendar, and the syncs after it write
    nothing (no loop over the empty series)."""
    machine = SeriesMachine()
    try:
        if origin == "crm":
            machine.crm_create_series(count=count)
        else:
            machine.cal_create_series(count=count)
        machine.sync(crash=None)
        keys = sorted(machine.occurrences)
        machine.cal_split(data=_nth(1, cut))
        _crm_cancels(machine, *keys)
        machine.sync(crash=None)
        assert machine.run(machine.world.live_activities()) == []
        shown = [key for master in machine.world.events().values() for key in _expansion(master)]
        assert shown == []
        for _ in range(2):
            machine.sync(crash=None)
        assert machine.run(machine.world.live_activities()) == []
    finally:
        machine.teardown()
