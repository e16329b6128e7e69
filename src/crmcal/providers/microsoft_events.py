"""Microsoft Graph event resources <-> ``CalendarEvent``: the Microsoft provider's codec.

Graph answers times without an offset, in the zone the request asks for (crmcal
asks for UTC) and keeps the zone the event was written in as
``originalStartTimeZone`` (a Windows or an IANA name); the codec reads the
instant in UTC and shows it in that zone. Bodies are read as plain text (crmcal
asks for text; HTML, if it comes, is turned into text the same way each time,
so a round trip never grows a note). The CRM id rides in single-value extended
properties, which Graph returns only when asked (``$expand``) and never in
delta listings.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from icalendar.timezone.windows_to_olson import WINDOWS_TO_OLSON

from crmcal.model import Attendee, CalendarEvent, Recurrence, ResponseStatus
from crmcal.providers.html_text import html_to_text
from crmcal.providers.timestamps import parse_timestamp

# Named properties in PS_PUBLIC_STRINGS: the set Outlook add-ins use for their own.
_PROPERTY_SET = "{00020329-0000-0000-C000-000000000046}"
CRM_ID = f"String {_PROPERTY_SET} Name crmcalActivityId"
CRM_TYPE = f"String {_PROPERTY_SET} Name crmcalType"
CREATE_KEY = f"String {_PROPERTY_SET} Name crmcalKey"
PROPERTIES = (CRM_ID, CRM_TYPE, CREATE_KEY)

_STATUS_IN: dict[str, ResponseStatus] = {
    "accepted": "accepted",
    "declined": "declined",
    "tentativelyAccepted": "tentative",
}
_STATUS_OUT = {"accepted": "accepted", "declined": "declined", "tentative": "tentativelyAccepted",
               "needs_action": "none"}  # fmt: skip
_FREE = ("free", "workingElsewhere")
_PRIVATE = ("private", "confidential")


def expand_properties() -> str:
    """The ``$expand`` value that brings crmcal's extended properties along."""
    wanted = " or ".join(f"id eq '{p}'" for p in PROPERTIES)
    return f"singleValueExtendedProperties($filter={wanted})"


def zone(name: str | None) -> ZoneInfo | None:
    """An IANA zone for a Windows or IANA zone name; None when neither."""
    if not name:
        return None
    for key in (name, WINDOWS_TO_OLSON.get(name)):
        if key:
            try:
                return ZoneInfo(key)
            except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name too long
                continue
    return None


def _instant(value: Any) -> dt.datetime:
    if not isinstance(value, dict) or not value.get("dateTime"):
        raise ValueError("the event has no start or end")
    text = str(value["dateTime"])
    head, dot, fraction = text.partition(".")
    moment = dt.datetime.fromisoformat(head + (f".{fraction[:6]}" if dot else ""))
    if moment.tzinfo is None:
        found = zone(value.get("timeZone") or "UTC")
        if found is None:
            raise ValueError(f"unknown time zone {value.get('timeZone')!r}")
        moment = moment.replace(tzinfo=found)
    return moment


def _text(body: Any) -> str | None:
    if not isinstance(body, dict) or not body.get("content"):
        return None
    content = str(body["content"])
    if str(body.get("contentType", "text")).lower() == "html":
        content = html_to_text(content)
    content = content.replace("\r\n", "\n")
    return content or None


def _attendees(item: dict[str, Any]) -> tuple[Attendee, ...]:
    found = []
    for attendee in item.get("attendees") or []:
        address = (attendee.get("emailAddress") or {}).get("address")
        if not address:
            continue
        response = str((attendee.get("status") or {}).get("response") or "none")
        name = (attendee.get("emailAddress") or {}).get("name") or None
        if name and name.strip().lower() == str(address).strip().lower():
            name = None  # Exchange shows the address where a guest has no name
        found.append(
            Attendee(
                email=str(address).strip(),
                name=name,
                status=_STATUS_IN.get(response, "needs_action"),
                resource=attendee.get("type") == "resource",
            )
        )
    return tuple(found)


def properties(item: dict[str, Any]) -> dict[str, str]:
    """crmcal's extended properties on an event (when they were asked for)."""
    found = {}
    for prop in item.get("singleValueExtendedProperties") or []:
        if isinstance(prop, dict) and prop.get("value") is not None:
            found[str(prop.get("id", "")).lower()] = str(prop["value"])
    return {p: found[p.lower()] for p in PROPERTIES if p.lower() in found}


_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_BYDAY = dict(zip(_DAYS, ("MO", "TU", "WE", "TH", "FR", "SA", "SU"), strict=True))
_INDEX = {"first": 1, "second": 2, "third": 3, "fourth": 4, "last": -1}


def _rrule(recurrence: Any, start: dt.datetime | dt.date) -> Recurrence | None:
    """A ``patternedRecurrence`` as an RRULE (Graph's patterns are a subset of RFC 5545)."""
    if not isinstance(recurrence, dict):
        return None
    pattern, span = recurrence.get("pattern") or {}, recurrence.get("range") or {}
    kind = pattern.get("type")
    parts = _pattern_parts(pattern, start)
    interval = int(pattern.get("interval") or 1)
    if interval != 1:
        parts.append(f"INTERVAL={interval}")
    parts += _range_parts(span, start)
    # The week's first day changes which days a rule means only every other week or so.
    first_day = pattern.get("firstDayOfWeek")
    if kind == "weekly" and interval > 1 and first_day and first_day != "monday":
        parts.append(f"WKST={_BYDAY.get(first_day, 'MO')}")
    return Recurrence(rrule=";".join(p for p in parts if p))


def _pattern_parts(pattern: dict[str, Any], start: dt.datetime | dt.date) -> list[str]:
    """The FREQ and BY- parts of a recurrence's ``pattern`` ("" for one left out: a
    part that says what the start says already)."""
    kind = pattern.get("type")
    days = ",".join(_BYDAY[d] for d in pattern.get("daysOfWeek") or [] if d in _BYDAY)
    if kind == "daily":
        return ["FREQ=DAILY"]
    if kind == "weekly":
        # The start's own weekday alone is what an RRULE without BYDAY says.
        own = _BYDAY[_DAYS[start.weekday()]]
        return ["FREQ=WEEKLY", f"BYDAY={days}" if days and days != own else ""]
    if kind == "absoluteMonthly":
        # The start's own day of the month is what an RRULE without BYMONTHDAY says.
        day = pattern.get("dayOfMonth")
        return ["FREQ=MONTHLY", f"BYMONTHDAY={day}" if day != start.day else ""]
    if kind == "relativeMonthly":
        return [
            "FREQ=MONTHLY",
            f"BYDAY={days}",
            f"BYSETPOS={_INDEX.get(str(pattern.get('index')), 1)}",
        ]
    if kind == "absoluteYearly":
        month, day = pattern.get("month"), pattern.get("dayOfMonth")
        bare = (month, day) == (start.month, start.day)  # what a bare yearly rule says
        return ["FREQ=YEARLY", "" if bare else f"BYMONTH={month}",
                "" if bare else f"BYMONTHDAY={day}"]  # fmt: skip
    if kind == "relativeYearly":
        return ["FREQ=YEARLY", f"BYMONTH={pattern.get('month')}", f"BYDAY={days}",
                f"BYSETPOS={_INDEX.get(str(pattern.get('index')), 1)}"]  # fmt: skip
    raise ValueError(f"unknown recurrence pattern {kind!r}")


def _range_parts(span: dict[str, Any], start: dt.datetime | dt.date) -> list[str]:
    """The COUNT or UNTIL of a recurrence's ``range`` (none for one without an end)."""
    if span.get("type") == "numbered":
        return [f"COUNT={int(span.get('numberOfOccurrences') or 1)}"]
    if span.get("type") == "endDate" and span.get("endDate"):
        end = dt.date.fromisoformat(str(span["endDate"]))
        if isinstance(start, dt.datetime):
            last = dt.datetime.combine(end, start.timetz()).astimezone(dt.UTC)
            return [f"UNTIL={last:%Y%m%dT%H%M%SZ}"]
        return [f"UNTIL={end:%Y%m%d}"]
    return []


def recurrence_of(event: CalendarEvent) -> dict[str, Any]:
    """An RRULE as Graph's ``patternedRecurrence``; ValueError for what Graph cannot say."""
    assert event.recurrence is not None
    parts = dict(
        p.split("=", 1) for p in event.recurrence.rrule.upper().removeprefix("RRULE:").split(";")
    )
    names = {v: k for k, v in _BYDAY.items()}
    start = event.start
    first = start.date() if isinstance(start, dt.datetime) else start
    days = [names[d[-2:]] for d in parts.get("BYDAY", "").split(",") if d[-2:] in names]
    pattern: dict[str, Any] = {"interval": int(parts.get("INTERVAL", 1))}
    freq = parts.get("FREQ")
    if freq == "DAILY" and not {"BYDAY", "BYMONTHDAY", "BYMONTH"} & set(parts):
        pattern["type"] = "daily"
    elif freq == "WEEKLY":
        pattern |= {"type": "weekly", "daysOfWeek": days or [_DAYS[first.weekday()]],
                    "firstDayOfWeek": "monday"}  # fmt: skip
    elif freq == "MONTHLY" and "BYDAY" not in parts:
        pattern |= {"type": "absoluteMonthly",
                    "dayOfMonth": int(parts.get("BYMONTHDAY", first.day))}  # fmt: skip
    elif freq == "YEARLY" and "BYDAY" not in parts:
        pattern |= {"type": "absoluteYearly", "month": int(parts.get("BYMONTH", first.month)),
                    "dayOfMonth": int(parts.get("BYMONTHDAY", first.day))}  # fmt: skip
    else:
        raise ValueError(f"Microsoft 365 cannot hold the rule {event.recurrence.rrule}")
    span: dict[str, Any] = {"type": "noEnd", "startDate": first.isoformat()}
    if "COUNT" in parts:
        span |= {"type": "numbered", "numberOfOccurrences": int(parts["COUNT"])}
    elif "UNTIL" in parts:
        span |= {"type": "endDate", "endDate": _end_date(parts["UNTIL"], start, event.timezone)}
    if event.timezone:
        span["recurrenceTimeZone"] = event.timezone
    return {"pattern": pattern, "range": span}


def _end_date(until: str, start: dt.datetime | dt.date, zone_name: str | None) -> str:
    """Graph's ``endDate`` for an RRULE's UNTIL: the last day with an occurrence, in the
    series' zone (Graph counts every occurrence on that day, UNTIL only those up to its
    moment: an UNTIL before the day's start time ends the series the day before)."""
    day = dt.date(int(until[:4]), int(until[4:6]), int(until[6:8]))
    if not isinstance(start, dt.datetime) or "T" not in until:
        return day.isoformat()
    moment = dt.datetime.strptime(until.rstrip("Z")[:15], "%Y%m%dT%H%M%S")
    if until.endswith("Z"):
        local = zone(zone_name) or start.tzinfo or dt.UTC
        moment = moment.replace(tzinfo=dt.UTC).astimezone(local)
    else:
        moment = moment.replace(tzinfo=start.tzinfo)
    if moment.time() < start.astimezone(moment.tzinfo).time():
        return (moment.date() - dt.timedelta(days=1)).isoformat()
    return moment.date().isoformat()


def with_cancelled(event: CalendarEvent, cancelled: list[str]) -> CalendarEvent:
    """A series with its cancelled occurrences (Graph's ``OID.<id>.<date>``) among the
    dates it leaves out, at the series' own time of day."""
    if event.recurrence is None or not cancelled:
        return event
    found: list[dt.datetime | dt.date] = []
    for entry in cancelled:
        try:
            day = dt.date.fromisoformat(entry.rsplit(".", 1)[-1][:10])
        except ValueError:
            continue
        start = event.start
        if isinstance(start, dt.datetime):
            found.append(dt.datetime.combine(day, start.timetz()))
        else:
            found.append(day)
    return event.leaving_out(found)


def own_zone(item: dict[str, Any]) -> ZoneInfo | None:
    """The zone an event was written in (a series': the one its occurrences keep their
    wall-clock time in), or None when Graph names it in no way crmcal can read: desktop
    Outlook's legacy custom zones are "tzone://Microsoft/Custom", an iCalendar file's
    own zone "Customized Time Zone". Only an item that names no zone at all is read
    in the zone its times came in (UTC, as crmcal asks for them): reading a series in
    UTC would move every occurrence across a daylight-saving switch by an hour."""
    names = [item.get("originalStartTimeZone")]
    if isinstance(item.get("recurrence"), dict):
        names.insert(0, series_zone(item))
    given = [str(name) for name in names if name]
    for name in given:
        found = zone(name)
        if found is not None:
            return found
    return None if given else zone((item.get("start") or {}).get("timeZone"))


def series_zone(item: dict[str, Any]) -> str | None:
    """The zone a series' occurrences keep their wall-clock time in."""
    span = (item.get("recurrence") or {}).get("range") or {}
    return span.get("recurrenceTimeZone") or item.get("originalStartTimeZone") or None


def original_start(
    item: dict[str, Any], series: CalendarEvent, series_zone: str | None = None
) -> dt.datetime | dt.date | None:
    """An occurrence's original start: an instant, or a day for an all-day series (the
    day in the zone the series is kept in: Graph answers the instant of its midnight)."""
    found = parse_timestamp(item.get("originalStart"))
    if found is None or not series.all_day:
        return found
    local = zone(series_zone) or zone(item.get("originalStartTimeZone")) or dt.UTC
    return found.astimezone(local).date()


def with_exceptions(
    event: CalendarEvent,
    cancelled: list[str],
    exceptions: list[dict[str, Any]],
    series_zone: str | None = None,
) -> CalendarEvent:
    """A series with its cancelled occurrences among the dates it leaves out and its
    exceptions (Graph's changed occurrences) as its ``overrides``."""
    event = with_cancelled(event, cancelled)
    if event.recurrence is None or not exceptions:
        return event
    found = []
    for item in exceptions:
        original = original_start(item, event, series_zone)
        if original is None:
            continue
        found.append(replace(parse(item), recurrence_id=original))
    found.sort(key=lambda e: _sort_key(e.recurrence_id))
    return replace(event, overrides=tuple(found))


def _sort_key(moment: dt.datetime | dt.date | None) -> str:
    if isinstance(moment, dt.datetime):
        return moment.astimezone(dt.UTC).isoformat()
    return moment.isoformat() if moment is not None else ""


def parse(item: dict[str, Any]) -> CalendarEvent:
    """The event a Graph event resource describes."""
    start, end = _instant(item.get("start")), _instant(item.get("end"))
    own = own_zone(item)
    all_day = bool(item.get("isAllDay"))
    first: dt.datetime | dt.date
    last: dt.datetime | dt.date | None
    if all_day:
        # All-day bounds are midnights of the event's own days, whatever zone they came in.
        first, last, key = start.date(), end.date(), None
    else:
        local = own or dt.UTC
        first, last = start.astimezone(local), end.astimezone(local)
        # A zone Graph does not name: None, for the reader to keep it in its own.
        key = own.key if own is not None else None
        if last == first:
            last = None  # crmcal writes an event without an end so (Graph needs one)
    props = properties(item)
    organizer = ((item.get("organizer") or {}).get("emailAddress") or {}).get("address")
    original = item.get("originalStart")
    return CalendarEvent(
        summary=item.get("subject") or None,
        start=first,
        end=last,
        all_day=all_day,
        timezone=key,
        location=((item.get("location") or {}).get("displayName")) or None,
        description=_text(item.get("body")),
        private=item.get("sensitivity") in _PRIVATE,
        busy=item.get("showAs", "busy") not in _FREE,
        reminder_minutes=int(item["reminderMinutesBeforeStart"])
        if item.get("isReminderOn") and item.get("reminderMinutesBeforeStart") is not None
        else None,
        attendees=_attendees(item),
        organizer=str(organizer) if organizer else None,
        crm_id=props.get(CRM_ID),
        crm_type=props.get(CRM_TYPE),
        cancelled=bool(item.get("isCancelled")),
        recurrence=_rrule(item.get("recurrence"), first),
        recurrence_id=parse_timestamp(original),
        last_modified=parse_timestamp(item.get("lastModifiedDateTime")),
        uid=item.get("iCalUId") or item.get("id"),
        invitation=item.get("isOrganizer") is False if "isOrganizer" in item else None,
        # An attendee of a meeting whose organizer hides the attendees sees only
        # themselves in it.
        attendees_partial=bool(item.get("hideAttendees")) and item.get("isOrganizer") is False,
    )


def _time(moment: dt.datetime | dt.date, name: str | None) -> dict[str, str]:
    if not isinstance(moment, dt.datetime):
        return {"dateTime": f"{moment.isoformat()}T00:00:00", "timeZone": name or "UTC"}
    found = zone(name)
    local = moment.astimezone(found) if found is not None else moment.astimezone(dt.UTC)
    return {"dateTime": local.replace(tzinfo=None).isoformat(),
            "timeZone": found.key if found is not None else "UTC"}  # fmt: skip


# The keys of an event resource each field group (``model.FIELD_GROUPS``) writes.
KEYS = {
    "summary": ("subject",), "when": ("start", "end", "isAllDay"),
    "location": ("location",), "description": ("body",), "private": ("sensitivity",),
    "busy": ("showAs",), "reminder": ("isReminderOn", "reminderMinutesBeforeStart"),
    "attendees": ("attendees",), "recurrence": ("recurrence",), "cancelled": (),
}  # fmt: skip


def patch_body(
    event: CalendarEvent, *, with_attendees: bool, changed: frozenset[str]
) -> dict[str, Any]:
    """A patch that writes only the ``changed`` field groups: an HTML body, a Teams
    link, an attendee list crmcal did not change stay as Outlook has them."""
    full = body(event, with_attendees=with_attendees)
    keys = {key for group in changed for key in KEYS.get(group, ())}
    keys.add("singleValueExtendedProperties")
    return {k: v for k, v in full.items() if k in keys}


def body(event: CalendarEvent, *, with_attendees: bool, key: str | None = None) -> dict[str, Any]:
    """The fields crmcal writes, for a create (with the create ``key``) or a patch.

    Attendees are written only ``with_attendees``: Graph mails everyone it is told
    about, so by default participants stay in the CRM.
    """
    end = event.end
    if end is None:
        end = event.start + dt.timedelta(days=1) if event.all_day else event.start
    written: dict[str, Any] = {
        "subject": event.summary or "",
        "start": _time(event.start, event.timezone),
        "end": _time(end, event.timezone),
        "isAllDay": event.all_day,
        "location": {"displayName": event.location or ""},
        "body": {"contentType": "text", "content": event.description or ""},
        "sensitivity": "private" if event.private else "normal",
        "showAs": "busy" if event.busy else "free",
        "isReminderOn": event.reminder_minutes is not None,
    }
    if event.reminder_minutes is not None:
        written["reminderMinutesBeforeStart"] = event.reminder_minutes
    if with_attendees:
        written["attendees"] = [
            {"emailAddress": {"address": a.email, **({"name": a.name} if a.name else {})},
             "type": "resource" if a.resource else "required"}
            for a in event.attendees
        ]  # fmt: skip
    if event.recurrence is not None:
        written["recurrence"] = recurrence_of(event)
    props = {CRM_ID: event.crm_id, CRM_TYPE: event.crm_type, CREATE_KEY: key}
    extended = [{"id": p, "value": v} for p, v in props.items() if v]
    if extended:
        written["singleValueExtendedProperties"] = extended
    return written
