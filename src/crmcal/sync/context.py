"""What one sync run knows before it starts, fixed for the whole run.

Built once from the connection and its owner when the run begins; nothing in
it changes while the run goes on, so every step reads the same options, the
same owner and the same positions.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, bindparam, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from crmcal.crm import changefeed, permissions
from crmcal.crm.tables import User, UTCDateTime
from crmcal.db import Database
from crmcal.sync import limits
from crmcal.sync.lease import Reading
from crmcal.sync.options import SyncOptions, stored, writes_calendar, writes_crm
from crmcal.sync.states import RECONNECT_REQUIRED, FailureKind
from crmcal.sync.tables import Connection, Link, ProviderHold, WrittenNote


class SyncRefused(Exception):
    """The run stopped before changing anything, for the reason given."""


class SyncFailed(Exception):
    """The sync could not run or finish; ``kind`` says whether it is retried by itself."""

    def __init__(self, message: str, kind: FailureKind = FailureKind.SERVER) -> None:
        super().__init__(message)
        self.kind = kind


class Held(Exception):
    """The service asked the connection's account to wait (a throttling answer, in any
    process): the sync does not start; ``seconds`` is the rest of the hold."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"the account is held for {seconds:.0f} s more after a throttling answer")
        self.seconds = seconds


class SyncStopped(Exception):
    """The connection was stopped or deleted while the run went on: it ends here, with
    what it wrote so far linked, before its next write."""


@dataclass(frozen=True)
class Start:
    """What a run starts from, read in one transaction: the connection, its owner, the
    change feed's head, the notes of writes an earlier run may have left unlinked and
    the events earlier runs made that no listing has named yet.
    The runner reads it in the transaction that takes the lease."""

    conn: Connection
    owner: User
    feed_head: int
    written: dict[int, tuple[str | None, str]]
    # A request slot of the account taken with the lease for the first request, and
    # its turns of the project's quota (``limits.lease_slot_columns``); None: none.
    slot: int | None = None
    turns: tuple[int, ...] = ()
    # The links of events an earlier run made that no listing has named yet (event id
    # -> link id; see ``Link.unconfirmed``), read with the notes.
    unconfirmed: dict[str, int] = dataclasses.field(default_factory=dict)

    @classmethod
    async def read(cls, session: AsyncSession, conn: Connection) -> Start:
        # One statement for the owner, the feed's head and whether notes or unconfirmed
        # links are left (they rarely are: see ``left_over``).
        head = changefeed.head()
        found = await session.execute(
            select(User, head, left_over(conn.id)).where(User.id == conn.user_id)
        )
        return await cls._made(session, conn, found.one())

    @classmethod
    async def read_unless_held(cls, session: AsyncSession, conn: Connection) -> Start:
        """``read``, and in the same statement whether the account is held after a
        throttling answer: then Held, raised inside the lease's transaction, which it
        undoes (no lease taken, no run recorded)."""
        head = changefeed.head()
        key = f"{conn.provider}:{(conn.account or '').strip().lower()}"
        hold = select(ProviderHold.until).where(ProviderHold.key == key).scalar_subquery()
        found = await session.execute(
            select(User, head, left_over(conn.id), hold).where(User.id == conn.user_id)
        )
        owner, feed_head, any_notes, until = found.one()
        if until is not None and (held := (until - dt.datetime.now(dt.UTC)).total_seconds()) > 0:
            raise Held(held)
        return await cls._made(session, conn, (owner, feed_head, any_notes))

    @classmethod
    async def _made_apart(cls, db: Database, conn: Connection, row: tuple[Any, ...]) -> Start:
        """From the columns ``READING`` read with the lease; the notes and unconfirmed links
        (rarely any) in a read of their own: only a sync of the connection, under its
        lease, writes them.
        Beyond them, a request slot taken ahead and its turns (``READING_UNLESS_HELD``)."""
        slot, turns = (row[3], tuple(row[4] or ())) if len(row) > 3 else (None, ())
        if not row[2]:
            return cls(conn, row[0], int(row[1] or 0), {}, slot, turns)
        async with db.read() as session:
            start = await cls._made(session, conn, row[:3])
        return dataclasses.replace(start, slot=slot, turns=turns)

    @classmethod
    async def _made(cls, session: AsyncSession, conn: Connection, row: Any) -> Start:
        owner, feed_head, any_left = row
        written: dict[int, tuple[str | None, str]] = {}
        unconfirmed: dict[str, int] = {}
        if any_left:
            rows = await session.execute(
                select(WrittenNote.activity_id, WrittenNote.crm_hash, WrittenNote.remote_hash)
                .where(WrittenNote.connection_id == conn.id)
            )  # fmt: skip
            written = {activity_id: (crm, remote) for activity_id, crm, remote in rows}
            unconfirmed = await unconfirmed_links(session, conn.id)
        return cls(conn, owner, int(feed_head or 0), written, unconfirmed=unconfirmed)


def left_over(connection_id: Any) -> ColumnElement[bool]:
    """Whether an earlier run left notes of writes (``sync/written``: only a run cut off
    does) or links of events it made that no listing has named yet (``Link.unconfirmed``:
    only after a run that made events). One column of the statement that starts a run,
    so that a run after neither reads nothing more."""
    noted = select(WrittenNote.activity_id).where(WrittenNote.connection_id == connection_id)
    made = select(Link.id).where(Link.connection_id == connection_id, Link.unconfirmed)
    return or_(noted.exists(), made.exists())


async def unconfirmed_links(session: AsyncSession, connection_id: int) -> dict[str, int]:
    """The connection's unconfirmed links: event id -> link id."""
    rows = await session.execute(
        select(Link.remote_id, Link.id).where(Link.connection_id == connection_id, Link.unconfirmed)
    )
    return {remote_id: link_id for remote_id, link_id in rows}


def _start_columns(taken: Any) -> tuple[Any, ...]:
    """The owner, the change feed's head and whether notes or unconfirmed links are
    left, for ``take``."""
    return (User, changefeed.head(), left_over(taken.id))


def _start_columns_and_slot(taken: Any) -> tuple[Any, ...]:
    """``_start_columns``, and a request slot of the account taken ahead for the sync's
    first request (with its turn of the project's quota)."""
    return (*_start_columns(taken), *limits.lease_slot_columns(taken))


def _start_joins(taken: Any) -> tuple[tuple[Any, Any], ...]:
    return ((User, User.id == taken.user_id),)


def hold_key() -> ColumnElement[str]:
    """A connection's key among the held accounts, in SQL (as
    ``limits.SharedLimits.for_account`` makes it)."""
    return Connection.provider + ":" + func.lower(func.trim(Connection.account))


def _held() -> ColumnElement[bool]:
    """The connection's account is held after a throttling answer, at the moment the
    lease is taken."""
    return (
        select(ProviderHold.key)
        .where(
            ProviderHold.key == hold_key(),
            ProviderHold.until > bindparam("lease_now", type_=UTCDateTime()),
        )
        .exists()
    )


# What a sync starts from, read in the statement that takes its lease (PostgreSQL):
# ``Start.read`` and ``Start.read_unless_held`` in one. A held account's lease is not
# taken (the caller then asks about the hold). With the hold checked, the limits are
# shared through the database: the first request's slot is taken in it too.
READING = Reading(_start_columns, _start_joins, Start._made_apart)
READING_UNLESS_HELD = Reading(
    _start_columns_and_slot,
    _start_joins,
    Start._made_apart,
    refused=_held(),
    values=limits.lease_slot_values,
)


@dataclass(frozen=True)
class RunContext:
    connection_id: int
    calendar_id: str
    sync_type: str
    owner: User
    options: SyncOptions
    push: bool  # the run may write to the calendar
    pull: bool  # the run may write to the CRM
    # The start point (F12): items starting earlier are not sent or imported.
    sync_from: dt.datetime
    # The account's own addresses: the user, never a contact (F10).
    own_addresses: frozenset[str]
    # The change feed's last position when the run began: the CRM side reads up to it.
    feed_head: int
    crm_cursor: int | None
    remote_cursor: str | None
    # New options (a wider backfill, other types ...) can make items that were
    # out of scope relevant: such a run looks at everything on both sides once.
    options_changed: bool
    options_digest: str  # what the run's end records as the options applied
    force: bool
    base_url: str
    # The provider e-mails every attendee it is told about (Microsoft 365).
    mails_attendees: bool

    @property
    def origin(self) -> str:
        """What the run's CRM writes are tagged with in the change feed."""
        return f"sync:{self.connection_id}"

    @property
    def activity_base(self) -> str:
        return f"{self.base_url}/activities"

    @classmethod
    async def build(
        cls,
        db: Database,
        connection_id: int,
        *,
        force: bool,
        base_url: str,
        mails_attendees: bool,
    ) -> RunContext:
        async with db.read() as session:
            conn = await session.get(Connection, connection_id)
            if conn is None:
                raise SyncRefused(f"connection {connection_id} not found")
            start = await Start.read(session, conn)
        return cls.of(start, force=force, base_url=base_url, mails_attendees=mails_attendees)

    @classmethod
    def of(cls, start: Start, *, force: bool, base_url: str, mails_attendees: bool) -> RunContext:
        conn, owner, feed_head = start.conn, start.owner, start.feed_head
        read = stored(conn.options)
        options = read.options
        push, pull = writes_calendar(conn.sync_type), writes_crm(conn.sync_type)
        check_permissions(owner, pull)
        # The account's own addresses: a CalDAV login that is one, and the mailbox
        # (Microsoft) or primary calendar (Google) address the account is named by.
        # Graph marks no attendee as the mailbox's own, so without it the user would
        # become a participant of every meeting they are invited to.
        names = {(conn.username or "").strip().lower(), (conn.account or "").strip().lower()}
        own = frozenset(n for n in names if "@" in n and "/" not in n)
        return cls(
            connection_id=conn.id,
            calendar_id=conn.calendar_id,
            sync_type=conn.sync_type,
            owner=owner,
            options=options,
            push=push,
            pull=pull,
            sync_from=conn.connected_at - dt.timedelta(days=options.backfill_days),
            own_addresses=own,
            feed_head=feed_head,
            crm_cursor=conn.crm_cursor,
            remote_cursor=conn.remote_cursor,
            options_changed=conn.applied_options != read.digest,
            options_digest=read.digest,
            force=force,
            base_url=base_url.rstrip("/"),
            mails_attendees=mails_attendees,
        )


def check_permissions(owner: User, pull: bool) -> None:
    """Refuse the run, naming what is missing, when the owner may not sync."""
    if not owner.active:
        raise SyncFailed(
            f"the user of this connection is deactivated: {RECONNECT_REQUIRED} once active",
            FailureKind.PERMISSION,
        )
    needed = [permissions.CALENDAR_SYNC, permissions.ACTIVITIES_VIEW]
    if pull:
        needed += [
            permissions.ACTIVITIES_CREATE,
            permissions.ACTIVITIES_EDIT,
            permissions.ACTIVITIES_DELETE,
        ]
    missing = [p for p in needed if not permissions.has(owner, p)]
    if missing:
        raise SyncFailed(
            "the user lacks the permission "
            + ", ".join(repr(p) for p in missing)
            + f"; an admin can grant it ({RECONNECT_REQUIRED} then)",
            FailureKind.PERMISSION,
        )
