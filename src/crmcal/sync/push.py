"""Push channels: providers tell crmcal's webhook when a calendar changes (F13).

After each successful sync of a connection whose provider can push (Google watch
channels, Microsoft Graph subscriptions), ``keep_channel`` makes sure a channel
is open and not about to expire: a day before it ends, a provider that can
renew a channel (Graph) renews it; otherwise (Google never renews a channel, and
overlap is harmless) a new one is opened and the old one closed. A channel opened
where none was open tells nothing of what changed after the sync listed the
calendar, nor of what it notified before crmcal had stored it (its webhook cannot
tell those notifications from forgeries): the sync that opened it says so, and the
connection is synced again at once, which lists those changes. Notifications
carry the channel's secret (Google's channel token, Graph's ``clientState``);
``connection_for`` and ``connection_by_resource`` check it. Polling stays on as
the fallback, since push is not guaranteed to arrive. A refused channel is asked
for again only after ``RETRY_REFUSED``, so that a sync with nothing to do stays one
request.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import logging
import secrets
import uuid
from typing import Any, Protocol, cast

from sqlalchemy import select

from crmcal.crm.tables import utcnow
from crmcal.db import Database
from crmcal.providers.base import Provider, ProviderError
from crmcal.sync.states import ConnectionState
from crmcal.sync.tables import Connection

log = logging.getLogger(__name__)
RENEW_BEFORE = dt.timedelta(days=1)
# After a channel was refused (an address the service cannot reach, say), how long
# syncs go without asking again: else every sync would cost one more request.
RETRY_REFUSED = dt.timedelta(hours=1)


class Pushing(Protocol):
    """The methods of a provider whose capabilities say ``push``."""

    async def watch(
        self, calendar_id: str, channel_id: str, address: str, token: str
    ) -> tuple[str | None, dt.datetime]:
        """(resource id, expiry); the resource id None when the channel was opened but
        the answer naming it was lost (its notifications name it)."""
        ...

    async def stop_watching(self, channel_id: str, resource_id: str) -> None: ...


class Renewing(Protocol):
    """The method of a provider whose capabilities say ``renews_push``."""

    async def renew_watch(self, resource_id: str) -> dt.datetime:
        """The channel's new expiry; ``EventNotFound`` when it is gone."""
        ...


def webhook_address(base_url: str, provider: str) -> str:
    return f"{base_url.rstrip('/')}/webhooks/{provider}"


async def keep_channel(
    db: Database,
    connection_id: int,
    provider: Provider,
    base_url: str,
    *,
    known: Connection | None = None,
) -> bool:
    """Open (or renew) the connection's push channel when its provider has one. True
    when a channel was opened that no open one overlapped: then changes made since the
    sync listed the calendar may have gone unnotified (or notified before the channel
    was stored, and not recognised), and the caller syncs again at once.

    ``known``: the connection as read when the sync began. When it shows a channel far
    from its expiry, nothing is read or written (the common case, once a sync); else
    the channel is looked at afresh."""
    if not provider.capabilities.push:
        return False
    if known is not None and _settled(known.push_channel_id, known.push_expires_at):
        return False
    pushing = cast(Pushing, provider)
    async with db.read() as session:
        conn = await session.get(Connection, connection_id)
        if conn is None or conn.state == ConnectionState.STOPPED:
            return False
        expires = conn.push_expires_at
        if expires is not None and expires.tzinfo is None:
            expires = expires.replace(tzinfo=dt.UTC)
        if _settled(conn.push_channel_id, expires):
            return False
        old = (conn.push_channel_id, conn.push_resource_id)
        calendar_id, kind = conn.calendar_id, conn.provider
    # A channel replaced while it is still open (Google) notifies every change until
    # the new one is stored: nothing falls between the two. One that could not be
    # renewed (Graph: gone) or has expired covers nothing.
    overlapped = bool(
        old[0]
        and old[1]
        and not provider.capabilities.renews_push
        and expires is not None
        and expires > utcnow()
    )
    if old[0] and old[1] and provider.capabilities.renews_push:
        try:
            renewed = await cast(Renewing, provider).renew_watch(old[1])
        except ProviderError as exc:
            log.info("connection %s: push channel not renewed (%s): a new one", connection_id, exc)
        else:
            async with db.write() as session:
                conn = await session.get(Connection, connection_id)
                if conn is not None:
                    conn.push_expires_at = renewed
            return False
    # Once asked for, a channel is either stored or closed, even when the sync is stopped
    # meanwhile (its lease lost, its time up): else the service would keep notifying
    # for a week a channel crmcal does not know, answered 404.
    opening = asyncio.ensure_future(
        _open(db, connection_id, pushing, provider, (calendar_id, kind, base_url), old)
    )
    _OPENING.add(opening)
    opening.add_done_callback(_opened)
    stored = await asyncio.shield(opening)
    if stored is None:
        return False
    # (A channel too short-lived to be settled is looked at by the next sync anyway: no
    # sync at once for it, or a service that kept refusing its renewal would have the
    # connection sync without pause.)
    catch_up = not overlapped and _settled(*stored)
    if catch_up:
        log.info("connection %s: push channel opened; syncing again for what it missed",
                 connection_id)  # fmt: skip
    return catch_up


# Channels being opened, kept until stored or closed (a task nobody holds may vanish).
_OPENING: set[asyncio.Task[tuple[str, dt.datetime] | None]] = set()


def _opened(task: asyncio.Task[tuple[str, dt.datetime] | None]) -> None:
    _OPENING.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.error("opening a push channel failed", exc_info=task.exception())


async def _open(
    db: Database,
    connection_id: int,
    pushing: Pushing,
    provider: Provider,
    where: tuple[str, str, str],
    old: tuple[str | None, str | None],
) -> tuple[str, dt.datetime] | None:
    """Open a channel and store it in place of ``old``: (its id, its expiry), or None
    when none was opened or it was closed again at once: the connection was stopped or
    deleted meanwhile, or another sync stored a channel first."""
    calendar_id, kind, base_url = where
    channel_id, token = uuid.uuid4().hex, secrets.token_urlsafe(32)
    try:
        resource_id, expiration = await pushing.watch(
            calendar_id, channel_id, webhook_address(base_url, kind), token
        )
    except ProviderError as exc:
        # Polling still runs; a sync after RETRY_REFUSED tries again.
        log.warning("connection %s: no push channel: %s", connection_id, exc)
        async with db.write() as session:
            conn = await session.get(Connection, connection_id)
            if conn is not None and not conn.push_channel_id:
                conn.push_expires_at = utcnow() + RETRY_REFUSED
        return None
    async with db.write() as session:
        conn = await session.get(Connection, connection_id, with_for_update=True)
        ours = (
            conn is not None
            and conn.state != ConnectionState.STOPPED
            and conn.push_channel_id == old[0]
        )
        if conn is not None and ours:
            conn.push_channel_id, conn.push_resource_id = channel_id, resource_id
            conn.push_token, conn.push_expires_at = token_digest(token), expiration
    if not ours:
        log.info("connection %s: push channel %s closed again: the connection was stopped "
                 "or has another one", connection_id, channel_id)  # fmt: skip
        if resource_id is not None:
            await _stop_quietly(provider, channel_id, resource_id)
        return None
    if old[0] and old[1]:
        await _stop_quietly(provider, old[0], old[1])
    return channel_id, expiration


def _settled(channel_id: str | None, expires: dt.datetime | None) -> bool:
    """Nothing to do yet: a channel open and not within RENEW_BEFORE of its end, or
    none, refused lately (without a channel, the expiry is when to ask again)."""
    if expires is None:
        return False
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=dt.UTC)
    if channel_id:
        return expires - RENEW_BEFORE > utcnow()
    return expires > utcnow()


async def stop_channel(conn: Connection, provider: Provider) -> None:
    """Close the connection's push channel (on stop and delete), forgetting it. A refusal
    (the service unreachable, the grant revoked) is logged, not raised: the channel
    expires on its own, and its notifications are refused meanwhile."""
    channel_id, resource_id = conn.push_channel_id, conn.push_resource_id
    if channel_id and resource_id and provider.capabilities.push:
        try:
            await cast(Pushing, provider).stop_watching(channel_id, resource_id)
        except ProviderError as exc:
            log.warning("connection %s: push channel %s not closed (%s): it expires on its own",
                        conn.id, channel_id, exc)  # fmt: skip
    forget_channel(conn)


def forget_channel(conn: Connection) -> None:
    conn.push_channel_id = conn.push_resource_id = conn.push_token = None
    conn.push_expires_at = None


async def _stop_quietly(provider: Any, channel_id: str, resource_id: str) -> None:
    try:
        await provider.stop_watching(channel_id, resource_id)
    except ProviderError as exc:  # it expires on its own anyway
        log.info("push channel %s not stopped: %s", channel_id, exc)


def token_digest(token: str) -> str:
    """What is stored of a channel's secret: its hash (the secret itself goes only to
    the provider, which sends it back with each notification)."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def _secret_matches(stored: str | None, given: str | None) -> bool:
    if not stored or given is None:
        return False
    return hmac.compare_digest(stored.encode(), token_digest(given).encode())


async def connection_for(
    db: Database, provider: str, channel_id: str, token: str | None, resource_id: str = ""
) -> int | None:
    """The active connection a notification is for, if its channel and token are ours.

    A channel whose opening was not answered (Google: the repeat was refused as a
    duplicate) is stored without its resource id; its first notification names it
    (``resource_id``), and it is stored then, so that the channel can be closed."""
    async with db.read() as session:
        conn = await session.scalar(
            select(Connection).where(
                Connection.push_channel_id == channel_id, Connection.provider == provider
            )
        )
        if conn is None or conn.state == ConnectionState.STOPPED:
            return None
        if not _secret_matches(conn.push_token, token):
            return None
        found, missing = conn.id, conn.push_resource_id is None
    if missing and resource_id:
        async with db.write() as session:
            conn = await session.get(Connection, found, with_for_update=True)
            if (
                conn is not None
                and conn.push_channel_id == channel_id
                and conn.push_resource_id is None
            ):
                conn.push_resource_id = resource_id[:500]
    return found


async def connections_by_resource(
    db: Database, provider: str, notified: set[tuple[str, str]]
) -> dict[tuple[str, str], int]:
    """The connections that notifications naming (channel id, secret) pairs are for
    (a Graph subscription id and its clientState), in one query; forgeries and
    channels no longer ours are left out."""
    if not notified:
        return {}
    async with db.read() as session:
        rows = await session.execute(
            select(Connection.id, Connection.push_resource_id, Connection.push_token).where(
                Connection.push_resource_id.in_({resource for resource, _ in notified}),
                Connection.provider == provider,
                Connection.state != ConnectionState.STOPPED,
            )
        )
        stored = {resource: (conn_id, token) for conn_id, resource, token in rows}
    found = {}
    for resource, secret in notified:
        conn_id, token = stored.get(resource, (None, None))
        if conn_id is not None and _secret_matches(token, secret):
            found[(resource, secret)] = conn_id
    return found


async def renew_soon(db: Database, connection_id: int, *, gone: bool = False) -> None:
    """Have the next sync renew the connection's channel (or, ``gone``, open a new one)."""
    async with db.write() as session:
        conn = await session.get(Connection, connection_id)
        if conn is None:
            return
        if gone:
            forget_channel(conn)
        else:
            conn.push_expires_at = utcnow()
