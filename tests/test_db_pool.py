"""The PostgreSQL pool: connections idle for a while are checked before use, and a
single statement runs without a transaction around it, through SQLAlchemy or sent
directly."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import JSON, bindparam, func, literal, select, text
from sqlalchemy.exc import DBAPIError

from crmcal import db as dbmod
from crmcal import db_errors
from crmcal.crm.tables import UTCDateTime
from crmcal.db import Database
from tests.cli_process import NO_PARSE_POOL
from tests.conftest import run
from tests.queue_world import SECRET, query, queue_db  # noqa: F401

pytestmark = pytest.mark.postgres


def test_an_idle_connection_the_server_dropped_is_replaced_unseen(
    queue_db: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def scenario() -> tuple[int, int, int, int]:
        db = Database(queue_db, connections=1)
        try:
            async with db.read() as session:
                first = await session.scalar(text("SELECT pg_backend_pid()"))
            # The server ends the pooled connection while it sits idle (a restart, a
            # firewall): the next use gets a working connection, and no error.
            query(queue_db, "SELECT pg_terminate_backend(%s)", first)
            monkeypatch.setattr(dbmod, "IDLE_PING_SECONDS", 0.0)
            found = await db.execute_one(text("SELECT pg_backend_pid()"))
            second = found.scalar_one()
            # Checked again, and left out of any transaction: a session works as usual.
            async with db.write() as session:
                third = await session.scalar(text("SELECT pg_backend_pid()"))
            in_transaction = await db.execute_one(
                text("SELECT count(*) FROM pg_stat_activity WHERE pid = pg_backend_pid() "
                     "AND state = 'idle in transaction'")
            )  # fmt: skip
            return first, second, third, in_transaction.scalar_one()
        finally:
            await db.dispose()

    first, second, third, in_transaction = run(scenario())
    assert second != first
    assert third == second
    assert in_transaction == 0


def test_a_statement_sent_directly_commits_by_itself_and_hands_the_connection_back_as_found(
    queue_db: str,  # noqa: F811
) -> None:
    """``Database.direct_rows`` sends a statement on a connection of the engine's own pool,
    committed by itself (no BEGIN), and leaves the connection out of autocommit again for
    the sessions that take it next; its parameters and rows are processed by their types
    as SQLAlchemy's own execution processes them."""
    when = dt.datetime(2026, 12, 6, 14, 0, tzinfo=dt.UTC)
    statement = select(
        bindparam("when", type_=UTCDateTime()),
        bindparam("data", type_=JSON()),
        literal(when, UTCDateTime()),
        literal({"fixed": [1, 2]}, JSON()),
        func.pg_backend_pid(),
    )
    parameters = {"when": when, "data": {"given": "ü", "none": None}}

    async def scenario() -> tuple[list[Any], list[Any], bool, int, int]:
        db = Database(queue_db, connections=1)
        try:
            direct = await db.direct_rows(statement, parameters)
            through = list((await db.execute_one(statement, parameters)).all())
            async with db.write() as session:
                connection = await session.connection()
                raw = await connection.get_raw_connection()
                autocommit = raw.driver_connection.autocommit  # type: ignore[union-attr]
                pid = await session.scalar(text("SELECT pg_backend_pid()"))
            return direct, through, autocommit, direct[0][4], pid
        finally:
            await db.dispose()

    direct, through, autocommit, direct_pid, session_pid = run(scenario())
    assert [tuple(row[:4]) for row in direct] == [tuple(row[:4]) for row in through]
    assert direct[0][0] == when
    assert direct[0][1] == {"given": "ü", "none": None}
    assert direct[0][3] == {"fixed": [1, 2]}
    assert direct_pid == session_pid  # the pool's one connection
    assert autocommit is False


def test_a_statement_sent_directly_on_a_dropped_connection_fails_as_a_lost_connection(
    queue_db: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A connection the server ended unnoticed fails the statement sent directly as any
    statement fails: a SQLAlchemy error that ``db_errors`` reads as the connection lost
    (so a worker puts the sync back), and the pool opens a new connection next time."""
    monkeypatch.setattr(dbmod, "IDLE_PING_SECONDS", 3600.0)  # not pinged: used moments ago
    pid = select(func.pg_backend_pid())

    async def scenario() -> tuple[int, BaseException | None, int]:
        db = Database(queue_db, connections=1)
        failed: BaseException | None = None
        try:
            first = (await db.direct_rows(pid, {}))[0][0]
            query(queue_db, "SELECT pg_terminate_backend(%s)", first)
            try:
                await db.direct_rows(pid, {})
            except Exception as exc:
                failed = exc
            again = (await db.direct_rows(pid, {}))[0][0]
            return first, failed, again
        finally:
            await db.dispose()

    first, failed, again = run(scenario())
    assert isinstance(failed, DBAPIError), failed
    assert db_errors.transient(failed) == db_errors.CONNECTION_LOST
    assert again != first


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
@pytest.mark.parametrize(("size", "kept", "extra"), [(None, 10, 20), (3, 3, 0), (50, 10, 40)])
def test_the_web_servers_pool_opens_as_many_connections_as_set(
    db_url: str, size: int | None, kept: int, extra: int
) -> None:
    from fastapi.testclient import TestClient

    from crmcal.config import Settings
    from crmcal.web.app import create_app

    env = {"CRMCAL_DATABASE_URL": db_url}
    if size is not None:
        env["CRMCAL_DATABASE_POOL_SIZE"] = str(size)
    app = create_app(Settings.from_env(env), background_jobs=False)
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        pool: Any = app.state.db.engine.pool
        assert (pool.size(), pool._max_overflow) == (kept, extra)


@pytest.mark.parametrize(
    ("size", "kept", "extra"),
    [(None, 5, 2), ("4", 4, 0), ("40", 5, 35)],
)
def test_a_workers_pool_opens_as_many_connections_as_set_or_its_syncs_need(
    queue_db: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    parse_pool_kept: None,
    size: str | None,
    kept: int,
    extra: int,
) -> None:
    """``crmcal worker --concurrency 3``: unset, a connection for each sync and a few
    more, five kept open; set, as many as CRMCAL_DATABASE_POOL_SIZE says."""
    from typer.testing import CliRunner

    from crmcal import cli, collector, logs
    from crmcal.jobs import queue

    seen: list[tuple[int, int]] = []

    async def run_worker(runtime: Any, *, concurrency: int) -> None:
        pool: Any = runtime.db.engine.pool
        seen.append((pool.size(), pool._max_overflow))

    monkeypatch.setattr(queue, "run_worker", run_worker)
    # The command would point the root logger at the stderr this runner lends it and
    # closes afterwards, and set this process's garbage collector.
    monkeypatch.setattr(logs, "setup", lambda *_, **__: None)
    monkeypatch.setattr(collector, "tune", lambda: None)
    env = {"CRMCAL_DATABASE_URL": queue_db, "CRMCAL_SECRET_KEY": SECRET, **NO_PARSE_POOL}
    if size is not None:
        env["CRMCAL_DATABASE_POOL_SIZE"] = size
    result = CliRunner().invoke(cli.app, ["worker", "--concurrency", "3"], env=env)
    assert result.exit_code == 0, result.output
    assert seen == [(kept, extra)]


def test_a_pool_size_that_is_no_count_of_connections_is_refused() -> None:
    from crmcal.config import ConfigError, Settings

    assert Settings.from_env({}).database_pool_size is None  # each process's own
    assert Settings.from_env({"CRMCAL_DATABASE_POOL_SIZE": " 12 "}).database_pool_size == 12
    for wrong in ("0", "-1", "2.5", "ten", "1001", "\u00b2"):
        with pytest.raises(ConfigError, match="CRMCAL_DATABASE_POOL_SIZE"):
            Settings.from_env({"CRMCAL_DATABASE_POOL_SIZE": wrong})


@pytest.mark.parametrize("size", [None, "12"])
def test_the_server_a_worker_and_a_command_read_the_pool_size_alike(
    queue_db: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    parse_pool_kept: None,
    size: str | None,
) -> None:
    """One reading of CRMCAL_DATABASE_POOL_SIZE (``db.pool_size``) for every process:
    set, the web server, ``crmcal worker`` and a one-off command (``crmcal users
    create``) each open at most that many connections; unset, each its own default."""
    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from crmcal import cli, collector, logs
    from crmcal.config import Settings
    from crmcal.jobs import queue
    from crmcal.web.app import create_app

    env = {"CRMCAL_DATABASE_URL": queue_db, "CRMCAL_SECRET_KEY": SECRET, **NO_PARSE_POOL}
    if size is not None:
        env["CRMCAL_DATABASE_POOL_SIZE"] = size
    settings = Settings.from_env(env)
    # Each process's pool as it is disposed of at the process's end.
    seen: list[dbmod.PoolSize] = []
    dispose = Database.dispose

    async def noted(self: Database) -> None:
        pool: Any = self.engine.pool
        seen.append(dbmod.PoolSize(pool.size() + pool._max_overflow, pool.size()))
        await dispose(self)

    monkeypatch.setattr(Database, "dispose", noted)

    async def run_worker(runtime: Any, *, concurrency: int) -> None:
        return None

    monkeypatch.setattr(queue, "run_worker", run_worker)
    monkeypatch.setattr(logs, "setup", lambda *_, **__: None)
    monkeypatch.setattr(collector, "tune", lambda: None)

    with TestClient(create_app(settings, background_jobs=False)) as client:
        assert client.get("/healthz").status_code == 200
    runner = CliRunner()
    worker = runner.invoke(cli.app, ["worker", "--concurrency", "3"], env=env)
    assert worker.exit_code == 0, worker.output
    email = f"pool-{size or 'unset'}@crm.test"
    command = runner.invoke(cli.app, ["users", "create", "--email", email, "--name", "P"], env=env)
    assert command.exit_code == 0, command.output
    server_pool, worker_pool, command_pool = seen
    assert server_pool == command_pool == dbmod.pool_size(settings)
    assert worker_pool == dbmod.pool_size(settings, syncs=3)
    if size is None:
        assert (server_pool.connections, worker_pool.connections) == (30, 7)
    else:
        assert {server_pool.connections, worker_pool.connections, command_pool.connections} == {12}
