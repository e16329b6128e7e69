"""Recurring activities: a series row holds the rule and the master's fields, and its
occurrences are ordinary activities (``series_id``, ``original_start_at``).

Occurrences are made up to a rolling horizon (``CRMCAL_SERIES_HORIZON_DAYS``,
365 by default) and the maintenance job moves it on, so a rule without an end
costs a year of rows, not an infinity. Each occurrence can be done, annotated,
linked to a deal and answered on its own; the fields changed on one occurrence
alone (``overrides``) are left as they are when the whole series is edited, and
an edit of the series' time or rule keeps each occurrence that still has a slot
(same instant, or same day) with all its own data.

Edits and deletions take a scope: ``this`` occurrence, ``following`` (the rule
ends before it and a new series starts with it) or the whole ``series``.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.instrumentation import manager_of_class

from crmcal import bulk, config
from crmcal.crm import changefeed, permissions, recurrence, times
from crmcal.crm.errors import Conflict, Invalid, NotFound
from crmcal.crm.recurrence import Moment, Rule
from crmcal.crm.schemas import Scope, SeriesOut, SeriesParticipantOut
from crmcal.crm.tables import Activity, ActivitySeries, Participant, User, table_of, utcnow

if TYPE_CHECKING:
    from crmcal.crm.activities import Written

# Occurrences made in one step (a sub-daily rule over a year would be thousands):
# the rest follow in later steps of the maintenance job.
MAX_PER_STEP = 1000
# Fields of the master that every occurrence shows unless it changed them itself.
MASTER_FIELDS = (
    "type", "subject", "location", "note", "busy", "visibility", "deal_id", "person_id",
    "organization_id", "reminder_minutes", "notify_participants",
)  # fmt: skip
_TIME_FIELDS = ("start", "end", "all_day", "timezone")
_RULE_FIELDS = ("recurrence", "exdates", "rdates")


def horizon() -> dt.timedelta:
    """How far ahead occurrences exist (``CRMCAL_SERIES_HORIZON_DAYS``, checked when
    crmcal starts)."""
    return dt.timedelta(days=config.series_horizon_days(os.environ))


# --- the rule of a series --------------------------------------------------------


def first_moment(series: ActivitySeries) -> Moment:
    if series.all_day:
        assert series.start_date is not None
        return series.start_date
    return series.start_at


def rule_of(series: ActivitySeries) -> Rule:
    return Rule(
        rrule=series.rrule,
        tz=times.zone(series.timezone),
        all_day=series.all_day,
        first=first_moment(series),
        rdates=tuple(recurrence.loaded(v) for v in series.rdates or []),
        exdates=tuple(recurrence.loaded(v) for v in series.exdates or []),
    )


def _original_moment(series: ActivitySeries, activity: Activity) -> Moment:
    assert activity.original_start_at is not None
    if series.all_day:
        return activity.original_start_at.astimezone(times.zone(series.timezone)).date()
    return activity.original_start_at


def _rule_ending_before(series: ActivitySeries, moment: Moment) -> str:
    """The series' rule, ended just before ``moment`` (its COUNT becomes an UNTIL)."""
    parts = [p for p in series.rrule.split(";") if not p.upper().startswith(("COUNT=", "UNTIL="))]
    if isinstance(moment, dt.datetime):
        last = moment.astimezone(dt.UTC) - dt.timedelta(seconds=1)
        parts.append(f"UNTIL={last:%Y%m%dT%H%M%SZ}")
    else:
        parts.append(f"UNTIL={moment - dt.timedelta(days=1):%Y%m%d}")
    return ";".join(parts)


def _rule_from(series: ActivitySeries, moment: Moment) -> str:
    """The series' rule for a series that starts at ``moment`` (a COUNT less the
    occurrences before it)."""
    parts = series.rrule.split(";")
    count = next((p for p in parts if p.upper().startswith("COUNT=")), None)
    if count is None:
        return series.rrule
    # COUNT counts the rule's dates before any is left out (RFC 5545 3.8.5.1).
    rule = replace(rule_of(series), exdates=())
    before = rule.starts(rule.instant(rule.first), rule.instant(moment), int(count[6:]) + 1)
    left = max(int(count[6:]) - len(before), 1)
    return ";".join(f"COUNT={left}" if p is count else p for p in parts)


# --- making occurrences ----------------------------------------------------------


def _occurrence_row(
    series: ActivitySeries, rule: Rule, moment: Moment, common: dict[str, Any] | None = None
) -> dict[str, Any]:
    """An occurrence's row; ``common``: ``_common_columns(series)``, read once for all
    the occurrences of a series made at once."""
    (row,) = _occurrence_rows(series, rule, [moment], common)
    return row


def _occurrence_rows(
    series: ActivitySeries, rule: Rule, moments: list[Moment], common: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """The rows of the occurrences starting at ``moments`` (``_occurrence_row`` of each,
    the series read once: an import makes thousands)."""
    common = _common_columns(series) if common is None else common
    at = _timing(series, rule)
    return [
        {**common, **at(moment), "uid": uuid.uuid4().hex, "original_start_at": rule.instant(moment)}
        for moment in moments
    ]


def _common_columns(series: ActivitySeries) -> dict[str, Any]:
    """The columns every occurrence of ``series`` made now has alike."""
    now = utcnow()
    row: dict[str, Any] = {name: getattr(series, name) for name in MASTER_FIELDS}
    row.update(
        all_day=series.all_day, timezone=series.timezone, done=False,
        owner_id=series.owner_id, recurrence=series.rrule, series_id=series.id,
        overrides=None, organizer=series.organizer, created_at=now,
        updated_at=now, deleted_at=None,
    )  # fmt: skip
    return row


def _times_at(series: ActivitySeries, rule: Rule, moment: Moment) -> dict[str, Any]:
    """An occurrence's time columns when it starts at ``moment``, as long as the master."""
    return _timing(series, rule)(moment)


def _timing(series: ActivitySeries, rule: Rule) -> Callable[[Moment], dict[str, Any]]:
    """``_times_at`` of ``series`` for any moment, the series read once."""
    if series.all_day:
        assert series.start_date
        assert series.end_date
        days = series.end_date - series.start_date

        def on(moment: Moment) -> dict[str, Any]:
            assert isinstance(moment, dt.date)
            end_date = moment + days
            return {"start_at": rule.instant(moment), "end_at": rule.instant(end_date),
                    "start_date": moment, "end_date": end_date}  # fmt: skip

        return on
    length = series.end_at - series.start_at if series.end_at else None

    def at(moment: Moment) -> dict[str, Any]:
        assert isinstance(moment, dt.datetime)
        start = moment.astimezone(dt.UTC)
        end = start + length if length is not None else None
        return {"start_at": start, "end_at": end, "start_date": None, "end_date": None}

    return at


def _put_at(
    activity: Activity, series: ActivitySeries, rule: Rule, slot: dt.datetime, moment: Moment
) -> None:
    """``activity`` as the occurrence the rule puts at ``slot`` (``moment`` on its clock):
    its times follow the series unless they were changed on their own."""
    activity.original_start_at = slot
    if "start" not in (activity.overrides or []):
        for name, value in _times_at(series, rule, moment).items():
            setattr(activity, name, value)
    activity.timezone = series.timezone


def _participant_rows(series: ActivitySeries) -> list[dict[str, Any]]:
    return [
        {"position": i, "email": p.get("email"), "name": p.get("name"),
         "person_id": p.get("person_id"), "status": "needs_action"}
        for i, p in enumerate(series.participants or [])
    ]  # fmt: skip


async def materialise(
    session: AsyncSession,
    series: ActivitySeries,
    until: dt.datetime,
    *,
    origin: str = "api",
    limit: int = MAX_PER_STEP,
    first: dict[str, Any] | None = None,
) -> list[Activity]:
    """Make the series' occurrences that start before ``until`` and do not exist yet."""
    from crmcal.crm.activities import insert_rows

    if series.deleted_at is not None or series.materialised_until is None:
        return []
    start = series.materialised_until
    if until <= start:
        return []
    rule = rule_of(series)
    starts = rule.starts(start, until, limit + 1)
    reached = until
    if len(starts) > limit:
        reached, starts = rule.instant(starts[limit]), starts[:limit]
    existing = set(
        await session.scalars(
            select(Activity.original_start_at).where(
                Activity.series_id == series.id,
                Activity.original_start_at >= start,
                Activity.original_start_at < reached,
            )
        )
    )
    fresh = [m for m in starts if rule.instant(m) not in existing]
    series.materialised_until = reached
    if not fresh:
        return []
    common = _common_columns(series)
    rows = [_occurrence_row(series, rule, m, common) for m in fresh]
    rows[0].update(first or {})
    people = _participant_rows(series)
    made = await insert_rows(session, rows, [people for _ in rows])
    await changefeed.record_changes(session, made, changefeed.CREATED, origin)
    return made


async def extend_all(
    session: AsyncSession, *, now: dt.datetime | None = None, batch: int = 200
) -> tuple[int, int]:
    """Move the horizon on for up to ``batch`` series (the maintenance job, daily per
    series: only those whose horizon is more than a day short are looked at).
    Returns how many series were moved on and how many occurrences were made."""
    now = now or utcnow()
    target = now + horizon()
    due = list(
        await session.scalars(
            select(ActivitySeries)
            .where(
                ActivitySeries.deleted_at.is_(None),
                ActivitySeries.materialised_until.is_not(None),
                ActivitySeries.materialised_until < target - dt.timedelta(days=1),
            )
            .order_by(ActivitySeries.id)
            .limit(batch)
        )
    )
    made = 0
    for series in due:
        try:
            made += len(await materialise(session, series, target, origin="maintenance"))
        except Invalid:  # a rule that cannot be expanded any more: leave it be
            series.materialised_until = None
    return len(due), made


# --- creating ----------------------------------------------------------------------


@dataclass(frozen=True)
class StartsAhead:
    """A new series' occurrence starts computed before it is written (an import's, where
    its event was parsed, on a core the writer does not use): every start before
    ``until``, a day past the horizon then, so that the writer, a little later, needs
    only those before its own horizon (``planned``)."""

    until: dt.datetime
    starts: tuple[Moment, ...]
    instants: tuple[dt.datetime, ...]  # each start's ``Rule.instant``


# How far past the horizon ``starts_ahead`` looks: the writer's horizon, later, is
# within it unless the series waited longer than that to be written.
_AHEAD = dt.timedelta(days=1)


@dataclass(frozen=True)
class NewSeries:
    """One series to create: an activity's checked columns (``row``, with its
    ``recurrence``), its participant rows (with the statuses of the first occurrence),
    its dates left out and added, a uid an importer chose, and its starts if computed
    ahead."""

    owner: User
    row: dict[str, Any]
    participants: list[dict[str, Any]]
    exdates: list[str] | None = None
    rdates: list[str] | None = None
    uid: str | None = None
    organizer: str | None = None  # someone else's meeting (see Activity.organizer)
    ahead: StartsAhead | None = None


async def create_series(
    session: AsyncSession,
    owner: User,
    row: dict[str, Any],
    participants: list[dict[str, Any]],
    *,
    exdates: list[str] | None,
    rdates: list[str] | None,
    origin: str,
    uid: str | None = None,
) -> Activity:
    """A series from an activity's checked columns (``row``, with its ``recurrence``);
    answers its first occurrence."""
    (first,) = await create_many(
        session, [NewSeries(owner, row, participants, exdates, rdates, uid)], origin=origin
    )
    return first


async def create_many(
    session: AsyncSession, items: list[NewSeries], *, origin: str
) -> list[Activity]:
    """Several series at once (an import), each answered by its first occurrence."""
    from crmcal.crm.activities import load_in_order

    firsts = await write_many(session, items, origin=origin)
    return await load_in_order(session, [first.id for first in firsts])


async def write_many(
    session: AsyncSession, items: list[NewSeries], *, origin: str
) -> list[Written]:
    """``create_many``, each series answered by its first occurrence as written, not
    read from the database.

    Everything a new series needs is known before it is stored (its occurrences up to
    the horizon follow from the rule alone), so the series, all their occurrences,
    participants and change-feed rows go in a few multi-row INSERTs, however many
    series there are.
    """
    from crmcal.crm.activities import Written, insert_row_ids

    if not items:
        return []
    now = utcnow()
    made = [planned(item, now) for item in items]
    table = table_of(ActivitySeries)
    columns = [c.key for c in table.columns if c.key != "id"]
    ids = await bulk.insert_many_ids(
        session,
        table,
        [{name: getattr(series, name) for name in columns} for series, _, _ in made],
    )
    rows: list[dict[str, Any]] = []
    people: list[list[dict[str, Any]]] = []
    firsts: list[int] = []
    for (series, rule, starts), series_id, item in zip(made, ids, items, strict=True):
        series.id = series_id
        everyone = _participant_rows(series)
        common = _common_columns(series)
        firsts.append(len(rows))
        row, first_people = first_occurrence(series, rule, starts[0], item, common)
        rows.append(row)
        people.append(first_people)
        rows += _occurrence_rows(series, rule, starts[1:], common)
        people += [everyone] * (len(starts) - 1)
    ids = await insert_row_ids(session, rows, people)
    owners = [row["owner_id"] for row in rows]
    await changefeed.record_new(session, ids, owners, changefeed.CREATED, origin)
    # Only the first occurrences are answered.
    return [Written(ids[i], rows[i], people[i]) for i in firsts]


def first_occurrence(
    series: ActivitySeries,
    rule: Rule,
    moment: Moment,
    item: NewSeries,
    common: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The row and participant rows of the first occurrence ``write_many`` makes of
    ``item`` (``series`` planned for it), the activity asked for: done if it was given
    as done, with the answers its participants gave."""
    row = _occurrence_row(series, rule, moment, common)
    row["done"] = bool(item.row.get("done"))
    statuses = {p["email"]: p["status"] for p in item.participants if p.get("email")}
    people = [{**p, "status": statuses.get(p["email"], p["status"])}
              for p in _participant_rows(series)]  # fmt: skip
    return row, people


def planned(item: NewSeries, now: dt.datetime) -> tuple[ActivitySeries, Rule, list[Moment]]:
    """The series ``write_many`` writes for ``item`` (not yet stored, without its id),
    its rule and the starts of the occurrences it makes at ``now`` (those ``item``
    brings computed ahead where they hold all of them); raises Invalid where it has
    none within the horizon."""
    series, rule = _unsaved_of(item, now)
    until = _target(series)
    ahead = item.ahead
    if ahead is not None and until <= ahead.until:
        # Every start before a later moment: those before this one are the same as
        # the rule's (the rows stay those the rule makes, whoever computed them).
        starts = list(ahead.starts[: bisect_left(ahead.instants, until)][: MAX_PER_STEP + 1])
    else:
        starts = rule.starts(series.start_at, until, MAX_PER_STEP + 1)
    if not starts:
        raise Invalid(
            "recurrence: the series has no occurrence from its start within the next "
            f"{horizon().days} days"
        )
    if len(starts) > MAX_PER_STEP:
        until, starts = rule.instant(starts[MAX_PER_STEP]), starts[:MAX_PER_STEP]
    series.materialised_until = until
    return series, rule, starts


def starts_ahead(item: NewSeries, now: dt.datetime) -> StartsAhead | None:
    """The starts of ``item``'s occurrences before a day past the horizon at ``now``,
    for ``planned`` to take later; None where they may not be all of them (a rule that
    makes too many to count them all: ``Rule.starts`` stops counting at its limit)."""
    series, rule = _unsaved_of(item, now)
    until = _target(series) + _AHEAD
    starts = rule.starts(series.start_at, until, MAX_PER_STEP + 1)
    # Far from the limit, with room for the dates left out and the window's edges.
    if len(starts) + len(rule.exdates) + 50 > MAX_PER_STEP:
        return None
    return StartsAhead(until, tuple(starts), tuple(map(rule.instant, starts)))


def _unsaved_of(item: NewSeries, now: dt.datetime) -> tuple[ActivitySeries, Rule]:
    row = item.row
    tz = times.zone(row["timezone"])
    recurrence.check_can_match(row["recurrence"])
    series = _unsaved_series(
        uid=item.uid or uuid.uuid4().hex, owner_id=item.owner.id, rrule=row["recurrence"],
        rdates=_moments("rdates", item.rdates, row["all_day"], tz),
        exdates=_moments("exdates", item.exdates, row["all_day"], tz),
        participants=[{"email": p["email"], "name": p["name"], "person_id": p["person_id"]}
                      for p in item.participants],
        created_at=now, updated_at=now, deleted_at=None, organizer=item.organizer,
        materialised_until=None,
        **{name: row[name] for name in (*MASTER_FIELDS, "timezone", "all_day", "start_at",
                                        "end_at", "start_date", "end_date")},
    )  # fmt: skip
    return series, rule_of(series)


def _unsaved_series(**values: Any) -> ActivitySeries:
    """A series' values as an ``ActivitySeries`` that is only read (its row written by
    ``create_many``, never added to a session): set as a loaded object's are, without
    the ORM's per-attribute events of a constructor, which an import of hundreds of
    series paid more for than for writing them."""
    made = _SERIES.new_instance()
    made.__dict__.update(values)
    return made


_SERIES = manager_of_class(ActivitySeries)


def _target(series: ActivitySeries) -> dt.datetime:
    return max(utcnow(), series.start_at) + horizon()


def _moments(field: str, given: list[str] | None, all_day: bool, tz: Any) -> list[str]:
    if not given:
        return []
    return sorted(
        {recurrence.stored(m) for m in recurrence.parse_moments(field, given, all_day, tz)}
    )


async def adopt(
    session: AsyncSession,
    activity: Activity,
    *,
    exdates: list[str] | None = None,
    rdates: list[str] | None = None,
    origin: str,
) -> None:
    """Make a single activity that was given a rule the first occurrence of a new series."""
    row = {name: getattr(activity, name) for name in
           (*MASTER_FIELDS, "timezone", "all_day", "start_at", "end_at", "start_date",
            "end_date", "recurrence")}  # fmt: skip
    tz = times.zone(activity.timezone)
    recurrence.check_can_match(row["recurrence"])
    series = ActivitySeries(
        uid=uuid.uuid4().hex,
        owner_id=activity.owner_id,
        rrule=row.pop("recurrence"),
        rdates=_moments("rdates", rdates, activity.all_day, tz),
        exdates=_moments("exdates", exdates, activity.all_day, tz),
        participants=[
            {"email": p.email, "name": p.name, "person_id": p.person_id}
            for p in activity.participants
        ],
        **row,
    )
    session.add(series)
    await session.flush()
    activity.series_id = series.id
    activity.original_start_at = activity.start_at
    series.materialised_until = activity.start_at + dt.timedelta(microseconds=1)
    await materialise(session, series, _target(series), origin=origin)


# --- reading -------------------------------------------------------------------------


async def get_series(session: AsyncSession, viewer: User, series_id: int) -> ActivitySeries:
    permissions.require(viewer, permissions.ACTIVITIES_VIEW)
    found = await session.get(ActivitySeries, series_id)
    if found is None or (
        found.deleted_at is not None and found.owner_id != viewer.id and not viewer.is_admin
    ):
        raise NotFound(f"series {series_id} not found")
    return found


async def series_of(session: AsyncSession, activity: Activity) -> ActivitySeries:
    assert activity.series_id is not None
    found = await session.get(ActivitySeries, activity.series_id)
    if found is None:
        raise NotFound(f"the series of activity {activity.id} is gone")
    return found


async def _live(
    session: AsyncSession, series: ActivitySeries, since: dt.datetime | None = None
) -> list[Activity]:
    query = select(Activity).where(Activity.series_id == series.id, Activity.deleted_at.is_(None))
    if since is not None:
        query = query.where(Activity.original_start_at >= since)
    return list(await session.scalars(query.order_by(Activity.original_start_at)))


# --- editing -------------------------------------------------------------------------


async def split(
    session: AsyncSession, series: ActivitySeries, anchor: Activity, origin: str
) -> ActivitySeries:
    """End ``series`` before ``anchor`` and start a new series with it and every later
    occurrence (which keep their ids and their own data). Answers the series that now
    holds ``anchor``: ``series`` itself when ``anchor`` is its first occurrence."""
    rule = rule_of(series)
    moment = _original_moment(series, anchor)
    instant = rule.instant(moment)
    if instant <= rule.instant(rule.first):
        return series
    later = ActivitySeries(
        uid=uuid.uuid4().hex,
        owner_id=series.owner_id,
        rrule=_rule_from(series, moment),
        rdates=[v for v in series.rdates or [] if rule.instant(recurrence.loaded(v)) >= instant],
        exdates=[v for v in series.exdates or [] if rule.instant(recurrence.loaded(v)) >= instant],
        participants=list(series.participants or []),
        organizer=series.organizer,
        materialised_until=series.materialised_until,
        timezone=series.timezone,
        all_day=series.all_day,
        **{name: getattr(series, name) for name in MASTER_FIELDS},
        **_times_at(series, rule, moment),
    )
    session.add(later)
    series.rrule = _rule_ending_before(series, moment)
    series.rdates = [v for v in series.rdates or [] if rule.instant(recurrence.loaded(v)) < instant]
    series.exdates = [
        v for v in series.exdates or [] if rule.instant(recurrence.loaded(v)) < instant
    ]
    series.updated_at = utcnow()
    await session.flush()
    await session.execute(
        update(Activity)
        .where(Activity.series_id == series.id, Activity.original_start_at >= instant)
        .values(series_id=later.id, recurrence=later.rrule)
        .execution_options(synchronize_session=False)
    )
    await session.execute(
        update(Activity)
        .where(Activity.series_id == series.id)
        .values(recurrence=series.rrule)
        .execution_options(synchronize_session=False)
    )
    for activity in session.identity_map.values():
        if isinstance(activity, Activity) and activity.series_id == series.id:
            await session.refresh(activity, ["series_id", "recurrence"])
    kept = await _live(session, series)
    if not kept:
        # Every earlier occurrence is in the trash: the first one still tells whoever
        # follows the change feed (a calendar sync) that its series changed.
        first = await session.scalar(
            select(Activity)
            .where(Activity.series_id == series.id)
            .order_by(Activity.original_start_at, Activity.id)
            .limit(1)
        )
        kept = [first] if first is not None else []
    changed = kept + await _live(session, later)
    if changed:
        await changefeed.record_changes(session, changed, changefeed.UPDATED, origin)
    return later


async def edit_series(
    session: AsyncSession,
    series: ActivitySeries,
    anchor: Activity,
    changes: dict[str, Any],
    participants: list[dict[str, Any]] | None,
    origin: str,
    viewer: User | None = None,
) -> None:
    """Apply ``changes`` (the API's fields) to the whole series, seen from ``anchor``:
    a new start for the anchor moves every occurrence by as much on the local clock."""
    from crmcal.crm.activities import check_master_fields

    if "all_day" in changes and changes["all_day"] != series.all_day:
        raise Conflict("all_day: a series cannot switch between all-day and timed")
    plain = {k: changes[k] for k in MASTER_FIELDS if k in changes}
    await check_master_fields(session, plain, series.type, viewer)
    moved = _set_master(series, plain, participants)
    retimed = any(k in changes for k in (*_TIME_FIELDS, *_RULE_FIELDS))
    day_shift = dt.timedelta(0)
    old_rule = rule_of(series)
    if retimed:
        day_shift = _retime(series, anchor, changes)
    series.updated_at = utcnow()
    await session.flush()
    live = await _live(session, series)
    if retimed:
        live = await _rematch(
            session, series, old_rule, live, day_shift, origin, carry="exdates" not in changes
        )
    changed = []
    for activity in live:
        if _follow_master(activity, series, plain, people=participants is not None) or retimed:
            activity.updated_at = utcnow()
            changed.append(activity)
    await session.flush()
    if not changed and moved and live:
        # The series changed and none of its occurrences did (each keeps its own value
        # of what changed): the feed still says so, on one of them, or readers of it
        # (a calendar's sync: the series' master there, and its later occurrences)
        # would never hear of the change.
        changed = [anchor if anchor in live else live[0]]
    if changed:
        await changefeed.record_changes(session, changed, changefeed.UPDATED, origin)


def _set_master(
    series: ActivitySeries, plain: dict[str, Any], participants: list[dict[str, Any]] | None
) -> bool:
    """Write the master's plain fields and participants (None: unchanged); answers
    whether any of them changed."""
    moved = any(getattr(series, name) != value for name, value in plain.items())
    for name, value in plain.items():
        setattr(series, name, value)
    if participants is not None:
        people = [
            {"email": p["email"], "name": p["name"], "person_id": p["person_id"]}
            for p in participants
        ]
        moved |= people != (series.participants or [])
        series.participants = people
    return moved


def _follow_master(
    activity: Activity, series: ActivitySeries, plain: dict[str, Any], *, people: bool
) -> bool:
    """Give an occurrence the master's ``plain`` fields (and its participants, with
    ``people``) but those it keeps as its own, and the master's rule; answers whether
    it changed."""
    touched = False
    kept = set(activity.overrides or [])
    for name, value in plain.items():
        if name not in kept and getattr(activity, name) != value:
            setattr(activity, name, value)
            touched = True
    if people and "participants" not in kept:
        touched |= _same_people(activity, series)
    if activity.recurrence != series.rrule:
        activity.recurrence, touched = series.rrule, True
    return touched


def _same_people(activity: Activity, series: ActivitySeries) -> bool:
    """Give the occurrence the series' participants, keeping the answers of those it had."""
    answers: dict[str | None, str] = {p.email: p.status for p in activity.participants if p.email}
    wanted = [
        (i, p.get("email"), p.get("name"), p.get("person_id"),
         answers.get(p.get("email"), "needs_action"))
        for i, p in enumerate(series.participants or [])
    ]  # fmt: skip
    current = [(p.position, p.email, p.name, p.person_id, p.status) for p in activity.participants]
    if wanted == current:
        return False
    activity.participants = [
        Participant(position=i, email=e, name=n, person_id=pid, status=s)
        for i, e, n, pid, s in wanted
    ]
    return True


def _retime(series: ActivitySeries, anchor: Activity, changes: dict[str, Any]) -> dt.timedelta:
    """Move the master's times and rule as ``changes`` say; returns by how many days the
    occurrences moved (to find each one's new slot)."""
    tz_name = changes.get("timezone") or series.timezone
    tz = times.zone(tz_name)
    if series.all_day:
        day_shift = _retime_days(series, anchor, changes, tz)
    else:
        day_shift = _retime_clock(series, anchor, changes, tz)
    series.timezone = tz_name
    _set_rule(series, changes, tz)
    return day_shift


def _retime_days(
    series: ActivitySeries, anchor: Activity, changes: dict[str, Any], tz: ZoneInfo
) -> dt.timedelta:
    """An all-day series' dates moved as the anchor's new start and end say; answers by
    how many days."""
    assert series.start_date
    assert series.end_date
    anchor_original = _original_moment(series, anchor)
    day_shift = dt.timedelta(0)
    length = series.end_date - series.start_date
    first = series.start_date
    if changes.get("start"):
        new_start = times.parse_date("start", changes["start"], tz)
        assert isinstance(anchor_original, dt.date)
        day_shift = new_start - anchor_original
        first = first + day_shift
    if changes.get("end"):
        base = first + (anchor_original - series.start_date) + day_shift
        length = times.parse_date("end", changes["end"], tz, end=True) - base
    if length == dt.timedelta(0):
        length = dt.timedelta(days=1)  # an end on its start's day: that one day
    if length < dt.timedelta(0):
        raise Invalid("end: must be after start (an all-day end date is exclusive)")
    series.start_date, series.end_date = first, first + length
    series.start_at, series.end_at = (
        times.midnight_utc(first, tz),
        times.midnight_utc(first + length, tz),
    )
    return day_shift


def _retime_clock(
    series: ActivitySeries, anchor: Activity, changes: dict[str, Any], tz: ZoneInfo
) -> dt.timedelta:
    """A timed series moved on the local clock as the anchor's new start says, in the
    zone ``tz`` (its new one), and its length as the new end says; answers by how many
    days its occurrences moved."""
    old_tz = times.zone(series.timezone)
    anchor_original = _original_moment(series, anchor)
    day_shift = dt.timedelta(0)
    first_local = series.start_at.astimezone(old_tz).replace(tzinfo=None)
    duration = (series.end_at - series.start_at) if series.end_at else None
    assert isinstance(anchor_original, dt.datetime)
    if changes.get("start"):
        new_start = times.parse_datetime("start", changes["start"], tz)
        shift = new_start.astimezone(tz).replace(tzinfo=None) - anchor_original.astimezone(
            old_tz
        ).replace(tzinfo=None)
        first_local += shift
        moved = new_start.astimezone(tz).date() - anchor_original.astimezone(old_tz).date()
        day_shift = dt.timedelta(days=moved.days)
    first = first_local.replace(tzinfo=tz).astimezone(dt.UTC)
    if "end" in changes:
        duration = _new_duration(anchor, changes, tz)
    series.start_at, series.end_at = first, (first + duration if duration is not None else None)
    return day_shift


def _new_duration(anchor: Activity, changes: dict[str, Any], tz: ZoneInfo) -> dt.timedelta | None:
    """A timed series' length as the anchor's new end (None: no end) says, from its new
    start or the one it has."""
    if changes["end"] is None:
        return None
    new_end = times.parse_datetime("end", changes["end"], tz)
    anchor_start = (
        times.parse_datetime("start", changes["start"], tz)
        if changes.get("start")
        else anchor.start_at
    )
    duration = new_end - anchor_start
    if duration < dt.timedelta(0):
        raise Invalid("end: must not be before start")
    return duration


def _set_rule(series: ActivitySeries, changes: dict[str, Any], tz: ZoneInfo) -> None:
    """The series' rule and its dates left out or added, as ``changes`` say."""
    if "recurrence" in changes:
        if not changes["recurrence"]:
            raise Invalid(
                "recurrence: a series keeps a rule; to end it delete with scope following"
            )
        dtstart = (
            dt.datetime.combine(series.start_date, dt.time())
            if series.all_day and series.start_date
            else series.start_at
        )
        series.rrule = times.normalise_rrule(changes["recurrence"], dtstart)
        recurrence.check_can_match(series.rrule)
    if "exdates" in changes:
        series.exdates = _moments("exdates", changes["exdates"], series.all_day, tz)
    if "rdates" in changes:
        series.rdates = _moments("rdates", changes["rdates"], series.all_day, tz)


async def _rematch(
    session: AsyncSession,
    series: ActivitySeries,
    old_rule: Rule,
    live: list[Activity],
    day_shift: dt.timedelta,
    origin: str,
    *,
    carry: bool = True,
) -> list[Activity]:
    """Give each live occurrence its slot under the series' new times and rule: the same
    instant, else the same local day (after the move); those left without one go to the
    trash, slots left without an occurrence get a new one. Answers the kept ones.

    With ``carry``, what was left out moves with the series the same way: the left-out
    dates, and the occurrences in the trash (keeping their ids), so a series moved from
    09:00 to 10:00 still leaves out its cancelled occurrences, now at 10:00."""
    rule = rule_of(series)
    if carry:
        rule = replace(rule, exdates=())
    slots = _Slots(rule, old_rule, series.materialised_until or _target(series), day_shift)
    trashed: list[Activity] = []
    carried: dict[dt.datetime, tuple[dt.datetime, Moment]] = {}
    if carry:
        carried = _carry_exdates(series, old_rule, rule, slots, day_shift)
        trashed = await _trashed(session, series)
    kept: list[Activity] = []
    gone: list[Activity] = []
    for activity in live:
        assert activity.original_start_at is not None
        slot = slots.find(activity.original_start_at)
        if slot is None:
            gone.append(activity)
            continue
        _put_at(activity, series, rule, slot, slots.take(slot))
        kept.append(activity)
    for activity in trashed:
        _move_trashed(activity, series, rule, slots, carried)
    now = utcnow()
    for activity in gone:
        activity.deleted_at = now
    if gone:
        await changefeed.record_changes(session, gone, changefeed.DELETED, origin)
    if slots.free:
        await _make_occurrences(session, series, rule, list(slots.free.values()), origin)
    return kept


class _Slots:
    """The starts of a series' occurrences under its new ``rule`` not yet taken, by
    instant (``free``); and the one for an occurrence's start under ``old_rule``: the
    same instant, else the same local day after the series moved by ``day_shift``."""

    def __init__(
        self, rule: Rule, old_rule: Rule, until: dt.datetime, day_shift: dt.timedelta
    ) -> None:
        lo = min(rule.instant(rule.first), old_rule.instant(old_rule.first))
        self.free = {rule.instant(m): m for m in rule.starts(lo, until, 100_000)}
        self._tz, self._old_tz, self._day_shift = rule.tz, old_rule.tz, day_shift
        self._by_day: dict[dt.date, dt.datetime] = {self._day(i): i for i in self.free}

    def _day(self, instant: dt.datetime) -> dt.date:
        return instant.astimezone(self._tz).date()

    def find(self, original: dt.datetime) -> dt.datetime | None:
        if original in self.free:
            return original
        found = self._by_day.get(original.astimezone(self._old_tz).date() + self._day_shift)
        return found if found in self.free else None

    def take(self, slot: dt.datetime) -> Moment:
        """The moment of ``slot``, no longer free (nor found by its day)."""
        self._by_day.pop(self._day(slot), None)
        return self.free.pop(slot)


def _carry_exdates(
    series: ActivitySeries, old_rule: Rule, rule: Rule, slots: _Slots, day_shift: dt.timedelta
) -> dict[dt.datetime, tuple[dt.datetime, Moment]]:
    """Move the series' left-out dates with it, each taking its slot; answers their old
    starts' new slots and moments (an occurrence in the trash there moves with its
    date)."""
    carried: dict[dt.datetime, tuple[dt.datetime, Moment]] = {}
    left: list[str] = []
    for text in series.exdates or []:
        moment = recurrence.loaded(text)
        slot = slots.find(old_rule.instant(moment))
        if slot is None:
            # Beyond the occurrences made: moved by as much on the local clock.
            left.append(_moved(old_rule, rule, moment, day_shift))
            continue
        taken = slots.take(slot)
        carried[old_rule.instant(moment)] = (slot, taken)
        left.append(recurrence.stored(taken))
    series.exdates = sorted(set(left))
    return carried


async def _trashed(session: AsyncSession, series: ActivitySeries) -> list[Activity]:
    """The series' occurrences in the trash."""
    return list(
        await session.scalars(
            select(Activity).where(
                Activity.series_id == series.id,
                Activity.deleted_at.is_not(None),
                Activity.original_start_at.is_not(None),
            )
        )
    )


def _move_trashed(
    activity: Activity,
    series: ActivitySeries,
    rule: Rule,
    slots: _Slots,
    carried: dict[dt.datetime, tuple[dt.datetime, Moment]],
) -> None:
    """An occurrence in the trash moved with its left-out date, else to its own slot;
    one the rule no longer makes stays in the trash as it was."""
    assert activity.original_start_at is not None
    if activity.original_start_at in carried:
        slot, moment = carried[activity.original_start_at]
    else:
        found = slots.find(activity.original_start_at)
        if found is None:
            return
        slot, moment = found, slots.take(found)
    _put_at(activity, series, rule, slot, moment)


async def _make_occurrences(
    session: AsyncSession, series: ActivitySeries, rule: Rule, moments: list[Moment], origin: str
) -> None:
    """New occurrences of the series at ``moments`` (slots no occurrence took)."""
    from crmcal.crm.activities import insert_rows

    common = _common_columns(series)
    rows = [_occurrence_row(series, rule, m, common) for m in moments]
    people = _participant_rows(series)
    made = await insert_rows(session, rows, [people for _ in rows])
    await changefeed.record_changes(session, made, changefeed.CREATED, origin)


def _moved(old_rule: Rule, rule: Rule, moment: Moment, day_shift: dt.timedelta) -> str:
    """A left-out date past the occurrences made, moved as the series' start moved: the
    same shift on the local clock (a date by the days the series moved)."""
    if isinstance(moment, dt.date) and not isinstance(moment, dt.datetime):
        return recurrence.stored(moment + day_shift)
    old_first, new_first = old_rule.instant(old_rule.first), rule.instant(rule.first)
    shift = new_first.astimezone(rule.tz).replace(tzinfo=None) - old_first.astimezone(
        old_rule.tz
    ).replace(tzinfo=None)
    local = moment.astimezone(old_rule.tz).replace(tzinfo=None) + shift
    return recurrence.stored(local.replace(tzinfo=rule.tz))


async def detach(session: AsyncSession, activity: Activity, origin: str) -> None:
    """Make an occurrence a single activity of its own: its series leaves its date out."""
    found = await series_of(session, activity)
    moment = _original_moment(found, activity)
    found.exdates = sorted({*(found.exdates or []), recurrence.stored(moment)})
    found.updated_at = utcnow()
    activity.series_id = None
    activity.original_start_at = None
    activity.overrides = None
    activity.recurrence = None


# Fields an occurrence shows in a calendar: what it takes back from its series when
# the calendar says it is an ordinary occurrence again.
CALENDAR_FIELDS = (
    "subject", "location", "note", "busy", "visibility", "reminder_minutes", "start", "end",
    "all_day", "timezone", "participants",
)  # fmt: skip


async def follow_series(session: AsyncSession, activity: Activity, origin: str) -> bool:
    """Give an occurrence its series' calendar fields and times again (it is no longer
    changed on its own there); its CRM-only data (done, deal, type ...) stays.
    Answers whether anything changed."""
    found = await series_of(session, activity)
    own = set(activity.overrides or [])
    if not own & set(CALENDAR_FIELDS):
        return False
    rule = rule_of(found)
    for name in ("subject", "location", "note", "busy", "visibility", "reminder_minutes"):
        setattr(activity, name, getattr(found, name))
    for name, value in _times_at(found, rule, _original_moment(found, activity)).items():
        setattr(activity, name, value)
    activity.timezone = found.timezone
    _same_people(activity, found)
    activity.overrides = sorted(own - set(CALENDAR_FIELDS)) or None
    activity.updated_at = utcnow()
    await session.flush()
    await changefeed.record_change(session, activity, changefeed.UPDATED, origin)
    return True


def leave_out(series: ActivitySeries, moment: Moment) -> None:
    """Add ``moment`` to the series' left-out dates (one no occurrence stands for yet:
    beyond the horizon)."""
    series.exdates = sorted({*(series.exdates or []), recurrence.stored(moment)})
    series.updated_at = utcnow()


def take_back(series: ActivitySeries, moment: Moment) -> None:
    """Take ``moment`` out of the series' left-out dates."""
    stored = recurrence.stored(moment)
    series.exdates = [v for v in series.exdates or [] if v != stored]
    series.updated_at = utcnow()


# --- deleting and restoring ------------------------------------------------------------


async def delete_occurrences(
    session: AsyncSession, activity: Activity, scope: Scope, origin: str
) -> None:
    """Trash ``activity`` (an occurrence) and, per ``scope``, the ones after it or its
    whole series; the series' rule and EXDATEs say the same."""
    series = await series_of(session, activity)
    now = utcnow()
    rule = rule_of(series)
    moment = _original_moment(series, activity)
    if scope == "following" and rule.instant(moment) <= rule.instant(rule.first):
        scope = "series"
    if scope == "this":
        series.exdates = sorted({*(series.exdates or []), recurrence.stored(moment)})
        trashed = [activity] if activity.deleted_at is None else []
    elif scope == "following":
        series.rrule = _rule_ending_before(series, moment)
        trashed = await _live(session, series, since=rule.instant(moment))
        await session.execute(
            update(Activity)
            .where(Activity.series_id == series.id)
            .values(recurrence=series.rrule)
            .execution_options(synchronize_session=False)
        )
        for kept in await _live(session, series):
            kept.recurrence = series.rrule
    else:
        series.deleted_at = now
        trashed = await _live(session, series)
    series.updated_at = now
    for item in trashed:
        item.deleted_at = now
    await session.flush()
    if trashed:
        await changefeed.record_changes(session, trashed, changefeed.DELETED, origin)


async def restore_occurrence(session: AsyncSession, activity: Activity, origin: str) -> None:
    """Bring an occurrence back from the trash: into its series' dates again, and with
    its series (and the occurrences deleted with it) when the series was deleted."""
    series = await series_of(session, activity)
    rule = rule_of(series)
    moment = _original_moment(series, activity)
    now = utcnow()
    if series.deleted_at is not None:
        with_it = list(
            await session.scalars(
                select(Activity).where(
                    Activity.series_id == series.id,
                    Activity.deleted_at == series.deleted_at,
                    Activity.id != activity.id,
                )
            )
        )
        series.deleted_at = None
        for item in with_it:
            item.deleted_at, item.updated_at = None, now
        if with_it:
            await changefeed.record_changes(session, with_it, changefeed.RESTORED, origin)
    stored = recurrence.stored(moment)
    exdates = [v for v in series.exdates or [] if v != stored]
    instant = rule.instant(moment)
    if not replace(rule, exdates=()).starts(instant, instant + dt.timedelta(seconds=1), 1):
        raise Conflict(
            f"activity {activity.id} is no longer in its series' dates: the rule ends before it"
        )
    series.exdates = exdates
    series.updated_at = now


# --- the API's view ----------------------------------------------------------------------


def to_out(found: ActivitySeries, viewer: User) -> SeriesOut:
    """The series as ``viewer`` may see it: someone else's private one is a busy block."""
    from crmcal.crm.activities import BUSY_PLACEHOLDER

    tz = times.zone(found.timezone)

    def shown(text: str) -> str:
        moment = recurrence.loaded(text)
        return times.format_instant(moment, tz) if isinstance(moment, dt.datetime) else text

    if found.all_day:
        start = found.start_date.isoformat() if found.start_date else ""
        end = found.end_date.isoformat() if found.end_date else None
    else:
        start = times.format_instant(found.start_at, tz)
        end = times.format_instant(found.end_at, tz) if found.end_at else None
    details = permissions.can_see_details(viewer, found)
    return SeriesOut(
        id=found.id,
        recurrence=found.rrule,
        exdates=[shown(v) for v in found.exdates or []],
        rdates=[shown(v) for v in found.rdates or []],
        type=found.type,
        subject=found.subject if details else BUSY_PLACEHOLDER,
        start=start,
        end=end,
        all_day=found.all_day,
        timezone=found.timezone,
        location=found.location if details else None,
        note=found.note if details else None,
        busy=found.busy,
        visibility=found.visibility,
        owner_id=found.owner_id,
        participants=[SeriesParticipantOut(**p) for p in found.participants or []]
        if details
        else [],
        deal_id=found.deal_id if details else None,
        person_id=found.person_id if details else None,
        organization_id=found.organization_id if details else None,
        reminder_minutes=found.reminder_minutes,
        notify_participants=found.notify_participants,
        occurrences_until=found.materialised_until,
        created_at=found.created_at,
        updated_at=found.updated_at,
        deleted_at=found.deleted_at,
    )
