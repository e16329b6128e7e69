"""A series in Outlook, read and written through Graph: its master with its cancelled
occurrences and exceptions folded in (Graph shows those only when asked by name, on a
GET of the master by id), and its occurrences written as ``microsoft_occurrences``
plans them. Reads and writes of many series go in ``$batch`` requests."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from crmcal.model import CalendarEvent, RemoteRef
from crmcal.providers import microsoft_events as codec
from crmcal.providers.base import FATAL, ProviderError
from crmcal.providers.microsoft_graph import PREFER, Graph, iso, read
from crmcal.providers.microsoft_items import key, ref, series_version
from crmcal.providers.microsoft_occurrences import (
    OccurrenceWrite,
    exceptions_by_start,
    occurrence_writes,
)

__all__ = ["Occurrences", "Results", "Series", "answer_each"]

# A series' cancelled occurrences (their start times) and exceptions (Graph's items).
Occurrences = tuple[list[str], list[dict[str, Any]]]
# What each item of a call of many answers, by position: None while it has no answer.
Results = list[RemoteRef | ProviderError | None]

# What a read of a series master asks for its cancelled occurrences and exceptions.
_OCCURRENCES = (
    "$select=cancelledOccurrences,exceptionOccurrences"
    f"&$expand=exceptionOccurrences,{codec.expand_properties()}"
)


class Series:
    """One mailbox's series, through its ``Graph``."""

    def __init__(self, graph: Graph) -> None:
        self._graph = graph
        self._api = graph.api

    async def occurrences(self, calendar_id: str, master_id: str) -> Occurrences:
        """A series' cancelled occurrences and its exceptions, in one read of the master."""
        found = (await self.occurrences_of(calendar_id, [master_id]))[master_id]
        if isinstance(found, ProviderError):
            raise found
        return found

    async def occurrences_of(
        self, calendar_id: str, master_ids: Sequence[str]
    ) -> dict[str, Occurrences | ProviderError]:
        """``occurrences`` of several series, by master id (or the error reading them),
        in ``$batch`` requests."""
        reads = [
            read(f"{Graph.event(calendar_id, master_id)}?{_OCCURRENCES}")
            for master_id in master_ids
        ]
        found: dict[str, Occurrences | ProviderError] = {}
        answers = await self._graph.send_all(reads) if reads else []
        for master_id, answer in zip(master_ids, answers, strict=True):
            if isinstance(answer, ProviderError):
                found[master_id] = answer
                continue
            if answer.status_code != 200:
                found[master_id] = self._api.failure(answer, "reading a series")
                continue
            found[master_id] = _occurrences_in(self._api.json(answer))
        return found

    async def occurrences_of_many(
        self, calendar_id: str, masters: dict[int, dict[str, Any]], results: Results
    ) -> dict[int, Occurrences]:
        """``occurrences_of`` the items' events that are series masters, by item; an
        item whose read fails answers that error in ``results``."""
        wanted = {n: str(m["id"]) for n, m in masters.items() if m.get("type") == "seriesMaster"}
        found = await self.occurrences_of(calendar_id, list(wanted.values()))
        occurrences: dict[int, Occurrences] = {}
        for n in masters:
            got = found.get(wanted[n]) if n in wanted else ([], [])
            if isinstance(got, ProviderError):
                results[n] = got
            elif got is not None:
                occurrences[n] = got
        return occurrences

    async def series_ref(
        self, calendar_id: str, master: dict[str, Any], occurrences: Occurrences | None = None
    ) -> RemoteRef:
        """A series master with its cancelled occurrences and exceptions folded in; its
        version covers them (an exception changes the series, not the master's key)."""
        if occurrences is None:
            occurrences = await self.occurrences(calendar_id, str(master["id"]))
        cancelled, exceptions = occurrences
        found = ref(master)
        if found.event is None:
            return found
        try:
            zone_name = codec.series_zone(master)
            event = codec.with_exceptions(found.event, cancelled, exceptions, zone_name)
        except (ValueError, TypeError, KeyError) as failure:
            return RemoteRef(found.id, found.etag, error=f"unreadable series: {failure}")
        version = series_version(found.etag, cancelled, exceptions)
        return RemoteRef(found.id, version, event, warning=found.warning)

    async def read_back(self, calendar_id: str, master_id: str) -> RemoteRef:
        """A series as it is now: the master and its occurrences in one ``$batch``."""
        path = Graph.event(calendar_id, master_id)
        reads = [read(f"{path}?$expand={codec.expand_properties()}"),
                 read(f"{path}?{_OCCURRENCES}")]  # fmt: skip
        back: list[dict[str, Any]] = []
        for answer in await self._graph.send_all(reads):
            if isinstance(answer, ProviderError):
                raise answer
            if answer.status_code != 200:
                raise self._api.failure(answer, "reading a series")
            back.append(self._api.json(answer))
        return await self.series_ref(calendar_id, back[0], _occurrences_in(back[1]))

    async def write_occurrences(
        self,
        calendar_id: str,
        master: dict[str, Any],
        event: CalendarEvent,
        occurrences: Occurrences,
        changed: frozenset[str] | None = None,
    ) -> RemoteRef:
        """Make the series' occurrences in Outlook what ``event`` says (the writes
        ``microsoft_occurrences`` plans; ``changed`` limits them as it says).
        Occurrences are found by id where they are exceptions already, else by
        ``instances`` over the moment they start; reads and writes each go in
        ``$batch`` requests. Answers the series as it is then."""
        master_id = str(master["id"])
        series = ref(master).event
        zone_name = codec.series_zone(master)
        if series is None or series.recurrence is None:
            return ref(master)
        cancelled, exceptions = occurrences
        existing = exceptions_by_start(exceptions, series, zone_name)
        wanted = occurrence_writes(series, event, cancelled, existing, zone_name, changed)
        if not wanted:
            return await self.series_ref(calendar_id, master, occurrences)
        ids = {k: str(e["id"]) for k, e in existing.items()}
        lookups = [(w.key, w.moment) for w in wanted if w.key not in ids]
        ids |= await self._find_occurrences(calendar_id, master_id, series, zone_name, lookups)
        deleted, patched = await self._send_occurrence_writes(calendar_id, wanted, ids)
        if not deleted:  # the patches answered the exceptions as they are now
            now = {str(e["id"]): e for e in exceptions} | patched
            return await self.series_ref(calendar_id, master, (cancelled, list(now.values())))
        # A cancelled occurrence changes the master's version: the series is read back.
        return await self.read_back(calendar_id, master_id)

    async def _send_occurrence_writes(
        self, calendar_id: str, wanted: list[OccurrenceWrite], ids: dict[str, str]
    ) -> tuple[bool, dict[str, dict[str, Any]]]:
        """Send the writes of the occurrences found (``ids`` by original start; one not
        found is no more, and nothing to change). Answers whether any was deleted, and
        the occurrences patched, by id; raises the first failure (a 404 is none: the
        occurrence is gone already)."""
        requests = []
        for write in wanted:
            if write.key not in ids:
                continue
            request: dict[str, Any] = {
                "method": write.method, "url": Graph.event(calendar_id, ids[write.key])
            }  # fmt: skip
            if write.body is not None:
                headers = {"Content-Type": "application/json", "Prefer": PREFER}
                request |= {"body": write.body, "headers": headers}
            requests.append(request)
        failure: ProviderError | None = None
        patched: dict[str, dict[str, Any]] = {}
        deleted = False
        for request, answer in zip(requests, await self._graph.send_all(requests), strict=True):
            if isinstance(answer, ProviderError):
                failure = failure or answer
            elif answer.status_code not in (200, 201, 204, 404):
                failure = failure or self._api.failure(answer, "writing an occurrence")
            elif request["method"] == "DELETE":
                deleted = True
            elif answer.status_code in (200, 201):
                item = self._api.json(answer)
                patched[str(item.get("id"))] = item
        if failure is not None:
            raise failure
        return deleted, patched

    async def _find_occurrences(
        self,
        calendar_id: str,
        master_id: str,
        series: CalendarEvent,
        zone_name: str | None,
        wanted: list[tuple[str, dt.datetime | dt.date]],
    ) -> dict[str, str]:
        """The ids of a series' occurrences by original start: ``instances`` over a
        short window around each one (never the whole series), in ``$batch`` requests."""
        if not wanted:
            return {}
        requests = []
        for _, moment in wanted:
            if isinstance(moment, dt.datetime):
                start, end = moment, moment + dt.timedelta(minutes=1)
            else:  # a day of an all-day series, in whatever zone it is kept
                first = dt.datetime.combine(moment, dt.time(), dt.UTC)
                start, end = first - dt.timedelta(days=1), first + dt.timedelta(days=2)
            query = f"startDateTime={iso(start)}&endDateTime={iso(end)}"
            url = f"{Graph.event(calendar_id, master_id)}/instances?{query}"
            requests.append({"method": "GET", "url": url, "headers": {"Prefer": PREFER}})
        found: dict[str, str] = {}
        for (at, _), answer in zip(wanted, await self._graph.send_all(requests), strict=True):
            if isinstance(answer, ProviderError):
                raise answer
            if answer.status_code != 200:
                raise self._api.failure(answer, "finding an occurrence")
            for item in self._api.json(answer).get("value") or []:
                original = codec.original_start(item, series, zone_name)
                if original is not None and key(original) == at:
                    found[at] = str(item["id"])
        return found


async def answer_each(
    results: Results,
    masters: dict[int, dict[str, Any]],
    write: Callable[[int], Awaitable[RemoteRef]],
) -> None:
    """Each series in ``masters`` not answered yet answers what ``write`` of it does
    (its occurrences written), in turn; a failure of the whole account stops them
    (``_answer_rest``)."""
    for n in masters:
        if results[n] is not None:
            continue  # its occurrences could not be read: that error is its answer
        try:
            results[n] = await write(n)
        except FATAL as failure:
            _answer_rest(results, masters, failure)
            break
        except ProviderError as failure:
            results[n] = failure


def _answer_rest(
    results: Results, masters: dict[int, dict[str, Any]], failure: ProviderError
) -> None:
    """A failure of the whole account (``FATAL``) while a series' occurrences were
    written: that series and every one after it not answered yet answer it, and no
    more occurrences are written (each would fail alike, or write on for an account
    the sync stops for). A master made but left without its occurrences is found by
    its create's key next time, which writes them then."""
    for n in masters:
        if results[n] is None:
            results[n] = failure


def _occurrences_in(data: dict[str, Any]) -> Occurrences:
    """A series' cancelled occurrences and exceptions, as a read of ``_OCCURRENCES`` has them."""
    cancelled = [str(c) for c in data.get("cancelledOccurrences") or []]
    return cancelled, [e for e in data.get("exceptionOccurrences") or [] if isinstance(e, dict)]
