"""A CRM user with a connection to an in-memory calendar, to drive the engine directly."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, select

from crmcal.config import Settings
from crmcal.crm import activities
from crmcal.crm.schemas import ActivityCreate, ActivityUpdate, UserCreate
from crmcal.crm.tables import Activity, User
from crmcal.crm.users import create_user
from crmcal.db import Database
from crmcal.model import CalendarEvent
from crmcal.sync.engine import Engine
from crmcal.sync.options import SyncOptions
from crmcal.sync.report import SyncReport
from crmcal.sync.runner import run_sync
from crmcal.sync.tables import Connection, Link
from crmcal.vault import Vault
from tests.memory_provider import MemoryCalendar, MemoryProvider

SOON = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=2)
VAULT = Vault("test-secret")


def at(hours: float) -> dt.datetime:
    return SOON + dt.timedelta(hours=hours)


def event(summary: str | None = "Call Ann", start: float = 0, **fields: Any) -> CalendarEvent:
    return CalendarEvent(
        summary=summary,
        start=at(start),
        end=at(start + 1),
        timezone="Europe/Berlin",
        **fields,
    )


class World:
    def __init__(self, db: Database, calendar: MemoryCalendar) -> None:
        self.db = db
        self.calendar = calendar
        self.provider = MemoryProvider(calendar)
        self.user_id = 0
        self.connection_id = 0

    async def setup(
        self, *, sync_type: str = "two_way", connected_at: dt.datetime | None = None, **options: Any
    ) -> World:
        async with self.db.write() as session:
            if not self.user_id:
                user, _ = await create_user(
                    session, UserCreate(email="owner@crm.test", name="Owner", timezone="UTC")
                )
                self.user_id = user.id
        await self.connect(sync_type=sync_type, connected_at=connected_at, **options)
        return self

    async def connect(
        self, *, sync_type: str = "two_way", connected_at: dt.datetime | None = None, **options: Any
    ) -> int:
        async with self.db.write() as session:
            conn = Connection(
                user_id=self.user_id,
                provider="memory",
                account="memory://",
                username=None,
                credentials=VAULT.seal("x"),
                calendar_id="cal",
                calendar_name="Calendar",
                sync_type=sync_type,
                options=SyncOptions(**options).model_dump(mode="json"),
                state="active",
                connected_at=connected_at or dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1),
                counts={},
                problems=[],
                failures=0,
            )
            session.add(conn)
            await session.flush()
            self.connection_id = conn.id
        return self.connection_id

    async def set_options(self, **options: Any) -> None:
        async with self.db.write() as session:
            conn = await session.get(Connection, self.connection_id)
            assert conn is not None
            conn.options = SyncOptions(**{**conn.options, **options}).model_dump(mode="json")

    async def sync(self, *, force: bool = False) -> SyncReport:
        return await Engine(self.db, self.provider, self.connection_id, force=force).run()

    async def sync_via_runner(self) -> SyncReport:
        return await run_sync(
            self.db, VAULT, Settings(), self.connection_id, provider=self.provider
        )

    async def user(self, session: Any) -> User:
        found = await session.get(User, self.user_id)
        assert found is not None
        return found

    async def add_activity(self, subject: str = "Meeting", start: float = 0, **fields: Any) -> int:
        data = ActivityCreate(
            type=fields.pop("type", "meeting"),
            subject=subject,
            start=at(start).isoformat(),
            end=at(start + 1).isoformat(),
            **fields,
        )
        async with self.db.write() as session:
            return (await activities.create_activity(session, await self.user(session), data)).id

    async def edit_activity(self, activity_id: int, **fields: Any) -> None:
        async with self.db.write() as session:
            await activities.update_activity(
                session, await self.user(session), activity_id, ActivityUpdate(**fields)
            )

    async def trash_activity(self, activity_id: int) -> None:
        async with self.db.write() as session:
            await activities.delete_activity(session, await self.user(session), activity_id)

    async def activity(self, activity_id: int) -> Activity:
        async with self.db.read() as session:
            return await activities.load(session, activity_id)

    async def live_activities(self) -> list[Activity]:
        async with self.db.read() as session:
            query = select(Activity).where(Activity.deleted_at.is_(None)).order_by(Activity.id)
            return list(await session.scalars(query))

    async def all_activities(self) -> list[Activity]:
        async with self.db.read() as session:
            return list(await session.scalars(select(Activity).order_by(Activity.id)))

    async def links(self) -> int:
        async with self.db.read() as session:
            query = select(func.count(Link.id)).where(Link.connection_id == self.connection_id)
            return int(await session.scalar(query) or 0)

    async def connection(self) -> Connection:
        async with self.db.read() as session:
            found = await session.get(Connection, self.connection_id)
            assert found is not None
            return found

    def events(self) -> dict[str, CalendarEvent]:
        return {i: e for i, (_, e) in self.calendar.events.items()}

    def only_event(self) -> tuple[str, CalendarEvent]:
        (pair,) = self.events().items()
        return pair
