"""Bringing a linked series and its calendar series together, once per run.

What each side changed since the last sync is told unit by unit (``series_units``):

* a unit changed on one side only goes to the other side;
* changed on both, to the same value, it is no conflict; else the conflict
  policy picks (the calendar always wins a meeting someone else organises, which
  is never written; a one-way connection never writes the side it only reads);
* the CRM's units go out as one update of the calendar series
  (``series_updates``), the calendar's are written to the CRM (``series_pull``).

Occurrences beyond the CRM's horizon have no rows yet: the calendar's overrides
there are its own, never compared and kept as they are on every write; once the
horizon reaches them they come in like any calendar edit."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal

from crmcal.crm import times
from crmcal.crm.tables import Activity, ActivitySeries, utcnow
from crmcal.model import (
    CalendarEvent,
    RemoteRef,
)
from crmcal.providers import kinds
from crmcal.providers.base import EventNotFound
from crmcal.sync import series_mapping
from crmcal.sync.decisions import Act, Decision, crm_edit_is_later
from crmcal.sync.pair import Pair
from crmcal.sync.series_copies import DROPPING
from crmcal.sync.series_crm_splits import moved_digest
from crmcal.sync.series_units import (
    LEFT_OUT,
    MASTER_GROUPS,
    Digests,
    Moment,
    Plan,
    anchor_of,
    digests_of,
    moment_of,
    units_digest,
    within_horizon_of,
)
from crmcal.sync.series_updates import NotRead, Reconciled
from crmcal.sync.states import Winner
from crmcal.sync.tables import Link

# Why a series is skipped and counted (never flattened).
SERIES_GONE_SINGLE = "the series became a single event in the calendar; not synced"

if TYPE_CHECKING:
    from crmcal.sync.series_sync import SeriesSync


class LinkedSeries:
    """Reconciling linked series: which units go which way, and who wins a conflict."""

    def __init__(self, run: SeriesSync) -> None:
        self.run = run
        self.engine = run.engine

    async def reconcile(self, series_id: int, link: Link, remote: RemoteRef | None) -> None:
        """Bring a linked series and its calendar series together, once per run."""
        engine = self.engine
        if series_id in engine.series_done or series_id in engine.skipped_series:
            return
        engine.series_done.add(series_id)
        if DROPPING in (link.field_hashes or {}):
            link = await self.run.copies.drop_copy(link)
        series, occurrences = await self.run.load(series_id)
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
        await self.reconcile_read(
            series, occurrences, link, remote if calendar else None, crm_moved
        )

    async def reconcile_read(
        self,
        series: ActivitySeries,
        occurrences: list[Activity],
        link: Link,
        remote: RemoteRef | None,
        crm_moved: bool,
    ) -> None:
        """Decide and write a linked series whose calendar side is ``remote`` (read, or
        None when only the CRM moved): the plan of which units go which way, the
        conflict recorded, the calendar's units pulled, the CRM's pushed (or the link
        stored when nothing goes out)."""
        within = within_horizon_of(series)
        crm_event = self.run.crm_event(series, occurrences)
        crm_now = digests_of(crm_event, within)
        calendar = remote.event if remote is not None else None
        self.engine.looked_at.add(link.remote_id)
        if calendar is None and self._still_refused(link, crm_now):
            return
        stored = link.field_hashes or {}
        bases = await self._bases(series, link, remote, crm_now, within, crm_moved)
        if bases is None:
            return
        base_crm, base_cal, remote = bases
        cal_now = digests_of(calendar, within) if calendar is not None else base_cal
        invitation = self._invitation(calendar, occurrences)
        crm_split = calendar is not None and await self._split_on_both(
            series, link, crm_now, cal_now, base_crm, base_cal
        )
        moved_off = await self.run.crm_splits.moved_off(
            series, occurrences, link, cal_now, base_cal
        )
        plan = self._plan(
            series, occurrences, calendar, _with_moved_off(crm_now, base_crm, moved_off, link),
            cal_now, base_crm, base_cal, invitation, crm_split,
        )  # fmt: skip
        kept_out = self._unrestorable(series, occurrences, plan, cal_now, crm_now)
        if plan.conflict:
            await self._record_conflict(plan, occurrences, link, remote)
        retimed = bool(plan.pull & {"when", "recurrence"})
        if retimed:
            _keep_carried(plan, cal_now, base_cal)
        if plan.pull and calendar is not None and remote is not None:
            pulled = await self._pull(
                series, occurrences, calendar, plan, invitation, moved_off, cal_now, within,
                retimed,
            )  # fmt: skip
            if pulled is None:
                return
            series, occurrences, crm_event, crm_now = pulled
        done = Reconciled(series, occurrences, link, stored, crm_now, cal_now, base_crm,
                           kept_out, within, bool(plan.push or plan.pull))  # fmt: skip
        if plan.push:
            await self._push(done, remote, crm_event, plan)
            return
        etag = remote.etag if remote is not None else link.remote_etag
        await self.run.updates.store(done, etag, calendar)

    def _still_refused(self, link: Link, crm_now: Digests) -> bool:
        """Whether the CRM's series is the very version the calendar refused for good
        (``SeriesUpdates._refused``) and the calendar's has not moved since: nothing is
        sent (it would be refused again), the link stays as it was, and the problem
        stays in the status as it was said."""
        if link.refused_hash is None or units_digest(crm_now) != link.refused_hash:
            return False
        self.engine.still_refused.add(link.remote_id)
        return True

    async def _bases(
        self,
        series: ActivitySeries,
        link: Link,
        remote: RemoteRef | None,
        crm_now: Digests,
        within: Callable[[Moment], bool],
        crm_moved: bool,
    ) -> tuple[Digests, Digests, RemoteRef | None] | None:
        """The series as the last sync left it in the CRM and in the calendar, and the
        calendar series (``remote``, or read here for a link from before the link
        remembered series units). None when that read finds nothing: skipped."""
        base_crm, base_cal = _stored_bases(link.field_hashes or {})
        if base_crm.master:
            return base_crm, base_cal, remote
        # Linked before the link remembered series units: take the calendar as it is
        # (or as the CRM is, when only the calendar moved) as the last sync.
        calendar = remote.event if remote is not None else None
        if calendar is not None:
            base = digests_of(calendar, within) if crm_moved else crm_now
            return base, base, remote
        try:
            remote = await self.run.updates.current(link)
        except NotRead:
            remote = None
        if remote is None or remote.event is None:
            self.engine._skip_series(series.id, "the series cannot be read in the calendar")
            return None
        base = digests_of(remote.event, within)
        return base, base, remote

    async def _split_on_both(
        self,
        series: ActivitySeries,
        link: Link,
        crm_now: Digests,
        cal_now: Digests,
        base_crm: Digests,
        base_cal: Digests,
    ) -> bool:
        """Whether both sides changed the series' rule, differently, and the CRM did so
        by splitting the series since the last sync (see ``_plan``)."""
        unit = "recurrence"
        if (
            crm_now.get(unit) == base_crm.get(unit)
            or cal_now.get(unit) == base_cal.get(unit)
            or crm_now.get(unit) == cal_now.get(unit)
        ):
            return False
        return await self.run.crm_splits.split_since(series, link) is not None

    async def _record_conflict(
        self, plan: Plan, occurrences: list[Activity], link: Link, remote: RemoteRef | None
    ) -> None:
        """A conflict decided for the series, recorded on its anchor occurrence."""
        engine = self.engine
        anchor = anchor_of(occurrences, link)
        winner = Winner.CALENDAR if plan.pull else Winner.CRM
        act = Act.PULL_UPDATE if plan.pull else Act.PUSH_UPDATE
        pair = Pair(activity=anchor, remote=remote)
        await engine._record_conflict(pair, Decision(act, True, winner))

    async def _pull(
        self,
        series: ActivitySeries,
        occurrences: list[Activity],
        calendar: CalendarEvent,
        plan: Plan,
        invitation: bool,
        moved_off: dict[str, Activity],
        cal_now: Digests,
        within: Callable[[Moment], bool],
        retimed: bool,
    ) -> tuple[ActivitySeries, list[Activity], CalendarEvent, Digests] | None:
        """The calendar's units written to the CRM: answers the series, its occurrences,
        its event and its units as they are then, or None when the CRM changed
        meanwhile (the run is deferred)."""
        engine = self.engine
        pulled = await self.run.to_crm.pull(
            series, occurrences, calendar, plan, invitation, moved_off
        )
        if pulled is None:
            # Edited in the CRM since this run read it: nothing is written, and the
            # next run, which lists the calendar's change again, sees both edits.
            engine.deferred = True
            return None
        series, occurrences = pulled
        for other in _split_series_pulled(moved_off, plan):
            await self.run.crm_splits.resend(other)
        crm_event = self.run.crm_event(series, occurrences)
        crm_now = digests_of(crm_event, within)
        if retimed and engine.ctx.push and not invitation:
            # The CRM carried its occurrences changed on their own (and left out) to
            # the series' new times; the calendar gets them there, and loses what
            # stayed at the old times (Google keeps such exceptions, Outlook drops
            # them, a CalDAV client may leave its RECURRENCE-IDs behind).
            for key in {*crm_now.occurrences, *cal_now.occurrences}:
                if crm_now.occurrences.get(key) != cal_now.occurrences.get(key):
                    plan.push.add(f"@{key}")
        return series, occurrences, crm_event, crm_now

    async def _push(
        self, done: Reconciled, remote: RemoteRef | None, crm_event: CalendarEvent, plan: Plan
    ) -> None:
        """The CRM's units sent to the calendar series, with the run's other updates."""
        engine = self.engine
        try:
            pushed = await self.run.updates.push(done.link, remote, crm_event, plan)
        except NotRead:
            engine.report.skipped += 1
            return  # left as it was linked: the next run reads it again
        except EventNotFound:
            await self.run.updates.gone(done)
            return
        if pushed is None:
            return
        # Sent with the run's other updates, in as few requests as the provider
        # allows (see ``SeriesUpdates.write_pending``); the link is stored once it answers.
        self.run.updates.pending.append((done, *pushed))
        if not engine.provider.capabilities.batch_changes:
            await self.run.updates.write_pending()

    def _invitation(self, calendar: CalendarEvent | None, occurrences: list[Activity]) -> bool:
        if calendar is not None:
            return self.engine._organizer(calendar) is not None
        return any(o.organizer for o in occurrences)

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
        plan = Plan()
        keys = {
            *crm_now.occurrences,
            *cal_now.occurrences,
            *base_crm.occurrences,
            *base_cal.occurrences,
        }
        crm_wins: dict[str | None, bool] = {}
        for unit in [*MASTER_GROUPS, *(f"@{k}" for k in sorted(keys))]:
            crm = crm_now.get(unit) != base_crm.get(unit)
            cal = cal_now.get(unit) != base_cal.get(unit)
            if not _to_decide(unit, crm, cal, crm_now, cal_now):
                continue
            way = self._way(unit, crm, cal, calendar, invitation, crm_split)
            if way == "conflict":
                # An occurrence's edits are compared by its own times, the rest by the
                # series' (its master's in the calendar).
                key = unit[1:] if unit.startswith("@") else None
                if key not in crm_wins:
                    crm_wins[key] = self.crm_wins(series, occurrences, calendar, key)
                plan.conflict = True
                way = "push" if crm_wins[key] else "pull"
            if way == "push":
                plan.push.add(unit)
            elif way == "pull":
                plan.pull.add(unit)
        return plan

    def _way(
        self,
        unit: str,
        crm: bool,
        cal: bool,
        calendar: CalendarEvent | None,
        invitation: bool,
        crm_split: bool,
    ) -> Literal["push", "pull", "conflict"] | None:
        """Which way a unit changed on the CRM's side (``crm``), the calendar's (``cal``)
        or both goes: "conflict" for the conflict policy to decide, None for neither
        (a side the connection does not write, or that is not the unit's to write)."""
        ctx = self.engine.ctx
        push_ok = ctx.push and not invitation
        # An invitation's note is the CRM's own.
        pull_ok = ctx.pull and calendar is not None and not (invitation and unit == "description")
        if unit == "recurrence" and crm and cal and crm_split and push_ok:
            # The CRM split the series ("this and following") and the calendar ended
            # it elsewhere: the earlier end is the CRM's, the calendar's split is
            # carried on the CRM's later part (``CrmSplits.split_crm_part``).
            return "push"
        if not cal:
            return "push" if push_ok else None
        if not crm:
            return "pull" if pull_ok else None
        # Changed on both sides to different values.
        if invitation or not ctx.push:
            return "pull" if pull_ok else None
        if not ctx.pull:
            return "push"
        return "conflict"

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
            moment = moment_of(key, series)
            day = moment.astimezone(zone).date() if isinstance(moment, dt.datetime) else moment
            engine.report.problem(
                f"series of activity {series.id}",
                f"the occurrence of {day} was taken back from the trash, but {service} "
                "cannot bring a cancelled occurrence of a series back: it stays cancelled "
                "there (cancel it again, or add it as an activity of its own)",
            )
        return found

    def crm_wins(
        self,
        series: ActivitySeries,
        occurrences: list[Activity],
        calendar: CalendarEvent | None,
        key: str | None = None,
    ) -> bool:
        """The ``latest`` policy's verdict on the series, or with ``key`` on its
        occurrence of that original start: the newer edit wins, a tie goes to the CRM
        (``decisions.crm_edit_is_later``).

        An occurrence changed on both sides compares its own times: the CRM's edit of
        it (or of its series) and the calendar's of it (its override's modification
        time). The master's time in the calendar is not the occurrence's: crmcal's own
        write of the master sets it, possibly in the very second of the CRM's edit,
        and that write would then decide for the CRM against a newer calendar edit."""
        policy = self.engine.ctx.options.conflict_policy
        if policy != "latest":
            return policy == "crm"
        crm_time = max(series.updated_at, *(i.updated_at for i in occurrences))
        calendar_time = calendar.last_modified if calendar else None
        if key is not None:
            own = [
                o.deleted_at or o.updated_at
                for o in occurrences
                if series_mapping.original_key(series, o) == key
            ]
            crm_time = max(series.updated_at, *own) if own else crm_time
            override = calendar.live_overrides().get(key) if calendar else None
            if override is not None and override.last_modified is not None:
                calendar_time = override.last_modified
        calendar_time = calendar_time or utcnow()
        return crm_edit_is_later(crm_time, calendar_time)


def _stored_bases(stored: Mapping[str, Any]) -> tuple[Digests, Digests]:
    """The series' units as the last sync left them in the CRM and in the calendar, as
    the link keeps them (the calendar's master the CRM's when it kept none apart)."""
    kept = stored.get("occurrences") or {}
    base_crm = Digests(dict(stored.get("series") or {}), dict(kept.get("crm") or {}))
    base_cal = Digests(
        dict(stored.get("series_calendar") or base_crm.master), dict(kept.get("calendar") or {})
    )
    return base_crm, base_cal


def _with_moved_off(
    crm_now: Digests, base_crm: Digests, moved_off: dict[str, Activity], link: Link
) -> Digests:
    """The CRM's units with the occurrences it split off as they are there now, so that
    an edit of one of them in the calendar is decided against the CRM's (never just
    lost)."""
    if not moved_off:
        return crm_now
    theirs = dict(crm_now.occurrences)
    for key, moved in moved_off.items():
        digest = moved_digest(moved, base_crm.occurrences.get(key), link)
        if digest is not None:
            theirs[key] = digest
    return Digests(crm_now.master, theirs)


def _split_series_pulled(moved_off: dict[str, Activity], plan: Plan) -> list[int]:
    """The series the CRM split occurrences off into whose occurrences the calendar's
    edits just changed: each is sent again."""
    return sorted(
        {
            moved.series_id
            for key, moved in moved_off.items()
            if f"@{key}" in plan.pull and moved.series_id is not None
        }
    )


def _to_decide(unit: str, crm: bool, cal: bool, crm_now: Digests, cal_now: Digests) -> bool:
    """Whether a unit has an edit to decide: changed on a side, and not to the same value
    on both."""
    if not crm and not cal:
        return False
    if crm and cal and crm_now.get(unit) == cal_now.get(unit):
        return False  # the same edit on both sides
    return unit != "cancelled"  # a cancelled master is a deletion, decided before this


def _keep_carried(plan: Plan, cal_now: Digests, base_cal: Digests) -> None:
    """The series' times or rule come from the calendar: its occurrences changed on their
    own or left out at the old times that it no longer has are not undone in the CRM
    (a client moving a series leaves them behind or drops them, as Outlook does); the
    CRM carries them to the new times instead."""
    for unit in list(plan.pull):
        key = unit[1:]
        if unit.startswith("@") and key in base_cal.occurrences and key not in cal_now.occurrences:
            plan.pull.discard(unit)
