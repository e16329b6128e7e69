"""Leases: one sync of a connection at a time, across processes and hosts, and never stuck.

The rules every process that syncs follows (the embedded server, ``crmcal sync``,
distributed workers):

* A lease is the connection's ``locked_by`` and ``locked_until``. Taking it is one
  conditional UPDATE that succeeds only when there is none or it has expired —
  whoever held it, on whatever host. Nothing asks whether the holder still runs:
  expiry alone frees a connection, so a SIGKILL, a power loss or a lost machine
  all end the same way.
* The holder renews the lease every third of its length while it works. When a
  renewal finds the lease taken over, or cannot confirm it before the holder's
  own view of its expiry comes close, the work is cancelled: a holder never goes
  on writing once someone else may have taken over.
* A sync has a time limit too, so a provider that answers forever (or trickles
  bytes) cannot keep a lease renewed for good.
* Each lease taken opens a run in ``sync_runs`` (who, when); giving it back closes
  it with the outcome and counts. Taking over an expired lease closes the run of
  the vanished holder as ``abandoned`` at the moment its lease expired, so runs of
  one connection never overlap in the history.
* ``locked_by`` names the process (``host:pid``) and the lease (a random tag):
  a process restarted with the same pid (pid 1 in a container) is never taken
  for the holder of a lease its predecessor left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import (
    CTE,
    JSON,
    ColumnElement,
    CursorResult,
    String,
    and_,
    bindparam,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from crmcal import db_direct, tasks
from crmcal.crm.tables import UTCDateTime, utcnow
from crmcal.db import Database
from crmcal.sync.states import ConnectionState
from crmcal.sync.tables import Connection, SyncRun

log = logging.getLogger(__name__)

# The process that runs syncs, as runs and leases name it.
PROCESS = f"{socket.gethostname()}:{os.getpid()}"
# Runs kept per connection; the status shows the newest few. Older ones are cut when a
# run ends whose id is a multiple of PRUNE_EVERY (a statement saved on the others), so a
# connection holds a few more than RUNS_KEPT between two cuts.
RUNS_KEPT = 100
PRUNE_EVERY = 10
# Outcomes of a run.
RUNNING, OK, ERROR = "running", "ok", "error"
# Stopped short by its own process (shut down, or its lease could not be kept), or
# left when its holder vanished.
INTERRUPTED, ABANDONED = "interrupted", "abandoned"


class Clock:
    """The time a lease's holder goes by: the event loop's. The keeper reads it through
    the module's ``clock``, so a test can put a clock there that it moves on by hand,
    and see renewals and cut-offs happen at the moments they should, however busy the
    machine (the database's own expiry stays on the wall clock)."""

    def time(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


clock = Clock()


# The part of a third of the lease left before expiry by which a keeper that woke past
# its cutoff must have its renewal confirmed, else it stops the work (see ``_keep``).
LATE_MARGIN = 0.5


class LeaseLost(Exception):
    """The lease could not be kept (taken over, or the database did not confirm it in
    time), so the work under it was stopped."""


class SyncTimedOut(Exception):
    """The work under a lease ran past its time limit and was stopped."""


@dataclass
class Lease:
    connection_id: int
    holder: str  # locked_by: "host:pid/tag"
    run_id: int
    seconds: float
    # The holder's own view of the expiry, on ``clock``: it counts from before the
    # UPDATE that set it, so it never runs later than the database's.
    expires_at: float = 0.0
    lost: str | None = field(default=None)
    found: Any = None  # what ``take``'s ``then`` read under the lease

    @property
    def process(self) -> str:
        return self.holder.rpartition("/")[0]


def process_of(holder: str | None) -> str:
    """The process part of a ``locked_by`` value."""
    return (holder or "").rpartition("/")[0] or (holder or "unknown")


def expired(now: dt.datetime) -> ColumnElement[bool]:
    """Connections in ``syncing`` whose holder let the lease run out: taken over at once."""
    return and_(
        Connection.state == ConnectionState.SYNCING,
        or_(Connection.locked_until.is_(None), Connection.locked_until < now),
    )


def vanished(conn: Connection, now: dt.datetime | None = None) -> bool:
    """True when the connection says it syncs but no holder keeps the lease."""
    if conn.state != ConnectionState.SYNCING:
        return False
    until = conn.locked_until
    if until is None:
        return True
    if until.tzinfo is None:
        until = until.replace(tzinfo=dt.UTC)
    return until < (now or utcnow())


def vanished_error(conn: Connection) -> str:
    """What the status says of a connection whose sync holder vanished."""
    when = conn.locked_until.isoformat() if conn.locked_until else "an unknown time"
    return (
        f"the sync run by {process_of(conn.locked_by)} stopped without finishing "
        f"(its lease expired at {when}: the process ended or lost the database); "
        "the next sync resumes from the saved positions"
    )


async def take(
    db: Database,
    connection_id: int,
    seconds: float,
    *,
    then: Callable[[AsyncSession, Connection], Awaitable[Any]] | None = None,
    reading: Reading | None = None,
) -> Lease | None:
    """The connection's lease, or None while another holder keeps it (or it is stopped,
    or pending: nothing syncs before the user starts it).

    ``then`` runs in the same transaction once the lease is taken, with the connection
    as it stands under the lease; what it answers is the lease's ``found``. A sync reads
    what it starts from there, in the round trip that takes the lease. ``reading``: on
    PostgreSQL, what is read in the very statement that takes the lease instead (and
    when it is not taken at all), then made into ``found``; ``then`` elsewhere.
    """
    holder = f"{PROCESS}/{secrets.token_hex(4)}"
    started = clock.time()
    if reading is not None and not db.sqlite:
        return await _take_reading(db, connection_id, holder, seconds, reading, started)
    async with db.write() as session:
        now = utcnow()
        if db.sqlite:
            taken = await _take_sqlite(session, connection_id, holder, seconds, now)
        else:
            taken = await _take_postgresql(session, connection_id, holder, seconds, now)
        if taken is None:
            return None
        conn, run_id, before_holder, before_until = taken
        if before_holder is not None:
            log.warning(
                "connection %s: taking over the lease %s left when it expired at %s",
                connection_id, before_holder, before_until,
            )  # fmt: skip
            # Whatever else still counts as running was left by a holder that vanished.
            # (A run is only ever open while its holder's name is on the connection:
            # giving the lease back closes it in the same transaction.)
            await session.execute(
                update(SyncRun)
                .where(
                    SyncRun.connection_id == connection_id,
                    SyncRun.outcome == RUNNING,
                    SyncRun.id != run_id,
                )
                .values(
                    outcome=ABANDONED,
                    ended_at=before_until or now,
                    error=f"{process_of(before_holder)} stopped without finishing",
                )
                .execution_options(synchronize_session=False)
            )
        found = await then(session, conn) if then is not None else None
        return Lease(
            connection_id, holder, run_id, seconds, expires_at=started + seconds, found=found
        )


@dataclass(frozen=True, eq=False)
class Reading:
    """What the statement that takes a lease reads along (PostgreSQL): ``columns`` and
    the ``joins`` they need, given the taken connection's columns; ``refused``: a
    condition on the connection's row (the ``connections`` table) under which no lease
    is taken; ``made`` turns the connection and the columns read into ``found``."""

    columns: Callable[[Any], tuple[Any, ...]]
    joins: Callable[[Any], tuple[tuple[Any, Any], ...]]
    made: Callable[[Database, Connection, tuple[Any, ...]], Awaitable[Any]]
    refused: ColumnElement[bool] | None = None
    # The parameters ``columns`` need besides the lease's, given the lease's time.
    values: Callable[[dt.datetime], dict[str, Any]] | None = None


async def _take_reading(
    db: Database, connection_id: int, holder: str, seconds: float, reading: Reading,
    started: float,
) -> Lease | None:  # fmt: skip
    """The lease taken, the run opened, a vanished holder's run closed and what the sync
    starts from read, in one statement committed by itself."""
    now = utcnow()
    more = reading.values(now) if reading.values is not None else {}
    statement, spans = _lease_direct(reading)
    rows = await db.direct_rows(statement, {
        "lease_connection": connection_id, "lease_holder": holder, "lease_now": now,
        "lease_until": now + dt.timedelta(seconds=seconds), "lease_process": PROCESS,
        **more,
    })  # fmt: skip
    if not rows:
        return None
    found = _entities(rows[0], spans)
    conn, run_id, before_holder, before_until = found[0], found[1], found[2], found[3]
    if before_holder is not None:
        log.warning(
            "connection %s: taking over the lease %s left when it expired at %s",
            connection_id, before_holder, before_until,
        )  # fmt: skip
    made = await reading.made(db, conn, tuple(found[4:]))
    return Lease(connection_id, holder, run_id, seconds, expires_at=started + seconds, found=made)


# What ``take`` answers from the statement(s) that took a lease: the connection as it
# stands under the lease, the new run's id, and the holder and expiry it replaced.
_Taken = tuple[Connection, int, str | None, dt.datetime | None]


async def _take_sqlite(
    session: AsyncSession, connection_id: int, holder: str, seconds: float, now: dt.datetime
) -> _Taken | None:
    # Locked for the rest of the transaction (SQLite: the write transaction is), so
    # the check below and the update are one step.
    conn = await session.get(Connection, connection_id, with_for_update=True)
    if conn is None or conn.state in (ConnectionState.STOPPED, ConnectionState.PENDING):
        return None
    before_holder, before_until = conn.locked_by, conn.locked_until
    if before_until is not None:
        until = before_until if before_until.tzinfo else before_until.replace(tzinfo=dt.UTC)
        if until >= now:
            return None
    conn.locked_until = now + dt.timedelta(seconds=seconds)
    conn.locked_by, conn.state = holder, ConnectionState.SYNCING
    run = SyncRun(
        connection_id=connection_id, process=PROCESS, started_at=now, outcome=RUNNING, counts={}
    )
    session.add(run)
    await session.flush()
    return conn, run.id, before_holder, before_until


async def _take_postgresql(
    session: AsyncSession, connection_id: int, holder: str, seconds: float, now: dt.datetime
) -> _Taken | None:
    """The lease taken and the run opened in one statement: the row locked, checked and
    updated (its holder and expiry before the update answered too), the run inserted
    only when the update was made; no row when the lease is not to be had."""
    found = (await session.execute(_lease_statement(), {
        "lease_connection": connection_id, "lease_holder": holder, "lease_now": now,
        "lease_until": now + dt.timedelta(seconds=seconds), "lease_process": PROCESS,
    })).one_or_none()  # fmt: skip
    if found is None:
        return None
    return found[0], found[1], found[2], found[3]


def _spelled(*items: Any) -> list[Any]:
    """Columns, with each mapped class (or alias of one) among ``items`` spelled out as
    its column attributes, in the mapper's order."""
    columns: list[Any] = []
    for item in items:
        mapper = getattr(item, "__mapper__", None)
        if mapper is None:
            columns.append(item)
        else:
            columns += [getattr(item, prop.key) for prop in mapper.column_attrs]
    return columns


@functools.cache
def _lease_statement(reading: Reading | None = None, *, direct: bool = False) -> Any:
    """Built once (per reading): SQLAlchemy caches its compiled form by its shape. The
    parameters' names are no column's: an UPDATE takes a parameter named as one of its
    table's columns for its SET clause, one in a CTE as well."""
    old = (
        select(Connection.id, Connection.locked_by, Connection.locked_until)
        .where(Connection.id == bindparam("lease_connection"))
        .with_for_update()
        .cte("old")
    )
    now = bindparam("lease_now", type_=UTCDateTime())
    taken = (
        update(Connection)
        .where(
            Connection.id == old.c.id,
            # Not ``not_in``: a list of values is rendered only at execution, and the
            # statement is sent directly as compiled once (``_lease_direct``).
            Connection.state != ConnectionState.STOPPED,
            Connection.state != ConnectionState.PENDING,
            or_(old.c.locked_until.is_(None), old.c.locked_until < now),
            ~reading.refused if reading is not None and reading.refused is not None else true(),
        )
        .values(
            locked_until=bindparam("lease_until", type_=UTCDateTime()),
            locked_by=bindparam("lease_holder"),
            state=ConnectionState.SYNCING,
            # Said here: a column's Python-side onupdate is not applied inside a CTE.
            updated_at=now,
        )
        .returning(
            *Connection.__table__.c,
            old.c.locked_by.label("before_holder"),
            old.c.locked_until.label("before_until"),
        )
        .cte("taken")
    )
    run = (
        insert(SyncRun)
        .from_select(
            ["connection_id", "process", "started_at", "outcome", "counts"],
            select(
                taken.c.id,
                bindparam("lease_process", type_=String()),
                bindparam("lease_now", type_=UTCDateTime()),
                literal(RUNNING, String()),
                literal({}, JSON()),
            ),
        )
        .returning(SyncRun.id)
        .cte("run")
    )
    columns = (aliased(Connection, taken), run.c.id, taken.c.before_holder, taken.c.before_until)
    if reading is None:
        return select(*columns).select_from(taken.join(run, true()))
    # Whatever still counts as running was left by a holder that vanished (a run is only
    # ever open while its holder's name is on the connection). The run inserted beside
    # this is not seen here: every part of one statement reads the same snapshot.
    vanished = func.coalesce(
        func.nullif(func.regexp_replace(taken.c.before_holder, "/[^/]*$", ""), ""),
        taken.c.before_holder,
    )
    abandoned = (
        update(SyncRun)
        .where(
            SyncRun.connection_id == taken.c.id,
            SyncRun.outcome == RUNNING,
            taken.c.before_holder.is_not(None),
        )
        .values(
            outcome=ABANDONED,
            ended_at=func.coalesce(taken.c.before_until, now),
            error=vanished + " stopped without finishing",
        )
        .cte("abandoned")
    )
    selected = (*columns, *reading.columns(taken.c))
    query = select(*(_spelled(*selected) if direct else selected))
    query = query.select_from(taken.join(run, true()))
    for target, onclause in reading.joins(taken.c):
        query = query.join(target, onclause)
    return query.add_cte(abandoned)


# Where a mapped class's columns are in a row sent directly: (class, first, keys).
_Span = tuple[type[Any], int, tuple[str, ...]]


@functools.cache
def _lease_direct(reading: Reading) -> tuple[Any, tuple[_Span, ...]]:
    """``_lease_statement(reading)`` with each mapped class among its columns spelled
    out as its columns, to be sent directly (``Database.direct_rows``), and where each
    class's columns are in its row (``_entities`` makes the objects again)."""
    return _lease_statement(reading, direct=True), _spans(_lease_statement(reading))


def _spans(query: Any) -> tuple[_Span, ...]:
    """Where each mapped class selected by ``query`` (the ORM's form) is in its row once
    spelled out by ``_spelled``."""
    spans: list[_Span] = []
    at = 0
    for described in query.column_descriptions:
        entity = described["entity"]
        if entity is None or described["expr"] is not entity:
            at += 1
            continue
        mapper = entity.__mapper__
        keys = tuple(prop.key for prop in mapper.column_attrs)
        spans.append((mapper.class_, at, keys))
        at += len(keys)
    return tuple(spans)


def _entities(row: tuple[Any, ...], spans: tuple[_Span, ...]) -> tuple[Any, ...]:
    """A row of ``_lease_direct``'s statement with each class's columns made into one
    object again (detached, as a closed session leaves what it loaded)."""
    found: list[Any] = []
    at = 0
    for cls, first, keys in spans:
        found += row[at:first]
        found.append(db_direct.detached(cls, keys, row[first : first + len(keys)]))
        at = first + len(keys)
    found += row[at:]
    return tuple(found)


async def renew(db: Database, lease: Lease) -> bool:
    """Push the expiry on; False when the lease is no longer this holder's."""
    started = clock.time()
    result = await db.execute_one(
        update(Connection)
        .where(Connection.id == lease.connection_id, Connection.locked_by == lease.holder)
        .values(locked_until=utcnow() + dt.timedelta(seconds=lease.seconds))
    )
    # An UPDATE answers a CursorResult; execute_one() is declared to answer any Result.
    if not cast(CursorResult[Any], result).rowcount:
        return False
    lease.expires_at = started + lease.seconds
    return True


async def _renewed_by(db: Database, lease: Lease, cutoff: float) -> bool:
    """``renew``, or TimeoutError (the renewal cancelled) once ``clock`` reaches ``cutoff``."""
    renewal = asyncio.ensure_future(renew(db, lease))
    timer = asyncio.ensure_future(clock.sleep(max(0.0, cutoff - clock.time())))
    try:
        await asyncio.wait((renewal, timer), return_when=asyncio.FIRST_COMPLETED)
    finally:
        timer.cancel()
        if not renewal.done():
            # Too late, or the keeper itself is stopped. Its transaction ends before
            # anything goes on; the keeper's own cancellation is not swallowed meanwhile.
            await tasks.cancel_and_wait(renewal)
    if renewal.cancelled():
        raise TimeoutError
    return renewal.result()


async def _keep(db: Database, lease: Lease, stop: asyncio.Timeout) -> None:
    """Renew every third of the lease; stop the work while the lease is still surely ours
    when it cannot be renewed."""
    loop = asyncio.get_running_loop()
    interval = lease.seconds / 3
    cutoff: float | None = None  # the current renewal's, kept while it is retried
    while True:
        if cutoff is None:
            # (A retry has waited already: it goes again at once.)
            await clock.sleep(max(0.0, min(interval, lease.expires_at - interval - clock.time())))
            # The last moment the work may go on without a confirmed renewal.
            cutoff = lease.expires_at - interval
            if clock.time() >= cutoff:
                # Woken late: the loop was held past the cutoff (a busy process, a long
                # stretch of work between two awaits), not the database slow. The lease
                # is still ours until ``expires_at`` (the database's expiry is later
                # still), so this renewal gets until LATE_MARGIN of a third before it.
                # What the margin is for is kept: the work stops before the lease runs
                # out unless a renewal is confirmed first, and a renewal confirmed before
                # expiry proves no one else took the lease meanwhile. Woken past even
                # that, the work stops at once, unrenewed. Retries of a renewal that
                # began on time keep its cutoff: a database away gets no longer.
                cutoff = lease.expires_at - interval * LATE_MARGIN
        try:
            kept = await _renewed_by(db, lease, cutoff)
        except Exception as exc:  # the database is away (TimeoutError: not in time)
            if clock.time() < cutoff:
                log.warning("connection %s: renewing the lease failed (%r); retrying",
                            lease.connection_id, exc)  # fmt: skip
                await clock.sleep(min(0.5, interval / 4))
                continue
            lease.lost = "the lease could not be renewed in time (the database did not answer)"
        else:
            if kept:
                cutoff = None
                continue
            lease.lost = "the lease was taken over by another process"
        log.warning("connection %s: %s; stopping its sync", lease.connection_id, lease.lost)
        stop.reschedule(loop.time())  # cancels the work now
        return


@contextlib.asynccontextmanager
async def held(db: Database, lease: Lease, max_seconds: float) -> AsyncIterator[None]:
    """Run the block while the lease is kept: renewed in the background; the block is
    cancelled (LeaseLost) when renewal fails, and (SyncTimedOut) after ``max_seconds``."""
    loop = asyncio.get_running_loop()
    keeper: asyncio.Task[None] | None = None
    stop = asyncio.timeout_at(loop.time() + max_seconds)
    try:
        async with stop:
            keeper = asyncio.create_task(_keep(db, lease, stop))
            yield
    except TimeoutError:
        if not stop.expired():
            raise  # the work's own time-out, not ours
        if lease.lost is not None:
            raise LeaseLost(lease.lost) from None
        raise SyncTimedOut(
            f"the sync ran longer than {max_seconds:g} s and was stopped; "
            "the next one resumes from the saved positions"
        ) from None
    finally:
        if keeper is not None:
            # A cancellation of the block's task arriving while the keeper ends (its
            # renewal's transaction rolled back) is raised, not taken for the keeper's.
            await tasks.cancel_and_wait(keeper)


async def give_back(
    session: AsyncSession,
    lease: Lease,
    outcome: str,
    *,
    error: str | None = None,
    counts: dict[str, int] | None = None,
) -> Connection | None:
    """End the lease's run and free the connection, in the caller's transaction. Answers
    the connection when the lease was still this holder's (to set its state), else None:
    whoever took over owns the connection and the run was closed by them."""
    now = utcnow()
    ended = (
        update(SyncRun)
        .where(SyncRun.id == lease.run_id, SyncRun.outcome == RUNNING)
        .values(outcome=outcome, ended_at=now, error=error, counts=counts or {})
    )
    if lease.run_id % PRUNE_EVERY == 0:
        await _prune(session, lease.connection_id)
    if session.get_bind().dialect.name == "postgresql":
        # The run ended and the connection read in one statement (a data-modifying CTE).
        found = await session.scalars(
            select(Connection)
            .add_cte(ended.cte("ended"))
            .where(Connection.id == lease.connection_id)
            .execution_options(populate_existing=True)
        )
        conn = found.one_or_none()
    else:
        await session.execute(ended.execution_options(synchronize_session=False))
        conn = await session.get(Connection, lease.connection_id)
    if conn is None or conn.locked_by != lease.holder:
        return None
    conn.locked_until, conn.locked_by = None, None
    return conn


@dataclass(eq=False)
class AlsoAtRelease:
    """More writes a caller of a sync wants made in the one statement that ends it when
    it ends quietly (``give_back_quietly``): data-modifying CTEs built once (``parts``)
    and their parameters. ``made`` is set once that statement has run (the writes are
    made whether or not the connection is written); when the sync ends otherwise, they
    are not made, and the caller makes them its own way."""

    parts: tuple[CTE, ...]
    values: dict[str, Any]
    made: bool = False


async def give_back_quietly(
    db: Database,
    lease: Lease,
    outcome: str,
    values: dict[str, Any],
    *,
    counts: dict[str, int] | None = None,
    also: tuple[tuple[CTE, ...], dict[str, Any]] | None = None,
) -> bool:
    """PostgreSQL: end the lease's run, free the connection and set ``values`` on it, in
    one statement committed by itself; only while the lease is still this holder's and
    the connection still syncing (not stopped, restarted or deleted meanwhile). False
    when the connection was not written: the caller gives the lease back the general
    way (``give_back``), which finds the run already ended and reads the connection.
    ``also``: more writes made in the same statement (data-modifying CTEs built once,
    and their parameters), made whether or not the connection is written. The run
    whose id is a multiple of PRUNE_EVERY cuts the connection's history to RUNS_KEPT
    in the same statement."""
    now = utcnow()
    parts, more = also if also is not None else ((), {})
    prune = lease.run_id % PRUNE_EVERY == 0
    found = await db.direct_rows(
        _quiet_statement(tuple(sorted(values)), parts, prune),
        {**{f"set_{name}": value for name, value in values.items()},
         "lease_connection": lease.connection_id, "lease_holder": lease.holder,
         "run_id": lease.run_id,
         "run_outcome": outcome, "run_ended_at": now, "run_counts": counts or {},
         "set_updated_at": now, **more},
    )  # fmt: skip
    return bool(found)


@functools.cache
def _quiet_statement(
    columns: tuple[str, ...], parts: tuple[CTE, ...] = (), prune: bool = False
) -> Any:
    """Built once per set of columns; SQLAlchemy caches its compiled form. ``prune``:
    with the cut of the connection's older runs (``_prune``)."""
    if prune:
        parts = (*parts, _pruned(bindparam("lease_connection")).cte("pruned"))
    table = SyncRun.__table__
    ended = (
        update(SyncRun)
        .where(SyncRun.id == bindparam("run_id"), SyncRun.outcome == RUNNING)
        .values(
            outcome=bindparam("run_outcome"),
            ended_at=bindparam("run_ended_at", type_=UTCDateTime()),
            error=None,
            counts=bindparam("run_counts", type_=table.c.counts.type),
        )
        .cte("ended")
    )
    table = Connection.__table__
    return (
        update(Connection)
        .add_cte(ended, *parts)
        .where(
            # Names no column has: an UPDATE takes a parameter named as a column for
            # its SET clause, the CTE's as well.
            Connection.id == bindparam("lease_connection"),
            Connection.locked_by == bindparam("lease_holder"),
            Connection.state == ConnectionState.SYNCING,
        )
        .values(
            locked_until=None,
            locked_by=None,
            updated_at=bindparam("set_updated_at", type_=UTCDateTime()),
            **{name: bindparam(f"set_{name}", type_=table.c[name].type) for name in columns},
        )
        .returning(Connection.id)
    )


async def _prune(session: AsyncSession, connection_id: int) -> None:
    """Keep the newest RUNS_KEPT runs: one statement, the cut found by the index."""
    await session.execute(
        _pruned(literal(connection_id)).execution_options(synchronize_session=False)
    )


def _pruned(connection_id: ColumnElement[int]) -> Any:
    """The DELETE of a connection's runs older than its newest RUNS_KEPT."""
    oldest_kept = (
        select(SyncRun.id)
        .where(SyncRun.connection_id == connection_id)
        .order_by(SyncRun.id.desc())
        .offset(RUNS_KEPT - 1)
        .limit(1)
        .scalar_subquery()
    )
    return delete(SyncRun).where(SyncRun.connection_id == connection_id, SyncRun.id < oldest_kept)


async def recent_runs(session: AsyncSession, connection_id: int, limit: int = 10) -> list[SyncRun]:
    """The connection's newest runs, newest first."""
    rows = await session.scalars(
        select(SyncRun)
        .where(SyncRun.connection_id == connection_id)
        .order_by(SyncRun.id.desc())
        .limit(limit)
    )
    return list(rows)


def run_out(run: SyncRun) -> dict[str, Any]:
    return {
        "started_at": run.started_at,
        "ended_at": run.ended_at,
        "outcome": run.outcome,
        "counts": dict(run.counts or {}),
        "error": run.error,
        "process": run.process,
    }
