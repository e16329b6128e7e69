"""Activities: create, change, trash and restore them, list them as a viewer may see them.

Every change appends to the change feed in the same transaction (see changefeed).
Permission and visibility rules (F6, F9) are enforced here so that the REST API,
the CLI and the sync engine all obey the same ones.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, NamedTuple, cast

from sqlalchemy import and_, delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import make_transient_to_detached
from sqlalchemy.orm.instrumentation import manager_of_class

from crmcal import bulk
from crmcal.crm import activity_types, changefeed, contacts, permissions, series, times
from crmcal.crm.errors import Conflict, Forbidden, Invalid, NotFound
from crmcal.crm.pagination import decode_start_cursor, encode_start_cursor
from crmcal.crm.schemas import (
    ActivityCreate,
    ActivityOut,
    ActivityUpdate,
    ParticipantIn,
    ParticipantOut,
    Scope,
)
from crmcal.crm.tables import Activity, Participant, User, UTCDateTime, table_of, utcnow

BUSY_PLACEHOLDER = "Busy"
REQUIRED_FIELDS = ("type", "subject", "start", "all_day", "timezone", "done", "busy", "visibility")
_TIME_FIELDS = ("start", "end", "all_day", "timezone")
# What the calendar owns of a meeting the owner was invited to: only its organizer
# changes these. The rest (type, done, deal, person, organization, the note, who in
# the CRM sees it) is the CRM's own and stays editable.
CALENDAR_OWNED = ("subject", "start", "end", "all_day", "timezone", "location", "busy",
                  "reminder_minutes", "participants", "recurrence")  # fmt: skip
# A participant as a new activity's input names one: its e-mail, name, person's id and
# answer (``ParticipantIn``'s values, as a plain tuple: cheap to send between processes).
GivenParticipant = tuple[str | None, str | None, int | None, str | None]
_PLAIN_FIELDS = (
    "subject", "location", "note", "done", "busy", "visibility", "deal_id", "person_id",
    "organization_id", "reminder_minutes", "notify_participants",
)  # fmt: skip


@dataclass(frozen=True)
class ActivityFilter:
    start_from: str | None = None
    start_to: str | None = None
    type: str | None = None
    owner_id: int | None = None
    deleted: bool = False
    done: bool | None = None
    series_id: int | None = None


# --- reading ---------------------------------------------------------------


def _refuse_unveiling(actor: User, activity: Activity, changes: dict[str, Any]) -> None:
    """Privacy is the owner's: an admin may not make someone's private activity visible
    to everyone, nor hand it to another user (who would then see it)."""
    if activity.visibility != "owner" or activity.owner_id == actor.id:
        return
    unveiled = changes.get("visibility") not in (None, "owner")
    handed = changes.get("owner_id") not in (None, activity.owner_id)
    if unveiled or handed:
        raise Forbidden(
            "only its owner may make a private activity visible or give it to someone else"
        )


def to_out(activity: Activity, viewer: User) -> ActivityOut:
    """The activity as ``viewer`` may see it: someone else's private one is a busy block."""
    tz = times.zone(activity.timezone)
    if activity.all_day:
        start = activity.start_date.isoformat() if activity.start_date else ""
        end = activity.end_date.isoformat() if activity.end_date else None
    else:
        start = times.format_instant(activity.start_at, tz)
        end = times.format_instant(activity.end_at, tz) if activity.end_at else None
    details = permissions.can_see_details(viewer, activity)
    return ActivityOut(
        id=activity.id,
        type=activity.type,
        subject=activity.subject if details else BUSY_PLACEHOLDER,
        start=start,
        end=end,
        all_day=activity.all_day,
        timezone=activity.timezone,
        location=activity.location if details else None,
        note=activity.note if details else None,
        done=activity.done,
        busy=activity.busy,
        visibility=activity.visibility,
        owner_id=activity.owner_id,
        participants=[
            ParticipantOut(email=p.email, name=p.name, person_id=p.person_id, status=p.status)
            for p in activity.participants
        ]
        if details
        else [],
        deal_id=activity.deal_id if details else None,
        person_id=activity.person_id if details else None,
        organization_id=activity.organization_id if details else None,
        reminder_minutes=activity.reminder_minutes,
        notify_participants=activity.notify_participants,
        recurrence=activity.recurrence,
        series_id=activity.series_id,
        original_start=_original_start(activity, tz),
        organizer=activity.organizer if details else None,
        created_at=activity.created_at,
        updated_at=activity.updated_at,
        deleted_at=activity.deleted_at,
    )


def _original_start(activity: Activity, tz: Any) -> str | None:
    """Where its series' rule puts an occurrence, written like its start."""
    if activity.original_start_at is None:
        return None
    if activity.all_day:
        return activity.original_start_at.astimezone(tz).date().isoformat()
    return times.format_instant(activity.original_start_at, tz)


async def load(session: AsyncSession, activity_id: int) -> Activity:
    found = await session.get(Activity, activity_id)
    if found is None:
        raise NotFound(f"activity {activity_id} not found")
    return found


class FoundUid(NamedTuple):
    """An activity found by its uid: what an import needs of it."""

    id: int
    uid: str


# Uids per statement when looking them up: far below any backend's limit on parameters.
UID_CHUNK = 1000


async def find_by_uids(session: AsyncSession, owner_id: int, uids: list[str]) -> list[FoundUid]:
    """The owner's activities (trashed ones too) with these uids, by id and uid.

    Asked by uid alone, the owner checked on what comes back: a uid is unique, so the
    database looks each one up in its index, where with the owner in the query SQLite
    walked all of the owner's activities (their index looked the narrower one), once
    for each batch of an import: its cost grew with every batch written.

    An import asks this of every part of its listing and every batch, hundreds to
    thousands of uids each time, and what it needs is their ids: on SQLite the
    statement goes to the driver as written, its uids as they are, where SQLAlchemy
    built an IN list's parameters value by value and an ORM object for each activity
    found (the statement and its expansion cost the event loop more than SQLite its
    lookups)."""
    found: list[FoundUid] = []
    connection = await session.connection()
    for start in range(0, len(uids), UID_CHUNK):
        chunk = uids[start : start + UID_CHUNK]
        if connection.dialect.name == "sqlite":
            marks = ", ".join("?" * len(chunk))
            rows: Any = await connection.exec_driver_sql(
                f"SELECT id, uid, owner_id FROM activities WHERE uid IN ({marks})",  # noqa: S608
                tuple(chunk),
            )
        else:
            query = select(Activity.id, Activity.uid, Activity.owner_id)
            rows = await session.execute(query.where(Activity.uid.in_(chunk)))
        found += [FoundUid(n, uid) for n, uid, owner in rows if owner == owner_id]
    return found


async def get_activity(session: AsyncSession, viewer: User, activity_id: int) -> Activity:
    permissions.require(viewer, permissions.ACTIVITIES_VIEW)
    found = await load(session, activity_id)
    if found.deleted_at is not None and found.owner_id != viewer.id and not viewer.is_admin:
        raise NotFound(f"activity {activity_id} not found")
    return found


async def list_activities(
    session: AsyncSession, viewer: User, flt: ActivityFilter, *, limit: int, cursor: str | None
) -> tuple[list[Activity], str | None]:
    """A page of activities ordered by start, then id."""
    permissions.require(viewer, permissions.ACTIVITIES_VIEW)
    tz = times.zone(viewer.timezone)
    query = select(Activity)
    if flt.deleted:
        query = query.where(Activity.deleted_at.is_not(None))
        if not viewer.is_admin:  # the trash of others is theirs to manage
            query = query.where(Activity.owner_id == viewer.id)
    else:
        query = query.where(Activity.deleted_at.is_(None))
    if flt.start_from:
        query = query.where(
            Activity.start_at >= times.parse_instant("start_from", flt.start_from, tz)
        )
    if flt.start_to:
        if times.is_date(flt.start_to):  # a date includes its whole day
            day = times.parse_date("start_to", flt.start_to)
            query = query.where(Activity.start_at < times.midnight_utc(day + dt.timedelta(1), tz))
        else:
            query = query.where(
                Activity.start_at <= times.parse_datetime("start_to", flt.start_to, tz)
            )
    if flt.type:
        query = query.where(Activity.type == flt.type)
    if flt.owner_id:
        query = query.where(Activity.owner_id == flt.owner_id)
    if flt.done is not None:
        query = query.where(Activity.done == flt.done)
    if flt.series_id:
        query = query.where(Activity.series_id == flt.series_id)
    if cursor:
        after_start, after_id = decode_start_cursor(cursor)
        query = query.where(
            or_(
                Activity.start_at > after_start,
                and_(Activity.start_at == after_start, Activity.id > after_id),
            )
        )
    rows = list(
        await session.scalars(query.order_by(Activity.start_at, Activity.id).limit(limit + 1))
    )
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_start_cursor(rows[-1].start_at, rows[-1].id) if more else None
    return rows, next_cursor


# --- writing ---------------------------------------------------------------


def _resolve_times(values: dict[str, Any]) -> dict[str, Any]:
    """Columns for start/end from the textual fields, with the checks a person expects."""
    tz = times.zone(values["timezone"])
    start, end = values["start"], values.get("end")
    if values["all_day"]:
        start_date = times.parse_date("start", start, tz)
        end_date = (
            times.parse_date("end", end, tz, end=True) if end else start_date + dt.timedelta(days=1)
        )
        if end_date == start_date:
            # An end on its start's day reads as that one day, not as no day at all.
            end_date = start_date + dt.timedelta(days=1)
        if end_date < start_date:
            raise Invalid("end: must be after start (an all-day end date is exclusive)")
        return {
            "start_at": times.midnight_utc(start_date, tz),
            "end_at": times.midnight_utc(end_date, tz),
            "start_date": start_date,
            "end_date": end_date,
        }
    start_at = times.parse_datetime("start", start, tz)
    end_at = times.parse_datetime("end", end, tz) if end else None
    if end_at is not None and end_at < start_at:
        raise Invalid("end: must not be before start")
    return {"start_at": start_at, "end_at": end_at, "start_date": None, "end_date": None}


def _recurrence(values: dict[str, Any], resolved: dict[str, Any]) -> str | None:
    rule = values.get("recurrence")
    if not rule:
        return None
    if values["all_day"]:
        dtstart = dt.datetime.combine(resolved["start_date"], dt.time())
    else:
        dtstart = resolved["start_at"]
    return times.normalise_rrule(rule, dtstart)


async def _participants(
    session: AsyncSession,
    lists: Sequence[Sequence[ParticipantIn | GivenParticipant]],
    *,
    as_contacts: bool = True,
    viewer: User | None = None,
) -> list[list[dict[str, Any]]]:
    """Participant rows linked to persons: by id, or by e-mail (creating the persons that
    are new) unless ``as_contacts`` is off, which keeps e-mail-only participants plain.

    For many activities at once, so that an import looks persons up in one query; the
    persons named by id are looked up together too (a calendar's edit of an activity
    names every participant already linked by its person's id).
    """
    given_lists = [[_given(p) for p in given] for given in lists]
    wanted = {
        email: name
        for given in given_lists
        for email, name, person_id, _ in given
        if person_id is None and email and as_contacts
    }
    by_email = await contacts.persons_for_emails(session, wanted)
    named = {pid for given in given_lists for _, _, pid, _ in given if pid is not None}
    by_id = await contacts.visible_by_ids(session, named, viewer) if named else {}
    result = []
    for given in given_lists:
        made = []
        for position, (email, name, person_id, status) in enumerate(given):
            if person_id is not None:
                person = by_id.get(person_id)
                if person is None:  # a record the body names is missing: a clash, not a 404
                    raise Conflict(
                        f"participants.{position}.person_id: no person with id {person_id}"
                    )
                email = email or person.email
                name = name or person.name
            elif email is not None and as_contacts:
                matched = by_email[email]
                person_id = matched.id
                name = name or matched.name
            made.append(participant_row(position, email, name, person_id, status))
        result.append(made)
    return result


def participant_row(
    position: int, email: str | None, name: str | None, person_id: int | None, status: str | None
) -> dict[str, Any]:
    """A participant row as ``create_activities`` writes it."""
    return {"position": position, "email": email, "name": name, "person_id": person_id,
            "status": status or "needs_action"}  # fmt: skip


def participants_as_given(given: Sequence[GivenParticipant]) -> list[dict[str, Any]]:
    """The participant rows ``create_activities`` writes for ``given`` (e-mails, no
    person ids) where it names each participant as given: what it writes unless a
    participant given without a name takes that of the person its e-mail matched."""
    return [participant_row(n, email, name, None, status)
            for n, (email, name, _, status) in enumerate(given)]  # fmt: skip


def _given(participant: ParticipantIn | GivenParticipant) -> GivenParticipant:
    if isinstance(participant, tuple):
        return participant
    return (participant.email, participant.name, participant.person_id, participant.status)


def _as_input(activity: Activity) -> dict[str, Any]:
    """The activity's current fields in the shape the API accepts."""
    tz = times.zone(activity.timezone)
    if activity.all_day:
        start = activity.start_date.isoformat() if activity.start_date else None
        end = activity.end_date.isoformat() if activity.end_date else None
    else:
        start = times.format_instant(activity.start_at, tz)
        end = times.format_instant(activity.end_at, tz) if activity.end_at else None
    values = {name: getattr(activity, name) for name in _PLAIN_FIELDS}
    values.update(
        type=activity.type, start=start, end=end, all_day=activity.all_day,
        timezone=activity.timezone, recurrence=activity.recurrence,
    )  # fmt: skip
    return values


def _switch_all_day(current: Activity, values: dict[str, Any], changes: dict[str, Any]) -> None:
    """Turning all-day on or off without new times keeps the day and time the activity had."""
    if "all_day" not in changes or changes["all_day"] == current.all_day:
        return
    tz = times.zone(values["timezone"])
    if "start" not in changes:
        local = current.start_at.astimezone(tz)
        values["start"] = local.date().isoformat() if values["all_day"] else local.isoformat()
    if "end" not in changes:
        values["end"] = None


async def _columns(
    session: AsyncSession,
    values: dict[str, Any],
    current_type: str | None,
    usable_types: set[str],
    viewer: User | None = None,
) -> dict[str, Any]:
    """The columns ``values`` (in the API's shape) set, checked as a person expects.

    An existing activity may keep a deactivated type (``current_type``);
    ``usable_types`` caches that check across a batch.
    """
    resolved = _resolve_times(values)
    resolved["recurrence"] = _recurrence(values, resolved)
    if values["type"] != current_type and values["type"] not in usable_types:
        await activity_types.require_usable(session, values["type"])
        usable_types.add(values["type"])
    links = {k: values.get(k) for k in ("deal_id", "person_id", "organization_id")}
    if any(v is not None for v in links.values()):
        await contacts.check_links(session, links, viewer)
    columns = {name: values[name] for name in _PLAIN_FIELDS}
    columns.update(type=values["type"], all_day=values["all_day"], timezone=values["timezone"])
    columns.update(resolved)
    return columns


async def check_master_fields(
    session: AsyncSession,
    values: dict[str, Any],
    current_type: str | None,
    viewer: User | None = None,
) -> None:
    """The checks ``_columns`` makes of a type and of linked records, for a series edit."""
    for name in ("type", "subject", "busy", "visibility", "notify_participants"):
        if name in values and values[name] is None:
            raise Invalid(f"{name} cannot be null")
    if "type" in values and values["type"] != current_type:
        await activity_types.require_usable(session, values["type"])
    links = {k: values.get(k) for k in ("deal_id", "person_id", "organization_id")}
    if any(v is not None for v in links.values()):
        await contacts.check_links(session, links, viewer)


async def _apply(
    session: AsyncSession, activity: Activity, values: dict[str, Any], viewer: User | None
) -> None:
    for name, value in (await _columns(session, values, activity.type, set(), viewer)).items():
        setattr(activity, name, value)


async def _other_owner(session: AsyncSession, actor: User, owner_id: int) -> User:
    """The user an admin gives an activity to; only admins act for others."""
    permissions.require_admin(actor)
    owner = await session.get(User, owner_id)
    if owner is None or not owner.active:
        raise Conflict(f"owner_id: no active user with id {owner_id}")
    return owner


async def create_activity(
    session: AsyncSession,
    actor: User,
    data: ActivityCreate,
    *,
    origin: str = "api",
    uid: str | None = None,
    as_contacts: bool = True,
) -> Activity:
    """Create an activity. ``uid`` lets an importer choose a stable identity."""
    (created,) = await create_activities(
        session, actor, [(data, uid)], WriteOptions(origin=origin, as_contacts=as_contacts)
    )
    return created


@dataclass(frozen=True)
class Checked:
    """A new activity's input with every check and reading made that needs no database
    (``check_new``): what ``create_activities`` makes of an ``ActivityCreate`` first,
    and takes in its place. Plain values only, so that an importer can have it made
    where it has a core to spare and sent over as cheaply as a dict; the checks that
    need the database (its type, its linked records, its owner) are made as it is
    written."""

    owner_id: int | None
    # The zone given as the default of an activity written without one (None: it
    # names its own); it must be its owner's.
    zone_default: str | None
    type: str
    columns: dict[str, Any]
    links: dict[str, Any]
    participants: tuple[GivenParticipant, ...]
    exdates: list[str] | None
    rdates: list[str] | None
    # A series' occurrence starts, where computed with the rest (``series.starts_ahead``).
    ahead: series.StartsAhead | None = None


def check_new(data: ActivityCreate, owner_timezone: str, *, from_calendar: bool = False) -> Checked:
    """``data`` checked and read as ``create_activities`` does for an owner of that zone,
    without the database; raises Invalid as it would. ``from_calendar``: the sync
    bringing a calendar's event, whose rule may pair its UNTIL with its start otherwise
    than RFC 5545 wants (read as meant, not refused as a person's rule is)."""
    return check_values(data.model_dump(), owner_timezone, from_calendar=from_calendar)


def check_values(
    values: dict[str, Any], owner_timezone: str, *, from_calendar: bool = False
) -> Checked:
    """``check_new`` of the ``ActivityCreate`` whose ``model_dump()`` is ``values``
    (``schemas.create_values`` makes them without the model); changes ``values``."""
    # The owner's own zone is the natural default for times written without one.
    # Left out, all_day follows the start's form: a date makes an all-day activity.
    defaults = {"all_day": times.is_date(values["start"]), "done": False, "busy": True,
                "visibility": "everyone", "timezone": owner_timezone,
                "notify_participants": False}  # fmt: skip
    zone_default = owner_timezone if values["timezone"] is None else None
    for name, default in defaults.items():
        if values[name] is None:
            values[name] = default
    resolved = _resolve_times(values)
    resolved["recurrence"] = _recurrence(values, resolved)
    if resolved["recurrence"] and not from_calendar:
        times.check_until_form(resolved["recurrence"], values["all_day"])
    columns = {name: values[name] for name in _PLAIN_FIELDS}
    columns.update(type=values["type"], all_day=values["all_day"], timezone=values["timezone"])
    columns.update(resolved)
    return Checked(
        owner_id=values["owner_id"],
        zone_default=zone_default,
        type=values["type"],
        columns=columns,
        links={k: values.get(k) for k in ("deal_id", "person_id", "organization_id")},
        participants=tuple(
            (p["email"], p["name"], p["person_id"], p["status"])
            for p in values["participants"] or ()
        ),
        exdates=values["exdates"],
        rdates=values["rdates"],
    )


async def _checked_columns(
    session: AsyncSession, checked: Checked, usable_types: set[str], viewer: User
) -> dict[str, Any]:
    """The columns of a new activity, with the checks ``check_new`` left for the
    database (as ``_columns`` makes them, ``usable_types`` caching the type's)."""
    if checked.type not in usable_types:
        await activity_types.require_usable(session, checked.type)
        usable_types.add(checked.type)
    if any(v is not None for v in checked.links.values()):
        await contacts.check_links(session, checked.links, viewer)
    return checked.columns  # copied into the row by new_row


def new_row(
    columns: dict[str, Any], uid: str, owner_id: int, organizer: str | None, now: dt.datetime
) -> dict[str, Any]:
    """The row of a new activity of ``columns`` (a ``Checked``'s), as
    ``create_activities`` writes it."""
    return {**columns, "uid": uid, "owner_id": owner_id, "series_id": None,
            "organizer": organizer, "created_at": now, "updated_at": now,
            "deleted_at": None}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Written:
    """A new activity as ``write_activities`` wrote it, in plain values: its id, its row
    and its participants' rows (an import's links need little more than its id, and
    thousands of ORM objects cost it more than writing their rows did)."""

    id: int
    row: dict[str, Any]
    participants: list[dict[str, Any]]

    @property
    def series_id(self) -> int | None:
        series_id: int | None = self.row["series_id"]
        return series_id

    def activity(self) -> Activity:
        """The activity as reading it back would answer it (see ``as_written``)."""
        return as_written([self.row], [self.participants], [self.id])[0]


@dataclass(frozen=True, slots=True, kw_only=True)
class WriteOptions:
    """How ``write_activities`` (and ``create_activities`` through it) writes new
    activities. ``origin``: who made them, as the change feed records it;
    ``as_contacts`` off keeps participants given by e-mail as plain addresses (no
    persons made); ``organizers``: for each item, the organizer of someone else's
    meeting (the sync's import of an invitation), else None; ``from_calendar``: the
    sync bringing calendars' events (see ``check_new``)."""

    origin: str = "api"
    as_contacts: bool = True
    organizers: Sequence[str | None] | None = None
    from_calendar: bool = False


async def create_activities(
    session: AsyncSession,
    actor: User,
    items: Sequence[tuple[ActivityCreate | Checked, str | None]],
    options: WriteOptions = WriteOptions(),
) -> list[Activity]:
    """``write_activities``, answering the activities read back from the database (ORM
    objects in the session, for a caller that goes on to change them)."""
    written = await write_activities(session, actor, items, options)
    return await load_in_order(session, [one.id for one in written])


async def write_activities(
    session: AsyncSession,
    actor: User,
    items: Sequence[tuple[ActivityCreate | Checked, str | None]],
    options: WriteOptions = WriteOptions(),
) -> list[Written]:
    """Create several activities in one go (an import): the same checks as one by one,
    with persons, rows and change-feed entries written in batches, as ``options``
    says. Answers the activities as written (a series by its first occurrence), not
    read from the database: for a caller that only reads them."""
    permissions.require(actor, permissions.ACTIVITIES_CREATE)
    owners: dict[int, User] = {actor.id: actor}
    usable_types: set[str] = set()
    now = utcnow()
    rows: list[dict[str, Any]] = []
    checked: list[Checked] = []
    for n, (data, uid) in enumerate(items):
        owner_id = data.owner_id or actor.id
        if owner_id not in owners:
            owners[owner_id] = await _other_owner(session, actor, owner_id)
        owner = owners[owner_id]
        given = (
            data
            if isinstance(data, Checked)
            else check_new(data, owner.timezone, from_calendar=options.from_calendar)
        )
        if given.zone_default not in (None, owner.timezone):
            raise ValueError("an activity checked for an owner of another time zone")
        checked.append(given)
        columns = await _checked_columns(session, given, usable_types, actor)
        organizer = options.organizers[n] if options.organizers else None
        rows.append(new_row(columns, uid or uuid.uuid4().hex, owner.id, organizer, now))
    participants = await _participants(
        session,
        [given.participants for given in checked],
        as_contacts=options.as_contacts,
        viewer=actor,
    )
    single = [i for i, row in enumerate(rows) if not row["recurrence"]]
    made: dict[int, Written] = {}
    if single:
        chosen, people = [rows[i] for i in single], [participants[i] for i in single]
        ids = await _insert_ids(session, chosen, people)
        whose = [row["owner_id"] for row in chosen]
        await changefeed.record_new(session, ids, whose, changefeed.CREATED, options.origin)
        made = {i: Written(n, rows[i], participants[i]) for i, n in zip(single, ids, strict=True)}
    # A rule: a series, answered by its first occurrence; all of them together.
    rules = [i for i in range(len(items)) if i not in made]
    firsts = await series.write_many(
        session,
        [
            series.NewSeries(
                owners[rows[i]["owner_id"]], {k: v for k, v in rows[i].items() if k != "organizer"},
                participants[i], checked[i].exdates, checked[i].rdates, items[i][1],
                rows[i]["organizer"], checked[i].ahead,
            )
            for i in rules
        ],
        origin=options.origin,
    )  # fmt: skip
    made.update(zip(rules, firsts, strict=True))
    return [made[i] for i in range(len(items))]


async def insert_rows(
    session: AsyncSession, rows: list[dict[str, Any]], participants: list[list[dict[str, Any]]]
) -> list[Activity]:
    """Insert ready activity rows (the occurrences of a series) the way an import does."""
    return await _insert_all(session, rows, participants)


async def insert_row_ids(
    session: AsyncSession, rows: list[dict[str, Any]], participants: list[list[dict[str, Any]]]
) -> list[int]:
    """``insert_rows`` without loading the activities back: their ids, in row order
    (an import of many series needs only their first occurrences as objects)."""
    return await _insert_ids(session, rows, participants)


async def load_in_order(session: AsyncSession, ids: list[int]) -> list[Activity]:
    """The activities with these ids (and their participants), in that order."""
    if not ids:
        return []
    loaded = {a.id: a for a in await session.scalars(select(Activity).where(Activity.id.in_(ids)))}
    return [loaded[i] for i in ids]


def as_written(
    rows: list[dict[str, Any]], participants: list[list[dict[str, Any]]], ids: list[int]
) -> list[Activity]:
    """The activities just inserted from ``rows`` (with ``participants``) as ``ids``, as
    the database would answer them, made from the rows instead of read back: an import
    of thousands spent more building objects from what it had just written, and on a
    second query for their participants, than on writing them.

    Every column is set (times in UTC, as read), so nothing is loaded later; the
    activities are detached and their participants are ``WrittenParticipant``s (an
    import's tens of thousands of them cost more as ORM objects than their rows did to
    write): they are for reading (an import's links), never to be added to a session.
    """
    activities = manager_of_class(Activity)
    made = []
    for row, given, activity_id in zip(rows, participants, ids, strict=True):
        activity = activities.new_instance()
        activity.__dict__.update(_written_values(row, activity_id))
        activity.__dict__["participants"] = [
            WrittenParticipant(activity_id, **person) for person in given
        ]
        make_transient_to_detached(activity)
        made.append(activity)
    return made


def read_as_written(
    row: dict[str, Any], participants: list[dict[str, Any]], activity_id: int
) -> Activity:
    """The activity ``as_written`` makes of ``row``, as a plain object holding the same
    attribute values and no ORM state at all: only to be read, attribute by attribute
    (what an importer derives from an activity before writing it, for thousands of
    events, where the ORM's bookkeeping cost more than the reading)."""
    values = _written_values(row, activity_id)
    values["participants"] = [WrittenParticipant(activity_id, **person) for person in participants]
    return cast("Activity", SimpleNamespace(**values))


def _written_values(row: dict[str, Any], activity_id: int) -> dict[str, Any]:
    """Every column of the activity ``row`` makes as ``activity_id``, as read back."""
    keys = tuple(row)
    if keys not in _ABSENT:  # rows are made alike: a few kinds of them
        _ABSENT[keys] = _absent_columns(row)
    values = {**_ABSENT[keys], **row, "id": activity_id}
    for name in _UTC_COLUMNS:
        value = values[name]
        if value is not None and value.tzinfo is not dt.UTC:
            values[name] = value.astimezone(dt.UTC)
    return values


# The columns rows with these keys leave out, as the database fills them.
_ABSENT: dict[tuple[str, ...], dict[str, Any]] = {}


def _absent_columns(row: dict[str, Any]) -> dict[str, Any]:
    """The columns ``row`` leaves out, as the database fills them (their scalar default
    or NULL); one the database would fill by calling a function cannot be known here."""
    found: dict[str, Any] = {}
    for column in table_of(Activity).columns:
        if column.key in row or column.key == "id":
            continue
        default = column.default
        if default is not None and not default.is_scalar:
            raise ValueError(f"{column.key}: made by the database, not known before it is read")
        found[column.key] = default.arg if default is not None else None  # type: ignore[attr-defined]
    return found


_UTC_COLUMNS = tuple(c.key for c in table_of(Activity).columns if isinstance(c.type, UTCDateTime))


class WrittenParticipant:
    """A participant row just written, as ``as_written`` answers it: the attributes of
    a ``Participant`` read back (its own id excepted), without an ORM object's state."""

    __slots__ = ("activity_id", "email", "id", "name", "person_id", "position", "status")

    def __init__(
        self,
        activity_id: int,
        position: int,
        email: str | None = None,
        name: str | None = None,
        person_id: int | None = None,
        status: str = "needs_action",
    ) -> None:
        self.id: int | None = None
        self.activity_id = activity_id
        self.position = position
        self.email = email
        self.name = name
        self.person_id = person_id
        self.status = status


async def _insert_all(
    session: AsyncSession, rows: list[dict[str, Any]], participants: list[list[dict[str, Any]]]
) -> list[Activity]:
    """Insert activity rows and their participants with a few multi-row INSERTs, and
    load what was stored.

    Plain table inserts: an import is thousands of rows, and building ORM objects
    (or the ORM's bulk path) costs more per row than the database does; loading
    the stored rows back is cheaper than both.
    """
    return await load_in_order(session, await _insert_ids(session, rows, participants))


async def _insert_ids(
    session: AsyncSession, rows: list[dict[str, Any]], participants: list[list[dict[str, Any]]]
) -> list[int]:
    ids = await bulk.insert_many_ids(session, table_of(Activity), rows)
    # Each row as it is (the occurrences of a series share theirs), its activity apart.
    people_rows = [person for people in participants for person in people]
    whose = [n for n, people in zip(ids, participants, strict=True) for _ in people]
    if people_rows:
        await bulk.insert_many(session, table_of(Participant), people_rows, {"activity_id": whose})
    return ids


async def update_activity(
    session: AsyncSession,
    actor: User,
    activity_id: int,
    data: ActivityUpdate,
    *,
    origin: str = "api",
    as_contacts: bool = True,
    from_calendar: bool = False,
) -> Activity:
    """Change an activity. ``from_calendar`` is the sync bringing a calendar's version:
    it may change what the calendar owns of someone else's meeting (``organizer``), and
    give a rule whose UNTIL is not in its start's form (see ``check_new``)."""
    permissions.require(actor, permissions.ACTIVITIES_EDIT)
    activity = await load(session, activity_id)
    permissions.require_owner_or_admin(actor, activity, "edit")
    if activity.deleted_at is not None:
        raise Conflict(f"activity {activity_id} is in the trash: restore it first")
    changes = data.model_dump(exclude_unset=True)
    scope = _checked_update(actor, activity, data, changes, from_calendar=from_calendar)
    if activity.series_id is not None and scope != "this":
        return await _update_series(session, actor, activity, data, changes, scope, origin,
                                    as_contacts)  # fmt: skip
    rule_dates = await _rule_dates(session, activity, changes, origin)
    if not changes and not rule_dates:
        # Nothing to change (say, only the rule sent back as it is): nothing is written,
        # and no calendar hears of an edit.
        return activity
    previous_owner = activity.owner_id
    if "owner_id" in changes:
        await _change_owner(session, actor, activity, changes.pop("owner_id"))
    # What an occurrence looked like, to tell the fields this edit really changes (a form
    # sends every field): those stay its own when the whole series is edited.
    before = _as_input(activity) if activity.series_id is not None else None
    people_before = [p.email for p in activity.participants]
    values = {**_as_input(activity), **changes}
    _switch_all_day(activity, values, changes)
    await _apply(session, activity, values, actor)
    if "participants" in changes:
        await _replace_participants(session, actor, activity, data, as_contacts=as_contacts)
    if before is not None:
        _note_own_fields(activity, before, people_before)
    activity.updated_at = utcnow()
    await session.flush()
    if activity.series_id is None and activity.recurrence:
        await series.adopt(session, activity, origin=origin, **rule_dates)
    if previous_owner != activity.owner_id:
        # The previous owner's calendar holds the event: its sync must hear of this.
        await changefeed.record_changes(
            session, [activity], changefeed.UPDATED, origin, owner_id=previous_owner
        )
    await changefeed.record_change(session, activity, changefeed.UPDATED, origin)
    return activity


def _checked_update(
    actor: User,
    activity: Activity,
    data: ActivityUpdate,
    changes: dict[str, Any],
    *,
    from_calendar: bool,
) -> str:
    """Refuse what ``changes`` may not do to ``activity``; answers the edit's scope
    (taken out of ``changes``): "this", "following" or "series"."""
    _refuse_unveiling(actor, activity, changes)
    scope: str = changes.pop("scope", None) or "this"
    for name in (*REQUIRED_FIELDS, "notify_participants"):
        if name in changes and changes[name] is None:
            raise Invalid(f"{name} cannot be null")
    if activity.organizer and not from_calendar:
        _refuse_invitation_edits(activity, data, changes)
    rule = changes.get("recurrence")
    if rule and not from_calendar:
        if _same_rule(activity, rule):
            # A rule sent back as it is stored, however spelt, is that rule: it stays as
            # stored, in whatever form a calendar wrote it.
            changes["recurrence"] = activity.recurrence
        else:
            times.check_until_form(rule, changes.get("all_day", activity.all_day))
    return scope


def _same_rule(activity: Activity, rule: str | None) -> bool:
    """Whether ``rule`` is ``activity``'s own, however a client spelt it (``times.
    same_rule``, read from the activity's start in its zone): a form sends every field
    back, and a client may write the rule it read in another order."""
    if not rule or not activity.recurrence:
        return rule == activity.recurrence
    tz = times.zone(activity.timezone)
    if activity.all_day and activity.start_date is not None:
        dtstart = dt.datetime.combine(activity.start_date, dt.time())
    else:
        dtstart = activity.start_at.astimezone(tz)
    return times.same_rule(rule, activity.recurrence, dtstart, tz)


async def _rule_dates(
    session: AsyncSession, activity: Activity, changes: dict[str, Any], origin: str
) -> dict[str, Any]:
    """The dates left out of or added to the rule (taken out of ``changes``), for a
    single activity that becomes a series. An occurrence whose rule is taken away
    leaves its series; one may not change the series' rule alone."""
    rule_dates: dict[str, Any] = {k: changes.pop(k) for k in ("exdates", "rdates") if k in changes}
    if activity.series_id is not None and "recurrence" in changes and not changes["recurrence"]:
        # No rule for this occurrence: it leaves its series as a single activity.
        await series.detach(session, activity, origin)
    if activity.series_id is not None:
        if "recurrence" in changes and _same_rule(activity, changes["recurrence"]):
            del changes["recurrence"]  # sent back unchanged (a form sends every field)
        if "recurrence" in changes or rule_dates:
            raise Conflict(
                "recurrence: the rule belongs to the whole series: give scope series or following"
            )
    elif rule_dates and not changes.get("recurrence"):
        raise Conflict("exdates: only a recurring activity has dates left out or added")
    return rule_dates


async def _change_owner(
    session: AsyncSession, actor: User, activity: Activity, new_owner: int | None
) -> None:
    """Give ``activity`` to ``new_owner`` (None, or its owner already, is no change)."""
    if new_owner is not None and new_owner != activity.owner_id:
        activity.owner_id = (await _other_owner(session, actor, new_owner)).id


async def _replace_participants(
    session: AsyncSession,
    actor: User,
    activity: Activity,
    data: ActivityUpdate,
    *,
    as_contacts: bool,
) -> None:
    """The participants ``data`` gives, written only when they differ from those the
    activity has: a calendar edit resends them all, most often unchanged."""
    (rows,) = await _participants(
        session, [data.participants or []], as_contacts=as_contacts, viewer=actor
    )
    current = [(p.position, p.email, p.name, p.person_id, p.status)
               for p in activity.participants]  # fmt: skip
    wanted = [(r["position"], r["email"], r["name"], r["person_id"], r["status"])
              for r in rows]  # fmt: skip
    if wanted != current:
        # One DELETE and multi-row INSERTs, where the ORM would insert row by row (on
        # SQLite): a list of a thousand attendees costs a few statements, not a thousand.
        await session.execute(delete(Participant).where(Participant.activity_id == activity.id))
        await bulk.insert_many(
            session, table_of(Participant), [{**row, "activity_id": activity.id} for row in rows]
        )
        await session.refresh(activity, ["participants"])


def _note_own_fields(
    activity: Activity, before: dict[str, Any], people_before: list[str | None]
) -> None:
    """Mark the fields an edit of one occurrence changed (from ``before``) as its own:
    an edit of the whole series leaves them as they are."""
    after = _as_input(activity)
    own = {name for name in after if name != "recurrence" and after[name] != before[name]}
    # Answers to the invitation are the occurrence's own anyway: only other people
    # stop the series' list from applying to it.
    if [p.email for p in activity.participants] != people_before:
        own.add("participants")
    activity.overrides = sorted({*(activity.overrides or []), *own}) or None


def _refuse_invitation_edits(
    activity: Activity, data: ActivityUpdate, changes: dict[str, Any]
) -> None:
    """Refuse changes of what the organizer of an invitation owns (sending the value
    it has already is no change)."""
    current = _as_input(activity)
    current["participants"] = [
        {"email": p.email, "name": p.name, "person_id": p.person_id, "status": p.status}
        for p in activity.participants
    ]
    if "participants" in changes:
        changes = {**changes, "participants": [
            {"email": p.email.lower() if p.email else None, "name": p.name,
             "person_id": p.person_id, "status": p.status or "needs_action"}
            for p in data.participants or []
        ]}  # fmt: skip
        current["participants"] = [
            {**p, "email": p["email"].lower() if p["email"] else None}
            for p in current["participants"]
        ]
    tz = times.zone(activity.timezone)

    def same(name: str, new: Any, old: Any) -> bool:
        moment = name in ("start", "end") and not activity.all_day
        if moment and isinstance(new, str) and isinstance(old, str) and not times.is_date(new):
            return times.parse_datetime(name, new, tz) == times.parse_datetime(name, old, tz)
        return bool(new == old)

    moved = [n for n in CALENDAR_OWNED if n in changes and not same(n, changes[n], current.get(n))]
    if moved:
        raise Conflict(
            f"activity {activity.id} is a meeting organised by {activity.organizer}, who "
            f"owns its {', '.join(moved)}; change those in the calendar (the CRM keeps "
            "its type, done, deal, person, organization, note and visibility)"
        )


async def _update_series(
    session: AsyncSession,
    actor: User,
    activity: Activity,
    data: ActivityUpdate,
    changes: dict[str, Any],
    scope: str,
    origin: str,
    as_contacts: bool,
) -> Activity:
    """An edit of a whole series, or of this occurrence and every later one."""
    if activity.deleted_at is not None:
        raise Conflict(f"activity {activity.id} is in the trash: restore it first")
    if changes.get("owner_id") not in (None, activity.owner_id):
        raise Invalid("owner_id: give a series to someone else one occurrence at a time")
    changes.pop("owner_id", None)
    current = await series.series_of(session, activity)
    if scope == "following":
        current = await series.split(session, current, activity, origin)
    people = None
    if "participants" in changes:
        (people,) = await _participants(
            session, [data.participants or []], as_contacts=as_contacts, viewer=actor
        )
    if "done" in changes:  # done belongs to each occurrence, never to a series
        activity.done = changes.pop("done")
    await series.edit_series(session, current, activity, changes, people, origin, actor)
    await session.refresh(activity)
    return activity


async def delete_activity(
    session: AsyncSession,
    actor: User,
    activity_id: int,
    *,
    origin: str = "api",
    scope: Scope = "this",
) -> Activity:
    """Move the activity to the trash (idempotent); for an occurrence of a series,
    ``scope`` says whether this one, this and every later one, or the whole series."""
    permissions.require(actor, permissions.ACTIVITIES_DELETE)
    activity = await load(session, activity_id)
    permissions.require_owner_or_admin(actor, activity, "delete")
    if activity.series_id is not None and (activity.deleted_at is None or scope != "this"):
        await series.delete_occurrences(session, activity, scope, origin)
        return activity
    if activity.deleted_at is None:
        activity.deleted_at = utcnow()
        await session.flush()
        await changefeed.record_change(session, activity, changefeed.DELETED, origin)
    return activity


async def restore_activity(
    session: AsyncSession, actor: User, activity_id: int, *, origin: str = "api"
) -> Activity:
    permissions.require(actor, permissions.ACTIVITIES_DELETE)
    activity = await load(session, activity_id)
    permissions.require_owner_or_admin(actor, activity, "restore")
    if activity.deleted_at is None:
        raise Conflict(f"activity {activity_id} is not in the trash")
    if activity.series_id is not None:
        await series.restore_occurrence(session, activity, origin)
    activity.deleted_at = None
    activity.updated_at = utcnow()
    await session.flush()
    await changefeed.record_change(session, activity, changefeed.RESTORED, origin)
    return activity
