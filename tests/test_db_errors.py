"""A database that is away or busy is told by type, SQLSTATE and errno, whatever the
driver and whatever language the server speaks: the errors here are built as each
driver raises them, and wrapped as SQLAlchemy wraps them. (The real server's are met in
tests/test_api_busy.py and tests/test_queue.py.)"""

from __future__ import annotations

import errno
import sqlite3

import psycopg
import pytest
from sqlalchemy import exc as sa

from crmcal import db_errors
from crmcal.db_errors import transient


class AsyncpgLike(Exception):
    """asyncpg's server errors: a ``sqlstate`` attribute, a message in the server's words."""

    def __init__(self, sqlstate: str, message: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


def wrapped(orig: BaseException, kind: type[sa.DBAPIError] = sa.OperationalError) -> sa.DBAPIError:
    """``orig`` as SQLAlchemy hands a statement's failure on."""
    return kind("SELECT 1", {}, orig)


def raised_from(cause: BaseException, error: BaseException) -> BaseException:
    try:
        raise error from cause
    except BaseException as exc:
        return exc


@pytest.mark.parametrize(
    ("sqlstate", "meaning"),
    [
        ("57P01", db_errors.CONNECTION_LOST),  # admin shutdown
        ("57P02", db_errors.CONNECTION_LOST),  # crash shutdown
        ("57P03", db_errors.NOT_ACCEPTING),  # cannot connect now
        ("53300", db_errors.NO_MORE_CONNECTIONS),
        ("08000", db_errors.CONNECTION_LOST),
        ("08003", db_errors.CONNECTION_LOST),
        ("08006", db_errors.CONNECTION_LOST),
        ("08001", db_errors.CONNECTION_LOST),
        ("08004", db_errors.CONNECTION_LOST),
        ("08007", db_errors.CONNECTION_LOST),
        ("40001", db_errors.COLLIDED),
        ("55P03", db_errors.LOCKED),
    ],
)
def test_a_sqlstate_of_the_servers_state_is_transient_in_any_language(
    sqlstate: str, meaning: db_errors.Transient
) -> None:
    german = "das Datenbanksystem ist nicht bereit"
    # psycopg's class for the SQLSTATE, and another driver's error that only carries it.
    for orig in (psycopg.errors.lookup(sqlstate)(german), AsyncpgLike(sqlstate, german)):
        assert transient(wrapped(orig)) == meaning, orig
    # An InterfaceError wrapper of SQLAlchemy's, with the driver's error under it.
    assert transient(wrapped(AsyncpgLike(sqlstate, german), sa.InterfaceError)) == meaning


@pytest.mark.parametrize("sqlstate", ["08P01", "28P01", "3D000", "42P01", "23505", "22P02"])
def test_a_sqlstate_of_the_request_or_the_configuration_is_not(sqlstate: str) -> None:
    for orig in (psycopg.errors.lookup(sqlstate)("nope"), AsyncpgLike(sqlstate, "nope")):
        assert transient(wrapped(orig)) is None


@pytest.mark.parametrize(
    "socket_error",
    [
        ConnectionRefusedError(errno.ECONNREFUSED, "Connexion refusée"),
        ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
        OSError(errno.EHOSTUNREACH, "Keine Route zum Zielrechner"),
        OSError(errno.ETIMEDOUT, "timed out"),
        TimeoutError("timed out"),
    ],
)
def test_a_socket_that_cannot_reach_the_server_is_transient(socket_error: OSError) -> None:
    # asyncpg raises the socket's error itself; SQLAlchemy's adaptation carries it as the
    # cause of a driver error it wraps in turn.
    driver_error = raised_from(socket_error, Exception("cannot connect"))
    for error in (wrapped(driver_error, sa.InterfaceError), wrapped(driver_error)):
        assert transient(error) == db_errors.UNREACHABLE
    assert transient(wrapped(socket_error)) == db_errors.UNREACHABLE


def test_an_oserror_of_another_kind_or_outside_the_database_is_not() -> None:
    assert transient(wrapped(OSError(errno.ENOENT, "No such file"))) is None
    assert transient(wrapped(PermissionError(errno.EACCES, "denied"))) is None
    # A refused connection to a calendar's server is no database's state.
    assert transient(ConnectionRefusedError(errno.ECONNREFUSED, "refused")) is None


def test_a_psycopg_connection_timeout_is_transient() -> None:
    timeout = psycopg.errors.ConnectionTimeout("connection timeout expired")
    assert transient(sa.OperationalError(None, None, timeout)) == db_errors.UNREACHABLE


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (5, db_errors.SQLITE_BUSY),  # SQLITE_BUSY
        (6, db_errors.SQLITE_BUSY),  # SQLITE_LOCKED
        (517, db_errors.SQLITE_BUSY),  # SQLITE_BUSY_SNAPSHOT (extended)
        (262, db_errors.SQLITE_BUSY),  # SQLITE_LOCKED_SHAREDCACHE (extended)
        (1, None),  # SQLITE_ERROR: a statement's own
        (19, None),  # SQLITE_CONSTRAINT
    ],
)
def test_sqlite_busy_is_told_by_its_result_code(
    code: int, expected: db_errors.Transient | None
) -> None:
    # aiosqlite hands sqlite3's errors on: their message may be translated, their code not.
    error = sqlite3.OperationalError("Datenbank ist gesperrt")
    error.sqlite_errorcode = code
    assert transient(wrapped(error)) == expected


def test_a_real_locked_sqlite_database_has_the_busy_code(tmp_path: object) -> None:
    path = f"{tmp_path}/busy.db"
    holder = sqlite3.connect(path, isolation_level=None)
    other = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(sqlite3.OperationalError) as raised:
            other.execute("BEGIN IMMEDIATE")
        assert transient(wrapped(raised.value)) == db_errors.SQLITE_BUSY
    finally:
        holder.rollback()
        holder.close()
        other.close()


def test_a_pool_with_no_free_connection_is_transient() -> None:
    assert transient(sa.TimeoutError("QueuePool limit reached")) == db_errors.POOL_EXHAUSTED
