"""Provider limits shared by every process through PostgreSQL: Graph's four requests per
mailbox hold across workers, and a throttled account slows down alone."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import types
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from crmcal.crm.tables import utcnow
from crmcal.db import Database
from crmcal.providers import api_client, google_oauth, microsoft_oauth
from crmcal.providers.google import GoogleProvider
from crmcal.providers.microsoft import MicrosoftProvider
from crmcal.sync import limits
from crmcal.sync.limits import SharedLimits
from crmcal.tls import tls
from tests.conftest import recorded_sleeps
from tests.fault_proxy import fault_proxy
from tests.google_emulator import GoogleEmulator, GoogleHarness
from tests.microsoft_emulator import MicrosoftEmulator, MicrosoftHarness
from tests.providers.harness import Foreign
from tests.queue_world import query, queue_db  # noqa: F401

pytestmark = pytest.mark.postgres
PATIENCE = 600  # seconds a call may go without a step on a busy machine: a hang guard


class Process:
    """What one worker process has: its own engine, its own shared-limit handles."""

    def __init__(self, database_url: str, **limits: Any) -> None:
        self.db = Database(database_url)
        self.limits = SharedLimits(self.db, **limits)

    def provider(self, emulator: MicrosoftEmulator, harness: MicrosoftHarness) -> MicrosoftProvider:
        tokens = microsoft_oauth.service(emulator.url).tokens(harness.refresh_token)
        shared = self.limits.for_account("microsoft", harness.email)
        return MicrosoftProvider(tokens, api_url=emulator.url, backoff=0.01, shared=shared)


class LimitsClock:
    """The limits' clock (``limits.utcnow``) and pauses (their ``asyncio.sleep``), held by
    the test: a pause (for a quota's turn, a free slot, a hold to end) ends only when a
    window of the quota (a minute) passes, which ``run`` makes happen only when every
    call still going is paused. So a window holds what the code let through in it,
    however slowly the machine runs the calls."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.offset = dt.timedelta()
        self.passed: list[float] = []  # when (time.time()) each window passed
        self._paused: list[asyncio.Future[None]] = []
        self._more = asyncio.Event()
        # The limits' timers (a running request's renewal), due on this clock.
        self.timers: list[tuple[dt.datetime, asyncio.TimerHandle, Callable[[], None]]] = []
        monkeypatch.setattr(limits, "utcnow", self.now)
        monkeypatch.setattr(limits, "call_later", self.call_later)
        held = types.ModuleType("asyncio")
        vars(held).update(vars(asyncio))
        held.sleep = self.pause  # type: ignore[attr-defined]
        monkeypatch.setattr(limits, "asyncio", held)

    def now(self) -> dt.datetime:
        return utcnow() + self.offset

    async def pause(self, seconds: float, result: Any = None) -> Any:
        if seconds <= 0:
            return await asyncio.sleep(0, result)
        woken = asyncio.get_running_loop().create_future()
        self._paused.append(woken)
        self._more.set()
        try:
            await woken
        finally:
            if woken in self._paused:
                self._paused.remove(woken)
        return result

    async def until_paused(self, *calls: asyncio.Task[Any]) -> None:
        """Until ``calls`` are all paused (none may end meanwhile)."""
        while len(self._paused) < len(calls):
            self._more.clear()
            more = asyncio.ensure_future(self._more.wait())
            await asyncio.wait([more, *calls], timeout=PATIENCE, return_when="FIRST_COMPLETED")
            more.cancel()
            assert not any(call.done() for call in calls), "went on without a pause"

    def call_later(self, seconds: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
        loop = asyncio.get_running_loop()
        handle = asyncio.TimerHandle(loop.time() + seconds, callback, (), loop)
        self.timers.append((self.now() + dt.timedelta(seconds=seconds), handle, callback))
        self._more.set()
        return handle

    def armed(self) -> int:
        """The limits' timers still to fire."""
        return sum(1 for _, handle, _ in self.timers if not handle.cancelled())

    async def until_armed(self, count: int) -> None:
        """Until ``count`` of the limits' timers are waiting to fire."""
        while self.armed() < count:
            self._more.clear()
            await asyncio.wait_for(self._more.wait(), PATIENCE)

    def pass_window(self) -> None:
        self.passed.append(time.time())
        self.offset += WINDOW
        paused, self._paused = self._paused, []
        for woken in paused:
            woken.set_result(None)
        due = [timer for timer in self.timers if timer[0] <= self.now()]
        self.timers = [timer for timer in self.timers if timer[0] > self.now()]
        for _, handle, callback in due:
            if not handle.cancelled():
                callback()

    async def run(self, *calls: Awaitable[Any]) -> list[Any]:
        """The calls at once, a window passing whenever all those still going pause."""
        tasks = [asyncio.ensure_future(call) for call in calls]
        try:
            while going := [task for task in tasks if not task.done()]:
                if len(self._paused) >= len(going):
                    self.pass_window()
                    continue
                self._more.clear()
                more = asyncio.ensure_future(self._more.wait())
                stepped, _ = await asyncio.wait(
                    [*going, more], timeout=PATIENCE, return_when="FIRST_COMPLETED"
                )
                more.cancel()
                assert stepped, "no call went on"
            return [task.result() for task in tasks]
        finally:
            for task in tasks:
                task.cancel()

    def on_clock(self, arrival: float) -> float:
        """A moment of time.time() on the limits' clock: a window on for each passed."""
        passed = sum(1 for moment in self.passed if moment <= arrival)
        return arrival + passed * WINDOW.total_seconds()


async def _sixteen_events(mailbox: MicrosoftHarness) -> list[str]:
    """Events e0..e15 made in the mailbox (ids in that order)."""
    # On the hour, so the hour's end is always after the start.
    start = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).replace(minute=0, second=0)
    ids = []
    for n in range(16):
        body = {"subject": f"e{n}", "start": {"dateTime": start.strftime("%Y-%m-%dT%H:%M:%S"),
                "timeZone": "UTC"}, "end": {"dateTime": start.strftime("%Y-%m-%dT%H:59:00"),
                "timeZone": "UTC"}}  # fmt: skip
        ids.append((await mailbox.api("POST", mailbox._events(), json=body))["id"])
    return ids


@pytest.fixture
async def admin(microsoft_emulator: MicrosoftEmulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        verify=tls(), base_url=microsoft_emulator.url, timeout=120
    ) as client:
        # The first answer loads the models that check it (seconds): not inside a test's
        # client timeout.
        token = await client.post("/_emulator/accounts", json={"email": "warm@example.test"})
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        await client.get("/v1.0/me/calendar", headers=headers)
        yield client
        await client.post("/_emulator/faults", json={"clear": True})
        await client.post("/_emulator/settings", json={"mailbox_concurrency": None})


async def test_two_processes_keep_to_four_requests_per_mailbox(
    queue_db: str,  # noqa: F811
    microsoft_emulator: MicrosoftEmulator,
    admin: httpx.AsyncClient,
) -> None:
    mailbox = await MicrosoftHarness.open(microsoft_emulator)
    ids = await _sixteen_events(mailbox)
    workers = [Process(queue_db), Process(queue_db)]
    providers = [w.provider(microsoft_emulator, mailbox) for w in workers]
    try:
        for provider in providers:  # tokens first: only the calls below are slowed
            await provider.list_calendars()
        await admin.post("/_emulator/settings", json={"mailbox_concurrency": 4})
        # Slow calls, so that every one each provider allows itself is in flight at once.
        await admin.post("/_emulator/faults", json={"delay": 0.3, "count": 64})
        found = await asyncio.gather(
            *(p.fetch(mailbox.calendar_id, ids[n::2]) for n, p in enumerate(providers))
        )
        assert sorted(r.event.summary or "" for refs in found for r in refs if r.event) == sorted(
            f"e{n}" for n in range(16)
        )
        peak = (await admin.get("/_emulator/concurrency")).json()["peak"][mailbox.email]
        assert 2 <= peak <= 4, f"{peak} requests in flight at once against one mailbox"
        # Every slot of the mailbox given back before ``fetch`` returned (nothing defers
        # it here). Its own key's rows only: the session's database holds other tests'
        # rows too, among them quota turns, which stay held for their window by design.
        limit = workers[0].limits.for_account("microsoft", mailbox.email)
        assert limit is not None
        assert query(queue_db, "SELECT count(*), count(holder) FROM provider_slots "
                     "WHERE key = %s", limit.key) == [(4, 0)]  # fmt: skip
    finally:
        for provider in providers:
            await provider.close()
        for worker in workers:
            await worker.db.dispose()
        await mailbox.close()


async def test_batches_of_one_process_keep_to_four_requests_per_mailbox(
    microsoft_emulator: MicrosoftEmulator, admin: httpx.AsyncClient
) -> None:
    """Graph runs a batch's requests four at a time against the mailbox: two batches
    sent at once by one process (no shared limit) must not make eight."""
    mailbox = await MicrosoftHarness.open(microsoft_emulator)
    ids = await _sixteen_events(mailbox)
    tokens = microsoft_oauth.service(microsoft_emulator.url).tokens(mailbox.refresh_token)
    provider = MicrosoftProvider(tokens, api_url=microsoft_emulator.url, backoff=0.01)
    try:
        await provider.list_calendars()  # the token first: only the calls below are slowed
        await admin.post("/_emulator/settings", json={"mailbox_concurrency": 4})
        await admin.post("/_emulator/faults", json={"delay": 0.3, "count": 64})
        found = await asyncio.gather(
            *(provider.fetch(mailbox.calendar_id, ids[n::2]) for n in range(2))
        )
        assert sorted(r.event.summary or "" for refs in found for r in refs if r.event) == sorted(
            f"e{n}" for n in range(16)
        )
        peak = (await admin.get("/_emulator/concurrency")).json()["peak"][mailbox.email]
        assert 2 <= peak <= 4, f"{peak} requests in flight at once against one mailbox"
    finally:
        await provider.close()


async def test_a_throttled_account_slows_down_in_every_process_and_alone(
    queue_db: str,  # noqa: F811
    microsoft_emulator: MicrosoftEmulator,
    admin: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = LimitsClock(monkeypatch)
    backoffs = recorded_sleeps(monkeypatch, api_client)
    slow = await MicrosoftHarness.open(microsoft_emulator)
    other = await MicrosoftHarness.open(microsoft_emulator)
    first, second = Process(queue_db), Process(queue_db)
    throttled = first.provider(microsoft_emulator, slow)
    same_account = second.provider(microsoft_emulator, slow)
    other_account = second.provider(microsoft_emulator, other)
    providers = (throttled, same_account, other_account)
    try:
        for provider in providers:
            await provider.list_calendars()
        await admin.post("/_emulator/faults", json={"status": 429, "count": 1, "retry_after": 15})
        # Answered 429: this process waits, and so does every other for that account.
        throttling = asyncio.create_task(throttled.list_calendars())
        held = await _hold_recorded(queue_db)
        assert [key for key, _ in held] == [f"microsoft:{slow.email}"]
        finished: list[str] = []

        async def call(name: str, provider: MicrosoftProvider) -> None:
            await provider.list_calendars()
            finished.append(name)

        waiting = asyncio.create_task(call("same account", same_account))
        # The throttled call (its backoff of 15 s asked for and taken at once) and the
        # same account's call in the other process wait for the hold to end ...
        await clock.until_paused(throttling, waiting)
        assert backoffs == [15.0]
        # ... while the other account's call goes through ...
        await call("other account", other_account)
        assert not waiting.done()
        assert not throttling.done()
        clock.pass_window()  # ... until the hold's 15 s are over: then they go on.
        await asyncio.wait_for(waiting, PATIENCE)
        await asyncio.wait_for(throttling, PATIENCE)
        assert finished == ["other account", "same account"]
        assert clock.now() >= held[0][1].replace(tzinfo=dt.UTC)
    finally:
        for provider in providers:
            await provider.close()
        for process in (first, second):
            await process.db.dispose()
        for harness in (slow, other):
            await harness.close()


async def _hold_recorded(database_url: str) -> list[tuple[str, dt.datetime]]:
    deadline = asyncio.get_running_loop().time() + 600  # a hang guard, not a bound
    while not (held := query(database_url, "SELECT key, until FROM provider_holds")):
        assert asyncio.get_running_loop().time() < deadline, "no hold recorded"
        await asyncio.sleep(0.05)
    return held


# --- Google's per-project quota, held by every process together -------------------------

QUOTA, WINDOW = 4, limits.QUOTA_WINDOW  # a minute, as Google counts


@pytest.mark.parametrize("kept", [False, True], ids=["given-back-at-once", "kept-for-release"])
async def test_two_processes_together_keep_to_the_google_project_quota(
    queue_db: str,  # noqa: F811
    google_emulator: GoogleEmulator,
    kept: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two processes, each syncing its own user's account of one Google project, send no
    more than the project's quota in any window, as the service sees their requests
    arrive; the calls inside a batch request count one each. ``kept``: each call is made
    as a sync makes it, its slot and turn kept after the answer and given back with the
    sync's end (the release), not at once."""

    async def as_sync(call: Awaitable[Any]) -> Any:
        if not kept:
            return await call
        deferred = limits.GiveBackLater()
        restore = limits.later.set(deferred)
        try:
            return await call
        finally:
            limits.later.reset(restore)
            await limits.give_back_all(deferred.take_all())

    project = f"project-{uuid.uuid4().hex[:8]}"
    users = [await GoogleHarness.open(google_emulator) for _ in range(2)]
    made = [await users[0].put_foreign(_foreign(n)) for n in range(3)]  # not through the proxy
    clock = LimitsClock(monkeypatch)
    with fault_proxy(google_emulator.url) as (proxy, url):
        processes = [
            Process(queue_db, google_project=(project, QUOTA), quota_window=WINDOW) for _ in users
        ]
        providers = [
            GoogleProvider(
                google_oauth.service(google_emulator.url).tokens(user.refresh_token),
                api_url=url, backoff=0.01,
                shared=process.limits.for_account("google", user.email),
            )
            for user, process in zip(users, processes, strict=True)
        ]  # fmt: skip
        try:
            await clock.run(*(
                as_sync(provider.list_calendars()) for provider in providers for _ in range(5)
            ))  # fmt: skip
            # Three events read by id in one batch request: three turns of the quota.
            (found,) = await clock.run(as_sync(providers[0].fetch(users[0].calendar_id, made)))
            assert len(found) == 3
            # Every slot of its two accounts given back. Their keys' rows only: the
            # session's database holds other tests' rows too, some of them held on
            # purpose (a quota's turns for their window, a killed worker's slots).
            accounts = [process.limits.for_account("google", user.email)
                        for user, process in zip(users, processes, strict=True)]  # fmt: skip
            keys = [account.key for account in accounts if account is not None]
            assert len(set(keys)) == 2
            held = query(queue_db, "SELECT count(*), count(holder) FROM provider_slots "
                         "WHERE key = ANY(%s)", keys)  # fmt: skip
            assert held == [(2 * limits.ACCOUNT_CONCURRENCY["google"], 0)]
        finally:
            for provider in providers:
                await provider.close()
            for process in processes:
                await process.db.dispose()
            for user in users:
                await user.close()
    calls = [(t, r) for t, r in zip(proxy.arrivals, proxy.requests, strict=True)]
    weights = [3 if "/batch/" in r[1] else 1 for _, r in calls]
    times = [clock.on_clock(t) for t, _ in calls]
    assert sum(weights) == 13
    # 13 calls, 4 a window: the quota held some back three windows at least.
    assert len(clock.passed) >= 3
    # Every window of the quota's length: at most QUOTA calls reached the service.
    for n, start in enumerate(times):
        inside = sum(w for t, w in zip(times[n:], weights[n:], strict=True)
                     if t < start + WINDOW.total_seconds())  # fmt: skip
        assert inside <= QUOTA, (inside, [round(t - times[0], 3) for t in times])


def _foreign(n: int) -> Foreign:
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=1, hours=n)
    return Foreign(summary=f"Quota {n}", start=start, end=start + dt.timedelta(hours=1))


async def test_a_slot_kept_for_a_release_that_does_not_come_is_given_back_by_itself(
    queue_db: str,  # noqa: F811
    google_emulator: GoogleEmulator,
) -> None:
    """A request's slot kept after its answer for the sync's release goes back on its own
    when the sync goes on without releasing (a long import), well before it expires."""
    user = await GoogleHarness.open(google_emulator)
    process = Process(queue_db)
    provider = GoogleProvider(
        google_oauth.service(google_emulator.url).tokens(user.refresh_token),
        api_url=google_emulator.url, backoff=0.01,
        shared=process.limits.for_account("google", user.email),
    )  # fmt: skip
    key = f"google:{user.email.lower()}"

    def holders() -> list[tuple[Any, ...]]:
        return query(queue_db, "SELECT slot FROM provider_slots WHERE key = %s "
                     "AND holder IS NOT NULL", key)  # fmt: skip

    async def call(deferred: limits.GiveBackLater) -> None:
        restore = limits.later.set(deferred)
        try:
            await provider.list_calendars()
        finally:
            limits.later.reset(restore)

    try:
        # Kept after the answer: still held, so the account counts it in flight.
        waiting = limits.GiveBackLater(within=3600)
        await call(waiting)
        assert len(waiting.kept) == 1
        assert len(holders()) == 1
        await waiting.flush()
        assert holders() == []
        # Not given back by the sync: it goes back by itself.
        soon = limits.GiveBackLater(within=0.01)
        await call(soon)
        while True:  # polled: nothing here gives it back but the timer
            if not holders():
                break
            await asyncio.sleep(0.05)
        assert soon.kept == []
    finally:
        await provider.close()
        await process.db.dispose()
        await user.close()


def test_a_worker_keeps_a_bounded_number_of_idle_limits(tmp_path: Any) -> None:
    """A thousand mailboxes and servers met over months (ten times what is kept) leave at
    most ``kept`` limits in the map, and none in memory that nothing uses."""
    import gc

    # What the process held before is not this test's: the collection below scans only
    # what the test made (in a worker that ran many tests, a full one took 40 s).
    gc.freeze()
    try:
        shared = SharedLimits(Database(f"sqlite:///{tmp_path}/unused.db"))
        shared.kept = 100
        for n in range(500):
            shared.for_account("microsoft", f"box{n}@example.test")
            shared.for_server(f"https://dav{n}.example.test/")
        gc.collect()
        assert len(shared._limits) == 100
        assert len(shared._alive) == 100
        # The ones used last are those kept: met again, they are the same.
        last = shared.for_server("https://dav499.example.test/")
        assert last is shared.for_server("https://dav499.example.test/")
        assert shared._limits.popitem()[1] is last
    finally:
        gc.unfreeze()


async def test_a_limit_in_use_is_never_dropped(queue_db: str) -> None:  # noqa: F811
    """A limit holding a slot (or referenced by a sync's provider) is still the one its key
    finds after many other keys pushed it out of the map: a second one of the same key
    would not know the slot is this process's own."""
    process = Process(queue_db)
    process.limits.kept = 10
    key = f"busy-{uuid.uuid4().hex[:8]}@example.test"
    try:
        busy = process.limits.for_account("microsoft", key)
        assert busy is not None
        async with busy.slot():
            for n in range(100):
                process.limits.for_account("microsoft", f"other{n}-{key}")
            assert key not in {k.split(":", 1)[1] for k in process.limits._limits}
            assert process.limits.for_account("microsoft", key) is busy
            held = query(queue_db, "SELECT count(*) FROM provider_slots WHERE key = %s "
                                   "AND holder IS NOT NULL", f"microsoft:{key}")  # fmt: skip
            assert held == [(1,)]
        assert process.limits.for_account("microsoft", key) is busy
    finally:
        await process.db.dispose()


# --- what a request holds while it waits for a turn of the quota ----------------------


def _busy_elsewhere(database_url: str, key: str, slots: range) -> None:
    """``slots`` of ``key`` held by requests of another process for a long while (the
    project's quota spent by other workers, the account's other slots in use)."""
    query(database_url, "UPDATE provider_slots SET holder = 'elsewhere:1', expires_at = "
          "now() + interval '1 day' WHERE key = %s AND slot >= %s AND slot < %s",
          key, slots.start, slots.stop)  # fmt: skip


def _free_again(database_url: str, key: str) -> None:
    query(database_url, "UPDATE provider_slots SET holder = NULL, expires_at = NULL "
          "WHERE key = %s AND holder = 'elsewhere:1'", key)  # fmt: skip


async def test_a_slot_held_while_waiting_for_a_turn_is_never_taken_twice(
    queue_db: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Google request holds its account's slot while it waits for a turn of the
    project's quota. Waiting three minutes (longer than a slot lives unrenewed), the slot
    stays its own: another process finds none free, and once the turn comes the account
    has no more requests in flight than its limit."""
    clock = LimitsClock(monkeypatch)
    project = f"project-{uuid.uuid4().hex[:8]}"
    account = f"waits-{uuid.uuid4().hex[:8]}@example.test"
    first, second = (Process(queue_db, google_project=(project, 2), quota_window=WINDOW)
                     for _ in range(2))  # fmt: skip
    mine = first.limits.for_account("google", account)
    theirs = second.limits.for_account("google", account)
    assert mine is not None
    assert theirs is not None
    assert mine.rate is not None
    concurrency = limits.ACCOUNT_CONCURRENCY["google"]
    inside = asyncio.Event()
    done = asyncio.Event()

    async def request() -> None:
        async with mine.slot():
            inside.set()
            await done.wait()

    try:
        await mine._make_slots()
        await mine.rate.turns._make_slots()
        _busy_elsewhere(queue_db, mine.key, range(1, concurrency))
        _busy_elsewhere(queue_db, mine.rate.turns.key, range(2))
        waiting = asyncio.create_task(request())
        await clock.until_paused(waiting)
        for _ in range(3):  # three minutes on the limits' clock, no turn free
            clock.pass_window()
            await clock.until_armed(1)  # what it holds renewed, the timer armed again
            await clock.until_paused(waiting)
        assert not inside.is_set()
        assert await theirs.try_take() is None, "the waiting request's slot was taken"
        _free_again(queue_db, mine.rate.turns.key)
        clock.pass_window()
        await asyncio.wait_for(inside.wait(), PATIENCE)
        assert await theirs.try_take() is None
        held = query(queue_db, "SELECT slot FROM provider_slots WHERE key = %s AND holder "
                     "= %s AND expires_at > %s", mine.key, limits.PROCESS, clock.now())  # fmt: skip
        assert held == [(0,)]
        done.set()
        await asyncio.wait_for(waiting, PATIENCE)
    finally:
        done.set()
        for key in (mine.key, mine.rate.turns.key):
            _free_again(queue_db, key)
        for process in (first, second):
            await process.db.dispose()


async def test_turns_held_while_waiting_for_the_rest_are_never_taken_twice(
    queue_db: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A batch of two calls takes the one turn of the project's quota that is free and
    waits for the other. Waiting four minutes (longer than a turn lives unrenewed), the
    turn it has stays its own: another process finds none free."""
    clock = LimitsClock(monkeypatch)
    project = f"project-{uuid.uuid4().hex[:8]}"
    account = f"batch-{uuid.uuid4().hex[:8]}@example.test"
    first, second = (Process(queue_db, google_project=(project, 2), quota_window=WINDOW)
                     for _ in range(2))  # fmt: skip
    mine = first.limits.for_account("google", account)
    other = second.limits.google_project
    assert mine is not None
    assert mine.rate is not None
    assert other is not None
    inside = asyncio.Event()

    async def batch() -> None:
        async with mine.slot(cost=2):
            inside.set()

    try:
        await mine.rate.turns._make_slots()
        _busy_elsewhere(queue_db, mine.rate.turns.key, range(1, 2))
        waiting = asyncio.create_task(batch())
        await clock.until_paused(waiting)
        for _ in range(4):  # longer than a turn not yet answered lives unrenewed
            clock.pass_window()
            await clock.until_armed(1)  # the turn it has renewed, the timer armed again
            await clock.until_paused(waiting)
        assert not inside.is_set()
        assert await other.turns.try_take() is None, "a turn the batch held was taken"
        _free_again(queue_db, mine.rate.turns.key)
        clock.pass_window()
        await asyncio.wait_for(waiting, PATIENCE)
        assert inside.is_set()
    finally:
        _free_again(queue_db, mine.rate.turns.key)
        for process in (first, second):
            await process.db.dispose()


async def test_a_turn_lives_as_long_as_the_slot_of_its_request(
    queue_db: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A request still unanswered a minute after it took its turn (a slow answer: an
    exchange may last two minutes) keeps its turn as long as its slot lives: another
    process takes neither, since the request may still reach the service."""
    clock = LimitsClock(monkeypatch)
    project = f"project-{uuid.uuid4().hex[:8]}"
    account = f"slow-{uuid.uuid4().hex[:8]}@example.test"
    first, second = (Process(queue_db, google_project=(project, 1), quota_window=WINDOW)
                     for _ in range(2))  # fmt: skip
    mine = first.limits.for_account("google", account)
    other = second.limits.google_project
    assert mine is not None
    assert other is not None
    try:
        async with mine.slot():
            clock.pass_window()  # a minute on the limits' clock: the answer not in yet
            assert clock.now() < utcnow() + limits.REQUEST_TTL  # the slot still lives
            assert await other.turns.try_take() is None, "the request's turn was taken"
        # Answered: the turn is kept a window from now, as before.
        assert await other.turns.try_take() is None
        clock.pass_window()
        assert await other.turns.try_take() == 0
    finally:
        query(queue_db, "UPDATE provider_slots SET holder = NULL, expires_at = NULL "
              "WHERE key = %s", f"google-project:{project}")  # fmt: skip
        for process in (first, second):
            await process.db.dispose()


# --- a request that runs past its slot's lifetime ----------------------------------------


async def test_a_slow_request_keeps_its_slot_until_it_ends(
    queue_db: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A request may run three minutes (a wait for a pooled connection, the connect, the
    two minutes an exchange may take), longer than its slot lives unrenewed. A mailbox's
    four requests all that slow keep their four slots: another process takes none until
    one ends, so the mailbox never has a fifth request in flight."""
    clock = LimitsClock(monkeypatch)
    account = f"slow-{uuid.uuid4().hex[:8]}@example.test"
    first, second = (Process(queue_db) for _ in range(2))
    mine = first.limits.for_account("microsoft", account)
    theirs = second.limits.for_account("microsoft", account)
    assert mine is not None
    assert theirs is not None
    concurrency = limits.ACCOUNT_CONCURRENCY["microsoft"]
    answered = asyncio.Event()
    inside: list[int] = []

    async def request() -> None:
        async with mine.slot():
            inside.append(1)
            await answered.wait()

    requests = [asyncio.create_task(request()) for _ in range(concurrency)]
    try:
        await clock.until_armed(concurrency)  # each request in flight, its timer armed
        assert len(inside) == concurrency
        for _ in range(3):  # three minutes on the limits' clock, no answer yet
            clock.pass_window()
            await clock.until_armed(concurrency)  # renewed, and armed again
            assert await theirs.try_take() is None, "a slow request's slot was taken"
        answered.set()
        await asyncio.wait_for(asyncio.gather(*requests), PATIENCE)
        assert clock.armed() == 0  # an ended request renews nothing
        assert await theirs.try_take() is not None
    finally:
        answered.set()
        query(queue_db, "UPDATE provider_slots SET holder = NULL, expires_at = NULL "
              "WHERE key = %s", mine.key)  # fmt: skip
        for process in (first, second):
            await process.db.dispose()


# --- a key's rows, made once by a process's first request -------------------------------

TURNS = 10_000  # Google's default project quota: one row a turn


async def test_making_a_quotas_rows_holds_no_row_in_memory(queue_db: str) -> None:  # noqa: F811
    """A process's first request for a key makes the key's rows: 10,000 of them for the
    Google project's quota. Made in the database from two parameters, they cost the
    process almost nothing; sent as 10,000 rows of VALUES, they cost it tens of MB."""
    import tracemalloc

    process = Process(queue_db)
    key = f"google-project:{uuid.uuid4().hex[:8]}"
    warm = limits.Limit(process.db, f"warm-{key}", 1)
    quota = limits.Limit(process.db, key, TURNS)
    try:
        await warm.try_take()  # the engine's first connection is not this test's
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            assert await quota.try_take_many(3, limits.REQUEST_TTL) == [0, 1, 2]
            grown = tracemalloc.get_traced_memory()[1] - before
        finally:
            tracemalloc.stop()
        rows = query(queue_db, "SELECT count(*), min(slot), max(slot) FROM provider_slots "
                     "WHERE key = %s", key)  # fmt: skip
        assert rows == [(TURNS, 0, TURNS - 1)]
        assert grown < 2**20, f"{grown / 2**20:.1f} MB at the peak to make {TURNS} rows"
    finally:
        query(queue_db, "DELETE FROM provider_slots WHERE key IN (%s, %s)", key, warm.key)
        await process.db.dispose()


async def test_first_requests_at_once_make_a_keys_rows_in_one_statement(
    queue_db: str,  # noqa: F811
) -> None:
    """A worker's first jobs start together and each finds its key's rows not made yet
    in this process: they wait for one INSERT, not one each (each of which, for the
    project's quota, had its 10,000 rows in memory at the same moment)."""
    from sqlalchemy import event

    process = Process(queue_db)
    key = f"google-project:{uuid.uuid4().hex[:8]}"
    quota = limits.Limit(process.db, key, TURNS)
    inserts: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "INSERT INTO provider_slots" in statement:
            inserts.append(statement)

    event.listen(process.db.engine.sync_engine, "before_cursor_execute", seen)
    try:
        taken = await asyncio.wait_for(
            asyncio.gather(*(quota.try_take() for _ in range(8))), PATIENCE
        )
        assert sorted(taken) == list(range(8))  # type: ignore[type-var]
        assert len(inserts) == 1
    finally:
        query(queue_db, "DELETE FROM provider_slots WHERE key = %s", key)
        await process.db.dispose()
