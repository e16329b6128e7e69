"""The Google emulator's page at ``/``: each account's calendars and their events."""

from __future__ import annotations

import html

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from crmcal.emulators.google.calls import state_of
from crmcal.emulators.pages import page, table, when

router = APIRouter()


@router.get("/", include_in_schema=False)
async def home(request: Request) -> HTMLResponse:
    state = state_of(request)
    sections = []
    for email in sorted(state.accounts):
        account = state.accounts[email]
        tables = []
        for calendar_id, role in sorted(account.calendars.items()):
            calendar = state.calendars.get(calendar_id)
            if calendar is None:
                continue
            rows = [
                (when(s.body.get("start")), str(s.body.get("summary") or "(no title)"),
                 str(s.body.get("visibility") or ""))
                for s in calendar.events.values()
                if s.body.get("status") != "cancelled"
            ]  # fmt: skip
            tables.append(table(f"{calendar.summary} ({role})", rows))
        sections.append(f"<h2>{html.escape(email)}</h2>{''.join(tables)}")
    return page("Google Calendar emulator", sections)
