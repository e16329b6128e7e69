"""The distributed queue (procrastinate) against the real PostgreSQL on 127.0.0.1: the
server only enqueues, a burst makes one job, workers run them, the schema is applied."""

from __future__ import annotations

import datetime as dt
import os
import random
from typing import Any

import pytest
from fastapi.testclient import TestClient

from crmcal.db import Database
from crmcal.sync.push import token_digest
from crmcal.sync.tables import Connection
from crmcal.vault import Vault
from crmcal.web.app import create_app
from tests.caldav_servers import CalDAVServer
from tests.cli_process import InProcess
from tests.conftest import Api, run
from tests.providers.harness import CalDAVHarness
from tests.queue_world import (  # noqa: F401
    SECRET,
    _user_with_connection,
    fresh_schema,
    query,
    queue_db,
    settings,
    sync_jobs,
)
from tests.served import wait_for

pytestmark = pytest.mark.postgres
V1 = "/api/v1"


def test_db_upgrade_applies_the_queue_schema_once(
    queue_db: str,  # noqa: F811
    crmcal_here: InProcess,
) -> None:
    with fresh_schema(queue_db) as database_url:
        _upgrade_twice(database_url, crmcal_here)


def _upgrade_twice(database_url: str, crmcal_here: InProcess) -> None:
    first = crmcal_here("db", "upgrade", CRMCAL_DATABASE_URL=database_url)
    assert first.returncode == 0, first.stderr
    assert "queue schema created" in first.stdout
    second = crmcal_here("db", "upgrade", CRMCAL_DATABASE_URL=database_url)
    assert "queue schema current" in second.stdout
    assert query(database_url, "SELECT count(*) FROM procrastinate_jobs") == [(0,)]


def test_the_server_only_enqueues_and_a_storm_makes_one_job(queue_db: str) -> None:  # noqa: F811
    channel = {"push_channel_id": "chan-1", "push_token": token_digest("secret-1"),
               "push_resource_id": "res-1"}  # fmt: skip
    user_id, token, connection_id = run(_user_with_connection(queue_db, **channel))
    app = create_app(settings(queue_db), jobs="queue")
    with TestClient(app) as client:
        alice = Api(client, token, user_id)
        start = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat()
        call = {"type": "call", "subject": "Call", "start": start}
        made = alice.post(f"{V1}/activities", json=call)
        assert made.status_code == 201, made.text
        # The CRM change becomes a queued sync (the change feed is watched) ...
        wait_for(lambda: sync_jobs(queue_db) == [f"connection:{connection_id}"])

        # ... and a storm of notifications finds it waiting: still one job.
        headers = {"X-Goog-Channel-Id": "chan-1", "X-Goog-Channel-Token": "secret-1",
                   "X-Goog-Resource-State": "exists"}  # fmt: skip
        answers = {client.post("/webhooks/google", headers=headers).status_code
                   for _ in range(100)}  # fmt: skip
        assert answers == {200}
        forged = client.post("/webhooks/google", headers={**headers, "X-Goog-Channel-Token": "x"})
        assert forged.status_code == 404
        graph = {"value": [{"subscriptionId": "res-1", "clientState": "secret-1"}] * 50}
        # (the connection is a Google one: the Graph webhook does not know its channel)
        assert client.post("/webhooks/microsoft", json=graph).status_code == 202
        assert sync_jobs(queue_db) == [f"connection:{connection_id}"]
        # The queue's depth and age are on /metrics.
        scraped = client.get("/metrics")
        assert scraped.status_code == 200
        assert 'crmcal_queue_jobs{queue="sync",status="todo"} 1.0' in scraped.text
        assert 'crmcal_queue_oldest_waiting_seconds{queue="sync"}' in scraped.text

    # Nothing synced in the server: the job waits for a worker.
    state = query(queue_db, "SELECT state, last_sync_at FROM connections WHERE id = %s",
                  connection_id)  # fmt: skip
    assert state == [("active", None)]


def test_a_graph_storm_through_the_webhook_makes_one_job(queue_db: str) -> None:  # noqa: F811
    """Graph's notifications, batched and repeated, for a Microsoft connection: one job;
    those naming its subscription with another secret, or another connection's
    subscription with its secret, none for anyone."""
    graph = {"provider": "microsoft", "push_resource_id": "sub-1",
             "push_token": token_digest("secret-1")}  # fmt: skip
    _, _, connection_id = run(_user_with_connection(queue_db, **graph))
    other = {**graph, "push_resource_id": "sub-2", "push_token": token_digest("secret-2")}
    _, _, other_id = run(_user_with_connection(queue_db, **other))
    ours = {f"connection:{connection_id}", f"connection:{other_id}"}

    def jobs() -> list[str]:  # the other tests of the session keep theirs in the same queue
        return [job for job in sync_jobs(queue_db) if job in ours]

    app = create_app(settings(queue_db), jobs="queue")
    with TestClient(app) as client:
        forged = [{"subscriptionId": "sub-1", "clientState": "secret-2"},
                  {"subscriptionId": "sub-2", "clientState": "secret-1"}]  # fmt: skip
        assert client.post("/webhooks/microsoft", json={"value": forged}).status_code == 202
        assert jobs() == []
        note = {"subscriptionId": "sub-1", "clientState": "secret-1", "changeType": "updated"}
        answers = {client.post("/webhooks/microsoft", json={"value": [note] * 20}).status_code
                   for _ in range(50)}  # fmt: skip
        assert answers == {202}
        assert jobs() == [f"connection:{connection_id}"]


def test_serve_with_worker_runs_the_queued_syncs_itself(
    queue_db: str,  # noqa: F811
    radicale: CalDAVServer,
) -> None:
    calendar = CalDAVHarness(radicale)
    db_user = run(_user_with_connection(queue_db))
    query(queue_db, "DELETE FROM connections")  # this user connects through the API
    app = create_app(settings(queue_db, worker_heartbeat=0.5), jobs="queue+worker")
    try:
        with TestClient(app) as client:
            sam = Api(client, db_user[1], db_user[0])
            body = {"provider": "caldav", "url": radicale.url, "username": radicale.username,
                    "password": radicale.password, "calendar_id": calendar.calendar_id}  # fmt: skip
            conn = sam.post(f"{V1}/connections", json=body)
            assert conn.status_code == 201, conn.text
            start = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat()
            sam.post(f"{V1}/activities", json={"type": "call", "subject": "Queued", "start": start})

            def on_the_calendar() -> bool:
                listing = run(calendar.provider.list_changes(calendar.calendar_id, None,
                                                             with_contents=True))  # fmt: skip
                return [r.event.summary for r in listing.changed if r.event] == ["Queued"]

            wait_for(on_the_calendar)
            status = sam.get(f"{V1}/connections/{conn.json()['id']}/status").json()
            assert status["last_error"] is None
    finally:
        run(calendar.close())


def test_worker_needs_postgresql(tmp_path: Any, crmcal_here: InProcess) -> None:
    done = crmcal_here("worker", CRMCAL_DATABASE_URL=f"sqlite:///{tmp_path / 'x.db'}")
    assert done.returncode == 1
    assert "needs a PostgreSQL" in done.stderr


def test_channel_renewal_leaves_a_connection_that_waits_for_its_user(
    queue_db: str,  # noqa: F811
) -> None:
    """A connection whose credentials were refused has no next sync: renewing its expiring
    push channel must not sync it behind the user's back (nor one that was stopped)."""
    from types import SimpleNamespace

    from crmcal.jobs.queue import Runtime, queue_app, renew_channels
    from crmcal.sync import limits

    soon = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)
    ids = {}
    cases: dict[str, dict[str, Any]] = {
        "active": {"state": "active"},
        "backing_off": {"state": "error", "failures": 2, "next_sync_at": later},
        "reconnect": {"state": "error", "failures": 1, "next_sync_at": None,
                      "last_error": "reconnect required: the password was refused"},
        "stopped": {"state": "stopped"},
    }  # fmt: skip
    for name, columns in cases.items():
        channel = {"push_channel_id": f"chan-{os.urandom(4).hex()}", "push_expires_at": soon,
                   "push_token": token_digest("s"), "push_resource_id": "r"}  # fmt: skip
        ids[name] = run(_user_with_connection(queue_db, **{**channel, **columns}))[2]

    async def renew() -> None:
        app = queue_app(queue_db, pool_size=2)
        db = Database(queue_db)
        try:
            async with app.open_async():
                runtime = Runtime(db=db, vault=Vault(SECRET), settings=settings(queue_db), app=app)
                context = SimpleNamespace(additional_context={"crmcal": runtime})
                await renew_channels(context, 0)  # type: ignore[arg-type]
        finally:
            limits.install(None)  # a Runtime installs its limits for the process
            await db.dispose()

    run(renew())
    queued = set(sync_jobs(queue_db))
    assert f"connection:{ids['active']}" in queued
    assert f"connection:{ids['backing_off']}" in queued
    assert f"connection:{ids['reconnect']}" not in queued
    assert f"connection:{ids['stopped']}" not in queued


def test_a_sync_someone_waits_for_goes_ahead_of_routine_ones(queue_db: str) -> None:  # noqa: F811
    """A push or an edit (urgent) runs before the polls already waiting, also when it
    finds its connection's routine sync queued: that one is moved ahead."""
    from crmcal.jobs.queue import URGENT, defer_sync, lock_of, queue_app

    a, b, c = (random.randrange(10**8, 10**9) for _ in range(3))

    async def scenario() -> list[bool]:
        app = queue_app(queue_db)
        async with app.open_async():
            return [
                await defer_sync(app, a),
                await defer_sync(app, b),
                await defer_sync(app, c, urgent=True),
                await defer_sync(app, a, urgent=True),  # already waiting: moved ahead
                await defer_sync(app, b),
            ]

    assert run(scenario()) == [True, True, True, False, False]
    rows = query(
        queue_db,
        "SELECT queueing_lock, priority FROM procrastinate_jobs WHERE queueing_lock = ANY(%s) "
        "AND status = 'todo'",
        [lock_of(a), lock_of(b), lock_of(c)],
    )
    assert sorted(rows) == sorted([(lock_of(a), URGENT), (lock_of(b), 0), (lock_of(c), URGENT)])


def test_a_throttled_accounts_sync_waits_in_the_queue(queue_db: str) -> None:  # noqa: F811
    """While a Google account is held after a throttling answer, its sync job is put back
    for the rest of the hold (read in the one query the job makes anyway); another
    account's job runs."""
    from crmcal.jobs import queue
    from crmcal.sync import limits

    name = os.urandom(4).hex()
    _, _, held_id = run(_user_with_connection(queue_db, account=f"Held-{name}@Example.test"))
    _, _, free_id = run(_user_with_connection(queue_db, account=f"free-{name}@example.test"))

    async def check() -> tuple[float, float]:
        db = Database(queue_db)
        try:
            runtime = queue.Runtime(db, Vault(SECRET), settings(queue_db), app=None)  # type: ignore[arg-type]
            assert runtime.limits is not None
            limit = runtime.limits.for_account("google", f"held-{name}@example.test")
            assert limit is not None
            await limit.throttled(120)
            held, _ = await queue._limits_of(runtime, held_id)
            free, _ = await queue._limits_of(runtime, free_id)
            return held, free
        finally:
            limits.install(None)
            await db.dispose()

    held, free = run(check())
    assert 60 < held <= 120
    assert free == 0


def test_a_sync_someone_waits_for_is_due_now_even_when_one_was_put_back(
    queue_db: str,  # noqa: F811
) -> None:
    """A push finding its connection's sync put back for later (a busy lease or CalDAV
    server) makes that one due now and urgent; a sync put back with a delay while one
    is waiting leaves that one's time as it was."""
    from crmcal.jobs.queue import URGENT, defer_sync, lock_of, queue_app

    later, waiting = (random.randrange(10**8, 10**9) for _ in range(2))

    async def scenario() -> list[bool]:
        app = queue_app(queue_db)
        async with app.open_async():
            return [
                await defer_sync(app, later, delay=600),
                await defer_sync(app, later, urgent=True),  # the push: due now
                await defer_sync(app, waiting),
                await defer_sync(app, waiting, delay=600, urgent=True),  # put back again
            ]

    assert run(scenario()) == [True, False, True, False]
    rows = query(
        queue_db,
        "SELECT queueing_lock, priority, scheduled_at IS NULL OR scheduled_at <= now() "
        "FROM procrastinate_jobs WHERE queueing_lock = ANY(%s) AND status = 'todo'",
        [lock_of(later), lock_of(waiting)],
    )
    assert sorted(rows) == sorted(
        [(lock_of(later), URGENT, True), (lock_of(waiting), URGENT, True)]
    )


@pytest.mark.parametrize("priority", [0, 10])
def test_a_sync_put_back_keeps_its_urgency(queue_db: str, priority: int) -> None:  # noqa: F811
    """A sync someone waits for that finds its account held is put back for the rest of
    the hold still ahead of routine syncs; a routine one stays routine."""
    import types

    from crmcal.jobs import queue
    from crmcal.sync import limits

    name = os.urandom(4).hex()
    _, _, held_id = run(_user_with_connection(queue_db, account=f"urgent-{name}@example.test"))

    async def scenario() -> None:
        db = Database(queue_db)
        app = queue.queue_app(queue_db)
        try:
            async with app.open_async():
                runtime = queue.Runtime(db, Vault(SECRET), settings(queue_db), app=app)
                assert runtime.limits is not None
                limit = runtime.limits.for_account("google", f"urgent-{name}@example.test")
                assert limit is not None
                await limit.throttled(120)
                job = types.SimpleNamespace(priority=priority)
                context: Any = types.SimpleNamespace(
                    additional_context={"crmcal": runtime}, job=job
                )
                await queue.sync_connection(context, held_id)
        finally:
            limits.install(None)
            await db.dispose()

    run(scenario())
    rows = query(
        queue_db,
        "SELECT priority, scheduled_at > now() + interval '60 seconds' FROM procrastinate_jobs "
        "WHERE queueing_lock = %s AND status = 'todo'",
        queue.lock_of(held_id),
    )
    assert rows == [(priority, True)]


def test_a_bulk_enqueue_leaves_the_queue_table_analyzed() -> None:
    """Polling that queues a thousand syncs and more has the queue's table analyzed: the
    planner then knows the jobs are there (a table never analyzed since it filled made
    each of procrastinate's fetches cost seconds). A database of its own, on a server
    whose autovacuum may be off, so the table starts without statistics."""
    from types import SimpleNamespace

    from sqlalchemy import insert, select

    from crmcal.crm.schemas import default_permissions
    from crmcal.crm.tables import User
    from crmcal.jobs.queue import ANALYZE_AFTER, Runtime, poll_due, queue_app
    from crmcal.sync import limits
    from tests.queue_world import fresh_database

    count = ANALYZE_AFTER + 100

    def statistics(url: str) -> tuple[float, Any]:
        rows = query(url, "SELECT c.reltuples, s.last_analyze FROM pg_class c "
                     "JOIN pg_stat_user_tables s ON s.relid = c.oid "
                     "WHERE c.oid = 'procrastinate_jobs'::regclass")  # fmt: skip
        return float(rows[0][0]), rows[0][1]

    async def seed_and_poll(url: str) -> int:
        db = Database(url)
        app = queue_app(url, pool_size=2)
        past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
        try:
            async with db.write() as session:
                await session.execute(insert(User), [
                    {"email": f"bulk{n}@crm.test", "name": f"Bulk {n}", "is_admin": False,
                     "permissions": default_permissions(), "timezone": "UTC", "active": True}
                    for n in range(count)
                ])  # fmt: skip
                owners = list(await session.scalars(select(User.id)))
                await session.execute(insert(Connection), [
                    {"user_id": owner, "provider": "google", "account": f"bulk{n}@example.test",
                     "username": None, "credentials": Vault(SECRET).seal("refresh"),
                     "calendar_id": "primary", "calendar_name": "Bulk", "sync_type": "two_way",
                     "options": {}, "state": "active", "counts": {}, "problems": [],
                     "failures": 0, "next_sync_at": past}
                    for n, owner in enumerate(owners)
                ])  # fmt: skip
            async with app.open_async():
                # A poll period that makes one tick queue every due connection.
                runtime = Runtime(db=db, vault=Vault(SECRET), app=app,
                                  settings=settings(url, poll_seconds=10))  # fmt: skip
                context = SimpleNamespace(additional_context={"crmcal": runtime})
                return await poll_due(context, 0)  # type: ignore[arg-type]
        finally:
            limits.install(None)  # a Runtime installs its limits for the process
            await db.dispose()

    with fresh_database() as url:
        before = statistics(url)
        polled = run(seed_and_poll(url))
        waiting = len(sync_jobs(url))
        after = statistics(url)
    assert before[0] < 1  # never analyzed (-1) or analyzed empty
    assert polled == waiting == count
    assert after[0] >= ANALYZE_AFTER, after
    assert after[1] is not None, after


def test_the_servers_bulk_of_syncs_for_crm_edits_leaves_the_queue_table_analyzed() -> None:
    """A CRM import touching a thousand owners and more makes the server queue their
    syncs at once: the queue's table is analyzed after them too."""
    from crmcal.jobs.enqueue import Enqueuer
    from crmcal.jobs.queue import ANALYZE_AFTER, queue_app
    from tests.queue_world import fresh_database

    async def flush(url: str) -> None:
        db = Database(url)
        app = queue_app(url, pool_size=2)
        try:
            async with app.open_async():
                enqueuer = Enqueuer(db, app)
                for connection_id in range(1, ANALYZE_AFTER + 1):
                    enqueuer.request(connection_id)
                await enqueuer.stop()  # what was asked for is queued
        finally:
            await db.dispose()

    with fresh_database() as url:
        run(flush(url))
        waiting = len(sync_jobs(url))
        tuples = query(url, "SELECT reltuples FROM pg_class "
                       "WHERE oid = 'procrastinate_jobs'::regclass")[0][0]  # fmt: skip
    assert waiting == ANALYZE_AFTER
    assert float(tuples) >= ANALYZE_AFTER


def test_a_database_lost_mid_sync_puts_the_job_back_and_counts_no_failure(
    queue_db: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An administrator's ``pg_terminate_backend`` (as a restart does) ends the worker's
    sessions while a sync runs: the sync stops, the connection is not failed nor backed
    off (nothing was wrong with it), and its job waits in the queue to run again."""
    from crmcal.jobs import queue
    from crmcal.sync import runner
    from tests.engine_world import event
    from tests.memory_provider import MemoryCalendar, MemoryProvider

    name = f"crmcal-lost-{os.urandom(4).hex()}"
    _, _, connection_id = run(
        _user_with_connection(queue_db, account=f"{name}@example.test", calendar_id="cal")
    )
    calendar = MemoryCalendar()
    calendar.put("e1", event("Call Ann"))  # its import writes the CRM after the listing

    class Restarting(MemoryProvider):
        async def list_changes(self, *args: Any, **kwargs: Any) -> Any:
            query(queue_db, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE application_name = %s", name)  # fmt: skip
            return await super().list_changes(*args, **kwargs)

    monkeypatch.setattr(runner, "open_provider", lambda *_a, **_k: Restarting(calendar))

    _sync_as_worker(queue_db, name, connection_id)
    rows = query(queue_db, "SELECT state, failures, last_error, locked_by FROM connections "
                           "WHERE id = %s", connection_id)  # fmt: skip
    assert rows == [("active", 0, None, None)]
    jobs = query(
        queue_db,
        "SELECT scheduled_at > now() FROM procrastinate_jobs WHERE queueing_lock = %s "
        "AND status = 'todo'",
        queue.lock_of(connection_id),
    )
    assert jobs == [(True,)]


def test_a_database_restarted_as_a_sync_ends_still_lets_its_lease_go(
    queue_db: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The worker's sessions are ended (a restart, ``pg_terminate_backend``) after the
    sync's last statement but for its release: the release's first try meets a dead
    connection, and its second, on a fresh one, frees the connection, instead of leaving
    it syncing until its lease runs out (every job of it put back meanwhile)."""
    from crmcal.sync import runner
    from tests.memory_provider import MemoryCalendar, MemoryProvider

    name = f"crmcal-end-{os.urandom(4).hex()}"
    _, _, connection_id = run(
        _user_with_connection(queue_db, account=f"{name}@example.test", calendar_id="cal")
    )

    class Restarting(MemoryProvider):
        async def close(self) -> None:  # the sync's work is done: only the release is left
            query(queue_db, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE application_name = %s", name)  # fmt: skip
            await super().close()

    monkeypatch.setattr(runner, "open_provider", lambda *_a, **_k: Restarting(MemoryCalendar()))

    _sync_as_worker(queue_db, name, connection_id)
    rows = query(queue_db, "SELECT state, failures, locked_by FROM connections WHERE id = %s",
                 connection_id)  # fmt: skip
    assert rows == [("active", 0, None)]
    runs = query(queue_db, "SELECT outcome FROM sync_runs WHERE connection_id = %s",
                 connection_id)  # fmt: skip
    assert runs == [("ok",)]


def _sync_as_worker(url: str, name: str, connection_id: int) -> None:
    """Run the queue's sync job of ``connection_id`` once, as a worker whose database
    sessions carry ``name`` as their application name (so a test can end only them)."""
    import types

    from sqlalchemy.engine import make_url

    from crmcal.jobs import queue
    from crmcal.sync import limits

    worker_url = make_url(url).update_query_dict({"application_name": name})

    async def scenario() -> None:
        db = Database(worker_url.render_as_string(hide_password=False))
        app = queue.queue_app(url)
        try:
            async with app.open_async():
                runtime = queue.Runtime(db, Vault(SECRET), settings(url), app=app)
                runtime.not_caldav.add(connection_id)
                context: Any = types.SimpleNamespace(
                    additional_context={"crmcal": runtime}, job=None
                )
                await queue.sync_connection(context, connection_id)
        finally:
            limits.install(None)
            await db.dispose()

    run(scenario())
