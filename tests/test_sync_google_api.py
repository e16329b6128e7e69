"""Google connections through the REST API, against the Google emulator."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from crmcal.config import Settings
from crmcal.db import Database
from crmcal.sync.tables import Connection
from crmcal.tls import tls
from crmcal.web.app import create_app
from tests import plain
from tests.conftest import Api, client_of, make_user, run
from tests.google_emulator import GoogleEmulator
from tests.served import bound_socket, grant_in_browser, served_app, wait_for

V1 = "/api/v1"
CRM = "https://crm.example"


@pytest.fixture
def sam(db_url: str, google_emulator: GoogleEmulator) -> Iterator[Api]:
    settings = Settings(database_url=db_url, secret_key="test-key", base_url=CRM,
                        google_api_url=google_emulator.url, google_oauth_url=google_emulator.url,
                        google_client_id="crmcal-test-client")  # fmt: skip
    # The browser talks to crmcal at its base URL (https: the OAuth cookie is Secure).
    with client_of(settings, base_url=CRM) as client:
        user_id, token = make_user(db_url, email="sam@crm.test", name="Sam")
        yield Api(client, token, user_id)


@pytest.fixture
def email() -> str:
    """An address no other test uses: the emulator lives as long as the test session."""
    return f"user-{uuid.uuid4().hex[:10]}@example.test"


def account(emulator: GoogleEmulator, email: str) -> str:
    return emulator.state.create_account(email)["refresh_token"]


def test_connecting_lists_the_calendars_and_picks_the_primary(
    sam: Api, google_emulator: GoogleEmulator, email: str
) -> None:
    refresh = account(google_emulator, email)
    state = google_emulator.state
    state.add_calendar(email, "holidays@group.test", "Holidays", role="reader")
    response = sam.post(f"{V1}/connections", json={"provider": "google", "refresh_token": refresh})
    assert response.status_code == 201, response.text
    conn = response.json()
    assert (conn["provider"], conn["account"], conn["calendar_id"]) == (
        "google",
        email,
        email,
    )
    assert "refresh_token" not in response.text
    assert refresh not in response.text
    calendars = sam.get(f"{V1}/connections/{conn['id']}/calendars").json()["items"]
    assert {(c["id"], c["writable"], c["primary"]) for c in calendars} == {
        (email, True, True), ("holidays@group.test", False, False)
    }  # fmt: skip


def test_a_connection_keeps_its_grant_when_the_body_also_carries_a_password(
    sam: Api, google_emulator: GoogleEmulator, email: str
) -> None:
    # A client that fills every field of the document's one body: the CalDAV ones are
    # another kind's and ignored; the grant is what the connection signs in with later.
    body = {"provider": "google", "refresh_token": account(google_emulator, email),
            "url": "https://dav.example/", "username": "sam", "password": "no-grant"}  # fmt: skip
    made = sam.post(f"{V1}/connections", json=body)
    assert made.status_code == 201, made.text
    calendars = sam.get(f"{V1}/connections/{made.json()['id']}/calendars")
    assert calendars.status_code == 200, calendars.text
    assert [c["id"] for c in calendars.json()["items"]] == [email]


def test_a_revoked_grant_puts_the_connection_in_error(
    sam: Api, google_emulator: GoogleEmulator, email: str
) -> None:
    refresh = account(google_emulator, email)
    conn = sam.post(f"{V1}/connections", json={"provider": "google", "refresh_token": refresh})
    assert conn.status_code == 201, conn.text
    start = (dt.datetime.now(dt.UTC) + dt.timedelta(days=2)).isoformat()
    sam.post(f"{V1}/activities", json={"type": "call", "subject": "Call Ann", "start": start})
    assert sam.post(f"{V1}/connections/{conn.json()['id']}/sync").json()["created"] == 1
    revoked = plain.post(f"{google_emulator.url}/revoke", params={"token": refresh}, timeout=30)
    assert revoked.status_code == 200
    google_emulator.state.expire_access_tokens()
    failed = sam.post(f"{V1}/connections/{conn.json()['id']}/sync")
    assert failed.status_code == 409
    status = sam.get(f"{V1}/connections/{conn.json()['id']}/status").json()
    assert status["state"] == "error"
    assert "reconnect required" in status["last_error"]


# --- connecting by OAuth -----------------------------------------------------------------


def test_connecting_through_googles_consent_screen(
    sam: Api, google_emulator: GoogleEmulator, email: str
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

    back = grant_in_browser(url, email)
    assert back.startswith(f"{CRM}/oauth/google/callback?")
    answer = sam.client.get(back.removeprefix(CRM), headers={"Accept": "application/json"})
    assert answer.status_code == 201, answer.text
    conn = answer.json()
    assert (conn["provider"], conn["account"], conn["user_id"]) == (
        "google", email, sam.id
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


# --- push notifications -------------------------------------------------------------------


@pytest.fixture
def served_crmcal(db_url: str, google_emulator: GoogleEmulator) -> Iterator[tuple[str, str]]:
    """crmcal with its scheduler on a port of its own, polling only hourly: (URL, API token)."""
    _, token = make_user(db_url, email="push@crm.test", name="Push")
    sock = bound_socket()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    settings = Settings(database_url=db_url, secret_key="test-key", base_url=url,
                        poll_seconds=3600, google_api_url=google_emulator.url,
                        google_oauth_url=google_emulator.url)  # fmt: skip
    with served_app(create_app(settings), sock):
        yield url, token


def test_an_event_made_in_google_arrives_by_push(
    served_crmcal: tuple[str, str], google_emulator: GoogleEmulator, email: str
) -> None:
    url, token = served_crmcal
    api = httpx.Client(
        verify=tls(),
        base_url=f"{url}{V1}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    tokens = google_emulator.state.create_account(email)
    body = {"provider": "google", "refresh_token": tokens["refresh_token"]}
    created = api.post("/connections", json=body)
    assert created.status_code == 201, created.text

    def channel() -> Any:
        listed = plain.get(f"{google_emulator.url}/_emulator/channels", timeout=30).json()[
            "channels"
        ]
        return [c for c in listed if c["calendar_id"] == email]

    (opened,) = wait_for(channel)  # the first sync opened it
    assert opened["address"] == f"{url}/webhooks/google"
    start = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).replace(microsecond=0)
    event = {"summary": "Booked in Google", "start": {"dateTime": start.isoformat()},
             "end": {"dateTime": (start + dt.timedelta(hours=1)).isoformat()}}  # fmt: skip
    made = plain.post(f"{google_emulator.url}/calendar/v3/calendars/primary/events", json=event,
                      headers={"Authorization": f"Bearer {tokens['access_token']}"},
                      timeout=30)  # fmt: skip
    assert made.status_code == 200, made.text

    def arrived() -> Any:
        items = api.get("/activities").json()["items"]
        return [a for a in items if a["subject"] == "Booked in Google"]

    # Polling is hourly, so an arrival within the minute came by the notification.
    wait_for(arrived)

    # A notification for a channel that is not ours changes nothing.
    forged = plain.post(f"{url}/webhooks/google", headers={
        "X-Goog-Channel-ID": opened["id"], "X-Goog-Channel-Token": "guess",
        "X-Goog-Resource-State": "exists"}, timeout=30)  # fmt: skip
    assert forged.status_code == 404
    # Stopping the connection closes the channel (once it has answered).
    connection_id = created.json()["id"]
    assert api.post(f"/connections/{connection_id}/stop").status_code == 200
    wait_for(lambda: channel() == [])


def test_a_failed_google_connection_resumes_through_consent(
    sam: Api, google_emulator: GoogleEmulator, email: str
) -> None:
    refresh = account(google_emulator, email)
    conn = sam.post(f"{V1}/connections", json={"provider": "google", "refresh_token": refresh})
    connection_id = conn.json()["id"]
    start = (dt.datetime.now(dt.UTC) + dt.timedelta(days=2)).isoformat()
    sam.post(f"{V1}/activities", json={"type": "call", "subject": "Call Ann", "start": start})
    assert sam.post(f"{V1}/connections/{connection_id}/sync").json()["created"] == 1
    plain.post(f"{google_emulator.url}/revoke", params={"token": refresh}, timeout=30)
    google_emulator.state.expire_access_tokens()
    assert sam.post(f"{V1}/connections/{connection_id}/sync").status_code == 409

    def resume_as(who: str) -> Any:
        url = sam.get("/oauth/google/start", params={"connection_id": connection_id},
                      headers={"Accept": "application/json"}).json()["authorize_url"]  # fmt: skip
        back = grant_in_browser(url, who)
        return sam.client.get(back.removeprefix(CRM), headers={"Accept": "application/json"})

    wrong = resume_as(f"other-{email}")
    assert wrong.status_code == 400
    assert "sign in with that account" in wrong.json()["detail"]
    resumed = resume_as(email)
    assert resumed.status_code == 201, resumed.text
    assert (resumed.json()["id"], resumed.json()["state"]) == (connection_id, "active")
    counts = sam.post(f"{V1}/connections/{connection_id}/sync").json()
    assert (counts["created"], counts["deleted"]) == (0, 0)  # the same links: no copies
    listed = plain.get(f"{google_emulator.url}/calendar/v3/calendars/{email}/events",
                       headers={"Authorization": "Bearer " + google_emulator.state.create_account(
                           email)["access_token"]}, timeout=30).json()["items"]  # fmt: skip
    assert [e["summary"] for e in listed] == ["Call Ann"]


def test_an_event_moved_out_and_back_trashes_and_restores_its_activity(
    sam: Api, google_emulator: GoogleEmulator, email: str
) -> None:
    tokens = google_emulator.state.create_account(email)
    other = f"team-{uuid.uuid4().hex[:8]}@group.calendar.google.com"
    google_emulator.state.add_calendar(email, other, "Team")
    body = {"provider": "google", "refresh_token": tokens["refresh_token"]}
    connection_id = sam.post(f"{V1}/connections", json=body).json()["id"]
    auth = {"Authorization": f"Bearer {tokens['access_token']}"}
    google = httpx.Client(
        verify=tls(), base_url=f"{google_emulator.url}/calendar/v3", headers=auth, timeout=30
    )
    start = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).replace(microsecond=0)
    event = google.post("/calendars/primary/events", json={
        "summary": "Quarterly review", "start": {"dateTime": start.isoformat()},
        "end": {"dateTime": (start + dt.timedelta(hours=1)).isoformat()}}).json()  # fmt: skip
    sam.post(f"{V1}/connections/{connection_id}/sync")
    (activity,) = sam.get(f"{V1}/activities").json()["items"]

    moved = google.post(f"/calendars/primary/events/{event['id']}/move",
                        params={"destination": other})  # fmt: skip
    assert moved.status_code == 200, moved.text
    assert sam.post(f"{V1}/connections/{connection_id}/sync").json()["deleted"] == 1
    assert sam.get(f"{V1}/activities").json()["items"] == []

    back = google.post(f"/calendars/{other}/events/{event['id']}/move",
                       params={"destination": email})  # fmt: skip
    assert back.status_code == 200, back.text
    sam.post(f"{V1}/connections/{connection_id}/sync")
    (restored,) = sam.get(f"{V1}/activities").json()["items"]
    assert (restored["id"], restored["subject"]) == (activity["id"], "Quarterly review")
    assert sam.get(f"{V1}/activities", params={"deleted": "true"}).json()["items"] == []


def test_push_channels_are_renewed_before_they_expire(
    sam: Api, google_emulator: GoogleEmulator, email: str, db_url: str
) -> None:
    refresh = account(google_emulator, email)
    body = {"provider": "google", "refresh_token": refresh}
    connection_id = sam.post(f"{V1}/connections", json=body).json()["id"]

    def channels() -> list[str]:
        return [c.id for c in google_emulator.state.channels.by_id.values()
                if c.calendar_id == email]  # fmt: skip

    sam.post(f"{V1}/connections/{connection_id}/sync")
    (first,) = channels()
    sam.post(f"{V1}/connections/{connection_id}/sync")
    assert channels() == [first]  # a week left: kept

    async def expiring_soon() -> None:
        db = Database(db_url)
        try:
            async with db.write() as session:
                conn = await session.get(Connection, connection_id)
                assert conn is not None
                conn.push_expires_at = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)
        finally:
            await db.dispose()

    run(expiring_soon())
    sam.post(f"{V1}/connections/{connection_id}/sync")
    (second,) = channels()  # a new one, and the old one closed
    assert second != first


def test_new_activities_go_to_google_in_batches(
    sam: Api, google_emulator: GoogleEmulator, email: str
) -> None:
    tokens = google_emulator.state.create_account(email)
    body = {"provider": "google", "refresh_token": tokens["refresh_token"]}
    connection_id = sam.post(f"{V1}/connections", json=body).json()["id"]
    start = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).replace(microsecond=0)
    for n in range(120):
        moment = (start + dt.timedelta(hours=n)).isoformat()
        sam.post(f"{V1}/activities", json={"type": "call", "subject": f"Call {n}", "start": moment})
    state = google_emulator.state
    before = dict(state.requests)
    assert sam.post(f"{V1}/connections/{connection_id}/sync").json()["created"] == 120

    def sent(kind: str) -> int:
        return state.requests.get(kind, 0) - before.get(kind, 0)

    assert (sent("batch"), sent("events.insert")) == (3, 120)
    calendar = state.calendars[email]
    assert sorted(e.body["summary"] for e in calendar.events.values()) == sorted(
        f"Call {n}" for n in range(120)
    )
    # Nothing left to send: the next sync writes nothing.
    again = sam.post(f"{V1}/connections/{connection_id}/sync").json()
    assert (again["created"], again["updated"]) == (0, 0)
    assert sent("batch") == 3


def test_an_event_deleted_in_google_while_its_activity_changed_comes_back(
    sam: Api, google_emulator: GoogleEmulator, email: str
) -> None:
    tokens = google_emulator.state.create_account(email)
    body = {"provider": "google", "refresh_token": tokens["refresh_token"]}
    connection_id = sam.post(f"{V1}/connections", json=body).json()["id"]
    start = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).replace(microsecond=0)
    activity = sam.post(f"{V1}/activities", json={
        "type": "call", "subject": "Call Ann", "start": start.isoformat()}).json()  # fmt: skip
    sam.post(f"{V1}/connections/{connection_id}/sync")
    (event_id,) = google_emulator.state.calendars[email].events
    auth = {"Authorization": f"Bearer {tokens['access_token']}"}
    deleted = plain.delete(
        f"{google_emulator.url}/calendar/v3/calendars/primary/events/{event_id}",
        headers=auth,
        timeout=30,
    )
    assert deleted.status_code == 204
    sam.patch(f"{V1}/activities/{activity['id']}", json={"subject": "Call Ann (moved)"})
    report = sam.post(f"{V1}/connections/{connection_id}/sync").json()
    assert report["problems"] == [], report
    # Google keeps a deleted event's id: the event comes back under it, not as a copy.
    events = google_emulator.state.calendars[email].events
    assert [(e.body["id"], e.body["status"], e.body["summary"]) for e in events.values()] == [
        (event_id, "confirmed", "Call Ann (moved)")
    ]


def test_an_access_token_serves_many_syncs(
    sam: Api, google_emulator: GoogleEmulator, email: str
) -> None:
    tokens = google_emulator.state.create_account(email)
    body = {"provider": "google", "refresh_token": tokens["refresh_token"]}
    before = google_emulator.state.requests.get("oauth.token", 0)
    connection_id = sam.post(f"{V1}/connections", json=body).json()["id"]
    for _ in range(3):
        assert sam.post(f"{V1}/connections/{connection_id}/sync").status_code == 200
    # One refresh for the connect and every sync after it: the access token lives an hour.
    assert google_emulator.state.requests.get("oauth.token", 0) - before == 1
