"""The Graph emulator's admin API under ``/_emulator/``: what tests and the demo script.

Accounts (with tokens), extra calendars (read-only ones too), moving an event
to another calendar as a person would in Outlook, injected faults and slow
responses, token expiry, settings, and what the emulator has seen: request
counts by kind and the mails Graph would have sent to attendees. Never
authenticated, never delayed, never failed by an injected fault.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from crmcal.emulators.microsoft import events, render
from crmcal.emulators.microsoft.calls import state_of
from crmcal.emulators.microsoft.errors import bad_request, not_found
from crmcal.emulators.microsoft.model import Mailbox
from crmcal.emulators.microsoft.store import MicrosoftState
from crmcal.emulators.microsoft.throttle import concurrency_of

router = APIRouter()


async def _body(request: Request) -> dict[str, Any]:
    """The admin API's bodies are JSON objects."""
    try:
        data = json.loads(await request.body() or b"{}")
    except ValueError:
        raise bad_request("The body must be JSON.") from None
    if not isinstance(data, dict):
        raise bad_request("The body must be a JSON object.")
    return data


def _mailbox_of(state: MicrosoftState, body: dict[str, Any]) -> Mailbox:
    email = str(body.get("email") or "").strip().lower()
    if email not in state.mailboxes:
        raise bad_request("email: no such account")
    return state.mailboxes[email]


@router.post("/_emulator/accounts")
async def make_account(request: Request) -> Any:
    """``{"email", "client_id"?, "display_name"?}`` -> ``{"access_token", "refresh_token"}``."""
    body = await _body(request)
    email = body.get("email")
    if not isinstance(email, str) or "@" not in email:
        raise bad_request("email: an e-mail address is required")
    client_id = body.get("client_id") if isinstance(body.get("client_id"), str) else None
    name = body.get("display_name") if isinstance(body.get("display_name"), str) else None
    return state_of(request).create_account(email, client_id, name)


@router.post("/_emulator/calendars")
async def make_calendar(request: Request) -> Any:
    """``{"email", "name", "can_edit"?, "owner"?}``: a calendar in the account's list
    (``can_edit: false`` makes it read-only; ``owner`` shares it from another address)."""
    body = await _body(request)
    state = state_of(request)
    mailbox = _mailbox_of(state, body)
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        raise bad_request("name: a calendar name is required")
    can_edit = body.get("can_edit", True)
    if not isinstance(can_edit, bool):
        raise bad_request("can_edit: true or false")
    owner = body.get("owner") if isinstance(body.get("owner"), str) else None
    calendar = state.add_calendar(mailbox.email, name.strip(), can_edit=can_edit, owner=owner)
    return render.calendar(calendar, mailbox)


@router.post("/_emulator/events/{event_id}/move")
async def move(request: Request, event_id: str) -> Any:
    """``{"calendar_id"}``: the event moves there as if a person moved it in Outlook."""
    body = await _body(request)
    state = state_of(request)
    for mailbox in state.mailboxes.values():
        if event_id in mailbox.ids:
            destination = mailbox.calendars.get(str(body.get("calendar_id")))
            if destination is None:
                raise bad_request("calendar_id: no such calendar in this mailbox")
            entry = state.events.resolve(mailbox, event_id)
            moved = state.events.move(mailbox, entry, destination)
            return {
                "id": moved.regular_id,
                "immutable_id": moved.immutable_id,
                "calendar_id": destination.id,
            }
    raise not_found()


# What Graph names the zone of an event desktop Outlook wrote in a legacy custom zone,
# and of one imported from iCalendar with a zone of its own (its rules stay unnamed).
UNNAMED_ZONES = ("tzone://Microsoft/Custom", "Customized Time Zone")


@router.post("/_emulator/events/{event_id}/unnamed-zone")
async def unname_zone(request: Request, event_id: str) -> Any:
    """``{"email", "name"?}``: the event (a series: its occurrences) keeps the rules of
    the zone it was written in, but Graph names that zone only ``name`` (one of
    ``UNNAMED_ZONES``; the first by default) in ``originalStartTimeZone``,
    ``originalEndTimeZone`` and ``recurrence.range.recurrenceTimeZone``, as it does
    for an event written with a custom zone in desktop Outlook or an iCalendar
    file. A write of its start names its zone again."""
    body = await _body(request)
    state = state_of(request)
    mailbox = _mailbox_of(state, body)
    name = body.get("name", UNNAMED_ZONES[0])
    if name not in UNNAMED_ZONES:
        raise bad_request(f"name: one of {', '.join(UNNAMED_ZONES)}")
    item = state.events.item(mailbox, event_id)
    if item is None:
        raise not_found()
    item.body[events.UNNAMED_ZONE] = name
    return {"id": event_id, "name": name}


@router.post("/_emulator/events/{event_id}/garble")
async def garble(request: Request, event_id: str) -> Any:
    """A test control: ``{"email", "fields": {...}}`` has every later answer that shows
    the event (delta pages, reads) show those fields in place of its own (a field null:
    left out, ``"id": null`` too), as a broken server or proxy would; the event's
    changes are listed as before. ``{"email", "fields": null}`` lifts it."""
    body = await _body(request)
    state = state_of(request)
    item = state.events.item(_mailbox_of(state, body), event_id)
    if item is None:
        raise not_found()
    fields = body.get("fields")
    if isinstance(fields, dict):
        item.body[events.GARBLED] = fields
    else:
        item.body.pop(events.GARBLED, None)
    return {"id": event_id, "fields": item.body.get(events.GARBLED)}


@router.post("/_emulator/invitations")
async def invite(request: Request) -> Any:
    """``{"email", "organizer": {"address", "name"?}, "event": {...}, "uid"?,
    "calendar_id"?}``: a meeting request from someone else lands in the mailbox, as
    Exchange files one: organized by them (``isOrganizer`` false, their ``iCalUId``
    when given), not yet answered. Answers the event's immutable id."""
    body = await _body(request)
    state = state_of(request)
    mailbox = _mailbox_of(state, body)
    organizer = body.get("organizer")
    if not isinstance(organizer, dict) or not organizer.get("address"):
        raise bad_request('organizer: {"address", "name"?} is required')
    wanted = body.get("calendar_id")
    calendar = next(
        (c for c in mailbox.calendars.values() if (c.id == wanted if wanted else c.is_default)),
        None,
    )
    if calendar is None:
        raise bad_request("calendar_id: no such calendar in this mailbox")
    entry, _ = state.events.create(mailbox, calendar, body.get("event"))
    item = state.events.item(mailbox, entry.immutable_id)
    assert item is not None
    address = str(organizer["address"])
    item.body["organizer"] = {
        "emailAddress": {"name": str(organizer.get("name") or address), "address": address}
    }
    item.body["isOrganizer"] = False
    item.body["responseStatus"] = {"response": "notResponded", "time": "0001-01-01T00:00:00Z"}
    if isinstance(body.get("uid"), str) and body["uid"]:
        item.body["iCalUId"] = body["uid"]
    return {"id": entry.immutable_id}


@router.post("/_emulator/events/{event_id}/organizer-cancels")
async def organizer_cancels(request: Request, event_id: str) -> Any:
    """``{"email"}``: the organizer of a meeting the mailbox was invited to cancels it.
    Exchange keeps the attendee's copy until they remove it, marked ``isCancelled``
    and its subject prefixed "Canceled: " (a change of the copy, reported by delta)."""
    body = await _body(request)
    state = state_of(request)
    mailbox = _mailbox_of(state, body)
    item = state.events.item(mailbox, event_id)
    if item is None:
        raise not_found()
    if item.body.get("isOrganizer", True):
        raise bad_request("only an invitation is cancelled by its organizer")
    item.body["isCancelled"] = True
    item.body["subject"] = f"Canceled: {item.body.get('subject') or ''}".strip()
    state.events.touch(mailbox, item)
    return {"id": event_id}


@router.post("/_emulator/events/{event_id}/refuse-writes")
async def refuse_writes(request: Request, event_id: str) -> Any:
    """``{"refused": true}``: every later update and delete of the event (by the id the
    write names) answers 403 ``ErrorAccessDenied``, as Graph refuses a change of a
    meeting the mailbox may not make; ``{"refused": false}`` lifts it."""
    body = await _body(request)
    refused = state_of(request).refused_writes
    if body.get("refused", True):
        refused.add(event_id)
    else:
        refused.discard(event_id)
    return {"event_id": event_id, "refused": event_id in refused}


@router.post("/_emulator/faults")
async def faults(request: Request) -> Any:
    """``{"status": 429|500|503, "count"?, "retry_after"?, "code"?}`` fails the next
    API calls; ``{"delay": seconds, "count"?}`` slows them; ``{"clear": true}``."""
    body = await _body(request)
    state = state_of(request)
    if body.get("clear"):
        state.faults.clear()
        state.delays.clear()
    elif "delay" in body:
        if "status" in body:
            raise bad_request("give either status or delay")
        state.add_delay(body["delay"], body.get("count", 1))
    else:
        state.add_fault(body)
    return {"pending": state.pending()}


@router.post("/_emulator/expire-delta-tokens")
async def expire_delta(request: Request) -> Any:
    """``{"email"?}``: every delta and skip token (of that mailbox) answers 410."""
    body = await _body(request)
    state = state_of(request)
    email = _mailbox_of(state, body).email if body.get("email") else None
    return {"expired": state.delta.expire(email)}


@router.post("/_emulator/settings")
async def configure(request: Request) -> Any:
    """``{"page_size"?, "delta_token_max_age"?}``."""
    return state_of(request).configure(await _body(request))


@router.get("/_emulator/mail")
async def mail(request: Request) -> Any:
    """The mails Graph would have sent to attendees (invitations, updates, cancellations)."""
    return state_of(request).events.mails


@router.get("/_emulator/concurrency")
async def concurrency(request: Request) -> Any:
    return {"peak": dict(sorted(concurrency_of(state_of(request)).peak.items()))}


@router.get("/_emulator/changes")
async def changes(request: Request) -> Any:
    """Every mailbox's change log: position, calendar, event ids and change type."""
    return JSONResponse(
        [
            {
                "position": c.position,
                "mailbox": c.mailbox,
                "calendar_id": c.calendar_id,
                "event_id": c.event_id,
                "regular_id": c.regular_id,
                "change_type": c.change_type,
            }
            for m in state_of(request).mailboxes.values()
            for c in m.changes
        ]
    )
