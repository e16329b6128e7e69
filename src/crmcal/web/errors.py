"""Turning every refusal into a 4xx with a ``detail`` that says what is wrong."""

from __future__ import annotations

import logging
from typing import Any

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

# PostgreSQL errors (by SQLSTATE) that say nothing about the request, only about what
# else the database was doing: sent again as it was, it is taken. What the client is
# told (after "the database ..."), and when to send it again.
_TRANSIENT = {
    # lock_not_available: lock_timeout (or a NOWAIT) ran out waiting for a row or table
    "55P03": ("is busy: a record the request needs was locked by another transaction for "
              "longer than the server waits", BUSY_RETRY_AFTER),
    # serialization_failure, deadlock_detected: the transaction was rolled back
    "40001": ("rolled the request back: it collided with a change made at the same time",
              COLLISION_RETRY_AFTER),
    "40P01": ("rolled the request back: it collided with a change made at the same time",
              COLLISION_RETRY_AFTER),
    # too_many_connections: the server's max_connections (every client's) are in use
    "53300": ("accepts no more connections at the moment", BUSY_RETRY_AFTER),
}  # fmt: skip
_POOL_EXHAUSTED = (
    "is busy: every connection this server may open to it is in use",
    BUSY_RETRY_AFTER,
)
_SQLITE_BUSY = ("is busy with other writes", BUSY_RETRY_AFTER)


def transient(exc: BaseException) -> tuple[str, int] | None:
    """What a database error that says nothing about the request means, and the seconds
    after which the same request can be sent again; None for any other error.

    Those are SQLite's "database is locked" (another writer held the lock past the busy
    timeout), PostgreSQL's lock timeouts, serialization failures, deadlocks and refused
    connections (``_TRANSIENT``), and a session that waited in vain for a connection
    of the pool. Each rolled its transaction back: nothing of the request was stored."""
    if isinstance(exc, SQLAlchemyTimeoutError):
        return _POOL_EXHAUSTED
    if not isinstance(exc, DBAPIError):
        return None
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate in _TRANSIENT:
        return _TRANSIENT[sqlstate]
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
    meaning, retry_after = found
    # Load, not a bug: a warning saying what happened, no traceback.
    sqlstate = getattr(getattr(exc, "orig", None), "sqlstate", None)
    log.warning("%s %s answered 503: the database %s%s", request.method, request.url.path,
                meaning, f" (SQLSTATE {sqlstate})" if sqlstate else "")  # fmt: skip
    return JSONResponse(
        {"detail": f"the database {meaning}; nothing was changed: retry the request "
                   f"after {retry_after} s"},
        status_code=503,
        headers={"Retry-After": str(retry_after)},
    )  # fmt: skip


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
