"""Running one sync of a connection safely: a lease, the provider, state and back-off.

Whoever starts a sync — the API, the CLI, the embedded scheduler, a worker —
goes through ``run_sync``, so that one sync per connection runs at a time
across processes (under a lease, see ``crmcal.sync.lease``) and every outcome
lands in the connection's state and its history of runs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
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
from crmcal.providers.base import AuthenticationFailed, Provider, ProviderError, WritesRefused
from crmcal.providers.oauth2 import AccessToken, Refreshed, RefreshFlights, RefreshingTokens
from crmcal.sync import context, lease, limits, push
from crmcal.sync.context import Held, Start
from crmcal.sync.engine import (
    Engine,
    ProgressFn,
    SyncFailed,
    SyncRefused,
    SyncStopped,
)
from crmcal.sync.options import SyncOptions
from crmcal.sync.report import SyncReport
from crmcal.sync.states import (
    RECONNECT_REQUIRED,
    SERVER_ACTION_REQUIRED,
    ConnectionState,
    FailureKind,
)
from crmcal.sync.tables import Connection, ProviderHold
from crmcal.tasks import to_completion
from crmcal.vault import Vault, VaultError

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
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    # The lease, and what the run starts from, in one transaction.
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
    start: Start = held.found
    conn = start.conn
    error: str | None = None
    failure = FailureKind.SERVER
    report: SyncReport | None = None
    # The run's closing write, made with the lease's release (None: nothing to write).
    engine: Engine | None = None
    # A push channel was opened that covers nothing before it: due again at once.
    catch_up = False
    # Why the sync stopped short through no fault of the calendar's (then it is due
    # again at once, without back-off).
    interrupted: str | None = None
    started = loop.time()
    # With limits shared through the database, the last request's slot is given back
    # with the release, not in a statement of its own.
    shared = limits.installed()
    deferred = limits.GiveBackLater() if shared is not None or start.slot is not None else None
    restore = limits.later.set(deferred)
    if start.slot is not None and deferred is not None:
        # Taken with the lease for the first request (the listing): it takes none then.
        ahead = shared.for_account(conn.provider, conn.account) if shared is not None else None
        if ahead is not None:
            deferred.keep(ahead, start.slot, list(start.turns), fresh=True)
    try:
        async with lease.held(db, held, settings.sync_max_seconds):
            prov = provider or open_provider(conn, vault, settings, db)
            try:
                run = Engine(db, prov, connection_id, force=force, progress=progress,
                             base_url=settings.base_url)  # fmt: skip
                try:
                    report = await run.run(start, finish=False)
                except SyncStopped as stopped:
                    # Stopped or deleted by the user: what was written is linked; the
                    # state is the user's, and the positions stay for a later sync.
                    log.info("sync of connection %s: %s", connection_id, stopped)
                    report = run.report
                else:
                    catch_up = await push.keep_channel(db, connection_id, prov,
                                                       settings.base_url, known=conn)  # fmt: skip
                    engine = run
            finally:
                if provider is None:
                    await prov.close()
    except AuthenticationFailed as exc:
        # Provider-neutral: a new password (CalDAV) or a new grant (OAuth) resumes it.
        error, failure = str(exc), FailureKind.CREDENTIALS
        if RECONNECT_REQUIRED not in error:
            error = f"the calendar refused the credentials ({exc}): {RECONNECT_REQUIRED}"
    except WritesRefused as exc:
        # The server's setup, not a passing fault: said as such, and tried rarely.
        error, failure = f"{exc}: {SERVER_ACTION_REQUIRED}", FailureKind.SERVER_SETUP
    except SyncFailed as exc:
        error, failure = str(exc), exc.kind
    except SyncRefused as exc:
        error, failure = str(exc), FailureKind.REFUSED
    except (ProviderError, VaultError) as exc:
        error = str(exc)
    except lease.SyncTimedOut as exc:
        error = str(exc)
    except lease.LeaseLost as exc:
        interrupted = str(exc)
    except Exception as exc:
        if (found := db_errors.transient(exc)) is not None:
            # The database's state (out of reach, restarting, too busy), not the
            # connection's: no failure is counted, and the sync is due again at once.
            interrupted = f"the database was unavailable: {found.meaning}"
            raise
        log.exception("sync of connection %s failed", connection_id)
        error = f"unexpected error: {exc.__class__.__name__}: {exc}"
        raise
    except BaseException:  # cancelled: the process stops; the next sync resumes
        interrupted = "stopped with its process before it finished"
        raise
    finally:
        if error is not None or interrupted is not None:
            engine = None  # a run that failed afterwards saves no positions
        limits.later.reset(restore)
        # Run to its end: a sync cancelled while it ends still gives its lease back,
        # and its cancellation is raised once that is done, not before.
        await to_completion(
            _release(
                db, settings, held, error, report, interrupted, failure, engine,
                catch_up=catch_up, known=conn,
                slots=deferred.take_all() if deferred is not None else [],
                at_release=at_release,
            )
        )  # fmt: skip
        _record(conn.provider, loop.time() - started, report, error, interrupted, failure)
    if error is not None or interrupted is not None:
        raise SyncFailed(error or interrupted or "", failure)
    assert report is not None
    return report


def _record(
    provider: str,
    seconds: float,
    report: SyncReport | None,
    error: str | None,
    interrupted: str | None,
    failure: FailureKind,
) -> None:
    """One line in the log and the metrics for a sync that ran."""
    if interrupted is not None:
        metrics.sync_done(provider, seconds, "interrupted")
        log.info("sync interrupted after %.2f s: %s", seconds, interrupted)
    elif error is not None:
        metrics.sync_done(provider, seconds, failure.value)
        log.info("sync failed after %.2f s (%s): %s", seconds, failure.value, error)
    else:
        metrics.sync_done(provider, seconds, None)
        log.info("synced in %.2f s: %s", seconds, report.counts() if report else {})


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
    error: str | None,
    report: SyncReport | None,
    interrupted: str | None = None,
    failure: FailureKind = FailureKind.SERVER,
    engine: Engine | None = None,
    *,
    catch_up: bool = False,
    known: Connection | None = None,
    slots: list[limits.Kept] | None = None,
    at_release: lease.AlsoAtRelease | None = None,
) -> None:
    """Give the lease back and set the connection's state; ``engine``: a run that went
    through, whose closing write (positions, counts) goes in the same transaction;
    ``catch_up``: it opened a push channel, so the next sync is due at once (it lists
    what changed before the channel could report it); ``known``: the connection as
    read when the lease was taken; ``slots``: request slots still to give back (one
    goes with a release in one statement)."""
    slots = list(slots or [])
    try:
        try:
            await _release_with(db, settings, held, error, report, interrupted, failure,
                                engine, catch_up=catch_up, known=known, slots=slots,
                                at_release=at_release)  # fmt: skip
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
            await _release_with(db, settings, held, error, report, interrupted, failure,
                                engine, catch_up=catch_up, known=known, slots=slots,
                                at_release=at_release)  # fmt: skip
    finally:
        await limits.give_back_all(slots)  # those the release did not take along


async def _release_with(
    db: Database,
    settings: Settings,
    held: lease.Lease,
    error: str | None,
    report: SyncReport | None,
    interrupted: str | None,
    failure: FailureKind,
    engine: Engine | None,
    *,
    catch_up: bool,
    known: Connection | None,
    slots: list[limits.Kept],
    at_release: lease.AlsoAtRelease | None = None,
) -> None:
    """``_release``; a slot of ``slots`` given back with the release is taken out."""
    counts = report.counts() if report is not None else None
    outcome = lease.OK if error is None else lease.ERROR
    if interrupted is not None:
        outcome, error = lease.INTERRUPTED, interrupted
    if (
        engine is not None
        and error is None
        and known is not None
        and not db.sqlite
        and (values := engine.quiet_finish(known)) is not None
    ):
        # Nothing but the positions to write (a sync with nothing new, mostly): the
        # run ended, the lease freed and the connection set in one statement.
        poll = dt.timedelta(seconds=0 if catch_up else settings.poll_seconds)
        values.update(state=ConnectionState.ACTIVE, last_error=None, failures=0,
                      next_sync_at=utcnow() + poll)  # fmt: skip
        parts: tuple[CTE, ...] = ()
        more: dict[str, Any] = {}
        if slots:  # the listing's slot, mostly: given back in the same statement
            parts, more = limits.give_back_parts(), limits.give_back_values(slots[0])
        if at_release is not None:  # the caller's (a queue's job ended)
            parts, more = (*parts, *at_release.parts), {**more, **at_release.values}
        also = (parts, more) if parts else None
        quiet = await lease.give_back_quietly(db, held, outcome, values, counts=counts, also=also)
        if slots:
            slots.pop(0)  # given back whether or not the connection was written
        if at_release is not None:
            at_release.made = True
        if quiet:
            return
    async with db.write() as session:
        conn = await lease.give_back(session, held, outcome, error=error, counts=counts)
        if conn is None:
            return  # taken over (or deleted): the connection is no longer ours to set
        now = utcnow()
        if engine is not None and conn.state != ConnectionState.STOPPED:
            # Stopped meanwhile: the positions stay where they were, for a later sync.
            await engine.finish_in(session, conn)
        if conn.state == ConnectionState.SYNCING:  # not stopped or deleted meanwhile
            if interrupted is not None:  # due again at once, no back-off
                conn.state, conn.next_sync_at = ConnectionState.ACTIVE, now
            elif error is None:
                conn.state, conn.last_error, conn.failures = ConnectionState.ACTIVE, None, 0
                poll = dt.timedelta(seconds=0 if catch_up else settings.poll_seconds)
                conn.next_sync_at = now + poll
            else:
                conn.state, conn.last_error = ConnectionState.ERROR, error
                conn.failures = (conn.failures or 0) + 1
                conn.next_sync_at = retry_at(now, failure, conn.failures)
