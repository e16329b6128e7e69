"""Google Calendar event resources <-> ``CalendarEvent``: the Google provider's codec.

Reading is lenient where Google is (times with an offset or a ``timeZone``,
all-day dates, private and confidential visibility, the first popup override as
the reminder); what cannot be read raises ``ValueError`` with a reason, and the
provider reports that item instead of importing it. Writing produces a body for
``events.insert`` or ``events.patch``: fields crmcal does not own are left to
Google, and the CRM id rides in ``extendedProperties.private``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from crmcal.model import Attendee, CalendarEvent, Recurrence, ResponseStatus

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
    except (ZoneInfoNotFoundError, ValueError):
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
        if not email:
            continue
        found.append(
            Attendee(
                email=email,
                name=attendee.get("displayName") or None,
                status=_STATUS_IN.get(str(attendee.get("responseStatus")), "needs_action"),
                resource=bool(attendee.get("resource")),
            )
        )
    return tuple(found)


def _recurrence(lines: list[str] | None) -> Recurrence | None:
    if not lines:
        return None
    rules = [line.split(":", 1)[1] for line in lines if line.upper().startswith("RRULE:")]
    if not rules:
        return None
    return Recurrence(rrule=rules[0])


def _updated(text: Any) -> dt.datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def parse(event: dict[str, Any], *, default_zone: str = "UTC") -> CalendarEvent:
    """The event a Google event resource describes (cancelled ones included)."""
    start, zone = _moment(event.get("start"), default_zone)
    end, _ = _moment(event.get("end"), default_zone) if event.get("end") else (None, None)
    all_day = not isinstance(start, dt.datetime)
    private = (event.get("extendedProperties") or {}).get("private") or {}
    original = event.get("originalStartTime")
    recurrence_id = _moment(original, default_zone)[0] if original else None
    organizer = (event.get("organizer") or {}).get("email")
    return CalendarEvent(
        summary=event.get("summary"),
        start=start,
        end=end,
        all_day=all_day,
        timezone=None if all_day else zone,
        location=event.get("location") or None,
        description=event.get("description") or None,
        private=event.get("visibility") in ("private", "confidential"),
        busy=event.get("transparency", "opaque") != "transparent",
        reminder_minutes=_reminder(event),
        attendees=_attendees(event),
        organizer=organizer,
        crm_id=private.get(CRM_ID_KEY) or None,
        crm_type=private.get(CRM_TYPE_KEY) or None,
        cancelled=event.get("status") == "cancelled",
        recurrence=_recurrence(event.get("recurrence")),
        recurrence_id=recurrence_id,
        last_modified=_updated(event.get("updated")),
        uid=event.get("iCalUID") or event.get("id"),
    )


def _time(moment: dt.datetime | dt.date, zone: str | None) -> dict[str, str]:
    if not isinstance(moment, dt.datetime):
        return {"date": moment.isoformat(), "dateTime": None}  # type: ignore[dict-item]
    tz = _zone(zone)
    local = moment.astimezone(tz) if tz is not None else moment.astimezone(dt.UTC)
    return {"dateTime": local.isoformat(), "timeZone": tz.key if tz is not None else "UTC",
            "date": None}  # type: ignore[dict-item]  # fmt: skip


def without_nulls(value: Any) -> Any:
    """A body for an insert: no field is sent as ``null``."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def body(event: CalendarEvent) -> dict[str, Any]:
    """The fields crmcal writes, for a patch (``None`` clears a field; see
    ``without_nulls`` for an insert)."""
    end = event.end
    if end is None:
        # Google needs an end: an all-day event lasts its day, a timed one is a moment.
        end = event.start + dt.timedelta(days=1) if event.all_day else event.start
    written: dict[str, Any] = {
        "summary": event.summary or "",
        "start": _time(event.start, event.timezone),
        "end": _time(end, event.timezone),
        "location": event.location,
        "description": event.description,
        "visibility": "private" if event.private else "default",
        "transparency": "opaque" if event.busy else "transparent",
        "reminders": {"useDefault": False, "overrides": []}
        if event.reminder_minutes is None
        else {"useDefault": False,
              "overrides": [{"method": "popup", "minutes": event.reminder_minutes}]},
        "attendees": [
            {"email": a.email, **({"displayName": a.name} if a.name else {}),
             "responseStatus": _STATUS_OUT.get(a.status, "needsAction"),
             **({"resource": True} if a.resource else {})}
            for a in event.attendees
        ],
    }  # fmt: skip
    private = {CRM_ID_KEY: event.crm_id, CRM_TYPE_KEY: event.crm_type}
    written["extendedProperties"] = {"private": {k: v for k, v in private.items() if v}}
    if event.cancelled:
        written["status"] = "cancelled"
    return written
