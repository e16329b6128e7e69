"""A series the CRM split ("this and following") since the last sync, meeting what the
calendar did meanwhile: its edits of the occurrences split off (moved off) reach the
CRM's new series, which is sent again; a split of the calendar's at another
occurrence splits the CRM's part too; edits of the series' fields on both sides are
a conflict."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from crmcal.crm import activities, recurrence, times
from crmcal.crm import series as crm_series
from crmcal.crm.errors import CrmError
from crmcal.crm.schemas import ActivityUpdate
from crmcal.crm.tables import Activity, ActivitySeries, utcnow
from crmcal.model import (
    CalendarEvent,
    RemoteRef,
    changed_fields,
)
from crmcal.sync import series_mapping
from crmcal.sync.decisions import Act, Decision
from crmcal.sync.pair import Pair
from crmcal.sync.series_copies import DROPPING
from crmcal.sync.series_pull import GROUP_FIELDS
from crmcal.sync.series_rows import (
    load_occurrences,
    split_off_query,
)
from crmcal.sync.series_units import (
    Digests,
    Moment,
    digests_of,
    remembered_hashes,
    utc_instant,
    within_horizon_of,
)
from crmcal.sync.states import Winner
from crmcal.sync.tables import Link

if TYPE_CHECKING:
    from crmcal.sync.series_sync import SeriesSync


class CrmSplits:
    """The CRM's own splits meeting the calendar's edits of the same series."""

    def __init__(self, run: SeriesSync) -> None:
        self.run = run
        self.engine = run.engine

    async def split_since(
        self, series: ActivitySeries, link: Link, at: dt.datetime | None = None
    ) -> Activity | None:
        """An occurrence of ``series`` at the last sync (at ``at``, or after the series'
        start) that the CRM has split off into a series of its own since. The one at
        ``at`` may be in the trash since: the calendar's split there is still the
        split of the CRM's part, whose cancellation it has not seen yet."""
        since = link.last_synced_at
        if since is None:
            return None
        query = split_off_query(series, since, trashed_since=at is not None)
        if at is not None:
            query = query.where(Activity.original_start_at == at)
        else:
            query = query.where(Activity.original_start_at > series.start_at)
        async with self.engine.db.read() as session:
            return await session.scalar(query.order_by(Activity.original_start_at).limit(1))

    async def moved_off(
        self,
        series: ActivitySeries,
        occurrences: list[Activity],
        link: Link,
        cal_now: Digests,
        base_cal: Digests,
    ) -> dict[str, Activity]:
        """The occurrences the calendar changed on their own (or left out) since the last
        sync that the CRM has meanwhile split off ("this and following") into a series
        of its own, by key: the calendar still has them in ``series``."""
        changed = {
            key
            for key in {*cal_now.occurrences, *base_cal.occurrences}
            if cal_now.occurrences.get(key) != base_cal.occurrences.get(key)
        }
        changed -= {series_mapping.original_key(series, o) for o in occurrences}
        since = link.last_synced_at
        if not changed or since is None:
            return {}
        query = split_off_query(series, since).where(Activity.original_start_at > series.start_at)
        async with self.engine.db.read() as session:
            found = list(await session.scalars(query))
        keyed = {series_mapping.original_key(series, a): a for a in found}
        return {key: keyed[key] for key in sorted(changed) if key in keyed}

    async def resend(self, series_id: int) -> None:
        """Write a CRM series again that this run already looked at (an occurrence of it
        took a calendar edit since): its pending create made anew, or, linked, it is
        reconciled again (not looked at yet, it is written as it is now anyway)."""
        engine = self.engine
        waiting = [entry for entry in self.run.new.creating if entry[0].id == series_id]
        if waiting:
            self.run.new.creating = [
                entry for entry in self.run.new.creating if entry[0].id != series_id
            ]
            engine.series_done.discard(series_id)
            await self.run.new.send(waiting[0][1])
            return
        if series_id not in engine.series_done:
            return
        link = await engine._series_link(series_id)
        if link is not None:
            # An update of it waiting for the run's batch is made anew, not sent twice
            # (the second would meet the first's etag).
            self.run.updates.pending = [
                entry for entry in self.run.updates.pending if entry[0].series.id != series_id
            ]
            engine.series_done.discard(series_id)
            await self.run.linked.reconcile(series_id, link, None)

    async def split_crm_part(self, ref: RemoteRef) -> bool:
        """A calendar series that another client split off ("this and following") from a
        linked series whose occurrences from its start the CRM had meanwhile split off
        into a series of its own at an earlier occurrence: that CRM series splits where
        the calendar's did, its later part linked to ``ref`` (the fields both sides
        changed go to the conflict policy). Whether it was one."""
        engine = self.engine
        event = ref.event
        assert event is not None
        start = utc_instant(event.start, event.timezone)
        for pair in engine.pairs:
            old = pair.remote.event if pair.remote is not None else None
            if (
                pair.link is None
                or old is None
                or old.recurrence is None
                or pair.activity is None
                or pair.activity.series_id is None
                or pair.remote is None
                or pair.remote.etag == pair.link.remote_etag
                or utc_instant(old.start, old.timezone) >= start
            ):
                continue
            series, _ = await self.run.load(pair.activity.series_id)
            if series is None:
                continue
            anchor = await self.split_since(series, pair.link, start)
            if anchor is None or anchor.series_id is None:
                continue
            await self._split_part(pair, anchor, ref)
            return True
        return False

    async def _split_part(self, pair: Any, anchor: Activity, ref: RemoteRef) -> None:
        engine, ctx = self.engine, self.engine.ctx
        event = ref.event
        assert event is not None
        assert anchor.series_id is not None
        part_id = anchor.series_id
        async with engine.db.write() as session:
            part = await session.get(ActivitySeries, part_id)
            row = await session.get(Activity, anchor.id)
            assert part is not None
            assert row is not None
            later = await crm_series.split(session, part, row, ctx.origin)
            new_id = later.id
            new_occurrences = await load_occurrences(session, new_id)
            link: Link | None = None
            # Linked even when the CRM has cancelled every occurrence of the part since
            # the last sync: the calendar's split then loses them (the conflict rules
            # decide as for any occurrence), instead of coming in as a new series that
            # brings them back.
            if new_occurrences:
                # Both sides as the old series was at the last sync: what each changed
                # since is its own, and a field both changed is a conflict.
                stored = pair.link.field_hashes or {}
                master = dict(stored.get("series") or {})
                theirs = dict(stored.get("series_calendar") or master)
                kept = stored.get("occurrences") or {}
                moved = {series_mapping.original_key(later, o) for o in new_occurrences}
                base_crm = Digests(master, {})
                base_cal = Digests(theirs, {})
                for side, base in (("crm", base_crm), ("calendar", base_cal)):
                    remembered = kept.get(side) or {}
                    base.occurrences = {k: v for k, v in remembered.items() if k in moved}
                for base in (base_crm, base_cal):
                    # Where it starts and its rule are the split's, on both sides.
                    now = digests_of(event, within_horizon_of(later)).master
                    base.master.update({g: now[g] for g in ("when", "recurrence") if g in now})
                link = await self.run.calendar_splits.link_split(
                    session,
                    new_occurrences,
                    ref,
                    remembered_hashes({}, base_crm, base_cal),
                    pair.link,
                    trashed=True,
                )
        if link is not None and DROPPING in (link.field_hashes or {}):
            link = await self.run.copies.drop_copy(link)
        engine.series_done.add(new_id)
        if link is not None:
            engine.series_links[new_id] = link
            new_series, new_occurrences = await self.run.load(new_id)
            assert new_series is not None
            await self.run.linked.reconcile_read(new_series, new_occurrences, link, ref, True)
            engine.report.created += 1
        if new_id == part_id:
            return  # split at its first occurrence: the whole part, linked and synced above
        part_link = await engine._series_link(part_id)
        if part_link is not None and part_id in engine.series_done:
            # Sent earlier in this run: its new end goes out now.
            part, occurrences = await self.run.load(part_id)
            if part is not None:
                await self.run.linked.reconcile_read(part, occurrences, part_link, None, True)

    async def both_split(
        self, old: CalendarEvent, ref: RemoteRef, later: ActivitySeries, link: Link
    ) -> None:
        """The calendar's "this and following" reached occurrences the CRM had split off
        into a series of their own since the last sync: the calendar's edits of the
        series' fields (its new series' title, place ...) and the CRM's edits of that
        series are a conflict, decided by the conflict policy as for any series unit; a
        calendar win is written to that CRM series and sent on with it."""
        engine, ctx = self.engine, self.engine.ctx
        event = ref.event
        assert event is not None
        groups = {g for g in changed_fields(old, event) if g in GROUP_FIELDS}
        if not groups:
            return
        for other_id in await self._split_off_series(later, event):
            other, occurrences = await self.run.load(other_id)
            live = [o for o in occurrences if o.deleted_at is None]
            if other is None or not live:
                continue
            crm = self.run.crm_event(other, occurrences)
            mine = {g for g in groups if changed_fields(crm, event) & {g}}
            if not mine:
                continue  # the same edit on both sides
            crm_wins = not ctx.pull or (
                ctx.push and self.run.linked.crm_wins(other, occurrences, event)
            )
            await engine._record_conflict(
                Pair(activity=live[0], remote=ref),
                Decision(
                    Act.PUSH_UPDATE if crm_wins else Act.PULL_UPDATE,
                    True,
                    Winner.CRM if crm_wins else Winner.CALENDAR,
                ),
            )
            if crm_wins:
                continue
            async with engine.db.write() as session:
                owner = await engine._owner(session)
                fields = self.run.to_crm.master_fields(other, live, event, mine, owner)
                fields.pop("note", None) if other.organizer else None
                if fields:
                    await activities.update_activity(
                        session, owner, live[0].id, ActivityUpdate(**fields, scope="series"),
                        origin=ctx.origin, as_contacts=ctx.options.attendees_to_contacts,
                        from_calendar=True,
                    )  # fmt: skip
            other_link = await engine._series_link(other_id)
            if other_link is not None and other_id in engine.series_done:
                # Sent (or synced) earlier in this run: the win goes out now.
                reloaded, occurrences = await self.run.load(other_id)
                if reloaded is not None:
                    await self.run.linked.reconcile_read(
                        reloaded, occurrences, other_link, None, True
                    )

    async def _split_off_series(self, later: ActivitySeries, event: CalendarEvent) -> set[int]:
        """The other CRM series holding occurrences the calendar series ``event`` makes
        beyond those of ``later`` (its CRM series): split off in the CRM meanwhile."""
        rule = event.recurrence
        assert rule is not None
        first: Moment = event.start
        if isinstance(first, dt.datetime):
            first = first.astimezone(dt.UTC)
        found = recurrence.Rule(
            rrule=rule.rrule, tz=times.zone(event.timezone or later.timezone),
            all_day=event.all_day, first=first, rdates=rule.rdates,
            exdates=event.cancelled_moments(),
        )  # fmt: skip
        until = later.materialised_until or (utcnow() + crm_series.horizon())
        try:
            slots = [found.instant(m) for m in found.starts(found.instant(first), until, 10_000)]
        except CrmError:
            return set()
        async with self.engine.db.read() as session:
            held = set(
                await session.scalars(
                    select(Activity.original_start_at).where(Activity.series_id == later.id)
                )
            )
            beyond = [m for m in slots if m not in held][:5]
            if not beyond:
                return set()
            ids = await session.scalars(
                select(Activity.series_id)
                .join(ActivitySeries, ActivitySeries.id == Activity.series_id)
                .where(
                    ActivitySeries.owner_id == self.engine.ctx.owner.id,
                    ActivitySeries.deleted_at.is_(None),
                    Activity.deleted_at.is_(None),
                    Activity.series_id != later.id,
                    Activity.original_start_at.in_(beyond),
                )
            )
            return {i for i in ids if i is not None}


def moved_digest(activity: Activity, before: str | None, link: Link) -> str | None:
    """What the CRM did to an occurrence it split off into another series, as one of
    the old series' units: nothing (``before``), made to follow its new series (None),
    or changed on its own since the last sync."""
    if not activity.overrides:
        return None
    since = link.last_synced_at
    if since is not None and activity.updated_at <= since:
        return before
    return f"changed:{activity.id}:{activity.updated_at.isoformat()}"
