"""Graph's user and calendar routes: ``/v1.0/me`` and ``/v1.0/me/calendar(s)``.

The signed-in user, revoking their sign-in sessions, and listing, making,
reading and renaming calendars. ``calendar_of()`` finds the calendar a path
names (absent: the default one), for the event routes too.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from crmcal.emulators.microsoft import ids, odata, render
from crmcal.emulators.microsoft.calls import (
    V1,
    Call,
    answer,
    body_of,
    call,
    page,
    params,
    state_of,
)
from crmcal.emulators.microsoft.errors import GraphError, bad_request, not_found
from crmcal.emulators.microsoft.model import Calendar

FIELDS = frozenset(
    {
        "id",
        "name",
        "color",
        "hexColor",
        "isDefaultCalendar",
        "changeKey",
        "canShare",
        "canViewPrivateItems",
        "canEdit",
        "allowedOnlineMeetingProviders",
        "defaultOnlineMeetingProvider",
        "isTallyingResponses",
        "isRemovable",
        "owner",
    }
)

router = APIRouter()


def calendar_of(found: Call, calendar_id: str | None) -> Calendar:
    if calendar_id is None:
        return found.mailbox.default_calendar
    calendar = found.mailbox.calendars.get(calendar_id)
    if calendar is None:
        raise not_found()
    return calendar


def _calendar_body(found: Call, calendar: Calendar) -> dict[str, Any]:
    context = found.context(f"users('{found.mailbox.user_id}')/calendars/$entity")
    return {"@odata.context": context, **render.calendar(calendar, found.mailbox)}


def _calendar_name(body: Any, *, required: bool) -> str | None:
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    allowed = {"name", "color", "@odata.type"}
    unknown = sorted(set(body) - allowed - FIELDS)
    if unknown:
        raise GraphError(
            400,
            "RequestBodyRead",
            f"The property '{unknown[0]}' does not "
            "exist on type 'microsoft.graph.calendar'. Make sure to only use "
            "property names that are defined by the type or mark the type as "
            "open type.",
        )
    name = body.get("name")
    if name is None and not required:
        return None
    if not isinstance(name, str) or not name.strip():
        raise GraphError(400, "ErrorInvalidParameter", "The calendar name is missing.")
    return name.strip()


@router.get(V1 + "/me")
async def me(request: Request) -> Response:
    found = call(request, "me.get")
    return answer(
        found, {"@odata.context": found.context("users/$entity"), **render.user(found.mailbox)}
    )


@router.post(V1 + "/me/revokeSignInSessions")
async def revoke_sessions(request: Request) -> Response:
    found = call(request, "me.revokeSignInSessions")
    state_of(request).revoke_sessions(found.mailbox)
    return answer(found, {"@odata.context": found.context("Edm.Boolean"), "value": True})


@router.get(V1 + "/me/calendars")
async def calendars_list(request: Request) -> Response:
    found = call(request, "calendars.list")
    query = odata.parse_query(
        params(request), allowed=frozenset({"$top", "$skip"}), properties=FIELDS
    )
    items = [render.calendar(c, found.mailbox) for c in found.mailbox.calendars.values()]
    context = found.context(f"users('{found.mailbox.user_id}')/calendars")
    return answer(found, page(request, found, items, query, context))


@router.post(V1 + "/me/calendars")
async def calendars_create(request: Request) -> Response:
    found = call(request, "calendars.create")
    name = _calendar_name(await body_of(request), required=True)
    assert name is not None
    if any(c.name.lower() == name.lower() for c in found.mailbox.calendars.values()):
        raise GraphError(
            409, "ErrorFolderExists", "A folder with the specified name already exists."
        )
    calendar = state_of(request).add_calendar(found.mailbox.email, name)
    return answer(found, _calendar_body(found, calendar), 201)


@router.get(V1 + "/me/calendar")
async def calendar_default(request: Request) -> Response:
    found = call(request, "calendars.get")
    return answer(found, _calendar_body(found, calendar_of(found, None)))


@router.get(V1 + "/me/calendars/{calendar_id}")
async def calendar_get(request: Request, calendar_id: str) -> Response:
    found = call(request, "calendars.get")
    return answer(found, _calendar_body(found, calendar_of(found, calendar_id)))


@router.patch(V1 + "/me/calendars/{calendar_id}")
async def calendar_patch(request: Request, calendar_id: str) -> Response:
    found = call(request, "calendars.update")
    calendar = calendar_of(found, calendar_id)
    body = await body_of(request)
    name = _calendar_name(body, required=False)
    if calendar.owner != found.mailbox.email or not calendar.can_edit:
        raise GraphError(
            403, "ErrorAccessDenied", "Access is denied. Check credentials and try again."
        )
    if name is not None:
        calendar.name = name
    if isinstance(body.get("color"), str):
        calendar.color = body["color"]
    calendar.change_key = ids.change_key()
    return answer(found, _calendar_body(found, calendar))
