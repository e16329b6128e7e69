"""iCalendar codec: one CalDAV resource (a VCALENDAR) <-> one ``CalendarEvent``.

Reading (``parse_event``) is the hot path: an initial import parses every event
of a calendar, and a full ``icalendar.Calendar.from_ical`` costs about 2 ms per
typical event (most of it building property objects crmcal never looks at and
interpreting VTIMEZONE blocks that merely restate an IANA zone). So reading uses
a small scanner of its own: it unfolds the text, splits content lines, keeps the
raw lines of VEVENTs and their VALARMs, decodes only the properties crmcal maps,
and resolves each TZID once per process (IANA names via ``zoneinfo``, Windows
names via icalendar's CLDR table). ``icalendar`` is still what interprets a
VTIMEZONE that names no known zone, and it does all the writing.

Writing (``serialize_event``) builds the resource with ``icalendar``. Given the
resource's current text it keeps everything crmcal does not own (categories,
URLs, foreign X- properties, further alarms, overridden occurrences) so that an
update never strips what another client stored.

Round trip: ``parse_event(serialize_event(e, uid))`` has the same
``content_hash()`` as ``e`` with ``uid`` set, for events that iCalendar can carry
(second precision, text without carriage returns or other control characters,
all-day events with an end).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any
from urllib.parse import unquote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import icalendar
from icalendar.prop import vCalAddress, vCategory, vDDDLists, vInline, vText, vUnknown
from icalendar.timezone.windows_to_olson import WINDOWS_TO_OLSON

from crmcal.model import (
    Attendee,
    CalendarEvent,
    Recurrence,
    ResponseStatus,
    changed_fields,
    moment_key,
)

PRODID = "-//crmcal//crmcal//EN"
CRM_ID_PROPERTY = "X-CRMCAL-ACTIVITY-ID"
CRM_TYPE_PROPERTY = "X-CRMCAL-TYPE"

__all__ = ["CRM_ID_PROPERTY", "CRM_TYPE_PROPERTY", "PRODID", "iana_zone", "parse_event",
           "resource_uid", "serialize_event"]  # fmt: skip

_ONE_DAY = dt.timedelta(days=1)
# A timed event without an end is written lasting this long: strict servers (Cyrus,
# that is Fastmail) refuse DTEND = DTSTART, DURATION:PT0S and a timed event with
# neither. Read back, an event this short (or shorter) has no end.
NO_END = dt.timedelta(seconds=1)
_UTC_NAMES = frozenset(
    {"UTC", "Z", "GMT", "UT", "ZULU", "UNIVERSAL", "GREENWICH", "GMT0", "GMT+0", "GMT-0",
     "ETC/UTC", "ETC/GMT", "ETC/UCT", "UCT", "ETC/ZULU", "ETC/UNIVERSAL", "ETC/GREENWICH",
     "ETC/GMT0", "ETC/GMT+0", "ETC/GMT-0"}
)  # fmt: skip
_PARTSTAT_IN: dict[str, ResponseStatus] = {
    "NEEDS-ACTION": "needs_action",
    "ACCEPTED": "accepted",
    "DECLINED": "declined",
    "TENTATIVE": "tentative",
}
_PARTSTAT_OUT = {v: k for k, v in _PARTSTAT_IN.items()}

# --- reading: content lines ---------------------------------------------------

_NAME = re.compile(r"[A-Za-z0-9-]+")
# A whole content line, used only when a parameter value is quoted (a quoted
# value may contain ':' and ';', so the first ':' is not necessarily the end).
_QUOTED_LINE = re.compile(
    r'([A-Za-z0-9-]+)((?:;[A-Za-z0-9-]+=(?:"[^"]*"|[^";:,]*)(?:,(?:"[^"]*"|[^";:,]*))*)*):(.*)',
    re.DOTALL,
)
_PARAM = re.compile(r';([A-Za-z0-9-]+)=((?:"[^"]*"|[^";:,]*)(?:,(?:"[^"]*"|[^";:,]*))*)')
# The lines that open and close VTIMEZONE blocks, found in one linear pass.
_VTIMEZONE_EDGE = re.compile(r"^(BEGIN|END):VTIMEZONE[ \t]*$\n?", re.MULTILINE | re.I)
_TZID = re.compile(r"TZID[;:]", re.I)
_TEXT_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
_CARET = re.compile(r"\^([n^'])")
_DATE_TIME = re.compile(r"(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})(Z?)")
_DURATION = re.compile(r"([+-]?)P(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?")

# (raw parameters, e.g. ";TZID=Europe/Berlin" or "", raw value)
_Prop = tuple[str, str]


@dataclass(slots=True)
class _Component:
    props: dict[str, list[_Prop]] = field(default_factory=dict)
    alarms: list[_Component] = field(default_factory=list)

    def first(self, name: str) -> _Prop | None:
        found = self.props.get(name)
        return found[0] if found else None

    def value(self, name: str) -> str | None:
        found = self.props.get(name)
        return found[0][1] if found else None


@dataclass(slots=True)
class _Document:
    events: list[_Component]
    # TZID -> the VTIMEZONE's unfolded lines, read only for zones no name resolves.
    timezones: dict[str, list[str]]
    calendar_zone: str | None  # X-WR-TIMEZONE, the zone of floating times when given


def _split(line: str, number: int) -> tuple[str, str, str]:
    """``NAME;PARAMS:VALUE`` -> (upper-case name, raw params, value)."""
    colon = line.find(":")
    if colon > 0 and line.find('"', 0, colon) < 0:
        head, value = line[:colon], line[colon + 1 :]
        semi = head.find(";")
        name, params = (head, "") if semi < 0 else (head[:semi], head[semi:])
        if _NAME.fullmatch(name):
            return name.upper(), params, value
    else:
        match = _QUOTED_LINE.match(line)
        if match:
            return match.group(1).upper(), match.group(2), match.group(3)
    raise ValueError(f"line {number} is not an iCalendar content line")


def _scan(text: str) -> _Document:
    """Split a VCALENDAR into its VEVENTs (with their VALARMs) and VTIMEZONEs."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    # Unfolding (RFC 5545 3.1): a line break followed by one space or tab vanishes.
    text = text.replace("\n ", "").replace("\n\t", "").lstrip("\ufeff \n\t")
    if not text[:15].upper().startswith("BEGIN:VCALENDAR"):
        raise ValueError("not iCalendar data (no BEGIN:VCALENDAR)")
    timezones: dict[str, list[str]] = {}
    if "VTIMEZONE" in text.upper():
        text = _cut_timezones(text, timezones)
    stack: list[str] = []
    events: list[_Component] = []
    calendar_zone: str | None = None
    event: _Component | None = None
    alarm: _Component | None = None
    tz_lines: list[str] | None = None
    tzid = ""
    for number, line in enumerate(text.split("\n"), 1):
        if not line or line.isspace():
            continue
        name, params, value = _split(line, number)
        if name == "BEGIN":
            kind = value.strip().upper()
            stack.append(kind)
            depth = len(stack)
            if depth == 1 and kind != "VCALENDAR":
                raise ValueError(f"line {number}: {kind} outside VCALENDAR")
            if tz_lines is not None:
                tz_lines.append(line)
            elif depth == 2 and kind == "VEVENT":
                event = _Component()
            elif depth == 2 and kind == "VTIMEZONE":
                tz_lines, tzid = [line], ""
            elif depth == 3 and kind == "VALARM" and event is not None:
                alarm = _Component()
            continue
        if name == "END":
            kind = value.strip().upper()
            if not stack or stack[-1] != kind:
                raise ValueError(f"line {number}: END:{kind} closes nothing open")
            depth = len(stack)
            stack.pop()
            if tz_lines is not None:
                tz_lines.append(line)
                if depth == 2:
                    timezones[tzid] = tz_lines
                    tz_lines = None
            elif depth == 2 and event is not None:
                events.append(event)
                event = None
            elif depth == 3 and alarm is not None and event is not None:
                event.alarms.append(alarm)
                alarm = None
            continue
        depth = len(stack)
        if depth == 0:
            raise ValueError(f"line {number} is outside VCALENDAR")
        if tz_lines is not None:
            tz_lines.append(line)
            if depth == 2 and name == "TZID":
                tzid = _text(value.strip())
        elif depth == 2 and event is not None:
            event.props.setdefault(name, []).append((params, value))
        elif depth == 3 and alarm is not None:
            alarm.props.setdefault(name, []).append((params, value))
        elif depth == 1 and name == "X-WR-TIMEZONE":
            calendar_zone = value.strip()
    if stack:
        raise ValueError(f"BEGIN:{stack[-1]} is never closed")
    return _Document(events, timezones, calendar_zone)


def _cut_timezones(text: str, timezones: dict[str, list[str]]) -> str:
    """The text without its VTIMEZONE blocks, which go to ``timezones`` by TZID.

    Servers repeat a VTIMEZONE in every event (Radicale adds one), and it is read
    only for a zone no name resolves: so it is cut out whole, not parsed line by
    line. A block this cannot cut cleanly is left for the line parser.
    """
    kept: list[str] = []
    position = 0
    opened: re.Match[str] | None = None
    # Pairs each BEGIN with the END that follows it (linear: thousands of
    # unclosed BEGIN lines cost one pass, not one scan each).
    for edge in _VTIMEZONE_EDGE.finditer(text):
        if edge.group(1).upper() == "BEGIN":
            opened = edge
            continue
        if opened is None:
            continue
        lines = text[opened.start() : edge.end()].rstrip("\n").split("\n")
        tzid = next((line.split(":", 1)[-1] for line in lines if _TZID.match(line)), "")
        # A TEXT value ("Amsterdam\\, Berlin"); TZID parameters name it unescaped.
        timezones[_text(tzid.strip())] = lines
        kept.append(text[position : opened.start()])
        position = edge.end()
        opened = None
    kept.append(text[position:])
    return "".join(kept)


def _params(raw: str) -> dict[str, str]:
    if not raw:
        return {}
    return {m.group(1).upper(): _param_value(m.group(2)) for m in _PARAM.finditer(raw)}


def _param_value(value: str) -> str:
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        value = value[1:-1]
    if "^" in value:  # RFC 6868 escapes
        value = _CARET.sub(lambda m: {"n": "\n", "^": "^", "'": '"'}[m.group(1)], value)
    return value


def _text(value: str) -> str:
    if "\\" not in value:
        return value
    return _TEXT_ESCAPE.sub(lambda m: "\n" if m.group(1) in "nN" else m.group(1), value)


def _token(value: str | None) -> str | None:
    """An identifier-like TEXT value (UID, CRM id); blank counts as absent."""
    if value is None:
        return None
    return _text(value).strip() or None


def _address(value: str, params: dict[str, str]) -> str | None:
    """The e-mail address of a CAL-ADDRESS (``mailto:``), or its EMAIL parameter."""
    value = value.strip()
    if value[:7].lower() == "mailto:":
        address = value[7:].strip()
        return unquote(address) if "%" in address else address or None
    return params.get("EMAIL") or None


# --- reading: dates, times and zones -------------------------------------------


def _date(value: str) -> dt.date:
    if len(value) != 8 or not value.isdigit():
        raise ValueError(f"bad DATE value {value[:40]!r}")
    try:
        return dt.date(int(value[:4]), int(value[4:6]), int(value[6:]))
    except ValueError:
        raise ValueError(f"bad DATE value {value!r}") from None


def _naive_datetime(value: str) -> tuple[dt.datetime, bool]:
    """A DATE-TIME value and whether it is in UTC (``Z``)."""
    match = _DATE_TIME.fullmatch(value)
    if match is None:
        raise ValueError(f"bad DATE-TIME value {value[:40]!r}")
    y, mo, d, h, mi, s, utc = match.groups()
    try:
        # A leap second (60) is kept as the last second of its minute.
        moment = dt.datetime(int(y), int(mo), int(d), int(h), int(mi), min(int(s), 59))
    except ValueError:
        raise ValueError(f"bad DATE-TIME value {value!r}") from None
    return moment, bool(utc)


def _zone_key(key: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(key)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


@lru_cache(maxsize=1)
def _keys_by_lower_case() -> dict[str, str]:
    """IANA keys and Windows zone names by their lower-case spelling: clients write
    "europe/berlin", "US/EASTERN", "w. europe standard time"."""
    found = {key.lower(): key for key in WINDOWS_TO_OLSON}
    found |= {key.lower(): key for key in sorted(available_timezones())}
    return found


@lru_cache(maxsize=1024)
def _named_zone(tzid: str) -> tuple[dt.tzinfo, str] | None:
    """The zone a TZID names, and its IANA key ("UTC" for UTC); None when unknown.

    Tries the TZID itself, a Windows zone name, and the trailing IANA name of a
    vendor-prefixed TZID such as ``/mozilla.org/20050126_1/Europe/Berlin``, each
    in any case ("europe/berlin" is Europe/Berlin).
    """
    cleaned = tzid.strip().strip("/")
    parts = cleaned.split("/")
    candidates = ["/".join(parts[i:]) for i in range(len(parts))]
    spelt = _keys_by_lower_case()
    for candidate in candidates:
        if candidate.upper() in _UTC_NAMES:
            return dt.UTC, "UTC"
        if not candidate:
            continue
        key = spelt.get(candidate.lower(), candidate)
        zone = _zone_key(WINDOWS_TO_OLSON.get(key, key))
        if zone is not None:
            return zone, zone.key
    return None


def iana_zone(tzid: str) -> str | None:
    """The IANA key a TZID stands for ("UTC" for UTC), if it names a known zone."""
    named = _named_zone(tzid)
    return named[1] if named else None


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

    def settle() -> int:
        count = 0
        for rule in rules:
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
            count += expected
        return count

    for line in lines:
        name, _, value = line.partition(":")
        key = name.split(";", 1)[0].upper()
        if key in ("BEGIN", "END") and value.strip().upper() in ("STANDARD", "DAYLIGHT"):
            total += settle()
            start, rules = None, []
        elif key == "DTSTART" and value[:8].isdigit():
            try:
                start = dt.date(int(value[:4]), int(value[4:6]), int(value[6:8]))
            except ValueError:
                raise ValueError("a VTIMEZONE rule starts on no date") from None
        elif key == "RRULE":
            rules.append(
                {k.strip().upper(): v for k, _, v in (p.partition("=") for p in value.split(";"))}
            )
        elif key == "RDATE":
            total += value.count(",") + 1
        if total > MAX_ZONE_TRANSITIONS:
            break
    total += settle()
    if total > MAX_ZONE_TRANSITIONS:
        raise ValueError(
            f"the VTIMEZONE's rules expand to more than {MAX_ZONE_TRANSITIONS} transitions"
        )


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


# A fixed offset spelled as a TZID: "UTC+01:00" (python's caldav library), "GMT+0100",
# "UTC-5", "(UTC+05:30) Chennai, Kolkata" (Outlook's display names) ...
_OFFSET_TZID = re.compile(
    r"\(?\s*(?:UTC|GMT|UT)\s*([+-])\s*(\d{1,2})(?::?(\d{2}))?\s*(?:\)|$|\s)", re.I
)


@lru_cache(maxsize=256)
def _offset_zone(tzid: str) -> dt.tzinfo | None:
    """The fixed offset a TZID spells, when it spells one that exists (-14h..+14h)."""
    match = _OFFSET_TZID.match(tzid.strip())
    if match is None:
        return None
    sign, hours, minutes = match.groups()
    offset = dt.timedelta(hours=int(hours), minutes=int(minutes or 0))
    if offset > dt.timedelta(hours=14) or int(minutes or 0) >= 60:
        return None
    return dt.timezone(-offset if sign == "-" else offset)


# Outlook's display names of Windows zones: "(UTC+01:00) Amsterdam, Berlin, Bern, Rome,
# Stockholm, Vienna", "(UTC-05:00) Eastern Time (US & Canada)", "(UTC) Coordinated
# Universal Time". Outlook writes a VTIMEZONE with them; a server or gateway that drops
# it leaves only the name, whose offset is the zone's standard one (no DST).
_DISPLAY_NAME = re.compile(r"\(\s*(?:UTC|GMT)\s*(?:([+-])(\d{1,2}):(\d{2}))?\s*\)\s*(\S.*)", re.I)
# The display names that name a region, or places no IANA key ends in ("Brasilia"),
# rather than cities the zone database knows.
_DISPLAY_REGIONS = {
    "eastern time (us & canada)": "America/New_York",
    "central time (us & canada)": "America/Chicago",
    "mountain time (us & canada)": "America/Denver",
    "pacific time (us & canada)": "America/Los_Angeles",
    "atlantic time (canada)": "America/Halifax",
    "alaska": "America/Anchorage",
    "hawaii": "Pacific/Honolulu",
    "coordinated universal time": "UTC",
    "brasilia": "America/Sao_Paulo",
    "city of buenos aires": "America/Argentina/Buenos_Aires",
    "salvador": "America/Bahia",
    "saint pierre and miquelon": "America/Miquelon",
    "newfoundland": "America/St_Johns",
    "arizona": "America/Phoenix",
    "saskatchewan": "America/Regina",
    "indiana (east)": "America/Indiana/Indianapolis",
    "central america": "America/Guatemala",
    "baja california": "America/Tijuana",
    "haiti": "America/Port-au-Prince",
    "turks and caicos": "America/Grand_Turk",
    "aleutian islands": "America/Adak",
    "easter island": "Pacific/Easter",
    "marquesas islands": "Pacific/Marquesas",
    "cabo verde is.": "Atlantic/Cape_Verde",
    "west central africa": "Africa/Lagos",
    "port louis": "Indian/Mauritius",
    "ekaterinburg": "Asia/Yekaterinburg",
    "sri jayawardenepura": "Asia/Colombo",
    "yangon (rangoon)": "Asia/Yangon",
    "lord howe island": "Australia/Lord_Howe",
    "norfolk island": "Pacific/Norfolk",
    "bougainville island": "Pacific/Bougainville",
    "solomon is., new caledonia": "Pacific/Guadalcanal",
    "chatham islands": "Pacific/Chatham",
    "samoa": "Pacific/Apia",
    "nuku'alofa": "Pacific/Tongatapu",
    "kiritimati island": "Pacific/Kiritimati",
}


@lru_cache(maxsize=1)
def _zones_by_city() -> dict[str, list[str]]:
    """IANA keys by their last part, lower-case with spaces ("new york": America/New_York)."""
    found: dict[str, list[str]] = {}
    for key in sorted(available_timezones()):
        if "/" in key and not key.startswith(("Etc/", "SystemV/", "posix/", "right/")):
            city = key.rsplit("/", 1)[1].replace("_", " ").lower()
            found.setdefault(city, []).append(key)
    return found


def _standard_offset(zone: dt.tzinfo) -> dt.timedelta | None:
    """A zone's offset without daylight saving time: the smaller of January's and July's."""
    year = dt.date.today().year
    offsets = [zone.utcoffset(dt.datetime(year, month, 15, 12)) for month in (1, 7)]
    known = [offset for offset in offsets if offset is not None]
    return min(known) if known else None


@lru_cache(maxsize=256)
def _display_zone(tzid: str) -> tuple[dt.tzinfo, str] | None:
    """The IANA zone an Outlook display name stands for: one of the places it names
    (or its region) whose standard offset is the one it spells."""
    match = _DISPLAY_NAME.fullmatch(tzid.strip().strip('"').strip())
    if match is None:
        return None
    sign, hours, minutes, places = match.groups()
    offset = dt.timedelta(hours=int(hours or 0), minutes=int(minutes or 0))
    offset = -offset if sign == "-" else offset
    region = _DISPLAY_REGIONS.get(places.strip().lower())
    candidates = [region] if region else []
    for place in places.split(","):
        candidates += _zones_by_city().get(place.strip().lower(), [])
    for key in candidates:
        named = _named_zone(key)
        if named is not None and _standard_offset(named[0]) == offset:
            return named
    return None


class _Zones:
    """Resolves the TZIDs of one resource.

    A TZID no name, offset or VTIMEZONE explains is read in the zone of floating
    times, and noted in ``problems``: an hour off is better than an event lost.
    """

    def __init__(self, doc: _Document, default_tz: str | None) -> None:
        self.doc = doc
        self.problems: list[str] = []
        name = doc.calendar_zone if doc.calendar_zone and _named_zone(doc.calendar_zone) else None
        floating = _named_zone(name or default_tz or "UTC")
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
        named = _named_zone(tzid)
        if named is not None:
            return named
        lines = self.doc.timezones.get(tzid.strip())
        if lines is not None:
            return _defined_zone("\r\n".join(lines) + "\r\n"), None
        displayed = _display_zone(tzid)
        if displayed is not None:
            return displayed
        offset = _offset_zone(tzid)
        if offset is not None:
            return offset, None
        return None


def _moment(
    prop: _Prop, zones: _Zones, value: str | None = None
) -> tuple[dt.datetime | dt.date, str | None]:
    """A DATE or DATE-TIME property value, made aware, with the IANA key of its zone."""
    raw_params, raw_value = prop
    value = (raw_value if value is None else value).strip()
    if len(value) == 8:
        return _date(value), None
    moment, utc = _naive_datetime(value)
    if utc:
        return moment.replace(tzinfo=dt.UTC), "UTC"
    tzid = _params(raw_params).get("TZID") if raw_params else None
    zone, name = zones.get(tzid) if tzid else zones.floating
    return moment.replace(tzinfo=zone), name


def _is_floating(prop: _Prop, zones: _Zones) -> bool:
    """Whether a DATE-TIME is a local time of no zone crmcal can name (no TZID, no Z,
    or a TZID nothing explains): wall-clock time, read in the CRM user's zone."""
    raw_params, value = prop
    value = value.strip()
    if len(value) == 8 or value.upper().endswith("Z"):
        return False
    tzid = _params(raw_params).get("TZID") if raw_params else None
    if not tzid:
        return zones.floating[1] is None
    return zones.explained(tzid) is None and zones.floating[1] is None


def _moments(props: Iterable[_Prop], zones: _Zones) -> list[dt.datetime | dt.date]:
    """The values of RDATE/EXDATE lines (comma-separated lists; periods give their start)."""
    found: list[dt.datetime | dt.date] = []
    for prop in props:
        for item in prop[1].split(","):
            if item.strip():
                found.append(_moment(prop, zones, item.split("/", 1)[0])[0])
    return found


def _duration(value: str) -> tuple[int, int]:
    """An RFC 5545 duration as (nominal days, exact seconds), both signed."""
    match = _DURATION.fullmatch(value.strip())
    if match is None or not any(match.groups()[1:]) or value.strip().endswith("T"):
        raise ValueError(f"bad DURATION value {value[:40]!r}")
    sign, weeks, days, hours, minutes, seconds = match.groups()
    factor = -1 if sign == "-" else 1
    total_days = int(weeks or 0) * 7 + int(days or 0)
    total_seconds = int(hours or 0) * 3600 + int(minutes or 0) * 60 + int(seconds or 0)
    return factor * total_days, factor * total_seconds


def _add_duration(start: dt.datetime, days: int, seconds: int) -> dt.datetime:
    # Days are nominal (same wall-clock time across a DST change), the rest exact.
    end = start + dt.timedelta(days=days) if days else start
    if seconds:
        end = (end.astimezone(dt.UTC) + dt.timedelta(seconds=seconds)).astimezone(start.tzinfo)
    return end


def _last_modified(event: _Component) -> dt.datetime | None:
    for name in ("LAST-MODIFIED", "DTSTAMP"):
        value = event.value(name)
        if value is None:
            continue
        try:
            moment, _ = _naive_datetime(value.strip())
        except ValueError:
            continue  # bookkeeping only: a bad stamp must not hide the event
        return moment.replace(tzinfo=dt.UTC)
    return None


def _key(moment: dt.datetime | dt.date) -> str:
    if isinstance(moment, dt.datetime):
        return moment.astimezone(dt.UTC).isoformat()
    return moment.isoformat()


# --- reading: the event -----------------------------------------------------------


def _times(
    event: _Component, zones: _Zones
) -> tuple[dt.datetime | dt.date, dt.datetime | dt.date | None, bool, str | None]:
    start_prop = event.first("DTSTART")
    if start_prop is None:
        raise ValueError("event has no DTSTART")
    start, zone_name = _moment(start_prop, zones)
    all_day = not isinstance(start, dt.datetime)
    end: dt.datetime | dt.date | None = None
    end_prop, duration = event.first("DTEND"), event.value("DURATION")
    if end_prop is not None:
        end = _moment(end_prop, zones)[0]
    elif duration is not None:
        days, seconds = _duration(duration)
        if all_day:
            # A date plus a duration ends on a date: round partial days up.
            end = start + dt.timedelta(days=days + -(-seconds // 86400))
        else:
            assert isinstance(start, dt.datetime)
            end = _add_duration(start, days, seconds)
    if all_day:
        assert not isinstance(start, dt.datetime)
        if isinstance(end, dt.datetime):
            end = end.date()
        if end is None or end <= start:
            end = start + _ONE_DAY
        return start, end, True, None
    assert isinstance(start, dt.datetime)
    if end is not None and not isinstance(end, dt.datetime):
        end = dt.datetime.combine(end, dt.time(), tzinfo=start.tzinfo)
    if end is not None and dt.timedelta(0) <= end - start <= NO_END:
        end = None  # how crmcal writes a moment without an end (see _write_times)
    return start, end, False, zone_name


def _reminder(event: _Component) -> int | None:
    """Minutes before the start of the first display alarm, if it has such a trigger."""
    for alarm in event.alarms:
        action = alarm.value("ACTION")
        trigger = alarm.first("TRIGGER")
        if action is None or action.strip().upper() != "DISPLAY" or trigger is None:
            continue
        params = _params(trigger[0])
        if params.get("VALUE", "DURATION").upper() != "DURATION":
            continue  # an absolute time, not relative to the event
        if params.get("RELATED", "START").upper() != "START":
            continue
        try:
            days, seconds = _duration(trigger[1])
        except ValueError:
            continue  # a broken alarm is not worth losing the event over
        offset = days * 86400 + seconds
        if offset <= 0:
            return -offset // 60
    return None


def _attendees(event: _Component) -> tuple[Attendee, ...]:
    found = []
    for raw_params, value in event.props.get("ATTENDEE", ()):
        params = _params(raw_params)
        email = _address(value, params)
        if not email:
            continue  # urn:/tel: addresses are not people crmcal can name
        found.append(
            Attendee(
                email=email,
                name=params.get("CN") or None,
                status=_PARTSTAT_IN.get(params.get("PARTSTAT", "").upper(), "needs_action"),
                resource=params.get("CUTYPE", "").upper() in ("ROOM", "RESOURCE"),
            )
        )
    return tuple(found)


def _recurrence(event: _Component, overrides: list[_Component], zones: _Zones) -> Recurrence | None:
    rrules = event.props.get("RRULE")
    rdates = _moments(event.props.get("RDATE", ()), zones)
    if not rrules and not rdates:
        return None
    exdates = _moments(event.props.get("EXDATE", ()), zones)
    # A cancelled occurrence may be an overriding VEVENT instead of an EXDATE.
    for override in overrides:
        status = override.value("STATUS")
        recurrence_id = override.first("RECURRENCE-ID")
        if status and status.strip().upper() == "CANCELLED" and recurrence_id is not None:
            exdates.append(_moment(recurrence_id, zones)[0])
    return Recurrence(
        rrule=rrules[0][1].strip() if rrules else "",
        exdates=_unique(exdates),
        rdates=_unique(rdates),
    )


def _unique(moments: list[dt.datetime | dt.date]) -> tuple[dt.datetime | dt.date, ...]:
    seen: set[str] = set()
    unique = []
    for moment in moments:
        key = _key(moment)
        if key not in seen:
            seen.add(key)
            unique.append(moment)
    return tuple(unique)


def _choose(events: list[_Component]) -> tuple[_Component, list[_Component]]:
    """The series master (or the lone occurrence) and the overridden occurrences."""
    masters = [e for e in events if "RECURRENCE-ID" not in e.props]
    if len(masters) > 1:
        raise ValueError("more than one event in one resource")
    if masters:
        master = masters[0]
        return master, [e for e in events if e is not master]
    return events[0], events[1:]


def _cancelled(event: _Component) -> bool:
    status = event.value("STATUS")
    return status is not None and status.strip().upper() == "CANCELLED"


def parse_event(
    text: str, *, default_tz: str | None = "UTC", problems: list[str] | None = None
) -> CalendarEvent | None:
    """The event in one CalDAV resource; None when it holds no VEVENT (a VTODO, say).

    ``default_tz`` is the zone of floating times (unless the calendar names one in
    X-WR-TIMEZONE); None reads them in UTC and marks the event ``floating`` with no
    ``timezone``, for the reader to place in its own zone. A series comes back as
    its master with ``recurrence`` set and its overridden occurrences (RECURRENCE-ID
    components) in ``overrides``; cancelled occurrences are among its EXDATEs,
    whichever way the resource says so. Raises ValueError with a short reason for
    data that is malformed or lacks what an event needs; what could be read only by
    a guess (a TZID nothing explains) is added to ``problems``.
    """
    doc = _scan(text)
    if not doc.events:
        return None
    master, overrides = _choose(doc.events)
    zones = _Zones(doc, default_tz)
    event = _read_component(master, zones)
    recurrence = _recurrence(master, overrides, zones)
    if recurrence is not None:
        changed = tuple(
            _read_component(o, zones)
            for o in overrides
            if not _cancelled(o) and o.first("RECURRENCE-ID") is not None
        )
        event = replace(event, recurrence=recurrence, overrides=changed)
    if problems is not None:
        problems.extend(zones.problems)
    return event


def _read_component(component: _Component, zones: _Zones) -> CalendarEvent:
    """One VEVENT's own fields (a master's rule and overrides are added by the caller)."""
    start, end, all_day, zone_name = _times(component, zones)
    start_prop = component.first("DTSTART")
    floating = start_prop is not None and _is_floating(start_prop, zones)
    get = component.value
    summary, location, description = get("SUMMARY"), get("LOCATION"), get("DESCRIPTION")
    crm_id, crm_type = get(CRM_ID_PROPERTY), get(CRM_TYPE_PROPERTY)
    klass, transp, status = get("CLASS"), get("TRANSP"), get("STATUS")
    organizer = component.first("ORGANIZER")
    recurrence_id = component.first("RECURRENCE-ID")
    uid = get("UID")
    return CalendarEvent(
        summary=_text(summary) if summary is not None else None,
        start=start,
        end=end,
        all_day=all_day,
        timezone=zone_name,
        location=_text(location) if location is not None else None,
        description=_text(description) if description is not None else None,
        private=klass is not None and klass.strip().upper() in ("PRIVATE", "CONFIDENTIAL"),
        busy=transp is None or transp.strip().upper() != "TRANSPARENT",
        reminder_minutes=_reminder(component),
        attendees=_attendees(component),
        organizer=_address(organizer[1], _params(organizer[0])) if organizer else None,
        crm_id=_token(crm_id),
        crm_type=_token(crm_type),
        cancelled=status is not None and status.strip().upper() == "CANCELLED",
        recurrence_id=_moment(recurrence_id, zones)[0] if recurrence_id else None,
        last_modified=_last_modified(component),
        uid=_token(uid),
        floating=floating,
    )


def resource_uid(text: str) -> str | None:
    """The UID of a resource's first VEVENT, even when the rest of it is unreadable."""
    try:
        events = _scan(text).events
    except ValueError:
        match = re.search(r"^UID(?:;[^:\r\n]*)?:([^\r\n]+)", text, re.MULTILINE)
        return match.group(1).strip() if match else None
    for event in events:
        uid = event.value("UID")
        if uid:
            return _text(uid).strip()
    return None


# --- writing ---------------------------------------------------------------------

# Properties of a VEVENT that crmcal writes; everything else on an existing event
# belongs to someone else and is kept. CLASS and STATUS are partly kept (see below).
_OWNED = frozenset(
    {"UID", "DTSTAMP", "LAST-MODIFIED", "SEQUENCE", "SUMMARY", "DTSTART", "DTEND", "DURATION",
     "LOCATION", "DESCRIPTION", "CLASS", "TRANSP", "STATUS", "ATTENDEE", "ORGANIZER", "RRULE",
     "RDATE", "EXDATE", "RECURRENCE-ID", CRM_ID_PROPERTY, CRM_TYPE_PROPERTY}
)  # fmt: skip
# Calendar-level properties never copied from an existing resource (CalDAV
# forbids METHOD in stored resources; PRODID and VERSION are ours).
_CALENDAR_OWNED = frozenset({"PRODID", "VERSION", "METHOD"})

# RFC 5545 3.3.11: the characters a TEXT value escapes, all in one pass.
_TEXT_SPECIAL = re.compile(r"\r\n|[\\;,\n\r]")
_TEXT_ESCAPES = {"\\": "\\\\", ";": "\\;", ",": "\\,", "\n": "\\n", "\r\n": "\\n", "\r": "\\n"}


def _escape_text(value: str) -> str:
    return _TEXT_SPECIAL.sub(lambda m: _TEXT_ESCAPES[m.group(0)], value)


class _Text(vText):
    """A TEXT value escaped as RFC 5545 says, for every TEXT value crmcal writes or
    keeps: icalendar's own ``vText`` first turns a backslash followed by "N" into a
    line break (so "C:\\New" came back as two lines)."""

    __slots__ = ()

    def to_ical(self) -> bytes:
        return _escape_text(self).encode("utf-8")


def _text_value(value: str | None) -> _Text | None:
    return None if value is None else _Text(value)


def _correct_texts(calendar: icalendar.Calendar) -> None:
    """Every TEXT value read from a resource is written back with ``_Text``'s escaping,
    so that keeping a property crmcal does not own never changes what it says."""
    for component in calendar.walk():
        for name, value in list(component.items()):
            if isinstance(value, list):
                component[name] = [_corrected(v) for v in value]
            else:
                component[name] = _corrected(value)


class _Verbatim(vUnknown):
    """A property crmcal does not own, written back exactly as the resource had it.
    Parsed and written again by icalendar, some would say something else: a list of
    TEXT values icalendar takes for one (RESOURCES: "EASEL,PROJECTOR\\,BIG" named two
    things, and came back as one), a structured value escaped as text (REQUEST-STATUS)."""

    __slots__ = ()


def _keep_verbatim(text: str, events: list[icalendar.Event]) -> None:
    """The values of the properties of ``events`` (the VEVENTs icalendar read from
    ``text``) that crmcal does not own, as ``text`` spells them; their parameters
    stay as icalendar read them. Left as read where the two readings disagree."""
    try:
        raw_events = _scan(text).events
    except ValueError:
        return
    if len(raw_events) != len(events):
        return
    for event, raw in zip(events, raw_events, strict=True):
        for name, lines in raw.props.items():
            if name in _OWNED or name not in event:
                continue
            read = _as_list(event[name])
            if len(read) != len(lines):
                continue
            kept = [
                _Verbatim(value, params=getattr(prop, "params", None))
                for prop, (_, value) in zip(read, lines, strict=True)
            ]
            event[name] = kept if len(kept) > 1 else kept[0]


def _corrected(value: object) -> object:
    if type(value) is vText:  # not its subclasses, which have syntaxes of their own
        return _Text(value, params=value.params)
    if isinstance(value, vCategory):
        value.cats = [_Text(c, params=getattr(c, "params", None)) for c in value.cats]
    return value


@lru_cache(maxsize=256)
def _vtimezone(tzid: str, first_year: int, last_year: int) -> icalendar.Timezone | None:
    # Shared between calls: icalendar components are only read when serialising.
    try:
        return icalendar.Timezone.from_tzid(
            tzid, first_date=dt.date(first_year, 1, 1), last_date=dt.date(last_year, 1, 1)
        )
    except ValueError:
        return None


def _writing_zone(event: CalendarEvent) -> dt.tzinfo:
    """The zone DTSTART is written in: the event's IANA zone, else its start's, else UTC."""
    if event.timezone:
        named = _named_zone(event.timezone)
        if named is not None:
            return named[0]
    tzinfo = event.start.tzinfo if isinstance(event.start, dt.datetime) else None
    if isinstance(tzinfo, ZoneInfo):
        return tzinfo
    return dt.UTC


def _local(moment: dt.datetime | dt.date, zone: dt.tzinfo) -> dt.datetime:
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


def _day(moment: dt.datetime | dt.date) -> dt.date:
    return moment.date() if isinstance(moment, dt.datetime) else moment


def _mapped_alarm(component: icalendar.cal.Component) -> bool:
    """Whether an existing VALARM is the one ``reminder_minutes`` stands for."""
    if str(component.get("ACTION", "")).upper() != "DISPLAY":
        return False
    trigger = component.get("TRIGGER")
    if trigger is None:
        return False
    params = trigger.params
    if str(params.get("VALUE", "DURATION")).upper() != "DURATION":
        return False
    if str(params.get("RELATED", "START")).upper() != "START":
        return False
    offset = getattr(trigger, "dt", None)
    return isinstance(offset, dt.timedelta) and offset <= dt.timedelta(0)


# A whole VTIMEZONE block of a resource's text, folded lines and all.
_ZONE_BLOCK = re.compile(r"^BEGIN:VTIMEZONE[ \t]*\r?\n.*?^END:VTIMEZONE[ \t]*(?:\r?\n|\Z)",
                         re.MULTILINE | re.DOTALL | re.IGNORECASE)  # fmt: skip


def _crlf(block: str) -> str:
    """A text block with CRLF line ends, ending in one."""
    return block.replace("\r\n", "\n").replace("\n", "\r\n").rstrip("\r\n") + "\r\n"


# The properties whose local times a TZID places (a VTIMEZONE's own have none).
_ZONED = ("DTSTART", "DTEND", "DUE", "RECURRENCE-ID", "EXDATE", "RDATE")


def _own_zones(text: str, calendar: icalendar.Calendar) -> None:
    """Every local time of ``calendar`` (icalendar's reading of ``text``) placed in the
    zone ``text`` itself gives its TZID, as ``parse_event`` reads it. icalendar keeps,
    for the whole process, the first VTIMEZONE it read of each TZID no zone database
    knows ("Customized Time Zone"), and reads another resource's times of that TZID
    in that first zone, whatever the resource's own VTIMEZONE says: a move written
    over it would keep a TZID that now means another offset. A time whose TZID the
    resource does not explain is left without a zone."""
    try:
        zones: _Zones | None = _Zones(_scan(text), None)
    except ValueError:
        zones = None
    found: dict[str, dt.tzinfo | None] = {}
    for component in calendar.walk():
        for name in _ZONED:
            for prop in _as_list(component.get(name, [])):
                tzid = getattr(prop, "params", {}).get("TZID")
                if not tzid:
                    continue
                tzid = str(tzid)
                if tzid not in found:
                    try:
                        explained = zones.explained(tzid) if zones is not None else None
                    except ValueError:  # a VTIMEZONE crmcal refuses to expand
                        explained = None
                    found[tzid] = explained[0] if explained is not None else None
                values = prop.dts if isinstance(prop, vDDDLists) else [prop]
                for value in values:
                    moment = getattr(value, "dt", None)
                    if isinstance(moment, dt.datetime):
                        value.dt = moment.replace(tzinfo=found[tzid])


@dataclass
class _Previous:
    calendar: icalendar.Calendar
    master: icalendar.Event
    overrides: list[icalendar.Event]
    # Each VTIMEZONE read (by identity) -> its block as the resource spelt it.
    zone_texts: dict[int, str] = field(default_factory=dict)

    @classmethod
    def load(cls, text: str) -> _Previous | None:
        try:
            calendar = icalendar.Calendar.from_ical(text)
        except Exception:  # unreadable: write afresh rather than fail the update
            return None
        _correct_texts(calendar)
        events = [c for c in calendar.subcomponents if isinstance(c, icalendar.Event)]
        if not events:
            return None
        _keep_verbatim(text, events)
        _own_zones(text, calendar)
        masters = [e for e in events if "RECURRENCE-ID" not in e]
        master = masters[0] if masters else events[0]
        zones = [c for c in calendar.subcomponents if c.name == "VTIMEZONE"]
        blocks = _ZONE_BLOCK.findall(text)
        kept = (
            {id(zone): _crlf(block) for zone, block in zip(zones, blocks, strict=True)}
            if len(zones) == len(blocks)
            else {}
        )
        return cls(calendar, master, [e for e in events if e is not master], kept)

    def text(self) -> str:
        """The calendar as written, with every VTIMEZONE it read spelt as it was:
        written again by icalendar, a TZID such as Outlook's "(UTC+01:00) Amsterdam,
        Berlin, ..." came back as "Amsterdam\\, Berlin\\, ...", which its users'
        TZID parameters no longer name (Radicale then added a VTIMEZONE of its own),
        and rules came back in another order."""
        written = _ical_text(self.calendar)
        for zone in self.calendar.subcomponents:
            block = self.zone_texts.get(id(zone))
            if zone.name == "VTIMEZONE" and block is not None:
                written = written.replace(_ical_text(zone), block, 1)
        return written

    def sequence(self) -> int:
        try:
            return int(str(self.master.get("SEQUENCE", 0)))
        except ValueError:
            return 0


def _attendee_line(
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
    address.params["PARTSTAT"] = _PARTSTAT_OUT.get(attendee.status, "NEEDS-ACTION")
    if attendee.resource:
        address.params["CUTYPE"] = "RESOURCE"
    if not notify:
        # Scheduling servers (RFC 6638) send no invitation for a client-scheduled attendee.
        address.params["SCHEDULE-AGENT"] = "CLIENT"
    return address


def _organizer_line(
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


def _ical_text(component: icalendar.Component) -> str:
    data: bytes = component.to_ical()  # icalendar leaves to_ical unannotated
    return data.decode("utf-8")


def _as_list(value: object) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _description_spelt(value: object) -> list[str]:
    """The DESCRIPTION values ``value`` (a property, a list of them, or None) as written."""
    return [_escape_text(str(v)) for v in _as_list(value) if v is not None]


def _drop_stale_html(vevent: icalendar.Event, old_description: object) -> None:
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
        for value in _as_list(vevent["X-ALT-DESC"])
        if str(getattr(value, "params", {}).get("FMTTYPE", "")).strip().lower() != "text/html"
    ]
    vevent.pop("X-ALT-DESC", None)
    if kept:
        vevent["X-ALT-DESC"] = kept if len(kept) > 1 else kept[0]


def _write_times(
    vevent: icalendar.Event, event: CalendarEvent, zone: dt.tzinfo, *, floating: bool = False
) -> None:
    if event.all_day:
        first = _day(event.start)
        last = _day(event.end) if event.end is not None else first + _ONE_DAY
        vevent.add("DTSTART", first)
        # Written even though a date alone means one day: some servers (iCloud)
        # refuse events without an end.
        vevent.add("DTEND", last if last > first else first + _ONE_DAY)
        return
    start = _local(event.start, zone)
    end = _local(event.end, zone) if event.end is not None else None
    if floating:
        start = start.replace(tzinfo=None)
        end = end.replace(tzinfo=None) if end is not None else None
    vevent.add("DTSTART", start)
    if end is None or end <= start:
        # No end, or none to speak of: a second, which every server accepts and
        # reads back as no end (NO_END).
        end = start + NO_END
    vevent.add("DTEND", end)


def _write_moment(moment: dt.datetime | dt.date, event: CalendarEvent, zone: dt.tzinfo) -> dt.date:
    return _day(moment) if event.all_day else _local(moment, zone)


def _write_recurrence(vevent: icalendar.Event, event: CalendarEvent, zone: dt.tzinfo) -> None:
    _write_rule(vevent, event, zone)
    if event.recurrence_id is not None:
        vevent.add("RECURRENCE-ID", _write_moment(event.recurrence_id, event, zone))


def _write_rule(vevent: icalendar.Event, event: CalendarEvent, zone: dt.tzinfo) -> None:
    recurrence = event.recurrence
    if recurrence is not None:
        if recurrence.rrule:
            # Verbatim: re-encoding would reorder the rule's parts.
            vevent.add("RRULE", vInline(recurrence.rrule.strip()))
        if recurrence.rdates:
            vevent.add("RDATE", [_write_moment(m, event, zone) for m in recurrence.rdates])
        # A cancelled override is written as the EXDATE it is equal to.
        exdates = event.cancelled_moments()
        if exdates:
            vevent.add("EXDATE", [_write_moment(m, event, zone) for m in exdates])


def _component_key(component: icalendar.cal.Component) -> str | None:
    """``moment_key`` of an overriding component's RECURRENCE-ID."""
    moment = getattr(component.get("RECURRENCE-ID"), "dt", None)
    if isinstance(moment, dt.datetime) and moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment_key(moment) if isinstance(moment, (dt.date, dt.datetime)) else None


def _is_cancelled(component: icalendar.cal.Component) -> bool:
    return str(component.get("STATUS", "")).upper() == "CANCELLED"


def _kept_overrides(previous: _Previous, event: CalendarEvent) -> list[icalendar.Event]:
    """Overridden occurrences of the old series that still belong to the new one."""
    if event.recurrence is None or event.recurrence_id is not None:
        return []
    exdates = {_key(m) for m in event.cancelled_moments()}
    kept = []
    for override in previous.overrides:
        recurrence_id = getattr(override.get("RECURRENCE-ID"), "dt", None)
        back = recurrence_id is None or _key(recurrence_id) not in exdates
        if _is_cancelled(override) and back:
            continue  # the occurrence is back: drop its cancellation
        kept.append(override)
    return kept


def _cancellations(previous: _Previous, event: CalendarEvent) -> list[icalendar.Event]:
    """The old cancelled occurrences (STATUS:CANCELLED components) still left out."""
    return [o for o in _kept_overrides(previous, event) if _is_cancelled(o)]


def _build_vevent(
    event: CalendarEvent,
    uid: str,
    old: icalendar.Event | None,
    sequence: int,
    now: dt.datetime,
) -> icalendar.Event:
    """A VEVENT of ``event``'s own fields, keeping what ``old`` (the component it
    replaces) holds that crmcal does not own."""
    zone = _writing_zone(event)
    vevent = icalendar.Event()
    vevent.add("UID", uid)
    vevent.add("DTSTAMP", now)
    vevent.add("LAST-MODIFIED", now)
    vevent.add("SEQUENCE", sequence)
    if old is None:
        vevent.add("CREATED", now)
    if event.summary is not None:
        vevent.add("SUMMARY", _Text(event.summary))
    _write_times(vevent, event, zone)
    _write_rule(vevent, event, zone)
    if event.location is not None:
        vevent.add("LOCATION", _Text(event.location))
    if event.description is not None:
        vevent.add("DESCRIPTION", _Text(event.description))
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
    if event.crm_id:
        vevent.add(CRM_ID_PROPERTY, _Text(event.crm_id))
    if event.crm_type:
        vevent.add(CRM_TYPE_PROPERTY, _Text(event.crm_type))
    old_attendees = {}
    if old is not None:
        for line in _as_list(old.get("ATTENDEE", [])):
            email = str(line).split(":", 1)[-1].strip().lower()
            old_attendees[email] = line
    for attendee in event.attendees:
        vevent.add(
            "ATTENDEE",
            _attendee_line(attendee, old_attendees, event.notify_attendees),
            encode=False,
        )
    if event.attendees:
        organizer = _organizer_line(event.organizer, old, event.notify_attendees)
        if organizer is not None:
            vevent.add("ORGANIZER", organizer, encode=False)
    alarms: list[icalendar.cal.Component] = []
    if event.reminder_minutes is not None:
        alarm = icalendar.Alarm()
        alarm.add("ACTION", "DISPLAY")
        alarm.add("DESCRIPTION", _Text(event.summary or "Reminder"))
        alarm.add("TRIGGER", vInline(f"-PT{max(event.reminder_minutes, 0)}M"))
        alarms.append(alarm)
    if old is not None:
        for key, value in old.items():
            if key.upper() not in _OWNED and key.upper() not in vevent:
                vevent[key] = value
        _drop_stale_html(vevent, old.get("DESCRIPTION"))
        replaced = False
        for component in old.subcomponents:
            if not replaced and component.name == "VALARM" and _mapped_alarm(component):
                replaced = True  # stands for reminder_minutes, written above
                continue
            alarms.append(component)
    vevent.subcomponents.extend(alarms)
    return vevent


def _override_vevent(
    override: CalendarEvent,
    master: CalendarEvent,
    uid: str,
    old: icalendar.Event | None,
    sequence: int,
    now: dt.datetime,
) -> icalendar.Event:
    """The component of an occurrence changed on its own: its RECURRENCE-ID spelt as
    the master's DTSTART is (same zone, same kind of value), as clients match them."""
    assert override.recurrence_id is not None
    vevent = _build_vevent(replace(override, recurrence=None, recurrence_id=None), uid, old,
                           sequence, now)  # fmt: skip
    recurrence_id = _write_moment(override.recurrence_id, master, _writing_zone(master))
    vevent.add("RECURRENCE-ID", recurrence_id)
    return vevent


def _written_overrides(
    event: CalendarEvent,
    uid: str,
    before: _Previous | None,
    sequence: int,
    now: dt.datetime,
) -> list[icalendar.Event]:
    """The components of ``event``'s overrides, each built over the one it replaces."""
    if event.recurrence is None:
        return []
    old = {}
    if before is not None:
        old = {_component_key(c): c for c in before.overrides if not _is_cancelled(c)}
    left_out = {moment_key(m) for m in event.cancelled_moments()}
    return [
        _override_vevent(override, event, uid, old.get(key), sequence, now)
        for key, override in sorted(event.live_overrides().items())
        if key not in left_out
    ]


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
    before = _Previous.load(previous) if previous else None
    zone = _writing_zone(event)
    if sequence is None:
        sequence = before.sequence() + 1 if before else 0
    old = before.master if before else None
    vevent = _build_vevent(event, uid, old, sequence, now)
    if event.recurrence_id is not None:
        vevent.add("RECURRENCE-ID", _write_moment(event.recurrence_id, event, zone))
    overrides = _written_overrides(event, uid, before, sequence, now)
    return _ical_text(_calendar(event, vevent, before, zone, overrides))


def _calendar(
    event: CalendarEvent,
    vevent: icalendar.Event,
    before: _Previous | None,
    zone: dt.tzinfo,
    overrides: list[icalendar.Event],
) -> icalendar.Calendar:
    calendar = icalendar.Calendar()
    calendar.add("PRODID", PRODID)
    calendar.add("VERSION", "2.0")
    events = [vevent]
    if before is not None:
        for key, value in before.calendar.items():
            if key.upper() not in _CALENDAR_OWNED:
                calendar[key] = value
        events += _cancellations(before, event)
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
    year = _day(event.start).year
    last_year = year + (20 if event.recurrence is not None else 2)
    for tzid in sorted(used):
        definition = _vtimezone(tzid, year - 1, last_year)
        if definition is not None:
            timezones.append(definition)
    calendar.subcomponents.extend(timezones)
    calendar.subcomponents.extend(events)
    return calendar


# --- writing only what changed ------------------------------------------------------


def is_series(text: str) -> bool:
    """Whether a resource holds a recurring series (a rule, added dates or overrides)."""
    try:
        events = _scan(text).events
    except ValueError:
        return False
    return any(
        "RRULE" in e.props or "RDATE" in e.props or "RECURRENCE-ID" in e.props for e in events
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
    old_lines = _as_list(vevent.get("ATTENDEE", []))
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
        line = _attendee_line(attendee, by_address, event.notify_attendees)
        vevent.add("ATTENDEE", line, encode=False)
    if organizer is None and event.attendees:
        written = _organizer_line(event.organizer, None, event.notify_attendees)
        if written is not None:
            vevent.add("ORGANIZER", written, encode=False)


def _patch_reminder(vevent: icalendar.Event, event: CalendarEvent) -> None:
    alarms = list(vevent.subcomponents)
    mapped = next(
        (n for n, c in enumerate(alarms) if c.name == "VALARM" and _mapped_alarm(c)), None
    )
    if mapped is not None:
        del alarms[mapped]
    if event.reminder_minutes is not None:
        alarm = icalendar.Alarm()
        alarm.add("ACTION", "DISPLAY")
        alarm.add("DESCRIPTION", _Text(event.summary or "Reminder"))
        alarm.add("TRIGGER", vInline(f"-PT{max(event.reminder_minutes, 0)}M"))
        alarms.insert(mapped if mapped is not None else 0, alarm)
    vevent.subcomponents[:] = alarms


def _was_floating(vevent: icalendar.Event) -> bool:
    start = vevent.get("DTSTART")
    moment = getattr(start, "dt", None)
    params = getattr(start, "params", {})
    return isinstance(moment, dt.datetime) and moment.tzinfo is None and "TZID" not in params


def _same_zone_tzid(start: object, zone: dt.tzinfo, event: CalendarEvent) -> str | None:
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
    named = _named_zone(tzid)
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


def _respell_zone(vevent: icalendar.Event, tzid: str) -> None:
    """Name the zone of the DTSTART and DTEND just written ``tzid`` (see
    ``_same_zone_tzid``); a time written in UTC (the second of two equal wall-clock
    times) stays so."""
    for name in ("DTSTART", "DTEND"):
        prop = vevent.get(name)
        params = getattr(prop, "params", None)
        if params is not None and "TZID" in params:
            params["TZID"] = tzid


def patch_event(event: CalendarEvent, uid: str, previous: str, changed: frozenset[str]) -> str:
    """The resource ``previous`` with only the ``changed`` field groups (``model``'s
    ``FIELD_GROUPS``) rewritten from ``event``: everything else — other properties,
    their parameters, long descriptions, floating times, alarms, occurrences — stays
    as the server has it. With "overrides" the series' overridden occurrences become
    exactly ``event.overrides``, each patched the same way over the component it
    replaces. A resource this cannot read is written afresh."""
    before = _Previous.load(previous)
    if before is None:
        return serialize_event(event, uid, previous=previous)
    vevent, calendar = before.master, before.calendar
    zone = _writing_zone(event)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    sequence = before.sequence() + 1
    _patch_component(calendar, vevent, event, changed, zone)
    if ("recurrence" in changed or "overrides" in changed) and event.recurrence is not None:
        if "recurrence" in changed:
            for name in ("RRULE", "RDATE", "EXDATE"):
                vevent.pop(name, None)
            _write_rule(vevent, event, zone)
        if "overrides" in changed:
            kept = [*_cancellations(before, event),
                    *_patched_overrides(before, previous, event, uid, sequence, now)]  # fmt: skip
        else:
            kept = _kept_overrides(before, event)
        calendar.subcomponents[:] = [
            *(c for c in calendar.subcomponents if c.name != "VEVENT" or c is vevent),
            *kept,
        ]
        _ensure_zones(calendar, event)
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
    """Rewrite the ``changed`` groups of one VEVENT's own fields from ``event``."""
    if "summary" in changed:
        _set(vevent, "SUMMARY", _text_value(event.summary))
    if "when" in changed:
        floating = _was_floating(vevent) and not event.all_day
        spelt = None if event.all_day else _same_zone_tzid(vevent.get("DTSTART"), zone, event)
        for name in ("DTSTART", "DTEND", "DURATION"):
            vevent.pop(name, None)
        _write_times(vevent, event, zone, floating=floating)
        if spelt is not None:
            _respell_zone(vevent, spelt)
        if spelt is None or spelt == getattr(zone, "key", None):
            _ensure_zone(calendar, vevent, event, zone)
    if "location" in changed:
        _set(vevent, "LOCATION", _text_value(event.location))
    if "description" in changed:
        old_description = vevent.get("DESCRIPTION")
        _set(vevent, "DESCRIPTION", _text_value(event.description))
        _drop_stale_html(vevent, old_description)
    if "private" in changed:
        old_class = str(vevent.get("CLASS", "")).upper()
        if event.private:
            vevent.pop("CLASS", None)
            vevent.add("CLASS", "CONFIDENTIAL" if old_class == "CONFIDENTIAL" else "PRIVATE")
        elif old_class in ("PRIVATE", "CONFIDENTIAL"):
            vevent.pop("CLASS", None)
    if "busy" in changed:
        _set(vevent, "TRANSP", "OPAQUE" if event.busy else "TRANSPARENT")
    if "reminder" in changed:
        _patch_reminder(vevent, event)
    if "attendees" in changed:
        _patch_attendees(vevent, event)
    if "cancelled" in changed:
        if event.cancelled:
            _set(vevent, "STATUS", "CANCELLED")
        elif str(vevent.get("STATUS", "")).upper() == "CANCELLED":
            vevent.pop("STATUS", None)
    for name, value in ((CRM_ID_PROPERTY, event.crm_id), (CRM_TYPE_PROPERTY, event.crm_type)):
        if value and str(vevent.get(name, "")) != value:
            _set(vevent, name, _Text(value))


def _patched_overrides(
    before: _Previous,
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
    components = {_component_key(c): c for c in before.overrides if not _is_cancelled(c)}
    left_out = {moment_key(m) for m in event.cancelled_moments()}
    found = []
    for key, override in sorted(event.live_overrides().items()):
        if key in left_out:
            continue
        component, old = components.get(key), was.get(key)
        if component is None or old is None:
            found.append(_override_vevent(override, event, uid, component, sequence, now))
            continue
        changed = changed_fields(old, override) - {"recurrence", "overrides"}
        if changed:
            _patch_component(before.calendar, component, override, changed,
                             _writing_zone(override))  # fmt: skip
            _set(component, "DTSTAMP", now)
            _set(component, "LAST-MODIFIED", now)
            _set(component, "SEQUENCE", sequence)
        found.append(component)
    return found


def _ensure_zones(calendar: icalendar.Calendar, event: CalendarEvent) -> None:
    """A VTIMEZONE for every TZID the resource's events use and it does not define."""
    defined = {str(c.get("TZID", "")) for c in calendar.subcomponents if c.name == "VTIMEZONE"}
    used = calendar.get_used_tzids() - {"UTC"} - defined
    year = _day(event.start).year
    last_year = year + (20 if event.recurrence is not None else 2)
    for tzid in sorted(used):
        definition = _vtimezone(tzid, year - 1, last_year)
        if definition is not None:
            calendar.subcomponents.insert(0, definition)


def _ensure_zone(
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
    year = _day(event.start).year
    definition = _vtimezone(tzid, year - 1, year + 2)
    if definition is not None:
        calendar.subcomponents.insert(0, definition)
