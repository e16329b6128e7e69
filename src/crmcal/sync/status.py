"""Per-activity sync status (F22): which connection holds an activity's event, and whether
the activity changed since it was last synced."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from crmcal.crm.schemas import ActivityOut, SyncInfo
from crmcal.sync.states import ConnectionState
from crmcal.sync.tables import Connection, Link


async def with_sync_info(
    session: AsyncSession, items: list[ActivityOut], viewer_id: int | None = None
) -> list[ActivityOut]:
    """The items with ``sync`` filled in from the link table (one query for the page);
    left out of another user's private activities (busy blocks), whose event id and
    calendar would say more than "busy"."""
    if not items:
        return items
    rows = await session.execute(
        select(Link, Connection.state)
        .join(Connection, Connection.id == Link.connection_id)
        .where(Link.activity_id.in_([item.id for item in items]))
        .order_by(Link.id)
    )
    links = {link.activity_id: (link, state) for link, state in rows}
    for item in items:
        found = links.get(item.id)
        if found is None or (item.visibility == "owner" and item.owner_id != viewer_id):
            continue
        link, connection_state = found
        if connection_state == ConnectionState.STOPPED:
            state = "paused"
        elif item.updated_at > link.last_synced_at:
            state = "pending"
        else:
            state = "synced"
        item.sync = SyncInfo(
            connection_id=link.connection_id,
            event_id=link.remote_id,
            state=state,
            last_synced_at=link.last_synced_at,
        )
    return items
