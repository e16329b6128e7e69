"""The distributed queue: procrastinate on PostgreSQL, for crmcal beyond one machine (F26).

``crmcal serve`` on PostgreSQL only enqueues; ``crmcal worker`` processes, on any
number of machines, run the jobs:

* ``crmcal.sync`` — one sync of one connection. Deferred with a queueing lock
  and a lock named after the connection: a burst of notifications or CRM edits
  makes one queued job (the others find it there), and the queue runs one job
  of a connection at a time. The runner's lease still guards the sync itself,
  since the API and the CLI sync outside the queue.
* periodic: ``crmcal.poll`` (every few seconds: connections whose
  ``next_sync_at`` has come, a bounded share per tick so they spread),
  ``crmcal.renew`` (push channels about to expire), ``crmcal.purge`` (the
  trash), ``crmcal.series`` (the horizon of recurring series moved on) and
  ``crmcal.recover`` (jobs of workers that stopped beating: retried,
  so a worker killed mid-sync loses nothing). Each tick runs on one worker only.

The schema procrastinate needs is applied by ``crmcal db upgrade`` and when a
worker or the server starts (``ensure_schema``); the pending migration files of a
newer procrastinate are applied the same way.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import math
import random
import select as poll_module
import socket
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import procrastinate
import psycopg
import psycopg_pool
from procrastinate import exceptions as queue_errors
from procrastinate import jobs as queue_jobs
from procrastinate import manager as queue_manager
from procrastinate.schema import SchemaManager
from psycopg import sql
from sqlalchemy import (
    CTE,
    BigInteger,
    Select,
    bindparam,
    column,
    delete,
    func,
    literal_column,
    select,
    table,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from crmcal import db_errors, heap
from crmcal.config import Settings
from crmcal.crm.tables import utcnow
from crmcal.db import IDLE_PING_SECONDS, Database
from crmcal.jobs import maintenance, queue_worker
from crmcal.sync import limits, runner
from crmcal.sync.context import Held
from crmcal.sync.engine import SyncFailed
from crmcal.sync.lease import AlsoAtRelease
from crmcal.sync.limits import Limit, SharedLimits
from crmcal.sync.runner import Busy, run_sync
from crmcal.sync.states import ConnectionState
from crmcal.sync.tables import Connection, ProviderHold
from crmcal.vault import Vault

log = logging.getLogger(__name__)

SYNC_TASK = "crmcal.sync"
SYNC_QUEUE = "sync"
PERIODIC_QUEUE = "periodic"
POLL_EVERY = 5  # seconds between looks for due connections
# When a sync is busy elsewhere (an API call holds the lease), try again this much later.
BUSY_RETRY_SECONDS = 5
# A CalDAV server at its cap of syncs: the job is queued again this much later.
SERVER_BUSY_RETRY_SECONDS = 2
SERVER_SLOT_TTL = dt.timedelta(seconds=60)
# The priority of a sync someone waits for (procrastinate runs higher ones first; the
# others have 0).
URGENT = 10
# A worker's heartbeat; one silent for STALLED_AFTER beats is taken for dead.
STALLED_AFTER = 3
NOT_CALDAV_KEPT = 100_000  # ids kept (a few MB at most)
# Jobs a process queues in bulk (poll ticks, channel renewals, CRM edits) before it has
# the queue's table analyzed again: procrastinate's fetch is planned from the table's
# statistics, and planned for an empty table it costs seconds a job once thousands wait.
ANALYZE_AFTER = 1000


@dataclass
class Runtime:
    """What jobs need, made once per worker process."""

    db: Database
    vault: Vault
    settings: Settings
    app: procrastinate.App
    limits: SharedLimits | None = None
    # Connections known not to be CalDAV (a connection's kind never changes): their
    # jobs skip the look-up of a per-server limit.
    not_caldav: set[int] = field(default_factory=set)
    statistics: QueueStatistics | None = None
    # What the process's syncs freed is given back to the system when it has grown or
    # gone idle (``crmcal.heap``): otherwise the busiest minutes set its memory for good.
    trimmer: heap.Trimmer = field(default_factory=heap.Trimmer)
    # When the polled connections were last counted, and how many (``poll_due``).
    polled: tuple[dt.datetime, int] | None = None

    def __post_init__(self) -> None:
        if self.limits is None:
            self.limits = limits.for_settings(self.db, self.settings)
        limits.install(self.limits)
        if self.statistics is None:
            self.statistics = QueueStatistics(self.app)


class QueueStatistics:
    """Keeps the planner's view of the queue's table up to date after bulk enqueues.

    procrastinate fetches each job with a query planned from ``procrastinate_jobs``'
    statistics; a table filled by thousands of jobs since it was last analyzed (never,
    on a server with autovacuum off, or not yet: autovacuum comes round once a minute)
    is planned as nearly empty, and each fetch then costs seconds of database CPU. So
    once this process has queued ``every`` jobs since its last look, it analyzes the
    table: a few milliseconds on a table of thousands of rows, taken with a lock that
    blocks no reads or writes (and skipped while another process analyzes it)."""

    def __init__(self, app: procrastinate.App, every: int = ANALYZE_AFTER) -> None:
        self.app, self.every = app, every
        self.queued_since = 0

    async def queued(self, count: int) -> bool:
        """``count`` more jobs were queued; True when the table was analyzed now."""
        self.queued_since += count
        if self.queued_since < self.every:
            return False
        self.queued_since = 0
        try:
            await self.app.connector.execute_query_async("ANALYZE (SKIP_LOCKED) procrastinate_jobs")
        except Exception as exc:  # the statistics are a help, not the job's purpose
            log.warning("analyzing the queue's table after a bulk enqueue failed: %s", exc)
            return False
        return True


def conninfo(database_url: str) -> str:
    """A libpq URL (what procrastinate's psycopg pool takes) for crmcal's database URL."""
    parsed = make_url(database_url)
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


# When each of the queue pool's connections was last handed back (or opened).
_RETURNED: weakref.WeakKeyDictionary[psycopg.AsyncConnection[Any], float]
_RETURNED = weakref.WeakKeyDictionary()


def _queue_pool(**options: Any) -> psycopg_pool.AsyncConnectionPool:
    """The pool procrastinate runs its queries on, made as crmcal's own engine is.

    procrastinate's own pool took four round trips a query (its fetch and finish of
    every job): an empty query checking the connection, BEGIN, the query and COMMIT.
    Each of its queries is one statement, so its connections commit each by itself
    (autocommit: the same transaction, two round trips fewer); a connection is
    pinged only after ``IDLE_PING_SECONDS`` idle, as crmcal's own pool does, or when
    something waits to be read on it (the server ending it sends a message, or
    closes the socket): one used moments ago is handed out as it is."""
    options.update(check=_check_if_idle, configure=_opened)
    return _QueuePool(**options)


class _QueuePool(psycopg_pool.AsyncConnectionPool):
    """psycopg's pool, noting when each connection comes back (``_check_if_idle``).

    Noted as it comes back rather than by a ``reset`` callback: with one, the pool hands
    every returned connection to a task of its background worker (a queue's put and
    get, and loop turns: the fetch of every job pays them); without, it goes straight
    back into the pool, after the same check of its transaction state."""

    async def putconn(self, conn: psycopg.AsyncConnection[Any]) -> None:
        _RETURNED[conn] = time.monotonic()
        await super().putconn(conn)


async def _opened(conn: psycopg.AsyncConnection[Any]) -> None:
    await conn.set_autocommit(True)
    _RETURNED[conn] = time.monotonic()


async def _check_if_idle(conn: psycopg.AsyncConnection[Any]) -> None:
    """The pool's check before it hands a connection out: raises when it is unusable
    (the pool then opens another)."""
    since = _RETURNED.get(conn)
    if since is None or time.monotonic() - since >= IDLE_PING_SECONDS or _readable(conn):
        await psycopg_pool.AsyncConnectionPool.check_connection(conn)


def _readable(conn: psycopg.AsyncConnection[Any]) -> bool:
    """Something to read on an idle connection, which has nothing pending: the server
    ended it (its message, or the end of the stream), or told it something."""
    try:
        poller = poll_module.poll()
        poller.register(conn.fileno(), poll_module.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError, psycopg.Error):
        return True  # closed or broken: the real check says so


class JobManager(queue_manager.JobManager):
    """procrastinate's, telling ``on_idle`` when a fetch finds no job for the worker.

    That is the queue's own idle moment: the worker then waits for a notification or its
    next poll, so a process with nothing to do learns it without a timer of its own.

    And a sync job whose sync ended quietly is finished by the sync's own closing
    statement (``finish_with_release``): its row deleted there, as procrastinate's
    finish deletes a successful job's, and procrastinate's finish not sent after it."""

    on_idle: Callable[[], object] | None = None
    # Whether the worker deletes its successful jobs (crmcal's does): only then may a
    # sync's release delete its job's row.
    deletes_successful = False

    def __init__(self, connector: procrastinate.BaseConnector) -> None:
        super().__init__(connector)
        # Jobs of this process whose rows a sync's release deleted: nothing to finish.
        self.finished: set[int] = set()

    async def finish_job(
        self, job: queue_jobs.Job, status: queue_jobs.Status, delete_job: bool
    ) -> None:
        if job.id is not None and job.id in self.finished:
            self.finished.discard(job.id)
            if status != queue_jobs.Status.SUCCEEDED:
                # Its sync ended and was recorded; what failed after it is only logged.
                log.warning("job %s ended %s after its sync had finished it", job.id,
                            status.value)  # fmt: skip
            return
        await super().finish_job(job=job, status=status, delete_job=delete_job)

    async def fetch_job(
        self, queues: Iterable[str] | None, worker_id: int
    ) -> queue_jobs.Job | None:
        job = await super().fetch_job(queues=queues, worker_id=worker_id)
        if job is None and self.on_idle is not None:
            try:
                self.on_idle()
            except Exception as exc:  # the idle moment's work never stops the worker
                log.warning("the worker's idle work failed: %s", exc)
        return job


def queue_app(database_url: str, *, pool_size: int = 10) -> procrastinate.App:
    """The app that defers and runs crmcal's jobs in ``database_url``; open it before use."""
    connector = procrastinate.PsycopgConnector(
        conninfo=conninfo(database_url), min_size=1, max_size=pool_size, pool_factory=_queue_pool
    )
    app = queue_worker.App(connector=connector)
    app.job_manager = JobManager(connector=connector)
    # Registered per app: a task defers through the app it was registered on.
    app.task(name=SYNC_TASK, queue=SYNC_QUEUE, pass_context=True)(sync_connection)
    for name, cron, job in (
        ("poll", f"* * * * * */{POLL_EVERY}", poll_due),
        ("recover", f"* * * * * */{POLL_EVERY}", recover_stalled),
        ("renew", "*/10 * * * *", renew_channels),
        ("purge", "17 * * * *", purge_trash),
        ("series", "43 * * * *", extend_series),
    ):
        task = app.task(name=f"crmcal.{name}", queue=PERIODIC_QUEUE, pass_context=True)(job)
        app.periodic(cron=cron, periodic_id=name)(task)
    return app


def lock_of(connection_id: int) -> str:
    return f"connection:{connection_id}"


async def defer_sync(
    app: procrastinate.App,
    connection_id: int,
    *,
    delay: float | None = None,
    urgent: bool = False,
) -> bool:
    """Queue a sync of the connection; False when one is already waiting (it covers this).

    ``urgent``: someone is waiting for this sync (a calendar's push, a CRM edit): it
    runs before the syncs of polling and channel renewal, so that a storm of those
    does not delay it; a sync already waiting is moved ahead the same way, and one
    put back for later (a busy lease or CalDAV server) is due now: it checks again
    what held it back (a throttled account's hold is read by the job itself)."""
    lock = lock_of(connection_id)
    options: dict[str, Any] = {"lock": lock, "queueing_lock": lock}
    if delay:
        options["schedule_in"] = {"seconds": delay}
    if urgent:
        options["priority"] = URGENT
    try:
        await app.configure_task(SYNC_TASK, allow_unknown=False, **options).defer_async(
            connection_id=connection_id
        )
    except queue_errors.AlreadyEnqueued:
        if urgent:
            if delay:  # a sync put back keeps the waiting one's time
                await app.connector.execute_query_async(
                    "UPDATE procrastinate_jobs SET priority = %(priority)s "
                    "WHERE queueing_lock = %(lock)s AND status = 'todo' "
                    "AND priority < %(priority)s",
                    priority=URGENT,
                    lock=lock,
                )
            else:
                await app.connector.execute_query_async(
                    "UPDATE procrastinate_jobs SET priority = %(priority)s, "
                    "scheduled_at = LEAST(scheduled_at, now()) "
                    "WHERE queueing_lock = %(lock)s AND status = 'todo' "
                    "AND (priority < %(priority)s OR scheduled_at > now())",
                    priority=URGENT,
                    lock=lock,
                )
        return False
    return True


def _runtime(context: procrastinate.JobContext) -> Runtime:
    runtime = context.additional_context.get("crmcal")
    assert isinstance(runtime, Runtime), "a crmcal worker passes its Runtime to its jobs"
    return runtime


async def sync_connection(context: procrastinate.JobContext, connection_id: int) -> None:
    runtime = _runtime(context)
    try:
        await _sync_connection(runtime, context, connection_id)
    finally:
        runtime.trimmer.job_done()


# The job's row deleted with the release of a sync that ends quietly, as procrastinate's
# finish deletes a successful job's (only while it is running, as there).
_JOBS = table("procrastinate_jobs", column("id"), column("status"))


@functools.cache
def _job_done_parts() -> tuple[CTE, ...]:
    done = (
        delete(_JOBS)
        .where(
            _JOBS.c.id == bindparam("job_done_id", type_=BigInteger()),
            _JOBS.c.status == literal_column("'doing'::procrastinate_job_status"),
        )
        .cte("job_done")
    )
    return (done,)


def finish_with_release(context: procrastinate.JobContext) -> AlsoAtRelease | None:
    """For a job of a crmcal worker that deletes its successful jobs: its row deleted by
    the statement that ends its sync when the sync ends quietly (a no-change sync),
    which saves procrastinate's finish, a statement and a round trip a job. Crash-safe
    as before: the job's row goes in the same transaction as the lease's release and
    the run's end, so a worker killed before it leaves the job running (retried as a
    stalled worker's), and one killed after it leaves nothing to do."""
    job = getattr(context, "job", None)
    manager = getattr(getattr(context, "app", None), "job_manager", None)
    if job is None or job.id is None or not isinstance(manager, JobManager):
        return None
    if not manager.deletes_successful:
        return None
    return AlsoAtRelease(_job_done_parts(), {"job_done_id": job.id})


async def _run_sync(
    runtime: Runtime, context: procrastinate.JobContext, connection_id: int, **options: Any
) -> None:
    """``run_sync`` for the job of ``context``, whose row goes with the release of a sync
    that ends quietly (``finish_with_release``): its job manager then finishes nothing."""
    at_release = finish_with_release(context)
    try:
        await run_sync(runtime.db, runtime.vault, runtime.settings, connection_id, wait=1,
                       at_release=at_release, **options)  # fmt: skip
    finally:
        if at_release is not None and at_release.made:
            manager = context.app.job_manager
            assert isinstance(manager, JobManager)
            assert context.job.id is not None
            manager.finished.add(context.job.id)


async def _sync_connection(
    runtime: Runtime, context: procrastinate.JobContext, connection_id: int
) -> None:
    # A sync someone waits for that is put back (held, busy) keeps its place ahead.
    urgent = _is_urgent(context)
    try:
        if connection_id in runtime.not_caldav:
            # No server's limit to take first: whether the account is held is read in
            # the transaction that takes the lease, not in a query of its own.
            try:
                await _run_sync(runtime, context, connection_id,
                                unless_held=runtime.limits is not None)  # fmt: skip
            except Held as exc:
                await defer_sync(runtime.app, connection_id, delay=exc.seconds, urgent=urgent)
            return
        held, server = await _limits_of(runtime, connection_id)
        if held > 0:
            # The service asked this account to wait: its sync waits in the queue, not
            # in a worker, which goes on with other accounts meanwhile.
            await defer_sync(runtime.app, connection_id, delay=held, urgent=urgent)
            return
        if server is None:
            await _run_sync(runtime, context, connection_id)
            return
        slot = await server.try_take(SERVER_SLOT_TTL)
        if slot is None:
            # The server has all the syncs it may take: this one waits in the queue,
            # not in a worker, which goes on with other connections meanwhile.
            await defer_sync(
                runtime.app, connection_id, delay=SERVER_BUSY_RETRY_SECONDS, urgent=urgent
            )
            return
        async with server.held(slot, SERVER_SLOT_TTL):
            await _run_sync(runtime, context, connection_id)
    except Busy:
        # An API or CLI sync holds the lease: this one runs after it, not beside it.
        await defer_sync(runtime.app, connection_id, delay=BUSY_RETRY_SECONDS, urgent=urgent)
    except SyncFailed as exc:
        # Recorded on the connection, which is polled again after its back-off.
        log.info("sync of connection %s: %s", connection_id, exc)
    except Exception as exc:
        found = db_errors.transient(exc)
        if found is None:
            raise
        # The database was away or too busy: nothing is counted against the connection,
        # and its sync waits in the queue (if the queue can take it: it lives in the
        # same database; if not, the job fails, and the poll queues the sync later).
        log.warning("sync of connection %s put back for %s s: %s (%s)", connection_id,
                    found.retry_after, found.meaning, exc.__class__.__name__)  # fmt: skip
        await defer_sync(runtime.app, connection_id, delay=found.retry_after, urgent=urgent)


def _is_urgent(context: procrastinate.JobContext) -> bool:
    job = getattr(context, "job", None)
    return job is not None and (job.priority or 0) >= URGENT


async def _limits_of(runtime: Runtime, connection_id: int) -> tuple[float, Limit | None]:
    """In one query: the seconds the connection's account must still wait after a
    throttling answer (0: none), and the shared per-server limit of a CalDAV one."""
    if runtime.limits is None:
        return 0.0, None
    key = Connection.provider + ":" + func.lower(func.trim(Connection.account))
    hold = select(ProviderHold.until).where(ProviderHold.key == key).scalar_subquery()
    async with runtime.db.read() as session:
        found = await session.execute(
            select(Connection.provider, Connection.account, hold).where(
                Connection.id == connection_id
            )
        )
        row = found.first()
    if row is None:
        return 0.0, None
    until = row[2]
    held = max((until - utcnow()).total_seconds(), 0.0) if until is not None else 0.0
    if row.provider != "caldav":
        # A connection's kind never changes: its later jobs skip this query.
        if len(runtime.not_caldav) < NOT_CALDAV_KEPT:
            runtime.not_caldav.add(connection_id)
        return held, None
    return held, runtime.limits.for_server(row.account)


def due_per_tick(active: int, poll_seconds: int) -> int:
    """How many due connections one poll tick queues: twice the steady rate, so a
    backlog drains within a poll period while a herd of them is spread out."""
    return max(50, math.ceil(2 * active * POLL_EVERY / poll_seconds))


def due_batch(now: dt.datetime, limit: int) -> Select[int]:
    """The ids of up to ``limit`` due connections, the longest due first, locked for the
    tick. Found by the index on state and next sync time: a tick reads the rows that are
    due (and those in ``syncing``, a worker's share), not those whose time is to come."""
    return (
        select(Connection.id)
        .where(runner.due(now))  # with those a vanished holder left in syncing
        .order_by(Connection.next_sync_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )


async def _polled_count(runtime: Runtime, session: AsyncSession, now: dt.datetime) -> int:
    """How many connections are polled, counted once a poll period per process: the
    count reads every connection's entry, too much for each tick, and a period-old
    figure paces the ticks as well."""
    kept = runtime.polled
    if kept is not None and now - kept[0] < dt.timedelta(seconds=runtime.settings.poll_seconds):
        return kept[1]
    count = await session.scalar(
        select(func.count())
        .select_from(Connection)
        .where(
            Connection.state.in_(
                (ConnectionState.ACTIVE, ConnectionState.ERROR, ConnectionState.SYNCING)
            )
        )
    )
    runtime.polled = (now, count or 0)
    return count or 0


async def poll_due(context: procrastinate.JobContext, timestamp: int) -> int:
    """Queue syncs of the connections whose time has come; answers how many."""
    runtime = _runtime(context)
    settings = runtime.settings
    now = utcnow()
    async with runtime.db.write() as session:
        active = await _polled_count(runtime, session, now)
        due = list(
            await session.scalars(due_batch(now, due_per_tick(active, settings.poll_seconds)))
        )
        if not due:
            return 0
        # Not due again until this sync sets the next time: a job that never runs
        # (its worker died and it was given up) is polled again one period later.
        later = now + dt.timedelta(seconds=settings.poll_seconds * random.uniform(0.9, 1.1))
        await session.execute(
            update(Connection)
            .where(Connection.id.in_(due))
            .values(next_sync_at=later)
            .execution_options(synchronize_session=False)
        )
    await _defer_all(runtime, due)
    return len(due)


async def _defer_all(runtime: Runtime, ids: list[int]) -> int:
    """Queue a routine sync of each connection (those already waiting keep their job);
    answers how many were queued, which count towards the table's next ANALYZE."""
    queued = await defer_syncs(runtime.app, ids)
    if runtime.statistics is not None:
        await runtime.statistics.queued(queued)
    return queued


# Jobs queued by one statement of ``defer_syncs``.
DEFER_BATCH = 1000


async def defer_syncs(app: procrastinate.App, ids: Iterable[int]) -> int:
    """Queue a routine sync of each connection, as ``defer_sync`` does one, with the
    same queueing lock and lock each; answers how many were queued (those with a sync
    already waiting keep it and are not counted).

    A poll tick at 10,000 connections queues hundreds: one statement and one round
    trip each, a job's worth of the database's CPU apiece, was the tick's whole cost.
    Here those already waiting are found by their queueing locks in one statement and
    the rest queued in one more (procrastinate's batch defer) for each ``DEFER_BATCH``.
    A batch is one INSERT: should another process queue one of its connections between
    the two statements, the batch fails whole on that queueing lock, and its jobs are
    queued one at a time instead (each one then finding its own job waiting or not)."""
    wanted = list(dict.fromkeys(ids))
    queued = 0
    for first in range(0, len(wanted), DEFER_BATCH):
        queued += await _defer_batch(app, wanted[first : first + DEFER_BATCH])
    return queued


async def _defer_batch(app: procrastinate.App, ids: list[int]) -> int:
    locks = {connection_id: lock_of(connection_id) for connection_id in ids}
    rows = await app.connector.execute_query_all_async(
        "SELECT queueing_lock FROM procrastinate_jobs "
        "WHERE queueing_lock = ANY(%(locks)s) AND status = 'todo'",
        locks=list(locks.values()),
    )
    waiting = {row["queueing_lock"] for row in rows}
    jobs = [
        app.configure_task(
            SYNC_TASK, allow_unknown=False, lock=lock, queueing_lock=lock
        ).make_new_job(connection_id=connection_id)
        for connection_id, lock in locks.items()
        if lock not in waiting
    ]
    if not jobs:
        return 0
    try:
        await app.job_manager.batch_defer_jobs_async(jobs=jobs)
    except queue_errors.AlreadyEnqueued:
        queued = 0
        for job in jobs:
            queued += await defer_sync(app, int(job.task_kwargs["connection_id"]))  # type: ignore[arg-type]
        return queued
    return len(jobs)


async def renew_channels(context: procrastinate.JobContext, timestamp: int) -> int:
    """Queue a sync of each connection whose push channel expires within a day: the
    sync renews (Graph) or replaces (Google) it."""
    from crmcal.sync.push import RENEW_BEFORE

    runtime = _runtime(context)
    async with runtime.db.read() as session:
        ids = list(
            await session.scalars(
                select(Connection.id).where(
                    runner.retried(),
                    Connection.push_channel_id.is_not(None),
                    Connection.push_expires_at < utcnow() + RENEW_BEFORE,
                )
            )
        )
    await _defer_all(runtime, ids)
    return len(ids)


async def purge_trash(context: procrastinate.JobContext, timestamp: int) -> int:
    return await maintenance.purge_once(_runtime(context).db)


async def extend_series(context: procrastinate.JobContext, timestamp: int) -> int:
    """Make the occurrences of recurring series the horizon has reached since."""
    return await maintenance.extend_series_once(_runtime(context).db)


async def recover_stalled(context: procrastinate.JobContext, timestamp: int) -> int:
    """Retry the jobs of workers whose heartbeat stopped (killed, frozen, cut off)."""
    runtime = _runtime(context)
    return await recover(runtime.app, runtime.settings.worker_heartbeat * STALLED_AFTER)


async def recover(app: procrastinate.App, stalled_after: float) -> int:
    manager = app.job_manager
    retried = 0
    for job in await manager.get_stalled_jobs(seconds_since_heartbeat=stalled_after):
        assert job.id is not None
        try:
            await manager.retry_job(job)
            retried += 1
            log.warning("job %s (%s) of a stalled worker: queued again", job.id, job.task_name)
        except queue_errors.UniqueViolation:
            # Another job of the same connection is already waiting: it does this one's work.
            await manager.finish_job_by_id_async(
                job.id, status=procrastinate.jobs.Status.FAILED, delete_job=False
            )
        except queue_errors.ConnectorException as exc:
            log.info("job %s of a stalled worker not retried: %s", job.id, exc)
    return retried


def worker_name() -> str:
    import os

    return f"{socket.gethostname()}:{os.getpid()}"


async def run_worker(
    runtime: Runtime,
    *,
    concurrency: int = 8,
    install_signal_handlers: bool = True,
    queues: list[str] | None = None,
    wait: bool = True,
) -> None:
    """Run jobs until stopped (SIGINT/SIGTERM: the jobs running finish first); ``wait``
    False: until no job of ``queues`` (None: all) is left."""
    heartbeat = runtime.settings.worker_heartbeat
    if isinstance(runtime.app.job_manager, JobManager):
        # A worker with no job gives back what its last burst left (``crmcal.heap``).
        runtime.app.job_manager.on_idle = lambda: runtime.trimmer.idle()
        runtime.app.job_manager.deletes_successful = True  # delete_jobs below
    more: dict[str, Any] = {"queues": queues} if queues is not None else {}
    await runtime.app.run_worker_async(
        **more,
        wait=wait,
        name=worker_name(),
        concurrency=concurrency,
        additional_context={"crmcal": runtime},
        install_signal_handlers=install_signal_handlers,
        update_heartbeat_interval=heartbeat,
        stalled_worker_timeout=heartbeat * STALLED_AFTER,
        # Finished jobs are history nobody reads; failed ones stay to be looked at.
        delete_jobs="successful",
        fetch_job_polling_interval=2.0,
    )


# --- the schema -----------------------------------------------------------------------

_VERSION_NOTE = "procrastinate "
_SCHEMA_LOCK = 0x63726D63  # one process at a time applies the schema ("crmc")


def _parse_version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:3] if part.isdigit())


def _migrations_after(applied: tuple[int, ...], installed: tuple[int, ...]) -> list[Path]:
    folder = Path(procrastinate.__file__).parent / "sql" / "migrations"
    found = []
    for path in sorted(folder.glob("*.sql")):
        version = _parse_version(path.name.split("_", 1)[0])
        if applied < version <= installed:
            found.append(path)
    return found


def ensure_schema(database_url: str) -> str:
    """Create procrastinate's tables, or bring them up to the installed procrastinate;
    answers what was done. Safe to run from several processes at once."""
    installed_text = metadata.version("procrastinate")
    installed = _parse_version(installed_text)
    with psycopg.connect(conninfo(database_url), autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_SCHEMA_LOCK,))
        try:
            exists = conn.execute("SELECT to_regclass('procrastinate_jobs')").fetchone()
            if exists is None or exists[0] is None:
                schema = SchemaManager.get_schema()
                with conn.transaction():
                    conn.execute(schema)
                    _note_version(conn, installed_text)
                _ensure_lock_index(conn)
                return f"queue schema created (procrastinate {installed_text})"
            note = conn.execute(
                "SELECT obj_description('procrastinate_jobs'::regclass, 'pg_class')"
            ).fetchone()
            applied_text = (note[0] or "") if note else ""
            applied = _parse_version(applied_text.removeprefix(_VERSION_NOTE))
            pending = _migrations_after(applied, installed) if applied else []
            if not pending and applied >= installed:
                _ensure_lock_index(conn)
                return f"queue schema current (procrastinate {installed_text})"
            with conn.transaction():
                for path in pending:
                    conn.execute(path.read_text())
                _note_version(conn, installed_text)
            _ensure_lock_index(conn)
            return f"queue schema migrated to procrastinate {installed_text}"
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_SCHEMA_LOCK,))


# procrastinate's fetch of a job (one per job a worker runs) rejects a job whose lock
# another job waiting or running holds: a search of the jobs by lock, in state todo or
# doing. procrastinate has no index that starts with the lock for both states (its
# ``(id, lock)`` one is read whole for it), so each fetch read every waiting job:
# twice the rows, twice the work, at 10,000 waiting jobs as at 5,000. This index
# finds a lock's one or two jobs at once, whatever the queue's length.
LOCK_INDEX = "crmcal_procrastinate_jobs_lock_waiting"


def _ensure_lock_index(conn: psycopg.Connection[Any]) -> None:
    """Make ``LOCK_INDEX`` (on a connection in autocommit), without blocking the queue
    meanwhile; one left unfinished by an earlier try (invalid) is made again."""
    found = conn.execute(
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE c.relname = %s AND c.relnamespace = ("
        "SELECT relnamespace FROM pg_class WHERE oid = 'procrastinate_jobs'::regclass)",
        (LOCK_INDEX,),
    ).fetchone()
    if found is not None and found[0]:
        return
    name = sql.Identifier(LOCK_INDEX)
    if found is not None:
        conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(name))
    conn.execute(
        sql.SQL(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS {} ON procrastinate_jobs (lock) "
            "WHERE status IN ('todo', 'doing')"
        ).format(name)
    )


def _note_version(conn: psycopg.Connection[Any], version: str) -> None:
    # A comment on the jobs table: procrastinate keeps no version of its own.
    conn.execute(
        sql.SQL("COMMENT ON TABLE procrastinate_jobs IS {}").format(
            sql.Literal(_VERSION_NOTE + version)
        )
    )
