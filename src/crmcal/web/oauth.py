"""Connecting a Google account by OAuth: ``/oauth/google/start`` and its callback.

``start`` needs the user's API token (the CRM calls it, or sends the user's
browser there with the header set) and answers Google's consent URL: a redirect,
or ``{"authorize_url"}`` for ``Accept: application/json``. The state parameter
is sealed with the installation's key — who asked, the PKCE verifier, the
calendar and sync type wanted — and expires after ten minutes, so the callback
(which the browser reaches without the token) knows whom to connect and that
the answer belongs to a request crmcal made.
"""

from __future__ import annotations

import json
import secrets
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import ValidationError

from crmcal.crm.errors import Conflict as ConflictError
from crmcal.crm.tables import User
from crmcal.providers import google_oauth
from crmcal.providers.base import ProviderError
from crmcal.sync import connections
from crmcal.sync.connections import ConnectionCreate, Reconnect
from crmcal.sync.options import SyncType
from crmcal.vault import VaultError
from crmcal.web.deps import database, reading, request_sync, settings_of, vault_of

router = APIRouter(prefix="/oauth", tags=["oauth"])
STATE_MAX_AGE = 600


def _callback_url(request: Request) -> str:
    return f"{settings_of(request).base_url}/oauth/google/callback"


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


@router.get("/google/start", response_model=None)
async def google_start(
    request: Request,
    calendar_id: Annotated[str | None, Query(max_length=1000)] = None,
    sync_type: SyncType = "two_way",
    connection_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
) -> Response:
    """Send the user to Google to let crmcal sync their calendar; with ``connection_id``,
    to grant a stopped or failed Google connection access again (it resumes with
    the same links, F18)."""
    vault = vault_of(request)
    async with reading(request) as (session, user):
        connections.require_may_sync(user, sync_type)
        active = await connections.active_connection(session, user.id)
        if connection_id is not None:
            conn = await connections.get_own(session, user, connection_id)
            if conn.provider != "google" or conn.state not in ("stopped", "error"):
                raise ConflictError(
                    f"connection {connection_id} is not a stopped or failed Google connection"
                )
            if active is not None and active.id != conn.id:
                raise ConflictError(f"connection {active.id} is active: stop it first")
        elif active is not None:
            raise ConflictError("you already have an active calendar connection: stop it first")
        user_id = user.id
    verifier = secrets.token_urlsafe(48)
    sealed = {"u": user_id, "v": verifier, "c": calendar_id, "t": sync_type, "r": connection_id}
    state = vault.seal_for_a_while(json.dumps(sealed))
    settings = settings_of(request)
    url = google_oauth.authorize_url(
        settings.google_oauth_url,
        client_id=settings.google_client_id,
        redirect_uri=_callback_url(request),
        state=state,
        verifier=verifier,
    )
    if _wants_json(request):
        return JSONResponse({"authorize_url": url})
    return RedirectResponse(url, status_code=302)


@router.get("/google/callback", response_model=None)
async def google_callback(
    request: Request,
    code: Annotated[str | None, Query(max_length=4000)] = None,
    state: Annotated[str | None, Query(max_length=4000)] = None,
    error: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    """Where Google sends the user back: trade the code, check the account, connect."""
    if error:
        raise HTTPException(
            400, f"Google sign-in did not complete ({error}): nothing was connected"
        )
    if not code or not state:
        raise HTTPException(400, "this address is for Google to call back with a code and state")
    vault = vault_of(request)
    try:
        sealed = json.loads(vault.open_recent(state, STATE_MAX_AGE))
    except (VaultError, ValueError):
        raise HTTPException(
            400, "this sign-in link has expired or is not one crmcal made: start again"
        ) from None
    settings = settings_of(request)
    try:
        refresh_token = await google_oauth.exchange_code(
            settings.google_oauth_url,
            code=code,
            verifier=sealed["v"],
            redirect_uri=_callback_url(request),
            client_id=settings.google_client_id,
            client_secret=settings.google_client_secret,
        )
    except ProviderError as exc:
        raise HTTPException(400, f"Google did not grant access: {exc}") from None
    try:
        body = ConnectionCreate(provider="google", refresh_token=refresh_token,
                                calendar_id=sealed.get("c"), sync_type=sealed.get("t"))  # fmt: skip
    except ValidationError:
        raise HTTPException(400, "the sign-in request was damaged: start again") from None
    calendars = await connections.discover_calendars(body, settings)
    calendar = connections.pick_calendar(calendars, body.calendar_id, body.sync_type)
    account = next((c.id for c in calendars if c.primary), calendar.id)
    async with database(request).write() as session:
        user = await session.get(User, int(sealed["u"]))
        if user is None or not user.active:
            raise HTTPException(400, "the user who started this sign-in no longer exists")
        if sealed.get("r"):
            conn = await connections.get_own(session, user, int(sealed["r"]))
            if conn.account != account:
                raise HTTPException(
                    400, f"you signed in as {account}, but connection {conn.id} is for "
                    f"{conn.account}: sign in with that account"
                )  # fmt: skip
            grant = Reconnect(refresh_token=refresh_token)
            conn = await connections.reconnect(session, user, conn, grant, vault)
        else:
            conn = await connections.create(session, user, body, calendar, vault, account=account)
        out = connections.to_out(conn)
    request_sync(request, out.id)
    if _wants_json(request):
        return JSONResponse(out.model_dump(mode="json"), status_code=201)
    return HTMLResponse(
        f"<!doctype html><title>crmcal</title><h1>Google Calendar connected</h1>"
        f"<p>crmcal now syncs <b>{_escape(out.calendar_name)}</b> of {_escape(out.account)}."
        " You can close this page.</p>",
        status_code=201,
    )


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
