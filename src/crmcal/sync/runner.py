"""Running one sync of a connection safely: a lease, the provider, state and back-off.

Whoever starts a sync — the API, the CLI, the embedded scheduler, a worker —
goes through ``run_sync``, so that one sync per connection runs at a time
across processes and every outcome lands in the connection's state.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random

from sqlalchemy import or_, update

from crmcal.config import Settings
from crmcal.crm.tables import utcnow
from crmcal.db import Database
from crmcal.providers.base import AuthenticationFailed, Provider, ProviderError
from crmcal.sync.engine import Engine, ProgressFn, SyncFailed, SyncRefused, SyncReport
from crmcal.sync.tables import Connection
from crmcal.vault import Vault, VaultError

log = logging.getLogger(__name__)

LEASE = dt.timedelta(minutes=10)
MAX_BACKOFF_SECONDS = 3600


class Busy(Exception):
    """Another sync of the connection holds the lease."""


def open_provider(conn: Connection, vault: Vault) -> Provider:
    """The provider a connection talks to, with its decrypted credentials."""
    secret = vault.open(conn.credentials)
    if conn.provider == "caldav":
        from crmcal.providers.caldav import CalDAVProvider

        return CalDAVProvider(conn.account, conn.username or "", secret)
    raise SyncFailed(f"provider {conn.provider!r} is not available in this version")


def backoff(failures: int) -> dt.timedelta:
    """Truncated exponential back-off with jitter: 30 s, 1 min, 2 min … at most an hour."""
    base = min(30 * 2 ** max(failures - 1, 0), MAX_BACKOFF_SECONDS)
    return dt.timedelta(seconds=base * random.uniform(0.8, 1.2))


async def _acquire(db: Database, connection_id: int) -> bool:
    now = utcnow()
    async with db.write() as session:
        result = await session.execute(
            update(Connection)
            .where(
                Connection.id == connection_id,
                Connection.state != "stopped",
                or_(Connection.locked_until.is_(None), Connection.locked_until < now),
            )
            .values(locked_until=now + LEASE, state="syncing")
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]


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
    try:
        async with db.read() as session:
            conn = await session.get(Connection, connection_id)
            assert conn is not None
        prov = provider or open_provider(conn, vault)
        try:
            report = await Engine(db, prov, connection_id, force=force, progress=progress).run()
        finally:
            if provider is None:
                await prov.close()
    except AuthenticationFailed as exc:
        error = f"the calendar refused the credentials: {exc}; reconnect with a new password"
    except (SyncFailed, SyncRefused, ProviderError, VaultError) as exc:
        error = str(exc)
    except Exception as exc:
        log.exception("sync of connection %s failed", connection_id)
        error = f"unexpected error: {exc.__class__.__name__}: {exc}"
        raise
    finally:
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
        conn.locked_until = None
        now = utcnow()
        if conn.state == "syncing":  # not stopped or deleted meanwhile
            if error is None:
                conn.state, conn.last_error, conn.failures = "active", None, 0
                conn.next_sync_at = now + dt.timedelta(seconds=settings.poll_seconds)
            else:
                conn.state, conn.last_error = "error", error
                conn.failures = (conn.failures or 0) + 1
                conn.next_sync_at = now + backoff(conn.failures)
