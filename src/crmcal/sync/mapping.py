"""Activity <-> calendar event, both ways (F14).

Outgoing, an activity becomes a ``CalendarEvent`` carrying its CRM id. Incoming,
an event becomes the activity fields it owns (subject, times, place, note,
privacy, busy, reminder, participants); CRM-only fields — type, done, deal,
person, organization — are never touched by a calendar edit.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import replace
from typing import Any, TypeGuard
from zoneinfo import ZoneInfo

from crmcal.crm import contacts, times
from crmcal.crm.schemas import normalise_email
from crmcal.crm.tables import Activity, User
from crmcal.model import RESPONSE_STATUSES, Attendee, CalendarEvent, ResponseStatus
from crmcal.sync import info_block
from crmcal.sync.info_block import LinkedRecords
from crmcal.sync.options import SyncOptions

UNTITLED = "(no title)"
# Limits of the CRM's fields (docs/api.md); longer calendar text is cut, not refused
# (a cut note with a warning: see note_cut).
SUBJECT_MAX, LOCATION_MAX, NOTE_MAX, NAME_MAX = 255, 500, 65536, 200
REMINDER_MAX = 40320


def derived_uid(owner_id: int, event_uid: str) -> str:
    """The CRM uid of the activity imported from the event with this iCalendar UID.

    Deterministic, so that a connection created again for the same calendar finds
    the activities it imported before instead of importing copies.
    """
    return hashlib.sha256(f"{owner_id}\0{event_uid}".encode()).hexdigest()[:32]


def _clean(text: str | None, limit: int | None) -> str | None:
    if text is None:
        return None
    # NUL and lone surrogates cannot be stored; calendars do send them.
    cleaned = text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")
    return cleaned[:limit]


def _whole_note(description: str | None) -> str | None:
    """The note a description gives before it is cut to what the CRM keeps."""
    return _clean(info_block.without_block(description), None) or None


def note_cut(event: CalendarEvent) -> int | None:
    """How long the event's note is when the CRM keeps only the first NOTE_MAX
    characters of it (None: the CRM keeps it whole)."""
    note = _whole_note(event.description)
    return len(note) if note is not None and len(note) > NOTE_MAX else None


def uncut_note(note: str | None, description: str | None) -> str | None:
    """The whole note of the calendar's ``description`` when the activity's ``note`` is
    that note as it came in, cut to what the CRM keeps (line breaks aside); None when
    it is not (a note of its own, edited in the CRM, or never cut).

    A cut note fills the CRM's field to the last character, and what the CRM user
    types into it changes it somewhere before its end: a note of NOTE_MAX characters
    with which the calendar's longer note begins was never edited."""
    if note is None or len(note) < NOTE_MAX:
        return None
    whole = _whole_note(description)
    if whole is None or len(whole) <= NOTE_MAX:
        return None
    lf_whole, lf_note = whole.replace("\r\n", "\n"), note.replace("\r\n", "\n")
    return whole if len(lf_whole) > len(lf_note) and lf_whole.startswith(lf_note) else None


def _note(description: str | None, current: Activity | None) -> str | None:
    """The note a description gives, cut to what the CRM keeps: a longer description
    stays whole in the calendar, which crmcal rewrites only when the note itself is
    edited (a meeting with a long agenda still comes in, and its moves still sync;
    the sync warns of the cut, see ``note_cut``, and writes the calendar's whole note
    back with the activity's other changes, see ``uncut_note``).
    The same text with other line breaks is the note as it is (an iCalendar
    DESCRIPTION has one kind of line break: a note's CRLF comes back LF)."""
    whole = _whole_note(description)
    note = whole[:NOTE_MAX] if whole is not None else None
    if (
        note is not None
        and current is not None
        and current.note is not None
        and current.note.replace("\r\n", "\n") == note.replace("\r\n", "\n")
    ):
        return current.note
    return note


def activity_to_event(
    activity: Activity,
    owner: User,
    options: SyncOptions | None = None,
    linked: LinkedRecords | None = None,
    activity_url: str | None = None,
) -> CalendarEvent:
    """The event an activity is written as; with ``include_deal_and_contact_info`` its
    description carries the block ``linked`` and ``activity_url`` make (F11)."""
    if activity.all_day:
        assert activity.start_date is not None
        start: dt.datetime | dt.date = activity.start_date
        end: dt.datetime | dt.date | None = activity.end_date
    else:
        start, end = activity.start_at, activity.end_at
        if end is not None and end == start:
            end = None  # a moment: every calendar writes and reads it as having no end
    attendees = tuple(
        Attendee(email=p.email, name=p.name, status=_status(p.status))
        for p in activity.participants
        if p.email
    )
    description = activity.note
    if options is not None and options.include_deal_and_contact_info and activity_url:
        description = info_block.with_block(description, linked or LinkedRecords(), activity_url)
    return CalendarEvent(
        summary=activity.subject,
        start=start,
        end=end,
        all_day=activity.all_day,
        timezone=activity.timezone,
        location=activity.location,
        description=description,
        private=activity.visibility == "owner",
        busy=activity.busy,
        reminder_minutes=activity.reminder_minutes,
        attendees=attendees,
        organizer=owner.email if attendees else None,
        crm_id=activity.uid,
        crm_type=activity.type,
        notify_attendees=activity.notify_participants,
    )


def as_told(event: CalendarEvent, mails_attendees: bool) -> CalendarEvent:
    """The CRM's event as a calendar is told it: one that e-mails every attendee it is
    told about (``mails_attendees``, F10) is told no participants unless the activity
    asks for invitations, so they stay in the CRM."""
    if mails_attendees and not event.notify_attendees:
        return replace(event, attendees=(), organizer=None)
    return event


def _is_status(value: str | None) -> TypeGuard[ResponseStatus]:
    return value in RESPONSE_STATUSES


def _status(value: str | None) -> ResponseStatus:
    return value if _is_status(value) else "needs_action"


def linked_records(records: contacts.Linked) -> LinkedRecords:
    """What the description block shows of an activity's deal, person and organization."""
    deal, person, organization = records.deal, records.person, records.organization
    return LinkedRecords(
        deal=deal.title if deal else None,
        person=person.name if person else None,
        person_email=person.email if person else None,
        person_phone=person.phone if person else None,
        organization=organization.name if organization else None,
    )


def zone_of(owner: User) -> ZoneInfo:
    return times.zone(owner.timezone)


def kept_in_own_zone(event: CalendarEvent, zone: ZoneInfo) -> CalendarEvent:
    """A timed series whose zone the calendar does not name (``timezone`` None) is
    kept in the user's ``zone`` (see ``event_fields``), and so are the occurrences it
    leaves out: taken as given, one left out after a daylight-saving switch would be
    an hour off the occurrence it means, and the CRM would leave out none.

    Floating times are wall-clock times in ``zone``: the start and end, EXDATEs,
    RDATEs and the overrides' original starts and times alike (still floating, so
    written back as wall-clock times of no zone). A service that names a cancelled
    occurrence by its day alone (Microsoft 365, for a zone it cannot name) gives it
    at the start's time of day in the zone the start came in: it is the occurrence of
    that day at the start's wall-clock time in ``zone``."""
    start, rule = event.start, event.recurrence
    if rule is None or event.timezone is not None or event.all_day:
        return event
    if not isinstance(start, dt.datetime) or start.tzinfo is None:
        return event
    if event.floating:
        return _placed_floating(event, zone)
    if not rule.exdates:
        return event
    given, wall = start.tzinfo, start.astimezone(zone).time()
    exdates = tuple(
        dt.datetime.combine(m.astimezone(given).date(), wall, zone)
        if isinstance(m, dt.datetime)
        else m
        for m in rule.exdates
    )
    return replace(event, recurrence=replace(rule, exdates=exdates))


def _wall_clock(
    moments: tuple[dt.datetime | dt.date, ...], zone: ZoneInfo
) -> tuple[dt.datetime | dt.date, ...]:
    return tuple(m.replace(tzinfo=zone) if isinstance(m, dt.datetime) else m for m in moments)


def _placed_floating(event: CalendarEvent, zone: ZoneInfo) -> CalendarEvent:
    """A floating series (and its floating overrides) at its wall-clock times in
    ``zone``; still floating, and so written back as wall-clock times of no zone."""
    start, end = _wall_clock((event.start,), zone)[0], event.end
    if isinstance(end, dt.datetime):
        end = end.replace(tzinfo=zone)
    overrides = []
    for override in event.overrides:
        if override.recurrence_id is not None:
            (original,) = _wall_clock((override.recurrence_id,), zone)
            override = replace(override, recurrence_id=original)
        if override.floating and override.timezone is None:
            override = _placed_floating(override, zone)
        overrides.append(override)
    rule = event.recurrence
    if rule is not None:
        rule = replace(rule, exdates=_wall_clock(rule.exdates, zone),
                       rdates=_wall_clock(rule.rdates, zone))  # fmt: skip
    return replace(event, start=start, end=end, recurrence=rule, overrides=tuple(overrides))


def event_fields(
    event: CalendarEvent,
    owner: User,
    options: SyncOptions,
    own_addresses: frozenset[str] = frozenset(),
    current: Activity | None = None,
) -> dict[str, Any]:
    """The activity fields an event sets, in the shape the CRM's API accepts.

    ``current`` is the activity the event updates, if any: its privacy is kept
    where the calendar's flag alone cannot tell (a private event the CRM made).
    """
    if event.all_day:
        assert isinstance(event.start, dt.date)
        start = event.start.isoformat()
        end = event.end.isoformat() if isinstance(event.end, dt.date) else None
        timezone = owner.timezone
    else:
        assert isinstance(event.start, dt.datetime)
        timezone = event.timezone or owner.timezone
        first, last = event.start, event.end
        if event.floating and event.timezone is None:
            # Wall-clock times of no zone: the user's own (written back floating).
            own = zone_of(owner)
            first = first.replace(tzinfo=own)
            last = last.replace(tzinfo=own) if isinstance(last, dt.datetime) else None
        start = first.isoformat()
        end = last.isoformat() if isinstance(last, dt.datetime) else None
        if isinstance(last, dt.datetime) and last < first:
            end = None
    ours = {owner.email.lower(), *own_addresses}
    participants = []
    for attendee in event.attendees:
        try:
            email = normalise_email(attendee.email)
        except ValueError:
            continue  # an address the CRM cannot store is not a contact
        if attendee.resource or email in ours:
            continue
        participants.append(
            {"email": email, "name": _clean(attendee.name, NAME_MAX), "status": attendee.status}
        )
    was_private = current is not None and current.visibility == "owner"
    if event.private:
        # F9: how a private calendar event shows in the CRM; one the CRM itself made
        # private stays so whatever that option says.
        private = options.private_events != "everyone" or was_private
        visibility = "owner" if private else "everyone"
    elif current is None or was_private:
        visibility = options.default_visibility  # new, or made public in the calendar
    else:
        visibility = current.visibility
    reminder = event.reminder_minutes
    if reminder is not None and not 0 <= reminder <= REMINDER_MAX:
        reminder = None
    return {
        "subject": _clean((event.summary or "").strip(), SUBJECT_MAX) or UNTITLED,
        "start": start,
        "end": end,
        "all_day": event.all_day,
        "timezone": timezone,
        "location": _clean(event.location, LOCATION_MAX) or None,
        "note": _note(event.description, current),
        "busy": event.busy,
        "visibility": visibility,
        "reminder_minutes": reminder,
        "participants": participants,
    }


def merged_participants(
    current: Activity, incoming: list[dict[str, Any]], before: set[str] | None
) -> list[dict[str, Any]]:
    """The participants after a calendar edit: an attendee the calendar added or removed
    since it was last read (``before``: its addresses then) is added or removed, and a
    participant the calendar never carried (Microsoft 365 without invitations, or one
    added in the CRM meanwhile) stays. Addresses compare without regard to case."""
    if before is None:
        return incoming
    now = {p["email"].lower(): p for p in incoming}
    merged: list[dict[str, Any]] = []
    for participant in current.participants:
        email = (participant.email or "").lower()
        if email in now:
            # Still there: the calendar's answer and name, the CRM's link to a person.
            merged.append({**now.pop(email), "person_id": participant.person_id})
        elif not email or email not in before:
            merged.append({"email": participant.email, "name": participant.name,
                           "person_id": participant.person_id,
                           "status": participant.status})  # fmt: skip
    merged.extend(now.values())
    return merged
