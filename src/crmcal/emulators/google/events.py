"""Event resources as Google stores them: what a write may say, and what it becomes.

A write (insert, update, patch) is checked the way the API checks it — ids in
base32hex, start and end of one kind and in order, reminders in range — and the
stored resource gets Google's read-only fields (``etag``, ``created``,
``updated``, ``sequence``, ``iCalUID``, ``organizer`` ...). Extended properties
follow Google's silent limits: keys over 44 characters vanish, values over 1024
are cut.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from crmcal.emulators.google.errors import GoogleError, invalid, required

_ID = re.compile(r"[a-v0-9]{5,1024}")
_READ_ONLY = (
    "kind", "etag", "created", "updated", "htmlLink", "creator", "organizer", "iCalUID",
    "recurringEventId", "originalStartTime", "privateCopy", "locked", "hangoutLink",
)  # fmt: skip
_WRITABLE = frozenset(
    ("id", "status", "summary", "description", "location", "colorId", "start", "end",
     "endTimeUnspecified", "recurrence", "transparency", "visibility", "iCalUID", "sequence",
     "attendees", "attendeesOmitted", "extendedProperties", "reminders", "source",
     "guestsCanInviteOthers", "guestsCanModify", "guestsCanSeeOtherGuests", "anyoneCanAddSelf",
     "eventType", "conferenceData", "attachments", "focusTimeProperties", "gadget",
     "outOfOfficeProperties", "workingLocationProperties", "birthdayProperties", "eventLabelId",
     "originalStartTime", "recurringEventId")
)  # fmt: skip
STATUSES = ("confirmed", "tentative", "cancelled")
VISIBILITIES = ("default", "public", "private", "confidential")
RESPONSES = ("needsAction", "declined", "tentative", "accepted")
KEY_LIMIT, VALUE_LIMIT = 44, 1024


def rfc3339(moment: dt.datetime) -> str:
    """Google's timestamps: UTC with milliseconds."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{moment.microsecond // 1000:03d}Z"
    )


def valid_id(event_id: str) -> bool:
    return bool(_ID.fullmatch(event_id))


def _zone(name: object, field: str) -> ZoneInfo:
    try:
        return ZoneInfo(str(name))
    except (ZoneInfoNotFoundError, ValueError):
        raise invalid("Invalid time zone definition for start time.", location=field) from None


def moment(value: Any, field: str) -> dt.datetime | dt.date:
    """The instant (or date) an ``EventDateTime`` names."""
    if not isinstance(value, dict):
        raise required(field)
    if "date" in value and value["date"] is not None:
        if value.get("dateTime"):
            raise invalid("Invalid start time.", location=field)
        try:
            return dt.date.fromisoformat(str(value["date"]))
        except ValueError:
            raise invalid("Invalid value for date.", location=f"{field}.date") from None
    text = value.get("dateTime")
    if not text:
        raise required(field)
    try:
        parsed = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        raise invalid("Invalid value for dateTime.", location=f"{field}.dateTime") from None
    if value.get("timeZone"):
        zone = _zone(value["timeZone"], field)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=zone)
    elif parsed.tzinfo is None:
        raise invalid("Missing time zone definition for start time.", location=f"{field}.timeZone")
    return parsed


def _check_times(event: dict[str, Any]) -> None:
    if event.get("status") == "cancelled" and "start" not in event:
        return
    if "start" not in event:
        raise required("start")
    if "end" not in event:
        raise required("end")
    start, end = moment(event["start"], "start"), moment(event["end"], "end")
    if isinstance(start, dt.datetime) != isinstance(end, dt.datetime):
        raise invalid("Start and end times must either both be date or both be dateTime.")
    if end < start:
        raise GoogleError(400, "timeRangeEmpty", "The specified time range is empty.",
                          location="end.dateTime")  # fmt: skip
    recurring_without_zone = isinstance(start, dt.datetime) and not event["start"].get("timeZone")
    if event.get("recurrence") and recurring_without_zone:
        raise invalid("Missing time zone definition for start time.", location="start")


# The enumerated fields a write may set: each with its default and allowed values.
_ENUMS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("status", "confirmed", STATUSES),
    ("visibility", "default", VISIBILITIES),
    ("transparency", "opaque", ("opaque", "transparent")),
)


def _check_fields(event: dict[str, Any]) -> None:
    unknown = set(event) - _WRITABLE - set(_READ_ONLY)
    if unknown:
        raise invalid(f"Invalid field: {sorted(unknown)[0]}")
    for name, default, allowed in _ENUMS:
        if event.get(name, default) not in allowed:
            raise invalid(f"Invalid value for: {name}", location=name)
    _check_attendees(event.get("attendees") or [])
    reminders = event.get("reminders")
    if reminders is not None:
        _check_reminders(reminders.get("overrides") or [])


def _check_attendees(attendees: list[Any]) -> None:
    for attendee in attendees:
        if not isinstance(attendee, dict) or not attendee.get("email"):
            raise required("attendees.email")
        if attendee.get("responseStatus", "needsAction") not in RESPONSES:
            raise invalid("Invalid attendee response status.", location="attendees")


def _check_reminders(overrides: list[Any]) -> None:
    if len(overrides) > 5:
        raise GoogleError(400, "cannotUseMoreThanFiveReminders",
                          "Cannot specify more than 5 override reminders.")  # fmt: skip
    for reminder in overrides:
        if reminder.get("method") not in ("email", "popup"):
            raise required("reminders.overrides.method")
        minutes = reminder.get("minutes")
        if not isinstance(minutes, int) or not 0 <= minutes <= 40320:
            raise invalid("Invalid reminder minutes.", location="reminders.overrides.minutes")


def _limit_properties(event: dict[str, Any]) -> None:
    """Google's silent limits on extended properties."""
    props = event.get("extendedProperties")
    if not isinstance(props, dict):
        return
    for scope in ("private", "shared"):
        values = props.get(scope)
        if isinstance(values, dict):
            props[scope] = {
                str(k): str(v)[:VALUE_LIMIT] for k, v in values.items() if len(str(k)) <= KEY_LIMIT
            }


# What a write may change of an event from Gmail (Google Workspace updates, 2024-05-30:
# "updates on events with the type fromGmail are restricted to the properties
# reminders, colorId, visibility, status, and extendedProperties"); and what Google
# itself sets on every write.
FROM_GMAIL_WRITABLE = frozenset(
    ("reminders", "colorId", "visibility", "status", "extendedProperties")
)
_STAMPED = frozenset(("kind", "etag", "created", "updated", "sequence", "htmlLink"))


def check_event_type(current: dict[str, Any], written: dict[str, Any]) -> None:
    """An update (``written``: the whole event after it) of ``current`` as Google takes
    it: the event type never changes, and an event from Gmail changes only in the
    properties ``FROM_GMAIL_WRITABLE`` names."""
    kind = current.get("eventType", "default")
    if written.get("eventType", kind) != kind:
        raise GoogleError(400, "eventTypeRestriction",
                          "The event type cannot be changed.")  # fmt: skip
    if kind != "fromGmail":
        return
    ignored = FROM_GMAIL_WRITABLE | _STAMPED | set(_READ_ONLY)
    for key in sorted((set(current) | set(written)) - ignored):
        if current.get(key) != written.get(key):
            raise GoogleError(
                400, "eventTypeRestriction",
                f"The property {key} of an event of type fromGmail cannot be changed.",
            )  # fmt: skip


def as_seen(event: dict[str, Any]) -> dict[str, Any]:
    """An event as the calendar's user is answered it: a guest of a meeting whose
    organizer hides the guest list (``guestsCanSeeOtherGuests`` false) sees only their
    own entry, and ``attendeesOmitted`` says the list is not whole."""
    organizer = event.get("organizer") or {}
    attendees = event.get("attendees") or []
    if organizer.get("self") or event.get("guestsCanSeeOtherGuests", True) or not attendees:
        return event
    own = [a for a in attendees if a.get("self")]
    return {**event, "attendees": own, "attendeesOmitted": True}


def patch_of_answers(current: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """A patch that says ``attendeesOmitted``: its attendees change only their answers
    ([GD] "can be used to only update the participant's response"); without it, the
    attendees given are the whole list."""
    if not patch.get("attendeesOmitted") or not isinstance(patch.get("attendees"), list):
        return patch
    given = {str(a.get("email", "")).lower(): a for a in patch["attendees"]}
    kept = []
    for attendee in current.get("attendees") or []:
        answer = given.get(str(attendee.get("email", "")).lower(), {})
        kept.append(attendee | {k: answer[k] for k in ("responseStatus", "comment") if k in answer})
    return {k: v for k, v in patch.items() if k != "attendeesOmitted"} | {"attendees": kept}


def merge_patch(current: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """``events.patch``: objects merge field by field, ``null`` clears a field, anything
    else is replaced."""
    merged = dict(current)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(current.get(key), dict):
            merged[key] = merge_patch(current[key], value)
        else:
            merged[key] = value
    return merged


def stored(
    written: dict[str, Any],
    *,
    previous: dict[str, Any] | None,
    owner: str,
    calendar_id: str,
    etag: str,
    now: dt.datetime,
) -> dict[str, Any]:
    """The resource a write leaves in the calendar (read-only fields are the server's)."""
    _check_fields(written)
    event = {k: v for k, v in written.items() if k not in _READ_ONLY or k == "iCalUID"}
    # [GD] privateCopy: "Optional. Immutable": given when the event is made, kept after.
    private_copy = (previous or written).get("privateCopy")
    if private_copy is not None:
        event["privateCopy"] = bool(private_copy)
    _check_times(event)
    _limit_properties(event)
    event_id = event["id"]
    event["kind"] = "calendar#event"
    event["etag"] = etag
    event.setdefault("status", "confirmed")
    event["htmlLink"] = f"https://www.google.com/calendar/event?eid={event_id}"
    before = previous or {}  # a cancelled stub has no more than an id
    event["created"] = before.get("created") or rfc3339(now)
    event["updated"] = rfc3339(now)
    event["creator"] = before.get("creator") or {"email": owner, "self": True}
    event["organizer"] = before.get("organizer") or {"email": calendar_id, "self": True} | (
        {"displayName": owner} if calendar_id != owner else {}
    )
    event["iCalUID"] = (previous or {}).get("iCalUID") or event.get("iCalUID") or (
        f"{event_id}@google.com"
    )  # fmt: skip
    event["sequence"] = _sequence(event, previous)
    event.setdefault("reminders", {"useDefault": True})
    for attendee in event.get("attendees") or []:
        attendee.setdefault("responseStatus", "needsAction")
        if attendee.get("email", "").lower() == owner.lower():
            attendee["self"] = True
        if attendee.get("email", "").lower() == calendar_id.lower():
            attendee["organizer"] = True
    if event.get("eventType") is None:
        event["eventType"] = "default"
    return event


def _sequence(event: dict[str, Any], previous: dict[str, Any] | None) -> int:
    if previous is None:
        return int(event.get("sequence") or 0)
    current = int(previous.get("sequence") or 0)
    moved = any(event.get(k) != previous.get(k) for k in ("start", "end", "recurrence"))
    given = event.get("sequence")
    if isinstance(given, int) and given > current:
        return given
    return current + 1 if moved else current


def cancelled(previous: dict[str, Any], etag: str, now: dt.datetime) -> dict[str, Any]:
    """What a deleted event becomes: a cancelled tombstone that incremental syncs report."""
    return previous | {"status": "cancelled", "etag": etag, "updated": rfc3339(now)}


def span(event: dict[str, Any]) -> tuple[dt.datetime, dt.datetime] | None:
    """The event's start and end as instants (all-day dates at UTC midnight)."""
    try:
        start, end = moment(event.get("start"), "start"), moment(event.get("end"), "end")
    except GoogleError:
        return None
    return _instant(start), _instant(end)


def _instant(value: dt.datetime | dt.date) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value
    return dt.datetime.combine(value, dt.time(), tzinfo=dt.UTC)
