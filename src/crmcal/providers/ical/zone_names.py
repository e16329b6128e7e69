"""What a TZID names, resolved once per process: IANA keys in any case, Windows
zone names, vendor-prefixed keys, Outlook's display names ("(UTC+01:00) Amsterdam,
Berlin, ...") and fixed offsets spelt as names ("UTC+01:00")."""

from __future__ import annotations

import datetime as dt
import re
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from icalendar.timezone.windows_to_olson import WINDOWS_TO_OLSON

_UTC_NAMES = frozenset(
    {"UTC", "Z", "GMT", "UT", "ZULU", "UNIVERSAL", "GREENWICH", "GMT0", "GMT+0", "GMT-0",
     "ETC/UTC", "ETC/GMT", "ETC/UCT", "UCT", "ETC/ZULU", "ETC/UNIVERSAL", "ETC/GREENWICH",
     "ETC/GMT0", "ETC/GMT+0", "ETC/GMT-0"}
)  # fmt: skip


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
def named_zone(tzid: str) -> tuple[dt.tzinfo, str] | None:
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
    named = named_zone(tzid)
    return named[1] if named else None


# A fixed offset spelled as a TZID: "UTC+01:00" (python's caldav library), "GMT+0100",
# "UTC-5", "(UTC+05:30) Chennai, Kolkata" (Outlook's display names) ...
_OFFSET_TZID = re.compile(
    r"\(?\s*(?:UTC|GMT|UT)\s*([+-])\s*(\d{1,2})(?::?(\d{2}))?\s*(?:\)|$|\s)", re.I
)


@lru_cache(maxsize=256)
def offset_zone(tzid: str) -> dt.tzinfo | None:
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
def display_zone(tzid: str) -> tuple[dt.tzinfo, str] | None:
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
        named = named_zone(key)
        if named is not None and _standard_offset(named[0]) == offset:
            return named
    return None
