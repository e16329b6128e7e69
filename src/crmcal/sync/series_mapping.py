"""A CRM series <-> one calendar series (a master with its rule, plus exceptions).

Outgoing, a series becomes its master event (RRULE, RDATE, EXDATE — the
occurrences in the CRM's trash among the EXDATEs) and one exception per
occurrence that changed on its own (``RECURRENCE-ID`` = its original start),
never a pile of single events. Incoming, a master and its exceptions become the
fields of a CRM series, the changes of each exception, and the dates left out.

``nearest_rule`` says how a series made elsewhere can be written to a service
that cannot hold all of it (Microsoft 365), and what that changes: the
difference is reported, never made silently.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from crmcal.crm import recurrence as crm_recurrence
from crmcal.crm import series as crm_series
from crmcal.crm import times
from crmcal.crm.tables import Activity, ActivitySeries, User
from crmcal.model import Attendee, CalendarEvent, Recurrence, moment_key
from crmcal.providers.base import Capabilities
from crmcal.sync import mapping
from crmcal.sync.options import SyncOptions
from crmcal.sync.rules import unsupported

Moment = dt.datetime | dt.date


@dataclass(frozen=True)
class OutgoingSeries:
    """``master`` carries the ``exceptions`` as its ``overrides`` (the one unit a
    provider writes)."""

    master: CalendarEvent
    exceptions: tuple[CalendarEvent, ...] = ()


def _original(series: ActivitySeries, occurrence: Activity) -> Moment:
    assert occurrence.original_start_at is not None
    if series.all_day:
        return occurrence.original_start_at.astimezone(times.zone(series.timezone)).date()
    return occurrence.original_start_at


def original_key(series: ActivitySeries, occurrence: Activity) -> str:
    """The occurrence's original start as ``model.moment_key`` spells it (how the
    calendar's overrides are matched to occurrences)."""
    return moment_key(_original(series, occurrence))


def within_horizon(series: ActivitySeries, moment: Moment) -> bool:
    """Whether the CRM has made the occurrence that starts at ``moment`` (its rows reach
    up to the horizon): beyond it, the calendar's overrides are the calendar's alone."""
    if series.materialised_until is None:
        return True
    return crm_series.rule_of(series).instant(moment) < series.materialised_until


def changed_alone(occurrence: Activity) -> bool:
    """Whether an occurrence differs from its series in what a calendar shows."""
    return bool(set(occurrence.overrides or []) & set(crm_series.CALENDAR_FIELDS))


def left_out(series: ActivitySeries, occurrences: Sequence[Activity]) -> list[Activity]:
    """``occurrences`` without those in the trash that the series' rule no longer makes
    (an edit of the rule trashed them): only the others are EXDATEs."""
    trashed = [o for o in occurrences if o.deleted_at is not None and o.original_start_at]
    if not trashed:
        return list(occurrences)
    rule = crm_series.rule_of(series)
    lo = min(o.original_start_at for o in trashed if o.original_start_at)
    hi = max(o.original_start_at for o in trashed if o.original_start_at)
    slots = {rule.instant(m) for m in rule.starts(lo, hi + dt.timedelta(seconds=1), 100_000)}
    return [o for o in occurrences if o.deleted_at is None or o.original_start_at in slots]


def series_to_events(
    series: ActivitySeries,
    occurrences: Iterable[Activity],
    owner: User,
    options: SyncOptions | None = None,
) -> OutgoingSeries:
    """The master event of ``series`` and the exceptions of those ``occurrences`` that
    changed on their own; trashed occurrences are left out by EXDATE."""
    start: Moment
    end: Moment | None
    if series.all_day:
        assert series.start_date is not None
        start, end = series.start_date, series.end_date
    else:
        start, end = series.start_at, series.end_at
    attendees = tuple(
        Attendee(email=p["email"], name=p.get("name")) for p in series.participants or []
        if p.get("email")
    )  # fmt: skip
    exdates = [crm_recurrence.loaded(v) for v in series.exdates or []]
    exceptions = []
    for occurrence in left_out(series, list(occurrences)):
        original = _original(series, occurrence)
        if occurrence.deleted_at is not None:
            exdates.append(original)
        elif changed_alone(occurrence):
            event = mapping.activity_to_event(occurrence, owner, options)
            exceptions.append(replace(event, crm_id=None, crm_type=None, recurrence_id=original))
    rule = Recurrence(
        rrule=series.rrule,
        exdates=tuple(sorted(set(exdates), key=_sort_key)),
        rdates=tuple(crm_recurrence.loaded(v) for v in series.rdates or []),
    )
    master = CalendarEvent(
        summary=series.subject,
        start=start,
        end=end,
        all_day=series.all_day,
        timezone=series.timezone,
        location=series.location,
        description=series.note,
        private=series.visibility == "owner",
        busy=series.busy,
        reminder_minutes=series.reminder_minutes,
        attendees=attendees,
        organizer=owner.email if attendees else None,
        crm_id=series.uid,
        crm_type=series.type,
        recurrence=rule,
        notify_attendees=series.notify_participants,
    )
    ordered = tuple(sorted(exceptions, key=lambda e: _sort_key(e.recurrence_id)))
    return OutgoingSeries(replace(master, overrides=ordered), ordered)


def crm_master(
    series: ActivitySeries,
    occurrences: Iterable[Activity],
    owner: User,
    options: SyncOptions,
    mails_attendees: bool,
) -> CalendarEvent:
    """The series as the CRM has it: its master with its overrides, as a calendar that
    e-mails every attendee it is told about (``mails_attendees``, F10) is told it."""
    master = series_to_events(series, occurrences, owner, options).master
    if mails_attendees and not master.notify_attendees:
        quiet = tuple(replace(o, attendees=(), organizer=None) for o in master.overrides)
        master = replace(master, attendees=(), organizer=None, overrides=quiet)
    return master


def _sort_key(moment: Moment | None) -> str:
    if isinstance(moment, dt.datetime):
        return moment.astimezone(dt.UTC).isoformat()
    return moment.isoformat() if moment else ""


# Why an event of added dates alone (RDATE, no RRULE) is not taken in: the CRM keeps
# a series by its rule (and taken for a single event, it would lose its dates).
RDATES_ONLY = (
    "a series of added dates only (RDATE without RRULE) cannot be stored: "
    "the CRM keeps a series by its rule"
)


@dataclass
class IncomingSeries:
    """A calendar series as the CRM stores it: the fields of ``POST /activities`` (with
    ``recurrence``, ``exdates``, ``rdates``), and per original start the fields an
    exception changes."""

    fields: dict[str, Any]
    changed: dict[str, dict[str, Any]] = field(default_factory=dict)


def _text(moment: Moment) -> str:
    return moment.isoformat()


def events_to_series(
    master: CalendarEvent,
    exceptions: Sequence[CalendarEvent],
    owner: User,
    options: SyncOptions,
    own_addresses: frozenset[str] = frozenset(),
) -> IncomingSeries:
    """A calendar series as CRM series fields, of the type options give incoming events
    (F7); cancelled exceptions become dates left out."""
    assert master.recurrence is not None
    fields = mapping.event_fields(master, owner, options, own_addresses)
    fields["type"] = options.incoming_activity_type
    fields["recurrence"] = master.recurrence.rrule
    exdates = [_text(m) for m in master.recurrence.exdates]
    changed: dict[str, dict[str, Any]] = {}
    base = {k: v for k, v in fields.items() if k not in ("type", "recurrence")}
    for exception in exceptions:
        if exception.recurrence_id is None:
            continue
        original = _text(exception.recurrence_id)
        if exception.cancelled:
            exdates.append(original)
            continue
        own = mapping.event_fields(exception, owner, options, own_addresses)
        difference = {k: v for k, v in own.items() if base.get(k) != v}
        if difference:
            changed[original] = difference
    fields["exdates"] = sorted(set(exdates)) or None
    fields["rdates"] = [_text(m) for m in master.recurrence.rdates] or None
    return IncomingSeries(fields, changed)


@dataclass(frozen=True)
class Nearest:
    """What a service can hold of a series: ``recurrence`` (None: nothing faithful) and
    what differs from the series as made, one sentence each for the status."""

    recurrence: Recurrence | None
    differences: tuple[str, ...] = ()


def nearest_rule(
    capabilities: Capabilities, rule: Recurrence, *, service: str = "the calendar"
) -> Nearest:
    """The nearest form of ``rule`` that ``service`` can hold: added dates and rule
    parts it cannot hold are left out, a count above its limit is cut, and one value is
    kept where it holds one; a frequency it has no pattern for cannot be written."""
    problems = unsupported(capabilities, [rule.rrule], rdates=len(rule.rdates), service=service)
    if not problems:
        return Nearest(rule)
    if any(p.part.startswith("FREQ=") or p.part == "RRULE" for p in problems):
        return Nearest(None, tuple(f"{p}: not written there" for p in problems))
    parts = [p for p in rule.rrule.split(";") if p]
    kept: list[str] = []
    differences: list[str] = []
    for part in parts:
        name, _, value = part.partition("=")
        name = name.upper()
        if name not in capabilities.rule_parts:
            differences.append(f"{name}: {service} cannot hold it; left out")
            continue
        if capabilities.single_day_of_month and name in ("BYMONTHDAY", "BYMONTH", "BYSETPOS"):
            values = value.split(",")
            if len(values) > 1:
                differences.append(f"{name}: {service} holds one value; kept {values[0]}")
                value = values[0]
        if name == "COUNT" and capabilities.max_count and int(value) > capabilities.max_count:
            differences.append(
                f"COUNT: {service} holds at most {capabilities.max_count} occurrences; "
                f"the series there ends after {capabilities.max_count}"
            )
            value = str(capabilities.max_count)
        kept.append(f"{name}={value}")
    rdates = rule.rdates
    if rdates and not capabilities.rdates:
        days = ", ".join(_text(m) for m in rdates)
        differences.append(f"RDATE: {service} cannot add single dates; left out: {days}")
        rdates = ()
    return Nearest(Recurrence(";".join(kept), rule.exdates, rdates), tuple(differences))
