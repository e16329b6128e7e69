"""The time zones of one resource and its floating times: a TZID is explained by
its name, else by the resource's own VTIMEZONE (expanded only within a budget, since
a hostile one can be made expensive), else read as floating time and noted; and
DATE / DATE-TIME property values made aware in those zones."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from functools import lru_cache

import icalendar

from crmcal.providers.ical.scanner import (
    RawCalendar,
    RawProperty,
    parse_date,
    parse_date_time,
    parse_parameters,
)
from crmcal.providers.ical.zone_names import display_zone, named_zone, offset_zone

# Expanding a VTIMEZONE's rules (up to 2038, or their UNTIL or COUNT) is what a
# hostile one makes expensive: at most this many transitions are expanded.
MAX_ZONE_TRANSITIONS = 2000
MAX_ZONE_STEPS = 20_000  # periods a rule's expansion walks through
_PERIOD_DAYS = {"YEARLY": 365, "MONTHLY": 28, "WEEKLY": 7, "DAILY": 1}
_ZONE_END = dt.date(2038, 12, 31)


def _check_zone_budget(lines: list[str]) -> None:
    """Refuse a VTIMEZONE whose rules are more frequent than daily or would expand to
    more than ``MAX_ZONE_TRANSITIONS`` transitions (ValueError: the event is unreadable)."""
    total = 0
    start: dt.date | None = None
    rules: list[dict[str, str]] = []
    for line in lines:
        name, _, value = line.partition(":")
        key = name.split(";", 1)[0].upper()
        if key in ("BEGIN", "END") and value.strip().upper() in ("STANDARD", "DAYLIGHT"):
            total += sum(_transitions(rule, start) for rule in rules)
            start, rules = None, []
        elif key == "DTSTART" and value[:8].isdigit():
            start = _rule_start(value)
        elif key == "RRULE":
            rules.append(
                {k.strip().upper(): v for k, _, v in (p.partition("=") for p in value.split(";"))}
            )
        elif key == "RDATE":
            total += value.count(",") + 1
        if total > MAX_ZONE_TRANSITIONS:
            break
    total += sum(_transitions(rule, start) for rule in rules)
    if total > MAX_ZONE_TRANSITIONS:
        raise ValueError(
            f"the VTIMEZONE's rules expand to more than {MAX_ZONE_TRANSITIONS} transitions"
        )


def _rule_start(value: str) -> dt.date:
    """The day a STANDARD or DAYLIGHT part's DTSTART names."""
    try:
        return dt.date(int(value[:4]), int(value[4:6]), int(value[6:8]))
    except ValueError:
        raise ValueError("a VTIMEZONE rule starts on no date") from None


def _transitions(rule: dict[str, str], start: dt.date | None) -> int:
    """How many transitions one RRULE of a part starting on ``start`` (its parts by
    name) expands to, at most; ValueError for one more frequent than daily or that
    would walk through more than ``MAX_ZONE_STEPS`` periods."""
    frequency = rule.get("FREQ", "").upper()
    if frequency not in _PERIOD_DAYS:
        raise ValueError(f"a VTIMEZONE rule repeats {frequency or 'without a FREQ'}")
    interval = int(rule["INTERVAL"]) if rule.get("INTERVAL", "").isdigit() else 1
    counted = rule.get("COUNT", "")
    until = rule.get("UNTIL", "")
    # Without UNTIL the expansion stops at 2038, or with only a COUNT at the
    # COUNT-th match, which an impossible rule never reaches: year 9999.
    end = dt.date(9999, 12, 31) if counted else _ZONE_END
    if until[:4].isdigit():
        end = dt.date(max(int(until[:4]), 1), 12, 31)
    first = start or dt.date(1970, 1, 1)
    steps = max((end - first).days, 0) // (_PERIOD_DAYS[frequency] * max(interval, 1))
    if steps > MAX_ZONE_STEPS:
        raise ValueError("a VTIMEZONE rule would expand without end")
    spread = 1
    for part in ("BYMONTH", "BYDAY", "BYMONTHDAY", "BYYEARDAY", "BYWEEKNO", "BYSETPOS"):
        if rule.get(part):
            spread *= len(rule[part].split(","))
    expected = (steps + 1) * spread
    if counted.isdigit():
        expected = min(expected, int(counted))
    return expected


@lru_cache(maxsize=64)
def _defined_zone(vtimezone: str) -> dt.tzinfo:
    """A zone defined only by its VTIMEZONE (e.g. Outlook's "Customized Time Zone")."""
    _check_zone_budget(vtimezone.split("\r\n"))
    try:
        component = icalendar.Timezone.from_ical(vtimezone)
        assert isinstance(component, icalendar.Timezone)
        zone: dt.tzinfo = component.to_tz(lookup_tzid=False)
        return zone
    except Exception as error:  # icalendar/dateutil raise many kinds on bad rules
        raise ValueError(f"unusable VTIMEZONE ({error.__class__.__name__})") from None


class ResourceZones:
    """Resolves the TZIDs of one resource.

    A TZID no name, offset or VTIMEZONE explains is read in the zone of floating
    times, and noted in ``problems``: an hour off is better than an event lost.
    """

    def __init__(self, doc: RawCalendar, default_tz: str | None) -> None:
        self.doc = doc
        self.problems: list[str] = []
        name = doc.calendar_zone if doc.calendar_zone and named_zone(doc.calendar_zone) else None
        floating = named_zone(name or default_tz or "UTC")
        if floating is None:
            raise ValueError(f"unknown default time zone {default_tz!r}")
        # Floating times read in no zone anybody named have no zone: the CRM reads
        # their wall-clock time in its user's own zone.
        self.floating: tuple[dt.tzinfo, str | None] = (
            floating if name or default_tz else (floating[0], None)
        )

    def get(self, tzid: str) -> tuple[dt.tzinfo, str | None]:
        explained = self.explained(tzid)
        if explained is not None:
            return explained
        problem = f"unknown time zone {tzid[:60]!r}, read as floating time"
        if problem not in self.problems:
            self.problems.append(problem)
        return self.floating

    def explained(self, tzid: str) -> tuple[dt.tzinfo, str | None] | None:
        """The zone ``tzid`` stands for in this resource, None when nothing explains it:
        its name, else the resource's own VTIMEZONE of that TZID (never one another
        resource defined), an Outlook display name, a fixed offset."""
        named = named_zone(tzid)
        if named is not None:
            return named
        lines = self.doc.timezones.get(tzid.strip())
        if lines is not None:
            return _defined_zone("\r\n".join(lines) + "\r\n"), None
        displayed = display_zone(tzid)
        if displayed is not None:
            return displayed
        offset = offset_zone(tzid)
        if offset is not None:
            return offset, None
        return None


def read_moment(
    prop: RawProperty, zones: ResourceZones, value: str | None = None
) -> tuple[dt.datetime | dt.date, str | None]:
    """A DATE or DATE-TIME property value, made aware, with the IANA key of its zone."""
    raw_params, raw_value = prop
    value = (raw_value if value is None else value).strip()
    if len(value) == 8:
        return parse_date(value), None
    moment, utc = parse_date_time(value)
    if utc:
        return moment.replace(tzinfo=dt.UTC), "UTC"
    tzid = parse_parameters(raw_params).get("TZID") if raw_params else None
    zone, name = zones.get(tzid) if tzid else zones.floating
    return moment.replace(tzinfo=zone), name


def is_floating(prop: RawProperty, zones: ResourceZones) -> bool:
    """Whether a DATE-TIME is a local time of no zone crmcal can name (no TZID, no Z,
    or a TZID nothing explains): wall-clock time, read in the CRM user's zone."""
    raw_params, value = prop
    value = value.strip()
    if len(value) == 8 or value.upper().endswith("Z"):
        return False
    tzid = parse_parameters(raw_params).get("TZID") if raw_params else None
    if not tzid:
        return zones.floating[1] is None
    return zones.explained(tzid) is None and zones.floating[1] is None


def read_moments(props: Iterable[RawProperty], zones: ResourceZones) -> list[dt.datetime | dt.date]:
    """The values of RDATE/EXDATE lines (comma-separated lists; periods give their start)."""
    found: list[dt.datetime | dt.date] = []
    for prop in props:
        for item in prop[1].split(","):
            if item.strip():
                found.append(read_moment(prop, zones, item.split("/", 1)[0])[0])
    return found
