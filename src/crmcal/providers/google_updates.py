"""Updates of Google events, many in batch requests.

An update is an ``events.patch`` with ``If-Match``. One that names a single event's
version and writes no field that merges with what the event holds goes blind; any
other reads the event first (a single event's times are never written over a series).
A series is written as its master's patch, then its occurrences
(``Series.write_occurrences_of``), under a version that covers its exceptions: an
occurrence changed meanwhile by someone else is ``PreconditionFailed``, never
overwritten.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import httpx

from crmcal.model import RemoteRef
from crmcal.providers import google_batch, google_events
from crmcal.providers.base import (
    EventNotFound,
    PreconditionFailed,
    ProviderError,
    SeriesInCalendar,
    Unreachable,
    Update,
)
from crmcal.providers.google_api import GoogleApi, send_updates
from crmcal.providers.google_items import listed, master, ref, version
from crmcal.providers.google_series import Series

__all__ = ["Updates"]

# Field groups whose patch merges with what the event holds (other clients' reminders
# and attendee details, a cancelled event's status): written only after a read.
_MERGED = frozenset(("reminder", "attendees", "cancelled", "recurrence"))
Results = list[RemoteRef | ProviderError | None]


class Updates:
    """The updates of one account's events, through its ``GoogleApi`` and ``Series``."""

    def __init__(self, google: GoogleApi, series: Series) -> None:
        self._google = google
        self._api = google.api
        self._series = series

    async def update_many(
        self, calendar_id: str, items: Sequence[Update]
    ) -> list[RemoteRef | ProviderError]:
        """``update`` for many events in batch requests: the reads of those that need
        one (a series' master among them), then the exceptions of every series written
        over a series, then the patches (a series' master with the single events), then
        every series' occurrences (``Series.write_occurrences_of``). Each item answers
        on its own."""
        results: Results = [None] * len(items)
        patches: list[tuple[int, google_batch.Call]] = []
        unread: list[int] = []
        for n, item in enumerate(items):
            blind = _blind_patch(calendar_id, item)
            if blind is None:
                unread.append(n)
            else:
                patches.append((n, blind))
        currents = await self._read_current(calendar_id, items, unread, results)
        # A series written over a series: its exceptions are read and written too.
        series = {
            n: current
            for n, current in currents.items()
            if items[n].event.recurrence is not None and current and current.get("recurrence")
        }
        exceptions = await self._series.exceptions_of(calendar_id, list(series.values()))
        for n, current in currents.items():
            call = self._patch_over(calendar_id, items[n], current, n in series, exceptions)
            if isinstance(call, ProviderError):
                results[n] = call
            elif call is not None:
                patches.append((n, call))
        await self._send_patches(calendar_id, items, patches, series, results)
        written = [n for n in series if not isinstance(results[n], ProviderError)]
        refs = await self._series.write_occurrences_of(calendar_id, [
            (series[n], items[n].event, listed(exceptions[str(series[n]["id"])]),
             items[n].changed)
            for n in written
        ])  # fmt: skip
        for n, written_ref in zip(written, refs, strict=True):
            results[n] = written_ref
        return [r if r is not None else Unreachable("no answer") for r in results]

    async def _read_current(
        self, calendar_id: str, items: Sequence[Update], unread: list[int], results: Results
    ) -> dict[int, dict[str, Any] | None]:
        """The events ``unread`` as Google has them now, by item (None for one deleted);
        a read that fails answers its item in ``results``."""
        reads = [
            google_batch.Call("GET", GoogleApi.call_path(calendar_id, items[n].event_id))
            for n in unread
        ]
        answers = await self._google.send_all(reads) if reads else []
        currents: dict[int, dict[str, Any] | None] = {}
        for n, answer in zip(unread, answers, strict=True):
            if isinstance(answer, ProviderError):
                results[n] = answer
            elif answer.status_code == 200:
                found = self._api.json(answer)
                currents[n] = None if found.get("status") == "cancelled" else found
            elif answer.status_code in (404, 410):
                currents[n] = None
            else:
                results[n] = self._api.failure(answer, "reading an event")
        return currents

    def _patch_over(
        self,
        calendar_id: str,
        item: Update,
        current: dict[str, Any] | None,
        over_series: bool,
        exceptions: dict[str, list[dict[str, Any]] | ProviderError],
    ) -> google_batch.Call | ProviderError | None:
        """The PATCH that writes ``item`` over ``current``: a series' master when
        ``over_series`` (with the series' ``exceptions`` by id), else the whole event;
        or why none is, or None when nothing of the master changes."""
        if not over_series:
            return _patch(calendar_id, item, current)
        assert current is not None
        mine = exceptions[str(current["id"])]
        if isinstance(mine, ProviderError):
            return mine
        return self._series_patch(calendar_id, item, current, mine)

    def _series_patch(
        self,
        calendar_id: str,
        item: Update,
        current: dict[str, Any],
        exceptions: list[dict[str, Any]],
    ) -> google_batch.Call | ProviderError | None:
        """The PATCH of a series' master written over the series Google has, where its
        own fields change (None when they do not), or why none is. The version named
        covers the series' exceptions too: an occurrence changed meanwhile by someone
        else is ``PreconditionFailed``, never overwritten."""
        zone = self._google.zone(calendar_id)
        if item.etag and item.etag != ref(current, zone, exceptions).etag:
            return PreconditionFailed(f"the event {item.event_id} changed since {item.etag}")
        if item.changed is not None and not item.changed & set(google_events.KEYS):
            return None
        written = Update(item.event_id, "", master(item.event), item.changed)
        return _patch(calendar_id, written, current)

    async def _send_patches(
        self,
        calendar_id: str,
        items: Sequence[Update],
        patches: list[tuple[int, google_batch.Call]],
        series: dict[int, dict[str, Any]],
        results: Results,
    ) -> None:
        """Send the ``patches``, each item's answer in ``results``; a series' master
        patched is in ``series`` as it is now."""
        answers = await self._google.send_all([call for _, call in patches]) if patches else []
        for (n, _), answer in zip(patches, answers, strict=True):
            item = items[n]
            results[n] = (
                answer
                if isinstance(answer, ProviderError)
                else self._updated(calendar_id, item, answer)
            )
            if n in series and not isinstance(results[n], ProviderError):
                assert isinstance(answer, httpx.Response)
                series[n] = self._api.json(answer)  # the master as it is now

    def _updated(
        self, calendar_id: str, item: Update, response: httpx.Response
    ) -> RemoteRef | ProviderError:
        refused = self._api.refused_update(response, item.event_id, item.etag)
        if refused is not None:
            return refused
        answered = self._api.json(response)
        found = ref(answered, self._google.zone(calendar_id))
        asked = set(google_events.KEYS) if item.changed is None else set(item.changed)
        kept = asked & set(google_events.KEYS) - google_events.FROM_GMAIL_GROUPS
        if google_events.from_gmail(answered) and kept:
            # Answered so, the CRM's version of the rest is not sent again each sync.
            names = ", ".join(sorted(kept))
            found = replace(found, warning=(
                "Google lets only the reminders, privacy and status of an event from "
                f"Gmail change: the CRM's {names} stay in the CRM"
            ))  # fmt: skip
        return found


def _blind_patch(calendar_id: str, item: Update) -> google_batch.Call | None:
    """The PATCH for ``item`` when it needs no read of the event first: it names
    the version it expects (Google answers 412 for any other, so a stale event,
    or one turned into a series since, is never written) and writes only fields
    that do not merge with what the event holds; the caller knows that version
    to be a single event's, so no times land on a series. None when a read is
    needed."""
    if (
        not item.single
        or not item.etag
        or "~" in item.etag  # a series' composite version, or an event from Gmail
        or item.changed is None
        or item.changed & _MERGED
        or item.event.recurrence is not None
    ):
        return None
    written = google_events.patch_body(item.event, {}, item.changed)
    path = GoogleApi.call_path(calendar_id, item.event_id)
    return google_batch.Call("PATCH", path, send_updates(item.event), written,
                             {"If-Match": item.etag})  # fmt: skip


def _patch(
    calendar_id: str, item: Update, current: dict[str, Any] | None
) -> google_batch.Call | ProviderError:
    """The PATCH that writes ``item`` over the event as it is now, or why none is."""
    event_id, etag, event = item.event_id, item.etag, item.event
    if current is None:
        return EventNotFound(f"the event {event_id} does not exist")
    if etag and version(etag) != current.get("etag"):
        return PreconditionFailed(f"the event {event_id} changed since {etag}")
    series = current.get("recurrence") or current.get("recurringEventId")
    if event.recurrence is None and series:
        return SeriesInCalendar(
            f"the event {event_id} is a recurring series in the calendar; "
            "crmcal does not rewrite series yet"
        )
    written = (
        google_events.body(event, current)
        if item.changed is None
        else google_events.patch_body(event, current, item.changed)
    )
    written = google_events.writable(current, written)
    path = GoogleApi.call_path(calendar_id, event_id)
    return google_batch.Call("PATCH", path, send_updates(event), written,
                             {"If-Match": str(current.get("etag"))})  # fmt: skip
