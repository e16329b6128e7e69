"""The units a series is decided in, what a series link remembers of them, and how
two series are compared.

A linked series is reconciled in units: each field group of the master
(``model.FIELD_GROUPS`` but "overrides"; the rule and its left-out dates are
"recurrence") and each occurrence changed on its own on either side, keyed by
its original start. The series' link (kept on one of its occurrences) remembers
a digest of every unit as each side had it at the last sync (``remembered_hashes``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from crmcal.crm import times
from crmcal.crm.errors import Invalid
from crmcal.crm.tables import Activity, ActivitySeries
from crmcal.model import (
    FIELD_GROUPS,
    CalendarEvent,
    canonical_rrule,
    field_digests,
    moment_key,
)
from crmcal.sync import series_mapping
from crmcal.sync.tables import Link

Moment = dt.datetime | dt.date

# The master's units: every field group but the overrides (decided one by one).
MASTER_GROUPS = tuple(g for g in FIELD_GROUPS if g != "overrides")


@dataclass
class Digests:
    """One side of a series: a digest per master group, and per occurrence changed on
    its own (within the CRM's horizon) a digest of that occurrence."""

    master: dict[str, str]
    occurrences: dict[str, str]

    def get(self, unit: str) -> str | None:
        if unit.startswith("@"):
            return self.occurrences.get(unit[1:])
        return self.master.get(unit)


def units_digest(side: Digests) -> str:
    """One digest of every unit of a side: what a series link remembers of a CRM
    version the calendar refused for good (``Link.refused_hash``)."""
    units = json.dumps([side.master, side.occurrences], sort_keys=True)
    return hashlib.sha256(units.encode()).hexdigest()


# The digest of an occurrence left out (EXDATE, or a cancelled override).
LEFT_OUT = "left-out"


def digests_of(event: CalendarEvent, within: Callable[[Moment], bool]) -> Digests:
    """A side's units: the master's groups (the rule without its left-out dates), and
    per occurrence that differs from the rule — left out, or changed on its own within
    the CRM's horizon — what it is.

    Of a series with no occurrence changed on its own the horizon decides nothing:
    its units are computed once per event (see ``unbounded_digests``)."""
    if not _live(event):
        memo = event.memo("series_units.digests", _unbounded)
        return Digests(dict(memo.master), dict(memo.occurrences))
    return _digests_of(event, within)


def unbounded_digests(event: CalendarEvent) -> None:
    """A calendar series' units where no horizon decides them (no occurrence changed on
    its own), computed once per event: in ``parse_pool``'s processes as they parse it,
    so that a first import's series bring them along."""
    if event.recurrence is not None and not _live(event):
        event.memo("series_units.digests", _unbounded)


def _live(event: CalendarEvent) -> bool:
    return any(not o.cancelled and o.recurrence_id is not None for o in event.overrides)


def _unbounded(event: CalendarEvent) -> Digests:
    return _digests_of(event, _anywhere)


def _anywhere(moment: Moment) -> bool:
    return True


def _digests_of(event: CalendarEvent, within: Callable[[Moment], bool]) -> Digests:
    rule = event.recurrence
    bare = event
    if event.overrides or (rule is not None and rule.exdates):
        # Only where there is something to strip: copying an event costs a series more
        # than its digests (a first import's hundreds of series have none of either).
        bare = replace(
            event, overrides=(), recurrence=replace(rule, exdates=()) if rule is not None else None
        )
    master = field_digests(bare)
    master.pop("overrides", None)
    occurrences = {moment_key(m): LEFT_OUT for m in event.cancelled_moments()}
    for key, override in event.live_overrides().items():
        moment = override.recurrence_id
        if key not in occurrences and moment is not None and within(moment):
            occurrences[key] = override.content_hash()
    return Digests(master, occurrences)


@dataclass
class Plan:
    """Which units go which way."""

    push: set[str] = dataclasses.field(default_factory=set)
    pull: set[str] = dataclasses.field(default_factory=set)
    conflict: bool = False

    @staticmethod
    def groups(units: set[str]) -> set[str]:
        return {u for u in units if not u.startswith("@")}

    @staticmethod
    def keys(units: set[str]) -> set[str]:
        return {u[1:] for u in units if u.startswith("@")}


def remembered_hashes(stored: Mapping[str, Any], crm: Digests, calendar: Digests) -> dict[str, Any]:
    """The link's field hashes with both sides' series units as they are now."""
    return {
        **stored,
        "series": crm.master,
        "series_calendar": calendar.master,
        "occurrences": {"crm": crm.occurrences, "calendar": calendar.occurrences},
    }


def within_horizon_of(series: ActivitySeries) -> Callable[[Moment], bool]:
    def within(moment: Moment) -> bool:
        return series_mapping.within_horizon(series, moment)

    return within


def anchor_of(occurrences: list[Activity], link: Link) -> Activity:
    return next((o for o in occurrences if o.id == link.activity_id), occurrences[0])


def moment_of(key: str, series: ActivitySeries) -> Moment | None:
    """The moment a ``moment_key`` spells, as the series stores its dates."""
    try:
        if len(key) == 10:
            return dt.date.fromisoformat(key)
        return dt.datetime.fromisoformat(key)
    except ValueError:
        return None


# --- comparing series (is a new calendar series one the CRM has, or a split?) ---------


def rule_shape(rrule: str) -> tuple[str, str]:
    """A rule's frequency and interval: two series of other shapes are never one."""
    parts = dict(p.partition("=")[::2] for p in canonical_rrule(rrule).split(";"))
    return parts.get("FREQ", ""), parts.get("INTERVAL", "1")


def plain_title(text: str | None) -> str:
    return " ".join((text or "").split()).casefold()


def utc_instant(moment: Moment, zone: str | None) -> dt.datetime:
    if isinstance(moment, dt.datetime):
        return moment.astimezone(dt.UTC)
    return dt.datetime.combine(moment, dt.time(), tzinfo=times.zone(zone or "UTC")).astimezone(
        dt.UTC
    )


def makes(series: CalendarEvent, moment: Moment, own_zone: str | None = None) -> bool:
    """Whether ``series``' rule (with its added dates) has an occurrence that starts
    at ``moment``: an override at a moment it no longer makes (its end moved before
    it) is an orphan that calendars show on its own. A rule this cannot read keeps
    every override. A series whose zone the calendar does not name makes its
    occurrences in the user's ``own_zone``, as the CRM keeps it (floating times are
    wall-clock times there): read in UTC, an override after a daylight-saving
    switch would be taken for an orphan."""
    rule = series.recurrence
    if rule is None:
        return False
    start = series.start
    if series.timezone is None and own_zone and isinstance(start, dt.datetime):
        if series.floating:
            start = start.replace(tzinfo=times.zone(own_zone))
        series = replace(series, start=start, timezone=own_zone)
    if moment in rule.rdates or moment == series.start:
        return True
    timed = isinstance(series.start, dt.datetime)
    if timed != isinstance(moment, dt.datetime):
        return False
    try:
        zone = times.zone(series.timezone) if series.timezone else dt.UTC
    except Invalid:
        zone = dt.UTC
    if isinstance(series.start, dt.datetime) and isinstance(moment, dt.datetime):
        first, wanted = series.start.astimezone(zone), moment.astimezone(zone)
    else:
        first = dt.datetime.combine(series.start, dt.time())
        wanted = dt.datetime.combine(moment, dt.time())
    try:
        found = times.parse_rule(rule.rrule, first, zone)
        return bool(found.between(wanted, wanted, inc=True))
    except (ValueError, TypeError, OverflowError, IndexError):
        return True
