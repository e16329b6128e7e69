"""OAuth 2.0 on the Google emulator: consent, code with PKCE, refresh, revocation, expiry."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient

from crmcal.emulators.google import GoogleState, create_app
from tests.emulators.google_client import Clock

REDIRECT = "http://127.0.0.1:8000/oauth/google/callback"
VERIFIER = "a-verifier-that-is-long-enough-to-be-a-real-pkce-verifier-0123456789"


def challenge(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def client(clock: Clock) -> Iterator[TestClient]:
    with TestClient(create_app(GoogleState(clock=clock))) as test_client:
        yield test_client


def consent(client: TestClient, email: str = "sam@example.test", **extra: str) -> dict[str, str]:
    params = {"client_id": "crmcal-client", "redirect_uri": REDIRECT, "response_type": "code",
              "scope": "https://www.googleapis.com/auth/calendar", "state": "st4te",
              "code_challenge": challenge(VERIFIER), "code_challenge_method": "S256",
              "access_type": "offline", **extra}  # fmt: skip
    page = client.get("/o/oauth2/v2/auth", params=params)
    assert page.status_code == 200
    assert "crmcal wants to access your Google Calendar" in page.text
    answer = client.post("/o/oauth2/v2/auth", data={**params, "email": email},
                         follow_redirects=False)  # fmt: skip
    assert answer.status_code == 302
    location = urlsplit(answer.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT
    return {k: v[0] for k, v in parse_qs(location.query).items()}


def trade(client: TestClient, code: str, verifier: str = VERIFIER) -> tuple[int, dict[str, Any]]:
    response = client.post("/token", data={
        "grant_type": "authorization_code", "code": code, "code_verifier": verifier,
        "redirect_uri": REDIRECT, "client_id": "crmcal-client",
    })  # fmt: skip
    return response.status_code, response.json()


def calendars(client: TestClient, access_token: str) -> int:
    return client.get("/calendar/v3/users/me/calendarList",
                      headers={"Authorization": f"Bearer {access_token}"}).status_code  # fmt: skip


def test_consent_code_with_pkce_then_tokens(client: TestClient) -> None:
    answer = consent(client)
    assert answer["state"] == "st4te"
    status, tokens = trade(client, answer["code"])
    assert status == 200, tokens
    assert tokens["token_type"] == "Bearer"
    assert tokens["expires_in"] > 3000
    assert calendars(client, tokens["access_token"]) == 200
    assert trade(client, answer["code"])[1]["error"] == "invalid_grant"  # codes are single-use


def test_a_wrong_verifier_or_redirect_is_refused(client: TestClient) -> None:
    assert trade(client, consent(client)["code"], verifier="not-the-verifier") == (
        400,
        {"error": "invalid_grant", "error_description": "Invalid code verifier."},
    )
    code = consent(client)["code"]
    response = client.post("/token", data={"grant_type": "authorization_code", "code": code,
                                           "code_verifier": VERIFIER,
                                           "redirect_uri": "http://evil.test/cb"})  # fmt: skip
    assert response.json()["error"] == "redirect_uri_mismatch"


def test_refresh_expiry_and_revocation(client: TestClient, clock: Clock) -> None:
    _, tokens = trade(client, consent(client)["code"])
    clock.now += dt.timedelta(hours=1, seconds=1)
    assert calendars(client, tokens["access_token"]) == 401
    refreshed = client.post("/token", data={"grant_type": "refresh_token",
                                            "refresh_token": tokens["refresh_token"]})  # fmt: skip
    assert refreshed.status_code == 200
    access = refreshed.json()["access_token"]
    assert calendars(client, access) == 200
    assert client.post("/revoke", params={"token": tokens["refresh_token"]}).status_code == 200
    assert calendars(client, access) == 401
    again = client.post("/token", data={"grant_type": "refresh_token",
                                        "refresh_token": tokens["refresh_token"]})  # fmt: skip
    assert (again.status_code, again.json()["error"]) == (400, "invalid_grant")


def test_the_admin_api_expires_access_tokens(client: TestClient) -> None:
    tokens = client.post("/_emulator/accounts", json={"email": "a@b.test"}).json()
    assert calendars(client, tokens["access_token"]) == 200
    assert client.post("/_emulator/expire-access-tokens").status_code == 204
    assert calendars(client, tokens["access_token"]) == 401
