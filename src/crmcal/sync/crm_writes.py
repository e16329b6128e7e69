"""Writes to the CRM of linked items: an event's fields taken in, an activity or a
whole series moved to the trash.

Each write is one transaction that first checks the activity is still as the run
read it (``_as_read``): a CRM edit made while the run goes on is never overwritten,
the pull is left for the next run. New events are imported with the engine's batch.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from crmcal.crm import activities
from crmcal.crm.errors import Invalid
from crmcal.crm.schemas import ActivityUpdate
from crmcal.crm.tables import Activity, utcnow
from crmcal.model import CalendarEvent
from crmcal.sync import mapping
from crmcal.sync.import_fields import refusal
from crmcal.sync.links import TRASHED, field_hashes
from crmcal.sync.pair import Pair
from crmcal.sync.report import SyncReport
from crmcal.sync.tables import Link

if TYPE_CHECKING:
    from crmcal.sync.engine import Engine

log = logging.getLogger(__name__)

# The warning for an event whose description the CRM keeps only the start of.
NOTE_CUT = (
    "note cut to {kept} of {length} characters, as much as the CRM keeps; "
    "the calendar keeps the whole description"
)


def warn_cut(report: SyncReport, connection_id: int, item: str, length: int) -> None:
    """Say so, in the run's problems and the log, when an event's note of ``length``
    characters comes into the CRM cut to what it keeps (the calendar keeps it whole:
    see ``CalendarWrites._whole_there``). The log line names the item and the lengths,
    never the text."""
    report.warning(item, NOTE_CUT.format(kept=mapping.NOTE_MAX, length=length))
    log.warning(
        "connection %s, %s: note cut to %d of %d characters (the calendar keeps it whole)",
        connection_id, item, mapping.NOTE_MAX, length,
    )  # fmt: skip


class CrmWrites:
    """The CRM's side of one run's linked items."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def update(self, pair: Pair, link: Link, *, keep_link: bool = False) -> Activity | None:
        """Write the event's fields to the activity (restoring it); the activity as now,
        or None when it was left for the next run. ``keep_link``: leave the link as it
        was (a merge writes the calendar next, and saves it then)."""
        engine = self.engine
        ref = pair.remote
        assert ref is not None
        assert ref.event is not None
        async with engine.db.write() as session:
            if not await self._as_read(session, pair):
                return None
            owner = await engine._owner(session)
            activity = await activities.load(session, link.activity_id)
            fields = engine._fields(ref.event, activity)
            if "participants" in fields:
                before = (link.field_hashes or {}).get("attendees")
                known = set(before) if before is not None else None
                if ref.event.attendees_partial:
                    known = set()  # only some guests shown: none is taken for removed
                fields["participants"] = mapping.merged_participants(
                    activity, fields["participants"], known
                )
            organizer = engine._organizer(ref.event)
            if organizer and activity.organizer:
                del fields["note"]  # an invitation's note is the CRM's own
            cut = "note" in fields and mapping.note_cut(ref.event) is not None
            try:
                data = ActivityUpdate(**fields)
            except ValidationError as exc:
                raise Invalid(f"the event cannot be stored: {refusal(exc)}") from None
            if activity.deleted_at is not None:
                await activities.restore_activity(
                    session, owner, activity.id, origin=engine.ctx.origin
                )
            activity = await activities.update_activity(
                session,
                owner,
                activity.id,
                data,
                origin=engine.ctx.origin,
                as_contacts=engine.ctx.options.attendees_to_contacts,
                from_calendar=True,
            )
            activity.organizer = organizer
            written = engine._event_of(activity)
            if not keep_link:
                await engine.links.store(
                    link,
                    session=session,
                    remote_etag=ref.etag,
                    remote_hash=ref.event.content_hash(),
                    crm_hash=written.content_hash(),
                    field_hashes=field_hashes(
                        written, ref.event, engine.kept_participants(activity)
                    ),
                    refused_hash=None,  # the calendar's version taken: nothing waits
                    last_synced_at=utcnow(),
                )
        if cut:
            self._warn_if_cut(ref.id, ref.event)
        engine.report.updated += 1
        return activity

    async def trash(self, pair: Pair, link: Link) -> None:
        """The event counts as deleted: its activity goes to the CRM's trash."""
        engine = self.engine
        async with engine.db.write() as session:
            if not await self._as_read(session, pair):
                return
            owner = await engine._owner(session)
            activity = await session.get(Activity, link.activity_id)
            if activity is not None and activity.deleted_at is None:
                await activities.delete_activity(
                    session, owner, activity.id, origin=engine.ctx.origin
                )
                engine.report.deleted += 1
            ref = pair.remote
            if ref is not None and ref.event is not None:
                # The event is still there (cancelled, or private under "skip"): keep
                # the pair, so that restoring the activity brings back that event
                # instead of making a second one beside it.
                await engine.links.store(
                    link,
                    session=session,
                    crm_hash=TRASHED,
                    remote_hash=ref.event.content_hash(),
                    remote_etag=ref.etag,
                    # The sides no longer agree field by field: a restore writes it whole.
                    field_hashes=None,
                    refused_hash=None,
                    last_synced_at=utcnow(),
                )
            else:
                await engine.links.drop(link, session=session)

    async def _as_read(self, session: AsyncSession, pair: Pair) -> bool:
        """Whether the activity is still as this run read it (locking it for the write).

        A CRM edit made while the run goes on is never overwritten: the pull is left
        for the next run, which sees both edits and lets the rules decide. Until then
        the calendar's position is not moved on, so that run sees this change again.
        """
        read = pair.activity
        if read is None:
            return True
        now = (
            await session.execute(
                select(Activity.updated_at, Activity.deleted_at)
                .where(Activity.id == read.id)
                .with_for_update()
            )
        ).one_or_none()
        if now is not None and tuple(now) == (read.updated_at, read.deleted_at):
            return True
        self.engine.deferred = True
        return False

    async def trash_series(self, series_id: int, link: Link) -> None:
        """The synced series is gone from the calendar: the whole CRM series goes to
        the trash (where it can be restored), once."""
        engine = self.engine
        if not engine.ctx.pull or series_id in engine.series_done:
            return
        engine.series_done.add(series_id)
        async with engine.db.write() as session:
            owner = await engine._owner(session)
            live = await session.scalar(
                select(Activity.id)
                .where(Activity.series_id == series_id, Activity.deleted_at.is_(None))
                .limit(1)
            )
            if live is not None:
                await activities.delete_activity(
                    session, owner, live, origin=engine.ctx.origin, scope="series"
                )
            await engine.links.drop(link, session=session)
        engine.report.deleted += 1

    def _warn_if_cut(self, item: str, event: CalendarEvent) -> None:
        """``warn_cut`` when the event's note comes in cut."""
        length = mapping.note_cut(event)
        if length is not None:
            warn_cut(self.engine.report, self.engine.connection_id, item, length)
