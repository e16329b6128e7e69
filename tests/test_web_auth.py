"""Signing in to the web pages: argon2 passwords, session cookies, CSRF, throttling,
signing out, the admin's users page, and /docs without a CDN."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from crmcal.config import Settings
from crmcal.crm.tables import User
from crmcal.db import Database
from crmcal.web.app import create_app
from tests.cli_process import InProcess
from tests.conftest import Api, client_of, make_user, new_user, run
from tests.web_session import PASSWORD, sign_in

# What a password costs is part of what this module tests (tests/conftest.py).
pytestmark = pytest.mark.real_password_hashes


def csrf_of(client: TestClient, path: str = "/admin/users") -> str:
    found = re.search(r'name="csrf-token" content="([^"]+)"', client.get(path).text)
    assert found
    return found.group(1)


@pytest.fixture
def ann(admin: Api) -> Api:
    return new_user(admin, "ann@crm.test", password=PASSWORD)


def test_a_user_with_a_password_signs_in_and_out(client: TestClient, ann: Api) -> None:
    away = client.get("/admin/users", follow_redirects=False)
    assert away.headers["location"] == "/login?next=/admin/users"
    answer = sign_in(client, "Ann@CRM.test", next="/admin/users")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/admin/users"
    cookie = answer.headers["set-cookie"]
    assert "crmcal_session=" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert "Secure" not in cookie
    me = client.get("/api/v1/me")  # the pages' scripts use the API with the cookie
    assert me.status_code == 200
    assert me.json()["email"] == "ann@crm.test"
    assert me.json()["has_password"] is True
    stolen = client.cookies.get("crmcal_session")

    refused = client.post("/logout", data={}, follow_redirects=False)
    assert refused.status_code == 403  # no CSRF token
    answer = client.post("/logout", data={"csrf_token": csrf_of(client)}, follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/login"
    # The session is gone on the server, not only from this browser.
    client.cookies.set("crmcal_session", stolen)
    assert client.get("/api/v1/me").status_code == 401


def test_wrong_passwords_are_refused_then_throttled(client: TestClient, ann: Api) -> None:
    assert sign_in(client, "ann@crm.test", "wrong password").status_code == 401
    assert sign_in(client, "nobody@crm.test", PASSWORD).status_code == 401
    assert "crmcal_session" not in client.cookies
    for _ in range(4):
        assert sign_in(client, "ann@crm.test", "still wrong").status_code == 401
    throttled = sign_in(client, "ann@crm.test", PASSWORD)  # right, but too late
    assert throttled.status_code == 429
    assert "Too many failed sign-ins" in throttled.text
    assert "crmcal_session" not in client.cookies


def test_the_login_form_needs_its_own_token(client: TestClient, ann: Api) -> None:
    client.get("/login")
    form = {"email": "ann@crm.test", "password": PASSWORD, "login_token": "guess"}
    forged = client.post("/login", data=form, follow_redirects=False)
    assert forged.status_code == 403
    assert "crmcal_session" not in client.cookies


def test_passwords_are_stored_as_argon2_hashes(client: TestClient, ann: Api, db_url: str) -> None:
    async def stored() -> str | None:
        db = Database(db_url)
        try:
            async with db.read() as session:
                return await session.scalar(
                    select(User.password_hash).where(User.email == "ann@crm.test")
                )
        finally:
            await db.dispose()

    hashed = run(stored())
    assert hashed is not None
    assert hashed.startswith("$argon2id$")
    assert PASSWORD not in hashed


def test_state_changes_through_the_cookie_need_the_csrf_header(
    client: TestClient, ann: Api
) -> None:
    sign_in(client, "ann@crm.test")
    body = {"type": "call", "subject": "Call", "start": "2030-01-02T10:00:00Z"}
    refused = client.post("/api/v1/activities", json=body)
    assert refused.status_code == 403
    assert "CSRF" in refused.json()["detail"]
    token = csrf_of(client, "/admin/users")
    made = client.post("/api/v1/activities", json=body, headers={"X-CSRF-Token": token})
    assert made.status_code == 201, made.text
    # API tokens stay as they were: no CSRF token for a bearer.
    assert ann.get("/api/v1/me").status_code == 200


def test_users_get_passwords_through_the_api_and_the_admin_page(
    client: TestClient, admin: Api, db_url: str
) -> None:
    short = admin.post("/api/v1/users", json={"email": "x@crm.test", "name": "X",
                                              "password": "short"})  # fmt: skip
    assert short.status_code == 422
    tokenless = new_user(admin, "tok@crm.test")
    assert tokenless.get("/api/v1/me").json()["has_password"] is False
    assert sign_in(client, "tok@crm.test", "").status_code == 401
    changed = admin.patch(f"/api/v1/users/{tokenless.id}", json={"password": PASSWORD})
    assert changed.status_code == 200
    assert changed.json()["has_password"] is True
    assert "password" not in changed.json()

    make_user(db_url, email="boss@crm.test", name="Boss", is_admin=True, password=PASSWORD)
    assert sign_in(client, "boss@crm.test").status_code == 303
    page = client.get("/admin/users")
    assert page.status_code == 200
    assert "tok@crm.test" in page.text
    assert "activities.edit" in page.text
    added = client.post("/admin/users", data={"csrf_token": csrf_of(client), "name": "Cleo",
                                              "email": "cleo@crm.test", "password": PASSWORD},
                        follow_redirects=False)  # fmt: skip
    assert added.status_code == 303
    without_token = client.post("/admin/users", data={"name": "Eve", "email": "eve@crm.test"})
    assert without_token.status_code == 403
    client.cookies.clear()
    assert sign_in(client, "cleo@crm.test").status_code == 303
    assert client.get("/admin/users").status_code == 403  # not an admin


@pytest.fixture
def https_client(db_url: str) -> Iterator[TestClient]:
    settings = Settings(database_url=db_url, base_url="https://crm.example")
    app = create_app(settings, background_jobs=False)
    with TestClient(app, base_url="https://crm.example") as client:
        yield client


def test_the_cookie_is_secure_behind_https(https_client: TestClient, db_url: str) -> None:
    make_user(db_url, email="sec@crm.test", name="Sec", password=PASSWORD)
    answer = sign_in(https_client, "sec@crm.test")
    assert answer.status_code == 303
    assert "Secure" in answer.headers["set-cookie"]


def test_api_docs_and_favicon_are_served_without_a_cdn(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    assert "cdn" not in page.text.lower()
    assets = re.findall(r'(?:href|src)="(/[^"]+)"', page.text)
    assert any(a.endswith("swagger-ui-bundle.js") for a in assets)
    for asset in assets:
        assert client.get(asset).status_code == 200, asset
    redoc = client.get("/redoc")
    assert "cdn" not in redoc.text.lower()
    assert "fonts.googleapis" not in redoc.text
    icon = client.get("/favicon.ico")
    assert icon.status_code == 200
    assert icon.content[:4] == b"\x00\x00\x01\x00"


def test_consent_pages_take_the_clicked_account() -> None:
    """A click on an account button posts that address and an empty "another account" box;
    both emulators must read the clicked one (a browser sends both fields)."""
    from crmcal.emulators.google import create_app as google_app
    from crmcal.emulators.microsoft import create_app as microsoft_app

    for app, path in ((google_app(), "/o/oauth2/v2/auth"),
                      (microsoft_app(), "/common/oauth2/v2.0/authorize")):  # fmt: skip
        with TestClient(app) as emulator:
            assert emulator.get("/favicon.ico").status_code == 200
            query = {"client_id": "c", "redirect_uri": "http://127.0.0.1:1/cb",
                     "response_type": "code", "scope": "openid", "state": "s"}  # fmt: skip
            page = emulator.get(path, params=query)
            assert page.status_code == 200
            assert page.text.count('name="email"') == page.text.count("<button name=")
            posted = [*query.items(), ("email", "pat@example.test"), ("other_email", "")]
            answer = emulator.post(path, data=dict(posted), follow_redirects=False)
            assert answer.status_code == 302, answer.text
            assert answer.headers["location"].startswith("http://127.0.0.1:1/cb?code=")


def test_users_create_sets_a_password_from_the_command_line(
    crmcal_here: InProcess, tmp_path: Any
) -> None:
    db_url = f"sqlite:///{tmp_path / 'cli.db'}"
    assert crmcal_here("db", "upgrade", CRMCAL_DATABASE_URL=db_url).returncode == 0
    made = crmcal_here("users", "create", "--email", "dan@crm.test", "--name", "Dan",
                       "--password", PASSWORD, CRMCAL_DATABASE_URL=db_url)  # fmt: skip
    assert made.returncode == 0, made.stderr
    short = crmcal_here("users", "create", "--email", "x@crm.test", "--name", "X",
                        "--password", "short", CRMCAL_DATABASE_URL=db_url)  # fmt: skip
    assert short.returncode == 1
    assert short.stderr.startswith("error: --password:")
    with client_of(Settings(database_url=db_url)) as client:
        assert sign_in(client, "dan@crm.test").status_code == 303


def test_an_unknown_address_is_verified_against_a_hash_of_the_same_cost() -> None:
    """A sign-in with an unknown address verifies a hash written in the module: one of
    the hasher's own parameters (memory, passes, lanes), so that it costs what a user's
    password costs and the answer's time does not tell which addresses exist."""
    from crmcal.crm import passwords

    assert not passwords._hasher.check_needs_rehash(passwords._DUMMY)
    assert passwords.verify(None, "not a password of anyone's") is False
    assert passwords.verify(passwords.hash_password("right horse"), "right horse") is True


def test_importing_what_a_worker_runs_computes_no_password_hash() -> None:
    """Each process that imports the CRM (a worker, the server) computed a password hash
    as it imported it: 64 MB of argon2's memory at once, a worker's highest moment."""
    import subprocess
    import sys

    probe = (
        "import argon2, sys\n"
        "made = []\n"
        "argon2.PasswordHasher.hash = lambda self, *a, **k: made.append(a)\n"
        "import crmcal.cli, crmcal.jobs.queue, crmcal.web.app\n"
        "assert 'crmcal.crm.passwords' in sys.modules\n"
        "print(len(made))\n"
    )
    found = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert found.stdout.strip() == "0"
