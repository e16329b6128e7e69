"""Google Calendar (API v3) behind ``providers.base.Provider``, over async httpx.

Protocol use:

- calendars: ``calendarList.list``; writable iff ``accessRole`` is owner or writer;
- listings: ``events.list`` with ``singleEvents=false`` in pages of 2,500, the last
  page's ``nextSyncToken`` as the cursor; with a cursor, the changes since it
  (cancelled items are deletions); 410 ``fullSyncRequired`` starts over with a
  full listing. Listings carry the events' contents;
- writes: ``events.insert`` with an id derived from the activity (a replay
  answers 409, so a retried create never makes a copy), ``events.patch`` and
  ``events.delete`` with ``If-Match``. Attendees are written with
  ``sendUpdates=none`` unless the event asks for invitations;
- errors: 401 means the grant no longer works; rate limits (403
  ``rateLimitExceeded``/``userRateLimitExceeded``, 429) and 5xx are retried with
  truncated exponential backoff and jitter, then reported as ``Unreachable``.

Access tokens come from a ``TokenSource``, so OAuth (refreshing, revocation)
stays outside this module.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, ClassVar
from urllib.parse import quote

import httpx

from crmcal.model import (
    CalendarEvent,
    CalendarInfo,
    ChangeListing,
    RemoteRef,
    changed_fields,
    moment_key,
)
from crmcal.providers import google_batch, google_events, kinds
from crmcal.providers.api_client import ApiClient, SharedLimit, TokenSource
from crmcal.providers.base import (
    Capabilities,
    EventNotFound,
    PreconditionFailed,
    ProviderError,
    SeriesInCalendar,
    Unreachable,
    Update,
)
from crmcal.providers.kept_http import REPEATABLE
from crmcal.providers.occurrences import occurrence_event

__all__ = ["GOOGLE_API", "GoogleProvider", "TokenSource"]

GOOGLE_API = "https://www.googleapis.com"
PAGE_SIZE = 2500
# Calls per batch request: Google takes up to 1,000 but advises against large
# batches (each call still counts against the quota, and big ones get 429s).
BATCH_SIZE = 50
# What a push channel is asked to last: Google's own cap (field reports: about a week).
CHANNEL_LIFETIME = dt.timedelta(days=7)
_RATE_LIMITS = {"rateLimitExceeded", "userRateLimitExceeded"}
# Field groups whose patch merges with what the event holds (other clients' reminders
# and attendee details, a cancelled event's status): written only after a read.
_MERGED = frozenset(("reminder", "attendees", "cancelled", "recurrence"))
_WRITE_ROLES = {"owner", "writer"}


class GoogleProvider:
    """One Google account, through a source of access tokens."""

    capabilities: ClassVar[Capabilities] = kinds.GOOGLE.capabilities

    def __init__(
        self,
        tokens: TokenSource,
        *,
        api_url: str = GOOGLE_API,
        timeout: float = 30,
        retries: int = 5,
        backoff: float = 0.5,
        transport: httpx.AsyncBaseTransport | None = None,
        shared: SharedLimit | None = None,
    ) -> None:
        self._root = api_url.rstrip("/")
        self._base = self._root + "/calendar/v3"
        self._api = ApiClient(
            tokens, base_url=self._base, owner="Google", service="Google Calendar",
            reason=_reason, retryable=self._retryable,
            timeout=timeout, retries=retries, backoff=backoff, transport=transport, shared=shared,
        )  # fmt: skip
        self._zones: dict[str, str] = {}

    # --- requests ------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
        content: bytes | None = None,
        url: str | None = None,
        extensions: dict[str, Any] | None = None,
    ) -> httpx.Response:
        return await self._api.send(
            method, url or self._base + path, params=params, json=json, content=content,
            headers=headers, extensions=extensions,
        )  # fmt: skip

    @staticmethod
    def _retryable(response: httpx.Response) -> bool:
        if response.status_code in (429, 500, 502, 503, 504):
            return True
        return response.status_code == 403 and _reason(response) in _RATE_LIMITS

    def _events(self, calendar_id: str, event_id: str | None = None) -> str:
        path = f"/calendars/{quote(calendar_id, safe='@.')}/events"
        return path + (f"/{quote(event_id, safe='')}" if event_id is not None else "")

    # --- the interface ---------------------------------------------------------------

    async def discover(self) -> None:
        """Nothing to check beforehand: listing the calendars checks the account."""
        return None

    async def list_calendars(self) -> list[CalendarInfo]:
        calendars: list[CalendarInfo] = []
        page: str | None = None
        while True:
            params = {"maxResults": 250, **({"pageToken": page} if page else {})}
            response = await self._request("GET", "/users/me/calendarList", params=params)
            if response.status_code != 200:
                raise self._api.failure(response, "listing calendars")
            data = self._api.json(response)
            for entry in data.get("items", []):
                if entry.get("deleted"):
                    continue
                zone = entry.get("timeZone")
                if zone:
                    self._zones[entry["id"]] = zone
                calendars.append(
                    CalendarInfo(
                        id=entry["id"],
                        name=entry.get("summaryOverride") or entry.get("summary") or entry["id"],
                        writable=entry.get("accessRole") in _WRITE_ROLES,
                        primary=bool(entry.get("primary")),
                        timezone=zone,
                    )
                )
            page = data.get("nextPageToken")
            if not page:
                return calendars

    async def list_changes(
        self, calendar_id: str, cursor: str | None, *, with_contents: bool = False
    ) -> ChangeListing:
        if cursor:
            listing = await self._listing(calendar_id, cursor)
            if listing is not None:
                return listing
        listing = await self._listing(calendar_id, None)
        assert listing is not None
        return listing

    async def _listing(self, calendar_id: str, sync_token: str | None) -> ChangeListing | None:
        """Every page of one listing; None when the sync token no longer works (410, or
        400 for a token Google cannot read)."""
        zone = self._zones.get(calendar_id, "UTC")
        items: list[dict[str, Any]] = []
        page: str | None = None
        while True:
            params: dict[str, Any] = {"maxResults": PAGE_SIZE, "singleEvents": "false"}
            if sync_token:
                params["syncToken"] = sync_token
            if page:
                params["pageToken"] = page
            response = await self._request("GET", self._events(calendar_id), params=params)
            if response.status_code in (400, 410) and sync_token:
                return None
            if response.status_code != 200:
                raise self._api.failure(response, "listing events")
            data = self._api.json(response)
            zone = data.get("timeZone") or zone
            self._zones[calendar_id] = zone
            items += data.get("items", [])
            page = data.get("nextPageToken")
            if not page:
                listing = _fold(items, zone, full=sync_token is None)
                listing.cursor = data.get("nextSyncToken")
                return listing

    async def _get(self, calendar_id: str, event_id: str) -> dict[str, Any] | None:
        """An event as Google has it; None when it does not exist (any more)."""
        response = await self._request("GET", self._events(calendar_id, event_id))
        if response.status_code in (404, 410):
            return None
        if response.status_code != 200:
            raise self._api.failure(response, "reading an event")
        item: dict[str, Any] = self._api.json(response)
        return None if item.get("status") == "cancelled" else item

    @staticmethod
    def _exceptions_query(series: dict[str, Any]) -> dict[str, str]:
        """The listing of a series' events (its master and its exceptions) by iCalUID."""
        return {"iCalUID": str(series.get("iCalUID") or series["id"]), "singleEvents": "false",
                "maxResults": str(PAGE_SIZE)}  # fmt: skip

    async def _exceptions_of(
        self, calendar_id: str, series: Sequence[dict[str, Any]]
    ) -> dict[str, list[dict[str, Any]] | ProviderError]:
        """The changed and cancelled occurrences Google keeps beside each series, by
        series id (or the error reading them): every first page in batch requests (one
        request for up to ``BATCH_SIZE`` series, not one each); the rare series with
        more than a page of exceptions pages on alone."""
        path = "/calendar/v3" + self._events(calendar_id)
        calls = [google_batch.Call("GET", path, self._exceptions_query(s)) for s in series]
        found: dict[str, list[dict[str, Any]] | ProviderError] = {}
        for item, answer in zip(series, await self._send_all(calls) if calls else [], strict=True):
            master_id = str(item["id"])
            params = self._exceptions_query(item)
            mine: list[dict[str, Any]] | ProviderError = []
            while isinstance(mine, list):
                if isinstance(answer, ProviderError):
                    mine = answer
                elif answer.status_code != 200:
                    mine = self._api.failure(answer, "reading a series")
                else:
                    data = self._api.json(answer)
                    mine += [
                        i for i in data.get("items", []) if i.get("recurringEventId") == master_id
                    ]
                    if not data.get("nextPageToken"):
                        break
                    params["pageToken"] = data["nextPageToken"]
                    answer = await self._request("GET", self._events(calendar_id), params=params)
            found[master_id] = mine
        return found

    async def fetch(self, calendar_id: str, ids: Sequence[str]) -> list[RemoteRef]:
        """The events by id: several in batch requests (one request for up to
        ``BATCH_SIZE`` of them, not one each); a series' exceptions are listed after."""
        wanted = list(dict.fromkeys(ids))
        items: list[dict[str, Any]] = []
        if len(wanted) == 1:  # a batch of one is one more envelope for nothing
            found = await self._get(calendar_id, wanted[0])
            items = [found] if found is not None else []
        elif wanted:
            reads = [
                google_batch.Call("GET", "/calendar/v3" + self._events(calendar_id, event_id))
                for event_id in wanted
            ]
            for answer in await self._send_all(reads):
                if isinstance(answer, ProviderError):
                    raise answer
                if answer.status_code in (404, 410):
                    continue
                if answer.status_code != 200:
                    raise self._api.failure(answer, "reading an event")
                item = self._api.json(answer)
                if item.get("status") != "cancelled":
                    items.append(item)
        items = [item for item in items if google_events.is_event(item)]
        exceptions = await self._exceptions_of(
            calendar_id, [item for item in items if item.get("recurrence")]
        )
        for listed in exceptions.values():
            if isinstance(listed, ProviderError):
                raise listed
        zone = self._zones.get(calendar_id, "UTC")
        refs = []
        for item in items:
            mine = exceptions.get(str(item["id"]), [])
            refs.append(_ref(item, zone, mine if isinstance(mine, list) else []))
        return refs

    async def get_by_key(self, calendar_id: str, key: str) -> RemoteRef | None:
        found = await self.fetch(calendar_id, [google_events.event_id_for(key)])
        return found[0] if found else None

    async def create(self, calendar_id: str, key: str, event: CalendarEvent) -> RemoteRef:
        event_id = google_events.event_id_for(key)
        master = _master(event)
        written = google_events.without_nulls({**google_events.body(master), "id": event_id})
        # The client-chosen id makes a second insert a 409: safe to send again.
        response = await self._request(
            "POST", self._events(calendar_id), params=_send_updates(event), json=written,
            extensions={REPEATABLE: True},
        )  # fmt: skip
        if response.status_code == 409:
            return await self._revive(calendar_id, key, event)
        if response.status_code != 200:
            raise self._api.failure(response, "creating an event")
        item = self._api.json(response)
        if _changed_overrides(event):
            return await self._write_occurrences(calendar_id, item, event, [])
        return _ref(item, self._zones.get(calendar_id, "UTC"))

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
        zone = self._zones.get(calendar_id, "UTC")
        calls = []
        for key, event in items:
            written = {**google_events.body(_master(event)),
                       "id": google_events.event_id_for(key)}  # fmt: skip
            path = "/calendar/v3" + self._events(calendar_id)
            calls.append(google_batch.Call("POST", path, _send_updates(event),
                                           google_events.without_nulls(written)))  # fmt: skip
        for n, answer in enumerate(await self._send_all(calls)):
            if isinstance(answer, ProviderError):
                results[n] = answer
            elif answer.status_code == 200:
                results[n] = _ref(self._api.json(answer), zone)
                if _changed_overrides(items[n][1]):
                    series.append((n, self._api.json(answer)))
            elif answer.status_code == 409:
                revive.append(n)
            else:
                results[n] = self._api.failure(answer, "creating an event")
        made: list[tuple[dict[str, Any], CalendarEvent, list[dict[str, Any]], None]]
        made = [(item, items[n][1], [], None) for n, item in series]
        for (n, _), ref in zip(
            series, await self._write_occurrences_of(calendar_id, made), strict=True
        ):
            results[n] = ref
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
        response = await self._request("GET", self._events(calendar_id, event_id))
        if response.status_code != 200:
            raise PreconditionFailed(f"an event for {key!r} exists already (409)")
        current = self._api.json(response)
        if current.get("status") != "cancelled":
            ref = _ref(current, self._zones.get(calendar_id, "UTC"))
            if ref.event is not None and not _changed_overrides(event) and _same(ref.event, event):
                return ref
            raise PreconditionFailed(f"an event for {key!r} exists already (409)")
        written = google_events.without_nulls(
            {**google_events.body(_master(event)), "id": event_id}
        )
        response = await self._request(
            "PUT",
            self._events(calendar_id, event_id),
            params=_send_updates(event),
            json={**written, "status": "confirmed"},
            headers={"If-Match": str(current.get("etag"))},
        )
        if response.status_code == 412:
            raise PreconditionFailed(f"the event for {key!r} changed while it was restored")
        if response.status_code != 200:
            raise self._api.failure(response, "restoring a deleted event")
        return _ref(self._api.json(response), self._zones.get(calendar_id, "UTC"))

    async def _batch(self, calls: list[google_batch.Call]) -> list[httpx.Response | None]:
        content_type, body = google_batch.encode(calls)
        # Each call of a batch counts against the quotas as if sent alone.
        response = await self._api.send(
            "POST",
            self._root + "/batch/calendar/v3",
            content=body,
            headers={"Content-Type": content_type},
            cost=len(calls),
            extensions={REPEATABLE: all(_insert_with_id(call) for call in calls)},
        )
        if response.status_code != 200:
            raise self._api.failure(response, "sending a batch")
        return google_batch.decode(response, len(calls))

    async def update(
        self,
        calendar_id: str,
        event_id: str,
        etag: str,
        event: CalendarEvent,
        *,
        changed: frozenset[str] | None = None,
    ) -> RemoteRef:
        (result,) = await self.update_many(calendar_id, [Update(event_id, etag, event, changed)])
        if isinstance(result, ProviderError):
            raise result
        return result

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
        zone = self._zones.get(calendar_id, "UTC")
        if item.etag and item.etag != _ref(current, zone, exceptions).etag:
            return PreconditionFailed(f"the event {item.event_id} changed since {item.etag}")
        if item.changed is not None and not item.changed & set(google_events.KEYS):
            return None
        master = Update(item.event_id, "", _master(item.event), item.changed)
        return self._patch(calendar_id, master, current)

    async def _write_occurrences(
        self,
        calendar_id: str,
        master: dict[str, Any],
        event: CalendarEvent,
        exceptions: list[dict[str, Any]],
        changed: frozenset[str] | None = None,
    ) -> RemoteRef:
        """Make the series' occurrences in Google what ``event.overrides`` says, in one
        batch: a changed occurrence is a patch of its instance (``{id}_{start}``: Google
        keeps it as an exception), a cancelled one a delete of it, and an exception the
        series no longer has is the series' own occurrence again (patched back to the
        master's fields, or deleted when the series leaves the date out). Occurrences
        already as wanted are not written. Answers the series as it is then.

        ``changed`` names what the update writes: changed occurrences with
        "overrides", cancelled ones (EXDATEs alike) with "recurrence"."""
        written = (master, event, exceptions, changed)
        (result,) = await self._write_occurrences_of(calendar_id, [written])
        if isinstance(result, ProviderError):
            raise result
        return result

    async def _write_occurrences_of(
        self,
        calendar_id: str,
        series: Sequence[
            tuple[dict[str, Any], CalendarEvent, list[dict[str, Any]], frozenset[str] | None]
        ],
    ) -> list[RemoteRef | ProviderError]:
        """``_write_occurrences`` for several series (master, event, exceptions,
        changed): the writes of all of them in the same batch requests, then the
        exceptions of those that cancelled some read back together. Each series answers
        on its own."""
        zone = self._zones.get(calendar_id, "UTC")
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
            found = await self._exceptions_of(calendar_id, masters)
            for k, master in zip(reread, masters, strict=True):
                now = found[str(master["id"])]
                results[k] = now if isinstance(now, ProviderError) else _ref(master, zone, now)
        return [r if r is not None else Unreachable("no answer") for r in results]

    async def _send_occurrence_calls(
        self,
        calendar_id: str,
        series: Sequence[
            tuple[dict[str, Any], CalendarEvent, list[dict[str, Any]], frozenset[str] | None]
        ],
    ) -> tuple[list[list[google_batch.Call]], list[httpx.Response | ProviderError]]:
        """The occurrence writes of every series (``_occurrence_calls``), by series, and
        their answers in the same order, sent together; a write that named its series'
        etag and was refused for it is sent again under its own (``_under_own_etags``)."""
        planned_pairs = [self._occurrence_calls(calendar_id, *written) for written in series]
        planned = [[call for call, _ in pairs] for pairs in planned_pairs]
        flat = [call for calls in planned for call in calls]
        answers = await self._send_all(flat) if flat else []
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
        return None if deleted else _ref(master, zone, list(by_id.values()))

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
        read = await self._send_all(reads)
        listed = await self._exceptions_of(calendar_id, masters)
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
        answers = await self._send_all([call for _, call in again])
        return {n: answer for (n, _), answer in zip(again, answers, strict=True)}

    def _occurrence_calls(
        self,
        calendar_id: str,
        master: dict[str, Any],
        event: CalendarEvent,
        exceptions: list[dict[str, Any]],
        changed: frozenset[str] | None = None,
    ) -> list[tuple[google_batch.Call, bool]]:
        """The writes ``_write_occurrences`` makes, each with whether it names the
        series' etag (an occurrence that is no exception) rather than its own."""
        zone = self._zones.get(calendar_id, "UTC")
        path = "/calendar/v3" + self._events(calendar_id)
        plan = _OccurrenceCalls(path, _send_updates(event), master, exceptions, zone, changed)
        return plan.planned(event)

    def _blind_patch(self, calendar_id: str, item: Update) -> google_batch.Call | None:
        """The PATCH for ``item`` when it needs no read of the event first: it names
        the version it expects (Google answers 412 for any other, so a stale event,
        or one turned into a series since, is never written) and writes only fields
        that do not merge with what the event holds; the caller knows that version
        to be a single event's, so no times land on a series. None when a read is
        needed."""
        if (
            not item.single
            or not item.etag
            or "~" in item.etag  # a series' composite version: its own etag is not all
            or item.changed is None
            or item.changed & _MERGED
            or item.event.recurrence is not None
        ):
            return None
        written = google_events.patch_body(item.event, {}, item.changed)
        path = "/calendar/v3" + self._events(calendar_id, item.event_id)
        return google_batch.Call("PATCH", path, _send_updates(item.event), written,
                                 {"If-Match": item.etag})  # fmt: skip

    def _patch(
        self, calendar_id: str, item: Update, current: dict[str, Any] | None
    ) -> google_batch.Call | ProviderError:
        """The PATCH that writes ``item`` over the event as it is now, or why none is."""
        event_id, etag, event = item.event_id, item.etag, item.event
        if current is None:
            return EventNotFound(f"the event {event_id} does not exist")
        if etag and _version(etag) != current.get("etag"):
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
        path = "/calendar/v3" + self._events(calendar_id, event_id)
        return google_batch.Call("PATCH", path, _send_updates(event), written,
                                 {"If-Match": str(current.get("etag"))})  # fmt: skip

    def _updated(
        self, calendar_id: str, event_id: str, etag: str, response: httpx.Response
    ) -> RemoteRef | ProviderError:
        refused = self._api.refused_update(response, event_id, etag)
        if refused is not None:
            return refused
        return _ref(self._api.json(response), self._zones.get(calendar_id, "UTC"))

    async def update_many(
        self, calendar_id: str, items: Sequence[Update]
    ) -> list[RemoteRef | ProviderError]:
        """``update`` for many events in batch requests: the reads of those that need
        one (a series' master among them), then the exceptions of every series written
        over a series, then the patches (a series' master with the single events), then
        every series' occurrences (``_write_occurrences``). Each item answers on its own."""
        results: list[RemoteRef | ProviderError | None] = [None] * len(items)
        patches: list[tuple[int, google_batch.Call]] = []
        unread: list[int] = []
        for n, item in enumerate(items):
            blind = self._blind_patch(calendar_id, item)
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
        exceptions = await self._exceptions_of(calendar_id, list(series.values()))
        for n, current in currents.items():
            call = self._patch_over(calendar_id, items[n], current, n in series, exceptions)
            if isinstance(call, ProviderError):
                results[n] = call
            elif call is not None:
                patches.append((n, call))
        await self._send_patches(calendar_id, items, patches, series, results)
        written = [n for n in series if not isinstance(results[n], ProviderError)]
        refs = await self._write_occurrences_of(calendar_id, [
            (series[n], items[n].event, _listed(exceptions[str(series[n]["id"])]),
             items[n].changed)
            for n in written
        ])  # fmt: skip
        for n, ref in zip(written, refs, strict=True):
            results[n] = ref
        return [r if r is not None else Unreachable("no answer") for r in results]

    async def _read_current(
        self,
        calendar_id: str,
        items: Sequence[Update],
        unread: list[int],
        results: list[RemoteRef | ProviderError | None],
    ) -> dict[int, dict[str, Any] | None]:
        """The events ``unread`` as Google has them now, by item (None for one deleted);
        a read that fails answers its item in ``results``."""
        reads = [
            google_batch.Call("GET", "/calendar/v3" + self._events(calendar_id, items[n].event_id))
            for n in unread
        ]
        currents: dict[int, dict[str, Any] | None] = {}
        for n, answer in zip(unread, await self._send_all(reads) if reads else [], strict=True):
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
            return self._patch(calendar_id, item, current)
        assert current is not None
        mine = exceptions[str(current["id"])]
        if isinstance(mine, ProviderError):
            return mine
        return self._series_patch(calendar_id, item, current, mine)

    async def _send_patches(
        self,
        calendar_id: str,
        items: Sequence[Update],
        patches: list[tuple[int, google_batch.Call]],
        series: dict[int, dict[str, Any]],
        results: list[RemoteRef | ProviderError | None],
    ) -> None:
        """Send the ``patches``, each item's answer in ``results``; a series' master
        patched is in ``series`` as it is now."""
        answers = await self._send_all([call for _, call in patches]) if patches else []
        for (n, _), answer in zip(patches, answers, strict=True):
            item = items[n]
            results[n] = (
                answer
                if isinstance(answer, ProviderError)
                else self._updated(calendar_id, item.event_id, item.etag, answer)
            )
            if n in series and not isinstance(results[n], ProviderError):
                assert isinstance(answer, httpx.Response)
                series[n] = self._api.json(answer)  # the master as it is now

    async def delete(self, calendar_id: str, event_id: str, etag: str | None) -> None:
        response = await self._request(
            "DELETE",
            self._events(calendar_id, event_id),
            params={"sendUpdates": "none"},
            headers={"If-Match": _version(etag)} if etag else None,
        )
        failure = self._api.deleted(response, event_id, etag)
        if failure is not None:
            raise failure

    async def delete_many(
        self, calendar_id: str, items: Sequence[tuple[str, str | None]]
    ) -> list[ProviderError | None]:
        """``delete`` for many events, in batch requests; each item answers on its own."""
        calls = [
            google_batch.Call(
                "DELETE",
                "/calendar/v3" + self._events(calendar_id, event_id),
                {"sendUpdates": "none"},
                None,
                {"If-Match": _version(etag)} if etag else {},
            )
            for event_id, etag in items
        ]
        answers = await self._send_all(calls)
        return self._api.deletions(items, answers)

    async def _send_all(
        self, calls: list[google_batch.Call]
    ) -> list[httpx.Response | ProviderError]:
        """Every call's answer, sent in batch requests of ``BATCH_SIZE`` (see
        ``ApiClient.send_parts``); a single call goes alone, without an envelope."""
        if len(calls) == 1:
            (call,) = calls
            repeatable = {REPEATABLE: _insert_with_id(call)}
            response = await self._request(call.method, "", url=self._root + call.path,
                                           params=call.params, json=call.body,
                                           headers=call.headers, extensions=repeatable)  # fmt: skip
            return [response]
        return await self._api.send_parts(calls, self._batch, size=BATCH_SIZE)

    async def watch(
        self, calendar_id: str, channel_id: str, address: str, token: str
    ) -> tuple[str | None, dt.datetime]:
        """Open a push channel for the calendar's events: (resource id, expiration).

        The channel's id is ours, so the request is safe to send again when its answer
        is lost: Google refuses a second channel with that id (``channelIdNotUnique``).
        That refusal of a fresh id means the first sending opened the channel: then the
        resource id is None (its notifications bring it) and the expiration the one
        asked for."""
        expires = dt.datetime.now(dt.UTC).replace(microsecond=0) + CHANNEL_LIFETIME
        body = {"id": channel_id, "type": "web_hook", "address": address, "token": token,
                "expiration": str(int(expires.timestamp() * 1000))}  # fmt: skip
        response = await self._request(
            "POST", self._events(calendar_id) + "/watch", json=body, extensions={REPEATABLE: True}
        )
        if response.status_code == 400 and _reason(response) == "channelIdNotUnique":
            return None, expires
        if response.status_code != 200:
            raise self._api.failure(response, "opening a push channel")
        data = self._api.json(response)
        expiration = dt.datetime.fromtimestamp(int(data["expiration"]) / 1000, dt.UTC)
        return str(data["resourceId"]), expiration

    async def stop_watching(self, channel_id: str, resource_id: str) -> None:
        """Close a push channel; one that is gone already is no error."""
        body = {"id": channel_id, "resourceId": resource_id}
        response = await self._request("POST", "/channels/stop", json=body)
        if response.status_code not in (200, 204, 404):
            raise self._api.failure(response, "closing a push channel")

    async def close(self) -> None:
        await self._api.close()


class _OccurrenceCalls:
    """The writes that make one series' occurrences in Google what an event says
    (``GoogleProvider._occurrence_calls``), each a call of its instance
    (``{id}_{start}``) with whether it names the series' etag rather than its own."""

    def __init__(
        self,
        path: str,
        params: dict[str, str],
        master: dict[str, Any],
        exceptions: list[dict[str, Any]],
        zone: str,
        changed: frozenset[str] | None,
    ) -> None:
        """``changed`` limits the writes to the changed occurrences ("overrides") and
        the cancelled ones ("recurrence"); None writes both."""
        self._live_too = changed is None or "overrides" in changed
        self._cancels_too = changed is None or "recurrence" in changed
        self._path = path
        self._params = params
        self._master = master
        self._zone = zone
        self._series = google_events.parse(master, default_zone=zone)
        assert self._series.recurrence is not None
        # The starts the series shows no occurrence at: its EXDATEs and the
        # occurrences cancelled (Google keeps those as exceptions of their own).
        self._left_out = {moment_key(m) for m in self._series.recurrence.exdates}
        self._existing: dict[str, dict[str, Any]] = {}
        for item in exceptions:
            if item.get("originalStartTime"):
                original = google_events.parse_moment(item["originalStartTime"], zone)
                self._existing[moment_key(original)] = item
                if item.get("status") == "cancelled":
                    self._left_out.add(moment_key(original))
        self._calls: list[tuple[google_batch.Call, bool]] = []

    def planned(self, event: CalendarEvent) -> list[tuple[google_batch.Call, bool]]:
        """The writes for ``event``: its overrides first, then the exceptions Google
        has that it no longer names."""
        wanted = {
            moment_key(o.recurrence_id): o for o in event.overrides if o.recurrence_id is not None
        }
        for key, override in wanted.items():
            if override.cancelled:
                if self._cancels_too:
                    self._cancel(key, override)
            elif self._live_too:
                self._change(event, key, override)
        exdates = {moment_key(m) for m in (event.recurrence.exdates if event.recurrence else ())}
        for key, there in self._existing.items():
            if key not in wanted and there.get("status") != "cancelled":
                self._restore(event, there, key in exdates)
        return self._calls

    def _cancel(self, key: str, override: CalendarEvent) -> None:
        """A cancelled occurrence: deleted, unless the series shows none there already."""
        assert override.recurrence_id is not None
        there = self._existing.get(key)
        live = there is not None and there.get("status") != "cancelled"
        if key not in self._left_out or live:
            self._delete(override.recurrence_id)

    def _change(self, event: CalendarEvent, key: str, override: CalendarEvent) -> None:
        """A changed occurrence: patched where Google does not have it so already (a
        cancelled one is brought back)."""
        assert override.recurrence_id is not None
        occurrence = occurrence_event(event, override)
        there = self._existing.get(key)
        if there is None or there.get("status") == "cancelled":
            fresh = {**google_events.body(occurrence), "status": "confirmed"}
            self._patch(override.recurrence_id, fresh)
            return
        read = google_events.parse(there, default_zone=self._zone)
        if read.content_hash() != occurrence.content_hash():
            groups = changed_fields(read, occurrence) - {"recurrence"}
            self._patch(override.recurrence_id, google_events.patch_body(occurrence, there, groups))

    def _restore(self, event: CalendarEvent, there: dict[str, Any], left_out: bool) -> None:
        """An exception the series no longer has: deleted where the series leaves its
        date out, else patched back to the series' own occurrence."""
        original = google_events.parse_moment(there["originalStartTime"], self._zone)
        if not google_events.makes(self._series, original):
            # Left behind at a start the series no longer makes (its times moved):
            # Google would show it on its own; its occurrence is at the new times.
            self._delete(original)
        elif left_out:
            if self._cancels_too:
                self._delete(original)
        elif self._live_too:
            own = occurrence_event(event, None, original)
            self._patch(original, google_events.body(own, there))

    def _expected(self, original: dt.datetime | dt.date) -> dict[str, str]:
        # Each write names the occurrence's version as read: an exception's own etag,
        # or, for an occurrence that is no exception (whose own etag crmcal has not
        # read), the series' (see ``_under_own_etags`` when Google wants the
        # instance's). One edited meanwhile by someone else (an exception since, or
        # changed again) answers 412 and is not written over.
        there = self._existing.get(moment_key(original))
        etag = there.get("etag") if there is not None else self._master.get("etag")
        return {"If-Match": str(etag)} if etag else {}

    def _write(self, method: str, original: dt.datetime | dt.date, body: Any) -> None:
        instance = google_events.instance_id(str(self._master["id"]), original)
        target = f"{self._path}/{quote(instance, safe='')}"
        named = self._existing.get(moment_key(original)) is None and bool(self._master.get("etag"))
        call = google_batch.Call(method, target, self._params, body, self._expected(original))
        self._calls.append((call, named))

    def _delete(self, original: dt.datetime | dt.date) -> None:
        self._write("DELETE", original, None)

    def _patch(self, original: dt.datetime | dt.date, body: dict[str, Any]) -> None:
        self._write("PATCH", original, {k: v for k, v in body.items() if k != "recurrence"})


def _listed(found: list[dict[str, Any]] | ProviderError) -> list[dict[str, Any]]:
    return found if isinstance(found, list) else []


def _insert_with_id(call: google_batch.Call) -> bool:
    """Whether ``call`` is an ``events.insert`` with a client-chosen id: sent twice, the
    second is answered 409 ``duplicate``, never a second event."""
    return (
        call.method == "POST"
        and call.path.split("?", 1)[0].endswith("/events")
        and isinstance(call.body, dict)
        and bool(call.body.get("id"))
    )


def _same(read: CalendarEvent, written: CalendarEvent) -> bool:
    """Whether the event read holds what ``written`` says (its series' master, when a
    series: occurrences changed on their own are written after the master is made)."""
    return read.content_hash() == _master(written).content_hash()


def _send_updates(event: CalendarEvent) -> dict[str, str]:
    return {"sendUpdates": "all" if event.notify_attendees else "none"}


def _reason(response: httpx.Response) -> str:
    try:
        errors = response.json()["error"]["errors"]
        return str(errors[0]["reason"])
    except (ValueError, KeyError, IndexError, TypeError):
        return ""


def _version(etag: str) -> str:
    """The event's own etag inside a series' composite version (see ``_ref``)."""
    return etag.split("~", 1)[0]


def _ref(item: dict[str, Any], zone: str, exceptions: Sequence[dict[str, Any]] = ()) -> RemoteRef:
    """A readable event (a series with its exceptions folded in) or the reason it is not.

    A series' version covers its exceptions too: a cancelled occurrence changes the
    series crmcal sees, not the etag Google gives the series.
    """
    etag = str(item.get("etag") or "")
    if exceptions:
        versions = sorted(str(e.get("etag")) + str(e.get("id")) for e in exceptions)
        etag += "~" + hashlib.sha256("|".join(versions).encode()).hexdigest()[:16]
    try:
        event = google_events.parse(item, default_zone=zone)
        return RemoteRef(item["id"], etag, google_events.with_exceptions(event, list(exceptions)))
    except (ValueError, TypeError, KeyError) as failure:
        return RemoteRef(str(item.get("id")), etag, error=f"unreadable event: {failure}")


def _fold(items: list[dict[str, Any]], zone: str, *, full: bool) -> ChangeListing:
    """A listing's items as crmcal's changes: cancelled events are deletions, other
    items than events are left out, and a series' exceptions fold into the series.

    An incremental listing names a series without all its exceptions (or names only
    a changed exception): such a series is listed without content, to be fetched whole.
    """
    listing = ChangeListing(full=full)
    exceptions: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        if item.get("recurringEventId"):
            exceptions.setdefault(str(item["recurringEventId"]), []).append(item)
    named: set[str] = set()
    for item in items:
        if item.get("recurringEventId"):
            continue
        named.add(item["id"])
        if item.get("status") == "cancelled":
            listing.deleted.append(item["id"])
        elif not google_events.is_event(item):
            continue
        elif item.get("recurrence") and not full:
            listing.changed.append(RemoteRef(item["id"], "", None))
        else:
            listing.changed.append(_ref(item, zone, exceptions.get(item["id"], ())))
    if not full:
        listing.changed += [
            RemoteRef(series, "", None) for series in exceptions if series not in named
        ]
    return listing


def _changed_overrides(event: CalendarEvent) -> bool:
    return event.recurrence is not None and any(not o.cancelled for o in event.overrides)


def _master(event: CalendarEvent) -> CalendarEvent:
    """The master Google stores: the cancelled occurrences among its EXDATEs, the
    changed ones left to their own events."""
    if event.recurrence is None:
        return event
    cancelled = [o.recurrence_id for o in event.overrides if o.cancelled and o.recurrence_id]
    return replace(event.leaving_out(cancelled), overrides=())
