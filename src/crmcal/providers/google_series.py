"""A series in Google, read and written through the API: the exceptions Google keeps
beside each series (its changed and cancelled occurrences), and its occurrences
written as ``google_occurrences`` plans them. Reads and writes of many series go in
the same batch requests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

from crmcal.model import CalendarEvent, RemoteRef
from crmcal.providers import google_api, google_batch
from crmcal.providers.base import PreconditionFailed, ProviderError, Unreachable
from crmcal.providers.google_api import GoogleApi, send_updates
from crmcal.providers.google_items import ref
from crmcal.providers.google_occurrences import OccurrenceCalls

__all__ = ["Series", "Written"]

# One series' occurrences to write: its master as Google has it, the event that says
# what they are, the exceptions Google has, and the field groups the write changes.
Written = tuple[dict[str, Any], CalendarEvent, list[dict[str, Any]], frozenset[str] | None]


class Series:
    """One account's series, through its ``GoogleApi``."""

    def __init__(self, google: GoogleApi) -> None:
        self._google = google
        self._api = google.api

    async def exceptions_of(
        self, calendar_id: str, series: Sequence[dict[str, Any]]
    ) -> dict[str, list[dict[str, Any]] | ProviderError]:
        """The changed and cancelled occurrences Google keeps beside each series, by
        series id (or the error reading them): every first page in batch requests (one
        request for up to ``BATCH_SIZE`` series, not one each); the rare series with
        more than a page of exceptions pages on alone."""
        path = GoogleApi.call_path(calendar_id)
        calls = [google_batch.Call("GET", path, _exceptions_query(s)) for s in series]
        answers = await self._google.send_all(calls) if calls else []
        found: dict[str, list[dict[str, Any]] | ProviderError] = {}
        for item, answer in zip(series, answers, strict=True):
            found[str(item["id"])] = await self._all_exceptions(calendar_id, item, answer)
        return found

    async def _all_exceptions(
        self, calendar_id: str, item: dict[str, Any], answer: httpx.Response | ProviderError
    ) -> list[dict[str, Any]] | ProviderError:
        """One series' exceptions from the first page's ``answer`` on, or the error
        reading them."""
        master_id = str(item["id"])
        params = _exceptions_query(item)
        mine: list[dict[str, Any]] | ProviderError = []
        seen: set[str] = set()
        while isinstance(mine, list):
            if isinstance(answer, ProviderError):
                mine = answer
            elif answer.status_code != 200:
                mine = self._api.failure(answer, "reading a series")
            else:
                data = self._api.json(answer)
                mine += [i for i in data.get("items", []) if i.get("recurringEventId") == master_id]
                try:
                    page = google_api.next_page(data, seen)
                except ProviderError as error:
                    mine = error
                    break
                if not page:
                    break
                params["pageToken"] = page
                answer = await self._google.request(
                    "GET", GoogleApi.events(calendar_id), params=params
                )
        return mine

    async def write_occurrences(
        self,
        calendar_id: str,
        master: dict[str, Any],
        event: CalendarEvent,
        exceptions: list[dict[str, Any]],
        changed: frozenset[str] | None = None,
    ) -> RemoteRef:
        """Make the series' occurrences in Google what ``event.overrides`` says, in one
        batch (the writes ``google_occurrences`` plans). Answers the series as it is
        then.

        ``changed`` names what the update writes: changed occurrences with
        "overrides", cancelled ones (EXDATEs alike) with "recurrence"."""
        written = (master, event, exceptions, changed)
        (result,) = await self.write_occurrences_of(calendar_id, [written])
        if isinstance(result, ProviderError):
            raise result
        return result

    async def write_occurrences_of(
        self, calendar_id: str, series: Sequence[Written]
    ) -> list[RemoteRef | ProviderError]:
        """``write_occurrences`` for several series (master, event, exceptions,
        changed): the writes of all of them in the same batch requests, then the
        exceptions of those that cancelled some read back together. Each series answers
        on its own."""
        zone = self._google.zone(calendar_id)
        planned, answers = await self._send_occurrence_calls(calendar_id, series)
        results: list[RemoteRef | ProviderError | None] = []
        at = 0
        for (master, _, exceptions, _), calls in zip(series, planned, strict=True):
            mine, at = answers[at : at + len(calls)], at + len(calls)
            results.append(self._occurrences_written(zone, master, exceptions, calls, mine))
        # A series that had an occurrence deleted: what Google keeps of a cancelled
        # occurrence is read back, for all of them together.
        reread = [k for k, result in enumerate(results) if result is None]
        if reread:
            masters = [series[k][0] for k in reread]
            found = await self.exceptions_of(calendar_id, masters)
            for k, master in zip(reread, masters, strict=True):
                now = found[str(master["id"])]
                results[k] = now if isinstance(now, ProviderError) else ref(master, zone, now)
        return [r if r is not None else Unreachable("no answer") for r in results]

    async def _send_occurrence_calls(
        self, calendar_id: str, series: Sequence[Written]
    ) -> tuple[list[list[google_batch.Call]], list[httpx.Response | ProviderError]]:
        """The occurrence writes of every series (``_occurrence_calls``), by series, and
        their answers in the same order, sent together; a write that named its series'
        etag and was refused for it is sent again under its own (``_under_own_etags``)."""
        planned_pairs = [self._occurrence_calls(calendar_id, *written) for written in series]
        planned = [[call for call, _ in pairs] for pairs in planned_pairs]
        flat = [call for calls in planned for call in calls]
        answers = await self._google.send_all(flat) if flat else []
        by_series = [named for pairs in planned_pairs for _, named in pairs]
        owners = [k for k, calls in enumerate(planned) for _ in calls]
        refused = [
            n for n, answer in enumerate(answers)
            if by_series[n] and isinstance(answer, httpx.Response) and answer.status_code == 412
        ]  # fmt: skip
        if refused:
            masters = [series[k][0] for k in dict.fromkeys(owners[n] for n in refused)]
            retried = await self._under_own_etags(calendar_id, masters, flat, refused)
            for n, answer in retried.items():
                answers[n] = answer
        return planned, answers

    def _occurrences_written(
        self,
        zone: str,
        master: dict[str, Any],
        exceptions: list[dict[str, Any]],
        calls: list[google_batch.Call],
        answers: list[httpx.Response | ProviderError],
    ) -> RemoteRef | ProviderError | None:
        """One series' answer to its occurrence writes: the first failure, else the
        series as the patches answered its exceptions; None when one was deleted (the
        series is to be read back)."""
        failure: ProviderError | None = None
        by_id = {str(e["id"]): e for e in exceptions}
        deleted = False
        for call, answer in zip(calls, answers, strict=True):
            if isinstance(answer, ProviderError):
                failure = failure or answer
            elif call.method == "PATCH" and answer.status_code == 200:
                item = self._api.json(answer)
                by_id[str(item["id"])] = item
            elif call.method == "DELETE" and answer.status_code in (200, 204, 410):
                deleted = True  # what Google keeps of a cancelled occurrence is read back
            elif answer.status_code == 412:
                # Changed meanwhile by someone else: left as it is, and the series
                # decided again by the next sync.
                failure = failure or PreconditionFailed(
                    f"an occurrence of the event {master['id']} changed meanwhile"
                )
            else:
                failure = failure or self._api.failure(answer, "writing an occurrence")
        if failure is not None:
            return failure
        return None if deleted else ref(master, zone, list(by_id.values()))

    async def _under_own_etags(
        self,
        calendar_id: str,
        masters: list[dict[str, Any]],
        calls: list[google_batch.Call],
        refused: list[int],
    ) -> dict[int, httpx.Response | ProviderError]:
        """The writes ``calls[n]`` (``n`` in ``refused``) of occurrences that were no
        exception, which named their series' etag and were answered 412, sent again
        under each instance's own etag where nobody changed the occurrence meanwhile.

        Google may give every instance an etag of its own, and refuse the series'.
        Each instance is read (its etag), then the series' exceptions listed: one that
        is an exception now was changed by someone else since crmcal read the series,
        and keeps its 412, which leaves it as it is for the next sync to decide as any
        calendar edit (so an edit made after that read fails its own If-Match too).
        The others are written once more, under the etag read: a second 412 stands."""
        reads = [google_batch.Call("GET", calls[n].path) for n in refused]
        read = await self._google.send_all(reads)
        listed = await self.exceptions_of(calendar_id, masters)
        changed: set[str] = set()
        for found in listed.values():
            if isinstance(found, ProviderError):
                return {}  # not known to be unchanged: every 412 stands
            changed |= {str(item.get("id")) for item in found}
        again: list[tuple[int, google_batch.Call]] = []
        for n, answer in zip(refused, read, strict=True):
            if not isinstance(answer, httpx.Response) or answer.status_code != 200:
                continue
            instance = self._api.json(answer)
            etag = instance.get("etag")
            if not etag or str(instance.get("id")) in changed:
                continue
            call = calls[n]
            headers = {**call.headers, "If-Match": str(etag)}
            again.append((n, google_batch.Call(call.method, call.path, call.params, call.body,
                                               headers)))  # fmt: skip
        if not again:
            return {}
        answers = await self._google.send_all([call for _, call in again])
        return {n: answer for (n, _), answer in zip(again, answers, strict=True)}

    def _occurrence_calls(
        self,
        calendar_id: str,
        master: dict[str, Any],
        event: CalendarEvent,
        exceptions: list[dict[str, Any]],
        changed: frozenset[str] | None = None,
    ) -> list[tuple[google_batch.Call, bool]]:
        """The writes ``write_occurrences`` makes, each with whether it names the
        series' etag (an occurrence that is no exception) rather than its own."""
        zone = self._google.zone(calendar_id)
        path = GoogleApi.call_path(calendar_id)
        plan = OccurrenceCalls(path, send_updates(event), master, exceptions, zone, changed)
        return plan.planned(event)


def _exceptions_query(series: dict[str, Any]) -> dict[str, str]:
    """The listing of a series' events (its master and its exceptions) by iCalUID."""
    return {"iCalUID": str(series.get("iCalUID") or series["id"]), "singleEvents": "false",
            "maxResults": str(google_api.PAGE_SIZE)}  # fmt: skip
