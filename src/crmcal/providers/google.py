"""Google Calendar (API v3) behind ``providers.base.Provider``, over async httpx.

This class is the provider's public face: its reads, and each write handed to a
module of one job:

- ``google_api``: the requests, batch requests, and each calendar's time zone;
- calendars: ``calendarList.list``; writable iff ``accessRole`` is owner or writer;
- listings: ``events.list`` with ``singleEvents=false`` in pages of 2,500, the last
  page's ``nextSyncToken`` as the cursor; with a cursor, the changes since it
  (cancelled items are deletions); 410 ``fullSyncRequired`` starts over with a
  full listing. Listings carry the events' contents;
- ``google_creates`` and ``google_updates``: writes. ``events.insert`` with an id
  derived from the activity (a replay answers 409, so a retried create never makes a
  copy), ``events.patch`` and ``events.delete`` with ``If-Match``. Attendees are
  written with ``sendUpdates=none`` unless the event asks for invitations;
- ``google_series`` and ``google_occurrences``: a series' exceptions read, and its
  occurrences written;
- ``google_items`` and ``google_events``: Google's items read and written;
- errors: 401 means the grant no longer works; rate limits (403
  ``rateLimitExceeded``/``userRateLimitExceeded``, 429) and 5xx are retried with
  truncated exponential backoff and jitter, then reported as ``Unreachable``.

Access tokens come from a ``TokenSource``, so OAuth (refreshing, revocation)
stays outside this module.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, ClassVar

import httpx

from crmcal.model import CalendarEvent, CalendarInfo, ChangeListing, RemoteRef
from crmcal.providers import google_api, google_batch, google_events, google_items, kinds
from crmcal.providers.api_client import ClientSettings, SharedLimit, TokenSource
from crmcal.providers.base import Capabilities, ProviderError, Update
from crmcal.providers.google_api import GoogleApi, reason
from crmcal.providers.google_creates import Creates
from crmcal.providers.google_items import ref, version
from crmcal.providers.google_series import Series
from crmcal.providers.google_updates import Updates
from crmcal.providers.kept_http import REPEATABLE

__all__ = ["GOOGLE_API", "GoogleProvider", "TokenSource"]

GOOGLE_API = "https://www.googleapis.com"
# What a push channel is asked to last: Google's own cap (field reports: about a week).
CHANNEL_LIFETIME = dt.timedelta(days=7)
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
        settings = ClientSettings(timeout=timeout, retries=retries, backoff=backoff,
                                  transport=transport, shared=shared)  # fmt: skip
        self._google = GoogleApi(tokens, api_url=api_url, settings=settings)
        self._api = self._google.api
        self._series = Series(self._google)
        self._creates = Creates(self._google, self._series)
        self._updates = Updates(self._google, self._series)

    # --- reads ---------------------------------------------------------------------

    async def discover(self) -> None:
        """Nothing to check beforehand: listing the calendars checks the account."""
        return None

    async def list_calendars(self) -> list[CalendarInfo]:
        calendars: list[CalendarInfo] = []
        page: str | None = None
        seen: set[str] = set()
        while True:
            params = {"maxResults": 250, **({"pageToken": page} if page else {})}
            response = await self._google.request("GET", "/users/me/calendarList", params=params)
            if response.status_code != 200:
                raise self._api.failure(response, "listing calendars")
            data = self._api.json(response)
            for entry in data.get("items", []):
                if entry.get("deleted"):
                    continue
                zone = entry.get("timeZone")
                if zone:
                    self._google.zones[entry["id"]] = zone
                calendars.append(
                    CalendarInfo(
                        id=entry["id"],
                        name=entry.get("summaryOverride") or entry.get("summary") or entry["id"],
                        writable=entry.get("accessRole") in _WRITE_ROLES,
                        primary=bool(entry.get("primary")),
                        timezone=zone,
                    )
                )
            page = google_api.next_page(data, seen)
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
        zone = self._google.zone(calendar_id)
        items: list[dict[str, Any]] = []
        page: str | None = None
        seen: set[str] = set()
        while True:
            params: dict[str, Any] = {"maxResults": google_api.PAGE_SIZE, "singleEvents": "false"}
            if sync_token:
                params["syncToken"] = sync_token
            if page:
                params["pageToken"] = page
            response = await self._google.request(
                "GET", GoogleApi.events(calendar_id), params=params
            )
            if response.status_code in (400, 410) and sync_token:
                return None
            if response.status_code != 200:
                raise self._api.failure(response, "listing events")
            data = self._api.json(response)
            zone = data.get("timeZone") or zone
            self._google.zones[calendar_id] = zone
            found = data.get("items", [])
            if not isinstance(found, list):
                raise self._api.not_the_service(response)
            items += found
            page = google_api.next_page(data, seen)
            if not page:
                listing = _fold(items, zone, full=sync_token is None)
                # Nothing is lost to an item without an id: without a cursor, the next
                # run lists the calendar in full, where it may come whole (a synced
                # event missing from it is read by its id).
                listing.cursor = None if lost_something(listing) else data.get("nextSyncToken")
                return listing

    async def _get(self, calendar_id: str, event_id: str) -> Any:
        """An event as Google has it; None when it does not exist (any more)."""
        response = await self._google.request("GET", GoogleApi.events(calendar_id, event_id))
        if response.status_code in (404, 410):
            return None
        if response.status_code != 200:
            raise self._api.failure(response, "reading an event")
        item: Any = self._api.json(response)
        return None if isinstance(item, dict) and item.get("status") == "cancelled" else item

    async def fetch(self, calendar_id: str, ids: Sequence[str]) -> list[RemoteRef]:
        """The events by id: several in batch requests (one request for up to
        ``BATCH_SIZE`` of them, not one each); a series' exceptions are listed after.
        An answer that does not name the event asked for is that event's error, read
        again next run: never taken for its absence."""
        wanted = list(dict.fromkeys(ids))
        read: list[tuple[str, dict[str, Any]]] = []
        if len(wanted) == 1:  # a batch of one is one more envelope for nothing
            found = await self._get(calendar_id, wanted[0])
            read = [(wanted[0], found)] if found is not None else []
        elif wanted:
            read = await self._read_many(calendar_id, wanted)
        refs: list[RemoteRef] = []
        items = []
        for asked, item in read:
            if google_items.item_id(item) != asked:
                error = "Google answered a read of the event with an item of another or no id"
                refs.append(RemoteRef(asked, "", error=error, retry=True))
            elif google_events.is_event(item):
                items.append(item)
        exceptions = await self._series.exceptions_of(
            calendar_id, [item for item in items if item.get("recurrence")]
        )
        for listed in exceptions.values():
            if isinstance(listed, ProviderError):
                raise listed
        zone = self._google.zone(calendar_id)
        for item in items:
            mine = exceptions.get(str(item["id"]), [])
            refs.append(ref(item, zone, mine if isinstance(mine, list) else []))
        return refs

    async def _read_many(
        self, calendar_id: str, wanted: list[str]
    ) -> list[tuple[str, dict[str, Any]]]:
        """The events ``wanted`` that there are, each with the id it was read by, in
        batch requests."""
        reads = [
            google_batch.Call("GET", GoogleApi.call_path(calendar_id, event_id))
            for event_id in wanted
        ]
        items: list[tuple[str, dict[str, Any]]] = []
        for asked, answer in zip(wanted, await self._google.send_all(reads), strict=True):
            if isinstance(answer, ProviderError):
                raise answer
            if answer.status_code in (404, 410):
                continue
            if answer.status_code != 200:
                raise self._api.failure(answer, "reading an event")
            item = self._api.json(answer)
            if not isinstance(item, dict) or item.get("status") != "cancelled":
                items.append((asked, item))
        return items

    async def get_by_key(self, calendar_id: str, key: str) -> RemoteRef | None:
        found = await self.fetch(calendar_id, [google_events.event_id_for(key)])
        return found[0] if found else None

    # --- writes --------------------------------------------------------------------

    async def create(self, calendar_id: str, key: str, event: CalendarEvent) -> RemoteRef:
        return await self._creates.create(calendar_id, key, event)

    async def create_many(
        self, calendar_id: str, items: Sequence[tuple[str, CalendarEvent]]
    ) -> list[RemoteRef | ProviderError]:
        """``create`` for many events, in batch requests (``Creates.create_many``)."""
        return await self._creates.create_many(calendar_id, items)

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

    async def update_many(
        self, calendar_id: str, items: Sequence[Update]
    ) -> list[RemoteRef | ProviderError]:
        """``update`` for many events in batch requests (``Updates.update_many``)."""
        return await self._updates.update_many(calendar_id, items)

    async def delete(self, calendar_id: str, event_id: str, etag: str | None) -> None:
        response = await self._google.request(
            "DELETE",
            GoogleApi.events(calendar_id, event_id),
            params={"sendUpdates": "none"},
            headers={"If-Match": version(etag)} if etag else None,
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
                GoogleApi.call_path(calendar_id, event_id),
                {"sendUpdates": "none"},
                None,
                {"If-Match": version(etag)} if etag else {},
            )
            for event_id, etag in items
        ]
        answers = await self._google.send_all(calls)
        return self._api.deletions(items, answers)

    # --- push channels ---------------------------------------------------------------

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
        response = await self._google.request(
            "POST", GoogleApi.events(calendar_id) + "/watch", json=body,
            extensions={REPEATABLE: True},
        )  # fmt: skip
        if response.status_code == 400 and reason(response) == "channelIdNotUnique":
            return None, expires
        if response.status_code != 200:
            raise self._api.failure(response, "opening a push channel")
        data = self._api.json(response)
        expiration = dt.datetime.fromtimestamp(int(data["expiration"]) / 1000, dt.UTC)
        return str(data["resourceId"]), expiration

    async def stop_watching(self, channel_id: str, resource_id: str) -> None:
        """Close a push channel; one that is gone already is no error."""
        body = {"id": channel_id, "resourceId": resource_id}
        response = await self._google.request("POST", "/channels/stop", json=body)
        if response.status_code not in (200, 204, 404):
            raise self._api.failure(response, "closing a push channel")

    async def close(self) -> None:
        await self._google.close()


def _fold(items: list[Any], zone: str, *, full: bool) -> ChangeListing:
    """A listing's items as crmcal's changes: cancelled events are deletions, other
    items than events are left out, and a series' exceptions fold into the series.

    An incremental listing names a series without all its exceptions (or names only
    a changed exception): such a series is listed without content, to be fetched whole.
    An item without an id (``google_items.item_id``) is reported under none; as what it
    stood for cannot be read again, the listing then keeps no cursor (see ``_listing``).
    """
    listing = ChangeListing(full=full)
    exceptions: dict[str, list[dict[str, Any]]] = {}
    named: set[str] = set()
    events: list[tuple[str, dict[str, Any]]] = []
    for item in items:
        item_id = google_items.item_id(item)
        if item_id is None:
            listing.changed.append(google_items.nameless(item))
        elif item.get("recurringEventId"):
            exceptions.setdefault(str(item["recurringEventId"]), []).append(item)
        else:
            events.append((item_id, item))
    for item_id, item in events:
        named.add(item_id)
        if item.get("status") == "cancelled":
            listing.deleted.append(item_id)
        elif not google_events.is_event(item):
            continue
        elif item.get("recurrence") and not full:
            listing.changed.append(RemoteRef(item_id, "", None))
        else:
            listing.changed.append(ref(item, zone, exceptions.get(item_id, ())))
    if not full:
        listing.changed += [
            RemoteRef(series, "", None) for series in exceptions if series not in named
        ]
    return listing


def lost_something(listing: ChangeListing) -> bool:
    """Whether the listing named an item it gave no id (``_fold``)."""
    return any(not changed.id for changed in listing.changed)
