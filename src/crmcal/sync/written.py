"""What a run is about to write to a calendar, noted before it writes (write-ahead).

A run killed between writing an event and linking it leaves an event whose version
the link table does not know. The next run would count that as a calendar edit, and
under the ``latest`` policy crmcal's own write — made after a CRM edit it had not
seen — could win over that edit. A note says which content crmcal wrote for which
activity and from which version of it: an event that still has exactly that content
was not edited in the calendar, so only the CRM side counts as changed. Notes are
kept until the next run that finishes.
"""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from crmcal.crm.tables import utcnow
from crmcal.db import Database
from crmcal.sync.tables import WrittenNote


class Written:
    def __init__(self, db: Database, connection_id: int) -> None:
        self.db, self.connection_id = db, connection_id
        # activity id -> (CRM digest it was written from, digest of what was written)
        self.notes: dict[int, tuple[str | None, str]] = {}

    async def load(self) -> None:
        async with self.db.read() as session:
            rows = await session.scalars(
                select(WrittenNote).where(WrittenNote.connection_id == self.connection_id)
            )
            self.notes = {r.activity_id: (r.crm_hash, r.remote_hash) for r in rows}

    async def note(self, items: list[tuple[int, str | None, str]]) -> None:
        """Note (activity id, CRM digest, written digest) before the writes are sent."""
        if not items:
            return
        ids = [activity_id for activity_id, _, _ in items]
        now = utcnow()
        async with self.db.write() as session:
            await session.execute(
                delete(WrittenNote).where(
                    WrittenNote.connection_id == self.connection_id,
                    WrittenNote.activity_id.in_(ids),
                )
            )
            session.add_all(
                WrittenNote(connection_id=self.connection_id, activity_id=activity_id,
                            crm_hash=crm_hash, remote_hash=remote_hash, written_at=now)
                for activity_id, crm_hash, remote_hash in items
            )  # fmt: skip
        for activity_id, crm_hash, remote_hash in items:
            self.notes[activity_id] = (crm_hash, remote_hash)

    def explains(self, activity_id: int, event_hash: str) -> tuple[str | None, str] | None:
        """The (CRM, calendar) digests to compare with when the event is exactly what
        crmcal wrote for the activity, else None."""
        found = self.notes.get(activity_id)
        return found if found is not None and found[1] == event_hash else None

    async def forget_all(self, session: AsyncSession) -> None:
        """At the end of a run that finished: everything it wrote is linked."""
        if self.notes:
            await session.execute(
                delete(WrittenNote).where(WrittenNote.connection_id == self.connection_id)
            )
        self.notes = {}
