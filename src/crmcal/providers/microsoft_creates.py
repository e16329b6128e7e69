"""Creates of Outlook events through Graph, one or many in ``$batch`` requests.

A create carries a ``transactionId`` (Graph creates nothing on a replay, so it is safe
to send again) and crmcal's ids as single-value extended properties. A replayed
``transactionId`` answers the event made before; when that event differs from what is
written now, the create is ``PreconditionFailed``. Graph takes a series' pattern only:
its left-out dates and changed occurrences are written after its master is made.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

from crmcal.model import CalendarEvent, RemoteRef
from crmcal.providers import microsoft_events as codec
from crmcal.providers.base import PreconditionFailed, ProviderError, Unreachable
from crmcal.providers.kept_http import REPEATABLE
from crmcal.providers.microsoft_graph import PREFER, Graph
from crmcal.providers.microsoft_items import master, ref, same
from crmcal.providers.microsoft_series import Occurrences, Results, Series, answer_each

__all__ = ["Creates"]


class Creates:
    """The creates of one mailbox's events, through its ``Graph`` and ``Series``."""

    def __init__(self, graph: Graph, series: Series) -> None:
        self._graph = graph
        self._api = graph.api
        self._series = series

    async def create(self, calendar_id: str, key: str, event: CalendarEvent) -> RemoteRef:
        # Graph makes nothing twice for one transactionId: safe to send again.
        response = await self._graph.request(
            "POST",
            Graph.events(calendar_id),
            params={"$expand": codec.expand_properties()},
            json=_create_body(key, event),
            extensions={REPEATABLE: True},
        )
        if response.status_code not in (200, 201):
            raise self._api.failure(response, "creating an event", write=True)
        return await self._created_series(calendar_id, key, event, self._api.json(response))

    async def create_many(
        self, calendar_id: str, items: Sequence[tuple[str, CalendarEvent]]
    ) -> list[RemoteRef | ProviderError]:
        """Creates in ``$batch`` requests of 20, series and single events alike; each
        item answers on its own (one refused, or whose body cannot be written, fails
        no other).

        A series takes three steps: its master is made in the creates' batches; the
        masters made are read back for their occurrences together, in batches of
        their own; then a series with left-out dates or changed occurrences has those
        written (Graph takes a pattern only).
        """
        if len(items) == 1:  # a batch of one is one more envelope for nothing
            try:
                return [await self.create(calendar_id, *items[0])]
            except PreconditionFailed as exists:
                return [exists]
        results: Results = [None] * len(items)
        sent, requests = _create_requests(calendar_id, items, results)
        answers = await self._graph.send_all(requests) if requests else []
        masters = self._made(items, sent, answers, results)
        # The series made: their occurrences read for all of them at once.
        occurrences = await self._series.occurrences_of_many(calendar_id, masters, results)
        await answer_each(
            results, masters,
            lambda n: self._created_series(calendar_id, *items[n], masters[n], occurrences.get(n)),
        )  # fmt: skip
        return [r if r is not None else Unreachable("no answer") for r in results]

    async def _created_series(
        self,
        calendar_id: str,
        key: str,
        event: CalendarEvent,
        item: dict[str, Any],
        occurrences: Occurrences | None = None,
    ) -> RemoteRef:
        """A series just made: its left-out dates and changed occurrences written (Graph
        takes a pattern only), or, for a replayed create, the series as it is.
        ``occurrences``: the series' as read already (else read here)."""
        made = _created(key, event, item)
        if event.recurrence is None or item.get("type") != "seriesMaster":
            return made
        if occurrences is None:
            occurrences = await self._series.occurrences(calendar_id, made.id)
        if occurrences != ([], []):
            return await self._series.series_ref(calendar_id, item, occurrences)  # made before
        if not event.recurrence.exdates and not event.overrides:
            return await self._series.series_ref(calendar_id, item, occurrences)
        return await self._series.write_occurrences(calendar_id, item, event, occurrences)

    def _made(
        self,
        items: Sequence[tuple[str, CalendarEvent]],
        sent: list[int],
        answers: list[httpx.Response | ProviderError],
        results: Results,
    ) -> dict[int, dict[str, Any]]:
        """The answers to the creates ``sent``: a single event's in ``results``; the
        masters of the series made, by item, for their occurrences to be written."""
        masters: dict[int, dict[str, Any]] = {}
        for n, answer in zip(sent, answers, strict=True):
            if isinstance(answer, ProviderError):
                results[n] = answer
            elif answer.status_code not in (200, 201):
                results[n] = self._api.failure(answer, "creating an event", write=True)
            elif items[n][1].recurrence is not None:
                masters[n] = self._api.json(answer)
            else:
                try:
                    results[n] = _created(*items[n], self._api.json(answer))
                except PreconditionFailed as exists:
                    results[n] = exists
        return masters


def _create_body(key: str, event: CalendarEvent) -> dict[str, Any]:
    try:
        written = codec.body(master(event), with_attendees=event.notify_attendees, key=key)
    except ValueError as failure:
        raise ProviderError(str(failure)) from None
    return {**written, "transactionId": key}


def _create_requests(
    calendar_id: str, items: Sequence[tuple[str, CalendarEvent]], results: Results
) -> tuple[list[int], list[dict[str, Any]]]:
    """The POST of each item in a ``$batch``, and the items they make; an item whose
    body cannot be written answers why in ``results``."""
    url = f"{Graph.events(calendar_id)}?$expand={codec.expand_properties()}"
    headers = {"Content-Type": "application/json", "Prefer": PREFER}
    sent: list[int] = []
    requests: list[dict[str, Any]] = []
    for n, (key, event) in enumerate(items):
        try:
            body = _create_body(key, event)
        except ProviderError as failure:
            results[n] = failure
            continue
        sent.append(n)
        requests.append({"method": "POST", "url": url, "headers": headers, "body": body})
    return sent, requests


def _created(key: str, event: CalendarEvent, item: dict[str, Any]) -> RemoteRef:
    """The answer to a create: a replayed ``transactionId`` answers the event made
    before, which counts as existing when it says something else now."""
    made = ref(item)
    if made.event is None or not same(made.event, master(event)):
        raise PreconditionFailed(f"an event for {key!r} exists already")
    return made
