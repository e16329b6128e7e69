"""The OAuth 2.0 client both cloud providers use: PKCE, trading codes, refreshing tokens.

``RefreshingTokens`` is a provider's token source: it keeps an access token until
a minute before it expires, refreshes it with the refresh token, hands a rotated
refresh token (Microsoft sends a new one with every refresh) to ``on_rotate`` to
be stored, and reports a revoked or expired grant (``invalid_grant``) as
``AuthenticationFailed`` saying that the user must reconnect. A source lives for
one sync; what the next one of its grant may reuse is an ``AccessToken``, handed to
``on_refresh`` and given back as ``access``. Sources of one grant alive at once (two
connections of one account syncing together) refresh it once: each asks its ``Grant``
for a token another one got, or joins the refresh in flight (``RefreshFlights``).
``OAuthService``
is the flow at one service; its own module (``google_oauth``,
``microsoft_oauth``) says where the endpoints are and what it asks for.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import math
import time
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlencode

import httpx

from crmcal.providers.api_client import shared_client
from crmcal.providers.base import AuthenticationFailed, ProviderError, Unreachable
from crmcal.tls import tls

EARLY = 60.0  # refresh this many seconds before the access token expires
DEFAULT_LIFETIME = 3600.0
LONGEST_LIFETIME = 86400.0
_GRANT_ERRORS = ("invalid_grant", "invalid_client", "unauthorized_client")


def code_challenge(verifier: str) -> str:
    """The S256 PKCE challenge of a verifier (RFC 7636)."""
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


async def token_call(
    service: str,
    url: str,
    form: dict[str, str],
    transport: httpx.AsyncBaseTransport | None = None,
    seconds: float = 30,
) -> dict[str, object]:
    """One call of a token endpoint; its answer, or the provider error it means.

    It goes over the HTTP client the process keeps for the endpoint's host (as the
    API calls do, ``api_client.shared_client``): a refresh opens no connection of its
    own, and pays no TLS handshake, while one to that host is open."""
    shared = shared_client(url, seconds) if transport is None else None
    try:
        if shared is not None:
            response = await shared.post(url, data=form)
        else:
            async with httpx.AsyncClient(
                transport=transport, timeout=seconds, verify=tls()
            ) as http:
                response = await http.post(url, data=form)
    except httpx.TransportError as failure:
        raise Unreachable(f"cannot reach {service}'s sign-in service: {failure}") from None
    if response.status_code >= 500:
        raise Unreachable(f"{service}'s sign-in service failed ({response.status_code})")
    try:
        body = response.json()
    except ValueError:
        raise ProviderError(f"{service}'s sign-in service answered something else") from None
    if not isinstance(body, dict):
        raise ProviderError(f"{service}'s sign-in service answered something else")
    if response.status_code != 200 or "access_token" not in body:
        error = body.get("error")
        if error in _GRANT_ERRORS:
            raise AuthenticationFailed(
                f"{service} no longer accepts this grant ({error}): reconnect required"
            )
        raise ProviderError(f"{service}'s sign-in service refused ({error})")
    return body


def lifetime(expires_in: object) -> float:
    """An access token's lifetime in seconds from the ``expires_in`` a token endpoint
    answered: an hour when it says none or nothing readable, and never more than a day
    (a token kept for years would be used long after it was revoked; a refused one is
    refreshed then anyway)."""
    seconds = DEFAULT_LIFETIME
    if isinstance(expires_in, int | float | str):
        with contextlib.suppress(ValueError):
            seconds = float(expires_in)
    if math.isnan(seconds):
        seconds = DEFAULT_LIFETIME
    return min(max(seconds, 0.0), LONGEST_LIFETIME)


async def exchange_code(
    service: str,
    token_url: str,
    *,
    code: str,
    verifier: str,
    redirect_uri: str,
    client_id: str,
    client_secret: str,
    scope: str | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> str:
    """Trade an authorization code for the refresh token it grants."""
    form = {"grant_type": "authorization_code", "code": code, "code_verifier": verifier,
            "redirect_uri": redirect_uri, "client_id": client_id}  # fmt: skip
    if client_secret:
        form["client_secret"] = client_secret
    if scope:
        form["scope"] = scope
    body = await token_call(service, token_url, form, transport)
    refresh = body.get("refresh_token")
    if not refresh:
        raise ProviderError(f"{service} granted no offline access (no refresh token): try again")
    return str(refresh)


@dataclass(frozen=True, slots=True)
class AccessToken:
    """An access token and when it expires (``time.monotonic()`` seconds): all a token
    source hands on to the next source of its grant, so small to keep by the thousand."""

    value: str
    expires: float

    def expiring(self) -> bool:
        """Whether it is time to refresh it (a minute before it expires)."""
        return time.monotonic() >= self.expires - EARLY


# What a refresh leaves: the refresh token then current (the rotated one, when the
# service rotated it) and the new access token.
Refreshed = tuple[str, AccessToken]


class Grant(Protocol):
    """The grant a token source refreshes, as the process sees it beside this source:
    other sources of the same grant (two connections of one account, syncing at once)
    may have got a newer access token, or be refreshing it right now."""

    def latest(self) -> AccessToken | None:
        """The grant's newest access token this process keeps, if any."""

    async def join(self, refresh: Callable[[], Awaitable[Refreshed]]) -> Refreshed:
        """The refresh of the grant in flight, or ``refresh`` started as that one."""


class RefreshFlights:
    """Refreshes in flight, by key (a grant's): one refresh at a time per key, and what
    asks while it flies gets its answer (or its failure) instead of a refresh of its
    own. A refresh that failed is forgotten as it lands, so the next ask refreshes.
    Keys never wait for each other."""

    def __init__(self) -> None:
        self._flying: dict[Hashable, asyncio.Future[Refreshed]] = {}

    async def join(self, key: Hashable, refresh: Callable[[], Awaitable[Refreshed]]) -> Refreshed:
        flight = self._flying.get(key)
        if flight is None or flight.done() or flight.get_loop() is not asyncio.get_running_loop():
            # A task of its own: the one that started it may be cancelled while others
            # wait for its answer (and a rotated refresh token must be stored anyway).
            flight = asyncio.ensure_future(refresh())
            self._flying[key] = flight
            flight.add_done_callback(functools.partial(self._landed, key))
        return await asyncio.shield(flight)

    def _landed(self, key: Hashable, flight: asyncio.Future[Refreshed]) -> None:
        if self._flying.get(key) is flight:
            del self._flying[key]
        if not flight.cancelled():
            flight.exception()  # seen, even when everyone who waited for it is gone

    def __len__(self) -> int:
        return len(self._flying)


class RefreshingTokens:
    """Access tokens from a refresh token, refreshed before they expire. ``access``: one
    an earlier source of the grant got; ``on_refresh`` is told each new one, with the
    refresh token then current (the rotated one, when the service rotated it)."""

    def __init__(
        self,
        service: str,
        token_url: str,
        refresh_token: str,
        *,
        client_id: str = "",
        client_secret: str = "",
        scope: str | None = None,
        on_rotate: Callable[[str], Awaitable[None]] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 30,
        access: AccessToken | None = None,
        on_refresh: Callable[[str, AccessToken], None] | None = None,
        grant: Grant | None = None,
    ) -> None:
        self._service = service
        self._token_url = token_url
        self._refresh_token = refresh_token
        self._client_id = client_id
        self._client_secret = client_secret
        self._scope = scope
        self.on_rotate = on_rotate
        self.on_refresh = on_refresh
        self._transport = transport
        self._timeout = timeout
        self._access = access
        self._grant = grant
        self._lock = asyncio.Lock()

    async def __call__(self, refresh: bool = False) -> str:
        async with self._lock:
            access = self._access
            if refresh or access is None or access.expiring():
                access = await self._renewed(rejected=access if refresh else None)
            return access.value

    async def _renewed(self, rejected: AccessToken | None) -> AccessToken:
        """A new access token: the one another source of the grant got meanwhile, the
        one it is getting now, or one this source asks for."""
        if self._grant is None:
            return (await self._refresh())[1]
        newer = self._grant.latest()
        if newer is not None and newer != rejected and not newer.expiring():
            self._access = newer
            return newer
        refresh_token, access = await self._grant.join(self._refresh)
        if access is not self._access:
            # Another source's refresh: a refresh token it rotated is this one's too
            # (the same grant), and is stored for this source's connection as well.
            self._access = access
            if refresh_token != self._refresh_token:
                self._refresh_token = refresh_token
                if self.on_refresh is not None:
                    self.on_refresh(refresh_token, access)
                if self.on_rotate is not None:
                    await self.on_rotate(refresh_token)
        return access

    async def _refresh(self) -> Refreshed:
        form = {"grant_type": "refresh_token", "refresh_token": self._refresh_token}
        if self._client_id:
            form["client_id"] = self._client_id
        if self._client_secret:
            form["client_secret"] = self._client_secret
        if self._scope:
            form["scope"] = self._scope
        body = await token_call(
            self._service, self._token_url, form, self._transport, self._timeout
        )
        seconds = lifetime(body.get("expires_in"))
        access = self._access = AccessToken(str(body["access_token"]), time.monotonic() + seconds)
        rotated = body.get("refresh_token")
        rotating = isinstance(rotated, str) and rotated and rotated != self._refresh_token
        if rotating:
            self._refresh_token = str(rotated)
        if self.on_refresh is not None:
            self.on_refresh(self._refresh_token, access)
        if rotating and self.on_rotate is not None:
            await self.on_rotate(self._refresh_token)
        return self._refresh_token, access


@dataclass(frozen=True)
class OAuthService:
    """The authorization-code flow with PKCE (S256) at one service."""

    name: str  # in messages: "Google", "Microsoft"
    authorize_endpoint: str
    token_endpoint: str
    scopes: str
    # What else the consent URL says (offline access, which prompt ...).
    authorize_params: Mapping[str, str] = field(default_factory=dict)
    # Whether token calls repeat the scopes (Microsoft's v2.0 endpoint wants them).
    scopes_on_token_calls: bool = False

    def authorize_url(self, *, client_id: str, redirect_uri: str, state: str, verifier: str) -> str:
        """Where to send the user to grant crmcal offline access to their calendars."""
        params = {
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "response_type": "code",
            "scope": self.scopes,
            "state": state,
            "code_challenge": code_challenge(verifier),
            "code_challenge_method": "S256",
            **self.authorize_params,
        }
        return f"{self.authorize_endpoint}?{urlencode(params)}"

    async def exchange_code(
        self,
        *,
        code: str,
        verifier: str,
        redirect_uri: str,
        client_id: str,
        client_secret: str,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> str:
        """Trade an authorization code for the refresh token it grants."""
        return await exchange_code(
            self.name,
            self.token_endpoint,
            code=code,
            verifier=verifier,
            redirect_uri=redirect_uri,
            client_id=client_id,
            client_secret=client_secret,
            scope=self.scopes if self.scopes_on_token_calls else None,
            transport=transport,
        )

    def tokens(
        self,
        refresh_token: str,
        *,
        client_id: str = "",
        client_secret: str = "",
        on_rotate: Callable[[str], Awaitable[None]] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        access: AccessToken | None = None,
        on_refresh: Callable[[str, AccessToken], None] | None = None,
        grant: Grant | None = None,
    ) -> RefreshingTokens:
        """A provider's token source for a grant at this service."""
        return RefreshingTokens(
            self.name,
            self.token_endpoint,
            refresh_token,
            client_id=client_id,
            client_secret=client_secret,
            scope=self.scopes if self.scopes_on_token_calls else None,
            on_rotate=on_rotate,
            transport=transport,
            access=access,
            on_refresh=on_refresh,
            grant=grant,
        )
