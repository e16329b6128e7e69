"""The admin's users page: who can sign in, with which permissions; create a user."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError

from crmcal.crm import permissions, users
from crmcal.crm.errors import CrmError
from crmcal.crm.schemas import UserCreate
from crmcal.web.deps import database
from crmcal.web.ui.common import Page, _, form_of, page, redirect, render

router = APIRouter(include_in_schema=False)


async def _listing(request: Request, current: Page, error: str = "", status: int = 200) -> Response:
    async with database(request).read() as session:
        found, _next = await users.list_users(session, limit=1000, cursor=None)
    return render(request, "admin_users.html", current, status=status, users=found,
                  all_permissions=permissions.ALL, error=error)  # fmt: skip


@router.get("/admin/users")
async def users_page(request: Request) -> Response:
    current = await page(request)
    if not current.user.is_admin:
        return render(request, "message.html", current, status=403, title=_("Users"),
                      message=_("Only an admin may see this page."))  # fmt: skip
    return await _listing(request, current)


@router.post("/admin/users")
async def create_user(request: Request) -> Response:
    current = await page(request)
    form = await form_of(request, current)
    if not current.user.is_admin:
        return render(request, "message.html", current, status=403, title=_("Users"),
                      message=_("Only an admin may add users."))  # fmt: skip
    try:
        data = UserCreate(
            email=form.get("email", ""),
            name=form.get("name", ""),
            password=form.get("password") or None,
            is_admin=form.get("is_admin") == "on",
        )
        async with database(request).write() as session:
            await users.create_user(session, data)
    except ValidationError as exc:
        problem = exc.errors()[0]
        field = ".".join(str(p) for p in problem["loc"])
        message = str(problem["msg"]).removeprefix("Value error, ")
        return await _listing(request, current, f"{field}: {message}", status=422)
    except CrmError as exc:
        return await _listing(request, current, str(exc), status=409)
    return redirect("/admin/users")
