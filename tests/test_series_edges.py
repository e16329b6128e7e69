"""Series at their edges, on real providers: an occurrence edited in the calendar while
a sync writes its series, overrides left past a series' new end, and several series
written in one run. Each test drives the engine against the Google or Graph emulator
(or Radicale) as ``test_series_meanwhile`` does, with another client editing the
calendar at a chosen point of the sync."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from crmcal.model import RemoteRef
from crmcal.providers import google_events
from tests.google_emulator import GoogleHarness
from tests.test_series_meanwhile import (  # noqa: F401  # fixture used by name
    START,
    SeriesMeanwhileMachine,
    Service,
    _machine,
    service,
)


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
        writing: Callable[..., Awaitable[Any]] = inner._write_occurrences_of
        edited: list[str] = []

        async def after_the_master(*args: Any, **kwargs: Any) -> Any:
            if not edited:  # the master is patched; its occurrences are not yet
                await harness.api("PATCH", path, json={"location": "Room 7"})
                edited.append(instance)
            return await writing(*args, **kwargs)

        inner._write_occurrences_of = after_the_master
        try:
            report = machine.run(machine.world.sync())
        finally:
            inner._write_occurrences_of = writing
        assert edited == [instance]
        there = machine.run(harness.api("GET", path))
        assert there.get("location") == "Room 7", "the calendar's edit was written over"
        assert [p["reason"] for p in report.problems if p.get("retry")] == [
            "changed while syncing; will retry"
        ], report.problems
        for _ in range(2):
            machine.run(machine.world.sync())
        _quiet(machine)
        activity = machine.run(machine.world.activity(second.id))
        assert activity.location == "Room 7"
        there = machine.run(harness.api("GET", path))
        assert there.get("location") == "Room 7"
        assert there.get("summary") == activity.subject
    finally:
        machine.teardown()
