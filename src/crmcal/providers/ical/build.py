"""One VEVENT built from a ``CalendarEvent``'s own fields over the component it
replaces, keeping that component's properties, parameters and alarms that crmcal
does not own."""

from __future__ import annotations

import datetime as dt

import icalendar
from icalendar.prop import vCalAddress, vInline

from crmcal.model import Attendee, CalendarEvent
from crmcal.providers.ical.alarms import with_reminder
from crmcal.providers.ical.mapping import (
    CRM_ID_PROPERTY,
    CRM_TYPE_PROPERTY,
    NO_END,
    ONE_DAY,
    OWNED_PROPERTIES,
    PARTSTAT_OUT,
)
from crmcal.providers.ical.previous import as_list
from crmcal.providers.ical.text import EscapedText, escape_text
from crmcal.providers.ical.writing_zones import day_of, local_time, writing_zone


def attendee_line(
    attendee: Attendee, previous: dict[str, vCalAddress], notify: bool
) -> vCalAddress:
    address = vCalAddress(f"mailto:{attendee.email}")
    # Keep what another client said about this attendee (ROLE, RSVP, X- params).
    before = previous.get(attendee.email.lower())
    if before is not None:
        for key, value in before.params.items():
            if key.upper() not in ("CN", "PARTSTAT", "CUTYPE", "SCHEDULE-AGENT",
                                   "SCHEDULE-STATUS", "SCHEDULE-FORCE-SEND", "EMAIL"):  # fmt: skip
                address.params[key] = value
    if attendee.name:
        address.params["CN"] = attendee.name
    address.params["PARTSTAT"] = PARTSTAT_OUT.get(attendee.status, "NEEDS-ACTION")
    if attendee.resource:
        address.params["CUTYPE"] = "RESOURCE"
    if not notify:
        # Scheduling servers (RFC 6638) send no invitation for a client-scheduled attendee.
        address.params["SCHEDULE-AGENT"] = "CLIENT"
    return address


def organizer_line(
    email: str | None, old: icalendar.Event | None, notify: bool
) -> vCalAddress | None:
    before = old.get("ORGANIZER") if old is not None else None
    if isinstance(before, list):
        before = before[0] if before else None
    before_email = str(before).split(":", 1)[-1].strip().lower() if before is not None else None
    if email is None and before is None:
        return None
    address = vCalAddress(f"mailto:{email}" if email else str(before))
    if before is not None and (email is None or email.lower() == before_email):
        for key, value in before.params.items():  # keep its CN, SENT-BY ...
            if key.upper() != "SCHEDULE-AGENT":
                address.params[key] = value
    if not notify:
        address.params["SCHEDULE-AGENT"] = "CLIENT"
    return address


def _description_spelt(value: object) -> list[str]:
    """The DESCRIPTION values ``value`` (a property, a list of them, or None) as written."""
    return [escape_text(str(v)) for v in as_list(value) if v is not None]


def drop_stale_html(vevent: icalendar.Event, old_description: object) -> None:
    """Remove the HTML body (``X-ALT-DESC;FMTTYPE=text/html``, Outlook's) of a
    description crmcal has just rewritten: Outlook shows it in preference to
    DESCRIPTION, so the old text would stay on screen. Thunderbird and Evolution
    drop it the same way when they edit the plain text. An unchanged description
    keeps it exactly as it was."""
    if "X-ALT-DESC" not in vevent:
        return
    if _description_spelt(old_description) == _description_spelt(vevent.get("DESCRIPTION")):
        return
    kept = [
        value
        for value in as_list(vevent["X-ALT-DESC"])
        if str(getattr(value, "params", {}).get("FMTTYPE", "")).strip().lower() != "text/html"
    ]
    vevent.pop("X-ALT-DESC", None)
    if kept:
        vevent["X-ALT-DESC"] = kept if len(kept) > 1 else kept[0]


def write_times(
    vevent: icalendar.Event, event: CalendarEvent, zone: dt.tzinfo, *, floating: bool = False
) -> None:
    if event.all_day:
        first = day_of(event.start)
        last = day_of(event.end) if event.end is not None else first + ONE_DAY
        vevent.add("DTSTART", first)
        # Written even though a date alone means one day: some servers (iCloud)
        # refuse events without an end.
        vevent.add("DTEND", last if last > first else first + ONE_DAY)
        return
    start = local_time(event.start, zone)
    end = local_time(event.end, zone) if event.end is not None else None
    if floating:
        start = start.replace(tzinfo=None)
        end = end.replace(tzinfo=None) if end is not None else None
    vevent.add("DTSTART", start)
    if end is None or end <= start:
        # No end, or none to speak of: a second, which every server accepts and
        # reads back as no end (NO_END).
        end = start + NO_END
    vevent.add("DTEND", end)


def write_moment(moment: dt.datetime | dt.date, event: CalendarEvent, zone: dt.tzinfo) -> dt.date:
    return day_of(moment) if event.all_day else local_time(moment, zone)


def write_rule(vevent: icalendar.Event, event: CalendarEvent, zone: dt.tzinfo) -> None:
    recurrence = event.recurrence
    if recurrence is not None:
        if recurrence.rrule:
            # Verbatim: re-encoding would reorder the rule's parts.
            vevent.add("RRULE", vInline(recurrence.rrule.strip()))
        if recurrence.rdates:
            vevent.add("RDATE", [write_moment(m, event, zone) for m in recurrence.rdates])
        # A cancelled override is written as the EXDATE it is equal to.
        exdates = event.cancelled_moments()
        if exdates:
            vevent.add("EXDATE", [write_moment(m, event, zone) for m in exdates])


def build_vevent(
    event: CalendarEvent,
    uid: str,
    old: icalendar.Event | None,
    sequence: int,
    now: dt.datetime,
) -> icalendar.Event:
    """A VEVENT of ``event``'s own fields, keeping what ``old`` (the component it
    replaces) holds that crmcal does not own. Properties go in this order, as they
    always have (a server shows a component as written)."""
    zone = writing_zone(event)
    vevent = icalendar.Event()
    _write_stamps(vevent, uid, sequence, now, created=old is None)
    if event.summary is not None:
        vevent.add("SUMMARY", EscapedText(event.summary))
    write_times(vevent, event, zone)
    write_rule(vevent, event, zone)
    _write_texts(vevent, event)
    _write_class_and_status(vevent, event, old)
    _write_crm_ids(vevent, event)
    _write_people(vevent, event, old)
    if old is not None:
        _keep_not_owned(vevent, old)
    old_alarms = old.subcomponents if old is not None else []
    vevent.subcomponents.extend(with_reminder(old_alarms, event, keep_place=False))
    return vevent


def _write_stamps(
    vevent: icalendar.Event, uid: str, sequence: int, now: dt.datetime, *, created: bool
) -> None:
    """The component's identity and times of writing (CREATED only for a new one)."""
    vevent.add("UID", uid)
    vevent.add("DTSTAMP", now)
    vevent.add("LAST-MODIFIED", now)
    vevent.add("SEQUENCE", sequence)
    if created:
        vevent.add("CREATED", now)


def _write_texts(vevent: icalendar.Event, event: CalendarEvent) -> None:
    if event.location is not None:
        vevent.add("LOCATION", EscapedText(event.location))
    if event.description is not None:
        vevent.add("DESCRIPTION", EscapedText(event.description))


def _write_class_and_status(
    vevent: icalendar.Event, event: CalendarEvent, old: icalendar.Event | None
) -> None:
    """CLASS, TRANSP and STATUS, keeping the words of ``old`` that mean the same."""
    old_class = str(old.get("CLASS", "")).upper() if old is not None else ""
    if event.private:
        # CONFIDENTIAL reads as private; keep the stricter word if it was used.
        vevent.add("CLASS", "CONFIDENTIAL" if old_class == "CONFIDENTIAL" else "PRIVATE")
    vevent.add("TRANSP", "OPAQUE" if event.busy else "TRANSPARENT")
    old_status = str(old.get("STATUS", "")).upper() if old is not None else ""
    if event.cancelled:
        vevent.add("STATUS", "CANCELLED")
    elif old_status and old_status != "CANCELLED":
        vevent.add("STATUS", old_status)  # TENTATIVE/CONFIRMED are someone else's word


def _write_crm_ids(vevent: icalendar.Event, event: CalendarEvent) -> None:
    if event.crm_id:
        vevent.add(CRM_ID_PROPERTY, EscapedText(event.crm_id))
    if event.crm_type:
        vevent.add(CRM_TYPE_PROPERTY, EscapedText(event.crm_type))


def _write_people(
    vevent: icalendar.Event, event: CalendarEvent, old: icalendar.Event | None
) -> None:
    """ATTENDEE lines, keeping what ``old`` said of each, and the ORGANIZER of an
    event that has attendees."""
    old_attendees = {}
    if old is not None:
        for line in as_list(old.get("ATTENDEE", [])):
            email = str(line).split(":", 1)[-1].strip().lower()
            old_attendees[email] = line
    for attendee in event.attendees:
        vevent.add(
            "ATTENDEE",
            attendee_line(attendee, old_attendees, event.notify_attendees),
            encode=False,
        )
    if event.attendees:
        organizer = organizer_line(event.organizer, old, event.notify_attendees)
        if organizer is not None:
            vevent.add("ORGANIZER", organizer, encode=False)


def _keep_not_owned(vevent: icalendar.Event, old: icalendar.Event) -> None:
    """The properties of ``old`` crmcal does not own, as they were; and its HTML
    description dropped when the description changed."""
    for key, value in old.items():
        if key.upper() not in OWNED_PROPERTIES and key.upper() not in vevent:
            vevent[key] = value
    drop_stale_html(vevent, old.get("DESCRIPTION"))
