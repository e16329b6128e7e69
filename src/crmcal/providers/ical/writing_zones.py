"""The zones times are written in: which zone DTSTART uses, local times that say
what they mean across DST, the VTIMEZONE definitions a written resource needs, and
keeping a zone's old spelling (a TZID another client knows it by) on a move."""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from zoneinfo import ZoneInfo

import icalendar

from crmcal.model import CalendarEvent
from crmcal.providers.ical.zone_names import named_zone


@lru_cache(maxsize=256)
def vtimezone_for(tzid: str, first_year: int, last_year: int) -> icalendar.Timezone | None:
    # Shared between calls: icalendar components are only read when serialising.
    try:
        return icalendar.Timezone.from_tzid(
            tzid, first_date=dt.date(first_year, 1, 1), last_date=dt.date(last_year, 1, 1)
        )
    except ValueError:
        return None


def writing_zone(event: CalendarEvent) -> dt.tzinfo:
    """The zone DTSTART is written in: the event's IANA zone, else its start's, else UTC."""
    if event.timezone:
        named = named_zone(event.timezone)
        if named is not None:
            return named[0]
    tzinfo = event.start.tzinfo if isinstance(event.start, dt.datetime) else None
    if isinstance(tzinfo, ZoneInfo):
        return tzinfo
    return dt.UTC


def local_time(moment: dt.datetime | dt.date, zone: dt.tzinfo) -> dt.datetime:
    if not isinstance(moment, dt.datetime):
        return dt.datetime.combine(moment, dt.time(), tzinfo=zone)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    local = moment.astimezone(zone).replace(microsecond=0)
    if local.fold and local.replace(fold=0).utcoffset() != local.utcoffset():
        # The second of two equal wall-clock times (DST ends): a TZID-local time
        # always means the first one (RFC 5545 3.3.5), so write this one in UTC.
        return local.astimezone(dt.UTC)
    return local


def day_of(moment: dt.datetime | dt.date) -> dt.date:
    return moment.date() if isinstance(moment, dt.datetime) else moment


def was_floating(vevent: icalendar.Event) -> bool:
    start = vevent.get("DTSTART")
    moment = getattr(start, "dt", None)
    params = getattr(start, "params", {})
    return isinstance(moment, dt.datetime) and moment.tzinfo is None and "TZID" not in params


def same_zone_tzid(start: object, zone: dt.tzinfo, event: CalendarEvent) -> str | None:
    """The TZID the old DTSTART ``start`` was written with, when it stands for the zone
    the new times are written in (``zone``): Outlook's "W. Europe Standard Time", a
    vendor-prefixed "/mozilla.org/20050126_1/Europe/Berlin", or a zone only the
    resource's own VTIMEZONE defines ("(UTC+01:00) Amsterdam, Berlin, ...") whose
    offsets are Europe/Berlin's. Another client knows its zone by that name, so a
    move keeps it rather than respelling the zone and adding a VTIMEZONE of ours."""
    tzid = getattr(start, "params", {}).get("TZID")
    if not tzid:
        return None
    tzid = str(tzid)
    named = named_zone(tzid)
    if named is not None:
        return tzid if named[1] == getattr(zone, "key", None) else None
    old_zone = getattr(getattr(start, "dt", None), "tzinfo", None)
    if old_zone is None:
        return None  # a TZID nothing defines: write the zone crmcal knows
    assert isinstance(event.start, dt.datetime)
    # Same offsets at the new times and through the year (both sides of DST), now
    # and next year: what a series' later occurrences meet too.
    year = event.start.year
    probes = [event.start, *([event.end] if isinstance(event.end, dt.datetime) else [])]
    probes += [dt.datetime(y, m, 15, 12, tzinfo=dt.UTC) for y in (year, year + 1) for m in (1, 7)]
    for probe in probes:
        moment = probe if probe.tzinfo is not None else probe.replace(tzinfo=zone)
        if moment.astimezone(zone).utcoffset() != moment.astimezone(old_zone).utcoffset():
            return None
    return tzid


def respell_zone(vevent: icalendar.Event, tzid: str) -> None:
    """Name the zone of the DTSTART and DTEND just written ``tzid`` (see
    ``same_zone_tzid``); a time written in UTC (the second of two equal wall-clock
    times) stays so."""
    for name in ("DTSTART", "DTEND"):
        prop = vevent.get(name)
        params = getattr(prop, "params", None)
        if params is not None and "TZID" in params:
            params["TZID"] = tzid


def ensure_zones(calendar: icalendar.Calendar, event: CalendarEvent) -> None:
    """A VTIMEZONE for every TZID the resource's events use and it does not define."""
    defined = {str(c.get("TZID", "")) for c in calendar.subcomponents if c.name == "VTIMEZONE"}
    used = calendar.get_used_tzids() - {"UTC"} - defined
    year = day_of(event.start).year
    last_year = year + (20 if event.recurrence is not None else 2)
    for tzid in sorted(used):
        definition = vtimezone_for(tzid, year - 1, last_year)
        if definition is not None:
            calendar.subcomponents.insert(0, definition)


def ensure_zone(
    calendar: icalendar.Calendar, vevent: icalendar.Event, event: CalendarEvent, zone: dt.tzinfo
) -> None:
    """A VTIMEZONE for the zone the new times are written in, if the resource lacks one."""
    tzid = getattr(zone, "key", None)
    start = vevent.get("DTSTART")
    if tzid is None or tzid == "UTC" or "TZID" not in getattr(start, "params", {}):
        return
    defined = {str(c.get("TZID", "")) for c in calendar.subcomponents if c.name == "VTIMEZONE"}
    if tzid in defined:
        return
    year = day_of(event.start).year
    definition = vtimezone_for(tzid, year - 1, year + 2)
    if definition is not None:
        calendar.subcomponents.insert(0, definition)
