"""What every page needs: the signed-in user, the CSRF check of a form, rendering a
template, static files and the favicon.

User-facing text lives in the templates inside ``_()``, and in Python behind ``_``
(from ``i18n``), so that it is translated with gettext into the request's language.
"""

from __future__ import annotations

import datetime as dt
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from crmcal.crm import times
from crmcal.crm.tables import User, WebSession
from crmcal.web import sessions
from crmcal.web.deps import database
from crmcal.web.ui import i18n
from crmcal.web.ui.i18n import _

WEB = Path(str(files("crmcal.web")))
STATIC = WEB / "static"


env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(WEB / "templates"),
    autoescape=True,
    extensions=["jinja2.ext.i18n"],
    trim_blocks=True,
    lstrip_blocks=True,
)
# Old-style callables return plain text, so translations are escaped like any other text.
# The i18n extension adds this method when it is loaded, which no type checker can see.
env.install_gettext_callables(  # type: ignore[attr-defined]
    gettext=i18n.gettext, ngettext=i18n.ngettext, newstyle=False
)
env.globals.update(
    format_date=i18n.format_date,
    format_time=i18n.format_time,
    format_datetime=i18n.format_datetime,
    format_number=i18n.format_number,
)


class SignInRequired(Exception):
    def __init__(self, next_path: str) -> None:
        self.next_path = next_path


class BadCsrf(Exception):
    pass


class Page:
    """The signed-in user of a page request and their session."""

    def __init__(self, user: User, web: WebSession) -> None:
        self.user = user
        self.web = web

    @property
    def csrf(self) -> str:
        return self.web.csrf_token


async def signed_in(request: Request) -> Page | None:
    async with database(request).read() as session:
        found = await sessions.lookup(session, request.cookies.get(sessions.COOKIE))
    if found:
        i18n.use(found[1].language)
    return Page(found[1], found[0]) if found else None


async def page(request: Request) -> Page:
    """The signed-in user, or a redirect to the sign-in page (and back here after it)."""
    found = await signed_in(request)
    if found is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise SignInRequired(target)
    return found


async def form_of(request: Request, current: Page) -> dict[str, Any]:
    """The posted form, after checking it carries the session's CSRF token."""
    form = await request.form()
    if not sessions.csrf_ok(current.web, str(form.get(sessions.CSRF_FIELD) or "") or None):
        raise BadCsrf
    values: dict[str, Any] = {}
    for key in form:
        found = form.getlist(key)
        values[key] = [str(v) for v in found] if len(found) > 1 else str(found[0])
    return values


def render(
    request: Request, template: str, current: Page | None = None, status: int = 200, **context: Any
) -> HTMLResponse:
    html = env.get_template(template).render(
        request=request,
        user=current.user if current else None,
        csrf=current.csrf if current else "",
        path=request.url.path,
        lang=i18n.language(),
        zone=times.zone(current.user.timezone) if current else dt.UTC,
        **context,
    )
    return HTMLResponse(html, status_code=status, headers=_SECURITY_HEADERS)


# Pages run only crmcal's own scripts and styles, and cannot be framed.
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; form-action 'self' http: https:"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def sign_in_failed(request: Request, service: str, reason: str) -> HTMLResponse:
    """The page a browser sees when connecting through Google or Microsoft failed."""
    return render(
        request,
        "message.html",
        status=400,
        title=_("{service} account not connected").format(service=service),
        message=reason[:1:].upper()
        + reason[1:]
        + ". "
        + _("Nothing was synced. Go back to Calendar sync and try again."),
        back="/settings/calendar-sync",
    )


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def install(app: FastAPI) -> None:
    app.add_middleware(i18n.LanguageMiddleware)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> FileResponse:
        return FileResponse(STATIC / "favicon.ico", media_type="image/x-icon")

    @app.exception_handler(SignInRequired)
    async def _to_login(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SignInRequired)
        return redirect(f"/login?next={quote(exc.next_path, safe='/')}")

    @app.exception_handler(BadCsrf)
    async def _bad_csrf(request: Request, _exc: Exception) -> Response:
        return render(
            request,
            "message.html",
            status=403,
            title=_("Form expired"),
            message=_(
                "This form did not carry its security token (it may come from another site, "
                "or from before you signed in again). Go back, reload the page and try again."
            ),
        )
