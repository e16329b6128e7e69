"""Series at their edges, on real providers: an occurrence edited in the calendar while
a sync writes its series, overrides left past a series' new end, and several series
written in one run. Each test drives the engine against the Google or Graph emulator
(or Radicale) as ``test_series_meanwhile`` does, with another client editing the
calendar at a chosen point of the sync."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from crmcal.model import RemoteRef
from crmcal.providers import google_events
from tests import plain
from tests.emulator_calls import emulator_calls
from tests.engine_machine import SERIES_START as START
from tests.google_emulator import GoogleHarness
from tests.meanwhile_machine import (  # noqa: F401  # fixture used by name
    SeriesMeanwhileMachine,
    Service,
    _machine,
    service,
)

# The emulators' request kinds that write (``/_emulator/requests``, batch parts counted).
_WRITES = {"create", "update", "patch", "delete", "insert", "import", "move"}


def _open(service: Service, template: Any) -> SeriesMeanwhileMachine:  # noqa: F811
    return _machine(service, template)()


async def _series(machine: SeriesMeanwhileMachine) -> RemoteRef:
    (ref,) = (await machine._events()).values()
    assert ref.event is not None
    return ref


def _quiet(machine: SeriesMeanwhileMachine) -> None:
    """A sync with nothing to do writes nothing."""
    quiet = machine.run(machine.world.sync())
    assert (quiet.created, quiet.updated, quiet.deleted) == (0, 0, 0), quiet.counts()
    assert quiet.problems == [], quiet.problems


@pytest.mark.parametrize("service", ["google"], indirect=True)
def test_an_occurrence_edited_between_the_master_write_and_its_occurrences_survives(
    service: Service,  # noqa: F811
    sqlite_template: Any,
) -> None:
    """The CRM renames a series and changes one occurrence on its own; crmcal patches
    the master, and before it patches that occurrence another client sets the
    occurrence's room. The occurrence's write names the version it was written over
    (the series' own, for an occurrence that is not an exception yet): refused, it
    leaves the room there, and the next syncs bring both edits to both sides."""
    machine = _open(service, sqlite_template)
    try:
        machine.crm_create_series(count=3)
        machine.sync()
        day_one = START + dt.timedelta(minutes=1, days=1)
        live = machine.run(machine.world.live_activities())
        (first,) = [a for a in live if a.original_start_at == START + dt.timedelta(minutes=1)]
        (second,) = [a for a in live if a.original_start_at == day_one]
        machine.run(machine.world.edit_activity(first.id, subject="Renamed", scope="series"))
        machine.run(machine.world.edit_activity(second.id, subject="Its own", scope="this"))
        master_id = machine.run(_series(machine)).id
        harness = machine.harness
        assert isinstance(harness, GoogleHarness)
        instance = google_events.instance_id(master_id, day_one)
        path = f"/calendars/{harness.calendar_id}/events/{instance}"
        inner: Any = machine.provider.inner
        series = inner._series
        writing: Callable[..., Awaitable[Any]] = series.write_occurrences_of
        edited: list[str] = []

        async def after_the_master(*args: Any, **kwargs: Any) -> Any:
            if not edited:  # the master is patched; its occurrences are not yet
                await harness.api("PATCH", path, json={"location": "Room 7"})
                edited.append(instance)
            return await writing(*args, **kwargs)

        series.write_occurrences_of = after_the_master
        try:
            report = machine.run(machine.world.sync())
        finally:
            series.write_occurrences_of = writing
        assert edited == [instance]
        there = machine.run(harness.api("GET", path))
        assert there.get("location") == "Room 7", "the calendar's edit was written over"
        assert [p["reason"] for p in report.problems if p.get("retry")] == [
            "changed while syncing; will retry"
        ], report.problems
        conflicts = 0
        for _ in range(2):
            conflicts += machine.run(machine.world.sync()).conflicts
        _quiet(machine)
        activity = machine.run(machine.world.activity(second.id))
        there = machine.run(harness.api("GET", path))
        # Both sides the same; the calendar's edit kept unless the conflict policy
        # (the occurrence changed on both sides) decided for the CRM's.
        assert (there.get("location"), there.get("summary")) == (
            activity.location,
            activity.subject,
        )
        assert activity.location == "Room 7" or conflicts, (activity.location, conflicts)
    finally:
        machine.teardown()


@pytest.mark.parametrize("service", ["google"], indirect=True)
@pytest.mark.parametrize("instance_etags", ["own", "series"])
def test_occurrences_that_are_no_exception_are_written_whatever_etag_google_gives_them(
    service: Service,  # noqa: F811
    sqlite_template: Any,
    instance_etags: str,
) -> None:
    """Google may give an occurrence that is no exception an etag of its own and refuse
    its series' in If-Match (``own``), or take the series' (``series``). Either way a
    CRM edit of one occurrence and the cancellation of another reach the calendar in
    one sync, and the next sync has nothing to do: a write refused only for the etag it
    named is not left to a next sync that would be refused the same way."""
    machine = _open(service, sqlite_template)
    harness = machine.harness
    assert isinstance(harness, GoogleHarness)
    settings = f"{harness.emulator.url}/_emulator/settings"
    assert plain.post(settings, json={"instance_etags": instance_etags}, timeout=60).is_success
    try:
        machine.crm_create_series(count=3)
        machine.sync()
        second, third = _by_day(machine, 1), _by_day(machine, 2)
        machine.run(machine.world.trash_activity(second.id))
        machine.run(machine.world.edit_activity(third.id, subject="Its own", scope="this"))
        report = machine.run(machine.world.sync())
        assert report.problems == [], report.problems
        master_id = machine.run(_series(machine)).id
        days = [START + dt.timedelta(minutes=1, days=day) for day in range(3)]
        path = f"/calendars/{harness.calendar_id}/events/"
        edited = machine.run(
            harness.api("GET", path + google_events.instance_id(master_id, days[2]))
        )
        assert edited.get("summary") == "Its own"
        shown = _calendar_days(machine)
        assert sorted(shown) == [days[0], days[2]]
        _quiet(machine)
        assert machine.run(machine.world.activity(third.id)).subject == "Its own"
    finally:
        plain.post(settings, json={"instance_etags": "own"}, timeout=60)
        machine.teardown()


def _by_day(machine: SeriesMeanwhileMachine, day: int) -> Any:
    key = START + dt.timedelta(minutes=1, days=day)
    live = machine.run(machine.world.live_activities())
    found = [a for a in live if a.original_start_at == key]
    return found[0] if found else None


def _calendar_days(machine: SeriesMeanwhileMachine) -> dict[dt.datetime, str | None]:
    """Every occurrence the calendar shows, series and lone events alike (start ->
    title)."""
    from tests.series_model import _expansion

    shown: dict[dt.datetime, str | None] = {}
    for ref in machine.run(machine._events()).values():
        assert ref.event is not None
        if ref.event.recurrence is None:
            assert isinstance(ref.event.start, dt.datetime)
            shown[ref.event.start] = ref.event.summary
            continue
        shown.update(_expansion(ref.event))
        for override in ref.event.overrides:
            # An exception the rule no longer makes, still kept by the calendar: shown.
            if not override.cancelled and override.recurrence_id not in shown:
                assert isinstance(override.recurrence_id, dt.datetime)
                shown[override.recurrence_id] = override.summary
    return shown


async def _retitle_last(machine: SeriesMeanwhileMachine) -> None:
    """Another client titles the series' last occurrence (of three) "Its own"."""
    ref = await _series(machine)
    assert ref.event is not None
    key = START + dt.timedelta(minutes=1, days=2)
    own = dataclasses.replace(
        ref.event, recurrence=None, overrides=(), crm_id=None, crm_type=None,
        summary="Its own", start=key, end=key + dt.timedelta(hours=1), recurrence_id=key,
    )  # fmt: skip
    others = tuple(o for o in ref.event.overrides if o.recurrence_id != key)
    changed = dataclasses.replace(ref.event, overrides=(*others, own))
    harness = machine.harness
    await harness.provider.update(harness.calendar_id, ref.id, ref.etag, changed)


@pytest.mark.parametrize("service", ["google", "microsoft", "radicale"], indirect=True)
@pytest.mark.parametrize("side", ["crm", "calendar"])
@pytest.mark.parametrize("edited", ["synced", "crm", "calendar"])
def test_an_override_past_a_shortened_series_end_goes_on_both_sides(
    service: Service,  # noqa: F811
    sqlite_template: Any,
    side: str,
    edited: str,
) -> None:
    """A series of three whose last occurrence has its own title, shortened to two on
    one side: the occurrence past the new end goes on both sides (as Outlook drops a
    series' exceptions with its pattern, and Google its occurrences past the end), in
    the CRM to the trash; it lingers on neither side and never comes back as a
    single activity or event."""
    machine = _open(service, sqlite_template)
    try:
        machine.crm_create_series(count=3)
        machine.sync()
        last = _by_day(machine, 2)
        if edited == "calendar":  # since the last sync, as the series is shortened
            machine.run(_retitle_last(machine))
        else:
            machine.run(machine.world.edit_activity(last.id, subject="Its own", scope="this"))
        if edited == "synced":
            machine.run(machine.world.sync())
            assert machine.run(machine.world.activity(last.id)).subject == "Its own"
        if side == "crm":
            first = _by_day(machine, 0)
            machine.run(machine.world.edit_activity(
                first.id, recurrence="FREQ=DAILY;COUNT=2", scope="series"
            ))  # fmt: skip
        else:
            ref = machine.run(_series(machine))
            assert ref.event is not None
            assert ref.event.recurrence is not None
            shorter = dataclasses.replace(
                ref.event, recurrence=dataclasses.replace(
                    ref.event.recurrence, rrule="FREQ=DAILY;COUNT=2"
                ),
            )  # fmt: skip
            harness = machine.harness
            machine.run(harness.provider.update(harness.calendar_id, ref.id, ref.etag, shorter))
        warned = []
        for _ in range(2):
            report = machine.run(machine.world.sync())
            assert [p for p in report.problems if p.get("kind") != "warning"] == []
            warned += [p["reason"] for p in report.problems]
        if (edited, side) == ("calendar", "crm"):
            # The calendar's edit of an occurrence the CRM's shorter rule trashed.
            assert len(warned) == 1, warned
            assert "past the series' new end" in warned[0]
        _quiet(machine)
        kept = [START + dt.timedelta(minutes=1, days=d) for d in (0, 1)]
        crm = {a.original_start_at or a.start_at: a.subject
               for a in machine.run(machine.world.live_activities())}  # fmt: skip
        rows = [(a.id, a.series_id, a.original_start_at, a.subject, a.deleted_at)
                for a in machine.run(machine.world.all_activities())]  # fmt: skip
        assert sorted(crm) == kept, (rows, _calendar_days(machine))
        assert sorted(_calendar_days(machine)) == kept
        for event_id in machine.run(machine._events()):
            raw = machine.run(machine.harness.read_raw(event_id))
            if machine.harness.kind == "google":  # cancelled stubs keep no title
                raw = json.dumps([i for i in json.loads(raw) if i.get("status") != "cancelled"])
            assert "Its own" not in raw, "the override lingers past the series' end"
        assert machine.run(machine.world.activity(last.id)).deleted_at is not None
    finally:
        machine.teardown()


@pytest.mark.parametrize("service", ["microsoft", "google"], indirect=True)
@pytest.mark.parametrize("change", ["titles", "cancelled", "moved"])
def test_several_series_written_in_one_run_are_quiet_afterwards(
    service: Service,  # noqa: F811
    sqlite_template: Any,
    change: str,
) -> None:
    """Three series changed in the CRM go out in one run's batch — renamed with one
    occurrence each changed on its own, one occurrence each cancelled (read back), or
    each moved by an hour with an occurrence of its own (Outlook drops and crmcal
    writes its exceptions again) — and each one's link keeps the version the calendar
    answered for it, so the next sync writes nothing and reports nothing."""
    machine = _open(service, sqlite_template)
    try:
        for _ in range(3):
            machine.crm_create_series(count=3)
        machine.sync()
        live = machine.run(machine.world.live_activities())
        series = sorted({a.series_id for a in live})
        assert len(series) == 3
        for n, series_id in enumerate(series):
            mine = sorted((a for a in live if a.series_id == series_id),
                          key=lambda a: a.original_start_at)  # fmt: skip
            if change == "cancelled":
                machine.run(machine.world.trash_activity(mine[1].id))
                continue
            machine.run(machine.world.edit_activity(mine[1].id, subject=f"Own {n}",
                                                    scope="this"))  # fmt: skip
            if change == "titles":
                machine.run(machine.world.edit_activity(mine[0].id, subject=f"Renamed {n}",
                                                        scope="series"))  # fmt: skip
            else:
                later = mine[0].start_at + dt.timedelta(hours=1)
                machine.run(machine.world.edit_activity(
                    mine[0].id, start=later.isoformat(),
                    end=(later + dt.timedelta(hours=1)).isoformat(), scope="series",
                ))  # fmt: skip
        report = machine.run(machine.world.sync())
        assert report.problems == [], report.problems
        assert report.updated == 3, report.counts()
        before = emulator_calls(machine.harness)
        _quiet(machine)
        calls = emulator_calls(machine.harness) - before
        writes = {kind for kind in calls if kind.split(".")[-1] in _WRITES}
        assert not writes, calls
    finally:
        machine.teardown()
