"""SIGKILL of ``crmcal serve`` (embedded, SQLite) in the middle of syncs, again and again.

Four users sync — two with calendars on Radicale, two with Google accounts on the
emulator — while both sides change. Each round kills the server while a sync runs and
its writes are half done (the server is frozen while that is checked, so the kill
lands mid-sync every time, not in half the runs), then starts it again. Afterwards
every connection has converged: both sides show the same items, none twice, every
activity synced, and the history of runs shows that syncs of one connection never
overlapped.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import itertools
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from crmcal import migrations
from crmcal.db import Database
from crmcal.providers.base import Provider
from crmcal.sync.links import Links
from crmcal.sync.tables import Link
from crmcal.tls import tls
from tests.caldav_servers import HOST
from tests.conftest import create_user_in
from tests.engine_world import World
from tests.google_emulator import GoogleEmulator, GoogleHarness
from tests.memory_provider import MemoryCalendar
from tests.providers.harness import CalDAVHarness, CalDAVServer, Foreign
from tests.served import bound_socket

KEY = "crash-test-key-Vb7Qw2Lm9Xz4Rt6Yp1Nc8Ks3Hd5Gf0Ja"

# Each kill lands mid-sync for certain (see Server.kill_when); the second lands on a
# server that took over the runs the first left behind, and its round renames and edits
# what came before (a third round would do nothing the second did not).
ROUNDS = 2
NEW_PER_ROUND = 6  # CRM activities per user and round; plus one calendar event
LEASE_SECONDS = 10  # renewal gets 3 s: room for a starved event loop
SOON = (dt.datetime.now(dt.UTC) + dt.timedelta(days=3)).replace(minute=0, second=0, microsecond=0)
V1 = "/api/v1"
PATIENCE = 600.0  # seconds any awaited state may take on a busy machine: a hang guard


class Server:
    """``crmcal serve`` as a process of its own, on one socket across restarts: the test
    keeps it bound, so no other process can take the port while a killed server is down."""

    def __init__(self, env: dict[str, str], sock: socket.socket, logs: Path) -> None:
        self.env, self.sock, self.logs = env, sock, logs
        self.url = f"http://{HOST}:{sock.getsockname()[1]}"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def _spawn(self) -> subprocess.Popen[bytes]:
        self.starts += 1
        fd = self.sock.fileno()
        argv = [sys.executable, "-m", "crmcal", "serve", "--fd", str(fd)]
        with (self.logs / f"serve-{self.starts}.log").open("wb") as log:
            return subprocess.Popen(argv, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, pass_fds=[fd])  # fmt: skip

    async def start(self) -> None:
        self.process = await asyncio.to_thread(self._spawn)
        async with httpx.AsyncClient(verify=tls(), timeout=30) as client:
            deadline = time.monotonic() + PATIENCE
            while True:
                assert self.process.poll() is None, self.output()
                try:
                    if (await client.get(f"{self.url}/healthz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the server did not come up"
                await asyncio.sleep(0.05)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def kill_when(self, moment: Callable[[], Any]) -> int:
        """SIGKILL the server the first time ``await moment()`` holds while it is frozen
        (SIGSTOP): what the database shows then is what the kill leaves behind."""
        assert self.process is not None
        deadline = time.monotonic() + PATIENCE
        while True:
            os.kill(self.process.pid, signal.SIGSTOP)
            if await moment():
                return self.kill()
            os.kill(self.process.pid, signal.SIGCONT)
            assert self.process.poll() is None, self.output()
            assert time.monotonic() < deadline, "the moment to kill never came"
            await asyncio.sleep(0.02)

    def kill(self) -> int:
        assert self.process is not None
        pid = self.process.pid
        os.kill(pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        return pid

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def output(self) -> str:
        return (self.logs / f"serve-{self.starts}.log").read_text(errors="replace")[-4000:]


class Person:
    """A CRM user with a connected calendar, and what both sides should end up showing."""

    def __init__(self, name: str, token: str, calendar: Any, provider: Provider) -> None:
        self.name, self.token, self.calendar, self.provider = name, token, calendar, provider
        self.connection_id = self.user_id = 0
        self.expected: Counter[str] = Counter()
        self.crm_items: list[tuple[int, str]] = []  # (activity id, subject)
        self.cal_items: list[tuple[str, str]] = []  # (event id, summary)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def wait_until(check: Callable[[], Any], what: Callable[[], str]) -> Any:
    """``await check()``'s first true answer, asked again and again (never a fixed sleep)."""
    deadline = time.monotonic() + PATIENCE
    while True:
        found = await check()
        if found:
            return found
        assert time.monotonic() < deadline, f"not within {PATIENCE:g} s: {what()}"
        # Each look lists every calendar and CRM: not so often that it starves the server.
        await asyncio.sleep(0.1)


@asynccontextmanager
async def people(
    radicale: CalDAVServer, google_emulator: GoogleEmulator
) -> AsyncIterator[list[Person]]:
    calendars: list[Any] = []
    try:
        for _ in range(2):
            calendars.append(await asyncio.to_thread(CalDAVHarness, radicale))
        for _ in range(2):
            calendars.append(await GoogleHarness.open(google_emulator))
        yield [Person(f"user{n}", "", calendar, calendar.provider)
               for n, calendar in enumerate(calendars)]  # fmt: skip
    finally:
        for calendar in calendars:
            await calendar.close()


async def calendar_summaries(person: Person) -> Counter[str]:
    calendar = person.calendar
    listing = await person.provider.list_changes(calendar.calendar_id, None)
    fetched = await person.provider.fetch(calendar.calendar_id, [r.id for r in listing.changed])
    return Counter(ref.event.summary or "" for ref in fetched if ref.event is not None)


def when(n: int) -> dt.datetime:
    return SOON + dt.timedelta(hours=n)


async def change_both_sides(api: httpx.AsyncClient, person: Person, round_: int) -> None:
    """One round of edits: calendar side first (another client), then the CRM."""
    n = round_ * 100
    summary = f"{person.name} r{round_} calendar"
    event_id = await person.calendar.put_foreign(
        Foreign(summary=summary, start=when(n + 50), end=when(n + 51))
    )
    person.cal_items.append((event_id, summary))
    person.expected[summary] += 1
    if round_:  # the previous round's event, renamed
        old_id, old = person.cal_items[round_ - 1]
        await person.calendar.retitle(old_id, old + " renamed")
        person.cal_items[round_ - 1] = (old_id, old + " renamed")
        person.expected[old] -= 1
        person.expected[old + " renamed"] += 1
    for i in range(NEW_PER_ROUND):
        subject = f"{person.name} r{round_} crm {i}"
        made = await api.post(f"{V1}/activities", headers=person.headers, json={
            "type": "meeting", "subject": subject, "start": when(n + i).isoformat(),
            "end": (when(n + i) + dt.timedelta(minutes=30)).isoformat()})  # fmt: skip
        assert made.status_code == 201, made.text
        person.crm_items.append((made.json()["id"], subject))
        person.expected[subject] += 1
    if round_:  # an activity of an earlier round, edited in the CRM
        activity_id, old = person.crm_items[round_]
        edited = await api.patch(f"{V1}/activities/{activity_id}", headers=person.headers,
                                 json={"subject": old + " edited"})  # fmt: skip
        assert edited.status_code == 200, edited.text
        person.crm_items[round_] = (activity_id, old + " edited")
        person.expected[old] -= 1
        person.expected[old + " edited"] += 1


def rows(db_path: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db_path, timeout=30) as db:
        return list(db.execute(sql, params))


async def writes_in_flight(db_path: Path, fresh: list[int], pid: int) -> bool:
    """A sync of server ``pid`` runs, and some but not all of the round's new activities
    reached a calendar. (A run the previous, killed server left behind still reads as
    running until its lease expires: it does not count.)"""
    running = rows(db_path, "SELECT count(*) FROM sync_runs WHERE outcome = 'running' "
                            "AND process LIKE ?", f"%:{pid}")  # fmt: skip
    marks = ",".join("?" * len(fresh))
    linked = rows(db_path, f"SELECT count(*) FROM sync_links WHERE activity_id IN ({marks})",
                  *fresh)  # fmt: skip
    return bool(running[0][0]) and 0 < linked[0][0] < len(fresh)


async def difference(api: httpx.AsyncClient, person: Person) -> str | None:
    """What still differs between the person's CRM, calendar and expectations (None: nothing)."""
    listed = await api.get(f"{V1}/activities", headers=person.headers,
                           params={"limit": 1000, "owner_id": person.user_id})  # fmt: skip
    assert listed.status_code == 200, listed.text
    items = listed.json()["items"]
    crm = Counter(item["subject"] for item in items)
    if crm != +person.expected:
        return f"{person.name} CRM: {crm - person.expected} extra, {person.expected - crm} missing"
    pending = [item["subject"] for item in items
               if (item.get("sync") or {}).get("state") != "synced"]  # fmt: skip
    calendar = await calendar_summaries(person)
    if pending or calendar != +person.expected:
        extra, missing = calendar - person.expected, person.expected - calendar
        return f"{person.name}: pending {pending}; calendar: {extra} extra, {missing} missing"
    return None


async def test_killing_the_server_mid_sync_again_and_again_converges_without_copies(
    radicale: CalDAVServer, google_emulator: GoogleEmulator, tmp_path: Path
) -> None:
    db_path = tmp_path / "crmcal.db"
    db_url = f"sqlite:///{db_path}"
    await asyncio.to_thread(migrations.upgrade, db_url)
    _, admin_token = await create_user_in(db_url, email="admin@crm.test", name="Admin",
                                          is_admin=True)  # fmt: skip
    sock = bound_socket()
    env = {**os.environ, "CRMCAL_DATABASE_URL": db_url, "CRMCAL_SECRET_KEY": KEY,
           "CRMCAL_BASE_URL": f"http://{HOST}:{sock.getsockname()[1]}",
           "CRMCAL_ALLOW_PRIVATE_NETWORKS": "1",
           "CRMCAL_GOOGLE_API_URL": google_emulator.url,
           "CRMCAL_GOOGLE_OAUTH_URL": google_emulator.url,
           "CRMCAL_POLL_SECONDS": "3", "CRMCAL_LEASE_SECONDS": str(LEASE_SECONDS),
           "CRMCAL_RETRY_BACKOFF": "0.01",
           # A few events a sync, under what the parse pool is for: no pool processes
           # to start on each of the server's many starts.
           "CRMCAL_PARSE_WORKERS": "0"}  # fmt: skip
    server = Server(env, sock, tmp_path)
    admin = {"Authorization": f"Bearer {admin_token}"}
    killed: list[int] = []
    try:
        async with (
            people(radicale, google_emulator) as everyone,
            httpx.AsyncClient(verify=tls(), base_url=server.url, timeout=60) as api,
        ):
            await server.start()
            for person in everyone:
                made = await api.post(f"{V1}/users", headers=admin,
                                      json={"email": f"{person.name}@crm.test",
                                            "name": person.name})  # fmt: skip
                assert made.status_code == 201, made.text
                person.token, person.user_id = made.json()["token"], made.json()["id"]
                connected = await api.post(f"{V1}/connections", headers=person.headers,
                                           json=person.calendar.connection_body())  # fmt: skip
                assert connected.status_code == 201, connected.text
                person.connection_id = connected.json()["id"]

            for round_ in range(ROUNDS):
                # Slow Google down, so that its syncs are caught with writes in flight.
                google_emulator.state.add_delay(0.2, 200)
                first_new = len(everyone[0].crm_items)
                await asyncio.gather(*(change_both_sides(api, p, round_) for p in everyone))
                fresh = [item for p in everyone for item, _ in p.crm_items[first_new:]]
                killed.append(
                    await server.kill_when(
                        functools.partial(writes_in_flight, db_path, fresh, server.pid)
                    )
                )
                left = rows(db_path, "SELECT count(*) FROM connections WHERE state = 'syncing'")
                assert left[0][0] >= 1  # what the issue found stuck for good
                google_emulator.state.delays.clear()
                await server.start()

            last = ["not looked at yet"]

            async def all_converged() -> bool:
                busy = rows(db_path, "SELECT id, state, locked_by, last_error FROM connections "
                               "WHERE state != 'active' OR locked_by IS NOT NULL")  # fmt: skip
                if busy:
                    last[0] = f"connections not at rest: {busy}"
                    return False
                for person in everyone:
                    found = await difference(api, person)
                    if found is not None:
                        last[0] = found
                        return False
                return True

            await wait_until(all_converged, lambda: f"every connection converged: {last[0]}")
            for person in everyone:
                status = (await api.get(f"{V1}/connections/{person.connection_id}/status",
                                        headers=person.headers)).json()  # fmt: skip
                # Polling goes on: a sync may be running again.
                assert status["state"] in ("active", "syncing"), status
                assert status["last_error"] is None, status
                assert status["recent_syncs"][0]["outcome"] in ("ok", "running"), status
    finally:
        server.stop()
        sock.close()

    runs = rows(db_path, "SELECT connection_id, process, started_at, ended_at, outcome "
                         "FROM sync_runs ORDER BY connection_id, id")  # fmt: skip
    by_connection: dict[int, list[tuple[Any, ...]]] = {}
    for run_ in runs:
        by_connection.setdefault(run_[0], []).append(run_)
    assert len(by_connection) == 4
    for history in by_connection.values():
        assert all(r[3] is not None and r[4] != "running" for r in history), history
        for before, after in itertools.pairwise(history):
            assert before[3] <= after[2], f"overlapping syncs: {before} and {after}"
    abandoned = [r for r in runs if r[4] == "abandoned"]
    # Every kill caught at least one sync mid-way, and each was taken over afterwards.
    killed_processes = {p.rsplit(":", 1)[1] for p in {r[1] for r in abandoned}}
    assert killed_processes == {str(pid) for pid in killed}, (killed, abandoned)


class Killed(Exception):
    """The process dies here."""


async def test_an_update_written_by_a_killed_run_counts_as_synced_afterwards(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run pushed the edit, then died before it linked what it wrote: the next run
    finds both sides equal, writes nothing, and the activity shows as synced."""
    db = Database(db_url)
    try:
        world = await World(db, MemoryCalendar()).setup()
        activity_id = await world.add_activity("Before")
        await world.sync()
        await world.edit_activity(activity_id, subject="After")
        real_store = Links.store

        async def die(self: Links, *args: Any, **kwargs: Any) -> Any:
            raise Killed

        monkeypatch.setattr(Links, "store", die)
        with pytest.raises(Killed):
            await world.sync()
        monkeypatch.setattr(Links, "store", real_store)
        assert [e.summary for e in world.events().values()] == ["After"]

        report = await world.sync()
        assert (report.created, report.updated) == (0, 0)
        activity = await world.activity(activity_id)
        async with db.read() as session:
            link = await session.scalar(select(Link).where(Link.activity_id == activity_id))
        assert link is not None
        # What the activity's sync state ("synced" or "pending") is read from.
        assert link.last_synced_at >= activity.updated_at
    finally:
        await db.dispose()


@pytest.mark.parametrize("first_write", ["create", "update"])
async def test_a_crm_edit_made_while_a_killed_run_wrote_the_event_is_kept(
    db_url: str, monkeypatch: pytest.MonkeyPatch, first_write: str
) -> None:
    """The run read the activity, the user edited it, the run wrote the version it had
    read and was killed before linking it. The event is crmcal's own write, newer than
    the edit: it must not count as a calendar edit that wins over the user's."""
    db = Database(db_url)
    try:
        world = await World(db, MemoryCalendar()).setup()
        activity_id = await world.add_activity("First")
        if first_write == "update":
            await world.sync()
            await world.edit_activity(activity_id, subject="Second")
        method = "store_many" if first_write == "create" else "store"
        real = getattr(Links, method)

        async def edited_then_killed(self: Links, *args: Any, **kwargs: Any) -> Any:
            await world.edit_activity(activity_id, subject="The user's edit")
            raise Killed

        monkeypatch.setattr(Links, method, edited_then_killed)
        with pytest.raises(Killed):
            await world.sync()
        monkeypatch.setattr(Links, method, real)
        written = "First" if first_write == "create" else "Second"
        assert [e.summary for e in world.events().values()] == [written]

        report = await world.sync()
        assert report.conflicts == 0
        assert [e.summary for e in world.events().values()] == ["The user's edit"]
        assert (await world.activity(activity_id)).subject == "The user's edit"
        assert (await world.sync()).counts() == dict.fromkeys(
            ("created", "updated", "deleted", "conflicts", "skipped"), 0
        )
    finally:
        await db.dispose()
