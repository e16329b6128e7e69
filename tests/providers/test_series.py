"""Recurring series both ways, scenario by scenario, through the REST API (issue 14).

The CRM side is driven through the API as a CRM would, the calendar side through the
provider as another calendar client would, in the provider-neutral shape: a series is
one ``CalendarEvent`` master carrying its ``overrides``. Every scenario runs against
each provider kind in ``SERIES_KINDS``: a kind joins by being named there (its
harness comes from ``HARNESSES`` in tests/providers/conftest.py).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from crmcal.crm.tables import Activity as ActivityRow
from crmcal.crm.tables import ActivityChange
from crmcal.db import Database
from crmcal.model import CalendarEvent, Recurrence, ResponseStatus, moment_key
from tests.caldav_proxy import Behaviour
from tests.conftest import Api
from tests.providers.conftest import opened_harness
from tests.providers.harness import Foreign, Harness, cancelled_occurrence, occurrence_of
from tests.providers.synced import V1, Proxied, Synced
from tests.test_sync_cloud_series import tuesday_nine_before_switch

# The provider kinds these scenarios run against (the one place to add a kind).
SERIES_KINDS = ("radicale", "xandikos", "google", "microsoft")

BERLIN = ZoneInfo("Europe/Berlin")
UTC = dt.UTC
HOUR = dt.timedelta(hours=1)
# Who organises the series Sam is invited to, and the two guests (answered).
LEE = ("lee@partner.example", "Lee")
LEE_AND_SAM: tuple[tuple[str, str, ResponseStatus], ...] = (
    ("lee@partner.example", "Lee", "accepted"),
    ("sam@crm.test", "Sam", "accepted"),
)


@pytest.fixture(params=SERIES_KINDS)
async def series_harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    async with opened_harness(request, request.param) as made:
        yield made


def berlin_series(summary: str, start: dt.datetime, rule: str, length: dt.timedelta = HOUR
                  ) -> CalendarEvent:  # fmt: skip
    """A series as another client makes it, each occurrence ``length`` long, in Berlin time."""
    return CalendarEvent(summary=summary, start=start, end=start + length,
                         timezone="Europe/Berlin", recurrence=Recurrence(rule))  # fmt: skip


class SyncedSeries(NamedTuple):
    """A series made in the CRM, as its first sync left it."""

    first: dict[str, Any]  # its first occurrence
    listed: list[dict[str, Any]]  # all its occurrences, in order
    event_id: str  # the one calendar event that holds them


class Series(Synced):
    """A connected user with series helpers on both sides."""

    # --- the CRM side ---------------------------------------------------------------

    def add_series(self, subject: str, start: dt.datetime | dt.date, rule: str,
                   length: dt.timedelta = HOUR, **fields: Any) -> dict[str, Any]:  # fmt: skip
        times: dict[str, object]
        if isinstance(start, dt.datetime):
            times = {"start": start.isoformat(), "end": (start + length).isoformat(),
                     "timezone": "Europe/Berlin"}  # fmt: skip
        else:
            end = start + dt.timedelta(days=1)
            times = {"start": start.isoformat(), "end": end.isoformat(), "all_day": True}
        body = {"type": "meeting", "subject": subject, "recurrence": rule, **times, **fields}
        made = self.user.post(f"{V1}/activities", json=body)
        assert made.status_code == 201, made.text
        return made.json()

    def occurrences(self, series_id: int, *, deleted: bool = False) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"series_id": series_id, "limit": 500}
        if deleted:
            params["deleted"] = "true"
        listed = self.user.get(f"{V1}/activities", params=params)
        assert listed.status_code == 200, listed.text
        return listed.json()["items"]

    def series_ids(self) -> set[int]:
        return {a["series_id"] for a in self.activities()}

    def delete(self, activity_id: int, scope: str = "this") -> None:
        gone = self.user.delete(f"{V1}/activities/{activity_id}", params={"scope": scope})
        assert gone.status_code == 200, gone.text

    def assert_split(self, first: dict[str, Any], listed: list[dict[str, Any]], cut: int
                     ) -> list[dict[str, Any]]:  # fmt: skip
        """The CRM series of ``first`` is in two at its ``cut``-th occurrence: it keeps those
        before (``listed``, by id), another series those from there on (returned)."""
        ids = self.series_ids()
        assert len(ids) == 2
        (other,) = ids - {first["series_id"]}
        kept = self.occurrences(first["series_id"])
        assert [o["id"] for o in kept] == [o["id"] for o in listed[:cut]]
        later = self.occurrences(other)
        assert [o["id"] for o in later] == [o["id"] for o in listed[cut:]]
        return later

    def assert_settled(self) -> None:
        """One more sync has nothing left to create, update or delete."""
        again = self.sync()
        assert (again["created"], again["updated"], again["deleted"]) == (0, 0, 0)

    # --- both sides -------------------------------------------------------------------

    async def synced_series(self, subject: str, start: dt.datetime, rule: str) -> SyncedSeries:
        """A series made in the CRM and written to the calendar by a sync."""
        first = self.add_series(subject, start, rule)
        assert self.sync()["created"] == 1
        listed = self.occurrences(first["series_id"])
        event_id, _ = await self.only_series()
        return SyncedSeries(first, listed, event_id)

    async def synced_calendar_series(self, event: CalendarEvent) -> tuple[str, int]:
        """A series made in the calendar and brought to the CRM by a sync: (its event's
        id, the CRM's series id)."""
        event_id = await self.put_series(event)
        assert self.sync()["created"] == 1
        (series_id,) = self.series_ids()
        return event_id, series_id

    async def synced_invitation(self, summary: str, start: dt.datetime, rule: str
                                ) -> tuple[str, int]:  # fmt: skip
        """A series Lee organises with Sam invited, as the invitation arrives in Sam's
        calendar (only the service writes someone else as organizer), brought to the
        CRM by a sync: (its event's id, the CRM's series id)."""
        event_id = await self.harness.put_foreign(Foreign(
            summary=summary, start=start, end=start + HOUR, rrule=rule, organizer=LEE,
            attendees=LEE_AND_SAM,
        ))  # fmt: skip
        assert self.sync()["created"] == 1
        (series_id,) = self.series_ids()
        return event_id, series_id

    # --- the calendar side, as another client ----------------------------------------

    async def put_series(self, event: CalendarEvent) -> str:
        ref = await self.provider.create(self.calendar_id, uuid.uuid4().hex, event)
        return ref.id

    async def change_series(
        self, event_id: str, change: Callable[[CalendarEvent], CalendarEvent]
    ) -> None:
        (ref,) = await self.provider.fetch(self.calendar_id, [event_id])
        assert ref.event is not None, ref.error
        await self.provider.update(self.calendar_id, event_id, ref.etag, change(ref.event))

    async def only_series(self) -> tuple[str, CalendarEvent]:
        (found,) = (await self.events()).items()
        assert found[1].recurrence is not None
        return found

    async def cut_in_calendar(self, event_id: str, cut: dt.datetime) -> None:
        """Another client ends the series before ``cut`` (its UNTIL)."""
        until = (cut - dt.timedelta(seconds=1)).astimezone(UTC)
        await self.change_series(event_id, lambda e: dataclasses.replace(
            e, recurrence=Recurrence(f"FREQ=WEEKLY;UNTIL={until:%Y%m%dT%H%M%SZ}")))  # fmt: skip

    async def split_in_calendar(self, event_id: str, cut: dt.datetime,
                                following: CalendarEvent) -> None:  # fmt: skip
        """Another client's "this and following" at ``cut``: the series ends before it,
        and ``following`` is made for the rest."""
        await self.cut_in_calendar(event_id, cut)
        await self.put_series(following)


class ProxiedSeries(Proxied, Series):
    """``Series`` through the CalDAV proxy, whose requests the test counts and disturbs."""


@pytest.fixture
def on(series_harness: Harness, sam: Api, admin: Api) -> Series:
    return Series(series_harness, sam, admin)


@pytest.fixture
def proxied_series(proxied: Proxied) -> ProxiedSeries:
    return ProxiedSeries(proxied.harness, proxied.user, proxied.admin, proxied.proxy)


def next_weekday_nine(weekday: int, weeks: int = 1) -> dt.datetime:
    """09:00 Berlin time on a ``weekday`` (0 Monday) at least ``weeks`` weeks ahead."""
    day = dt.datetime.now(BERLIN).date() + dt.timedelta(weeks=weeks)
    day += dt.timedelta(days=(weekday - day.weekday()) % 7)
    return dt.datetime.combine(day, dt.time(9), BERLIN)


def at(value: object) -> dt.datetime:
    return dt.datetime.fromisoformat(str(value))


def key_of(occurrence: dict[str, Any]) -> str:
    return moment_key(at(occurrence["original_start"]))


def offsets(starts: list[dt.datetime]) -> set[dt.timedelta | None]:
    return {s.astimezone(BERLIN).utcoffset() for s in starts}


def crossing_both_switches() -> tuple[dt.datetime, str]:
    """A weekly Tuesday 09:00 Berlin series long enough to cross the March and the
    October daylight-saving switches."""
    return next_weekday_nine(1), "FREQ=WEEKLY;COUNT=48"


# --- one occurrence, from the CRM -----------------------------------------------------------


async def test_an_occurrence_edited_in_the_crm_becomes_an_override_that_survives(
    on: Series,
) -> None:
    on.connect()
    start, rule = crossing_both_switches()
    first = on.add_series("Pipeline review", start, rule)
    series_id = first["series_id"]
    assert on.sync()["created"] == 1
    listed = on.occurrences(series_id)
    assert len(listed) == 48
    # After both switches: its original start is 09:00 local in summer time.
    summer = next(o for o in listed if at(o["start"]).astimezone(BERLIN).utcoffset()
                  == dt.timedelta(hours=2))  # fmt: skip
    moved_start = at(summer["start"]) + dt.timedelta(hours=2)
    on.edit_activity(summer["id"], subject="Pipeline review (board)",
                     start=moved_start.isoformat(),
                     end=(moved_start + dt.timedelta(hours=1)).isoformat())  # fmt: skip
    kept = listed[-3]
    on.edit_activity(kept["id"], done=True)  # CRM-only: nothing to write
    counts = on.sync()
    assert (counts["updated"], counts["created"], counts["skipped"]) == (1, 0, 0)
    event_id, event = await on.only_series()
    (override,) = event.overrides
    assert isinstance(override.recurrence_id, dt.datetime)
    assert moment_key(override.recurrence_id) == key_of(summer)
    assert override.recurrence_id.astimezone(BERLIN).time() == dt.time(9)
    assert override.summary == "Pipeline review (board)"
    assert override.start == moved_start

    # An edit of the whole series keeps the override, and the CRM's own data.
    on.edit_activity(first["id"], subject="Pipeline", location="Room 7", scope="series")
    counts = on.sync()
    assert (counts["updated"], counts["skipped"]) == (1, 0)
    _, event = await on.only_series()
    assert (event.summary, event.location) == ("Pipeline", "Room 7")
    (override,) = event.overrides
    assert (override.summary, override.start) == ("Pipeline review (board)", moved_start)
    assert override.location == "Room 7"  # the series' place: not its own
    assert on.activity(kept["id"])["done"] is True
    again = on.activity(summer["id"])
    assert (again["subject"], at(again["start"])) == ("Pipeline review (board)", moved_start)

    # One cancelled in the CRM: left out of the one series.
    cancelled = listed[10]
    on.delete(cancelled["id"])
    assert on.sync()["updated"] == 1
    _, event = await on.only_series()
    assert event.recurrence is not None
    assert [moment_key(m) for m in event.cancelled_moments()] == [key_of(cancelled)]
    assert len(event.overrides) == 1
    # Nothing more to do.
    again_counts = on.sync()
    assert (again_counts["updated"], again_counts["created"]) == (0, 0)
    assert list(await on.events()) == [event_id]


# --- one occurrence, from the calendar -------------------------------------------------------


async def test_an_override_made_in_the_calendar_reaches_its_occurrence(on: Series) -> None:
    on.connect(incoming_activity_type="call")
    start = next_weekday_nine(3)
    event_id, series_id = await on.synced_calendar_series(
        berlin_series("Standup", start, "FREQ=WEEKLY;COUNT=10", dt.timedelta(minutes=30))
    )
    listed = on.occurrences(series_id)
    assert len(listed) == 10
    noted = listed[6]
    on.edit_activity(noted["id"], done=True)
    assert on.sync()["updated"] == 0  # done lives in the CRM alone

    third, fifth = listed[2], listed[4]
    moved = at(third["original_start"]) + dt.timedelta(hours=3)

    def with_exceptions(event: CalendarEvent) -> CalendarEvent:
        changed = occurrence_of(event, at(third["original_start"]), summary="Standup (customer)",
                                start=moved, end=moved + dt.timedelta(minutes=30))  # fmt: skip
        cancelled = cancelled_occurrence(event, at(fifth["original_start"]))
        return dataclasses.replace(event, overrides=(changed, cancelled))

    await on.change_series(event_id, with_exceptions)
    counts = on.sync()
    assert (counts["updated"], counts["skipped"], counts["problems"]) == (1, 0, [])
    occurrence = on.activity(third["id"])
    assert occurrence["subject"] == "Standup (customer)"
    assert at(occurrence["start"]) == moved
    assert occurrence["series_id"] == series_id
    assert [o["id"] for o in on.occurrences(series_id, deleted=True)] == [fifth["id"]]
    assert len(on.occurrences(series_id)) == 9
    assert on.activity(noted["id"])["done"] is True

    # The series renamed there: the occurrence changed on its own keeps its title.
    await on.change_series(event_id, lambda e: dataclasses.replace(e, summary="Daily"))
    assert on.sync()["updated"] == 1
    subjects = {o["id"]: o["subject"] for o in on.occurrences(series_id)}
    assert subjects.pop(third["id"]) == "Standup (customer)"
    assert set(subjects.values()) == {"Daily"}
    assert on.activity(noted["id"])["done"] is True

    # The override removed there: the occurrence follows its series again.
    await on.change_series(event_id, lambda e: dataclasses.replace(
        e, overrides=tuple(o for o in e.overrides if o.cancelled)))  # fmt: skip
    assert on.sync()["updated"] == 1
    occurrence = on.activity(third["id"])
    assert occurrence["subject"] == "Daily"
    assert at(occurrence["start"]) == at(third["original_start"])
    again = on.sync()
    assert (again["updated"], again["created"]) == (0, 0)


# --- this and following -------------------------------------------------------------------


async def test_this_and_following_in_the_crm_ends_the_series_and_starts_another(
    on: Series,
) -> None:
    on.connect()
    start = next_weekday_nine(0)
    first = on.add_series("Weekly 1:1", start, "FREQ=WEEKLY;COUNT=12")
    assert on.sync()["created"] == 1
    listed = on.occurrences(first["series_id"])
    on.edit_activity(listed[9]["id"], location="Customer site")  # its own, kept
    later = start + dt.timedelta(weeks=5, hours=1)
    on.edit_activity(listed[5]["id"], subject="Weekly 1:1 (new slot)", scope="following",
                     start=later.isoformat(),
                     end=(later + dt.timedelta(hours=1)).isoformat())  # fmt: skip
    counts = on.sync()
    assert (counts["created"], counts["updated"], counts["skipped"]) == (1, 1, 0)
    events = sorted((await on.events()).values(), key=lambda e: e.start)
    assert [e.summary for e in events] == ["Weekly 1:1", "Weekly 1:1 (new slot)"]
    old, new = events
    assert old.recurrence is not None
    assert "UNTIL=" in old.recurrence.rrule
    assert new.start == later
    assert new.recurrence is not None
    assert "COUNT=7" in new.recurrence.rrule
    assert old.overrides == ()
    (own,) = new.overrides
    assert own.location == "Customer site"
    assert own.start == at(listed[9]["start"]) + dt.timedelta(hours=1)


async def test_occurrences_changed_in_the_calendar_reach_the_crms_following_series(
    on: Series,
) -> None:
    """The calendar changes the 6th occurrence on its own and cancels the 7th while the
    CRM renames this and following from the 4th: both reach the CRM's new series (the
    6th as its own, so a later rename of that series leaves it be), and the calendar's
    new series shows them; they were lost, the 6th given the new series' title."""
    on.connect()
    made = await on.synced_series("Weekly 1:1", next_weekday_nine(0), "FREQ=WEEKLY;COUNT=8")
    sixth, seventh = made.listed[5], made.listed[6]

    def with_exceptions(event: CalendarEvent) -> CalendarEvent:
        changed = occurrence_of(event, at(sixth["original_start"]), summary="1:1 (customer)")
        cancelled = cancelled_occurrence(event, at(seventh["original_start"]))
        return dataclasses.replace(event, overrides=(changed, cancelled))

    await on.change_series(made.event_id, with_exceptions)
    on.edit_activity(made.listed[3]["id"], subject="Weekly 1:1 (new)", scope="following")
    counts = on.sync()
    assert (counts["skipped"], counts["problems"]) == (0, [])
    later_id = on.activity(made.listed[3]["id"])["series_id"]
    subjects = {o["id"]: o["subject"] for o in on.occurrences(later_id)}
    assert subjects.pop(sixth["id"]) == "1:1 (customer)"
    assert set(subjects.values()) == {"Weekly 1:1 (new)"}
    assert seventh["id"] not in subjects
    assert [o["id"] for o in on.occurrences(later_id, deleted=True)] == [seventh["id"]]
    new = max((await on.events()).values(), key=lambda e: e.start)
    assert new.summary == "Weekly 1:1 (new)"
    assert {o.recurrence_id: o.summary for o in new.live_overrides().values()} == {
        at(sixth["original_start"]): "1:1 (customer)"
    }  # fmt: skip
    assert at(seventh["original_start"]) in set(new.cancelled_moments())
    on.assert_settled()

    on.edit_activity(made.listed[3]["id"], subject="Weekly 1:1 (renamed)", scope="series")
    assert on.sync()["updated"] == 1
    assert on.activity(sixth["id"])["subject"] == "1:1 (customer)"
    on.assert_settled()


async def _split_at_the_sixth_in_calendar(
    on: Series, title: str, moved: dt.timedelta
) -> tuple[SyncedSeries, dict[str, Any]]:
    """A weekly series of twelve made in the CRM, its ninth occurrence noted there; then
    another client splits it at the sixth, ``moved`` from there on under ``title``, and
    a sync follows (its counts returned)."""
    on.connect()
    made = await on.synced_series("Forecast call", next_weekday_nine(2), "FREQ=WEEKLY;COUNT=12")
    on.edit_activity(made.listed[8]["id"], done=True, note="Prepared the numbers")
    cut = at(made.listed[5]["original_start"])
    await on.split_in_calendar(
        made.event_id, cut, berlin_series(title, cut + moved, "FREQ=WEEKLY;COUNT=7")
    )
    return made, on.sync()


def _assert_the_note_kept_and_nothing_deleted(on: Series, made: SyncedSeries) -> None:
    kept = on.activity(made.listed[8]["id"])
    assert (kept["done"], kept["note"]) == (True, "Prepared the numbers")
    assert on.occurrences(made.first["series_id"], deleted=True) == []


async def test_this_and_following_in_the_calendar_splits_the_crm_series(on: Series) -> None:
    # Another client splits at the sixth occurrence, an hour later from there on.
    made, counts = await _split_at_the_sixth_in_calendar(on, "Forecast call", HOUR)
    first, listed, _ = made
    assert counts["problems"] == []
    assert counts["deleted"] == 0
    # The later occurrences kept their ids and their CRM data, an hour later.
    moved = on.assert_split(first, listed, 5)
    assert first["series_id"] in on.series_ids()
    assert [at(o["start"]) for o in moved] == [
        at(o["start"]) + dt.timedelta(hours=1) for o in listed[5:]
    ]
    _assert_the_note_kept_and_nothing_deleted(on, made)
    on.assert_settled()
    assert len(await on.events()) == 2


async def test_two_series_at_the_same_start_are_never_made_one(on: Series) -> None:
    on.connect()
    assert on.sync()["problems"] == []
    start = next_weekday_nine(1)
    # Two weekly Tuesday 09:00 series in the CRM, and one of them also made in the
    # calendar by another client, before the next sync.
    standup = on.add_series("Standup", start, "FREQ=WEEKLY;COUNT=6")
    pipeline = on.add_series("Pipeline", start, "FREQ=WEEKLY;COUNT=6")
    event_id = await on.put_series(berlin_series("Pipeline", start, "FREQ=WEEKLY;COUNT=6"))
    counts = on.sync()
    assert counts["problems"] == []
    events = await on.events()
    assert events[event_id].summary == "Pipeline"  # never taken for the other one
    assert sorted(e.summary or "" for e in events.values()) == ["Pipeline", "Standup"]
    assert on.series_ids() == {standup["series_id"], pipeline["series_id"]}
    assert {o["subject"] for o in on.occurrences(standup["series_id"])} == {"Standup"}
    assert {o["subject"] for o in on.occurrences(pipeline["series_id"])} == {"Pipeline"}
    on.assert_settled()


def _calendar_occurrences(events: dict[str, CalendarEvent]) -> dict[str, str | None]:
    """Each occurrence in the calendar (its original start's key -> its title), checking
    that no occurrence is held by two series."""
    from dateutil.rrule import rrulestr

    found: dict[str, str | None] = {}
    for event in events.values():
        assert event.recurrence is not None
        assert isinstance(event.start, dt.datetime)
        first = event.start.astimezone(BERLIN)
        left_out = {moment_key(m) for m in event.cancelled_moments()}
        own = {k: o.summary for k, o in event.live_overrides().items()}
        for moment in rrulestr(event.recurrence.rrule, dtstart=first):
            key = moment_key(moment)
            if key in left_out:
                continue
            assert key not in found, f"{key} is in two series"
            found[key] = own.get(key, event.summary)
    return found


@pytest.mark.parametrize("policy", ["crm", "calendar"])
@pytest.mark.parametrize(("crm_cut", "calendar_cut"), [(8, 5), (5, 8)])
async def test_this_and_following_on_both_sides_at_other_occurrences(
    on: Series, policy: str, crm_cut: int, calendar_cut: int
) -> None:
    on.connect(conflict_policy=policy)
    _, listed, event_id = await on.synced_series(
        "Forecast", next_weekday_nine(2), "FREQ=WEEKLY;COUNT=12"
    )
    # The CRM: this and following from one occurrence, renamed.
    on.edit_activity(listed[crm_cut]["id"], subject="Forecast (CRM)", scope="following")
    # The calendar, before the next sync: this and following from another, renamed.
    cut = at(listed[calendar_cut]["original_start"])
    await on.split_in_calendar(event_id, cut, berlin_series(
        "Forecast (calendar)", cut, f"FREQ=WEEKLY;COUNT={12 - calendar_cut}"))  # fmt: skip
    counts = on.sync()
    assert (counts["problems"], counts["conflicts"]) == ([], 1)
    crm = {key_of(o): o["subject"] for a in on.series_ids() for o in on.occurrences(a)}
    calendar = _calendar_occurrences(await on.events())
    assert crm == calendar
    keys = [key_of(o) for o in listed]
    # Nothing lost: those before both splits as they were, those between the two
    # renamed on the side that split first alone, the rest renamed on both sides (the
    # conflict policy picks).
    early, late = sorted((crm_cut, calendar_cut))
    alone = "Forecast (CRM)" if crm_cut < calendar_cut else "Forecast (calendar)"
    winner = {"crm": "Forecast (CRM)", "calendar": "Forecast (calendar)"}[policy]
    assert [crm[k] for k in keys] == (
        ["Forecast"] * early + [alone] * (late - early) + [winner] * (12 - late)
    )
    # Each occurrence kept its id.
    ids = {o["id"] for a in on.series_ids() for o in on.occurrences(a)}
    assert ids == {o["id"] for o in listed}
    on.assert_settled()


@pytest.mark.parametrize("moved", [dt.timedelta(hours=5), dt.timedelta(days=1, hours=5)])
async def test_this_and_following_in_the_calendar_at_a_moved_start_and_title(
    on: Series, moved: dt.timedelta
) -> None:
    """A client that moves the following occurrences (09:00 to 14:00, or to the next
    day) and renames them while splitting: still a split, never a new series plus
    deletions."""
    made, counts = await _split_at_the_sixth_in_calendar(on, "Forecast call (new slot)", moved)
    first, listed, _ = made
    assert (counts["problems"], counts["deleted"]) == ([], 0)
    later = on.assert_split(first, listed, 5)
    assert [at(o["start"]) for o in later] == [at(o["start"]) + moved for o in listed[5:]]
    assert {o["subject"] for o in later} == {"Forecast call (new slot)"}
    _assert_the_note_kept_and_nothing_deleted(on, made)
    on.assert_settled()
    assert len(await on.events()) == 2


async def test_a_calendar_series_split_twice_at_moved_starts(on: Series) -> None:
    """Split again at an earlier occurrence, each new series at a new time: one CRM part
    per cut, each holding its calendar series' occurrences."""
    on.connect()
    _, listed, event_id = await on.synced_series(
        "Forecast", next_weekday_nine(2), "FREQ=WEEKLY;COUNT=12"
    )
    # First "this and following" at the ninth occurrence (to 14:00) ...
    late = at(listed[8]["original_start"])
    await on.split_in_calendar(event_id, late, berlin_series(
        "Forecast", late + dt.timedelta(hours=5), "FREQ=WEEKLY;COUNT=4"))  # fmt: skip
    # ... then at the fifth (to 11:00, ending before the first cut).
    early = at(listed[4]["original_start"])
    await on.split_in_calendar(event_id, early, berlin_series(
        "Forecast", early + dt.timedelta(hours=2), "FREQ=WEEKLY;COUNT=4"))  # fmt: skip
    counts = on.sync()
    assert (counts["problems"], counts["deleted"]) == ([], 0)
    parts = sorted(
        ([o["id"] for o in on.occurrences(s)] for s in on.series_ids()), key=lambda p: p[0]
    )
    assert parts == [
        [o["id"] for o in listed[:4]],
        [o["id"] for o in listed[4:8]],
        [o["id"] for o in listed[8:]],
    ]
    now = {o["id"]: at(o["start"]) for s in on.series_ids() for o in on.occurrences(s)}
    assert [now[o["id"]] - at(o["start"]) for o in listed] == (
        [dt.timedelta(0)] * 4 + [dt.timedelta(hours=2)] * 4 + [dt.timedelta(hours=5)] * 4
    )
    on.assert_settled()
    assert len(await on.events()) == 3


async def test_a_series_made_after_a_calendar_series_ended_stays_its_own(on: Series) -> None:
    """A series ended in the calendar and another one made there later (another title,
    weeks after the end) are no split: the ended occurrences go, the new series is new."""
    on.connect()
    first, listed, event_id = await on.synced_series(
        "Forecast call", next_weekday_nine(2), "FREQ=WEEKLY;COUNT=12"
    )
    cut = at(listed[5]["original_start"])
    await on.cut_in_calendar(event_id, cut)
    later = cut + dt.timedelta(weeks=3, days=1)
    await on.put_series(berlin_series("Board review", later, "FREQ=WEEKLY;COUNT=4"))
    counts = on.sync()
    assert counts["problems"] == []
    ids = on.series_ids()
    assert len(ids) == 2
    (other,) = ids - {first["series_id"]}
    assert [o["id"] for o in on.occurrences(first["series_id"])] == [o["id"] for o in listed[:5]]
    assert {o["id"] for o in on.occurrences(first["series_id"], deleted=True)} == {
        o["id"] for o in listed[5:]
    }
    made = on.occurrences(other)
    assert not {o["id"] for o in made} & {o["id"] for o in listed}
    assert {o["subject"] for o in made} == {"Board review"}
    on.assert_settled()


@pytest.fixture
async def on_google(request: pytest.FixtureRequest, sam: Api, admin: Api) -> AsyncIterator[Series]:
    async with opened_harness(request, "google") as made:
        yield Series(made, sam, admin)


async def test_a_google_split_is_known_by_its_id_wherever_it_starts(
    on_google: Series, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Google names the series a "this and following" made ``{old id}_R{date}``: that
    is the old one's continuation even when it starts weeks from where it was cut."""
    from crmcal.emulators.google import events as google_events

    # Only Google makes such ids (its own clients' splits); no API client may.
    valid = google_events.valid_id
    monkeypatch.setattr(google_events, "valid_id", lambda i: valid(i.split("_R")[0]))
    on = on_google
    on.connect()
    first, listed, event_id = await on.synced_series(
        "Forecast call", next_weekday_nine(2), "FREQ=WEEKLY;COUNT=12"
    )
    cut = at(listed[5]["original_start"])
    await on.cut_in_calendar(event_id, cut)
    moved = dt.timedelta(weeks=2, days=2)
    new_start = cut + moved
    await on.harness.api("POST", on.harness._events(), json={  # type: ignore[attr-defined]
        "id": f"{event_id}_R{cut.astimezone(UTC):%Y%m%dT%H%M%S}",
        "summary": "Quarterly forecast",
        "start": {"dateTime": new_start.isoformat(), "timeZone": "Europe/Berlin"},
        "end": {"dateTime": (new_start + dt.timedelta(hours=1)).isoformat(),
                "timeZone": "Europe/Berlin"},
        "recurrence": ["RRULE:FREQ=WEEKLY;COUNT=7"],
    })  # fmt: skip
    counts = on.sync()
    assert (counts["problems"], counts["deleted"]) == ([], 0)
    (other,) = on.series_ids() - {first["series_id"]}
    later = on.occurrences(other)
    assert [o["id"] for o in later] == [o["id"] for o in listed[5:]]
    assert [at(o["start"]) for o in later] == [at(o["start"]) + moved for o in listed[5:]]
    on.assert_settled()


async def _links_per_series(db_url: str) -> dict[int, int]:
    """How many links each CRM series has (on any of its occurrences)."""
    from crmcal.sync.tables import Link

    db = Database(db_url)
    try:
        async with db.read() as session:
            rows = await session.execute(
                select(ActivityRow.series_id, func.count(Link.id))
                .join(ActivityRow, ActivityRow.id == Link.activity_id)
                .where(ActivityRow.series_id.is_not(None))
                .group_by(ActivityRow.series_id)
            )
            return {s: count for s, count in rows.all() if s is not None}
    finally:
        await db.dispose()


async def test_a_split_on_both_sides_after_an_unfinished_sync_links_each_series_once(
    on: Series, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CRM's "this and following" went out as a series of its own, but the sync
    did not get to write the old series' new end (a calendar write refused: "changed
    while syncing"); meanwhile another client split the same series at the same
    occurrence. The next sync leaves one link per series, and one calendar series
    per CRM series."""
    from crmcal.sync import series_updates

    on.connect()
    _, listed, event_id = await on.synced_series(
        "Forecast", next_weekday_nine(2), "FREQ=WEEKLY;COUNT=12"
    )
    on.edit_activity(listed[5]["id"], subject="Forecast (new)", scope="following")
    push = series_updates.SeriesUpdates.push

    async def refused(self: Any, link: Any, *args: Any) -> Any:
        if link.remote_id == event_id:
            self.engine.report.problem(link.remote_id, "changed while syncing; will retry")
            return None
        return await push(self, link, *args)

    monkeypatch.setattr(series_updates.SeriesUpdates, "push", refused)
    answer = on.user.post(f"{V1}/connections/{on.connection_id}/sync")
    assert answer.status_code == 200, answer.text
    assert [p["reason"] for p in answer.json()["problems"]] == ["changed while syncing; will retry"]
    monkeypatch.setattr(series_updates.SeriesUpdates, "push", push)
    assert len(await on.events()) == 2
    cut = at(listed[5]["original_start"])
    await on.split_in_calendar(
        event_id, cut, berlin_series("Forecast (new)", cut, "FREQ=WEEKLY;COUNT=7")
    )
    counts = on.sync()
    assert counts["problems"] == []
    ids = on.series_ids()
    assert len(ids) == 2
    assert await _links_per_series(db_url) == {s: 1 for s in ids}
    assert _calendar_occurrences(await on.events()) == {
        key_of(o): o["subject"] for s in ids for o in on.occurrences(s)
    }
    on.assert_settled()


async def test_both_sides_split_after_the_first_occurrence_was_cancelled_in_the_crm(
    on: Series,
) -> None:
    """The calendar splits at the second occurrence, the CRM at the third and cancels
    the first: the old series' new rule makes no live occurrence, and the calendar's
    split is still one, each occurrence in one series on both sides."""
    on.connect()
    _, listed, event_id = await on.synced_series(
        "Forecast", next_weekday_nine(2), "FREQ=WEEKLY;COUNT=5"
    )
    on.edit_activity(listed[2]["id"], subject="Forecast (CRM)", scope="following")
    cut = at(listed[1]["original_start"])
    await on.split_in_calendar(
        event_id, cut, berlin_series("Forecast (calendar)", cut, "FREQ=WEEKLY;COUNT=4")
    )
    on.delete(listed[0]["id"])
    assert on.sync()["problems"] == []
    crm = {key_of(o): o["subject"] for a in on.series_ids() for o in on.occurrences(a)}
    assert crm == _calendar_occurrences(await on.events())
    assert sorted(crm) == sorted(key_of(o) for o in listed[1:])
    on.assert_settled()


# --- invitations ------------------------------------------------------------------------------


async def test_an_invited_series_is_never_written(on: Series) -> None:
    on.connect()
    event_id, series_id = await on.synced_invitation(
        "Partner sync", next_weekday_nine(4), "FREQ=WEEKLY;COUNT=6"
    )
    listed = on.occurrences(series_id)
    assert {o["organizer"] for o in listed} == {"lee@partner.example"}
    # The CRM's own fields stay editable; the organizer's are refused.
    on.edit_activity(listed[2]["id"], done=True, note="Ask about pricing")
    refused = on.user.patch(f"{V1}/activities/{listed[3]['id']}", json={"subject": "Mine"})
    assert refused.status_code == 409, refused.text
    (before,) = await on.provider.fetch(on.calendar_id, [event_id])
    assert on.sync()["updated"] == 0
    (after,) = await on.provider.fetch(on.calendar_id, [event_id])
    assert after.etag == before.etag  # never written
    # The organizer's changes arrive.
    await on.change_series(event_id, lambda e: dataclasses.replace(e, location="Their office"))
    assert on.sync()["updated"] == 1
    assert {o["location"] for o in on.occurrences(series_id)} == {"Their office"}
    assert on.activity(listed[2]["id"])["note"] == "Ask about pricing"
    (last,) = await on.provider.fetch(on.calendar_id, [event_id])
    assert last.event is not None
    assert last.event.location == "Their office"


async def test_an_invited_series_keeps_its_organizer_on_occurrences_made_later(
    on: Series, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from crmcal.jobs import maintenance

    monkeypatch.setenv("CRMCAL_SERIES_HORIZON_DAYS", "30")
    on.connect()
    event_id, series_id = await on.synced_invitation(
        "Partner weekly", next_weekday_nine(3), "FREQ=WEEKLY"
    )
    before = on.occurrences(series_id)
    # The horizon moves on (the daily job): the occurrences it makes are invitations too.
    monkeypatch.setenv("CRMCAL_SERIES_HORIZON_DAYS", "120")
    db = Database(db_url)
    try:
        assert await maintenance.extend_series_once(db) > 0
    finally:
        await db.dispose()
    listed = on.occurrences(series_id)
    assert len(listed) > len(before)
    assert {o["organizer"] for o in listed} == {"lee@partner.example"}
    later = listed[-1]
    refused = on.user.patch(f"{V1}/activities/{later['id']}", json={"subject": "Mine"})
    assert refused.status_code == 409, refused.text
    on.edit_activity(later["id"], note="Bring the contract")
    (found,) = await on.provider.fetch(on.calendar_id, [event_id])
    counts = on.sync()
    assert (counts["updated"], counts["problems"]) == (0, [])
    (after,) = await on.provider.fetch(on.calendar_id, [event_id])
    assert after.etag == found.etag  # never written


# --- daylight saving and all-day ----------------------------------------------------------


async def test_a_calendar_series_stays_at_nine_across_both_switches(on: Series) -> None:
    on.connect()
    start, rule = crossing_both_switches()
    _, series_id = await on.synced_calendar_series(berlin_series("Team meeting", start, rule))
    starts = [at(o["start"]) for o in on.occurrences(series_id)]
    assert len(starts) == 48
    assert {s.astimezone(BERLIN).time() for s in starts} == {dt.time(9)}
    assert offsets(starts) == {dt.timedelta(hours=1), dt.timedelta(hours=2)}
    assert starts[-1].astimezone(BERLIN).utcoffset() == dt.timedelta(hours=1)
    # One summer occurrence moved to 10:00 there: that one alone, at 10:00 local.
    listed = on.occurrences(series_id)
    summer = next(o for o in listed if offsets([at(o["start"])]) == {dt.timedelta(hours=2)})
    ten = at(summer["original_start"]) + dt.timedelta(hours=1)
    (event_id, _) = await on.only_series()
    await on.change_series(event_id, lambda e: dataclasses.replace(e, overrides=(
        occurrence_of(e, at(summer["original_start"]), start=ten, end=ten + HOUR),
    )))  # fmt: skip
    assert on.sync()["updated"] == 1
    local = {o["id"]: at(o["start"]).astimezone(BERLIN) for o in on.occurrences(series_id)}
    assert local.pop(summer["id"]).time() == dt.time(10)
    assert {s.time() for s in local.values()} == {dt.time(9)}


async def test_an_all_day_yearly_series_stays_on_its_date(
    on: Series, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRMCAL_SERIES_HORIZON_DAYS", "1200")  # every occurrence made
    on.connect()
    day = dt.date.today() + dt.timedelta(days=30)
    if (day.month, day.day) == (2, 29):
        day += dt.timedelta(days=1)
    on.add_series("Contract renewal", day, "FREQ=YEARLY;COUNT=3")
    assert on.sync()["created"] == 1
    _, event = await on.only_series()
    assert (event.all_day, event.start) == (True, day)
    # Both ways: one made in the calendar too.
    other_day = day + dt.timedelta(days=3)
    await on.put_series(CalendarEvent(
        summary="Anniversary", start=other_day, end=other_day + dt.timedelta(days=1),
        all_day=True, recurrence=Recurrence("FREQ=YEARLY;COUNT=3"),
    ))  # fmt: skip
    assert on.sync()["created"] == 1
    found = {}
    for series_id in on.series_ids():
        listed = on.occurrences(series_id)
        assert all(o["all_day"] for o in listed)
        found[listed[0]["subject"]] = [dt.date.fromisoformat(o["start"]) for o in listed]
    assert found == {
        "Contract renewal": [day.replace(year=day.year + n) for n in range(3)],
        "Anniversary": [other_day.replace(year=other_day.year + n) for n in range(3)],
    }
    # Its second year moved a day in the calendar: that date alone, all day.
    event_id, event = next(
        (i, e) for i, e in (await on.events()).items() if e.summary == "Contract renewal"
    )
    second = day.replace(year=day.year + 1)
    await on.change_series(event_id, lambda e: dataclasses.replace(e, overrides=(
        occurrence_of(e, second, start=second + dt.timedelta(days=1),
                      end=second + dt.timedelta(days=2)),
    )))  # fmt: skip
    assert on.sync()["updated"] == 1
    series_id = next(a["series_id"] for a in on.activities()
                     if a["subject"] == "Contract renewal")  # fmt: skip
    dates = [dt.date.fromisoformat(o["start"]) for o in on.occurrences(series_id)]
    assert dates == [day, second + dt.timedelta(days=1), day.replace(year=day.year + 2)]


# --- what one change costs ------------------------------------------------------------------


async def _rows(db_url: str, since: dt.datetime) -> tuple[int, int]:
    """(activities changed since ``since``, rows in the CRM's change feed)."""
    db = Database(db_url)
    try:
        async with db.read() as session:
            changed = await session.scalar(
                select(func.count(ActivityRow.id)).where(ActivityRow.updated_at > since)
            )
            feed = await session.scalar(select(func.count()).select_from(ActivityChange))
        return int(changed or 0), int(feed or 0)
    finally:
        await db.dispose()


async def test_one_occurrence_of_a_five_year_daily_series_costs_one_put(
    proxied_series: ProxiedSeries,
    behaviour: Behaviour,
    db_url: str,
) -> None:
    """Editing one occurrence costs a handful of requests and one write of the one
    resource, whichever side it is made on: never a request or a row per occurrence."""
    proxied_series.connect()
    first = proxied_series.add_series(
        "Daily standup", next_weekday_nine(0), "FREQ=DAILY;COUNT=1826", dt.timedelta(minutes=15)
    )
    series_id = first["series_id"]
    assert proxied_series.sync()["created"] == 1
    assert behaviour.count("PUT") == 1
    occurrences = proxied_series.occurrences(series_id)
    assert len(occurrences) >= 360  # up to the horizon, a year ahead

    # In the CRM: one occurrence retitled.
    proxied_series.edit_activity(occurrences[100]["id"], subject="Standup with the board")
    behaviour.requests.clear()
    since = dt.datetime.now(UTC)
    _, feed = await _rows(db_url, since)
    counts = proxied_series.sync()
    assert (counts["updated"], counts["created"], counts["deleted"]) == (1, 0, 0)
    assert behaviour.count("PUT") == 1
    assert sum(behaviour.requests.values()) <= 5, behaviour.requests
    assert await _rows(db_url, since) == (0, feed)  # nothing written to the CRM
    ((event_id, event),) = (await proxied_series.events()).items()
    assert [o.summary for o in event.overrides] == ["Standup with the board"]

    # In the calendar: another occurrence retitled by another client.
    target = occurrences[200]

    def retitled(master: CalendarEvent) -> CalendarEvent:
        moment = at(target["original_start"])
        override = occurrence_of(master, moment, summary="Standup (offsite)", start=moment,
                                 end=moment + dt.timedelta(minutes=15))  # fmt: skip
        return dataclasses.replace(master, overrides=(*master.overrides, override))

    await proxied_series.change_series(event_id, retitled)
    behaviour.requests.clear()
    since = dt.datetime.now(UTC)
    counts = proxied_series.sync()
    assert (counts["updated"], counts["created"], counts["deleted"]) == (1, 0, 0)
    assert behaviour.count("PUT") == 0
    assert sum(behaviour.requests.values()) <= 4, behaviour.requests
    assert await _rows(db_url, since) == (1, feed + 1)  # one occurrence, one feed row
    assert proxied_series.activity(target["id"])["subject"] == "Standup (offsite)"


# --- the whole series moved, its exceptions carried -------------------------------------


def _kept_at_new_times(event: CalendarEvent, expected: dict[str, str]) -> None:
    """``event``'s live overrides are exactly ``expected`` (moment key -> title)."""
    assert {k: o.summary for k, o in event.live_overrides().items()} == expected


async def test_a_series_moved_in_the_crm_carries_the_calendars_exceptions(on: Series) -> None:
    on.connect()
    start = next_weekday_nine(1)
    event_id, series_id = await on.synced_calendar_series(
        berlin_series("Team call", start, "FREQ=WEEKLY;COUNT=8")
    )
    listed = on.occurrences(series_id)
    third, fifth = listed[2], listed[4]

    def with_exceptions(event: CalendarEvent) -> CalendarEvent:
        renamed = occurrence_of(event, at(third["original_start"]), summary="Team call (board)",
                                start=at(third["start"]), end=at(third["end"]))  # fmt: skip
        cancelled = cancelled_occurrence(event, at(fifth["original_start"]))
        return dataclasses.replace(event, overrides=(renamed, cancelled))

    await on.change_series(event_id, with_exceptions)
    assert on.sync()["updated"] == 1
    assert on.activity(third["id"])["subject"] == "Team call (board)"

    # 09:00 -> 10:00 on every occurrence, in the CRM.
    later = start + dt.timedelta(hours=1)
    on.edit_activity(listed[0]["id"], scope="series", start=later.isoformat(),
                     end=(later + dt.timedelta(hours=1)).isoformat())  # fmt: skip
    counts = on.sync()
    assert (counts["updated"], counts["problems"]) == (1, [])
    _, event = await on.only_series()
    assert event.start == later
    hour = dt.timedelta(hours=1)
    _kept_at_new_times(event, {moment_key(at(third["original_start"]) + hour): "Team call (board)"})
    (override,) = event.live_overrides().values()
    assert override.start == at(third["start"]) + hour
    assert [moment_key(m) for m in event.cancelled_moments()] == [
        moment_key(at(fifth["original_start"]) + hour)
    ]
    # The CRM: the cancelled occurrence stays cancelled, nothing is doubled.
    assert len(on.occurrences(series_id)) == 7
    assert [o["id"] for o in on.occurrences(series_id, deleted=True)] == [fifth["id"]]
    on.assert_settled()


async def test_a_series_moved_in_the_calendar_carries_the_crms_exceptions(on: Series) -> None:
    on.connect()
    start = next_weekday_nine(2)
    first = on.add_series("Pipeline", start, "FREQ=WEEKLY;COUNT=8")
    series_id = first["series_id"]
    assert on.sync()["created"] == 1
    listed = on.occurrences(series_id)
    third, fifth = listed[2], listed[4]
    on.edit_activity(third["id"], subject="Pipeline (board)")
    on.delete(fifth["id"])
    assert on.sync()["updated"] == 1
    event_id, _ = await on.only_series()

    # Another client moves the series an hour later and writes only its master (as
    # Google and Outlook do, its exceptions are left behind or dropped there).
    hour = dt.timedelta(hours=1)

    def moved(event: CalendarEvent) -> CalendarEvent:
        assert isinstance(event.start, dt.datetime)
        assert isinstance(event.end, dt.datetime)
        assert event.recurrence is not None
        return dataclasses.replace(
            event, start=event.start + hour, end=event.end + hour, overrides=(),
            recurrence=dataclasses.replace(event.recurrence, exdates=()),
        )  # fmt: skip

    await on.change_series(event_id, moved)
    counts = on.sync()
    assert counts["problems"] == []
    _, event = await on.only_series()
    assert event.start == start + hour
    _kept_at_new_times(event, {moment_key(at(third["original_start"]) + hour): "Pipeline (board)"})
    assert [moment_key(m) for m in event.cancelled_moments()] == [
        moment_key(at(fifth["original_start"]) + hour)
    ]
    occurrence = on.activity(third["id"])
    assert (occurrence["subject"], at(occurrence["start"])) == (
        "Pipeline (board)", at(third["start"]) + hour,
    )  # fmt: skip
    assert len(on.occurrences(series_id)) == 7
    assert [o["id"] for o in on.occurrences(series_id, deleted=True)] == [fifth["id"]]
    on.assert_settled()


async def test_an_occurrence_moved_across_the_switch_follows_its_series_once(
    on: Series,
) -> None:
    """The Tuesday before a daylight-saving switch moved in the calendar to the Monday
    after it (the same 09:00 on the wall, another UTC offset), then the whole series
    moved an hour later in the CRM: the moved occurrence goes with it as the one
    exception of its new original start, never beside a copy of itself."""
    on.connect()
    start = tuesday_nine_before_switch()
    event_id, series_id = await on.synced_calendar_series(
        berlin_series("Board prep", start, "FREQ=WEEKLY;COUNT=6")
    )
    listed = on.occurrences(series_id)
    third = listed[3]  # the Tuesday before the switch
    original = at(third["original_start"])
    monday = (original + dt.timedelta(days=6)).astimezone(BERLIN)
    monday = monday.replace(hour=9)  # the wall-clock time, after the switch
    assert monday.utcoffset() != original.astimezone(BERLIN).utcoffset()
    await on.change_series(event_id, lambda e: dataclasses.replace(e, overrides=(
        occurrence_of(e, original, start=monday, end=monday + HOUR),
    )))  # fmt: skip
    assert on.sync()["updated"] == 1
    assert at(on.activity(third["id"])["start"]) == monday

    later = start + HOUR
    on.edit_activity(listed[0]["id"], scope="series", start=later.isoformat(),
                     end=(later + HOUR).isoformat())  # fmt: skip
    counts = on.sync()
    assert (counts["updated"], counts["problems"]) == (1, [])
    _, event = await on.only_series()
    assert event.start == later
    (key, override), *others = event.live_overrides().items()
    assert others == []
    assert key == moment_key(original + HOUR)
    assert override.start in (monday, monday + HOUR)  # kept, or moved with its series
    starts = [at(o["start"]) for o in on.occurrences(series_id)]
    assert len(starts) == 6 == len(set(starts))
    assert at(on.activity(third["id"])["start"]) == override.start
    on.assert_settled()


async def test_a_series_the_calendar_does_not_answer_for_is_neither_gone_nor_sent_again(
    proxied_series: ProxiedSeries,
    behaviour: Behaviour,
) -> None:
    proxied_series.connect()
    first = proxied_series.add_series(
        "Weekly review", next_weekday_nine(0), "FREQ=WEEKLY;COUNT=10", dt.timedelta(minutes=30)
    )
    assert proxied_series.sync()["created"] == 1
    ((event_id, _),) = (await proxied_series.events()).items()
    occurrences = proxied_series.occurrences(first["series_id"])
    proxied_series.edit_activity(occurrences[3]["id"], subject="Review with the board")
    # Writing one occurrence reads the series as it is now: the server does not answer.
    behaviour.partial = {("calendar-multiget", event_id.rsplit("/", 1)[1]): 500}
    behaviour.requests.clear()
    counts = proxied_series.sync_with_problems()
    assert (counts["created"], counts["deleted"]) == (0, 0)
    assert [p["item"] for p in counts["problems"]] == [event_id]
    assert behaviour.count("PUT") == 0
    assert len(await proxied_series.events()) == 1
    # It answers again: the occurrence is written to the one series.
    behaviour.partial.clear()
    counts = proxied_series.sync_with_problems()
    assert counts["problems"] == []
    assert (counts["created"], counts["deleted"]) == (0, 0)
    ((same_id, event),) = (await proxied_series.events()).items()
    assert same_id == event_id
    assert [o.summary for o in event.overrides] == ["Review with the board"]
