"""The user's own profile page: the language of the pages and the time zone their
dates and times are shown in."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from crmcal.crm import times, users
from crmcal.crm.errors import CrmError
from crmcal.web.deps import database
from crmcal.web.ui import i18n
from crmcal.web.ui.common import _, form_of, page, redirect, render

router = APIRouter(include_in_schema=False)


@router.get("/profile")
async def profile_page(request: Request) -> Response:
    current = await page(request)
    saved = request.query_params.get("saved")
    chosen = current.user.language or ""
    return render(request, "profile.html", current, languages=i18n.LANGUAGES, chosen=chosen,
                  saved=saved)  # fmt: skip


@router.post("/profile")
async def profile_save(request: Request) -> Response:
    current = await page(request)
    form = await form_of(request, current)
    chosen = str(form.get("language") or "")
    zone = str(form.get("timezone") or "").strip()
    error = ""
    if chosen and chosen not in i18n.LANGUAGES:
        error = _("Choose a language from the list.")
    elif zone:
        try:
            times.zone(zone)
        except CrmError:
            error = _("Unknown time zone: use a name like Europe/Prague.")
    if error:
        return render(request, "profile.html", current, status=400, languages=i18n.LANGUAGES,
                      chosen=chosen, error=error)  # fmt: skip
    async with database(request).write() as session:
        await users.set_preferences(session, current.user.id, chosen or None, zone or None)
    return redirect("/profile?saved=1")
