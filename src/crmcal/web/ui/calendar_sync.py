"""``/settings/calendar-sync``: add an account, choose its calendar and options before
anything syncs, start and stop the sync, reconnect previously synced accounts.

Choices are saved as they change by the page's script, through the REST API
(``PATCH /api/v1/connections/{id}`` with the session's CSRF token); the buttons that
change the connection's state are plain forms.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.background import BackgroundTask

from crmcal.crm import activity_types
from crmcal.crm.errors import CrmError, Invalid
from crmcal.model import CalendarInfo
from crmcal.sync import connections
from crmcal.sync.schemas import ConnectionCreate, ConnectionUpdate, Reconnect
from crmcal.sync.states import ConnectionState
from crmcal.sync.tables import Connection
from crmcal.web.deps import database, request_sync, settings_of
from crmcal.web.ui.common import Page, _, form_of, page, redirect, render

router = APIRouter(include_in_schema=False)
PATH = "/settings/calendar-sync"
CURRENT = (
    ConnectionState.PENDING,
    ConnectionState.ACTIVE,
    ConnectionState.SYNCING,
    ConnectionState.ERROR,
)

SYNC_TYPES = [
    ("two_way", _("Two-way"), _("Activities go to the calendar and events come to the CRM.")),
    ("crm_to_calendar", _("CRM to calendar"),
     _("Activities go to the calendar; events made there stay out of the CRM.")),
    ("calendar_to_crm", _("Calendar to CRM"),
     _("Events come to the CRM; nothing is written to the calendar.")),
]  # fmt: skip
PRIVATE_EVENTS = [
    ("owner_only", _("Only I see them; colleagues see a busy block")),
    ("everyone", _("Everyone sees them")),
    ("skip", _("Do not bring them to the CRM")),
]
VISIBILITY = [("everyone", _("Everyone")), ("owner", _("Only me"))]
CONFLICTS = [
    ("latest", _("The latest change wins")),
    ("crm", _("The CRM wins")),
    ("calendar", _("The calendar wins")),
]
PROVIDER_NAMES = {"google": "Google", "microsoft": "Microsoft 365 / Outlook", "caldav": "CalDAV"}
APP_PASSWORD_LINKS = [
    ("iCloud", "https://support.apple.com/en-us/102654"),
    ("Fastmail", "https://www.fastmail.help/hc/en-us/articles/360058752854"),
    (
        "Nextcloud",
        "https://docs.nextcloud.com/server/latest/user_manual/en/session_management.html",
    ),
]


def _vault(request: Request) -> Any:
    return request.app.state.vault


async def _calendars(request: Request, conn: Connection) -> tuple[list[CalendarInfo], str]:
    """The account's calendars, or none and what went wrong asking for them."""
    vault = _vault(request)
    if vault is None:
        return [], _("This server cannot read stored credentials (CRMCAL_SECRET_KEY).")
    try:
        found = await connections.calendars_of(conn, vault, settings_of(request))
        return [c for c in found if c.events], ""  # task lists are no choice
    except CrmError as exc:
        return [], str(exc)


def _left_out(conn: Connection | None) -> int:
    """How many problems and refusals syncs found beyond what the connection keeps: the
    list shown is not all there is when this is not 0."""
    counts = (conn.left_out if conn is not None else None) or {}
    return int(counts.get("problems", 0)) + int(counts.get("refusals", 0))


async def _page(request: Request, current: Page, **extra: Any) -> Response:
    status = extra.pop("status", 200)
    extra.setdefault("add", request.query_params.get("add", ""))
    async with database(request).read() as session:
        mine = await connections.list_own(session, current.user)
        types = await activity_types.list_types(session, include_inactive=False)
    active = next((c for c in mine if c.state in CURRENT), None)
    previous = [c for c in mine if c.state == ConnectionState.STOPPED]
    calendars: list[CalendarInfo] = []
    calendars_error = ""
    if active is not None and active.state == ConnectionState.PENDING:
        calendars, calendars_error = await _calendars(request, active)
    move_id = request.query_params.get("move", "")
    moving = next((c for c in previous if str(c.id) == move_id), None)
    move_calendars: list[CalendarInfo] = []
    if moving is not None:
        move_calendars, calendars_error = await _calendars(request, moving)
    return render(
        request, "calendar_sync.html", current, status=status,
        conn=active, out=connections.to_out(active) if active else None,
        left_out=_left_out(active),
        previous=[connections.to_out(c) for c in previous],
        calendars=calendars, calendars_error=calendars_error, types=types,
        sync_types=SYNC_TYPES, private_events=PRIVATE_EVENTS, visibility=VISIBILITY,
        conflicts=CONFLICTS, provider_names=PROVIDER_NAMES, app_links=APP_PASSWORD_LINKS,
        move_id=moving.id if moving else None,
        move_calendars=move_calendars, **extra,
    )  # fmt: skip


@router.get(PATH)
async def settings_page(request: Request) -> Response:
    return await _page(request, await page(request))


@router.post(PATH + "/caldav")
async def add_caldav(request: Request) -> Response:
    """Check the CalDAV account and keep it pending while the user chooses."""
    current = await page(request)
    form = await form_of(request, current)
    entered = {"url": form.get("url", ""), "username": form.get("username", "")}
    vault = _vault(request)
    settings = settings_of(request)
    try:
        if vault is None:
            raise Invalid(_("this server cannot store passwords: set CRMCAL_SECRET_KEY"))
        body = ConnectionCreate(provider="caldav", url=entered["url"] or None,
                                username=entered["username"], password=form.get("password", ""),
                                start=False)  # fmt: skip
        await connections.check_request(body, settings)
        found = await connections.discover(body, settings)
        try:
            calendar = connections.pick_calendar(found.calendars, None, "two_way")
        except Invalid:  # only read-only calendars: they can still come to the CRM
            body = body.model_copy(update={"sync_type": "calendar_to_crm"})
            calendar = connections.pick_calendar(found.calendars, None, "calendar_to_crm")
        async with database(request).write() as session:
            await connections.create(session, current.user, found.request, calendar, vault)
    except CrmError as exc:
        return await _page(request, current, add="caldav", entered=entered,
                           error=_caldav_advice(str(exc)), status=422)  # fmt: skip
    except ValueError as exc:  # the form's values do not fit the connection's fields
        return await _page(request, current, add="caldav", entered=entered,
                           error=str(exc).splitlines()[0], status=422)  # fmt: skip
    return redirect(PATH)


def _caldav_advice(reason: str) -> str:
    """What happened, in the user's language, and what to do next; the server's own
    words (English, or the server's) follow in brackets."""
    lowered = reason.lower()
    for marker, happened, advice in _CALDAV_FAILURES:
        if marker in lowered:
            detail = reason.split(": ", 1)[1] if ": " in reason else ""
            said = f" ({detail})" if detail and marker != "user name or password" else ""
            return f"{happened} {advice}{said}"
    return reason[:1].upper() + reason[1:]


_CALDAV_FAILURES = [
    ("user name or password", _("The calendar server refused the user name or password."),
     _("Check the user name; use an app password if you have one.")),
    ("cannot be reached", _("The calendar server cannot be reached."),
     _("Check the server URL and that the server is running.")),
    ("not a caldav server", _("That address is not a CalDAV server."),
     _("Use the CalDAV address your provider gives, often ending in /dav/.")),
]  # fmt: skip


async def _own(request: Request, current: Page, connection_id: int) -> Connection:
    async with database(request).read() as session:
        return await connections.get_own(session, current.user, connection_id)


@router.post(PATH + "/{connection_id}/{action}")
async def act(request: Request, connection_id: int, action: str) -> Response:
    """Start, stop, reconnect (CalDAV), move to another calendar, or forget a connection."""
    current = await page(request)
    form = await form_of(request, current)
    vault = _vault(request)
    calendars: list[CalendarInfo] = []
    channel: Connection | None = None  # the push channel to close once committed
    if action == "move":
        calendars, problem = await _calendars(request, await _own(request, current, connection_id))
        if problem:
            return await _page(request, current, error=problem, status=409)
    try:
        async with database(request).write() as session:
            conn = await connections.get_own(session, current.user, connection_id)
            if action == "start":
                await connections.start(conn)
            elif action == "stop":
                channel = connections.with_push_channel(conn)
                await connections.stop(conn)
            elif action == "reconnect" and vault is not None:
                grant = Reconnect(password=form.get("password") or None)
                await connections.reconnect(session, current.user, conn, grant, vault)
            elif action == "move":
                change = ConnectionUpdate(calendar_id=form.get("calendar_id") or None)
                await connections.update(session, conn, change, calendars)
            elif action == "delete":
                await connections.delete(session, conn)
                channel = conn
            else:
                return Response(status_code=404)
    except (CrmError, ValueError) as exc:
        return await _page(request, current, error=str(exc).splitlines()[0], status=409)
    if action in ("start", "reconnect"):
        request_sync(request, connection_id)
    done = redirect(PATH)
    if channel is not None:
        # As the API's: the channel is closed once the connection is stopped or gone,
        # after the answer, so that a provider slow or unreachable holds up neither.
        done.background = BackgroundTask(
            connections.close_push_channel, channel, vault, settings_of(request)
        )
    return done
