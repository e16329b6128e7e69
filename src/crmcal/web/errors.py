"""Turning every refusal into a 4xx with a ``detail`` that says what is wrong, and a
database that is busy or out of reach for the moment into a 503 with ``Retry-After``."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import psycopg
import psycopg.errors
from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from crmcal.crm.errors import Conflict, CrmError, Forbidden, Invalid, NotFound

log = logging.getLogger(__name__)

STATUS = {NotFound: 404, Invalid: 422, Conflict: 409, Forbidden: 403}


def _where(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def _message(error: dict[str, Any]) -> str:
    kind = error.get("type", "")
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "field required"
    return str(error.get("msg", "invalid")).removeprefix("Value error, ")


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in errors):
        reason = next(e for e in errors if e.get("type") == "json_invalid")
        context = reason.get("ctx", {}).get("error", "")
        return JSONResponse(
            {"detail": f"request body is not valid JSON: {context}".rstrip(": ")}, status_code=400
        )
    # Inputs are not echoed back: they may be huge or hold secrets.
    listed = [{"loc": list(e.get("loc", ())), "msg": _message(e)} for e in errors]
    detail = "; ".join(f"{_where(tuple(e['loc']))}: {e['msg']}" for e in listed)
    return JSONResponse({"detail": detail, "errors": listed}, status_code=422)


async def _crm_error(_request: Request, exc: Exception) -> JSONResponse:
    status = next((code for cls, code in STATUS.items() if isinstance(exc, cls)), 400)
    return JSONResponse({"detail": str(exc)}, status_code=status)


async def _integrity_error(_request: Request, exc: Exception) -> JSONResponse:
    # Two requests raced for the same unique value; the loser learns why.
    log.info("integrity error: %s", exc)
    return JSONResponse(
        {"detail": "conflicts with a record saved at the same time; retry the request"},
        status_code=409,
    )


# Seconds a client is asked to wait before retrying a request the database was too busy for.
BUSY_RETRY_AFTER = 5
# Seconds before retrying one that collided with a change made at the same time: that
# change is over, so at once is fine; a second gives it room.
COLLISION_RETRY_AFTER = 1


@dataclass(frozen=True)
class Transient:
    """A database error that says nothing about the request: what the client is told
    happened, and the seconds after which the same request can be sent again."""

    meaning: str
    retry_after: int
    # False where the connection was lost as the transaction was being committed: the
    # server may have stored it or not, and the client has to look before sending again.
    rolled_back: bool = True


_COLLIDED = "the database rolled the request back: it collided with a change made at the same time"
_CONNECTION_LOST = Transient(
    "the connection to the database was lost (the database server may be restarting)",
    BUSY_RETRY_AFTER,
)

# PostgreSQL errors that say nothing about the request, only about what else the
# database was doing or about the server's state: sent again as it was, it is taken.
# Keyed by psycopg's public class for each SQLSTATE (a subclass matches its base's entry).
_TRANSIENT: dict[type[psycopg.Error], Transient] = {
    # 55P03 lock_not_available: lock_timeout (or a NOWAIT) ran out waiting for a row or table
    psycopg.errors.LockNotAvailable: Transient(
        "the database is busy: a record the request needs was locked by another "
        "transaction for longer than the server waits", BUSY_RETRY_AFTER),
    # 40001 serialization_failure, 40P01 deadlock_detected: the transaction was rolled back
    psycopg.errors.SerializationFailure: Transient(_COLLIDED, COLLISION_RETRY_AFTER),
    psycopg.errors.DeadlockDetected: Transient(_COLLIDED, COLLISION_RETRY_AFTER),
    # 53300 too_many_connections: the server's max_connections (every client's) are in use
    psycopg.errors.TooManyConnections: Transient(
        "the database accepts no more connections at the moment", BUSY_RETRY_AFTER),
    # 57014 query_canceled: statement_timeout ran out (the statement waited or worked past
    # it, mostly for what else the server was doing) or an administrator cancelled it
    psycopg.errors.QueryCanceled: Transient(
        "the database is busy: a statement of the request ran past the time the server "
        "allows one, or was cancelled", BUSY_RETRY_AFTER),
    # 57P03 cannot_connect_now: starting up, in recovery, or shutting down
    psycopg.errors.CannotConnectNow: Transient(
        "the database is starting up or shutting down and accepts no connections at the "
        "moment", BUSY_RETRY_AFTER),
    # 57P01 admin_shutdown (a fast shutdown, or pg_terminate_backend), 57P02
    # crash_shutdown (another server process crashed and the server restarts), and the
    # class 08 connection exceptions, but for 08P01 protocol_violation (a bug, not a state)
    psycopg.errors.AdminShutdown: _CONNECTION_LOST,
    psycopg.errors.CrashShutdown: _CONNECTION_LOST,
    psycopg.errors.ConnectionException: _CONNECTION_LOST,
    psycopg.errors.ConnectionDoesNotExist: _CONNECTION_LOST,
    psycopg.errors.ConnectionFailure: _CONNECTION_LOST,
    psycopg.errors.SqlclientUnableToEstablishSqlconnection: _CONNECTION_LOST,
    psycopg.errors.SqlserverRejectedEstablishmentOfSqlconnection: _CONNECTION_LOST,
    psycopg.errors.TransactionResolutionUnknown: _CONNECTION_LOST,
}  # fmt: skip

# A connection attempt the server refused carries no SQLSTATE in psycopg (only libpq's
# message, with the server's words): those of 57P03 and 53300 (the server's messages in
# English, as it writes them before a session has a language).
_REFUSED_CONNECTION = {
    "the database system is starting up": psycopg.errors.CannotConnectNow,
    "the database system is shutting down": psycopg.errors.CannotConnectNow,
    "the database system is in recovery mode": psycopg.errors.CannotConnectNow,
    "the database system is not yet accepting connections": psycopg.errors.CannotConnectNow,
    "the database system is not accepting connections": psycopg.errors.CannotConnectNow,
    "sorry, too many clients already": psycopg.errors.TooManyConnections,
    "remaining connection slots are reserved": psycopg.errors.TooManyConnections,
}
_POOL_EXHAUSTED = Transient(
    "the database is busy: every connection this server may open to it is in use",
    BUSY_RETRY_AFTER,
)
_SQLITE_BUSY = Transient("the database is busy with other writes", BUSY_RETRY_AFTER)


def _postgres(exc: DBAPIError, orig: psycopg.Error) -> Transient | None:
    found = next((t for cls, t in _TRANSIENT.items() if isinstance(orig, cls)), None)
    if found is None and orig.pgconn is not None and orig.sqlstate is None:
        message = str(orig)
        found = next((_TRANSIENT[cls] for words, cls in _REFUSED_CONNECTION.items()
                      if words in message), None)  # fmt: skip
    if found is None and exc.connection_invalidated:
        # Lost without a word from the server (it crashed, restarted, or the network
        # dropped the connection): SQLAlchemy saw the connection closed or broken.
        found = _CONNECTION_LOST
    if found is _CONNECTION_LOST and exc.statement is None and orig.pgconn is None:
        # Not a statement's failure, nor a connection attempt's: the commit's (or the
        # rollback's). Whether the server committed before the connection went is unknown.
        return dataclasses.replace(found, rolled_back=False)
    return found


def transient(exc: BaseException) -> Transient | None:
    """What a database error that says nothing about the request means, and the seconds
    after which the same request can be sent again; None for any other error.

    Those are SQLite's "database is locked" (another writer held the lock past the busy
    timeout); PostgreSQL's lock timeouts, serialization failures, deadlocks, statement
    timeouts, refused connections and connections lost to a restart or a network
    (``_TRANSIENT``); and a session that waited in vain for a connection of the pool.
    Each rolled its transaction back, nothing of the request was stored, but for a
    connection lost while committing (``rolled_back`` False)."""
    if isinstance(exc, SQLAlchemyTimeoutError):
        return _POOL_EXHAUSTED
    if not isinstance(exc, DBAPIError):
        return None
    if isinstance(exc.orig, psycopg.Error):
        return _postgres(exc, exc.orig)
    message = str(exc.orig).lower()
    if isinstance(exc, OperationalError) and (
        "database is locked" in message or "database is busy" in message
    ):
        return _SQLITE_BUSY
    return None


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    found = transient(exc)
    if found is None:
        return await _unexpected(request, exc)
    # Load, not a bug: a warning saying what happened, no traceback. The server's own
    # words (hosts, process ids, statements) stay in the log.
    orig = getattr(exc, "orig", None)
    cause = ""
    if isinstance(orig, psycopg.Error):
        cause = f" (SQLSTATE {orig.sqlstate})" if orig.sqlstate else f" ({str(orig).strip()})"
    log.warning("%s %s answered 503: %s%s", request.method, request.url.path, found.meaning,
                cause)  # fmt: skip
    retry = f"retry the request after {found.retry_after} s"
    if found.rolled_back:
        detail = f"{found.meaning}; nothing was changed: {retry}"
    else:
        detail = (f"{found.meaning} as the request's change was being committed: whether "
                  f"it was stored is unknown; look, and if it was not, {retry}")  # fmt: skip
    return JSONResponse(
        {"detail": detail},
        status_code=503,
        headers={"Retry-After": str(found.retry_after)},
    )


async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return JSONResponse({"detail": "internal error; the server log has the details"}, 500)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 405:
        # Each method of a path is a route of its own, and Starlette names only the first
        # one's methods; a client is owed all of them.
        allowed = [
            method
            for method in ("GET", "POST", "PUT", "PATCH", "DELETE")
            if any(
                route.matches({**request.scope, "method": method})[0] == Match.FULL
                for route in request.app.router.routes
            )
        ]
        exc.headers = {**(exc.headers or {}), "Allow": ", ".join(allowed)}
    return await http_exception_handler(request, exc)


def install(app: FastAPI) -> None:
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(CrmError, _crm_error)
    app.add_exception_handler(IntegrityError, _integrity_error)
    # Any DBAPIError: a serialization failure or deadlock is an OperationalError only by
    # the driver's choice of base class.
    app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(SQLAlchemyTimeoutError, _database_error)
    app.add_exception_handler(Exception, _unexpected)
