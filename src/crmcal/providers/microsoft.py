"""Microsoft 365 / Outlook (Graph v1.0) behind ``providers.base.Provider``, over async httpx.

Protocol use:

- every request says ``Prefer: IdType="ImmutableId"`` (an event keeps its id when
  it moves between calendars, F16), ``outlook.timezone="UTC"`` and
  ``outlook.body-content-type="text"``; at most ``CONCURRENCY`` requests run at
  once per mailbox, as Outlook allows;
- calendars: ``/me/calendars``, writable iff ``canEdit`` (F3);
- listings: ``calendarView/delta`` over a window (``WINDOW_DAYS`` from the
  connection's first day, moved on when it gets near its end), the
  ``@odata.deltaLink`` as the cursor (with the window); an expired one (410,
  ``SyncStateNotFound``) starts over. Delta answers no extended properties, so a
  full listing also reads crmcal's ids of the calendar's events in one paged
  query, and marks itself incomplete (events outside the window are not in it).
  ``@removed`` means deleted *or* out of the window: such ids are listed as
  deleted but ``unconfirmed``, for the caller to read those it synced (never the
  occurrences of a deleted series, one by one);
- writes: creates carry a ``transactionId`` (Graph creates nothing on a replay)
  and crmcal's ids as single-value extended properties, and go in ``$batch``
  requests of 20; updates and deletes send ``If-Match``. Attendees are written
  only when the event asks for invitations: Graph mails everyone it is told about;
- errors: 401 means the grant no longer works; 429 and 5xx are retried,
  honouring ``Retry-After``, then reported as ``Unreachable``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any, ClassVar, NamedTuple
from urllib.parse import quote

import httpx

from crmcal.model import (
    CalendarEvent,
    CalendarInfo,
    ChangeListing,
    RemoteRef,
    canonical_rrule,
    changed_fields,
)
from crmcal.providers import kinds
from crmcal.providers import microsoft_events as codec
from crmcal.providers.api_client import ApiClient, SharedLimit, TokenSource
from crmcal.providers.base import (
    FATAL,
    AnswerLost,
    Capabilities,
    EventNotFound,
    PreconditionFailed,
    ProviderError,
    SeriesInCalendar,
    Unreachable,
    Update,
)
from crmcal.providers.kept_http import ONCE, REPEATABLE
from crmcal.providers.occurrences import occurrence_event
from crmcal.providers.timestamps import parse_timestamp

__all__ = ["GRAPH_API", "MicrosoftProvider", "TokenSource"]

GRAPH_API = "https://graph.microsoft.com"
log = logging.getLogger(__name__)
CONCURRENCY = 4
BATCH_SIZE = 20
# The most events a delta page may hold (``Prefer: odata.maxpagesize``): fewer pages,
# fewer requests per listing.
PAGE_SIZE = 1000
WINDOW_DAYS = 1825  # the longest calendarView Graph answers
RENEW_BEFORE = dt.timedelta(days=180)  # move the window on this long before its end
# Below Graph's limit for event subscriptions (10,080 minutes); renewed a day ahead.
SUBSCRIPTION_LIFETIME = dt.timedelta(days=6)
_PREFER = 'IdType="ImmutableId", outlook.timezone="UTC", outlook.body-content-type="text"'
_RETRY = (429, 500, 502, 503, 504)
_EXPIRED = ("SyncStateNotFound", "resyncRequired", "SyncStateInvalid")
# A 400 for an id that is not one ("Resource not found for the segment ..." when
# it holds a slash).
_MALFORMED_ID = ("ErrorInvalidIdMalformed", "BadRequest")


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class MicrosoftProvider:
    """One Microsoft 365 mailbox, through a source of access tokens."""

    # Graph e-mails every attendee written to an event (``mails_attendees``); the
    # engine writes them only when the activity asks for invitations.
    capabilities: ClassVar[Capabilities] = kinds.MICROSOFT.capabilities

    def __init__(
        self,
        tokens: TokenSource,
        *,
        api_url: str = GRAPH_API,
        window_start: dt.datetime | None = None,
        timeout: float = 30,
        retries: int = 5,
        backoff: float = 0.5,
        transport: httpx.AsyncBaseTransport | None = None,
        shared: SharedLimit | None = None,
    ) -> None:
        self._base = api_url.rstrip("/") + "/v1.0"
        self._api = ApiClient(
            tokens, base_url=self._base, owner="Microsoft", service="Microsoft Graph",
            product="Microsoft 365", reason=_code,
            retryable=lambda response: response.status_code in _RETRY, timeout=timeout,
            retries=retries, backoff=backoff, concurrency=CONCURRENCY,
            headers={"Prefer": _PREFER}, transport=transport, shared=shared,
        )  # fmt: skip
        self._window_start = window_start
        # The series the last ``fetch`` of one event read (its version, master and
        # occurrences): the series engine reads a series and writes it right after,
        # and an update at that very version starts from that read instead of making
        # it again. Any later fetch or update forgets it; it serves once.
        self._just_read: dict[
            str, tuple[str, dict[str, Any], tuple[list[str], list[dict[str, Any]]]]
        ] = {}

    # --- requests ------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
        width: int = 1,
        extensions: dict[str, Any] | None = None,
    ) -> httpx.Response:
        url = path if path.startswith("http") else self._base + path
        return await self._api.send(
            method, url, params=params, json=json, headers=headers, width=width,
            extensions=extensions,
        )  # fmt: skip

    def _events(self, calendar_id: str) -> str:
        return f"/me/calendars/{quote(calendar_id, safe='')}/events"

    def _event(self, calendar_id: str, event_id: str) -> str:
        # Through the calendar, never ``/me/events/{id}``: that finds an event in any of
        # the mailbox's calendars, so an event moved elsewhere would still be read (and
        # written) as this calendar's.
        return f"{self._events(calendar_id)}/{quote(event_id, safe='')}"

    async def _pages(self, path: str, params: dict[str, Any] | None, what: str) -> list[Any]:
        """Every item of a collection, following ``@odata.nextLink``."""
        items: list[Any] = []
        url, query = path, params
        while True:
            response = await self._request("GET", url, params=query)
            if response.status_code != 200:
                raise self._api.failure(response, what)
            data = self._api.json(response)
            items += data.get("value", [])
            url, query = data.get("@odata.nextLink"), None
            if not url:
                return items

    # --- the interface ---------------------------------------------------------------

    async def discover(self) -> str:
        """The mailbox's address (it names the connection's account)."""
        response = await self._request("GET", "/me")
        if response.status_code != 200:
            raise self._api.failure(response, "reading the account")
        me = self._api.json(response)
        return str(me.get("mail") or me.get("userPrincipalName") or me.get("id"))

    async def list_calendars(self) -> list[CalendarInfo]:
        calendars = await self._pages("/me/calendars", {"$top": 100}, "listing calendars")
        return [
            CalendarInfo(
                id=entry["id"],
                name=entry.get("name") or entry["id"],
                writable=bool(entry.get("canEdit")),
                primary=bool(entry.get("isDefaultCalendar")),
            )
            for entry in calendars
        ]

    def _window(self, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
        start = self._window_start or now - dt.timedelta(days=365)
        # Keep at least RENEW_BEFORE ahead inside the longest window Graph answers.
        start = max(start, now + RENEW_BEFORE - dt.timedelta(days=WINDOW_DAYS - 1))
        return start, start + dt.timedelta(days=WINDOW_DAYS - 1)

    async def list_changes(
        self, calendar_id: str, cursor: str | None, *, with_contents: bool = False
    ) -> ChangeListing:
        now = dt.datetime.now(dt.UTC)
        state = _decode(cursor)
        if state is not None and dt.datetime.fromisoformat(state["end"]) - RENEW_BEFORE > now:
            listing = await self._delta(calendar_id, state["link"], None, state)
            if listing is not None:
                return listing
        start, end = self._window(now)
        window = {"start": _iso(start), "end": _iso(end)}
        path = f"/me/calendars/{quote(calendar_id, safe='')}/calendarView/delta"
        params = {"startDateTime": window["start"], "endDateTime": window["end"]}
        listing = await self._delta(calendar_id, path, params, window)
        assert listing is not None
        return listing

    async def _delta(
        self,
        calendar_id: str,
        url: str,
        params: dict[str, Any] | None,
        window: dict[str, Any],
    ) -> ChangeListing | None:
        """One delta round to its deltaLink; None when the link has expired."""
        full = params is not None
        items: list[dict[str, Any]] = []
        query = params
        while True:
            paged = {"Prefer": f"{_PREFER}, odata.maxpagesize={PAGE_SIZE}"}
            response = await self._request("GET", url, params=query, headers=paged)
            if not full and (response.status_code == 410 or _code(response) in _EXPIRED):
                return None
            if response.status_code != 200:
                raise self._api.failure(response, "listing events")
            data = self._api.json(response)
            items += data.get("value", [])
            query = None
            if data.get("@odata.nextLink"):
                url = data["@odata.nextLink"]
                continue
            link = data.get("@odata.deltaLink")
            break
        # Windowed: a full listing does not show what lies outside the window.
        listing = ChangeListing(full=full, complete=False)
        removed = [str(i["id"]) for i in items if "@removed" in i]
        series: set[str] = set()
        for item in items:
            if "@removed" in item:
                continue
            if item.get("seriesMasterId") or item.get("type") == "seriesMaster":
                series.add(str(item.get("seriesMasterId") or item["id"]))
                continue
            listing.changed.append(_ref(item))
        listing.changed += [RemoteRef(master, "", None) for master in sorted(series)]
        known = set(series) if full else {*window.get("series", ()), *series}
        if removed:
            # Deleted, or left the window: delta says the same of both. Not read here
            # (a deleted series is removed occurrence by occurrence, and its occurrences
            # are no event of crmcal's): the caller reads those it synced.
            listing.deleted += list(dict.fromkeys(removed))
            listing.unconfirmed.update(removed)
            if set(removed) - known:
                await self._check_series(calendar_id, known - series, listing)
        if full:
            await self._add_crm_ids(calendar_id, listing)
        else:
            await self._read_crm_ids(calendar_id, listing)
        known -= set(listing.deleted)
        state = {"start": window["start"], "end": window["end"], "link": link,
                 "series": sorted(known)}  # fmt: skip
        listing.cursor = json.dumps(state) if link else None
        return listing

    async def _check_series(
        self, calendar_id: str, masters: set[str], listing: ChangeListing
    ) -> None:
        """Delta never names a series master: a deleted series shows as its occurrences
        ``@removed``, whose ids say nothing of their series. So when events went, the
        series known from earlier rounds are looked up (in ``$batch`` requests), and
        those gone are deletions."""
        ordered = sorted(masters)
        reads = [
            {"method": "GET", "url": f"{self._event(calendar_id, master)}?$select=id"}
            for master in ordered
        ]
        for master, answer in zip(ordered, await self._send_all(reads), strict=True):
            if isinstance(answer, ProviderError):
                raise answer
            if answer.status_code in (404, 410):
                listing.deleted.append(master)

    async def _add_crm_ids(self, calendar_id: str, listing: ChangeListing) -> None:
        """crmcal's ids of the calendar's events, which delta cannot show: one paged
        query of ids and properties, so a reconnected calendar re-links its events."""
        params = {"$select": "id", "$expand": codec.expand_properties(), "$top": 500}
        found = await self._pages(self._events(calendar_id), params, "reading crmcal's ids")
        ids = {str(item["id"]): codec.properties(item) for item in found}
        for n, ref in enumerate(listing.changed):
            props = ids.get(ref.id)
            if ref.event is not None and props:
                event = ref.event
                listing.changed[n] = RemoteRef(ref.id, ref.etag, _with_ids(event, props))

    async def _read_crm_ids(self, calendar_id: str, listing: ChangeListing) -> None:
        """crmcal's ids of the events a delta round changed, read by id in ``$batch``
        requests (a query of the whole calendar would cost more than the few events of
        a round): an event moved to another calendar and back then finds its activity
        again."""
        query = f"$select=id&$expand={codec.expand_properties()}"
        read = [n for n, ref in enumerate(listing.changed) if ref.event is not None]
        reads = [_read(f"{self._event(calendar_id, listing.changed[n].id)}?{query}") for n in read]
        for n, answer in zip(read, await self._send_all(reads) if reads else [], strict=True):
            ref = listing.changed[n]
            if isinstance(answer, ProviderError):
                raise answer
            if answer.status_code != 200 or ref.event is None:
                continue  # gone meanwhile, or no longer here: the next round says so
            props = codec.properties(self._api.json(answer))
            if props:
                listing.changed[n] = RemoteRef(ref.id, ref.etag, _with_ids(ref.event, props))

    async def fetch(self, calendar_id: str, ids: Sequence[str]) -> list[RemoteRef]:
        """The events by id, in ``$batch`` requests; then the cancelled occurrences and
        exceptions of those that are series, for all of them in ``$batch`` requests too
        (two requests for up to ``BATCH_SIZE`` series, not two each)."""
        wanted = list(dict.fromkeys(ids))
        self._just_read = {}
        expand = f"$expand={codec.expand_properties()}"
        reads = [_read(f"{self._event(calendar_id, event_id)}?{expand}") for event_id in wanted]
        items: list[dict[str, Any]] = []
        for answer in await self._send_all(reads) if reads else []:
            if isinstance(answer, ProviderError):
                raise answer
            if answer.status_code in (404, 410) or (
                answer.status_code == 400 and _code(answer) in _MALFORMED_ID
            ):
                continue  # an id Graph cannot even read names no event
            if answer.status_code != 200:
                raise self._api.failure(answer, "reading an event")
            item = self._api.json(answer)
            if item.get("isCancelled") and item.get("type") != "seriesMaster":
                continue
            items.append(item)
        masters = [str(i["id"]) for i in items if i.get("type") == "seriesMaster"]
        occurrences = await self._occurrences_of(calendar_id, masters)
        refs = []
        for item in items:
            if item.get("type") != "seriesMaster":
                refs.append(_ref(item))
                continue
            found = occurrences[str(item["id"])]
            if isinstance(found, ProviderError):
                raise found
            ref = await self._series_ref(calendar_id, item, found)
            if len(wanted) == 1 and ref.event is not None:
                self._just_read[ref.id] = (ref.etag, item, found)
            refs.append(ref)
        return refs

    async def _occurrences(
        self, calendar_id: str, master_id: str
    ) -> tuple[list[str], list[dict[str, Any]]]:
        """A series' cancelled occurrences and its exceptions, in one read of the master
        (Graph shows them only when asked by name, on a GET of the master by id)."""
        found = (await self._occurrences_of(calendar_id, [master_id]))[master_id]
        if isinstance(found, ProviderError):
            raise found
        return found

    async def _occurrences_of(
        self, calendar_id: str, master_ids: Sequence[str]
    ) -> dict[str, tuple[list[str], list[dict[str, Any]]] | ProviderError]:
        """``_occurrences`` of several series, by master id (or the error reading them),
        in ``$batch`` requests."""
        reads = [
            _read(f"{self._event(calendar_id, master_id)}?{_OCCURRENCES}")
            for master_id in master_ids
        ]
        found: dict[str, tuple[list[str], list[dict[str, Any]]] | ProviderError] = {}
        answers = await self._send_all(reads) if reads else []
        for master_id, answer in zip(master_ids, answers, strict=True):
            if isinstance(answer, ProviderError):
                found[master_id] = answer
                continue
            if answer.status_code != 200:
                found[master_id] = self._api.failure(answer, "reading a series")
                continue
            found[master_id] = _occurrences_in(self._api.json(answer))
        return found

    async def _series_ref(
        self,
        calendar_id: str,
        master: dict[str, Any],
        occurrences: tuple[list[str], list[dict[str, Any]]] | None = None,
    ) -> RemoteRef:
        """A series master with its cancelled occurrences and exceptions folded in; its
        version covers them (an exception changes the series, not the master's key)."""
        if occurrences is None:
            occurrences = await self._occurrences(calendar_id, str(master["id"]))
        cancelled, exceptions = occurrences
        ref = _ref(master)
        if ref.event is None:
            return ref
        try:
            zone_name = codec.series_zone(master)
            event = codec.with_exceptions(ref.event, cancelled, exceptions, zone_name)
        except (ValueError, TypeError, KeyError) as failure:
            return RemoteRef(ref.id, ref.etag, error=f"unreadable series: {failure}")
        return RemoteRef(ref.id, _series_version(ref.etag, cancelled, exceptions), event)

    async def get_by_key(self, calendar_id: str, key: str) -> RemoteRef | None:
        wanted = (
            f"singleValueExtendedProperties/Any(ep: ep/id eq '{codec.CREATE_KEY}' "
            f"and ep/value eq '{_quoted(key)}')"
        )
        params = {"$filter": wanted, "$expand": codec.expand_properties()}
        found = await self._pages(self._events(calendar_id), params, "finding an event")
        if found and found[0].get("type") == "seriesMaster":
            return await self._series_ref(calendar_id, found[0])
        return _ref(found[0]) if found else None

    def _create_body(self, key: str, event: CalendarEvent) -> dict[str, Any]:
        try:
            written = codec.body(_master(event), with_attendees=event.notify_attendees, key=key)
        except ValueError as failure:
            raise ProviderError(str(failure)) from None
        return {**written, "transactionId": key}

    def _created(self, key: str, event: CalendarEvent, item: dict[str, Any]) -> RemoteRef:
        """The answer to a create: a replayed ``transactionId`` answers the event made
        before, which counts as existing when it says something else now."""
        ref = _ref(item)
        if ref.event is None or not _same(ref.event, _master(event)):
            raise PreconditionFailed(f"an event for {key!r} exists already")
        return ref

    async def _created_series(
        self,
        calendar_id: str,
        key: str,
        event: CalendarEvent,
        item: dict[str, Any],
        occurrences: tuple[list[str], list[dict[str, Any]]] | None = None,
    ) -> RemoteRef:
        """A series just made: its left-out dates and changed occurrences written (Graph
        takes a pattern only), or, for a replayed create, the series as it is.
        ``occurrences``: the series' as read already (else read here)."""
        ref = self._created(key, event, item)
        if event.recurrence is None or item.get("type") != "seriesMaster":
            return ref
        if occurrences is None:
            occurrences = await self._occurrences(calendar_id, ref.id)
        if occurrences != ([], []):
            return await self._series_ref(calendar_id, item, occurrences)  # made before
        if not event.recurrence.exdates and not event.overrides:
            return await self._series_ref(calendar_id, item, occurrences)
        return await self._write_occurrences(calendar_id, item, event, occurrences)

    async def create(self, calendar_id: str, key: str, event: CalendarEvent) -> RemoteRef:
        # Graph makes nothing twice for one transactionId: safe to send again.
        response = await self._request(
            "POST",
            self._events(calendar_id),
            params={"$expand": codec.expand_properties()},
            json=self._create_body(key, event),
            extensions={REPEATABLE: True},
        )
        if response.status_code not in (200, 201):
            raise self._api.failure(response, "creating an event")
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
        written (Graph takes a pattern only). A replayed ``transactionId`` answers the
        event made before; when that event differs from what is written now, the item
        is ``PreconditionFailed``.
        """
        if len(items) == 1:  # a batch of one is one more envelope for nothing
            try:
                return [await self.create(calendar_id, *items[0])]
            except PreconditionFailed as exists:
                return [exists]
        results: list[RemoteRef | ProviderError | None] = [None] * len(items)
        sent, requests = self._create_requests(calendar_id, items, results)
        answers = await self._send_all(requests) if requests else []
        masters = self._made(items, sent, answers, results)
        # The series made: their occurrences read for all of them at once.
        occurrences = await self._occurrences_of_many(calendar_id, masters, results)
        await _answer_each(
            results, masters,
            lambda n: self._created_series(calendar_id, *items[n], masters[n], occurrences.get(n)),
        )  # fmt: skip
        return [r if r is not None else Unreachable("no answer") for r in results]

    def _create_requests(
        self,
        calendar_id: str,
        items: Sequence[tuple[str, CalendarEvent]],
        results: list[RemoteRef | ProviderError | None],
    ) -> tuple[list[int], list[dict[str, Any]]]:
        """The POST of each item in a ``$batch``, and the items they make; an item whose
        body cannot be written answers why in ``results``."""
        url = f"{self._events(calendar_id)}?$expand={codec.expand_properties()}"
        headers = {"Content-Type": "application/json", "Prefer": _PREFER}
        sent: list[int] = []
        requests: list[dict[str, Any]] = []
        for n, (key, event) in enumerate(items):
            try:
                body = self._create_body(key, event)
            except ProviderError as failure:
                results[n] = failure
                continue
            sent.append(n)
            requests.append({"method": "POST", "url": url, "headers": headers, "body": body})
        return sent, requests

    def _made(
        self,
        items: Sequence[tuple[str, CalendarEvent]],
        sent: list[int],
        answers: list[httpx.Response | ProviderError],
        results: list[RemoteRef | ProviderError | None],
    ) -> dict[int, dict[str, Any]]:
        """The answers to the creates ``sent``: a single event's in ``results``; the
        masters of the series made, by item, for their occurrences to be written."""
        masters: dict[int, dict[str, Any]] = {}
        for n, answer in zip(sent, answers, strict=True):
            if isinstance(answer, ProviderError):
                results[n] = answer
            elif answer.status_code not in (200, 201):
                results[n] = self._api.failure(answer, "creating an event")
            elif items[n][1].recurrence is not None:
                masters[n] = self._api.json(answer)
            else:
                try:
                    results[n] = self._created(*items[n], self._api.json(answer))
                except PreconditionFailed as exists:
                    results[n] = exists
        return masters

    async def _batch(self, requests: list[dict[str, Any]]) -> list[httpx.Response | None]:
        """One ``$batch`` request: each request's answer as a response of its own, in
        the order of ``requests`` (None where the envelope holds none)."""
        numbered = [{**r, "id": str(n)} for n, r in enumerate(requests)]
        # Graph runs a batch's requests to one mailbox up to four at a time, each held
        # to the mailbox's limit of four in flight: the batch takes that many slots.
        response = await self._request(
            "POST", "/$batch", json={"requests": numbered}, width=min(len(requests), CONCURRENCY),
            extensions={REPEATABLE: all(_create_with_transaction(r) for r in requests)},
        )  # fmt: skip
        if response.status_code != 200:
            raise self._api.failure(response, "sending a batch")
        answers = self._api.json(response).get("responses", [])
        by_id = {str(a.get("id")): a for a in answers if isinstance(a, dict)}
        found: list[httpx.Response | None] = []
        for n in range(len(requests)):
            answer = by_id.get(str(n))
            if answer is None:
                found.append(None)
                continue
            headers = answer.get("headers")
            found.append(
                httpx.Response(
                    int(answer.get("status", 0)),
                    headers={k: str(v) for k, v in headers.items()}
                    if isinstance(headers, dict)
                    else None,
                    json=answer.get("body") or {},
                )
            )
        return found

    async def update(
        self,
        calendar_id: str,
        event_id: str,
        etag: str,
        event: CalendarEvent,
        *,
        changed: frozenset[str] | None = None,
    ) -> RemoteRef:
        if event.recurrence is not None:
            return await self._update_series(calendar_id, event_id, etag, event, changed)
        written = self._update_body(event, changed)
        if self._guarded(Update(event_id, etag, event, changed)):
            await self._refuse_series(calendar_id, event_id)
        response = await self._request(
            "PATCH",
            self._event(calendar_id, event_id),
            json=written,
            headers={"If-Match": _version(etag)} if etag else None,
        )
        result = self._updated(event_id, etag, response)
        if isinstance(result, ProviderError):
            raise result
        return result

    @staticmethod
    def _guarded(item: Update) -> bool:
        """Whether an update's times need a read first, lest they go over a series:
        not when the caller saw its version as a single event's, as an event turned
        into a series since answers 412 (its change key moved) to the If-Match."""
        if item.single and item.etag:
            return False
        return item.changed is None or "when" in item.changed

    @staticmethod
    def _update_body(event: CalendarEvent, changed: frozenset[str] | None) -> dict[str, Any]:
        try:
            if changed is None:
                return codec.body(event, with_attendees=event.notify_attendees)
            return codec.patch_body(event, with_attendees=event.notify_attendees, changed=changed)
        except ValueError as failure:
            raise ProviderError(str(failure)) from None

    async def _update_series(
        self,
        calendar_id: str,
        event_id: str,
        etag: str,
        event: CalendarEvent,
        changed: frozenset[str] | None,
    ) -> RemoteRef:
        """A series written over the one Outlook has (``update_many`` of one)."""
        (result,) = await self.update_many(calendar_id, [Update(event_id, etag, event, changed)])
        if isinstance(result, ProviderError):
            raise result
        return result

    async def _series_patch(
        self,
        calendar_id: str,
        item: Update,
        master: dict[str, Any],
        occurrences: tuple[list[str], list[dict[str, Any]]],
    ) -> tuple[dict[str, Any], tuple[list[str], list[dict[str, Any]]]] | ProviderError:
        """The PATCH body of a series' master written over the one Outlook has (only what
        differs from it; empty of fields when nothing does), and the occurrences Outlook
        keeps after it; or why none is. The version named covers the exceptions too: an
        occurrence changed meanwhile by someone else is ``PreconditionFailed``, never
        overwritten."""
        event_id, etag, event, changed = item.event_id, item.etag, item.event, item.changed
        if master.get("type") == "seriesMaster":
            current = await self._series_ref(calendar_id, master, occurrences)
        else:
            current = _ref(master)
        if etag and etag != current.etag:
            return PreconditionFailed(f"the event {event_id} changed since {etag}")
        before = current.event
        groups = changed
        if changed is None and before is not None:
            # Only what differs from the master as it is: Outlook mails attendees on
            # every write, and rewriting a master re-lists all of its occurrences.
            now = _master(event)
            if not event.notify_attendees:
                now = replace(now, attendees=before.attendees, organizer=before.organizer)
            groups = changed_fields(_master(before), now) - {"overrides"}
        try:
            written = self._update_body(_master(event), groups)
        except ProviderError as failure:
            return failure
        if before is not None and before.recurrence is not None:
            assert event.recurrence is not None
            same_rule = canonical_rrule(before.recurrence.rrule) == canonical_rrule(
                event.recurrence.rrule
            )
            same_times = (before.start, before.end, before.all_day) == (
                event.start, event.end, event.all_day
            )  # fmt: skip
            if same_rule and same_times:
                # Outlook drops a series' exceptions and cancellations when its times or
                # pattern are written, and would take crmcal's spelling of the pattern.
                for field in ("start", "end", "isAllDay", "recurrence"):
                    written.pop(field, None)
            else:
                occurrences = ([], [])  # what Outlook keeps of them after the patch
        return written, occurrences

    async def _write_occurrences(
        self,
        calendar_id: str,
        master: dict[str, Any],
        event: CalendarEvent,
        occurrences: tuple[list[str], list[dict[str, Any]]],
        changed: frozenset[str] | None = None,
    ) -> RemoteRef:
        """Make the series' occurrences in Outlook what ``event`` says: a changed one is
        a PATCH of that occurrence (Outlook keeps it as an exception), a left-out date
        or cancelled one a DELETE of it (Graph has no EXDATE), an exception the series
        no longer has is patched back to the master's fields. Occurrences are found by
        id where they are exceptions already, else by ``instances`` over the moment
        they start; reads and writes each go in ``$batch`` requests. Answers the series
        as it is then. ``changed`` names what the update writes: changed occurrences
        with "overrides", cancelled ones (EXDATEs alike) with "recurrence"."""
        master_id = str(master["id"])
        series = _ref(master).event
        zone_name = codec.series_zone(master)
        if series is None or series.recurrence is None:
            return _ref(master)
        cancelled, exceptions = occurrences
        existing = _exceptions_by_start(exceptions, series, zone_name)
        wanted = _occurrence_writes(series, event, cancelled, existing, zone_name, changed)
        if not wanted:
            return await self._series_ref(calendar_id, master, occurrences)
        ids = {k: str(e["id"]) for k, e in existing.items()}
        lookups = [(w.key, w.moment) for w in wanted if w.key not in ids]
        ids |= await self._find_occurrences(calendar_id, master_id, series, zone_name, lookups)
        deleted, patched = await self._send_occurrence_writes(calendar_id, wanted, ids)
        if not deleted:  # the patches answered the exceptions as they are now
            now = {str(e["id"]): e for e in exceptions} | patched
            return await self._series_ref(calendar_id, master, (cancelled, list(now.values())))
        # A cancelled occurrence changes the master's version: the series is read back.
        return await self._read_series(calendar_id, master_id)

    async def _send_occurrence_writes(
        self, calendar_id: str, wanted: list[_OccurrenceWrite], ids: dict[str, str]
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
                "method": write.method, "url": self._event(calendar_id, ids[write.key])
            }  # fmt: skip
            if write.body is not None:
                headers = {"Content-Type": "application/json", "Prefer": _PREFER}
                request |= {"body": write.body, "headers": headers}
            requests.append(request)
        failure: ProviderError | None = None
        patched: dict[str, dict[str, Any]] = {}
        deleted = False
        for request, answer in zip(requests, await self._send_all(requests), strict=True):
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

    async def _read_series(self, calendar_id: str, master_id: str) -> RemoteRef:
        """A series as it is now: the master and its occurrences in one ``$batch``."""
        path = self._event(calendar_id, master_id)
        reads = [_read(f"{path}?$expand={codec.expand_properties()}"),
                 _read(f"{path}?{_OCCURRENCES}")]  # fmt: skip
        back: list[dict[str, Any]] = []
        for answer in await self._send_all(reads):
            if isinstance(answer, ProviderError):
                raise answer
            if answer.status_code != 200:
                raise self._api.failure(answer, "reading a series")
            back.append(self._api.json(answer))
        return await self._series_ref(calendar_id, back[0], _occurrences_in(back[1]))

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
            query = f"startDateTime={_iso(start)}&endDateTime={_iso(end)}"
            url = f"{self._event(calendar_id, master_id)}/instances?{query}"
            requests.append({"method": "GET", "url": url, "headers": {"Prefer": _PREFER}})
        found: dict[str, str] = {}
        for (key, _), answer in zip(wanted, await self._send_all(requests), strict=True):
            if isinstance(answer, ProviderError):
                raise answer
            if answer.status_code != 200:
                raise self._api.failure(answer, "finding an occurrence")
            for item in self._api.json(answer).get("value") or []:
                original = codec.original_start(item, series, zone_name)
                if original is not None and _key(original) == key:
                    found[key] = str(item["id"])
        return found

    def _updated(
        self, event_id: str, etag: str, response: httpx.Response
    ) -> RemoteRef | ProviderError:
        refused = self._api.refused_update(response, event_id, etag)
        if refused is not None:
            return refused
        return _ref(self._api.json(response))

    async def _refuse_series(self, calendar_id: str, event_id: str) -> None:
        """A single event's times are never written over a series (it would move every
        occurrence): ``SeriesInCalendar`` when the event is one now."""
        response = await self._request(
            "GET", self._event(calendar_id, event_id), params={"$select": "type"}
        )
        if response.status_code == 200 and self._api.json(response).get("type") == "seriesMaster":
            raise _series_in_calendar(event_id)

    async def delete(self, calendar_id: str, event_id: str, etag: str | None) -> None:
        response = await self._request(
            "DELETE",
            self._event(calendar_id, event_id),
            headers={"If-Match": _version(etag)} if etag else None,
        )
        failure = self._api.deleted(response, event_id, etag)
        if failure is not None:
            raise failure

    async def update_many(
        self, calendar_id: str, items: Sequence[Update]
    ) -> list[RemoteRef | ProviderError]:
        """``update`` for many events in ``$batch`` requests: the reads that guard a
        series from a single event's times with the reads of the series' masters, then
        the series' cancelled occurrences and exceptions, then the patches (single
        events and masters together), then each series' occurrences
        (``_write_occurrences``). A series the last ``fetch`` read, at the version
        named, is not read again. Each item answers on its own."""
        results: list[RemoteRef | ProviderError | None] = [None] * len(items)
        singles = [n for n, item in enumerate(items) if item.event.recurrence is None]
        guarded = [n for n in singles if self._guarded(items[n])]
        known = self._read_just_now(items)
        series = [n for n, item in enumerate(items) if item.event.recurrence is not None]
        series = [n for n in series if n not in known]
        masters = await self._read_for_update(calendar_id, items, guarded, series, results)
        occurrences = await self._occurrences_of_many(calendar_id, masters, results)
        for n, (master, read) in known.items():
            masters[n], occurrences[n] = master, read
        bodies = await self._plan_series(calendar_id, items, masters, occurrences, results)
        relisted = await self._patch_all(calendar_id, items, singles, masters, bodies, results)
        occurrences |= await self._occurrences_of_many(calendar_id, relisted, results)
        await _answer_each(
            results, masters,
            lambda n: self._write_occurrences(
                calendar_id, masters[n], items[n].event, occurrences[n], items[n].changed
            ),
        )  # fmt: skip
        return [r if r is not None else Unreachable("no answer") for r in results]

    def _read_just_now(
        self, items: Sequence[Update]
    ) -> dict[int, tuple[dict[str, Any], tuple[list[str], list[dict[str, Any]]]]]:
        """The series among ``items`` that the last ``fetch`` read at the version named:
        not read again (their writes still name that version). Forgets that read."""
        fresh, self._just_read = self._just_read, {}
        return {
            n: fresh[item.event_id][1:]
            for n, item in enumerate(items)
            if item.event.recurrence is not None
            and item.etag
            and fresh.get(item.event_id, ("",))[0] == item.etag
        }

    async def _read_for_update(
        self,
        calendar_id: str,
        items: Sequence[Update],
        guarded: list[int],
        series: list[int],
        results: list[RemoteRef | ProviderError | None],
    ) -> dict[int, dict[str, Any]]:
        """The reads before the writes, in the same ``$batch`` requests: the type of each
        ``guarded`` single event (one that is a series now answers ``SeriesInCalendar``)
        and the master of each ``series``, answered by item. A read that fails answers
        its item in ``results``."""
        expand = f"$expand={codec.expand_properties()}"
        reads = [
            _read(self._event(calendar_id, items[n].event_id) + "?$select=type") for n in guarded
        ] + [_read(f"{self._event(calendar_id, items[n].event_id)}?{expand}") for n in series]
        answers = await self._send_all(reads) if reads else []
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
        occurrences: dict[int, tuple[list[str], list[dict[str, Any]]]],
        results: list[RemoteRef | ProviderError | None],
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

    async def _patch_all(
        self,
        calendar_id: str,
        items: Sequence[Update],
        singles: list[int],
        masters: dict[int, dict[str, Any]],
        bodies: dict[int, dict[str, Any]],
        results: list[RemoteRef | ProviderError | None],
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
            self._patch_request(calendar_id, items[n], bodies.get(n), masters.get(n))
            for n in patched
        ]
        answers = await self._send_all(requests) if requests else []
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

    def _patch_request(
        self,
        calendar_id: str,
        item: Update,
        body: dict[str, Any] | None,
        master: dict[str, Any] | None,
    ) -> dict[str, Any]:
        """The PATCH of ``item`` in a ``$batch``: a series' master with the ``body``
        planned for it, under the version read (which the series' version covers), or a
        single event under the version named."""
        headers = {"Content-Type": "application/json", "Prefer": _PREFER}
        if master is not None:
            assert body is not None
            headers["If-Match"] = _version(item.etag or _ref(master).etag)
        else:
            body = self._update_body(item.event, item.changed)
            if item.etag:
                headers["If-Match"] = _version(item.etag)
        url = self._event(calendar_id, item.event_id)
        return {"method": "PATCH", "url": url, "headers": headers, "body": body}

    async def _occurrences_of_many(
        self,
        calendar_id: str,
        masters: dict[int, dict[str, Any]],
        results: list[RemoteRef | ProviderError | None],
    ) -> dict[int, tuple[list[str], list[dict[str, Any]]]]:
        """``_occurrences_of`` the items' events that are series masters, by item; an
        item whose read fails answers that error in ``results``."""
        wanted = {n: str(m["id"]) for n, m in masters.items() if m.get("type") == "seriesMaster"}
        found = await self._occurrences_of(calendar_id, list(wanted.values()))
        occurrences: dict[int, tuple[list[str], list[dict[str, Any]]]] = {}
        for n in masters:
            got = found.get(wanted[n]) if n in wanted else ([], [])
            if isinstance(got, ProviderError):
                results[n] = got
            elif got is not None:
                occurrences[n] = got
        return occurrences

    async def delete_many(
        self, calendar_id: str, items: Sequence[tuple[str, str | None]]
    ) -> list[ProviderError | None]:
        """``delete`` for many events in ``$batch`` requests; each answers on its own."""
        requests = [
            {
                "method": "DELETE",
                "url": self._event(calendar_id, event_id),
                **({"headers": {"If-Match": _version(etag)}} if etag else {}),
            }
            for event_id, etag in items
        ]
        answers = await self._send_all(requests)
        return self._api.deletions(items, answers)

    async def _send_all(
        self, requests: list[dict[str, Any]]
    ) -> list[httpx.Response | ProviderError]:
        """Every request's answer, sent in ``$batch`` requests of ``BATCH_SIZE`` (see
        ``ApiClient.send_parts``); a single request goes alone, without an envelope."""
        if len(requests) == 1:
            (request,) = requests
            repeatable = _create_with_transaction(request)
            response = await self._request(request["method"], request["url"],
                                           json=request.get("body"),
                                           headers=request.get("headers"),
                                           extensions={REPEATABLE: repeatable})  # fmt: skip
            return [response]
        return await self._api.send_parts(requests, self._batch, size=BATCH_SIZE)

    # --- change notifications ------------------------------------------------------------

    async def subscribe(
        self, calendar_id: str, address: str, client_state: str, expires: dt.datetime
    ) -> tuple[str, dt.datetime]:
        """A subscription to the calendar's event changes: (its id, its expiry)."""
        body = {
            "changeType": "created,updated,deleted",
            "notificationUrl": address,
            "lifecycleNotificationUrl": address,
            "resource": f"/me/calendars/{calendar_id}/events",
            "expirationDateTime": _iso(expires),
            "clientState": client_state,
        }
        # Graph cannot tell a second POST of the same subscription from a new one: one
        # whose answer was lost, or was a 5xx (Graph, or a gateway before it, may fail
        # after making it), is not sent again blindly. The subscription it may have
        # made (known by its clientState, a secret of its own) is removed, then one more
        # is asked for.
        for attempt in range(2):
            try:
                response = await self._request(
                    "POST", "/subscriptions", json=body, extensions={ONCE: True}
                )
            except AnswerLost:
                await self._remove_unseen(body)
                if attempt:
                    raise
                continue
            if response.status_code not in (200, 201):
                raise self._api.failure(response, "subscribing to changes")
            data = self._api.json(response)
            return str(data["id"]), _parse_time(data["expirationDateTime"])
        raise AnswerLost("no answer to subscribing to changes")  # pragma: no cover

    async def _remove_unseen(self, body: dict[str, Any]) -> None:
        """Delete the subscriptions a POST of ``body`` whose answer was lost made."""
        url: str | None = "/subscriptions"
        unseen: list[str] = []
        while url:
            response = await self._request("GET", url)
            if response.status_code != 200:
                raise self._api.failure(response, "listing subscriptions")
            data = self._api.json(response)
            for item in data.get("value") or []:
                if (
                    isinstance(item, dict)
                    and item.get("clientState") == body["clientState"]
                    and item.get("notificationUrl") == body["notificationUrl"]
                ):
                    unseen.append(str(item["id"]))
            next_link = data.get("@odata.nextLink")
            url = next_link if isinstance(next_link, str) else None
        for subscription_id in unseen:
            log.info("removing the subscription %s whose creation was not answered",
                     subscription_id)  # fmt: skip
            await self.unsubscribe(subscription_id)

    async def renew(self, subscription_id: str, expires: dt.datetime) -> dt.datetime:
        path = f"/subscriptions/{quote(subscription_id, safe='')}"
        response = await self._request("PATCH", path, json={"expirationDateTime": _iso(expires)})
        if response.status_code == 404:
            raise EventNotFound(f"the subscription {subscription_id} is gone")
        if response.status_code != 200:
            raise self._api.failure(response, "renewing a subscription")
        return _parse_time(self._api.json(response)["expirationDateTime"])

    async def unsubscribe(self, subscription_id: str) -> None:
        path = f"/subscriptions/{quote(subscription_id, safe='')}"
        response = await self._request("DELETE", path)
        if response.status_code not in (200, 204, 404):
            raise self._api.failure(response, "removing a subscription")

    # The push-channel interface crmcal's push module speaks (Google's names): the
    # "resource id" of a channel is the Graph subscription's id.

    async def watch(
        self, calendar_id: str, channel_id: str, address: str, token: str
    ) -> tuple[str, dt.datetime]:
        expires = dt.datetime.now(dt.UTC) + SUBSCRIPTION_LIFETIME
        return await self.subscribe(calendar_id, address, token, expires)

    async def renew_watch(self, resource_id: str) -> dt.datetime:
        return await self.renew(resource_id, dt.datetime.now(dt.UTC) + SUBSCRIPTION_LIFETIME)

    async def stop_watching(self, channel_id: str, resource_id: str) -> None:
        await self.unsubscribe(resource_id)

    async def close(self) -> None:
        await self._api.close()


# What a read of a series master asks for its cancelled occurrences and exceptions
# (Graph shows them only when asked by name, on a GET of the master by id).
_OCCURRENCES = (
    "$select=cancelledOccurrences,exceptionOccurrences"
    f"&$expand=exceptionOccurrences,{codec.expand_properties()}"
)


def _answer_rest(
    results: list[Any], masters: dict[int, dict[str, Any]], failure: ProviderError
) -> None:
    """A failure of the whole account (``FATAL``) while a series' occurrences were
    written: that series and every one after it not answered yet answer it, and no
    more occurrences are written (each would fail alike, or write on for an account
    the sync stops for). A master made but left without its occurrences is found by
    its create's key next time, which writes them then."""
    for n in masters:
        if results[n] is None:
            results[n] = failure


class _OccurrenceWrite(NamedTuple):
    """One write of a series' occurrence: a DELETE (``body`` None) or a PATCH, of the
    occurrence that starts at ``moment`` (``key``: its spelling by ``_key``)."""

    method: str
    key: str
    moment: dt.datetime | dt.date
    body: dict[str, Any] | None


def _exceptions_by_start(
    exceptions: list[dict[str, Any]], series: CalendarEvent, zone_name: str | None
) -> dict[str, dict[str, Any]]:
    """A series' exceptions as Outlook has them, by original start."""
    existing: dict[str, dict[str, Any]] = {}
    for item in exceptions:
        original = codec.original_start(item, series, zone_name)
        if original is not None:
            existing[_key(original)] = item
    return existing


def _occurrence_writes(
    series: CalendarEvent,
    event: CalendarEvent,
    cancelled: list[str],
    existing: dict[str, dict[str, Any]],
    zone_name: str | None,
    changed: frozenset[str] | None,
) -> list[_OccurrenceWrite]:
    """The writes that make the occurrences of ``series`` (as Outlook has it, with its
    ``cancelled`` occurrences and ``existing`` exceptions) what ``event`` says: the
    deletes of the dates it leaves out that Outlook still shows, then the patches of
    the occurrences that differ. ``changed`` limits them as ``_write_occurrences``
    says."""
    with_cancelled = codec.with_cancelled(series, cancelled).recurrence
    assert with_cancelled is not None  # a series keeps its rule
    left_out = {_key(m) for m in with_cancelled.exdates}
    drop, change = _wanted_occurrences(event)
    change |= _restored(event, series, existing, zone_name, set(change) | set(drop))
    writes: list[_OccurrenceWrite] = []
    if changed is None or "recurrence" in changed:
        writes += [
            _OccurrenceWrite("DELETE", key, moment, None)
            for key, moment in drop.items()
            if key not in left_out
        ]
    if changed is None or "overrides" in changed:
        writes += _occurrence_patches(event, change, existing)
    return writes


def _wanted_occurrences(
    event: CalendarEvent,
) -> tuple[
    dict[str, dt.datetime | dt.date], dict[str, tuple[dt.datetime | dt.date, CalendarEvent]]
]:
    """What a series says of its occurrences, by original start: those it leaves out
    (EXDATEs and cancelled overrides) and those it changes. A changed one wins over a
    date left out at the same start."""
    assert event.recurrence is not None
    drop: dict[str, dt.datetime | dt.date] = {_key(m): m for m in event.recurrence.exdates}
    change: dict[str, tuple[dt.datetime | dt.date, CalendarEvent]] = {}
    for override in event.overrides:
        original = override.recurrence_id
        if original is None:
            continue
        if override.cancelled:
            drop[_key(original)] = original
        else:
            change[_key(original)] = (original, override)
    for key in change:
        drop.pop(key, None)
    return drop, change


def _restored(
    event: CalendarEvent,
    series: CalendarEvent,
    existing: dict[str, dict[str, Any]],
    zone_name: str | None,
    named: set[str],
) -> dict[str, tuple[dt.datetime | dt.date, CalendarEvent]]:
    """The exceptions Outlook has that ``event`` no longer names (not in ``named``):
    each becomes the series' own occurrence again."""
    restored: dict[str, tuple[dt.datetime | dt.date, CalendarEvent]] = {}
    for key, there in existing.items():
        if key in named:
            continue
        original = codec.original_start(there, series, zone_name)
        assert original is not None  # ``existing`` holds only those with one
        restored[key] = (original, occurrence_event(event, None, original))
    return restored


def _occurrence_patches(
    event: CalendarEvent,
    change: dict[str, tuple[dt.datetime | dt.date, CalendarEvent]],
    existing: dict[str, dict[str, Any]],
) -> list[_OccurrenceWrite]:
    """The PATCH of each changed occurrence that Outlook does not have as wanted already
    (a write would mail its attendees again for nothing)."""
    patches: list[_OccurrenceWrite] = []
    for key, (moment, override) in change.items():
        occurrence = occurrence_event(event, override)
        if _as_wanted(existing.get(key), occurrence):
            continue
        written = codec.body(occurrence, with_attendees=event.notify_attendees)
        written.pop("recurrence", None)  # an occurrence takes its series' pattern
        patches.append(_OccurrenceWrite("PATCH", key, moment, written))
    return patches


def _as_wanted(current: dict[str, Any] | None, occurrence: CalendarEvent) -> bool:
    """Whether the exception Outlook has (``current``, if any) is ``occurrence`` already."""
    if current is None:
        return False
    read = _ref(current).event
    return read is not None and _same(read, replace(occurrence, recurrence_id=read.recurrence_id))


async def _answer_each(
    results: list[RemoteRef | ProviderError | None],
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


def _series_in_calendar(event_id: str) -> SeriesInCalendar:
    """Why a single event's times are not written over the series ``event_id`` is now."""
    return SeriesInCalendar(
        f"the event {event_id} is a recurring series in the calendar; "
        "crmcal does not rewrite series yet"
    )


def _occurrences_in(data: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """A series' cancelled occurrences and exceptions, as a read of ``_OCCURRENCES`` has them."""
    cancelled = [str(c) for c in data.get("cancelledOccurrences") or []]
    return cancelled, [e for e in data.get("exceptionOccurrences") or [] if isinstance(e, dict)]


def _read(url: str) -> dict[str, Any]:
    """A GET of a ``$batch``: its own ``Prefer`` (a batch's parts do not take the
    envelope's headers), so that it answers immutable ids and UTC times too."""
    return {"method": "GET", "url": url, "headers": {"Prefer": _PREFER}}


def _code(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return ""


def _quoted(value: str) -> str:
    return value.replace("'", "''")


def _parse_time(text: Any) -> dt.datetime:
    found = parse_timestamp(text)
    if found is None:
        raise ProviderError(f"Microsoft Graph answered an unreadable time {text!r}")
    return found


def _decode(cursor: str | None) -> dict[str, Any] | None:
    if not cursor:
        return None
    try:
        state: dict[str, Any] = json.loads(cursor)
        dt.datetime.fromisoformat(state["end"].replace("Z", "+00:00"))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    if not isinstance(state.get("link"), str):
        return None
    state["end"] = state["end"].replace("Z", "+00:00")
    if not isinstance(state.get("series", []), list):
        return None
    return state


def _create_with_transaction(request: dict[str, Any]) -> bool:
    """Whether ``request`` creates an event with a ``transactionId``: sent twice, Graph
    answers the event the first made."""
    body = request.get("body")
    return (
        request.get("method") == "POST"
        and isinstance(body, dict)
        and bool(body.get("transactionId"))
    )


def _same(read: CalendarEvent, written: CalendarEvent) -> bool:
    return read.content_hash() == written.content_hash() or (
        # Attendees Graph was not told about are no difference.
        not written.notify_attendees
        and read.content_hash() == _without_attendees(written).content_hash()
    )


def _without_attendees(event: CalendarEvent) -> CalendarEvent:
    return replace(event, attendees=(), organizer=None)


def _with_ids(event: CalendarEvent, props: dict[str, str]) -> CalendarEvent:
    return replace(
        event, crm_id=props.get(codec.CRM_ID) or event.crm_id,
        crm_type=props.get(codec.CRM_TYPE) or event.crm_type,
    )  # fmt: skip


def _ref(item: dict[str, Any]) -> RemoteRef:
    etag = str(item.get("@odata.etag") or "")
    if not etag and item.get("changeKey"):
        etag = f'W/"{item["changeKey"]}"'
    try:
        return RemoteRef(str(item["id"]), etag, codec.parse(item))
    except (ValueError, TypeError, KeyError) as failure:
        return RemoteRef(str(item.get("id")), etag, error=f"unreadable event: {failure}")


def _version(etag: str) -> str:
    """The event's own ``@odata.etag`` inside a series' composite version."""
    return etag.split("~", 1)[0]


def _series_version(etag: str, cancelled: list[str], exceptions: list[dict[str, Any]]) -> str:
    """A series' version: its master's, and its exceptions' and cancellations' (an
    exception changes the series crmcal sees, not the master's change key)."""
    if not cancelled and not exceptions:
        return etag
    parts = sorted(
        f"{e.get('id')}:{e.get('@odata.etag') or e.get('changeKey')}" for e in exceptions
    )
    raw = "|".join([*parts, *sorted(cancelled)])
    return etag + "~" + hashlib.sha256(raw.encode()).hexdigest()[:16]


def _key(moment: dt.datetime | dt.date | None) -> str:
    """One spelling per original start, whatever zone it was read in."""
    if isinstance(moment, dt.datetime):
        return moment.astimezone(dt.UTC).isoformat()
    return moment.isoformat() if moment is not None else ""


def _master(event: CalendarEvent) -> CalendarEvent:
    """The master Graph stores: a pattern and the master's fields (its left-out dates
    and changed occurrences are written to the occurrences themselves)."""
    if event.recurrence is None:
        return event
    return replace(event, recurrence=replace(event.recurrence, exdates=()), overrides=())
