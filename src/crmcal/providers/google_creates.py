"""Creates of Google events, one or many in batch requests.

``events.insert`` with an id derived from the activity's key: a replay answers 409, so
a retried create never makes a copy. Google never frees the id of a deleted event, so
a create whose id is taken brings back the event crmcal made and someone deleted. A
series' changed occurrences are written once the series exists.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from crmcal.model import CalendarEvent, RemoteRef
from crmcal.providers import google_batch, google_events
from crmcal.providers.base import PreconditionFailed, ProviderError, Unreachable
from crmcal.providers.google_api import GoogleApi, send_updates
from crmcal.providers.google_items import changed_overrides, master, ref
from crmcal.providers.google_series import Series, Written
from crmcal.providers.kept_http import REPEATABLE

__all__ = ["Creates"]


class Creates:
    """The creates of one account's events, through its ``GoogleApi`` and ``Series``."""

    def __init__(self, google: GoogleApi, series: Series) -> None:
        self._google = google
        self._api = google.api
        self._series = series

    async def create(self, calendar_id: str, key: str, event: CalendarEvent) -> RemoteRef:
        written = _insert_body(key, event)
        # The client-chosen id makes a second insert a 409: safe to send again.
        response = await self._google.request(
            "POST", GoogleApi.events(calendar_id), params=send_updates(event), json=written,
            extensions={REPEATABLE: True},
        )  # fmt: skip
        if response.status_code == 409:
            return await self._revive(calendar_id, key, event)
        if response.status_code != 200:
            raise self._api.failure(response, "creating an event", write=True)
        item = self._api.json(response)
        if changed_overrides(event):
            return await self._series.write_occurrences(calendar_id, item, event, [])
        return ref(item, self._google.zone(calendar_id))

    async def create_many(
        self, calendar_id: str, items: Sequence[tuple[str, CalendarEvent]]
    ) -> list[RemoteRef | ProviderError]:
        """``create`` for many events, in batch requests of ``BATCH_SIZE`` calls.

        Each item answers on its own: its event, ``PreconditionFailed`` when it exists
        already, or the error it got. Calls refused for rate limits or server errors
        are sent again, in a later batch after the backoff, alone with the others
        that need it.
        """
        results: list[RemoteRef | ProviderError | None] = [None] * len(items)
        revive: list[int] = []
        # Series made with changed occurrences: those are written once the series exists.
        series: list[tuple[int, dict[str, Any]]] = []
        zone = self._google.zone(calendar_id)
        path = GoogleApi.call_path(calendar_id)
        calls = [
            google_batch.Call("POST", path, send_updates(event), _insert_body(key, event))
            for key, event in items
        ]
        for n, answer in enumerate(await self._google.send_all(calls)):
            if isinstance(answer, ProviderError):
                results[n] = answer
            elif answer.status_code == 200:
                results[n] = ref(self._api.json(answer), zone)
                if changed_overrides(items[n][1]):
                    series.append((n, self._api.json(answer)))
            elif answer.status_code == 409:
                revive.append(n)
            else:
                results[n] = self._api.failure(answer, "creating an event", write=True)
        made: list[Written] = [(item, items[n][1], [], None) for n, item in series]
        written = await self._series.write_occurrences_of(calendar_id, made)
        for (n, _), made_ref in zip(series, written, strict=True):
            results[n] = made_ref
        for n in revive:  # rare: one by one
            try:
                results[n] = await self._revive(calendar_id, *items[n])
            except PreconditionFailed as exists:
                results[n] = exists
        return [r if r is not None else Unreachable("no answer") for r in results]

    async def _revive(self, calendar_id: str, key: str, event: CalendarEvent) -> RemoteRef:
        """``create`` for a key whose id is taken: Google never frees the id of a deleted
        event, so an event crmcal made and someone deleted is brought back (an
        update may restore a cancelled event). A live one that holds what is written
        now is the one made: the insert was sent again after its answer was lost (or
        a run that made it stopped before keeping its link). Any other live one is
        ``PreconditionFailed``, for the caller to pair and reconcile."""
        event_id = google_events.event_id_for(key)
        response = await self._google.request("GET", GoogleApi.events(calendar_id, event_id))
        if response.status_code != 200:
            raise PreconditionFailed(f"an event for {key!r} exists already (409)")
        current = self._api.json(response)
        if current.get("status") != "cancelled":
            found = ref(current, self._google.zone(calendar_id))
            if (
                found.event is not None
                and not changed_overrides(event)
                and _same(found.event, event)
            ):
                return found
            raise PreconditionFailed(f"an event for {key!r} exists already (409)")
        response = await self._google.request(
            "PUT",
            GoogleApi.events(calendar_id, event_id),
            params=send_updates(event),
            json={**_insert_body(key, event), "status": "confirmed"},
            headers={"If-Match": str(current.get("etag"))},
        )
        if response.status_code == 412:
            raise PreconditionFailed(f"the event for {key!r} changed while it was restored")
        if response.status_code != 200:
            raise self._api.failure(response, "restoring a deleted event")
        return ref(self._api.json(response), self._google.zone(calendar_id))


def _insert_body(key: str, event: CalendarEvent) -> dict[str, Any]:
    """The body that makes ``event`` (its series' master, when a series) under the id
    derived from ``key``."""
    written = {**google_events.body(master(event)), "id": google_events.event_id_for(key)}
    made: dict[str, Any] = google_events.without_nulls(written)
    return made


def _same(read: CalendarEvent, written: CalendarEvent) -> bool:
    """Whether the event read holds what ``written`` says (its series' master, when a
    series: occurrences changed on their own are written after the master is made)."""
    return read.content_hash() == master(written).content_hash()
