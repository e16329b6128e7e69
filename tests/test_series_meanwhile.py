"""Series edited on either side while a sync holds their writes, on real providers.

On Google and Microsoft 365 a sync gathers its series updates and creates and sends
them in the run's batch requests (``SeriesSync.pending`` / ``creating``), taking
each part's answer afterwards (``Engine._answered``); on CalDAV each goes out at
once. A person keeps editing meanwhile: the CRM series or one occurrence of it, or
the series or one occurrence in the calendar as another client. This machine lands
such an edit at one point of a sync — after the calendar was listed, while the
updates or creates wait for their request, after they were answered but before
their links are stored — and sometimes has one part of a batch refused (400, 412,
500) while the others go through. Afterwards two syncs must bring both sides to the
same occurrences and subjects, with no series made twice, no edit lost that the
conflict policy did not decide to drop, and a third sync with nothing to do.

It runs against the Google and Graph emulators (behind the fault-injecting proxy)
and Radicale, each with its own calendar and SQLite database per example.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from hypothesis import Phase, settings
from hypothesis.stateful import run_state_machine_as_test

from tests.engine_machine import SERIES_START as START
from tests.meanwhile_machine import (  # noqa: F401  # fixture used by name
    Service,
    _machine,
    service,
)

KINDS = ("google", "microsoft", "radicale")


@pytest.mark.parametrize("service", KINDS, indirect=True)
def test_series_edits_while_a_sync_holds_their_writes(
    service: Service,  # noqa: F811
    sqlite_template: Path,
) -> None:
    run_state_machine_as_test(
        _machine(service, sqlite_template),
        # A failing example is replayed as found: shrinking one costs minutes of syncs.
        settings=settings(max_examples=5, stateful_step_count=8,
                          phases=[Phase.explicit, Phase.reuse, Phase.generate]),
    )  # fmt: skip


class _Nth:
    """Stands in for hypothesis' data: draws the ``n``-th element (from 0)."""

    def __init__(self, n: int = 0) -> None:
        self.n = n

    def draw(self, strategy: Any) -> Any:
        return strategy.elements[self.n]


@pytest.mark.parametrize("service", KINDS, indirect=True)
@pytest.mark.parametrize(
    ("point", "edit", "synced_first"),
    [
        ("updates queued", "crm series", True),
        ("creates queued", "crm occurrence", False),
    ],
)
def test_a_crm_edit_made_while_the_series_write_waits_is_not_lost(
    service: Service,  # noqa: F811
    sqlite_template: Path,
    point: str,
    edit: str,
    synced_first: bool,
) -> None:
    """Found by the machine above: the CRM edits a series (or one occurrence) after the
    sync read it and before it linked what it wrote. The link is stored later than the
    edit, yet the next sync sends the edit."""
    machine = _machine(service, sqlite_template)()
    try:
        machine.crm_create_series(count=3)
        if synced_first:
            machine.sync()
            machine.crm_edit(data=_Nth(), whole=True)
        machine.sync_with_an_edit_meanwhile(data=_Nth(), point=point, edit=edit)
    finally:
        machine.teardown()


@pytest.mark.parametrize("service", KINDS, indirect=True)
def test_a_crm_edit_made_while_a_series_is_pulled_is_not_lost(
    service: Service,  # noqa: F811
    sqlite_template: Path,
) -> None:
    """Found by the machine above: the calendar changed one occurrence of a series, and
    the CRM changes another just before the sync writes the calendar's change to the
    CRM (its first database write). Neither edit is lost."""
    machine = _machine(service, sqlite_template)()
    try:
        machine.crm_create_series(count=3)
        machine.sync()
        machine.cal_edit(data=_Nth(0), whole=False)
        edit = "crm occurrence"
        machine.sync_with_an_edit_meanwhile(data=_Nth(1), point="database write 1", edit=edit)
    finally:
        machine.teardown()


class _Key:
    """Stands in for hypothesis' data: draws the occurrence on ``day`` (from 0) of the
    machine's ``series``-th series."""

    def __init__(self, series: int, day: int) -> None:
        self.key = START + dt.timedelta(minutes=series, days=day)

    def draw(self, strategy: Any) -> Any:
        elements = getattr(strategy, "elements", None) or strategy.wrapped_strategy.elements
        return next(o for o in elements if o.key == self.key)


@pytest.mark.parametrize("service", ["google", "microsoft"], indirect=True)
def test_a_refused_series_write_and_the_next_edit_converge(
    service: Service,  # noqa: F811
    sqlite_template: Path,
) -> None:
    """Found by the machine above: both sides renamed a series, the CRM's rename won
    and its write was refused (400), and that sync had listed the calendar's rename.
    The CRM's next edit names a version the calendar no longer has and no listing shows
    again: refused, it is read again by the next sync, which brings both together."""
    machine = _machine(service, sqlite_template)()
    try:
        machine.crm_create_series(count=2)
        machine.sync()
        machine.cal_edit(data=_Key(1, 0), whole=True)
        machine.sync_with_a_part_refused(status=400)
    finally:
        machine.teardown()
