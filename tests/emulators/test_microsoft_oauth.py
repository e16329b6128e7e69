"""OAuth 2.0 on the Graph emulator: Entra ID's consent, codes with PKCE, rotating refresh
tokens, revocation of sign-in sessions, and Entra's error bodies."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient
from msgraph.generated.users.item.revoke_sign_in_sessions.revoke_sign_in_sessions_post_response import (  # noqa: E501
    RevokeSignInSessionsPostResponse,
)

from tests.emulators.conftest import Clock, Graph, code
from tests.emulators.graph_models import check

REDIRECT = "http://127.0.0.1:8000/oauth/microsoft/callback"
VERIFIER = "a-verifier-that-is-long-enough-to-be-a-real-pkce-verifier-0123456789"
SCOPE = "offline_access https://graph.microsoft.com/Calendars.ReadWrite"
AUTHORIZE = "/common/oauth2/v2.0/authorize"
TOKEN = "/common/oauth2/v2.0/token"


def challenge(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")


def consent(
    client: TestClient, email: str = "ann@example.test", tenant: str = "common", **extra: str
) -> dict[str, str]:
    params = {
        "client_id": "crmcal-client",
        "redirect_uri": REDIRECT,
        "response_type": "code",
        "scope": SCOPE,
        "state": "st4te",
        "code_challenge": challenge(VERIFIER),
        "code_challenge_method": "S256",
        **extra,
    }
    authorize = f"/{tenant}/oauth2/v2.0/authorize"
    page = client.get(authorize, params=params)
    assert page.status_code == 200, page.text
    assert "Pick an account" in page.text
    answer = client.post(authorize, data={**params, "email": email}, follow_redirects=False)
    assert answer.status_code == 302
    location = urlsplit(answer.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT
    return {k: v[0] for k, v in parse_qs(location.query).items()}


def trade(client: TestClient, code_: str, verifier: str = VERIFIER, **extra: str) -> Any:
    return client.post(
        TOKEN,
        data={
            "grant_type": "authorization_code",
            "code": code_,
            "code_verifier": verifier,
            "redirect_uri": REDIRECT,
            "client_id": "crmcal-client",
            "scope": SCOPE,
            **extra,
        },
    )


def refresh(client: TestClient, token: str) -> Any:
    return client.post(
        TOKEN,
        data={
            "grant_type": "refresh_token",
            "refresh_token": token,
            "client_id": "crmcal-client",
            "scope": SCOPE,
        },
    )


def entra_error(response: Any) -> tuple[int, str, int]:
    body = response.json()
    assert set(body) >= {
        "error",
        "error_description",
        "error_codes",
        "timestamp",
        "trace_id",
        "correlation_id",
    }
    assert body["error_description"].startswith(f"AADSTS{body['error_codes'][0]}: ")
    return response.status_code, body["error"], body["error_codes"][0]


def status_of(client: TestClient, access_token: str) -> int:
    return client.get("/v1.0/me", headers={"Authorization": f"Bearer {access_token}"}).status_code


def test_consent_then_code_with_pkce_for_tokens(graph: Graph) -> None:
    client = graph.client
    answer = consent(client)
    assert answer["state"] == "st4te"
    response = trade(client, answer["code"])
    assert response.status_code == 200, response.text
    tokens = response.json()
    assert set(tokens) == {
        "token_type",
        "scope",
        "expires_in",
        "ext_expires_in",
        "access_token",
        "refresh_token",
    }
    assert (tokens["token_type"], tokens["scope"]) == (
        "Bearer",
        "offline_access Calendars.ReadWrite",
    )
    assert tokens["expires_in"] > 3000
    me = client.get("/v1.0/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert me.json()["mail"] == "ann@example.test"
    assert entra_error(trade(client, answer["code"])) == (400, "invalid_grant", 54005)


@pytest.mark.parametrize(
    "tenant",
    [
        "organizations",
        "consumers",
        "contoso.onmicrosoft.com",
        "9188040d-6c67-4c5b-b112-36a304b66dad",
    ],
)
def test_any_tenant_form_is_accepted(graph: Graph, tenant: str) -> None:
    answer = consent(graph.client, tenant=tenant)
    response = graph.client.post(
        f"/{tenant}/oauth2/v2.0/token",
        data={
            "grant_type": "authorization_code",
            "code": answer["code"],
            "code_verifier": VERIFIER,
            "redirect_uri": REDIRECT,
            "client_id": "crmcal-client",
        },
    )
    assert response.status_code == 200


def test_refresh_tokens_come_only_with_offline_access(graph: Graph) -> None:
    answer = consent(graph.client, scope="Calendars.ReadWrite")
    tokens = trade(graph.client, answer["code"], scope="Calendars.ReadWrite").json()
    assert "refresh_token" not in tokens
    assert status_of(graph.client, tokens["access_token"]) == 200


def test_bad_trades_get_entras_errors(graph: Graph, clock: Clock) -> None:
    client = graph.client
    wrong_verifier = trade(client, consent(client)["code"], verifier="not-the-verifier")
    assert entra_error(wrong_verifier) == (400, "invalid_grant", 501481)
    wrong_redirect = trade(client, consent(client)["code"], redirect_uri="http://evil.test/cb")
    assert entra_error(wrong_redirect) == (400, "invalid_grant", 50148)
    assert entra_error(trade(client, "0.Anever-issued")) == (400, "invalid_grant", 70000)
    late = consent(client)["code"]
    clock.now += dt.timedelta(minutes=11)
    assert entra_error(trade(client, late)) == (400, "invalid_grant", 70008)
    unsupported = client.post(TOKEN, data={"grant_type": "password"})
    assert entra_error(unsupported) == (400, "unsupported_grant_type", 70003)
    assert entra_error(client.post(TOKEN, data={})) == (400, "invalid_request", 900144)
    assert client.get(AUTHORIZE, params={"client_id": "x"}).status_code == 400


def test_refresh_tokens_rotate_and_old_ones_keep_working(graph: Graph, clock: Clock) -> None:
    client = graph.client
    tokens = trade(client, consent(client)["code"]).json()
    clock.now += dt.timedelta(hours=1, seconds=1)
    assert status_of(client, tokens["access_token"]) == 401
    first = refresh(client, tokens["refresh_token"]).json()
    assert first["refresh_token"] != tokens["refresh_token"]
    assert status_of(client, first["access_token"]) == 200
    second = refresh(client, tokens["refresh_token"])  # the old one still works
    assert second.status_code == 200
    assert entra_error(refresh(client, "0.Anever-issued")) == (400, "invalid_grant", 9002313)
    clock.now += dt.timedelta(days=91)
    assert entra_error(refresh(client, first["refresh_token"])) == (400, "invalid_grant", 700082)


def test_revoking_sign_in_sessions_ends_every_token(graph: Graph) -> None:
    client = graph.client
    tokens = trade(client, consent(client, email=graph.email)["code"]).json()
    revoked = graph.ok("POST", "/me/revokeSignInSessions")
    assert check(RevokeSignInSessionsPostResponse, revoked).value is True
    for access in (tokens["access_token"], graph.token):
        response = client.get("/v1.0/me", headers={"Authorization": f"Bearer {access}"})
        assert code(response) == (401, "InvalidAuthenticationToken")
        assert "TokenIssuedBeforeRevocationTimestamp" in response.json()["error"]["message"]
    for old in (tokens["refresh_token"], graph.refresh_token):
        assert entra_error(refresh(client, old)) == (400, "invalid_grant", 50173)
    # Signing in again works.
    fresh = trade(client, consent(client, email=graph.email)["code"]).json()
    assert status_of(client, fresh["access_token"]) == 200
    counts = graph.admin("GET", "/requests")
    assert counts["oauth.token"] == 4
