"""Google's event routes under ``/calendar/v3/calendars/{id}/events``, with
``events.watch`` and ``channels.stop`` (the channels live in ``push``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from crmcal.emulators.google.calls import V3, account, body_of, params_of, state_of
from crmcal.emulators.google.errors import GoogleError
from crmcal.emulators.google.events import as_seen

router = APIRouter()


@router.get(V3 + "/calendars/{calendar_id}/events")
async def events_list(request: Request, calendar_id: str) -> Any:
    user = account(request, "events.list")
    state = state_of(request)
    return state.list_events(state.calendar(user, calendar_id), params_of(request))


@router.post(V3 + "/calendars/{calendar_id}/events")
async def events_insert(request: Request, calendar_id: str) -> Any:
    user = account(request, "events.insert")
    state = state_of(request)
    calendar = state.calendar(user, calendar_id, write=True)
    created = state.insert(calendar, await body_of(request))
    state.mail_guests(created, request.query_params.get("sendUpdates"))
    return created


@router.post(V3 + "/calendars/{calendar_id}/events/import")
async def events_import(request: Request, calendar_id: str) -> Any:
    user = account(request, "events.import")
    state = state_of(request)
    calendar = state.calendar(user, calendar_id, write=True)
    return as_seen(state.import_event(calendar, await body_of(request)))


@router.get(V3 + "/calendars/{calendar_id}/events/{event_id}/instances")
async def events_instances(request: Request, calendar_id: str, event_id: str) -> Any:
    user = account(request, "events.instances")
    state = state_of(request)
    return state.instances(state.calendar(user, calendar_id), event_id, params_of(request))


@router.post(V3 + "/calendars/{calendar_id}/events/watch")
async def events_watch(request: Request, calendar_id: str) -> Any:
    user = account(request, "events.watch")
    state = state_of(request)
    calendar = state.calendar(user, calendar_id)
    return state.channels.watch(
        await body_of(request),
        calendar_id=calendar.id,
        account=user.email,
        now=state.clock(),
        resource_uri=f"https://www.googleapis.com/calendar/v3/calendars/{calendar.id}/events",
    )


@router.post(V3 + "/channels/stop")
async def channels_stop(request: Request) -> Response:
    user = account(request, "channels.stop")
    state_of(request).channels.stop(await body_of(request), user.email)
    return Response(status_code=204)


@router.post(V3 + "/calendars/{calendar_id}/events/{event_id}/move")
async def events_move(request: Request, calendar_id: str, event_id: str) -> Any:
    user = account(request, "events.move")
    state = state_of(request)
    destination_id = request.query_params.get("destination")
    if not destination_id:
        raise GoogleError(400, "required", "Required", location="destination")
    source = state.calendar(user, calendar_id, write=True)
    destination = state.calendar(user, destination_id, write=True)
    return state.move(source, event_id, destination)


@router.get(V3 + "/calendars/{calendar_id}/events/{event_id}")
async def events_get(request: Request, calendar_id: str, event_id: str) -> Any:
    user = account(request, "events.get")
    state = state_of(request)
    return state.served(as_seen(state.get(state.calendar(user, calendar_id), event_id)))


async def _rewrite(request: Request, calendar_id: str, event_id: str, kind: str) -> Any:
    """``events.update`` (PUT, the whole event) or ``events.patch`` (the fields sent)."""
    user = account(request, f"events.{kind}")
    state = state_of(request)
    calendar = state.calendar(user, calendar_id, write=True)
    write = state.update if kind == "update" else state.patch
    body = await body_of(request)
    state.check_writable(event_id)
    written = write(calendar, event_id, body, request.headers.get("if-match"))
    state.mail_guests(written, request.query_params.get("sendUpdates"))
    return as_seen(written)


@router.put(V3 + "/calendars/{calendar_id}/events/{event_id}")
async def events_update(request: Request, calendar_id: str, event_id: str) -> Any:
    return await _rewrite(request, calendar_id, event_id, "update")


@router.patch(V3 + "/calendars/{calendar_id}/events/{event_id}")
async def events_patch(request: Request, calendar_id: str, event_id: str) -> Any:
    return await _rewrite(request, calendar_id, event_id, "patch")


@router.delete(V3 + "/calendars/{calendar_id}/events/{event_id}")
async def events_delete(request: Request, calendar_id: str, event_id: str) -> Response:
    user = account(request, "events.delete")
    state = state_of(request)
    calendar = state.calendar(user, calendar_id, write=True)
    state.check_writable(event_id)
    state.delete(calendar, event_id, request.headers.get("if-match"))
    return Response(status_code=204)
