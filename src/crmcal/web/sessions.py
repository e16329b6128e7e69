"""Browser sessions: the cookie a sign-in sets, its CSRF token, and signing out.

The cookie holds a random token; the database keeps only its SHA-256 hash, the
user, an expiry and the CSRF token that every form and state-changing request of
the session must echo (a form field ``csrf_token`` or the ``X-CSRF-Token``
header). The cookie is HttpOnly, SameSite=Lax, and Secure when crmcal is reached
over https.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets

from fastapi import Request, Response
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from crmcal.crm.tables import User, WebSession, utcnow

COOKIE = "crmcal_session"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
LIFETIME = dt.timedelta(hours=12)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


async def open_session(session: AsyncSession, user: User) -> str:
    """A new session for ``user``; answers the cookie's value. Expired ones are purged."""
    await session.execute(delete(WebSession).where(WebSession.expires_at < utcnow()))
    token = secrets.token_urlsafe(32)
    session.add(
        WebSession(
            token_hash=_hash(token),
            user_id=user.id,
            csrf_token=secrets.token_urlsafe(32),
            expires_at=utcnow() + LIFETIME,
        )
    )
    await session.flush()
    return token


async def lookup(session: AsyncSession, token: str | None) -> tuple[WebSession, User] | None:
    """The live session and its active user for a cookie value, or None."""
    if not token or len(token) > 200:
        return None
    row = (
        await session.execute(
            select(WebSession, User)
            .join(User, User.id == WebSession.user_id)
            .where(WebSession.token_hash == _hash(token))
        )
    ).first()
    if row is None:
        return None
    web, user = row
    if web.expires_at < utcnow() or not user.active:
        return None
    return web, user


async def close(session: AsyncSession, token: str | None) -> None:
    if token:
        await session.execute(delete(WebSession).where(WebSession.token_hash == _hash(token)))


def csrf_ok(web: WebSession, presented: str | None) -> bool:
    return bool(presented) and hmac.compare_digest(web.csrf_token, str(presented))


def is_https(request: Request) -> bool:
    base_url: str = request.app.state.settings.base_url
    return request.url.scheme == "https" or base_url.startswith("https://")


def set_cookie(request: Request, response: Response, token: str) -> None:
    response.set_cookie(
        COOKIE,
        token,
        max_age=int(LIFETIME.total_seconds()),
        httponly=True,
        samesite="lax",
        secure=is_https(request),
        path="/",
    )


def clear_cookie(request: Request, response: Response) -> None:
    response.delete_cookie(
        COOKIE, httponly=True, samesite="lax", secure=is_https(request), path="/"
    )
