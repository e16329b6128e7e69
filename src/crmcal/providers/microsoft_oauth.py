"""Microsoft's OAuth 2.0 (Entra ID v2.0) endpoints: the consent URL, codes, tokens.

The same authorization-code flow with PKCE as Google's; Microsoft rotates the
refresh token on every refresh, which ``oauth2.RefreshingTokens`` hands back to
be stored.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import urlencode

import httpx

from crmcal.providers import oauth2

LOGIN = "https://login.microsoftonline.com"
TENANT = "common"  # work, school and personal accounts alike
SCOPES = "offline_access User.Read Calendars.ReadWrite"


def endpoints(oauth_url: str | None, tenant: str = TENANT) -> tuple[str, str]:
    """(authorize, token) URLs: Microsoft's own, or under another root (an emulator)."""
    root = (oauth_url or LOGIN).rstrip("/")
    return f"{root}/{tenant}/oauth2/v2.0/authorize", f"{root}/{tenant}/oauth2/v2.0/token"


def authorize_url(
    oauth_url: str | None, *, client_id: str, redirect_uri: str, state: str, verifier: str
) -> str:
    """Where to send the user to grant crmcal offline access to their calendars."""
    params = {
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "response_type": "code",
        "response_mode": "query",
        "scope": SCOPES,
        "state": state,
        "code_challenge": oauth2.code_challenge(verifier),
        "code_challenge_method": "S256",
        "prompt": "select_account",
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
        "Microsoft",
        endpoints(oauth_url)[1],
        code=code,
        verifier=verifier,
        redirect_uri=redirect_uri,
        client_id=client_id,
        client_secret=client_secret,
        scope=SCOPES,
        transport=transport,
    )


class RefreshingTokens(oauth2.RefreshingTokens):
    """Access tokens for a Microsoft grant; rotated refresh tokens go to ``on_rotate``."""

    def __init__(
        self,
        refresh_token: str,
        *,
        oauth_url: str | None = None,
        client_id: str = "",
        client_secret: str = "",
        on_rotate: Callable[[str], Awaitable[None]] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 30,
    ) -> None:
        super().__init__(
            "Microsoft",
            endpoints(oauth_url)[1],
            refresh_token,
            client_id=client_id,
            client_secret=client_secret,
            scope=SCOPES,
            on_rotate=on_rotate,
            transport=transport,
            timeout=timeout,
        )
