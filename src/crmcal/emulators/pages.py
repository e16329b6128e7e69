"""What a browser sees of an emulator besides its API: a favicon (so that no page logs
a 404 for it) and, at ``/``, a read-only page of its accounts, calendars and events.

``router`` serves the favicon for both emulators; each emulator's ``home`` module
fills the page from its own state with ``page()``, ``table()`` and ``when()``.
"""

from __future__ import annotations

import html
from importlib.resources import files
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse

FAVICON = Path(str(files("crmcal.emulators"))) / "favicon.ico"

router = APIRouter()


@router.get("/favicon.ico", include_in_schema=False)
async def favicon() -> FileResponse:
    return FileResponse(FAVICON, media_type="image/x-icon")


def when(start: Any) -> str:
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


def page(title: str, sections: list[str]) -> HTMLResponse:
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


def table(caption: str, rows: list[tuple[str, str, str]]) -> str:
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
