"""Connecting a Google or Microsoft account by OAuth, over HTTP:
``/oauth/{google|microsoft}/start`` and its callback.

``start`` needs the user's API token (the CRM calls it, or sends the user's
browser there with the header set) and answers the service's consent URL: a
redirect, or ``{"authorize_url"}`` for ``Accept: application/json``. The
callback is where the browser comes back from the service, without the token.
The flow itself, and what the sealed ``state`` carries, is in ``sync/signin.py``.

The sign-in is bound to the browser that started it: ``start`` leaves a nonce
in an HttpOnly, SameSite=Lax cookie (Lax: the service sends the browser back
with a top-level GET), the state carries it, and the callback completes only
with it, once. So a consent URL sent to someone else connects nothing.
"""

from __future__ import annotations

import html
import json
import secrets
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from crmcal.crm import users
from crmcal.crm.errors import CrmError, NotFound
from crmcal.crm.schemas import NO_NUL, Doc
from crmcal.sync import signin
from crmcal.sync.options import SyncType
from crmcal.sync.signin import SERVICES, ServiceName
from crmcal.sync.states import ConnectionState
from crmcal.vault import VaultError
from crmcal.web.deps import database, reading, request_sync, settings_of, vault_of
from crmcal.web.openapi import refusals
from crmcal.web.ui.common import sign_in_failed, signed_in

router = APIRouter(prefix="/oauth", tags=["oauth"])
COOKIE = "crmcal_oauth"
KEPT = 5  # sign-ins one browser may have under way at once


def _kept(request: Request) -> list[str]:
    value = request.cookies.get(COOKIE) or ""
    return [nonce for nonce in value.split(".") if nonce][-KEPT:]


def _keep(request: Request, response: Response, nonces: list[str]) -> None:
    secure = settings_of(request).base_url.startswith("https://")
    if nonces:
        response.set_cookie(
            COOKIE, ".".join(nonces[-KEPT:]), max_age=signin.STATE_MAX_AGE, path="/oauth",
            httponly=True, samesite="lax", secure=secure,
        )  # fmt: skip
    else:
        response.delete_cookie(COOKIE, path="/oauth", httponly=True, samesite="lax",
                               secure=secure)  # fmt: skip


class AuthorizeUrl(BaseModel):
    authorize_url: str = Field(description="The service's consent screen, to send the user to.")


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


@router.get(
    "/{service}/start",
    response_model=None,
    name="oauth_start",
    responses={
        200: {"model": AuthorizeUrl, "description": "With `Accept: application/json`."},
        302: {
            "description": "Otherwise: a redirect to the service's consent screen.",
            "headers": {"Location": {"schema": {"type": "string", "format": "uri"}}},
        },
        **refusals(401, 403, 404, 409, 503, s404="No such connection (`connection_id`)."),
    },
)
async def start(
    request: Request,
    service: ServiceName,
    calendar_id: Annotated[
        Annotated[str, Doc(pattern=NO_NUL)] | None, Query(max_length=1000)
    ] = None,
    sync_type: SyncType = "two_way",
    connection_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    start: Annotated[
        bool,
        Query(description="false: the new connection stays `pending` until `.../start`."),
    ] = True,
) -> Response:
    """Send the user to Google or Microsoft to let crmcal sync their calendar; with
    ``connection_id``, to grant a stopped or failed connection to that service access
    again (it resumes with the same links, F18)."""
    vault = vault_of(request)
    nonce = secrets.token_urlsafe(16)
    async with reading(request) as (session, user):
        url = await signin.begin(
            session, user, vault, settings_of(request), service=service,
            calendar_id=calendar_id, sync_type=sync_type, connection_id=connection_id,
            start=start, browser=nonce,
        )  # fmt: skip
    answer: Response
    if _wants_json(request):
        answer = JSONResponse({"authorize_url": url})
    else:
        answer = RedirectResponse(url, status_code=302)
    _keep(request, answer, [*_kept(request), nonce])
    return answer


# The browser's way back from the service, never a client's call: its ``state`` is
# sealed by crmcal, so no request a client could build from the document succeeds.
@router.get("/{service}/callback", response_model=None, include_in_schema=False)
async def callback(
    request: Request,
    service: ServiceName,
    code: Annotated[str | None, Query(max_length=4000)] = None,
    state: Annotated[str | None, Query(max_length=4000)] = None,
    error: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    """Where the service sends the user back: trade the code, check the account, connect.
    A browser signed in to crmcal's pages goes back to the calendar sync settings."""
    title = SERVICES[service].title
    browser = not _wants_json(request) and await signed_in(request) is not None
    try:
        if error:
            raise signin.SignInFailed(
                f"{title} sign-in did not complete ({error}): nothing was connected"
            )
        if not code or not state:
            raise signin.SignInFailed(
                f"this address is for {title} to call back with a code and state"
            )
        out = await signin.finish(
            database(request), vault_of(request), settings_of(request),
            code=code, state=state, service=service, browser=_kept(request),
        )  # fmt: skip
    except (signin.SignInFailed, CrmError) as exc:
        if browser:
            return sign_in_failed(request, title, str(exc))
        if isinstance(exc, CrmError):
            raise
        raise HTTPException(400, str(exc)) from None
    if out.state == ConnectionState.ACTIVE:
        request_sync(request, out.id)
    answer: Response
    if _wants_json(request):
        answer = JSONResponse(out.model_dump(mode="json"), status_code=201)
    elif browser:
        answer = RedirectResponse("/settings/calendar-sync", status_code=303)
    else:
        async with database(request).read() as session:
            try:
                who = html.escape((await users.get_user(session, out.user_id)).email)
            except NotFound:
                who = f"user {out.user_id}"
        answer = HTMLResponse(
            f"<!doctype html><title>crmcal</title><h1>{title} calendar connected</h1>"
            f"<p>crmcal now syncs <b>{html.escape(out.calendar_name)}</b> of "
            f"{html.escape(out.account)} for the crmcal user <b>{who}</b>. "
            "You can close this page.</p>",
            status_code=201,
        )
    _keep(request, answer, [n for n in _kept(request) if n not in _used(state, request)])
    return answer


def _used(state: str | None, request: Request) -> set[str]:
    """The nonce the completed sign-in carried (it is of no further use)."""
    try:
        sealed = json.loads(vault_of(request).open_recent(state or "", signin.STATE_MAX_AGE))
    except (VaultError, ValueError):
        return set()
    return {str(sealed.get("b"))} if isinstance(sealed, dict) else set()
