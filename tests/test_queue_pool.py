"""The queue's own connections (procrastinate's pool): what fetching and finishing a job
costs in exchanges with PostgreSQL, and that a connection the server ended is not
handed out. Counted on the real PostgreSQL through procrastinate's job manager, with
the calls a worker makes for every job."""

from __future__ import annotations

import select
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import procrastinate
import psycopg
import pytest
from procrastinate.jobs import Status
from psycopg.pq import TransactionStatus

from crmcal.jobs import queue
from tests.conftest import run
from tests.queue_world import queue_db  # noqa: F401

pytestmark = pytest.mark.postgres


class Exchanges:
    """Round trips to the server on psycopg connections, as psycopg's waits show them: a
    query (an empty one checking the connection too), a BEGIN psycopg sends before a
    query outside autocommit, a COMMIT or ROLLBACK of an open transaction. A commit of
    a connection with no transaction open sends nothing, and is not counted."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sent: list[str] = []
        real = psycopg.AsyncConnection.wait

        async def wait(
            conn: psycopg.AsyncConnection[Any], gen: Any, *args: Any, **kwargs: Any
        ) -> Any:
            idle = conn.info.transaction_status == TransactionStatus.IDLE
            if getattr(gen, "__qualname__", "").endswith("_execute_gen"):
                if idle and not conn.autocommit:
                    self.sent.append("BEGIN")
                self.sent.append("query")
            elif not idle:
                self.sent.append("end of transaction")
            return await real(conn, gen, *args, **kwargs)

        monkeypatch.setattr(psycopg.AsyncConnection, "wait", wait)


async def _one_job(
    database_url: str, before: Callable[[procrastinate.App], Awaitable[None]]
) -> None:
    """Defer a job, then fetch and finish it as a worker does, ``before(app)`` run just
    before the fetch (the pool has been used by then)."""
    app = queue.queue_app(database_url, pool_size=2)
    name = f"s_{uuid.uuid4().hex[:10]}"
    async with app.open_async():
        await app.configure_task("crmcal.test.noop", queue=name, allow_unknown=True).defer_async()
        worker_id = await app.job_manager.register_worker()
        await before(app)
        job = await app.job_manager.fetch_job(queues=[name], worker_id=worker_id)
        assert job is not None
        await app.job_manager.finish_job(job, status=Status.SUCCEEDED, delete_job=True)
        await app.job_manager.unregister_worker(worker_id)


def test_the_queue_fetches_and_finishes_a_job_in_one_exchange_each(
    queue_db: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """procrastinate's pool checked each connection it handed out with an empty query,
    and ran each query in a transaction: BEGIN with the query, then COMMIT. 3 exchanges
    a query, 6 for a job's fetch and finish; now 1 each, in autocommit (each of its
    queries is one statement, committed by itself)."""
    exchanges = Exchanges(monkeypatch)
    counted: list[str] = []

    async def count_from_here(_app: procrastinate.App) -> None:
        exchanges.sent = counted

    run(_one_job(queue_db, count_from_here))
    # The fetch, the finish, and the worker's unregistering.
    assert counted == ["query"] * 3, counted


def test_a_connection_idle_for_a_while_is_checked_first(
    queue_db: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One that sat idle ``IDLE_PING_SECONDS`` or more is pinged (an empty query) before
    it is handed out: the server may have dropped it meanwhile without a word. Here
    every connection has sat that long."""
    exchanges = Exchanges(monkeypatch)
    counted: list[str] = []

    async def idle_long(_app: procrastinate.App) -> None:
        monkeypatch.setattr(queue, "IDLE_PING_SECONDS", 0.0)
        exchanges.sent = counted

    run(_one_job(queue_db, idle_long))
    # A ping before each of the fetch, the finish and the unregistering.
    assert counted == ["query"] * 6, counted


def test_a_connection_the_server_ended_is_not_handed_out(queue_db: str) -> None:  # noqa: F811
    """Ended by the server while idle in the pool (a restart, an administrator, moments
    after its last use): the job's fetch gets another connection, it does not fail."""
    ended: list[int] = []

    async def end_it(app: procrastinate.App) -> None:
        pool = app.connector.pool  # type: ignore[attr-defined]
        async with pool.connection() as conn:
            pid, fd = conn.info.backend_pid, conn.fileno()
        with psycopg.connect(queue.conninfo(queue_db), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        # The server's word that it ended the connection arrives on its socket.
        readable, _, _ = select.select([fd], [], [], 600)
        assert readable
        ended.append(pid)

    run(_one_job(queue_db, end_it))  # the fetch and the finish went through
    assert ended


def test_a_connection_handed_back_goes_straight_back_to_the_pool(
    queue_db: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Noted as idle from now (so not pinged when next handed out soon), and put back
    without a task of the pool's background worker: one such task a job's fetch was a
    queue's put and get and more turns of the event loop."""
    tasks: list[object] = []

    async def through_the_pool(app: procrastinate.App) -> None:
        pool = app.connector.pool  # type: ignore[attr-defined]
        real = pool.run_task

        def run_task(task: object) -> None:
            tasks.append(task)
            real(task)

        monkeypatch.setattr(pool, "run_task", run_task)
        async with pool.connection() as conn:
            before = queue._RETURNED[conn]
        assert queue._RETURNED[conn] > before
        assert tasks == []

    run(_one_job(queue_db, through_the_pool))
