"""Syncs per second and memory of ``crmcal worker`` processes on the queue (PostgreSQL),
against a Google Calendar emulator in a process of its own.

Every setup is a fresh database. Its users and connections are written with bulk
inserts and the emulator starts with one account per connection (refresh tokens
known in advance), so 10,000 connections take seconds to set up, not 10,000 API
calls. Then:

* ``rounds``: one round of first syncs, then rounds of syncs of every connection
  queued at once: with no change, and with one new event in each calendar. The
  figures are connections synced per second (all workers together, and per
  worker), the workers' CPU seconds per sync, and each worker's resident memory at
  the end of the round; below the table, what a sync cost each party on the
  machine (the workers, the emulator, the PostgreSQL backends of the workers'
  connections and of the bench's, the bench process: ``bench.cpu_parties``) and
  how busy the workers kept their cores. With one worker it also times
  procrastinate's own cost: a bare no-op job through the same queue, against the
  no-change sync job. ``--pin`` runs the workers on the last core and the emulator,
  the bench and the backends of the bench's database on the others, so that a
  worker has a core of its own as in production, where the calendar service and
  the database are other machines.
* ``cpu``: no-change sync jobs one at a time in this process (the job a worker
  runs, shared limits and all), their CPU time, optionally under cProfile.
* ``storm``: ``crmcal serve`` (enqueue only) and workers; every connection is
  queued at once and meanwhile events are renamed in a sample of calendars: how
  long from the rename (the emulator notifies crmcal's webhook) until the CRM
  activity carries the new title.

    python -m bench.queue_workers rounds --connections 1000 10000 --workers 1 2 4
    python -m bench.queue_workers rounds --connections 1000 --workers 1 --no-change-only --pin
    python -m bench.queue_workers cpu --connections 200 --profile /tmp/sync.prof
    python -m bench.queue_workers storm --connections 1000 --workers 2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import datetime as dt
import functools
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import procrastinate
import psycopg
from sqlalchemy import insert, select
from sqlalchemy.engine import make_url

# `python bench/<script>.py` puts bench/ itself first on the path; the checkout
# above it is where `bench.*` comes from (`python -m bench.<script>` needs no help).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.benchkit import free_port
from bench.cpu_parties import Parties, Pinning, postmaster_of
from bench.pg_reads import Snapshot, describe
from crmcal import migrations
from crmcal.config import Settings
from crmcal.crm.schemas import default_permissions
from crmcal.crm.tables import User, utcnow
from crmcal.db import Database
from crmcal.jobs.queue import conninfo, defer_sync, ensure_schema, queue_app
from crmcal.sync.tables import Connection
from crmcal.vault import Vault

SECRET = "bench-7Qm2Zx9Lp4Rt8Vw1Ky6Hn3Jd5Fs0Ga"  # noqa: S105  # a bench database of its own
SERVER = os.environ.get("CRMCAL_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
# Syncs each worker runs at once: 8 keeps 4 workers and a server inside PostgreSQL's
# default 100 connections (see docs/scaling.md, sizing).
CONCURRENCY = 8
# Where push channels point when no crmcal server runs: nothing listens there, so the
# emulator's deliveries fail at once instead of queueing extra syncs.
NOWHERE = "http://127.0.0.1:9"


def email_of(n: int) -> str:
    return f"bench{n}@example.test"


def refresh_of(n: int) -> str:
    return f"bench-refresh-{n}"


def event_id_of(n: int) -> str:
    return f"bench{n:08d}"  # Google's alphabet: base32hex


def sql(url: str, text: str, *args: Any) -> list[tuple[Any, ...]]:
    """One statement on a connection of its own; a server at its connection limit
    (shared with other work) is asked again for up to five minutes."""
    deadline = time.monotonic() + 300
    while True:
        try:
            with psycopg.connect(conninfo(url), autocommit=True) as conn:
                cursor = conn.execute(text, args)
                return cursor.fetchall() if cursor.description else []
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """A process's resident memory now, or at its peak so far with ``VmHWM``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load() -> str:
    return f"{os.getloadavg()[0]:.1f}"


# --- the emulator, in a process of its own ------------------------------------------------


def serve_emulator(accounts: int, port: int) -> None:
    """The Google emulator with ``accounts`` accounts made in-process, and a bench route
    that writes events straight into the state (pushes go out as for API writes)."""
    import uvicorn
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    from crmcal.emulators.google import GoogleState, create_app

    state = GoogleState()
    for n in range(accounts):
        state.create_account(email_of(n))
        state.refresh_tokens[refresh_of(n)] = email_of(n)
    app = create_app(state)

    async def write_events(request: Request) -> JSONResponse:
        """One event per calendar ``first`` .. ``first + count - 1``: made, or renamed."""
        body = await request.json()
        start = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=2)
        for n in range(body["first"], body["first"] + body["count"]):
            calendar = state.calendars[email_of(n)]
            event_id = event_id_of(n)
            if event_id in calendar.events:
                state.patch(calendar, event_id, {"summary": body["summary"]}, None)
            else:
                state.insert(calendar, {
                    "id": event_id, "summary": body["summary"],
                    "start": {"dateTime": start.isoformat()},
                    "end": {"dateTime": (start + dt.timedelta(hours=1)).isoformat()},
                })  # fmt: skip
        return JSONResponse({"written": body["count"]})

    # A plain route: the bench's own, not part of the emulated API.
    app.router.add_route("/_bench/events", write_events, methods=["POST"])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


class Emulator:
    def __init__(self, workdir: Path, accounts: int, pin: Pinning | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        log = (workdir / "emulator.log").open("wb")
        command = [sys.executable, "-m", "bench.queue_workers", "emulator",
                   "--accounts", str(accounts), "--port", str(self.port)]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                        preexec_fn=pin.rest_preexec if pin else None)  # fmt: skip
        wait_for(self.url + "/_emulator/requests", self.process)

    def write_events(self, first: int, count: int, summary: str) -> None:
        answer = httpx.post(self.url + "/_bench/events", timeout=600,
                            json={"first": first, "count": count, "summary": summary})  # fmt: skip
        answer.raise_for_status()

    def requests(self) -> dict[str, int]:
        """The requests the emulator answered so far, by kind (``oauth.token`` ...)."""
        answer = httpx.get(self.url + "/_emulator/requests", timeout=600)
        answer.raise_for_status()
        return {str(kind): int(count) for kind, count in answer.json().items()}

    def stop(self) -> None:
        stop(self.process)


def wait_for(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 300
    while True:
        try:
            httpx.get(url, timeout=30)
            return
        except httpx.HTTPError:
            if process.poll() is not None:
                raise RuntimeError(f"{process.args!r} ended with {process.returncode}") from None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# --- the database ---------------------------------------------------------------------------


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    name = f"crmcal_bench_{uuid.uuid4().hex[:10]}"
    sql(SERVER, f'CREATE DATABASE "{name}"')
    try:
        url = make_url(SERVER).set(drivername="postgresql+psycopg", database=name)
        db_url = url.render_as_string(hide_password=False)
        migrations.upgrade(db_url)
        ensure_schema(db_url)
        yield db_url
    finally:
        sql(SERVER, f'DROP DATABASE "{name}" WITH (FORCE)')


async def seed(url: str, count: int) -> None:
    """``count`` users with a Google connection each, in bulk inserts."""
    db = Database(url)
    vault = Vault(SECRET)
    now = utcnow()
    permissions = default_permissions()
    try:
        async with db.write() as session:
            for first in range(0, count, 2000):
                part = range(first, min(first + 2000, count))
                await session.execute(insert(User), [
                    {"email": email_of(n), "name": f"Bench {n}", "is_admin": False,
                     "permissions": permissions, "timezone": "UTC", "active": True}
                    for n in part
                ])  # fmt: skip
            ids = {email: id_ for email, id_ in await session.execute(select(User.email, User.id))}
            for first in range(0, count, 2000):
                part = range(first, min(first + 2000, count))
                await session.execute(insert(Connection), [
                    {"user_id": ids[email_of(n)], "provider": "google", "account": email_of(n),
                     "username": None, "credentials": vault.seal(refresh_of(n)),
                     "calendar_id": email_of(n), "calendar_name": email_of(n),
                     "sync_type": "two_way", "options": {}, "state": "active",
                     "connected_at": now, "counts": {}, "problems": [], "failures": 0,
                     "next_sync_at": now + dt.timedelta(days=1)}
                    for n in part
                ])  # fmt: skip
    finally:
        await db.dispose()


def worker_env(db_url: str, emulator: Emulator, base_url: str = NOWHERE) -> dict[str, str]:
    return {**os.environ, "CRMCAL_DATABASE_URL": db_url, "CRMCAL_SECRET_KEY": SECRET,
            "CRMCAL_GOOGLE_API_URL": emulator.url, "CRMCAL_GOOGLE_OAUTH_URL": emulator.url,
            "CRMCAL_BASE_URL": base_url, "CRMCAL_POLL_SECONDS": "86400",
            "CRMCAL_ALLOW_PRIVATE_NETWORKS": "1"}  # fmt: skip


# Jobs the bench queues at once, as a poll tick of crmcal's does (``defer_syncs``).
QUEUE_BATCH = 1000


async def queue_all(url: str) -> int:
    """Queue a sync of every connection: in batches of ``QUEUE_BATCH`` (each job with
    its own queueing lock), as crmcal's poll queues the due connections, or one at a
    time with a crmcal that queues so (``CRMCAL_BENCH_ONE_AT_A_TIME=1`` too)."""
    from crmcal.jobs import queue

    batch = getattr(queue, "defer_syncs", None)
    if os.environ.get("CRMCAL_BENCH_ONE_AT_A_TIME") == "1":
        batch = None
    app = queue_app(url)
    async with app.open_async():
        ids = [row[0] for row in sql(url, "SELECT id FROM connections ORDER BY id")]
        for first in range(0, len(ids), QUEUE_BATCH):
            part = ids[first : first + QUEUE_BATCH]
            if batch is not None:
                await batch(app, part)
            else:
                for connection_id in part:
                    await defer_sync(app, connection_id)
            # Jobs queued by a script count towards no worker's ANALYZE
            # (docs/scaling.md): with autovacuum off, 10,000 jobs in a table never
            # analyzed make each fetch take seconds, and the round would measure
            # the planner, not crmcal. As the workers do after 1,000 jobs queued.
            sql(url, "ANALYZE procrastinate_jobs")
    return len(ids)


def ended_since(url: str, since: int) -> int:
    """Syncs ended since sync run id ``since``."""
    return int(sql(url, "SELECT count(*) FROM sync_runs "
                   "WHERE id > %s AND ended_at IS NOT NULL", since)[0][0])  # fmt: skip


def last_run(url: str) -> int:
    return int(sql(url, "SELECT coalesce(max(id), 0) FROM sync_runs")[0][0])


def wait_done(url: str, count: int, since: int, timeout: float = 7200) -> int:
    """Until ``count`` syncs have ended since sync run id ``since``, or no sync job is
    left in the queue, waiting or running (a job that failed before its sync began
    records no run; a first sync that opened a push channel queues one more, which the
    round does not wait for); answers how many ended. Asks on one connection (a new one
    each look would cost the database a backend's start five times a second). Whether a
    job is left reads one entry of the queue's index of waiting and running jobs; the
    round's runs are counted once a second only: counted at each look, five times a
    second, they cost the bench's database CPU that grew with the round (ten times the
    rows a sync at 10,000 connections as at 1,000), on the core the database shares
    with the emulator."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(conninfo(url), autocommit=True) as conn:

        def ended() -> int:
            found = conn.execute("SELECT count(*) FROM sync_runs "
                                 "WHERE id > %s AND ended_at IS NOT NULL", (since,))  # fmt: skip
            return int(found.fetchall()[0][0])

        looks = 0
        while True:
            left = conn.execute(
                "SELECT 1 FROM procrastinate_jobs WHERE queue_name = 'sync' "
                "AND status IN ('todo', 'doing') LIMIT 1"
            ).fetchall()
            if not left:
                return ended()
            looks += 1
            if looks % 5 == 0 and (done := ended()) >= count:
                return done
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {ended()} of {count} syncs ended")
            time.sleep(0.2)


def failed(url: str, since: int) -> int:
    """Runs since ``since`` that ended other than ok (one still running is not one)."""
    return int(sql(url, "SELECT count(*) FROM sync_runs WHERE id > %s "
                   "AND outcome NOT IN ('ok', 'running')", since)[0][0])  # fmt: skip


def failures(url: str, since: int) -> list[tuple[str, str, int]]:
    """Why the runs since ``since`` that did not end ok ended so: (outcome, error, count)."""
    rows = sql(url, "SELECT outcome, left(coalesce(error, ''), 300), count(*) FROM sync_runs "
               "WHERE id > %s AND outcome NOT IN ('ok', 'running') GROUP BY 1, 2 "
               "ORDER BY 3 DESC", since)  # fmt: skip
    return [(str(outcome), str(error), int(count)) for outcome, error, count in rows]


def settle(url: str) -> None:
    """After the first syncs: each opened a push channel, which makes its connection due
    again at once (changes made while the channel opened would go unnotified), and the
    workers' poll ticks queue those syncs 50 at a time. Nothing changes in between here,
    so they are no-change syncs that would run inside the next rounds and be counted
    there: their connections are made due a day later instead, and the syncs already
    queued run to their end before the next round begins."""
    sql(url, "UPDATE connections SET next_sync_at = (now() AT TIME ZONE 'utc') + "
        "interval '1 day'")  # fmt: skip
    while sql(url, "SELECT count(*) FROM procrastinate_jobs "
              "WHERE queue_name = 'sync' AND status IN ('todo', 'doing')")[0][0]:  # fmt: skip
        time.sleep(0.5)
    # The queue's rows all die within seconds of their birth; autovacuum (on by default,
    # off on some test servers) clears them about once a minute. Without it, the dead
    # entries of the earlier rounds' jobs stay in the index each fetch walks from its
    # start: work that grows with every round, which the next round would be charged.
    sql(url, "VACUUM (ANALYZE) procrastinate_jobs, procrastinate_events")


class Round:
    """One round of syncs of every connection: wall time, and the workers' CPU and memory."""

    def __init__(
        self,
        url: str,
        procs: list[subprocess.Popen[bytes]],
        count: int,
        emulator: Emulator | None = None,
        pin: Pinning | None = None,
    ) -> None:
        asked = emulator.requests() if emulator is not None else {}
        since = last_run(url)
        cpu = [cpu_seconds(p.pid) for p in procs]
        parties = Parties(
            database=str(make_url(url).database), postmaster=postmaster(url),
            workers=[p.pid for p in procs], pin=pin,
            emulator=emulator.process.pid if emulator is not None else None,
        )  # fmt: skip
        reads = Snapshot.take(conninfo(url))
        self.load = load()
        started = time.perf_counter()
        with parties.sampling():
            asyncio.run(queue_all(url))
            self.queued = time.perf_counter() - started
            # The bench queues the round's jobs one at a time while the workers run
            # them (its process and its backends beside theirs on the machine): the
            # rate once all are queued is the workers' with a full queue.
            self.ended_when_queued = ended_since(url, since)
            ended = wait_done(url, count, since)
            self.wall = time.perf_counter() - started
        self.cpu = sum(cpu_seconds(p.pid) - before for p, before in zip(procs, cpu, strict=True))
        self.parties = parties.spent()
        self.workers = len(procs)
        self.load_after = load()
        self.rss = max(rss_mb(p.pid) for p in procs)
        self.rss_all = [rss_mb(p.pid) for p in procs]
        self.peak_all = [rss_mb(p.pid, "VmHWM") for p in procs]  # since the worker began
        self.failed = failed(url, since) + max(0, count - ended)  # failed, or never began
        self.reasons = failures(url, since)
        self.count = count
        self.ended = ended
        # What the round cost PostgreSQL in buffers and rows, table by table.
        self.reads = Snapshot.take(conninfo(url)).since(reads, count)
        # Requests the calendar service answered during the round, by kind.
        self.requests: dict[str, int] = {}
        if emulator is not None:
            after = emulator.requests()
            self.requests = {kind: n - asked.get(kind, 0) for kind, n in after.items()
                             if n > asked.get(kind, 0)}  # fmt: skip

    def by_party(self) -> str:
        """CPU ms a sync by party, and how busy the workers kept their cores."""
        ms = {name: 1000 * cpu / self.count for name, cpu in self.parties.items()}
        busy = 100 * self.parties["worker"] / self.wall / max(1, self.workers)
        after = self.ended - self.ended_when_queued
        full = after / (self.wall - self.queued) if self.wall > self.queued else 0.0
        return (f"CPU ms a sync: worker {ms['worker']:.2f}, emulator {ms['emulator']:.2f}, "
                f"PostgreSQL for the worker {ms['pg_worker']:.2f}, for the bench "
                f"{ms['pg_bench']:.2f}, its background (all databases) {ms['pg_shared']:.2f}, "
                f"bench {ms['bench']:.2f}; each worker busy {busy:.0f} % of the wall time; "
                f"jobs queued in {self.queued:.1f} of {self.wall:.1f} s, then {after} syncs "
                f"at {full:.0f} a second (load {self.load} -> {self.load_after})")  # fmt: skip

    def cells(self, workers: int) -> str:
        rate = self.count / self.wall
        return (f"{rate:.0f} | {rate / workers:.0f} | {1000 * self.cpu / self.count:.1f} | "
                f"{self.count / self.cpu:.0f}")  # fmt: skip


@functools.cache
def postmaster(url: str) -> int:
    """The pid of the PostgreSQL server's postmaster (the server runs on this machine)."""
    with psycopg.connect(conninfo(url)) as conn:  # its backend's parent, while it lives
        return postmaster_of(conn.info.backend_pid)


def start_workers(
    env: dict[str, str],
    workers: int,
    workdir: Path,
    concurrency: int = CONCURRENCY,
    pin: Pinning | None = None,
    probe: str | None = None,
) -> list[subprocess.Popen[bytes]]:
    """``probe``: each worker runs beside ``bench.memory_probe``, writing to that folder."""
    procs = []
    program = ["-m", "bench.memory_probe", probe] if probe else ["-m", "crmcal"]
    for n in range(workers):
        log = (workdir / f"worker{n}.log").open("wb")
        procs.append(subprocess.Popen(
            [sys.executable, *program, "worker", "--concurrency", str(concurrency)],
            env=env, stdout=log, stderr=subprocess.STDOUT,
            preexec_fn=pin.worker_preexec if pin else None))  # fmt: skip
    return procs


def rounds(
    connections: int,
    workers: int,
    workdir: Path,
    concurrency: int = CONCURRENCY,
    changed_round: bool = True,
    pin: Pinning | None = None,
    probe: str | None = None,
) -> dict[str, Any]:
    with fresh_database() as db_url:
        emulator = Emulator(workdir, connections, pin)
        procs: list[subprocess.Popen[bytes]] = []
        try:
            if pin is not None:
                pin.bench()
            started = time.perf_counter()
            asyncio.run(seed(db_url, connections))
            seeded = time.perf_counter() - started
            env = worker_env(db_url, emulator)
            procs = start_workers(env, workers, workdir, concurrency, pin, probe)
            first = Round(db_url, procs, connections, emulator, pin)
            settle(db_url)
            unchanged = Round(db_url, procs, connections, emulator, pin)
            changed = None
            if changed_round:
                emulator.write_events(0, connections, "one change")
                changed = Round(db_url, procs, connections, emulator, pin)
            noop = None
            if workers == 1:
                for proc in procs:
                    stop(proc)
                procs = []
                noop = asyncio.run(queue_overhead(db_url, 2000, concurrency, watch=True))
            return {"seeded": seeded, "first": first, "unchanged": unchanged,
                    "changed": changed, "noop": noop}  # fmt: skip
        finally:
            for proc in procs:
                stop(proc)
            emulator.stop()
            if pin is not None:
                pin.undo()


# --- the queue's own cost -------------------------------------------------------------------


async def queue_overhead(
    url: str, jobs: int, concurrency: int = CONCURRENCY, watch: bool = False
) -> dict[str, float]:
    """Jobs per second and CPU per job of a bare procrastinate no-op task on a worker
    of ``concurrency`` (deferred first, then drained), in this process; ``watch``: also
    the CPU per job of the PostgreSQL backends that served it (``pg_ms``)."""
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=conninfo(url)))

    @app.task(name="bench.noop", queue="bench")
    async def noop() -> None:
        return None

    async with app.open_async():
        for _ in range(jobs):
            await noop.defer_async()
        parties = this_process(url) if watch else None
        cpu, started = time.process_time(), time.perf_counter()
        with parties.sampling() if parties is not None else contextlib.nullcontext():
            await app.run_worker_async(
                queues=["bench"],
                concurrency=concurrency,
                wait=False,
                install_signal_handlers=False,
                delete_jobs="successful",
            )
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    found = {"rate": jobs / wall, "cpu_ms": 1000 * cpu / jobs, "load": float(load())}
    if parties is not None:
        found["pg_ms"] = 1000 * parties.spent()["pg_worker"] / jobs
    return found


def this_process(url: str) -> Parties:
    """The CPU of this process and of the backends its connections to ``url`` use."""
    return Parties(database=str(make_url(url).database), postmaster=postmaster(url),
                   workers=[os.getpid()], emulator=None)  # fmt: skip


# --- no-change syncs in this process ----------------------------------------------------------


async def cpu_per_sync(db_url: str, emulator: Emulator, connections: int, repeat: int,
                       profile: str | None, database_ms: list[float]) -> list[float]:  # fmt: skip
    """CPU ms a job by round; ``database_ms`` gets the CPU ms a job of the PostgreSQL
    backends serving this process over all rounds."""
    import types

    from crmcal.jobs.queue import Runtime, sync_connection

    settings = Settings.from_env(worker_env(db_url, emulator))
    db = Database(db_url)
    app = queue_app(db_url)
    runtime = Runtime(db=db, vault=Vault(SECRET), settings=settings, app=app)
    # The job a worker runs, with the context procrastinate hands it.
    context: Any = types.SimpleNamespace(additional_context={"crmcal": runtime})
    ids = [row[0] for row in sql(db_url, "SELECT id FROM connections ORDER BY id")]
    try:
        for connection_id in ids:  # first syncs
            await sync_connection(context, connection_id)
        per_round = []
        profiler = cProfile.Profile(time.process_time) if profile else None
        parties = this_process(db_url)
        for _ in range(repeat):
            cpu = time.process_time()
            if profiler:
                profiler.enable()
            for connection_id in ids:
                await sync_connection(context, connection_id)
            if profiler:
                profiler.disable()
            per_round.append(1000 * (time.process_time() - cpu) / len(ids))
        database_ms.append(1000 * parties.spent()["pg_worker"] / (repeat * len(ids)))
        if profiler and profile:
            profiler.dump_stats(profile)
        return per_round
    finally:
        await db.dispose()


def python_reference() -> float:
    """CPU ms of a fixed piece of plain Python (dicts, strings, JSON, small calls): what
    the machine gives the interpreter in these minutes."""
    import json

    def step(n: int) -> dict[str, Any]:
        return {"id": f"event-{n}", "n": n, "tags": [str(n), "x" * (n % 7)]}

    started = time.process_time()
    for n in range(20_000):
        json.loads(json.dumps(step(n)))
    return 1000 * (time.process_time() - started)


async def round_trip_reference(db_url: str, count: int = 2000) -> float:
    """CPU µs of one PostgreSQL round trip (``SELECT 1`` on an asyncio psycopg connection
    in autocommit): the sockets, system calls and wake-ups each of a job's exchanges
    with the database and the calendar service pays, whatever its code."""
    async with await psycopg.AsyncConnection.connect(conninfo(db_url), autocommit=True) as conn:
        await conn.execute("SELECT 1")
        started = time.process_time()
        for _ in range(count):
            await conn.execute("SELECT 1")
        return 1e6 * (time.process_time() - started) / count


def cpu_mode(connections: int, repeat: int, profile: str | None, workdir: Path) -> None:
    with fresh_database() as db_url:
        emulator = Emulator(workdir, connections)
        try:
            asyncio.run(seed(db_url, connections))
            python_ms = python_reference()
            trip_us = asyncio.run(round_trip_reference(db_url))
            database_ms: list[float] = []
            found = asyncio.run(
                cpu_per_sync(db_url, emulator, connections, repeat, profile, database_ms)
            )
        finally:
            emulator.stop()
    print(f"no-change sync job, one at a time in one process, {connections} connections: "
          f"CPU ms per sync by round {', '.join(f'{c:.1f}' for c in found)}; PostgreSQL's "
          f"backends {database_ms[0]:.2f} ms a sync (load {load()})")  # fmt: skip
    # Figures of other days compare only with these beside them: the same code has
    # measured twice as much CPU a job on one day as on another.
    print(f"  the machine in these minutes: a fixed piece of Python {python_ms:.0f} ms of CPU, "
          f"a PostgreSQL round trip {trip_us:.0f} µs of CPU")  # fmt: skip


# --- push-to-CRM latency under a storm ----------------------------------------------------------


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, round(0.95 * len(ordered)) - 1)]


def storm(connections: int, workers: int, samples: int, workdir: Path) -> dict[str, Any]:
    with fresh_database() as db_url:
        emulator = Emulator(workdir, connections)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = worker_env(db_url, emulator, base_url=base)
        procs: list[subprocess.Popen[bytes]] = []
        server = None
        try:
            asyncio.run(seed(db_url, connections))
            emulator.write_events(0, connections, "before")
            log = (workdir / "server.log").open("wb")
            server = subprocess.Popen(
                [sys.executable, "-m", "crmcal", "serve", "--port", str(port)],
                env=env, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
            wait_for(base + "/healthz", server)
            procs = start_workers(env, workers, workdir)
            Round(db_url, procs, connections)  # first syncs: activities and push channels
            # The storm: every connection queued at once; meanwhile, one calendar event
            # after another renamed, each timed until its activity has the new title.
            since = last_run(db_url)
            loader = subprocess.Popen([sys.executable, "-c", (
                "import asyncio, sys; from bench.queue_workers import queue_all; "
                "asyncio.run(queue_all(sys.argv[1]))"), db_url])  # fmt: skip
            step = max(1, connections // samples)
            latencies = []
            busy = []
            for k in range(samples):
                n = (k * step) % connections
                title = f"renamed {k}"
                started = time.perf_counter()
                emulator.write_events(n, 1, title)
                while not sql(db_url, "SELECT 1 FROM activities WHERE subject = %s", title):
                    time.sleep(0.02)
                latencies.append(time.perf_counter() - started)
                running = sql(db_url, "SELECT count(*) FROM sync_runs WHERE id > %s", since)
                busy.append(int(running[0][0]))
            loader.wait()
            storm_syncs = last_run(db_url) - since
            return {"p50": statistics.median(latencies), "p95": p95(latencies),
                    "max": max(latencies), "syncs_during": busy[-1] - busy[0],
                    "storm_syncs": storm_syncs, "load": load()}  # fmt: skip
        finally:
            for proc in procs:
                stop(proc)
            if server is not None:
                stop(server)
            emulator.stop()


# --- the command --------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    r = commands.add_parser("rounds")
    r.add_argument("--connections", type=int, nargs="+", default=[1000])
    r.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    r.add_argument("--concurrency", type=int, default=CONCURRENCY)
    r.add_argument("--no-change-only", action="store_true",
                   help="skip the round with one change in each calendar")  # fmt: skip
    r.add_argument("--pin", action="store_true",
                   help="the workers on the last core; the emulator, this process and the "
                   "backends of the bench's database on the others")  # fmt: skip
    r.add_argument("--probe", metavar="FOLDER",
                   help="run each worker beside bench.memory_probe, which writes what it "
                   "holds at each new peak of its resident memory into FOLDER")  # fmt: skip
    c = commands.add_parser("cpu")
    c.add_argument("--connections", type=int, default=200)
    c.add_argument("--repeat", type=int, default=3)
    c.add_argument("--profile")
    s = commands.add_parser("storm")
    s.add_argument("--connections", type=int, default=1000)
    s.add_argument("--workers", type=int, default=2)
    s.add_argument("--samples", type=int, default=40)
    e = commands.add_parser("emulator")
    e.add_argument("--accounts", type=int, required=True)
    e.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    if args.command == "emulator":
        serve_emulator(args.accounts, args.port)
        return
    with tempfile.TemporaryDirectory(dir=os.environ.get("CRMCAL_BENCH_KEEP")) as tmp:
        workdir = Path(tmp)
        if args.command == "cpu":
            cpu_mode(args.connections, args.repeat, args.profile, workdir)
        elif args.command == "storm":
            found = storm(args.connections, args.workers, args.samples, workdir)
            print(f"push-to-CRM latency, {args.connections} connections syncing, "
                  f"{args.workers} workers: p50 {found['p50']:.2f} s, p95 {found['p95']:.2f} s, "
                  f"max {found['max']:.2f} s; {found['storm_syncs']} syncs in the storm, "
                  f"{found['syncs_during']} of them while the samples ran "
                  f"(load {found['load']})")  # fmt: skip
        else:
            concurrency = args.concurrency
            pin = Pinning() if args.pin else None
            print(
                f"workers of concurrency {concurrency}; CPU is the workers' own"
                + (
                    f"; workers pinned to cores {sorted(pin.worker)}, the emulator, the "
                    f"bench and its database's backends to {sorted(pin.rest)}"
                    if pin
                    else ""
                )
            )
            print("| connections | workers | round | syncs/s | per worker | worker CPU ms "
                  "per sync | syncs per CPU s | failed | RSS (peak so far) per worker MB | "
                  "load |")  # fmt: skip
            print("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|")
            for connections in args.connections:
                for workers in args.workers:
                    found = rounds(connections, workers, workdir, concurrency,
                                   changed_round=not args.no_change_only, pin=pin,
                                   probe=args.probe)  # fmt: skip
                    named = [("first", found["first"]), ("no change", found["unchanged"]),
                             ("one change", found["changed"])]  # fmt: skip
                    for name, one in named:
                        if one is None:
                            continue
                        row = f"| {connections} | {workers} | {name} | {one.cells(workers)} | "
                        sizes = zip(one.rss_all, one.peak_all, strict=True)
                        rss = "/".join(f"{mb:.0f} ({peak:.0f})" for mb, peak in sizes)
                        print(f"{row}{one.failed} | {rss} | {one.load} |", flush=True)
                    for name, one in named:
                        if one is not None:
                            print(f"  {name}: {one.by_party()}", flush=True)
                    for name, one in named:
                        if one is not None:
                            print(f"  {name}: {describe(one.reads)}", flush=True)
                    for name, one in named:
                        if one is not None and one.requests:
                            asked = ", ".join(
                                f"{kind} {n}" for kind, n in sorted(one.requests.items())
                            )
                            print(
                                f"  {name}: requests answered by the emulator: {asked}", flush=True
                            )
                    for name, one in named:
                        for outcome, error, count in one.reasons if one is not None else []:
                            print(f"  {name}: {count} x {outcome}: {error}", flush=True)
                    print(f"  set-up of {connections} users and connections: "
                          f"{found['seeded']:.1f} s", flush=True)  # fmt: skip
                    if found["noop"]:
                        noop, job = found["noop"], found["unchanged"]
                        job_ms = 1000 * job.cpu / job.count
                        print(f"  bare procrastinate no-op job (concurrency {concurrency}): "
                              f"{noop['rate']:.0f} jobs/s, {noop['cpu_ms']:.2f} ms CPU a job; "
                              f"a no-change sync job {job_ms:.1f} ms "
                              f"({job_ms / noop['cpu_ms']:.1f}x; the queue's share "
                              f"{100 * noop['cpu_ms'] / job_ms:.0f} %); PostgreSQL "
                              f"{noop.get('pg_ms', 0):.2f} ms CPU a no-op job "
                              f"(load {noop['load']:.1f})", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
