"""One CRM series <-> one calendar series (a master with its overrides), for the engine.

A CRM series is synced whole, never one event per occurrence. ``SeriesSync`` is the
series half of one engine run: what the engine calls, and what its parts share
(reading a CRM series, the series as the CRM has it, its rule as the calendar can
hold it). Each job is a part of its own:

* ``series_units``: the units a series is decided in, and what its link remembers;
* ``series_linked``: a linked series and its calendar series brought together;
* ``series_updates``: the calendar's update of a linked series, and its link stored;
* ``series_pull``: the calendar's units written to the CRM series;
* ``series_new``: a series new to one side, sent or taken in (or relinked);
* ``series_calendar_splits``: a split made in the calendar, taken by the CRM;
* ``series_crm_splits``: the CRM's own splits meeting the calendar's edits;
* ``series_copies``: the copies a calendar's split took over, deleted;
* ``series_rows``: the CRM rows of a series.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from crmcal.crm.tables import Activity, ActivitySeries
from crmcal.model import CalendarEvent, RemoteRef
from crmcal.providers import kinds
from crmcal.providers.base import Update
from crmcal.sync import series_mapping
from crmcal.sync.series_calendar_splits import CalendarSplits
from crmcal.sync.series_copies import SplitCopies
from crmcal.sync.series_crm_splits import CrmSplits
from crmcal.sync.series_linked import LinkedSeries
from crmcal.sync.series_new import NewSeries
from crmcal.sync.series_pull import SeriesPull
from crmcal.sync.series_rows import load_occurrences
from crmcal.sync.series_updates import Reconciled, SeriesUpdates
from crmcal.sync.tables import Link

if TYPE_CHECKING:
    from crmcal.sync.engine import Engine


class SeriesSync:
    """The series half of one engine run."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.linked = LinkedSeries(self)
        self.updates = SeriesUpdates(self)
        self.to_crm = SeriesPull(self)
        self.new = NewSeries(self)
        self.calendar_splits = CalendarSplits(self)
        self.crm_splits = CrmSplits(self)
        self.copies = SplitCopies(self)

    # --- what the engine calls (each the work of one part) -------------------------

    @property
    def pending(self) -> list[tuple[Reconciled, Update, CalendarEvent]]:
        """Series updates waiting for the run's batch."""
        return self.updates.pending

    @property
    def creating(self) -> list[tuple[ActivitySeries, Activity, CalendarEvent, CalendarEvent]]:
        """New series waiting for the run's batch."""
        return self.new.creating

    @property
    def dropping(self) -> dict[int, Link]:
        """Copies a calendar's split took over, waiting for the run's batch."""
        return self.copies.dropping

    async def prepare_splits(self) -> None:
        await self.calendar_splits.prepare()

    async def reconcile(self, series_id: int, link: Link, remote: RemoteRef | None) -> None:
        await self.linked.reconcile(series_id, link, remote)

    async def send(self, activity: Activity) -> None:
        await self.new.send(activity)

    async def take(self, ref: RemoteRef) -> None:
        await self.new.take(ref)

    async def write_pending(self) -> None:
        await self.updates.write_pending()

    async def create_pending(self) -> None:
        await self.new.create_pending()

    async def send_drops(self) -> None:
        await self.copies.send_drops()

    def new_link_hashes(
        self, series: ActivitySeries, occurrences: list[Activity], event: CalendarEvent
    ) -> dict[str, Any]:
        return self.new.new_link_hashes(series, occurrences, event)

    # --- shared by the parts -------------------------------------------------------

    async def load(self, series_id: int) -> tuple[ActivitySeries | None, list[Activity]]:
        async with self.engine.db.read() as session:
            found = await session.get(ActivitySeries, series_id)
            occurrences = await load_occurrences(session, series_id)
        return found, occurrences

    def crm_event(self, series: ActivitySeries, occurrences: list[Activity]) -> CalendarEvent:
        """The series as the CRM has it: its master with its overrides."""
        ctx = self.engine.ctx
        return series_mapping.crm_master(
            series, occurrences, ctx.owner, ctx.options, ctx.mails_attendees
        )

    def writable(self, item: int, event: CalendarEvent) -> CalendarEvent | None:
        """``event`` in the nearest form the calendar can hold (a series made where its
        rule was fine, such as one from another client): each difference is reported
        in the status, never made silently; None, skipped and reported, when nothing
        faithful can be written."""
        engine = self.engine
        capabilities = engine.provider.capabilities
        if event.recurrence is None:
            return event
        service = next(
            (k.label for k in kinds.KINDS.values() if k.capabilities is capabilities),
            "the calendar",
        )
        nearest = series_mapping.nearest_rule(capabilities, event.recurrence, service=service)
        if nearest.recurrence is None:
            engine.report.skipped += 1
            for difference in nearest.differences:
                engine.report.problem(f"series of activity {item}", difference)
            return None
        for difference in nearest.differences:
            engine.report.problem(f"series of activity {item}", difference)
        return replace(event, recurrence=nearest.recurrence)
