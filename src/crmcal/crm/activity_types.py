"""Activity types: the six built-in ones (seeded by the first migration) plus custom ones.

A type is never hard-deleted while an activity uses it; it is deactivated
instead, so old activities keep their meaning and it cannot be picked for new ones.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from crmcal.crm.errors import Conflict, Invalid, NotFound
from crmcal.crm.schemas import ActivityTypeCreate, ActivityTypeUpdate
from crmcal.crm.tables import Activity, ActivityType


async def list_types(session: AsyncSession, *, include_inactive: bool = True) -> list[ActivityType]:
    query = select(ActivityType).order_by(ActivityType.id)
    if not include_inactive:
        query = query.where(ActivityType.active.is_(True))
    return list(await session.scalars(query))


async def get_type(session: AsyncSession, key: str) -> ActivityType:
    found = await session.scalar(select(ActivityType).where(ActivityType.key == key))
    if found is None:
        raise NotFound(f"activity type {key!r} not found")
    return found


async def require_usable(session: AsyncSession, key: str) -> ActivityType:
    """The type named ``key`` if a new or changed activity may use it."""
    found = await session.scalar(select(ActivityType).where(ActivityType.key == key))
    if found is None:
        known = ", ".join(t.key for t in await list_types(session, include_inactive=False))
        raise Conflict(f"type: unknown activity type {key!r} (known: {known})")
    if not found.active:
        raise Conflict(f"type: activity type {key!r} is deactivated")
    return found


async def create_type(session: AsyncSession, data: ActivityTypeCreate) -> ActivityType:
    if await session.scalar(select(ActivityType.id).where(ActivityType.key == data.key)):
        raise Conflict(f"activity type {data.key!r} already exists")
    created = ActivityType(key=data.key, name=data.name, builtin=False, active=True)
    session.add(created)
    await session.flush()
    return created


async def update_type(session: AsyncSession, key: str, data: ActivityTypeUpdate) -> ActivityType:
    found = await get_type(session, key)
    changes = data.model_dump(exclude_unset=True)
    for field in ("name", "active"):
        if field in changes and changes[field] is None:
            raise Invalid(f"{field} cannot be null")
    for field, value in changes.items():
        setattr(found, field, value)
    await session.flush()
    return found


async def delete_type(session: AsyncSession, key: str) -> ActivityType | None:
    """Remove an unused custom type (returns None) or deactivate a used one (returns it)."""
    found = await get_type(session, key)
    if found.builtin:
        raise Conflict(f"{key!r} is a built-in type: deactivate it with PATCH instead")
    in_use = await session.scalar(select(func.count(Activity.id)).where(Activity.type == key))
    if in_use:
        found.active = False
        await session.flush()
        return found
    await session.delete(found)
    await session.flush()
    return None
