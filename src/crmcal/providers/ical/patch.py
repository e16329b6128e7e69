"""Writing only what changed (``patch_event``): the resource as the server has it,
with only the changed field groups rewritten, so that other properties, their
parameters, long descriptions, floating times, alarms and occurrences stay exactly
as they were."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import icalendar

from crmcal.model import CalendarEvent, changed_fields, moment_key
from crmcal.providers.ical.alarms import with_reminder
from crmcal.providers.ical.build import (
    attendee_line,
    drop_stale_html,
    organizer_line,
    write_rule,
    write_times,
)
from crmcal.providers.ical.mapping import CRM_ID_PROPERTY, CRM_TYPE_PROPERTY
from crmcal.providers.ical.previous import PreviousResource, as_list
from crmcal.providers.ical.read import parse_event
from crmcal.providers.ical.serialize import serialize_event
from crmcal.providers.ical.series import (
    is_cancelled_component,
    kept_cancellations,
    kept_overrides,
    override_key,
    override_vevent,
)
from crmcal.providers.ical.text import EscapedText, escaped_text
from crmcal.providers.ical.writing_zones import (
    ensure_zone,
    ensure_zones,
    respell_zone,
    same_zone_tzid,
    was_floating,
    writing_zone,
)


def _address_of(line: object) -> str:
    return str(line).split(":", 1)[-1].strip().lower()


def _is_resource(line: object) -> bool:
    params = getattr(line, "params", {})
    return str(params.get("CUTYPE", "")).upper() in ("ROOM", "RESOURCE")


def _set(vevent: icalendar.Event, name: str, value: object) -> None:
    vevent.pop(name, None)
    if value is not None:
        vevent.add(name, value)


def _patch_attendees(vevent: icalendar.Event, event: CalendarEvent) -> None:
    """The attendees crmcal carries, replaced; the organizer, the organizer's own
    attendee entry and booked rooms, which the CRM never carries, stay as they were."""
    old_lines = as_list(vevent.get("ATTENDEE", []))
    organizer = vevent.get("ORGANIZER")
    organizer = organizer[0] if isinstance(organizer, list) and organizer else organizer
    organizer_address = _address_of(organizer) if organizer is not None else None
    by_address = {_address_of(line): line for line in old_lines}
    wanted = {a.email.lower() for a in event.attendees}
    kept = [
        line
        for line in old_lines
        if _address_of(line) not in wanted
        and (_address_of(line) == organizer_address or _is_resource(line))
    ]
    vevent.pop("ATTENDEE", None)
    for line in kept:
        vevent.add("ATTENDEE", line, encode=False)
    for attendee in event.attendees:
        line = attendee_line(attendee, by_address, event.notify_attendees)
        vevent.add("ATTENDEE", line, encode=False)
    if organizer is None and event.attendees:
        written = organizer_line(event.organizer, None, event.notify_attendees)
        if written is not None:
            vevent.add("ORGANIZER", written, encode=False)


def _patch_reminder(vevent: icalendar.Event, event: CalendarEvent) -> None:
    vevent.subcomponents[:] = with_reminder(vevent.subcomponents, event, keep_place=True)


def patch_event(event: CalendarEvent, uid: str, previous: str, changed: frozenset[str]) -> str:
    """The resource ``previous`` with only the ``changed`` field groups (``model``'s
    ``FIELD_GROUPS``) rewritten from ``event``: everything else — other properties,
    their parameters, long descriptions, floating times, alarms, occurrences — stays
    as the server has it. With "overrides" the series' overridden occurrences become
    exactly ``event.overrides``, each patched the same way over the component it
    replaces. A resource this cannot read is written afresh."""
    before = PreviousResource.load(previous)
    if before is None:
        return serialize_event(event, uid, previous=previous)
    vevent, calendar = before.master, before.calendar
    zone = writing_zone(event)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    sequence = before.sequence() + 1
    _patch_component(calendar, vevent, event, changed, zone)
    if ("recurrence" in changed or "overrides" in changed) and event.recurrence is not None:
        if "recurrence" in changed:
            for name in ("RRULE", "RDATE", "EXDATE"):
                vevent.pop(name, None)
            write_rule(vevent, event, zone)
        if "overrides" in changed:
            kept = [*kept_cancellations(before, event),
                    *_patched_overrides(before, previous, event, uid, sequence, now)]  # fmt: skip
        else:
            kept = kept_overrides(before, event)
        calendar.subcomponents[:] = [
            *(c for c in calendar.subcomponents if c.name != "VEVENT" or c is vevent),
            *kept,
        ]
        ensure_zones(calendar, event)
    _set(vevent, "DTSTAMP", now)
    _set(vevent, "LAST-MODIFIED", now)
    _set(vevent, "SEQUENCE", sequence)
    calendar.pop("METHOD", None)  # CalDAV forbids it in stored resources
    return before.text()


def _patch_component(
    calendar: icalendar.Calendar,
    vevent: icalendar.Event,
    event: CalendarEvent,
    changed: frozenset[str],
    zone: dt.tzinfo,
) -> None:
    """Rewrite the ``changed`` groups of one VEVENT's own fields from ``event``, in
    this order (a property rewritten moves to the component's end)."""
    if "summary" in changed:
        _set(vevent, "SUMMARY", escaped_text(event.summary))
    if "when" in changed:
        _patch_times(calendar, vevent, event, zone)
    if "location" in changed:
        _set(vevent, "LOCATION", escaped_text(event.location))
    if "description" in changed:
        _patch_description(vevent, event)
    if "private" in changed:
        _patch_class(vevent, event)
    if "busy" in changed:
        _set(vevent, "TRANSP", "OPAQUE" if event.busy else "TRANSPARENT")
    if "reminder" in changed:
        _patch_reminder(vevent, event)
    if "attendees" in changed:
        _patch_attendees(vevent, event)
    if "cancelled" in changed:
        _patch_status(vevent, event)
    _patch_crm_ids(vevent, event)


def _patch_times(
    calendar: icalendar.Calendar, vevent: icalendar.Event, event: CalendarEvent, zone: dt.tzinfo
) -> None:
    """The times rewritten as the component spelt them: floating ones stay floating,
    and a zone the component named under another TZID keeps that name."""
    floating = was_floating(vevent) and not event.all_day
    spelt = None if event.all_day else same_zone_tzid(vevent.get("DTSTART"), zone, event)
    for name in ("DTSTART", "DTEND", "DURATION"):
        vevent.pop(name, None)
    write_times(vevent, event, zone, floating=floating)
    if spelt is not None:
        respell_zone(vevent, spelt)
    if spelt is None or spelt == getattr(zone, "key", None):
        ensure_zone(calendar, vevent, event, zone)


def _patch_description(vevent: icalendar.Event, event: CalendarEvent) -> None:
    old_description = vevent.get("DESCRIPTION")
    _set(vevent, "DESCRIPTION", escaped_text(event.description))
    drop_stale_html(vevent, old_description)


def _patch_class(vevent: icalendar.Event, event: CalendarEvent) -> None:
    """CLASS for a private event (CONFIDENTIAL kept, the stricter word), none for
    another (a CLASS that does not make it private, PUBLIC or an X- value, stays)."""
    old_class = str(vevent.get("CLASS", "")).upper()
    if event.private:
        vevent.pop("CLASS", None)
        vevent.add("CLASS", "CONFIDENTIAL" if old_class == "CONFIDENTIAL" else "PRIVATE")
    elif old_class in ("PRIVATE", "CONFIDENTIAL"):
        vevent.pop("CLASS", None)


def _patch_status(vevent: icalendar.Event, event: CalendarEvent) -> None:
    """STATUS:CANCELLED for a cancelled event; another's STATUS stays unless it was
    that (TENTATIVE/CONFIRMED are someone else's word)."""
    if event.cancelled:
        _set(vevent, "STATUS", "CANCELLED")
    elif str(vevent.get("STATUS", "")).upper() == "CANCELLED":
        vevent.pop("STATUS", None)


def _patch_crm_ids(vevent: icalendar.Event, event: CalendarEvent) -> None:
    """crmcal's ids, rewritten only when they differ (an unchanged one keeps its place)."""
    for name, value in ((CRM_ID_PROPERTY, event.crm_id), (CRM_TYPE_PROPERTY, event.crm_type)):
        if value and str(vevent.get(name, "")) != value:
            _set(vevent, name, EscapedText(value))


def _floating_match(
    override: CalendarEvent,
    components: dict[str | None, icalendar.Event],
    was: dict[str, CalendarEvent],
    zone: dt.tzinfo,
) -> tuple[icalendar.Event | None, CalendarEvent | None]:
    """The component (and the occurrence it was read as) of ``override`` where the
    resource spells its RECURRENCE-ID as a floating time. A floating time is a
    wall-clock time: the writer places the series in ``zone`` (the user's, for a
    floating series), so the override's original start is that wall-clock time
    there, not the UTC the resource was read in here. The occurrence comes read in
    ``zone`` too, so that only what changed is rewritten. None, None when there is
    none."""
    moment = override.recurrence_id
    if not isinstance(moment, dt.datetime):
        return None, None
    wall = moment.astimezone(zone).replace(tzinfo=dt.UTC)
    key = moment_key(wall)
    component, old = components.get(key), was.get(key)
    spelt = getattr(component.get("RECURRENCE-ID"), "dt", None) if component else None
    if not isinstance(spelt, dt.datetime) or spelt.tzinfo is not None:
        return None, None  # a moment of a zone: matched by its instant alone
    if old is None or not isinstance(old.start, dt.datetime):
        return component, old
    end = old.end.replace(tzinfo=zone) if isinstance(old.end, dt.datetime) else old.end
    placed = replace(old, recurrence_id=moment, start=old.start.replace(tzinfo=zone), end=end)
    return component, placed


def _patched_overrides(
    before: PreviousResource,
    previous: str,
    event: CalendarEvent,
    uid: str,
    sequence: int,
    now: dt.datetime,
) -> list[icalendar.Event]:
    """``event``'s overrides as components: one the resource has already keeps its
    component with only its changed fields rewritten, a new one is built afresh."""
    try:
        read = parse_event(previous)
    except ValueError:
        read = None
    was = read.live_overrides() if read is not None else {}
    components = {override_key(c): c for c in before.overrides if not is_cancelled_component(c)}
    left_out = {moment_key(m) for m in event.cancelled_moments()}
    found = []
    for key, override in sorted(event.live_overrides().items()):
        if key in left_out:
            continue
        component, old = components.get(key), was.get(key)
        if component is None:
            component, old = _floating_match(override, components, was, writing_zone(event))
        if component is None or old is None:
            found.append(override_vevent(override, event, uid, component, sequence, now))
            continue
        changed = changed_fields(old, override) - {"recurrence", "overrides"}
        if changed:
            _patch_component(before.calendar, component, override, changed,
                             writing_zone(override))  # fmt: skip
            _set(component, "DTSTAMP", now)
            _set(component, "LAST-MODIFIED", now)
            _set(component, "SEQUENCE", sequence)
        found.append(component)
    return found
