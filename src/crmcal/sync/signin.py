"""Connecting a Google or Microsoft account by OAuth: the sign-in a user starts and the
service completes.

``begin`` checks that the user may connect (or resume a stopped or failed
connection to that service) and answers the service's consent URL. Its
``state`` is sealed with the installation's key — who asked, the service, the
PKCE verifier, the calendar and sync type wanted — and expires after ten
minutes, so ``finish`` (reached by the browser, without the user's token) knows
whom to connect and that the answer belongs to a request crmcal made. ``finish``
trades the code for a refresh token, checks the account, and creates the
connection or resumes the one named (same links, F18; the same account
enforced).
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
import secrets
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from crmcal.config import Settings
from crmcal.crm.errors import Conflict
from crmcal.crm.tables import User, utcnow
from crmcal.db import Database
from crmcal.providers import google_oauth, microsoft_oauth
from crmcal.providers.base import ProviderError
from crmcal.providers.oauth2 import OAuthService
from crmcal.sync import connections
from crmcal.sync.schemas import ConnectionCreate, ConnectionOut, Reconnect
from crmcal.sync.states import ConnectionState
from crmcal.sync.tables import SignInUsed
from crmcal.vault import Vault, VaultError

STATE_MAX_AGE = 600
ServiceName = Literal["google", "microsoft"]


@dataclass(frozen=True)
class Service:
    """A service crmcal signs in to, as this installation is configured for it."""

    title: str
    oauth: Callable[[Settings], OAuthService]
    client: Callable[[Settings], tuple[str, str]]  # (id, secret)


SERVICES: dict[str, Service] = {
    "google": Service(
        "Google", lambda s: google_oauth.service(s.google_oauth_url),
        lambda s: (s.google_client_id, s.google_client_secret),
    ),
    "microsoft": Service(
        "Microsoft", lambda s: microsoft_oauth.service(s.microsoft_oauth_url),
        lambda s: (s.microsoft_client_id, s.microsoft_client_secret),
    ),
}  # fmt: skip


class SignInFailed(Exception):
    """The sign-in cannot complete; ``str()`` says why, and nothing was connected."""


def callback_url(settings: Settings, service: ServiceName = "google") -> str:
    return f"{settings.base_url}/oauth/{service}/callback"


async def begin(
    session: AsyncSession,
    user: User,
    vault: Vault,
    settings: Settings,
    *,
    service: ServiceName = "google",
    calendar_id: str | None,
    sync_type: str,
    connection_id: int | None,
    browser: str,
    start: bool = True,
) -> str:
    """The service's consent URL for this user, after checking they may connect.
    ``browser`` is the nonce the starting browser keeps (a cookie): only a callback
    that carries it completes. ``start=False``: the connection it makes waits,
    pending, for the user's choices."""
    spec = SERVICES[service]
    connections.require_may_sync(user, sync_type)
    active = await connections.active_connection(session, user.id)
    if connection_id is not None:
        conn = await connections.get_own(session, user, connection_id)
        if conn.provider != service or conn.state not in (
            ConnectionState.STOPPED,
            ConnectionState.ERROR,
        ):
            raise Conflict(
                f"connection {connection_id} is not a stopped or failed {spec.title} connection"
            )
        if active is not None and active.id != conn.id:
            raise Conflict(f"connection {active.id} is active: stop it first")
    elif active is not None:
        raise Conflict("you already have an active calendar connection: stop it first")
    verifier = secrets.token_urlsafe(48)
    sealed = {"u": user.id, "v": verifier, "c": calendar_id, "t": sync_type, "r": connection_id,
              "s": service, "b": browser}  # fmt: skip
    if not start:
        sealed["w"] = 1
    return spec.oauth(settings).authorize_url(
        client_id=spec.client(settings)[0],
        redirect_uri=callback_url(settings, service),
        state=vault.seal_for_a_while(json.dumps(sealed)),
        verifier=verifier,
    )


async def _use_once(db: Database, nonce: str) -> None:
    """Record the sign-in as used; SignInFailed if it was already."""
    old = utcnow() - dt.timedelta(seconds=2 * STATE_MAX_AGE)
    try:
        async with db.write() as session:
            await session.execute(delete(SignInUsed).where(SignInUsed.used_at < old))
            session.add(SignInUsed(nonce=nonce[:64]))
    except IntegrityError:
        raise SignInFailed("this sign-in was completed already: start again") from None


async def finish(
    db: Database,
    vault: Vault,
    settings: Settings,
    *,
    code: str,
    state: str,
    browser: Collection[str],
    service: ServiceName = "google",
) -> ConnectionOut:
    """The connection the service's answer makes (or resumes), if the browser that
    comes back is the one that started (``browser``: the nonces it keeps) and the
    sign-in was not completed before."""
    try:
        sealed: dict[str, Any] = json.loads(vault.open_recent(state, STATE_MAX_AGE))
    except (VaultError, ValueError):
        raise SignInFailed(
            "this sign-in link has expired or is not one crmcal made: start again"
        ) from None
    if sealed.get("s", "google") != service:
        raise SignInFailed("this sign-in was started for another service: start again")
    nonce = str(sealed.get("b") or "")
    if not nonce or not any(hmac.compare_digest(nonce, kept) for kept in browser):
        raise SignInFailed(
            "this sign-in was started in another browser (or by another user): "
            "start it again from this browser"
        )
    await _use_once(db, nonce)
    spec = SERVICES[service]
    client_id, client_secret = spec.client(settings)
    try:
        refresh_token = await spec.oauth(settings).exchange_code(
            code=code,
            verifier=sealed["v"],
            redirect_uri=callback_url(settings, service),
            client_id=client_id,
            client_secret=client_secret,
        )
    except ProviderError as exc:
        raise SignInFailed(f"{spec.title} did not grant access: {exc}") from None
    try:
        body = ConnectionCreate(provider=service, refresh_token=refresh_token,
                                calendar_id=sealed.get("c"), sync_type=sealed.get("t"),
                                start=not sealed.get("w"))  # fmt: skip
    except ValidationError:
        raise SignInFailed("the sign-in request was damaged: start again") from None
    found = await connections.discover(body, settings)
    calendar = connections.pick_calendar(found.calendars, body.calendar_id, body.sync_type)
    account = found.account or calendar.id
    async with db.write() as session:
        user = await session.get(User, int(sealed["u"]))
        if user is None or not user.active:
            raise SignInFailed("the user who started this sign-in no longer exists")
        if sealed.get("r"):
            conn = await connections.get_own(session, user, int(sealed["r"]))
            if conn.account != account:
                raise SignInFailed(
                    f"you signed in as {account}, but connection {conn.id} is for "
                    f"{conn.account}: sign in with that account"
                )
            grant = Reconnect(refresh_token=found.request.refresh_token)
            conn = await connections.reconnect(session, user, conn, grant, vault)
        else:
            conn = await connections.create(
                session, user, found.request, calendar, vault, account=account
            )
        return connections.to_out(conn)
