"""Event resources as Graph stores them: what a write may say, and what it becomes.

A POST or PATCH body is read the way Graph reads it: properties Graph does not
define are refused (``RequestBodyRead``), as are values of the wrong kind and
enum members that do not exist; read-only properties are ignored. The stored
event keeps its times as written (wall clock + zone name), so answers can be
given in any zone; ``originalStartTimeZone``/``originalEndTimeZone`` say which
zone that was. All-day events must start and end at midnight in one zone and
span whole days; an end before the start is refused.
"""

from __future__ import annotations

import copy
import datetime as dt
import html
import re
from collections.abc import Callable
from typing import Any

from crmcal.emulators.microsoft import recurrence, times
from crmcal.emulators.microsoft.errors import GraphError, body_read, invalid_property

SENSITIVITIES = ("normal", "personal", "private", "confidential")
SHOW_AS = ("free", "tentative", "busy", "oof", "workingElsewhere", "unknown")
IMPORTANCES = ("low", "normal", "high")
ATTENDEE_TYPES = ("required", "optional", "resource")
RESPONSES = ("none", "organizer", "tentativelyAccepted", "accepted", "declined", "notResponded")
CONTENT_TYPES = ("text", "html")
PROVIDERS = ("unknown", "teamsForBusiness", "skypeForBusiness", "skypeForConsumer")
LOCATION_TYPES = (
    "default",
    "conferenceRoom",
    "homeAddress",
    "businessAddress",
    "geoCoordinates",
    "streetAddress",
    "hotel",
    "restaurant",
    "localBusiness",
    "postalAddress",
)
UNIQUE_ID_TYPES = ("unknown", "locationStore", "directory", "private", "bing")
NULL_TIME = "0001-01-01T00:00:00Z"

# Properties a client may write, and the read-only ones Graph ignores in a body.
WRITABLE = frozenset(
    (
        "subject",
        "body",
        "start",
        "end",
        "isAllDay",
        "location",
        "locations",
        "sensitivity",
        "showAs",
        "importance",
        "isReminderOn",
        "reminderMinutesBeforeStart",
        "categories",
        "attendees",
        "recurrence",
        "transactionId",
        "singleValueExtendedProperties",
        "responseRequested",
        "allowNewTimeProposals",
        "hideAttendees",
        "isOnlineMeeting",
        "onlineMeetingProvider",
    )
)
READ_ONLY = frozenset(
    (
        "id",
        "createdDateTime",
        "lastModifiedDateTime",
        "changeKey",
        "iCalUId",
        "bodyPreview",
        "isOrganizer",
        "organizer",
        "responseStatus",
        "type",
        "seriesMasterId",
        "webLink",
        "hasAttachments",
        "originalStart",
        "originalStartTimeZone",
        "originalEndTimeZone",
        "isCancelled",
        "isDraft",
        "onlineMeetingUrl",
        "onlineMeeting",
        "cancelledOccurrences",
        "exceptionOccurrences",
        "calendar",
        "instances",
        "attachments",
        "extensions",
        "multiValueExtendedProperties",
    )
)
# Every property an event answer may have ($select picks among these).
PROPERTIES = WRITABLE | READ_ONLY
_LOCATION_KEYS = frozenset(
    (
        "displayName",
        "locationType",
        "locationUri",
        "uniqueId",
        "uniqueIdType",
        "address",
        "coordinates",
        "locationEmailAddress",
        "@odata.type",
    )
)
_TAG = re.compile(r"<[^>]*>")
_ANY = re.IGNORECASE | re.DOTALL


# The stored body's note of the name Graph gives a zone it cannot name (the admin API's
# ``unnamed-zone``): never answered itself, and dropped by a write of the start.
UNNAMED_ZONE = "_unnamedZone"
# The stored body's note of the fields a test has every answer show in place of the
# event's own (the admin API's ``garble``): never answered itself.
GARBLED = "_garbled"


def _no_such(name: str, type_name: str) -> GraphError:
    return body_read(
        f"The property '{name}' does not exist on type '{type_name}'. Make sure to only use "
        "property names that are defined by the type or mark the type as open type."
    )


def _enum(value: Any, allowed: tuple[str, ...], field: str) -> str:
    for name in allowed:
        if isinstance(value, str) and value.lower() == name.lower():
            return name
    raise body_read(f"Requested value '{value}' was not found. ({field})")


def _kind(value: Any, kind: type | tuple[type, ...], field: str, type_name: str) -> Any:
    if isinstance(value, bool) and kind is int:
        raise body_read(
            f"Cannot convert the literal '{value}' to the expected type '{type_name}'. ({field})"
        )
    if not isinstance(value, kind):
        raise body_read(
            f"Cannot convert the literal '{value}' to the expected type '{type_name}'. ({field})"
        )
    return value


def _object(value: Any, keys: frozenset[str] | set[str], type_name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise body_read(f"Cannot read a '{type_name}' from {value!r}.")
    for key in value:
        if key not in keys and not key.startswith("@odata."):
            raise _no_such(key, type_name)
    return {k: v for k, v in value.items() if not k.startswith("@odata.")}


def _email(value: Any, field: str) -> dict[str, str]:
    found = _object(value, {"name", "address"}, "microsoft.graph.emailAddress")
    address = found.get("address")
    if not isinstance(address, str) or "@" not in address:
        raise GraphError(
            400, "ErrorInvalidRecipients", f"At least one recipient isn't valid. ({field})"
        )
    name = found.get("name")
    return {"name": str(name) if name else address, "address": address}


def _location(value: Any) -> dict[str, Any]:
    if value is None:
        return empty_location()
    found = _object(value, _LOCATION_KEYS, "microsoft.graph.location")
    location = empty_location() | found
    location["displayName"] = str(location.get("displayName") or "")
    location["locationType"] = _enum(
        location["locationType"], LOCATION_TYPES, "location.locationType"
    )
    location["uniqueIdType"] = _enum(
        location["uniqueIdType"], UNIQUE_ID_TYPES, "location.uniqueIdType"
    )
    if location["displayName"] and "uniqueId" not in found:
        location["uniqueId"] = location["displayName"]
        location["uniqueIdType"] = "private"
    return location


def empty_location() -> dict[str, Any]:
    return {
        "displayName": "",
        "locationType": "default",
        "uniqueIdType": "unknown",
        "address": {},
        "coordinates": {},
    }


def _attendee(value: Any, previous: dict[str, dict[str, Any]]) -> dict[str, Any]:
    found = _object(
        value, {"type", "emailAddress", "status", "proposedNewTime"}, "microsoft.graph.attendee"
    )
    email = _email(found.get("emailAddress"), "attendees.emailAddress")
    kind = _enum(found.get("type") or "required", ATTENDEE_TYPES, "attendees.type")
    status = previous.get(email["address"].lower(), {}).get("status") or {
        "response": "none",
        "time": NULL_TIME,
    }
    written = found.get("status")
    if written is not None:
        # Graph leaves answers to the attendees; the emulator keeps a written one so
        # that a test can play an attendee's answer.
        written = _object(written, {"response", "time"}, "microsoft.graph.responseStatus")
        response = _enum(written.get("response") or "none", RESPONSES, "attendees.status")
        status = {"response": response, "time": str(written.get("time") or NULL_TIME)}
    return {"type": kind, "status": status, "emailAddress": email}


def read(body: Any, *, creating: bool, previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """The writable properties of a POST or PATCH body, checked and in stored form."""
    if not isinstance(body, dict):
        raise body_read("The request body must be a JSON object.")
    found: dict[str, Any] = {}
    for name, value in body.items():
        if name.startswith("@odata.") or name in READ_ONLY:
            continue
        if name not in WRITABLE:
            raise _no_such(name, "microsoft.graph.event")
        found[name] = _property(name, value, previous or {})
    changed = previous is not None and found.get("transactionId") != previous.get("transactionId")
    if not creating and "transactionId" in found and changed:
        raise GraphError(400, "ErrorInvalidRequest", "The transactionId cannot be changed.")
    return found


def _property(name: str, value: Any, previous: dict[str, Any]) -> Any:
    read = _PROPERTIES.get(name)
    if read is None:
        return value  # singleValueExtendedProperties: read by the store
    return read(name, value, previous)


def _string_or_null(name: str, value: Any, previous: dict[str, Any]) -> Any:
    return None if value is None else _kind(value, str, name, "Edm.String")


def _boolean(name: str, value: Any, previous: dict[str, Any]) -> Any:
    return _kind(value, bool, name, "Edm.Boolean")


def _minutes(name: str, value: Any, previous: dict[str, Any]) -> Any:
    minutes = _kind(value, int, name, "Edm.Int32")
    if minutes < 0:
        raise invalid_property()
    return minutes


def _item_body(name: str, value: Any, previous: dict[str, Any]) -> Any:
    found = _object(value, {"contentType", "content"}, "microsoft.graph.itemBody")
    return {
        "contentType": _enum(found.get("contentType") or "text", CONTENT_TYPES, "body.contentType"),
        "content": str(found.get("content") or ""),
    }


def _wall_time(name: str, value: Any, previous: dict[str, Any]) -> Any:
    moment, zone = times.wall_clock(value, name)
    return {"dateTime": times.graph_date_time(moment), "timeZone": zone}


def _one_location(name: str, value: Any, previous: dict[str, Any]) -> Any:
    return _location(value)


def _locations(name: str, value: Any, previous: dict[str, Any]) -> Any:
    return [_location(v) for v in _kind(value, list, name, "Collection(location)")]


def _one_of(name: str, value: Any, previous: dict[str, Any]) -> Any:
    return _enum(value, _CHOICES[name], name)


def _categories(name: str, value: Any, previous: dict[str, Any]) -> Any:
    return [
        _kind(c, str, name, "Edm.String")
        for c in _kind(value or [], list, name, "Collection(Edm.String)")
    ]


def _attendees(name: str, value: Any, previous: dict[str, Any]) -> Any:
    before = {a["emailAddress"]["address"].lower(): a for a in previous.get("attendees", [])}
    return [_attendee(a, before) for a in _kind(value or [], list, name, "Collection(attendee)")]


def _recurrence(name: str, value: Any, previous: dict[str, Any]) -> Any:
    return None if value is None else recurrence.checked(value)


# The enumerated properties and the values each takes.
_CHOICES: dict[str, tuple[str, ...]] = {
    "sensitivity": SENSITIVITIES,
    "showAs": SHOW_AS,
    "importance": IMPORTANCES,
    "onlineMeetingProvider": PROVIDERS,
}
_BOOLEANS = (
    "isAllDay",
    "isReminderOn",
    "responseRequested",
    "allowNewTimeProposals",
    "hideAttendees",
    "isOnlineMeeting",
)
# How each writable property is read: (its name, the value written, the event before).
_PROPERTIES: dict[str, Callable[[str, Any, dict[str, Any]], Any]] = {
    "subject": _string_or_null,
    "transactionId": _string_or_null,
    **dict.fromkeys(_BOOLEANS, _boolean),
    "reminderMinutesBeforeStart": _minutes,
    "body": _item_body,
    "start": _wall_time,
    "end": _wall_time,
    "location": _one_location,
    "locations": _locations,
    **dict.fromkeys(_CHOICES, _one_of),
    "categories": _categories,
    "attendees": _attendees,
    "recurrence": _recurrence,
}


def text_of(body: dict[str, Any]) -> str:
    """An item body's text (HTML tags dropped, entities decoded)."""
    text = str(body.get("content", ""))
    if body.get("contentType") == "html":
        # What a reader sees: no head, style or script; a line per break or block.
        text = re.sub(r"<(head|style|script)\b.*?</\1\s*>", "", text, flags=_ANY)
        text = re.sub(r"<br\s*/?>|<(/?)(p|div|li|tr|h[1-6])\b[^>]*>", "\n", text, flags=_ANY)
        text = html.unescape(_TAG.sub("", text))
    lines = [line.strip() for line in text.splitlines()]
    if body.get("contentType") == "html":
        lines = [line for line in lines if line]
    return "\n".join(lines).strip()


def preview(body: dict[str, Any]) -> str:
    return " ".join(text_of(body).split())[:255]


def defaults(owner_name: str, owner_address: str) -> dict[str, Any]:
    """What a new event says about everything its POST left out."""
    return {
        "subject": "",
        "body": {"contentType": "html", "content": ""},
        "isAllDay": False,
        "location": empty_location(),
        "locations": [],
        "sensitivity": "normal",
        "showAs": "busy",
        "importance": "normal",
        "isReminderOn": True,
        "reminderMinutesBeforeStart": 15,
        "categories": [],
        "attendees": [],
        "recurrence": None,
        "transactionId": None,
        "responseRequested": True,
        "allowNewTimeProposals": True,
        "hideAttendees": False,
        "isOnlineMeeting": False,
        "onlineMeetingProvider": "unknown",
        "isCancelled": False,
        "isDraft": False,
        "isOrganizer": True,
        "hasAttachments": False,
        "organizer": {"emailAddress": {"name": owner_name, "address": owner_address}},
        "responseStatus": {"response": "organizer", "time": NULL_TIME},
    }


def merged(current: dict[str, Any], written: dict[str, Any]) -> dict[str, Any]:
    """A PATCH: each property given replaces the stored one whole (null clears it)."""
    event = copy.deepcopy(current)
    for name, value in written.items():
        if name == "singleValueExtendedProperties":
            continue
        if value is None and name in ("start", "end"):
            raise invalid_property(
                f"At least one property failed validation: {name} cannot be cleared."
            )
        event[name] = value if value is not None else _cleared(name)
    return event


def _cleared(name: str) -> Any:
    if name == "location":
        return empty_location()
    if name in ("locations", "categories", "attendees"):
        return []
    return None


def check_times(event: dict[str, Any]) -> None:
    """Start and end present and in order; all-day events at midnight, whole days."""
    for name in ("start", "end"):
        if not event.get(name):
            raise invalid_property(f"At least one property failed validation: {name} is required.")
    start, end = span(event)
    if end < start:
        raise invalid_property(
            "At least one property failed validation: the end is before the start."
        )
    if event.get("isAllDay"):
        wall_start = dt.datetime.fromisoformat(event["start"]["dateTime"])
        wall_end = dt.datetime.fromisoformat(event["end"]["dateTime"])
        same_zone = times.zone(event["start"]["timeZone"]) == times.zone(event["end"]["timeZone"])
        midnight = wall_start.time() == dt.time() and wall_end.time() == dt.time()
        if not (same_zone and midnight and wall_end > wall_start):
            raise invalid_property(
                "At least one property failed validation: an all-day event starts and ends "
                "at midnight in one time zone and lasts whole days."
            )
    if event.get("recurrence"):
        rule_start = event["recurrence"]["range"]["startDate"]
        if rule_start == recurrence.NULL_DATE:
            raise invalid_property()


def span(event: dict[str, Any]) -> tuple[dt.datetime, dt.datetime]:
    """The event's start and end as UTC instants."""
    start = times.instant(
        dt.datetime.fromisoformat(event["start"]["dateTime"]), event["start"]["timeZone"]
    )
    end = times.instant(
        dt.datetime.fromisoformat(event["end"]["dateTime"]), event["end"]["timeZone"]
    )
    return start, end
