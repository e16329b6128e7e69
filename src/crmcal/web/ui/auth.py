"""Signing in with e-mail and password, and signing out.

The sign-in form carries a token that must match a cookie set with the form (no
session exists yet to hold one), so that another site cannot sign a browser in to
an account of its choosing. Failed attempts are counted (throttle.py): past the
limit the page says how long to wait.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from crmcal.crm import users
from crmcal.web import sessions
from crmcal.web.deps import database
from crmcal.web.throttle import FailedSignIns
from crmcal.web.ui.common import _, form_of, page, redirect, render, signed_in

router = APIRouter(include_in_schema=False)
LOGIN_COOKIE = "crmcal_login"


def _safe_next(target: str | None) -> str:
    """Only a path of this site: never another host (``//evil``, ``/\\evil``)."""
    if target and target.startswith("/") and not target.startswith(("//", "/\\")):
        return target
    return "/calendar"


def _form(request: Request, next_path: str, error: str = "", email: str = "",
          status: int = 200) -> Response:  # fmt: skip
    token = secrets.token_urlsafe(24)
    response = render(request, "login.html", status=status, next=next_path, error=error,
                      email=email, login_token=token)  # fmt: skip
    response.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="lax", path="/login",
                        secure=sessions.is_https(request))  # fmt: skip
    return response


def _throttle(request: Request) -> FailedSignIns:
    found: FailedSignIns = request.app.state.failed_signins
    return found


@router.get("/")
async def home(request: Request) -> Response:
    return redirect("/calendar" if await signed_in(request) else "/login")


@router.get("/login")
async def login_page(
    request: Request, next: Annotated[str | None, Query(max_length=2000)] = None
) -> Response:
    if await signed_in(request):
        return redirect(_safe_next(next))
    return _form(request, _safe_next(next))


@router.post("/login")
async def login(request: Request) -> Response:
    form = await request.form()
    email = str(form.get("email") or "").strip().lower()[:320]
    password = str(form.get("password") or "")[:1000]
    next_path = _safe_next(str(form.get("next") or ""))
    posted = str(form.get("login_token") or "")
    expected = request.cookies.get(LOGIN_COOKIE) or ""
    if not posted or not hmac.compare_digest(posted, expected):
        return _form(request, next_path, _("The sign-in form expired: please try again."),
                     email, status=403)  # fmt: skip
    client = request.client.host if request.client else "unknown"
    throttle = _throttle(request)
    wait = throttle.wait_seconds(email, client)
    if wait:
        minutes = max(1, (wait + 59) // 60)
        message = _("Too many failed sign-ins. Wait {minutes} min and try again.")
        return _form(request, next_path, message.format(minutes=minutes), email, status=429)
    async with database(request).write() as session:
        user = await users.user_for_password(session, email, password)
        token = await sessions.open_session(session, user) if user else None
    if token is None:
        throttle.failed(email, client)
        return _form(request, next_path, _("Wrong e-mail or password."), email, status=401)
    throttle.succeeded(email)
    response = redirect(next_path)
    sessions.set_cookie(request, response, token)
    response.delete_cookie(LOGIN_COOKIE, path="/login")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    current = await page(request)
    await form_of(request, current)
    async with database(request).write() as session:
        await sessions.close(session, request.cookies.get(sessions.COOKIE))
    response = redirect("/login")
    sessions.clear_cookie(request, response)
    return response
