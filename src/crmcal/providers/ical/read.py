"""Reading one CalDAV resource into a ``CalendarEvent`` (``parse_event``): times,
alarms, attendees, a series' rule, dates and overridden occurrences; and the quick
questions asked of a resource's text (``resource_uid``, ``is_series``)."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import replace

from crmcal.model import Attendee, CalendarEvent, Recurrence
from crmcal.providers.ical.mapping import (
    CRM_ID_PROPERTY,
    CRM_TYPE_PROPERTY,
    NO_END,
    ONE_DAY,
    PARTSTAT_IN,
)
from crmcal.providers.ical.scanner import (
    RawComponent,
    email_address,
    parse_date_time,
    parse_duration,
    parse_parameters,
    scan_calendar,
    text_token,
)
from crmcal.providers.ical.text import unescape_text
from crmcal.providers.ical.zones import ResourceZones, is_floating, read_moment, read_moments


def _add_duration(start: dt.datetime, days: int, seconds: int) -> dt.datetime:
    # Days are nominal (same wall-clock time across a DST change), the rest exact.
    end = start + dt.timedelta(days=days) if days else start
    if seconds:
        end = (end.astimezone(dt.UTC) + dt.timedelta(seconds=seconds)).astimezone(start.tzinfo)
    return end


def _last_modified(event: RawComponent) -> dt.datetime | None:
    for name in ("LAST-MODIFIED", "DTSTAMP"):
        value = event.value(name)
        if value is None:
            continue
        try:
            moment, _ = parse_date_time(value.strip())
        except ValueError:
            continue  # bookkeeping only: a bad stamp must not hide the event
        return moment.replace(tzinfo=dt.UTC)
    return None


def utc_key(moment: dt.datetime | dt.date) -> str:
    """The same text for the same instant in any zone (a date: the date itself)."""
    if isinstance(moment, dt.datetime):
        return moment.astimezone(dt.UTC).isoformat()
    return moment.isoformat()


def _times(
    event: RawComponent, zones: ResourceZones
) -> tuple[dt.datetime | dt.date, dt.datetime | dt.date | None, bool, str | None]:
    start_prop = event.first("DTSTART")
    if start_prop is None:
        raise ValueError("event has no DTSTART")
    start, zone_name = read_moment(start_prop, zones)
    all_day = not isinstance(start, dt.datetime)
    end: dt.datetime | dt.date | None = None
    end_prop, duration = event.first("DTEND"), event.value("DURATION")
    if end_prop is not None:
        end = read_moment(end_prop, zones)[0]
    elif duration is not None:
        days, seconds = parse_duration(duration)
        if all_day:
            # A date plus a duration ends on a date: round partial days up.
            end = start + dt.timedelta(days=days + -(-seconds // 86400))
        else:
            assert isinstance(start, dt.datetime)
            end = _add_duration(start, days, seconds)
    if all_day:
        assert not isinstance(start, dt.datetime)
        if isinstance(end, dt.datetime):
            end = end.date()
        if end is None or end <= start:
            end = start + ONE_DAY
        return start, end, True, None
    assert isinstance(start, dt.datetime)
    if end is not None and not isinstance(end, dt.datetime):
        end = dt.datetime.combine(end, dt.time(), tzinfo=start.tzinfo)
    if end is not None and dt.timedelta(0) <= end - start <= NO_END:
        end = None  # how crmcal writes a moment without an end (see write_times)
    return start, end, False, zone_name


def _reminder(event: RawComponent) -> int | None:
    """Minutes before the start of the first display alarm, if it has such a trigger."""
    for alarm in event.alarms:
        action = alarm.value("ACTION")
        trigger = alarm.first("TRIGGER")
        if action is None or action.strip().upper() != "DISPLAY" or trigger is None:
            continue
        params = parse_parameters(trigger[0])
        if params.get("VALUE", "DURATION").upper() != "DURATION":
            continue  # an absolute time, not relative to the event
        if params.get("RELATED", "START").upper() != "START":
            continue
        try:
            days, seconds = parse_duration(trigger[1])
        except ValueError:
            continue  # a broken alarm is not worth losing the event over
        offset = days * 86400 + seconds
        if offset <= 0:
            return -offset // 60
    return None


def _attendees(event: RawComponent) -> tuple[Attendee, ...]:
    found = []
    for raw_params, value in event.props.get("ATTENDEE", ()):
        params = parse_parameters(raw_params)
        email = email_address(value, params)
        if not email:
            continue  # urn:/tel: addresses are not people crmcal can name
        found.append(
            Attendee(
                email=email,
                name=params.get("CN") or None,
                status=PARTSTAT_IN.get(params.get("PARTSTAT", "").upper(), "needs_action"),
                resource=params.get("CUTYPE", "").upper() in ("ROOM", "RESOURCE"),
            )
        )
    return tuple(found)


def _recurrence(
    event: RawComponent, overrides: list[RawComponent], zones: ResourceZones
) -> Recurrence | None:
    rrules = event.props.get("RRULE")
    rdates = read_moments(event.props.get("RDATE", ()), zones)
    if not rrules and not rdates:
        return None
    exdates = read_moments(event.props.get("EXDATE", ()), zones)
    # A cancelled occurrence may be an overriding VEVENT instead of an EXDATE.
    for override in overrides:
        status = override.value("STATUS")
        recurrence_id = override.first("RECURRENCE-ID")
        if status and status.strip().upper() == "CANCELLED" and recurrence_id is not None:
            exdates.append(read_moment(recurrence_id, zones)[0])
    return Recurrence(
        rrule=rrules[0][1].strip() if rrules else "",
        exdates=_unique(exdates),
        rdates=_unique(rdates),
    )


def _unique(moments: list[dt.datetime | dt.date]) -> tuple[dt.datetime | dt.date, ...]:
    seen: set[str] = set()
    unique = []
    for moment in moments:
        key = utc_key(moment)
        if key not in seen:
            seen.add(key)
            unique.append(moment)
    return tuple(unique)


def _choose(events: list[RawComponent]) -> tuple[RawComponent, list[RawComponent]]:
    """The series master (or the lone occurrence) and the overridden occurrences.

    A resource holds one event (RFC 4791 4.1): components of several UIDs are no
    series and its occurrences, whatever their RECURRENCE-IDs say (another event's
    changed occurrence must not become a change of this one's)."""
    uids = {uid for e in events if (uid := text_token(e.value("UID")))}
    if len(uids) > 1:
        raise ValueError("events of more than one UID in one resource")
    masters = [e for e in events if "RECURRENCE-ID" not in e.props]
    if len(masters) > 1:
        raise ValueError("more than one event in one resource")
    if masters:
        master = masters[0]
        return master, [e for e in events if e is not master]
    return events[0], events[1:]


def _cancelled(event: RawComponent) -> bool:
    status = event.value("STATUS")
    return status is not None and status.strip().upper() == "CANCELLED"


def parse_event(
    text: str, *, default_tz: str | None = "UTC", problems: list[str] | None = None
) -> CalendarEvent | None:
    """The event in one CalDAV resource; None when it holds no VEVENT (a VTODO, say).

    ``default_tz`` is the zone of floating times (unless the calendar names one in
    X-WR-TIMEZONE); None reads them in UTC and marks the event ``floating`` with no
    ``timezone``, for the reader to place in its own zone. A series comes back as
    its master with ``recurrence`` set and its overridden occurrences (RECURRENCE-ID
    components) in ``overrides``; cancelled occurrences are among its EXDATEs,
    whichever way the resource says so. Raises ValueError with a short reason for
    data that is malformed or lacks what an event needs; what could be read only by
    a guess (a TZID nothing explains) is added to ``problems``.
    """
    doc = scan_calendar(text)
    if not doc.events:
        return None
    if doc.others:
        # RFC 4791 4.1 forbids it, and Xandikos stores it: syncing the event would
        # rewrite the task with it, and deleting the event would delete the task.
        kinds = ", ".join(sorted(doc.others))
        raise ValueError(f"an event and a {kinds} in one resource, which crmcal leaves alone")
    master, overrides = _choose(doc.events)
    zones = ResourceZones(doc, default_tz)
    event = _read_component(master, zones)
    recurrence = _recurrence(master, overrides, zones)
    if recurrence is not None:
        changed = tuple(
            _read_component(o, zones)
            for o in overrides
            if not _cancelled(o) and o.first("RECURRENCE-ID") is not None
        )
        event = replace(event, recurrence=recurrence, overrides=changed)
    if problems is not None:
        problems.extend(zones.problems)
    return event


def _read_component(component: RawComponent, zones: ResourceZones) -> CalendarEvent:
    """One VEVENT's own fields (a master's rule and overrides are added by the caller)."""
    start, end, all_day, zone_name = _times(component, zones)
    start_prop = component.first("DTSTART")
    floating = start_prop is not None and is_floating(start_prop, zones)
    get = component.value
    summary, location, description = get("SUMMARY"), get("LOCATION"), get("DESCRIPTION")
    crm_id, crm_type = get(CRM_ID_PROPERTY), get(CRM_TYPE_PROPERTY)
    klass, transp, status = get("CLASS"), get("TRANSP"), get("STATUS")
    organizer = component.first("ORGANIZER")
    recurrence_id = component.first("RECURRENCE-ID")
    uid = get("UID")
    return CalendarEvent(
        summary=unescape_text(summary) if summary is not None else None,
        start=start,
        end=end,
        all_day=all_day,
        timezone=zone_name,
        location=unescape_text(location) if location is not None else None,
        description=unescape_text(description) if description is not None else None,
        private=klass is not None and klass.strip().upper() in ("PRIVATE", "CONFIDENTIAL"),
        busy=transp is None or transp.strip().upper() != "TRANSPARENT",
        reminder_minutes=_reminder(component),
        attendees=_attendees(component),
        organizer=email_address(organizer[1], parse_parameters(organizer[0]))
        if organizer
        else None,
        crm_id=text_token(crm_id),
        crm_type=text_token(crm_type),
        cancelled=status is not None and status.strip().upper() == "CANCELLED",
        recurrence_id=read_moment(recurrence_id, zones)[0] if recurrence_id else None,
        last_modified=_last_modified(component),
        uid=text_token(uid),
        floating=floating,
    )


def resource_uid(text: str) -> str | None:
    """The UID of a resource's first VEVENT, even when the rest of it is unreadable."""
    try:
        events = scan_calendar(text).events
    except ValueError:
        match = re.search(r"^UID(?:;[^:\r\n]*)?:([^\r\n]+)", text, re.MULTILINE)
        return match.group(1).strip() if match else None
    for event in events:
        uid = event.value("UID")
        if uid:
            return unescape_text(uid).strip()
    return None


def is_series(text: str) -> bool:
    """Whether a resource holds a recurring series (a rule, added dates or overrides)."""
    try:
        events = scan_calendar(text).events
    except ValueError:
        return False
    return any(
        "RRULE" in e.props or "RDATE" in e.props or "RECURRENCE-ID" in e.props for e in events
    )
