"""What a browser sees of an emulator besides its API: a favicon (so that no page logs
a 404 for it) and, at ``/``, a read-only page of its accounts, calendars and events."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse

FAVICON = Path(str(files("crmcal.emulators"))) / "favicon.ico"


def install_favicon(app: FastAPI) -> None:
    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> FileResponse:
        return FileResponse(FAVICON, media_type="image/x-icon")
