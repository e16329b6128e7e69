"""Users (admins manage them) and ``/me``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from crmcal.crm import permissions, users
from crmcal.crm.errors import Conflict
from crmcal.crm.schemas import (
    MAX_ID,
    Page,
    TokenOut,
    UserCreate,
    UserCreated,
    UserOut,
    UserUpdate,
)
from crmcal.crm.tables import User
from crmcal.web.api.paging import DEFAULT, Cursor, Limit
from crmcal.web.deps import reading, writing
from crmcal.web.openapi import refusals

router = APIRouter(tags=["users"])
UserId = Annotated[int, Path(ge=1, le=MAX_ID)]


def out(user: User) -> UserOut:
    return UserOut.model_validate(user, from_attributes=True)


@router.get("/me", response_model=UserOut, name="get_me")
async def me(request: Request) -> UserOut:
    async with reading(request) as (_, user):
        return out(user)


@router.get("/me/tokens", response_model=Page[TokenOut], name="list_my_tokens")
async def list_my_tokens(request: Request) -> Page[TokenOut]:
    """Your API tokens: when each was issued, to revoke one you no longer use."""
    async with reading(request) as (session, user):
        found = await users.list_tokens(session, user)
        return Page[TokenOut](
            items=[TokenOut(id=t.id, created_at=t.created_at) for t in found], next_cursor=None
        )


@router.delete(
    "/me/tokens/{token_id}",
    status_code=204,
    name="revoke_my_token",
    responses=refusals(409, s409="This is the token making the request: revoke it with another."),
)
async def revoke_my_token(
    request: Request, token_id: Annotated[int, Path(ge=1, le=MAX_ID)]
) -> Response:
    """Revoke one of your API tokens at once; not the one making this call (409)."""
    scheme, _, in_use = request.headers.get("authorization", "").partition(" ")
    async with writing(request) as (session, user):
        await users.revoke_token(
            session, user, token_id, in_use.strip() if scheme.lower() == "bearer" else None
        )
    return Response(status_code=204)


@router.get("/users", response_model=Page[UserOut], responses=refusals(403))
async def list_users(
    request: Request, limit: Limit = DEFAULT, cursor: Cursor = None
) -> Page[UserOut]:
    async with reading(request) as (session, user):
        permissions.require_admin(user)
        found, next_cursor = await users.list_users(session, limit=limit, cursor=cursor)
        return Page[UserOut](items=[out(u) for u in found], next_cursor=next_cursor)


@router.post(
    "/users",
    response_model=UserCreated,
    status_code=201,
    responses=refusals(403, 409, s409="A user with that e-mail address exists."),
)
async def create_user(request: Request, body: UserCreate) -> UserCreated:
    """Create a user; the response carries its API token, shown only this once."""
    async with writing(request) as (session, user):
        permissions.require_admin(user)
        created, token = await users.create_user(session, body)
        return UserCreated(**out(created).model_dump(), token=token)


@router.get("/users/{user_id}", response_model=UserOut, responses=refusals(403))
async def get_user(request: Request, user_id: UserId) -> UserOut:
    async with reading(request) as (session, user):
        if user.id != user_id:
            permissions.require_admin(user)
        return out(await users.get_user(session, user_id))


@router.patch(
    "/users/{user_id}",
    response_model=UserOut,
    responses=refusals(403, 409, s409="An admin cannot deactivate or demote themselves."),
)
async def update_user(request: Request, user_id: UserId, body: UserUpdate) -> UserOut:
    """Change a user: an admin grants or revokes permissions here."""
    async with writing(request) as (session, user):
        permissions.require_admin(user)
        if user_id == user.id and (body.active is False or body.is_admin is False):
            # An admin who did would lock themselves (and maybe everyone) out.
            raise Conflict("you cannot deactivate yourself or give up your own admin role")
        return out(await users.update_user(session, await users.get_user(session, user_id), body))
