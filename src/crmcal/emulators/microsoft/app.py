"""The Microsoft Graph v1.0 emulator's app: its routers, errors and middleware put together.

``/v1.0/me/...`` serves the user and calendars (``api_calendars``) and events,
calendar views, instances and delta queries (``api_events``), with a bearer
token checked on every call and Graph's ``Prefer`` headers
(``outlook.timezone``, ``IdType="ImmutableId"``, ``odata.maxpagesize``). Every
API call goes through ``calls.call()``: authentication, the request count,
injected faults. ``oauth`` adds the Entra ID v2.0 endpoints, ``admin`` the
``/_emulator/`` admin API, ``push`` subscriptions and change notifications,
``batch`` ``$batch``, ``throttle`` the per-mailbox concurrency limit. Each is a
module-level router; the state lives in ``store.MicrosoftState``, on
``app.state.microsoft``, and every route reaches it through its request.
"""

from __future__ import annotations

import asyncio

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from crmcal.emulators import admin as shared_admin
from crmcal.emulators import pages
from crmcal.emulators.microsoft import (
    admin,
    api_calendars,
    api_events,
    batch,
    home,
    oauth,
    push,
    throttle,
)
from crmcal.emulators.microsoft.calls import V1, bearer, error_response, state_of
from crmcal.emulators.microsoft.errors import GraphError, bad_request
from crmcal.emulators.microsoft.store import MicrosoftState


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


async def _graph_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GraphError)
    return error_response(request, exc)


async def _routing_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        error = GraphError(405, "BadRequest", "The HTTP method is not allowed here.")
    else:
        segment = request.url.path.rstrip("/").rsplit("/", 1)[-1]
        error = bad_request(f"Resource not found for the segment '{segment}'.")
    return error_response(request, error)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    return error_response(request, bad_request(str(exc)))


def create_app(state: MicrosoftState | None = None) -> FastAPI:
    """The emulator: its routers in the order they match, on a state of its own (or
    ``state``). Every API call they serve, or dispatch through the app again (a
    ``$batch``), goes through ``calls.call()``."""
    state = state or MicrosoftState()
    app = FastAPI(
        title="crmcal Microsoft Graph emulator",
        docs_url=None,
        redoc_url=None,
        dependencies=[Depends(_injected_delay)],
    )
    app.state.microsoft = state
    app.state.emulated = state  # what the shared admin routes reach
    app.include_router(oauth.router)
    app.include_router(pages.router)
    app.include_router(home.router)
    app.include_router(admin.router)
    app.include_router(shared_admin.router)
    app.include_router(push.router)
    # Subscriptions listen to the state from the start; their deliveries stop with the app.
    app.router.add_event_handler("shutdown", push.subscriptions_of(state).close)
    app.include_router(batch.router)
    throttle.install(app)
    app.add_exception_handler(GraphError, _graph_error)
    app.add_exception_handler(HTTPException, _routing_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.include_router(api_calendars.router)
    app.include_router(api_events.router)
    return app
