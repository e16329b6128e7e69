"""Activity types: everyone reads them, admins add, rename and deactivate them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from crmcal.crm import activity_types, permissions
from crmcal.crm.schemas import (
    NO_NUL,
    ActivityTypeCreate,
    ActivityTypeOut,
    ActivityTypeUpdate,
    Doc,
    Page,
)
from crmcal.crm.tables import ActivityType
from crmcal.web.deps import reading, writing
from crmcal.web.openapi import refusals

router = APIRouter(prefix="/activity-types", tags=["activity types"])
Key = Annotated[str, Path(min_length=1, max_length=64), Doc(pattern=NO_NUL)]


def out(found: ActivityType) -> ActivityTypeOut:
    return ActivityTypeOut.model_validate(found, from_attributes=True)


@router.get("", response_model=Page[ActivityTypeOut], name="list_activity_types")
async def list_types(request: Request) -> Page[ActivityTypeOut]:
    """All types, deactivated ones included (``active: false``); never more than one page."""
    async with reading(request) as (session, _):
        found = await activity_types.list_types(session)
        return Page[ActivityTypeOut](items=[out(t) for t in found], next_cursor=None)


@router.post(
    "",
    response_model=ActivityTypeOut,
    status_code=201,
    name="create_activity_type",
    responses=refusals(403, 409, s409="A type with that key exists."),
)
async def create_type(request: Request, body: ActivityTypeCreate) -> ActivityTypeOut:
    async with writing(request) as (session, user):
        permissions.require_admin(user)
        return out(await activity_types.create_type(session, body))


@router.patch(
    "/{key}", response_model=ActivityTypeOut, name="update_activity_type", responses=refusals(403)
)
async def update_type(request: Request, key: Key, body: ActivityTypeUpdate) -> ActivityTypeOut:
    """Rename a type or (de)activate it."""
    async with writing(request) as (session, user):
        permissions.require_admin(user)
        return out(await activity_types.update_type(session, key, body))


@router.delete(
    "/{key}",
    name="delete_activity_type",
    responses={
        200: {"model": ActivityTypeOut, "description": "In use: deactivated instead."},
        204: {"description": "Unused: deleted."},
        **refusals(403, 409, s409="A built-in type cannot be deleted."),
    },
)
async def delete_type(request: Request, key: Key) -> Response:
    """Delete a custom type; one that activities use is deactivated instead (200)."""
    async with writing(request) as (session, user):
        permissions.require_admin(user)
        kept = await activity_types.delete_type(session, key)
        if kept is None:
            return Response(status_code=204)
        return Response(out(kept).model_dump_json(), media_type="application/json")
