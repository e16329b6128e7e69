"""Expanding a series' rule into the starts of its occurrences, on the local clock.

A rule counts in the series' own time zone: a weekly meeting at 09:00
Europe/Berlin is at 09:00 local before and after the daylight-saving switches
(its UTC instant moves), and an all-day yearly series stays on its date.
Expansion is always bounded by a window, so a rule with no end, or one that
can never match, costs no more than the window it is asked about.
"""

from __future__ import annotations

import datetime as dt
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from crmcal.crm.errors import Invalid
from crmcal.crm.times import midnight_utc, parse_date, parse_datetime, parse_rule, rule_read

Moment = dt.datetime | dt.date


@dataclass(frozen=True)
class Rule:
    """A series' rule with its first start (DTSTART) and the dates added and left out."""

    rrule: str
    tz: ZoneInfo
    all_day: bool
    # The first occurrence's start: an aware UTC instant, or a date for all-day series.
    first: Moment
    rdates: tuple[Moment, ...] = ()
    exdates: tuple[Moment, ...] = ()

    def instant(self, moment: Moment) -> dt.datetime:
        """The UTC instant an occurrence starting at ``moment`` is stored under."""
        if isinstance(moment, dt.datetime):
            return moment.astimezone(dt.UTC)
        return midnight_utc(moment, self.tz)

    def _dtstart(self) -> dt.datetime:
        if self.all_day:
            assert isinstance(self.first, dt.date)
            first = self.first if not isinstance(self.first, dt.datetime) else self.first.date()
            return dt.datetime.combine(first, dt.time())
        assert isinstance(self.first, dt.datetime)
        # Aware in the series' zone: dateutil then counts on the wall clock.
        return self.first.astimezone(self.tz)

    def starts(self, after: dt.datetime, before: dt.datetime, limit: int) -> list[Moment]:
        """The occurrences' starts (dates for all-day) whose instants lie in
        [``after``, ``before``), at most ``limit`` of them, in order; EXDATEs left out."""
        dtstart = self._dtstart()
        if self.all_day:
            lo = after.astimezone(self.tz).replace(tzinfo=None) - dt.timedelta(days=1)
            hi = before.astimezone(self.tz).replace(tzinfo=None) + dt.timedelta(days=1)
        else:
            lo, hi = after.astimezone(self.tz), before.astimezone(self.tz)
        # Made once for the start and the window's end, from the rule as read where it
        # can be (``rule_read``), else read for the start and then bounded.
        try:
            read = rule_read(self.rrule, dtstart, self.tz)
            start = dtstart if read is not None else None  # None: read for its start
            if read is None:
                read = parse_rule(self.rrule, dtstart, self.tz)
        except (ValueError, TypeError, OverflowError, IndexError) as exc:
            raise Invalid(f"recurrence: {exc}") from None
        # An UNTIL at the window's end bounds the work even for a rule that never
        # matches (dateutil would otherwise search up to the year 9999).
        until = getattr(read, "_until", None)
        bound = hi if until is None else min(until, hi)
        with warnings.catch_warnings():  # COUNT with UNTIL: dateutil frowns, honours both
            warnings.simplefilter("ignore", DeprecationWarning)
            if start is None:
                rule = read.replace(until=bound)
            else:
                rule = read.replace(dtstart=start, until=bound)
        found: dict[dt.datetime, Moment] = {}
        for value in rule.xafter(lo, inc=True):
            moment: Moment = value.date() if self.all_day else value.astimezone(dt.UTC)
            found[self.instant(moment)] = moment
            if len(found) > limit + 2:
                break
        # The first start is an occurrence even where the rule would not produce it
        # (RFC 5545 leaves that case open): the activity a user made stays.
        for moment in (self.first, *self.rdates):
            found[self.instant(moment)] = moment
        left_out = {self.instant(m) for m in self.exdates}
        return [
            found[i]
            for i in sorted(found)
            if after <= i < before and i not in left_out and i >= self.instant(self.first)
        ][:limit]


_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def check_can_match(rrule: str) -> None:
    """Refuse a rule whose months never have its days (BYMONTH=2;BYMONTHDAY=30): such a
    rule has no occurrence, and looking for one would search until the year 9999."""
    parts = dict(p.partition("=")[::2] for p in rrule.upper().split(";"))
    if "BYMONTHDAY" not in parts:
        return
    months = [int(m) for m in parts.get("BYMONTH", "").split(",") if m.strip().isdigit()]
    days = [int(d) for d in parts["BYMONTHDAY"].split(",") if d.strip().lstrip("+-").isdigit()]
    if not months or not days:
        return
    longest = max(_MONTH_DAYS[m - 1] for m in months if 1 <= m <= 12)
    if all(abs(day) > longest for day in days):
        raise Invalid("recurrence: none of the months in BYMONTH has the days in BYMONTHDAY")


def parse_moments(field: str, values: Iterable[str], all_day: bool, tz: ZoneInfo) -> list[Moment]:
    """EXDATE/RDATE values from the API: dates for an all-day series, date-times
    (local to the series' zone unless they carry an offset) otherwise."""
    found: list[Moment] = []
    for position, value in enumerate(values):
        where = f"{field}.{position}"
        found.append(parse_date(where, value, tz) if all_day else parse_datetime(where, value, tz))
    return found


def stored(moment: Moment) -> str:
    """How a moment is kept in a series row (JSON): a date, or a UTC instant."""
    if isinstance(moment, dt.datetime):
        return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return moment.isoformat()


def loaded(text: str) -> Moment:
    if len(text) == 10:
        return dt.date.fromisoformat(text)
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
