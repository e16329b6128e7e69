"""The Graph emulator's page at ``/``: each mailbox's calendars and their events."""

from __future__ import annotations

import html

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from crmcal.emulators.microsoft.calls import state_of
from crmcal.emulators.pages import page, table, when

router = APIRouter()


@router.get("/", include_in_schema=False)
async def home(request: Request) -> HTMLResponse:
    state = state_of(request)
    sections = []
    for email in sorted(state.mailboxes):
        mailbox = state.mailboxes[email]
        tables = []
        for calendar in mailbox.calendars.values():
            rows = [
                (when(i.body.get("start")), str(i.body.get("subject") or "(no title)"),
                 str(i.body.get("sensitivity") or ""))
                for i in calendar.items.values()
                if not i.deleted and i.master is None
            ]  # fmt: skip
            access = "can edit" if calendar.can_edit else "read-only"
            tables.append(table(f"{calendar.name} ({access})", rows))
        sections.append(f"<h2>{html.escape(email)}</h2>{''.join(tables)}")
    return page("Microsoft Graph emulator (Outlook calendars)", sections)
