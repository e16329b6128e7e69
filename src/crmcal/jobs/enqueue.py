"""The web side of the distributed queue: sync requests become queued jobs.

With a PostgreSQL database, ``crmcal serve`` runs no syncs of its own (unless
``--with-worker``): the API, the webhooks and the change-feed watcher ask the
``Enqueuer`` instead of the embedded scheduler. ``request`` answers at once and
queues in the background, coalescing repeats of a connection that is still
waiting to be queued; ``enqueue`` (the webhooks) waits until the job is stored.
"""

from __future__ import annotations

import asyncio
import logging

import procrastinate

from crmcal import tasks
from crmcal.crm import changefeed
from crmcal.db import Database
from crmcal.jobs.queue import QueueStatistics, defer_sync
from crmcal.jobs.scheduler import FEED_INTERVAL, changed_connections

log = logging.getLogger(__name__)


class Enqueuer:
    def __init__(self, db: Database, app: procrastinate.App) -> None:
        self.db, self.app = db, app
        self._pending: set[int] = set()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        # A CRM import can touch thousands of owners: their syncs count towards an
        # ANALYZE of the queue's table, as the workers' bulk enqueues do.
        self.statistics = QueueStatistics(app)

    def request(self, connection_id: int) -> None:
        """Queue a sync of this connection soon (once, however often it is asked)."""
        self._pending.add(connection_id)
        self._wake.set()

    async def enqueue(self, connection_id: int) -> bool:
        """Queue a sync now, ahead of routine ones; False when one is already waiting."""
        return await defer_sync(self.app, connection_id, urgent=True)

    async def start(self) -> None:
        async with self.db.read() as session:
            head = await changefeed.latest_seq(session)
        self._tasks = [
            asyncio.create_task(self._flush_forever()),
            asyncio.create_task(self._watch_feed(head)),
        ]

    async def stop(self) -> None:
        # A cancellation of stop() itself arriving meanwhile is raised, not swallowed.
        await tasks.cancel_all_and_wait(self._tasks)
        self._tasks = []
        await self._flush()  # what was asked for before the stop still gets queued

    async def _flush(self) -> None:
        queued = 0
        while self._pending:
            connection_id = self._pending.pop()
            try:
                # Asked for by an edit or a user: ahead of polling.
                queued += await defer_sync(self.app, connection_id, urgent=True)
            except Exception:
                log.exception("queueing a sync of connection %s failed", connection_id)
        if queued:
            await self.statistics.queued(queued)

    async def _flush_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._flush()

    async def _watch_feed(self, seen: int) -> None:
        while True:
            try:
                ids, seen = await changed_connections(self.db, seen)
                for connection_id in ids:
                    self.request(connection_id)
            except Exception:
                log.exception("reading the change feed failed; retrying")
            await asyncio.sleep(FEED_INTERVAL)
