"""A new series' occurrence starts computed ahead (where an import's event is parsed)
give the very rows the rule gives when the series is written.

``series.starts_ahead`` counts the starts up to a day past the horizon; ``planned``,
later, takes those before its own horizon. Compared with the starts the rule makes
at the time of writing, for rules of every kind a calendar brings: weekly without
an end, a COUNT, an UNTIL, all-day, dates left out and added, across a clock change.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest

from crmcal.crm import series
from crmcal.crm.activities import check_new
from crmcal.crm.schemas import ActivityCreate
from crmcal.crm.tables import User, utcnow

OWNER = User(id=1, email="o@crm.test", timezone="Europe/Berlin")


def new_series(**fields: Any) -> series.NewSeries:
    checked = check_new(ActivityCreate(type="meeting", subject="Weekly", **fields), OWNER.timezone)
    row = {**checked.columns, "uid": "u", "owner_id": OWNER.id, "series_id": None,
           "created_at": utcnow(), "updated_at": utcnow(), "deleted_at": None}  # fmt: skip
    return series.NewSeries(OWNER, row, [], checked.exdates, checked.rdates, "u")


def soon(days: int) -> str:
    return (utcnow() + dt.timedelta(days=days)).strftime("%Y-%m-%d")


RULES: dict[str, dict[str, Any]] = {
    "weekly without an end": {"start": f"{soon(3)}T09:00:00", "end": f"{soon(3)}T09:30:00",
                              "recurrence": "FREQ=WEEKLY"},
    "count": {"start": f"{soon(-20)}T09:00:00", "end": f"{soon(-20)}T10:00:00",
              "recurrence": "FREQ=WEEKLY;COUNT=10", "exdates": [f"{soon(-6)}T09:00:00"]},
    "until": {"start": f"{soon(1)}T23:30:00", "end": f"{soon(2)}T00:30:00",
              "recurrence": f"FREQ=DAILY;UNTIL={soon(60).replace('-', '')}T000000Z",
              "rdates": [f"{soon(90)}T08:00:00"]},
    "all-day": {"start": soon(2), "end": soon(3), "recurrence": "FREQ=WEEKLY;BYDAY=MO,TH"},
    "all-day monthly, a date left out": {
        "start": soon(-40), "recurrence": "FREQ=MONTHLY", "exdates": [soon(-40)]},
    "reaching past the horizon by a day": {
        "start": f"{soon(0)}T12:00:00", "recurrence": "FREQ=DAILY;COUNT=367"},
}  # fmt: skip


@pytest.mark.parametrize("fields", RULES.values(), ids=RULES.keys())
def test_starts_computed_ahead_are_those_the_rule_makes_when_written(fields: Any) -> None:
    item = new_series(**fields)
    ahead = series.starts_ahead(item, utcnow())
    assert ahead is not None
    now = utcnow()
    with_ahead = series.planned(dataclasses.replace(item, ahead=ahead), now)
    without = series.planned(item, now)
    assert with_ahead[2] == without[2]
    # Each up to its own horizon (the moment it was planned) or its thousandth start.
    reached = [planned[0].materialised_until for planned in (with_ahead, without)]
    assert reached[0] is not None
    assert reached[1] is not None
    assert abs(reached[0] - reached[1]) < dt.timedelta(seconds=5)
    assert len(ahead.starts) >= len(without[2])


def test_starts_computed_too_long_ago_are_counted_again(monkeypatch: pytest.MonkeyPatch) -> None:
    item = new_series(**RULES["weekly without an end"])
    ahead = series.starts_ahead(item, utcnow())
    assert ahead is not None
    # Only the first start, as if counted with a horizon long past: not taken.
    stale = dataclasses.replace(
        ahead, until=utcnow() - dt.timedelta(days=1), starts=ahead.starts[:1],
        instants=ahead.instants[:1],
    )  # fmt: skip
    found = series.planned(dataclasses.replace(item, ahead=stale), utcnow())
    assert len(found[2]) >= 52


def test_a_rule_with_too_many_starts_is_not_counted_ahead() -> None:
    item = new_series(start=f"{soon(1)}T09:00:00", recurrence="FREQ=HOURLY")
    assert series.starts_ahead(item, utcnow()) is None
    assert len(series.planned(item, utcnow())[2]) == series.MAX_PER_STEP
