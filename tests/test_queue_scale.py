"""Many connections on worker processes, against the real PostgreSQL, both emulators and
Radicale: edits on both sides, notification storms, a worker killed mid-run.

Afterwards every connection has converged, nothing is duplicated, no connection ever
had two syncs at once (the run history says who ran what when), and no mailbox ever had
more than Graph's four requests in flight (the emulator counts them).

The first items of both sides are in place before the workers start, so that each
connection's first sync takes them all at once; the second round of edits comes while
the workers run. The test waits on states, never for a fixed time, and asks the services
many things at once (as many clients would) rather than one after another.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from crmcal.config import Settings
from crmcal.crm import users
from crmcal.crm.schemas import UserCreate
from crmcal.crm.tables import User
from crmcal.db import Database
from crmcal.emulators.google import GoogleState
from crmcal.emulators.google import create_app as create_google
from crmcal.emulators.microsoft import MicrosoftState
from crmcal.emulators.microsoft import create_app as create_graph
from crmcal.emulators.microsoft.push import subscriptions_of
from crmcal.jobs.queue import POLL_EVERY
from crmcal.model import CalendarInfo
from crmcal.sync import connections
from crmcal.sync.schemas import ConnectionCreate
from crmcal.tls import tls
from crmcal.vault import Vault
from crmcal.web.app import create_app
from tests import plain
from tests.caldav_servers import CalDAVServer
from tests.conftest import run
from tests.google_emulator import GoogleEmulator, GoogleHarness
from tests.microsoft_emulator import MicrosoftEmulator, MicrosoftHarness, patient
from tests.providers.harness import CalDAVHarness, Foreign
from tests.queue_world import SECRET, Worker, query, queue_db, sync_jobs, worker_env  # noqa: F401
from tests.served import bound_socket, served_app

pytestmark = pytest.mark.postgres

PER_KIND = {"google": 67, "microsoft": 67, "caldav": 66}  # 200 connections
STORM = 3  # notifications of each channel, all at once
AT_ONCE = 8  # requests the test's clients have in flight together
V1 = "/api/v1"
WHEN = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=2)


class Account:
    """One CRM user, their calendar, and what both should hold in the end."""

    def __init__(self, kind: str, harness: Any, user_id: int, token: str) -> None:
        self.kind, self.harness, self.user_id = kind, harness, user_id
        self.headers = {"Authorization": f"Bearer {token}"}
        self.connection_id = 0
        self.activity_id = 0
        self.event_id = ""
        self.expected: set[str] = set()


def _body(account: Account, radicale: CalDAVServer) -> dict[str, Any]:
    if account.kind == "caldav":
        return {"provider": "caldav", "url": radicale.url, "username": radicale.username,
                "password": radicale.password,
                "calendar_id": account.harness.calendar_id}  # fmt: skip
    return account.harness.connection_body()


async def _users(database_url: str, count: int) -> list[tuple[int, str]]:
    db = Database(database_url)
    try:
        async with db.write() as session:
            made = []
            for n in range(count):
                email = f"scale{n}-{random.randrange(10**9)}@crm.test"
                user, token = await users.create_user(
                    session, UserCreate(email=email, name=f"User {n}")
                )
                made.append((user, token))
            await session.flush()
            return [(user.id, token) for user, token in made]
    finally:
        await db.dispose()


async def _calendar_subjects(account: Account) -> list[str]:
    """The events' titles as the calendar service itself lists them."""
    harness = account.harness
    if account.kind == "google":
        found = await harness.api("GET", harness._events(), params={"maxResults": 250})
        return [e.get("summary", "") for e in found["items"] if e.get("status") != "cancelled"]
    if account.kind == "microsoft":
        found = await harness.api("GET", harness._events(), params={"$top": 250})
        return [e["subject"] for e in found["value"]]
    listing = await harness.provider.list_changes(harness.calendar_id, None, with_contents=True)
    return [ref.event.summary for ref in listing.changed if ref.event is not None]


def _crm_subjects(database_url: str) -> dict[int, list[str]]:
    rows = query(database_url, "SELECT owner_id, subject FROM activities WHERE deleted_at IS NULL")
    found: dict[int, list[str]] = {}
    for owner, subject in rows:
        found.setdefault(owner, []).append(subject)
    return found


@pytest.fixture(scope="module")
def google_emulator() -> Iterator[GoogleEmulator]:
    """Emulators of this module's own, without the body checks of the shared ones: those
    cost more than the thousands of calls they would check here (other tests check them)."""
    state = GoogleState()
    with served_app(create_google(state)) as url:
        yield GoogleEmulator(url, state)


@pytest.fixture(scope="module")
def microsoft_emulator() -> Iterator[MicrosoftEmulator]:
    state = MicrosoftState()
    with served_app(create_graph(state)) as url:
        yield MicrosoftEmulator(patient(url).rstrip("/"), state, [])


@pytest.fixture
def world(
    queue_db: str,  # noqa: F811
    google_emulator: GoogleEmulator,
    microsoft_emulator: MicrosoftEmulator,
    radicale: CalDAVServer,
) -> Iterator[dict[str, Any]]:
    sock = bound_socket()
    base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    urls = {"google_api_url": google_emulator.url, "google_oauth_url": google_emulator.url,
            "microsoft_api_url": microsoft_emulator.url,
            "microsoft_oauth_url": microsoft_emulator.url}  # fmt: skip
    settings = Settings(database_url=queue_db, secret_key=SECRET, base_url=base_url,
                        allow_private_networks=True, retry_backoff=0.05,
                        google_api_url=urls["google_api_url"],
                        google_oauth_url=urls["google_oauth_url"],
                        microsoft_api_url=urls["microsoft_api_url"],
                        microsoft_oauth_url=urls["microsoft_oauth_url"])  # fmt: skip
    plain.post(
        f"{microsoft_emulator.url}/_emulator/settings", json={"mailbox_concurrency": 4}, timeout=30
    )
    try:
        with served_app(create_app(settings, jobs="queue"), sock):
            yield {"base_url": base_url, "urls": urls}
    finally:
        plain.post(f"{microsoft_emulator.url}/_emulator/settings",
                   json={"mailbox_concurrency": None}, timeout=30)  # fmt: skip


def test_two_hundred_connections_on_workers_converge_through_storms_and_a_kill(
    world: dict[str, Any],
    queue_db: str,  # noqa: F811
    google_emulator: GoogleEmulator,
    microsoft_emulator: MicrosoftEmulator,
    radicale: CalDAVServer,
    tmp_path: Path,
) -> None:
    base_url, urls = world["base_url"], world["urls"]
    env = worker_env(
        queue_db,
        CRMCAL_BASE_URL=base_url,
        CRMCAL_GOOGLE_API_URL=urls["google_api_url"],
        CRMCAL_GOOGLE_OAUTH_URL=urls["google_oauth_url"],
        CRMCAL_MICROSOFT_API_URL=urls["microsoft_api_url"],
        CRMCAL_MICROSOFT_OAUTH_URL=urls["microsoft_oauth_url"],
        CRMCAL_POLL_SECONDS="3600",
        CRMCAL_LEASE_SECONDS="5",
        CRMCAL_WORKER_HEARTBEAT_SECONDS="0.5",
        CRMCAL_CALDAV_SERVER_CONCURRENCY="4",
    )
    workers: list[Worker] = []  # started once the first items are in place
    try:
        run(_scenario(queue_db, base_url, env, workers, tmp_path, google_emulator,
                      microsoft_emulator, radicale))  # fmt: skip
    finally:
        for worker in workers:
            worker.stop()
        print("\n".join(w.output() for w in workers))


async def _eventually(check: Any, seconds: float, what: str) -> Any:
    """``await check()``'s first true answer, asked again and again (the bound is on a
    failure, never on a pass)."""
    deadline = time.monotonic() + seconds
    while not (found := await check()):
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.1)
    return found


async def _all_at_once(calls: list[Any]) -> list[Any]:
    """Await the calls, ``AT_ONCE`` of them in flight at a time."""
    slots = asyncio.Semaphore(AT_ONCE)

    async def one(call: Any) -> Any:
        async with slots:
            return await call

    return await asyncio.gather(*(one(call) for call in calls))


async def _scenario(
    database_url: str,
    base_url: str,
    env: dict[str, str],
    workers: list[Worker],
    tmp_path: Path,
    google_emulator: GoogleEmulator,
    microsoft_emulator: MicrosoftEmulator,
    radicale: CalDAVServer,
) -> None:
    harnesses: list[Any] = []
    try:
        async with httpx.AsyncClient(verify=tls(), base_url=base_url, timeout=60) as api:
            accounts = await _connect_everyone(database_url, google_emulator, microsoft_emulator,
                                               radicale, api, harnesses)  # fmt: skip
            # Round one: a new activity in the CRM and a new event in each calendar; then
            # the workers start.
            made = await _all_at_once([
                api.post(f"{V1}/activities", headers=account.headers, json={
                    "type": "meeting", "subject": f"crm-{n}-a", "start": WHEN.isoformat(),
                    "end": (WHEN + dt.timedelta(hours=1)).isoformat()})
                for n, account in enumerate(accounts)
            ])  # fmt: skip
            for account, answer in zip(accounts, made, strict=True):
                assert answer.status_code == 201, answer.text
                account.activity_id = answer.json()["id"]
            await _add_events(accounts)
            _polling_time_comes(database_url)
            workers += [Worker(env, tmp_path / f"worker{n}.log") for n in range(2)]

            # A storm: every channel's notification again and again, all at once.
            async def channels_open() -> bool:
                found = query(database_url, "SELECT count(*) FROM connections "
                              "WHERE push_token IS NOT NULL")  # fmt: skip
                pushing = PER_KIND["google"] + PER_KIND["microsoft"]
                return bool(found[0][0] >= pushing)

            await _eventually(channels_open, 600, "the first syncs open push channels")
            answers = await _storm(base_url, google_emulator, microsoft_emulator)
            assert answers <= {200, 202}, answers
            waiting = sync_jobs(database_url)
            assert len(waiting) == len(set(waiting)) <= len(accounts)

            # A worker is killed in the middle of a sync; its jobs run elsewhere.
            victim = workers[0]

            async def victim_busy() -> bool:
                if _running_on(database_url, victim.pid):
                    return True
                if not sync_jobs(database_url) and not sync_jobs(database_url, "doing"):
                    # The storm's syncs are all done (a slow machine sends it slowly):
                    # more work comes as a poll period passing brings it.
                    _polling_time_comes(database_url)
                return False

            await _eventually(victim_busy, 300, "the worker to be killed runs a sync")
            victim.kill()
            workers.append(Worker(env, tmp_path / "worker2.log"))

            # Round two: both sides change again.
            changed = await _all_at_once([
                api.patch(f"{V1}/activities/{account.activity_id}", headers=account.headers,
                          json={"subject": f"crm-{n}-b"})
                for n, account in enumerate(accounts)
            ])  # fmt: skip
            for n, (account, answer) in enumerate(zip(accounts, changed, strict=True)):
                assert answer.status_code == 200, answer.text
                account.expected = {f"crm-{n}-b", f"cal-{n}-b"}
            await _retitle_events(accounts)
            _polling_time_comes(database_url)

            polled = [time.monotonic()]

            async def crm_converged() -> bool:
                found = _crm_subjects(database_url)
                behind = [a for a in accounts
                          if sorted(found.get(a.user_id, [])) != sorted(a.expected)]  # fmt: skip
                # A CalDAV calendar's retitle is found by polling: one whose sync had
                # listed it before the retitle is polled again (a poll period, shortened
                # to a tick of the workers' poller), as time passing would.
                if behind and time.monotonic() - polled[0] > POLL_EVERY:
                    _polling_time_comes(database_url, [a.connection_id for a in behind])
                    polled[0] = time.monotonic()
                return not behind

            await _eventually(crm_converged, 600, "every CRM converges")
            await _eventually(functools.partial(_calendars_converged, accounts, database_url),
                              600, "every calendar converges")  # fmt: skip
    finally:
        for harness in harnesses:
            await harness.close()

    # Nothing duplicated on either side (the comparisons above are of lists, not sets),
    # and no connection ever had two syncs at once.
    _never_two_syncs_at_once(database_url)
    # Which process last ran each connection's sync is on record: one of the workers.
    pids = {str(w.pid) for w in workers}
    last = query(database_url, "SELECT DISTINCT ON (connection_id) process FROM sync_runs "
                 "ORDER BY connection_id, id DESC")  # fmt: skip
    assert len(last) == len(accounts)
    assert {process.rpartition(":")[2] for (process,) in last} <= pids
    async with httpx.AsyncClient(verify=tls(), timeout=60) as client:
        peaks = (await client.get(f"{microsoft_emulator.url}/_emulator/concurrency")).json()
    mailboxes = {a.harness.email for a in accounts if a.kind == "microsoft"}
    over = {m: n for m, n in peaks["peak"].items() if m in mailboxes and n > 4}
    assert not over, f"more than four requests in flight: {over}"


async def _connect_everyone(
    database_url: str,
    google_emulator: GoogleEmulator,
    microsoft_emulator: MicrosoftEmulator,
    radicale: CalDAVServer,
    api: httpx.AsyncClient,
    harnesses: list[Any],
) -> list[Account]:
    """Everyone's calendar, connected as the API stores a checked connection (checking
    200 accounts through the API is another test's business, and minutes here)."""
    made = await _users(database_url, sum(PER_KIND.values()))
    opened: dict[str, list[Any]] = {
        "google": [GoogleHarness(google_emulator) for _ in range(PER_KIND["google"])],
        "microsoft": await _all_at_once(
            [MicrosoftHarness.open(microsoft_emulator) for _ in range(PER_KIND["microsoft"])]
        ),
        "caldav": await _all_at_once(
            [asyncio.to_thread(CalDAVHarness, radicale) for _ in range(PER_KIND["caldav"])]
        ),
    }
    accounts: list[Account] = []
    for kind, kind_harnesses in opened.items():
        for harness in kind_harnesses:
            harnesses.append(harness)
            user_id, token = made[len(accounts)]
            accounts.append(Account(kind, harness, user_id, token))
    db = Database(database_url)
    try:
        async with db.write() as session:
            for account in accounts:
                user = await session.get(User, account.user_id)
                assert user is not None
                body = ConnectionCreate(**_body(account, radicale))
                calendar = CalendarInfo(account.harness.calendar_id, "crmcal tests", True, True)
                email = None if account.kind == "caldav" else account.harness.email
                conn = await connections.create(session, user, body, calendar, Vault(SECRET),
                                                account=email)  # fmt: skip
                account.connection_id = conn.id
    finally:
        await db.dispose()
    return accounts


async def _add_events(accounts: list[Account]) -> None:
    events = [Foreign(summary=f"cal-{n}-a", start=WHEN + dt.timedelta(hours=3),
                      end=WHEN + dt.timedelta(hours=4)) for n in range(len(accounts))]  # fmt: skip
    ids = await _all_at_once(
        [a.harness.put_foreign(e) for a, e in zip(accounts, events, strict=True)]
    )
    for account, event_id in zip(accounts, ids, strict=True):
        account.event_id = event_id


async def _retitle_events(accounts: list[Account]) -> None:
    await _all_at_once([account.harness.retitle(account.event_id, f"cal-{n}-b")
                        for n, account in enumerate(accounts)])  # fmt: skip


async def _calendars_converged(accounts: list[Account], database_url: str) -> bool:
    """Every calendar shows what its account expects, none twice (lists, not sets),
    read from the services themselves; those still behind are polled again."""
    calendars = await _all_at_once([_calendar_subjects(a) for a in accounts])
    pairs = zip(calendars, accounts, strict=True)
    behind = [a for c, a in pairs if sorted(c) != sorted(a.expected)]
    if behind:
        print(_differences(accounts, calendars))
        _polling_time_comes(database_url, [a.connection_id for a in behind])
    return not behind


async def _storm(base_url: str, google: GoogleEmulator, microsoft: MicrosoftEmulator) -> set[int]:
    """Every open channel's notification ``STORM`` times over, all at once, as the services
    would send them (crmcal keeps only a hash of each channel's secret)."""
    requests: list[tuple[str, dict[str, Any]]] = []
    for channel in list(google.state.channels.by_id.values()):
        headers = {"X-Goog-Channel-Id": channel.id, "X-Goog-Channel-Token": channel.token or "",
                   "X-Goog-Resource-Id": channel.resource_id,
                   "X-Goog-Resource-State": "exists"}  # fmt: skip
        requests += [("/webhooks/google", {"headers": headers})] * STORM
    for subscription in list(subscriptions_of(microsoft.state).by_id.values()):
        note = {"subscriptionId": subscription.id, "clientState": subscription.client_state,
                "changeType": "updated", "resource": subscription.resource}  # fmt: skip
        requests += [("/webhooks/microsoft", {"json": {"value": [note] * 3}})] * STORM
    random.shuffle(requests)
    assert len(requests) >= STORM * (PER_KIND["google"] + PER_KIND["microsoft"])
    limits = httpx.Limits(max_connections=8)
    async with httpx.AsyncClient(
        verify=tls(), base_url=base_url, timeout=60, limits=limits
    ) as client:
        answers = await asyncio.gather(*(client.post(path, **kw) for path, kw in requests))
    return {a.status_code for a in answers}


def _differences(accounts: list[Account], calendars: list[list[str]]) -> str:
    pairs = zip(accounts, calendars, strict=True)
    wrong = [(a.connection_id, a.kind, sorted(c), sorted(a.expected))
             for a, c in pairs if sorted(c) != sorted(a.expected)]  # fmt: skip
    return f"{len(wrong)} calendars differ, e.g. {wrong[:5]}"


def _polling_time_comes(database_url: str, ids: list[int] | None = None) -> None:
    """CalDAV has no push: its changes are found by polling. Rather than wait a poll
    period, the test makes the CalDAV connections (of ``ids``) due now, as time passing
    would."""
    query(database_url, "UPDATE connections SET next_sync_at = now() AT TIME ZONE 'UTC' "
          "WHERE provider = 'caldav' AND (%s::int[] IS NULL OR id = ANY(%s::int[]))",
          ids, ids)  # fmt: skip


def _running_on(database_url: str, pid: int) -> bool:
    rows = query(database_url, "SELECT process FROM sync_runs WHERE outcome = 'running'")
    return any(process.endswith(f":{pid}") for (process,) in rows)


def _never_two_syncs_at_once(database_url: str) -> None:
    rows = query(database_url, "SELECT connection_id, started_at, ended_at, outcome, process "
                 "FROM sync_runs ORDER BY connection_id, started_at, id")  # fmt: skip
    assert rows, "the syncs are on record"
    previous: dict[int, tuple[Any, ...]] = {}
    for row in rows:
        connection_id, started, ended, outcome, _process = row
        assert outcome != "running" or ended is None
        before = previous.get(connection_id)
        if before is not None:
            overlap = f"two syncs of connection {connection_id} at once: {before} and {row}"
            assert before[2] is not None, overlap
            assert before[2] <= started, overlap
        previous[connection_id] = row
