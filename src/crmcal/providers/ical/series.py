"""Writing a recurring series' occurrences: overridden occurrences as RECURRENCE-ID
components (spelt as the master's DTSTART is), and which of the old ones, and which
old cancellations, still belong to the new series."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import icalendar

from crmcal.model import CalendarEvent, moment_key
from crmcal.providers.ical.build import build_vevent, write_moment
from crmcal.providers.ical.previous import PreviousResource
from crmcal.providers.ical.read import utc_key
from crmcal.providers.ical.writing_zones import writing_zone


def override_key(component: icalendar.cal.Component) -> str | None:
    """``moment_key`` of an overriding component's RECURRENCE-ID."""
    moment = getattr(component.get("RECURRENCE-ID"), "dt", None)
    if isinstance(moment, dt.datetime) and moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment_key(moment) if isinstance(moment, (dt.date, dt.datetime)) else None


def is_cancelled_component(component: icalendar.cal.Component) -> bool:
    return str(component.get("STATUS", "")).upper() == "CANCELLED"


def kept_overrides(previous: PreviousResource, event: CalendarEvent) -> list[icalendar.Event]:
    """Overridden occurrences of the old series that still belong to the new one."""
    if event.recurrence is None or event.recurrence_id is not None:
        return []
    exdates = {utc_key(m) for m in event.cancelled_moments()}
    kept = []
    for override in previous.overrides:
        recurrence_id = getattr(override.get("RECURRENCE-ID"), "dt", None)
        back = recurrence_id is None or utc_key(recurrence_id) not in exdates
        if is_cancelled_component(override) and back:
            continue  # the occurrence is back: drop its cancellation
        kept.append(override)
    return kept


def kept_cancellations(previous: PreviousResource, event: CalendarEvent) -> list[icalendar.Event]:
    """The old cancelled occurrences (STATUS:CANCELLED components) still left out."""
    return [o for o in kept_overrides(previous, event) if is_cancelled_component(o)]


def override_vevent(
    override: CalendarEvent,
    master: CalendarEvent,
    uid: str,
    old: icalendar.Event | None,
    sequence: int,
    now: dt.datetime,
) -> icalendar.Event:
    """The component of an occurrence changed on its own: its RECURRENCE-ID spelt as
    the master's DTSTART is (same zone, same kind of value), as clients match them."""
    assert override.recurrence_id is not None
    vevent = build_vevent(replace(override, recurrence=None, recurrence_id=None), uid, old,
                           sequence, now)  # fmt: skip
    recurrence_id = write_moment(override.recurrence_id, master, writing_zone(master))
    vevent.add("RECURRENCE-ID", recurrence_id)
    return vevent


def written_overrides(
    event: CalendarEvent,
    uid: str,
    before: PreviousResource | None,
    sequence: int,
    now: dt.datetime,
) -> list[icalendar.Event]:
    """The components of ``event``'s overrides, each built over the one it replaces."""
    if event.recurrence is None:
        return []
    old = {}
    if before is not None:
        old = {override_key(c): c for c in before.overrides if not is_cancelled_component(c)}
    left_out = {moment_key(m) for m in event.cancelled_moments()}
    return [
        override_vevent(override, event, uid, old.get(key), sequence, now)
        for key, override in sorted(event.live_overrides().items())
        if key not in left_out
    ]
