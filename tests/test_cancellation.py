"""A task cancelled while it stops a child task of its own ends cancelled: the child's
cancellation is swallowed, never the one aimed at the task itself (``crmcal.tasks``),
and a shared limit's slot renewal is stopped that way. A write to SQLite cancelled
in the middle of a statement leaves the database unlocked. Every state is reached
through events: nothing here waits for time to pass."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import shutil
import sqlite3
import threading
from pathlib import Path
from typing import Any, cast

import pytest
from sqlalchemy import event, text

from crmcal.db import Database
from crmcal.sync import limits
from crmcal.tasks import cancel_all_and_wait, cancel_and_wait

PATIENCE = 600  # seconds an awaited state may take on a busy machine: a hang guard, not a bound


class SlowToEnd:
    """A child that runs until cancelled, then takes until ``ended`` to end (a
    transaction rolled back, a connection closed)."""

    def __init__(self) -> None:
        self.running = asyncio.Event()
        self.ending = asyncio.Event()
        self.ended = asyncio.Event()

    async def run(self) -> None:
        self.running.set()
        try:
            await asyncio.Event().wait()
        finally:
            self.ending.set()
            await self.ended.wait()


async def test_the_child_s_own_cancellation_is_swallowed() -> None:
    child = SlowToEnd()
    task = asyncio.create_task(child.run())
    await asyncio.wait_for(child.running.wait(), PATIENCE)
    stopping = asyncio.create_task(cancel_and_wait(task))
    await asyncio.wait_for(child.ending.wait(), PATIENCE)
    assert not stopping.done()  # waits for the child's cleanup
    child.ended.set()
    await stopping  # no CancelledError: the child's was expected
    assert task.cancelled()


async def test_a_task_cancelled_while_its_child_ends_ends_cancelled() -> None:
    """Cancelled while it waits for the child it stopped, the task does not go on."""
    child = SlowToEnd()
    went_on: list[str] = []

    async def parent() -> None:
        task = asyncio.create_task(child.run())
        await child.running.wait()
        await cancel_and_wait(task)
        went_on.append("after the child")

    running = asyncio.create_task(parent())
    await asyncio.wait_for(child.ending.wait(), PATIENCE)
    running.cancel()  # handed on to the child, which is already ending
    child.ended.set()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert went_on == []


async def test_a_cancellation_the_child_swallows_is_raised_in_the_task() -> None:
    """A child that catches its cancellation and returns still leaves the request aimed
    at the task that awaited it: that one ends cancelled."""
    started, ending, may_end = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def swallowing() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            ending.set()
            while not may_end.is_set():
                # Swallowed: the request stays counted on the task that awaits this one.
                with contextlib.suppress(asyncio.CancelledError):
                    await may_end.wait()

    async def parent() -> str:
        task = asyncio.create_task(swallowing())
        await started.wait()
        await cancel_and_wait(task)
        return "went on"

    running = asyncio.create_task(parent())
    await asyncio.wait_for(ending.wait(), PATIENCE)
    running.cancel()
    may_end.set()
    with pytest.raises(asyncio.CancelledError):
        await running


async def test_a_child_s_failure_is_raised_once_all_children_ended() -> None:
    started = asyncio.Event()

    async def failing() -> None:
        try:
            started.set()
            await asyncio.Event().wait()
        finally:
            raise ValueError("cleanup failed")

    slow = SlowToEnd()
    first = asyncio.create_task(failing())
    second = asyncio.create_task(slow.run())
    await asyncio.wait_for(started.wait(), PATIENCE)
    await asyncio.wait_for(slow.running.wait(), PATIENCE)
    stopping = asyncio.create_task(cancel_all_and_wait([first, second]))
    await asyncio.wait_for(slow.ending.wait(), PATIENCE)
    assert not stopping.done()
    slow.ended.set()
    with pytest.raises(ValueError, match="cleanup failed"):
        await stopping
    assert second.cancelled()


async def test_a_slot_s_holder_cancelled_while_its_renewal_ends_ends_cancelled_and_gives_it_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A request holding a shared slot, cancelled as it stops the slot's renewal (whose
    transaction is still rolling back), ends cancelled, not as if it had finished; the
    slot is given back all the same."""
    renewal = SlowToEnd()
    given_back: list[int] = []
    limit = limits.Limit(cast(Database, None), "server:example.test", 2)

    async def renew(slot: int, ttl: dt.timedelta) -> None:
        await renewal.run()

    async def give_back(slot: int) -> None:
        given_back.append(slot)

    monkeypatch.setattr(limit, "_renew", renew)
    monkeypatch.setattr(limit, "give_back", give_back)
    went_on: list[str] = []

    async def request() -> None:
        async with limit.held(1, dt.timedelta(seconds=60)):
            await renewal.running.wait()
        went_on.append("after the slot")

    running = asyncio.create_task(request())
    await asyncio.wait_for(renewal.ending.wait(), PATIENCE)
    running.cancel()
    renewal.ended.set()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert (went_on, given_back) == ([], [1])


async def test_a_sqlite_write_cancelled_mid_statement_leaves_the_database_unlocked(
    tmp_path: Path,
) -> None:
    """A sync stopped while its write transaction runs a statement (its lease lost, its
    time up, the process shutting down): the transaction ends with it. The connection
    closed under the statement used to stay open in SQLite with its transaction, and
    the database write-locked, until a garbage collection: every other writer waited
    out the busy timeout and failed with "database is locked"."""
    path = tmp_path / "crmcal.db"
    db = Database(f"sqlite:///{path}")
    entered, leave = threading.Event(), threading.Event()

    def blocking() -> int:  # a statement still running when its task is cancelled
        entered.set()
        leave.wait()
        return 1

    @event.listens_for(db.engine.sync_engine, "connect")
    def _with_blocking(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.create_function("blocking", 0, blocking)

    try:
        async with db.write() as session:
            await session.execute(text("CREATE TABLE t (x INTEGER)"))

        async def work() -> None:
            async with db.write() as session:
                await session.execute(text("INSERT INTO t VALUES (1)"))
                await session.execute(text("SELECT blocking()"))

        writing = asyncio.create_task(work())
        await asyncio.to_thread(entered.wait)  # the SELECT runs, the write lock held
        writing.cancel()
        leave.set()
        with pytest.raises(asyncio.CancelledError):
            await writing
        # Another process takes the write lock, without waiting for it: it is free.
        other = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            assert other.execute("SELECT count(*) FROM t").fetchone() == (0,)
            other.execute("ROLLBACK")
        finally:
            other.close()
    finally:
        leave.set()
        await db.dispose()


async def test_a_sync_cancelled_while_it_gives_its_lease_back_ends_after_it(
    tmp_path: Path, sqlite_template: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sync cancelled (its process stopping), and cancelled again while it gives its
    lease back, still ends cancelled — but only once the lease is given back: whoever
    cancelled it and waits for it to end may close the database next. The shielded
    release used to raise at once and go on unawaited."""
    from crmcal.sync import runner
    from crmcal.sync.engine import Engine
    from tests.engine_world import World
    from tests.memory_provider import MemoryCalendar

    path = tmp_path / "crmcal.db"
    shutil.copy(sqlite_template, path)
    db = Database(f"sqlite:///{path}")
    running, releasing, may_release, released = (asyncio.Event() for _ in range(4))
    real_release = runner._release

    async def blocked_run(self: Engine, *args: Any, **kwargs: Any) -> Any:
        running.set()
        await asyncio.Event().wait()

    async def slow_release(*args: Any, **kwargs: Any) -> None:
        releasing.set()
        await may_release.wait()
        await real_release(*args, **kwargs)
        released.set()

    monkeypatch.setattr(Engine, "run", blocked_run)
    monkeypatch.setattr(runner, "_release", slow_release)
    try:
        world = await World(db, MemoryCalendar()).setup()
        syncing = asyncio.create_task(world.sync_via_runner())
        seen_at_end: list[bool] = []
        syncing.add_done_callback(lambda _: seen_at_end.append(released.is_set()))
        await asyncio.wait_for(running.wait(), PATIENCE)
        syncing.cancel()
        await asyncio.wait_for(releasing.wait(), PATIENCE)
        syncing.cancel()  # again, while the lease is given back
        may_release.set()
        with pytest.raises(asyncio.CancelledError):
            await syncing
        assert seen_at_end == [True], "ended before its lease was given back"
        await asyncio.wait_for(released.wait(), PATIENCE)
        async with db.read() as session:
            taken = await session.scalar(
                text("SELECT locked_by FROM connections WHERE id = :id"),
                {"id": world.connection_id},
            )
        assert taken is None
    finally:
        may_release.set()
        await asyncio.wait_for(released.wait(), PATIENCE)
        await db.dispose()
