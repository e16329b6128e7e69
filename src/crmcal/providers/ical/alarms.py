"""The one VALARM crmcal owns: which existing alarm stands for an event's
``reminder_minutes``, the alarm written for it, and an alarm list with that one
replaced while every other alarm (another client's, e-mail or audio ones) stays."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import icalendar
from icalendar.prop import vInline

from crmcal.model import CalendarEvent
from crmcal.providers.ical.text import EscapedText


def is_mapped_alarm(component: icalendar.cal.Component) -> bool:
    """Whether an existing VALARM is the one ``reminder_minutes`` stands for."""
    if component.name != "VALARM":
        return False
    if str(component.get("ACTION", "")).upper() != "DISPLAY":
        return False
    trigger = component.get("TRIGGER")
    if trigger is None:
        return False
    params = trigger.params
    if str(params.get("VALUE", "DURATION")).upper() != "DURATION":
        return False
    if str(params.get("RELATED", "START")).upper() != "START":
        return False
    offset = getattr(trigger, "dt", None)
    return isinstance(offset, dt.timedelta) and offset <= dt.timedelta(0)


def reminder_alarm(event: CalendarEvent) -> icalendar.Alarm | None:
    """The display alarm written for the event's reminder, or None without one."""
    if event.reminder_minutes is None:
        return None
    alarm = icalendar.Alarm()
    alarm.add("ACTION", "DISPLAY")
    alarm.add("DESCRIPTION", EscapedText(event.summary or "Reminder"))
    alarm.add("TRIGGER", vInline(f"-PT{max(event.reminder_minutes, 0)}M"))
    return alarm


def with_reminder(
    components: Iterable[icalendar.cal.Component],
    event: CalendarEvent,
    *,
    keep_place: bool,
) -> list[icalendar.cal.Component]:
    """``components`` with the first mapped alarm replaced by the event's reminder
    (or dropped when it has none). The new alarm takes the old one's place when
    ``keep_place`` is set and there was one, otherwise it comes first."""
    kept = list(components)
    mapped = next((n for n, c in enumerate(kept) if is_mapped_alarm(c)), None)
    if mapped is not None:
        del kept[mapped]
    alarm = reminder_alarm(event)
    if alarm is not None:
        kept.insert(mapped if keep_place and mapped is not None else 0, alarm)
    return kept
