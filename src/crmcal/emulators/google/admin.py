"""The Google emulator's admin API under ``/_emulator/``: what tests and the demo script.

Accounts (with tokens), extra calendars, sync-token and access-token expiry,
injected faults and slow responses, events whose writes are refused, settings, and
what the emulator has seen: request counts by kind, invitation mails, watch channels
and their deliveries.
Never authenticated, never delayed, never failed by an injected fault.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from crmcal.emulators.google.calls import body_of, state_of
from crmcal.emulators.google.errors import GoogleError, invalid

router = APIRouter()


@router.post("/_emulator/accounts")
async def make_account(request: Request) -> Any:
    body = await body_of(request)
    email = body.get("email")
    if not isinstance(email, str) or "@" not in email:
        raise invalid("email: an e-mail address is required", location="email")
    client_id = body.get("client_id")
    return state_of(request).create_account(
        email, client_id if isinstance(client_id, str) else None
    )


@router.post("/_emulator/calendars")
async def make_calendar(request: Request) -> Any:
    body = await body_of(request)
    state = state_of(request)
    email = str(body.get("email", "")).strip().lower()
    if email not in state.accounts:
        raise invalid("email: no such account", location="email")
    calendar_id = str(body.get("id") or f"{len(state.calendars)}@group.calendar.google.com")
    role = str(body.get("access_role") or "owner")
    summary = str(body.get("summary") or calendar_id)
    calendar = state.add_calendar(email, calendar_id, summary, role=role)
    return {"id": calendar.id, "summary": calendar.summary, "access_role": role}


@router.post("/_emulator/calendars/{calendar_id}/from-gmail")
async def from_gmail(request: Request, calendar_id: str) -> Any:
    """``{event}``: an event Gmail made from a mail lands in the calendar (``eventType``
    ``fromGmail``, organized by the calendar's user), which the API cannot create.
    Answers the event."""
    body = await body_of(request)
    state = state_of(request)
    calendar = state.calendars.get(calendar_id)
    if calendar is None:
        raise GoogleError(404, "notFound", "Not Found")
    return state.from_gmail(calendar, body)


@router.post("/_emulator/events/{event_id}/refuse-writes")
async def refuse_writes(request: Request, event_id: str) -> Any:
    """``{"status": 403}`` (or 400): every later update, patch or delete of the event is
    refused so, as Google refuses one event's change for good (a guest's change of
    what its organizer owns); ``{"status": null}`` lifts it."""
    body = await body_of(request)
    state_of(request).refuse_writes(event_id, body.get("status"))
    return {"event_id": event_id, "status": body.get("status")}


@router.post("/_emulator/events/{event_id}/garble")
async def garble(request: Request, event_id: str) -> Any:
    """A test control: ``{"fields": {...}}`` has every later answer that shows the event
    (listings, reads) show those fields in place of its own (a field null: left out,
    ``"id": null`` too), as a broken server or proxy would; what is stored does not
    change, and the event's changes are listed as before. ``{"fields": null}`` lifts it."""
    fields = (await body_of(request)).get("fields")
    garbled = state_of(request).garbled
    if isinstance(fields, dict):
        garbled[event_id] = fields
    else:
        garbled.pop(event_id, None)
    return {"event_id": event_id, "fields": garbled.get(event_id)}


@router.post("/_emulator/calendars/{calendar_id}/expire-sync-tokens")
async def expire(request: Request, calendar_id: str) -> Response:
    state = state_of(request)
    calendar = state.calendars.get(calendar_id)
    if calendar is None:
        raise GoogleError(404, "notFound", "Not Found")
    state.expire_sync_tokens(calendar)
    return Response(status_code=204)


@router.post("/_emulator/faults")
async def faults(request: Request) -> Any:
    """``{"status": 403|429|500|503, "count": n}``: the next n API calls fail so;
    ``{"delay": seconds, "count": n}``: the next n API calls wait that long first
    (a call can be both delayed and failed); ``{"clear": true}`` removes every
    pending fault."""
    body = await body_of(request)
    state = state_of(request)
    if body.get("clear"):
        state.faults.clear()
        state.delays.clear()
    elif "delay" in body:
        if "status" in body:
            raise invalid("give either status or delay", location="delay")
        count = body.get("count", 1)
        if not isinstance(count, int):
            raise invalid("count must be an integer", location="count")
        state.add_delay(body["delay"], count)
    else:
        status, count = body.get("status"), body.get("count", 1)
        if not isinstance(status, int) or not isinstance(count, int):
            raise invalid("status and count must be integers", location="status")
        state.add_fault(status, count)
    pending: list[dict[str, Any]] = [{"status": f.status, "count": f.count} for f in state.faults]
    pending += state.delays.described()
    return {"pending": pending}


@router.post("/_emulator/settings")
async def configure(request: Request) -> Any:
    """``{"short_pages"?, "extended_property_match"?, "sync_token_max_age"?,
    "instance_etags"?}``."""
    return state_of(request).configure(await body_of(request))


@router.get("/_emulator/mail")
async def mail(request: Request) -> Any:
    """The invitation mails sent so far (writes with ``sendUpdates=all``)."""
    return state_of(request).mails


@router.get("/_emulator/channels")
async def channels(request: Request) -> Any:
    """Open watch channels, and the notifications delivered so far."""
    found = state_of(request).channels
    return {
        "channels": [{"id": c.id, "calendar_id": c.calendar_id, "address": c.address,
                      "expiration": c.expiration.isoformat()} for c in found.by_id.values()],
        "delivered": found.delivered,
    }  # fmt: skip
