"""What a browser sees of an emulator besides its API: a favicon (so that no page logs
a 404 for it) and, at ``/``, a read-only page of its accounts, calendars and events."""

from __future__ import annotations

import html
from importlib.resources import files
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse

FAVICON = Path(str(files("crmcal.emulators"))) / "favicon.ico"


def install_favicon(app: FastAPI) -> None:
    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> FileResponse:
        return FileResponse(FAVICON, media_type="image/x-icon")


def _when(start: Any) -> str:
    """An event's start as the page shows it, from a Google or Graph ``start`` object."""
    if not isinstance(start, dict):
        return ""
    value = start.get("dateTime") or start.get("date") or ""
    zone = start.get("timeZone")
    text = str(value)[:16].replace("T", " ")
    return (
        f"{text} {zone}"
        if zone and zone != "UTC"
        else (f"{text} UTC" if "T" in str(value) else text)
    )


def _page(title: str, sections: list[str]) -> HTMLResponse:
    body = "".join(sections) or "<p>No accounts yet.</p>"
    return HTMLResponse(
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta http-equiv="refresh" content="10">'
        f"<title>{html.escape(title)}</title><link rel=icon href=/favicon.ico></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        "<p>A read-only view of the emulator's accounts, calendars and events "
        "(this page reloads every 10 seconds). The admin API is under <code>/_emulator/</code>."
        f"</p>{body}</body></html>"
    )


def _table(caption: str, rows: list[tuple[str, str, str]]) -> str:
    cells = (
        "".join(
            f"<tr><td>{html.escape(w)}</td><td>{html.escape(s)}</td><td>{html.escape(x)}</td></tr>"
            for w, s, x in sorted(rows)
        )
        or '<tr><td colspan="3">No events.</td></tr>'
    )
    return (
        f"<table border=1 cellpadding=4><caption>{html.escape(caption)}</caption>"
        "<thead><tr><th scope=col>Start</th><th scope=col>Title</th><th scope=col>Details</th>"
        f"</tr></thead><tbody>{cells}</tbody></table>"
    )


def install_google_home(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    async def home(request: Request) -> HTMLResponse:
        state = request.app.state.google
        sections = []
        for email in sorted(state.accounts):
            account = state.accounts[email]
            tables = []
            for calendar_id, role in sorted(account.calendars.items()):
                calendar = state.calendars.get(calendar_id)
                if calendar is None:
                    continue
                rows = [
                    (_when(s.body.get("start")), str(s.body.get("summary") or "(no title)"),
                     str(s.body.get("visibility") or ""))
                    for s in calendar.events.values()
                    if s.body.get("status") != "cancelled"
                ]  # fmt: skip
                tables.append(_table(f"{calendar.summary} ({role})", rows))
            sections.append(f"<h2>{html.escape(email)}</h2>{''.join(tables)}")
        return _page("Google Calendar emulator", sections)


def install_microsoft_home(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    async def home(request: Request) -> HTMLResponse:
        state = request.app.state.microsoft
        sections = []
        for email in sorted(state.mailboxes):
            mailbox = state.mailboxes[email]
            tables = []
            for calendar in mailbox.calendars.values():
                rows = [
                    (_when(i.body.get("start")), str(i.body.get("subject") or "(no title)"),
                     str(i.body.get("sensitivity") or ""))
                    for i in calendar.items.values()
                    if not i.deleted and i.master is None
                ]  # fmt: skip
                access = "can edit" if calendar.can_edit else "read-only"
                tables.append(_table(f"{calendar.name} ({access})", rows))
            sections.append(f"<h2>{html.escape(email)}</h2>{''.join(tables)}")
        return _page("Microsoft Graph emulator (Outlook calendars)", sections)
