"""Google connections through the REST API, against the Google emulator."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient

from crmcal.config import Settings
from crmcal.web.app import create_app
from tests.conftest import Api, make_user
from tests.google_emulator import GoogleEmulator

V1 = "/api/v1"
CRM = "https://crm.example"


@pytest.fixture
def sam(db_url: str, google_emulator: GoogleEmulator) -> Iterator[Api]:
    settings = Settings(database_url=db_url, secret_key="test-key", base_url=CRM,
                        google_api_url=google_emulator.url, google_oauth_url=google_emulator.url,
                        google_client_id="crmcal-test-client")  # fmt: skip
    with TestClient(create_app(settings, background_jobs=False)) as client:
        user_id, token = make_user(db_url, email="sam@crm.test", name="Sam")
        yield Api(client, token, user_id)


def account(emulator: GoogleEmulator, email: str) -> str:
    return emulator.state.create_account(email)["refresh_token"]


def test_connecting_lists_the_calendars_and_picks_the_primary(
    sam: Api, google_emulator: GoogleEmulator
) -> None:
    refresh = account(google_emulator, "sam.g@example.test")
    state = google_emulator.state
    state.add_calendar("sam.g@example.test", "holidays@group.test", "Holidays", role="reader")
    response = sam.post(f"{V1}/connections", json={"provider": "google", "refresh_token": refresh})
    assert response.status_code == 201, response.text
    conn = response.json()
    assert (conn["provider"], conn["account"], conn["calendar_id"]) == (
        "google",
        "sam.g@example.test",
        "sam.g@example.test",
    )
    assert "refresh_token" not in response.text
    assert refresh not in response.text
    calendars = sam.get(f"{V1}/connections/{conn['id']}/calendars").json()["items"]
    assert {(c["id"], c["writable"], c["primary"]) for c in calendars} == {
        ("sam.g@example.test", True, True), ("holidays@group.test", False, False)
    }  # fmt: skip


@pytest.mark.parametrize(
    ("body", "expected"),
    [({"provider": "google"}, "needs a refresh_token"),
     ({"provider": "google", "refresh_token": "never-issued"}, "reconnect required")],
)  # fmt: skip
def test_bad_grants_are_refused_at_once(sam: Api, body: dict[str, str], expected: str) -> None:
    response = sam.post(f"{V1}/connections", json=body)
    assert response.status_code == 422
    assert expected in response.json()["detail"]


def test_a_revoked_grant_puts_the_connection_in_error(
    sam: Api, google_emulator: GoogleEmulator
) -> None:
    refresh = account(google_emulator, "revoked@example.test")
    conn = sam.post(f"{V1}/connections", json={"provider": "google", "refresh_token": refresh})
    assert conn.status_code == 201, conn.text
    start = (dt.datetime.now(dt.UTC) + dt.timedelta(days=2)).isoformat()
    sam.post(f"{V1}/activities", json={"type": "call", "subject": "Call Ann", "start": start})
    assert sam.post(f"{V1}/connections/{conn.json()['id']}/sync").json()["created"] == 1
    revoked = httpx.post(f"{google_emulator.url}/revoke", params={"token": refresh})
    assert revoked.status_code == 200
    google_emulator.state.expire_access_tokens()
    failed = sam.post(f"{V1}/connections/{conn.json()['id']}/sync")
    assert failed.status_code == 409
    status = sam.get(f"{V1}/connections/{conn.json()['id']}/status").json()
    assert status["state"] == "error"
    assert "reconnect required" in status["last_error"]


# --- connecting by OAuth -----------------------------------------------------------------


def grant_in_browser(authorize_url: str, email: str) -> str:
    """What a person does on Google's consent screen; answers where Google sends them."""
    page = httpx.get(authorize_url)
    assert page.status_code == 200, page.text
    query = {k: v[0] for k, v in parse_qs(urlsplit(authorize_url).query).items()}
    answer = httpx.post(authorize_url.split("?")[0], data={**query, "email": email})
    assert answer.status_code == 302, answer.text
    return answer.headers["location"]


def test_connecting_through_googles_consent_screen(
    sam: Api, google_emulator: GoogleEmulator
) -> None:
    started = sam.get("/oauth/google/start", headers={"Accept": "application/json"})
    assert started.status_code == 200, started.text
    url = started.json()["authorize_url"]
    query = parse_qs(urlsplit(url).query)
    assert url.startswith(f"{google_emulator.url}/o/oauth2/v2/auth?")
    assert query["redirect_uri"] == [f"{CRM}/oauth/google/callback"]
    assert (query["code_challenge_method"], query["access_type"]) == (["S256"], ["offline"])
    assert query["client_id"] == ["crmcal-test-client"]
    redirect = sam.get("/oauth/google/start", follow_redirects=False)
    assert (redirect.status_code, redirect.headers["location"].split("?")[0]) == (
        302, f"{google_emulator.url}/o/oauth2/v2/auth"
    )  # fmt: skip

    back = grant_in_browser(url, "consented@example.test")
    assert back.startswith(f"{CRM}/oauth/google/callback?")
    answer = sam.client.get(back.removeprefix(CRM), headers={"Accept": "application/json"})
    assert answer.status_code == 201, answer.text
    conn = answer.json()
    assert (conn["provider"], conn["account"], conn["user_id"]) == (
        "google", "consented@example.test", sam.id
    )  # fmt: skip
    # The grant works: a sync reaches the account's calendar.
    assert sam.post(f"{V1}/connections/{conn['id']}/sync").status_code == 200
    # The same answer cannot be replayed; a second connection is refused while one is active.
    assert sam.client.get(back.removeprefix(CRM)).status_code == 400
    assert sam.get("/oauth/google/start").status_code == 409


@pytest.mark.parametrize(
    ("query", "expected"),
    [("error=access_denied", "did not complete"), ("code=x", "code and state"),
     ("code=x&state=forged", "not one crmcal made")],
)  # fmt: skip
def test_a_bad_callback_connects_nothing(sam: Api, query: str, expected: str) -> None:
    response = sam.client.get(f"/oauth/google/callback?{query}")
    assert response.status_code == 400
    assert expected in response.json()["detail"]
    assert sam.get(f"{V1}/connections").json()["items"] == []


def test_starting_needs_a_token_and_the_permission(
    sam: Api, google_emulator: GoogleEmulator
) -> None:
    assert sam.client.get("/oauth/google/start").status_code == 401
