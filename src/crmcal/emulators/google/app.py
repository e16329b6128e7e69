"""The Google Calendar v3 emulator's app: its routers, errors and data file put together.

``/calendar/v3/...`` serves calendarList and calendars (``api_calendars``) and
events (``api_events``) with bearer tokens checked on every call
(``calls.account()``); ``oauth`` adds Google's OAuth endpoints, ``batch`` the
batch endpoint, ``admin`` the ``/_emulator/`` admin API that tests and the demo
script. Each is a module-level router; the state lives in ``store.GoogleState``,
on ``app.state.google``, and every route reaches it through its request. With a
data file the state is also on disk (``persistence``), saved after every request
that may have changed it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from crmcal.emulators import admin as shared_admin
from crmcal.emulators import pages
from crmcal.emulators.google import (
    admin,
    api_calendars,
    api_events,
    batch,
    home,
    oauth,
    persistence,
)
from crmcal.emulators.google.calls import V3, bearer, state_of
from crmcal.emulators.google.errors import GoogleError
from crmcal.emulators.google.store import GoogleState

_READS = frozenset({"GET", "HEAD", "OPTIONS"})
# True while a write is served: the calls a batch makes inside it leave the saving to
# the batch, so a batch is saved once rather than once per part.
_in_write: ContextVar[bool] = ContextVar("_in_write", default=False)


async def _injected_delay(request: Request) -> None:
    """Wait out a pending delay fault before an API call is served: the calls status
    faults apply to (authenticated ``/calendar/v3`` calls), never the admin API."""
    if not request.url.path.startswith(V3 + "/"):
        return
    state = state_of(request)
    token = bearer(request)
    if token and state.account_for(token) is not None:
        seconds = state.delay()
        if seconds:
            await asyncio.sleep(seconds)


class _SaveAfterWrites:
    """Save the state before answering any request that is not a read, unless the
    answer is a 5xx (which changed nothing worth keeping)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in _READS or _in_write.get():
            await self.app(scope, receive, send)
            return
        # The app on the way in (Starlette puts itself in the scope): its state and file.
        state: GoogleState = scope["app"].state.google
        path: Path = scope["app"].state.data_file
        failed = False

        async def save_then_send(message: Message) -> None:
            nonlocal failed
            if failed:
                return
            if message["type"] == "http.response.start" and message["status"] < 500:
                try:
                    persistence.save(state, path)
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


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    if app.state.data_file is not None:
        # Reads change a little too (request counts, sync-token serials).
        persistence.save(app.state.google, app.state.data_file)


async def _google_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GoogleError)
    return JSONResponse(exc.body(), status_code=exc.status)


def create_app(state: GoogleState | None = None, *, data_file: Path | None = None) -> FastAPI:
    """The emulator; with ``data_file`` its state is loaded from that file (when it
    exists) and kept there (``persistence.DataFileError`` if it cannot be)."""
    state = state or GoogleState()
    if data_file is not None:
        persistence.open_data_file(state, data_file)
    app = FastAPI(
        title="crmcal Google Calendar emulator",
        docs_url=None,
        redoc_url=None,
        lifespan=_lifespan,
        dependencies=[Depends(_injected_delay)],
    )
    app.state.google = state
    app.state.emulated = state  # what the shared admin routes reach
    app.state.data_file = data_file
    if data_file is not None:
        app.add_middleware(_SaveAfterWrites)
    app.include_router(oauth.router)
    app.include_router(pages.router)
    app.include_router(home.router)
    app.include_router(batch.router)
    app.add_exception_handler(GoogleError, _google_error)
    app.include_router(api_calendars.router)
    app.include_router(api_events.router)
    app.include_router(admin.router)
    app.include_router(shared_admin.router)
    return app
