"""The web pages (F23): sign-in, calendar sync settings, the calendar and list views,
and the admin's users page. Server-rendered with Jinja2; a little script of crmcal's
own (``static/app.js``) saves settings as they change and keeps the sync state live."""

from __future__ import annotations

from fastapi import FastAPI

from crmcal.web.ui import activities, admin, auth, calendar_sync, common, profile


def install(app: FastAPI) -> None:
    common.install(app)
    for module in (auth, admin, calendar_sync, activities, profile):
        app.include_router(module.router)
