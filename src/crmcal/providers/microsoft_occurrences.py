"""Which writes make a series' occurrences in Outlook what crmcal's series says.

Graph takes a pattern only: a left-out date or cancelled occurrence is a DELETE of that
occurrence (Graph has no EXDATE), a changed one a PATCH of it (Outlook keeps it as an
exception), and an exception the series no longer has is patched back to the master's
fields. This module plans those writes from what Outlook has; sending them is
``microsoft_series``'.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import Any, NamedTuple

from crmcal.model import CalendarEvent
from crmcal.providers import microsoft_events as codec
from crmcal.providers.microsoft_items import key, ref, same
from crmcal.providers.occurrences import occurrence_event

__all__ = ["OccurrenceWrite", "exceptions_by_start", "occurrence_writes"]

_Changed = dict[str, tuple[dt.datetime | dt.date, CalendarEvent]]


class OccurrenceWrite(NamedTuple):
    """One write of a series' occurrence: a DELETE (``body`` None) or a PATCH, of the
    occurrence that starts at ``moment`` (``key``: its spelling by ``items.key``)."""

    method: str
    key: str
    moment: dt.datetime | dt.date
    body: dict[str, Any] | None


def exceptions_by_start(
    exceptions: list[dict[str, Any]], series: CalendarEvent, zone_name: str | None
) -> dict[str, dict[str, Any]]:
    """A series' exceptions as Outlook has them, by original start."""
    existing: dict[str, dict[str, Any]] = {}
    for item in exceptions:
        original = codec.original_start(item, series, zone_name)
        if original is not None:
            existing[key(original)] = item
    return existing


def occurrence_writes(
    series: CalendarEvent,
    event: CalendarEvent,
    cancelled: list[str],
    existing: dict[str, dict[str, Any]],
    zone_name: str | None,
    changed: frozenset[str] | None,
) -> list[OccurrenceWrite]:
    """The writes that make the occurrences of ``series`` (as Outlook has it, with its
    ``cancelled`` occurrences and ``existing`` exceptions) what ``event`` says: the
    deletes of the dates it leaves out that Outlook still shows, then the patches of
    the occurrences that differ. ``changed`` names what the update writes: changed
    occurrences with "overrides", cancelled ones (EXDATEs alike) with "recurrence"."""
    with_cancelled = codec.with_cancelled(series, cancelled).recurrence
    assert with_cancelled is not None  # a series keeps its rule
    left_out = {key(m) for m in with_cancelled.exdates}
    drop, change = _wanted_occurrences(event)
    change |= _restored(event, series, existing, zone_name, set(change) | set(drop))
    writes: list[OccurrenceWrite] = []
    if changed is None or "recurrence" in changed:
        writes += [
            OccurrenceWrite("DELETE", at, moment, None)
            for at, moment in drop.items()
            if at not in left_out
        ]
    if changed is None or "overrides" in changed:
        writes += _occurrence_patches(event, change, existing)
    return writes


def _wanted_occurrences(
    event: CalendarEvent,
) -> tuple[dict[str, dt.datetime | dt.date], _Changed]:
    """What a series says of its occurrences, by original start: those it leaves out
    (EXDATEs and cancelled overrides) and those it changes. A changed one wins over a
    date left out at the same start."""
    assert event.recurrence is not None
    drop: dict[str, dt.datetime | dt.date] = {key(m): m for m in event.recurrence.exdates}
    change: _Changed = {}
    for override in event.overrides:
        original = override.recurrence_id
        if original is None:
            continue
        if override.cancelled:
            drop[key(original)] = original
        else:
            change[key(original)] = (original, override)
    for at in change:
        drop.pop(at, None)
    return drop, change


def _restored(
    event: CalendarEvent,
    series: CalendarEvent,
    existing: dict[str, dict[str, Any]],
    zone_name: str | None,
    named: set[str],
) -> _Changed:
    """The exceptions Outlook has that ``event`` no longer names (not in ``named``):
    each becomes the series' own occurrence again."""
    restored: _Changed = {}
    for at, there in existing.items():
        if at in named:
            continue
        original = codec.original_start(there, series, zone_name)
        assert original is not None  # ``existing`` holds only those with one
        restored[at] = (original, occurrence_event(event, None, original))
    return restored


def _occurrence_patches(
    event: CalendarEvent, change: _Changed, existing: dict[str, dict[str, Any]]
) -> list[OccurrenceWrite]:
    """The PATCH of each changed occurrence that Outlook does not have as wanted already
    (a write would mail its attendees again for nothing)."""
    patches: list[OccurrenceWrite] = []
    for at, (moment, override) in change.items():
        occurrence = occurrence_event(event, override)
        if _as_wanted(existing.get(at), occurrence):
            continue
        written = codec.body(occurrence, with_attendees=event.notify_attendees)
        written.pop("recurrence", None)  # an occurrence takes its series' pattern
        patches.append(OccurrenceWrite("PATCH", at, moment, written))
    return patches


def _as_wanted(current: dict[str, Any] | None, occurrence: CalendarEvent) -> bool:
    """Whether the exception Outlook has (``current``, if any) is ``occurrence`` already."""
    if current is None:
        return False
    read = ref(current).event
    return read is not None and same(read, replace(occurrence, recurrence_id=read.recurrence_id))
