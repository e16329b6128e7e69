"""Graph's event items as the Microsoft provider hands them on: a ``RemoteRef`` with its
version, a series' composite version, one spelling of an occurrence's original start,
and the master Graph stores of a series. What an item's fields mean is the codec's
(``microsoft_events``); this is what the provider's modules share about them."""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import replace
from typing import Any

from crmcal.model import CalendarEvent, RemoteRef
from crmcal.providers import api_client
from crmcal.providers import microsoft_events as codec
from crmcal.providers.api_client import item_id

__all__ = [
    "item_id", "key", "master", "nameless", "ref", "same", "series_version", "version",
    "with_ids",
]  # fmt: skip


def nameless(item: Any) -> RemoteRef:
    """An item without an id, reported unreadable (``api_client.nameless``)."""
    return api_client.nameless(item, "Microsoft 365")


def ref(item: dict[str, Any]) -> RemoteRef:
    """An item read, under its ``@odata.etag`` (or its change key), or why it cannot be."""
    name = item_id(item)
    if name is None:
        return nameless(item)
    etag = str(item.get("@odata.etag") or "")
    if not etag and item.get("changeKey"):
        etag = f'W/"{item["changeKey"]}"'
    try:
        event = codec.parse(item)
        warning = None
        if event.recurrence is not None and not event.all_day and event.timezone is None:
            warning = (
                f"Microsoft 365 does not name the time zone of this series "
                f"({codec.series_zone(item)!r}): its occurrences are kept in the user's own"
            )
        return RemoteRef(name, etag, event, warning=warning)
    except Exception as failure:  # any garbage in one item is that item's alone
        return RemoteRef(name, etag, error=api_client.unreadable(failure))


def version(etag: str) -> str:
    """The event's own ``@odata.etag`` inside a series' composite version."""
    return etag.split("~", 1)[0]


def series_version(etag: str, cancelled: list[str], exceptions: list[dict[str, Any]]) -> str:
    """A series' version: its master's, and its exceptions' and cancellations' (an
    exception changes the series crmcal sees, not the master's change key)."""
    if not cancelled and not exceptions:
        return etag
    parts = sorted(
        f"{e.get('id')}:{e.get('@odata.etag') or e.get('changeKey')}" for e in exceptions
    )
    raw = "|".join([*parts, *sorted(cancelled)])
    return etag + "~" + hashlib.sha256(raw.encode()).hexdigest()[:16]


def key(moment: dt.datetime | dt.date | None) -> str:
    """One spelling per original start, whatever zone it was read in."""
    if isinstance(moment, dt.datetime):
        return moment.astimezone(dt.UTC).isoformat()
    return moment.isoformat() if moment is not None else ""


def master(event: CalendarEvent) -> CalendarEvent:
    """The master Graph stores: a pattern and the master's fields (its left-out dates
    and changed occurrences are written to the occurrences themselves)."""
    if event.recurrence is None:
        return event
    return replace(event, recurrence=replace(event.recurrence, exdates=()), overrides=())


def same(read: CalendarEvent, written: CalendarEvent) -> bool:
    """Whether Graph has ``written`` as ``read`` shows it."""
    return read.content_hash() == written.content_hash() or (
        # Attendees Graph was not told about are no difference.
        not written.notify_attendees
        and read.content_hash() == _without_attendees(written).content_hash()
    )


def _without_attendees(event: CalendarEvent) -> CalendarEvent:
    return replace(event, attendees=(), organizer=None)


def with_ids(event: CalendarEvent, props: dict[str, str]) -> CalendarEvent:
    """``event`` with crmcal's ids as its extended properties (``props``) hold them."""
    return replace(
        event, crm_id=props.get(codec.CRM_ID) or event.crm_id,
        crm_type=props.get(codec.CRM_TYPE) or event.crm_type,
    )  # fmt: skip
