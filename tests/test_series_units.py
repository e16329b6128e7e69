"""A series' units (``sync/series_units.digests_of``), computed once where no horizon
decides them."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

from crmcal.model import CalendarEvent, Recurrence, moment_key
from crmcal.sync import series_units
from crmcal.sync.series_units import LEFT_OUT, Moment, digests_of

START = dt.datetime(2027, 1, 4, 9, tzinfo=dt.UTC)
WEEK = dt.timedelta(weeks=1)


def nowhere(moment: Moment) -> bool:
    return False


def anywhere(moment: Moment) -> bool:
    return True


def test_a_series_with_no_occurrence_changed_on_its_own_has_its_units_computed_once() -> None:
    series = CalendarEvent(
        summary="Weekly", start=START, end=START + dt.timedelta(hours=1),
        recurrence=Recurrence("FREQ=WEEKLY;COUNT=5", exdates=(START + 2 * WEEK,)),
    )  # fmt: skip
    units = digests_of(series, nowhere)
    assert units == series_units._digests_of(series, nowhere)
    assert units == digests_of(series, anywhere)
    assert units.occurrences == {moment_key(START + 2 * WEEK): LEFT_OUT}
    assert series.memoized("series_units.digests") is not None
    series_units.unbounded_digests(series)  # what the parse pool runs: the same memo
    assert digests_of(series, nowhere) == units
    # Each answer is the caller's own: changing it changes no other.
    units.master["summary"] = "changed"
    assert digests_of(series, nowhere).master["summary"] != "changed"


def test_an_occurrence_changed_on_its_own_is_a_unit_only_within_the_horizon() -> None:
    series = CalendarEvent(
        summary="Weekly", start=START, end=START + dt.timedelta(hours=1),
        recurrence=Recurrence("FREQ=WEEKLY;COUNT=5"),
    )  # fmt: skip
    moved = replace(series, recurrence=None, recurrence_id=START + WEEK, summary="Moved")
    changed = replace(series, overrides=(moved,))
    assert digests_of(changed, nowhere).occurrences == {}
    assert set(digests_of(changed, anywhere).occurrences) == {moment_key(START + WEEK)}
    series_units.unbounded_digests(changed)
    assert changed.memoized("series_units.digests") is None
