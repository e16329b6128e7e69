"""The Microsoft Graph v1.0 emulator's HTTP face: Graph's paths, headers and errors.

``/v1.0/me/...`` serves the user, calendars, events, calendar views, instances
and delta queries, with a bearer token checked on every call and Graph's
``Prefer`` headers (``outlook.timezone``, ``IdType="ImmutableId"``,
``odata.maxpagesize``). Every API call goes through ``call()``: authentication,
the request count, injected faults. ``oauth`` adds the Entra ID v2.0 endpoints,
``admin`` the ``/_emulator/`` admin API, ``push`` subscriptions and change
notifications, ``batch`` ``$batch``, ``throttle`` the per-mailbox concurrency
limit. The state lives in ``store.MicrosoftState``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from crmcal.emulators import pages
from crmcal.emulators.microsoft import (
    admin,
    batch,
    delta,
    events,
    ids,
    oauth,
    odata,
    push,
    render,
    throttle,
)
from crmcal.emulators.microsoft.calls import (
    V1,
    Call,
    answer,
    bearer,
    body_of,
    call,
    error_response,
    page,
    params,
    state_of,
)
from crmcal.emulators.microsoft.errors import GraphError, bad_request, not_found
from crmcal.emulators.microsoft.model import Calendar, Entry
from crmcal.emulators.microsoft.store import MicrosoftState

_EVENT_OPTIONS = frozenset({"$select", "$expand"})
_LIST_OPTIONS = frozenset({"$select", "$expand", "$filter", "$top", "$skip", "$orderby"})
_CALENDAR_FIELDS = frozenset(
    {
        "id",
        "name",
        "color",
        "hexColor",
        "isDefaultCalendar",
        "changeKey",
        "canShare",
        "canViewPrivateItems",
        "canEdit",
        "allowedOnlineMeetingProviders",
        "defaultOnlineMeetingProvider",
        "isTallyingResponses",
        "isRemovable",
        "owner",
    }
)


async def _injected_delay(request: Request) -> None:
    """Wait out a pending delay fault before an authenticated API call is served."""
    if not request.url.path.startswith(V1 + "/"):
        return
    state = state_of(request)
    try:
        state.mailbox_for(bearer(request))
    except GraphError:
        return
    seconds = state.delay()
    if seconds:
        await asyncio.sleep(seconds)


def create_app(state: MicrosoftState | None = None) -> FastAPI:
    """The emulator. Features beyond the core install themselves on the app the way
    ``oauth`` and ``admin`` do (``module.install(app)``); every API call they serve,
    or dispatch through the app again, goes through ``call()``."""
    state = state or MicrosoftState()
    app = FastAPI(
        title="crmcal Microsoft Graph emulator",
        docs_url=None,
        redoc_url=None,
        dependencies=[Depends(_injected_delay)],
    )
    app.state.microsoft = state
    oauth.install(app)
    pages.install_favicon(app)
    pages.install_microsoft_home(app)
    admin.install(app)
    push.install(app)
    batch.install(app)
    throttle.install(app)

    @app.exception_handler(GraphError)
    async def graph_error(request: Request, exc: GraphError) -> JSONResponse:
        return error_response(request, exc)

    @app.exception_handler(HTTPException)
    async def routing_error(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 405:
            error = GraphError(405, "BadRequest", "The HTTP method is not allowed here.")
        else:
            segment = request.url.path.rstrip("/").rsplit("/", 1)[-1]
            error = bad_request(f"Resource not found for the segment '{segment}'.")
        return error_response(request, error)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        return error_response(request, bad_request(str(exc)))

    # --- the user ---------------------------------------------------------------------

    @app.get(V1 + "/me")
    async def me(request: Request) -> Response:
        found = call(request, "me.get")
        return answer(
            found, {"@odata.context": found.context("users/$entity"), **render.user(found.mailbox)}
        )

    @app.post(V1 + "/me/revokeSignInSessions")
    async def revoke_sessions(request: Request) -> Response:
        found = call(request, "me.revokeSignInSessions")
        state.revoke_sessions(found.mailbox)
        return answer(found, {"@odata.context": found.context("Edm.Boolean"), "value": True})

    # --- calendars --------------------------------------------------------------------

    def calendar_of(found: Call, calendar_id: str | None) -> Calendar:
        if calendar_id is None:
            return found.mailbox.default_calendar
        calendar = found.mailbox.calendars.get(calendar_id)
        if calendar is None:
            raise not_found()
        return calendar

    def calendar_body(found: Call, calendar: Calendar) -> dict[str, Any]:
        context = found.context(f"users('{found.mailbox.user_id}')/calendars/$entity")
        return {"@odata.context": context, **render.calendar(calendar, found.mailbox)}

    def calendar_name(body: Any, *, required: bool) -> str | None:
        if not isinstance(body, dict):
            raise bad_request("The request body must be a JSON object.")
        allowed = {"name", "color", "@odata.type"}
        unknown = sorted(set(body) - allowed - _CALENDAR_FIELDS)
        if unknown:
            raise GraphError(
                400,
                "RequestBodyRead",
                f"The property '{unknown[0]}' does not "
                "exist on type 'microsoft.graph.calendar'. Make sure to only use "
                "property names that are defined by the type or mark the type as "
                "open type.",
            )
        name = body.get("name")
        if name is None and not required:
            return None
        if not isinstance(name, str) or not name.strip():
            raise GraphError(400, "ErrorInvalidParameter", "The calendar name is missing.")
        return name.strip()

    @app.get(V1 + "/me/calendars")
    async def calendars_list(request: Request) -> Response:
        found = call(request, "calendars.list")
        query = odata.parse_query(
            params(request), allowed=frozenset({"$top", "$skip"}), properties=_CALENDAR_FIELDS
        )
        items = [render.calendar(c, found.mailbox) for c in found.mailbox.calendars.values()]
        context = found.context(f"users('{found.mailbox.user_id}')/calendars")
        return answer(found, page(request, found, items, query, context))

    @app.post(V1 + "/me/calendars")
    async def calendars_create(request: Request) -> Response:
        found = call(request, "calendars.create")
        name = calendar_name(await body_of(request), required=True)
        assert name is not None
        if any(c.name.lower() == name.lower() for c in found.mailbox.calendars.values()):
            raise GraphError(
                409, "ErrorFolderExists", "A folder with the specified name already exists."
            )
        calendar = state.add_calendar(found.mailbox.email, name)
        return answer(found, calendar_body(found, calendar), 201)

    @app.get(V1 + "/me/calendar")
    async def calendar_default(request: Request) -> Response:
        found = call(request, "calendars.get")
        return answer(found, calendar_body(found, calendar_of(found, None)))

    @app.get(V1 + "/me/calendars/{calendar_id}")
    async def calendar_get(request: Request, calendar_id: str) -> Response:
        found = call(request, "calendars.get")
        return answer(found, calendar_body(found, calendar_of(found, calendar_id)))

    @app.patch(V1 + "/me/calendars/{calendar_id}")
    async def calendar_patch(request: Request, calendar_id: str) -> Response:
        found = call(request, "calendars.update")
        calendar = calendar_of(found, calendar_id)
        body = await body_of(request)
        name = calendar_name(body, required=False)
        if calendar.owner != found.mailbox.email or not calendar.can_edit:
            raise GraphError(
                403, "ErrorAccessDenied", "Access is denied. Check credentials and try again."
            )
        if name is not None:
            calendar.name = name
        if isinstance(body.get("color"), str):
            calendar.color = body["color"]
        calendar.change_key = ids.change_key()
        return answer(found, calendar_body(found, calendar))

    # --- events -----------------------------------------------------------------------

    def query_of(request: Request, allowed: frozenset[str]) -> odata.Query:
        return odata.parse_query(params(request), allowed=allowed, properties=events.PROPERTIES)

    def rendered(found: Call, entry: Entry, query: odata.Query) -> dict[str, Any]:
        return render.event(entry, found.prefs, select=query.select, expand=query.expand)

    def event_body(found: Call, entry: Entry, query: odata.Query | None = None) -> dict[str, Any]:
        context = found.context(f"users('{found.mailbox.user_id}')/events/$entity")
        return {"@odata.context": context, **rendered(found, entry, query or odata.Query())}

    def listed(
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
        shown = page(request, found, entries, query, context, lambda e: rendered(found, e, query))
        return answer(found, shown)

    async def list_events(request: Request, calendar_id: str | None) -> Response:
        found = call(request, "events.list")
        calendar = calendar_of(found, calendar_id)
        query = query_of(request, _LIST_OPTIONS)
        return listed(
            request, found, state.events.listing(calendar, found.mailbox), query, "events"
        )

    async def create_event(request: Request, calendar_id: str | None) -> Response:
        found = call(request, "events.create")
        calendar = calendar_of(found, calendar_id)
        entry, _ = state.events.create(found.mailbox, calendar, await body_of(request))
        return answer(found, event_body(found, entry), 201)

    def resolve(found: Call, event_id: str, calendar_id: str | None, scoped: bool) -> Entry:
        calendar = calendar_of(found, calendar_id) if scoped else None
        return state.events.resolve(found.mailbox, event_id, calendar)

    async def get_event(
        request: Request, event_id: str, calendar_id: str | None, scoped: bool
    ) -> Response:
        found = call(request, "events.get")
        query = query_of(request, _EVENT_OPTIONS)
        entry = resolve(found, event_id, calendar_id, scoped)
        body = event_body(found, entry, query)
        wanted = query.select is not None and "exceptionOccurrences" in query.select
        if wanted and query.expand_exceptions and entry.kind == "seriesMaster":
            # Only a GET of the master by id, with both $select and $expand, shows them.
            exceptions = state.events.exceptions(found.mailbox, entry)
            body["exceptionOccurrences"] = [
                render.event(e, found.prefs, expand=query.expand) for e in exceptions
            ]
        return answer(found, body)

    async def update_event(
        request: Request, event_id: str, calendar_id: str | None, scoped: bool
    ) -> Response:
        found = call(request, "events.update")
        entry = resolve(found, event_id, calendar_id, scoped)
        updated = state.events.update(
            found.mailbox, entry, await body_of(request), request.headers.get("if-match")
        )
        return answer(found, event_body(found, updated))

    async def delete_event(
        request: Request, event_id: str, calendar_id: str | None, scoped: bool
    ) -> Response:
        found = call(request, "events.delete")
        entry = resolve(found, event_id, calendar_id, scoped)
        state.events.delete(found.mailbox, entry, request.headers.get("if-match"))
        return Response(status_code=204)

    async def instances(
        request: Request, event_id: str, calendar_id: str | None, scoped: bool
    ) -> Response:
        found = call(request, "events.instances")
        entry = resolve(found, event_id, calendar_id, scoped)
        start, end = delta.window(params(request))
        query = query_of(request, frozenset({"$select", "$expand", "$top", "$skip", "$orderby"}))
        master = state.events.item(found.mailbox, event_id)
        if entry.kind != "seriesMaster" or master is None:
            raise GraphError(
                400,
                "ErrorInvalidRequest",
                "The instances of an event can be listed only for a series master.",
            )
        found_entries = state.events.instances(found.mailbox, master, start, end)
        return listed(request, found, found_entries, query, "events")

    async def calendar_view(request: Request, calendar_id: str | None) -> Response:
        found = call(request, "calendarView.list")
        calendar = calendar_of(found, calendar_id)
        start, end = delta.window(params(request))
        query = query_of(request, _LIST_OPTIONS)
        entries = state.events.view(found.mailbox, calendar, start, end)
        return listed(request, found, entries, query, "calendarView")

    async def calendar_view_delta(request: Request, calendar_id: str | None) -> Response:
        found = call(request, "calendarView.delta")
        calendar = calendar_of(found, calendar_id)
        link = f"{found.base}{request.url.path}"
        body = state.delta.page(
            state.events, found.mailbox, calendar, params(request), found.prefs, link
        )
        return answer(found, body)

    # The same operations under /me, /me/calendar and /me/calendars/{id}.
    for prefix, scoped in (
        (V1 + "/me", False),
        (V1 + "/me/calendar", True),
        (V1 + "/me/calendars/{calendar_id}", True),
    ):
        _routes(
            app,
            prefix,
            scoped,
            list_events=list_events,
            create_event=create_event,
            get_event=get_event,
            update_event=update_event,
            delete_event=delete_event,
            instances=instances,
            calendar_view=calendar_view,
            calendar_view_delta=calendar_view_delta,
        )
    return app


def _routes(app: FastAPI, prefix: str, scoped: bool, **handlers: Any) -> None:
    """Mount the event operations under one prefix; ``{calendar_id}`` is read from the path
    (absent: the default calendar)."""

    def calendar_id(request: Request) -> str | None:
        return request.path_params.get("calendar_id")

    async def list_events(request: Request) -> Response:
        return await handlers["list_events"](request, calendar_id(request))

    async def create_event(request: Request) -> Response:
        return await handlers["create_event"](request, calendar_id(request))

    async def calendar_view(request: Request) -> Response:
        return await handlers["calendar_view"](request, calendar_id(request))

    async def calendar_view_delta(request: Request) -> Response:
        return await handlers["calendar_view_delta"](request, calendar_id(request))

    def on_event(name: str) -> Any:
        async def handler(request: Request, event_id: str) -> Response:
            return await handlers[name](request, event_id, calendar_id(request), scoped)

        return handler

    app.add_api_route(prefix + "/events", list_events, methods=["GET"])
    app.add_api_route(prefix + "/events", create_event, methods=["POST"])
    app.add_api_route(prefix + "/calendarView", calendar_view, methods=["GET"])
    app.add_api_route(prefix + "/calendarView/delta", calendar_view_delta, methods=["GET"])
    app.add_api_route(
        prefix + "/events/{event_id}/instances", on_event("instances"), methods=["GET"]
    )
    app.add_api_route(prefix + "/events/{event_id}", on_event("get_event"), methods=["GET"])
    app.add_api_route(prefix + "/events/{event_id}", on_event("update_event"), methods=["PATCH"])
    app.add_api_route(prefix + "/events/{event_id}", on_event("delete_event"), methods=["DELETE"])


def _ordered(entries: list[Entry], order: tuple[str, bool]) -> list[Entry]:
    key, descending = order

    def value(entry: Entry) -> Any:
        if key == "start/dateTime":
            return entry.start
        if key == "end/dateTime":
            return entry.end
        return entry.body.get(key) or ""

    return sorted(entries, key=value, reverse=descending)
