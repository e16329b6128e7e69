"""Activities, their filters and the trash."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Query, Request
from pydantic import WithJsonSchema

from crmcal.crm import activities
from crmcal.crm import series as series_repo
from crmcal.crm.activities import ActivityFilter
from crmcal.crm.schemas import (
    MAX_ID,
    NO_FILTER,
    NO_NUL,
    WHEN_SCHEMA,
    ActivityCreate,
    ActivityOut,
    ActivityUpdate,
    Doc,
    Page,
    Scope,
    ScopeBody,
    SeriesOut,
)
from crmcal.sync import rules
from crmcal.sync.status import with_sync_info
from crmcal.web.api.paging import DEFAULT, Limit, StartCursor
from crmcal.web.deps import reading, writing
from crmcal.web.openapi import refusals

# Every route needs an activities permission (403).
router = APIRouter(prefix="/activities", tags=["activities"], responses=refusals(403))
series_router = APIRouter(prefix="/series", tags=["activities"], responses=refusals(403))


ActivityId = Annotated[int, Path(ge=1, le=MAX_ID)]
TimeFilter = Annotated[
    Annotated[str, WithJsonSchema({"anyOf": [*WHEN_SCHEMA["anyOf"], NO_FILTER]})] | None,
    Query(max_length=40, description="Date (YYYY-MM-DD) or RFC 3339 date-time."),
]


@router.get("", response_model=Page[ActivityOut])
async def list_activities(
    request: Request,
    start_from: TimeFilter = None,
    start_to: TimeFilter = None,
    type: Annotated[Annotated[str, Doc(pattern=NO_NUL)] | None, Query(max_length=64)] = None,
    owner_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    deleted: Annotated[bool, Query(description="true lists the trash")] = False,
    series_id: Annotated[
        int | None, Query(ge=1, le=MAX_ID, description="The occurrences of this series.")
    ] = None,
    limit: Limit = DEFAULT,
    cursor: StartCursor = None,
) -> Page[ActivityOut]:
    """Activities ordered by start. ``start_from`` is inclusive; ``start_to`` is inclusive,
    and a date there includes its whole day. Times without an offset are read in
    the caller's time zone."""
    flt = ActivityFilter(start_from, start_to, type, owner_id, deleted, series_id=series_id)
    async with reading(request) as (session, user):
        found, next_cursor = await activities.list_activities(
            session, user, flt, limit=limit, cursor=cursor
        )
        items = await with_sync_info(session, [activities.to_out(a, user) for a in found], user.id)
        return Page[ActivityOut](items=items, next_cursor=next_cursor)


# What JSON Schema cannot say of an activity, the state it clashes with.
NAMES_MISSING = (
    "A record the body names does not exist or is hidden from you (`type`, `owner_id`, "
    "`deal_id`, `person_id`, `organization_id`, a participant's `person_id`), the type is "
    "deactivated, or the owner's connected calendar cannot hold the `recurrence`"
)


@router.post(
    "",
    response_model=ActivityOut,
    status_code=201,
    responses=refusals(409, s409=f"{NAMES_MISSING}."),
)
async def create_activity(request: Request, body: ActivityCreate) -> ActivityOut:
    """Create an activity; with a ``recurrence`` (and optionally ``exdates``, ``rdates``)
    a series, answered by its first occurrence. A rule the owner's connected calendar
    cannot hold is refused with a 422 naming the part."""
    async with writing(request) as (session, user):
        await rules.check_for_owner(
            session, body.owner_id or user.id, body.recurrence, rdates=len(body.rdates or [])
        )
        created = await activities.create_activity(session, user, body)
        return activities.to_out(created, user)


@router.get("/{activity_id}", response_model=ActivityOut)
async def get_activity(request: Request, activity_id: ActivityId) -> ActivityOut:
    async with reading(request) as (session, user):
        found = activities.to_out(await activities.get_activity(session, user, activity_id), user)
        return (await with_sync_info(session, [found], user.id))[0]


@router.patch(
    "/{activity_id}",
    response_model=ActivityOut,
    responses=refusals(
        409,
        s409=f"The activity is in the trash (restore it first); or {NAMES_MISSING[0].lower()}"
        f"{NAMES_MISSING[1:]}; or the change needs the whole series (`scope`).",
    ),
)
async def update_activity(
    request: Request, activity_id: ActivityId, body: ActivityUpdate
) -> ActivityOut:
    """Change the fields given; ``null`` clears an optional one. An occurrence of a series
    takes ``scope``: ``this`` (the default), ``following`` or ``series``."""
    async with writing(request) as (session, user):
        if body.recurrence or body.rdates:
            found = await activities.get_activity(session, user, activity_id)
            rule = body.recurrence or found.recurrence
            await rules.check_for_owner(
                session, found.owner_id, rule, rdates=len(body.rdates or [])
            )
        changed = await activities.update_activity(session, user, activity_id, body)
        return activities.to_out(changed, user)


@router.delete("/{activity_id}", response_model=ActivityOut)
async def delete_activity(
    request: Request,
    activity_id: ActivityId,
    scope: Annotated[
        Scope,
        Query(
            description="For an occurrence: this one, this and every later one, or the "
            "whole series."
        ),
    ] = "this",
    body: Annotated[ScopeBody | None, Body()] = None,
) -> ActivityOut:
    """Move the activity to the trash (kept 30 days); answers the trashed activity. The
    scope may also come as a JSON body ``{"scope": ...}``."""
    if body is not None and body.scope is not None:
        scope = body.scope
    async with writing(request) as (session, user):
        trashed = await activities.delete_activity(session, user, activity_id, scope=scope)
        return activities.to_out(trashed, user)


@router.post(
    "/{activity_id}/restore",
    response_model=ActivityOut,
    responses=refusals(409, s409="The activity is not in the trash."),
)
async def restore_activity(request: Request, activity_id: ActivityId) -> ActivityOut:
    async with writing(request) as (session, user):
        restored = await activities.restore_activity(session, user, activity_id)
        return activities.to_out(restored, user)


@series_router.get("/{series_id}", response_model=SeriesOut)
async def get_series(
    request: Request, series_id: Annotated[int, Path(ge=1, le=MAX_ID)]
) -> SeriesOut:
    """A series: its rule, the dates it leaves out or adds, and its master's fields; its
    occurrences are ``GET /activities?series_id=``."""
    async with reading(request) as (session, user):
        return series_repo.to_out(await series_repo.get_series(session, user, series_id), user)
