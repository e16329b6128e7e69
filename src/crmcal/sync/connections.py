"""Connections: creating (with the account checked at once), options, stop, reconnect, delete.

A user has at most one active connection (F5); stopped ones stay, with their
links and cursors, as "previously synced" accounts that can be reconnected and
then resume where they stopped (F18).

A connection created with ``start=False`` (what the settings page does) is
``pending``: nothing is read from or written to either side, and its calendar,
sync type and options can be chosen, until ``start``. A stopped connection can be
moved to another calendar of the same account: it then starts over there on
reconnect (the links to the old calendar's events are forgotten; those events stay).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import delete as sa_delete
from sqlalchemy import inspect as sa_inspect
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from crmcal.config import Settings
from crmcal.crm import activity_types, permissions
from crmcal.crm.errors import Conflict, CrmError, Invalid, NotFound
from crmcal.crm.pagination import page_by_id
from crmcal.crm.tables import Activity, User, utcnow
from crmcal.model import CalendarInfo
from crmcal.providers import kinds
from crmcal.providers.base import (
    AuthenticationFailed,
    NotACalendarServer,
    ProviderError,
    Unreachable,
)
from crmcal.sync import lease, netguard
from crmcal.sync.options import SyncOptions, writes_calendar, writes_crm
from crmcal.sync.schemas import (
    ConflictOut,
    ConnectionCreate,
    ConnectionOut,
    ConnectionUpdate,
    LeftOut,
    Reconnect,
    StatusOut,
    SyncRunOut,
)
from crmcal.sync.states import ConnectionState
from crmcal.sync.tables import Connection, Link, SyncConflict
from crmcal.vault import Vault, VaultError

log = logging.getLogger(__name__)
MAIL_PROTOCOLS = {"imap", "pop", "pop3"}


def shown_state(conn: Connection) -> tuple[str, str | None]:
    """``state`` and ``last_error`` as the connection's status shows them: a sync whose
    holder vanished (its lease expired) is an error until the next sync runs."""
    if lease.vanished(conn):
        return "error", lease.vanished_error(conn)
    return conn.state, conn.last_error


def to_out(conn: Connection) -> ConnectionOut:
    state, last_error = shown_state(conn)
    return ConnectionOut(
        id=conn.id,
        user_id=conn.user_id,
        provider=conn.provider,
        account=conn.account,
        username=conn.username,
        calendar_id=conn.calendar_id,
        calendar_name=conn.calendar_name,
        sync_type=conn.sync_type,
        options=SyncOptions.model_validate(conn.options or {}),
        state=state,
        previously_synced=conn.state == ConnectionState.STOPPED,
        connected_at=conn.connected_at,
        last_sync_at=conn.last_sync_at,
        last_error=last_error,
    )


async def status_of(session: AsyncSession, viewer: User, conn: Connection) -> StatusOut:
    """The connection's status as ``viewer`` may see it: another user's problems about
    their private activities say nothing of them."""
    counts = {"created": 0, "updated": 0, "deleted": 0, "conflicts": 0, "skipped": 0}
    counts.update(conn.counts or {})
    state, last_error = shown_state(conn)
    runs = await lease.recent_runs(session, conn.id)
    out = StatusOut(
        state=state,
        connected_at=conn.connected_at,
        last_sync_at=conn.last_sync_at,
        last_error=last_error,
        counts=counts,
        problems=list(conn.problems or []),
        left_out=LeftOut(**(conn.left_out or {})),
        next_sync_at=conn.next_sync_at,
        recent_syncs=[SyncRunOut(**lease.run_out(run)) for run in runs],
    )
    if viewer.id != conn.user_id:
        out.problems = await _busy_problems(session, conn.id, out.problems)
    return out


async def _busy_problems(
    session: AsyncSession, connection_id: int, problems: list[dict[str, str]]
) -> list[dict[str, str]]:
    """Another user's problems about their private activities, without what they say."""
    rows = await session.execute(
        select(Link.remote_id, Activity.id)
        .join(Activity, Activity.id == Link.activity_id)
        .where(Link.connection_id == connection_id, Activity.visibility == "owner")
    )
    private: set[str] = set()
    for remote_id, activity_id in rows:
        private |= {remote_id, f"activity {activity_id}"}
    return [
        {"item": "a private activity", "reason": "a private activity could not be synced"}
        if p.get("item") in private
        else p
        for p in problems
    ]


def require_may_sync(user: User, sync_type: str) -> None:
    """F6: connecting needs calendar_sync; importing needs the activity permissions."""
    permissions.require(user, permissions.CALENDAR_SYNC)
    permissions.require(user, permissions.ACTIVITIES_VIEW)
    if writes_crm(sync_type):
        for needed in (
            permissions.ACTIVITIES_CREATE,
            permissions.ACTIVITIES_EDIT,
            permissions.ACTIVITIES_DELETE,
        ):
            permissions.require(user, needed)


def provider_error(exc: ProviderError, provider: str = "caldav") -> CrmError:
    """A provider's refusal at connect time, as the user's error."""
    kind = kinds.kind_of(provider)
    if kind is not None and kind.oauth:
        return Invalid(f"{kind.owner} refused the connection: {exc}")
    if isinstance(exc, AuthenticationFailed):
        return Invalid(f"the calendar server refused the user name or password: {exc}")
    if isinstance(exc, Unreachable):
        return Invalid(f"the calendar server cannot be reached: {exc}")
    if isinstance(exc, NotACalendarServer):
        return Invalid(f"that address is not a CalDAV server: {exc}")
    return Invalid(str(exc))


async def check_request(data: ConnectionCreate, settings: Settings) -> None:
    """Everything about a new connection that can be refused without the network."""
    provider = data.provider.lower()
    if provider in MAIL_PROTOCOLS:
        raise Invalid(
            f"{provider.upper()} is a mail protocol and holds no calendar: connect the "
            "account's CalDAV, Google or Microsoft calendar instead"
        )
    kind = kinds.kind_of(provider)
    if kind is None:
        known = ", ".join(kinds.KINDS)
        raise Invalid(f"unknown provider {data.provider!r}: use {known}")
    if kind.oauth:
        if not data.refresh_token:
            raise Invalid(
                f"a {kind.owner} connection needs a refresh_token "
                f"(or connect through /oauth/{provider}/start)"
            )
        return
    if not data.url or data.username is None or data.password is None:
        raise Invalid("a CalDAV connection needs url, username and password")
    try:
        if settings.allow_private_networks:
            netguard.check_scheme(data.url)
        else:
            await netguard.check_public(data.url)
    except netguard.UrlRefused as exc:
        raise Invalid(str(exc)) from None


_NO_EVENTS = (
    "a task list holds no events (its supported components lack VEVENT), and crmcal "
    "syncs events; choose a calendar of events"
)


def pick_calendar(
    calendars: list[CalendarInfo], wanted: str | None, sync_type: str
) -> CalendarInfo:
    """F3: the calendar asked for, or the primary one; writable unless only read."""
    writable_needed = writes_calendar(sync_type)
    if wanted is not None:
        found = next((c for c in calendars if c.id == wanted), None)
        if found is None:
            # The account's state, which the document cannot know: a clash, as a missing record.
            raise Conflict(f"calendar_id: the account has no calendar {wanted!r}")
        if not found.events:
            raise Conflict(f"calendar {found.name!r} is a task list: {_NO_EVENTS}")
        if writable_needed and not found.writable:
            raise Conflict(
                f"calendar {found.name!r} is read-only: it can only be synced calendar_to_crm"
            )
        return found
    usable = [c for c in calendars if c.events and (c.writable or not writable_needed)]
    if not usable and calendars and not any(c.events for c in calendars):
        lists = ", ".join(repr(c.name) for c in calendars[:3])
        raise Invalid(f"the account has task lists only ({lists}): {_NO_EVENTS}")
    if not usable:
        raise Invalid("the account has no calendar this sync type can write to")
    return next((c for c in usable if c.primary), usable[0])


async def check_options(session: AsyncSession, options: SyncOptions) -> None:
    await activity_types.require_usable(session, options.incoming_activity_type)
    known = {t.key for t in await activity_types.list_types(session)}
    unknown = sorted(set(options.outgoing_activity_types) - known)
    if unknown:
        raise Conflict(f"options.outgoing_activity_types: unknown types {', '.join(unknown)}")


@dataclass(frozen=True)
class Discovered:
    calendars: list[CalendarInfo]
    # The account's name where it has no URL: the mailbox address (Microsoft), the
    # primary calendar's address (Google).
    account: str | None
    # What the connection should store: the request, with the refresh token the
    # service rotated to while it was checked (Microsoft sends a new one each time).
    request: ConnectionCreate


async def discover(data: ConnectionCreate, settings: Settings) -> Discovered:
    """Check the account at once and list its calendars; refusals as the user's errors."""
    from crmcal.sync.runner import provider_for

    kind = data.provider.lower()
    secret = secret_of(data)
    latest: list[str] = []

    async def rotated(refresh_token: str) -> None:
        latest.append(refresh_token)

    provider = provider_for(
        kind, data.url or "", data.username, secret or "", settings, on_rotate=rotated
    )
    try:
        account = await provider.discover()
        calendars = await provider.list_calendars()
    except ProviderError as exc:
        raise provider_error(exc, kind) from None
    finally:
        await provider.close()
    naming = provider.capabilities.account_name
    if naming == "primary_calendar":
        account = next((c.id for c in calendars if c.primary), None)
    elif naming == "url":
        account = None  # the connection is named by its URL
    if latest:
        data = data.model_copy(update={"refresh_token": latest[-1]})
    return Discovered(calendars, account if isinstance(account, str) else None, data)


async def calendars_of(conn: Connection, vault: Vault, settings: Settings) -> list[CalendarInfo]:
    from crmcal.sync.runner import open_provider

    provider = open_provider(conn, vault, settings)
    try:
        return await provider.list_calendars()  # task lists too: see pick_calendar
    except ProviderError as exc:
        raise provider_error(exc, conn.provider) from None
    finally:
        await provider.close()


async def list_conflicts(
    session: AsyncSession, viewer: User, conn: Connection, *, limit: int, cursor: str | None
) -> tuple[list[ConflictOut], str | None]:
    """The connection's recorded conflicts, oldest first, as ``viewer`` may see them."""
    query = select(SyncConflict).where(SyncConflict.connection_id == conn.id)
    rows, next_cursor = await page_by_id(
        session, query, SyncConflict.id, limit=limit, cursor=cursor
    )
    items = [ConflictOut.model_validate(r, from_attributes=True) for r in rows]
    if viewer.id != conn.user_id:
        await _busy_blocks(session, items)
    return items, next_cursor


_BLOCK_FIELDS = ("start", "end", "all_day", "timezone", "busy")


async def _busy_blocks(session: AsyncSession, items: list[ConflictOut]) -> None:
    """Another user's conflicts about their private activities, as busy blocks (admins
    included: "owner" visibility is the owner's privacy, not a role)."""
    ids = [item.activity_id for item in items if item.activity_id is not None]
    if not ids:
        return
    private = set(
        await session.scalars(
            select(Activity.id).where(Activity.id.in_(ids), Activity.visibility == "owner")
        )
    )
    for item in items:
        if item.activity_id in private:
            item.remote_id = None
            for name in ("crm_version", "calendar_version", "result"):
                version = getattr(item, name)
                if version is not None:
                    block = {k: v for k, v in version.items() if k in _BLOCK_FIELDS}
                    setattr(item, name, {**block, "subject": "Busy"})


async def delete(session: AsyncSession, conn: Connection) -> None:
    """Forget the connection and its links (the database removes them with it); events
    and activities stay where they are. Its push channel is for the caller to close
    with ``close_push_channel`` once this is committed: a provider that is slow or
    unreachable then holds no transaction open, and cannot keep the connection."""
    await session.delete(conn)


async def active_connection(session: AsyncSession, user_id: int) -> Connection | None:
    return await session.scalar(
        select(Connection).where(
            Connection.user_id == user_id,
            Connection.state.in_(
                (
                    ConnectionState.PENDING,
                    ConnectionState.ACTIVE,
                    ConnectionState.SYNCING,
                    ConnectionState.ERROR,
                )
            ),
        )
    )


def secret_of(data: ConnectionCreate) -> str | None:
    """What the connection signs in with: a refresh token for an OAuth kind (Google,
    Microsoft), else the CalDAV password."""
    found = kinds.kind_of(data.provider.lower())
    return data.refresh_token if found is not None and found.oauth else data.password


async def create(
    session: AsyncSession,
    user: User,
    data: ConnectionCreate,
    calendar: CalendarInfo,
    vault: Vault,
    *,
    account: str | None = None,
) -> Connection:
    """Store a checked connection; ``account`` names the account when it has no URL
    (a Google account is its primary calendar's address)."""
    require_may_sync(user, data.sync_type)
    await check_options(session, data.options)
    if await active_connection(session, user.id) is not None:
        raise Conflict("you already have an active calendar connection: stop it first")
    now = utcnow()
    start = data.start
    conn = Connection(
        user_id=user.id,
        provider=data.provider.lower(),
        account=account or data.url or "",
        username=data.username,
        # The kind's own secret: a body may carry the other kind's fields too.
        credentials=vault.seal(secret_of(data) or ""),
        calendar_id=calendar.id,
        calendar_name=calendar.name,
        sync_type=data.sync_type,
        options=data.options.model_dump(mode="json"),
        state=ConnectionState.ACTIVE if start else ConnectionState.PENDING,
        connected_at=now,
        counts={},
        problems=[],
        next_sync_at=now if start else None,
        failures=0,
    )
    session.add(conn)
    await session.flush()
    return conn


async def get_own(session: AsyncSession, user: User, connection_id: int) -> Connection:
    conn = await session.get(Connection, connection_id)
    if conn is None or (conn.user_id != user.id and not user.is_admin):
        raise NotFound(f"connection {connection_id} not found")
    return conn


async def list_own(session: AsyncSession, user: User) -> list[Connection]:
    query = select(Connection).where(Connection.user_id == user.id).order_by(Connection.id)
    return list(await session.scalars(query))


async def update(
    session: AsyncSession,
    conn: Connection,
    data: ConnectionUpdate,
    calendars: list[CalendarInfo] | None = None,
) -> Connection:
    """Options save at once and apply from the next sync. A new ``calendar_id`` is
    checked against ``calendars`` (the account's, listed by the caller)."""
    sync_type = data.sync_type or conn.sync_type
    if data.calendar_id is not None and data.calendar_id != conn.calendar_id:
        if conn.state not in (ConnectionState.PENDING, ConnectionState.STOPPED):
            raise Conflict(
                "the calendar of a running connection cannot change: stop the sync, "
                "choose the other calendar, then reconnect"
            )
        calendar = pick_calendar(calendars or [], data.calendar_id, sync_type)
        if conn.state == ConnectionState.STOPPED:
            await _forget_calendar(session, conn)
        conn.calendar_id, conn.calendar_name = calendar.id, calendar.name
    elif data.sync_type is not None and writes_calendar(sync_type) and calendars is not None:
        current = next((c for c in calendars if c.id == conn.calendar_id), None)
        if current is not None and not current.writable:
            raise Invalid(
                f"calendar {current.name!r} is read-only: it can only be synced calendar_to_crm"
            )
    options = SyncOptions.model_validate(conn.options or {})
    if data.options is not None:
        merged = {**options.model_dump(), **data.options.model_dump(exclude_none=True)}
        options = SyncOptions.model_validate(merged)
    await check_options(session, options)
    owner = await session.get(User, conn.user_id)
    assert owner is not None
    require_may_sync(owner, sync_type)
    conn.sync_type = sync_type
    conn.options = options.model_dump(mode="json")
    if conn.state not in (ConnectionState.PENDING, ConnectionState.STOPPED):
        conn.next_sync_at = utcnow()
    return conn


async def _forget_calendar(session: AsyncSession, conn: Connection) -> None:
    """Moving a stopped connection: it will start over on the new calendar."""
    await session.execute(sa_delete(Link).where(Link.connection_id == conn.id))
    conn.crm_cursor = conn.remote_cursor = conn.applied_options = None
    conn.connected_at = utcnow()


async def start(conn: Connection) -> Connection:
    """A pending connection begins to sync: what counts as new is from now on."""
    if conn.state != ConnectionState.PENDING:
        raise Conflict(f"connection {conn.id} is {conn.state}; only a pending one is started")
    now = utcnow()
    conn.state, conn.connected_at, conn.next_sync_at = ConnectionState.ACTIVE, now, now
    return conn


async def stop(conn: Connection) -> Connection:
    """Stop all updates until the connection is reconnected. Its push channel is
    forgotten with it; the caller closes it at the provider once this is committed
    (``close_push_channel`` on what ``with_push_channel`` kept of it): a provider that
    is slow or unreachable then holds no transaction open, and cannot keep it going."""
    from crmcal.sync import push

    conn.state = ConnectionState.STOPPED
    conn.next_sync_at = None
    push.forget_channel(conn)
    return conn


def with_push_channel(conn: Connection) -> Connection | None:
    """A copy of ``conn`` (in no session) that still names its push channel, for
    ``close_push_channel`` once the transaction that stops or deletes it is committed;
    None when it has none."""
    if not conn.push_channel_id:
        return None
    columns = sa_inspect(Connection).column_attrs
    return Connection(**{column.key: getattr(conn, column.key) for column in columns})


async def close_push_channel(conn: Connection, vault: Vault | None, settings: Settings) -> None:
    """Ask the provider to stop pushing to crmcal for this connection, and forget the
    channel. Best effort, and it never raises: a channel left open expires by itself
    (within a week) and its notifications are refused meanwhile, so a provider that
    cannot be reached, a grant revoked or credentials that cannot be read are logged
    and the caller goes on stopping or deleting the connection."""
    from crmcal.sync import push
    from crmcal.sync.runner import open_provider

    if not conn.push_channel_id:
        return
    try:
        if vault is None:
            raise VaultError("this server cannot read stored credentials")
        provider = open_provider(conn, vault, settings)
    except VaultError as exc:
        log.warning("connection %s: push channel %s not closed (%s): it expires on its own",
                    conn.id, conn.push_channel_id, exc)  # fmt: skip
        push.forget_channel(conn)
        return
    try:
        await push.stop_channel(conn, provider)
    except Exception:
        # Not a refusal the provider module knows (those stop_channel logs): a bug worth
        # its traceback, but still no reason to keep a connection being stopped or deleted.
        log.exception("connection %s: closing push channel %s failed", conn.id,
                      conn.push_channel_id)  # fmt: skip
        push.forget_channel(conn)
    finally:
        await provider.close()


async def reconnect(
    session: AsyncSession, user: User, conn: Connection, data: Reconnect, vault: Vault
) -> Connection:
    if conn.state not in (ConnectionState.STOPPED, ConnectionState.ERROR):
        raise Conflict(f"connection {conn.id} is {conn.state}; only a stopped one is reconnected")
    other = await active_connection(session, conn.user_id)
    if other is not None and other.id != conn.id:
        raise Conflict(f"connection {other.id} is active: stop it first")
    owner = await session.get(User, conn.user_id)
    assert owner is not None
    require_may_sync(owner, conn.sync_type)
    kind = kinds.kind_of(conn.provider)
    oauth = kind is not None and kind.oauth
    # The other kind's credential would be stored in place of the right one.
    if oauth and data.password is not None:
        raise Conflict(f"connection {conn.id} is signed in with a refresh_token, not a password")
    if not oauth and data.refresh_token is not None:
        raise Conflict(f"connection {conn.id} takes a password, not a refresh_token")
    if data.password is not None:
        conn.credentials = vault.seal(data.password)
    if data.refresh_token is not None:
        conn.credentials = vault.seal(data.refresh_token)
    conn.state = ConnectionState.ACTIVE
    conn.last_error = None
    conn.failures = 0
    conn.next_sync_at = utcnow()
    return conn
