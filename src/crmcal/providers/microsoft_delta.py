"""A calendar's changes from Graph: ``calendarView/delta`` over a window.

The window runs ``WINDOW_DAYS`` from the connection's first day, and is moved on when
it gets near its end; the ``@odata.deltaLink`` (with the window) is the cursor, and an
expired one (410, ``SyncStateNotFound``) starts over. Delta answers no extended
properties, so a full listing also reads crmcal's ids of the calendar's events in one
paged query, and marks itself incomplete (events outside the window are not in it).
``@removed`` means deleted *or* out of the window: such ids are listed as deleted but
``unconfirmed``, for the caller to read those it synced (never the occurrences of a
deleted series, one by one).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from crmcal.model import ChangeListing, RemoteRef
from crmcal.providers import microsoft_events as codec
from crmcal.providers.base import ProviderError
from crmcal.providers.microsoft_graph import PREFER, Graph, code, iso, read
from crmcal.providers.microsoft_items import item_id, nameless, ref, with_ids

__all__ = ["PAGE_SIZE", "RENEW_BEFORE", "WINDOW_DAYS", "Changes"]

# The most events a delta page may hold (``Prefer: odata.maxpagesize``): fewer pages,
# fewer requests per listing.
PAGE_SIZE = 1000
WINDOW_DAYS = 1825  # the longest calendarView Graph answers
RENEW_BEFORE = dt.timedelta(days=180)  # move the window on this long before its end
_EXPIRED = ("SyncStateNotFound", "resyncRequired", "SyncStateInvalid")


class Changes:
    """The change listings of one mailbox's calendars, through its ``Graph``;
    ``window_start``: the connection's first day (else a year back)."""

    def __init__(self, graph: Graph, window_start: dt.datetime | None) -> None:
        self._graph = graph
        self._api = graph.api
        self._window_start = window_start

    def _window(self, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
        start = self._window_start or now - dt.timedelta(days=365)
        # Keep at least RENEW_BEFORE ahead inside the longest window Graph answers.
        start = max(start, now + RENEW_BEFORE - dt.timedelta(days=WINDOW_DAYS - 1))
        return start, start + dt.timedelta(days=WINDOW_DAYS - 1)

    async def list_changes(self, calendar_id: str, cursor: str | None) -> ChangeListing:
        now = dt.datetime.now(dt.UTC)
        state = _decode(cursor)
        if state is not None and dt.datetime.fromisoformat(state["end"]) - RENEW_BEFORE > now:
            listing = await self._delta(calendar_id, state["link"], None, state)
            if listing is not None:
                return listing
        start, end = self._window(now)
        window = {"start": iso(start), "end": iso(end)}
        path = f"{Graph.calendar(calendar_id)}/calendarView/delta"
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
        round_ = await self._round(url, params)
        if round_ is None:
            return None
        items, link = round_
        listing, series = _fold(items, full=full)
        known = set(series) if full else {*window.get("series", ()), *series}
        removed = [i["id"] for i in items if "@removed" in i and item_id(i) is not None]
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
        # Nothing is lost to an item without an id: without a cursor, the next run
        # lists the window in full, where it may come whole (a synced event missing
        # from it is read by its id).
        lost = any(not changed.id for changed in listing.changed)
        listing.cursor = json.dumps(state) if link and not lost else None
        return listing

    async def _round(
        self, url: str, params: dict[str, Any] | None
    ) -> tuple[list[dict[str, Any]], Any] | None:
        """The items of one delta round, page by page, and its deltaLink; None when a
        link followed (no ``params``) has expired."""
        items: list[dict[str, Any]] = []
        query, seen = params, set[str]()
        while True:
            paged = {"Prefer": f"{PREFER}, odata.maxpagesize={PAGE_SIZE}"}
            response = await self._graph.request("GET", url, params=query, headers=paged)
            if params is None and (response.status_code == 410 or code(response) in _EXPIRED):
                return None
            if response.status_code != 200:
                raise self._api.failure(response, "listing events")
            data = self._api.json(response)
            found = data.get("value", [])
            if not isinstance(found, list):
                raise self._api.not_the_service(response)
            items += found
            query = None
            link = self._graph.next_link(data, seen)
            if link is None:
                return items, data.get("@odata.deltaLink")
            url = link

    async def _check_series(
        self, calendar_id: str, masters: set[str], listing: ChangeListing
    ) -> None:
        """Delta never names a series master: a deleted series shows as its occurrences
        ``@removed``, whose ids say nothing of their series. So when events went, the
        series known from earlier rounds are looked up (in ``$batch`` requests), and
        those gone are deletions."""
        ordered = sorted(masters)
        reads = [
            {"method": "GET", "url": f"{Graph.event(calendar_id, master)}?$select=id"}
            for master in ordered
        ]
        for master, answer in zip(ordered, await self._graph.send_all(reads), strict=True):
            if isinstance(answer, ProviderError):
                raise answer
            if answer.status_code in (404, 410):
                listing.deleted.append(master)

    async def _add_crm_ids(self, calendar_id: str, listing: ChangeListing) -> None:
        """crmcal's ids of the calendar's events, which delta cannot show: one paged
        query of ids and properties, so a reconnected calendar re-links its events."""
        params = {"$select": "id", "$expand": codec.expand_properties(), "$top": 500}
        found = await self._graph.pages(Graph.events(calendar_id), params, "reading crmcal's ids")
        ids = {str(item["id"]): codec.properties(item) for item in found}
        for n, changed in enumerate(listing.changed):
            props = ids.get(changed.id)
            if changed.event is not None and props:
                event = changed.event
                listing.changed[n] = RemoteRef(changed.id, changed.etag, with_ids(event, props))

    async def _read_crm_ids(self, calendar_id: str, listing: ChangeListing) -> None:
        """crmcal's ids of the events a delta round changed, read by id in ``$batch``
        requests (a query of the whole calendar would cost more than the few events of
        a round): an event moved to another calendar and back then finds its activity
        again."""
        query = f"$select=id&$expand={codec.expand_properties()}"
        wanted = [n for n, changed in enumerate(listing.changed) if changed.event is not None]
        reads = [read(f"{Graph.event(calendar_id, listing.changed[n].id)}?{query}") for n in wanted]
        answers = await self._graph.send_all(reads) if reads else []
        for n, answer in zip(wanted, answers, strict=True):
            changed = listing.changed[n]
            if isinstance(answer, ProviderError):
                raise answer
            if answer.status_code != 200 or changed.event is None:
                continue  # gone meanwhile, or no longer here: the next round says so
            props = codec.properties(self._api.json(answer))
            if props:
                event = with_ids(changed.event, props)
                listing.changed[n] = RemoteRef(changed.id, changed.etag, event)


def _fold(items: list[dict[str, Any]], *, full: bool) -> tuple[ChangeListing, set[str]]:
    """A round's items as a listing of the events changed, each series once by its
    master's id (delta lists occurrences, never masters); and those series' ids. It is
    windowed: a full listing does not show what lies outside the window."""
    listing = ChangeListing(full=full, complete=False)
    series: set[str] = set()
    for item in items:
        name = item_id(item)
        if name is None:
            # Reported under no id (the cursor is then not kept: see _delta).
            listing.changed.append(nameless(item))
            continue
        if "@removed" in item:
            continue
        master = item_id(item, "seriesMasterId")
        if master is not None or item.get("type") == "seriesMaster":
            series.add(master or name)
            continue
        if item.get("seriesMasterId") or item.get("type") in ("occurrence", "exception"):
            # An occurrence that names no series: read alone, it would become a single
            # activity beside its series'. Reported; its series brings it.
            error = "an occurrence of a series Microsoft 365 does not name"
            listing.changed.append(RemoteRef(name, _etag(item), error=error))
            continue
        listing.changed.append(ref(item))
    listing.changed += [RemoteRef(master, "", None) for master in sorted(series)]
    return listing, series


def _etag(item: dict[str, Any]) -> str:
    return str(item.get("@odata.etag") or item.get("changeKey") or "")


def _decode(cursor: str | None) -> dict[str, Any] | None:
    """A cursor's state (window, deltaLink, series known), or None for one unreadable."""
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
