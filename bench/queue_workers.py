"""Syncs per second and memory of ``crmcal worker`` processes on the queue (PostgreSQL),
against a Google Calendar emulator in a process of its own.

For each worker count it makes a fresh database with N connections (one Google account
each), runs one round of first syncs, then times two rounds of syncs of every
connection queued at once: with no change, and with one new event in each calendar.
The figures are connections synced per second (all workers together, and per
worker), and each worker's resident memory at the end. It also times procrastinate's
own cost: a no-op job through the same queue.

    python bench/queue_workers.py --connections 1000 --workers 1 2 4
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import procrastinate
import psycopg
from bench.benchkit import free_port
from sqlalchemy.engine import make_url

from crmcal import migrations
from crmcal.crm import users
from crmcal.crm.schemas import UserCreate
from crmcal.db import Database
from crmcal.jobs.queue import conninfo, defer_sync, ensure_schema, queue_app
from crmcal.sync.tables import Connection
from crmcal.vault import Vault

SECRET = "bench-7Qm2Zx9Lp4Rt8Vw1Ky6Hn3Jd5Fs0Ga"  # noqa: S105  # a bench database of its own
SERVER = os.environ.get("CRMCAL_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


def sql(url: str, text: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        cursor = conn.execute(text, args)  # type: ignore[arg-type]
        return cursor.fetchall() if cursor.description else []


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Emulator:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        log = (workdir / "emulator.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "crmcal", "emulator", "google", "--port", str(self.port)],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(self.url + "/_emulator/requests", timeout=5)
                return
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def stop(self) -> None:
        os.kill(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=30)


async def seed(url: str, emulator: Emulator, count: int) -> list[tuple[str, str]]:
    """``count`` users with a Google connection each; answers (account, access token)."""
    accounts = []
    async with httpx.AsyncClient(base_url=emulator.url, timeout=60) as client:
        for n in range(count):
            email = f"bench{n}@example.test"
            tokens = (await client.post("/_emulator/accounts", json={"email": email})).json()
            accounts.append((email, tokens["refresh_token"], tokens["access_token"]))
    db = Database(url)
    vault = Vault(SECRET)
    now = dt.datetime.now(dt.UTC)
    try:
        async with db.write() as session:
            for email, refresh, _ in accounts:
                user, _ = await users.create_user(session, UserCreate(email=email, name=email))
                await session.flush()
                session.add(Connection(
                    user_id=user.id, provider="google", account=email, username=None,
                    credentials=vault.seal(refresh), calendar_id=email, calendar_name=email,
                    sync_type="two_way", options={}, state="active", connected_at=now,
                    counts={}, problems=[], failures=0,
                    next_sync_at=now + dt.timedelta(days=1),
                ))  # fmt: skip
    finally:
        await db.dispose()
    return [(email, access) for email, _, access in accounts]


async def queue_all(url: str) -> int:
    app = queue_app(url)
    async with app.open_async():
        ids = [row[0] for row in sql(url, "SELECT id FROM connections ORDER BY id")]
        for connection_id in ids:
            await defer_sync(app, connection_id)
    return len(ids)


def wait_done(url: str, count: int, since: int, timeout: float = 3600) -> None:
    """Until ``count`` syncs have ended since sync run id ``since``."""
    deadline = time.monotonic() + timeout
    while True:
        done = sql(url, "SELECT count(*) FROM sync_runs WHERE id > %s AND ended_at IS NOT NULL",
                   since)[0][0]  # fmt: skip
        if done >= count:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {done} of {count} syncs ended")
        time.sleep(0.2)


def last_run(url: str) -> int:
    return int(sql(url, "SELECT coalesce(max(id), 0) FROM sync_runs")[0][0])


async def add_events(emulator: Emulator, accounts: list[tuple[str, str]]) -> None:
    start = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    body = {"summary": "one change", "start": {"dateTime": start.isoformat()},
            "end": {"dateTime": (start + dt.timedelta(hours=1)).isoformat()}}  # fmt: skip
    async with httpx.AsyncClient(base_url=emulator.url, timeout=60) as client:
        for email, token in accounts:
            answer = await client.post(f"/calendar/v3/calendars/{email}/events", json=body,
                                       headers={"Authorization": f"Bearer {token}"})  # fmt: skip
            answer.raise_for_status()


def timed_round(url: str, count: int) -> float:
    since = last_run(url)
    started = time.perf_counter()
    asyncio.run(queue_all(url))
    wait_done(url, count, since)
    return time.perf_counter() - started


async def noop_rate(url: str, jobs: int) -> float:
    """Jobs per second of a bare procrastinate no-op task, one worker of concurrency 8."""
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=conninfo(url)))

    @app.task(name="bench.noop", queue="bench")
    async def noop() -> None:
        return None

    async with app.open_async():
        for _ in range(jobs):
            await noop.defer_async()
        started = time.perf_counter()
        await app.run_worker_async(queues=["bench"], concurrency=8, wait=False,
                                   install_signal_handlers=False, delete_jobs="always")  # fmt: skip
        return jobs / (time.perf_counter() - started)


def one_setup(connections: int, workers: int, workdir: Path) -> dict[str, Any]:
    name = f"crmcal_bench_{uuid.uuid4().hex[:10]}"
    sql(SERVER, f'CREATE DATABASE "{name}"')
    url = make_url(SERVER).set(drivername="postgresql+psycopg", database=name)
    db_url = url.render_as_string(hide_password=False)
    emulator = Emulator(workdir)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        migrations.upgrade(db_url)
        ensure_schema(db_url)
        accounts = asyncio.run(seed(db_url, emulator, connections))
        env = {**os.environ, "CRMCAL_DATABASE_URL": db_url, "CRMCAL_SECRET_KEY": SECRET,
               "CRMCAL_GOOGLE_API_URL": emulator.url, "CRMCAL_GOOGLE_OAUTH_URL": emulator.url,
               "CRMCAL_BASE_URL": emulator.url, "CRMCAL_POLL_SECONDS": "86400"}  # fmt: skip
        for n in range(workers):
            log = (workdir / f"worker{n}.log").open("wb")
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "crmcal", "worker", "--concurrency", "16"],
                env=env, stdout=log, stderr=subprocess.STDOUT))  # fmt: skip
        first = timed_round(db_url, connections)
        unchanged = timed_round(db_url, connections)
        asyncio.run(add_events(emulator, accounts))
        changed = timed_round(db_url, connections)
        memory = [rss_mb(p.pid) for p in procs]
        noop = asyncio.run(noop_rate(db_url, 2000)) if workers == 1 else None
        return {"connections": connections, "workers": workers, "first": first,
                "unchanged": unchanged, "changed": changed, "rss": memory,
                "noop": noop}  # fmt: skip
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        emulator.stop()
        sql(SERVER, f'DROP DATABASE "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, nargs="+", default=[1000])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()
    print("| connections | workers | first syncs/s | no change syncs/s | per worker | "
          "one change syncs/s | per worker | RSS per worker MB |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory(dir=os.environ.get("CRMCAL_BENCH_KEEP")) as tmp:
        for connections in args.connections:
            for workers in args.workers:
                r = one_setup(connections, workers, Path(tmp))
                n = r["connections"]
                print(f"| {n} | {workers} | {n / r['first']:.0f} | {n / r['unchanged']:.0f} | "
                      f"{n / r['unchanged'] / workers:.0f} | {n / r['changed']:.0f} | "
                      f"{n / r['changed'] / workers:.0f} | "
                      f"{max(r['rss']):.0f} |", flush=True)  # fmt: skip
                if r["noop"]:
                    print(f"  bare procrastinate no-op jobs/s (1 worker, concurrency 8): "
                          f"{r['noop']:.0f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
