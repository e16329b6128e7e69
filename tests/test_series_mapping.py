"""A CRM series <-> one calendar series: the master, its exceptions, its left-out dates,
and what a service that cannot hold a rule gets instead (pure functions)."""

from __future__ import annotations

import datetime as dt

from crmcal.crm.tables import Activity, ActivitySeries, User
from crmcal.model import CalendarEvent, Recurrence
from crmcal.providers import kinds
from crmcal.sync.options import SyncOptions
from crmcal.sync.series_mapping import events_to_series, nearest_rule, series_to_events

OWNER = User(id=1, email="alice@crm.test", name="Alice", timezone="Europe/Berlin")
UTC = dt.UTC


def weekly() -> ActivitySeries:
    return ActivitySeries(
        id=7, uid="s" * 32, owner_id=1, rrule="FREQ=WEEKLY;COUNT=10", rdates=[],
        exdates=["2027-01-19T08:00:00Z"], timezone="Europe/Berlin", all_day=False,
        start_at=dt.datetime(2027, 1, 5, 8, tzinfo=UTC),
        end_at=dt.datetime(2027, 1, 5, 9, tzinfo=UTC), type="meeting", subject="Weekly",
        location="Room 4", note=None, busy=True, visibility="everyone", reminder_minutes=15,
        notify_participants=False, participants=[{"email": "ann@acme.test", "name": "Ann"}],
    )  # fmt: skip


def occurrence(start: dt.datetime, **fields: object) -> Activity:
    values: dict[str, object] = dict(
        uid=f"o{start:%m%d}".ljust(32, "0"), type="meeting", subject="Weekly", all_day=False,
        start_at=start, end_at=start + dt.timedelta(hours=1), timezone="Europe/Berlin",
        location="Room 4", note=None, busy=True, visibility="everyone", owner_id=1,
        reminder_minutes=15, notify_participants=False, series_id=7,
        original_start_at=start, overrides=None, deleted_at=None,
    )  # fmt: skip
    values.update(fields)
    return Activity(**values)


def test_a_series_goes_out_as_one_master_with_its_exceptions_and_left_out_dates() -> None:
    moved = occurrence(
        dt.datetime(2027, 1, 12, 8, tzinfo=UTC),
        subject="Review",
        start_at=dt.datetime(2027, 1, 12, 10, tzinfo=UTC),
        overrides=["subject"],
    )
    trashed = occurrence(
        dt.datetime(2027, 1, 26, 8, tzinfo=UTC), deleted_at=dt.datetime(2027, 1, 1, tzinfo=UTC)
    )
    plain = occurrence(dt.datetime(2027, 2, 2, 8, tzinfo=UTC))  # fmt: skip
    out = series_to_events(weekly(), [moved, trashed, plain], OWNER)
    master = out.master
    assert master.crm_id == "s" * 32
    assert master.recurrence is not None
    assert master.recurrence.rrule == "FREQ=WEEKLY;COUNT=10"
    assert master.recurrence.exdates == (
        dt.datetime(2027, 1, 19, 8, tzinfo=UTC),
        dt.datetime(2027, 1, 26, 8, tzinfo=UTC),
    )
    assert master.start == dt.datetime(2027, 1, 5, 8, tzinfo=UTC)
    assert [a.email for a in master.attendees] == ["ann@acme.test"]
    (exception,) = out.exceptions
    assert exception.recurrence_id == dt.datetime(2027, 1, 12, 8, tzinfo=UTC)
    assert (exception.summary, exception.start) == (
        "Review",
        dt.datetime(2027, 1, 12, 10, tzinfo=UTC),
    )


def test_an_all_day_series_leaves_out_dates_not_instants() -> None:
    yearly = weekly()
    yearly.all_day, yearly.rrule, yearly.exdates = True, "FREQ=YEARLY", []
    yearly.start_date, yearly.end_date = dt.date(2026, 12, 24), dt.date(2026, 12, 25)
    trashed = occurrence(dt.datetime(2027, 12, 23, 23, tzinfo=UTC), all_day=True,
                         deleted_at=dt.datetime(2027, 1, 1, tzinfo=UTC))  # fmt: skip
    master = series_to_events(yearly, [trashed], OWNER).master
    assert master.start == dt.date(2026, 12, 24)
    assert master.recurrence is not None
    assert master.recurrence.exdates == (dt.date(2027, 12, 24),)


def test_a_calendar_series_comes_in_as_series_fields_of_the_incoming_type() -> None:
    tz = dt.timezone(dt.timedelta(hours=1))
    master = CalendarEvent(
        summary="Standup", start=dt.datetime(2027, 1, 4, 9, tzinfo=tz),
        end=dt.datetime(2027, 1, 4, 9, 15, tzinfo=tz), timezone="Europe/Berlin",
        recurrence=Recurrence("FREQ=DAILY;BYDAY=MO,TU,WE,TH,FR",
                              exdates=(dt.datetime(2027, 1, 6, 9, tzinfo=tz),)),
    )  # fmt: skip
    cancelled = CalendarEvent(
        summary=None,
        start=dt.datetime(2027, 1, 7, 9, tzinfo=tz),
        end=None,
        cancelled=True,
        recurrence_id=dt.datetime(2027, 1, 7, 9, tzinfo=tz),
    )
    moved = CalendarEvent(summary="Standup (late)", start=dt.datetime(2027, 1, 8, 11, tzinfo=tz),
                          end=dt.datetime(2027, 1, 8, 11, 15, tzinfo=tz), timezone="Europe/Berlin",
                          recurrence_id=dt.datetime(2027, 1, 8, 9, tzinfo=tz))  # fmt: skip
    options = SyncOptions(incoming_activity_type="call")
    found = events_to_series(master, [cancelled, moved], OWNER, options)
    assert found.fields["type"] == "call"
    assert found.fields["recurrence"] == "FREQ=DAILY;BYDAY=MO,TU,WE,TH,FR"
    assert found.fields["exdates"] == ["2027-01-06T09:00:00+01:00", "2027-01-07T09:00:00+01:00"]
    assert found.fields["subject"] == "Standup"
    ((original, changes),) = found.changed.items()
    assert original == "2027-01-08T09:00:00+01:00"
    assert changes["subject"] == "Standup (late)"
    assert changes["start"] == "2027-01-08T11:00:00+01:00"
    assert "location" not in changes


GRAPH = kinds.MICROSOFT.capabilities


def test_graph_gets_the_nearest_rule_and_every_difference_is_said() -> None:
    rule = Recurrence("FREQ=MONTHLY;BYMONTHDAY=1,15;COUNT=1500",
                      rdates=(dt.datetime(2027, 3, 3, 9, tzinfo=UTC),))  # fmt: skip
    found = nearest_rule(GRAPH, rule, service="Microsoft 365")
    assert found.recurrence is not None
    assert found.recurrence.rrule == "FREQ=MONTHLY;BYMONTHDAY=1;COUNT=999"
    assert found.recurrence.rdates == ()
    assert [d.split(":")[0] for d in found.differences] == ["BYMONTHDAY", "COUNT", "RDATE"]
    assert "2027-03-03T09:00:00+00:00" in found.differences[2]


def test_graph_gets_nothing_for_a_frequency_it_has_no_pattern_for() -> None:
    found = nearest_rule(GRAPH, Recurrence("FREQ=HOURLY;COUNT=5"), service="Microsoft 365")
    assert found.recurrence is None
    assert found.differences == (
        "FREQ=HOURLY: Microsoft 365 has no hourly series: not written there",
    )


def test_what_a_service_holds_is_written_as_it_is() -> None:
    rule = Recurrence("FREQ=WEEKLY;BYDAY=TU;COUNT=10", rdates=(dt.date(2027, 1, 1),))
    assert nearest_rule(kinds.GOOGLE.capabilities, rule) == nearest_rule(
        kinds.CALDAV.capabilities, rule
    )
    assert nearest_rule(kinds.GOOGLE.capabilities, rule).recurrence == rule
