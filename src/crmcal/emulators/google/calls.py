"""What every Google route of the emulator does with a request: the HTTP helpers.

``account()`` is the start of every API call (the request count, the bearer
token, an injected fault); ``body_of()`` reads what it was sent and
``params_of()`` its query, typed as Google reads it. The state is the app's
(``state_of()``), reached through the request. The route modules import this
one, and it imports none of them.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request

from crmcal.emulators.google.errors import GoogleError, invalid, unauthorized
from crmcal.emulators.google.store import Account, GoogleState

V3 = "/calendar/v3"
MAX_BODY = 1_000_000
_BOOLEANS = {"true": True, "false": False}
_INTEGERS = ("maxResults", "maxAttendees")
_REPEATED = ("privateExtendedProperty", "sharedExtendedProperty", "eventTypes")


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    token = header[7:].strip() if header.lower().startswith("bearer ") else None
    return token or request.query_params.get("access_token")


def state_of(request: Request) -> GoogleState:
    return request.app.state.google


def account(request: Request, kind: str) -> Account:
    """Count the call, check its token, serve an injected fault if one is pending."""
    state = state_of(request)
    state.count(kind)
    token = bearer(request)
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
