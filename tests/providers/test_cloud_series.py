"""Series on Google Calendar and Microsoft Graph (their emulators): a master carried with
its changed and cancelled occurrences (``CalendarEvent.overrides``) as one unit, written
as the services keep them — Google's exceptions by instance id, Graph's occurrences
found by ``instances`` and patched or deleted — and read back the same way."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from crmcal.model import CalendarEvent, Recurrence
from crmcal.providers.base import PreconditionFailed
from tests.providers.conftest import HARNESSES, opened
from tests.providers.harness import Harness, fetch_one, key, listed

BERLIN = ZoneInfo("Europe/Berlin")


@pytest.fixture(params=["google", "microsoft"])
async def cloud(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    async with opened(HARNESSES[request.param](request)) as made:
        yield made


def at(month: int, day: int, hour: int = 9) -> dt.datetime:
    return dt.datetime(2027, month, day, hour, tzinfo=BERLIN)


def weekly(**fields: Any) -> CalendarEvent:
    """A weekly 09:00 Berlin series over the March switch (Mondays from 1 March 2027)."""
    base = CalendarEvent(
        summary="Weekly review",
        start=at(3, 1),
        end=at(3, 1, 10),
        timezone="Europe/Berlin",
        crm_id="series-1",
        crm_type="meeting",
        recurrence=Recurrence(rrule="FREQ=WEEKLY;COUNT=8"),
    )
    return dataclasses.replace(base, **fields)


def moved(original: dt.datetime, hours: int, summary: str, base: CalendarEvent) -> CalendarEvent:
    """The occurrence of ``base`` at ``original``, ``hours`` later and retitled."""
    return dataclasses.replace(
        base, summary=summary, start=original + dt.timedelta(hours=hours),
        end=original + dt.timedelta(hours=hours + 1), recurrence=None, overrides=(),
        recurrence_id=original,
    )  # fmt: skip


def by_original(event: CalendarEvent) -> dict[dt.datetime | dt.date, CalendarEvent]:
    found: dict[dt.datetime | dt.date, CalendarEvent] = {}
    for override in event.overrides:
        assert override.recurrence_id is not None
        found[override.recurrence_id] = override
    return found


def timed(moment: dt.datetime | dt.date | None) -> dt.datetime:
    """A moment of these timed series: never a whole day, never missing."""
    assert isinstance(moment, dt.datetime)
    return moment


async def test_a_series_with_its_occurrences_is_written_and_read_as_one(cloud: Harness) -> None:
    base = weekly(recurrence=Recurrence(rrule="FREQ=WEEKLY;COUNT=8", exdates=(at(3, 15),)))
    series = dataclasses.replace(
        base, overrides=(moved(at(3, 8), 2, "Review (moved)", base),
                         dataclasses.replace(moved(at(3, 29), 0, "x", base), cancelled=True)),
    )  # fmt: skip
    made = await cloud.provider.create(cloud.calendar_id, key(), series)
    assert made.event is not None
    fetched = await fetch_one(cloud, made.id)
    event = fetched.event
    assert event is not None
    assert fetched.etag == made.etag
    assert event.recurrence is not None
    assert event.recurrence.rrule == "FREQ=WEEKLY;COUNT=8"
    left_out = sorted(timed(m).astimezone(dt.UTC) for m in event.recurrence.exdates)
    assert left_out == [at(3, 15), at(3, 29)]
    # 09:00 Berlin after the switch too: the dates left out are at the series' time.
    assert at(3, 29).utcoffset() == dt.timedelta(hours=2)
    ((original, override),) = by_original(event).items()
    assert original == at(3, 8)
    assert (override.summary, override.start, override.end) == (
        "Review (moved)", at(3, 8, 11), at(3, 8, 12)
    )  # fmt: skip
    # One series in the calendar, never a pile of single events.
    full = await listed(cloud)
    assert [ref.id for ref in full.changed] == [made.id]


async def test_one_occurrence_changed_back_and_forth(cloud: Harness) -> None:
    made = await cloud.provider.create(cloud.calendar_id, key(), weekly())
    assert made.event is not None
    # One occurrence moved, after the March switch (its original start in summer time).
    original = at(4, 5)
    change = dataclasses.replace(
        made.event, overrides=(moved(original, 1, "Review (one later)", made.event),)
    )
    written = await cloud.provider.update(cloud.calendar_id, made.id, made.etag, change)
    fetched = await fetch_one(cloud, made.id)
    assert fetched.etag == written.etag
    assert fetched.event is not None
    assert fetched.event.summary == "Weekly review"
    ((found, override),) = by_original(fetched.event).items()
    assert (found, override.start, override.summary) == (
        original, at(4, 5, 10), "Review (one later)"
    )  # fmt: skip
    # The series' own fields change; the exception stays.
    retitled = dataclasses.replace(fetched.event, summary="Weekly review (new)")
    again = await cloud.provider.update(
        cloud.calendar_id, made.id, fetched.etag, retitled, changed=frozenset({"summary"})
    )
    fetched = await fetch_one(cloud, made.id)
    assert fetched.etag == again.etag
    assert fetched.event is not None
    assert fetched.event.summary == "Weekly review (new)"
    assert by_original(fetched.event)[original].summary == "Review (one later)"
    # The occurrence cancelled instead.
    cancelled = dataclasses.replace(
        fetched.event,
        overrides=(dataclasses.replace(by_original(fetched.event)[original], cancelled=True),),
    )
    await cloud.provider.update(cloud.calendar_id, made.id, fetched.etag, cancelled)
    fetched = await fetch_one(cloud, made.id)
    assert fetched.event is not None
    assert fetched.event.overrides == ()
    assert fetched.event.recurrence is not None
    assert [timed(m).astimezone(dt.UTC) for m in fetched.event.recurrence.exdates] == [original]


async def test_an_exception_the_series_no_longer_has_is_its_own_occurrence_again(
    cloud: Harness,
) -> None:
    base = weekly()
    series = dataclasses.replace(base, overrides=(moved(at(3, 8), 3, "Special", base),))
    made = await cloud.provider.create(cloud.calendar_id, key(), series)
    plain = dataclasses.replace(series, overrides=())
    await cloud.provider.update(cloud.calendar_id, made.id, made.etag, plain)
    fetched = await fetch_one(cloud, made.id)
    assert fetched.event is not None
    for override in fetched.event.overrides:  # Google keeps it, as the series' twin
        assert (override.summary, override.start) == ("Weekly review", at(3, 8))


async def test_an_occurrence_changed_elsewhere_is_never_overwritten(cloud: Harness) -> None:
    made = await cloud.provider.create(cloud.calendar_id, key(), weekly())
    assert made.event is not None
    first = dataclasses.replace(made.event, overrides=(moved(at(3, 8), 1, "Mine", made.event),))
    await cloud.provider.update(cloud.calendar_id, made.id, made.etag, first)
    # The version crmcal knows no longer holds: another client moved an occurrence.
    other = dataclasses.replace(made.event, overrides=(moved(at(3, 15), 1, "Theirs", made.event),))
    with pytest.raises(PreconditionFailed):
        await cloud.provider.update(cloud.calendar_id, made.id, made.etag, other)
    fetched = await fetch_one(cloud, made.id)
    assert fetched.event is not None
    assert [o.summary for o in fetched.event.overrides] == ["Mine"]


async def test_an_all_day_yearly_series_stays_on_its_date(cloud: Harness) -> None:
    day = dt.date(2027, 3, 28)  # the day of the March switch
    series = CalendarEvent(
        summary="Contract anniversary", start=day, end=day + dt.timedelta(days=1),
        all_day=True, crm_id="series-2", recurrence=Recurrence(rrule="FREQ=YEARLY;COUNT=5"),
    )  # fmt: skip
    next_year = dt.date(2028, 3, 28)
    later = dataclasses.replace(
        series, summary="Anniversary (party)", start=next_year + dt.timedelta(days=1),
        end=next_year + dt.timedelta(days=2), recurrence=None, recurrence_id=next_year,
    )  # fmt: skip
    made = await cloud.provider.create(
        cloud.calendar_id, key(), dataclasses.replace(series, overrides=(later,))
    )
    fetched = await fetch_one(cloud, made.id)
    assert fetched.event is not None
    assert (fetched.event.start, fetched.event.all_day) == (day, True)
    ((original, override),) = by_original(fetched.event).items()
    assert (original, override.start, override.end, override.summary) == (
        next_year, dt.date(2028, 3, 29), dt.date(2028, 3, 30), "Anniversary (party)"
    )  # fmt: skip
