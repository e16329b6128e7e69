"""OAuth 2.0 as Microsoft Entra ID runs it (v2.0 endpoints), for the emulator.

``GET /{tenant}/oauth2/v2.0/authorize`` shows a consent page a person can click
(the demo): pick an account or type an address; it redirects to the client's
``redirect_uri`` with a ``code`` and the ``state``. ``POST
/{tenant}/oauth2/v2.0/token`` trades the code (checking the PKCE verifier and the
redirect URI) or a refresh token for tokens. Refresh tokens are handed out only
when ``offline_access`` is asked for, and rotate: each use answers a new one,
and the old one keeps working (as Entra's do) until the user's sign-in sessions
are revoked or it lies unused for 90 days. Errors have Entra's shape, with
``AADSTS`` codes. The tenant segment may be ``common``, ``organizations``,
``consumers``, a GUID or a domain.
"""

from __future__ import annotations

import datetime as dt
import html
import re
import secrets
import uuid
from collections.abc import Callable

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.datastructures import FormData

from crmcal.emulators.grants import (
    Grant,
    codes_of,
    consenting_email,
    hidden_fields,
    redirect,
)
from crmcal.emulators.microsoft.calls import state_of
from crmcal.emulators.microsoft.store import MicrosoftState

ACCESS_TOKEN_SECONDS = 3599
GRAPH_RESOURCE = "https://graph.microsoft.com/"
_TENANT = re.compile(
    r"common|organizations|consumers|[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}"
    r"|[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+"
)


def scopes(text: str) -> str:
    """The scopes a token answer names: Graph's without the resource prefix."""
    found = [s.removeprefix(GRAPH_RESOURCE) for s in text.split() if s]
    return " ".join(dict.fromkeys(found))


def _error(
    state: MicrosoftState, error: str, code: int, description: str, status: int = 400
) -> JSONResponse:
    trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
    now = state.clock().astimezone(dt.UTC)
    stamp = now.strftime("%Y-%m-%d %H:%M:%SZ")
    return JSONResponse(
        {
            "error": error,
            "error_description": f"AADSTS{code}: {description} Trace ID: {trace} "
            f"Correlation ID: {correlation} Timestamp: {stamp}",
            "error_codes": [code],
            "timestamp": stamp,
            "trace_id": trace,
            "correlation_id": correlation,
            "error_uri": f"https://login.microsoftonline.com/error?code={code}",
        },
        status_code=status,
    )


def _error_page(code: int, description: str) -> HTMLResponse:
    return HTMLResponse(
        "<!doctype html><title>Sign in to your account (emulator)</title>"
        f"<h1>Sorry, but we're having trouble signing you in.</h1>"
        f"<p>AADSTS{code}: {html.escape(description)}</p>",
        status_code=400,
    )


router = APIRouter()


@router.get("/{tenant}/oauth2/v2.0/authorize", response_class=HTMLResponse)
async def authorize(request: Request, tenant: str) -> Response:
    query = request.query_params
    if not _TENANT.fullmatch(tenant):
        return _error_page(90002, f"Tenant '{tenant}' not found.")
    for name in ("client_id", "redirect_uri", "response_type", "scope"):
        if not query.get(name):
            return _error_page(
                900144, f"The request body must contain the following parameter: '{name}'."
            )
    if query["response_type"] != "code":
        return _error_page(
            700054,
            "response_type 'id_token' is not enabled for the "
            "application; the emulator answers only 'code'.",
        )
    method = query.get("code_challenge_method", "plain")
    if query.get("code_challenge") and method not in ("S256", "plain"):
        return _error_page(501491, "Invalid size of Code_Challenge parameter.")
    accounts = sorted(state_of(request).mailboxes)
    hidden = hidden_fields(query.items())
    choices = "".join(
        f'<p><button name="email" value="{html.escape(a)}">{html.escape(a)}</button></p>'
        for a in accounts
    )
    action = f"/{html.escape(tenant)}/oauth2/v2.0/authorize"
    page = (
        "<!doctype html><title>Sign in to your account (Microsoft emulator)</title>"
        "<h1>Pick an account</h1>"
        f"<p>The app <code>{html.escape(query['client_id'])}</code> would like to: "
        f"{html.escape(query['scope'])}</p>"
        f'<form method="post" action="{action}">{hidden}{choices}'
        '<p><label>Use another account: <input name="other_email" type="email"></label> '
        "<button>Accept</button></p></form>"
    )
    return HTMLResponse(page)


@router.post("/{tenant}/oauth2/v2.0/authorize")
async def consent(request: Request, tenant: str) -> Response:
    form = await request.form()
    email = consenting_email(form)  # "Accept" posts the typed address
    redirect_uri = str(form.get("redirect_uri") or "")
    if "@" not in email or not redirect_uri or not _TENANT.fullmatch(tenant):
        return _error_page(900144, "An account and a redirect_uri are required.")
    state = state_of(request)
    client_id = str(form.get("client_id") or "")
    if email not in state.mailboxes:
        state.mailbox(email, client_id or None)
    code = "0.A" + secrets.token_urlsafe(48)
    codes_of(request)[code] = Grant.consented(
        form, email, str(form.get("scope") or ""), state.clock()
    )
    params = {"code": code}
    if form.get("state"):
        params["state"] = str(form.get("state"))
    params["session_state"] = str(uuid.uuid4())
    return redirect(redirect_uri, params)


@router.post("/{tenant}/oauth2/v2.0/token")
async def token(request: Request, tenant: str) -> Response:
    form = await request.form()
    state = state_of(request)
    state.count("oauth.token")
    grant_type = str(form.get("grant_type") or "")
    client_id = str(form.get("client_id") or "")
    if not _TENANT.fullmatch(tenant):
        return _error(state, "invalid_request", 90002, f"Tenant '{tenant}' not found.")
    if not grant_type:
        return _error(
            state,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'grant_type'.",
        )
    grant = _GRANT_TYPES.get(grant_type)
    if grant is not None:
        return grant(request, form, state, client_id)
    return _error(
        state,
        "unsupported_grant_type",
        70003,
        f"The app requested an unsupported grant type '{grant_type}'.",
    )


def _redeem_code(
    request: Request, form: FormData, state: MicrosoftState, client_id: str
) -> Response:
    """The ``authorization_code`` grant: a consented code, once, for its client."""
    code = str(form.get("code") or "")
    grant = codes_of(request).get(code)
    if grant is None:
        return _error(
            state,
            "invalid_grant",
            70000,
            "The provided value for the 'code' parameter is not valid.",
        )
    if grant.redeemed:
        return _error(
            state,
            "invalid_grant",
            54005,
            "OAuth2 Authorization code was already redeemed, please retry "
            "with a new valid code or use an existing refresh token.",
        )
    if grant.expired(state.clock()):
        return _error(
            state,
            "invalid_grant",
            70008,
            "The provided authorization code or refresh token has expired due to inactivity.",
        )
    if client_id and grant.client_id and client_id != grant.client_id:
        return _error(
            state,
            "invalid_grant",
            70000,
            "The provided value for the 'code' parameter is not valid: it "
            "was issued to another client.",
        )
    if str(form.get("redirect_uri") or "") != grant.redirect_uri:
        return _error(
            state,
            "invalid_grant",
            50148,
            "The redirect URI specified in the request does not match the "
            "redirect URI used to obtain the authorization code.",
        )
    if not grant.verifies(str(form.get("code_verifier") or "")):
        return _error(
            state,
            "invalid_grant",
            501481,
            "The Code_Verifier does not match the code_challenge "
            "supplied in the authorization request.",
        )
    grant.redeemed = True
    return _tokens(state, grant.email, grant.client_id or None, grant.scope)


def _refresh(request: Request, form: FormData, state: MicrosoftState, client_id: str) -> Response:
    """The ``refresh_token`` grant: a live, unrevoked refresh token of its client."""
    presented = str(form.get("refresh_token") or "")
    found = state.refresh_tokens.get(presented)
    if found is None:
        return _error(
            state,
            "invalid_grant",
            9002313,
            "Invalid request. Request is malformed or invalid.",
        )
    mailbox = state.mailboxes[found.email]
    now = state.clock()
    if found.serial < mailbox.revoked_before and mailbox.tokens_valid_from is not None:
        valid_from = mailbox.tokens_valid_from.strftime("%m/%d/%Y %H:%M:%S")
        issued = found.issued.strftime("%m/%d/%Y %H:%M:%S")
        return _error(
            state,
            "invalid_grant",
            50173,
            "The provided grant has expired due to it being revoked, a fresh "
            "auth token is needed. The user might have changed or reset their "
            f"password. The grant was issued on '{issued}' and the "
            f"TokensValidFrom date (before which tokens are not valid) for "
            f"this user is '{valid_from}'.",
        )
    if now - found.last_used > state.refresh_token_max_age:
        return _error(
            state,
            "invalid_grant",
            700082,
            "The refresh token has expired due to inactivity. The token was "
            "issued on "
            f"{found.issued.isoformat()} and was inactive for 90.00:00:00.",
        )
    if client_id and found.client_id and client_id != found.client_id:
        return _error(
            state,
            "invalid_grant",
            700005,
            "Provided Authorization Code is intended to use against other client.",
        )
    found.last_used = now
    scope = str(form.get("scope") or found.scope)
    return _tokens(state, found.email, found.client_id, scope)


_GRANT_TYPES: dict[str, Callable[[Request, FormData, MicrosoftState, str], Response]] = {
    "authorization_code": _redeem_code,
    "refresh_token": _refresh,
}


def _tokens(state: MicrosoftState, email: str, client_id: str | None, scope: str) -> Response:
    named = scopes(scope) or "Calendars.ReadWrite User.Read"
    offline = "offline_access" in named.split()
    tokens = state.issue_tokens(email, client_id, named, refresh=offline)
    body = {
        "token_type": "Bearer",
        "scope": named,
        "expires_in": ACCESS_TOKEN_SECONDS,
        "ext_expires_in": ACCESS_TOKEN_SECONDS,
        **tokens,
    }
    return JSONResponse(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})
