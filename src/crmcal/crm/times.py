"""Parsing and normalising the times of an activity: zones, all-day dates, RRULEs."""

from __future__ import annotations

import datetime as dt
import functools
import re
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dateutil.rrule import rrule, rrulestr

from crmcal.crm.errors import Invalid

# Keep arithmetic away from the edges of datetime's range, where converting
# between zones overflows.
MIN_YEAR = 1900
MAX_YEAR = 2199

_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def zone(name: str) -> ZoneInfo:
    """The IANA time zone called ``name``, or ``Invalid``."""
    if not name or len(name) > 64 or name.startswith("/") or ".." in name:
        raise Invalid(f"unknown time zone {name!r}: use an IANA name such as 'Europe/Berlin'")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        # OSError: a name that is a directory of the zone database, such as "Europe".
        raise Invalid(
            f"unknown time zone {name!r}: use an IANA name such as 'Europe/Berlin'"
        ) from None


def _check_year(field: str, year: int) -> None:
    if not MIN_YEAR <= year <= MAX_YEAR:
        raise Invalid(f"{field}: year must be between {MIN_YEAR} and {MAX_YEAR}")


def is_date(value: str) -> bool:
    return bool(_DATE_RE.match(value))


def parse_date(field: str, value: str, tz: ZoneInfo | None = None, *, end: bool = False) -> dt.date:
    """A calendar date written ``YYYY-MM-DD``; with ``tz``, a date-time counts as its day
    there (an all-day activity given a time), and as an ``end`` the day after unless it
    is midnight: the exclusive end of the days it covers."""
    if tz is not None and len(value) > 10 and _DATE_RE.match(value[:10]):
        local = parse_datetime(field, value, tz).astimezone(tz)
        day = local.date()
        if end and local.time() != dt.time():
            day += dt.timedelta(days=1)
        if not MIN_YEAR <= day.year <= MAX_YEAR:
            raise Invalid(f"{field}: year must be between {MIN_YEAR} and {MAX_YEAR}")
        return day
    if not _DATE_RE.match(value):
        raise Invalid(f"{field}: {value!r} is not a date (YYYY-MM-DD)")
    try:
        parsed = dt.date.fromisoformat(value)
    except ValueError:
        raise Invalid(f"{field}: {value!r} is not a valid date") from None
    _check_year(field, parsed.year)
    return parsed


def parse_datetime(field: str, value: str, tz: ZoneInfo) -> dt.datetime:
    """An ISO 8601 date-time; one without an offset is read in ``tz``, a date is its
    midnight there (the instant an all-day end of that date stands for). Returns UTC."""
    if _DATE_RE.match(value):
        return midnight_utc(parse_date(field, value), tz)
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        raise Invalid(
            f"{field}: {value!r} is not an ISO 8601 date-time such as 2026-12-01T10:00:00+01:00"
        ) from None
    _check_year(field, parsed.year)
    if parsed.tzinfo is None:
        check_exists(field, parsed, tz)
        parsed = parsed.replace(tzinfo=tz)
    return parsed.astimezone(dt.UTC)


def check_exists(field: str, local: dt.datetime, tz: ZoneInfo) -> None:
    """Refuse a wall-clock time the zone skips (the hour the clocks jump forward):
    it names no moment, and guessing one could make a zero-length activity."""
    aware = local.replace(tzinfo=tz)
    if aware.astimezone(dt.UTC).astimezone(tz).replace(tzinfo=None) == local:
        return
    # Where the gap starts: the first instant with the new offset, between the
    # two readings of the missing time (zones change offsets on whole minutes).
    early = aware.replace(fold=1).astimezone(dt.UTC)
    late = aware.replace(fold=0).astimezone(dt.UTC)
    early, late = min(early, late), max(early, late)
    offset = early.astimezone(tz).utcoffset()
    change = early
    while change < late and change.astimezone(tz).utcoffset() == offset:
        change += dt.timedelta(minutes=1)
    gap_start = (change.astimezone(tz) - (late - early)).replace(tzinfo=None)
    gap_end = change.astimezone(tz).replace(tzinfo=None)
    raise Invalid(
        f"{field}: {local.isoformat(timespec='minutes')} does not exist in {tz.key}: "
        f"the clocks jump from {gap_start:%H:%M} to {gap_end:%H:%M} on {local:%Y-%m-%d} "
        "(daylight saving time); give a time outside that gap"
    )


def parse_instant(field: str, value: str, tz: ZoneInfo) -> dt.datetime:
    """A date or date-time as a UTC instant (a date is its midnight in ``tz``)."""
    return parse_datetime(field, value, tz)


def midnight_utc(day: dt.date, tz: ZoneInfo) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=tz).astimezone(dt.UTC)


def format_instant(instant: dt.datetime, tz: ZoneInfo) -> str:
    """RFC 3339 in the activity's own zone, e.g. ``2026-12-01T10:00:00+01:00``."""
    return instant.astimezone(tz).isoformat()


_RRULE_PARTS = {
    "FREQ", "UNTIL", "COUNT", "INTERVAL", "BYSECOND", "BYMINUTE", "BYHOUR", "BYDAY",
    "BYMONTHDAY", "BYYEARDAY", "BYWEEKNO", "BYMONTH", "BYSETPOS", "WKST",
}  # fmt: skip
_FREQS = {"SECONDLY", "MINUTELY", "HOURLY", "DAILY", "WEEKLY", "MONTHLY", "YEARLY"}
# RFC 5545 3.3.10 bounds that dateutil does not check itself: (lowest, highest or None,
# sign allowed). An INTERVAL of 0 would make expanding the rule spin forever.
_RRULE_NUMBERS = {
    "COUNT": (1, None, False), "INTERVAL": (1, None, False), "BYMONTH": (1, 12, False),
    "BYMONTHDAY": (1, 31, True), "BYYEARDAY": (1, 366, True), "BYWEEKNO": (1, 53, True),
    "BYSETPOS": (1, 366, True), "BYHOUR": (0, 23, False), "BYMINUTE": (0, 59, False),
    "BYSECOND": (0, 60, False),
}  # fmt: skip
_UNSIGNED_RE = re.compile(r"^\d{1,10}$")
_SIGNED_RE = re.compile(r"^[+-]?\d{1,10}$")


def _check_numbers(name: str, value: str) -> None:
    """Refuse a numeric RRULE part outside the range RFC 5545 gives it."""
    if name not in _RRULE_NUMBERS:
        return
    low, high, signed = _RRULE_NUMBERS[name]
    for item in value.split(","):
        item = item.strip()
        if not (_SIGNED_RE if signed else _UNSIGNED_RE).match(item):
            raise Invalid(f"recurrence: {name} takes whole numbers of up to 10 digits")
        size = abs(int(item))
        if size < low or (high is not None and size > high):
            limit = f"{low}..{high}" if high is not None else f"at least {low}"
            limit += f" or -{high}..-{low}" if signed else ""
            raise Invalid(f"recurrence: {name} must be {limit}")


_WEEKDAY_RE = re.compile(r"^([+-]?)(\d{1,2})?(MO|TU|WE|TH|FR|SA|SU)$")


def _check_weekdays(value: str, freq: str) -> None:
    """BYDAY items: a weekday, optionally with an ordinal (RFC 5545: 1..53, 1..5 in a month)."""
    highest = 5 if freq == "MONTHLY" else 53
    for item in value.split(","):
        match = _WEEKDAY_RE.match(item.strip())
        if match is None:
            raise Invalid(f"recurrence: BYDAY takes weekdays such as MO or -1FR, not {item!r}")
        if match.group(2) is not None and not 1 <= int(match.group(2)) <= highest:
            raise Invalid(f"recurrence: a BYDAY ordinal must be 1..{highest} with FREQ={freq}")


_UNTIL_RE = re.compile(r"(?<![A-Z])UNTIL=(\d{8})(T\d{6})?(Z?)", re.IGNORECASE)


def until_like_start(rule: str, dtstart: dt.datetime, tz: dt.tzinfo = dt.UTC) -> str:
    """``rule`` with its UNTIL in the form RFC 5545 (3.3.10) pairs with ``dtstart``: UTC
    beside an aware start, a local time beside a naive (all-day) one.

    Clients write a date beside a timed start, a floating time beside a zoned one (the
    valid form when the start was floating, which crmcal places in a zone), or UTC
    beside a date: dateutil refuses each, and the series would never come in. What
    such an UNTIL means: a date, the end of that day; a local time, that time in the
    series' zone (``dtstart``'s); UTC beside a date (an all-day series in zone ``tz``),
    the day it names: the local day if it is the local midnight starting one (what
    clients east of UTC write), else its UTC day (``T235959Z``, ``T000000Z``).
    """
    match = _UNTIL_RE.search(rule)
    if match is None:
        return rule
    day, clock, utc = match.group(1), match.group(2), match.group(3)
    try:
        moment = dt.datetime.strptime(day + (clock or "T235959"), "%Y%m%dT%H%M%S")
    except ValueError:
        return rule  # not a moment at all: dateutil says why
    if dtstart.tzinfo is not None:
        if utc:
            return rule
        instant = moment.replace(tzinfo=dtstart.tzinfo).astimezone(dt.UTC)
        until = f"{instant:%Y%m%dT%H%M%S}Z"
    elif utc:
        local = moment.replace(tzinfo=dt.UTC).astimezone(tz)
        named = local.date() if local.time() == dt.time() else moment.date()
        until = f"{named:%Y%m%d}T235959"
    else:
        return rule
    return rule[: match.start()] + f"UNTIL={until}" + rule[match.end() :]


def parse_rule(rule: str, dtstart: dt.datetime, tz: dt.tzinfo = dt.UTC) -> rrule:
    """The dateutil rule of one RRULE value from ``dtstart`` (see ``until_like_start``);
    ValueError, TypeError, OverflowError or IndexError for a rule it cannot read."""
    read = rule_read(rule, dtstart, tz)
    if read is None:
        return _single(rrulestr(until_like_start(rule, dtstart, tz), dtstart=dtstart))
    return read.replace(dtstart=dtstart)


def rule_read(rule: str, dtstart: dt.datetime, tz: dt.tzinfo = dt.UTC) -> rrule | None:
    """``parse_rule``'s rule as read from its text, from a start of its own: what
    ``replace(dtstart=dtstart)`` (with any other change) makes ``parse_rule``'s of.
    Raises as ``parse_rule`` does. None for a text that is more than one rule's parts
    (several lines, a DTSTART of its own ...): dateutil reads such a text with the
    start, and ``parse_rule`` reads it whole each time."""
    text = until_like_start(rule, dtstart, tz)
    # What dateutil reads as one rule's parts alone (``rrulestr``: one word, no
    # property name but RRULE), which it makes with the start it is given.
    if len(text.split()) != 1 or (":" in text and not text.upper().startswith("RRULE:")):
        return None
    return _read(text, dtstart.tzinfo is not None)


# The starts a rule is first read from: only whether it is aware matters to what the
# reading accepts (an UNTIL in UTC goes with an aware start, a local one with a naive).
_AWARE_START = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
_NAIVE_START = dt.datetime(2000, 1, 1)


@functools.lru_cache(maxsize=256)
def _read(text: str, aware: bool) -> rrule:
    """The rule of ``text`` from a start of its own, read once a process: a series' rule
    is read for each of its checks and expansions, and an import's series mostly share a
    few rules; reading its text cost dateutil twice what making the rule from its parts
    for a start does (``rrule.replace``, which takes the start's defaults anew: the
    weekday of a weekly rule without BYDAY ...). Only ever replaced, never iterated."""
    return _single(rrulestr(text, dtstart=_AWARE_START if aware else _NAIVE_START))


def _single(found: object) -> rrule:
    if not isinstance(found, rrule):  # an RRULE value is one rule, never a set
        raise ValueError("not a single RRULE value")
    return found


def check_until_form(rule: str, all_day: bool) -> None:
    """Refuse ``rule`` when its UNTIL is not in the form RFC 5545 (3.3.10) pairs with
    its start: a UTC time beside a timed start (crmcal's are zoned), a date beside an
    all-day one.

    For a rule a person gives: crmcal writes it to calendars as it is spelt, and strict
    CalDAV servers refuse any other pairing. A rule a calendar wrote is not checked:
    it is stored as spelt and read as meant (``until_like_start``).
    """
    match = _UNTIL_RE.search(rule)
    if match is None:
        return
    clock, utc = match.group(2), match.group(3)
    if all_day and (clock or utc):
        raise Invalid("recurrence: UNTIL must be a date such as 20270101 beside an all-day start")
    if not all_day and not (clock and utc):
        raise Invalid(
            "recurrence: UNTIL must be a UTC time such as 20270101T235959Z beside a timed start"
        )


def normalise_rrule(value: str, dtstart: dt.datetime) -> str:
    """Validate an RFC 5545 RRULE value and return it without an ``RRULE:`` prefix; an
    UNTIL in another form than ``dtstart``'s is read as meant (``check_until_form``
    refuses it where a person gives the rule)."""
    text = value.strip()
    if text.upper().startswith("RRULE:"):
        text = text[6:]
    if not text or "\n" in text or "\r" in text:
        raise Invalid("recurrence: give a single RRULE value such as 'FREQ=WEEKLY;COUNT=10'")
    parts: dict[str, str] = {}
    for item in text.split(";"):
        name, sep, part_value = item.partition("=")
        name = name.strip().upper()
        if not sep or not part_value.strip():
            raise Invalid(f"recurrence: {item!r} is not NAME=VALUE")
        if name not in _RRULE_PARTS:
            raise Invalid(f"recurrence: unknown RRULE part {name!r}")
        if name in parts:
            raise Invalid(f"recurrence: {name} given twice")
        parts[name] = part_value.strip().upper()
        _check_numbers(name, parts[name])
    if parts.get("FREQ") not in _FREQS:
        raise Invalid("recurrence: FREQ is required (DAILY, WEEKLY, MONTHLY, YEARLY ...)")
    if "UNTIL" in parts and "COUNT" in parts:
        raise Invalid("recurrence: UNTIL and COUNT cannot both be given")
    canonical = ";".join(f"{name}={part_value}" for name, part_value in parts.items())
    if "BYDAY" in parts:
        _check_weekdays(parts["BYDAY"], parts["FREQ"])
    try:
        # Parsing checks the rule. Expanding it is left to whoever needs the
        # occurrences: a rule that can never match would make a search for its
        # first occurrence run for minutes.
        parse_rule(canonical, dtstart)
    except (ValueError, TypeError, OverflowError) as exc:
        raise Invalid(f"recurrence: {exc}") from None
    except IndexError:  # dateutil's tables end short of e.g. BYDAY=+99MO in a month
        raise Invalid("recurrence: a number in the rule is out of range") from None
    return canonical


def same_rule(given: str, stored: str, dtstart: dt.datetime, tz: dt.tzinfo = dt.UTC) -> bool:
    """Whether ``given`` is the rule ``stored`` spelt another way, as a client that
    re-serialises a rule it read sends it back: its parts in another order or case,
    ``RRULE:`` before it, a list's items in another order, an UNTIL in another form
    naming the same moment. Both are read as ``normalise_rrule`` and ``parse_rule`` read
    a rule from ``dtstart`` (in zone ``tz``), and compared as dateutil writes them out.
    False when either cannot be read: then it is a new rule, checked as one."""
    if given == stored:
        return True
    try:
        return _read_back(given, dtstart, tz) == _read_back(stored, dtstart, tz)
    except (Invalid, ValueError, TypeError, OverflowError, IndexError):
        return False


def _read_back(rule: str, dtstart: dt.datetime, tz: dt.tzinfo) -> str:
    """``rule`` as dateutil writes it out after reading it: one spelling of its meaning."""
    return str(parse_rule(normalise_rrule(rule, dtstart), dtstart, tz))
