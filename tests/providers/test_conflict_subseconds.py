"""The ``latest`` conflict policy reads edit times at the precision each calendar gives
them: Google's ``updated`` (milliseconds) and Graph's ``lastModifiedDateTime`` (fractions
of a second) against the CRM's ``updated_at`` (microseconds). Two edits in the same
second are told apart: the later one wins, and the next sync is quiet.

Times are set, not waited for: the emulator's clock stamps the calendar's edit a
millisecond before or after the CRM's, read back from the API.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.providers.synced import V1, OnGoogle, OnMicrosoft, Synced

MILLISECOND = dt.timedelta(milliseconds=1)


@contextlib.contextmanager
def calendar_clock(synced: Synced, moment: dt.datetime) -> Iterator[None]:
    """Inside, the service stamps the calendar's edits ``moment``."""
    state: Any = synced.harness.emulator.state  # type: ignore[attr-defined]
    owner = state.events if isinstance(synced, OnMicrosoft) else state
    before: Callable[[], dt.datetime] = owner.clock
    owner.clock = lambda: moment
    try:
        yield
    finally:
        owner.clock = before


def crm_edit_inside_a_second(synced: Synced, activity_id: int, subject: str) -> dt.datetime:
    """The CRM's edit of the subject, at a time two milliseconds or more from either end of
    its second (edited again in the rare other case): its ``updated_at``."""
    for attempt in range(10):
        edited = synced.edit_activity(activity_id, subject=f"{subject}{'.' * attempt}")
        moment = dt.datetime.fromisoformat(edited["updated_at"])
        if 2000 <= moment.microsecond < 998_000:
            return moment
    raise AssertionError("no edit inside a second")


@pytest.mark.parametrize("later", ["calendar", "crm"])
async def test_google_the_later_of_two_edits_in_one_second_wins(
    on_google: OnGoogle, later: str
) -> None:
    await the_later_of_two_edits_in_one_second_wins(on_google, later)


@pytest.mark.parametrize("later", ["calendar", "crm"])
async def test_graph_the_later_of_two_edits_in_one_second_wins(
    on_microsoft: OnMicrosoft, later: str
) -> None:
    await the_later_of_two_edits_in_one_second_wins(on_microsoft, later)


async def the_later_of_two_edits_in_one_second_wins(synced: Synced, later: str) -> None:
    """The subject edited in the CRM and in the calendar within one second, ``later``
    the side edited a millisecond after the other: its edit wins, on both sides."""
    synced.connect(conflict_policy="latest")
    made = synced.add_activity("Planning")
    synced.sync()
    ((event_id, _),) = (await synced.events()).items()
    crm_time = crm_edit_inside_a_second(synced, made["id"], "From the CRM")
    crm_subject = synced.activity(made["id"])["subject"]
    # The calendar's edit a millisecond after the CRM's, or before it: the same second.
    calendar_time = crm_time + (MILLISECOND if later == "calendar" else -MILLISECOND)
    assert calendar_time.replace(microsecond=0) == crm_time.replace(microsecond=0)
    with calendar_clock(synced, calendar_time):
        await synced.change_event(event_id, summary="From the calendar")
    # Read back at the service's precision: Google's milliseconds, Graph's fractions.
    stamped = (await synced.event(event_id)).last_modified
    assert stamped is not None
    assert abs(stamped - calendar_time) < MILLISECOND

    answer = synced.sync()
    assert answer["conflicts"] == 1, answer
    winner = "From the calendar" if later == "calendar" else crm_subject
    assert synced.activity(made["id"])["subject"] == winner
    assert (await synced.event(event_id)).summary == winner
    conflicts = synced.user.get(f"{V1}/connections/{synced.connection_id}/conflicts")
    assert conflicts.status_code == 200, conflicts.text
    (recorded,) = conflicts.json()["items"]
    assert recorded["winner"] == later, recorded
    # Decided once: nothing goes back and forth afterwards.
    quiet = synced.sync()
    counts = [quiet[name] for name in ("created", "updated", "deleted", "conflicts")]
    assert counts == [0, 0, 0, 0], quiet
    assert synced.activity(made["id"])["subject"] == winner
    assert (await synced.event(event_id)).summary == winner
