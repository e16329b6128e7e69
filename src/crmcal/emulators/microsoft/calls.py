"""What every Graph route of the emulator does with a request: the HTTP helpers.

``call()`` is the start of every API call (the bearer token, the request count,
an injected fault, the ``Prefer`` headers); ``answer()`` and ``page()`` shape
what it answers, ``body_of()`` reads what it was sent, ``error_response()`` words
a ``GraphError`` as Graph does. The state is the app's (``state_of()``), reached
through the request. The route modules (``api``, ``push``, ``batch`` ...) import
this one, and it imports none of them.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import JSONResponse

from crmcal.emulators.microsoft import odata, times
from crmcal.emulators.microsoft.errors import GraphError, bad_request
from crmcal.emulators.microsoft.model import Mailbox
from crmcal.emulators.microsoft.store import MicrosoftState

V1 = "/v1.0"
MAX_BODY = 4_000_000


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    return header[7:].strip() or None if header.lower().startswith("bearer ") else None


def state_of(request: Request) -> MicrosoftState:
    return request.app.state.microsoft


def client_id(request: Request) -> str | None:
    """The client id of the app whose token the request carries."""
    token = state_of(request).access_tokens.get(bearer(request) or "")
    return token.client_id if token is not None else None


def _ids(request: Request) -> tuple[str, str]:
    request_id = str(uuid.uuid4())
    return request_id, request.headers.get("client-request-id") or request_id


def error_response(request: Request, exc: GraphError) -> JSONResponse:
    request_id, client_request_id = _ids(request)
    now = state_of(request).clock()
    headers = {"request-id": request_id, "client-request-id": client_request_id, **exc.headers}
    return JSONResponse(exc.body(request_id, client_request_id, now), exc.status, headers)


@dataclass
class Call:
    """An authenticated API call: whose mailbox, and what the request prefers."""

    mailbox: Mailbox
    prefs: odata.Preferences
    base: str  # the emulator's root URL, as the client reached it

    def context(self, what: str) -> str:
        return f"{self.base}/v1.0/$metadata#{what}"


def call(request: Request, kind: str) -> Call:
    """Count the call, check its token, serve an injected fault if one is pending."""
    state = state_of(request)
    state.count(kind)
    mailbox = state.mailbox_for(bearer(request))
    fault = state.fault()
    if fault is not None:
        raise fault
    prefs = odata.preferences(request.headers.getlist("prefer"))
    if prefs.time_zone is not None:
        times.zone(prefs.time_zone)
    return Call(mailbox, prefs, str(request.base_url).rstrip("/"))


def answer(found: Call, body: Any, status: int = 200) -> JSONResponse:
    headers = {}
    applied = found.prefs.applied()
    if applied:
        headers["Preference-Applied"] = applied
    return JSONResponse(body, status, headers)


async def body_of(request: Request) -> Any:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise GraphError(413, "RequestEntityTooLarge", "The request body is too large.")
    try:
        return json.loads(raw or b"{}")
    except ValueError:
        raise bad_request(
            "Unable to read JSON request payload. Please ensure Content-Type header is set and "
            "payload is of valid JSON format."
        ) from None


def params(request: Request) -> dict[str, str]:
    return dict(request.query_params.items())


def page(
    request: Request,
    found: Call,
    items: list[Any],
    query: odata.Query,
    context: str,
    render: Callable[[Any], Any] = lambda item: item,
) -> dict[str, Any]:
    """A list answer: ``$top``/``odata.maxpagesize`` items from ``$skip`` (only those
    rendered: a page of a large calendar costs a page), and a nextLink."""
    state = state_of(request)
    size = query.top or found.prefs.max_page_size or state.page_size
    shown = [render(item) for item in items[query.skip : query.skip + size]]
    body: dict[str, Any] = {"@odata.context": context}
    if query.skip + size < len(items):
        kept = {k: v for k, v in request.query_params.items() if k.lower() != "$skip"}
        kept["$skip"] = str(query.skip + size)
        body["@odata.nextLink"] = f"{found.base}{request.url.path}?{urlencode(kept, safe='$/:')}"
    body["value"] = shown
    return body
