"""Provider limits shared by every process through PostgreSQL: Graph's four requests per
mailbox hold across workers, and a throttled account slows down alone."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator

import httpx
import pytest

from crmcal.db import Database
from crmcal.providers import microsoft_oauth
from crmcal.providers.microsoft import MicrosoftProvider
from crmcal.sync.limits import SharedLimits
from tests.microsoft_emulator import MicrosoftEmulator, MicrosoftHarness
from tests.queue_world import query, queue_db  # noqa: F401

pytestmark = pytest.mark.postgres


class Process:
    """What one worker process has: its own engine, its own shared-limit handles."""

    def __init__(self, database_url: str) -> None:
        self.db = Database(database_url)
        self.limits = SharedLimits(self.db)

    def provider(self, emulator: MicrosoftEmulator, harness: MicrosoftHarness) -> MicrosoftProvider:
        tokens = microsoft_oauth.service(emulator.url).tokens(harness.refresh_token)
        shared = self.limits.for_account("microsoft", harness.email)
        return MicrosoftProvider(tokens, api_url=emulator.url, backoff=0.01, shared=shared)


@pytest.fixture
async def admin(microsoft_emulator: MicrosoftEmulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=microsoft_emulator.url, timeout=120) as client:
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
    start = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    ids = []
    for n in range(16):
        body = {"subject": f"e{n}", "start": {"dateTime": start.strftime("%Y-%m-%dT%H:%M:%S"),
                "timeZone": "UTC"}, "end": {"dateTime": start.strftime("%Y-%m-%dT%H:59:00"),
                "timeZone": "UTC"}}  # fmt: skip
        ids.append((await mailbox.api("POST", mailbox._events(), json=body))["id"])
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
        assert sorted(r.event.summary for refs in found for r in refs if r.event) == sorted(
            f"e{n}" for n in range(16)
        )
        peak = (await admin.get("/_emulator/concurrency")).json()["peak"][mailbox.email]
        assert 2 <= peak <= 4, f"{peak} requests in flight at once against one mailbox"
        assert query(queue_db, "SELECT count(*) FROM provider_slots WHERE holder IS NOT NULL") == [
            (0,)
        ]
    finally:
        for provider in providers:
            await provider.close()
        for worker in workers:
            await worker.db.dispose()
        await mailbox.close()


async def test_a_throttled_account_slows_down_in_every_process_and_alone(
    queue_db: str,  # noqa: F811
    microsoft_emulator: MicrosoftEmulator,
    admin: httpx.AsyncClient,
) -> None:
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
        # A long hold: the other account's call must end within it, however slow today.
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
        await asyncio.sleep(0)  # the same account's call starts first ...
        await call("other account", other_account)
        await waiting
        await throttling
        # ... and the other account's call, started after it, is done before it.
        assert finished == ["other account", "same account"]
        assert dt.datetime.now(dt.UTC) >= held[0][1].replace(tzinfo=dt.UTC)
    finally:
        for provider in providers:
            await provider.close()
        for process in (first, second):
            await process.db.dispose()
        for harness in (slow, other):
            await harness.close()


async def _hold_recorded(database_url: str) -> list[tuple[str, dt.datetime]]:
    deadline = asyncio.get_running_loop().time() + 60
    while not (held := query(database_url, "SELECT key, until FROM provider_holds")):
        assert asyncio.get_running_loop().time() < deadline, "no hold recorded"
        await asyncio.sleep(0.05)
    return held
