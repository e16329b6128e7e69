"""Series new to one side: a CRM series sent whole as one calendar series (with the
run's other creates), and a calendar series taken in as one CRM series — unless it is
one the CRM already has (relinked) or the later part of a split."""

from __future__ import annotations

import datetime as dt
from functools import partial
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from crmcal.crm import activities, recurrence, times
from crmcal.crm import series as crm_series
from crmcal.crm.errors import CrmError, Invalid
from crmcal.crm.schemas import ActivityCreate
from crmcal.crm.tables import Activity, ActivitySeries, User, utcnow
from crmcal.model import (
    CalendarEvent,
    RemoteRef,
)
from crmcal.providers.base import (
    ItemRefused,
    PreconditionFailed,
    ProviderError,
    create_many,
)
from crmcal.sync import mapping, series_mapping
from crmcal.sync.calendar_writes import REFUSED_KEPT
from crmcal.sync.links import field_hashes
from crmcal.sync.pair import Pair
from crmcal.sync.series_rows import (
    load_occurrences,
    set_organizer,
)
from crmcal.sync.series_units import (
    Moment,
    digests_of,
    plain_title,
    remembered_hashes,
    rule_shape,
    utc_instant,
    within_horizon_of,
)
from crmcal.sync.states import LinkOrigin
from crmcal.sync.tables import Link

if TYPE_CHECKING:
    from crmcal.sync.series_sync import SeriesSync


class NewSeries:
    """Series new to one side: sent to the calendar, or taken into the CRM."""

    def __init__(self, run: SeriesSync) -> None:
        self.run = run
        self.engine = run.engine
        # New series waiting for the run's batch (see ``create_pending``): the series,
        # its anchor occurrence, its master, and the master as written.
        self.creating: list[tuple[ActivitySeries, Activity, CalendarEvent, CalendarEvent]] = []

    async def send(self, activity: Activity) -> None:
        """Send the CRM series of ``activity`` as one series (never one event per
        occurrence): its master with its overrides, the trashed occurrences left out."""
        engine = self.engine
        assert activity.series_id is not None
        series_id = activity.series_id
        if series_id in engine.skipped_series:
            return
        link = await engine._series_link(series_id)
        if link is not None:
            await self.run.linked.reconcile(series_id, link, None)
            return
        if series_id in engine.series_done:
            return
        engine.series_done.add(series_id)
        series, occurrences = await self.run.load(series_id)
        live = [o for o in occurrences if o.deleted_at is None]
        if series is None or series.deleted_at is not None or not live:
            return
        master = self.run.crm_event(series, occurrences)
        anchor = live[0]
        item = f"activity {anchor.id}"
        engine.looked_at.add(item)
        if (await engine.reading.refused()).get(item) == master.content_hash():
            engine.still_refused.add(item)  # refused as it is: said, not sent again
            return
        held = self.run.writable(series_id, master)
        if held is None:
            return
        await engine.written.note([(anchor.id, engine._crm_hash(anchor), master.content_hash())])
        # Made with the run's other new series, in as few requests as the provider
        # allows (see ``create_pending``); linked once it answers.
        self.creating.append((series, anchor, master, held))
        if not engine.provider.capabilities.batch_creates:
            await self.create_pending()

    async def create_pending(self) -> None:
        """Make the new series this run gathered: in batch requests where the provider
        has them, each answering on its own (one refused never stops the others)."""
        engine = self.engine
        while self.creating:  # a series adopted can ask for another write
            pending, self.creating = self.creating, []
            items = [(series.uid, held) for series, _, _, held in pending]
            results = await create_many(engine.provider, engine.ctx.calendar_id, items)
            await engine._answered(
                (
                    Pair(activity=anchor),
                    result,
                    partial(self._created, series, anchor, master, result),
                )
                for (series, anchor, master, _), result in zip(pending, results, strict=True)
            )

    async def _created(
        self,
        series: ActivitySeries,
        anchor: Activity,
        master: CalendarEvent,
        result: RemoteRef | ProviderError,
    ) -> None:
        """Link a new series as its create answered."""
        engine = self.engine
        series_id = series.id
        if isinstance(result, PreconditionFailed):
            # Made by a run that stopped before linking it.
            found = await engine.provider.get_by_key(engine.ctx.calendar_id, series.uid)
            if found is None or found.event is None or not found.event.recurring:
                engine._skip_series(
                    series_id, "its series exists in the calendar but cannot be read"
                )
                return
            result = found
        if isinstance(result, ItemRefused):
            # Refused for good: not sent again until the series changes (the problem
            # keeps the version refused, there being no link to keep it).
            engine.report.problem(f"activity {anchor.id}", f"{result}; {REFUSED_KEPT}",
                                  refused=master.content_hash())  # fmt: skip
            engine.report.skipped += 1
            return
        if isinstance(result, ProviderError):
            raise result
        ref = engine.reading.placed(result)  # as the next run reads it
        written = ref.event or master
        within = within_horizon_of(series)
        # The link with what both sides are now, in one write: a run cut off after it
        # finds the series whole, one cut off before finds it by its key (above).
        hashes = remembered_hashes(
            field_hashes(master, written),
            digests_of(master, within),
            digests_of(written, within),
        )
        link = Link(
            connection_id=engine.ctx.connection_id,
            activity_id=anchor.id,
            origin=LinkOrigin.CRM,
            remote_id=ref.id,
            remote_uid=written.uid,
            remote_etag=ref.etag,
            remote_hash=written.content_hash(),
            crm_hash=engine._crm_hash(anchor),
            field_hashes=hashes,
            last_synced_at=utcnow(),
            unconfirmed=True,  # made after the run's cursor was read: see Link.unconfirmed
        )
        await engine.links.store_many([link])
        engine.report.created += 1
        engine.series_links[series_id] = engine.links.of_activity(anchor.id)

    async def take(self, ref: RemoteRef) -> None:
        """A calendar series new to the CRM: one CRM series whose occurrences are of the
        incoming type (F7), its overrides on their occurrences, linked on its first
        occurrence — or, when it is the later part of a linked series a client split
        ("this and following"), that split."""
        # A split names the series it came from as its link is now: written first.
        await self.run.updates.write_pending()
        await self.create_pending()
        engine, ctx = self.engine, self.engine.ctx
        event = ref.event
        assert event is not None
        if ref.id in self.run.calendar_splits.taken:
            return  # taken with the split of a series it was cut from (``CalendarSplits.split``)
        if await self.run.copies.left_copy(ref):
            return
        source = self.run.calendar_splits.source_of(event, ref.id)
        if source is not None:
            await self.run.calendar_splits.split(source, ref)
            return
        if await self.run.crm_splits.split_crm_part(ref):
            return
        if await self._relink(ref):
            return
        if not _has_occurrences(event, ctx.owner):
            return  # every occurrence left out there: nothing to bring in (yet)
        if event.recurrence is not None and not event.recurrence.rrule.strip():
            raise Invalid(series_mapping.RDATES_ONLY)
        incoming = series_mapping.events_to_series(
            event, (), ctx.owner, ctx.options, ctx.own_addresses
        )
        try:
            data = ActivityCreate(**incoming.fields)
        except ValidationError as exc:
            raise Invalid(f"the series cannot be stored: {exc.errors()[0]['msg']}") from None
        uid: str | None = mapping.derived_uid(ctx.owner.id, event.uid or ref.id)
        organizer = engine._organizer(event)
        async with engine.db.write() as session:
            owner = await engine._owner(session)
            taken = await session.scalar(select(ActivitySeries.id).where(ActivitySeries.uid == uid))
            if taken is not None:
                uid = None  # a copy of an event already imported gets its own id
            (first,) = await activities.create_activities(
                session,
                owner,
                [(data, uid)],
                activities.WriteOptions(
                    origin=ctx.origin,
                    as_contacts=ctx.options.attendees_to_contacts,
                    from_calendar=True,
                ),
            )
            assert first.series_id is not None
            series_id = first.series_id
            series = await session.get(ActivitySeries, series_id)
            assert series is not None
            if organizer:
                await set_organizer(session, series, organizer)
                first.organizer = organizer
            keys = {
                k
                for k, o in event.live_overrides().items()
                if o.recurrence_id is not None and within_horizon_of(series)(o.recurrence_id)
            }
            if keys:
                await self.run.to_crm.pull_occurrences(
                    session, owner, series, event, keys, bool(organizer)
                )
            occurrences = await load_occurrences(session, series_id)
            link = Link(
                connection_id=ctx.connection_id,
                activity_id=first.id,
                remote_id=ref.id,
                remote_uid=event.uid,
                remote_etag=ref.etag,
                remote_hash=event.content_hash(),
                crm_hash=engine._crm_hash(first),
                field_hashes=self.new_link_hashes(series, occurrences, event),
                origin=LinkOrigin.CALENDAR,
                last_synced_at=utcnow(),
            )
            await engine.links.store(link, session=session)
        engine.series_links[series_id] = link
        engine.report.created += 1

    def new_link_hashes(
        self, series: ActivitySeries, occurrences: list[Activity], event: CalendarEvent
    ) -> dict[str, Any]:
        """What the link of a series just imported from ``event`` remembers of both sides
        (also for the series a first import writes in its batches)."""
        within = within_horizon_of(series)
        crm_now = digests_of(self.run.crm_event(series, occurrences), within)
        return remembered_hashes({}, crm_now, digests_of(event, within))

    async def _relink(self, ref: RemoteRef) -> bool:
        """Link a calendar series to the CRM series it already is (one crmcal sent, or
        imported through an earlier connection), reconciling the two."""
        engine, ctx = self.engine, self.engine.ctx
        event = ref.event
        assert event is not None
        uids = [mapping.derived_uid(ctx.owner.id, event.uid or ref.id)]
        if event.crm_id:
            uids.append(event.crm_id)
        async with engine.db.read() as session:
            found = await session.scalar(
                select(ActivitySeries).where(
                    ActivitySeries.uid.in_(uids),
                    ActivitySeries.owner_id == ctx.owner.id,
                    ActivitySeries.deleted_at.is_(None),
                )
            )
            if found is None:
                # A CRM series not in this calendar yet that starts at the same moment
                # is this series: one split at the same occurrence on both sides (or
                # made twice) becomes one series, never two.
                found = await self._same_start(session, event)
        if found is None or await engine._series_link(found.id) is not None:
            return False
        series, occurrences = await self.run.load(found.id)
        live = [o for o in occurrences if o.deleted_at is None]
        if series is None or not live:
            return False
        origin = LinkOrigin.CRM if event.crm_id == series.uid else LinkOrigin.CALENDAR
        link = await engine.links.store(
            Link(
                connection_id=ctx.connection_id,
                activity_id=live[0].id,
                remote_id=ref.id,
                remote_uid=event.uid,
                remote_etag="",
                origin=origin,
            )
        )
        engine.series_links[series.id] = link
        engine.series_done.add(series.id)
        await self.run.linked.reconcile_read(series, occurrences, link, ref, True)
        return True

    async def _same_start(
        self, session: AsyncSession, event: CalendarEvent
    ) -> ActivitySeries | None:
        """The CRM series not in this calendar yet that ``event`` (a calendar series new
        to it) is, by its start: one of the same frequency and title; else the only one
        starting then, when ``event`` is the only new calendar series starting then (one
        split at the same occurrence on both sides, each side with its own title). Two
        series that merely start at the same moment (two weekly Tuesday 09:00 meetings)
        stay two; neither is one another new calendar series names as its own."""
        engine = self.engine
        owner = engine.ctx.owner
        query = select(ActivitySeries).where(
            ActivitySeries.owner_id == owner.id, ActivitySeries.deleted_at.is_(None)
        )
        if isinstance(event.start, dt.datetime):
            query = query.where(
                ActivitySeries.all_day.is_(False),
                ActivitySeries.start_at == event.start.astimezone(dt.UTC),
            )
        else:
            query = query.where(
                ActivitySeries.all_day.is_(True), ActivitySeries.start_date == event.start
            )
        rivals = [
            e
            for e in (p.remote.event for p in engine.pairs if p.link is None and p.remote)
            if e is not None and e is not event and e.recurrence is not None
        ]
        claimed = {mapping.derived_uid(owner.id, e.uid) for e in rivals if e.uid}
        claimed |= {e.crm_id for e in rivals if e.crm_id}
        assert event.recurrence is not None
        shape = rule_shape(event.recurrence.rrule)
        candidates = [
            c
            for c in await session.scalars(query.order_by(ActivitySeries.id))
            if c.uid not in claimed
            and rule_shape(c.rrule) == shape
            and await engine._series_link(c.id) is None
        ]
        title = plain_title(event.summary)
        named = [c for c in candidates if plain_title(c.subject) == title]
        if named:
            return named[0]
        start = utc_instant(event.start, event.timezone)
        if len(candidates) != 1 or engine.first_import:
            return None
        if any(utc_instant(e.start, e.timezone) == start for e in rivals):
            return None
        return candidates[0]


def _has_occurrences(event: CalendarEvent, owner: User) -> bool:
    """Whether a calendar series has an occurrence the CRM would make (from its start up
    to the horizon) that is not left out."""
    rule = event.recurrence
    if rule is None:
        return False
    first: Moment = event.start
    if isinstance(first, dt.datetime):
        first = first.astimezone(dt.UTC)
    zone = times.zone(event.timezone or owner.timezone)
    found = recurrence.Rule(rrule=rule.rrule, tz=zone, all_day=event.all_day, first=first,
                            rdates=rule.rdates, exdates=event.cancelled_moments())  # fmt: skip
    start = found.instant(first)
    try:
        return bool(found.starts(start, max(start, utcnow()) + crm_series.horizon(), 1))
    except CrmError:
        return True  # the CRM says what is wrong with it when it is stored
