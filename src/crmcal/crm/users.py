"""Users and their API tokens. Only a SHA-256 hash of each token is stored."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from crmcal.crm import passwords, times
from crmcal.crm.errors import Conflict, Invalid, NotFound
from crmcal.crm.pagination import page_by_id
from crmcal.crm.schemas import UserCreate, UserUpdate, default_permissions
from crmcal.crm.tables import ApiToken, User

TOKEN_PREFIX = "crmcal_"  # noqa: S105 - a prefix, not a secret


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _check_timezone(name: str) -> str:
    times.zone(name)
    return name


async def create_user(session: AsyncSession, data: UserCreate) -> tuple[User, str]:
    """Create a user and a first API token; returns both (the token only this once)."""
    if await session.scalar(select(User.id).where(User.email == data.email)):
        raise Conflict(f"a user with e-mail {data.email} already exists")
    user = User(
        email=data.email,
        name=data.name,
        is_admin=data.is_admin,
        permissions=sorted(set(data.permissions))
        if data.permissions is not None
        else default_permissions(),
        timezone=_check_timezone(data.timezone),
        active=True,
        password_hash=passwords.hash_password(data.password) if data.password else None,
    )
    session.add(user)
    await session.flush()
    return user, await issue_token(session, user)


async def issue_token(session: AsyncSession, user: User) -> str:
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(user_id=user.id, token_hash=hash_token(token)))
    await session.flush()
    return token


async def list_tokens(session: AsyncSession, user: User) -> list[ApiToken]:
    """The user's API tokens (their hashes stay here: the values were shown once)."""
    query = select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.id)
    return list(await session.scalars(query))


async def revoke_token(
    session: AsyncSession, user: User, token_id: int, in_use: str | None = None
) -> None:
    """Delete one of the user's API tokens; NotFound when it is not theirs, Conflict when
    it is ``in_use``, the token the request came with: a script that revoked the token it
    speaks with would be locked out mid-way (revoke it with another one)."""
    found = await session.get(ApiToken, token_id)
    if found is None or found.user_id != user.id:
        raise NotFound(f"token {token_id} not found")
    if in_use is not None and found.token_hash == hash_token(in_use):
        raise Conflict(
            f"token {token_id} is the one making this request: revoke it with another token"
        )
    await session.delete(found)


async def user_for_token(session: AsyncSession, token: str) -> User | None:
    """The active user the token belongs to, or None."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    user = await session.scalar(
        select(User)
        .join(ApiToken, ApiToken.user_id == User.id)
        .where(ApiToken.token_hash == hash_token(token))
    )
    return user if user is not None and user.active else None


async def user_for_password(session: AsyncSession, email: str, password: str) -> User | None:
    """The active user with this e-mail and password, or None (which of the two was wrong
    is not said). A hash made with weaker parameters than today's is renewed."""
    normalised = email.strip().lower()
    user = await session.scalar(select(User).where(User.email == normalised))
    hashed = user.password_hash if user is not None else None
    if not passwords.verify(hashed, password) or user is None or not user.active:
        return None
    if hashed and passwords.needs_rehash(hashed):
        user.password_hash = passwords.hash_password(password)
    return user


async def get_user(session: AsyncSession, user_id: int) -> User:
    user = await session.get(User, user_id)
    if user is None:
        raise NotFound(f"user {user_id} not found")
    return user


async def set_preferences(
    session: AsyncSession, user_id: int, language: str | None, timezone: str | None
) -> None:
    """The user's language for the web pages (None: the browser's) and, when given, their
    time zone (already checked by the caller)."""
    user = await get_user(session, user_id)
    user.language = language
    if timezone:
        user.timezone = timezone


async def user_by_email(session: AsyncSession, email: str) -> User:
    normalised = email.strip().lower()
    user = await session.scalar(select(User).where(User.email == normalised))
    if user is None:
        raise NotFound(f"no user with e-mail {normalised}")
    return user


async def update_user(session: AsyncSession, user: User, data: UserUpdate) -> User:
    changes = data.model_dump(exclude_unset=True)
    for field in ("name", "is_admin", "active", "timezone", "password"):
        if field in changes and changes[field] is None:
            raise Invalid(f"{field} cannot be null")
    if "timezone" in changes:
        _check_timezone(changes["timezone"])
    if "password" in changes:
        user.password_hash = passwords.hash_password(changes.pop("password"))
    if "permissions" in changes:
        changes["permissions"] = sorted(set(changes["permissions"] or []))
    for field, value in changes.items():
        setattr(user, field, value)
    await session.flush()
    return user


async def everyone(session: AsyncSession) -> list[User]:
    """Every user, by name (the web pages' owner names and filters)."""
    return list(await session.scalars(select(User).order_by(User.name)))


async def list_users(
    session: AsyncSession, *, limit: int, cursor: str | None
) -> tuple[list[User], str | None]:
    return await page_by_id(session, select(User), User.id, limit=limit, cursor=cursor)


async def count_users(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count(User.id))) or 0)


FIRST_ADMIN_EMAIL = "admin@crmcal.localhost"


async def create_first_admin(session: AsyncSession) -> tuple[User, str] | None:
    """An admin user and token when the database has no user yet; otherwise None."""
    if await count_users(session):
        return None
    return await create_user(
        session, UserCreate(email=FIRST_ADMIN_EMAIL, name="Admin", is_admin=True)
    )
