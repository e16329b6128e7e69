"""Microsoft 365 / Outlook (Graph v1.0) behind ``providers.base.Provider``, over async httpx.

This class is the provider's public face; each job is a module of its own:

- ``microsoft_graph``: the requests (``Prefer: IdType="ImmutableId"``, so an event
  keeps its id when it moves between calendars, F16; UTC times, text bodies; at most
  ``CONCURRENCY`` requests at once per mailbox), paged collections, ``$batch``;
- ``microsoft_delta``: listings, ``calendarView/delta`` over a window, its
  ``@odata.deltaLink`` the cursor;
- ``microsoft_creates`` and ``microsoft_updates``: writes. Creates carry a
  ``transactionId`` (Graph creates nothing on a replay) and crmcal's ids as
  single-value extended properties, and go in ``$batch`` requests of 20; updates and
  deletes send ``If-Match``. Attendees are written only when the event asks for
  invitations: Graph mails everyone it is told about;
- ``microsoft_series`` and ``microsoft_occurrences``: a series read with its
  cancelled occurrences and exceptions, and its occurrences written (Graph takes a
  pattern only);
- ``microsoft_subscriptions``: change notifications;
- ``microsoft_items`` and ``microsoft_events``: Graph's items read and written.

Errors: 401 means the grant no longer works; 429 and 5xx are retried, honouring
``Retry-After``, then reported as ``Unreachable``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, ClassVar

import httpx

from crmcal.model import CalendarEvent, CalendarInfo, ChangeListing, RemoteRef
from crmcal.providers import kinds
from crmcal.providers import microsoft_events as codec
from crmcal.providers.api_client import ClientSettings, SharedLimit, TokenSource
from crmcal.providers.base import Capabilities, ProviderError, Update
from crmcal.providers.microsoft_creates import Creates
from crmcal.providers.microsoft_delta import WINDOW_DAYS, Changes
from crmcal.providers.microsoft_graph import Graph, code, read
from crmcal.providers.microsoft_items import item_id, ref, version
from crmcal.providers.microsoft_series import Occurrences, Series
from crmcal.providers.microsoft_subscriptions import SUBSCRIPTION_LIFETIME, Subscriptions
from crmcal.providers.microsoft_updates import Updates

__all__ = ["GRAPH_API", "WINDOW_DAYS", "MicrosoftProvider", "TokenSource"]

GRAPH_API = "https://graph.microsoft.com"
# A 400 for an id that is not one ("Resource not found for the segment ..." when
# it holds a slash).
_MALFORMED_ID = ("ErrorInvalidIdMalformed", "BadRequest")


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
        settings = ClientSettings(timeout=timeout, retries=retries, backoff=backoff,
                                  transport=transport, shared=shared)  # fmt: skip
        self._graph = Graph(tokens, api_url=api_url, settings=settings)
        self._api = self._graph.api
        self._series = Series(self._graph)
        self._changes = Changes(self._graph, window_start)
        self._creates = Creates(self._graph, self._series)
        self._updates = Updates(self._graph, self._series)
        self._subscriptions = Subscriptions(self._graph)
        # The series the last ``fetch`` of one event read (its version, master and
        # occurrences): the series engine reads a series and writes it right after,
        # and an update at that very version starts from that read instead of making
        # it again. Any later fetch or update forgets it; it serves once.
        self._just_read: dict[str, tuple[str, dict[str, Any], Occurrences]] = {}

    # --- reads ---------------------------------------------------------------------

    async def discover(self) -> str:
        """The mailbox's address (it names the connection's account)."""
        response = await self._graph.request("GET", "/me")
        if response.status_code != 200:
            raise self._api.failure(response, "reading the account")
        me = self._api.json(response)
        return str(me.get("mail") or me.get("userPrincipalName") or me.get("id"))

    async def list_calendars(self) -> list[CalendarInfo]:
        """The mailbox's calendars, writable iff ``canEdit`` (F3)."""
        calendars = await self._graph.pages("/me/calendars", {"$top": 100}, "listing calendars")
        return [
            CalendarInfo(
                id=entry["id"],
                name=entry.get("name") or entry["id"],
                writable=bool(entry.get("canEdit")),
                primary=bool(entry.get("isDefaultCalendar")),
            )
            for entry in calendars
        ]

    async def list_changes(
        self, calendar_id: str, cursor: str | None, *, with_contents: bool = False
    ) -> ChangeListing:
        return await self._changes.list_changes(calendar_id, cursor)

    async def fetch(self, calendar_id: str, ids: Sequence[str]) -> list[RemoteRef]:
        """The events by id, in ``$batch`` requests; then the cancelled occurrences and
        exceptions of those that are series, for all of them in ``$batch`` requests too
        (two requests for up to ``BATCH_SIZE`` series, not two each)."""
        wanted = list(dict.fromkeys(ids))
        self._just_read = {}
        refs: list[RemoteRef] = []
        items = []
        for asked, item in await self._read_events(calendar_id, wanted):
            if item_id(item) != asked:
                # Never taken for the event's absence: read again next run.
                error = (
                    "Microsoft 365 answered a read of the event with an item of another or no id"
                )
                refs.append(RemoteRef(asked, "", error=error, retry=True))
            elif not (item.get("isCancelled") and item.get("type") != "seriesMaster"):
                items.append(item)
        masters = [str(i["id"]) for i in items if i.get("type") == "seriesMaster"]
        occurrences = await self._series.occurrences_of(calendar_id, masters)
        for item in items:
            if item.get("type") != "seriesMaster":
                refs.append(ref(item))
                continue
            found = occurrences[str(item["id"])]
            if isinstance(found, ProviderError):
                raise found
            series = await self._series.series_ref(calendar_id, item, found)
            if len(wanted) == 1 and series.event is not None:
                self._just_read[series.id] = (series.etag, item, found)
            refs.append(series)
        return refs

    async def _read_events(self, calendar_id: str, wanted: list[str]) -> list[tuple[str, Any]]:
        """The items of the events ``wanted`` that there are, each with the id it was
        read by, in ``$batch`` requests."""
        expand = f"$expand={codec.expand_properties()}"
        reads = [read(f"{Graph.event(calendar_id, event_id)}?{expand}") for event_id in wanted]
        items: list[tuple[str, Any]] = []
        answers = await self._graph.send_all(reads) if reads else []
        for asked, answer in zip(wanted, answers, strict=True):
            if isinstance(answer, ProviderError):
                raise answer
            if answer.status_code in (404, 410) or (
                answer.status_code == 400 and code(answer) in _MALFORMED_ID
            ):
                continue  # an id Graph cannot even read names no event
            if answer.status_code != 200:
                raise self._api.failure(answer, "reading an event")
            items.append((asked, self._api.json(answer)))
        return items

    async def get_by_key(self, calendar_id: str, key: str) -> RemoteRef | None:
        wanted = (
            f"singleValueExtendedProperties/Any(ep: ep/id eq '{codec.CREATE_KEY}' "
            f"and ep/value eq '{_quoted(key)}')"
        )
        params = {"$filter": wanted, "$expand": codec.expand_properties()}
        found = await self._graph.pages(Graph.events(calendar_id), params, "finding an event")
        if found and found[0].get("type") == "seriesMaster":
            return await self._series.series_ref(calendar_id, found[0])
        return ref(found[0]) if found else None

    # --- writes --------------------------------------------------------------------

    async def create(self, calendar_id: str, key: str, event: CalendarEvent) -> RemoteRef:
        return await self._creates.create(calendar_id, key, event)

    async def create_many(
        self, calendar_id: str, items: Sequence[tuple[str, CalendarEvent]]
    ) -> list[RemoteRef | ProviderError]:
        """Creates in ``$batch`` requests of 20 (``Creates.create_many``)."""
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
        if event.recurrence is None:
            return await self._updates.update_single(calendar_id, event_id, etag, event, changed)
        # A series written over the one Outlook has: ``update_many`` of one.
        (result,) = await self.update_many(calendar_id, [Update(event_id, etag, event, changed)])
        if isinstance(result, ProviderError):
            raise result
        return result

    async def update_many(
        self, calendar_id: str, items: Sequence[Update]
    ) -> list[RemoteRef | ProviderError]:
        """``update`` for many events in ``$batch`` requests (``Updates.update_many``);
        a series the last ``fetch`` read, at the version named, is not read again."""
        return await self._updates.update_many(calendar_id, items, self._read_just_now(items))

    def _read_just_now(
        self, items: Sequence[Update]
    ) -> dict[int, tuple[dict[str, Any], Occurrences]]:
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

    async def delete(self, calendar_id: str, event_id: str, etag: str | None) -> None:
        response = await self._graph.request(
            "DELETE",
            Graph.event(calendar_id, event_id),
            headers={"If-Match": version(etag)} if etag else None,
        )
        failure = self._api.deleted(response, event_id, etag)
        if failure is not None:
            raise failure

    async def delete_many(
        self, calendar_id: str, items: Sequence[tuple[str, str | None]]
    ) -> list[ProviderError | None]:
        """``delete`` for many events in ``$batch`` requests; each answers on its own."""
        requests = [
            {
                "method": "DELETE",
                "url": Graph.event(calendar_id, event_id),
                **({"headers": {"If-Match": version(etag)}} if etag else {}),
            }
            for event_id, etag in items
        ]
        answers = await self._graph.send_all(requests)
        return self._api.deletions(items, answers)

    # --- change notifications --------------------------------------------------------

    async def subscribe(
        self, calendar_id: str, address: str, client_state: str, expires: dt.datetime
    ) -> tuple[str, dt.datetime]:
        """A subscription to the calendar's event changes: (its id, its expiry)."""
        return await self._subscriptions.subscribe(calendar_id, address, client_state, expires)

    async def renew(self, subscription_id: str, expires: dt.datetime) -> dt.datetime:
        return await self._subscriptions.renew(subscription_id, expires)

    async def unsubscribe(self, subscription_id: str) -> None:
        await self._subscriptions.unsubscribe(subscription_id)

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
        await self._graph.close()


def _quoted(value: str) -> str:
    """A value inside an OData string literal."""
    return value.replace("'", "''")
