"""A request the database cannot take for what else it is doing is a documented 503
with ``Retry-After``, not a 500: the request was fine and can be sent again as it was.
SQLite: another connection holds the write lock past the busy timeout. PostgreSQL: a
row lock held past ``lock_timeout``, a serialization failure, no free connection in the
pool. Each is logged as a warning, without a traceback."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
import socket
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from crmcal import db as crmcal_db
from crmcal.config import Settings
from crmcal.crm import users
from crmcal.db import Database
from crmcal.jobs.queue import conninfo
from crmcal.web import app as web_app
from crmcal.web.app import create_app
from tests.conftest import _reset_postgres, make_user, pg_url
from tests.pg_wire import pg_proxy, refusing_server
from tests.served import wait_for


def test_a_write_the_locked_database_cannot_take_is_a_503_with_retry_after(
    tmp_path: Path, sqlite_template: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "crmcal.db"
    shutil.copy(sqlite_template, path)
    url = f"sqlite:///{path}"
    _, token = make_user(url, email="admin@crm.test", name="Admin", is_admin=True)
    # The server waits this long for the lock (30 s in production) before giving up.
    monkeypatch.setattr(crmcal_db, "SQLITE_BUSY_TIMEOUT_MS", 100)
    auth = {"Authorization": f"Bearer {token}"}
    app = create_app(Settings(database_url=url), background_jobs=False)
    with TestClient(app) as client:
        holder = sqlite3.connect(path, isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")  # another writer, holding the write lock
            r = client.post("/api/v1/persons", json={"name": "Ann"}, headers=auth)
            assert r.status_code == 503, r.text
            assert int(r.headers["Retry-After"]) > 0
            assert "busy" in r.json()["detail"]
            assert r.json().get("errors", []) == []
        finally:
            holder.rollback()
            holder.close()
        # Nothing was stored, and the same request, sent again, is taken.
        assert client.get("/api/v1/persons", headers=auth).json()["items"] == []
        r = client.post("/api/v1/persons", json={"name": "Ann"}, headers=auth)
        assert r.status_code == 201, r.text

        doc = client.get("/openapi.json").json()
    for path_, item in doc["paths"].items():
        if not path_.startswith("/api/v1"):
            continue
        for method, operation in item.items():
            busy = operation["responses"].get("503")
            assert busy is not None, (method, path_)
            assert busy["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/Error"
            }
            assert "Retry-After" in busy["headers"], (method, path_)


# PostgreSQL: a row lock held past lock_timeout, a serialization failure, and a pool with
# no free connection are each the database's load, not the request's fault.


@pytest.fixture
def pg(pg_schema: str) -> str:
    """An empty, migrated PostgreSQL schema's URL (PostgreSQL only, not each backend)."""
    _reset_postgres(pg_schema)
    return pg_url(pg_schema)


def with_options(url: str, *settings: str) -> str:
    """``url`` with server settings for each session it opens (``-cname=value``)."""
    parsed = make_url(url)
    options = " ".join([str(parsed.query.get("options", "")), *settings]).strip()
    return parsed.update_query_dict({"options": options}).render_as_string(hide_password=False)


class Server:
    """crmcal on ``url``, an admin's API, and the person Ann to change."""

    def __init__(self, client: TestClient, token: str) -> None:
        self.client = client
        self.auth = {"Authorization": f"Bearer {token}"}
        made = client.post("/api/v1/persons", json={"name": "Ann"}, headers=self.auth)
        assert made.status_code == 201, made.text
        self.person = int(made.json()["id"])

    def rename(self, name: str) -> Any:
        return self.client.patch(f"/api/v1/persons/{self.person}", json={"name": name},
                                 headers=self.auth)  # fmt: skip


@contextlib.contextmanager
def served(url: str, pool_size: int | None = None) -> Iterator[Server]:
    _, token = make_user(url, email="admin@crm.test", name="Admin", is_admin=True)
    settings = Settings(database_url=url)
    if pool_size is not None:
        settings = dataclasses.replace(settings, database_pool_size=pool_size)
    with TestClient(create_app(settings, background_jobs=False)) as client:
        yield Server(client, token)


@contextlib.contextmanager
def row_locked(url: str, person: int) -> Iterator[psycopg.Connection[Any]]:
    """Another client's transaction holding Ann's row lock until the block ends (or it
    commits)."""
    with psycopg.connect(conninfo(url)) as holder:
        holder.execute("SELECT 1 FROM persons WHERE id = %s FOR UPDATE", (person,))
        try:
            yield holder
        finally:
            holder.rollback()


def wait_until_blocked(url: str, holder: psycopg.Connection[Any]) -> None:
    """Until a request's statement waits for the lock ``holder`` holds."""
    with psycopg.connect(conninfo(url), autocommit=True) as watcher:

        def blocked() -> bool:
            row = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
                (holder.info.backend_pid,),
            ).fetchone()
            return row is not None and row[0] > 0

        wait_for(blocked)


def assert_retry_later(answer: Any, said: str, caplog: pytest.LogCaptureFixture) -> None:
    assert answer.status_code == 503, answer.text
    assert int(answer.headers["Retry-After"]) > 0
    body = answer.json()
    assert said in body["detail"]
    assert "nothing was changed" in body["detail"]
    assert body.get("errors", []) == []
    told = [r for r in caplog.records if "answered 503" in r.getMessage()]
    assert [(r.levelno, r.exc_info) for r in told] == [(logging.WARNING, None)]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def renamed_while_blocked(
    pg: str, server: Server, meanwhile: Callable[[psycopg.Connection[Any]], None]
) -> Any:
    """The answer to renaming Ann while another transaction holds her row lock:
    ``meanwhile`` is done, with that transaction, once the request's statement waits for
    it. (The lock is let go before the pool waits for the request, whatever happens.)"""
    with ThreadPoolExecutor(1) as pool, row_locked(pg, server.person) as holder:
        sent = pool.submit(server.rename, "Anna")
        wait_until_blocked(pg, holder)
        meanwhile(holder)
        return sent.result()


def assert_nothing_leaked(answer: Any, *server_words: str) -> None:
    """The client is told what happened in crmcal's words: none of the server's."""
    for words in server_words:
        assert words.lower() not in answer.text.lower(), answer.text


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("setting", "said", "sqlstate", "server_words"),
    [
        # The server gives up waiting for a lock after 100 ms (as an operator may set it).
        ("-clock_timeout=100", "locked by another transaction", "55P03", "lock timeout"),
        # It cancels a statement running longer than a second: the request's update,
        # waiting for the row lock, does.
        ("-cstatement_timeout=1000", "ran past the time the server allows one", "57014",
         "statement timeout"),
    ],
)  # fmt: skip
def test_a_statement_the_server_gives_up_on_is_a_503(
    pg: str, caplog: pytest.LogCaptureFixture, setting: str, said: str, sqlstate: str,
    server_words: str,
) -> None:  # fmt: skip
    with served(with_options(pg, setting)) as server:
        caplog.set_level(logging.WARNING)
        with row_locked(pg, server.person):
            answer = server.rename("Anna")
        assert_retry_later(answer, said, caplog)
        assert_nothing_leaked(answer, server_words, "UPDATE", "persons")
        assert sqlstate in caplog.text
        # Nothing was stored; sent again once the lock is gone, the request is taken.
        assert server.rename("Anna").status_code == 200


@pytest.mark.postgres
def test_a_serialization_failure_is_a_503(pg: str, caplog: pytest.LogCaptureFixture) -> None:
    # A database whose transactions are serializable (as an operator may set it): the
    # request's update waits for another transaction's lock on the row, and fails with
    # 40001 when that one commits its own change of the row.
    with served(with_options(pg, "-cdefault_transaction_isolation=serializable")) as server:
        caplog.set_level(logging.WARNING)

        def commit_a_change(holder: psycopg.Connection[Any]) -> None:
            holder.execute("UPDATE persons SET name = 'Anne' WHERE id = %s", (server.person,))
            holder.commit()

        answer = renamed_while_blocked(pg, server, commit_a_change)
        assert_retry_later(answer, "collided with a change made at the same time", caplog)
        assert "40001" in caplog.text
        got = server.client.get(f"/api/v1/persons/{server.person}", headers=server.auth)
        assert got.json()["name"] == "Anne"
        assert server.rename("Anna").status_code == 200


class ImpatientDatabase(Database):
    """A database whose sessions wait half a second for a free connection."""

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options, pool_timeout=0.5)


@pytest.mark.postgres
def test_no_free_connection_in_the_pool_is_a_503(
    pg: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One connection in the pool (CRMCAL_DATABASE_POOL_SIZE=1), and a request waits half
    # a second for it to come free.
    monkeypatch.setattr(web_app, "Database", ImpatientDatabase)
    with served(pg, pool_size=1) as server:
        caplog.set_level(logging.WARNING)
        with ThreadPoolExecutor(1) as pool, row_locked(pg, server.person) as holder:
            # A request holding the only connection while it waits for the row.
            held = pool.submit(server.rename, "Anna")
            wait_until_blocked(pg, holder)
            answer = server.client.get("/api/v1/persons", headers=server.auth)
        assert held.result().status_code == 200
        assert_retry_later(answer, "every connection this server may open to it is in use",
                           caplog)  # fmt: skip


# PostgreSQL: a statement past statement_timeout, a connection the server ends or the
# network drops, and a server that takes no connections at the moment are each a state of
# the server, not the request's fault: sent again once the state has passed, it is taken.


def terminate_blocked_backend(pg: str, holder: psycopg.Connection[Any]) -> int:
    """End the server backend whose statement waits for ``holder``'s lock (the request's
    own), as ``pg_terminate_backend`` does; returns its process id."""
    with psycopg.connect(conninfo(pg), autocommit=True) as admin:
        row = admin.execute(
            "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE %s = ANY(pg_blocking_pids(pid))",
            (holder.info.backend_pid,),
        ).fetchone()
    assert row is not None
    assert row[1]
    return int(row[0])


@pytest.mark.postgres
def test_a_connection_the_server_ends_mid_request_is_a_503(
    pg: str, caplog: pytest.LogCaptureFixture
) -> None:
    # An administrator's pg_terminate_backend (or a fast shutdown) ends the request's own
    # session while its update waits for a row lock: 57P01, and the connection is gone.
    with served(pg) as server:
        caplog.set_level(logging.WARNING)
        ended: list[int] = []
        answer = renamed_while_blocked(
            pg, server, lambda holder: ended.append(terminate_blocked_backend(pg, holder))
        )
        assert_retry_later(answer, "connection to the database was lost", caplog)
        assert_nothing_leaked(answer, "administrator", "terminating", str(ended[0]))
        assert "57P01" in caplog.text
        # The pool opens another connection: the same request is taken.
        assert server.rename("Anna").status_code == 200
        got = server.client.get(f"/api/v1/persons/{server.person}", headers=server.auth)
        assert got.json()["name"] == "Anna"


@pytest.mark.postgres
def test_a_connection_dropped_without_a_word_mid_request_is_a_503(
    pg: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The network (or a server killed outright) drops the connection while the request's
    # update waits: psycopg finds it closed, with no SQLSTATE.
    with pg_proxy(pg) as (proxy, through), served(through) as server:
        caplog.set_level(logging.WARNING)
        answer = renamed_while_blocked(pg, server, lambda _: proxy.drop())
        assert_retry_later(answer, "connection to the database was lost", caplog)
        assert_nothing_leaked(answer, "127.0.0.1", "closed", "consuming input")
        assert server.rename("Anna").status_code == 200


@pytest.mark.postgres
def test_a_connection_dropped_as_the_commit_is_answered_says_the_outcome_is_unknown(
    pg: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The server commits the request's change, and the connection drops before its answer
    # arrives: crmcal cannot tell whether it was stored, and says so rather than "nothing
    # was changed".
    with pg_proxy(pg) as (proxy, through), served(through) as server:
        caplog.set_level(logging.WARNING)
        proxy.drop_after_commit.set()
        answer = server.rename("Anna")
        assert answer.status_code == 503, answer.text
        assert int(answer.headers["Retry-After"]) > 0
        detail = answer.json()["detail"]
        assert "whether it was stored is unknown" in detail
        assert "nothing was changed" not in detail
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        # It was: sent again, the same request finds nothing to change and is taken.
        got = server.client.get(f"/api/v1/persons/{server.person}", headers=server.auth)
        assert got.json()["name"] == "Anna"
        assert server.rename("Anna").status_code == 200


# A token of the right shape: looking it up takes the database.
ANY_TOKEN = {"Authorization": f"Bearer {users.TOKEN_PREFIX}0123456789abcdef"}


# What a server that takes no connections at the moment says: its SQLSTATE on the wire,
# and words in its own language (lc_messages), which libpq passes on without the SQLSTATE.
REFUSALS = [
    ("57P03", "the database system is starting up"),
    ("57P03", "the database system is shutting down"),
    ("53300", "sorry, too many clients already"),
    ("57P03", "das Datenbanksystem startet"),
    ("53300", "tut mir leid, schon zu viele Verbindungen"),
    ("57P03", "le système de base de données s'arrête"),
]
# The detail a refused or unreachable connection attempt answers with.
UNREACHABLE = "cannot be reached or takes no connections at the moment"


@pytest.mark.parametrize(("sqlstate", "message"), REFUSALS)
def test_a_server_that_takes_no_connections_at_the_moment_is_a_503(
    sqlstate: str, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    # psycopg gives a refused connection attempt no SQLSTATE, and the server's words are
    # in its language: the failed attempt itself tells.
    with refusing_server(sqlstate, message) as url:
        app = create_app(Settings(database_url=url), background_jobs=False)
        with TestClient(app) as client:
            caplog.set_level(logging.WARNING)
            answer = client.get("/api/v1/persons", headers=ANY_TOKEN)
    assert_retry_later(answer, UNREACHABLE, caplog)
    assert_nothing_leaked(answer, message, "127.0.0.1", "FATAL")
    # The operator reads the server's own words in the log.
    assert message in caplog.text


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on: connecting is refused (ECONNREFUSED)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_database_nothing_listens_for_is_a_503(caplog: pytest.LogCaptureFixture) -> None:
    # The server is down, or restarting: the connection is refused at the socket.
    url = f"postgresql+psycopg://crmcal@127.0.0.1:{closed_port()}/crmcal"
    app = create_app(Settings(database_url=url), background_jobs=False)
    with TestClient(app) as client:
        caplog.set_level(logging.WARNING)
        answer = client.get("/api/v1/persons", headers=ANY_TOKEN)
    assert_retry_later(answer, UNREACHABLE, caplog)
    assert_nothing_leaked(answer, "127.0.0.1", "refused")


def test_a_server_that_refuses_the_credentials_is_a_503_with_its_words_in_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """libpq keeps the SQLSTATE of a refused connection attempt to itself and passes on
    the server's words in the server's language: a wrong password is not told apart from
    a server starting up. It is a 503 like that one, and the log's warning carries the
    server's words, which say what the operator has to mend."""
    words = 'password authentication failed for user "crmcal"'
    with refusing_server("28P01", words) as url:
        app = create_app(Settings(database_url=url), background_jobs=False)
        with TestClient(app) as client:
            caplog.set_level(logging.WARNING)
            answer = client.get("/api/v1/persons", headers=ANY_TOKEN)
    assert_retry_later(answer, UNREACHABLE, caplog)
    assert_nothing_leaked(answer, "password", "127.0.0.1")
    assert words in caplog.text
