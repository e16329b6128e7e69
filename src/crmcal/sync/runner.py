"""Running one sync of a connection safely: a lease, the provider, state and back-off.

Whoever starts a sync — the API, the CLI, the embedded scheduler, a worker —
goes through ``run_sync``, so that one sync per connection runs at a time
across processes (under a lease, see ``crmcal.sync.lease``) and every outcome
lands in the connection's state and its history of runs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import hashlib
import logging
import random
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import CTE, ColumnElement, and_, or_, select, update

from crmcal import db_errors, logs, metrics
from crmcal.config import Settings
from crmcal.crm.tables import utcnow
from crmcal.db import Database
from crmcal.providers import kinds
from crmcal.providers.base import Provider
from crmcal.providers.oauth2 import AccessToken, Refreshed, RefreshFlights, RefreshingTokens
from crmcal.sync import context, failures, lease, limits, push
from crmcal.sync.context import Held, Start
from crmcal.sync.engine import (
    Engine,
    ProgressFn,
    SyncFailed,
    SyncStopped,
)
from crmcal.sync.options import stored
from crmcal.sync.report import SyncReport
from crmcal.sync.states import (
    ConnectionState,
    FailureKind,
)
from crmcal.sync.tables import Connection, ProviderHold
from crmcal.tasks import to_completion
from crmcal.vault import Vault

log = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 3600
# How often a connection whose server must be set up otherwise is tried by itself
# (FailureKind.SERVER_SETUP): each try costs the server a refused write.
RARE_RETRY = dt.timedelta(days=1)


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

    options = stored(conn.options).options
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

    return CalDAVProvider(
        given.account,
        given.username or "",
        given.secret,
        allow_private=settings.allow_private_networks,
    )


def _google(given: _Credentials, settings: Settings) -> Provider:
    from crmcal.providers import google_oauth
    from crmcal.providers.google import GOOGLE_API, GoogleProvider

    tokens = _grant(
        (given.kind, given.secret, settings.google_oauth_url, settings.google_client_id),
        lambda access, on_refresh, grant: google_oauth.service(settings.google_oauth_url).tokens(
            given.secret,
            client_id=settings.google_client_id,
            client_secret=settings.google_client_secret,
            on_rotate=given.on_rotate,
            access=access,
            on_refresh=on_refresh,
            grant=grant,
        ),
    )
    return GoogleProvider(
        tokens,
        api_url=settings.google_api_url or GOOGLE_API,
        backoff=settings.retry_backoff,
        shared=_shared(given),
    )


def _microsoft(given: _Credentials, settings: Settings) -> Provider:
    from crmcal.providers import microsoft_oauth
    from crmcal.providers.microsoft import GRAPH_API, MicrosoftProvider

    grant = _grant(
        (given.kind, given.secret, settings.microsoft_oauth_url, settings.microsoft_client_id),
        lambda access, on_refresh, in_process: microsoft_oauth.service(
            settings.microsoft_oauth_url
        ).tokens(
            given.secret,
            client_id=settings.microsoft_client_id,
            client_secret=settings.microsoft_client_secret,
            on_rotate=given.on_rotate,
            access=access,
            on_refresh=on_refresh,
            grant=in_process,
        ),
    )
    return MicrosoftProvider(
        grant,
        api_url=settings.microsoft_api_url or GRAPH_API,
        window_start=given.window_start,
        backoff=settings.retry_backoff,
        shared=_shared(given),
    )


def _shared(given: _Credentials) -> limits.Limit | None:
    """The account's limit shared with every other process, when this one keeps them."""
    shared = limits.installed()
    return shared.for_account(given.kind, given.account) if shared is not None else None


# How each kind of the registry (``providers.kinds``) is built from stored credentials.
_BUILDERS: dict[str, Callable[[_Credentials, Settings], Provider]] = {
    kinds.CALDAV.key: _caldav,
    kinds.GOOGLE.key: _google,
    kinds.MICROSOFT.key: _microsoft,
}


# Access tokens by grant, kept between syncs: an access token lives an hour, and
# refreshing it for every sync would double a small sync's requests. Enough for every
# connection a worker sees: jobs go to whichever worker is free, so each worker syncs
# nearly all of them, in turn, and a bound below their number keeps none until its
# next sync (10,000 connections and 4,096 kept: a token refreshed on 9,350 of 10,000
# no-change syncs). What is kept is the token alone (``AccessToken``, a Google token
# of 200 characters) under a 16-byte digest of the grant: 0.45 KB a grant by
# tracemalloc, 0.65 KB resident (10,000 grants alone in a process), 20,000 of them
# under 15 MB. The token source itself, its lock and its callbacks (one stores a
# rotated refresh token for the connection being synced) belong to one sync and go
# with it: kept whole, as they were, a source was 20 objects and 1.4 KB (2.9 KB
# resident) that outlived its sync, its sync's callback and all that one held.
_GRANTS: OrderedDict[bytes, AccessToken] = OrderedDict()
GRANTS_KEPT = 20_000
# The refreshes in flight, by grant: two syncs of one grant at once (two connections of
# one account) make one refresh, the second waiting for the first's token.
_FLIGHTS = RefreshFlights()

MakeTokens = Callable[[AccessToken | None, Callable[[str, AccessToken], None], "_Grant"],
                      RefreshingTokens]  # fmt: skip


class _Grant:
    """One sync's grant as this process sees it: the access token kept under its digest
    (re-keyed when the service rotates the refresh token) and its refresh in flight."""

    __slots__ = ("key", "kind", "where")

    def __init__(self, kind: str | None, refresh_token: str | None, where: tuple[str | None, ...]):
        self.kind, self.where = kind, where
        self.key = _grant_key((kind, refresh_token, *where))

    def latest(self) -> AccessToken | None:
        return _GRANTS.get(self.key)

    async def join(self, refresh: Callable[[], Awaitable[Refreshed]]) -> Refreshed:
        return await _FLIGHTS.join(self.key, refresh)

    def refreshed(self, refresh_token: str, access: AccessToken) -> None:
        """Keep ``access`` for the next sync, under the refresh token then current (the
        rotated one, which is what the next sync opens)."""
        _GRANTS.pop(self.key, None)
        self.key = _grant_key((self.kind, refresh_token, *self.where))
        _GRANTS[self.key] = access
        while len(_GRANTS) > GRANTS_KEPT:
            _GRANTS.popitem(last=False)


def _grant(grant: tuple[str | None, ...], make: MakeTokens) -> RefreshingTokens:
    """A token source for one sync of a grant (``grant`` = (kind, refresh token, where
    ...)): ``make(access, on_refresh, grant)`` with the access token an earlier sync of
    the grant got, if it is kept; each token the source gets is kept for the next sync.
    Two syncs of one grant at once (two connections of one grant) refresh it once."""
    kind, refresh_token, *where = grant
    handle = _Grant(kind, refresh_token, tuple(where))
    kept = _GRANTS.get(handle.key)
    if kept is not None:
        _GRANTS.move_to_end(handle.key)
    return make(kept, handle.refreshed, handle)


def _grant_key(grant: tuple[str | None, ...]) -> bytes:
    """16 bytes for (kind, refresh token, where ...): one small object a grant, and no
    refresh token in the clear kept beyond its sync."""
    text = "\0".join(part or "" for part in grant)
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


def due(now: dt.datetime) -> ColumnElement[bool]:
    """Connections to sync now: active or failed ones whose time came, and those a
    vanished holder left in ``syncing`` (its lease expired)."""
    return or_(
        and_(
            Connection.state.in_((ConnectionState.ACTIVE, ConnectionState.ERROR)),
            Connection.next_sync_at <= now,
        ),
        lease.expired(now),
    )


def retried() -> ColumnElement[bool]:
    """Connections whose syncs go on by themselves: active ones, and failed ones backing
    off. A failure that needs the user (credentials, a revoked permission) leaves no next
    time: such a connection waits for them, and nothing (not a channel renewal) syncs it."""
    return or_(
        Connection.state == ConnectionState.ACTIVE,
        and_(Connection.state == ConnectionState.ERROR, Connection.next_sync_at.is_not(None)),
    )


def retry_at(now: dt.datetime, failure: FailureKind, failures: int) -> dt.datetime | None:
    """When a connection whose sync failed (``failures`` in a row) is tried again by
    itself; None: only when the user acts."""
    if failure.needs_user:
        # Credentials and permissions mend only by the user's hand: no retries (each
        # would fail again, and some services lock accounts that try).
        return None
    if failure.needs_action:
        # The server's setup: mended by whoever runs it, without a word to crmcal, so
        # tried now and then (each try costs the server one refused write).
        return now + RARE_RETRY
    return now + backoff(failures)


def backoff(failures: int) -> dt.timedelta:
    """Truncated exponential back-off with jitter: 30 s, 1 min, 2 min … at most an hour."""
    base = min(30 * 2 ** max(failures - 1, 0), MAX_BACKOFF_SECONDS)
    return dt.timedelta(seconds=base * random.uniform(0.8, 1.2))


@dataclass
class _Ran:
    """What a sync's run leaves for the lease's release: its report, the engine whose
    closing write (positions, counts) goes with the release (None: nothing to write),
    and whether it opened a push channel (then the next sync is due at once: it lists
    what changed before the channel could report it)."""

    report: SyncReport | None = None
    engine: Engine | None = None
    catch_up: bool = False


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
    unless_held: bool = False,
    at_release: lease.AlsoAtRelease | None = None,
) -> SyncReport:
    """One sync of the connection now. Raises Busy if one is running (after ``wait`` s);
    ``unless_held``: raises Held, and does not start, while the account is held after a
    throttling answer (checked in the transaction that takes the lease); ``at_release``:
    writes of the caller's made in the statement that ends a sync with nothing more to
    write than its positions (its ``made`` says whether they were)."""
    logs.CONNECTION.set(connection_id)  # on every line logged while it runs
    held = await _take_lease(db, settings, connection_id, wait, unless_held)
    start: Start = held.found
    ran = _Ran()
    ended = failures.WENT_THROUGH
    started = asyncio.get_running_loop().time()
    deferred = _deferred_slots(start)
    restore = limits.later.set(deferred)
    try:
        async with lease.held(db, held, settings.sync_max_seconds):
            await _run(db, vault, settings, start, ran, force, progress, provider)
    except BaseException as exc:
        ended = failures.ending(exc)
        if ended.failure is FailureKind.UNEXPECTED:
            log.exception("sync of connection %s failed", connection_id)
        if ended.raised:
            raise
    finally:
        if not ended.went_through:
            ran.engine = None  # a run that failed afterwards saves no positions
        limits.later.reset(restore)
        # Run to its end: a sync cancelled while it ends still gives its lease back,
        # and its cancellation is raised once that is done, not before.
        slots = deferred.take_all() if deferred is not None else []
        await to_completion(_release(db, settings, held, ended, ran, known=start.conn,
                                     slots=slots, at_release=at_release))  # fmt: skip
        seconds = asyncio.get_running_loop().time() - started
        _record(start.conn.provider, seconds, ran.report, ended)
    if not ended.went_through:
        raise SyncFailed(ended.message, ended.failure)
    assert ran.report is not None
    return ran.report


async def _take_lease(
    db: Database, settings: Settings, connection_id: int, wait: float, unless_held: bool
) -> lease.Lease:
    """The connection's lease, with what its run starts from read in the same
    transaction; raises Busy when another sync still holds it after ``wait`` seconds,
    SyncFailed when the connection cannot sync, Held (``unless_held``) while its account
    is held."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    read = Start.read_unless_held if unless_held else Start.read
    reading = context.READING_UNLESS_HELD if unless_held else context.READING
    while (held := await lease.take(db, connection_id, settings.lease_seconds,
                                    then=read, reading=reading)) is None:  # fmt: skip
        if unless_held and not db.sqlite:
            # Not taken in one statement: perhaps because the account is held.
            await _unless_held(db, connection_id)
        await _why_not(db, connection_id)
        if loop.time() >= deadline:
            raise Busy(await _who_holds(db, connection_id))
        await asyncio.sleep(0.1)
    return held


def _deferred_slots(start: Start) -> limits.GiveBackLater | None:
    """With limits shared through the database, the last request's slot is given back
    with the release, not in a statement of its own: where the run's slots wait (None:
    each is given back at once)."""
    shared = limits.installed()
    if shared is None and start.slot is None:
        return None
    deferred = limits.GiveBackLater()
    if start.slot is not None and shared is not None:
        # Taken with the lease for the first request (the listing): it takes none then.
        conn = start.conn
        ahead = shared.for_account(conn.provider, conn.account)
        if ahead is not None:
            deferred.keep(ahead, start.slot, list(start.turns), fresh=True)
    return deferred


async def _run(
    db: Database,
    vault: Vault,
    settings: Settings,
    start: Start,
    ran: _Ran,
    force: bool,
    progress: ProgressFn | None,
    provider: Provider | None,
) -> None:
    """The run itself, under the lease: the engine, then the push channel; what it
    leaves goes into ``ran`` as it comes (a report stays when the channel fails)."""
    conn = start.conn
    prov = provider or open_provider(conn, vault, settings, db)
    try:
        run = Engine(db, prov, conn.id, force=force, progress=progress,
                     base_url=settings.base_url)  # fmt: skip
        try:
            ran.report = await run.run(start, finish=False)
        except SyncStopped as stopped:
            # Stopped or deleted by the user: what was written is linked; the state is
            # the user's, and the positions stay for a later sync.
            log.info("sync of connection %s: %s", conn.id, stopped)
            ran.report = run.report
            return
        ran.catch_up = await push.keep_channel(db, conn.id, prov, settings.base_url,
                                               known=conn)  # fmt: skip
        ran.engine = run
    finally:
        if provider is None:
            await prov.close()


def _record(
    provider: str, seconds: float, report: SyncReport | None, ended: failures.Ending
) -> None:
    """One line in the log and the metrics for a sync that ran."""
    if ended.interrupted is not None:
        metrics.sync_done(provider, seconds, "interrupted")
        log.info("sync interrupted after %.2f s: %s", seconds, ended.interrupted)
    elif ended.error is not None:
        metrics.sync_done(provider, seconds, ended.failure.value)
        log.info("sync failed after %.2f s (%s): %s", seconds, ended.failure.value, ended.error)
    else:
        metrics.sync_done(provider, seconds, None)
        counts = report.counts() if report else {}
        # A sync that found nothing to do is most of a worker's syncs: its line is at
        # DEBUG (``CRMCAL_LOG_LEVEL``), where writing it each time cost a no-change sync
        # about a fiftieth of its CPU; the connection's status lists it either way.
        quiet = not any(counts.values()) and not (report and report.problems)
        log.log(logging.DEBUG if quiet else logging.INFO, "synced in %.2f s: %s", seconds, counts)


async def _why_not(db: Database, connection_id: int) -> None:
    """Raise SyncFailed when the lease was refused because the connection cannot sync
    (gone, stopped, pending); return when another sync holds it."""
    async with db.read() as session:
        found = await session.get(Connection, connection_id)
    if found is None:
        raise SyncFailed(f"connection {connection_id} not found")
    if found.state == ConnectionState.STOPPED:
        raise SyncFailed(f"connection {connection_id} is stopped: reconnect it to sync")
    if found.state == ConnectionState.PENDING:
        raise SyncFailed(
            f"connection {connection_id} is pending: start it (POST .../start) to sync"
        )


async def _unless_held(db: Database, connection_id: int) -> None:
    """Raise Held while the connection's account is held after a throttling answer."""
    key = context.hold_key()
    hold = select(ProviderHold.until).where(ProviderHold.key == key).scalar_subquery()
    async with db.read() as session:
        until = await session.scalar(select(hold).where(Connection.id == connection_id))
    if until is not None and (seconds := (until - utcnow()).total_seconds()) > 0:
        raise Held(seconds)


async def _who_holds(db: Database, connection_id: int) -> str:
    async with db.read() as session:
        conn = await session.get(Connection, connection_id)
    if conn is None or conn.locked_until is None:
        return f"a sync of connection {connection_id} is running"
    return (
        f"a sync of connection {connection_id} is running ({conn.locked_by}, "
        f"its lease ends at {conn.locked_until.isoformat()} unless renewed)"
    )


async def _release(
    db: Database,
    settings: Settings,
    held: lease.Lease,
    ended: failures.Ending,
    ran: _Ran,
    *,
    known: Connection | None = None,
    slots: list[limits.Kept] | None = None,
    at_release: lease.AlsoAtRelease | None = None,
) -> None:
    """Give the lease back and set the connection's state as the sync ``ended``; the
    closing write of ``ran``'s engine (a run that went through) goes in the same
    transaction; ``known``: the connection as read when the lease was taken;
    ``slots``: request slots still to give back (one goes with a release in one
    statement)."""
    slots = list(slots or [])
    release = functools.partial(_release_with, db, settings, held, ended, ran, known=known,
                                slots=slots, at_release=at_release)  # fmt: skip
    try:
        try:
            await release()
        except Exception as exc:
            # A database restarted (or a session ended by pg_terminate_backend) while the
            # sync ran fails the first statement on each connection the pool kept: often
            # the release's, which left the connection syncing until its lease ran out.
            # The pool opens fresh ones after such an error, so the release is tried
            # once more. Safe: each of its writes is made only while the lease is still
            # this holder's, so a first try the server did take makes the second a no-op.
            if db_errors.transient(exc) is None:
                raise
            log.info("giving back the lease of connection %s failed (%s); trying again",
                     held.connection_id, exc.__class__.__name__)  # fmt: skip
            await release()
    finally:
        await limits.give_back_all(slots)  # those the release did not take along


async def _release_with(
    db: Database,
    settings: Settings,
    held: lease.Lease,
    ended: failures.Ending,
    ran: _Ran,
    *,
    known: Connection | None,
    slots: list[limits.Kept],
    at_release: lease.AlsoAtRelease | None = None,
) -> None:
    """``_release``; a slot of ``slots`` given back with the release is taken out."""
    counts = ran.report.counts() if ran.report is not None else None
    outcome, error = _outcome(ended)
    if ran.engine is not None and error is None and known is not None and not db.sqlite:
        quiet = await _release_quietly(db, settings, held, ran, known, counts, slots, at_release)
        if quiet:
            return
    async with db.write() as session:
        conn = await lease.give_back(session, held, outcome, error=error, counts=counts)
        if conn is None:
            return  # taken over (or deleted): the connection is no longer ours to set
        if ran.engine is not None and conn.state != ConnectionState.STOPPED:
            # Stopped meanwhile: the positions stay where they were, for a later sync.
            await ran.engine.finish_in(session, conn)
        if conn.state == ConnectionState.SYNCING:  # not stopped or deleted meanwhile
            _settle(conn, ended, ran.catch_up, settings)


def _outcome(ended: failures.Ending) -> tuple[str, str | None]:
    """The run's outcome as its history keeps it, and the error it keeps with it."""
    if ended.interrupted is not None:
        return lease.INTERRUPTED, ended.interrupted
    if ended.error is not None:
        return lease.ERROR, ended.error
    return lease.OK, None


async def _release_quietly(
    db: Database,
    settings: Settings,
    held: lease.Lease,
    ran: _Ran,
    known: Connection,
    counts: dict[str, int] | None,
    slots: list[limits.Kept],
    at_release: lease.AlsoAtRelease | None,
) -> bool:
    """PostgreSQL, a run that went through with nothing but its positions to write (a
    sync with nothing new, mostly): the run ended, the lease freed and the connection
    set in one statement, with the first of ``slots`` given back (taken out of them)
    and the caller's ``at_release``. False when that does not do: the release is
    written as any other."""
    assert ran.engine is not None
    values = ran.engine.quiet_finish(known)
    if values is None:
        return False
    poll = dt.timedelta(seconds=0 if ran.catch_up else settings.poll_seconds)
    values.update(state=ConnectionState.ACTIVE, last_error=None, failures=0,
                  next_sync_at=utcnow() + poll)  # fmt: skip
    parts: tuple[CTE, ...] = ()
    more: dict[str, Any] = {}
    if slots:  # the listing's slot, mostly: given back in the same statement
        parts, more = limits.give_back_parts(), limits.give_back_values(slots[0])
    if at_release is not None:  # the caller's (a queue's job ended)
        parts, more = (*parts, *at_release.parts), {**more, **at_release.values}
    also = (parts, more) if parts else None
    quiet = await lease.give_back_quietly(db, held, lease.OK, values, counts=counts, also=also)
    if slots:
        slots.pop(0)  # given back whether or not the connection was written
    if at_release is not None:
        at_release.made = True
    return quiet


def _settle(conn: Connection, ended: failures.Ending, catch_up: bool, settings: Settings) -> None:
    """The state of a connection whose sync ``ended`` (still its own: not stopped or
    deleted meanwhile), and when it syncs next."""
    now = utcnow()
    if ended.interrupted is not None:  # due again at once, no back-off
        conn.state, conn.next_sync_at = ConnectionState.ACTIVE, now
    elif ended.error is None:
        conn.state, conn.last_error, conn.failures = ConnectionState.ACTIVE, None, 0
        poll = dt.timedelta(seconds=0 if catch_up else settings.poll_seconds)
        conn.next_sync_at = now + poll
    else:
        conn.state, conn.last_error = ConnectionState.ERROR, ended.error
        conn.failures = (conn.failures or 0) + 1
        conn.next_sync_at = retry_at(now, ended.failure, conn.failures)
