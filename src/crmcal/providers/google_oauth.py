"""Google's OAuth 2.0 token endpoint, for the Google provider: refreshing access tokens.

``RefreshingTokens`` is the provider's ``TokenSource``: it keeps an access token
until a minute before it expires, refreshes it with the stored refresh token,
and reports a revoked or expired grant (``invalid_grant``) as
``AuthenticationFailed`` saying that the user must reconnect.
"""

from __future__ import annotations

import asyncio
import time

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
        try:
            async with httpx.AsyncClient(transport=self._transport, timeout=self._timeout) as http:
                response = await http.post(self._token_url, data=form)
        except httpx.TransportError as failure:
            raise Unreachable(f"cannot reach Google's sign-in service: {failure}") from None
        if response.status_code >= 500:
            raise Unreachable(f"Google's sign-in service failed ({response.status_code})")
        try:
            body = response.json()
        except ValueError:
            raise ProviderError("Google's sign-in service answered something else") from None
        if response.status_code != 200 or "access_token" not in body:
            error = body.get("error") if isinstance(body, dict) else None
            if error in ("invalid_grant", "invalid_client", "unauthorized_client"):
                raise AuthenticationFailed(
                    f"Google no longer accepts this connection's grant ({error}): "
                    "reconnect required"
                )
            raise ProviderError(f"Google's sign-in service refused a refresh ({error})")
        self._access = str(body["access_token"])
        self._expires = time.monotonic() + float(body.get("expires_in") or 3600)
