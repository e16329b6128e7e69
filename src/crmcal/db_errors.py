"""What a database error says about the database rather than about the work that met it.

A database that is out of reach (refused, restarting, shut down, out of connections) or
too busy for the moment (a lock wait, a serialization failure, a statement timeout, no
free connection in the pool) fails work that was fine: sent again once that state has
passed, it is taken. The REST API answers such an error with a 503 and ``Retry-After``;
a worker puts the sync back in the queue without counting a failure against the
connection. Everything else is a failure of its own.

Errors are recognised by what the driver and the operating system say in a form that
does not depend on the language: the exception's type, its SQLSTATE (psycopg's, or any
driver's ``sqlstate`` attribute), a socket's errno, SQLite's result code. Never by the
message: a server's messages follow its ``lc_messages``, libpq's the client's locale.
"""

from __future__ import annotations

import dataclasses
import errno
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError

# Seconds to wait before sending again work the database was too busy or away for.
BUSY_RETRY_AFTER = 5
# Seconds before retrying work that collided with a change made at the same time: that
# change is over, so at once is fine; a second gives it room.
COLLISION_RETRY_AFTER = 1


@dataclass(frozen=True)
class Transient:
    """A database error that says nothing about the work that met it: what happened, and
    the seconds after which the same work can be tried again."""

    meaning: str
    retry_after: int
    # False where the connection was lost as the transaction was being committed: the
    # server may have stored it or not, and the client has to look before sending again.
    rolled_back: bool = True


_COLLIDED = "the database rolled the request back: it collided with a change made at the same time"
LOCKED = Transient(
    "the database is busy: a record the request needs was locked by another "
    "transaction for longer than the server waits",
    BUSY_RETRY_AFTER,
)
COLLIDED = Transient(_COLLIDED, COLLISION_RETRY_AFTER)
NO_MORE_CONNECTIONS = Transient(
    "the database accepts no more connections at the moment", BUSY_RETRY_AFTER
)
CANCELLED = Transient(
    "the database is busy: a statement of the request ran past the time the server "
    "allows one, or was cancelled",
    BUSY_RETRY_AFTER,
)
NOT_ACCEPTING = Transient(
    "the database is starting up or shutting down and accepts no connections at the moment",
    BUSY_RETRY_AFTER,
)
CONNECTION_LOST = Transient(
    "the connection to the database was lost (the database server may be restarting)",
    BUSY_RETRY_AFTER,
)
UNREACHABLE = Transient(
    "the database cannot be reached or takes no connections at the moment (it may be restarting)",
    BUSY_RETRY_AFTER,
)
POOL_EXHAUSTED = Transient(
    "the database is busy: every connection this server may open to it is in use", BUSY_RETRY_AFTER
)
SQLITE_BUSY = Transient("the database is busy with other writes", BUSY_RETRY_AFTER)  # fmt: skip

# SQLSTATEs that say nothing about the work, only about what else the database was doing
# or about the server's state.
_BY_SQLSTATE = {
    "55P03": LOCKED,  # lock_not_available: lock_timeout (or a NOWAIT) ran out
    "40001": COLLIDED,  # serialization_failure: the transaction was rolled back
    "40P01": COLLIDED,  # deadlock_detected: the same
    "53300": NO_MORE_CONNECTIONS,  # too_many_connections: max_connections all in use
    # query_canceled: statement_timeout ran out (the statement waited or worked past it,
    # mostly for what else the server was doing) or an administrator cancelled it
    "57014": CANCELLED,
    "57P03": NOT_ACCEPTING,  # cannot_connect_now: starting up, in recovery, shutting down
    "57P01": CONNECTION_LOST,  # admin_shutdown: a fast shutdown, or pg_terminate_backend
    "57P02": CONNECTION_LOST,  # crash_shutdown: another backend crashed, the server restarts
}
# Class 08, connection exceptions, all mean the connection is gone or never came, but
# for 08P01 protocol_violation (a bug, not a state).
_CONNECTION_CLASS, _NOT_A_STATE = "08", {"08P01"}

# A socket's failures to reach or keep a server: refused (nothing listens, the server is
# down or restarting), reset or aborted (it went away), timed out, no route.
_SOCKET_ERRNOS = {
    errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.ETIMEDOUT,
    errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ENETDOWN, errno.EHOSTDOWN, errno.EPIPE,
}  # fmt: skip

# SQLite's primary result codes (the low byte of an extended one) of another writer
# holding the lock past the busy timeout.
_SQLITE_BUSY_CODES = {5, 6}  # SQLITE_BUSY, SQLITE_LOCKED


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, and what it wraps or was raised from (a driver's error under SQLAlchemy's,
    an OSError under a driver's), each once."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        stack.extend([current.__context__, current.__cause__, getattr(current, "orig", None)])


def by_sqlstate(sqlstate: str | None) -> Transient | None:
    """The meaning of a SQLSTATE that says nothing about the work; None for any other."""
    if not sqlstate:
        return None
    found = _BY_SQLSTATE.get(sqlstate)
    if found is None and sqlstate[:2] == _CONNECTION_CLASS and sqlstate not in _NOT_A_STATE:
        found = CONNECTION_LOST
    return found


def _of_one(exc: BaseException) -> Transient | None:
    """What one link of an error's chain says by itself."""
    if isinstance(exc, SQLAlchemyTimeoutError):
        return POOL_EXHAUSTED
    # psycopg's errors, asyncpg's, and SQLAlchemy's adaptations of them carry it.
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str) and (found := by_sqlstate(sqlstate)) is not None:
        return found
    if isinstance(exc, psycopg.errors.ConnectionTimeout):
        return UNREACHABLE  # connect_timeout ran out
    if isinstance(exc, psycopg.OperationalError) and exc.sqlstate is None:
        pgconn = exc.pgconn
        if pgconn is not None and pgconn.status == psycopg.pq.ConnStatus.BAD:
            if pgconn.needs_password:
                return None  # libpq had no password to send: the configuration's fault
            # Broken without a word from the server, or (``transient`` tells which) a
            # connection attempt that failed.
            return CONNECTION_LOST
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if isinstance(code, int) and code & 0xFF in _SQLITE_BUSY_CODES:
            return SQLITE_BUSY
    if isinstance(exc, OSError) and (
        exc.errno in _SOCKET_ERRNOS or isinstance(exc, ConnectionError | TimeoutError)
    ):
        return UNREACHABLE
    return None


def transient(exc: BaseException) -> Transient | None:
    """What a database error that says nothing about the work means, and the seconds
    after which the same work can be sent again; None for any other error.

    Each such error rolled its transaction back, nothing of the work was stored, but for
    a connection lost while committing (``rolled_back`` False)."""
    if not isinstance(exc, DBAPIError | SQLAlchemyTimeoutError):
        # A driver's or socket's error outside SQLAlchemy is not told apart from any
        # other I/O (a calendar's server refusing): only the database's own are.
        return None
    found = next((t for link in _chain(exc) if (t := _of_one(link)) is not None), None)
    if found is None and isinstance(exc, DBAPIError) and exc.connection_invalidated:
        # Lost without a word from the server (it crashed, restarted, or the network
        # dropped the connection): SQLAlchemy saw the connection closed or broken.
        found = CONNECTION_LOST
    if found is CONNECTION_LOST and isinstance(exc, DBAPIError) and exc.statement is None:
        if getattr(exc.orig, "pgconn", True) is None:
            # Not a statement's failure, nor a connection attempt's: the commit's (or the
            # rollback's). Whether the server committed before the connection went is
            # unknown.
            return dataclasses.replace(found, rolled_back=False)
        if isinstance(exc.orig, psycopg.OperationalError) and exc.orig.sqlstate is None:
            # A connection attempt that failed: refused at the socket, or refused by the
            # server before a session began. libpq keeps the server's SQLSTATE of the
            # latter to itself and passes on only its words, in the server's language
            # (57P03 starting up or shutting down, 53300 too many clients, or a refusal
            # of the configuration's, which is in the log).
            return UNREACHABLE
    return found


def sqlstate_of(exc: BaseException) -> str | None:
    """The first SQLSTATE in an error's chain, for the log."""
    for link in _chain(exc):
        sqlstate = getattr(link, "sqlstate", None)
        if isinstance(sqlstate, str):
            return sqlstate
    return None
