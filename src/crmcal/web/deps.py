"""What every API endpoint needs: a database session and the user behind the token.

Scripts send an API token; the web pages' own scripts call the same API with the
session cookie, and then every state-changing request must carry the session's
CSRF token in ``X-CSRF-Token`` (see sessions.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import NamedTuple

from fastapi import HTTPException, Request
from fastapi.security import HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from crmcal.config import Settings
from crmcal.crm import users
from crmcal.crm.tables import User
from crmcal.db import Database
from crmcal.vault import Vault
from crmcal.web import sessions

# Declared for the OpenAPI document; the check itself is in _authenticate so
# that its messages are ours.
bearer = HTTPBearer(auto_error=False, description="An API token from `crmcal users create`.")


class Ctx(NamedTuple):
    session: AsyncSession
    user: User


def database(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


async def _authenticate(session: AsyncSession, request: Request) -> User:
    header = request.headers.get("authorization")
    if not header and sessions.COOKIE in request.cookies:
        found = await sessions.lookup(session, request.cookies[sessions.COOKIE])
        if found is None:
            raise _unauthorized("your session has ended: sign in again")
        web, user = found
        if request.method not in sessions.SAFE_METHODS and not sessions.csrf_ok(
            web, request.headers.get(sessions.CSRF_HEADER)
        ):
            raise HTTPException(
                403, "the request lacks this session's CSRF token (X-CSRF-Token): reload the page"
            )
        return user
    if not header:
        raise _unauthorized("missing Authorization header: send 'Authorization: Bearer <token>'")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("the Authorization header must read 'Bearer <token>'")
    holder = await users.user_for_token(session, token.strip())
    if holder is None:
        raise _unauthorized("invalid API token, or its user is deactivated")
    return holder


async def authenticate(request: Request) -> None:
    """Router dependency: the token is checked before the request body is validated,
    so a caller without a valid token learns that first (401), whatever it sent."""
    async with database(request).read() as session:
        request.state.user_id = (await _authenticate(session, request)).id


async def _user(session: AsyncSession, request: Request) -> User:
    user_id = getattr(request.state, "user_id", None)
    if user_id is None:
        return await _authenticate(session, request)
    user = await session.get(User, user_id)
    if user is None or not user.active:
        raise _unauthorized("invalid API token, or its user is deactivated")
    return user


@asynccontextmanager
async def reading(request: Request) -> AsyncIterator[Ctx]:
    """A read-only session and the authenticated user."""
    async with database(request).read() as session:
        yield Ctx(session, await _user(session, request))


@asynccontextmanager
async def writing(request: Request) -> AsyncIterator[Ctx]:
    """One transaction, committed before the response is sent, and the authenticated user."""
    async with database(request).write() as session:
        yield Ctx(session, await _user(session, request))


def vault_of(request: Request) -> Vault:
    """The installation's vault; a 503 when it cannot store credentials."""
    vault: Vault | None = request.app.state.vault
    if vault is None:
        raise HTTPException(
            503, "this server cannot store credentials: set CRMCAL_SECRET_KEY and restart it"
        )
    return vault


def settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def request_sync(request: Request, connection_id: int) -> None:
    """Ask the embedded scheduler (if this server runs one) to sync the connection soon."""
    scheduler = getattr(request.app.state, "scheduler", None)
    if scheduler is not None:
        scheduler.request(connection_id)


async def enqueue_sync(request: Request, connection_id: int) -> None:
    """``request_sync``, but on the distributed queue it returns once the job is stored
    (a webhook's notification must not be lost with a process that stops)."""
    scheduler = getattr(request.app.state, "scheduler", None)
    enqueue = getattr(scheduler, "enqueue", None)
    if enqueue is not None:
        await enqueue(connection_id)
    elif scheduler is not None:
        scheduler.request(connection_id)
