"""Graph's times: ``dateTimeTimeZone`` values, time-zone names and timestamp formats.

Graph writes ``{"dateTime": "2026-12-01T09:00:00.0000000", "timeZone": "UTC"}``:
a wall-clock time with seven fractional digits and no offset, in the zone named
beside it. Zones may be given as Windows names ("W. Europe Standard Time") or
IANA names ("Europe/Berlin"); both are understood, and the name a client wrote is
the name it gets back. Timestamps (``createdDateTime`` ...) are UTC with seven
fractional digits and a ``Z``.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from icalendar.timezone.windows_to_olson import WINDOWS_TO_OLSON

from crmcal.emulators.microsoft.errors import GraphError, body_read

_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,7})?)?)?")
_WINDOWS = {name.lower(): iana for name, iana in WINDOWS_TO_OLSON.items()}
UTC_NAMES = frozenset({"utc", "etc/utc", "gmt", "etc/gmt", "coordinated universal time"})


def unsupported_zone(name: str) -> GraphError:
    return GraphError(
        400,
        "TimeZoneNotSupportedException",
        "A valid TimeZone value must be specified. "
        f"The following TimeZone value is not supported: '{name}'.",
    )


def zone(name: object) -> dt.tzinfo:
    """The zone a Windows or IANA name stands for (400 for any other name)."""
    if not isinstance(name, str) or not name.strip():
        raise unsupported_zone(str(name or ""))
    text = name.strip()
    if text.lower() in UTC_NAMES:
        return dt.UTC
    iana = _WINDOWS.get(text.lower(), text)
    try:
        return ZoneInfo(iana)
    except (ZoneInfoNotFoundError, ValueError):
        raise unsupported_zone(text) from None


def wall_clock(value: Any, field: str) -> tuple[dt.datetime, str]:
    """The wall-clock time and zone name of a written ``dateTimeTimeZone``."""
    if not isinstance(value, dict):
        raise body_read(f"Cannot read the value of '{field}' as a dateTimeTimeZone.")
    unknown = set(value) - {"dateTime", "timeZone", "@odata.type"}
    if unknown:
        raise body_read(
            f"The property '{sorted(unknown)[0]}' does not exist on type "
            "'microsoft.graph.dateTimeTimeZone'. Make sure to only use property names that "
            "are defined by the type or mark the type as open type."
        )
    text = value.get("dateTime")
    if not isinstance(text, str) or not _DATE_TIME.fullmatch(text):
        # An offset ("Z", "+01:00") is refused too: the zone is the other property.
        raise GraphError(
            400,
            "ErrorInvalidRequest",
            f"Cannot convert the literal '{text}' to the expected type 'Edm.DateTime'.",
        )
    name = value.get("timeZone")
    zone(name)
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise GraphError(
            400,
            "ErrorInvalidRequest",
            f"Cannot convert the literal '{text}' to the expected type 'Edm.DateTime'.",
        ) from None
    return moment, str(name).strip()


def instant(moment: dt.datetime, zone_name: str) -> dt.datetime:
    """The UTC instant of a wall-clock time in the named zone."""
    return moment.replace(tzinfo=zone(zone_name)).astimezone(dt.UTC)


def local(moment: dt.datetime, zone_name: str) -> dt.datetime:
    """An instant as a naive wall-clock time in the named zone."""
    return moment.astimezone(zone(zone_name)).replace(tzinfo=None)


def graph_date_time(moment: dt.datetime) -> str:
    """A naive wall-clock time in Graph's seven-digit form."""
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond:06d}0"


def timestamp(moment: dt.datetime) -> str:
    """A UTC timestamp as Graph writes ``createdDateTime``: seven digits and ``Z``."""
    return graph_date_time(moment.astimezone(dt.UTC).replace(tzinfo=None)) + "Z"


def parameter(value: str | None, name: str) -> dt.datetime:
    """A ``startDateTime``/``endDateTime`` query parameter (no offset: UTC)."""
    text = (value or "").strip()
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise GraphError(
            400, "ErrorInvalidParameter", f"The value '{text}' of parameter '{name}' is invalid."
        ) from None
    return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed.astimezone(dt.UTC)
