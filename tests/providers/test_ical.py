"""The iCalendar codec (``crmcal.providers.ical``): reading, writing, and the round trip."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import uuid
from typing import Any
from zoneinfo import ZoneInfo

import icalendar
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crmcal.model import ALL_FIELDS, Attendee, CalendarEvent, Recurrence, changed_fields
from crmcal.providers.ical.patch import patch_event
from crmcal.providers.ical.read import parse_event, resource_uid
from crmcal.providers.ical.serialize import serialize_event
from tests.providers.harness import meeting

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
ZONES = ["Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe", "UTC"]


def vcalendar(*body: str, extra: str = "") -> str:
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//test//test//EN", *extra.splitlines()]
    return "\r\n".join([*lines, *body, "END:VCALENDAR", ""])


def vevent(*props: str, uid: str = "e1", stamp: bool = True) -> str:
    lines = ["BEGIN:VEVENT", f"UID:{uid}"]
    if stamp:
        lines.append("DTSTAMP:20260101T000000Z")
    return "\r\n".join([*lines, *props, "END:VEVENT"])


def parse(*props: str, default_tz: str | None = "UTC") -> CalendarEvent:
    event = parse_event(vcalendar(vevent(*props)), default_tz=default_tz)
    assert event is not None
    return event


# --- reading ----------------------------------------------------------------------


def test_timed_event_in_an_iana_zone() -> None:
    event = parse(
        "SUMMARY:Demo\\, with ACME",
        "DTSTART;TZID=Europe/Berlin:20261201T100000",
        "DTEND;TZID=Europe/Berlin:20261201T113000",
        "LOCATION:Room 4",
        "DESCRIPTION:line one\\nline two\\; three\\\\",
        "LAST-MODIFIED:20261120T080000Z",
    )
    assert event.summary == "Demo, with ACME"
    assert event.start == dt.datetime(2026, 12, 1, 10, tzinfo=BERLIN)
    assert event.end == dt.datetime(2026, 12, 1, 11, 30, tzinfo=BERLIN)
    assert event.timezone == "Europe/Berlin"
    assert not event.all_day
    assert event.location == "Room 4"
    assert event.description == "line one\nline two; three\\"
    assert event.last_modified == dt.datetime(2026, 11, 20, 8, tzinfo=dt.UTC)
    assert event.uid == "e1"
    assert (event.private, event.busy, event.cancelled) == (False, True, False)


def test_utc_and_floating_times() -> None:
    utc = parse("DTSTART:20260101T100000Z")
    assert utc.start == dt.datetime(2026, 1, 1, 10, tzinfo=dt.UTC)
    assert utc.timezone == "UTC"
    assert utc.end is None  # timed without DTEND or DURATION: no end
    floating = parse("DTSTART:20260101T100000", default_tz="America/New_York")
    assert floating.start == dt.datetime(2026, 1, 1, 10, tzinfo=NEW_YORK)
    assert floating.timezone == "America/New_York"
    # A calendar-wide zone (Google exports) beats the default.
    text = vcalendar(vevent("DTSTART:20260101T100000"), extra="X-WR-TIMEZONE:Europe/Berlin")
    calendar_wide = parse_event(text, default_tz="America/New_York")
    assert calendar_wide is not None
    assert calendar_wide.timezone == "Europe/Berlin"


def test_last_modified_falls_back_to_dtstamp() -> None:
    assert parse("DTSTART:20260101T100000Z").last_modified == dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("tzid", "key"),
    [
        ("W. Europe Standard Time", "Europe/Berlin"),
        ("/mozilla.org/20050126_1/America/New_York", "America/New_York"),
        ("/Europe/Berlin", "Europe/Berlin"),
        ("Etc/UTC", "UTC"),
    ],
)
def test_tzid_spellings_resolve_to_iana(tzid: str, key: str) -> None:
    event = parse(f"DTSTART;TZID={tzid}:20260701T100000")
    assert event.timezone == key
    assert isinstance(event.start, dt.datetime)
    assert event.start.utcoffset() == dt.datetime(2026, 7, 1, 10, tzinfo=ZoneInfo(key)).utcoffset()


def test_a_zone_known_only_from_its_vtimezone() -> None:
    vtimezone = "\r\n".join(
        [
            "BEGIN:VTIMEZONE",
            "TZID:Customized Time Zone",
            "BEGIN:STANDARD",
            "DTSTART:16010101T030000",
            "TZOFFSETFROM:+0200",
            "TZOFFSETTO:+0100",
            "RRULE:FREQ=YEARLY;BYDAY=-1SU;BYMONTH=10",
            "END:STANDARD",
            "BEGIN:DAYLIGHT",
            "DTSTART:16010101T020000",
            "TZOFFSETFROM:+0100",
            "TZOFFSETTO:+0200",
            "RRULE:FREQ=YEARLY;BYDAY=-1SU;BYMONTH=3",
            "END:DAYLIGHT",
            "END:VTIMEZONE",
        ]
    )
    event = parse_event(
        vcalendar(vtimezone, vevent("DTSTART;TZID=Customized Time Zone:20260701T100000"))
    )
    assert event is not None
    assert isinstance(event.start, dt.datetime)
    assert event.start.astimezone(dt.UTC) == dt.datetime(2026, 7, 1, 8, tzinfo=dt.UTC)
    assert event.timezone is None  # no IANA name to give


OUTLOOK_ZONE = "(UTC+01:00) Amsterdam, Berlin, Bern, Rome, Stockholm, Vienna"


def outlook_vtimezone(tzid: str = OUTLOOK_ZONE) -> str:
    """A VTIMEZONE as Outlook writes it: named for people, with 1601 rules."""
    return "\r\n".join([
        "BEGIN:VTIMEZONE", f"TZID:{tzid}", "BEGIN:STANDARD", "DTSTART:16010101T030000",
        "TZOFFSETFROM:+0200", "TZOFFSETTO:+0100",
        "RRULE:FREQ=YEARLY;INTERVAL=1;BYDAY=-1SU;BYMONTH=10", "END:STANDARD",
        "BEGIN:DAYLIGHT", "DTSTART:16010101T020000", "TZOFFSETFROM:+0100", "TZOFFSETTO:+0200",
        "RRULE:FREQ=YEARLY;INTERVAL=1;BYDAY=-1SU;BYMONTH=3", "END:DAYLIGHT", "END:VTIMEZONE",
    ])  # fmt: skip


def test_a_vtimezone_whose_tzid_escapes_its_commas_is_the_zone_its_events_name() -> None:
    # RFC 5545: TZID is TEXT, so a strict writer escapes the commas of Outlook's name;
    # the TZID parameters that name it do not (a parameter value is quoted instead).
    escaped = outlook_vtimezone(OUTLOOK_ZONE.replace(",", "\\,"))
    event = parse_event(vcalendar(
        escaped, vevent(f'DTSTART;TZID="{OUTLOOK_ZONE}":20270701T100000'),
    ))  # fmt: skip
    assert event is not None
    assert isinstance(event.start, dt.datetime)
    # Summer time, as the VTIMEZONE says; not the "+01:00" its name spells.
    assert event.start.astimezone(dt.UTC) == dt.datetime(2027, 7, 1, 8, tzinfo=dt.UTC)


def test_all_day_events() -> None:
    event = parse("DTSTART;VALUE=DATE:20261224", "DTEND;VALUE=DATE:20261227")
    assert event.all_day
    assert (event.start, event.end) == (dt.date(2026, 12, 24), dt.date(2026, 12, 27))
    assert event.timezone is None
    # No DTEND: one day.
    assert parse("DTSTART;VALUE=DATE:20261224").end == dt.date(2026, 12, 25)
    assert parse("DTSTART;VALUE=DATE:20261224", "DURATION:P2D").end == dt.date(2026, 12, 26)


def test_duration_is_nominal_in_days_and_exact_in_hours() -> None:
    # 2026-03-29 is the spring DST change in Berlin.
    day = parse("DTSTART;TZID=Europe/Berlin:20260328T100000", "DURATION:P1D")
    assert day.end == dt.datetime(2026, 3, 29, 10, tzinfo=BERLIN)
    hours = parse("DTSTART;TZID=Europe/Berlin:20260328T100000", "DURATION:PT24H")
    assert hours.end == dt.datetime(2026, 3, 29, 11, tzinfo=BERLIN)


def test_privacy_busy_status_and_crm_properties() -> None:
    event = parse(
        "DTSTART:20260101T100000Z",
        "CLASS:CONFIDENTIAL",
        "TRANSP:TRANSPARENT",
        "STATUS:CANCELLED",
        "X-CRMCAL-ACTIVITY-ID:abc123",
        "X-CRMCAL-TYPE:meeting",
    )
    assert (event.private, event.busy, event.cancelled) == (True, False, True)
    assert (event.crm_id, event.crm_type) == ("abc123", "meeting")
    assert parse("DTSTART:20260101T100000Z", "CLASS:PUBLIC").private is False


def test_first_display_alarm_before_the_start_is_the_reminder() -> None:
    alarms = [
        "BEGIN:VALARM\r\nACTION:AUDIO\r\nTRIGGER:-PT5M\r\nEND:VALARM",
        "BEGIN:VALARM\r\nACTION:DISPLAY\r\nTRIGGER;VALUE=DATE-TIME:20260101T090000Z\r\nEND:VALARM",
        "BEGIN:VALARM\r\nACTION:DISPLAY\r\nTRIGGER;RELATED=END:-PT1M\r\nEND:VALARM",
        "BEGIN:VALARM\r\nACTION:DISPLAY\r\nTRIGGER:PT10M\r\nEND:VALARM",
        "BEGIN:VALARM\r\nACTION:DISPLAY\r\nDESCRIPTION:x\r\nTRIGGER:-P1DT2H\r\nEND:VALARM",
        "BEGIN:VALARM\r\nACTION:DISPLAY\r\nTRIGGER:-PT15M\r\nEND:VALARM",
    ]
    assert parse("DTSTART:20260101T100000Z", *alarms).reminder_minutes == 26 * 60
    assert parse("DTSTART:20260101T100000Z", *alarms[:4]).reminder_minutes is None


def test_attendees_and_organizer() -> None:
    event = parse(
        "DTSTART:20260101T100000Z",
        'ORGANIZER;CN="Boss":mailto:boss@acme.test',
        "ATTENDEE;CN=\"Ann ^'A^' Lee\";PARTSTAT=ACCEPTED:mailto:ann@acme.test",
        "ATTENDEE;PARTSTAT=DECLINED;CN=Bob:MAILTO:bob@acme.test",
        "ATTENDEE;PARTSTAT=TENTATIVE:mailto:carl@acme.test",
        "ATTENDEE;PARTSTAT=DELEGATED:mailto:dora@acme.test",
        "ATTENDEE;CUTYPE=ROOM;CN=Room 4:mailto:room4@acme.test",
        "ATTENDEE;CN=Phone:tel:+123",
        'ATTENDEE;EMAIL="eve@acme.test":urn:uuid:1234',
    )
    assert event.organizer == "boss@acme.test"
    assert event.attendees == (
        Attendee("ann@acme.test", 'Ann "A" Lee', "accepted"),
        Attendee("bob@acme.test", "Bob", "declined"),
        Attendee("carl@acme.test", None, "tentative"),
        Attendee("dora@acme.test", None, "needs_action"),
        Attendee("room4@acme.test", "Room 4", "needs_action", resource=True),
        Attendee("eve@acme.test", None, "needs_action"),
    )


def test_folded_lines_and_quoted_parameters() -> None:
    text = (
        "BEGIN:VCALENDAR\nVERSION:2.0\nBEGIN:VEVENT\nUID:x\nDTSTART:20260101T100000Z\n"
        "SUMMARY:a long\n  title\n\t that folds\n"
        'ATTENDEE;CN="Lee; Ann: Sales, EU";PARTSTAT=ACCEPTED:mailto:a@b.test\n'
        "END:VEVENT\nEND:VCALENDAR\n"
    )
    event = parse_event(text)
    assert event is not None
    assert event.summary == "a long title that folds"
    assert event.attendees[0].name == "Lee; Ann: Sales, EU"


def test_recurring_series_with_overrides_is_its_master() -> None:
    text = vcalendar(
        vevent(
            "SUMMARY:Moved occurrence",
            "RECURRENCE-ID;TZID=Europe/Berlin:20260112T090000",
            "DTSTART;TZID=Europe/Berlin:20260112T110000",
        ),
        vevent(
            "SUMMARY:Weekly",
            "DTSTART;TZID=Europe/Berlin:20260105T090000",
            "DTEND;TZID=Europe/Berlin:20260105T093000",
            "RRULE:FREQ=WEEKLY;COUNT=10",
            "EXDATE;TZID=Europe/Berlin:20260119T090000,20260126T090000",
            "RDATE;VALUE=DATE-TIME:20260301T090000Z",
        ),
        vevent(
            "STATUS:CANCELLED",
            "RECURRENCE-ID;TZID=Europe/Berlin:20260202T090000",
            "DTSTART;TZID=Europe/Berlin:20260202T090000",
        ),
    )
    event = parse_event(text)
    assert event is not None
    assert event.summary == "Weekly"
    assert event.recurring
    assert event.recurrence_id is None
    assert event.recurrence == Recurrence(
        rrule="FREQ=WEEKLY;COUNT=10",
        exdates=(
            dt.datetime(2026, 1, 19, 9, tzinfo=BERLIN),
            dt.datetime(2026, 1, 26, 9, tzinfo=BERLIN),
            dt.datetime(2026, 2, 2, 9, tzinfo=BERLIN),  # the cancelled override
        ),
        rdates=(dt.datetime(2026, 3, 1, 9, tzinfo=dt.UTC),),
    )
    # The occurrence changed on its own travels with its master.
    (moved,) = event.overrides
    assert moved.summary == "Moved occurrence"
    assert moved.recurrence_id == dt.datetime(2026, 1, 12, 9, tzinfo=BERLIN)
    assert moved.start == dt.datetime(2026, 1, 12, 11, tzinfo=BERLIN)
    assert moved.recurrence is None
    assert event.changed_occurrences == 1


def weekly_with_overrides() -> CalendarEvent:
    def at(day: int, hour: int) -> dt.datetime:
        return dt.datetime(2026, 10, day, hour, tzinfo=BERLIN)

    master = CalendarEvent(
        summary="Weekly", start=at(6, 9), end=at(6, 10), timezone="Europe/Berlin",
        recurrence=Recurrence("FREQ=WEEKLY;COUNT=6"),
    )  # fmt: skip
    moved = CalendarEvent(
        summary="Weekly (moved)", start=at(13, 11), end=at(13, 12), timezone="Europe/Berlin",
        location="Room 2", recurrence_id=at(13, 9),
    )  # fmt: skip
    cancelled = CalendarEvent(summary=None, start=at(20, 9), end=None, cancelled=True,
                              recurrence_id=at(20, 9))  # fmt: skip
    return dataclasses.replace(master, overrides=(moved, cancelled))


def test_overrides_round_trip_as_recurrence_id_components() -> None:
    event = weekly_with_overrides()
    text = serialize_event(event, "series-1")
    assert text.count("BEGIN:VEVENT") == 2  # the cancelled one is an EXDATE
    assert "RECURRENCE-ID;TZID=Europe/Berlin:20261013T090000" in text
    assert "EXDATE;TZID=Europe/Berlin:20261020T090000" in text
    back = parse_event(text)
    assert back is not None
    assert back.content_hash() == dataclasses.replace(event, uid="series-1").content_hash()
    # A cancelled override and an EXDATE are the same series.
    assert back.recurrence is not None
    assert back.recurrence.exdates == (dt.datetime(2026, 10, 20, 9, tzinfo=BERLIN),)
    # Equal digests: a master without overrides digests as it always did.
    plain = dataclasses.replace(event, overrides=())
    assert "overrides" not in changed_fields(plain, dataclasses.replace(plain, summary="x"))
    assert changed_fields(plain, event) == {"overrides", "recurrence"}


def test_patching_overrides_keeps_what_other_clients_wrote() -> None:
    event = weekly_with_overrides()
    text = serialize_event(event, "series-1").replace(
        "SUMMARY:Weekly (moved)", "SUMMARY:Weekly (moved)\r\nX-OTHER:kept-on-override"
    )
    (moved, cancelled) = event.overrides
    later = dataclasses.replace(moved, location="Room 3")
    added = dataclasses.replace(
        moved, summary="Weekly (extra)", recurrence_id=dt.datetime(2026, 10, 27, 9, tzinfo=BERLIN),
        start=dt.datetime(2026, 10, 27, 8, tzinfo=BERLIN),
        end=dt.datetime(2026, 10, 27, 9, tzinfo=BERLIN),
    )  # fmt: skip
    wanted = dataclasses.replace(event, overrides=(later, cancelled, added))
    patched = patch_event(wanted, "series-1", text, frozenset({"overrides"}))
    assert "X-OTHER:kept-on-override" in patched
    back = parse_event(patched)
    assert back is not None
    assert back.content_hash() == dataclasses.replace(wanted, uid="series-1").content_hash()
    # Across the October switch: the new override's RECURRENCE-ID is 09:00 local.
    assert "RECURRENCE-ID;TZID=Europe/Berlin:20261027T090000" in patched
    # An override gone from the event is gone from the resource.
    fewer = patch_event(dataclasses.replace(wanted, overrides=(added,)), "series-1", patched,
                        frozenset({"overrides", "recurrence"}))  # fmt: skip
    assert "Room 3" not in fewer
    again = parse_event(fewer)
    assert again is not None
    assert [o.summary for o in again.overrides] == ["Weekly (extra)"]
    assert again.recurrence is not None
    assert again.recurrence.exdates == ()


def test_a_lone_occurrence_keeps_its_recurrence_id() -> None:
    event = parse("RECURRENCE-ID:20260112T090000Z", "DTSTART:20260112T110000Z")
    assert event.recurrence_id == dt.datetime(2026, 1, 12, 9, tzinfo=dt.UTC)
    assert event.recurring


def test_no_vevent_is_none() -> None:
    todo = "BEGIN:VTODO\r\nUID:t\r\nDTSTAMP:20260101T000000Z\r\nSUMMARY:todo\r\nEND:VTODO"
    assert parse_event(vcalendar(todo)) is None


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "not iCalendar"),
        ("<html><body>Hello</body></html>", "not iCalendar"),
        (vcalendar(vevent("SUMMARY:no start")), "no DTSTART"),
        (vcalendar(vevent("DTSTART:2026x0101")), "bad DATE"),
        (vcalendar(vevent("DTSTART:20261301T100000Z")), "bad DATE-TIME"),
        (vcalendar(vevent("DTSTART:20260101T100000Z", "DURATION:soon")), "bad DURATION"),
        (vcalendar(vevent("DTSTART:20260101T100000Z", "this is not a property")), "line"),
        ("BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nDTSTART:20260101T100000Z\r\n", "never closed"),
        (vcalendar(vevent("DTSTART:20260101T100000Z"), "END:VTODO"), "closes nothing"),
        (
            vcalendar(vevent("DTSTART:20260101T100000Z"), vevent("DTSTART:20260101T100000Z")),
            "more than one event",
        ),
    ],
)
def test_malformed_data_raises_value_error(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_event(text)


def test_resource_uid_even_from_unreadable_data() -> None:
    assert resource_uid(vcalendar(vevent("DTSTART:x", uid="urn:uuid:1"))) == "urn:uuid:1"
    assert resource_uid("BEGIN:VCALENDAR\nUID:broken:1\nnonsense") == "broken:1"
    assert resource_uid("nothing here") is None


# --- writing ----------------------------------------------------------------------


def _vevent_of(text: str) -> icalendar.Event:
    calendar = icalendar.Calendar.from_ical(text)
    (event,) = [c for c in calendar.subcomponents if c.name == "VEVENT"]
    assert isinstance(event, icalendar.Event)
    return event


def test_serialized_resource_shape() -> None:
    event = meeting(
        private=True,
        busy=False,
        reminder_minutes=15,
        attendees=(Attendee("ann@acme.test", "Ann", "accepted"),),
        organizer="me@crm.test",
        crm_id="act-1",
        crm_type="meeting",
    )
    text = serialize_event(event, "crmcal-act-1")
    assert "\r\n" in text
    calendar = icalendar.Calendar.from_ical(text)
    assert str(calendar["PRODID"]) == "-//crmcal//crmcal//EN"
    assert [tz.tz_name for tz in calendar.timezones] == ["Europe/Berlin"]
    written = _vevent_of(text)
    assert str(written["UID"]) == "crmcal-act-1"
    assert "DTSTAMP" in written
    assert "LAST-MODIFIED" in written
    assert written.decoded("SEQUENCE") == 0
    assert written["DTSTART"].params["TZID"] == "Europe/Berlin"
    assert str(written["CLASS"]) == "PRIVATE"
    assert str(written["TRANSP"]) == "TRANSPARENT"
    assert str(written["X-CRMCAL-ACTIVITY-ID"]) == "act-1"
    assert str(written["X-CRMCAL-TYPE"]) == "meeting"
    attendee = written["ATTENDEE"]
    assert str(attendee) == "mailto:ann@acme.test"
    assert dict(attendee.params) == {
        "CN": "Ann",
        "PARTSTAT": "ACCEPTED",
        "SCHEDULE-AGENT": "CLIENT",
    }
    assert str(written["ORGANIZER"]) == "mailto:me@crm.test"
    assert written["ORGANIZER"].params["SCHEDULE-AGENT"] == "CLIENT"
    (alarm,) = written.subcomponents
    assert str(alarm["ACTION"]) == "DISPLAY"
    assert "TRIGGER:-PT15M" in text


@pytest.mark.parametrize("end", ["none", "start"])
def test_timed_event_without_end_is_written_as_a_second(end: str) -> None:
    """Issue 11 item 12: strict servers (Cyrus) refuse DTEND = DTSTART, DURATION:PT0S and
    a timed event without DTEND; crmcal writes a second, which reads back as no end."""
    event = meeting(end=None)
    if end == "start":
        event = dataclasses.replace(event, end=event.start)
    text = serialize_event(event, "u")
    written = _vevent_of(text)
    assert written.decoded("DTEND") - written.decoded("DTSTART") == dt.timedelta(seconds=1)
    assert "DURATION" not in written
    assert "ORGANIZER" not in written  # no attendees, no organizer
    back = parse_event(text)
    assert back is not None
    assert back.start == event.start
    assert back.end is None


def test_no_crm_properties_when_unset() -> None:
    text = serialize_event(meeting(crm_id=None, crm_type=None), "u")
    assert "X-CRMCAL" not in text
    assert "CLASS" not in text
    assert "VALARM" not in text


def test_update_keeps_what_crmcal_does_not_own() -> None:
    previous = vcalendar(
        vevent(
            "SUMMARY:Old title",
            "DTSTART;TZID=Europe/Berlin:20261201T100000",
            "DTEND;TZID=Europe/Berlin:20261201T110000",
            "SEQUENCE:4",
            "STATUS:TENTATIVE",
            "CATEGORIES:Sales,VIP",
            "URL:https://example.test/meeting/1",
            "X-OTHER-CLIENT;X-P=1:kept\\, exactly",
            "CREATED:20250101T000000Z",
            'ORGANIZER;CN="The Boss":mailto:boss@acme.test',
            "ATTENDEE;CN=Ann;ROLE=OPT-PARTICIPANT;RSVP=TRUE:mailto:ann@acme.test",
            "ATTENDEE;CN=Bob:mailto:bob@acme.test",
            "BEGIN:VALARM\r\nACTION:DISPLAY\r\nDESCRIPTION:first\r\nTRIGGER:-PT5M\r\nEND:VALARM",
            "BEGIN:VALARM\r\nACTION:EMAIL\r\nDESCRIPTION:mail\r\nSUMMARY:s\r\n"
            "ATTENDEE:mailto:me@acme.test\r\nTRIGGER:-P1D\r\nEND:VALARM",
            "BEGIN:VALARM\r\nACTION:DISPLAY\r\nDESCRIPTION:second\r\nTRIGGER:-PT1H\r\nEND:VALARM",
        ),
        extra="X-WR-CALNAME:Work\r\nMETHOD:PUBLISH",
    )
    old = parse_event(previous)
    assert old is not None
    assert old.reminder_minutes == 5
    new = dataclasses.replace(
        old,
        summary="New title",
        reminder_minutes=30,
        attendees=(Attendee("ann@acme.test", "Ann", "accepted"),),
    )
    text = serialize_event(new, "e1", previous=previous)
    written = _vevent_of(text)
    assert str(written["SUMMARY"]) == "New title"
    assert written.decoded("SEQUENCE") == 5
    assert str(written["STATUS"]) == "TENTATIVE"
    assert written.decoded("CATEGORIES") == ["Sales", "VIP"]
    assert str(written["URL"]) == "https://example.test/meeting/1"
    assert "X-OTHER-CLIENT;X-P=1:kept\\, exactly" in text
    assert written.decoded("CREATED") == dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    assert written["ORGANIZER"].params["CN"] == "The Boss"
    ann = written["ATTENDEE"]  # Bob is gone; Ann keeps her role
    assert ann.params["ROLE"] == "OPT-PARTICIPANT"
    assert ann.params["PARTSTAT"] == "ACCEPTED"
    alarms = [(str(a["ACTION"]), str(a.get("DESCRIPTION"))) for a in written.subcomponents]
    assert alarms == [("DISPLAY", "New title"), ("EMAIL", "mail"), ("DISPLAY", "second")]
    calendar = icalendar.Calendar.from_ical(text)
    assert str(calendar["X-WR-CALNAME"]) == "Work"
    assert "METHOD" not in calendar
    again = parse_event(text)
    assert again is not None
    assert again.content_hash() == new.content_hash()
    assert again.reminder_minutes == 30
    # No reminder any more: the mapped alarm goes, the others stay.
    text = serialize_event(dataclasses.replace(new, reminder_minutes=None), "e1", previous=text)
    assert [str(a["DESCRIPTION"]) for a in _vevent_of(text).subcomponents] == ["mail", "second"]


def test_update_of_a_series_keeps_its_overrides() -> None:
    previous = vcalendar(
        vevent(
            "SUMMARY:Weekly",
            "DTSTART;TZID=Europe/Berlin:20260105T090000",
            "RRULE:FREQ=WEEKLY;COUNT=10",
        ),
        vevent(
            "SUMMARY:Moved",
            "RECURRENCE-ID;TZID=Europe/Berlin:20260112T090000",
            "DTSTART;TZID=Europe/Berlin:20260112T110000",
        ),
        vevent(
            "STATUS:CANCELLED",
            "RECURRENCE-ID;TZID=Europe/Berlin:20260119T090000",
            "DTSTART;TZID=Europe/Berlin:20260119T090000",
        ),
    )
    old = parse_event(previous)
    assert old is not None
    assert old.recurrence is not None
    text = serialize_event(dataclasses.replace(old, summary="Weekly sync"), "e1", previous=previous)
    calendar = icalendar.Calendar.from_ical(text)
    summaries = sorted(str(e.get("SUMMARY")) for e in calendar.walk("VEVENT"))
    assert summaries == ["Moved", "None", "Weekly sync"]
    # The cancelled occurrence is restored (its exception removed): its override goes.
    restored = dataclasses.replace(old, recurrence=Recurrence(rrule="FREQ=WEEKLY;COUNT=10"))
    text = serialize_event(restored, "e1", previous=previous)
    assert [str(e.get("SUMMARY")) for e in icalendar.Calendar.from_ical(text).walk("VEVENT")] == [
        "Weekly",
        "Moved",
    ]
    # No longer a series: no occurrences either.
    single = dataclasses.replace(old, recurrence=None)
    text = serialize_event(single, "e1", previous=previous)
    assert len(icalendar.Calendar.from_ical(text).walk("VEVENT")) == 1


def test_explicit_sequence_wins() -> None:
    text = serialize_event(meeting(), "u", previous=serialize_event(meeting(), "u"), sequence=9)
    assert _vevent_of(text).decoded("SEQUENCE") == 9


def test_second_of_two_equal_wall_clock_times_survives() -> None:
    # 2026-11-01 01:30 happens twice in New York; fold=1 is the later one.
    start = dt.datetime(2026, 11, 1, 1, 30, fold=1, tzinfo=NEW_YORK)
    event = meeting(start=start, end=start + dt.timedelta(hours=1), timezone="America/New_York")
    again = parse_event(serialize_event(event, "u"))
    assert again is not None
    assert isinstance(again.start, dt.datetime)
    # (Compared as instants: Python never calls a fold=1 time equal across zones.)
    assert again.start.astimezone(dt.UTC) == start.astimezone(dt.UTC)
    assert again.content_hash() == dataclasses.replace(event, uid="u").content_hash()


def test_content_hash_ignores_how_a_rule_is_spelled() -> None:
    first, second = dt.date(2026, 12, 8), dt.date(2026, 12, 15)
    a = meeting(recurrence=Recurrence("FREQ=WEEKLY;BYDAY=TU;COUNT=10", exdates=(first, second)))
    b = meeting(
        recurrence=Recurrence("freq=weekly;count=10;interval=1;byday=TU", exdates=(second, first))
    )
    assert a.content_hash() == b.content_hash()
    c = meeting(recurrence=Recurrence("FREQ=WEEKLY;BYDAY=TU;COUNT=11", exdates=(first, second)))
    assert a.content_hash() != c.content_hash()


# --- round trip -------------------------------------------------------------------

# Text iCalendar can carry: no control characters except tab and newline (carriage
# returns become newlines), no lone surrogates (not UTF-8).
TEXT = st.text(
    alphabet=st.one_of(
        st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")), st.sampled_from("\n\t")
    ),
    max_size=40,
)
EMAIL = st.from_regex(r"[a-z0-9][a-z0-9._+-]{0,15}@[a-z0-9-]{1,12}\.[a-z]{2,6}", fullmatch=True)
ATTENDEE = st.builds(
    Attendee,
    email=EMAIL,
    name=st.none() | TEXT.filter(lambda s: s.strip() != ""),
    status=st.sampled_from(["needs_action", "accepted", "declined", "tentative"]),
    resource=st.booleans(),
)


@st.composite
def events(draw: st.DrawFn) -> CalendarEvent:
    all_day = draw(st.booleans())
    if all_day:
        start_day = draw(st.dates(dt.date(1950, 1, 1), dt.date(2150, 12, 31)))
        start: dt.datetime | dt.date = start_day
        end: dt.datetime | dt.date | None = start_day + dt.timedelta(days=draw(st.integers(1, 60)))
        zone = None
        exdate = st.integers(1, 400).map(lambda n: start_day + dt.timedelta(days=n))
    else:
        zone = draw(st.sampled_from(ZONES))
        local = draw(st.datetimes(dt.datetime(1971, 1, 1), dt.datetime(2099, 12, 31)))
        start = local.replace(microsecond=0, tzinfo=ZoneInfo(zone))
        # From a minute: an end at the start reads back as none (see
        # test_timed_event_without_end_is_written_as_a_second).
        minutes = st.integers(1, 3 * 24 * 60)
        end = draw(st.none() | minutes.map(lambda m: start + dt.timedelta(minutes=m)))
        exdate = st.integers(1, 400).map(lambda n: start + dt.timedelta(days=n))
    recurrence = draw(
        st.none()
        | st.builds(
            Recurrence,
            rrule=st.sampled_from(
                ["FREQ=DAILY;COUNT=5", "FREQ=WEEKLY;BYDAY=MO,WE;UNTIL=21001231T000000Z"]
            ),
            exdates=st.lists(exdate, max_size=3, unique=True).map(tuple),
        )
    )
    attendees = tuple(draw(st.lists(ATTENDEE, max_size=4)))
    return CalendarEvent(
        summary=draw(st.none() | TEXT),
        start=start,
        end=end,
        all_day=all_day,
        timezone=zone,
        location=draw(st.none() | TEXT),
        description=draw(st.none() | TEXT),
        private=draw(st.booleans()),
        busy=draw(st.booleans()),
        reminder_minutes=draw(st.none() | st.integers(0, 40320)),
        attendees=attendees,
        organizer=draw(EMAIL) if attendees else None,
        crm_id=draw(st.none() | st.from_regex(r"[a-z0-9-]{1,32}", fullmatch=True)),
        crm_type=draw(st.none() | st.sampled_from(["call", "meeting", "lunch, late; long"])),
        cancelled=draw(st.booleans()),
        recurrence=recurrence,
    )


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event=events(), uid=st.from_regex(r"[A-Za-z0-9@._:-]{1,40}", fullmatch=True))
def test_round_trip_keeps_the_content_hash(event: CalendarEvent, uid: str) -> None:
    again = parse_event(serialize_event(event, uid), default_tz="Asia/Tokyo")
    assert again is not None
    assert again.content_hash() == dataclasses.replace(event, uid=uid).content_hash()
    assert (again.uid, again.crm_id, again.crm_type) == (uid, event.crm_id, event.crm_type)
    assert again.all_day == event.all_day
    if not event.all_day:
        assert again.timezone == event.timezone
    assert again.organizer == event.organizer


@settings(max_examples=30, deadline=None)
@given(event=events(), other=events())
def test_round_trip_through_an_update(event: CalendarEvent, other: CalendarEvent) -> None:
    previous = serialize_event(other, "u1")
    again = parse_event(serialize_event(event, "u1", previous=previous))
    assert again is not None
    assert again.content_hash() == dataclasses.replace(event, uid="u1").content_hash()


@settings(max_examples=100, deadline=None)
@given(summary=TEXT, name=TEXT.filter(lambda s: s.strip() != ""), x_value=TEXT)
def test_reads_what_icalendar_writes(summary: str, name: str, x_value: str) -> None:
    """An independent writer: the scanner must agree with icalendar's own encoder."""
    calendar = icalendar.Calendar()
    calendar.add("PRODID", "-//other//EN")
    calendar.add("VERSION", "2.0")
    event = icalendar.Event()
    event.add("UID", "other-1")
    event.add("DTSTAMP", dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    event.add("DTSTART", dt.datetime(2026, 6, 1, 9, tzinfo=BERLIN))
    event.add("SUMMARY", summary)
    event.add("DESCRIPTION", summary * 5)
    address = icalendar.vCalAddress("mailto:ann@acme.test")
    address.params["CN"] = name
    event.add("ATTENDEE", address)
    event.add("X-CRMCAL-TYPE", icalendar.vText(x_value))
    calendar.add_component(event)
    parsed = parse_event(calendar.to_ical().decode())
    assert parsed is not None
    assert parsed.summary == summary
    assert parsed.description == summary * 5
    assert parsed.attendees[0].name == name
    assert parsed.crm_type == (x_value.strip() or None)
    assert parsed.start == dt.datetime(2026, 6, 1, 9, tzinfo=BERLIN)


SAMPLE_LINES = [
    "BEGIN:VEVENT", "END:VEVENT", "BEGIN:VALARM", "END:VALARM", "BEGIN:VTIMEZONE",
    "END:VTIMEZONE", "DTSTART:20260101T100000Z", "DTSTART;VALUE=DATE:20260101",
    "DTSTART;TZID=Europe/Berlin:20260101T100000", "DTEND:20260101", "DURATION:PT1H",
    "TRIGGER:-PT5M", "ACTION:DISPLAY", "RRULE:FREQ=DAILY", "EXDATE:20260102T100000Z",
    "RECURRENCE-ID:20260101T100000Z", 'ATTENDEE;CN="a:b";X="c":mailto:x@y', "TZID:Custom",
    "SUMMARY:x", " folded", "UID:u", "STATUS:CANCELLED",
]  # fmt: skip
LINE = st.one_of(st.sampled_from(SAMPLE_LINES), st.text(max_size=30))


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(LINE, max_size=20))
def test_any_input_parses_or_raises_value_error(lines: list[str]) -> None:
    text = "\r\n".join(["BEGIN:VCALENDAR", *lines, "END:VCALENDAR"])
    for candidate in (text, "\r\n".join(lines)):
        with contextlib.suppress(ValueError):
            parse_event(candidate)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event=events(), other=events())
def test_a_patch_writes_the_changed_fields_and_keeps_the_rest(
    event: CalendarEvent, other: CalendarEvent
) -> None:
    """Issue 11 item 7: an update replaces only the changed properties of the server's
    resource; a field crmcal did not change keeps the server's own spelling."""
    # Rooms and the organizer's own entry are kept by design (see the participants
    # tests), and a series is never written over by a single event (SeriesInCalendar).
    event = dataclasses.replace(event, attendees=tuple(a for a in event.attendees
                                                       if not a.resource))  # fmt: skip
    other = dataclasses.replace(
        other,
        attendees=tuple(a for a in other.attendees
                        if not a.resource and a.email.lower() != (other.organizer or "").lower()),
        recurrence=other.recurrence if event.recurrence is not None else None,
    )  # fmt: skip
    previous = serialize_event(other, "u1").replace(
        "END:VEVENT", "X-OTHER-CLIENT:kept\r\nEND:VEVENT", 1
    )
    changed = changed_fields(parse_event(previous), event)
    text = patch_event(event, "u1", previous, changed)
    again = parse_event(text)
    assert again is not None
    expected = dataclasses.replace(event, uid="u1")
    if "attendees" not in changed:
        expected = dataclasses.replace(expected, attendees=other.attendees)
    assert again.content_hash() == expected.content_hash()
    assert "X-OTHER-CLIENT:kept" in text
    unchanged = ALL_FIELDS - changed
    before_lines = _property_lines(previous, unchanged)
    assert _property_lines(text, unchanged) == before_lines


_GROUP_PROPERTIES = {"summary": ("SUMMARY",), "location": ("LOCATION",),
                     "description": ("DESCRIPTION",), "when": ("DTSTART", "DTEND")}  # fmt: skip


def _property_lines(text: str, groups: frozenset[str]) -> list[str]:
    names = tuple(f"{n}" for g in sorted(groups) for n in _GROUP_PROPERTIES.get(g, ()))
    unfolded = text.replace("\r\n ", "").split("\r\n")
    in_alarm = False
    found = []
    for line in unfolded:
        if line.startswith("BEGIN:VALARM"):
            in_alarm = True
        elif line.startswith("END:VALARM"):
            in_alarm = False
        elif not in_alarm and line.split(";", 1)[0].split(":", 1)[0] in names:
            found.append(line)
    return sorted(found)


def test_a_patch_keeps_parameter_values_with_blanks_at_their_ends() -> None:
    """A parameter value may begin or end with a tab or a space (RFC 5545 SAFE-CHAR);
    icalendar reads it trimmed. Patching the title must not rename an attendee, nor
    change a parameter of a property crmcal does not own."""
    previous = vcalendar(vevent(
        "DTSTART:20261201T100000Z", "DTEND:20261201T110000Z", "SUMMARY:Before",
        "ATTENDEE;CN=\tAnn ;PARTSTAT=ACCEPTED:mailto:ann@acme.test",
        "X-OTHER;X-NOTE= spaced\t:kept",
    ))  # fmt: skip
    read = parse_event(previous)
    assert read is not None
    assert read.attendees[0].name == "\tAnn "
    text = patch_event(dataclasses.replace(read, summary="After"), "e1", previous,
                       frozenset({"summary"}))  # fmt: skip
    assert "X-OTHER;X-NOTE= spaced\t:kept" in text
    again = parse_event(text)
    assert again is not None
    assert again.attendees == read.attendees


def test_a_patch_keeps_floating_times_and_long_texts() -> None:
    """Issue 11 items 7 and 11: a floating time stays floating, a long description and
    a property nobody knows stay whole, when only the title changes (and a new time is
    written floating again)."""
    long_text = "x" * 70000
    previous = vcalendar(vevent(
        "DTSTART:20261201T100000", "DTEND:20261201T110000", f"DESCRIPTION:{long_text}",
        "X-UNKNOWN;X-PARAM=1:keep me",
    ))  # fmt: skip
    read = parse_event(previous, default_tz=None)
    assert read is not None
    assert read.floating
    renamed = dataclasses.replace(read, summary="New title")
    text = patch_event(renamed, "e1", previous, changed_fields(read, renamed))
    unfolded = text.replace("\r\n ", "")
    assert "DTSTART:20261201T100000\r\n" in unfolded
    assert "X-UNKNOWN;X-PARAM=1:keep me" in unfolded
    assert (parse_event(text, default_tz=None) or read).description == long_text
    assert read.end is not None
    moved = dataclasses.replace(
        read, start=read.start + dt.timedelta(hours=1), end=read.end + dt.timedelta(hours=1)
    )
    text = patch_event(moved, "e1", previous, changed_fields(read, moved))
    assert "DTSTART:20261201T110000\r\n" in text.replace("\r\n ", "")
    assert (parse_event(text, default_tz=None) or read).floating


def _outlook_event(tzid: str, vtimezone: str) -> str:
    quoted = f'"{tzid}"' if "," in tzid or ":" in tzid else tzid
    return vcalendar(vtimezone, vevent(
        f"DTSTART;TZID={quoted}:20261201T100000", f"DTEND;TZID={quoted}:20261201T110000",
        "SUMMARY:Planning",
    ))  # fmt: skip


def test_a_patch_keeps_another_clients_vtimezone_as_it_was_spelt() -> None:
    previous = _outlook_event(OUTLOOK_ZONE, outlook_vtimezone())
    read = parse_event(previous, default_tz="Europe/Berlin")
    assert read is not None
    placed = dataclasses.replace(read, location="Room 5")
    text = patch_event(placed, "e1", previous, changed_fields(read, placed))
    # Its TZID unescaped, as the TZID parameters name it; its rules as they were.
    assert outlook_vtimezone() + "\r\n" in text
    assert text.count("BEGIN:VTIMEZONE") == 1


@pytest.mark.parametrize(
    ("tzid", "vtimezone"),
    [
        (OUTLOOK_ZONE, outlook_vtimezone()),
        ("W. Europe Standard Time", outlook_vtimezone("W. Europe Standard Time")),
        ("/mozilla.org/20050126_1/Europe/Berlin",
         outlook_vtimezone("/mozilla.org/20050126_1/Europe/Berlin")),
        ("/freeassociation.sourceforge.net/Tzfile/Europe/Berlin",
         outlook_vtimezone("/freeassociation.sourceforge.net/Tzfile/Europe/Berlin")),
        ("Europe/Berlin", ""),  # no VTIMEZONE at all
    ],
)  # fmt: skip
def test_a_moved_event_keeps_the_tzid_its_zone_was_spelt_with(tzid: str, vtimezone: str) -> None:
    previous = _outlook_event(tzid, vtimezone)
    read = parse_event(previous, default_tz="Europe/Berlin")
    assert read is not None
    assert read.end is not None
    # The CRM moves it an hour, in the zone it knows the event by.
    moved = dataclasses.replace(read, start=read.start + dt.timedelta(hours=1),
                                end=read.end + dt.timedelta(hours=1),
                                timezone=read.timezone or "Europe/Berlin")  # fmt: skip
    text = patch_event(moved, "e1", previous, frozenset({"when"}))
    calendar = icalendar.Calendar.from_ical(text)
    (event,) = calendar.walk("VEVENT")
    for name, hour in (("DTSTART", 11), ("DTEND", 12)):
        written: Any = event[name]
        assert written.params["TZID"] == tzid
        assert written.dt.replace(tzinfo=None) == dt.datetime(2026, 12, 1, hour)
    # Its VTIMEZONE, and no second one for the same zone (one where none was).
    assert text.count("BEGIN:VTIMEZONE") == 1
    again = parse_event(text, default_tz="UTC")
    assert again is not None
    assert again.start == moved.start


def test_a_moved_event_takes_the_new_zone_when_the_crm_changed_it() -> None:
    previous = _outlook_event(OUTLOOK_ZONE, outlook_vtimezone())
    read = parse_event(previous, default_tz="Europe/Berlin")
    assert read is not None
    start = dt.datetime(2026, 12, 1, 9, tzinfo=NEW_YORK)
    moved = dataclasses.replace(read, start=start, end=start + dt.timedelta(hours=1),
                                timezone="America/New_York")  # fmt: skip
    text = patch_event(moved, "e1", previous, frozenset({"when"}))
    (event,) = icalendar.Calendar.from_ical(text).walk("VEVENT")
    assert event["DTSTART"].params["TZID"] == "America/New_York"
    assert "TZID:America/New_York" in text


@pytest.mark.parametrize(
    ("tzid", "offset"),
    [
        ('"UTC+01:00"', dt.timedelta(hours=1)),
        ("GMT+0100", dt.timedelta(hours=1)),
        ("Etc/GMT-1", dt.timedelta(hours=1)),
        ('"UTC-05:30"', dt.timedelta(hours=-5, minutes=-30)),
        ('"(UTC+05:30) Chennai, Kolkata, Mumbai, New Delhi"', dt.timedelta(hours=5, minutes=30)),
    ],
)
def test_a_tzid_that_spells_an_offset_is_read_as_that_offset(
    tzid: str, offset: dt.timedelta
) -> None:
    """Issue 11 item 13: no VTIMEZONE, no known name, but an offset anybody can read."""
    problems: list[str] = []
    event = parse_event(
        vcalendar(vevent(f"DTSTART;TZID={tzid}:20261201T100000")), problems=problems
    )
    assert event is not None
    assert isinstance(event.start, dt.datetime)
    assert event.start.utcoffset() == offset
    assert event.start.replace(tzinfo=None) == dt.datetime(2026, 12, 1, 10)
    assert problems == []
    assert not event.floating


@pytest.mark.parametrize(
    ("tzid", "key"),
    [
        ('"(UTC+01:00) Amsterdam, Berlin, Bern, Rome, Stockholm, Vienna"', "Europe/Amsterdam"),
        ('"(UTC-05:00) Eastern Time (US & Canada)"', "America/New_York"),
        ('"(UTC+10:00) Canberra, Melbourne, Sydney"', "Australia/Canberra"),
        ('"(UTC) Coordinated Universal Time"', "UTC"),
    ],
)
def test_an_outlook_display_name_without_its_vtimezone_is_its_zone_in_summer_too(
    tzid: str, key: str
) -> None:
    """The display name spells the standard offset; a July date is read at the
    zone's summer offset, not an hour off."""
    problems: list[str] = []
    event = parse_event(
        vcalendar(vevent(f"DTSTART;TZID={tzid}:20270701T100000")), problems=problems
    )
    assert event is not None
    assert event.timezone == key
    assert event.start == dt.datetime(
        2027, 7, 1, 10, tzinfo=dt.UTC if key == "UTC" else ZoneInfo(key)
    )
    assert problems == []


def test_an_unreadable_tzid_is_read_as_floating_and_reported() -> None:
    """Issue 11 item 13: instead of skipping the event."""
    problems: list[str] = []
    event = parse_event(
        vcalendar(vevent("DTSTART;TZID=Mars/Olympus:20261201T100000")),
        default_tz=None,
        problems=problems,
    )
    assert event is not None
    assert event.floating
    assert event.timezone is None
    assert isinstance(event.start, dt.datetime)
    assert event.start.replace(tzinfo=None) == dt.datetime(2026, 12, 1, 10)
    assert problems == ["unknown time zone 'Mars/Olympus', read as floating time"]


# RFC 5545 3.3.11: TEXT escapes backslash, semicolon, comma and line breaks; a
# backslash followed by "N" is two characters of text, not a line break.
EXOTIC_TEXTS = [
    "a, b; c\\d",
    "C:\\New folder\\Notes",
    "\\N is not a line break, \\n neither",
    "line 1\nline 2\n\nline 4",
    "  leading and trailing spaces  ",
    "emoji 😀🎉, ünïcödé; 中文",
    "trailing backslash\\",
    "\\,\\;\\\\",
    "x" + "é😀" * 700,  # 2,101 characters, folded many times
]


@pytest.mark.parametrize("text", EXOTIC_TEXTS)
def test_text_values_are_escaped_and_read_back_unchanged(text: str) -> None:
    event = meeting(summary=text, location=text, description=text, reminder_minutes=5)
    written = serialize_event(event, "e1")
    for line in written.encode().split(b"\r\n"):
        # Folded at 75 octets, never inside a UTF-8 sequence.
        assert len(line) <= 75
        line.decode()
    again = parse_event(written)
    assert again is not None
    assert (again.summary, again.location, again.description) == (text, text, text)
    alarm = _vevent_of(written).subcomponents[0]
    assert str(alarm["DESCRIPTION"]) == text
    # A patch of another field keeps them, and so does a patch of them.
    moved = dataclasses.replace(event, end=event.start + dt.timedelta(hours=3))
    for changed in (frozenset({"when"}), frozenset({"summary", "location", "description"})):
        patched = parse_event(patch_event(moved, "e1", written, changed))
        assert patched is not None
        assert (patched.summary, patched.location, patched.description) == (text, text, text)


def test_an_update_keeps_foreign_text_values_meaning_the_same() -> None:
    foreign = [
        "COMMENT:C:\\\\New\\, not escaped;here,either",
        "CONTACT:Jim Dolittle\\, ABC\\\\N",
        "X-NOTE;VALUE=TEXT:a\\,b\\\\Nc",
        "CATEGORIES:C:\\\\New,b\\,c",
    ]
    alarm = ("BEGIN:VALARM\r\nACTION:EMAIL\r\nDESCRIPTION:D:\\\\Net\r\nSUMMARY:s\r\n"
             "ATTENDEE:mailto:me@acme.test\r\nTRIGGER:-P1D\r\nEND:VALARM")  # fmt: skip
    previous = vcalendar(
        vevent(
            "SUMMARY:C:\\\\New",
            "DTSTART:20261201T100000Z",
            "DTEND:20261201T110000Z",
            *foreign,
            alarm,
        )
    )
    old = parse_event(previous)
    assert old is not None
    assert old.summary == "C:\\New"
    moved = dataclasses.replace(old, end=old.start + dt.timedelta(hours=2))
    for text in (
        serialize_event(moved, "e1", previous=previous),
        patch_event(moved, "e1", previous, frozenset({"when"})),
    ):
        written = _vevent_of(text)
        assert str(written["COMMENT"]) == "C:\\New, not escaped;here,either"
        assert str(written["CONTACT"]) == "Jim Dolittle, ABC\\N"
        assert str(written["X-NOTE"]) == "a,b\\Nc"
        assert written.decoded("CATEGORIES") == ["C:\\New", "b,c"]
        assert str(written.subcomponents[0]["DESCRIPTION"]) == "D:\\Net"
        again = parse_event(text)
        assert again is not None
        assert again.summary == "C:\\New"


def test_an_update_writes_foreign_values_as_they_were() -> None:
    """What crmcal does not own is written back as the resource spelt it, even where
    icalendar, reading and writing it again, would say something else."""
    foreign = [
        "RESOURCES:EASEL,PROJECTOR\\,BIG",  # two resources, not one
        "RESOURCES;LANGUAGE=de:Beamer,Tafel",
        "REQUEST-STATUS:2.0;Success",  # structured, not one TEXT
        "X-UNKNOWN:raw,comma;semi\\\\N",
        "X-ALT-DESC;FMTTYPE=text/html:<p>a\\, b\\; c\\\\N</p>",
        "COMMENT:not escaped; here, either",
    ]
    previous = vcalendar(
        vevent("SUMMARY:s", "DTSTART:20261201T100000Z", "DTEND:20261201T110000Z", *foreign)
    )
    old = parse_event(previous)
    assert old is not None
    moved = dataclasses.replace(old, end=old.start + dt.timedelta(hours=2))
    for text in (
        serialize_event(moved, "e1", previous=previous),
        patch_event(moved, "e1", previous, frozenset({"when"})),
    ):
        lines = text.replace("\r\n ", "").split("\r\n")
        assert [line for line in foreign if line not in lines] == []


# --- Outlook's HTML body (X-ALT-DESC) ------------------------------------------------

_HTML = "X-ALT-DESC;FMTTYPE=text/html:<html><body><p>Old agenda\\, in bold</p></body></html>"


def _with_html_body(*extra: str) -> str:
    return vcalendar(vevent(
        "SUMMARY:Planning", "DTSTART:20261201T100000Z", "DTEND:20261201T110000Z",
        "DESCRIPTION:Old agenda\\, in bold", _HTML, *extra,
    ))  # fmt: skip


def _alt_descs(text: str) -> list[str]:
    unfolded = text.replace("\r\n ", "").split("\r\n")
    return [line for line in unfolded if line.startswith("X-ALT-DESC")]


def test_a_new_description_drops_the_html_body_of_the_old_one() -> None:
    """Outlook shows X-ALT-DESC in preference to DESCRIPTION: kept beside a description
    the CRM changed, it went on showing the old text. Both ways of writing drop it,
    as Thunderbird and Evolution do; another kind of alternative stays."""
    plain = "X-ALT-DESC;FMTTYPE=text/plain:kept"
    previous = _with_html_body(plain)
    old = parse_event(previous)
    assert old is not None
    edited = dataclasses.replace(old, description="New agenda")
    for text in (
        serialize_event(edited, "e1", previous=previous),
        patch_event(edited, "e1", previous, changed_fields(old, edited)),
    ):
        assert _alt_descs(text) == [plain]
        assert str(_vevent_of(text)["DESCRIPTION"]) == "New agenda"
    # Emptied in the CRM: the HTML body goes with it.
    cleared = dataclasses.replace(old, description=None)
    assert _alt_descs(patch_event(cleared, "e1", previous, frozenset({"description"}))) == [plain]
    assert _alt_descs(serialize_event(cleared, "e1", previous=previous)) == [plain]


def test_an_overrides_new_description_drops_its_own_html_body() -> None:
    series = vcalendar(
        vevent("SUMMARY:Weekly", "DTSTART:20261201T100000Z", "DTEND:20261201T110000Z",
               "RRULE:FREQ=WEEKLY;COUNT=4", "DESCRIPTION:Agenda", _HTML.replace("Old", "Series")),
        vevent("SUMMARY:Weekly", "RECURRENCE-ID:20261208T100000Z", "DTSTART:20261208T120000Z",
               "DTEND:20261208T130000Z", "DESCRIPTION:Old agenda\\, in bold", _HTML),
    )  # fmt: skip
    old = parse_event(series)
    assert old is not None
    assert old.overrides
    edited = dataclasses.replace(
        old, overrides=(dataclasses.replace(old.overrides[0], description="Moved agenda"),)
    )
    text = patch_event(edited, "e1", series, changed_fields(old, edited))
    assert _alt_descs(text) == [_HTML.replace("Old", "Series")]  # the master's, unchanged


def test_an_unchanged_description_keeps_its_html_body_as_it_was() -> None:
    """A description crmcal did not change keeps the HTML body exactly as it was."""
    previous = _with_html_body()
    old = parse_event(previous)
    assert old is not None
    renamed = dataclasses.replace(old, summary="Planning (moved)")
    for text in (
        serialize_event(renamed, "e1", previous=previous),
        patch_event(renamed, "e1", previous, changed_fields(old, renamed)),
        # Rewritten with the same text (a sync that rewrites every field).
        patch_event(renamed, "e1", previous, frozenset({"summary", "description"})),
    ):
        assert _alt_descs(text) == [_HTML]


def _series_in(tzid: str, uid: str, offset: str) -> str:
    """A daily series in a zone only its own VTIMEZONE defines (``offset`` all year),
    with its second occurrence moved and carrying a property crmcal does not own."""
    zoned = f";TZID={tzid}"
    lines = [
        "BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//Test//Test//EN",
        "BEGIN:VTIMEZONE", f"TZID:{tzid}", "BEGIN:STANDARD", "DTSTART:16010101T000000",
        f"TZOFFSETFROM:{offset}", f"TZOFFSETTO:{offset}", "END:STANDARD", "END:VTIMEZONE",
        "BEGIN:VEVENT", f"UID:{uid}", "DTSTAMP:20261101T080000Z", "SUMMARY:Daily",
        f"DTSTART{zoned}:20270701T100000", f"DTEND{zoned}:20270701T110000",
        "RRULE:FREQ=DAILY;COUNT=3", "END:VEVENT",
        "BEGIN:VEVENT", f"UID:{uid}", "DTSTAMP:20261101T080000Z",
        f"RECURRENCE-ID{zoned}:20270702T100000", "SUMMARY:Moved", "X-FOREIGN:keep me",
        f"DTSTART{zoned}:20270702T120000", f"DTEND{zoned}:20270702T130000", "END:VEVENT",
        "END:VCALENDAR",
    ]  # fmt: skip
    return "\r\n".join(lines) + "\r\n"


@pytest.mark.parametrize("offsets", [("+0545", "-0300"), ("-0300", "+0545")])
def test_an_override_is_matched_in_its_own_resources_zone(offsets: tuple[str, str]) -> None:
    """icalendar keeps the first VTIMEZONE it reads of a TZID no zone database knows, for
    the whole process. A later resource defining that TZID otherwise still has its
    overridden occurrence found by its own zone's RECURRENCE-ID: patched, the
    occurrence keeps what crmcal does not own instead of being written afresh."""
    tzid = f"Zone {uuid.uuid4().hex[:8]}"
    first, second = (_series_in(tzid, uid, o) for uid, o in zip(("a", "b"), offsets, strict=True))
    read = parse_event(first)
    assert read is not None
    patch_event(dataclasses.replace(read, summary="Read first"), "a", first, frozenset({"summary"}))
    event = parse_event(second)
    assert event is not None
    (moved,) = event.overrides
    retitled = dataclasses.replace(event, overrides=(dataclasses.replace(moved, summary="Again"),))
    written = patch_event(retitled, "b", second, frozenset({"overrides"}))
    assert "X-FOREIGN:keep me" in written
    found = parse_event(written)
    assert found is not None
    (again,) = found.overrides
    assert (again.summary, again.recurrence_id) == ("Again", moved.recurrence_id)
