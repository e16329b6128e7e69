"""Turning every refusal into a 4xx with a ``detail`` that says what is wrong."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import IntegrityError, OperationalError
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


def is_busy(exc: BaseException) -> bool:
    """Whether a database error is SQLite's "database is locked" (or "busy"): another
    writer held the lock for longer than the busy timeout. It says nothing about the
    request, which can be sent again as it was."""
    if not isinstance(exc, OperationalError):
        return False
    message = str(exc.orig).lower()
    return "database is locked" in message or "database is busy" in message


async def _operational_error(request: Request, exc: Exception) -> JSONResponse:
    if is_busy(exc):
        log.warning("database busy: %s %s answered 503", request.method, request.url.path)
        return JSONResponse(
            {"detail": "the database is busy with other writes; retry the request shortly"},
            status_code=503,
            headers={"Retry-After": str(BUSY_RETRY_AFTER)},
        )
    return await _unexpected(request, exc)


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
    app.add_exception_handler(OperationalError, _operational_error)
    app.add_exception_handler(Exception, _unexpected)
