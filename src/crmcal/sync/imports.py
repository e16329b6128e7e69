"""New calendar events written to the CRM: gathered as the run settles its items,
then created in batches, each in one transaction of a few multi-row statements
(activities and series, their persons, change-feed rows and links).

An event the CRM refuses is found by halving its batch, reported and skipped; the
rest are written. A series whose uid the CRM already has is left out of the batch
and taken through series_sync on its own (it may relink it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from crmcal import bulk
from crmcal.crm import activities
from crmcal.crm.errors import CrmError, Forbidden, Invalid
from crmcal.crm.schemas import ActivityCreate
from crmcal.crm.tables import ActivitySeries, table_of, utcnow
from crmcal.model import CalendarEvent, RemoteRef, content_hash_beside
from crmcal.sync import mapping
from crmcal.sync.context import SyncFailed
from crmcal.sync.crm_writes import warn_cut
from crmcal.sync.import_fields import NewLinkHashes, import_fields
from crmcal.sync.links import field_hashes
from crmcal.sync.pair import Pair
from crmcal.sync.states import FailureKind, LinkOrigin
from crmcal.sync.tables import Link

if TYPE_CHECKING:
    from crmcal.sync.engine import Engine


@dataclass(frozen=True)
class _Import:
    """A new calendar event, checked and ready for the CRM (see Imports.write)."""

    ref: RemoteRef
    event: CalendarEvent
    data: ActivityCreate | activities.Checked
    uid: str  # the CRM uid derived from its UID
    organizer: str | None
    link: NewLinkHashes | None  # the CRM side of its link, if computed where it was parsed


class Imports:
    """The new calendar events of one run, on their way to the CRM."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.pending: list[RemoteRef] = []  # waiting for the batch (see write)

    async def write(self) -> None:
        """Create the activities (and series) for the new events gathered so far, with
        their persons, change-feed rows and links, in one transaction of a few
        multi-row statements; an item the CRM refuses is found by halving the batch,
        reported and skipped, and the rest are written."""
        engine = self.engine
        batch, self.pending = self.pending, []
        prepared = []
        for ref in batch:
            try:
                prepared.append(self._prepare(ref))
            except CrmError as exc:
                engine.report.problem(ref.id, str(exc))
                engine.report.skipped += 1
        later = await self._write(prepared)
        if engine.held_series is not None:
            engine.held_series += later  # until the whole listing is in (Engine._first_import)
            return
        for ref in later:
            await engine._guarded(Pair(remote=ref), engine.series.take(ref))

    async def _write(self, prepared: list[_Import]) -> list[RemoteRef]:
        """Write ``prepared`` in one transaction, or halves of it when one is refused;
        answers the series to import on their own (see _create)."""
        engine = self.engine
        if not prepared:
            return []
        try:
            return await self._create(prepared)
        except Forbidden as exc:
            raise SyncFailed(str(exc), FailureKind.PERMISSION) from exc
        except CrmError as exc:
            if len(prepared) == 1:
                engine.report.problem(prepared[0].ref.id, str(exc))
                engine.report.skipped += 1
                return []
        half = len(prepared) // 2
        return [
            *await self._write(prepared[:half]),
            *await self._write(prepared[half:]),
        ]

    def _prepare(self, ref: RemoteRef) -> _Import:
        """What the CRM is given for a new event: checked here, item by item, so that a
        bad one never costs the others their batch (in a first import, mostly checked
        already where the event was parsed: see ``sync/import_fields``)."""
        engine = self.engine
        event = ref.event
        assert event is not None
        found = import_fields(event, engine.importer)
        if found.data is None:
            raise Invalid(found.refusal or "the event cannot be stored")
        uid = found.uid or mapping.derived_uid(engine.ctx.owner.id, ref.id)
        if found.cut is not None:
            warn_cut(engine.report, engine.connection_id, ref.id, found.cut)
        return _Import(ref, event, found.data, uid, found.organizer, found.link)

    async def _create(self, prepared: list[_Import]) -> list[RemoteRef]:
        """One transaction; answers the series left out of it: those whose uid the CRM
        already has, which go through series_sync one by one (it may relink them)."""
        engine = self.engine
        later: list[RemoteRef] = []
        async with engine.db.write() as session:
            owner = await engine._owner(session)
            singles = [item.uid for item in prepared if not item.event.recurring]
            rules = [item.uid for item in prepared if item.event.recurring]
            taken = {a.uid for a in await activities.find_by_uids(session, owner.id, singles)}
            taken_series = set()
            if rules:
                taken_series = set(
                    await session.scalars(
                        select(ActivitySeries.uid).where(ActivitySeries.uid.in_(rules))
                    )
                )
            items: list[tuple[ActivityCreate | activities.Checked, str | None]] = []
            writing: list[_Import] = []
            for item in prepared:
                if item.event.recurring:
                    if item.uid in taken_series:
                        later.append(item.ref)
                        continue
                    taken_series.add(item.uid)
                    items.append((item.data, item.uid))
                else:
                    # A second event with the same UID is a copy and gets its own id.
                    items.append((item.data, None if item.uid in taken else item.uid))
                    taken.add(item.uid)
                writing.append(item)
            created = await activities.write_activities(
                session,
                owner,
                items,
                activities.WriteOptions(
                    origin=engine.ctx.origin,
                    as_contacts=engine.ctx.options.attendees_to_contacts,
                    organizers=[item.organizer for item in writing],
                    from_calendar=True,
                ),
            )
            known = [
                item.link.for_written(written) if item.link is not None else None
                for written, item in zip(created, writing, strict=True)
            ]
            unknown = [w for w, k in zip(created, known, strict=True) if k is None]
            series = await self._series_made(session, unknown)
            now = utcnow()
            rows = []
            texts = []  # each link's field digests, as JSON text (see NewLinkHashes)
            for written, item, hashed in zip(created, writing, known, strict=True):
                event = item.event
                if hashed is not None:
                    crm_hash, text = hashed.crm_hash, hashed.field_hashes
                else:
                    activity = written.activity()
                    crm_event = engine._event_of(activity)
                    crm_hash = content_hash_beside(crm_event, event)
                    if activity.series_id is not None:
                        # Just made from the rule: no occurrence is in the trash or
                        # changed on its own, so the first stands for all of them.
                        made = series[activity.series_id]
                        hashes = engine.series.new_link_hashes(made, [activity], event)
                    else:
                        hashes = field_hashes(crm_event, event)
                    text = json.dumps(hashes)
                texts.append(text)
                rows.append(
                    {
                        "connection_id": engine.ctx.connection_id,
                        "activity_id": written.id,
                        "remote_id": item.ref.id,
                        "remote_uid": event.uid,
                        "remote_etag": item.ref.etag,
                        "remote_hash": event.content_hash(),
                        "crm_hash": crm_hash,
                        "origin": LinkOrigin.CALENDAR,
                        # Read from the calendar, not made by crmcal: nothing to confirm.
                        # Given, so that the rows bind without a default filled per row.
                        "unconfirmed": False,
                        "last_synced_at": now,
                    }
                )
            await bulk.insert_many(
                session, table_of(Link), rows, json_texts={"field_hashes": texts}
            )
        engine.report.created += len(created)
        return later

    @staticmethod
    async def _series_made(
        session: AsyncSession, firsts: list[activities.Written]
    ) -> dict[int, ActivitySeries]:
        """The series among ``firsts`` (first occurrences just made), in one query."""
        ids = [a.series_id for a in firsts if a.series_id is not None]
        if not ids:
            return {}
        query = select(ActivitySeries).where(ActivitySeries.id.in_(ids))
        return {s.id: s for s in await session.scalars(query)}
