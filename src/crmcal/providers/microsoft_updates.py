"""Updates of Outlook events through Graph, one or many in ``$batch`` requests.

A single event's update sends ``If-Match``, and its times are never written over a
series (that would move every occurrence). A series is written as its master's PATCH
(only what differs from the master Outlook has, as Outlook mails attendees on every
write) and then its occurrences (``Series.write_occurrences``), under the version
read, which covers its exceptions: an occurrence changed meanwhile by someone else is
``PreconditionFailed``, never overwritten.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import httpx

from crmcal.model import CalendarEvent, RemoteRef, canonical_rrule, changed_fields
from crmcal.providers import microsoft_events as codec
from crmcal.providers.base import (
    EventNotFound,
    PreconditionFailed,
    ProviderError,
    SeriesInCalendar,
    Unreachable,
    Update,
)
from crmcal.providers.microsoft_graph import PREFER, Graph, read
from crmcal.providers.microsoft_items import master, ref, version
from crmcal.providers.microsoft_series import Occurrences, Results, Series, answer_each

__all__ = ["Updates"]

# A series the last read of one event saw: its master and occurrences, by item.
Known = dict[int, tuple[dict[str, Any], Occurrences]]


class Updates:
    """The updates of one mailbox's events, through its ``Graph`` and ``Series``."""

    def __init__(self, graph: Graph, series: Series) -> None:
        self._graph = graph
        self._api = graph.api
        self._series = series

    async def update_single(
        self,
        calendar_id: str,
        event_id: str,
        etag: str,
        event: CalendarEvent,
        changed: frozenset[str] | None,
    ) -> RemoteRef:
        """``update`` of an event that is no series (crmcal's side of it)."""
        written = _update_body(event, changed)
        if _guarded(Update(event_id, etag, event, changed)):
            await self._refuse_series(calendar_id, event_id)
        response = await self._graph.request(
            "PATCH",
            Graph.event(calendar_id, event_id),
            json=written,
            headers={"If-Match": version(etag)} if etag else None,
        )
        result = self._updated(event_id, etag, response)
        if isinstance(result, ProviderError):
            raise result
        return result

    async def update_many(
        self, calendar_id: str, items: Sequence[Update], known: Known
    ) -> list[RemoteRef | ProviderError]:
        """``update`` for many events in ``$batch`` requests: the reads that guard a
        series from a single event's times with the reads of the series' masters, then
        the series' cancelled occurrences and exceptions, then the patches (single
        events and masters together), then each series' occurrences
        (``Series.write_occurrences``). A series in ``known`` is not read again. Each
        item answers on its own."""
        results: Results = [None] * len(items)
        singles = [n for n, item in enumerate(items) if item.event.recurrence is None]
        guarded = [n for n in singles if _guarded(items[n])]
        series = [n for n, item in enumerate(items) if item.event.recurrence is not None]
        series = [n for n in series if n not in known]
        masters = await self._read_for_update(calendar_id, items, guarded, series, results)
        occurrences = await self._series.occurrences_of_many(calendar_id, masters, results)
        for n, (master_item, occurrences_read) in known.items():
            masters[n], occurrences[n] = master_item, occurrences_read
        bodies = await self._plan_series(calendar_id, items, masters, occurrences, results)
        relisted = await self._patch_all(calendar_id, items, singles, masters, bodies, results)
        occurrences |= await self._series.occurrences_of_many(calendar_id, relisted, results)
        await answer_each(
            results, masters,
            lambda n: self._series.write_occurrences(
                calendar_id, masters[n], items[n].event, occurrences[n], items[n].changed
            ),
        )  # fmt: skip
        return [r if r is not None else Unreachable("no answer") for r in results]

    async def _refuse_series(self, calendar_id: str, event_id: str) -> None:
        """A single event's times are never written over a series (it would move every
        occurrence): ``SeriesInCalendar`` when the event is one now."""
        response = await self._graph.request(
            "GET", Graph.event(calendar_id, event_id), params={"$select": "type"}
        )
        if response.status_code == 200 and self._api.json(response).get("type") == "seriesMaster":
            raise _series_in_calendar(event_id)

    def _updated(
        self, event_id: str, etag: str, response: httpx.Response
    ) -> RemoteRef | ProviderError:
        refused = self._api.refused_update(response, event_id, etag)
        if refused is not None:
            return refused
        return ref(self._api.json(response))

    async def _read_for_update(
        self,
        calendar_id: str,
        items: Sequence[Update],
        guarded: list[int],
        series: list[int],
        results: Results,
    ) -> dict[int, dict[str, Any]]:
        """The reads before the writes, in the same ``$batch`` requests: the type of each
        ``guarded`` single event (one that is a series now answers ``SeriesInCalendar``)
        and the master of each ``series``, answered by item. A read that fails answers
        its item in ``results``."""
        expand = f"$expand={codec.expand_properties()}"
        reads = [
            read(Graph.event(calendar_id, items[n].event_id) + "?$select=type") for n in guarded
        ] + [read(f"{Graph.event(calendar_id, items[n].event_id)}?{expand}") for n in series]
        answers = await self._graph.send_all(reads) if reads else []
        for n, answer in zip(guarded, answers[: len(guarded)], strict=True):
            if self._is_series(answer):
                results[n] = _series_in_calendar(items[n].event_id)
        masters: dict[int, dict[str, Any]] = {}
        for n, answer in zip(series, answers[len(guarded) :], strict=True):
            if isinstance(answer, ProviderError):
                results[n] = answer
            elif answer.status_code in (404, 410):
                results[n] = EventNotFound(f"the event {items[n].event_id} does not exist")
            elif answer.status_code != 200:
                results[n] = self._api.failure(answer, "reading an event")
            else:
                masters[n] = self._api.json(answer)
        return masters

    def _is_series(self, answer: httpx.Response | ProviderError) -> bool:
        """Whether a read of an event's type answered a series' master (a failed read
        says nothing: the write goes on, and its If-Match guards it)."""
        if isinstance(answer, ProviderError) or answer.status_code != 200:
            return False
        body = self._api.json(answer)
        return isinstance(body, dict) and body.get("type") == "seriesMaster"

    async def _plan_series(
        self,
        calendar_id: str,
        items: Sequence[Update],
        masters: dict[int, dict[str, Any]],
        occurrences: dict[int, Occurrences],
        results: Results,
    ) -> dict[int, dict[str, Any]]:
        """The PATCH body of each series' master (``_series_patch``), by item, with the
        occurrences Outlook keeps after it put in ``occurrences``. A series answered
        already (its occurrences could not be read) or that cannot be written leaves
        ``masters``; the latter answers why in ``results``."""
        bodies: dict[int, dict[str, Any]] = {}
        for n in list(masters):
            if results[n] is not None:
                del masters[n]
                continue
            planned = await self._series_patch(calendar_id, items[n], masters[n], occurrences[n])
            if isinstance(planned, ProviderError):
                results[n] = planned
                del masters[n]
                continue
            bodies[n], occurrences[n] = planned
        return bodies

    async def _series_patch(
        self, calendar_id: str, item: Update, read_master: dict[str, Any], occurrences: Occurrences
    ) -> tuple[dict[str, Any], Occurrences] | ProviderError:
        """The PATCH body of a series' master written over the one Outlook has (only what
        differs from it; empty of fields when nothing does), and the occurrences Outlook
        keeps after it; or why none is. The version named covers the exceptions too: an
        occurrence changed meanwhile by someone else is ``PreconditionFailed``, never
        overwritten."""
        event_id, etag, event, changed = item.event_id, item.etag, item.event, item.changed
        if read_master.get("type") == "seriesMaster":
            current = await self._series.series_ref(calendar_id, read_master, occurrences)
        else:
            current = ref(read_master)
        if etag and etag != current.etag:
            return PreconditionFailed(f"the event {event_id} changed since {etag}")
        before = current.event
        groups = changed if changed is not None or before is None else _differing(before, event)
        try:
            written = _update_body(master(event), groups)
        except ProviderError as failure:
            return failure
        if before is not None and before.recurrence is not None:
            if _same_pattern(before, event):
                # Outlook drops a series' exceptions and cancellations when its times or
                # pattern are written, and would take crmcal's spelling of the pattern.
                for field in ("start", "end", "isAllDay", "recurrence"):
                    written.pop(field, None)
            else:
                occurrences = ([], [])  # what Outlook keeps of them after the patch
        return written, occurrences

    async def _patch_all(
        self,
        calendar_id: str,
        items: Sequence[Update],
        singles: list[int],
        masters: dict[int, dict[str, Any]],
        bodies: dict[int, dict[str, Any]],
        results: Results,
    ) -> dict[int, dict[str, Any]]:
        """The PATCHes of the single events not answered yet and of the masters whose
        own fields change, in ``$batch`` requests. A single event answers its result; a
        master patched is in ``masters`` as it is now, or leaves it with its failure
        answered. Answers the masters whose pattern was written (Outlook re-lists their
        occurrences), by item."""
        patched = [n for n in singles if results[n] is None] + [
            n for n in masters if set(bodies[n]) - {"singleValueExtendedProperties"}
        ]
        requests = [
            _patch_request(calendar_id, items[n], bodies.get(n), masters.get(n)) for n in patched
        ]
        answers = await self._graph.send_all(requests) if requests else []
        relisted: dict[int, dict[str, Any]] = {}
        for n, answer in zip(patched, answers, strict=True):
            result = (
                answer
                if isinstance(answer, ProviderError)
                else self._updated(items[n].event_id, items[n].etag, answer)
            )
            if n not in masters or isinstance(result, ProviderError):
                results[n] = result
                masters.pop(n, None)
                continue
            assert isinstance(answer, httpx.Response)
            masters[n] = self._api.json(answer)
            if "recurrence" in bodies[n]:
                relisted[n] = masters[n]
        return relisted


def _guarded(item: Update) -> bool:
    """Whether an update's times need a read first, lest they go over a series:
    not when the caller saw its version as a single event's, as an event turned
    into a series since answers 412 (its change key moved) to the If-Match."""
    if item.single and item.etag:
        return False
    return item.changed is None or "when" in item.changed


def _update_body(event: CalendarEvent, changed: frozenset[str] | None) -> dict[str, Any]:
    try:
        if changed is None:
            return codec.body(event, with_attendees=event.notify_attendees)
        return codec.patch_body(event, with_attendees=event.notify_attendees, changed=changed)
    except ValueError as failure:
        raise ProviderError(str(failure)) from None


def _differing(before: CalendarEvent, event: CalendarEvent) -> frozenset[str]:
    """The fields of a series' master that ``event`` changes from ``before``: only
    those are written, as Outlook mails attendees on every write, and rewriting a
    master re-lists all of its occurrences."""
    now = master(event)
    if not event.notify_attendees:
        now = replace(now, attendees=before.attendees, organizer=before.organizer)
    return changed_fields(master(before), now) - {"overrides"}


def _same_pattern(before: CalendarEvent, event: CalendarEvent) -> bool:
    """Whether a series keeps its pattern and times: both ``before`` and ``event``
    recur by the same rule from the same start."""
    assert before.recurrence is not None
    assert event.recurrence is not None
    same_rule = canonical_rrule(before.recurrence.rrule) == canonical_rrule(event.recurrence.rrule)
    same_times = (before.start, before.end, before.all_day) == (
        event.start, event.end, event.all_day
    )  # fmt: skip
    return same_rule and same_times


def _patch_request(
    calendar_id: str, item: Update, body: dict[str, Any] | None, master_item: dict[str, Any] | None
) -> dict[str, Any]:
    """The PATCH of ``item`` in a ``$batch``: a series' master with the ``body``
    planned for it, under the version read (which the series' version covers), or a
    single event under the version named."""
    headers = {"Content-Type": "application/json", "Prefer": PREFER}
    if master_item is not None:
        assert body is not None
        headers["If-Match"] = version(item.etag or ref(master_item).etag)
    else:
        body = _update_body(item.event, item.changed)
        if item.etag:
            headers["If-Match"] = version(item.etag)
    url = Graph.event(calendar_id, item.event_id)
    return {"method": "PATCH", "url": url, "headers": headers, "body": body}


def _series_in_calendar(event_id: str) -> SeriesInCalendar:
    """Why a single event's times are not written over the series ``event_id`` is now."""
    return SeriesInCalendar(
        f"the event {event_id} is a recurring series in the calendar; "
        "crmcal does not rewrite series yet"
    )
