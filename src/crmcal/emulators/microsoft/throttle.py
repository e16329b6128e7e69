"""Outlook's limit of concurrent requests per mailbox, on demand (``mailbox_concurrency``).

Graph lets an app have four requests in flight against one mailbox; the next
one answers 429 ``ApplicationThrottled`` ("Application is over its
MailboxConcurrency limit.") with a ``Retry-After`` header. The emulator counts
the requests in flight per app (the token's client id) and mailbox in an ASGI
middleware around the whole app rather than in ``call()``: a call held by the
delay fault is in flight for all of its delay, as a slow call at Graph is. The
requests a ``$batch`` makes go through the app again and count one by one; the
envelope itself does not count (it would take a slot from its own requests).

Whether the limit is on or not, the most requests each mailbox had in flight at
once is kept (``GET /_emulator/concurrency``), so a test can check that
crmcal's own limits held across all of its processes.

Off by default, so tests that do not ask for it never meet it; ``POST
/_emulator/settings {"mailbox_concurrency": 4}`` switches it on (``null`` off).
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from crmcal.emulators.microsoft.errors import GraphError, bad_request
from crmcal.emulators.microsoft.store import THROTTLING, MicrosoftState

V1 = "/v1.0"
BATCH_PATH = V1 + "/$batch"
RETRY_AFTER = 1  # seconds: requests in flight finish quickly
MAX_LIMIT = 1000
SETTING = "mailbox_concurrency"


class Concurrency:
    """The ``mailbox_concurrency`` setting and the requests in flight it holds apps to."""

    def __init__(self) -> None:
        self.limit: int | None = None
        # (client id, mailbox address) -> requests being served now.
        self.in_flight: dict[tuple[str | None, str], int] = {}
        # Mailbox address -> the most requests of one app it had in flight at once,
        # counting the one the limit refused: what a client's own limiter kept to.
        self.peak: dict[str, int] = {}

    def settings(self) -> dict[str, Any]:
        return {SETTING: self.limit}

    def check(self, changes: dict[str, Any]) -> None:
        if SETTING not in changes:
            return
        value = changes[SETTING]
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LIMIT
        ):
            raise bad_request(f"{SETTING}: an integer between 1 and {MAX_LIMIT}, or null")

    def apply(self, changes: dict[str, Any]) -> None:
        if SETTING in changes:
            self.limit = changes[SETTING]


def concurrency_of(state: MicrosoftState) -> Concurrency:
    """The state's concurrency limit (made on first use; shared by every app on the state)."""
    found = state.extensions.get("throttle")
    if not isinstance(found, Concurrency):
        found = Concurrency()
        state.extensions["throttle"] = found
    return found


def throttled() -> GraphError:
    return GraphError(
        429,
        "ApplicationThrottled",
        THROTTLING["ApplicationThrottled"],
        headers={"Retry-After": str(RETRY_AFTER)},
    )


class _Limit:
    """ASGI middleware: counts authenticated ``/v1.0`` requests in flight per app and
    mailbox, and answers the one over the limit itself."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    @staticmethod
    def _key(state: MicrosoftState, scope: Scope) -> tuple[str | None, str] | None:
        header = Headers(scope=scope).get("authorization", "")
        if not header.lower().startswith("bearer "):
            return None
        token = header[7:].strip()
        try:
            mailbox = state.mailbox_for(token)
        except GraphError:
            return None  # the call answers 401 itself; it never reaches a mailbox
        return state.access_tokens[token].client_id, mailbox.email

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not path.startswith(V1 + "/") or path == BATCH_PATH:
            await self.app(scope, receive, send)
            return
        # The app on the way in (Starlette puts itself in the scope): its state.
        state: MicrosoftState = scope["app"].state.microsoft
        key = self._key(state, scope)
        if key is None:
            await self.app(scope, receive, send)
            return
        limits = concurrency_of(state)
        arriving = limits.in_flight.get(key, 0) + 1
        if arriving > limits.peak.get(key[1], 0):
            limits.peak[key[1]] = arriving
        if limits.limit is not None and limits.in_flight.get(key, 0) >= limits.limit:
            state.count("throttled")
            await self._answer(state, scope, throttled())(scope, receive, send)
            return
        limits.in_flight[key] = limits.in_flight.get(key, 0) + 1
        try:
            await self.app(scope, receive, send)
        finally:
            left = limits.in_flight[key] - 1
            if left:
                limits.in_flight[key] = left
            else:
                del limits.in_flight[key]

    @staticmethod
    def _answer(state: MicrosoftState, scope: Scope, error: GraphError) -> JSONResponse:
        request_id = str(uuid.uuid4())
        client_request_id = Headers(scope=scope).get("client-request-id") or request_id
        headers = {"request-id": request_id, "client-request-id": client_request_id}
        body = error.body(request_id, client_request_id, state.clock())
        return JSONResponse(body, error.status, headers | error.headers)


def install(app: FastAPI) -> None:
    """Count (and, when asked, limit) the requests in flight around the whole app."""
    concurrency_of(app.state.microsoft)  # its setting is listed from the start
    app.add_middleware(_Limit)
