"""Writing a whole resource (``serialize_event``): a VCALENDAR of the event, its
overrides and the VTIMEZONEs they use, keeping the calendar-level properties and
the components of the resource it replaces that crmcal does not own."""

from __future__ import annotations

import datetime as dt

import icalendar

from crmcal.model import CalendarEvent
from crmcal.providers.ical.build import build_vevent, write_moment
from crmcal.providers.ical.mapping import OWNED_CALENDAR_PROPERTIES, PRODID
from crmcal.providers.ical.previous import PreviousResource, ical_text
from crmcal.providers.ical.series import kept_cancellations, written_overrides
from crmcal.providers.ical.writing_zones import day_of, vtimezone_for, writing_zone


def serialize_event(
    event: CalendarEvent,
    uid: str,
    *,
    previous: str | None = None,
    sequence: int | None = None,
) -> str:
    """A complete VCALENDAR holding ``event`` with UID ``uid``: a series with exactly
    its ``overrides`` as RECURRENCE-ID components.

    ``previous`` is the resource's current text: properties, alarms and
    calendar-level properties crmcal does not own are kept (an override's own in
    the component it replaces), and SEQUENCE goes up by one (unless ``sequence`` is
    given).
    """
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    before = PreviousResource.load(previous) if previous else None
    zone = writing_zone(event)
    if sequence is None:
        sequence = before.sequence() + 1 if before else 0
    old = before.master if before else None
    vevent = build_vevent(event, uid, old, sequence, now)
    if event.recurrence_id is not None:
        vevent.add("RECURRENCE-ID", write_moment(event.recurrence_id, event, zone))
    overrides = written_overrides(event, uid, before, sequence, now)
    return ical_text(_calendar(event, vevent, before, zone, overrides))


def _calendar(
    event: CalendarEvent,
    vevent: icalendar.Event,
    before: PreviousResource | None,
    zone: dt.tzinfo,
    overrides: list[icalendar.Event],
) -> icalendar.Calendar:
    calendar = icalendar.Calendar()
    calendar.add("PRODID", PRODID)
    calendar.add("VERSION", "2.0")
    events = [vevent]
    if before is not None:
        for key, value in before.calendar.items():
            if key.upper() not in OWNED_CALENDAR_PROPERTIES:
                calendar[key] = value
        events += kept_cancellations(before, event)
    events += overrides
    holder = icalendar.Calendar()  # only to ask which TZIDs the events use
    holder.subcomponents.extend(events)
    used = holder.get_used_tzids() - {"UTC"}
    timezones: list[icalendar.cal.Component] = []
    if before is not None:
        # A zone of a kept occurrence: its own definition travels with it.
        ours = getattr(zone, "key", None)
        for component in before.calendar.subcomponents:
            tzid = str(component.get("TZID", ""))
            if component.name == "VTIMEZONE" and tzid in used and tzid != ours:
                timezones.append(component)
                used.discard(tzid)
    year = day_of(event.start).year
    last_year = year + (20 if event.recurrence is not None else 2)
    for tzid in sorted(used):
        definition = vtimezone_for(tzid, year - 1, last_year)
        if definition is not None:
            timezones.append(definition)
    calendar.subcomponents.extend(timezones)
    calendar.subcomponents.extend(events)
    return calendar
