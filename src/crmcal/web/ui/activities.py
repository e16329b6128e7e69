"""The calendar view (``/calendar``, week or month) and the list view (``/activities``,
filtered and paged), with the sync state of the user's connection and a badge on each
activity; the activity form (new and edit), mark done and delete from both views.

Other users' activities are shown as the CRM core hands them to this viewer: the
ones only their owner may see arrive as anonymous "Busy" blocks.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from crmcal.crm import activities, activity_types, contacts, permissions, times, users
from crmcal.crm.activities import ActivityFilter
from crmcal.crm.errors import CrmError
from crmcal.crm.schemas import MAX_ID, ActivityCreate, ActivityOut, ActivityUpdate, Scope
from crmcal.crm.tables import User
from crmcal.sync import connections, status
from crmcal.sync.options import SyncOptions, writes_calendar
from crmcal.sync.states import ConnectionState
from crmcal.sync.tables import Connection
from crmcal.web.deps import database
from crmcal.web.ui import i18n
from crmcal.web.ui.common import Page, _, form_of, page, redirect, render

router = APIRouter(include_in_schema=False)
ActivityId = Annotated[int, Path(ge=1, le=MAX_ID)]
PAGE_SIZE = 50
# The "Repeat" choices of the form, and what an edit or deletion of an occurrence
# applies to (this / this and following / all).
REPEATS = [
    ("", _("Never")), ("FREQ=DAILY", _("Every day")), ("FREQ=WEEKLY", _("Every week")),
    ("FREQ=MONTHLY", _("Every month")), ("FREQ=YEARLY", _("Every year")),
]  # fmt: skip
SCOPES = [
    ("this", _("This activity")),
    ("following", _("This and following")),
    ("series", _("All in the series")),
]
SCOPE_OF: dict[str, Scope] = {"this": "this", "following": "following", "series": "series"}
BADGES = {
    "synced": _("synced"),
    "pending": _("pending"),
    "paused": _("paused"),
    "problem": _("problem"),
    "not-synced": _("not synced (type filter)"),
}


@dataclass
class Item:
    """An activity as a view shows it."""

    out: ActivityOut
    owner: str
    mine: bool
    hidden: bool  # someone else's private activity: a busy block
    editable: bool
    badge: str | None  # a key of BADGES
    day: dt.date
    time: str


# --- loading ---------------------------------------------------------------------


async def _connection(session: AsyncSession, user: User) -> Connection | None:
    """The user's current connection, or the last stopped one."""
    found = await connections.list_own(session, user)
    current = [c for c in found if c.state != ConnectionState.STOPPED]
    chosen = current or found
    return chosen[-1] if chosen else None


def _badge(item: ActivityOut, conn: Connection | None, problems: set[str]) -> str | None:
    if conn is None or item.owner_id != conn.user_id or conn.state == ConnectionState.PENDING:
        return None
    options = SyncOptions.model_validate(conn.options or {})
    if f"activity {item.id}" in problems or (item.sync and item.sync.event_id in problems):
        return "problem"
    if item.sync is not None:
        return item.sync.state
    if not writes_calendar(conn.sync_type) or item.type not in options.outgoing_activity_types:
        return "not-synced"
    return "paused" if conn.state == ConnectionState.STOPPED else "pending"


async def _items(
    session: AsyncSession, viewer: User, found: list[Any], conn: Connection | None
) -> list[Item]:
    tz = times.zone(viewer.timezone)
    outs = await status.with_sync_info(
        session, [activities.to_out(a, viewer) for a in found], viewer.id
    )
    owners = {u.id: u.name for u in await users.everyone(session)}
    problems = {str(p.get("item")) for p in (conn.problems or [])} if conn else set()
    items = []
    for activity, out in zip(found, outs, strict=True):
        local = activity.start_at.astimezone(tz)
        day = activity.start_date if activity.all_day and activity.start_date else local.date()
        items.append(
            Item(
                out=out,
                owner=owners.get(out.owner_id, "?"),
                mine=out.owner_id == viewer.id,
                hidden=not permissions.can_see_details(viewer, activity),
                editable=out.owner_id == viewer.id or viewer.is_admin,
                badge=_badge(out, conn, problems),
                day=day,
                time=_("all day") if activity.all_day else i18n.format_time(local),
            )
        )
    return items


def _sync_context(conn: Connection | None) -> dict[str, Any]:
    return {"conn": connections.to_out(conn) if conn else None, "badges": BADGES,
            "scopes": SCOPES}  # fmt: skip


# --- list view -------------------------------------------------------------------


@router.get("/activities")
async def list_view(
    request: Request,
    type: Annotated[str | None, Query(max_length=64)] = None,
    owner: Annotated[str | None, Query(max_length=20)] = None,
    start_from: Annotated[str | None, Query(alias="from", max_length=10)] = None,
    start_to: Annotated[str | None, Query(alias="to", max_length=10)] = None,
    done: Annotated[str | None, Query(max_length=5)] = None,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> Response:
    current = await page(request)
    owner_id = int(owner) if owner and owner.isdigit() and int(owner) <= MAX_ID else None
    flt = ActivityFilter(
        start_from=start_from or None, start_to=start_to or None, type=type or None,
        owner_id=owner_id, done={"yes": True, "no": False}.get(done or ""),
    )  # fmt: skip
    error = ""
    async with database(request).read() as session:
        try:
            found, next_cursor = await activities.list_activities(
                session, current.user, flt, limit=PAGE_SIZE, cursor=cursor or None
            )
        except CrmError as exc:
            found, next_cursor, error = [], None, str(exc)
        conn = await _connection(session, current.user)
        items = await _items(session, current.user, found, conn)
        types = await activity_types.list_types(session)
        everyone = await users.everyone(session)
    filters = {"type": type or "", "owner": owner or "", "from": start_from or "",
               "to": start_to or "", "done": done or ""}  # fmt: skip
    next_url = None
    if next_cursor:
        next_url = "/activities?" + urlencode({**filters, "cursor": next_cursor})
    return render(
        request, "activities.html", current, items=items, types=types, users=everyone,
        filters=filters, next_url=next_url, paged=bool(cursor), error=error,
        back=request.url.path + (f"?{request.url.query}" if request.url.query else ""),
        **_sync_context(conn),
    )  # fmt: skip


# --- calendar view ---------------------------------------------------------------


def _parse_day(text: str | None, today: dt.date) -> dt.date:
    try:
        return dt.date.fromisoformat(text) if text else today
    except ValueError:
        return today


@router.get("/calendar")
async def calendar_view(
    request: Request,
    view: Annotated[str, Query(pattern="^(week|month)$")] = "week",
    day: Annotated[str | None, Query(alias="date", max_length=10)] = None,
) -> Response:
    current = await page(request)
    tz = times.zone(current.user.timezone)
    today = dt.datetime.now(tz).date()
    anchor = _parse_day(day, today)
    week_start = i18n.first_week_day()  # Monday in most of Europe, Sunday in en/id
    if view == "month":
        first = anchor.replace(day=1)
        start = first - dt.timedelta(days=(first.weekday() - week_start) % 7)
        following = (first + dt.timedelta(days=32)).replace(day=1)
        end = following + dt.timedelta(days=(week_start - following.weekday()) % 7)
        previous_anchor = (first - dt.timedelta(days=1)).replace(day=1)
        next_anchor = following
        title = i18n.month_title(first)
    else:
        start = anchor - dt.timedelta(days=(anchor.weekday() - week_start) % 7)
        end = start + dt.timedelta(days=7)
        previous_anchor, next_anchor = start - dt.timedelta(days=7), end
        title = _("Week of {day}").format(day=i18n.format_date(start))
    flt = ActivityFilter(start_from=start.isoformat(),
                         start_to=(end - dt.timedelta(days=1)).isoformat())  # fmt: skip
    async with database(request).read() as session:
        found: list[Any] = []
        cursor = None
        while True:  # a busy month can hold more than one page
            batch, cursor = await activities.list_activities(
                session, current.user, flt, limit=500, cursor=cursor
            )
            found.extend(batch)
            if cursor is None or len(found) >= 5000:
                break
        conn = await _connection(session, current.user)
        items = await _items(session, current.user, found, conn)
    days = [start + dt.timedelta(days=n) for n in range((end - start).days)]
    by_day: dict[dt.date, list[Item]] = {d: [] for d in days}
    for item in items:
        by_day.setdefault(item.day, []).append(item)
    return render(
        request, "calendar.html", current, view=view, days=days, by_day=by_day, today=today,
        month=anchor.month, anchor=anchor.isoformat(), title=title,
        previous=previous_anchor.isoformat(), next=next_anchor.isoformat(),
        back=f"/calendar?view={view}&date={anchor.isoformat()}",
        **_sync_context(conn),
    )  # fmt: skip


# --- the activity form -------------------------------------------------------------


def _safe_back(target: str | None) -> str:
    if target and target.startswith("/") and not target.startswith(("//", "/\\")):
        return target
    return "/activities"


async def _choices(session: AsyncSession, user: User) -> dict[str, Any]:
    found = await contacts.choices(session, user)
    return {
        "types": await activity_types.list_types(session, include_inactive=False),
        "deals": found.deals,
        "persons": found.persons,
        "organizations": found.organizations,
    }


def _form_values(out: ActivityOut | None, user: User) -> dict[str, str]:
    """The form's fields, as text, for an activity (or a new one)."""
    if out is None:
        soon = dt.datetime.now(times.zone(user.timezone)).replace(
            minute=0, second=0
        ) + dt.timedelta(hours=1)
        return {"type": "meeting", "subject": "", "start": soon.strftime("%Y-%m-%dT%H:%M"),
                "end": (soon + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M"),
                "all_day": "", "timezone": user.timezone, "location": "", "note": "",
                "participants": "", "deal_id": "", "person_id": "", "organization_id": "",
                "reminder_minutes": "", "visibility": "everyone", "done": "",
                "recurrence": "", "series_id": ""}  # fmt: skip

    def local(value: str | None) -> str:
        if not value:
            return ""
        if out.all_day:
            return value + "T00:00"
        return value[:16]

    end = out.end
    if out.all_day and end:  # shown inclusive: the last day the activity covers
        end = (dt.date.fromisoformat(end) - dt.timedelta(days=1)).isoformat()
    return {
        "type": out.type, "subject": out.subject, "start": local(out.start), "end": local(end),
        "all_day": "on" if out.all_day else "", "timezone": out.timezone,
        "location": out.location or "", "note": out.note or "",
        "participants": "\n".join(
            f"{p.name} <{p.email}>" if p.name and p.email else (p.email or "")
            for p in out.participants
        ),
        "deal_id": str(out.deal_id or ""), "person_id": str(out.person_id or ""),
        "organization_id": str(out.organization_id or ""),
        "reminder_minutes": "" if out.reminder_minutes is None else str(out.reminder_minutes),
        "visibility": out.visibility, "done": "on" if out.done else "",
        "recurrence": out.recurrence or "", "series_id": str(out.series_id or ""),
    }  # fmt: skip


def _participants(text: str) -> list[dict[str, str]]:
    """One per line: ``Name <address>`` or an address."""
    found = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.endswith(">") and "<" in line:
            name, _sep, address = line[:-1].rpartition("<")
            found.append({"email": address.strip(), "name": name.strip().strip('"')})
        else:
            found.append({"email": line})
    return found


def _body(form: dict[str, Any]) -> dict[str, Any]:
    """The REST shape of a posted form."""
    all_day = form.get("all_day") == "on"
    start, end = form.get("start", ""), form.get("end", "")
    if all_day:
        start = start[:10]
        # The form shows the last day; the API takes the day after it.
        end = (dt.date.fromisoformat(end[:10]) + dt.timedelta(days=1)).isoformat() if end else ""
    elif start and len(start) == 16:
        start += ":00"
    if end and not all_day and len(end) == 16:
        end += ":00"

    def number(key: str) -> int | None:
        value = str(form.get(key) or "").strip()
        return int(value) if value.isdigit() else None

    return {
        "type": form.get("type") or None, "subject": form.get("subject") or None,
        "start": start or None, "end": end or None, "all_day": all_day,
        "timezone": form.get("timezone") or None, "location": form.get("location") or None,
        "note": form.get("note") or None,
        "participants": _participants(str(form.get("participants") or "")),
        "deal_id": number("deal_id"), "person_id": number("person_id"),
        "organization_id": number("organization_id"),
        "reminder_minutes": number("reminder_minutes"),
        "visibility": form.get("visibility") or "everyone", "done": form.get("done") == "on",
        "recurrence": form.get("recurrence") or None,
    }  # fmt: skip


def _problem(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return f"{where}: {str(first['msg']).removeprefix('Value error, ')}"
    return str(exc)


async def _form_page(
    request: Request, current: Page, values: dict[str, str], activity_id: int | None,
    back: str, error: str = "", status_code: int = 200,
) -> Response:  # fmt: skip
    async with database(request).read() as session:
        choices = await _choices(session, current.user)
    repeats = list(REPEATS)
    custom = values.get("recurrence") or ""
    if custom and custom not in dict(repeats):  # a rule made elsewhere, kept as it is
        repeats.append((custom, custom))
    return render(request, "activity_form.html", current, status=status_code, values=values,
                  activity_id=activity_id, back=back, error=error, repeats=repeats,
                  scopes=SCOPES, **choices)  # fmt: skip


@router.get("/activities/new")
async def new_form(
    request: Request, back: Annotated[str | None, Query(max_length=500)] = None
) -> Response:
    current = await page(request)
    return await _form_page(request, current, _form_values(None, current.user), None,
                            _safe_back(back))  # fmt: skip


@router.post("/activities/new")
async def create(request: Request) -> Response:
    current = await page(request)
    form = await form_of(request, current)
    back = _safe_back(form.get("back"))
    try:
        data = ActivityCreate.model_validate(
            {k: v for k, v in _body(form).items() if v is not None}
        )
        async with database(request).write() as session:
            await activities.create_activity(session, current.user, data, origin="web")
    except (CrmError, ValidationError, ValueError) as exc:
        return await _form_page(request, current, form, None, back, _problem(exc), 422)
    return redirect(back)


@router.get("/activities/{activity_id}/edit")
async def edit_form(
    request: Request, activity_id: ActivityId,
    back: Annotated[str | None, Query(max_length=500)] = None,
) -> Response:  # fmt: skip
    current = await page(request)
    async with database(request).read() as session:
        activity = await activities.get_activity(session, current.user, activity_id)
        out = activities.to_out(activity, current.user)
    if not permissions.can_see_details(current.user, activity):
        return render(request, "message.html", current, status=403, title=_("Busy"),
                      message=_("This activity is private to its owner."))  # fmt: skip
    return await _form_page(request, current, _form_values(out, current.user), activity_id,
                            _safe_back(back))  # fmt: skip


@router.post("/activities/{activity_id}/edit")
async def update(request: Request, activity_id: ActivityId) -> Response:
    current = await page(request)
    form = await form_of(request, current)
    back = _safe_back(form.get("back"))
    try:
        scope = form.get("scope") or None
        data = ActivityUpdate.model_validate({**_body(form), "scope": scope})
        async with database(request).write() as session:
            await activities.update_activity(session, current.user, activity_id, data,
                                             origin="web")  # fmt: skip
    except (CrmError, ValidationError, ValueError) as exc:
        return await _form_page(request, current, form, activity_id, back, _problem(exc), 422)
    return redirect(back)


@router.post("/activities/{activity_id}/done")
async def mark_done(request: Request, activity_id: ActivityId) -> Response:
    current = await page(request)
    form = await form_of(request, current)
    done = form.get("done", "true") == "true"
    async with database(request).write() as session:
        await activities.update_activity(session, current.user, activity_id,
                                         ActivityUpdate(done=done), origin="web")  # fmt: skip
    return redirect(_safe_back(form.get("back")))


@router.post("/activities/{activity_id}/delete")
async def delete(request: Request, activity_id: ActivityId) -> Response:
    current = await page(request)
    form = await form_of(request, current)
    scope = SCOPE_OF.get(str(form.get("scope") or "this"), "this")
    async with database(request).write() as session:
        await activities.delete_activity(session, current.user, activity_id, origin="web",
                                         scope=scope)  # fmt: skip
    return redirect(_safe_back(form.get("back")))
