"""Calendar connections: connect, pick a calendar, options, sync now, stop, reconnect, status."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, HTTPException, Path, Query, Request, Response
from starlette.background import BackgroundTask

from crmcal.crm.errors import Conflict
from crmcal.crm.schemas import MAX_ID, Page
from crmcal.sync import connections
from crmcal.sync.engine import SyncFailed
from crmcal.sync.runner import Busy, run_sync
from crmcal.sync.schemas import (
    CalendarOut,
    ConflictOut,
    ConnectionCreate,
    ConnectionOut,
    ConnectionUpdate,
    Reconnect,
    StatusOut,
    SyncCounts,
)
from crmcal.sync.states import ConnectionState
from crmcal.web.api.paging import DEFAULT, Cursor, Limit
from crmcal.web.deps import reading, request_sync, settings_of, vault_of, writing
from crmcal.web.openapi import refusals

router = APIRouter(prefix="/connections", tags=["connections"])
ConnectionId = Annotated[int, Path(ge=1, le=MAX_ID)]
FORCE_HELP = "Apply the deletions even when the calendar suddenly looks empty."


@router.get("", response_model=Page[ConnectionOut])
async def list_connections(request: Request) -> Page[ConnectionOut]:
    """Your connections: the active one and previously synced (stopped) ones."""
    async with reading(request) as (session, user):
        found = await connections.list_own(session, user)
        return Page[ConnectionOut](items=[connections.to_out(c) for c in found], next_cursor=None)


# Users whose account check (a connect) is under way in this process.
_CHECKING: set[int] = set()


@router.post(
    "",
    response_model=ConnectionOut,
    status_code=201,
    responses=refusals(
        403,
        409,
        422,
        503,
        s422="A field is missing, unknown or not acceptable; or the account check failed: "
        "the address does not answer or is not a CalDAV server, the user name or password "
        "is refused, the grant is revoked, the address is private (or a mail protocol's).",
        s409="You already have an active connection (stop it first), or a check of "
        "another account of yours is still running; or the account has no `calendar_id` "
        "calendar (or it is read-only for the sync type), or the `options` name an "
        "activity type that does not exist.",
    ),
)
async def create_connection(request: Request, body: ConnectionCreate) -> ConnectionOut:
    """Connect a calendar. The account is checked at once: a wrong password, an address
    that cannot be reached or is not a CalDAV server each get a 422 saying so. It starts
    syncing at once, unless `"start": false` makes it `pending` until `.../start`."""
    vault = vault_of(request)
    async with reading(request) as (session, user):
        connections.require_may_sync(user, body.sync_type)
        if await connections.active_connection(session, user.id) is not None:
            raise Conflict("you already have an active calendar connection: stop it first")
    await connections.check_request(body, settings_of(request))
    if user.id in _CHECKING:
        # A slow or hostile server holds one check; one user cannot stack up more.
        raise Conflict("a check of another calendar account of yours is still running")
    _CHECKING.add(user.id)
    try:
        found = await connections.discover(body, settings_of(request))
    finally:
        _CHECKING.discard(user.id)
    calendar = connections.pick_calendar(found.calendars, body.calendar_id, body.sync_type)
    async with writing(request) as (session, user):
        conn = await connections.create(
            session, user, found.request, calendar, vault, account=found.account
        )
        out = connections.to_out(conn)
    if out.state == ConnectionState.ACTIVE:
        request_sync(request, out.id)
    return out


@router.get("/{connection_id}", response_model=ConnectionOut)
async def get_connection(request: Request, connection_id: ConnectionId) -> ConnectionOut:
    async with reading(request) as (session, user):
        return connections.to_out(await connections.get_own(session, user, connection_id))


@router.patch(
    "/{connection_id}",
    response_model=ConnectionOut,
    responses=refusals(
        403,
        409,
        503,
        s409="The calendar of a running connection cannot change (stop it first); or the "
        "account has no `calendar_id` calendar (or it is read-only for the sync type), or "
        "the `options` name an activity type that does not exist.",
    ),
)
async def update_connection(
    request: Request, connection_id: ConnectionId, body: ConnectionUpdate
) -> ConnectionOut:
    """Change the sync type or options: saved at once, applied from the next sync.
    `calendar_id` chooses another calendar of the account while the connection is
    `pending`; on a `stopped` one it moves the connection there (it starts over on that
    calendar when reconnected); a running connection answers 409: stop it first."""
    calendars = None
    if body.calendar_id is not None or body.sync_type is not None:
        async with reading(request) as (session, user):
            conn = await connections.get_own(session, user, connection_id)
            must_list = conn.state in (ConnectionState.PENDING, ConnectionState.STOPPED) and (
                body.calendar_id not in (None, conn.calendar_id) or body.sync_type is not None
            )
        if must_list:
            calendars = await connections.calendars_of(
                conn, vault_of(request), settings_of(request)
            )
    async with writing(request) as (session, user):
        conn = await connections.get_own(session, user, connection_id)
        out = connections.to_out(await connections.update(session, conn, body, calendars))
    if out.state == ConnectionState.ACTIVE:
        request_sync(request, connection_id)
    return out


@router.post(
    "/{connection_id}/start",
    response_model=ConnectionOut,
    name="start_connection",
    responses=refusals(409, s409="The connection is not pending."),
)
async def start(request: Request, connection_id: ConnectionId) -> ConnectionOut:
    """Start a `pending` connection: the first sync runs now, with the calendar, sync type
    and options chosen. Nothing was read or written before; 409 if it is not pending."""
    async with writing(request) as (session, user):
        conn = await connections.get_own(session, user, connection_id)
        out = connections.to_out(await connections.start(conn))
    request_sync(request, connection_id)
    return out


@router.delete("/{connection_id}", status_code=204, responses=refusals(503))
async def delete_connection(request: Request, connection_id: ConnectionId) -> Response:
    """Forget the connection and its links; events and activities stay where they are.
    Its push channel (Google) or subscription (Microsoft 365) is closed at the provider
    once the answer is sent; one that cannot be closed expires on its own."""
    async with writing(request) as (session, user):
        conn = await connections.get_own(session, user, connection_id)
        await connections.delete(session, conn)
    close = BackgroundTask(
        connections.close_push_channel, conn, request.app.state.vault, settings_of(request)
    )
    return Response(status_code=204, background=close)


@router.get("/{connection_id}/calendars", response_model=Page[CalendarOut], responses=refusals(503))
async def list_calendars(request: Request, connection_id: ConnectionId) -> Page[CalendarOut]:
    """The account's calendars; read-only ones can only be synced calendar_to_crm."""
    vault = vault_of(request)
    async with reading(request) as (session, user):
        conn = await connections.get_own(session, user, connection_id)
    found = await connections.calendars_of(conn, vault, settings_of(request))
    items = [CalendarOut(id=c.id, name=c.name, writable=c.writable, primary=c.primary)
             for c in found if c.events]  # fmt: skip
    return Page[CalendarOut](items=items, next_cursor=None)


@router.post(
    "/{connection_id}/sync",
    response_model=SyncCounts,
    name="sync_connection",
    responses=refusals(409, 503, s409="The connection is stopped, busy, or the sync failed."),
)
async def sync_now(
    request: Request,
    connection_id: ConnectionId,
    force: Annotated[bool, Query(description=FORCE_HELP)] = False,
) -> SyncCounts:
    """Run a sync now and answer its counts."""
    vault = vault_of(request)
    async with reading(request) as (session, user):
        await connections.get_own(session, user, connection_id)
    try:
        report = await run_sync(
            request.app.state.db, vault, settings_of(request), connection_id, force=force, wait=30
        )
    except Busy as exc:
        raise Conflict(str(exc)) from None
    except SyncFailed as exc:
        raise HTTPException(409, f"the sync failed: {exc}") from None
    return SyncCounts(**report.counts(), problems=report.problems)


@router.post(
    "/{connection_id}/stop",
    response_model=ConnectionOut,
    name="stop_connection",
    responses=refusals(503),
)
async def stop(
    request: Request, connection_id: ConnectionId, background: BackgroundTasks
) -> ConnectionOut:
    """Stop all updates; the connection stays, as previously synced, to be reconnected.
    Its push channel (Google) or subscription (Microsoft 365) is closed at the provider
    once the answer is sent; one that cannot be closed expires on its own."""
    async with writing(request) as (session, user):
        conn = await connections.get_own(session, user, connection_id)
        channel = connections.with_push_channel(conn)
        stopped = connections.to_out(await connections.stop(conn))
    if channel is not None:
        background.add_task(
            connections.close_push_channel, channel, request.app.state.vault, settings_of(request)
        )
    return stopped


@router.post(
    "/{connection_id}/reconnect",
    response_model=ConnectionOut,
    name="reconnect_connection",
    responses=refusals(
        403,
        409,
        503,
        s409="The connection is not stopped, or another is active; or the body gives the "
        "other kind's credential (a `password` for a Google or Microsoft connection, a "
        "`refresh_token` for a CalDAV one).",
    ),
)
async def reconnect(
    request: Request, connection_id: ConnectionId, body: Reconnect | None = None
) -> ConnectionOut:
    """Resume a stopped connection with the same links, reconciling both sides."""
    vault = vault_of(request)
    async with writing(request) as (session, user):
        conn = await connections.get_own(session, user, connection_id)
        conn = await connections.reconnect(session, user, conn, body or Reconnect(), vault)
        out = connections.to_out(conn)
    request_sync(request, connection_id)
    return out


@router.get("/{connection_id}/status", response_model=StatusOut, name="get_connection_status")
async def status(request: Request, connection_id: ConnectionId) -> StatusOut:
    async with reading(request) as (session, user):
        conn = await connections.get_own(session, user, connection_id)
        return await connections.status_of(session, user, conn)


@router.get("/{connection_id}/conflicts", response_model=Page[ConflictOut])
async def list_conflicts(
    request: Request, connection_id: ConnectionId, limit: Limit = DEFAULT, cursor: Cursor = None
) -> Page[ConflictOut]:
    """Items both sides changed between two syncs, and which side the policy kept (F20),
    oldest first."""
    async with reading(request) as (session, user):
        conn = await connections.get_own(session, user, connection_id)
        items, next_cursor = await connections.list_conflicts(
            session, user, conn, limit=limit, cursor=cursor
        )
        return Page[ConflictOut](items=items, next_cursor=next_cursor)
