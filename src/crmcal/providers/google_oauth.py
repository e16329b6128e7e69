"""Google's OAuth 2.0 endpoints: the consent URL, trading a code, refreshing tokens.

``authorize_url`` and ``exchange_code`` are the authorization-code flow with
PKCE (S256) that connects an account; ``RefreshingTokens`` is the provider's
``TokenSource``: it keeps an access token until a minute before it expires,
refreshes it with the stored refresh token, and reports a revoked or expired
grant (``invalid_grant``) as ``AuthenticationFailed`` saying that the user must
reconnect.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from urllib.parse import urlencode

import httpx

from crmcal.providers.base import AuthenticationFailed, ProviderError, Unreachable

TOKEN_URL = "https://oauth2.googleapis.com/token"  # noqa: S105  # a URL, not a secret
REVOKE_URL = "https://oauth2.googleapis.com/revoke"
AUTHORIZE_URL = "https://accounts.google.com/o/oauth2/v2/auth"
EARLY = 60.0  # refresh this many seconds before the access token expires


def endpoints(oauth_url: str | None) -> tuple[str, str, str]:
    """(authorize, token, revoke) URLs: Google's own, or all under one root (an emulator)."""
    if not oauth_url:
        return AUTHORIZE_URL, TOKEN_URL, REVOKE_URL
    root = oauth_url.rstrip("/")
    return f"{root}/o/oauth2/v2/auth", f"{root}/token", f"{root}/revoke"


SCOPES = (
    "https://www.googleapis.com/auth/calendar.events "
    "https://www.googleapis.com/auth/calendar.calendarlist.readonly"
)


def code_challenge(verifier: str) -> str:
    """The S256 PKCE challenge of a verifier (RFC 7636)."""
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def authorize_url(
    oauth_url: str | None, *, client_id: str, redirect_uri: str, state: str, verifier: str
) -> str:
    """Where to send the user to grant crmcal offline access to their calendars."""
    params = {
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "response_type": "code",
        "scope": SCOPES,
        "state": state,
        "code_challenge": code_challenge(verifier),
        "code_challenge_method": "S256",
        "access_type": "offline",  # a refresh token ...
        "prompt": "consent",  # ... every time, also when the user had granted before
        "include_granted_scopes": "true",
    }
    return f"{endpoints(oauth_url)[0]}?{urlencode(params)}"


async def exchange_code(
    oauth_url: str | None,
    *,
    code: str,
    verifier: str,
    redirect_uri: str,
    client_id: str,
    client_secret: str,
    transport: httpx.AsyncBaseTransport | None = None,
) -> str:
    """Trade an authorization code for the refresh token it grants."""
    form = {"grant_type": "authorization_code", "code": code, "code_verifier": verifier,
            "redirect_uri": redirect_uri, "client_id": client_id}  # fmt: skip
    if client_secret:
        form["client_secret"] = client_secret
    body = await _token_call(endpoints(oauth_url)[1], form, transport, 30)
    refresh = body.get("refresh_token")
    if not refresh:
        raise ProviderError("Google granted no offline access (no refresh token): try again")
    return str(refresh)


async def _token_call(
    url: str, form: dict[str, str], transport: httpx.AsyncBaseTransport | None, seconds: float
) -> dict[str, object]:
    try:
        async with httpx.AsyncClient(transport=transport, timeout=seconds) as http:
            response = await http.post(url, data=form)
    except httpx.TransportError as failure:
        raise Unreachable(f"cannot reach Google's sign-in service: {failure}") from None
    if response.status_code >= 500:
        raise Unreachable(f"Google's sign-in service failed ({response.status_code})")
    try:
        body = response.json()
    except ValueError:
        raise ProviderError("Google's sign-in service answered something else") from None
    if not isinstance(body, dict):
        raise ProviderError("Google's sign-in service answered something else")
    if response.status_code != 200 or "access_token" not in body:
        error = body.get("error")
        if error in ("invalid_grant", "invalid_client", "unauthorized_client"):
            raise AuthenticationFailed(
                f"Google no longer accepts this grant ({error}): reconnect required"
            )
        raise ProviderError(f"Google's sign-in service refused ({error})")
    return body


class RefreshingTokens:
    """Access tokens from a refresh token, refreshed before they expire."""

    def __init__(
        self,
        refresh_token: str,
        *,
        oauth_url: str | None = None,
        client_id: str = "",
        client_secret: str = "",
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 30,
    ) -> None:
        self._refresh_token = refresh_token
        self._token_url = endpoints(oauth_url)[1]
        self._client_id = client_id
        self._client_secret = client_secret
        self._transport = transport
        self._timeout = timeout
        self._access: str | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()

    async def __call__(self, refresh: bool = False) -> str:
        async with self._lock:
            if refresh or self._access is None or time.monotonic() >= self._expires - EARLY:
                await self._refresh()
            assert self._access is not None
            return self._access

    async def _refresh(self) -> None:
        form = {"grant_type": "refresh_token", "refresh_token": self._refresh_token}
        if self._client_id:
            form["client_id"] = self._client_id
        if self._client_secret:
            form["client_secret"] = self._client_secret
        body = await _token_call(self._token_url, form, self._transport, self._timeout)
        self._access = str(body["access_token"])
        expires_in = body.get("expires_in")
        seconds = float(expires_in) if isinstance(expires_in, int | float | str) else 3600.0
        self._expires = time.monotonic() + seconds
