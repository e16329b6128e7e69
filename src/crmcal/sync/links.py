"""The link table of one connection, as one sync run sees it, and what a link keeps.

A run loads only the links it needs (all of them for a full listing, else
those of the items at hand), keeps them by event id and by activity id, and
writes each change through here so the two indexes never disagree with the
table.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from crmcal.db import Database
from crmcal.model import CalendarEvent
from crmcal.sync import merge
from crmcal.sync.tables import Link

# Ids per IN (...) clause when loading links of many items.
CHUNK = 500
# What a link remembers of a side that is in the trash.
TRASHED = "trashed"


def field_hashes(
    crm: CalendarEvent,
    calendar: CalendarEvent,
    kept: list[str] | None = None,
    *,
    alike: bool = False,
) -> dict[str, Any]:
    """The per-field digests a link keeps of both sides (see sync/merge.py), and the
    calendar's attendee addresses (what a later calendar edit added or removed);
    ``kept``: the addresses of the activity's participants kept out of the calendar
    (``Engine.kept_participants``), to say one added later once; ``alike``: the
    caller found both sides alike (``model.same_content``), so the CRM's digests are
    the calendar's without comparing them again."""
    crm_digests = merge.digests(calendar) if alike else merge.digests_beside(crm, calendar)
    found = {"crm": crm_digests, "calendar": merge.digests(calendar),
             "attendees": addresses(calendar)}  # fmt: skip
    if kept is not None:
        found["kept"] = kept
    return found


def alike_hashes_text(event: CalendarEvent) -> str:
    """``json.dumps(field_hashes(crm, event, alike=True))``, the same text, for a CRM
    side found alike ``event``: both sides' digests are the event's, encoded once for
    both (``field_hashes`` copies them, and the encoder went over them twice)."""
    digests = json.dumps(merge.digests(event))
    return (
        f'{{"crm": {digests}, "calendar": {digests}, "attendees": {json.dumps(addresses(event))}}}'
    )


def addresses(event: CalendarEvent) -> list[str]:
    """The event's attendees' addresses, as a link keeps them."""
    return sorted({a.email.lower() for a in event.attendees})


class Links:
    def __init__(self, db: Database, connection_id: int) -> None:
        self.db = db
        self.connection_id = connection_id
        self.by_remote: dict[str, Link] = {}
        self.by_activity: dict[int, Link] = {}
        self._count: int | None = None

    # --- reading -------------------------------------------------------------

    async def count(self) -> int:
        """How many events this connection has linked (counted once, and only when asked:
        a no-change sync must not cost in proportion to the calendar)."""
        if self._count is None:
            async with self.db.read() as session:
                query = select(func.count(Link.id)).where(Link.connection_id == self.connection_id)
                self._count = int(await session.scalar(query) or 0)
        return self._count

    async def load(self, *where: Any) -> None:
        """Load the links matching ``where`` (every link of the connection without it)."""
        async with self.db.read() as session:
            query = select(Link).where(Link.connection_id == self.connection_id, *where)
            for link in await session.scalars(query):
                self._remember(link)

    async def load_of(self, column: Any, values: Iterable[Any]) -> None:
        """Load the links whose ``column`` (``Link.remote_id``, ``Link.activity_id``) is
        among ``values``."""
        values = list(values)
        for start in range(0, len(values), CHUNK):
            await self.load(column.in_(values[start : start + CHUNK]))

    def of_remote(self, remote_id: str) -> Link | None:
        return self.by_remote.get(remote_id)

    def of_activity(self, activity_id: int) -> Link | None:
        return self.by_activity.get(activity_id)

    # --- writing -------------------------------------------------------------

    async def store(
        self, link: Link, *, session: AsyncSession | None = None, **values: Any
    ) -> Link:
        """Insert or update the link with ``values`` set; returns the stored link.

        With ``session``, in that transaction (so that the link moves together with
        the activity it describes), else in one of its own.
        """
        if session is None:
            async with self.db.write() as own:
                return await self.store(link, session=own, **values)
        stored = await session.merge(link)
        for name, value in values.items():
            setattr(stored, name, value)
        await session.flush()
        self._forget(link)
        self._remember(stored)
        return stored

    async def store_many(self, links: list[Link]) -> None:
        """Insert new links in one transaction."""
        if not links:
            return
        async with self.db.write() as session:
            session.add_all(links)
        for link in links:
            self._remember(link)

    async def refresh(self, link: Link, **values: Any) -> None:
        """Update the link only when ``values`` differ from what it holds."""
        if all(getattr(link, name) == value for name, value in values.items()):
            return
        await self.store(link, **values)

    async def drop(self, link: Link, *, session: AsyncSession | None = None) -> None:
        if session is None:
            async with self.db.write() as own:
                return await self.drop(link, session=own)
        await session.execute(delete(Link).where(Link.id == link.id))
        self._forget(link)

    def _remember(self, link: Link) -> None:
        self.by_remote[link.remote_id] = link
        self.by_activity[link.activity_id] = link

    def _forget(self, link: Link) -> None:
        if self._same(self.by_remote.get(link.remote_id), link):
            del self.by_remote[link.remote_id]
        if self._same(self.by_activity.get(link.activity_id), link):
            del self.by_activity[link.activity_id]

    @staticmethod
    def _same(found: Link | None, link: Link) -> bool:
        if found is None:
            return False
        return found is link or (link.id is not None and found.id == link.id)
