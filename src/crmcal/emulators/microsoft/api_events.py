"""Graph's event routes, the same under ``/v1.0/me``, ``/me/calendar`` and
``/me/calendars/{id}``: events, one event, its instances, calendar views and delta.

Under ``/me`` an event id reaches any calendar of the mailbox; under the other two
prefixes only the calendar the path names (``/me/calendar``: the default one).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from crmcal.emulators.microsoft import delta, events, odata, render
from crmcal.emulators.microsoft.api_calendars import calendar_of
from crmcal.emulators.microsoft.calls import (
    V1,
    Call,
    answer,
    body_of,
    call,
    page,
    params,
    state_of,
)
from crmcal.emulators.microsoft.errors import GraphError, access_denied
from crmcal.emulators.microsoft.model import Entry

PREFIXES = (V1 + "/me", V1 + "/me/calendar", V1 + "/me/calendars/{calendar_id}")
_EVENT_OPTIONS = frozenset({"$select", "$expand"})
_LIST_OPTIONS = frozenset({"$select", "$expand", "$filter", "$top", "$skip", "$orderby"})


def _calendar_id(request: Request) -> str | None:
    """The calendar the path names (None: the default one, or under ``/me`` any)."""
    return request.path_params.get("calendar_id")


def _scoped(request: Request) -> bool:
    """Whether the route is one under a calendar (an event id must be in it)."""
    path = str(request.scope["route"].path)
    return path.startswith((V1 + "/me/calendar/", V1 + "/me/calendars/"))


def _query(request: Request, allowed: frozenset[str]) -> odata.Query:
    return odata.parse_query(params(request), allowed=allowed, properties=events.PROPERTIES)


def _rendered(found: Call, entry: Entry, query: odata.Query) -> dict[str, Any]:
    return render.event(entry, found.prefs, select=query.select, expand=query.expand)


def _event_body(found: Call, entry: Entry, query: odata.Query | None = None) -> dict[str, Any]:
    context = found.context(f"users('{found.mailbox.user_id}')/events/$entity")
    return {"@odata.context": context, **_rendered(found, entry, query or odata.Query())}


def _listed(
    request: Request, found: Call, entries: list[Entry], query: odata.Query, what: str
) -> Response:
    if query.property_filter is not None:
        key, value = query.property_filter
        entries = [
            e for e in entries if key in e.props and (value is None or e.props[key] == value)
        ]
    if query.order is not None:
        entries = _ordered(entries, query.order)
    context = found.context(f"users('{found.mailbox.user_id}')/{what}")
    shown = page(request, found, entries, query, context, lambda e: _rendered(found, e, query))
    return answer(found, shown)


def _ordered(entries: list[Entry], order: tuple[str, bool]) -> list[Entry]:
    key, descending = order

    def value(entry: Entry) -> Any:
        if key == "start/dateTime":
            return entry.start
        if key == "end/dateTime":
            return entry.end
        return entry.body.get(key) or ""

    return sorted(entries, key=value, reverse=descending)


def _resolve(request: Request, found: Call, event_id: str) -> Entry:
    calendar = calendar_of(found, _calendar_id(request)) if _scoped(request) else None
    return state_of(request).events.resolve(found.mailbox, event_id, calendar)


async def list_events(request: Request) -> Response:
    found = call(request, "events.list")
    calendar = calendar_of(found, _calendar_id(request))
    query = _query(request, _LIST_OPTIONS)
    entries = state_of(request).events.listing(calendar, found.mailbox)
    return _listed(request, found, entries, query, "events")


async def create_event(request: Request) -> Response:
    found = call(request, "events.create")
    calendar = calendar_of(found, _calendar_id(request))
    entry, _ = state_of(request).events.create(found.mailbox, calendar, await body_of(request))
    return answer(found, _event_body(found, entry), 201)


async def get_event(request: Request, event_id: str) -> Response:
    found = call(request, "events.get")
    query = _query(request, _EVENT_OPTIONS)
    entry = _resolve(request, found, event_id)
    body = _event_body(found, entry, query)
    wanted = query.select is not None and "exceptionOccurrences" in query.select
    if wanted and query.expand_exceptions and entry.kind == "seriesMaster":
        # Only a GET of the master by id, with both $select and $expand, shows them.
        exceptions = state_of(request).events.exceptions(found.mailbox, entry)
        body["exceptionOccurrences"] = [
            render.event(e, found.prefs, expand=query.expand) for e in exceptions
        ]
    return answer(found, body)


async def update_event(request: Request, event_id: str) -> Response:
    found = call(request, "events.update")
    entry = _resolve(request, found, event_id)
    if event_id in state_of(request).refused_writes:
        raise access_denied()
    updated = state_of(request).events.update(
        found.mailbox, entry, await body_of(request), request.headers.get("if-match")
    )
    return answer(found, _event_body(found, updated))


async def delete_event(request: Request, event_id: str) -> Response:
    found = call(request, "events.delete")
    entry = _resolve(request, found, event_id)
    if event_id in state_of(request).refused_writes:
        raise access_denied()
    state_of(request).events.delete(found.mailbox, entry, request.headers.get("if-match"))
    return Response(status_code=204)


# The answers an invited user gives (``POST /events/{id}/accept`` and so on), as the
# ``responseStatus`` each leaves.
_ANSWERS = {"accept": "accepted", "tentativelyAccept": "tentativelyAccepted",
            "decline": "declined"}  # fmt: skip


async def respond_to_event(request: Request, event_id: str, answer_name: str) -> Response:
    """``accept``, ``tentativelyAccept``, ``decline``: ``{"comment"?, "sendResponse"?}``;
    202 without a body. An occurrence's id answers that occurrence alone."""
    found = call(request, f"events.{answer_name}")
    entry = _resolve(request, found, event_id)
    body = await body_of(request)
    if not isinstance(body, dict) or set(body) - {"comment", "sendResponse", "proposedNewTime"}:
        raise GraphError(400, "RequestBodyRead", "The request body holds an unknown property.")
    state_of(request).events.respond(found.mailbox, entry, _ANSWERS[answer_name])
    return Response(status_code=202)


async def accept_event(request: Request, event_id: str) -> Response:
    return await respond_to_event(request, event_id, "accept")


async def tentatively_accept_event(request: Request, event_id: str) -> Response:
    return await respond_to_event(request, event_id, "tentativelyAccept")


async def decline_event(request: Request, event_id: str) -> Response:
    return await respond_to_event(request, event_id, "decline")


async def instances(request: Request, event_id: str) -> Response:
    found = call(request, "events.instances")
    entry = _resolve(request, found, event_id)
    start, end = delta.window(params(request))
    query = _query(request, frozenset({"$select", "$expand", "$top", "$skip", "$orderby"}))
    state = state_of(request)
    master = state.events.item(found.mailbox, event_id)
    if entry.kind != "seriesMaster" or master is None:
        raise GraphError(
            400,
            "ErrorInvalidRequest",
            "The instances of an event can be listed only for a series master.",
        )
    found_entries = state.events.instances(found.mailbox, master, start, end)
    return _listed(request, found, found_entries, query, "events")


async def calendar_view(request: Request) -> Response:
    found = call(request, "calendarView.list")
    calendar = calendar_of(found, _calendar_id(request))
    start, end = delta.window(params(request))
    query = _query(request, _LIST_OPTIONS)
    entries = state_of(request).events.view(found.mailbox, calendar, start, end)
    return _listed(request, found, entries, query, "calendarView")


async def calendar_view_delta(request: Request) -> Response:
    found = call(request, "calendarView.delta")
    calendar = calendar_of(found, _calendar_id(request))
    link = f"{found.base}{request.url.path}"
    state = state_of(request)
    body = state.delta.page(
        state.events, found.mailbox, calendar, params(request), found.prefs, link
    )
    return answer(found, body)


_ROUTES: tuple[tuple[str, Callable[..., Awaitable[Response]], str], ...] = (
    ("/events", list_events, "GET"),
    ("/events", create_event, "POST"),
    ("/calendarView", calendar_view, "GET"),
    ("/calendarView/delta", calendar_view_delta, "GET"),
    ("/events/{event_id}/instances", instances, "GET"),
    ("/events/{event_id}/accept", accept_event, "POST"),
    ("/events/{event_id}/tentativelyAccept", tentatively_accept_event, "POST"),
    ("/events/{event_id}/decline", decline_event, "POST"),
    ("/events/{event_id}", get_event, "GET"),
    ("/events/{event_id}", update_event, "PATCH"),
    ("/events/{event_id}", delete_event, "DELETE"),
)

router = APIRouter()
for _prefix in PREFIXES:
    for _path, _handler, _method in _ROUTES:
        router.add_api_route(_prefix + _path, _handler, methods=[_method])
