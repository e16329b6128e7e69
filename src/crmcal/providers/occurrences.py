"""What the cloud providers share about a series' occurrences, whatever their wire
format: one occurrence as an event of its own, as Google and Outlook each write an
occurrence (an instance or exception) apart from its series' master."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

from crmcal.model import CalendarEvent


def occurrence_event(
    series: CalendarEvent,
    override: CalendarEvent | None,
    original: dt.datetime | dt.date | None = None,
) -> CalendarEvent:
    """One occurrence as its own event: ``override``, or the series' own occurrence at
    ``original``; crmcal's ids are the series'."""
    if override is None:
        assert original is not None
        length = (series.end - series.start) if series.end is not None else None
        override = replace(
            series, start=original, end=original + length if length is not None else None,
            recurrence_id=original,
        )  # fmt: skip
    return replace(
        override, recurrence=None, overrides=(), cancelled=False,
        crm_id=override.crm_id or series.crm_id, crm_type=override.crm_type or series.crm_type,
        notify_attendees=series.notify_attendees,
    )  # fmt: skip
