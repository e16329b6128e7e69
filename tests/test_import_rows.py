"""What a first import writes does not depend on how it is batched.

The same realistic calendar (a time zone, invitations with attendees shared between
events, attendees who are already persons, all-day events, weekly series with a date
left out, an event with its UID twice) imported in the engine's batches, and one
event per transaction the plain way (SQLAlchemy's own INSERTs, every activity read
back for its link): the very same rows in every table the import writes —
activities, participants, persons (each e-mail once), series, the change feed and
the links with what they remember of both sides.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import delete, select

from crmcal import bulk
from crmcal.crm import activities, contacts
from crmcal.crm.tables import (
    Activity,
    ActivityChange,
    ActivitySeries,
    Participant,
    Person,
    User,
)
from crmcal.db import Database
from crmcal.model import Attendee, CalendarEvent, Recurrence
from crmcal.sync import engine as engine_module
from crmcal.sync import import_fields
from crmcal.sync.mapping import derived_uid
from crmcal.sync.tables import Connection, Link
from tests.engine_world import World, at
from tests.memory_provider import MemoryCalendar, PartsProvider

# Each a different instant's column values, where the one written later differs only
# by the moment it was written.
WRITTEN_AT = ("created_at", "updated_at", "changed_at", "last_synced_at", "materialised_until")


def calendar() -> MemoryCalendar:
    made = MemoryCalendar()
    start = at(0).replace(minute=0)
    for n in range(30):
        when = start + dt.timedelta(hours=5 * n)
        guests = tuple(
            Attendee(email=f"guest{(n + k) % 7}@customer.example", name=f"Guest {(n + k) % 7}",
                     status="accepted" if k else "needs_action")
            for k in range(n % 4)
        ) + ((Attendee(email="known@customer.example"),) if n % 5 == 0 else ())  # fmt: skip
        fields: dict[str, Any] = {
            "summary": f"Review {n}", "location": f"Room {n % 3}" if n % 2 else None,
            "description": f"Deal #{n}" if n % 3 else None, "attendees": guests,
            "organizer": f"olga{n % 2}@partner.example" if guests else None,
            "uid": "twice@example" if n in (3, 4) else f"e{n}@example",
            "reminder_minutes": 15 if n % 4 == 1 else None, "busy": n % 6 != 5,
        }  # fmt: skip
        if n % 8 == 7:
            day = when.date()
            made.put(f"e{n}", CalendarEvent(start=day, end=day + dt.timedelta(days=1),
                                            all_day=True, **fields))  # fmt: skip
            continue
        if n % 6 == 0:
            fields["recurrence"] = Recurrence(
                "FREQ=WEEKLY;COUNT=6", exdates=(when + dt.timedelta(weeks=2),)
            )
        made.put(f"e{n}", CalendarEvent(start=when, end=when + dt.timedelta(minutes=45),
                                        timezone="Europe/Berlin", **fields))  # fmt: skip
    return made


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    made = Database(db_url)
    try:
        yield made
    finally:
        await made.dispose()


async def import_once(db: Database, batch: int, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The same user's first import of the calendar in batches of ``batch``; what it
    wrote, named by what does not depend on ids or on when it ran; then the CRM is
    emptied again."""
    monkeypatch.setattr(engine_module, "IMPORT_BATCH", batch)
    world = World(db, calendar())
    async with db.read() as session:
        world.user_id = await session.scalar(select(User.id)) or 0
    world.provider = PartsProvider(world.calendar, part_size=1000)  # a kind that syncs series
    await world.setup()
    async with db.write() as session:
        user = await world.user(session)
        # Someone already in the CRM: matched, not made again.
        await contacts.persons_for_emails(session, {"known@customer.example": "Known"})
    report = await world.sync()
    assert (report.created, report.problems) == (30, []), report.problems
    found = await written(db)
    async with db.write() as session:
        for model in (Link, ActivityChange, Participant, Activity, ActivitySeries, Person):
            await session.execute(delete(model))
        await session.execute(delete(Connection).where(Connection.user_id == user.id))
    return found


def plain(row: Any, *leave_out: str) -> dict[str, Any]:
    values = {c.key: getattr(row, c.key) for c in row.__table__.columns}
    for name in ("id", *WRITTEN_AT, *leave_out):
        values.pop(name, None)
    return values


async def written(db: Database) -> dict[str, Any]:
    async with db.read() as session:
        persons = {p.id: p for p in await session.scalars(select(Person))}
        series = {s.id: s for s in await session.scalars(select(ActivitySeries))}
        acts = {a.id: a for a in await session.scalars(select(Activity))}

        links = list(await session.scalars(select(Link)))
        linked = {link.activity_id: link for link in links}

        def key(activity_id: int) -> Any:
            """A single activity by its event's id, an occurrence by its series and
            moment."""
            activity = acts[activity_id]
            if activity.series_id is None:
                return linked[activity_id].remote_id
            return (series[activity.series_id].uid, activity.original_start_at)

        def person(person_id: int | None) -> str | None:
            return None if person_id is None else persons[person_id].email

        participants: dict[Any, list[Any]] = {}
        for p in await session.scalars(select(Participant).order_by(Participant.position)):
            participants.setdefault(key(p.activity_id), []).append(
                (p.position, p.email, p.name, person(p.person_id), p.status)
            )
        activity_rows = {}
        for activity in acts.values():
            row = plain(activity, "series_id", "person_id")
            if activity.series_id is not None:
                row.pop("uid")  # an occurrence's own is random
                row["series"] = series[activity.series_id].uid
            elif row["uid"] != derived_uid(activity.owner_id, linked[activity.id].remote_uid or ""):
                row["uid"] = "its own"  # the copy of an event whose UID came before
            row["person"] = person(activity.person_id)
            row["participants"] = participants.get(key(activity.id), [])
            activity_rows[key(activity.id)] = row
        series_rows = {}
        for made in series.values():
            row = plain(made, "person_id")
            row["participants"] = [{**p, "person_id": person(p.get("person_id"))}
                                   for p in made.participants]  # fmt: skip
            series_rows[made.uid] = row
        changes = Counter(
            (key(c.activity_id), c.kind, c.origin.split(":")[0])  # not the connection's id
            for c in await session.scalars(select(ActivityChange))
        )
        link_rows = {
            link.remote_id: {**plain(link, "connection_id", "activity_id"),
                             "activity": key(link.activity_id)}
            for link in links
        }  # fmt: skip
        return {
            "persons": sorted((p.email, p.name, p.explicit) for p in persons.values()),
            "activities": activity_rows,
            "series": series_rows,
            "changes": changes,
            "links": link_rows,
        }


def the_plain_way(monkeypatch: pytest.MonkeyPatch) -> None:
    """The writes as the CRM makes them one at a time: every row through SQLAlchemy's
    own INSERT (ids asked back), every activity read back from the database."""
    write = activities.write_activities

    async def read_back(session: Any, *args: Any, **kwargs: Any) -> list[activities.Written]:
        ids = [one.id for one in await write(session, *args, **kwargs)]
        return [read(activity) for activity in await activities.load_in_order(session, ids)]

    def read(activity: Activity) -> activities.Written:
        row = {c.key: getattr(activity, c.key) for c in Activity.__table__.columns}
        people = [{"position": p.position, "email": p.email, "name": p.name,
                   "person_id": p.person_id, "status": p.status}
                  for p in activity.participants]  # fmt: skip
        return activities.Written(row.pop("id"), row, people)

    monkeypatch.setattr(bulk, "_direct", lambda *_: False)
    monkeypatch.setattr(activities, "write_activities", read_back)


async def test_a_first_import_writes_the_same_rows_in_batches_as_one_by_one(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    batched = await import_once(db, engine_module.IMPORT_BATCH, monkeypatch)
    the_plain_way(monkeypatch)
    one_by_one = await import_once(db, 1, monkeypatch)
    assert len(batched["series"]) == 5
    assert len(batched["activities"]) == 25 + 5 * 5  # a date of each series left out
    assert len(batched["links"]) == 30
    assert [p for p in batched["persons"] if p[0].startswith("known")] == [
        ("known@customer.example", "Known", False)
    ]
    for table in ("persons", "activities", "series", "changes", "links"):
        assert batched[table] == one_by_one[table], table


async def test_the_crm_side_of_a_new_link_computed_with_its_event_is_the_written_ones(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a new event's link keeps of the CRM's side (a single event's digests, a plain
    series' first occurrence and units) is computed where the event is parsed
    (``NewLinkHashes``), for its participants named as its attendees are: the same
    links as computed from the activities written, and where a nameless attendee took
    the name of the person already in the CRM, computed from those."""
    for_written = import_fields.NewLinkHashes.for_written
    taken: dict[str, bool] = {}

    def counted(self: import_fields.NewLinkHashes, written: activities.Written) -> Any:
        found = for_written(self, written)
        taken[written.row["subject"]] = found is not None
        return found

    monkeypatch.setattr(import_fields.NewLinkHashes, "for_written", counted)
    ahead = await import_once(db, engine_module.IMPORT_BATCH, monkeypatch)
    # Singles and series alike (every sixth event is a series); those with the known
    # person: not.
    assert taken == {f"Review {n}": n % 5 != 0 for n in range(30)}
    monkeypatch.setattr(import_fields, "_link_hashes", lambda *_: None)
    monkeypatch.setattr(import_fields, "_new_series", lambda _, data, *__: (data, None))
    taken.clear()
    written_first = await import_once(db, engine_module.IMPORT_BATCH, monkeypatch)
    assert taken == {}
    for table in ("persons", "activities", "series", "changes", "links"):
        assert ahead[table] == written_first[table], table
