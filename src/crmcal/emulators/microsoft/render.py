"""Answers as Graph writes them: events, calendars and the user, from the stored records.

An event is answered with the id the request asks for (regular, or immutable
with ``Prefer: IdType="ImmutableId"``), its times in UTC or in the zone
``Prefer: outlook.timezone`` names, ``@odata.etag`` = ``W/"<changeKey>"``, and
never its extended properties unless ``$expand`` asks for them by id, its body
in the content type ``Prefer: outlook.body-content-type`` names. All-day
events are answered midnight to midnight whatever the zone, as Graph does.
"""

from __future__ import annotations

import datetime as dt
import html
from typing import Any
from urllib.parse import quote

from crmcal.emulators.microsoft import events, recurrence, times
from crmcal.emulators.microsoft.model import Calendar, Entry, Mailbox
from crmcal.emulators.microsoft.odata import Preferences

# Graph's order of an event's properties (answers keep it, for readability only).
ORDER = (
    "createdDateTime",
    "lastModifiedDateTime",
    "changeKey",
    "categories",
    "transactionId",
    "originalStartTimeZone",
    "originalEndTimeZone",
    "iCalUId",
    "reminderMinutesBeforeStart",
    "isReminderOn",
    "hasAttachments",
    "subject",
    "bodyPreview",
    "importance",
    "sensitivity",
    "isAllDay",
    "isCancelled",
    "isOrganizer",
    "responseRequested",
    "seriesMasterId",
    "showAs",
    "type",
    "webLink",
    "onlineMeetingUrl",
    "isOnlineMeeting",
    "onlineMeetingProvider",
    "allowNewTimeProposals",
    "isDraft",
    "hideAttendees",
    "originalStart",
    "responseStatus",
    "body",
    "start",
    "end",
    "location",
    "locations",
    "recurrence",
    "attendees",
    "organizer",
    "onlineMeeting",
)


def event_id(entry: Entry, prefs: Preferences) -> str:
    return entry.immutable_id if prefs.immutable_ids else entry.regular_id


def _time(entry: Entry, which: str, zone: str) -> dict[str, str]:
    moment = entry.start if which == "start" else entry.end
    if entry.body.get("isAllDay"):
        own_zone = entry.body[which]["timeZone"]
        day = times.local(moment, own_zone).date()
        wall = dt.datetime.combine(day, dt.time())
    else:
        wall = times.local(moment, zone)
    return {"dateTime": times.graph_date_time(wall), "timeZone": zone}


def event(
    entry: Entry,
    prefs: Preferences,
    *,
    select: list[str] | None = None,
    expand: list[str] | None = None,
    delta: bool = False,
) -> dict[str, Any]:
    """An event answer (``delta``: as a delta item, with ``@odata.type``)."""
    own_id = event_id(entry, prefs)
    values = _values(entry, prefs, own_id)
    out: dict[str, Any] = {}
    if delta:
        out["@odata.type"] = "#microsoft.graph.event"
    out["@odata.etag"] = f'W/"{entry.body["changeKey"]}"'
    out["id"] = own_id
    wanted = select if select is not None else ORDER
    for key in ORDER:
        if key in wanted and key in values:
            out[key] = values[key]
    if select is not None and "cancelledOccurrences" in select and entry.kind == "seriesMaster":
        out["cancelledOccurrences"] = [f"OID.{own_id}.{day}" for day in entry.cancelled_days]
    if expand:
        found = [{"id": key, "value": value} for key, value in entry.props.items() if key in expand]
        if found:
            out["singleValueExtendedProperties"] = found
    garbled = entry.body.get(events.GARBLED)
    if garbled:
        out = {key: value for key, value in {**out, **garbled}.items() if value is not None}
    return out


def _values(entry: Entry, prefs: Preferences, own_id: str) -> dict[str, Any]:
    """Every property an event answer can show, as this reader's preferences see it."""
    body = entry.body
    zone = prefs.time_zone or "UTC"
    values: dict[str, Any] = {k: v for k, v in body.items() if k in ORDER}
    values["type"] = entry.kind
    values["start"] = _time(entry, "start", zone)
    values["end"] = _time(entry, "end", zone)
    unnamed = body.get(events.UNNAMED_ZONE)
    if unnamed:
        _name_zone(values, unnamed)
    values["webLink"] = (
        f"https://outlook.office365.com/owa/?itemid={quote(own_id, safe='')}"
        "&exvsurl=1&path=/calendar/item"
    )
    if prefs.body_type is not None and body["body"]["contentType"] != prefs.body_type:
        values["body"] = _converted(body["body"], prefs.body_type)
    values["onlineMeetingUrl"] = None
    values["onlineMeeting"] = None
    values["seriesMasterId"] = None
    if entry.master_ids is not None:
        master_id = entry.master_ids[1] if prefs.immutable_ids else entry.master_ids[0]
        _series_member(values, entry, master_id)
    return values


def _name_zone(values: dict[str, Any], unnamed: str) -> None:
    """Show the zone an event was written in by a name Graph does not know."""
    # Occurrences follow the zone's rules; only its name is lost.
    values["originalStartTimeZone"] = values["originalEndTimeZone"] = unnamed
    if isinstance(values.get("recurrence"), dict):
        span = dict(values["recurrence"].get("range") or {})
        span["recurrenceTimeZone"] = unnamed
        values["recurrence"] = {**values["recurrence"], "range": span}


def _series_member(values: dict[str, Any], entry: Entry, master_id: str) -> None:
    """An occurrence's or exception's link to its series, in place of a recurrence."""
    body = entry.body
    values["seriesMasterId"] = master_id
    values["recurrence"] = None
    if entry.original is not None:
        values["originalStart"] = entry.original.strftime("%Y-%m-%dT%H:%M:%SZ")
        if entry.kind == "occurrence":
            zone_name = body["start"]["timeZone"]
            values["iCalUId"] = recurrence.occurrence_uid(
                body["iCalUId"], entry.original, zone_name
            )


def _converted(body: dict[str, str], wanted: str) -> dict[str, str]:
    """An item body in the other content type, as ``outlook.body-content-type`` asks."""
    if wanted == "text":
        return {"contentType": "text", "content": events.text_of(body)}
    content = html.escape(body["content"]).replace("\n", "<br>\r\n")
    return {"contentType": "html", "content": f"<html><body>{content}</body></html>"}


def removed(entry_id: str) -> dict[str, Any]:
    """A delta item for an event that is gone from the view (deleted or out of the window)."""
    return {
        "@odata.type": "#microsoft.graph.event",
        "id": entry_id,
        "@removed": {"reason": "deleted"},
    }


def calendar(found: Calendar, mailbox: Mailbox) -> dict[str, Any]:
    owner = mailbox.display_name if found.owner == mailbox.email else found.owner
    return {
        "id": found.id,
        "name": found.name,
        "color": found.color,
        "hexColor": found.hex_color,
        "isDefaultCalendar": found.is_default,
        "changeKey": found.change_key,
        "canShare": found.can_edit and found.owner == mailbox.email,
        "canViewPrivateItems": found.owner == mailbox.email,
        "canEdit": found.can_edit,
        "allowedOnlineMeetingProviders": ["teamsForBusiness"],
        "defaultOnlineMeetingProvider": "teamsForBusiness",
        "isTallyingResponses": True,
        "isRemovable": not found.is_default,
        "owner": {"name": owner, "address": found.owner},
    }


def user(mailbox: Mailbox) -> dict[str, Any]:
    given, _, surname = mailbox.display_name.partition(" ")
    return {
        "businessPhones": [],
        "displayName": mailbox.display_name,
        "givenName": given or None,
        "jobTitle": None,
        "mail": mailbox.email,
        "mobilePhone": None,
        "officeLocation": None,
        "preferredLanguage": "en-US",
        "surname": surname or None,
        "userPrincipalName": mailbox.email,
        "id": mailbox.user_id,
    }
