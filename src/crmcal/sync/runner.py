"""Running one sync of a connection safely: a lease, the provider, state and back-off.

Whoever starts a sync — the API, the CLI, the embedded scheduler, a worker —
goes through ``run_sync``, so that one sync per connection runs at a time
across processes and every outcome lands in the connection's state.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import random
import socket
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy import or_, update

from crmcal.config import Settings
from crmcal.crm.tables import utcnow
from crmcal.db import Database
from crmcal.providers import kinds
from crmcal.providers.base import AuthenticationFailed, Provider, ProviderError
from crmcal.providers.oauth2 import RefreshingTokens
from crmcal.sync import push
from crmcal.sync.engine import Engine, ProgressFn, SyncFailed, SyncRefused, SyncReport
from crmcal.sync.options import SyncOptions
from crmcal.sync.tables import Connection
from crmcal.vault import Vault, VaultError

log = logging.getLogger(__name__)

# Short, and renewed while a sync runs: a holder that vanishes frees the
# connection within a lease.
LEASE = dt.timedelta(seconds=90)
RENEW_EVERY = 30.0
HOLDER = f"{socket.gethostname()}:{os.getpid()}"
MAX_BACKOFF_SECONDS = 3600


class Busy(Exception):
    """Another sync of the connection holds the lease."""


def open_provider(
    conn: Connection, vault: Vault, settings: Settings, db: Database | None = None
) -> Provider:
    """The provider a connection talks to, with its decrypted credentials; with ``db``, a
    refresh token the service rotates is stored (sealed) at once."""
    secret = vault.open(conn.credentials)
    connection_id = conn.id

    async def keep(rotated: str) -> None:
        if db is None:
            return  # the old token stays valid for a while: the next sync stores one
        async with db.write() as session:
            await session.execute(
                update(Connection)
                .where(Connection.id == connection_id)
                .values(credentials=vault.seal(rotated))
            )

    options = SyncOptions.model_validate(conn.options or {})
    connected = conn.connected_at
    if connected.tzinfo is None:
        connected = connected.replace(tzinfo=dt.UTC)
    window_start = connected - dt.timedelta(days=options.backfill_days)
    return provider_for(conn.provider, conn.account, conn.username, secret, settings,
                        window_start=window_start, on_rotate=keep)  # fmt: skip


def provider_for(
    kind: str,
    account: str,
    username: str | None,
    secret: str,
    settings: Settings,
    *,
    window_start: dt.datetime | None = None,
    on_rotate: Callable[[str], Awaitable[None]] | None = None,
) -> Provider:
    """A provider of ``kind``: CalDAV with a password, Google and Microsoft with a refresh
    token (``on_rotate`` keeps the new one a refresh hands out; ``window_start`` is the
    first day a provider that lists a window of time must cover)."""
    build = _BUILDERS.get(kind)
    if build is None or kinds.kind_of(kind) is None:
        raise SyncFailed(f"provider {kind!r} is not available in this version")
    return build(_Credentials(kind, account, username, secret, window_start, on_rotate), settings)


@dataclass(frozen=True)
class _Credentials:
    kind: str
    account: str
    username: str | None
    secret: str
    window_start: dt.datetime | None
    on_rotate: Callable[[str], Awaitable[None]] | None


def _caldav(given: _Credentials, settings: Settings) -> Provider:
    from crmcal.providers.caldav import CalDAVProvider

    return CalDAVProvider(given.account, given.username or "", given.secret)


def _google(given: _Credentials, settings: Settings) -> Provider:
    from crmcal.providers import google_oauth
    from crmcal.providers.google import GOOGLE_API, GoogleProvider

    tokens = _grant(
        (given.kind, given.secret, settings.google_oauth_url, settings.google_client_id),
        lambda: google_oauth.service(settings.google_oauth_url).tokens(
            given.secret,
            client_id=settings.google_client_id,
            client_secret=settings.google_client_secret,
        ),
        given.on_rotate,
    )
    return GoogleProvider(
        tokens, api_url=settings.google_api_url or GOOGLE_API, backoff=settings.retry_backoff
    )


def _microsoft(given: _Credentials, settings: Settings) -> Provider:
    from crmcal.providers import microsoft_oauth
    from crmcal.providers.microsoft import GRAPH_API, MicrosoftProvider

    grant = _grant(
        (given.kind, given.secret, settings.microsoft_oauth_url, settings.microsoft_client_id),
        lambda: microsoft_oauth.service(settings.microsoft_oauth_url).tokens(
            given.secret,
            client_id=settings.microsoft_client_id,
            client_secret=settings.microsoft_client_secret,
        ),
        given.on_rotate,
    )
    return MicrosoftProvider(
        grant,
        api_url=settings.microsoft_api_url or GRAPH_API,
        window_start=given.window_start,
        backoff=settings.retry_backoff,
    )


# How each kind of the registry (``providers.kinds``) is built from stored credentials.
_BUILDERS: dict[str, Callable[[_Credentials, Settings], Provider]] = {
    kinds.CALDAV.key: _caldav,
    kinds.GOOGLE.key: _google,
    kinds.MICROSOFT.key: _microsoft,
}


# Token sources by grant, kept between syncs: an access token lives an hour, and
# refreshing it for every sync would double a small sync's requests.
_GRANTS: OrderedDict[tuple[str | None, ...], RefreshingTokens] = OrderedDict()
GRANTS_KEPT = 4096


def _grant(
    key: tuple[str | None, ...],
    make: Callable[[], RefreshingTokens],
    on_rotate: Callable[[str], Awaitable[None]] | None,
) -> RefreshingTokens:
    """The token source for a grant (``key`` = (kind, refresh token, ...)), kept between
    syncs; when the service rotates the refresh token, the source is kept under the new
    one too, which is what the next sync opens."""
    try:  # a source's lock belongs to one event loop
        key = (*key, str(id(asyncio.get_running_loop())))
    except RuntimeError:
        return make()
    found = _GRANTS.pop(key, None) or make()

    async def rotated(refresh_token: str) -> None:
        _GRANTS.pop(key, None)
        _GRANTS[(key[0], refresh_token, *key[2:])] = found
        if on_rotate is not None:
            await on_rotate(refresh_token)  # stored for this sync's connection

    found.on_rotate = rotated
    _GRANTS[key] = found
    while len(_GRANTS) > GRANTS_KEPT:
        _GRANTS.popitem(last=False)
    return found


def backoff(failures: int) -> dt.timedelta:
    """Truncated exponential back-off with jitter: 30 s, 1 min, 2 min … at most an hour."""
    base = min(30 * 2 ** max(failures - 1, 0), MAX_BACKOFF_SECONDS)
    return dt.timedelta(seconds=base * random.uniform(0.8, 1.2))


def _holder_is_dead(holder: str | None) -> bool:
    """True for a lease held by a process of this host that no longer runs."""
    if not holder:
        return True
    host, _, pid = holder.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or holder == HOLDER:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


async def _acquire(db: Database, connection_id: int) -> bool:
    now = utcnow()
    async with db.write() as session:
        current = await session.get(Connection, connection_id)
        if current is None or current.state == "stopped":
            return False
        free = or_(Connection.locked_until.is_(None), Connection.locked_until < now)
        if current.locked_until is not None and _holder_is_dead(current.locked_by):
            free = or_(free, Connection.locked_by == current.locked_by)
        result = await session.execute(
            update(Connection)
            .where(Connection.id == connection_id, Connection.state != "stopped", free)
            .values(locked_until=now + LEASE, locked_by=HOLDER, state="syncing")
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]


async def _keep_lease(db: Database, connection_id: int) -> None:
    while True:
        await asyncio.sleep(RENEW_EVERY)
        async with db.write() as session:
            await session.execute(
                update(Connection)
                .where(Connection.id == connection_id, Connection.locked_by == HOLDER)
                .values(locked_until=utcnow() + LEASE)
                .execution_options(synchronize_session=False)
            )


async def run_sync(
    db: Database,
    vault: Vault,
    settings: Settings,
    connection_id: int,
    *,
    force: bool = False,
    progress: ProgressFn | None = None,
    wait: float = 0,
    provider: Provider | None = None,
) -> SyncReport:
    """One sync of the connection now. Raises Busy if one is running (after ``wait`` s)."""
    async with db.read() as session:
        found = await session.get(Connection, connection_id)
        if found is None:
            raise SyncFailed(f"connection {connection_id} not found")
        if found.state == "stopped":
            raise SyncFailed(f"connection {connection_id} is stopped: reconnect it to sync")
    deadline = asyncio.get_running_loop().time() + wait
    while not await _acquire(db, connection_id):
        if asyncio.get_running_loop().time() >= deadline:
            raise Busy(f"a sync of connection {connection_id} is running")
        await asyncio.sleep(0.1)
    error: str | None = None
    report: SyncReport | None = None
    renewal = asyncio.create_task(_keep_lease(db, connection_id))
    try:
        async with db.read() as session:
            conn = await session.get(Connection, connection_id)
            assert conn is not None
        prov = provider or open_provider(conn, vault, settings, db)
        try:
            engine = Engine(
                db, prov, connection_id, force=force, progress=progress, base_url=settings.base_url
            )
            report = await engine.run()
            await push.keep_channel(db, connection_id, prov, settings.base_url)
        finally:
            if provider is None:
                await prov.close()
    except AuthenticationFailed as exc:
        # Provider-neutral: a new password (CalDAV) or a new grant (OAuth) resumes it.
        error = f"the calendar refused the credentials ({exc}): reconnect to resume"
    except (SyncFailed, SyncRefused, ProviderError, VaultError) as exc:
        error = str(exc)
    except Exception as exc:
        log.exception("sync of connection %s failed", connection_id)
        error = f"unexpected error: {exc.__class__.__name__}: {exc}"
        raise
    finally:
        renewal.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewal
        await _release(db, settings, connection_id, error)
    if error is not None:
        raise SyncFailed(error)
    assert report is not None
    return report


async def _release(db: Database, settings: Settings, connection_id: int, error: str | None) -> None:
    async with db.write() as session:
        conn = await session.get(Connection, connection_id)
        if conn is None:
            return
        conn.locked_until, conn.locked_by = None, None
        now = utcnow()
        if conn.state == "syncing":  # not stopped or deleted meanwhile
            if error is None:
                conn.state, conn.last_error, conn.failures = "active", None, 0
                conn.next_sync_at = now + dt.timedelta(seconds=settings.poll_seconds)
            else:
                conn.state, conn.last_error = "error", error
                conn.failures = (conn.failures or 0) + 1
                conn.next_sync_at = now + backoff(conn.failures)
