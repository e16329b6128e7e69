"""One sync run of one connection: read both sides' changes, decide, write.

The run, in order:

1. the calendar's change listing since the saved cursor (a full listing when
   there is none or it expired), fetching only events whose version moved;
2. the CRM's changes since the saved change-feed position (every activity in
   range when the options changed or on the first run);
3. pair both through the link table, re-linking events that carry (or derive
   from) a CRM id instead of importing them twice;
4. decide each pair (``decisions.decide``) and apply it, each item in its own
   transaction, so a crash loses at most the item in flight; new events,
   updates and deletes for a provider that batches them wait and go out
   together (each item still answers on its own);
5. save both cursors only now, after everything they cover is applied.

A first import (no link, no cursor) runs these steps part by part as the
calendar delivers its events (``_first_import``): each part's events are paired
and written while later parts are still read and parsed.

Every write is idempotent (deterministic event ids, preconditions, content
digests in the link table), so a run cut off anywhere converges on the next.

This module is the run and each pair's decision; the jobs it hands over are
modules of their own (docs/development.md lists them): ``reading`` (the calendar's
side as read), ``relink``, ``conflicts``, ``imports`` (new events into the CRM),
``calendar_writes`` and ``crm_writes`` (the writes to either side),
``links`` (what a link keeps), ``report`` and ``run_end`` (the closing write);
series go to ``series_sync``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import replace
from typing import Any, assert_never

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from crmcal import tasks
from crmcal.crm import activities, changefeed, contacts
from crmcal.crm.errors import CrmError, Forbidden
from crmcal.crm.tables import Activity, ActivitySeries, User, utcnow
from crmcal.db import Database
from crmcal.model import (
    CalendarEvent,
    ChangeListing,
    RemoteRef,
)
from crmcal.providers import parse_pool
from crmcal.providers.base import (
    FATAL,
    ItemRefused,
    Provider,
    ProviderError,
    findings,
    list_changes_in_parts,
)
from crmcal.sync import conflicts, mapping, merge, series_units
from crmcal.sync.calendar_writes import PARTICIPANTS_KEPT, REFUSED_KEPT, CalendarWrites
from crmcal.sync.conflicts import Conflicts
from crmcal.sync.context import (
    RunContext,
    Start,
    SyncFailed,
    SyncRefused,
    SyncStopped,
    unconfirmed_links,
)
from crmcal.sync.crm_writes import CrmWrites
from crmcal.sync.decisions import Act, Decision, State, decide
from crmcal.sync.import_fields import Importer, organizer_of
from crmcal.sync.import_fields import compute_beside as import_fields_beside
from crmcal.sync.import_fields import known as import_fields_known
from crmcal.sync.imports import Imports
from crmcal.sync.info_block import LinkedRecords
from crmcal.sync.links import TRASHED, Links, addresses
from crmcal.sync.pair import Pair
from crmcal.sync.reading import CalendarReading
from crmcal.sync.relink import Relinking
from crmcal.sync.report import SyncReport
from crmcal.sync.run_end import RETRIES_KEPT, RunEnd
from crmcal.sync.series_sync import SeriesSync
from crmcal.sync.states import ConnectionState, FailureKind, LinkOrigin
from crmcal.sync.tables import Connection, Link
from crmcal.sync.written import Written

__all__ = ["Engine", "ProgressFn", "SyncFailed", "SyncRefused", "SyncStopped"]


# The fields' digests the engine asks of every event it reads (and a series' units) are
# computed beside its parsing, in parse_pool's processes, and come with the events.
parse_pool.compute_beside(merge.digests, series_units.unbounded_digests)
# And a first import's CRM fields of each event (``computing_beside``, in _first_import).
parse_pool.prepare(import_fields_beside)

# Why a series is skipped and counted where it is not synced (never flattened).
NOT_YET = "recurring series are not synced yet"
SERIES_CHANGES = "changes of a synced series are not synced yet"
# How often a run asks whether its connection was stopped or deleted meanwhile.
STOP_CHECK_SECONDS = 0.25
# New events imported per transaction: a run's first batch this many, each next one
# twice the last, up to IMPORT_BATCH_MAX. A batch costs the run some 30 statements and
# a commit whatever its size (its persons matched again, its ids read, its series
# written...): in a first import of 5,000 events, ten batches of 500 cost the syncing
# process about a tenth more CPU than four growing to 2,000. The first batches stay
# small so that writing starts while the calendar is still being read.
IMPORT_BATCH = 500
IMPORT_BATCH_MAX = 2000
# Activities sent to the calendar together: one batch of provider calls (where the
# provider has batches) and one transaction for their links.
OUTGOING_BATCH = 200


# (items settled, items known): a first import's known items grow as its parts arrive.
ProgressFn = Callable[[int, int], None]


@contextlib.asynccontextmanager
async def _ended_with(task: asyncio.Future[Any]) -> AsyncIterator[None]:
    """The block, after which ``task`` has ended: cancelled if the block did not wait
    for it (it left early), so that no read of this run goes on after the run."""
    try:
        yield
    finally:
        if not task.done():
            task.cancel()
            await tasks.to_completion(asyncio.wait([task]))
        if not task.cancelled():
            task.exception()  # retrieved: the block's own error, if any, is the one raised


class Engine:
    """One run: ``ctx`` is fixed when it starts, ``links`` and ``report`` fill as it goes."""

    ctx: RunContext

    def __init__(
        self,
        db: Database,
        provider: Provider,
        connection_id: int,
        *,
        force: bool = False,
        progress: ProgressFn | None = None,
        base_url: str = "http://127.0.0.1:8000",
    ) -> None:
        self.db = db
        self.provider = provider
        self.connection_id = connection_id
        self.force = force
        self.progress = progress
        self.base_url = base_url
        self.links = Links(db, connection_id)
        self.written = Written(db, connection_id)
        # Deals, persons and organizations of the activities at hand, for event
        # descriptions (F11); loaded only when that option is on.
        self.linked_info: dict[int, LinkedRecords] = {}
        self.report = SyncReport()
        self.seen: set[str] = set()
        self.first_import = False  # no link yet and no cursor: everything is new
        # The jobs the run hands over, each a module of its own.
        self.reading = CalendarReading(self)
        self.importing = Imports(self)
        self.calendar = CalendarWrites(self)
        self.crm = CrmWrites(self)
        self.relinking = Relinking(self)
        self._checked_at = time.monotonic()
        self._import_batch = IMPORT_BATCH  # the next batch's size (see IMPORT_BATCH)
        self.deferred = False  # a pull was left for the next run (see CrmWrites._as_read)
        # CRM series already skipped this run: one series is one item, however many
        # of its occurrences are at hand.
        self.skipped_series: set[int] = set()
        # CRM series looked at this run on a calendar that syncs series, with the link
        # of the one event they are there (None: not there yet).
        self.series_links: dict[int, Link | None] = {}
        self.series_done: set[int] = set()
        # Items (as problems name them) whose refused version was left as it is this
        # run: their earlier problem is kept, not reported anew (see _still_refused).
        self.still_refused: set[str] = set()
        # Items (as problems name them) whose CRM side the run looked at: a refusal
        # said of any other stays said, whatever the listing (see RunEnd.problems).
        self.looked_at: set[str] = set()
        # Activities the CRM's change feed names since the last run (not filled when
        # every activity in range is looked at): edited after that run read them, too.
        self.feed_changed: set[int] = set()
        self.series = SeriesSync(self)
        # This run's pairs, and the CRM series of the linked calendar series among them
        # (loaded only when a new calendar series might be a split of one of them).
        self.pairs: list[Pair] = []
        self.series_rows: dict[int, tuple[ActivitySeries, list[Activity]]] = {}
        # The calendar's listing, kept for the closing write (``finish_in``).
        self.listing: ChangeListing | None = None
        # A first import taken in parts (see _first_import): the CRM uids events of
        # earlier parts claimed, the activities they were paired with, and the
        # calendar series left for when the whole listing is in (None: not held).
        self.claimed_uids: set[str] = set()
        self.paired_activities: set[int] = set()
        self.held_series: list[RemoteRef] | None = None
        self._done = 0
        self._total = 0
        self.conflicts = Conflicts(db, connection_id, self.report)

    @functools.cached_property
    def importer(self) -> Importer:
        """Who imports, for the CRM's fields of new events (``sync/import_fields``)."""
        ctx = self.ctx
        return Importer.of(ctx.owner, ctx.options, ctx.own_addresses, ctx.mails_attendees)

    # --- the run ---------------------------------------------------------

    async def run(self, start: Start | None = None, *, finish: bool = True) -> SyncReport:
        """The run. ``start``: what it starts from, read by the caller under the lease
        (else read here). ``finish=False``: the closing write (cursors, counts) is left
        for the caller to make with ``finish_in`` in its own transaction, the one that
        gives the lease back."""
        mails = self.provider.capabilities.mails_attendees
        if start is None:
            self.ctx = ctx = await RunContext.build(
                self.db,
                self.connection_id,
                force=self.force,
                base_url=self.base_url,
                mails_attendees=mails,
            )
            await self.written.load()
            async with self.db.read() as session:
                self.reading.unconfirmed = await unconfirmed_links(session, self.connection_id)
        else:
            self.ctx = ctx = RunContext.of(
                start, force=self.force, base_url=self.base_url, mails_attendees=mails
            )
            self.written.notes = dict(start.written)
            self.reading.unconfirmed = dict(start.unconfirmed)
            self.reading.problems_before = start.conn.problems
        cursor = None if ctx.options_changed else ctx.remote_cursor
        # A first import needs every event's contents: say so, a provider may
        # then list them in one go instead of listing and fetching.
        first = cursor is None and not await self.links.count()
        self.first_import = first
        try:
            if first:
                listing = await self._first_import()
            else:
                listing = await self.provider.list_changes(ctx.calendar_id, cursor)
                remote_refs, gone_ids = await self.reading.remote_side(listing)
                crm_ids = await self._crm_side()
                pairs = await self._pair(remote_refs, gone_ids, crm_ids)
                self.pairs = pairs
                if self.provider.capabilities.syncs_series:
                    await self.series.prepare_splits()
                self._total = len(pairs)
                await self._settle_all(pairs)
            await self._flush()
            if self.report.retries() > RETRIES_KEPT:
                # More items to read again than the connection keeps: the next run
                # lists them again from the same position instead.
                self.deferred = True
            self.listing = listing
            if finish:
                async with self.db.write() as session:
                    conn = await session.get(Connection, self.ctx.connection_id)
                    if conn is None:
                        raise SyncStopped(
                            f"connection {self.connection_id} was deleted during the sync"
                        )
                    if conn.state == ConnectionState.STOPPED:
                        raise SyncStopped(
                            f"connection {self.connection_id} was stopped during the sync"
                        )
                    await self.finish_in(session, conn)
        except IntegrityError:
            # A link or a run's record refused for want of its connection: the
            # connection was deleted between two checks.
            await self._still_wanted(now=True)
            raise
        return self.report

    async def _settle_all(self, pairs: list[Pair]) -> None:
        """Settle ``pairs`` in order, writing the batches that fill up on the way."""
        for pair in pairs:
            await self._still_wanted()
            await self._settle(pair)
            if len(self.importing.pending) >= self._import_batch:
                await self._still_wanted(now=True)
                await self.importing.write()
                self._import_batch = min(2 * self._import_batch, IMPORT_BATCH_MAX)
            if len(self.calendar.outgoing) + len(self.series.creating) >= OUTGOING_BATCH:
                await self._still_wanted(now=True)
                await self.calendar.create_all()
            if self.calendar.waiting() + len(self.series.pending) >= OUTGOING_BATCH:
                await self._still_wanted(now=True)
                await self.calendar.send()
            self._done += 1
            if self.progress:
                self.progress(self._done, max(self._total, self._done))

    async def _flush(self) -> None:
        """Write what waits for a batch."""
        series = self.series.pending or self.series.creating or self.series.dropping
        if self.importing.pending or self.calendar.outgoing or self.calendar.waiting() or series:
            await self._still_wanted(now=True)
            await self.importing.write()
            await self.calendar.send()
            await self.calendar.create_all()

    async def _first_import(self) -> ChangeListing:
        """A first import (no link, no cursor): the calendar's events are settled part
        by part as the provider delivers them (``base.list_changes_in_parts``), so that
        the first batch is written while later parts are still read and parsed; what
        the run keeps of the listing (its cursor, whether it was full) is answered.

        What pairs an event with the CRM is the event alone (the CRM uid it carries or
        derives from its UID), so the events of a part are paired as it comes, an
        event whose uid an earlier part claimed counting as a copy as in one listing.
        Two things wait until the whole listing is in, as they need all of it:

        * calendar series that are more than a plain new series written with the
          batch (one that may be the CRM's own, has occurrences changed on their
          own, or whose uid the CRM holds): series_sync looks at every new calendar
          series of the run for one that starts at the same moment or was split
          off, and a part may hold one half of that; those pairs and the series
          paired with a CRM activity are settled after the last part, in order;
        * the CRM's activities no event claimed (sent to the calendar, if they are
          to go there): an event of a later part may still claim one.

        With no link, nothing can look deleted: the guards for an empty-looking
        calendar and for mass deletion run at the end as for any listing, and find
        nothing to refuse."""
        ctx = self.ctx
        summary: ChangeListing | None = None
        listed: set[str] = set()
        deleted: list[str] = []
        crm_ids: set[int] = set()
        held: list[Pair] = []
        self.held_series = []
        unreadable = await self.reading.unreadable()
        parts = list_changes_in_parts(self.provider, ctx.calendar_id, None, with_contents=True)
        # The CRM's side is read while the provider lists (a server's listing takes a
        # while, with nothing else for this process to do), not after the first part.
        crm_side = asyncio.ensure_future(self._crm_side())
        # What the CRM is given for each new event is computed where it is parsed (on
        # the other cores, when the provider parses in parse_pool's processes).
        with parse_pool.computing_beside(import_fields_beside, self.importer):
            async with _ended_with(crm_side), contextlib.aclosing(parts):
                async for part in parts:
                    if summary is None:
                        summary = ChangeListing(
                            full=part.full, cursor=part.cursor, complete=part.complete
                        )
                        if part.full:
                            await self.links.load()
                        crm_ids = await crm_side
                    ids = {ref.id for ref in part.changed}
                    listed |= ids
                    deleted += part.deleted
                    summary.unconfirmed |= part.unconfirmed
                    self.seen |= ids | set(part.deleted)
                    moved = await self.reading.remote_items(part.changed, unreadable)
                    pairs = await self._pair(moved, set(), set())
                    self._total += len(pairs)
                    now: list[Pair] = []
                    for pair in pairs:
                        if pair.link is not None or self._series_part(pair):
                            self.pairs.append(pair)  # what series_sync looks through
                        if pair.activity is not None and self._series_part(pair):
                            held.append(pair)
                        else:
                            now.append(pair)
                    await self._settle_all(now)
        if summary is None:  # a provider that delivered no part at all: nothing listed
            summary = ChangeListing(full=False)
        summary.deleted = deleted
        # The rest, with the whole listing in: what is gone, the held series, then the
        # activities no event claimed.
        await self.reading.refuse_empty(summary, listed)
        more, gone = await self.reading.remote_gone(summary, listed)
        if self.importing.pending:
            await self._still_wanted(now=True)
            await self.importing.write()  # its series left for series_sync are held too
        taken, self.held_series = self.held_series, None
        rest = await self._pair(more, gone, crm_ids - self.paired_activities)
        self.pairs += [p for p in rest if p.link is not None or self._series_part(p)]
        if self.provider.capabilities.syncs_series:
            await self.series.prepare_splits()
        for ref in taken:
            await self._guarded(Pair(remote=ref), self.series.take(ref))
        self._total += len(rest)
        await self._settle_all([*held, *rest])
        return summary

    @staticmethod
    def _series_part(pair: Pair) -> bool:
        """Whether a pair concerns a series: a calendar series, or a CRM series' occurrence."""
        event = pair.remote.event if pair.remote is not None else None
        return (event is not None and event.recurring) or (
            pair.activity is not None and pair.activity.series_id is not None
        )

    async def _still_wanted(self, *, now: bool = False) -> None:
        """Raise SyncStopped when the connection was stopped or deleted meanwhile.

        Asked before every write, answered from the database at most every
        STOP_CHECK_SECONDS (``now``: at once), so that a stop takes effect within a
        second without a query per item.
        """
        clock = time.monotonic()
        if not now and clock - self._checked_at < STOP_CHECK_SECONDS:
            return
        self._checked_at = clock
        async with self.db.read() as session:
            state = await session.scalar(
                select(Connection.state).where(Connection.id == self.connection_id)
            )
        if state is None:
            raise SyncStopped(f"connection {self.connection_id} was deleted during the sync")
        if state == ConnectionState.STOPPED:
            raise SyncStopped(f"connection {self.connection_id} was stopped during the sync")

    # --- pairing both sides --------------------------------------------

    async def _crm_side(self) -> set[int]:
        """Ids of activities to look at: changed since the cursor, or all in range."""
        full = self.ctx.crm_cursor is None or self.ctx.options_changed
        if not full and (self.ctx.crm_cursor or 0) >= self.ctx.feed_head:
            return set()  # nothing written to the CRM since the last run: no session
        async with self.db.read() as session:
            if full:
                linked = select(Link.activity_id).where(
                    Link.connection_id == self.ctx.connection_id
                )
                query = select(Activity.id).where(
                    Activity.owner_id == self.ctx.owner.id,
                    or_(Activity.start_at >= self.ctx.sync_from, Activity.id.in_(linked)),
                )
                return set(await session.scalars(query))
            ids: set[int] = set()
            cursor = self.ctx.crm_cursor or 0
            if cursor >= self.ctx.feed_head:
                return ids  # nothing written to the CRM since the last run
            while True:
                rows = await changefeed.read_changes(
                    session, after_seq=cursor, owner_id=self.ctx.owner.id
                )
                rows = [row for row in rows if row.seq <= self.ctx.feed_head]
                if not rows:
                    return ids
                found = {row.activity_id for row in rows if row.origin != self.ctx.origin}
                ids.update(found)
                self.feed_changed.update(found)
                cursor = rows[-1].seq

    async def _pair(self, moved: list[RemoteRef], gone: set[str], crm_ids: set[int]) -> list[Pair]:
        """This run's changes as pairs of their two sides: each event moved or gone on
        the calendar with its link or the activity it claims, each changed activity with
        its link, the activities read; an event no activity takes is a pair of its own
        (a new event, or a copy of one another event claims)."""
        by_activity: dict[int, Pair] = {}
        new_events: list[Pair] = []
        candidates = self._sort_moved(moved, by_activity, new_events)
        for rid in gone:
            link = self.links.by_remote[rid]
            by_activity[link.activity_id] = Pair(link=link, remote_gone=True)
        if not (by_activity or candidates or crm_ids):
            return new_events  # nothing moved on either side: nothing to read
        async with self.db.read() as session:
            await self._claim(session, candidates, by_activity, new_events)
            await self._read_activities(session, by_activity, crm_ids)
        self._note_paired(by_activity)
        return [*new_events, *by_activity.values()]

    def _sort_moved(
        self, moved: list[RemoteRef], by_activity: dict[int, Pair], new_events: list[Pair]
    ) -> dict[str, RemoteRef]:
        """The events moved on the calendar, sorted: a linked one paired with its link
        (into ``by_activity``), a second claim of a CRM uid a copy (into ``new_events``);
        answers the rest by the uid each claims, noted as claimed for this run."""
        candidates: dict[str, RemoteRef] = {}
        for ref in moved:
            link = self.links.by_remote.get(ref.id)
            if link is not None:
                by_activity[link.activity_id] = Pair(link=link, remote=ref)
            else:
                uid = self._claimed_uid(ref)
                if uid in candidates or uid in self.claimed_uids:
                    new_events.append(Pair(remote=ref))  # two events claim one activity: a copy
                else:
                    candidates[uid] = ref
        self.claimed_uids.update(candidates)
        return candidates

    async def _claim(
        self,
        session: AsyncSession,
        candidates: dict[str, RemoteRef],
        by_activity: dict[int, Pair],
        new_events: list[Pair],
    ) -> None:
        """Pair each unlinked event with the activity of the uid it claims (``_claimed_uid``)
        when that activity is linked to no other event; the others are new events, or
        copies (into ``new_events``). Takes what it pairs out of ``candidates``."""
        claimed = await activities.find_by_uids(session, self.ctx.owner.id, list(candidates))
        await self.links.load_of(Link.activity_id, [a.id for a in claimed])
        for activity in claimed:
            ref = candidates.pop(activity.uid)
            if activity.id in self.links.by_activity:
                # Linked to another event already: this one is a copy.
                new_events.append(Pair(remote=ref))
            else:
                by_activity[activity.id] = Pair(remote=ref)
        new_events.extend(Pair(remote=ref) for ref in candidates.values())

    async def _read_activities(
        self, session: AsyncSession, by_activity: dict[int, Pair], crm_ids: set[int]
    ) -> None:
        """Add the CRM's changed activities (``crm_ids``) to ``by_activity`` with their
        links, and read every paired activity, with the deals and contacts it links
        to when the connection writes them into events."""
        unknown = [i for i in {*crm_ids, *by_activity} if self.links.of_activity(i) is None]
        await self.links.load_of(Link.activity_id, unknown)
        for activity_id in crm_ids:
            by_activity.setdefault(activity_id, Pair(link=self.links.of_activity(activity_id)))
        if not by_activity:
            return  # nothing paired (a first import's part of new events): nothing to read
        loaded = await session.scalars(select(Activity).where(Activity.id.in_(list(by_activity))))
        for activity in loaded:
            by_activity[activity.id].activity = activity
        if self.ctx.options.include_deal_and_contact_info:
            present = [p.activity for p in by_activity.values() if p.activity is not None]
            linked = await contacts.linked_records(session, present)
            self.linked_info.update(
                (activity_id, mapping.linked_records(records))
                for activity_id, records in linked.items()
            )

    def _note_paired(self, by_activity: dict[int, Pair]) -> None:
        """Remember the pairs made, and the activities and events they hold as seen in
        this run."""
        self.paired_activities.update(by_activity)
        for activity_id, pair in by_activity.items():
            pair.activity_id = activity_id
            self.seen.add(f"activity {activity_id}")
            self.looked_at.add(f"activity {activity_id}")
            if pair.link is not None:
                self.seen.add(pair.link.remote_id)
                self.looked_at.add(pair.link.remote_id)

    def _claimed_uid(self, ref: RemoteRef) -> str:
        """The CRM uid an unlinked event belongs to: carried in it, or derived from its UID."""
        event = ref.event
        assert event is not None
        if event.crm_id:
            return event.crm_id
        if event.uid:
            # Derived where the event was parsed, with its CRM input (see import_fields).
            found = import_fields_known(event, self.importer)
            if found is not None and found.uid is not None:
                return found.uid
        return mapping.derived_uid(self.ctx.owner.id, event.uid or ref.id)

    # --- deciding and applying -------------------------------------------

    def _event_of(self, activity: Activity) -> CalendarEvent:
        event = mapping.activity_to_event(
            activity,
            self.ctx.owner,
            self.ctx.options,
            self.linked_info.get(activity.id),
            f"{self.ctx.base_url}/activities/{activity.id}",
        )
        return mapping.as_told(event, self.ctx.mails_attendees)

    def _mine(self, activity: Activity) -> bool:
        """Whether the activity (still) belongs to this connection's user (F5)."""
        return activity.owner_id == self.ctx.owner.id

    def _crm_hash(self, activity: Activity | None) -> str:
        if activity is None or activity.deleted_at is not None:
            return TRASHED
        return self._event_of(activity).content_hash()

    def kept_participants(self, activity: Activity) -> list[str] | None:
        """The addresses of the activity's participants kept out of its event, on a
        calendar that e-mails every attendee it is told about and an activity that does
        not ask for invitations (``mapping.as_told``); None where they are written."""
        if not self.ctx.mails_attendees or activity.notify_participants:
            return None
        return sorted({p.email.lower() for p in activity.participants if p.email})

    def newly_kept(self, link: Link, activity: Activity) -> bool:
        """Whether the activity has a participant kept out of its event that the link
        does not know of (added since): said once, as when the event was made. A link
        that keeps no such list yet (made before it was kept) only learns it."""
        kept = self.kept_participants(activity)
        before = (link.field_hashes or {}).get("kept")
        return bool(kept) and before is not None and bool(set(kept or ()) - set(before))

    def _remote_absent(self, pair: Pair) -> bool:
        """True when the calendar side counts as deleted (gone, cancelled or skipped as private)."""
        if pair.remote_gone:
            return True
        event = pair.remote.event if pair.remote else None
        if event is None:
            return False
        if event.cancelled:
            return True
        # F9 "skip" leaves out the calendar's private events, not the events the
        # CRM wrote (private ones among them, for activities only their owner sees).
        if pair.link is not None:
            from_calendar = pair.link.origin == LinkOrigin.CALENDAR
        else:
            from_calendar = not event.crm_id
        return event.private and self.ctx.options.private_events == "skip" and from_calendar

    def _outgoing(self, activity: Activity) -> bool:
        return activity.type in self.ctx.options.outgoing_activity_types

    async def _settle(self, pair: Pair) -> None:
        await self._guarded(pair, self._settle_one(pair))

    async def _guarded(self, pair: Pair, step: Awaitable[None]) -> None:
        """Run one item's step: an error that concerns the item alone is reported, and
        the run goes on with the others."""
        try:
            await step
        except CrmError as exc:
            if isinstance(exc, Forbidden):
                raise SyncFailed(str(exc), FailureKind.PERMISSION) from exc
            self.report.problem(pair.item(), str(exc))
            self.report.skipped += 1
        except FATAL:
            raise  # the whole account or server: nothing else would go through either
        except ItemRefused as exc:
            # The server refused this one item for good (403 for a meeting of someone
            # else, a CalDAV precondition, a 400): skip it, say why, go on. The link
            # keeps its last synced versions and remembers the one refused, so that
            # version is not sent again; a new change of either side is synced as any.
            refused = self._crm_hash(pair.activity) if pair.activity is not None else None
            self.report.problem(pair.item(), f"{exc}; {REFUSED_KEPT}", refused=refused)
            self.report.skipped += 1
            await self._remember_refused(pair)
        except ProviderError as exc:
            # A failure that may pass (the server failing on this item): its link is
            # left as it was, and the next run that looks at it tries again.
            self.report.problem(pair.item(), str(exc))
            self.report.skipped += 1

    async def _remember_refused(self, pair: Pair) -> None:
        """Note on the pair's link the CRM version the calendar refused (``refused_hash``)."""
        activity = pair.activity
        link = pair.link
        if activity is not None:
            link = self.links.of_activity(activity.id) or link
        if link is None or activity is None or link.id is None:
            return  # nothing linked: nothing to remember it on
        await self.links.refresh(link, refused_hash=self._crm_hash(activity))

    async def _guarded_link(self, link: Link, step: Awaitable[None]) -> None:
        """``_guarded`` for a step of the linked item ``link`` (named by its event)."""
        await self._guarded(Pair(link=link), step)

    async def _answered(
        self, answers: Iterable[tuple[Pair | Link, object, Callable[[], Awaitable[None]]]]
    ) -> None:
        """Take a batch's answers, each (the item or its link, its part's answer, the step
        that takes it) under ``_guarded``: one refused never stops the others. An answer that
        concerns the whole account or server is raised once the others are taken: what
        was written is linked, and a later run goes on from there. The others' errors
        are then left for that run (their links as they were): taking one may write
        again (an item changed meanwhile is read and written anew, one gone is made
        again), and nothing more is written to an account the sync stops for."""
        taken = list(answers)
        fatal = next((answer for _, answer, _ in taken if isinstance(answer, FATAL)), None)
        for item, answer, step in taken:
            if fatal is not None and isinstance(answer, ProviderError):
                continue
            await self._guarded(item if isinstance(item, Pair) else Pair(link=item), step())
        if fatal is not None:
            raise fatal

    async def _settle_one(self, pair: Pair) -> None:
        if pair.link is not None:
            await self._settle_linked(pair, pair.link)
        elif pair.activity is not None and pair.remote is not None:
            await self.relinking.link(pair, pair.activity, pair.remote)
        elif pair.remote is not None:
            await self._new_event(pair.remote)
        elif pair.activity is not None:
            await self._new_activity(pair.activity)

    def _skip_recurring(self, pair: Pair, reason: str = NOT_YET) -> bool:
        event = pair.remote.event if pair.remote else None
        recurring = (event is not None and event.recurring) or (
            pair.activity is not None and pair.activity.recurrence is not None
        )
        if not recurring:
            return False
        series_id = pair.activity.series_id if pair.activity is not None else None
        if series_id is not None and series_id in self.skipped_series:
            return True
        if (
            series_id is not None
            and pair.link is not None
            and self.provider.capabilities.syncs_series
            and not self._series_moved(pair, pair.link)
        ):
            return True  # the series crmcal sent, as it left it
        item = pair.item()
        if series_id is not None:
            self.skipped_series.add(series_id)
            item = f"series {series_id}"
            if self.series_links.get(series_id) is not None or pair.link is not None:
                reason = SERIES_CHANGES
        self.report.skipped += 1
        self.report.problem(item, reason)
        return True

    @staticmethod
    def _series_moved(pair: Pair, link: Link) -> bool:
        """Whether either side of a sent series changed since it was sent."""
        activity = pair.activity
        crm = activity is None or (
            link.last_synced_at is not None and activity.updated_at > link.last_synced_at
        )
        return crm or (pair.remote is not None and pair.remote.etag != link.remote_etag)

    async def _series_deleted(self, pair: Pair, link: Link) -> bool:
        """Whether ``pair`` is the sent series' event and the whole series was deleted in
        the CRM, the event untouched in the calendar since it was sent."""
        activity = pair.activity
        if (
            activity is None
            or activity.series_id is None
            or activity.deleted_at is None
            or link.origin != LinkOrigin.CRM
            or not self.ctx.push
            or not self.provider.capabilities.syncs_series
            or (pair.remote is not None and pair.remote.etag != link.remote_etag)
        ):
            return False
        async with self.db.read() as session:
            series = await session.get(ActivitySeries, activity.series_id)
        return series is not None and series.deleted_at is not None

    async def _series_link(self, series_id: int) -> Link | None:
        """The link of the event a CRM series is in this calendar (on one of its
        occurrences), looked up once per run."""
        if series_id not in self.series_links:
            async with self.db.read() as session:
                occurrences = select(Activity.id).where(Activity.series_id == series_id)
                found = await session.scalar(
                    select(Link).where(
                        Link.connection_id == self.ctx.connection_id,
                        Link.activity_id.in_(occurrences),
                    )
                )
            self.series_links[series_id] = found
        return self.series_links[series_id]

    def _skip_series(self, series_id: int, reason: str) -> None:
        self.skipped_series.add(series_id)
        self.report.skipped += 1
        self.report.problem(f"series {series_id}", reason)

    async def _new_event(self, ref: RemoteRef) -> None:
        event = ref.event
        assert event is not None
        if not self.ctx.pull or event.cancelled or not self._in_range(event):
            return
        if event.private and self.ctx.options.private_events == "skip":
            return
        if event.recurring and self.provider.capabilities.syncs_series:
            if event.recurrence is None:
                # An occurrence without its series (a server that stores it alone).
                self._skip_recurring(Pair(remote=ref), "an occurrence without its series")
            elif self.first_import and not event.crm_id and not event.live_overrides():
                # A plain series new to the CRM: written with the batch (see
                # Imports.write); one that may be the CRM's own, or one with
                # occurrences changed on their own, goes through series_sync.
                self.importing.pending.append(ref)
            elif self.held_series is not None:
                self.held_series.append(ref)  # until the whole listing is in
            else:
                await self.series.take(ref)
            return
        if self._skip_recurring(Pair(remote=ref)):
            return
        self.importing.pending.append(ref)  # written in batches: see Imports.write

    async def _new_activity(self, activity: Activity, *, recreate: bool = False) -> None:
        """Send an unlinked activity to the calendar; ``recreate`` for one whose event
        was deleted while the activity was edited (the filters applied when it was
        first sent)."""
        if not self.ctx.push or not self._mine(activity):
            return
        if activity.series_id is not None and self.provider.capabilities.syncs_series:
            # An occurrence in the trash is an EXDATE of its series: looked at too.
            if recreate or self._outgoing(activity):
                await self.series.send(activity)  # one series (sync/series_sync)
            return
        if activity.deleted_at is not None:
            return
        early = activity.start_at < self.ctx.sync_from
        if not recreate and (not self._outgoing(activity) or early):
            return
        if self._skip_recurring(Pair(activity=activity)):
            return
        item = Pair(activity=activity).item()
        if (await self.reading.refused()).get(item) == self._crm_hash(activity):
            self.still_refused.add(item)  # refused as it is: said, not sent again
            return
        self.calendar.outgoing.append((activity, self._event_of(activity)))  # see create_all

    async def _settle_linked(self, pair: Pair, link: Link) -> None:
        """Settle a linked item: the cases settled apart first, then each side's state
        since the link, the decision, and what it does."""
        activity = await self._settled_apart(pair, link)
        if activity is None:
            return
        remote_event = pair.remote.event if pair.remote is not None else None
        if remote_event is not None and remote_event.content_hash() != link.remote_hash:
            known = self.written.explains(activity.id, remote_event.content_hash())
            if known is not None:
                # crmcal wrote this version and stopped before linking it: only what
                # changed in the CRM since then counts.
                link.crm_hash, link.remote_hash = known
        crm, calendar = self._states(pair, link, activity)
        if self._still_refused(pair, link, activity, crm, calendar):
            return
        crm_wins = conflicts.crm_wins(self.ctx.options.conflict_policy, activity, remote_event)
        pair.plan = None
        if (
            crm is State.CHANGED
            and calendar is State.CHANGED
            and remote_event is not None
            and link.field_hashes
        ):
            pair.plan = merge.plan(
                merge.digests(self._event_of(activity)),
                merge.digests(remote_event),
                link.field_hashes.get("crm", {}),
                link.field_hashes.get("calendar", {}),
                crm_wins,
            )
        overlap = pair.plan.conflict if pair.plan is not None else None
        decision = decide(crm, calendar, self.ctx.sync_type, crm_wins, overlap)
        if activity.organizer:
            # Someone else's meeting: the calendar's version of what it owns always
            # wins, and crmcal never writes it (no new organizer, no block of ours, no
            # mail to its guests). CRM-only changes stay in the CRM.
            pair.plan = None
            decision = conflicts.for_invitation(
                decide(crm, calendar, self.ctx.sync_type, False, None)
            )
        await self._execute(decision, pair, link)

    async def _settled_apart(self, pair: Pair, link: Link) -> Activity | None:
        """Settle the linked items that are not a plain comparison of the two sides (a
        series, an activity purged or given to another user, a type no longer sent):
        None when settled here, else the activity to compare."""
        activity = pair.activity
        if await self._series_deleted(pair, link):
            await self.calendar.delete(pair, link)
            return None
        if (
            activity is not None
            and activity.series_id is not None
            and self.provider.capabilities.syncs_series
        ):
            if self._remote_absent(pair) and not self._series_moved(pair, link):
                await self.crm.trash_series(activity.series_id, link)
            else:
                await self.series.reconcile(activity.series_id, link, pair.remote)
            return None
        if self._skip_recurring(pair):
            return None
        if activity is None:  # purged from the trash: the event, if any, starts afresh
            await self.links.drop(link)
            if pair.remote is not None and not self._remote_absent(pair):
                await self._new_event(pair.remote)
            return None
        if not self._mine(activity):
            # Given to another user: an event crmcal made goes (the new owner's
            # calendar gets one); the user's own calendar event stays theirs.
            if link.origin == LinkOrigin.CRM and self.ctx.push:
                await self.calendar.delete(pair, link)
            else:
                await self.links.drop(link)
            return None
        # F8: an event crmcal made for a type the user no longer sends is removed.
        if (
            activity.deleted_at is None
            and link.origin == LinkOrigin.CRM
            and not self._outgoing(activity)
            and self.ctx.push
        ):
            await self.calendar.delete(pair, link)
            return None
        return activity

    def _states(self, pair: Pair, link: Link, activity: Activity) -> tuple[State, State]:
        """How each side stands since the link: (the CRM's, the calendar's)."""
        crm_hash = self._crm_hash(activity)
        if crm_hash == link.crm_hash:
            crm = State.UNCHANGED
        else:
            crm = State.GONE if crm_hash == TRASHED else State.CHANGED
        remote_event = pair.remote.event if pair.remote is not None else None
        if self._remote_absent(pair):
            calendar = State.GONE
        elif remote_event is not None:
            moved = remote_event.content_hash() != link.remote_hash
            calendar = State.CHANGED if moved else State.UNCHANGED
        else:
            calendar = State.UNCHANGED
        if (
            crm is State.CHANGED
            and calendar is State.CHANGED
            and remote_event is not None
            and crm_hash == remote_event.content_hash()
        ):
            return State.UNCHANGED, State.UNCHANGED  # both made the same edit
        if (
            crm is State.CHANGED
            and calendar is State.GONE
            and link.field_hashes
            and not merge.edited_by_a_person(
                merge.digests(self._event_of(activity)), link.field_hashes.get("crm", {})
            )
        ):
            # "An edit beats a deletion" counts a person's edit of what syncs: a new
            # deal-and-contact block (a deal renamed ...) never brings an event back.
            crm = State.UNCHANGED
        return crm, calendar

    def _still_refused(
        self, pair: Pair, link: Link, activity: Activity, crm: State, calendar: State
    ) -> bool:
        """Whether the CRM's side is the very version the calendar refused for good, and
        the calendar's has not moved since: nothing is sent (it would be refused
        again), the link stays as it was (the version is not synced: a calendar edit
        later meets it as a CRM change), and the problem stays in the status as it was
        said, not reported anew."""
        if link.refused_hash is None or crm is State.UNCHANGED or calendar is not State.UNCHANGED:
            return False
        if self._crm_hash(activity) != link.refused_hash:
            return False
        self.still_refused.add(pair.item())
        return True

    def _organizer(self, event: CalendarEvent) -> str | None:
        """The organizer's address when the event is someone else's meeting."""
        return organizer_of(event, self.ctx.owner.email, self.ctx.own_addresses)

    async def _execute(self, decision: Decision, pair: Pair, link: Link) -> None:
        if decision.conflict:
            await self._record_conflict(pair, decision)
        match decision.act:
            case Act.NOTHING:
                await self._refresh_link(pair, link)
            case Act.UNLINK:
                await self.links.drop(link)
            case Act.PUSH_UPDATE:
                await self.calendar.update(pair, link)
            case Act.PUSH_CREATE:
                await self.links.drop(link)
                assert pair.activity is not None
                await self._new_activity(pair.activity, recreate=True)
            case Act.PUSH_DELETE:
                await self.calendar.delete(pair, link)
            case Act.PULL_UPDATE:
                await self.crm.update(pair, link)
            case Act.PULL_TRASH:
                await self.crm.trash(pair, link)
            case Act.MERGE:
                await self._merge(pair, link)
            case _:
                assert_never(decision.act)

    async def _merge(self, pair: Pair, link: Link) -> None:
        """Both sides changed: the CRM takes the calendar's fields, then the calendar gets
        the activity as it now is (with the CRM's fields)."""
        plan = pair.plan
        assert plan is not None
        if plan.from_calendar:
            if not plan.from_crm:
                await self.crm.update(pair, link)
                return
            assert pair.remote is not None
            assert pair.remote.event is not None
            assert pair.activity is not None
            result = merge.merged(pair.remote.event, self._event_of(pair.activity), plan.from_crm)
            # The link stays as it was until the calendar has the result too: should
            # that write fail, the next run merges again from the same base.
            updated = await self.crm.update(
                replace(pair, remote=replace(pair.remote, event=result)), link, keep_link=True
            )
            if updated is None:
                return
            pair = replace(pair, activity=updated)
        await self.calendar.update(pair, link)

    # --- an event as the CRM takes it -------------------------------------

    def _in_range(self, event: CalendarEvent) -> bool:
        if isinstance(event.start, dt.datetime):
            return event.start >= self.ctx.sync_from
        zone = mapping.zone_of(self.ctx.owner)
        return dt.datetime.combine(event.start, dt.time(), tzinfo=zone) >= self.ctx.sync_from

    def _fields(self, event: CalendarEvent, current: Activity | None = None) -> dict[str, Any]:
        ctx = self.ctx
        fields = mapping.event_fields(event, ctx.owner, ctx.options, ctx.own_addresses, current)
        if self.ctx.mails_attendees and not event.attendees and current is not None:
            del fields["participants"]  # never written to the calendar: they stay
        return fields

    async def _owner(self, session: AsyncSession) -> User:
        owner = await session.get(User, self.ctx.owner.id)
        assert owner is not None
        return owner

    # --- the link and the conflict of a decided pair -----------------------

    async def _refresh_link(self, pair: Pair, link: Link) -> None:
        ref = pair.remote
        activity = pair.activity
        crm_hash = self._crm_hash(activity)
        remote_event = ref.event if ref is not None else None
        remote_hash = remote_event.content_hash() if remote_event else link.remote_hash
        fields = link.field_hashes
        moved = fields is None or (crm_hash, remote_hash) != (link.crm_hash, link.remote_hash)
        if moved and activity is not None and activity.deleted_at is None:
            calendar_part = (
                merge.digests(remote_event) if remote_event else (fields or {}).get("calendar")
            )
            if calendar_part is not None:
                attendees = (
                    addresses(remote_event) if remote_event else (fields or {}).get("attendees")
                )
                fields = {"crm": merge.digests(self._event_of(activity)), "calendar": calendar_part,
                          "attendees": attendees}  # fmt: skip
        if activity is not None and activity.deleted_at is None and fields is not None:
            kept = self.kept_participants(activity)
            if kept is not None and fields.get("kept") != kept:
                if self.newly_kept(link, activity):
                    # Added to an event already there (the only change it makes to
                    # what the calendar is told): kept out of it, said once.
                    self.report.warning(f"activity {activity.id}", PARTICIPANTS_KEPT)
                fields = {**fields, "kept": kept}
        values: dict[str, Any] = {
            "crm_hash": crm_hash,
            "remote_hash": remote_hash,
            "remote_etag": ref.etag if ref else link.remote_etag,
            "field_hashes": fields,
            # Both sides agree on another version than the one refused: nothing waits.
            "refused_hash": link.refused_hash if crm_hash == link.crm_hash else None,
        }
        if (crm_hash, remote_hash, values["remote_etag"]) != (
            link.crm_hash,
            link.remote_hash,
            link.remote_etag,
        ):
            # Both sides agree on a new version (a run that wrote it was killed before
            # it linked it): synced now, or the activity would look pending for good.
            values["last_synced_at"] = utcnow()
        await self.links.refresh(link, **values)

    async def _record_conflict(self, pair: Pair, decision: Decision) -> None:
        """Record the conflict ``pair`` is decided in (``sync/conflicts``)."""
        activity = pair.activity
        crm_event = self._event_of(activity) if activity is not None else None
        await self.conflicts.record(pair, decision, crm_event, self.ctx.options.conflict_policy)

    # --- the end of the run ------------------------------------------------

    def _end(self) -> RunEnd:
        return RunEnd(
            self.ctx, self.listing, self.deferred, self.report, self.seen, self.written,
            frozenset(self.still_refused), self.reading.confirmed(), frozenset(self.looked_at),
            findings(self.provider),
        )  # fmt: skip

    async def finish_in(self, session: AsyncSession, conn: Connection) -> None:
        """The run's closing write, in the caller's transaction (``RunEnd.write``)."""
        await self._end().write(session, conn)

    def quiet_finish(self, conn: Connection) -> dict[str, Any] | None:
        """The closing write as column values, when it is only the positions; None: it
        needs the connection read again (``finish_in``). See ``RunEnd.quiet``."""
        if self.listing is None:
            return None
        return self._end().quiet(conn)
