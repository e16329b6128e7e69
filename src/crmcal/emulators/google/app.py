"""The Google Calendar v3 emulator's HTTP face: Google's paths, parameters and errors.

``/calendar/v3/...`` serves calendarList, calendars and events with bearer
tokens checked on every call; ``/_emulator/...`` is the admin API that tests and
the demo script (accounts, calendars, sync-token expiry, faults, request counts).
The state lives in ``store.GoogleState``, and with a data file also on disk
(``persistence``), saved after every request that may have changed it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from crmcal.emulators import pages
from crmcal.emulators.google import batch, oauth, persistence
from crmcal.emulators.google.errors import GoogleError, invalid, unauthorized
from crmcal.emulators.google.store import Account, Calendar, GoogleState

V3 = "/calendar/v3"
_BOOLEANS = {"true": True, "false": False}
_INTEGERS = ("maxResults", "maxAttendees")
_REPEATED = ("privateExtendedProperty", "sharedExtendedProperty", "eventTypes")
MAX_BODY = 1_000_000
_READS = frozenset({"GET", "HEAD", "OPTIONS"})
# True while a write is served: the calls a batch makes inside it leave the saving to
# the batch, so a batch is saved once rather than once per part.
_in_write: ContextVar[bool] = ContextVar("_in_write", default=False)


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    token = header[7:].strip() if header.lower().startswith("bearer ") else None
    return token or request.query_params.get("access_token")


async def _injected_delay(request: Request) -> None:
    """Wait out a pending delay fault before an API call is served: the calls status
    faults apply to (authenticated ``/calendar/v3`` calls), never the admin API."""
    if not request.url.path.startswith(V3 + "/"):
        return
    state: GoogleState = request.app.state.google
    token = _bearer(request)
    if token and state.account_for(token) is not None:
        seconds = state.delay()
        if seconds:
            await asyncio.sleep(seconds)


class _SaveAfterWrites:
    """Save the state before answering any request that is not a read, unless the
    answer is a 5xx (which changed nothing worth keeping)."""

    def __init__(self, app: ASGIApp, state: GoogleState, path: Path) -> None:
        self.app = app
        self.state = state
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in _READS or _in_write.get():
            await self.app(scope, receive, send)
            return
        failed = False

        async def save_then_send(message: Message) -> None:
            nonlocal failed
            if failed:
                return
            if message["type"] == "http.response.start" and message["status"] < 500:
                try:
                    persistence.save(self.state, self.path)
                except OSError as exc:
                    # The client must not believe a change is kept when it is not.
                    failed = True
                    error = GoogleError(500, "backendError", f"Saving the data file failed: {exc}")
                    await JSONResponse(error.body(), status_code=500)(scope, receive, send)
                    return
            await send(message)

        reset = _in_write.set(True)
        try:
            await self.app(scope, receive, save_then_send)
        finally:
            _in_write.reset(reset)


def create_app(state: GoogleState | None = None, *, data_file: Path | None = None) -> FastAPI:
    """The emulator; with ``data_file`` its state is loaded from that file (when it
    exists) and kept there (``persistence.DataFileError`` if it cannot be)."""
    state = state or GoogleState()
    if data_file is not None:
        persistence.open_data_file(state, data_file)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if data_file is not None:
            # Reads change a little too (request counts, sync-token serials).
            persistence.save(state, data_file)

    app = FastAPI(
        title="crmcal Google Calendar emulator",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
        dependencies=[Depends(_injected_delay)],
    )
    app.state.google = state
    if data_file is not None:
        app.add_middleware(_SaveAfterWrites, state=state, path=data_file)
    oauth.install(app)
    pages.install_favicon(app)
    pages.install_google_home(app)
    batch.install(app)

    @app.exception_handler(GoogleError)
    async def google_error(request: Request, exc: GoogleError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    def calendar_body(calendar: Calendar) -> dict[str, Any]:
        return {"kind": "calendar#calendar", "etag": f'"{calendar.position}"', "id": calendar.id,
                "summary": calendar.summary, "timeZone": calendar.time_zone}  # fmt: skip

    def store(request: Request) -> GoogleState:
        return request.app.state.google

    def account(request: Request, kind: str) -> Account:
        state = store(request)
        state.count(kind)
        token = _bearer(request)
        found = state.account_for(token) if token else None
        if found is None:
            raise unauthorized()
        fault = state.fault()
        if fault is not None:
            raise fault
        return found

    async def body_of(request: Request) -> dict[str, Any]:
        raw = await request.body()
        if len(raw) > MAX_BODY:
            raise GoogleError(413, "requestTooLarge", "Request too large.")
        try:
            data = json.loads(raw or b"{}")
        except ValueError:
            raise GoogleError(400, "parseError", "Parse Error") from None
        if not isinstance(data, dict):
            raise GoogleError(400, "parseError", "Parse Error")
        return data

    def params_of(request: Request) -> dict[str, Any]:
        params: dict[str, Any] = {}
        for key in request.query_params:
            if key in _REPEATED:
                params[key] = request.query_params.getlist(key)
                continue
            value = request.query_params[key]
            if value.lower() in _BOOLEANS:
                params[key] = _BOOLEANS[value.lower()]
            elif key in _INTEGERS:
                try:
                    params[key] = int(value)
                except ValueError:
                    raise invalid(f"Invalid value for: {key}", location=key) from None
            else:
                params[key] = value
        return params

    # --- calendarList and calendars -------------------------------------------------

    @app.get(V3 + "/users/me/calendarList")
    async def calendar_list(request: Request) -> Any:
        user = account(request, "calendarList.list")
        params = params_of(request)
        return store(request).calendar_list(
            user, max_results=params.get("maxResults"), page_token=params.get("pageToken")
        )

    @app.get(V3 + "/users/me/calendarList/{calendar_id}")
    async def calendar_list_entry(request: Request, calendar_id: str) -> Any:
        user = account(request, "calendarList.get")
        state = store(request)
        return state.calendar_entry(user, state.calendar(user, calendar_id))

    @app.get(V3 + "/calendars/{calendar_id}")
    async def calendar_get(request: Request, calendar_id: str) -> Any:
        user = account(request, "calendars.get")
        return calendar_body(store(request).calendar(user, calendar_id))

    @app.post(V3 + "/calendars")
    async def calendar_insert(request: Request) -> Any:
        user = account(request, "calendars.insert")
        body = await body_of(request)
        summary = body.get("summary")
        if not isinstance(summary, str) or not summary:
            raise GoogleError(400, "required", "Missing title.", location="summary")
        state = store(request)
        calendar_id = f"{state.new_id()}@group.calendar.google.com"
        calendar = state.add_calendar(user.email, calendar_id, summary)
        calendar.time_zone = str(body.get("timeZone") or "UTC")
        return calendar_body(calendar)

    async def calendar_rewrite(request: Request, calendar_id: str, kind: str) -> Any:
        user = account(request, f"calendars.{kind}")
        state = store(request)
        calendar = state.calendar(user, calendar_id)
        if user.calendars[calendar.id] != "owner":
            raise GoogleError(403, "forbidden", "Forbidden")
        body = await body_of(request)
        summary = body.get("summary", None if kind == "patch" else "")
        if summary is not None:
            if not isinstance(summary, str) or not summary:
                raise GoogleError(400, "required", "Missing title.", location="summary")
            calendar.summary = summary
        if body.get("timeZone"):
            calendar.time_zone = str(body["timeZone"])
        return calendar_body(calendar)

    @app.patch(V3 + "/calendars/{calendar_id}")
    async def calendar_patch(request: Request, calendar_id: str) -> Any:
        return await calendar_rewrite(request, calendar_id, "patch")

    @app.put(V3 + "/calendars/{calendar_id}")
    async def calendar_update(request: Request, calendar_id: str) -> Any:
        return await calendar_rewrite(request, calendar_id, "update")

    # --- events -----------------------------------------------------------------------

    @app.get(V3 + "/calendars/{calendar_id}/events")
    async def events_list(request: Request, calendar_id: str) -> Any:
        user = account(request, "events.list")
        state = store(request)
        return state.list_events(state.calendar(user, calendar_id), params_of(request))

    @app.post(V3 + "/calendars/{calendar_id}/events")
    async def events_insert(request: Request, calendar_id: str) -> Any:
        user = account(request, "events.insert")
        state = store(request)
        calendar = state.calendar(user, calendar_id, write=True)
        created = state.insert(calendar, await body_of(request))
        state.mail_guests(created, request.query_params.get("sendUpdates"))
        return created

    @app.post(V3 + "/calendars/{calendar_id}/events/import")
    async def events_import(request: Request, calendar_id: str) -> Any:
        user = account(request, "events.import")
        state = store(request)
        calendar = state.calendar(user, calendar_id, write=True)
        return state.import_event(calendar, await body_of(request))

    @app.get(V3 + "/calendars/{calendar_id}/events/{event_id}/instances")
    async def events_instances(request: Request, calendar_id: str, event_id: str) -> Any:
        user = account(request, "events.instances")
        state = store(request)
        return state.instances(state.calendar(user, calendar_id), event_id, params_of(request))

    @app.post(V3 + "/calendars/{calendar_id}/events/watch")
    async def events_watch(request: Request, calendar_id: str) -> Any:
        user = account(request, "events.watch")
        state = store(request)
        calendar = state.calendar(user, calendar_id)
        return state.channels.watch(
            await body_of(request),
            calendar_id=calendar.id,
            account=user.email,
            now=state.clock(),
            resource_uri=f"https://www.googleapis.com/calendar/v3/calendars/{calendar.id}/events",
        )

    @app.post(V3 + "/channels/stop")
    async def channels_stop(request: Request) -> Response:
        user = account(request, "channels.stop")
        store(request).channels.stop(await body_of(request), user.email)
        return Response(status_code=204)

    @app.post(V3 + "/calendars/{calendar_id}/events/{event_id}/move")
    async def events_move(request: Request, calendar_id: str, event_id: str) -> Any:
        user = account(request, "events.move")
        state = store(request)
        destination_id = request.query_params.get("destination")
        if not destination_id:
            raise GoogleError(400, "required", "Required", location="destination")
        source = state.calendar(user, calendar_id, write=True)
        destination = state.calendar(user, destination_id, write=True)
        return state.move(source, event_id, destination)

    @app.get(V3 + "/calendars/{calendar_id}/events/{event_id}")
    async def events_get(request: Request, calendar_id: str, event_id: str) -> Any:
        user = account(request, "events.get")
        state = store(request)
        return state.get(state.calendar(user, calendar_id), event_id)

    async def rewrite(request: Request, calendar_id: str, event_id: str, kind: str) -> Any:
        """``events.update`` (PUT, the whole event) or ``events.patch`` (the fields sent)."""
        user = account(request, f"events.{kind}")
        state = store(request)
        calendar = state.calendar(user, calendar_id, write=True)
        write = state.update if kind == "update" else state.patch
        body = await body_of(request)
        written = write(calendar, event_id, body, request.headers.get("if-match"))
        state.mail_guests(written, request.query_params.get("sendUpdates"))
        return written

    @app.put(V3 + "/calendars/{calendar_id}/events/{event_id}")
    async def events_update(request: Request, calendar_id: str, event_id: str) -> Any:
        return await rewrite(request, calendar_id, event_id, "update")

    @app.patch(V3 + "/calendars/{calendar_id}/events/{event_id}")
    async def events_patch(request: Request, calendar_id: str, event_id: str) -> Any:
        return await rewrite(request, calendar_id, event_id, "patch")

    @app.delete(V3 + "/calendars/{calendar_id}/events/{event_id}")
    async def events_delete(request: Request, calendar_id: str, event_id: str) -> Response:
        user = account(request, "events.delete")
        state = store(request)
        calendar = state.calendar(user, calendar_id, write=True)
        state.delete(calendar, event_id, request.headers.get("if-match"))
        return Response(status_code=204)

    # --- the admin API ----------------------------------------------------------------

    @app.post("/_emulator/accounts")
    async def make_account(request: Request) -> Any:
        body = await body_of(request)
        email = body.get("email")
        if not isinstance(email, str) or "@" not in email:
            raise invalid("email: an e-mail address is required", location="email")
        client_id = body.get("client_id")
        return store(request).create_account(
            email, client_id if isinstance(client_id, str) else None
        )

    @app.post("/_emulator/calendars")
    async def make_calendar(request: Request) -> Any:
        body = await body_of(request)
        state = store(request)
        email = str(body.get("email", "")).strip().lower()
        if email not in state.accounts:
            raise invalid("email: no such account", location="email")
        calendar_id = str(body.get("id") or f"{len(state.calendars)}@group.calendar.google.com")
        role = str(body.get("access_role") or "owner")
        summary = str(body.get("summary") or calendar_id)
        calendar = state.add_calendar(email, calendar_id, summary, role=role)
        return {"id": calendar.id, "summary": calendar.summary, "access_role": role}

    @app.post("/_emulator/calendars/{calendar_id}/expire-sync-tokens")
    async def expire(request: Request, calendar_id: str) -> Response:
        state = store(request)
        calendar = state.calendars.get(calendar_id)
        if calendar is None:
            raise GoogleError(404, "notFound", "Not Found")
        state.expire_sync_tokens(calendar)
        return Response(status_code=204)

    @app.post("/_emulator/faults")
    async def faults(request: Request) -> Any:
        """``{"status": 403|429|500|503, "count": n}``: the next n API calls fail so;
        ``{"delay": seconds, "count": n}``: the next n API calls wait that long first
        (a call can be both delayed and failed); ``{"clear": true}`` removes every
        pending fault."""
        body = await body_of(request)
        state = store(request)
        if body.get("clear"):
            state.faults.clear()
            state.delays.clear()
        elif "delay" in body:
            if "status" in body:
                raise invalid("give either status or delay", location="delay")
            count = body.get("count", 1)
            if not isinstance(count, int):
                raise invalid("count must be an integer", location="count")
            state.add_delay(body["delay"], count)
        else:
            status, count = body.get("status"), body.get("count", 1)
            if not isinstance(status, int) or not isinstance(count, int):
                raise invalid("status and count must be integers", location="status")
            state.add_fault(status, count)
        pending: list[dict[str, Any]] = [
            {"status": f.status, "count": f.count} for f in state.faults
        ]
        pending += state.delays.described()
        return {"pending": pending}

    @app.get("/_emulator/settings")
    async def settings(request: Request) -> Any:
        return store(request).settings()

    @app.post("/_emulator/settings")
    async def configure(request: Request) -> Any:
        """``{"short_pages"?, "extended_property_match"?, "sync_token_max_age"?}``."""
        return store(request).configure(await body_of(request))

    @app.post("/_emulator/expire-access-tokens")
    async def expire_access(request: Request) -> Response:
        """Every access token issued so far stops working (refresh tokens still do)."""
        store(request).expire_access_tokens()
        return Response(status_code=204)

    @app.get("/_emulator/mail")
    async def mail(request: Request) -> Any:
        """The invitation mails sent so far (writes with ``sendUpdates=all``)."""
        return store(request).mails

    @app.get("/_emulator/channels")
    async def channels(request: Request) -> Any:
        """Open watch channels, and the notifications delivered so far."""
        found = store(request).channels
        return {
            "channels": [{"id": c.id, "calendar_id": c.calendar_id, "address": c.address,
                          "expiration": c.expiration.isoformat()} for c in found.by_id.values()],
            "delivered": found.delivered,
        }  # fmt: skip

    @app.get("/_emulator/requests")
    async def requests(request: Request) -> Any:
        return dict(sorted(store(request).requests.items()))

    return app
