"""Writing a linked series to the calendar: one update naming only the groups that
changed ("overrides" when an occurrence did), sent with the run's other updates, and
the series' link stored with what both sides are once the calendar answers."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from crmcal.crm.tables import Activity, ActivitySeries, utcnow
from crmcal.model import (
    CalendarEvent,
    RemoteRef,
    moment_key,
    with_fields,
)
from crmcal.providers.base import (
    EventNotFound,
    ItemRefused,
    PreconditionFailed,
    ProviderError,
    Update,
    update_many,
)
from crmcal.sync.calendar_writes import REFUSED_KEPT
from crmcal.sync.series_units import (
    LEFT_OUT,
    Digests,
    Moment,
    Plan,
    anchor_of,
    digests_of,
    makes,
    remembered_hashes,
    units_digest,
    utc_instant,
)
from crmcal.sync.tables import Link

if TYPE_CHECKING:
    from crmcal.sync.series_sync import SeriesSync


@dataclass
class Reconciled:
    """A linked series brought together with its calendar series, waiting for its
    update's answer before its link is stored."""

    series: ActivitySeries
    occurrences: list[Activity]
    link: Link
    stored: Mapping[str, Any]
    crm_now: Digests
    cal_now: Digests
    base_crm: Digests
    kept_out: set[str]
    within: Callable[[Moment], bool]
    moved: bool  # either side had a change to write


class NotRead(Exception):
    """The calendar did not answer for a linked series (reported; read again next run)."""


class SeriesUpdates:
    """The calendar's side of a linked series: its update built from the units the
    CRM gives, sent with the run's batch, and its link stored as it answered."""

    def __init__(self, run: SeriesSync) -> None:
        self.run = run
        self.engine = run.engine
        # Series updates waiting for the run's batch (see ``write_pending``).
        self.pending: list[tuple[Reconciled, Update, CalendarEvent]] = []

    async def current(self, link: Link) -> RemoteRef | None:
        """The series as the calendar has it now; None when it is gone or was not read
        (that is reported, and read again next run: not read is not gone)."""
        found = await self.engine.provider.fetch(self.engine.ctx.calendar_id, [link.remote_id])
        if found and found[0].error:
            self.engine.report.cannot_read(found[0])
            raise NotRead(link.remote_id)
        if not found or found[0].event is None:
            return None
        return self.engine.reading.placed(found[0])

    async def push(
        self, link: Link, remote: RemoteRef | None, crm_event: CalendarEvent, plan: Plan
    ) -> tuple[Update, CalendarEvent] | None:
        """The update of the calendar series with the units the CRM gives; None when
        none can be made (reported; tried again next run); with the series as written
        in full (what the link remembers when the calendar answers no content)."""
        groups, keys = Plan.groups(plan.push), Plan.keys(plan.push)
        if keys and remote is None:
            # The overrides are written as one set: those the CRM does not know
            # (beyond its horizon) are taken from the calendar as it is now.
            remote = await self.current(link)
            if remote is None:
                raise EventNotFound(link.remote_id)
        base = remote.event if remote is not None and remote.event is not None else crm_event
        final = with_fields(base, crm_event, frozenset(groups - {"recurrence"}))
        rule = base.recurrence or crm_event.recurrence
        assert rule is not None
        if "recurrence" in groups and crm_event.recurrence is not None:
            rule = replace(crm_event.recurrence, exdates=rule.exdates)
        left_out = {moment_key(m): m for m in base.cancelled_moments()}
        live = dict(base.live_overrides())
        mine_out = {moment_key(m): m for m in crm_event.cancelled_moments()}
        mine_live = crm_event.live_overrides()
        for key in keys:
            left_out.pop(key, None)
            live.pop(key, None)
            if key in mine_out:
                left_out[key] = mine_out[key]
            elif key in mine_live:
                live[key] = mine_live[key]
        rule = replace(rule, exdates=tuple(left_out[k] for k in sorted(left_out)))
        await self._past_the_end(link, replace(final, recurrence=rule), live, Plan.keys(plan.pull))
        final = replace(final, recurrence=rule, overrides=tuple(live[k] for k in sorted(live)))
        changed = set(groups)
        if left_out.keys() != {moment_key(m) for m in base.cancelled_moments()}:
            changed.add("recurrence")
        if any(o.cancelled for o in base.overrides) and "recurrence" in changed:
            changed.add("overrides")  # its cancelled overrides are EXDATEs now
        if live.keys() != base.live_overrides().keys() or any(
            live[k] is not base.live_overrides().get(k) for k in live
        ):
            changed.add("overrides")
        etag = remote.etag if remote is not None else link.remote_etag
        held = self.run.writable(link.activity_id, final) if "recurrence" in changed else final
        if held is None:
            return None
        return Update(link.remote_id, etag or "", held, frozenset(changed)), final

    async def _past_the_end(
        self,
        link: Link,
        series: CalendarEvent,
        live: dict[str, CalendarEvent],
        pulled: set[str],
    ) -> None:
        """Drop from ``live`` the overrides ``series``' rule no longer makes (its end
        moved before them, UNTIL or COUNT lowered on either side): they go with their
        occurrences, as Outlook drops a series' exceptions with its pattern and Google
        its occurrences past the end, and as the CRM trashes them; left in place they
        would linger as orphans that calendars show on their own. One the calendar
        changed since the last sync is said (the CRM trashed its occurrence with the
        rule's change, without that edit); not one a CRM split moved to a series of
        its own, which takes the edit there."""
        gone: list[Moment] = []
        for key, override in list(live.items()):
            moment = override.recurrence_id
            if moment is None or makes(series, moment, self.engine.ctx.owner.timezone):
                continue
            del live[key]
            if key in pulled:
                gone.append(moment)
        if not gone:
            return
        instants = [utc_instant(m, series.timezone) for m in gone]
        async with self.engine.db.read() as session:
            anchor = await session.get(Activity, link.activity_id)
            trashed = set(
                await session.scalars(
                    select(Activity.original_start_at).where(
                        Activity.series_id == (anchor.series_id if anchor else None),
                        Activity.original_start_at.in_(instants),
                        Activity.deleted_at.is_not(None),
                    )
                )
            )
        for moment, instant in zip(gone, instants, strict=True):
            if instant in trashed:
                self.engine.report.warning(
                    link.remote_id,
                    f"the occurrence of {moment.isoformat()} changed in the calendar is past "
                    "the series' new end: removed there too (it is in the CRM's trash)",
                )

    async def write_pending(self) -> None:
        """Send the series updates this run gathered: in batch requests where the
        provider has them, each series answering on its own (one refused never stops
        the others; it is reported, its link left as it was, and written with its
        next change, as a refused single event is)."""
        while self.pending:  # a series sent again can ask for another write
            pending, self.pending = self.pending, []
            engine = self.engine
            results = await update_many(
                engine.provider, engine.ctx.calendar_id, [update for _, update, _ in pending]
            )
            await engine._answered(
                (done.link, result, partial(self._written, done, final, result))
                for (done, _, final), result in zip(pending, results, strict=True)
            )

    async def _written(
        self, done: Reconciled, final: CalendarEvent, result: RemoteRef | ProviderError
    ) -> None:
        """Store what a series update answered."""
        if isinstance(result, EventNotFound):
            await self.gone(done)
            return
        if isinstance(result, PreconditionFailed):
            await self._changed_meanwhile(done)
            return
        if isinstance(result, ItemRefused):
            await self._refused(done, result)
            return
        if isinstance(result, ProviderError):
            raise result
        # Remembered as the next run reads it (a series in no zone the calendar names
        # is kept in the user's).
        await self.store(done, result.etag, self.engine.reading.placed(result).event or final)

    async def _refused(self, done: Reconciled, refused: ItemRefused) -> None:
        """The calendar refused the series' update for good: said, its link left as it
        was, and the CRM's version refused remembered on it (``refused_hash``), so it
        is not sent again until either side changes (``LinkedSeries.still_refused``)."""
        engine = self.engine
        digest = units_digest(done.crm_now)
        engine.report.problem(done.link.remote_id, f"{refused}; {REFUSED_KEPT}",
                              refused=digest)  # fmt: skip
        engine.report.skipped += 1
        stored = await engine.links.store(done.link, refused_hash=digest)
        if engine.series_links.get(done.series.id) is done.link:
            engine.series_links[done.series.id] = stored

    async def _changed_meanwhile(self, done: Reconciled) -> None:
        """The calendar refused a series' update for a version it no longer has: it is
        reported, its link left as it was, and read again next run whatever that run's
        listing says. The version the update named may be older than any listing will
        show again (a change listed by a run whose write was refused), so the listing
        alone would never bring it back."""
        engine = self.engine
        engine.report.problem(done.link.remote_id, "changed while syncing; will retry",
                              retry=True)  # fmt: skip
        engine.report.skipped += 1

    async def gone(self, done: Reconciled) -> None:
        """Deleted in the calendar while edited in the CRM: the edit beats the
        deletion, the series is sent again."""
        engine = self.engine
        await engine.links.drop(done.link)
        engine.series_links[done.series.id] = None
        engine.series_done.discard(done.series.id)
        await self.run.new.send(anchor_of(done.occurrences, done.link))

    async def store(
        self, done: Reconciled, etag: str | None, written: CalendarEvent | None
    ) -> None:
        """The link of a reconciled series, as the calendar has it now."""
        engine = self.engine
        series, occurrences, link, stored = done.series, done.occurrences, done.link, done.stored
        crm_now, base_crm, within = done.crm_now, done.base_crm, done.within
        cal_after = digests_of(written, within) if written is not None else done.cal_now
        for key in done.kept_out:
            # Still the CRM's to send: said again whenever the series syncs.
            crm_now.occurrences[key] = base_crm.occurrences.get(key, LEFT_OUT)
        stored_link = await engine.links.store(
            link,
            remote_etag=etag,
            remote_hash=written.content_hash() if written is not None else link.remote_hash,
            crm_hash=engine._crm_hash(anchor_of(occurrences, link)),
            field_hashes=remembered_hashes(stored, crm_now, cal_after),
            last_synced_at=utcnow(),
            refused_hash=None,  # both sides agree: nothing waits refused
        )
        if engine.series_links.get(series.id) is link:
            # A later write of this series in the run starts from the new etag.
            engine.series_links[series.id] = stored_link
        if done.moved:
            engine.report.updated += 1
