"""Reading's first step: a VCALENDAR's text split into its VEVENTs (with their
VALARMs) and VTIMEZONEs as raw content lines, without building icalendar objects,
plus the decoding of parameters, addresses and DATE, DATE-TIME and DURATION values.

Every input is hostile: malformed lines, unclosed components and bad values raise
ValueError with a short reason, and each pass over the text is linear.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from urllib.parse import unquote

from crmcal.providers.ical.text import unescape_text

# A whole content line, used only when a parameter value is quoted (a quoted
# value may contain ':' and ';', so the first ':' is not necessarily the end).
_QUOTED_LINE = re.compile(
    r'([A-Za-z0-9-]+)((?:;[A-Za-z0-9-]+=(?:"[^"]*"|[^";:,]*)(?:,(?:"[^"]*"|[^";:,]*))*)*):(.*)',
    re.DOTALL,
)
# A content line whose parameters hold no quote (what the first ':' ends).
_PLAIN_LINE = re.compile(r'([A-Za-z0-9-]+)((?:;[^":]*)?):(.*)', re.DOTALL)
_PARAM = re.compile(r';([A-Za-z0-9-]+)=((?:"[^"]*"|[^";:,]*)(?:,(?:"[^"]*"|[^";:,]*))*)')
# The lines that open and close VTIMEZONE blocks, found in one linear pass.
_VTIMEZONE_EDGE = re.compile(r"^(BEGIN|END):VTIMEZONE[ \t]*$\n?", re.MULTILINE | re.I)
_TZID = re.compile(r"TZID[;:]", re.I)


_CARET = re.compile(r"\^([n^'])")
_DATE_TIME = re.compile(r"(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})(Z?)")
_DURATION = re.compile(r"([+-]?)P(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?")


# (raw parameters, e.g. ";TZID=Europe/Berlin" or "", raw value)
RawProperty = tuple[str, str]


@dataclass(slots=True)
class RawComponent:
    props: dict[str, list[RawProperty]] = field(default_factory=dict)
    alarms: list[RawComponent] = field(default_factory=list)

    def first(self, name: str) -> RawProperty | None:
        found = self.props.get(name)
        return found[0] if found else None

    def value(self, name: str) -> str | None:
        found = self.props.get(name)
        return found[0][1] if found else None


@dataclass(slots=True)
class RawCalendar:
    events: list[RawComponent]
    # TZID -> the VTIMEZONE's unfolded lines, read only for zones no name resolves.
    timezones: dict[str, list[str]]
    calendar_zone: str | None  # X-WR-TIMEZONE, the zone of floating times when given
    # The kinds of the other calendar components beside the events (a VTODO ...).
    others: frozenset[str] = frozenset()


# The calendar components of RFC 5545 (3.6), 6321 and 7953 that are no event: a
# resource holds components of one kind (RFC 4791 4.1), and one that holds an event
# beside one of these is none crmcal may write or delete.
OTHER_COMPONENTS = frozenset({"VTODO", "VJOURNAL", "VFREEBUSY", "VAVAILABILITY"})


def _split(line: str, number: int) -> tuple[str, str, str]:
    """``NAME;PARAMS:VALUE`` -> (upper-case name, raw params, value)."""
    # Most lines: no quote before the first ':', where the parameters end.
    match = _PLAIN_LINE.match(line)
    if match is None:
        colon = line.find(":")
        if colon < 0 or line.find('"', 0, colon) >= 0:
            match = _QUOTED_LINE.match(line)
    if match is None:
        raise ValueError(f"line {number} is not an iCalendar content line")
    name, params, value = match.groups()
    return name.upper(), params, value


def scan_calendar(text: str) -> RawCalendar:
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
    scanner = _Scanner(timezones)
    for number, line in enumerate(text.split("\n"), 1):
        if not line or line.isspace():
            continue
        name, params, value = _split(line, number)
        if name == "BEGIN":
            scanner.begin(value.strip().upper(), line, number)
        elif name == "END":
            scanner.end(value.strip().upper(), line, number)
        elif (target := scanner.target) is not None:
            # Most lines: a property of the event or alarm open, kept without a call.
            target.props.setdefault(name, []).append((params, value))
        else:
            scanner.other(name, value, line, number)
    return scanner.finished()


class _Scanner:
    """The components open at a line of a VCALENDAR, and what it held so far: its
    VEVENTs (with their VALARMs), the VTIMEZONEs the cut left to the line parser, and
    its X-WR-TIMEZONE. Components of other kinds, and those inside them, are passed
    over."""

    __slots__ = ("alarm", "calendar_zone", "event", "events", "others", "stack", "target",
                 "timezones", "tz_lines", "tzid")  # fmt: skip

    def __init__(self, timezones: dict[str, list[str]]) -> None:
        self.stack: list[str] = []
        self.events: list[RawComponent] = []
        self.others: set[str] = set()
        self.timezones = timezones
        self.calendar_zone: str | None = None
        self.event: RawComponent | None = None
        self.alarm: RawComponent | None = None
        # The component the next property line belongs to (the event or alarm open,
        # if any), kept up to date by ``begin`` and ``end``.
        self.target: RawComponent | None = None
        # The lines of a VTIMEZONE being read (every line up to its END is its own).
        self.tz_lines: list[str] | None = None
        self.tzid = ""

    def begin(self, kind: str, line: str, number: int) -> None:
        """A ``BEGIN:kind`` line."""
        self.stack.append(kind)
        depth = len(self.stack)
        if depth == 1 and kind != "VCALENDAR":
            raise ValueError(f"line {number}: {kind} outside VCALENDAR")
        if self.tz_lines is not None:
            self.tz_lines.append(line)
        elif depth == 2 and kind == "VEVENT":
            self.event = RawComponent()
        elif depth == 2 and kind == "VTIMEZONE":
            self.tz_lines, self.tzid = [line], ""
        elif depth == 2 and kind in OTHER_COMPONENTS:
            self.others.add(kind)
        elif depth == 3 and kind == "VALARM" and self.event is not None:
            self.alarm = RawComponent()
        self._retarget()

    def end(self, kind: str, line: str, number: int) -> None:
        """An ``END:kind`` line."""
        stack = self.stack
        if not stack or stack[-1] != kind:
            raise ValueError(f"line {number}: END:{kind} closes nothing open")
        depth = len(stack)
        stack.pop()
        if self.tz_lines is not None:
            self.tz_lines.append(line)
            if depth == 2:
                self.timezones[self.tzid] = self.tz_lines
                self.tz_lines = None
        elif depth == 2 and self.event is not None:
            self.events.append(self.event)
            self.event = None
        elif depth == 3 and self.alarm is not None and self.event is not None:
            self.event.alarms.append(self.alarm)
            self.alarm = None
        self._retarget()

    def _retarget(self) -> None:
        depth = len(self.stack)
        if self.tz_lines is not None:
            self.target = None
        elif depth == 2:
            self.target = self.event
        elif depth == 3:
            self.target = self.alarm
        else:
            self.target = None

    def other(self, name: str, value: str, line: str, number: int) -> None:
        """A property line outside any event or alarm open."""
        depth = len(self.stack)
        if depth == 0:
            raise ValueError(f"line {number} is outside VCALENDAR")
        if self.tz_lines is not None:
            self.tz_lines.append(line)
            if depth == 2 and name == "TZID":
                self.tzid = unescape_text(value.strip())
        elif depth == 1 and name == "X-WR-TIMEZONE":
            self.calendar_zone = value.strip()

    def finished(self) -> RawCalendar:
        if self.stack:
            raise ValueError(f"BEGIN:{self.stack[-1]} is never closed")
        return RawCalendar(self.events, self.timezones, self.calendar_zone, frozenset(self.others))


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
        timezones[unescape_text(tzid.strip())] = lines
        kept.append(text[position : opened.start()])
        position = edge.end()
        opened = None
    kept.append(text[position:])
    return "".join(kept)


_NO_PARAMETERS: Mapping[str, str] = MappingProxyType({})
# Parameter strings this long or shorter are read once a process: a calendar repeats
# them (";TZID=Europe/Berlin" on every DTSTART, the same attendees' CN and PARTSTAT).
CACHED_PARAMETERS_LENGTH = 160


def parse_parameters(raw: str) -> Mapping[str, str]:
    """A property's parameters by upper-case name (read-only: the same mapping may be
    answered for every line that spells them alike)."""
    if not raw:
        return _NO_PARAMETERS
    if len(raw) > CACHED_PARAMETERS_LENGTH:
        return _parameters(raw)
    return _cached_parameters(raw)


@functools.lru_cache(maxsize=1024)
def _cached_parameters(raw: str) -> Mapping[str, str]:
    return MappingProxyType(_parameters(raw))


def _parameters(raw: str) -> dict[str, str]:
    return {m.group(1).upper(): _param_value(m.group(2)) for m in _PARAM.finditer(raw)}


def _param_value(value: str) -> str:
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        value = value[1:-1]
    if "^" in value:  # RFC 6868 escapes
        value = _CARET.sub(lambda m: {"n": "\n", "^": "^", "'": '"'}[m.group(1)], value)
    return value


def text_token(value: str | None) -> str | None:
    """An identifier-like TEXT value (UID, CRM id); blank counts as absent."""
    if value is None:
        return None
    return unescape_text(value).strip() or None


def email_address(value: str, params: Mapping[str, str]) -> str | None:
    """The e-mail address of a CAL-ADDRESS (``mailto:``), or its EMAIL parameter."""
    value = value.strip()
    if value[:7].lower() == "mailto:":
        address = value[7:].strip()
        return unquote(address) if "%" in address else address or None
    return params.get("EMAIL") or None


def parse_date(value: str) -> dt.date:
    if len(value) != 8 or not value.isdigit():
        raise ValueError(f"bad DATE value {value[:40]!r}")
    try:
        return dt.date(int(value[:4]), int(value[4:6]), int(value[6:]))
    except ValueError:
        raise ValueError(f"bad DATE value {value!r}") from None


def parse_date_time(value: str) -> tuple[dt.datetime, bool]:
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


def parse_duration(value: str) -> tuple[int, int]:
    """An RFC 5545 duration as (nominal days, exact seconds), both signed."""
    match = _DURATION.fullmatch(value.strip())
    if match is None or not any(match.groups()[1:]) or value.strip().endswith("T"):
        raise ValueError(f"bad DURATION value {value[:40]!r}")
    sign, weeks, days, hours, minutes, seconds = match.groups()
    factor = -1 if sign == "-" else 1
    total_days = int(weeks or 0) * 7 + int(days or 0)
    total_seconds = int(hours or 0) * 3600 + int(minutes or 0) * 60 + int(seconds or 0)
    return factor * total_days, factor * total_seconds
