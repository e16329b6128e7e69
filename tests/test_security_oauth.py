"""OAuth sign-ins are bound to the browser that started them, and complete once."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from crmcal.config import Settings
from crmcal.web.app import create_app
from tests.conftest import Api, make_user
from tests.google_emulator import GoogleEmulator
from tests.served import grant_in_browser

V1 = "/api/v1"
CRM = "https://crm.example"


@pytest.fixture
def app_settings(db_url: str, google_emulator: GoogleEmulator) -> Settings:
    return Settings(database_url=db_url, secret_key="k" * 43, base_url=CRM,
                    google_api_url=google_emulator.url, google_oauth_url=google_emulator.url,
                    google_client_id="crmcal-test-client")  # fmt: skip


@pytest.fixture
def browsers(app_settings: Settings, db_url: str) -> Iterator[tuple[Api, TestClient]]:
    """Sam's browser, and another one (an attacker's victim) on the same server."""
    app = create_app(app_settings, background_jobs=False)
    with TestClient(app, base_url=CRM) as sams, TestClient(app, base_url=CRM) as other:
        user_id, token = make_user(db_url, email="sam@crm.test", name="Sam")
        yield Api(sams, token, user_id), other


def consent(sam: Api, email: str) -> str:
    started = sam.get("/oauth/google/start", headers={"Accept": "application/json"})
    assert started.status_code == 200, started.text
    cookie = started.headers["set-cookie"].lower()
    assert "httponly" in cookie
    assert "samesite=lax" in cookie
    assert "secure" in cookie
    return grant_in_browser(started.json()["authorize_url"], email).removeprefix(CRM)


def test_another_browser_cannot_complete_the_sign_in(
    browsers: tuple[Api, TestClient], google_emulator: GoogleEmulator
) -> None:
    sam, victim = browsers
    email = f"victim-{uuid.uuid4().hex[:8]}@example.test"
    google_emulator.state.create_account(email)
    # Sam sends his consent URL to a victim, who signs in with their Google account.
    back = consent(sam, email)
    answer = victim.get(back, headers={"Accept": "application/json"})
    assert answer.status_code == 400
    assert "another browser" in answer.json()["detail"]
    assert sam.get(f"{V1}/connections").json()["items"] == []


def test_a_sign_in_completes_once_and_names_the_crmcal_user(
    browsers: tuple[Api, TestClient], google_emulator: GoogleEmulator
) -> None:
    sam, _ = browsers
    email = f"sam-{uuid.uuid4().hex[:8]}@example.test"
    google_emulator.state.create_account(email)
    back = consent(sam, email)
    kept = dict(sam.client.cookies)
    page = sam.client.get(back)
    assert page.status_code == 201, page.text
    assert "for the crmcal user <b>sam@crm.test</b>" in page.text
    # The same answer again, even with the browser's cookie as it was: refused.
    sam.client.cookies.update(kept)
    again = sam.client.get(back, headers={"Accept": "application/json"})
    assert again.status_code == 400
    assert "completed already" in again.json()["detail"]
