"""A first import as the bulk-import tests make it: events as calendars hold them
(``realistic``) put in a Radicale calendar, a new user connecting it, and the first
sync's database statements counted by verb and table (``Counted``), with the calls
handed to SQLite's thread (``handoffs``)."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections import Counter
from collections.abc import Iterator
from typing import Any

import aiosqlite
import pytest
from sqlalchemy import event
from sqlalchemy.sql.compiler import SQLCompiler

from crmcal.config import Settings
from crmcal.crm.schemas import UserCreate
from crmcal.crm.users import create_user
from crmcal.db import Database
from crmcal.model import CalendarInfo
from crmcal.sync.connections import create
from crmcal.sync.report import SyncReport
from crmcal.sync.runner import run_sync
from crmcal.sync.schemas import ConnectionCreate
from crmcal.vault import Vault, vault_for
from tests.conftest import run
from tests.providers.harness import CalDAVHarness, CalDAVServer

# The tables an import writes: statements naming them are the import's own.
TABLES = ("activities", "activity_participants", "persons", "activity_series",
          "activity_changes", "sync_links")  # fmt: skip
START = (dt.datetime.now(dt.UTC) + dt.timedelta(days=2)).replace(minute=0, second=0, microsecond=0)
BERLIN_TZ = (
    "BEGIN:VTIMEZONE\r\nTZID:Europe/Berlin\r\n"
    "BEGIN:DAYLIGHT\r\nTZOFFSETFROM:+0100\r\nTZOFFSETTO:+0200\r\nTZNAME:CEST\r\n"
    "DTSTART:19700329T020000\r\nRRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU\r\nEND:DAYLIGHT\r\n"
    "BEGIN:STANDARD\r\nTZOFFSETFROM:+0200\r\nTZOFFSETTO:+0100\r\nTZNAME:CET\r\n"
    "DTSTART:19701025T030000\r\nRRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU\r\nEND:STANDARD\r\n"
    "END:VTIMEZONE\r\n"
)


def realistic(tag: str, n: int, *, rule: str | None = None, guests: int = 2) -> str:
    """Event ``n`` of a calendar: every tenth a weekly series (or ``rule``), every
    twentieth all-day, each with its organizer and two attendees (``guests``) new to
    the CRM."""
    local = START.replace(tzinfo=None) + dt.timedelta(hours=n)
    lines = [f"UID:{tag}-{n}@test.example", "DTSTAMP:20260101T000000Z",
             f"SUMMARY:Review {n}", f"DESCRIPTION:Deal #{n}\\nAgenda", f"LOCATION:Room {n}",
             f"ORGANIZER;CN=Olga {n}:mailto:olga.{tag}.{n}@partner.example"]  # fmt: skip
    for k in range(guests):
        lines.append(
            f"ATTENDEE;CN=Guest {n}-{k};ROLE=REQ-PARTICIPANT;PARTSTAT=ACCEPTED;RSVP=TRUE:"
            f"mailto:guest.{tag}.{n}.{k}@customer.example"
        )
    zone = ""
    if n % 20 == 19:
        lines += [f"DTSTART;VALUE=DATE:{local:%Y%m%d}", "TRANSP:TRANSPARENT"]
    else:
        zone = BERLIN_TZ
        end = local + dt.timedelta(minutes=45)
        lines += [f"DTSTART;TZID=Europe/Berlin:{local:%Y%m%dT%H%M%S}",
                  f"DTEND;TZID=Europe/Berlin:{end:%Y%m%dT%H%M%S}"]  # fmt: skip
        if rule or n % 10 == 0:
            lines.append(f"RRULE:{rule or 'FREQ=WEEKLY;COUNT=5'}")
    alarm = "BEGIN:VALARM\r\nACTION:DISPLAY\r\nDESCRIPTION:Soon\r\nTRIGGER:-PT15M\r\nEND:VALARM\r\n"
    body = "\r\n".join(lines)
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//test//EN\r\n"
        f"{zone}BEGIN:VEVENT\r\n{body}\r\n{alarm}END:VEVENT\r\nEND:VCALENDAR\r\n"
    )


@pytest.fixture
def calendars(radicale: CalDAVServer) -> Iterator[list[CalDAVHarness]]:
    made = [CalDAVHarness(radicale), CalDAVHarness(radicale)]
    yield made
    for harness in made:
        run(harness.close())


@contextlib.contextmanager
def handoffs() -> Iterator[Counter[str]]:
    """The calls aiosqlite hands to its connection's thread meanwhile, by function
    (a cursor made, a statement, a fetch, a cursor closed, a commit): each one a
    queue put and a future woken, whatever the database does."""
    counts: Counter[str] = Counter()
    handing = aiosqlite.Connection._execute

    async def counted(connection: aiosqlite.Connection, fn: Any, *args: Any, **kw: Any) -> Any:
        counts[getattr(fn, "__name__", repr(fn))] += 1
        return await handing(connection, fn, *args, **kw)

    setattr(aiosqlite.Connection, "_execute", counted)  # noqa: B010
    try:
        yield counts
    finally:
        setattr(aiosqlite.Connection, "_execute", handing)  # noqa: B010


class Counted:
    """The import's statements on the engine of ``db``, by verb and table."""

    def __init__(self, db: Database) -> None:
        self.by_kind: Counter[str] = Counter()
        self.on = False
        # Parameters SQLAlchemy built for INSERTs into the import's tables (once per
        # row of a multi-row INSERT).
        self.params_built = 0
        # Rows of parameters sent with the statements, by verb and table.
        self.rows_sent: Counter[str] = Counter()
        # Calls handed to SQLite's thread (SQLite only; see ``handoffs``).
        self.handoffs: Counter[str] = Counter()
        event.listen(db.engine.sync_engine, "before_cursor_execute", self._seen)

    @contextlib.contextmanager
    def building(self) -> Iterator[None]:
        """Count the parameters SQLAlchemy builds meanwhile."""
        construct = SQLCompiler.construct_params

        def counted(compiler: SQLCompiler, *args: Any, **kwargs: Any) -> Any:
            table = getattr(compiler.statement, "table", None)
            if compiler.isinsert and table is not None and table.name in TABLES:
                self.params_built += 1
            return construct(compiler, *args, **kwargs)

        setattr(SQLCompiler, "construct_params", counted)  # noqa: B010
        try:
            yield
        finally:
            setattr(SQLCompiler, "construct_params", construct)  # noqa: B010

    def _seen(
        self,
        _conn: Any,
        _cursor: Any,
        statement: str,
        parameters: Any,
        _context: Any,
        executemany: bool,
    ) -> None:
        if not self.on:
            return
        words = statement.split()
        verb = words[0].upper()
        if statement.lower().startswith("select max("):
            verb = "SELECT max"  # on SQLite, the ids new rows get (bulk.insert_many_ids)
        named = {w.strip('"(,') for w in words}
        if verb == "INSERT" and len(words) > 2:
            named = {words[2].strip('"(,')}  # INSERT INTO t ... SELECT ... FROM others
        for table in TABLES:
            if table in named:
                self.by_kind[f"{verb} {table}"] += 1
                self.rows_sent[f"{verb} {table}"] += len(parameters) if executemany else 1
                return


def vault(settings: Settings) -> Vault:
    found = vault_for(settings)
    assert found is not None  # the settings name a secret key
    return found


async def import_calendar(
    db_url: str, server: CalDAVServer, calendar: CalDAVHarness, texts: list[str], email: str
) -> tuple[SyncReport, Counted, int]:
    """A new user connects ``calendar`` holding ``texts``; the first sync, counted."""
    for n, text in enumerate(texts):
        await calendar.put_raw(text, name=f"event-{n}.ics")
    settings = Settings(database_url=db_url, secret_key="test-key", allow_private_networks=True)
    db = Database(db_url)
    try:
        async with db.write() as session:
            user, _ = await create_user(session, UserCreate(email=email, name="Sam"))
            data = ConnectionCreate(provider="caldav", url=server.url, username=server.username,
                                    password=server.password)  # fmt: skip
            info = CalendarInfo(id=calendar.calendar_id, name="Work", writable=True)
            conn = await create(session, user, data, info, vault(settings))
            connection_id = conn.id
        counted = Counted(db)
        counted.on = True
        with counted.building(), handoffs() as handed:
            report = await run_sync(db, vault(settings), settings, connection_id)
        counted.handoffs = handed
        counted.on = False
        assert report is not None
        return report, counted, user.id
    finally:
        await db.dispose()
