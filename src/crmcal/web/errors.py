"""Turning every refusal into a 4xx with a ``detail`` that says what is wrong, and a
database that is busy or out of reach for the moment (``crmcal.db_errors``) into a 503
with ``Retry-After``."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from crmcal.crm.errors import Conflict, CrmError, Forbidden, Invalid, NotFound
from crmcal.db_errors import sqlstate_of, transient

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


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    found = transient(exc)
    if found is None:
        return await _unexpected(request, exc)
    # Load, not a bug: a warning saying what happened, no traceback. The server's own
    # words (hosts, process ids, statements) stay in the log: a connection attempt's
    # refusal is told by its words alone (a wrong password among them).
    sqlstate = sqlstate_of(exc)
    orig = getattr(exc, "orig", None)
    cause = f" (SQLSTATE {sqlstate})" if sqlstate else f" ({str(orig or exc).strip()})"
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
