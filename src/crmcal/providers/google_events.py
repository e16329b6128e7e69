"""Google Calendar event resources <-> ``CalendarEvent``: the Google provider's codec.

Reading is lenient where Google is (times with an offset or a ``timeZone``,
all-day dates, private and confidential visibility, the first popup override as
the reminder); what cannot be read raises ``ValueError`` with a reason, and the
provider reports that item instead of importing it. A description Google's web
page saved as HTML is read as text (``html_text``), the same way each time, so an
unchanged one never looks edited; crmcal writes descriptions as plain text, which
Google shows with its line breaks. Writing produces a body for ``events.insert`` or
``events.patch``: fields crmcal does not own are left to Google, and the CRM id
rides in ``extendedProperties.private``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dateutil.rrule import rrulestr

from crmcal.model import Attendee, CalendarEvent, Recurrence, ResponseStatus
from crmcal.providers.html_text import description_text
from crmcal.providers.timestamps import parse_timestamp

# Keys in extendedProperties.private (Google drops keys over 44 characters).
CRM_ID_KEY = "crmcalActivityId"
CRM_TYPE_KEY = "crmcalType"

_STATUS_IN: dict[str, ResponseStatus] = {
    "needsAction": "needs_action",
    "accepted": "accepted",
    "declined": "declined",
    "tentative": "tentative",
}
_STATUS_OUT = {value: key for key, value in _STATUS_IN.items()}


def event_id_for(key: str) -> str:
    """The event id crmcal gives the event of ``key`` (Google ids are base32hex)."""
    return "crmcal" + "".join(c for c in key.lower() if c in "0123456789abcdefghijklmnopqrstuv")


def _zone(name: str | None) -> ZoneInfo | None:
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name too long
        return None


def _moment(value: Any, default_zone: str) -> tuple[dt.datetime | dt.date, str | None]:
    if not isinstance(value, dict):
        raise ValueError("the event has no start or end")
    if value.get("date"):
        return dt.date.fromisoformat(str(value["date"])), None
    text = value.get("dateTime")
    if not text:
        raise ValueError("the event has no start or end")
    moment = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    zone_name = value.get("timeZone")
    zone = _zone(zone_name) or _zone(default_zone)
    if moment.tzinfo is None:
        if zone is None:
            raise ValueError(f"unknown time zone {zone_name!r}")
        moment = moment.replace(tzinfo=zone)
    if zone is not None:
        moment = moment.astimezone(zone)
    return moment, (zone.key if zone is not None else None)


def parse_moment(value: Any, default_zone: str) -> dt.datetime | dt.date:
    """A Google time (``date``, or ``dateTime`` with an offset or a ``timeZone``)."""
    return _moment(value, default_zone)[0]


def _reminder(event: dict[str, Any]) -> int | None:
    reminders = event.get("reminders") or {}
    for override in reminders.get("overrides") or []:
        if override.get("method") == "popup" and isinstance(override.get("minutes"), int):
            return int(override["minutes"])
    return None


def _attendees(event: dict[str, Any]) -> tuple[Attendee, ...]:
    found = []
    for attendee in event.get("attendees") or []:
        email = str(attendee.get("email") or "").strip()
        if not email or attendee.get("self"):
            continue  # the calendar's own user is never a guest (and is written back as is)
        found.append(
            Attendee(
                email=email,
                name=attendee.get("displayName") or None,
                status=_STATUS_IN.get(str(attendee.get("responseStatus")), "needs_action"),
                resource=bool(attendee.get("resource")),
            )
        )
    return tuple(found)


def _dates(line: str, default_zone: str) -> list[dt.datetime | dt.date]:
    """The moments of an ``EXDATE``/``RDATE`` line (``TZID``, ``VALUE=DATE`` or UTC)."""
    head, _, values = line.partition(":")
    params = dict(p.split("=", 1) for p in head.split(";")[1:] if "=" in p)
    zone = _zone(params.get("TZID")) or _zone(default_zone) or dt.UTC
    found: list[dt.datetime | dt.date] = []
    for value in filter(None, (v.strip() for v in values.split(","))):
        if params.get("VALUE") == "DATE" or len(value) == 8:
            found.append(dt.datetime.strptime(value, "%Y%m%d").date())
        elif value.endswith("Z"):
            found.append(dt.datetime.strptime(value, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC))
        else:
            found.append(dt.datetime.strptime(value, "%Y%m%dT%H%M%S").replace(tzinfo=zone))
    return found


def _recurrence(lines: list[str] | None, default_zone: str) -> Recurrence | None:
    if not lines:
        return None
    rules = [line.split(":", 1)[1] for line in lines if line.upper().startswith("RRULE:")]
    if not rules:
        return None
    exdates: list[dt.datetime | dt.date] = []
    rdates: list[dt.datetime | dt.date] = []
    for line in lines:
        name = line.split(":", 1)[0].split(";", 1)[0].upper()
        if name in ("EXDATE", "RDATE"):
            (exdates if name == "EXDATE" else rdates).extend(_dates(line, default_zone))
    return Recurrence(rrule=rules[0], exdates=tuple(exdates), rdates=tuple(rdates))


def _date_line(name: str, moments: tuple[dt.datetime | dt.date, ...], zone: str | None) -> str:
    if all(not isinstance(m, dt.datetime) for m in moments):
        return f"{name};VALUE=DATE:" + ",".join(f"{m:%Y%m%d}" for m in moments)
    tz = _zone(zone)
    if tz is None:
        utc = [m.astimezone(dt.UTC) for m in moments if isinstance(m, dt.datetime)]
        return f"{name}:" + ",".join(f"{m:%Y%m%dT%H%M%SZ}" for m in utc)
    local = [m.astimezone(tz) for m in moments if isinstance(m, dt.datetime)]
    return f"{name};TZID={tz.key}:" + ",".join(f"{m:%Y%m%dT%H%M%S}" for m in local)


def recurrence_lines(recurrence: Recurrence, zone: str | None) -> list[str]:
    """``recurrence[]`` for Google: the rule, then the dates left out and added."""
    lines = [f"RRULE:{recurrence.rrule.removeprefix('RRULE:')}"]
    if recurrence.exdates:
        lines.append(_date_line("EXDATE", recurrence.exdates, zone))
    if recurrence.rdates:
        lines.append(_date_line("RDATE", recurrence.rdates, zone))
    return lines


def is_event(item: dict[str, Any]) -> bool:
    """Whether crmcal treats the item as an event (working locations, focus time,
    out-of-office blocks and birthdays are statuses of the calendar's owner)."""
    return item.get("eventType", "default") in ("default", "fromGmail")


def with_exceptions(event: CalendarEvent, exceptions: list[dict[str, Any]]) -> CalendarEvent:
    """A series with the occurrences Google keeps as events of their own: the cancelled
    ones among the dates it leaves out (as CalDAV's EXDATEs), the changed ones as its
    ``overrides`` (each with its original start as ``recurrence_id``)."""
    if event.recurrence is None:
        return event
    zone = event.timezone or "UTC"
    cancelled = []
    changed = []
    for item in exceptions:
        if not item.get("originalStartTime"):
            continue
        if item.get("status") == "cancelled":
            original = _moment(item["originalStartTime"], zone)[0]
            if makes(event, original):
                # One at a start the series no longer makes (it was moved) hides nothing.
                cancelled.append(original)
        else:
            changed.append(parse(item, default_zone=zone))
    changed.sort(key=lambda e: _sort_key(e.recurrence_id))
    return replace(event.leaving_out(cancelled), overrides=tuple(changed))


def makes(event: CalendarEvent, original: dt.datetime | dt.date) -> bool:
    """Whether the series ``event`` has an occurrence starting at ``original``: Google
    keeps an exception at its ``originalStartTime`` when the series moves away from it."""
    rule = event.recurrence
    if rule is None:
        return False
    zone = _zone(event.timezone) or dt.UTC
    if original in rule.rdates:
        return True

    timed = isinstance(event.start, dt.datetime)
    if timed != isinstance(original, dt.datetime):
        return False
    if isinstance(event.start, dt.datetime) and isinstance(original, dt.datetime):
        first, wanted = event.start.astimezone(zone), original.astimezone(zone)
    else:
        first = dt.datetime.combine(event.start, dt.time())
        wanted = dt.datetime.combine(original, dt.time())
    if wanted == first:
        return True
    try:
        found = rrulestr(rule.rrule, dtstart=first, ignoretz=not timed)
        return bool(found.between(wanted, wanted, inc=True))
    except (ValueError, TypeError):
        return True  # a rule this cannot read: the exception is taken as it is


def _sort_key(moment: dt.datetime | dt.date | None) -> str:
    if isinstance(moment, dt.datetime):
        return moment.astimezone(dt.UTC).isoformat()
    return moment.isoformat() if moment is not None else ""


def instance_id(series_id: str, original: dt.datetime | dt.date) -> str:
    """Google's id of a series' occurrence: the series' id and the original start, in
    UTC (``{id}_20261201T080000Z``) or as a day for all-day series (``{id}_20261201``)."""
    if isinstance(original, dt.datetime):
        return f"{series_id}_{original.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}"
    return f"{series_id}_{original:%Y%m%d}"


def parse(event: dict[str, Any], *, default_zone: str = "UTC") -> CalendarEvent:
    """The event a Google event resource describes (cancelled ones included)."""
    start, zone = _moment(event.get("start"), default_zone)
    end, _ = _moment(event.get("end"), default_zone) if event.get("end") else (None, None)
    all_day = not isinstance(start, dt.datetime)
    if not all_day and end == start:
        end = None  # crmcal writes an event without an end so (Google needs one)
    private = (event.get("extendedProperties") or {}).get("private") or {}
    original = event.get("originalStartTime")
    recurrence_id = _moment(original, default_zone)[0] if original else None
    organizer_entry = event.get("organizer") or {}
    organizer = organizer_entry.get("email")
    return CalendarEvent(
        summary=event.get("summary") or None,
        start=start,
        end=end,
        all_day=all_day,
        timezone=None if all_day else zone,
        location=event.get("location") or None,
        description=_description(event.get("description")),
        private=event.get("visibility") in ("private", "confidential"),
        busy=event.get("transparency", "opaque") != "transparent",
        reminder_minutes=_reminder(event),
        attendees=_attendees(event),
        organizer=organizer,
        crm_id=private.get(CRM_ID_KEY) or None,
        crm_type=private.get(CRM_TYPE_KEY) or None,
        cancelled=event.get("status") == "cancelled",
        recurrence=_recurrence(event.get("recurrence"), zone or default_zone),
        recurrence_id=recurrence_id,
        last_modified=parse_timestamp(event.get("updated")),
        uid=event.get("iCalUID") or event.get("id"),
        invitation=bool(organizer) and not organizer_entry.get("self"),
        # Google shows a guest only their own entry when the organizer hides the guest
        # list (or past ``maxAttendees``), and says so.
        attendees_partial=bool(event.get("attendeesOmitted")),
    )


def _description(value: Any) -> str | None:
    if not value:
        return None
    return description_text(str(value)) or None


def _description_out(event: CalendarEvent, current: dict[str, Any] | None) -> str | None:
    """The description to write: plain text, or the event's own (HTML) description when
    it reads as that text already, so a rewrite never strips formatting nobody changed."""
    there = (current or {}).get("description")
    if there and _description(there) == event.description:
        return str(there)
    return event.description


def _time(moment: dt.datetime | dt.date, zone: str | None) -> dict[str, str | None]:
    if not isinstance(moment, dt.datetime):
        return {"date": moment.isoformat(), "dateTime": None}
    tz = _zone(zone)
    local = moment.astimezone(tz) if tz is not None else moment.astimezone(dt.UTC)
    return {"dateTime": local.isoformat(), "timeZone": tz.key if tz is not None else "UTC",
            "date": None}  # fmt: skip


def without_nulls(value: Any) -> Any:
    """A body for an insert: no field is sent as ``null``."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def _reminders(event: CalendarEvent, current: dict[str, Any] | None) -> dict[str, Any]:
    """crmcal owns the first popup reminder; other clients' reminders stay."""
    overrides = list(((current or {}).get("reminders") or {}).get("overrides") or [])
    first_popup = next((n for n, o in enumerate(overrides) if o.get("method") == "popup"), None)
    if first_popup is not None:
        del overrides[first_popup]
    if event.reminder_minutes is not None:
        overrides.insert(first_popup or 0, {"method": "popup", "minutes": event.reminder_minutes})
    return {"useDefault": False, "overrides": overrides[:5]}


def _attendees_out(event: CalendarEvent, current: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The attendees; what other clients stored about one (optional, comment ...) stays,
    and so do the entries the CRM never carries: the calendar's own user, the
    organizer and booked rooms, exactly as they were."""
    present = (current or {}).get("attendees") or []
    known = {str(a.get("email", "")).lower(): a for a in present}
    wanted = {a.email.lower() for a in event.attendees}
    written = [
        dict(a)
        for a in present
        if str(a.get("email", "")).lower() not in wanted
        and (a.get("self") or a.get("organizer") or a.get("resource"))
    ]
    for attendee in event.attendees:
        entry = dict(known.get(attendee.email.lower(), {}))
        entry.pop("self", None)
        entry.pop("organizer", None)
        entry.pop("displayName", None)
        entry["email"] = attendee.email
        if attendee.name:
            entry["displayName"] = attendee.name
        entry["responseStatus"] = _STATUS_OUT.get(attendee.status, "needsAction")
        if attendee.resource:
            entry["resource"] = True
        written.append(entry)
    return written


# The keys of an event resource each field group (``model.FIELD_GROUPS``) writes.
KEYS = {
    "summary": ("summary",), "when": ("start", "end"), "location": ("location",),
    "description": ("description",), "private": ("visibility",),
    "busy": ("transparency",), "reminder": ("reminders",), "attendees": ("attendees",),
    "recurrence": ("recurrence",), "cancelled": ("status",),
}  # fmt: skip


# What Google lets a client change of an event Gmail made from a mail (a flight, a
# hotel stay: ``eventType`` ``fromGmail``); a patch of anything else is refused (400).
FROM_GMAIL_KEYS = frozenset(("reminders", "colorId", "visibility", "status", "extendedProperties"))
FROM_GMAIL_GROUPS = frozenset(group for group, keys in KEYS.items() if set(keys) <= FROM_GMAIL_KEYS)


def from_gmail(item: dict[str, Any]) -> bool:
    return item.get("eventType") == "fromGmail"


def writable(current: dict[str, Any], written: dict[str, Any]) -> dict[str, Any]:
    """The part of a patch of ``current`` to send: all of it, but never the attendees of
    an event whose guest list Google shows in part, and of an event from Gmail only
    what ``FROM_GMAIL_KEYS`` names (Google takes no more)."""
    if current.get("attendeesOmitted"):
        # The guests shown are not all there are: written back, they would be the whole
        # list, and the others would be gone.
        written = {k: v for k, v in written.items() if k != "attendees"}
    if not from_gmail(current):
        return written
    return {k: v for k, v in written.items() if k in FROM_GMAIL_KEYS}


def patch_body(
    event: CalendarEvent, current: dict[str, Any], changed: frozenset[str]
) -> dict[str, Any]:
    """A patch of ``current`` that writes only the ``changed`` field groups (and
    crmcal's own ids): what else the event says stays as Google has it."""
    full = body(event, current)
    keys = {key for group in changed for key in KEYS.get(group, ())}
    written = {k: v for k, v in full.items() if k in keys or k == "extendedProperties"}
    if "cancelled" in changed and not event.cancelled and current.get("status") == "cancelled":
        written["status"] = "confirmed"
    return written


def body(event: CalendarEvent, current: dict[str, Any] | None = None) -> dict[str, Any]:
    """The fields crmcal writes, for a patch of ``current`` (``None`` clears a field;
    see ``without_nulls`` for an insert)."""
    end = event.end
    if end is None:
        # Google needs an end: an all-day event lasts its day, a timed one is a moment.
        end = event.start + dt.timedelta(days=1) if event.all_day else event.start
    written: dict[str, Any] = {
        "summary": event.summary or "",
        "start": _time(event.start, event.timezone),
        "end": _time(end, event.timezone),
        "location": event.location,
        "description": _description_out(event, current),
        "visibility": "private" if event.private else "default",
        "transparency": "opaque" if event.busy else "transparent",
        "reminders": _reminders(event, current),
        "attendees": _attendees_out(event, current),
        "recurrence": recurrence_lines(event.recurrence, event.timezone)
        if event.recurrence is not None
        else None,
    }
    private = {CRM_ID_KEY: event.crm_id, CRM_TYPE_KEY: event.crm_type}
    # A patch merges these keys into what is there: only ours change.
    written["extendedProperties"] = {"private": {k: v for k, v in private.items() if v}}
    if event.cancelled:
        written["status"] = "cancelled"
    return written
