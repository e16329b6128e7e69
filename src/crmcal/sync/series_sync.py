"""One CRM series <-> one calendar series (a master with its overrides), for the engine.

A linked series is reconciled in units: each field group of the master
(``model.FIELD_GROUPS`` but "overrides"; the rule and its left-out dates are
"recurrence") and each occurrence changed on its own on either side, keyed by
its original start. The series' link (kept on one of its occurrences) remembers
a digest of every unit as each side had it at the last sync, so:

* a unit changed on one side only goes to the other side;
* changed on both, to the same value, it is no conflict; else the conflict
  policy picks (the calendar always wins a meeting someone else organises, which
  is never written; a one-way connection never writes the side it only reads);
* writes to the calendar are one update of the series naming only the groups
  that changed ("overrides" when an occurrence did), and writes to the CRM touch
  only the series' fields that changed, or the one occurrence that did.

Occurrences beyond the CRM's horizon have no rows yet: the calendar's overrides
there are its own, never compared and kept as they are on every write; once the
horizon reaches them they come in like any calendar edit.

A calendar client that ends a series and starts another one from an occurrence
("this and following") writes the old master with an earlier end and a new
master: that becomes a split of the CRM series (``crm.series.split``), the later
occurrences keeping their ids and CRM data, never a new series plus deletions.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from sqlalchemy import Select, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from crmcal.crm import activities, recurrence, times
from crmcal.crm import series as crm_series
from crmcal.crm.errors import CrmError, Invalid
from crmcal.crm.schemas import ActivityCreate, ActivityUpdate
from crmcal.crm.tables import Activity, ActivitySeries, User, utcnow
from crmcal.model import (
    FIELD_GROUPS,
    CalendarEvent,
    RemoteRef,
    canonical_rrule,
    changed_fields,
    field_digests,
    moment_key,
    with_fields,
)
from crmcal.providers import kinds
from crmcal.providers.base import (
    EventNotFound,
    PreconditionFailed,
    ProviderError,
    Update,
    create_many,
    delete_many,
    update_many,
)
from crmcal.sync import mapping, series_mapping
from crmcal.sync.decisions import Act, Decision
from crmcal.sync.states import LinkOrigin, Winner
from crmcal.sync.tables import Link

if TYPE_CHECKING:
    from crmcal.sync.engine import Engine

Moment = dt.datetime | dt.date

# Why a series is skipped and counted (never flattened).
SERIES_GONE_SINGLE = "the series became a single event in the calendar; not synced"
# The master's units: every field group but the overrides (decided one by one).
MASTER_GROUPS = tuple(g for g in FIELD_GROUPS if g != "overrides")
# In a split's link: the series crmcal made for the split's CRM part that the
# calendar's own split replaced, until it is deleted from the calendar. Stored in
# the split's transaction, so that a run cut off before the delete does it next time
# (``SeriesSync.drop_copy``) instead of leaving a second series there.
DROPPING = "dropping"
# The CRM fields (as the API names them) each master group sets.
GROUP_FIELDS: dict[str, tuple[str, ...]] = {
    "summary": ("subject",),
    "location": ("location",),
    "description": ("note",),
    "private": ("visibility",),
    "busy": ("busy",),
    "reminder": ("reminder_minutes",),
    "attendees": ("participants",),
}


@dataclass
class Digests:
    """One side of a series: a digest per master group, and per occurrence changed on
    its own (within the CRM's horizon) a digest of that occurrence."""

    master: dict[str, str]
    occurrences: dict[str, str]

    def get(self, unit: str) -> str | None:
        if unit.startswith("@"):
            return self.occurrences.get(unit[1:])
        return self.master.get(unit)


# The digest of an occurrence left out (EXDATE, or a cancelled override).
LEFT_OUT = "left-out"


def digests_of(event: CalendarEvent, within: Callable[[Moment], bool]) -> Digests:
    """A side's units: the master's groups (the rule without its left-out dates), and
    per occurrence that differs from the rule — left out, or changed on its own within
    the CRM's horizon — what it is."""
    rule = event.recurrence
    bare = replace(
        event, overrides=(), recurrence=replace(rule, exdates=()) if rule is not None else None
    )
    master = field_digests(bare)
    master.pop("overrides", None)
    occurrences = {moment_key(m): LEFT_OUT for m in event.cancelled_moments()}
    for key, override in event.live_overrides().items():
        moment = override.recurrence_id
        if key not in occurrences and moment is not None and within(moment):
            occurrences[key] = override.content_hash()
    return Digests(master, occurrences)


@dataclass
class Plan:
    """Which units go which way."""

    push: set[str] = dataclasses.field(default_factory=set)
    pull: set[str] = dataclasses.field(default_factory=set)
    conflict: bool = False

    @staticmethod
    def groups(units: set[str]) -> set[str]:
        return {u for u in units if not u.startswith("@")}

    @staticmethod
    def keys(units: set[str]) -> set[str]:
        return {u[1:] for u in units if u.startswith("@")}


@dataclass
class _Reconciled:
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


class _NotRead(Exception):
    """The calendar did not answer for a linked series (reported; read again next run)."""


class SeriesSync:
    """The series half of one engine run."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # The new calendar series of this run already taken as a split of another.
        self.taken: set[str] = set()
        # Series updates waiting for the run's batch (see ``write_pending``).
        self.pending: list[tuple[_Reconciled, Update, CalendarEvent]] = []
        # New series waiting for theirs (see ``create_pending``): the series, its
        # anchor occurrence, its master, and the master as written.
        self.creating: list[tuple[ActivitySeries, Activity, CalendarEvent, CalendarEvent]] = []
        # Series crmcal made that a split made in the calendar took over, waiting to be
        # deleted with the run's batch (see ``drop_copy``), by their links' ids.
        self.dropping: dict[int, Link] = {}

    # --- reading the CRM side ------------------------------------------------------

    async def load(self, series_id: int) -> tuple[ActivitySeries | None, list[Activity]]:
        async with self.engine.db.read() as session:
            found = await session.get(ActivitySeries, series_id)
            occurrences = await _occurrences(session, series_id)
        return found, occurrences

    def crm_event(self, series: ActivitySeries, occurrences: list[Activity]) -> CalendarEvent:
        """The series as the CRM has it: its master with its overrides."""
        ctx = self.engine.ctx
        master = series_mapping.series_to_events(series, occurrences, ctx.owner, ctx.options).master
        if ctx.mails_attendees and not master.notify_attendees:
            # This calendar e-mails every attendee it is told about (F10).
            quiet = tuple(replace(o, attendees=(), organizer=None) for o in master.overrides)
            master = replace(master, attendees=(), organizer=None, overrides=quiet)
        return master

    def _invitation(self, calendar: CalendarEvent | None, occurrences: list[Activity]) -> bool:
        if calendar is not None:
            return self.engine._organizer(calendar) is not None
        return any(o.organizer for o in occurrences)

    # --- a linked series -----------------------------------------------------------

    async def reconcile(self, series_id: int, link: Link, remote: RemoteRef | None) -> None:
        """Bring a linked series and its calendar series together, once per run."""
        engine = self.engine
        if series_id in engine.series_done or series_id in engine.skipped_series:
            return
        engine.series_done.add(series_id)
        if DROPPING in (link.field_hashes or {}):
            link = await self.drop_copy(link)
        series, occurrences = await self.load(series_id)
        if series is None or series.deleted_at is not None:
            return
        since = link.last_synced_at
        crm_moved = (
            since is None
            or series.updated_at > since
            or any(i.updated_at > since for i in occurrences)
            # Edited after the last run read the series but before it stored the link
            # (while its write waited for the batch): the link's time is later than
            # the edit, the change feed names it; the digests tell whether it is new.
            or any(i.id in engine.feed_changed for i in occurrences)
        )
        remote_moved = (
            remote is not None and remote.event is not None and remote.etag != link.remote_etag
        )
        if not crm_moved and not remote_moved:
            return
        calendar = remote.event if remote is not None and remote_moved else None
        if calendar is not None and calendar.recurrence is None:
            engine._skip_series(series_id, SERIES_GONE_SINGLE)
            return
        await self._reconcile(series, occurrences, link, remote if calendar else None, crm_moved)

    async def _reconcile(
        self,
        series: ActivitySeries,
        occurrences: list[Activity],
        link: Link,
        remote: RemoteRef | None,
        crm_moved: bool,
    ) -> None:
        engine = self.engine
        within = _within(series)
        crm_event = self.crm_event(series, occurrences)
        crm_now = digests_of(crm_event, within)
        calendar = remote.event if remote is not None else None
        stored = link.field_hashes or {}
        kept = stored.get("occurrences") or {}
        base_crm = Digests(dict(stored.get("series") or {}), dict(kept.get("crm") or {}))
        base_cal = Digests(
            dict(stored.get("series_calendar") or base_crm.master), dict(kept.get("calendar") or {})
        )
        if not base_crm.master:
            # Linked before the link remembered series units: take the calendar as it
            # is (or as the CRM is, when only the calendar moved) as the last sync.
            if calendar is None:
                try:
                    remote = await self._current(link)
                except _NotRead:
                    remote = None
                if remote is None or remote.event is None:
                    engine._skip_series(series.id, "the series cannot be read in the calendar")
                    return
                base_crm = base_cal = digests_of(remote.event, within)
                calendar = None
            elif crm_moved:
                base_crm = base_cal = digests_of(calendar, within)
            else:
                base_crm = base_cal = crm_now
        cal_now = digests_of(calendar, within) if calendar is not None else base_cal
        invitation = self._invitation(calendar, occurrences)
        unit = "recurrence"
        crm_split = (
            calendar is not None
            and crm_now.get(unit) != base_crm.get(unit)
            and cal_now.get(unit) != base_cal.get(unit)
            and crm_now.get(unit) != cal_now.get(unit)
            and await self._split_since(series, link) is not None
        )
        moved_off = await self._moved_off(series, occurrences, link, cal_now, base_cal)
        # The occurrences the CRM split off as they are there now, so that an edit of
        # one of them in the calendar is decided against the CRM's (never just lost).
        crm_plan = crm_now
        if moved_off:
            theirs = dict(crm_now.occurrences)
            for key, moved in moved_off.items():
                digest = _moved_digest(moved, base_crm.occurrences.get(key), link)
                if digest is not None:
                    theirs[key] = digest
            crm_plan = Digests(crm_now.master, theirs)
        plan = self._plan(
            series, occurrences, calendar, crm_plan, cal_now, base_crm, base_cal, invitation,
            crm_split,
        )  # fmt: skip
        kept_out = self._unrestorable(series, occurrences, plan, cal_now, crm_now)
        if plan.conflict:
            anchor = _anchor(occurrences, link)
            winner = Winner.CALENDAR if plan.pull else Winner.CRM
            act = Act.PULL_UPDATE if plan.pull else Act.PUSH_UPDATE
            pair = engine._pair_of(anchor, remote)
            await engine._record_conflict(pair, Decision(act, True, winner))
        retimed = bool(plan.pull & {"when", "recurrence"})
        if retimed:
            _keep_carried(plan, cal_now, base_cal)
        if plan.pull and calendar is not None and remote is not None:
            pulled = await self._pull(series, occurrences, calendar, plan, invitation, moved_off)
            if pulled is None:
                # Edited in the CRM since this run read it: nothing is written, and the
                # next run, which lists the calendar's change again, sees both edits.
                engine.deferred = True
                return
            series, occurrences = pulled
            for other in sorted({a.series_id for k, a in moved_off.items() if f"@{k}" in plan.pull
                                 and a.series_id is not None}):  # fmt: skip
                await self._resend(other)
            crm_event = self.crm_event(series, occurrences)
            crm_now = digests_of(crm_event, within)
            if retimed and self.engine.ctx.push and not invitation:
                # The CRM carried its occurrences changed on their own (and left out) to
                # the series' new times; the calendar gets them there, and loses what
                # stayed at the old times (Google keeps such exceptions, Outlook drops
                # them, a CalDAV client may leave its RECURRENCE-IDs behind).
                for key in {*crm_now.occurrences, *cal_now.occurrences}:
                    if crm_now.occurrences.get(key) != cal_now.occurrences.get(key):
                        plan.push.add(f"@{key}")
        done = _Reconciled(series, occurrences, link, stored, crm_now, cal_now, base_crm,
                           kept_out, within, bool(plan.push or plan.pull))  # fmt: skip
        if plan.push:
            try:
                pushed = await self._push(link, remote, crm_event, plan)
            except _NotRead:
                engine.report.skipped += 1
                return  # left as it was linked: the next run reads it again
            except EventNotFound:
                await self._gone(done)
                return
            if pushed is None:
                return
            # Sent with the run's other updates, in as few requests as the provider
            # allows (see ``write_pending``); the link is stored once it answers.
            self.pending.append((done, *pushed))
            if not engine.provider.capabilities.batch_changes:
                await self.write_pending()
            return
        etag = remote.etag if remote is not None else link.remote_etag
        await self._store(done, etag, calendar)

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
        self, done: _Reconciled, final: CalendarEvent, result: RemoteRef | ProviderError
    ) -> None:
        """Store what a series update answered."""
        if isinstance(result, EventNotFound):
            await self._gone(done)
            return
        if isinstance(result, PreconditionFailed):
            await self._changed_meanwhile(done)
            return
        if isinstance(result, ProviderError):
            raise result
        await self._store(done, result.etag, result.event or final)

    async def _changed_meanwhile(self, done: _Reconciled) -> None:
        """The calendar refused a series' update for a version it no longer has: it is
        reported, its link left as it was, and read again next run whatever that run's
        listing says. The version the update named may be older than any listing will
        show again (a change listed by a run whose write was refused), so the listing
        alone would never bring it back."""
        engine = self.engine
        engine.report.problem(done.link.remote_id, "changed while syncing; will retry",
                              retry=True)  # fmt: skip
        engine.report.skipped += 1

    async def _gone(self, done: _Reconciled) -> None:
        """Deleted in the calendar while edited in the CRM: the edit beats the
        deletion, the series is sent again."""
        engine = self.engine
        await engine.links.drop(done.link)
        engine.series_links[done.series.id] = None
        engine.series_done.discard(done.series.id)
        await self.send(_anchor(done.occurrences, done.link))

    async def _store(
        self, done: _Reconciled, etag: str | None, written: CalendarEvent | None
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
            crm_hash=engine._crm_hash(_anchor(occurrences, link)),
            field_hashes=_remembered(stored, crm_now, cal_after),
            last_synced_at=utcnow(),
        )
        if engine.series_links.get(series.id) is link:
            # A later write of this series in the run starts from the new etag.
            engine.series_links[series.id] = stored_link
        if done.moved:
            engine.report.updated += 1

    def _plan(
        self,
        series: ActivitySeries,
        occurrences: list[Activity],
        calendar: CalendarEvent | None,
        crm_now: Digests,
        cal_now: Digests,
        base_crm: Digests,
        base_cal: Digests,
        invitation: bool,
        crm_split: bool = False,
    ) -> Plan:
        ctx = self.engine.ctx
        plan = Plan()
        keys = {
            *crm_now.occurrences,
            *cal_now.occurrences,
            *base_crm.occurrences,
            *base_cal.occurrences,
        }
        crm_wins: bool | None = None
        for unit in [*MASTER_GROUPS, *(f"@{k}" for k in sorted(keys))]:
            crm = crm_now.get(unit) != base_crm.get(unit)
            cal = cal_now.get(unit) != base_cal.get(unit)
            if not crm and not cal:
                continue
            if crm and cal and crm_now.get(unit) == cal_now.get(unit):
                continue  # the same edit on both sides
            if unit == "cancelled":
                continue  # a cancelled master is a deletion, decided before this
            push_ok = ctx.push and not invitation
            pull_ok = ctx.pull and calendar is not None
            if invitation and unit == "description":
                pull_ok = False  # an invitation's note is the CRM's own
            if unit == "recurrence" and crm and cal and crm_split and push_ok:
                # The CRM split the series ("this and following") and the calendar ended
                # it elsewhere: the earlier end is the CRM's, the calendar's split is
                # carried on the CRM's later part (``_split_crm_part``).
                plan.push.add(unit)
                continue
            if crm and not cal:
                if push_ok:
                    plan.push.add(unit)
                continue
            if cal and not crm:
                if pull_ok:
                    plan.pull.add(unit)
                continue
            # Changed on both sides to different values.
            if invitation or not ctx.push:
                if pull_ok:
                    plan.pull.add(unit)
                continue
            if not ctx.pull:
                plan.push.add(unit)
                continue
            if crm_wins is None:
                crm_wins = self._crm_wins(series, occurrences, calendar)
            plan.conflict = True
            (plan.push if crm_wins else plan.pull).add(unit)
        return plan

    def _unrestorable(
        self,
        series: ActivitySeries,
        occurrences: list[Activity],
        plan: Plan,
        cal_now: Digests,
        crm_now: Digests,
    ) -> set[str]:
        """The occurrences the CRM took back (out of its trash) that the calendar keeps
        cancelled and cannot bring back (Outlook): not written, and reported by date in
        the sync's status; the CRM keeps them. Answers their keys."""
        engine = self.engine
        if engine.provider.capabilities.restores_occurrences:
            return set()
        live = {series_mapping.original_key(series, o) for o in occurrences if o.deleted_at is None}
        found = {
            key
            for key in Plan.keys(plan.push) & live
            if cal_now.occurrences.get(key) == LEFT_OUT and crm_now.occurrences.get(key) != LEFT_OUT
        }
        service = next(
            (k.label for k in kinds.KINDS.values()
             if k.capabilities is engine.provider.capabilities),
            "the calendar",
        )  # fmt: skip
        zone = times.zone(series.timezone)
        for key in sorted(found):
            plan.push.discard(f"@{key}")
            moment = _moment_of(key, series)
            day = moment.astimezone(zone).date() if isinstance(moment, dt.datetime) else moment
            engine.report.problem(
                f"series of activity {series.id}",
                f"the occurrence of {day} was taken back from the trash, but {service} "
                "cannot bring a cancelled occurrence of a series back: it stays cancelled "
                "there (cancel it again, or add it as an activity of its own)",
            )
        return found

    def _crm_wins(
        self, series: ActivitySeries, occurrences: list[Activity], calendar: CalendarEvent | None
    ) -> bool:
        policy = self.engine.ctx.options.conflict_policy
        if policy != "latest":
            return policy == "crm"
        crm_time = max(series.updated_at, *(i.updated_at for i in occurrences))
        calendar_time = (calendar.last_modified if calendar else None) or utcnow()
        return crm_time.replace(microsecond=0) >= calendar_time.replace(microsecond=0)

    async def _current(self, link: Link) -> RemoteRef | None:
        """The series as the calendar has it now; None when it is gone or was not read
        (that is reported, and read again next run: not read is not gone)."""
        found = await self.engine.provider.fetch(self.engine.ctx.calendar_id, [link.remote_id])
        if found and found[0].error:
            self.engine.report.cannot_read(found[0])
            raise _NotRead(link.remote_id)
        return found[0] if found and found[0].event is not None else None

    # --- writing the calendar ------------------------------------------------------

    async def _push(
        self, link: Link, remote: RemoteRef | None, crm_event: CalendarEvent, plan: Plan
    ) -> tuple[Update, CalendarEvent] | None:
        """The update of the calendar series with the units the CRM gives; None when
        none can be made (reported; tried again next run); with the series as written
        in full (what the link remembers when the calendar answers no content)."""
        groups, keys = Plan.groups(plan.push), Plan.keys(plan.push)
        if keys and remote is None:
            # The overrides are written as one set: those the CRM does not know
            # (beyond its horizon) are taken from the calendar as it is now.
            remote = await self._current(link)
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
        held = self.writable(link.activity_id, final) if "recurrence" in changed else final
        if held is None:
            return None
        return Update(link.remote_id, etag or "", held, frozenset(changed)), final

    # --- writing the CRM -------------------------------------------------------------

    async def _pull(
        self,
        read: ActivitySeries,
        read_occurrences: list[Activity],
        calendar: CalendarEvent,
        plan: Plan,
        invitation: bool,
        moved_off: Mapping[str, Activity] | None = None,
    ) -> tuple[ActivitySeries, list[Activity]] | None:
        """Write the calendar's units of ``plan`` to the CRM series as this run read it
        (``read``, ``read_occurrences``); the series and its occurrences as written, in
        the same transaction, so that what the link remembers of the CRM is what it
        was given. None, with nothing written, when the CRM changed the series since
        it was read: its edit is never overwritten, nor taken for synced. ``moved_off``:
        occurrences the CRM split off since the last sync (``_moved_off``), as read."""
        engine, ctx = self.engine, self.engine.ctx
        groups, keys = Plan.groups(plan.pull), Plan.keys(plan.pull)
        series_id = read.id
        async with engine.db.write() as session:
            owner = await engine._owner(session)
            series = await session.get(
                ActivitySeries, series_id, with_for_update=True, populate_existing=True
            )
            assert series is not None
            occurrences = await _occurrences(session, series_id, lock=True)
            if _version(series, occurrences) != _version(read, read_occurrences):
                return None
            if moved_off and not await _as_read(session, moved_off.values()):
                return None
            live = [o for o in occurrences if o.deleted_at is None]
            fields = self._master_fields(series, live, calendar, groups, owner)
            if invitation:
                fields.pop("note", None)
            if fields and live:
                try:
                    data = ActivityUpdate(**fields, scope="series")
                except ValidationError as exc:
                    raise Invalid(
                        f"the series cannot be stored: {exc.errors()[0]['msg']}"
                    ) from None
                await activities.update_activity(
                    session,
                    owner,
                    live[0].id,
                    data,
                    origin=ctx.origin,
                    as_contacts=ctx.options.attendees_to_contacts,
                    from_calendar=True,
                )
                occurrences = await _occurrences(session, series_id)
            if keys:
                await self._pull_occurrences(
                    session, owner, series, calendar, keys, invitation, moved_off or {}
                )
            await session.flush()
            written = await session.get(ActivitySeries, series_id, populate_existing=True)
            assert written is not None
            return written, await _occurrences(session, series_id, fresh=True)

    def _master_fields(
        self,
        series: ActivitySeries,
        live: list[Activity],
        calendar: CalendarEvent,
        groups: set[str],
        owner: User,
    ) -> dict[str, Any]:
        ctx = self.engine.ctx
        current = live[0] if live else None
        given = mapping.event_fields(calendar, owner, ctx.options, ctx.own_addresses, current)
        fields: dict[str, Any] = {}
        for group in groups:
            if group in GROUP_FIELDS:
                fields.update({name: given[name] for name in GROUP_FIELDS[group]})
        if "attendees" in groups and ctx.mails_attendees and not calendar.attendees:
            fields.pop("participants", None)  # never written there: they stay
        if "when" in groups and current is not None:
            fields.update(_series_times(series, current, calendar, given))
        rule = calendar.recurrence
        if "recurrence" in groups and rule is not None:
            if canonical_rrule(rule.rrule) != canonical_rrule(series.rrule):
                fields["recurrence"] = rule.rrule
            theirs = sorted(moment_key(m) for m in rule.rdates)
            ours = sorted(moment_key(crm_recurrence_loaded(v)) for v in series.rdates or [])
            if theirs != ours:
                fields["rdates"] = [m.isoformat() for m in rule.rdates]
        return fields

    async def _pull_occurrences(
        self,
        session: AsyncSession,
        owner: User,
        series: ActivitySeries,
        calendar: CalendarEvent,
        keys: set[str],
        invitation: bool,
        moved_off: Mapping[str, Activity] | None = None,
    ) -> None:
        """Occurrences the calendar left out go to the trash (or, beyond the horizon,
        among the series' left-out dates), and come back when it has them again;
        occurrences changed on their own there get their fields in the CRM
        (``overrides``); one that is an ordinary occurrence there again follows its
        series. ``moved_off``: occurrences the CRM split off into a series of its own
        since the last sync, which take what the calendar did to them in this one."""
        ctx = self.engine.ctx
        theirs = calendar.live_overrides()
        left_out = {moment_key(m): m for m in calendar.cancelled_moments()}
        occurrences = await _occurrences(session, series.id)
        by_key = {series_mapping.original_key(series, o): o for o in occurrences}
        for key, moved in (moved_off or {}).items():
            if key not in by_key and (found := await session.get(Activity, moved.id)):
                by_key[key] = found
        for key in sorted(keys):
            occurrence = by_key.get(key)
            if key in left_out:
                if occurrence is None:
                    crm_series.leave_out(series, _as_series_moment(series, left_out[key]))
                elif occurrence.deleted_at is None:
                    await activities.delete_activity(
                        session, owner, occurrence.id, origin=ctx.origin
                    )
                continue
            if occurrence is None:
                moment = _moment_of(key, series)
                if moment is not None:
                    crm_series.take_back(series, moment)
                continue
            if occurrence.deleted_at is not None:
                try:
                    await activities.restore_activity(
                        session, owner, occurrence.id, origin=ctx.origin
                    )
                except CrmError:
                    continue  # no longer in the rule's dates: stays in the trash
            override = theirs.get(key)
            if override is None:
                await crm_series.follow_series(session, occurrence, ctx.origin)
            else:
                await self._pull_override(session, owner, occurrence, override, invitation)

    async def _pull_override(
        self,
        session: AsyncSession,
        owner: User,
        occurrence: Activity,
        override: CalendarEvent,
        invitation: bool,
    ) -> None:
        engine, ctx = self.engine, self.engine.ctx
        ours = mapping.activity_to_event(occurrence, owner, ctx.options)
        moved = changed_fields(ours, override) - {"recurrence", "overrides", "cancelled"}
        given = engine._fields(override, occurrence)
        fields: dict[str, Any] = {}
        for group in moved:
            if group == "when":
                fields.update({n: given[n] for n in ("start", "end", "timezone")})
            elif group in GROUP_FIELDS:
                fields.update({n: given[n] for n in GROUP_FIELDS[group] if n in given})
        if invitation:
            fields.pop("note", None)
        if not fields:
            return
        try:
            data = ActivityUpdate(**fields, scope="this")
        except ValidationError as exc:
            raise Invalid(f"the occurrence cannot be stored: {exc.errors()[0]['msg']}") from None
        await activities.update_activity(
            session, owner, occurrence.id, data, origin=ctx.origin,
            as_contacts=ctx.options.attendees_to_contacts, from_calendar=True,
        )  # fmt: skip

    # --- new series ----------------------------------------------------------------

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
            await self.reconcile(series_id, link, None)
            return
        if series_id in engine.series_done:
            return
        engine.series_done.add(series_id)
        series, occurrences = await self.load(series_id)
        live = [o for o in occurrences if o.deleted_at is None]
        if series is None or series.deleted_at is not None or not live:
            return
        master = self.crm_event(series, occurrences)
        anchor = live[0]
        held = self.writable(series_id, master)
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
                    engine._pair_of(anchor, None),
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
        if isinstance(result, ProviderError):
            raise result
        ref = result
        written = ref.event or master
        within = _within(series)
        # The link with what both sides are now, in one write: a run cut off after it
        # finds the series whole, one cut off before finds it by its key (above).
        hashes = _remembered(
            engine._field_hashes(master, written),
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
        await self.write_pending()
        await self.create_pending()
        engine, ctx = self.engine, self.engine.ctx
        event = ref.event
        assert event is not None
        if ref.id in self.taken:
            return  # taken with the split of a series it was cut from (``_split``)
        if await self._left_copy(ref):
            return
        source = self._split_source(event, ref.id)
        if source is not None:
            await self._split(source, ref)
            return
        if await self._split_crm_part(ref):
            return
        if await self._relink(ref):
            return
        if not _has_occurrences(event, ctx.owner):
            return  # every occurrence left out there: nothing to bring in (yet)
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
                origin=ctx.origin,
                as_contacts=ctx.options.attendees_to_contacts,
            )
            assert first.series_id is not None
            series_id = first.series_id
            series = await session.get(ActivitySeries, series_id)
            assert series is not None
            if organizer:
                await _set_organizer(session, series, organizer)
                first.organizer = organizer
            keys = {
                k
                for k, o in event.live_overrides().items()
                if o.recurrence_id is not None and _within(series)(o.recurrence_id)
            }
            if keys:
                await self._pull_occurrences(session, owner, series, event, keys, bool(organizer))
            occurrences = await _occurrences(session, series_id)
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
        within = _within(series)
        crm_now = digests_of(self.crm_event(series, occurrences), within)
        return _remembered({}, crm_now, digests_of(event, within))

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
        series, occurrences = await self.load(found.id)
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
        await self._reconcile(series, occurrences, link, ref, True)
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
        shape = _shape(event.recurrence.rrule)
        candidates = [
            c
            for c in await session.scalars(query.order_by(ActivitySeries.id))
            if c.uid not in claimed
            and _shape(c.rrule) == shape
            and await engine._series_link(c.id) is None
        ]
        title = _title(event.summary)
        named = [c for c in candidates if _title(c.subject) == title]
        if named:
            return named[0]
        start = _instant(event.start, event.timezone)
        if len(candidates) != 1 or engine.first_import:
            return None
        if any(_instant(e.start, e.timezone) == start for e in rivals):
            return None
        return candidates[0]

    # --- a split made in the calendar --------------------------------------------------

    def _split_source(self, event: CalendarEvent, event_id: str = "") -> tuple[Any, int] | None:
        """The linked pair of this run whose calendar series now ends where ``event``
        (a new series, ``event_id`` in the calendar) starts: (the pair, its series id)."""
        for pair in self._split_candidates(event):
            cut = self._cut_of(pair, pair.remote.event, event, event_id)
            if cut is not None:
                if self._nearer_split(pair, cut, event, event_id):
                    return None  # another new series continues it there: this one is new
                return pair, pair.activity.series_id
        return None

    def _nearer_split(
        self, pair: Any, cut: dt.datetime, event: CalendarEvent, event_id: str
    ) -> bool:
        """Whether another new calendar series of this run is cut from ``pair`` at the
        same occurrence and starts nearer to it than ``event`` does: a series the user
        made the same week is not taken for a split whose own new part is there too."""

        def distance(found: CalendarEvent, found_id: str) -> tuple[dt.timedelta, str]:
            return abs(_instant(found.start, found.timezone) - cut), found_id

        mine = distance(event, event_id)
        for other in self.engine.pairs:
            remote = other.remote
            if other.link is not None or remote is None or remote.id == event_id:
                continue
            found = remote.event
            if found is None or found.recurrence is None or remote.id in self.taken:
                continue
            if (
                distance(found, remote.id) < mine
                and self._cut_of(pair, pair.remote.event, found, remote.id) == cut
            ):
                return True
        return False

    def _split_candidates(self, event: CalendarEvent) -> list[Any]:
        """The linked pairs of this run whose calendar series was cut (its rule now
        ends) and started before ``event``."""
        start = _instant(event.start, event.timezone)
        found = []
        for pair in self.engine.pairs:
            old = pair.remote.event if pair.remote is not None else None
            activity = pair.activity
            if (
                pair.link is None
                or old is None
                or old.recurrence is None
                or activity is None
                or activity.series_id is None
                or activity.series_id in self.engine.series_done
                or pair.remote is None
                or pair.remote.etag == pair.link.remote_etag
            ):
                continue
            rule = old.recurrence.rrule.upper()
            if "UNTIL=" not in rule and "COUNT=" not in rule:
                continue
            if _instant(old.start, old.timezone) >= start:
                continue
            found.append(pair)
        return found

    def _cut_of(
        self, pair: Any, old: CalendarEvent, new: CalendarEvent, new_id: str = ""
    ) -> dt.datetime | None:
        """The occurrence of the CRM series where ``new`` (a new calendar series,
        ``new_id`` there) split off from ``old``, or None.

        The old series' new rule makes none of the CRM series' occurrences from there
        on, and ``new`` starts where one of them was, or near it: clients that split
        "this and following" often move the following occurrences too (09:00 to 14:00,
        or to the next day), and rename them. So ``new`` is cut at
        - the first of them, when it starts on its day, or within one period of the
          series around it (whatever its title: started where the old one ends);
        - the very moment of a later one, or the one nearest its start within a
          period when it keeps the old title: a client that split the series again at
          an earlier occurrence left one new series per cut;
        - the one of the date the calendar names, whatever the new start, when it
          says ``new`` is the old one's continuation (Google names it
          ``{old id}_R{date of the cut}``).
        A series that merely starts later (weeks on, another title) is no split."""
        stored = pair.link.field_hashes or {}
        before = (stored.get("series_calendar") or stored.get("series") or {}).get("recurrence")
        if before is not None and before == digests_of(old, lambda _m: True).master["recurrence"]:
            return None  # the rule did not change
        cuts = self._cuts(pair.activity.series_id, old)
        if cuts is None:
            return None
        series, moments = cuts
        zone = times.zone(series.timezone)
        new_day = (
            new.start
            if not isinstance(new.start, dt.datetime)
            else new.start.astimezone(zone).date()
        )
        if moments[0].astimezone(zone).date() == new_day:
            return moments[0]
        start = _instant(new.start, new.timezone)
        if start in moments:
            # A later cut (split again, at an earlier occurrence): at its very moment.
            return start
        nearest = min(moments, key=lambda m: (abs(m - start), m))
        same_title = _title(new.summary) == _title(old.summary)
        if pair.remote is not None and new_id.startswith(f"{pair.remote.id}_R"):
            return _cut_named(new_id[len(pair.remote.id) + 2 :], moments, zone)
        if abs(nearest - start) < _period(series) and (nearest == moments[0] or same_title):
            return nearest
        return moments[0] if same_title else None

    def _cuts(
        self, series_id: int, old: CalendarEvent
    ) -> tuple[ActivitySeries, list[dt.datetime]] | None:
        """The CRM series' live occurrences after the end of ``old``'s new rule, in
        order."""
        cached = self.engine.series_rows.get(series_id)
        if cached is None:
            return None
        series, occurrences = cached
        assert old.recurrence is not None
        rule = crm_series.rule_of(series)
        rule = dataclasses.replace(rule, rrule=old.recurrence.rrule)
        until = series.materialised_until or utcnow()
        try:
            slots = {rule.instant(m) for m in rule.starts(rule.instant(rule.first), until, 100_000)}
        except CrmError:
            return None
        # The old rule's last occurrence; none when it now makes only occurrences the
        # series leaves out (its first ones cancelled): then every live one is cut.
        last = max(slots, default=None)
        cut = [
            o.original_start_at
            for o in occurrences
            if o.deleted_at is None
            and o.original_start_at is not None
            and o.original_start_at not in slots
            and (last is None or o.original_start_at > last)
        ]
        return (series, sorted(cut)) if cut else None

    async def prepare_splits(self) -> None:
        """Load the CRM series of the linked calendar series that changed this run, for
        telling splits made in the calendar (only when a new series came in too)."""
        engine = self.engine
        new_series = any(
            p.link is None
            and p.remote is not None
            and p.remote.event is not None
            and p.remote.event.recurrence is not None
            for p in engine.pairs
        )
        if not new_series:
            return
        for pair in engine.pairs:
            old = pair.remote.event if pair.remote is not None else None
            activity = pair.activity
            if pair.link is None or old is None or old.recurrence is None or activity is None:
                continue
            if activity.series_id is None or activity.series_id in engine.series_rows:
                continue
            series, occurrences = await self.load(activity.series_id)
            if series is not None:
                engine.series_rows[activity.series_id] = (series, occurrences)

    async def _split(self, source: tuple[Any, int], ref: RemoteRef) -> None:
        """The CRM series splits where the calendar's did: its later occurrences (with
        their ids and CRM data) become a new CRM series, which takes the new calendar
        series' fields and is linked to it; the old one takes its calendar edits.

        A client that split the series again at an earlier occurrence left one new
        series per cut: all of them are taken here, the latest cut first, so that each
        CRM part holds the occurrences of its calendar series and no other."""
        engine = self.engine
        pair, series_id = source
        old = pair.remote.event
        chain: dict[dt.datetime, RemoteRef] = {}
        for other in [ref, *(p.remote for p in engine.pairs if p.link is None and p.remote)]:
            event = other.event
            if event is None or event.recurrence is None or other.id in self.taken:
                continue
            if other is not ref and self._split_source(event, other.id) != source:
                continue
            cut = self._cut_of(pair, old, event, other.id)
            if cut is not None and cut not in chain:
                chain[cut] = other
        assert ref in chain.values()
        # Whether the CRM changed the series' rule since the last sync too (its own
        # "this and following" at another occurrence): then its end is its own edit.
        before = (pair.link.field_hashes or {}).get("series") or {}
        series, occurrences = await self.load(series_id)
        assert series is not None
        crm_rule = digests_of(self.crm_event(series, occurrences), _within(series)).master[
            "recurrence"
        ]
        split_too = before.get("recurrence") not in (None, crm_rule)
        kept = (pair.link.field_hashes or {}).get("occurrences") or {}
        old_link = pair.link
        made: list[tuple[int, Link | None, RemoteRef]] = []
        for cut in sorted(chain, reverse=True):
            self.taken.add(chain[cut].id)
            old_link, new_id, link = await self._split_at(
                series_id, old_link, cut, chain[cut], split_too, kept
            )
            made.append((new_id, link, chain[cut]))
        engine.series_done.update((series_id, *(new_id for new_id, _, _ in made)))
        old_series, old_occurrences = await self.load(series_id)
        assert old_series is not None
        await self._reconcile(old_series, old_occurrences, old_link, pair.remote, False)
        for new_id, link, made_from in reversed(made):
            if link is None:
                continue
            engine.series_links[new_id] = link
            new_series, new_occurrences = await self.load(new_id)
            assert new_series is not None
            await self._reconcile(new_series, new_occurrences, link, made_from, False)
            engine.report.created += 1
            if split_too:
                await self._both_split(old, made_from, new_series, link)

    async def _split_at(
        self,
        series_id: int,
        old_link: Link,
        first_cut: dt.datetime,
        ref: RemoteRef,
        split_too: bool,
        kept: Mapping[str, Any],
    ) -> tuple[Link, int, Link | None]:
        """One cut of ``_split``: (the old link, the new series' id, its link)."""
        engine, ctx = self.engine, self.engine.ctx
        event = ref.event
        assert event is not None
        # One transaction: the split, the old link's note that the CRM's new end is no
        # edit of its own, and the new series' link, so that a run cut off anywhere
        # finds either all of it or none.
        async with engine.db.write() as session:
            series = await session.get(ActivitySeries, series_id)
            assert series is not None
            anchor = await session.scalar(
                select(Activity).where(
                    Activity.series_id == series_id, Activity.original_start_at == first_cut
                )
            )
            assert anchor is not None
            later = await crm_series.split(session, series, anchor, ctx.origin)
            new_id = later.id
            old_occurrences = await _occurrences(session, series_id)
            new_occurrences = await _occurrences(session, new_id)
            live = [o for o in new_occurrences if o.deleted_at is None]
            stored = dict(old_link.field_hashes or {})
            if stored.get("series"):
                # The calendar's spelling of the new end is taken (no conflict).
                ours = digests_of(self.crm_event(series, old_occurrences), _within(series))
                stored["series"] = {**stored["series"], "recurrence": ours.master["recurrence"]}
            old_link = await engine.links.store(old_link, session=session, field_hashes=stored)
            link: Link | None = None
            if live:
                # The new series' master as if the calendar had been the CRM's at the
                # last sync (its new fields come in); its occurrences as the old link
                # remembers them, so that an edit of one since then on either side is
                # that side's.
                crm_now = digests_of(self.crm_event(later, new_occurrences), _within(later))
                base_crm = Digests(dict(crm_now.master), {})
                base_cal = Digests(dict(crm_now.master), {})
                if split_too:
                    # Split on both sides at other occurrences: the CRM's end stays (the
                    # calendar's new series ends where the CRM's later part begins), so
                    # each occurrence is in one series on both sides.
                    theirs = digests_of(event, _within(later)).master["recurrence"]
                    base_crm.master["recurrence"] = base_cal.master["recurrence"] = theirs
                moved = {series_mapping.original_key(later, o) for o in new_occurrences}
                for side, base in (("crm", base_crm), ("calendar", base_cal)):
                    remembered = kept.get(side) or {}
                    base.occurrences = {k: v for k, v in remembered.items() if k in moved}
                link = await self._link_split(
                    session, new_occurrences, ref, _remembered({}, base_crm, base_cal), old_link
                )
        if link is not None and DROPPING in (link.field_hashes or {}):
            link = await self.drop_copy(link)
        return old_link, new_id, link

    async def _link_split(
        self,
        session: AsyncSession,
        occurrences: list[Activity],
        ref: RemoteRef,
        hashes: dict[str, Any],
        source: Link,
    ) -> Link | None:
        """Link a split's later CRM part (its ``occurrences``) to ``ref``, the calendar
        series it is, in the split's transaction (``session``): the one place a split
        stores its link, and never a second row for either side. The row already
        naming ``ref`` (the split taken again) or the part (sent to the calendar as a
        series of its own before the calendar's split was seen) is updated instead.

        When the part's link named another series crmcal made for the part, the
        calendar's split holds those occurrences now: the link notes that series
        (``DROPPING``) for the caller to delete once this transaction is committed
        (``drop_copy``). The part's link to a series someone else made is left as it
        is (reported). ``source`` (the link of the series split) stays that series',
        whichever occurrence it is on."""
        engine, ctx = self.engine, self.engine.ctx
        event = ref.event
        assert event is not None
        live = [o for o in occurrences if o.deleted_at is None]
        if not live:
            return None
        held = [
            found
            for found in await session.scalars(
                select(Link).where(
                    Link.connection_id == ctx.connection_id,
                    or_(
                        Link.remote_id == ref.id, Link.activity_id.in_([o.id for o in occurrences])
                    ),
                    Link.id != source.id,
                )
            )
        ]
        values: dict[str, Any] = {
            "remote_id": ref.id,
            "remote_uid": event.uid,
            "remote_etag": "",
            "origin": LinkOrigin.CALENDAR,
            "field_hashes": hashes,
            "last_synced_at": utcnow(),
        }
        mine = next((found for found in held if found.remote_id == ref.id), None)
        other = next((found for found in held if found.remote_id != ref.id), None)
        if mine is None and other is not None:
            if other.origin != LinkOrigin.CRM:
                engine.report.problem(
                    ref.id,
                    "a split of a series whose later part is already linked to another "
                    "calendar series; not linked",
                )
                return None
            copy = {"remote_id": other.remote_id, "remote_etag": other.remote_etag or ""}
            values["field_hashes"] = {**hashes, DROPPING: copy}
            mine = other
        if mine is not None:
            return await engine.links.store(mine, session=session, **values)
        taken = {found.activity_id for found in held} | {source.activity_id}
        anchor = next((o for o in live if o.id not in taken), None)
        if anchor is None:
            return None
        link = Link(connection_id=ctx.connection_id, activity_id=anchor.id, **values)
        return await engine.links.store(link, session=session)

    async def drop_copy(self, link: Link) -> Link:
        """Delete the series crmcal made in the calendar for a CRM series that the
        calendar's own split now is (``link``'s ``DROPPING``, see ``_link_split``): its
        occurrences are the split's. Left as it is, and reported, when someone changed
        it since crmcal wrote it.

        Where the provider batches changes, the delete waits for the run's batch
        requests with the other deletes (``send_drops``) and the link keeps its note
        until its answer (every store of a series link keeps the keys it does not set),
        so a run cut off before then deletes it next time. Answers the link: without
        the note when the delete was made now."""
        engine = self.engine
        copy = (link.field_hashes or {}).get(DROPPING) or {}
        batching = engine.provider.capabilities.batch_changes
        if copy.get("remote_id") and link.id is not None and batching:
            self.dropping[link.id] = link
            return link
        await self.write_pending()  # the links it replaces are the ones written
        await self.create_pending()
        remote_id = str(copy.get("remote_id") or "")
        result: ProviderError | None = None
        if remote_id:
            try:
                await engine.provider.delete(
                    engine.ctx.calendar_id, remote_id, copy.get("remote_etag") or None
                )
            except PreconditionFailed as refused:
                result = refused
        return await self._dropped(link, remote_id, result)

    async def send_drops(self) -> None:
        """Delete the copies ``drop_copy`` left for the run's batch: in batch requests,
        each answering on its own (one the calendar refuses never stops the others; a
        failure other than a changed or vanished copy leaves its note, for the next
        run to try again)."""
        while self.dropping:
            dropping, self.dropping = list(self.dropping.values()), {}
            engine = self.engine
            copies = [(link, (link.field_hashes or {}).get(DROPPING) or {}) for link in dropping]
            items = [(str(copy["remote_id"]), copy.get("remote_etag") or None)
                     for _, copy in copies]  # fmt: skip
            results = await delete_many(engine.provider, engine.ctx.calendar_id, items)
            await engine._answered(
                (link, result, partial(self._answered_drop, link, remote_id, result))
                for (link, _), (remote_id, _), result in zip(copies, items, results, strict=True)
            )

    async def _answered_drop(
        self, queued: Link, remote_id: str, result: ProviderError | None
    ) -> None:
        """A copy's delete answered: its link's note is taken out (in the database, where
        a series write of this run may have stored the link since, and in this run's
        objects of it); a link this run dropped meanwhile is left gone."""
        if result is not None and not isinstance(result, PreconditionFailed | EventNotFound):
            raise result  # the note stays: tried again next run
        self._changed_copy(remote_id, result)
        engine = self.engine
        async with engine.db.write() as session:
            found = await session.get(Link, queued.id)
            if found is None:
                return
            found.field_hashes = _without_note(found.field_hashes)
        seen = [queued, engine.links.by_remote.get(queued.remote_id),
                *engine.series_links.values()]  # fmt: skip
        for known in seen:
            if known is not None and known.id == queued.id:
                known.field_hashes = _without_note(known.field_hashes)

    def _changed_copy(self, remote_id: str, result: ProviderError | None) -> None:
        # Already gone (a run cut off after deleting it) is no error.
        if isinstance(result, PreconditionFailed):
            self.engine.report.problem(
                remote_id,
                "a series crmcal made, now held by a split made in the calendar, was "
                "changed there meanwhile; left as it is",
            )

    async def _dropped(self, link: Link, remote_id: str, result: ProviderError | None) -> Link:
        """The copy's delete answered at once: the link without the note."""
        engine = self.engine
        self._changed_copy(remote_id, result)
        dropped = await engine.links.store(link, field_hashes=_without_note(link.field_hashes))
        for series_id, known in list(engine.series_links.items()):
            if known is link:
                engine.series_links[series_id] = dropped
        return dropped

    async def _left_copy(self, ref: RemoteRef) -> bool:
        """Whether ``ref`` is the series crmcal made for a CRM series that a split made
        in the calendar took over, left in the calendar by a run cut off before it
        deleted it (``drop_copy``): deleted now, never taken for a series of its own or
        a split of another."""
        engine = self.engine
        event = ref.event
        if event is None or not event.crm_id:
            return False
        async with engine.db.read() as session:
            series_id = await session.scalar(
                select(ActivitySeries.id).where(
                    ActivitySeries.uid == event.crm_id,
                    ActivitySeries.owner_id == engine.ctx.owner.id,
                )
            )
        link = await engine._series_link(series_id) if series_id is not None else None
        if link is None or link.remote_id == ref.id:
            return False
        copy = (link.field_hashes or {}).get(DROPPING) or {}
        if copy.get("remote_id") != ref.id:
            return False
        await self.drop_copy(link)
        return True

    async def _split_since(
        self, series: ActivitySeries, link: Link, at: dt.datetime | None = None
    ) -> Activity | None:
        """An occurrence of ``series`` at the last sync (at ``at``, or after the series'
        start) that the CRM has split off into a series of its own since."""
        since = link.last_synced_at
        if since is None:
            return None
        query = _split_off(series, since)
        if at is not None:
            query = query.where(Activity.original_start_at == at)
        else:
            query = query.where(Activity.original_start_at > series.start_at)
        async with self.engine.db.read() as session:
            return await session.scalar(query.order_by(Activity.original_start_at).limit(1))

    async def _moved_off(
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
        query = _split_off(series, since).where(Activity.original_start_at > series.start_at)
        async with self.engine.db.read() as session:
            found = list(await session.scalars(query))
        keyed = {series_mapping.original_key(series, a): a for a in found}
        return {key: keyed[key] for key in sorted(changed) if key in keyed}

    async def _resend(self, series_id: int) -> None:
        """Write a CRM series again that this run already looked at (an occurrence of it
        took a calendar edit since): its pending create made anew, or, linked, it is
        reconciled again (not looked at yet, it is written as it is now anyway)."""
        engine = self.engine
        waiting = [entry for entry in self.creating if entry[0].id == series_id]
        if waiting:
            self.creating = [entry for entry in self.creating if entry[0].id != series_id]
            engine.series_done.discard(series_id)
            await self.send(waiting[0][1])
            return
        if series_id not in engine.series_done:
            return
        link = await engine._series_link(series_id)
        if link is not None:
            # An update of it waiting for the run's batch is made anew, not sent twice
            # (the second would meet the first's etag).
            self.pending = [entry for entry in self.pending if entry[0].series.id != series_id]
            engine.series_done.discard(series_id)
            await self.reconcile(series_id, link, None)

    async def _split_crm_part(self, ref: RemoteRef) -> bool:
        """A calendar series that another client split off ("this and following") from a
        linked series whose occurrences from its start the CRM had meanwhile split off
        into a series of its own at an earlier occurrence: that CRM series splits where
        the calendar's did, its later part linked to ``ref`` (the fields both sides
        changed go to the conflict policy). Whether it was one."""
        engine = self.engine
        event = ref.event
        assert event is not None
        start = _instant(event.start, event.timezone)
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
                or _instant(old.start, old.timezone) >= start
            ):
                continue
            series, _ = await self.load(pair.activity.series_id)
            if series is None:
                continue
            anchor = await self._split_since(series, pair.link, start)
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
            new_occurrences = await _occurrences(session, new_id)
            live = [o for o in new_occurrences if o.deleted_at is None]
            link: Link | None = None
            if live:
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
                    now = digests_of(event, _within(later)).master
                    base.master.update({g: now[g] for g in ("when", "recurrence") if g in now})
                link = await self._link_split(
                    session, new_occurrences, ref, _remembered({}, base_crm, base_cal), pair.link
                )
        if link is not None and DROPPING in (link.field_hashes or {}):
            link = await self.drop_copy(link)
        engine.series_done.add(new_id)
        if link is not None:
            engine.series_links[new_id] = link
            new_series, new_occurrences = await self.load(new_id)
            assert new_series is not None
            await self._reconcile(new_series, new_occurrences, link, ref, True)
            engine.report.created += 1
        if new_id == part_id:
            return  # split at its first occurrence: the whole part, linked and synced above
        part_link = await engine._series_link(part_id)
        if part_link is not None and part_id in engine.series_done:
            # Sent earlier in this run: its new end goes out now.
            part, occurrences = await self.load(part_id)
            if part is not None:
                await self._reconcile(part, occurrences, part_link, None, True)

    async def _both_split(
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
        for other_id in await self._split_off(later, event):
            other, occurrences = await self.load(other_id)
            live = [o for o in occurrences if o.deleted_at is None]
            if other is None or not live:
                continue
            crm = self.crm_event(other, occurrences)
            mine = {g for g in groups if changed_fields(crm, event) & {g}}
            if not mine:
                continue  # the same edit on both sides
            crm_wins = not ctx.pull or (ctx.push and self._crm_wins(other, occurrences, event))
            await engine._record_conflict(
                engine._pair_of(live[0], ref),
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
                fields = self._master_fields(other, live, event, mine, owner)
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
                reloaded, occurrences = await self.load(other_id)
                if reloaded is not None:
                    await self._reconcile(reloaded, occurrences, other_link, None, True)

    async def _split_off(self, later: ActivitySeries, event: CalendarEvent) -> set[int]:
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


# --- helpers ---------------------------------------------------------------------------


async def _occurrences(
    session: AsyncSession, series_id: int, *, lock: bool = False, fresh: bool = False
) -> list[Activity]:
    """The series' occurrences in order; ``lock``: locked for the transaction's write;
    ``fresh``: as the database has them now (not as the session last loaded them)."""
    query = (
        select(Activity)
        .where(Activity.series_id == series_id)
        .order_by(Activity.original_start_at, Activity.id)
    )
    if lock:
        query = query.with_for_update()
    if lock or fresh:
        query = query.execution_options(populate_existing=True)
    return list(await session.scalars(query))


async def _as_read(session: AsyncSession, read: Iterable[Activity]) -> bool:
    """Whether occurrences are as this run read them (locked for the transaction's
    write): the CRM changed none of them since."""

    def version(found: Iterable[Activity]) -> set[tuple[Any, ...]]:
        return {(a.id, a.series_id, a.updated_at, a.deleted_at) for a in found}

    read = list(read)
    query = (
        select(Activity)
        .where(Activity.id.in_([a.id for a in read]))
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return version(await session.scalars(query)) == version(read)


def _version(series: ActivitySeries, occurrences: list[Activity]) -> tuple[Any, ...]:
    """What tells whether the CRM changed a series since it was read."""
    rows = sorted((o.id, o.updated_at, o.deleted_at) for o in occurrences)
    return series.updated_at, series.deleted_at, rows


async def _set_organizer(
    session: AsyncSession, series: ActivitySeries, organizer: str | None
) -> None:
    """Someone else's series (``organizer``), or the owner's own (None): the series and
    every occurrence it has, so that those the horizon makes later follow it too."""
    series.organizer = organizer
    await session.execute(
        update(Activity)
        .where(Activity.series_id == series.id)
        .values(organizer=organizer)
        .execution_options(synchronize_session=False)
    )


def _within(series: ActivitySeries) -> Callable[[Moment], bool]:
    def within(moment: Moment) -> bool:
        return series_mapping.within_horizon(series, moment)

    return within


def _anchor(occurrences: list[Activity], link: Link) -> Activity:
    return next((o for o in occurrences if o.id == link.activity_id), occurrences[0])


def _moved_digest(activity: Activity, before: str | None, link: Link) -> str | None:
    """What the CRM did to an occurrence it split off into another series, as one of
    the old series' units: nothing (``before``), made to follow its new series (None),
    or changed on its own since the last sync."""
    if not activity.overrides:
        return None
    since = link.last_synced_at
    if since is not None and activity.updated_at <= since:
        return before
    return f"changed:{activity.id}:{activity.updated_at.isoformat()}"


def _keep_carried(plan: Plan, cal_now: Digests, base_cal: Digests) -> None:
    """The series' times or rule come from the calendar: its occurrences changed on their
    own or left out at the old times that it no longer has are not undone in the CRM
    (a client moving a series leaves them behind or drops them, as Outlook does); the
    CRM carries them to the new times instead."""
    for unit in list(plan.pull):
        key = unit[1:]
        if unit.startswith("@") and key in base_cal.occurrences and key not in cal_now.occurrences:
            plan.pull.discard(unit)


def _without_note(hashes: Mapping[str, Any] | None) -> dict[str, Any]:
    """A link's field hashes without the note of a copy to delete (``DROPPING``)."""
    return {key: value for key, value in (hashes or {}).items() if key != DROPPING}


def _remembered(stored: Mapping[str, Any], crm: Digests, calendar: Digests) -> dict[str, Any]:
    """The link's field hashes with both sides' series units as they are now."""
    return {
        **stored,
        "series": crm.master,
        "series_calendar": calendar.master,
        "occurrences": {"crm": crm.occurrences, "calendar": calendar.occurrences},
    }


def crm_recurrence_loaded(text: str) -> Moment:
    from crmcal.crm import recurrence

    return recurrence.loaded(text)


def _as_series_moment(series: ActivitySeries, moment: Moment) -> Moment:
    if series.all_day and isinstance(moment, dt.datetime):
        return moment.astimezone(times.zone(series.timezone)).date()
    return moment


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


def _moment_of(key: str, series: ActivitySeries) -> Moment | None:
    """The moment a ``moment_key`` spells, as the series stores its dates."""
    try:
        if len(key) == 10:
            return dt.date.fromisoformat(key)
        return dt.datetime.fromisoformat(key)
    except ValueError:
        return None


def _shape(rrule: str) -> tuple[str, str]:
    """A rule's frequency and interval: two series of other shapes are never one."""
    parts = dict(p.partition("=")[::2] for p in canonical_rrule(rrule).split(";"))
    return parts.get("FREQ", ""), parts.get("INTERVAL", "1")


# The length of each frequency's step, for telling how far a split's new series may
# start from the occurrence it was cut at.
_STEPS = {
    "SECONDLY": dt.timedelta(seconds=1),
    "MINUTELY": dt.timedelta(minutes=1),
    "HOURLY": dt.timedelta(hours=1),
    "DAILY": dt.timedelta(days=1),
    "WEEKLY": dt.timedelta(weeks=1),
    "MONTHLY": dt.timedelta(days=28),
    "YEARLY": dt.timedelta(days=365),
}


def _cut_named(stamp: str, moments: list[dt.datetime], zone: dt.tzinfo) -> dt.datetime:
    """The occurrence of ``moments`` on the date a Google split's id names (the first
    eight digits of ``stamp``, in UTC or the series' zone); the first one otherwise."""
    try:
        day = dt.datetime.strptime(stamp[:8], "%Y%m%d").date()
    except ValueError:
        return moments[0]
    return next(
        (m for m in moments if day in (m.astimezone(dt.UTC).date(), m.astimezone(zone).date())),
        moments[0],
    )


def _period(series: ActivitySeries) -> dt.timedelta:
    """One step of the series' rule (its frequency times its interval)."""
    freq, interval = _shape(series.rrule)
    try:
        count = max(int(interval), 1)
    except ValueError:
        count = 1
    return _STEPS.get(freq, dt.timedelta(weeks=1)) * count


def _title(text: str | None) -> str:
    return " ".join((text or "").split()).casefold()


def _instant(moment: Moment, zone: str | None) -> dt.datetime:
    if isinstance(moment, dt.datetime):
        return moment.astimezone(dt.UTC)
    return dt.datetime.combine(moment, dt.time(), tzinfo=times.zone(zone or "UTC")).astimezone(
        dt.UTC
    )


def _series_times(
    series: ActivitySeries, anchor: Activity, calendar: CalendarEvent, given: dict[str, Any]
) -> dict[str, Any]:
    """The calendar master's times as the new times of ``anchor`` (an occurrence): the
    CRM moves every occurrence by as much on the local clock (``crm.series``)."""
    assert anchor.original_start_at is not None
    if series.all_day or calendar.all_day:
        if not (series.all_day and calendar.all_day):
            return {"all_day": calendar.all_day}  # refused by the CRM, and said so
        assert series.start_date is not None
        assert isinstance(calendar.start, dt.date)
        shift = calendar.start - series.start_date
        day = anchor.original_start_at.astimezone(times.zone(series.timezone)).date() + shift
        length = (calendar.end - calendar.start) if isinstance(calendar.end, dt.date) else None
        last = day + length if length else day + dt.timedelta(days=1)
        return {"start": day.isoformat(), "end": last.isoformat(), "all_day": True}
    assert isinstance(calendar.start, dt.datetime)
    old_zone = times.zone(series.timezone)
    new_name = given.get("timezone") or series.timezone
    new_zone = times.zone(new_name)
    old_first = series.start_at.astimezone(old_zone).replace(tzinfo=None)
    new_first = calendar.start.astimezone(new_zone).replace(tzinfo=None)
    local = anchor.original_start_at.astimezone(old_zone).replace(tzinfo=None)
    start = (local + (new_first - old_first)).replace(tzinfo=new_zone)
    end = None
    if isinstance(calendar.end, dt.datetime):
        end = (start.astimezone(dt.UTC) + (calendar.end - calendar.start)).astimezone(new_zone)
    return {
        "start": start.isoformat(),
        "end": end.isoformat() if end else None,
        "timezone": new_name,
        "all_day": False,
    }


def _split_off(series: ActivitySeries, since: dt.datetime) -> Select[Activity]:
    """The live occurrences, there at ``since``, that the owner of ``series`` has split
    off into a live series of its own made after ``since``: a split leaves no link from
    the new series to the old, so they are known by owner, times and original start."""
    return (
        select(Activity)
        .join(ActivitySeries, ActivitySeries.id == Activity.series_id)
        .where(
            ActivitySeries.owner_id == series.owner_id,
            ActivitySeries.deleted_at.is_(None),
            ActivitySeries.created_at > since,
            Activity.series_id != series.id,
            Activity.deleted_at.is_(None),
            Activity.created_at <= since,
        )
    )
