"""The lease rules of a sync: taken over when expired (from any host), renewed while a sync
works, the work stopped when the lease cannot be kept or the sync runs too long, and every
run recorded; on both databases."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import functools
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from sqlalchemy import select, update

from crmcal.config import ConfigError, Settings
from crmcal.db import Database
from crmcal.jobs.scheduler import Scheduler
from crmcal.model import ChangeListing
from crmcal.sync import lease
from crmcal.sync.engine import SyncFailed
from crmcal.sync.report import SyncReport
from crmcal.sync.runner import Busy, run_sync
from crmcal.sync.tables import Connection, SyncRun
from tests.conftest import client_of
from tests.engine_world import VAULT, World
from tests.google_emulator import GoogleEmulator
from tests.memory_provider import MemoryCalendar, MemoryProvider
from tests.providers.harness import CalDAVHarness, CalDAVServer
from tests.served import HANG_GUARD

ELSEWHERE = "worker-7.other-host:4242"
PATIENCE = 600  # seconds an awaited state may take on a busy machine; never a bound on a pass


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def left_syncing(db: Database, connection_id: int, *, expires_in: float) -> None:
    """What a holder ``ELSEWHERE`` leaves when it vanishes mid-sync (or, with a lease in the
    future, what it looks like while it works)."""
    async with db.write() as session:
        await session.execute(
            update(Connection).where(Connection.id == connection_id).values(
                state="syncing", locked_by=f"{ELSEWHERE}/0a1b2c3d",
                locked_until=now() + dt.timedelta(seconds=expires_in),
                next_sync_at=now() + dt.timedelta(days=1))
        )  # fmt: skip
        session.add(SyncRun(connection_id=connection_id, process=ELSEWHERE, outcome="running",
                            started_at=now() - dt.timedelta(minutes=2), counts={}))  # fmt: skip


async def runs(db: Database, connection_id: int) -> list[SyncRun]:
    async with db.read() as session:
        query = select(SyncRun).where(SyncRun.connection_id == connection_id)
        return list(await session.scalars(query.order_by(SyncRun.id)))


async def connection(db: Database, connection_id: int) -> Connection:
    async with db.read() as session:
        found = await session.get(Connection, connection_id)
        assert found is not None
        return found


async def test_an_expired_lease_is_taken_over_whoever_held_it(world: World) -> None:
    await left_syncing(world.db, world.connection_id, expires_in=-1)
    expired_at = (await connection(world.db, world.connection_id)).locked_until
    await world.add_activity("After the crash")
    await world.sync_via_runner()
    first, second = await runs(world.db, world.connection_id)
    assert (first.process, first.outcome, first.ended_at) == (ELSEWHERE, "abandoned", expired_at)
    assert first.error == f"{ELSEWHERE} stopped without finishing"
    assert (second.process, second.outcome) == (lease.PROCESS, "ok")
    assert second.counts["created"] == 1
    assert first.ended_at is not None
    assert first.ended_at <= second.started_at
    conn = await connection(world.db, world.connection_id)
    assert (conn.state, conn.locked_by, conn.locked_until) == ("active", None, None)


async def test_a_live_lease_is_kept_even_when_its_pid_means_nothing_here(world: World) -> None:
    """Only expiry frees a lease: a pid that runs no process on this host may belong to a
    live holder on another machine with the same host name (containers)."""
    await left_syncing(world.db, world.connection_id, expires_in=60)
    async with world.db.write() as session:
        await session.execute(
            update(Connection).where(Connection.id == world.connection_id)
            .values(locked_by=f"{socket.gethostname()}:999999999/0a1b2c3d")
        )  # fmt: skip
    with pytest.raises(Busy, match="999999999"):
        await world.sync_via_runner()
    assert [r.outcome for r in await runs(world.db, world.connection_id)] == ["running"]


async def test_status_says_when_the_sync_holder_vanished(world: World, db_url: str) -> None:

    from crmcal.crm import users

    async with world.db.write() as session:
        owner = await users.user_by_email(session, "owner@crm.test")
        token = await users.issue_token(session, owner)
    await left_syncing(world.db, world.connection_id, expires_in=60)

    def status() -> dict[str, Any]:
        with client_of(Settings(database_url=db_url)) as c:
            answer = c.get(f"/api/v1/connections/{world.connection_id}/status",
                           headers={"Authorization": f"Bearer {token}"})  # fmt: skip
            listed = c.get(f"/api/v1/connections/{world.connection_id}",
                           headers={"Authorization": f"Bearer {token}"})  # fmt: skip
        assert answer.status_code == 200, answer.text
        assert answer.json()["state"] == listed.json()["state"]
        return answer.json()

    working = await asyncio.to_thread(status)
    assert (working["state"], working["last_error"]) == ("syncing", None)
    assert [(r["outcome"], r["process"]) for r in working["recent_syncs"]] == [
        ("running", ELSEWHERE)
    ]
    async with world.db.write() as session:
        await session.execute(
            update(Connection).where(Connection.id == world.connection_id)
            .values(locked_until=now() - dt.timedelta(seconds=1))
        )  # fmt: skip
    gone = await asyncio.to_thread(status)
    assert gone["state"] == "error"
    assert ELSEWHERE in gone["last_error"]
    assert "stopped without finishing" in gone["last_error"]

    await world.sync_via_runner()
    after = await asyncio.to_thread(status)
    assert (after["state"], after["last_error"]) == ("active", None)
    assert [(r["outcome"], r["process"]) for r in after["recent_syncs"]] == [
        ("ok", lease.PROCESS), ("abandoned", ELSEWHERE)
    ]  # fmt: skip
    assert after["recent_syncs"][0]["ended_at"] >= after["recent_syncs"][0]["started_at"]


class Hanging(MemoryProvider):
    """A calendar whose listing answers only once ``answer`` is set (never, unless so)."""

    def __init__(self, calendar: MemoryCalendar | None = None) -> None:
        super().__init__(calendar)
        self.waiting = asyncio.Event()
        self.answer = asyncio.Event()

    async def list_changes(
        self, calendar_id: str, cursor: str | None, *, with_contents: bool = False
    ) -> ChangeListing:
        self.waiting.set()
        await self.answer.wait()
        return await super().list_changes(calendar_id, cursor, with_contents=with_contents)


class HandClock(lease.Clock):
    """The lease keeper's clock, moved on by the test: renewals and cut-offs come when the
    test says the time has come, however slowly this machine runs today."""

    def __init__(self) -> None:
        self.now = 1000.0
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []
        self._slept = asyncio.Event()

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        woken = asyncio.get_running_loop().create_future()
        entry = (self.now + seconds, woken)
        self._sleepers.append(entry)
        self._slept.set()
        try:
            await woken
        finally:
            self._sleepers.remove(entry)

    async def asleep(self) -> None:
        """Until something waits for the clock (the keeper, between renewals)."""
        while not any(not woken.done() for _, woken in self._sleepers):
            self._slept.clear()
            await asyncio.wait_for(self._slept.wait(), PATIENCE)

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for when, woken in list(self._sleepers):
            if when <= self.now and not woken.done():
                woken.set_result(None)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> HandClock:
    hand = HandClock()
    monkeypatch.setattr(lease, "clock", hand)
    return hand


class Renewals:
    """The lease renewals, counted with what they answered."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.answers: list[bool] = []
        self._more = asyncio.Event()
        real = lease.renew

        async def counted(db: Database, held: lease.Lease) -> bool:
            kept = await real(db, held)
            self.answers.append(kept)
            self._more.set()
            return kept

        monkeypatch.setattr(lease, "renew", counted)

    async def reach(self, count: int) -> None:
        while len(self.answers) < count:
            self._more.clear()
            await asyncio.wait_for(self._more.wait(), PATIENCE)


@dataclasses.dataclass
class Stalled:
    """A sync under a lease of 60 s, waiting for its calendar's listing (``Hanging``)."""

    world: World
    provider: Hanging
    sync: asyncio.Task[SyncReport]
    locked_until: dt.datetime  # the lease's expiry as it was taken

    async def finish(self) -> None:
        """The calendar answers: the sync writes its one activity and its run is ok."""
        self.provider.answer.set()
        assert (await asyncio.wait_for(self.sync, PATIENCE)).created == 1
        assert [r.outcome for r in await runs(self.world.db, self.world.connection_id)] == ["ok"]

    async def stopped(self, reason: str) -> None:
        """The sync ends with ``reason``, its run recorded as interrupted."""
        with pytest.raises(SyncFailed, match=reason):
            await asyncio.wait_for(self.sync, PATIENCE)
        outcomes = [r.outcome for r in await runs(self.world.db, self.world.connection_id)]
        assert outcomes == ["interrupted"]


async def stalled_sync(world: World, activity: str | None = None) -> Stalled:
    """A sync of ``world`` (with ``activity`` made in the CRM first, for it to write)
    started and waiting for its calendar, which answers at ``Stalled.finish``."""
    if activity is not None:
        await world.add_activity(activity)
    provider = Hanging(world.calendar)
    settings = Settings(lease_seconds=60)
    sync = asyncio.create_task(
        run_sync(world.db, VAULT, settings, world.connection_id, provider=provider)
    )
    await asyncio.wait_for(provider.waiting.wait(), PATIENCE)
    locked_until = (await connection(world.db, world.connection_id)).locked_until
    assert locked_until is not None
    return Stalled(world, provider, sync, locked_until)


async def test_a_sync_whose_lease_is_taken_over_stops_and_leaves_the_new_holder_be(
    world: World, clock: HandClock
) -> None:
    stalled = await stalled_sync(world)
    async with world.db.write() as session:  # another process, after a long stall of ours
        await session.execute(
            update(Connection).where(Connection.id == world.connection_id)
            .values(locked_by=f"{ELSEWHERE}/99", locked_until=now() + dt.timedelta(minutes=5))
        )  # fmt: skip
    await clock.asleep()
    clock.advance(20)  # the next renewal is due: it finds the lease taken over
    await stalled.stopped("taken over")
    conn = await connection(world.db, world.connection_id)
    assert (conn.state, conn.locked_by) == ("syncing", f"{ELSEWHERE}/99")


async def test_a_sync_that_cannot_confirm_its_lease_stops_before_it_expires(
    world: World, monkeypatch: pytest.MonkeyPatch, clock: HandClock
) -> None:
    renewing: list[float] = []
    began = asyncio.Event()
    real_renew = lease.renew

    async def stuck(db: Database, held: lease.Lease) -> bool:
        renewing.append(clock.now)
        began.set()
        await asyncio.Event().wait()  # the database does not answer
        return await real_renew(db, held)

    monkeypatch.setattr(lease, "renew", stuck)
    stalled = await stalled_sync(world)
    taken = clock.now
    await clock.asleep()
    clock.advance(20)  # a third of the lease: the renewal starts, and hangs
    await asyncio.wait_for(began.wait(), PATIENCE)
    await clock.asleep()
    clock.advance(19.5)  # still short of two thirds: the work goes on
    await clock.asleep()
    assert not stalled.sync.done()
    clock.advance(0.5)  # two thirds: no confirmation, so it stops, a third before expiry
    await stalled.stopped("could not be renewed in time")
    assert renewing == [taken + 20]
    assert clock.now == taken + 40
    conn = await connection(world.db, world.connection_id)
    # Not the calendar's fault: due again at once, with no failure counted.
    assert (conn.state, conn.locked_by, conn.failures) == ("active", None, 0)
    assert conn.next_sync_at is not None
    assert conn.next_sync_at <= now()


@pytest.fixture
async def google_connection(
    world: World, google_emulator: GoogleEmulator
) -> AsyncIterator[tuple[World, Settings]]:
    email = f"lease-{world.connection_id}-{id(world)}@example.test"
    refresh = google_emulator.state.create_account(email)["refresh_token"]
    async with world.db.write() as session:
        await session.execute(
            update(Connection).where(Connection.id == world.connection_id).values(
                provider="google", account=email, calendar_id=email,
                credentials=VAULT.seal(refresh))
        )  # fmt: skip
    settings = Settings(google_api_url=google_emulator.url, google_oauth_url=google_emulator.url,
                        retry_backoff=0.01)  # fmt: skip
    try:
        yield world, settings
    finally:
        google_emulator.state.delays.clear()


async def test_a_slow_sync_keeps_its_lease_and_no_one_else_gets_it(
    world: World, clock: HandClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    renewals = Renewals(monkeypatch)
    stalled = await stalled_sync(world, "Slowly")
    until_before = stalled.locked_until
    # Seven thirds of the lease, more than two leases long, pass while the calendar is
    # silent: a renewal every third, each pushing the expiry on.
    for turn in range(1, 8):
        await clock.asleep()
        clock.advance(20)
        await renewals.reach(turn)
        assert renewals.answers == [True] * turn
        held_until = (await connection(world.db, world.connection_id)).locked_until
        assert held_until is not None
        assert held_until > until_before
        until_before = held_until
        # Another process tries all along and never gets it.
        assert await lease.take(world.db, world.connection_id, 60) is None
        assert not stalled.sync.done()
    await stalled.finish()
    assert await lease.take(world.db, world.connection_id, 60) is not None  # given back


async def test_a_keeper_woken_late_still_renews_a_lease_that_has_not_run_out(
    world: World, clock: HandClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    renewals = Renewals(monkeypatch)
    stalled = await stalled_sync(world, "Late")
    await clock.asleep()
    # The loop was held from a third of the lease to three quarters of it: the keeper
    # wakes past its cutoff (two thirds), with the lease still ours for 15 s.
    clock.advance(45)
    await renewals.reach(1)
    assert renewals.answers == [True]
    held_until = (await connection(world.db, world.connection_id)).locked_until
    assert held_until is not None
    assert held_until > stalled.locked_until
    assert not stalled.sync.done()
    await stalled.finish()


async def test_a_keeper_woken_close_to_expiry_stops_the_work_unrenewed(
    world: World, clock: HandClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    renewals = Renewals(monkeypatch)
    stalled = await stalled_sync(world)
    await clock.asleep()
    # Woken 10 s short of expiry (the late margin): too close to confirm a renewal and
    # still stop before the lease runs out, so the work stops at once.
    clock.advance(50)
    await stalled.stopped("could not be renewed in time")
    assert renewals.answers == []


async def test_a_renewal_that_failed_is_retried_soon_not_at_the_cutoff(
    world: World, clock: HandClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    tried: list[float] = []
    more = asyncio.Event()
    real_renew = lease.renew

    async def flaky(db: Database, held: lease.Lease) -> bool:
        tried.append(clock.now)
        more.set()
        if len(tried) == 1:
            raise OSError("connection reset")  # the database away for a moment
        return await real_renew(db, held)

    monkeypatch.setattr(lease, "renew", flaky)
    stalled = await stalled_sync(world, "Retried")
    taken = clock.now
    await clock.asleep()
    clock.advance(20)  # a third of the lease: the renewal fails
    await asyncio.wait_for(more.wait(), PATIENCE)
    more.clear()
    await clock.asleep()
    clock.advance(0.5)  # the retry's pause: it goes again now, not at the cutoff
    await asyncio.wait_for(more.wait(), PATIENCE)
    assert tried == [taken + 20, taken + 20.5]
    await stalled.finish()


async def test_a_calendar_that_never_answers_cannot_hold_the_lease_forever(
    google_connection: tuple[World, Settings], google_emulator: GoogleEmulator
) -> None:
    world, settings = google_connection
    await world.add_activity("Eventually")
    google_emulator.state.add_delay(8, 3)
    # The lease is long, so that only the time limit can stop the sync.
    limited = Settings(**{**settings.__dict__, "sync_max_seconds": 2})
    with pytest.raises(SyncFailed, match="ran longer than 2 s"):
        await run_sync(world.db, VAULT, limited, world.connection_id)
    conn = await connection(world.db, world.connection_id)
    assert (conn.state, conn.locked_by) == ("error", None)
    assert "ran longer than 2 s" in (conn.last_error or "")
    google_emulator.state.delays.clear()
    assert (await run_sync(world.db, VAULT, settings, world.connection_id)).created == 1
    assert [r.outcome for r in await runs(world.db, world.connection_id)] == ["error", "ok"]


async def test_the_scheduler_resumes_a_connection_its_holder_left_syncing(
    world: World, radicale: CalDAVServer
) -> None:
    calendar = await asyncio.to_thread(CalDAVHarness, radicale)
    try:
        async with world.db.write() as session:
            await session.execute(
                update(Connection).where(Connection.id == world.connection_id).values(
                    provider="caldav", account=radicale.url, username=radicale.username,
                    credentials=VAULT.seal(radicale.password), calendar_id=calendar.calendar_id)
            )  # fmt: skip
        await world.add_activity("Left behind")
        await left_syncing(world.db, world.connection_id, expires_in=0.5)
        # A lease as long as by default: the resumed sync keeps it however slow it is.
        settings = Settings(allow_private_networks=True)
        scheduler = Scheduler(world.db, VAULT, settings)
        await scheduler.start()
        try:

            async def resumed() -> bool:
                conn = await connection(world.db, world.connection_id)
                return conn.state == "active"

            deadline = asyncio.get_running_loop().time() + 600  # a hang guard, not a bound
            while not await resumed():
                assert asyncio.get_running_loop().time() < deadline, "never resumed"
                await asyncio.sleep(0.05)
        finally:
            await scheduler.stop()
        outcomes = [(r.process, r.outcome) for r in await runs(world.db, world.connection_id)]
        assert outcomes == [(ELSEWHERE, "abandoned"), (lease.PROCESS, "ok")]
        listed = await calendar.provider.list_changes(calendar.calendar_id, None)
        assert len(listed.changed) == 1
    finally:
        await calendar.close()


async def test_the_scheduler_stops_when_a_sync_swallows_its_cancellation(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sync whose cleanup swallows the cancellation returns as if done: the task that
    ran it goes back to waiting for the next connection. Stopping still ends it, so a
    server's shutdown never waits forever."""
    from crmcal.jobs import scheduler as scheduler_module

    started = asyncio.Event()

    async def swallowing_sync(*_args: Any, **_kwargs: Any) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return  # as a cleanup that awaits and suppresses would

    monkeypatch.setattr(scheduler_module, "run_sync", swallowing_sync)
    scheduler = Scheduler(world.db, VAULT, Settings(), concurrency=1)
    await scheduler.start()
    scheduler.request(world.connection_id)
    await asyncio.wait_for(started.wait(), HANG_GUARD)
    tasks = list(scheduler._tasks)
    stopping = asyncio.ensure_future(scheduler.stop())
    # Bounded only so that a regression fails instead of hanging the suite; not
    # cancelled meanwhile (a cancellation would reach the waiting task too).
    await asyncio.wait({stopping}, timeout=HANG_GUARD)
    try:
        assert stopping.done(), "stop() still waits for a task that swallowed its cancel"
        assert all(task.done() for task in tasks)
    finally:
        stopping.cancel()


class SlowRollback:
    """Renewals that start and get no answer; stopped, each takes until ``rolled_back``
    to end (its transaction rolled back): the keeper is still ending meanwhile."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.renewing = asyncio.Event()
        self.rolling_back = asyncio.Event()
        self.rolled_back = asyncio.Event()

        async def renew(db: Database, held: lease.Lease) -> bool:
            self.renewing.set()
            try:
                await asyncio.Event().wait()
            finally:
                self.rolling_back.set()
                await self.rolled_back.wait()
            return True

        monkeypatch.setattr(lease, "renew", renew)

    async def stopped_mid_renewal(self, clock: HandClock, provider: Hanging) -> None:
        """Until the sync's work has ended during a renewal: the sync waits for its
        keeper to end, and the keeper for the renewal's rollback."""
        await asyncio.wait_for(provider.waiting.wait(), PATIENCE)
        await clock.asleep()
        clock.advance(20)  # a third of the lease: a renewal starts
        await asyncio.wait_for(self.renewing.wait(), PATIENCE)
        provider.answer.set()  # the work ends: the keeper is stopped, mid-renewal
        await asyncio.wait_for(self.rolling_back.wait(), PATIENCE)


async def test_a_sync_cancelled_while_its_lease_keeper_ends_is_cancelled(
    world: World, clock: HandClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process stops just as a sync's work is over and its lease keeper ends: the
    sync ends cancelled (its run interrupted, the lease given back), instead of taking
    the cancellation for the keeper's and going on."""
    provider = Hanging(world.calendar)
    renewals = SlowRollback(monkeypatch)
    sync = asyncio.create_task(
        run_sync(world.db, VAULT, Settings(lease_seconds=60), world.connection_id,
                 provider=provider)
    )  # fmt: skip
    await renewals.stopped_mid_renewal(clock, provider)
    sync.cancel()
    renewals.rolled_back.set()
    with pytest.raises(asyncio.CancelledError):
        await sync
    assert [r.outcome for r in await runs(world.db, world.connection_id)] == ["interrupted"]
    conn = await connection(world.db, world.connection_id)
    assert (conn.state, conn.locked_by) == ("active", None)


class WatchedQueue(asyncio.Queue[int]):
    """The scheduler's queue, telling when a worker waits on it for the next connection."""

    def __init__(self) -> None:
        super().__init__()
        self.waited = asyncio.Event()

    async def get(self) -> int:
        self.waited.set()
        return await super().get()


@contextlib.asynccontextmanager
async def syncing_one(
    world: World, settings: Settings
) -> AsyncIterator[tuple[asyncio.Task[None], WatchedQueue]]:
    """A scheduler of one task, started on the world's connection: (that task, its
    watched queue); stopped on the way out."""
    scheduler = Scheduler(world.db, VAULT, settings, concurrency=1)
    queue = WatchedQueue()
    scheduler._queue = queue
    await scheduler.start()
    try:
        worker = scheduler._tasks[-1]
        scheduler.request(world.connection_id)
        yield worker, queue
    finally:
        await scheduler.stop()


async def ends_when_cancelled(
    worker: asyncio.Task[None], queue: WatchedQueue, then: Callable[[], None] | None = None
) -> bool:
    """Cancel a scheduler task (then run ``then``): whether it ended, rather than going
    back to wait on its queue for the next connection after its sync."""
    queue.waited.clear()
    worker.cancel()
    if then is not None:
        then()
    back = asyncio.ensure_future(queue.waited.wait())
    await asyncio.wait({worker, back}, return_when=asyncio.FIRST_COMPLETED)
    back.cancel()
    return worker.cancelled()


async def test_a_scheduler_task_cancelled_while_a_lease_keeper_ends_ends_at_once(
    world: World, clock: HandClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one cancellation a server's shutdown sends ends a scheduler task whose sync is
    stopping its lease keeper: the task does not go back to wait for a connection."""
    from crmcal.jobs import scheduler as scheduler_module

    provider = Hanging(world.calendar)
    renewals = SlowRollback(monkeypatch)
    monkeypatch.setattr(scheduler_module, "run_sync",
                        functools.partial(run_sync, provider=provider))  # fmt: skip
    async with syncing_one(world, Settings(lease_seconds=60)) as (worker, queue):
        await renewals.stopped_mid_renewal(clock, provider)
        assert await ends_when_cancelled(worker, queue, then=renewals.rolled_back.set)


async def test_a_scheduler_task_whose_sync_swallowed_its_cancellation_takes_no_more(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sync that returns as if done though its task was cancelled meanwhile: the task
    ends there, at the first cancellation, instead of waiting for the next connection."""
    from crmcal.jobs import scheduler as scheduler_module

    started = asyncio.Event()

    async def swallowing_sync(*_args: Any, **_kwargs: Any) -> None:
        started.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()  # as a cleanup that awaits and suppresses would

    monkeypatch.setattr(scheduler_module, "run_sync", swallowing_sync)
    async with syncing_one(world, Settings()) as (worker, queue):
        await asyncio.wait_for(started.wait(), PATIENCE)
        assert await ends_when_cancelled(worker, queue)


def test_lease_settings_follow_the_poll_interval_and_refuse_nonsense() -> None:
    assert Settings.from_env({}).lease_seconds == 60
    assert Settings.from_env({"CRMCAL_POLL_SECONDS": "20"}).lease_seconds == 20
    assert Settings.from_env({"CRMCAL_LEASE_SECONDS": "2.5"}).lease_seconds == 2.5
    assert Settings.from_env({"CRMCAL_SYNC_MAX_SECONDS": "600"}).sync_max_seconds == 600
    for name, value in [("CRMCAL_LEASE_SECONDS", "0"), ("CRMCAL_LEASE_SECONDS", "soon"),
                        ("CRMCAL_SYNC_MAX_SECONDS", "nan")]:  # fmt: skip
        with pytest.raises(ConfigError, match=name):
            Settings.from_env({name: value})


class StoppedWhileListing(MemoryProvider):
    """The user stops the connection while the calendar is being listed."""

    def __init__(self, db: Database, connection_id: int, calendar: MemoryCalendar) -> None:
        super().__init__(calendar)
        self.db, self.connection_id = db, connection_id

    async def list_changes(
        self, calendar_id: str, cursor: str | None, *, with_contents: bool = False
    ) -> ChangeListing:
        async with self.db.write() as session:
            await session.execute(
                update(Connection).where(Connection.id == self.connection_id)
                .values(state="stopped", next_sync_at=None)
            )  # fmt: skip
        return await super().list_changes(calendar_id, cursor, with_contents=with_contents)


async def test_a_sync_with_nothing_new_stopped_meanwhile_frees_the_lease_and_stays_stopped(
    world: World,
) -> None:
    """The release of a sync with nothing new is one statement on PostgreSQL, made only
    while the connection still syncs: stopped meanwhile, the lease is freed and the run
    closed, the state and the positions left as the stop left them."""
    await world.sync_via_runner()
    await world.sync_via_runner()
    before = await connection(world.db, world.connection_id)
    provider = StoppedWhileListing(world.db, world.connection_id, world.calendar)
    await run_sync(world.db, VAULT, Settings(), world.connection_id, provider=provider)
    after = await connection(world.db, world.connection_id)
    assert (after.state, after.locked_by, after.locked_until) == ("stopped", None, None)
    assert (after.next_sync_at, after.last_sync_at) == (None, before.last_sync_at)
    assert [r.outcome for r in await runs(world.db, world.connection_id)] == ["ok"] * 3
