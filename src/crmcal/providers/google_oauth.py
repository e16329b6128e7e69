"""Google's OAuth 2.0 endpoints: the consent URL, trading a code, refreshing tokens.

``authorize_url`` and ``exchange_code`` are the authorization-code flow with
PKCE (S256) that connects an account; ``RefreshingTokens`` is the provider's
``TokenSource`` (see ``oauth2``).
"""

from __future__ import annotations

from urllib.parse import urlencode

import httpx

from crmcal.providers import oauth2
from crmcal.providers.oauth2 import code_challenge

TOKEN_URL = "https://oauth2.googleapis.com/token"  # noqa: S105  # a URL, not a secret
REVOKE_URL = "https://oauth2.googleapis.com/revoke"
AUTHORIZE_URL = "https://accounts.google.com/o/oauth2/v2/auth"


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
    return await oauth2.exchange_code(
        "Google",
        endpoints(oauth_url)[1],
        code=code,
        verifier=verifier,
        redirect_uri=redirect_uri,
        client_id=client_id,
        client_secret=client_secret,
        transport=transport,
    )


class RefreshingTokens(oauth2.RefreshingTokens):
    """Access tokens for a Google grant, refreshed before they expire."""

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
        super().__init__(
            "Google",
            endpoints(oauth_url)[1],
            refresh_token,
            client_id=client_id,
            client_secret=client_secret,
            transport=transport,
            timeout=timeout,
        )
