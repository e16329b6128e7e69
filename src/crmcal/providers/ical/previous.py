"""The resource an update replaces, read with icalendar so that what crmcal does
not own is written back as it was: values kept verbatim, TEXT escaped correctly,
local times in the resource's own zones, VTIMEZONE blocks spelt as they were."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any

import icalendar
from icalendar.parser import Parameters
from icalendar.prop import vCategory, vDDDLists, vText, vUnknown

from crmcal.providers.ical.mapping import OWNED_PROPERTIES
from crmcal.providers.ical.scanner import parse_parameters, scan_calendar
from crmcal.providers.ical.text import EscapedText
from crmcal.providers.ical.zones import ResourceZones


def _correct_texts(calendar: icalendar.Calendar) -> None:
    """Every TEXT value read from a resource is written back with ``EscapedText``'s escaping,
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
    stay as icalendar read them, but for the blanks it trims (``_untrimmed``). Left as
    read where the two readings disagree."""
    try:
        raw_events = scan_calendar(text).events
    except ValueError:
        return
    if len(raw_events) != len(events):
        return
    for event, raw in zip(events, raw_events, strict=True):
        for name, lines in raw.props.items():
            if name not in event:
                continue
            read = as_list(event[name])
            if len(read) != len(lines):
                continue
            for prop, (params, _) in zip(read, lines, strict=True):
                _untrimmed(getattr(prop, "params", None), params)
            if name in OWNED_PROPERTIES:
                continue
            kept = [
                _Verbatim(value, params=getattr(prop, "params", None))
                for prop, (_, value) in zip(read, lines, strict=True)
            ]
            event[name] = kept if len(kept) > 1 else kept[0]


def _untrimmed(read: Parameters | None, raw: str) -> None:
    """A parameter value as the resource spells it where icalendar's reading trimmed
    blanks from its ends (a CN of "\tAnn"): written back trimmed, a property crmcal
    left alone (another attendee's name) would change with every update."""
    if not read or not raw:
        return
    for key, value in parse_parameters(raw).items():
        held = read.get(key)
        if isinstance(held, str) and held != value and held == value.strip():
            read[key] = value


def _corrected(value: object) -> object:
    if type(value) is vText:  # not its subclasses, which have syntaxes of their own
        return EscapedText(value, params=value.params)
    if isinstance(value, vCategory):
        value.cats = [EscapedText(c, params=getattr(c, "params", None)) for c in value.cats]
    return value


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
        zones: ResourceZones | None = ResourceZones(scan_calendar(text), None)
    except ValueError:
        zones = None
    found: dict[str, dt.tzinfo | None] = {}
    for component in calendar.walk():
        for name in _ZONED:
            for prop in as_list(component.get(name, [])):
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
class PreviousResource:
    calendar: icalendar.Calendar
    master: icalendar.Event
    overrides: list[icalendar.Event]
    # Each VTIMEZONE read (by identity) -> its block as the resource spelt it.
    zone_texts: dict[int, str] = field(default_factory=dict)

    @classmethod
    def load(cls, text: str) -> PreviousResource | None:
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
        written = ical_text(self.calendar)
        for zone in self.calendar.subcomponents:
            block = self.zone_texts.get(id(zone))
            if zone.name == "VTIMEZONE" and block is not None:
                written = written.replace(ical_text(zone), block, 1)
        return written

    def sequence(self) -> int:
        try:
            return int(str(self.master.get("SEQUENCE", 0)))
        except ValueError:
            return 0


def ical_text(component: icalendar.Component) -> str:
    data: bytes = component.to_ical()  # icalendar leaves to_ical unannotated
    return data.decode("utf-8")


def as_list(value: object) -> list[Any]:
    return value if isinstance(value, list) else [value]
