"""Recurring events: Graph's ``patternedRecurrence``, checked and expanded.

A series is one stored event (``type: seriesMaster``) with a ``recurrence``
(``pattern`` + ``range``); its occurrences are computed with ``dateutil.rrule``
in the series' time zone, at the master's wall-clock start time, so they keep
their local time across daylight-saving changes. Endless series (``noEnd``)
are expanded lazily and never past ``MAX_OCCURRENCES``.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator
from typing import Any, Literal

from dateutil import rrule

from crmcal.emulators.microsoft import times
from crmcal.emulators.microsoft.errors import body_read, invalid_property

PATTERNS = (
    "daily",
    "weekly",
    "absoluteMonthly",
    "relativeMonthly",
    "absoluteYearly",
    "relativeYearly",
)
RANGES = ("endDate", "noEnd", "numbered")
DAYS = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")
INDEXES = {"first": 1, "second": 2, "third": 3, "fourth": 4, "last": -1}
_WEEKDAYS = {
    "sunday": rrule.SU,
    "monday": rrule.MO,
    "tuesday": rrule.TU,
    "wednesday": rrule.WE,
    "thursday": rrule.TH,
    "friday": rrule.FR,
    "saturday": rrule.SA,
}
_FREQUENCIES: dict[str, Literal[0, 1, 2, 3]] = {
    "daily": rrule.DAILY,
    "weekly": rrule.WEEKLY,
    "absoluteMonthly": rrule.MONTHLY,
    "relativeMonthly": rrule.MONTHLY,
    "absoluteYearly": rrule.YEARLY,
    "relativeYearly": rrule.YEARLY,
}
# Outlook itself stops at 999 occurrences for a numbered series.
MAX_OCCURRENCES = 5000
NULL_DATE = "0001-01-01"


def _enum(value: Any, allowed: tuple[str, ...] | dict[str, Any], field: str) -> str:
    for name in allowed:
        if isinstance(value, str) and value.lower() == name.lower():
            return name
    raise body_read(f"Requested value '{value}' was not found. ({field})")


def _int(value: Any, field: str, default: int = 0) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise body_read(
            f"Cannot convert the literal '{value}' to the expected type 'Edm.Int32'. ({field})"
        )
    return value


def _date(value: Any, field: str) -> str:
    try:
        return dt.date.fromisoformat(str(value)).isoformat()
    except ValueError:
        raise body_read(
            f"Cannot convert the literal '{value}' to the expected type 'Edm.Date'. ({field})"
        ) from None


def checked(value: Any) -> dict[str, Any]:
    """A written ``patternedRecurrence`` in the full form Graph answers with."""
    pattern, span = _parts(value)
    out_pattern = _pattern(pattern)
    out_range = _range(span)
    problems = [*_pattern_problems(out_pattern), *_range_problems(span, out_range)]
    if problems:
        raise invalid_property(f"At least one property failed validation: {problems[0]}.")
    return {"pattern": out_pattern, "range": out_range}


def _parts(value: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``pattern`` and ``range`` objects of a written recurrence."""
    if not isinstance(value, dict) or set(value) - {"pattern", "range", "@odata.type"}:
        raise body_read("recurrence: a patternedRecurrence has a pattern and a range.")
    pattern, span = value.get("pattern"), value.get("range")
    if not isinstance(pattern, dict) or not isinstance(span, dict):
        raise invalid_property(
            "At least one property failed validation: recurrence needs a pattern and a range."
        )
    return pattern, span


_WITH_DAYS = ("weekly", "relativeMonthly", "relativeYearly")


def _pattern(pattern: dict[str, Any]) -> dict[str, Any]:
    """A written ``recurrencePattern`` with every field typed and defaulted."""
    kind = _enum(pattern.get("type"), PATTERNS, "pattern.type")
    days = pattern.get("daysOfWeek") or []
    if not isinstance(days, list):
        raise body_read("pattern.daysOfWeek must be an array.")
    out: dict[str, Any] = {
        "type": kind,
        "interval": _int(pattern.get("interval"), "pattern.interval", 1),
        "month": _int(pattern.get("month"), "pattern.month"),
        "dayOfMonth": _int(pattern.get("dayOfMonth"), "pattern.dayOfMonth"),
        "firstDayOfWeek": _enum(
            pattern.get("firstDayOfWeek") or "sunday", DAYS, "pattern.firstDayOfWeek"
        ),
        "index": _enum(pattern.get("index") or "first", INDEXES, "pattern.index"),
    }
    if days or kind in _WITH_DAYS:
        out["daysOfWeek"] = [_enum(d, DAYS, "pattern.daysOfWeek") for d in days]
    return out


def _pattern_problems(pattern: dict[str, Any]) -> list[str]:
    """What a typed pattern lacks for its kind, most important first."""
    kind = pattern["type"]
    problems = []
    if pattern["interval"] < 1:
        problems.append("interval must be at least 1")
    if kind in _WITH_DAYS and not pattern["daysOfWeek"]:
        problems.append(f"a {kind} pattern needs daysOfWeek")
    if kind in ("absoluteMonthly", "absoluteYearly") and not 1 <= pattern["dayOfMonth"] <= 31:
        problems.append(f"an {kind} pattern needs dayOfMonth")
    if kind in ("absoluteYearly", "relativeYearly") and not 1 <= pattern["month"] <= 12:
        problems.append(f"a {kind} pattern needs month")
    return problems


def _range(span: dict[str, Any]) -> dict[str, Any]:
    """A written ``recurrenceRange`` with every field typed and defaulted."""
    range_kind = _enum(span.get("type"), RANGES, "range.type")
    start = span.get("startDate")
    out: dict[str, Any] = {
        "type": range_kind,
        "startDate": NULL_DATE if start is None else _date(start, "range.startDate"),
        "endDate": NULL_DATE,
        "recurrenceTimeZone": span.get("recurrenceTimeZone") or "",
        "numberOfOccurrences": _int(span.get("numberOfOccurrences"), "range.numberOfOccurrences"),
    }
    if out["recurrenceTimeZone"]:
        times.zone(out["recurrenceTimeZone"])
    if range_kind == "endDate" and span.get("endDate") is not None:
        out["endDate"] = _date(span["endDate"], "range.endDate")
    return out


def _range_problems(span: dict[str, Any], out: dict[str, Any]) -> list[str]:
    """What a typed range lacks for its kind, most important first."""
    problems = []
    if span.get("startDate") is None:
        problems.append("range.startDate is required")
    if out["type"] == "endDate":
        if span.get("endDate") is None:
            problems.append("an endDate range needs endDate")
        elif out["endDate"] < out["startDate"]:
            problems.append("range.endDate is before range.startDate")
    if out["type"] == "numbered" and out["numberOfOccurrences"] < 1:
        problems.append("a numbered range needs numberOfOccurrences above 0")
    return problems


def _rule(recurrence: dict[str, Any], dtstart: dt.datetime) -> rrule.rrule:
    pattern, span = recurrence["pattern"], recurrence["range"]
    kind = pattern["type"]
    options: dict[str, Any] = {
        "interval": pattern["interval"],
        "wkst": _WEEKDAYS[pattern["firstDayOfWeek"]],
    }
    days = [_WEEKDAYS[d] for d in pattern.get("daysOfWeek") or []]
    if kind in ("daily",) and days:
        options["byweekday"] = days
    if kind == "weekly":
        options["byweekday"] = days
    if kind in ("absoluteMonthly", "absoluteYearly"):
        options["bymonthday"] = pattern["dayOfMonth"]
    if kind in ("relativeMonthly", "relativeYearly"):
        options["byweekday"] = days
        options["bysetpos"] = INDEXES[pattern["index"]]
    if kind in ("absoluteYearly", "relativeYearly"):
        options["bymonth"] = pattern["month"]
    if span["type"] == "numbered":
        options["count"] = span["numberOfOccurrences"]
    elif span["type"] == "endDate":
        end = dt.date.fromisoformat(span["endDate"])
        options["until"] = dt.datetime.combine(end, dt.time(23, 59, 59))
    return rrule.rrule(_FREQUENCIES[kind], dtstart=dtstart, **options)


def series_zone(master: dict[str, Any]) -> str:
    return master["recurrence"]["range"].get("recurrenceTimeZone") or master["start"]["timeZone"]


def originals(master: dict[str, Any]) -> Iterator[dt.datetime]:
    """The original starts (UTC instants) of a series' occurrences, in order."""
    zone = series_zone(master)
    start = dt.datetime.fromisoformat(master["start"]["dateTime"])
    wall = times.local(times.instant(start, master["start"]["timeZone"]), zone)
    first_day = dt.date.fromisoformat(master["recurrence"]["range"]["startDate"])
    dtstart = dt.datetime.combine(first_day, wall.time())
    for moment in itertools.islice(_rule(master["recurrence"], dtstart), MAX_OCCURRENCES):
        yield times.instant(moment, zone)


def stamp(original: dt.datetime) -> str:
    return original.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def from_stamp(text: str) -> dt.datetime | None:
    try:
        return dt.datetime.strptime(text, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        return None


def has_original(master: dict[str, Any], original: dt.datetime) -> bool:
    for moment in originals(master):
        if moment == original:
            return True
        if moment > original:
            return False
    return False


def occurrence_uid(master_uid: str, original: dt.datetime, zone: str) -> str:
    """Outlook's per-occurrence global object id: the series' with the instance date."""
    day = times.local(original, zone).date()
    return f"{master_uid[:32]}{day.year:04X}{day.month:02X}{day.day:02X}{master_uid[40:]}"
