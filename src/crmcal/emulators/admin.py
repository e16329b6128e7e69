"""The admin routes both emulators answer the same way, under ``/_emulator/``.

The settings (``GET``; changing them reads a body, which each emulator words its
own errors for), expiring every access token issued so far, and the request
counts by kind. The state is the app's ``app.state.emulated`` (the same object as
``app.state.google`` or ``app.state.microsoft``), reached through the request.
Never authenticated, never delayed, never failed by an injected fault; each
emulator's own ``admin`` module has the rest.
"""

from __future__ import annotations

from typing import Any, Protocol

from fastapi import APIRouter, Request
from fastapi.responses import Response


class Emulated(Protocol):
    """What these routes need of an emulator's state."""

    requests: dict[str, int]

    def settings(self) -> dict[str, Any]: ...

    def expire_access_tokens(self) -> None: ...


def state_of(request: Request) -> Emulated:
    return request.app.state.emulated


router = APIRouter()


@router.get("/_emulator/settings")
async def settings(request: Request) -> Any:
    return state_of(request).settings()


@router.post("/_emulator/expire-access-tokens")
async def expire_access(request: Request) -> Response:
    """Every access token issued so far stops working (refresh tokens still do)."""
    state_of(request).expire_access_tokens()
    return Response(status_code=204)


@router.get("/_emulator/requests")
async def requests(request: Request) -> Any:
    """How many calls of each kind the emulator has served (``events.list``: 3 …)."""
    return dict(sorted(state_of(request).requests.items()))
