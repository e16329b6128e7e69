"""The embedded scheduler's log when the database is out of reach: one warning line with
the reason, no traceback and no error text (which may name the server and its user)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from crmcal import db_errors
from crmcal.config import Settings
from crmcal.db import Database
from crmcal.jobs import scheduler as scheduler_module
from crmcal.jobs.scheduler import Scheduler
from crmcal.model import ChangeListing
from crmcal.sync.runner import run_sync
from crmcal.sync.tables import Connection
from tests.engine_world import VAULT, World
from tests.memory_provider import MemoryCalendar, MemoryProvider

PATIENCE = 600  # seconds an awaited state may take on a busy machine: a hang guard, not a bound
SECRET = "host=db.internal user=crmcal password=hunter2"


def database_away() -> sa.exc.OperationalError:
    """What a statement meets when the server shuts down under it; the driver's text
    names the server and the user, as libpq's may."""
    return sa.exc.OperationalError("SELECT 1", {}, psycopg.errors.AdminShutdown(SECRET))


class AwayWhenListing(MemoryProvider):
    """A calendar whose listing meets the database gone (the sync's next statement)."""

    def __init__(self, calendar: MemoryCalendar) -> None:
        super().__init__(calendar)
        self.listed = 0

    async def list_changes(
        self, calendar_id: str, cursor: str | None, *, with_contents: bool = False
    ) -> ChangeListing:
        self.listed += 1
        raise database_away()


async def until(condition: Any) -> None:
    deadline = asyncio.get_running_loop().time() + PATIENCE
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "never happened"
        await asyncio.sleep(0.01)


def logged(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == scheduler_module.__name__]


async def test_a_sync_that_finds_the_database_away_logs_one_warning_line(
    world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    assert db_errors.transient(database_away()) == db_errors.CONNECTION_LOST
    provider = AwayWhenListing(world.calendar)

    async def sync(*args: Any, **kwargs: Any) -> Any:
        return await run_sync(*args, **{**kwargs, "provider": provider})

    monkeypatch.setattr(scheduler_module, "run_sync", sync)
    caplog.set_level(logging.INFO)
    scheduler = Scheduler(world.db, VAULT, Settings(), concurrency=1)
    await scheduler.start()
    try:
        scheduler.request(world.connection_id)
        await until(lambda: any(r.levelno >= logging.WARNING for r in logged(caplog)))
    finally:
        await scheduler.stop()
    records = [r for r in logged(caplog) if r.levelno >= logging.WARNING]
    # One line per sync that met it (the poll may have started another meanwhile).
    assert [(r.levelname, r.exc_info) for r in records] == [("WARNING", None)] * len(records)
    message = records[0].getMessage()
    assert f"sync of connection {world.connection_id}" in message
    assert db_errors.CONNECTION_LOST.meaning in message
    assert "\n" not in message
    assert all("hunter2" not in r.getMessage() for r in caplog.records)
    # The runner recorded the interruption: no failure counted against the connection.
    assert provider.listed >= 1
    async with world.db.read() as session:
        conn = await session.get(Connection, world.connection_id)
        assert conn is not None
        assert (conn.state, conn.failures) == ("active", 0)


async def test_watchers_warn_once_while_the_database_is_away(
    world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    tries = 0

    async def changed_connections(db: Database, seen: int) -> tuple[list[int], int]:
        nonlocal tries
        tries += 1
        if tries <= 3:
            raise database_away()
        return [], seen

    monkeypatch.setattr(scheduler_module, "changed_connections", changed_connections)
    monkeypatch.setattr(scheduler_module, "FEED_INTERVAL", 0)
    caplog.set_level(logging.INFO)
    scheduler = Scheduler(world.db, VAULT, Settings(), concurrency=1)
    await scheduler.start()
    try:
        await until(lambda: any("works again" in r.getMessage() for r in logged(caplog)))
    finally:
        await scheduler.stop()
    feed = [r for r in logged(caplog) if "change feed" in r.getMessage()]
    assert [(r.levelname, r.exc_info) for r in feed] == [("WARNING", None), ("INFO", None)]
    assert db_errors.CONNECTION_LOST.meaning in feed[0].getMessage()
    assert all("hunter2" not in r.getMessage() for r in caplog.records)
