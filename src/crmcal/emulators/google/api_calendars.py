"""Google's calendar routes: ``calendarList`` and ``calendars`` under ``/calendar/v3``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from crmcal.emulators.google.calls import V3, account, body_of, params_of, state_of
from crmcal.emulators.google.errors import GoogleError
from crmcal.emulators.google.store import Calendar

router = APIRouter()


def _calendar_body(calendar: Calendar) -> dict[str, Any]:
    return {"kind": "calendar#calendar", "etag": f'"{calendar.position}"', "id": calendar.id,
            "summary": calendar.summary, "timeZone": calendar.time_zone}  # fmt: skip


@router.get(V3 + "/users/me/calendarList")
async def calendar_list(request: Request) -> Any:
    user = account(request, "calendarList.list")
    params = params_of(request)
    return state_of(request).calendar_list(
        user, max_results=params.get("maxResults"), page_token=params.get("pageToken")
    )


@router.get(V3 + "/users/me/calendarList/{calendar_id}")
async def calendar_list_entry(request: Request, calendar_id: str) -> Any:
    user = account(request, "calendarList.get")
    state = state_of(request)
    return state.calendar_entry(user, state.calendar(user, calendar_id))


@router.get(V3 + "/calendars/{calendar_id}")
async def calendar_get(request: Request, calendar_id: str) -> Any:
    user = account(request, "calendars.get")
    return _calendar_body(state_of(request).calendar(user, calendar_id))


@router.post(V3 + "/calendars")
async def calendar_insert(request: Request) -> Any:
    user = account(request, "calendars.insert")
    body = await body_of(request)
    summary = body.get("summary")
    if not isinstance(summary, str) or not summary:
        raise GoogleError(400, "required", "Missing title.", location="summary")
    state = state_of(request)
    calendar_id = f"{state.new_id()}@group.calendar.google.com"
    calendar = state.add_calendar(user.email, calendar_id, summary)
    calendar.time_zone = str(body.get("timeZone") or "UTC")
    return _calendar_body(calendar)


async def _calendar_rewrite(request: Request, calendar_id: str, kind: str) -> Any:
    user = account(request, f"calendars.{kind}")
    state = state_of(request)
    calendar = state.calendar(user, calendar_id)
    if user.calendars[calendar.id] != "owner":
        raise GoogleError(403, "forbidden", "Forbidden")
    body = await body_of(request)
    summary = body.get("summary", None if kind == "patch" else "")
    if summary is not None:
        if not isinstance(summary, str) or not summary:
            raise GoogleError(400, "required", "Missing title.", location="summary")
        calendar.summary = summary
    if body.get("timeZone"):
        calendar.time_zone = str(body["timeZone"])
    return _calendar_body(calendar)


@router.patch(V3 + "/calendars/{calendar_id}")
async def calendar_patch(request: Request, calendar_id: str) -> Any:
    return await _calendar_rewrite(request, calendar_id, "patch")


@router.put(V3 + "/calendars/{calendar_id}")
async def calendar_update(request: Request, calendar_id: str) -> Any:
    return await _calendar_rewrite(request, calendar_id, "update")
