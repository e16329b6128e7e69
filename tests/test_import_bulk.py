"""A first import writes the CRM in a few multi-row statements per batch, not per event.

Events as calendars hold them (a VTIMEZONE, someone else as organizer, attendees
new to the CRM, an alarm, weekly series, all-day events) are imported from Radicale
by the engine; the database statements are counted with SQLAlchemy's cursor events.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete as sa_delete
from sqlalchemy import event as sa_event
from sqlalchemy import func, inspect, select, text

from crmcal import bulk
from crmcal import db as dbmod
from crmcal.config import Settings
from crmcal.crm import series as series_module
from crmcal.crm.activities import (
    FoundUid,
    WriteOptions,
    check_new,
    create_activities,
    find_by_uids,
    load_in_order,
    write_activities,
)
from crmcal.crm.recurrence import Rule
from crmcal.crm.schemas import MAX_PARTICIPANTS, ActivityCreate, ParticipantIn, UserCreate
from crmcal.crm.tables import (
    Activity,
    ActivityChange,
    ActivitySeries,
    Participant,
    Person,
    User,
)
from crmcal.crm.users import create_user
from crmcal.db import Database
from crmcal.model import CalendarEvent, CalendarInfo
from crmcal.providers import parse_pool
from crmcal.sync import engine, import_fields, mapping, series_units
from crmcal.sync.connections import create
from crmcal.sync.report import SyncReport
from crmcal.sync.runner import run_sync
from crmcal.sync.schemas import ConnectionCreate
from crmcal.sync.tables import Connection, Link
from tests.bulk_import import (  # noqa: F401  # fixture used by name
    Counted,
    calendars,
    import_calendar,
    realistic,
    vault,
)
from tests.conftest import run
from tests.providers.harness import CalDAVHarness, CalDAVServer
from tests.test_import_rows import written

# What these tests' own writes record in the change feed as their origin.
TEST = WriteOptions(origin="test")


async def sync_again(db_url: str, owner_id: int) -> SyncReport:
    report, _ = await sync_again_counted(db_url, owner_id)
    return report


async def sync_again_counted(db_url: str, owner_id: int) -> tuple[SyncReport, Counted]:
    """Another sync of the owner's connection, its statements counted."""
    settings = Settings(database_url=db_url, secret_key="test-key", allow_private_networks=True)
    db = Database(db_url)
    try:
        async with db.read() as session:
            connection_id = await session.scalar(
                select(Connection.id).where(Connection.user_id == owner_id)
            )
        assert connection_id is not None
        counted = Counted(db)
        counted.on = True
        report = await run_sync(db, vault(settings), settings, connection_id)
        counted.on = False
        assert report is not None
        return report, counted
    finally:
        await db.dispose()


async def totals(db_url: str, owner_id: int) -> dict[str, int | None]:
    db = Database(db_url)
    try:
        async with db.read() as session:
            mine = select(Activity.id).where(Activity.owner_id == owner_id)
            return {
                "activities": await session.scalar(
                    select(func.count()).select_from(mine.subquery())
                ),
                "series": await session.scalar(
                    select(func.count(ActivitySeries.id)).where(ActivitySeries.owner_id == owner_id)
                ),
                "invitations": await session.scalar(
                    select(func.count(Activity.id)).where(
                        Activity.owner_id == owner_id, Activity.organizer.is_not(None)
                    )
                ),
                "participants": await session.scalar(
                    select(func.count(Participant.id)).where(Participant.activity_id.in_(mine))
                ),
                "links": await session.scalar(select(func.count(Link.id))),
                "hidden persons": await session.scalar(
                    select(func.count(Person.id)).where(Person.explicit.is_(False))
                ),
            }
    finally:
        await db.dispose()


def test_statements_of_a_first_import_do_not_grow_with_the_calendar(
    db_url: str,
    radicale: CalDAVServer,
    calendars: list[CalDAVHarness],  # noqa: F811
) -> None:
    small_calendar, large_calendar = calendars
    small, small_count, small_owner = run(import_calendar(
        db_url, radicale, small_calendar, [realistic("s", n) for n in range(20)], "s@crm.test",
    ))  # fmt: skip
    large, large_count, large_owner = run(import_calendar(
        db_url, radicale, large_calendar, [realistic("l", n) for n in range(80)], "l@crm.test",
    ))  # fmt: skip
    assert (small.created, small.skipped, small.problems) == (20, 0, [])
    assert (large.created, large.skipped, large.problems) == (80, 0, [])
    # Four times the events (and series, and new persons): the very same statements.
    assert large_count.by_kind == small_count.by_kind
    # What was written is not read back: activities are looked up by uid once a batch
    # and once a part (those the CRM already has), their participants never; and a
    # part none of whose events an activity took reads no activities (the CRM's side,
    # the part's uids, the batch's uids: three).
    assert large_count.by_kind["SELECT activity_participants"] == 0, large_count.by_kind
    assert large_count.by_kind["SELECT activities"] == 3, large_count.by_kind
    assert sum(large_count.by_kind.values()) <= 30, large_count.by_kind
    if db_url.startswith("sqlite"):
        # Nor are the rows' parameters built one by one (persons and series included):
        # four times the rows, the same parameters built by SQLAlchemy.
        assert large_count.params_built == small_count.params_built
        # The change feed's rows are made by the database from the activities' own.
        assert large_count.rows_sent["INSERT activity_changes"] == 2, large_count.rows_sent
        # Nor the calls handed to SQLite's thread, each a queue put and a future woken
        # (a statement takes three or four: its cursor made, run, read, closed): per
        # batch and per part of the listing, never per event.
        small_handed, large_handed = (sum(c.handoffs.values()) for c in (small_count, large_count))
        assert large_handed <= small_handed + 10, (small_count.handoffs, large_count.handoffs)
        assert large_handed <= 200, large_count.handoffs

    # Everything an import makes is there: series with their occurrences, invitations
    # (each occurrence of a series too), participants linked to persons made hidden.
    found = run(totals(db_url, large_owner))
    assert found["series"] == 8
    assert found["activities"] == 72 + 8 * 5
    assert found["invitations"] == found["activities"]
    assert found["participants"] == 2 * found["activities"]
    assert found["hidden persons"] == 2 * 20 + 2 * 80
    assert run(totals(db_url, small_owner))["activities"] == 18 + 2 * 5
    # The links remember both sides as they are: the next sync has nothing to do.
    again = run(sync_again(db_url, large_owner))
    assert (again.counts(), again.problems) == (dict.fromkeys(again.counts(), 0), [])


def test_the_crm_fields_of_a_first_import_are_computed_where_its_events_are_parsed(
    db_url: str,
    radicale: CalDAVServer,
    calendars: list[CalDAVHarness],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each event's fields for the CRM, its checks, uid and organizer come from the parse
    pool's processes with the events (``sync/import_fields``): none is computed here,
    nor is the CRM uid each event claims derived again to pair it, nor what the link of
    an event keeps of the CRM's side (a single event's digests, a series' first
    occurrence and units), nor the units of a calendar series the link of a series
    keeps, nor the starts of a series' occurrences."""
    parse_pool.configure(2)
    here: list[str | None] = []
    computed = import_fields._computed
    derived: list[str] = []
    derive = mapping.derived_uid

    def counted(event: CalendarEvent, importer: import_fields.Importer) -> Any:
        here.append(event.uid)
        return computed(event, importer)

    def derived_here(owner_id: int, event_uid: str) -> str:
        derived.append(event_uid)
        return derive(owner_id, event_uid)

    crm_sides: list[bool] = []
    crm_event = engine.Engine._event_of

    def crm_side_here(self: engine.Engine, activity: Activity) -> CalendarEvent:
        crm_sides.append(activity.series_id is not None)
        return crm_event(self, activity)

    units: list[str | None] = []
    digests_of = series_units._digests_of

    def units_here(event: CalendarEvent, within: Any) -> series_units.Digests:
        units.append(event.crm_id)
        return digests_of(event, within)

    expanded: list[str] = []
    starts = Rule.starts

    def starts_here(self: Rule, *args: Any) -> Any:
        expanded.append(self.rrule)
        return starts(self, *args)

    encoded: list[Any] = []
    dumps = json.dumps

    def encoded_here(value: Any, *args: Any, **kwargs: Any) -> str:
        encoded.append(value)
        return dumps(value, *args, **kwargs)

    # JSON encoded in this process (the statements' plans made again, to call it).
    monkeypatch.setattr(json, "dumps", encoded_here)
    monkeypatch.setattr(bulk, "_PLANS", {})
    monkeypatch.setattr(Rule, "starts", starts_here)
    monkeypatch.setattr(import_fields, "_computed", counted)
    monkeypatch.setattr(mapping, "derived_uid", derived_here)
    monkeypatch.setattr(engine.Engine, "_event_of", crm_side_here)
    monkeypatch.setattr(series_units, "_digests_of", units_here)
    texts = [realistic("p", n) for n in range(80)]
    texts[7] = realistic("p", 7, guests=MAX_PARTICIPANTS + 1)  # refused: reported as ever
    try:
        report, _, owner = run(import_calendar(db_url, radicale, calendars[0], texts, "p@crm.test"))
    finally:
        parse_pool.configure(None)
        parse_pool.shutdown()
    assert (report.created, report.skipped) == (79, 1)
    assert f"at most {MAX_PARTICIPANTS}" in report.problems[0]["reason"]
    assert here == []
    assert derived == []
    assert crm_sides == []
    assert units == []
    # Nor are a series' occurrences counted from its rule again (counted ahead).
    assert expanded == []
    assert run(totals(db_url, owner))["series"] == 8
    # Nor are the links' field digests encoded as JSON here: they come as text.
    stored = run(link_digests(db_url, owner))
    assert len(stored) == 79
    assert not [value for value in encoded if value in stored]


async def link_digests(db_url: str, owner_id: int) -> list[Any]:
    """The field digests the owner's links keep, as read back."""
    db = Database(db_url)
    try:
        async with db.read() as session:
            query = select(Link.field_hashes).join(Connection).where(Connection.user_id == owner_id)
            return list(await session.scalars(query))
    finally:
        await db.dispose()


def test_events_the_crm_refuses_are_skipped_and_the_rest_imported_in_batches(
    db_url: str,
    radicale: CalDAVServer,
    calendars: list[CalDAVHarness],  # noqa: F811
) -> None:
    calendar = calendars[0]
    texts = [realistic("b", n) for n in range(40)]
    # More attendees than an activity takes, and a series whose months never have
    # its day: the CRM refuses both.
    texts[7] = realistic("b", 7, guests=MAX_PARTICIPANTS + 1)
    texts[13] = realistic("b", 13, rule="FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30")
    report, counted, owner = run(import_calendar(db_url, radicale, calendar, texts, "b@crm.test"))
    assert (report.created, report.skipped) == (38, 2)
    reasons = {p["item"].rsplit("/", 1)[-1]: p["reason"] for p in report.problems}
    assert set(reasons) == {"event-7.ics", "event-13.ics"}
    assert f"at most {MAX_PARTICIPANTS}" in reasons["event-7.ics"]
    assert "BYMONTHDAY" in reasons["event-13.ics"]
    found = run(totals(db_url, owner))
    assert found["series"] == 4
    assert found["activities"] == 34 + 4 * 5
    # The refused series is found by halving the batch: a few more transactions, not
    # one per event.
    assert counted.by_kind["INSERT sync_links"] <= 10, counted.by_kind


def test_an_event_of_a_thousand_attendees_costs_a_few_statements_in_and_again(
    db_url: str,
    radicale: CalDAVServer,
    calendars: list[CalDAVHarness],  # noqa: F811
) -> None:
    """A thousand attendees new to the CRM: their persons are matched and made in a few
    statements; when the organizer changes the event, the participants (linked to those
    persons by id) are looked up together too, not one by one."""
    calendar = calendars[0]
    text = realistic("k", 1, guests=1000)
    report, counted, owner = run(import_calendar(db_url, radicale, calendar, [text], "k@crm.test"))
    assert (report.created, report.problems) == (1, [])
    assert sum(counted.by_kind.values()) <= 30, counted.by_kind
    found = run(totals(db_url, owner))
    assert (found["participants"], found["hidden persons"]) == (1000, 1000)
    # One guest declines: the organizer's calendar changes, the CRM takes it in.
    declined = text.replace("PARTSTAT=ACCEPTED", "PARTSTAT=DECLINED", 1)
    run(calendar.put_raw(declined, name="event-0.ics"))
    again, counted = run(sync_again_counted(db_url, owner))
    assert (again.updated, again.problems) == (1, [])
    assert sum(counted.by_kind.values()) <= 30, counted.by_kind
    assert run(totals(db_url, owner))["participants"] == 1000


def test_activities_as_written_are_the_activities_read_back(db_url: str) -> None:
    """What an import computes its links from without reading the rows back is what
    reading them back would give: every column (times in UTC), the participants."""
    zones = ("Europe/Berlin", "America/New_York", "UTC")

    def items(tag: str) -> list[tuple[ActivityCreate, str | None]]:
        made = []
        for n in range(9):
            people = [
                ParticipantIn(email=f"p{n}.{k}@x.example", name=f"P {k}",
                              status="accepted" if k else None)
                for k in range(n % 3)
            ]  # fmt: skip
            data = ActivityCreate(
                type="meeting", subject=f"{tag} {n}", timezone=zones[n % 3],
                start="2027-03-28" if n % 4 == 3 else f"2027-03-28T0{n}:30:00",
                end=None if n % 4 == 3 else f"2027-03-28T0{n}:45:00",
                recurrence="FREQ=WEEKLY;COUNT=3" if n % 3 == 0 else None,
                location="Room" if n % 2 else None, reminder_minutes=15 if n % 2 else None,
                participants=people,
            )  # fmt: skip
            made.append((data, f"{tag}{n:02d}" if n % 2 else None))
        return made

    def columns(activity: Activity) -> dict[str, Any]:
        found = {c.key: getattr(activity, c.key) for c in Activity.__table__.columns}
        found.pop("uid")  # new each time when not given
        found.pop("id")
        for name in ("created_at", "updated_at"):
            found[name] = found[name].tzinfo  # the moment differs, not how it is held
        found["series_id"] = found["series_id"] is not None
        found["participants"] = [(p.position, p.email, p.name, p.person_id is not None,
                                  p.status) for p in activity.participants]  # fmt: skip
        return found

    async def main() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        db = Database(db_url)
        try:
            async with db.write() as session:
                user, _ = await create_user(session, UserCreate(email="w@crm.test", name="W"))
                read = await create_activities(session, user, items("r"), TEST)
                written = [
                    one.activity()
                    for one in await write_activities(session, user, items("w"), TEST)
                ]
                ids = [a.id for a in written]
                # Read, never added to a session: an import's tens of thousands of
                # participants are not built as ORM objects.
                members = [p for a in written for p in a.participants]
                assert members
                assert all(inspect(p, raiseerr=False) is None for p in members)
                wanted = [columns(a) for a in written]
                uids = [a.uid for a in written]
            async with db.read() as session:
                again = await load_in_order(session, ids)
                assert [a.uid for a in again] == uids
                assert len(read) == len(written)
            return [columns(a) for a in again], wanted
        finally:
            await db.dispose()

    stored, written = run(main())
    assert written == stored


def test_activities_found_by_uid_are_the_owner_s_each_looked_up_by_its_uid(db_url: str) -> None:
    """What a batch of an import finds by uid (a copy's uid taken already, an event
    claiming an activity) is the owner's activities with those uids, trashed ones too,
    another owner's never; and SQLite finds each by the uid's index, not by walking all
    of the owner's activities (the index on the owner looks narrower to it), which made
    each batch of a first import read every activity the batches before it wrote."""

    def items(tag: str, n: int) -> list[tuple[ActivityCreate, str | None]]:
        return [
            (ActivityCreate(type="meeting", subject=f"{tag} {k}", timezone="UTC",
                            start=f"2027-03-28T0{k % 9}:30:00"), f"{tag}{k:03d}")
            for k in range(n)
        ]  # fmt: skip

    async def main() -> tuple[list[str], list[str]]:
        db = Database(db_url)
        statements: list[tuple[str, Any]] = []

        def seen(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
            statements.append((statement, parameters))

        try:
            async with db.write() as session:
                owner, _ = await create_user(session, UserCreate(email="o@crm.test", name="O"))
                other, _ = await create_user(session, UserCreate(email="x@crm.test", name="X"))
                mine = await write_activities(session, owner, items("mine", 40), TEST)
                await write_activities(session, other, items("theirs", 3), TEST)
                trashed = await session.get(Activity, mine[1].id)
                assert trashed is not None
                trashed.deleted_at = trashed.created_at
            async with db.read() as session:
                connection = await session.connection()
                sa_event.listen(connection.sync_engine, "before_cursor_execute", seen)
                found = await find_by_uids(
                    session, owner.id, ["mine000", "mine001", "theirs000", "nobody"]
                )
                sa_event.remove(connection.sync_engine, "before_cursor_execute", seen)
                ((asked, parameters),) = [s for s in statements if "FROM activities" in s[0]]
                plan = []
                if connection.dialect.name == "sqlite":
                    explained = f"EXPLAIN QUERY PLAN {asked}"
                    rows = await connection.exec_driver_sql(explained, parameters)
                    plan = [str(row[-1]) for row in rows]
            assert all(type(a) is FoundUid for a in found), found
            assert sorted(a.id for a in found) == sorted([mine[0].id, mine[1].id])
            return sorted(a.uid for a in found), plan
        finally:
            await db.dispose()

    uids, plan = run(main())
    # By id and uid, not as ORM objects (an import needs their ids only).
    assert uids == ["mine000", "mine001"]
    if plan:
        assert not any("ix_activities_owner" in step for step in plan), plan
        assert any("USING INDEX sqlite_autoindex_activities" in step for step in plan), plan


def test_activities_checked_beforehand_are_written_as_their_input_is(db_url: str) -> None:
    """An importer may have the CRM's checks that need no database made elsewhere
    (``check_new``, in the parse pool's processes): the very same rows as the input
    itself; one checked for an owner of another zone is not written."""
    zones = ("Europe/Berlin", None, "UTC")

    def items() -> list[ActivityCreate]:
        made = []
        for n in range(9):
            people = [ParticipantIn(email=f"p{n}.{k}@x.example", name=f"P {k}",
                                    status="accepted" if k else None)
                      for k in range(n % 3)]  # fmt: skip
            made.append(ActivityCreate(
                type="meeting", subject=f"S {n}", timezone=zones[n % 3],
                start="2027-03-28" if n % 4 == 3 else f"2027-03-28T0{n}:30:00",
                end=None if n % 4 == 3 else f"2027-03-28T0{n}:45:00",
                recurrence="FREQ=WEEKLY;COUNT=3" if n % 3 == 0 else None,
                note="Agenda" if n % 2 else None, busy=False if n == 5 else None,
                participants=people,
            ))  # fmt: skip
        return made

    def rows(made: list[Activity]) -> list[dict[str, Any]]:
        found = []
        for activity in made:
            columns = {c.key: getattr(activity, c.key) for c in Activity.__table__.columns}
            for name in ("id", "uid", "owner_id", "series_id", "created_at", "updated_at"):
                columns.pop(name)
            columns["participants"] = [(p.position, p.email, p.name, p.status)
                                       for p in activity.participants]  # fmt: skip
            found.append(columns)
        return found

    async def main() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        db = Database(db_url)
        try:
            async with db.write() as session:
                plain, _ = await create_user(session, UserCreate(email="p@crm.test", name="P"))
                early, _ = await create_user(session, UserCreate(email="e@crm.test", name="E"))
                given = await create_activities(session, plain, [(d, None) for d in items()], TEST)
                checked = await create_activities(
                    session, early, [(check_new(d, early.timezone), None) for d in items()],
                    TEST,
                )  # fmt: skip
                with pytest.raises(ValueError, match="another time zone"):
                    await create_activities(
                        session, early, [(check_new(items()[1], "Asia/Tokyo"), None)]
                    )
                return rows(given), rows(checked)
        finally:
            await db.dispose()

    given, checked = run(main())
    assert checked == given
    assert {row["timezone"] for row in given} == {"Europe/Berlin", "UTC"}


def test_series_an_import_writes_are_the_rows_their_model_makes_without_one_built_each(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``series.create_many`` reads each new series' values as a series object would
    hold them, without building one through the ORM's constructor (its per-attribute
    events cost an import of hundreds of series more than writing them): the rows are
    those the constructor's object gives."""
    zones = ("Europe/Berlin", "America/New_York", "UTC")

    def items() -> list[tuple[ActivityCreate, str | None]]:
        return [
            (ActivityCreate(
                type="meeting", subject=f"S {n}", timezone=zones[n % 3],
                start="2027-03-28" if n % 4 == 3 else f"2027-03-28T0{n}:30:00",
                end=None if n % 4 == 3 else f"2027-03-28T0{n}:45:00",
                recurrence="FREQ=WEEKLY;COUNT=4", exdates=None if n % 2 else [],
                note="Agenda" if n % 2 else None,
                participants=[ParticipantIn(email=f"p{n}.{k}@x.example", name=f"P {k}")
                              for k in range(n % 3)],
            ), None)
            for n in range(6)
        ]  # fmt: skip

    def rows(made: list[ActivitySeries]) -> list[dict[str, Any]]:
        found = []
        for one in made:
            columns = {c.key: getattr(one, c.key) for c in ActivitySeries.__table__.columns}
            for name in ("id", "uid", "owner_id", "created_at", "updated_at"):
                columns.pop(name)
            columns["participants"] = [p["email"] for p in columns["participants"]]
            found.append(columns)
        return found

    async def import_as(email: str) -> list[dict[str, Any]]:
        db = Database(db_url)
        try:
            async with db.write() as session:
                user, _ = await create_user(session, UserCreate(email=email, name="S"))
                await write_activities(session, user, items(), TEST)
            async with db.read() as session:
                query = select(ActivitySeries).where(ActivitySeries.owner_id == user.id)
                return rows(list(await session.scalars(query.order_by(ActivitySeries.id))))
        finally:
            await db.dispose()

    built: list[object] = []

    def count(target: object, *_: Any) -> None:
        built.append(target)

    sa_event.listen(ActivitySeries, "init", count)
    try:
        lean = run(import_as("lean@crm.test"))
        assert built == []
        monkeypatch.setattr(series_module, "_unsaved_series", lambda **v: ActivitySeries(**v))
        constructed = run(import_as("built@crm.test"))
        assert len(built) == 6
    finally:
        sa_event.remove(ActivitySeries, "init", count)
    assert lean == constructed


def test_each_sqlite_connection_keeps_an_import_s_pages_in_its_cache(
    tmp_path: Path, sqlite_template: Path
) -> None:
    """With SQLite's default page cache (2 MiB), a first import read most pages it
    writes again from the file, a system call each (about 73,000 at 5,000 events):
    every connection crmcal opens has a cache that holds such a database."""
    path = tmp_path / "crmcal.db"
    shutil.copy(sqlite_template, path)

    async def sizes() -> list[int]:
        db = Database(f"sqlite:///{path}")
        try:
            async with db.read() as session:
                read = await session.scalar(text("PRAGMA cache_size"))
            async with db.write() as session:
                written = await session.scalar(text("PRAGMA cache_size"))
            return [read, written]
        finally:
            await db.dispose()

    # Negative: a size in KiB. 32 MiB: about 18 MB of database per 5,000 events.
    assert run(sizes()) == [-dbmod.SQLITE_CACHE_KIB, -dbmod.SQLITE_CACHE_KIB]
    assert dbmod.SQLITE_CACHE_KIB >= 32 * 1024


def test_events_the_account_organises_keep_what_the_pool_computed_for_them(
    db_url: str, xandikos: CalDAVServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Most events of a calendar are organised by its user, at an address only the
    server names (``calendar-user-address-set``): whose meeting each is is decided in
    the parse pool's processes, before its CRM fields are computed there, so that none
    is computed again here; the rows written are those of an import parsed here."""
    calendar = CalDAVHarness(xandikos)
    alias = "sam.alias@elsewhere.test"
    assert run(calendar.set_addresses([f"mailto:{alias}"]))
    texts = [
        realistic("o", n).replace(f"mailto:olga.o.{n}@partner.example", f"mailto:{alias}")
        for n in range(80)
    ]
    here: list[str | None] = []
    computed = import_fields._computed

    def counted(event: CalendarEvent, importer: import_fields.Importer) -> Any:
        here.append(event.uid)
        return computed(event, importer)

    monkeypatch.setattr(import_fields, "_computed", counted)
    parse_pool.configure(2)
    try:
        report, _, owner = run(import_calendar(db_url, xandikos, calendar, texts, "o@crm.test"))
        in_pool, computed_here = run(written_rows(db_url)), list(here)
        parse_pool.configure(0)
        again = run(import_again(db_url, xandikos, calendar, owner))
        in_process = run(written_rows(db_url))
    finally:
        parse_pool.configure(None)
        parse_pool.shutdown()
        run(calendar.set_addresses([]))
        run(calendar.close())
    assert (report.created, report.problems) == (80, [])
    assert (again.created, again.problems) == (80, [])
    # Not one an invitation: each organised at the account's own address.
    assert {row["organizer"] for row in in_pool["activities"].values()} == {None}
    # The pool's import computed none here; the one parsed here, every one.
    assert computed_here == []
    assert len(here) == 80
    for table in ("persons", "activities", "series", "changes", "links"):
        assert in_pool[table] == in_process[table], table


async def written_rows(db_url: str) -> dict[str, Any]:
    """What the import wrote (``test_import_rows.written``); then the CRM is emptied of
    it and of the connection, for the same user to import the calendar again."""
    db = Database(db_url)
    try:
        found = await written(db)
        async with db.write() as session:
            for model in (Link, ActivityChange, Participant, Activity, ActivitySeries, Person):
                await session.execute(sa_delete(model))
            await session.execute(sa_delete(Connection))
        return found
    finally:
        await db.dispose()


async def import_again(
    db_url: str, server: CalDAVServer, calendar: CalDAVHarness, owner_id: int
) -> SyncReport:
    """The user ``owner_id`` connects ``calendar`` again; its first sync."""
    settings = Settings(database_url=db_url, secret_key="test-key", allow_private_networks=True)
    db = Database(db_url)
    try:
        async with db.write() as session:
            user = await session.get(User, owner_id)
            assert user is not None
            data = ConnectionCreate(provider="caldav", url=server.url, username=server.username,
                                    password=server.password)  # fmt: skip
            info = CalendarInfo(id=calendar.calendar_id, name="Work", writable=True)
            connection_id = (await create(session, user, data, info, vault(settings))).id
        report = await run_sync(db, vault(settings), settings, connection_id)
        assert report is not None
        return report
    finally:
        await db.dispose()
