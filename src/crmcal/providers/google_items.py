"""Google's event items as the Google provider hands them on: a ``RemoteRef`` (a series
with its exceptions folded in) under a version that covers those exceptions, and the
master Google stores of a series. What an item's fields mean is the codec's
(``google_events``); this is what the provider's modules share about them."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from crmcal.model import CalendarEvent, RemoteRef
from crmcal.providers import api_client, google_events
from crmcal.providers.api_client import item_id
from crmcal.providers.base import ProviderError

__all__ = ["changed_overrides", "item_id", "listed", "master", "nameless", "ref", "version"]

FROM_GMAIL = "fromGmail"


def nameless(item: Any) -> RemoteRef:
    """An item without an id, reported unreadable (``api_client.nameless``)."""
    return api_client.nameless(item, "Google")


def ref(item: dict[str, Any], zone: str, exceptions: Sequence[dict[str, Any]] = ()) -> RemoteRef:
    """A readable event (a series with its exceptions folded in) or the reason it is not.

    A series' version covers its exceptions too: a cancelled occurrence changes the
    series crmcal sees, not the etag Google gives the series.
    """
    name = item_id(item)
    if name is None:
        return nameless(item)
    etag = str(item.get("etag") or "")
    if exceptions:
        versions = sorted(str(e.get("etag")) + str(e.get("id")) for e in exceptions)
        etag += "~" + hashlib.sha256("|".join(versions).encode()).hexdigest()[:16]
    if google_events.from_gmail(item):
        # Marked so that no update of it goes blind: what Google lets change of an
        # event from Gmail is decided over a read of it.
        etag += "~" + FROM_GMAIL
    try:
        event = google_events.parse(item, default_zone=zone)
        return RemoteRef(name, etag, google_events.with_exceptions(event, list(exceptions)))
    except Exception as failure:  # any garbage in one item is that item's alone
        return RemoteRef(name, etag, error=api_client.unreadable(failure))


def version(etag: str) -> str:
    """The event's own etag inside a series' composite version (see ``ref``)."""
    return etag.split("~", 1)[0]


def master(event: CalendarEvent) -> CalendarEvent:
    """The master Google stores: the cancelled occurrences among its EXDATEs, the
    changed ones left to their own events."""
    if event.recurrence is None:
        return event
    cancelled = [o.recurrence_id for o in event.overrides if o.cancelled and o.recurrence_id]
    return replace(event.leaving_out(cancelled), overrides=())


def changed_overrides(event: CalendarEvent) -> bool:
    """Whether ``event`` is a series with occurrences changed on their own (written as
    events of their own once the series exists)."""
    return event.recurrence is not None and any(not o.cancelled for o in event.overrides)


def listed(found: list[dict[str, Any]] | ProviderError) -> list[dict[str, Any]]:
    """A series' exceptions as read, or none where reading them failed."""
    return found if isinstance(found, list) else []
