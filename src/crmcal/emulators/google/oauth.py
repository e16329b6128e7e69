"""OAuth 2.0 as Google runs it, for the emulator: consent, codes with PKCE, tokens, revocation.

``GET /o/oauth2/v2/auth`` shows a consent screen a person can click (the demo);
``POST /token`` trades an authorization code (checking the PKCE verifier and the
redirect URI) or a refresh token for an access token; ``POST /revoke`` revokes a
refresh token and every access token it issued. Access tokens expire after an
hour; a revoked or unknown refresh token gets ``invalid_grant``, as from Google.
"""

from __future__ import annotations

import html
import secrets
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from crmcal.emulators.google.calls import state_of
from crmcal.emulators.grants import (
    Grant,
    codes_of,
    consenting_email,
    hidden_fields,
    redirect,
)

ACCESS_TOKEN_SECONDS = 3600
SCOPES = "https://www.googleapis.com/auth/calendar"


def _oauth_error(error: str, description: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=status)


router = APIRouter()


@router.get("/o/oauth2/v2/auth", response_class=HTMLResponse)
async def authorize(request: Request) -> Response:
    query = request.query_params
    missing = [p for p in ("client_id", "redirect_uri", "response_type") if not query.get(p)]
    if missing or query.get("response_type") != "code":
        reason = f"missing {missing[0]}" if missing else "response_type must be code"
        return HTMLResponse(f"<h1>Error 400: invalid_request</h1><p>{reason}</p>", 400)
    accounts = sorted(state_of(request).accounts)
    hidden = hidden_fields(query.items())
    choices = "".join(
        f'<button name="email" value="{html.escape(a)}">Continue as {html.escape(a)}</button>'
        for a in accounts
    )
    page = (
        "<!doctype html><title>Sign in - Google Accounts (emulator)</title>"
        "<h1>crmcal wants to access your Google Calendar</h1>"
        f"<p>Client <code>{html.escape(query['client_id'])}</code> asks for: "
        f"{html.escape(query.get('scope', SCOPES))}</p>"
        f'<form method="post" action="/o/oauth2/v2/auth">{hidden}{choices}'
        '<p><label>Another account: <input name="other_email" type="email"></label>'
        "<button>Allow</button></p></form>"
    )
    return HTMLResponse(page)


@router.post("/o/oauth2/v2/auth")
async def consent(request: Request) -> Response:
    form = await request.form()
    email = consenting_email(form)  # "Allow" posts the typed address
    redirect_uri = str(form.get("redirect_uri") or "")
    if "@" not in email or not redirect_uri:
        return HTMLResponse("<h1>Error 400: invalid_request</h1>", 400)
    state = state_of(request)
    if email not in state.accounts:
        state.create_account(email)
    code = secrets.token_urlsafe(24)
    grant = Grant.consented(form, email, str(form.get("scope") or SCOPES), state.clock())
    codes_of(request)[code] = grant
    params = {"code": code, "scope": grant.scope}
    if form.get("state"):
        params["state"] = str(form.get("state"))
    return redirect(redirect_uri, params)


@router.post("/token")
async def token(request: Request) -> Response:
    form = await request.form()
    state = state_of(request)
    state.count("oauth.token")
    grant_type = form.get("grant_type")
    if grant_type == "authorization_code":
        grant = codes_of(request).pop(str(form.get("code") or ""), None)
        if grant is None or grant.expired(state.clock()):
            return _oauth_error("invalid_grant", "Malformed auth code.")
        if str(form.get("redirect_uri") or "") != grant.redirect_uri:
            return _oauth_error("redirect_uri_mismatch", "Bad Request")
        if grant.client_id and str(form.get("client_id") or "") != grant.client_id:
            return _oauth_error("invalid_client", "The OAuth client was not found.", 401)
        if not grant.verifies(str(form.get("code_verifier") or "")):
            return _oauth_error("invalid_grant", "Invalid code verifier.")
        tokens = state.create_account(grant.email, grant.client_id or None)
        return JSONResponse(_token_body(tokens["access_token"], grant.scope)
                            | {"refresh_token": tokens["refresh_token"]})  # fmt: skip
    if grant_type == "refresh_token":
        refresh = str(form.get("refresh_token") or "")
        email = state.refresh_tokens.get(refresh)
        if email is None:
            return _oauth_error("invalid_grant", "Token has been expired or revoked.")
        access = state.issue_access_token(email, refresh)
        return JSONResponse(_token_body(access, SCOPES))
    return _oauth_error("unsupported_grant_type", f"Invalid grant_type: {grant_type}")


@router.post("/revoke")
async def revoke(request: Request) -> Response:
    form = await request.form()
    token = str(request.query_params.get("token") or form.get("token") or "")
    if not state_of(request).revoke(token):
        return _oauth_error("invalid_token", "Token expired or revoked")
    return JSONResponse({})


def _token_body(access_token: str, scope: str) -> dict[str, Any]:
    return {
        "access_token": access_token,
        "expires_in": ACCESS_TOKEN_SECONDS - 1,
        "scope": scope,
        "token_type": "Bearer",
    }
