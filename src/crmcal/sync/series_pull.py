"""Writing a calendar series' units to its CRM series: the series' fields that
changed (``scope="series"``), and each occurrence that changed on its own, was left
out or came back — only ever to the series as the run read it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from crmcal.crm import activities, times
from crmcal.crm import series as crm_series
from crmcal.crm.errors import CrmError, Invalid
from crmcal.crm.schemas import ActivityUpdate
from crmcal.crm.tables import Activity, ActivitySeries, User
from crmcal.model import (
    CalendarEvent,
    canonical_rrule,
    changed_fields,
    moment_key,
)
from crmcal.sync import mapping, series_mapping
from crmcal.sync.series_rows import (
    load_occurrences,
    rows_version,
    still_as_read,
)
from crmcal.sync.series_units import (
    Moment,
    Plan,
    moment_of,
)

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

if TYPE_CHECKING:
    from crmcal.sync.series_sync import SeriesSync


class SeriesPull:
    """The CRM's side of a series: the calendar's units written to it."""

    def __init__(self, run: SeriesSync) -> None:
        self.run = run
        self.engine = run.engine

    async def pull(
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
        occurrences the CRM split off since the last sync (``CrmSplits.moved_off``), as read."""
        engine, ctx = self.engine, self.engine.ctx
        groups, keys = Plan.groups(plan.pull), Plan.keys(plan.pull)
        series_id = read.id
        async with engine.db.write() as session:
            owner = await engine._owner(session)
            series = await session.get(
                ActivitySeries, series_id, with_for_update=True, populate_existing=True
            )
            assert series is not None
            occurrences = await load_occurrences(session, series_id, lock=True)
            if rows_version(series, occurrences) != rows_version(read, read_occurrences):
                return None
            if moved_off and not await still_as_read(session, moved_off.values()):
                return None
            live = [o for o in occurrences if o.deleted_at is None]
            fields = self.master_fields(series, live, calendar, groups, owner)
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
                occurrences = await load_occurrences(session, series_id)
            if keys:
                await self.pull_occurrences(
                    session, owner, series, calendar, keys, invitation, moved_off or {}
                )
            await session.flush()
            written = await session.get(ActivitySeries, series_id, populate_existing=True)
            assert written is not None
            return written, await load_occurrences(session, series_id, fresh=True)

    def master_fields(
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
        fields = _partial_guests(calendar, current, fields)
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

    async def pull_occurrences(
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
        occurrences = await load_occurrences(session, series.id)
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
                moment = moment_of(key, series)
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
        fields = _partial_guests(override, occurrence, fields)
        if invitation:
            fields.pop("note", None)
        fields = _news(fields, engine._fields(ours, occurrence))
        if not fields:
            return  # the exception differs from ours only in what the CRM does not show
        try:
            data = ActivityUpdate(**fields, scope="this")
        except ValidationError as exc:
            raise Invalid(f"the occurrence cannot be stored: {exc.errors()[0]['msg']}") from None
        await activities.update_activity(
            session, owner, occurrence.id, data, origin=ctx.origin,
            as_contacts=ctx.options.attendees_to_contacts, from_calendar=True,
        )  # fmt: skip


# Fields the CRM takes in together: one of them changed, all of them are written.
_TOGETHER = (("start", "end", "timezone", "all_day"),)


def _news(fields: dict[str, Any], ours: Mapping[str, Any]) -> dict[str, Any]:
    """``fields`` without those the occurrence has already (``ours``: its own fields, as
    the calendar's version of it would give them). An exception can differ from the
    occurrence in what the CRM does not show (the user's own answer to an invitation,
    the user among the attendees): writing that would touch the activity, and put a
    change in the feed, for nothing."""
    changed = {name for name, value in fields.items() if name not in ours or ours[name] != value}
    changed |= {n for group in _TOGETHER if changed & set(group) for n in group}
    return {name: value for name, value in fields.items() if name in changed}


def _partial_guests(
    event: CalendarEvent, current: Activity | None, fields: dict[str, Any]
) -> dict[str, Any]:
    """``fields`` with the participants the calendar did not show kept, where it shows
    the guest list only in part (``attendees_partial``: Google's ``attendeesOmitted``,
    Graph's ``hideAttendees``): none of them is taken for removed, as for a single
    event (``CrmWrites.update``)."""
    if not event.attendees_partial or current is None or "participants" not in fields:
        return fields
    kept = mapping.merged_participants(current, fields["participants"], set())
    return {**fields, "participants": kept}


def crm_recurrence_loaded(text: str) -> Moment:
    from crmcal.crm import recurrence

    return recurrence.loaded(text)


def _as_series_moment(series: ActivitySeries, moment: Moment) -> Moment:
    if series.all_day and isinstance(moment, dt.datetime):
        return moment.astimezone(times.zone(series.timezone)).date()
    return moment


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
