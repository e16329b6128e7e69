"""The embedded worker: when each connection syncs (F13).

* A CRM change to an activity whose owner has an active connection starts that
  connection's sync at once: the change feed is watched a few times a second
  (cheap: one indexed max() query), so changes made by any process count.
* Every connection is also polled: its ``next_sync_at`` comes round every
  CRMCAL_POLL_SECONDS, sooner after an error (with back-off).
* A connection left in ``syncing`` by a holder that vanished (killed, crashed,
  cut off from the database) is due as soon as its lease expires, whoever held it.
* One sync per connection at a time (the runner's lease); a request arriving
  while one runs makes it run once more afterwards, also when another process
  holds that sync (the request is asked again until the lease is free). Different connections sync
  concurrently, up to ``concurrency``.
"""

from __future__ import annotations

import asyncio
import io
import logging

from sqlalchemy import select

from crmcal import db_errors
from crmcal.config import Settings
from crmcal.crm import changefeed
from crmcal.crm.tables import utcnow
from crmcal.db import Database
from crmcal.sync.engine import SyncFailed
from crmcal.sync.runner import Busy, due, run_sync
from crmcal.sync.states import ConnectionState
from crmcal.sync.tables import Connection
from crmcal.vault import Vault

log = logging.getLogger(__name__)

FEED_INTERVAL = 0.2
DUE_INTERVAL = 1.0
# Pause before asking again for a connection whose sync another process holds.
BUSY_RETRY = 1.0
# Seconds between cancellations of a scheduler task that has not ended on stop.
STOP_RECANCEL = 1.0


async def changed_connections(db: Database, seen: int) -> tuple[list[int], int]:
    """The active connections of owners whose activities changed (not by a sync) after
    change-feed position ``seen``, and the position read up to."""
    async with db.read() as session:
        head = await changefeed.latest_seq(session)
        if head <= seen:
            return [], seen
        owners: set[int] = set()
        cursor = seen
        while cursor < head:
            rows = await changefeed.read_changes(session, after_seq=cursor)
            if not rows:
                break
            owners.update(r.owner_id for r in rows if not r.origin.startswith("sync:"))
            cursor = rows[-1].seq
        if not owners:
            return [], cursor
        # A connection syncing now counts: the change may have come after its read.
        ids = await session.scalars(
            select(Connection.id).where(
                Connection.user_id.in_(owners),
                Connection.state.in_((ConnectionState.ACTIVE, ConnectionState.SYNCING)),
            )
        )
        return list(ids), cursor


class Scheduler:
    def __init__(
        self, db: Database, vault: Vault, settings: Settings, *, concurrency: int = 4
    ) -> None:
        self.db, self.vault, self.settings = db, vault, settings
        self.concurrency = concurrency
        self._queue: asyncio.Queue[int] = asyncio.Queue()
        self._queued: set[int] = set()
        self._running: set[int] = set()
        self._again: set[int] = set()
        self._tasks: list[asyncio.Task[None]] = []

    def request(self, connection_id: int) -> None:
        """Sync this connection soon (once, however often it is asked)."""
        if connection_id in self._running:
            self._again.add(connection_id)
        elif connection_id not in self._queued:
            self._queued.add(connection_id)
            self._queue.put_nowait(connection_id)

    async def start(self) -> None:
        async with self.db.read() as session:
            head = await changefeed.latest_seq(session)
        self._tasks = [
            asyncio.create_task(self._watch_feed(head)),
            asyncio.create_task(self._watch_due()),
            *(asyncio.create_task(self._work()) for _ in range(self.concurrency)),
        ]

    async def stop(self) -> None:
        """Cancel the scheduler's tasks and wait until each has ended. A task whose
        cancellation a sync swallowed (its cleanup awaiting something of its own when
        cancelled) would otherwise wait for its next connection forever, and the server
        with it: it is cancelled again until it ends."""
        pending = list(self._tasks)
        while pending:
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=STOP_RECANCEL)
            pending = [task for task in pending if not task.done()]
            for task in pending:
                log.warning("a scheduler task did not end when cancelled; cancelling it "
                            "again. It waits in:\n%s", _stack(task))  # fmt: skip
        for task in self._tasks:
            if not task.cancelled() and task.exception() is not None:
                log.error("scheduler task ended with an error", exc_info=task.exception())
        self._tasks = []

    async def _watch_feed(self, seen: int) -> None:
        away = _Away("reading the change feed")
        while True:
            try:
                seen = await self._feed_once(seen)
                away.over()
            except Exception as exc:
                away.failed(exc)
            await asyncio.sleep(FEED_INTERVAL)

    async def _feed_once(self, seen: int) -> int:
        ids, cursor = await changed_connections(self.db, seen)
        for connection_id in ids:
            self.request(connection_id)
        return cursor

    async def _watch_due(self) -> None:
        away = _Away("looking for due connections")
        while True:
            try:
                async with self.db.read() as session:
                    ids = await session.scalars(select(Connection.id).where(due(utcnow())))
                    for connection_id in list(ids):
                        self.request(connection_id)
                away.over()
            except Exception as exc:
                away.failed(exc)
            await asyncio.sleep(DUE_INTERVAL)

    async def _work(self) -> None:
        this = asyncio.current_task()
        while True:
            if this is not None and this.cancelling():
                # Asked to stop, and the CancelledError lost on the way (a cleanup in
                # the sync took it for a child's): never take the next connection.
                raise asyncio.CancelledError
            connection_id = await self._queue.get()
            self._queued.discard(connection_id)
            self._running.add(connection_id)
            try:
                await run_sync(self.db, self.vault, self.settings, connection_id, wait=5)
            except Busy as exc:
                # Another process (an API call, a CLI run, a second server) holds the
                # sync and may have read the CRM before the change that asked for this
                # one: ask again until that sync is over, not at the next poll.
                log.info("sync of connection %s: %s; asking again", connection_id, exc)
                asyncio.get_running_loop().call_later(BUSY_RETRY, self.request, connection_id)
            except SyncFailed as exc:
                log.info("sync of connection %s: %s", connection_id, exc)
            except Exception as exc:
                found = db_errors.transient(exc)
                if found is None:
                    log.exception("sync of connection %s failed", connection_id)
                else:
                    # The database's state, recorded by the runner as far as it could:
                    # the sync is due again, so a traceback would tell nothing. The
                    # error's own text may name the server and its user: only its class.
                    log.warning("sync of connection %s stopped, due again: %s (%s)",
                                connection_id, found.meaning, exc.__class__.__name__)  # fmt: skip
            finally:
                self._running.discard(connection_id)
                if connection_id in self._again:
                    self._again.discard(connection_id)
                    self.request(connection_id)


class _Away:
    """The log of a watcher that asks the database several times a second: a database
    out of reach is one warning line when it goes (no traceback, no error text, which
    may name the server and its user) and one when it is back, not a traceback per try;
    any other error keeps its traceback."""

    def __init__(self, doing: str) -> None:
        self.doing = doing
        self.away = False

    def failed(self, exc: Exception) -> None:
        found = db_errors.transient(exc)
        if found is None:
            log.exception("%s failed; retrying", self.doing)
        elif not self.away:
            self.away = True
            log.warning("%s failed; retrying: %s (%s)", self.doing, found.meaning,
                        exc.__class__.__name__)  # fmt: skip

    def over(self) -> None:
        if self.away:
            self.away = False
            log.info("%s works again", self.doing)


def _stack(task: asyncio.Task[None]) -> str:
    """Where ``task`` waits, for the log."""
    out = io.StringIO()
    task.print_stack(file=out)
    return out.getvalue()
