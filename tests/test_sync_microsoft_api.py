"""Microsoft 365 connections through the REST API, against the Graph emulator."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from crmcal.config import Settings
from crmcal.emulators.microsoft.push import subscriptions_of
from crmcal.providers.microsoft import MicrosoftProvider
from crmcal.tls import tls
from crmcal.web.app import create_app
from tests import plain
from tests.conftest import Api, client_of, make_user, run
from tests.microsoft_emulator import MicrosoftEmulator
from tests.served import bound_socket, grant_in_browser, served_app, wait_for

V1 = "/api/v1"
CRM = "https://crm.example"


def settings_for(db_url: str, emulator: MicrosoftEmulator, **more: Any) -> Settings:
    return Settings(database_url=db_url, secret_key="test-key", base_url=more.pop("base_url", CRM),
                    microsoft_api_url=emulator.url, microsoft_oauth_url=emulator.url,
                    microsoft_client_id="crmcal-test-client", retry_backoff=0.01,
                    **more)  # fmt: skip


@pytest.fixture
def sam(db_url: str, microsoft_emulator: MicrosoftEmulator) -> Iterator[Api]:
    settings = settings_for(db_url, microsoft_emulator)
    # The browser talks to crmcal at its base URL (https: the OAuth cookie is Secure).
    with client_of(settings, base_url=CRM) as client:
        user_id, token = make_user(db_url, email="sam@crm.test", name="Sam")
        yield Api(client, token, user_id)


@pytest.fixture
def email() -> str:
    """An address no other test uses: the emulator lives as long as the test session."""
    return f"user-{uuid.uuid4().hex[:10]}@example.test"


class Outlook:
    """The mailbox as its owner's Outlook sees it: Graph calls with their own token."""

    def __init__(self, emulator: MicrosoftEmulator, email: str) -> None:
        self.emulator = emulator
        self.email = email
        self.tokens = emulator.state.create_account(email)
        self.http = httpx.Client(
            verify=tls(),
            base_url=f"{emulator.url}/v1.0",
            headers={"Authorization": f"Bearer {self.tokens['access_token']}",
                     "Prefer": 'IdType="ImmutableId"'},
        timeout=30)  # fmt: skip

    def connect(self, sam: Api, **body: Any) -> int:
        grant = {"provider": "microsoft", "refresh_token": self.tokens["refresh_token"]}
        made = sam.post(f"{V1}/connections", json=grant | body)
        assert made.status_code == 201, made.text
        return int(made.json()["id"])

    def create(self, subject: str, hours: float = 24) -> dict[str, Any]:
        start = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=hours)).replace(microsecond=0)
        end = start + dt.timedelta(hours=1)
        made = self.http.post("/me/events", json={
            "subject": subject,
            "start": {"dateTime": start.replace(tzinfo=None).isoformat(), "timeZone": "UTC"},
            "end": {"dateTime": end.replace(tzinfo=None).isoformat(), "timeZone": "UTC"},
        })  # fmt: skip
        assert made.status_code == 201, made.text
        return made.json()

    def subjects(self, calendar_id: str | None = None) -> list[str]:
        path = f"/me/calendars/{calendar_id}/events" if calendar_id else "/me/calendar/events"
        found = self.http.get(path, params={"$top": 1000}).json()["value"]
        return sorted(e["subject"] for e in found)


def sync(sam: Api, connection_id: int) -> dict[str, Any]:
    answer = sam.post(f"{V1}/connections/{connection_id}/sync")
    assert answer.status_code == 200, answer.text
    return answer.json()


def subjects(sam: Api, **params: Any) -> list[str]:
    return sorted(a["subject"] for a in sam.get(f"{V1}/activities", params=params).json()["items"])


def test_connecting_names_the_mailbox_and_picks_the_default_calendar(
    sam: Api, microsoft_emulator: MicrosoftEmulator, email: str
) -> None:
    outlook = Outlook(microsoft_emulator, email)
    microsoft_emulator.state.add_calendar(email, "Holidays", can_edit=False)
    connection_id = outlook.connect(sam)
    conn = sam.get(f"{V1}/connections/{connection_id}").json()
    default = outlook.http.get("/me/calendar").json()
    assert (conn["provider"], conn["account"], conn["calendar_id"]) == (
        "microsoft", email, default["id"]
    )  # fmt: skip
    assert outlook.tokens["refresh_token"] not in str(conn)
    calendars = sam.get(f"{V1}/connections/{connection_id}/calendars").json()["items"]
    assert {(c["name"], c["writable"], c["primary"]) for c in calendars} == {
        ("Calendar", True, True), ("Holidays", False, False)
    }  # fmt: skip


def test_two_way_sync_with_outlook(
    sam: Api, microsoft_emulator: MicrosoftEmulator, email: str
) -> None:
    outlook = Outlook(microsoft_emulator, email)
    lunch = outlook.create("Lunch with Bob", hours=5)
    start = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).replace(microsecond=0).isoformat()
    call = sam.post(f"{V1}/activities", json={"type": "call", "subject": "Call Ann",
                                               "start": start}).json()  # fmt: skip
    connection_id = outlook.connect(sam)
    report = sync(sam, connection_id)
    assert (report["created"], report["problems"]) == (2, [])
    assert subjects(sam) == ["Call Ann", "Lunch with Bob"]
    assert outlook.subjects() == ["Call Ann", "Lunch with Bob"]

    # Both sides change; each change arrives once.
    changed = outlook.http.patch(
        f"/me/events/{lunch['id']}", json={"subject": "Lunch with Bob+Ann"}
    )
    assert changed.status_code == 200, changed.text
    sam.patch(f"{V1}/activities/{call['id']}", json={"subject": "Call Ann back"})
    report = sync(sam, connection_id)
    assert report["updated"] == 2
    assert subjects(sam) == ["Call Ann back", "Lunch with Bob+Ann"]
    assert outlook.subjects() == ["Call Ann back", "Lunch with Bob+Ann"]

    # A deletion in Outlook trashes the activity; nothing else moves.
    assert outlook.http.delete(f"/me/events/{lunch['id']}").status_code == 204
    assert sync(sam, connection_id)["deleted"] == 1
    assert subjects(sam) == ["Call Ann back"]
    quiet = sync(sam, connection_id)
    assert (quiet["created"], quiet["updated"], quiet["deleted"]) == (0, 0, 0)


def test_an_expired_delta_link_resyncs_without_copies(
    sam: Api, microsoft_emulator: MicrosoftEmulator, email: str
) -> None:
    outlook = Outlook(microsoft_emulator, email)
    made = [outlook.create(f"Meeting {n}", hours=10 + n) for n in range(3)]
    connection_id = outlook.connect(sam)
    sync(sam, connection_id)
    ids_before = {a["subject"]: a["id"] for a in sam.get(f"{V1}/activities").json()["items"]}
    answer = plain.post(f"{microsoft_emulator.url}/_emulator/expire-delta-tokens",
                        json={"email": email}, timeout=30)  # fmt: skip
    assert answer.status_code < 300, answer.text
    outlook.http.patch(f"/me/events/{made[0]['id']}", json={"subject": "Meeting 0 (moved)"})
    outlook.create("Meeting new")
    report = sync(sam, connection_id)
    assert (report["created"], report["updated"], report["deleted"]) == (1, 1, 0)
    activities = {a["subject"]: a["id"] for a in sam.get(f"{V1}/activities").json()["items"]}
    assert sorted(activities) == ["Meeting 0 (moved)", "Meeting 1", "Meeting 2", "Meeting new"]
    assert activities["Meeting 1"] == ids_before["Meeting 1"]
    assert activities["Meeting 0 (moved)"] == ids_before["Meeting 0"]
    assert outlook.subjects() == sorted(activities)


def test_reconnecting_a_calendar_relinks_instead_of_copying(
    sam: Api, microsoft_emulator: MicrosoftEmulator, email: str
) -> None:
    outlook = Outlook(microsoft_emulator, email)
    start = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).replace(microsecond=0).isoformat()
    sam.post(f"{V1}/activities", json={"type": "call", "subject": "Call Ann", "start": start})
    first = outlook.connect(sam)
    sync(sam, first)
    assert sam.delete(f"{V1}/connections/{first}").status_code in (200, 204)
    # A new connection has no links: delta shows no extended properties, so crmcal's
    # ids come from the one query a full listing makes.
    second = outlook.connect(sam)
    report = sync(sam, second)
    assert (report["created"], report["problems"]) == (0, [])
    assert outlook.subjects() == ["Call Ann"]
    assert subjects(sam) == ["Call Ann"]


def test_participants_are_not_mailed_unless_asked(
    sam: Api, microsoft_emulator: MicrosoftEmulator, email: str
) -> None:
    outlook = Outlook(microsoft_emulator, email)
    connection_id = outlook.connect(sam)
    start = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).replace(microsecond=0).isoformat()
    guest = [{"email": "ann@acme.test", "name": "Ann"}]
    meeting = {"type": "meeting", "start": start, "participants": guest}
    quiet = sam.post(f"{V1}/activities", json=meeting | {"subject": "Quiet"}).json()
    invited = meeting | {"subject": "Invited", "notify_participants": True}
    sam.post(f"{V1}/activities", json=invited)
    sync(sam, connection_id)
    mails = plain.get(f"{microsoft_emulator.url}/_emulator/mail", timeout=30).json()
    assert [m["subject"] for m in mails if m["mailbox"] == email] == ["Invited"]
    # Editing the quiet one in Outlook keeps its participant in the CRM.
    events = outlook.http.get("/me/calendar/events").json()["value"]
    quiet_event = next(e for e in events if e["subject"] == "Quiet")
    assert quiet_event["attendees"] == []
    outlook.http.patch(f"/me/events/{quiet_event['id']}", json={"subject": "Quiet (moved)"})
    sync(sam, connection_id)
    again = sam.get(f"{V1}/activities/{quiet['id']}").json()
    assert (again["subject"], [p["email"] for p in again["participants"]]) == (
        "Quiet (moved)", ["ann@acme.test"]
    )  # fmt: skip


def test_an_event_moved_to_another_calendar_and_back(
    sam: Api, microsoft_emulator: MicrosoftEmulator, email: str
) -> None:
    outlook = Outlook(microsoft_emulator, email)
    other = outlook.http.post("/me/calendars", json={"name": "Team"}).json()
    event = outlook.create("Quarterly review")
    connection_id = outlook.connect(sam)
    sync(sam, connection_id)
    (activity,) = sam.get(f"{V1}/activities").json()["items"]
    home = outlook.http.get("/me/calendar").json()["id"]
    move = f"{microsoft_emulator.url}/_emulator/events/{event['id']}/move"
    assert plain.post(move, json={"calendar_id": other["id"]}, timeout=30).status_code == 200
    assert sync(sam, connection_id)["deleted"] == 1
    assert sam.get(f"{V1}/activities").json()["items"] == []
    assert plain.post(move, json={"calendar_id": home}, timeout=30).status_code == 200
    sync(sam, connection_id)
    (restored,) = sam.get(f"{V1}/activities").json()["items"]
    assert (restored["id"], restored["subject"]) == (activity["id"], "Quarterly review")


def test_a_revoked_grant_puts_the_connection_in_error(
    sam: Api, microsoft_emulator: MicrosoftEmulator, email: str
) -> None:
    outlook = Outlook(microsoft_emulator, email)
    connection_id = outlook.connect(sam)
    sync(sam, connection_id)
    assert outlook.http.post("/me/revokeSignInSessions").status_code == 200
    failed = sam.post(f"{V1}/connections/{connection_id}/sync")
    assert failed.status_code == 409
    status = sam.get(f"{V1}/connections/{connection_id}/status").json()
    assert status["state"] == "error"
    assert "reconnect required" in status["last_error"]


def test_a_throttling_storm_is_waited_out(
    sam: Api, microsoft_emulator: MicrosoftEmulator, email: str
) -> None:
    outlook = Outlook(microsoft_emulator, email)
    for n in range(3):
        outlook.create(f"Meeting {n}", hours=10 + n)
    connection_id = outlook.connect(sam)
    state = microsoft_emulator.state
    before = sum(state.requests.values())
    faults = f"{microsoft_emulator.url}/_emulator/faults"
    try:
        for status in (429, 503, 429):
            plain.post(faults, json={"status": status, "count": 1, "retry_after": 0}, timeout=30)
        report = sync(sam, connection_id)
    finally:
        plain.post(faults, json={"clear": True}, timeout=30)
    assert (report["created"], report["problems"]) == (3, [])
    assert subjects(sam) == ["Meeting 0", "Meeting 1", "Meeting 2"]
    stormy = sum(state.requests.values()) - before
    # The same sync again, without faults, on a fresh connection of a twin mailbox.
    twin = Outlook(microsoft_emulator, "twin-" + email)
    for n in range(3):
        twin.create(f"Meeting {n}", hours=10 + n)
    sam.delete(f"{V1}/connections/{connection_id}")
    for activity in sam.get(f"{V1}/activities").json()["items"]:
        sam.delete(f"{V1}/activities/{activity['id']}")
    before = sum(state.requests.values())
    sync(sam, twin.connect(sam))
    clean = sum(state.requests.values()) - before
    assert stormy <= clean + 3  # one more call per failure, no hammering


# --- connecting by OAuth -----------------------------------------------------------------


def test_connecting_through_microsofts_consent_screen(
    sam: Api, microsoft_emulator: MicrosoftEmulator, email: str
) -> None:
    started = sam.get("/oauth/microsoft/start", headers={"Accept": "application/json"})
    assert started.status_code == 200, started.text
    url = started.json()["authorize_url"]
    query = parse_qs(urlsplit(url).query)
    assert url.startswith(f"{microsoft_emulator.url}/common/oauth2/v2.0/authorize?")
    assert query["redirect_uri"] == [f"{CRM}/oauth/microsoft/callback"]
    assert query["code_challenge_method"] == ["S256"]
    assert "offline_access" in query["scope"][0].split()
    back = grant_in_browser(url, email)
    assert back.startswith(f"{CRM}/oauth/microsoft/callback?")
    answer = sam.client.get(back.removeprefix(CRM), headers={"Accept": "application/json"})
    assert answer.status_code == 201, answer.text
    conn = answer.json()
    assert (conn["provider"], conn["account"]) == ("microsoft", email)
    assert sam.post(f"{V1}/connections/{conn['id']}/sync").status_code == 200
    # Microsoft rotates refresh tokens: the newest one is kept, and it works.
    assert sam.post(f"{V1}/connections/{conn['id']}/sync").status_code == 200
    # An answer meant for Google is not taken here, nor replayed.
    assert sam.client.get(back.removeprefix(CRM).replace("microsoft", "google")).status_code == 400
    assert sam.client.get(back.removeprefix(CRM)).status_code == 400


# --- change notifications -----------------------------------------------------------------


@pytest.fixture
def served_crmcal(db_url: str, microsoft_emulator: MicrosoftEmulator) -> Iterator[tuple[str, str]]:
    """crmcal with its scheduler on a port of its own, polling only hourly: (URL, API token)."""
    _, token = make_user(db_url, email="push@crm.test", name="Push")
    sock = bound_socket()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    settings = settings_for(db_url, microsoft_emulator, base_url=url, poll_seconds=3600)
    with served_app(create_app(settings), sock):
        yield url, token


def test_an_event_made_in_outlook_arrives_by_notification(
    served_crmcal: tuple[str, str], microsoft_emulator: MicrosoftEmulator, email: str
) -> None:
    url, token = served_crmcal
    api = httpx.Client(
        verify=tls(),
        base_url=f"{url}{V1}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    outlook = Outlook(microsoft_emulator, email)
    body = {"provider": "microsoft", "refresh_token": outlook.tokens["refresh_token"]}
    created = api.post("/connections", json=body)
    assert created.status_code == 201, created.text
    admin = f"{microsoft_emulator.url}/_emulator/subscriptions"

    def subscription() -> Any:
        listed = plain.get(admin, timeout=30).json()["subscriptions"]
        return [s for s in listed if s["mailbox"] == email]

    (opened,) = wait_for(subscription)  # the first sync subscribed
    assert opened["notificationUrl"] == f"{url}/webhooks/microsoft"
    outlook.create("Booked in Outlook")

    def arrived() -> Any:
        items = api.get("/activities").json()["items"]
        return [a for a in items if a["subject"] == "Booked in Outlook"]

    # Polling is hourly, so an arrival within the minute came by the notification.
    wait_for(arrived)

    # A notification that is not ours changes nothing; the handshake is answered.
    guess = {"subscriptionId": opened["id"], "clientState": "guess", "changeType": "created"}
    forged = plain.post(f"{url}/webhooks/microsoft", json={"value": [guess]}, timeout=30)
    assert forged.status_code == 202
    echo = plain.post(f"{url}/webhooks/microsoft", params={"validationToken": "a b&c"}, timeout=30)
    assert (echo.status_code, echo.text) == (200, "a b&c")
    # Stopping the connection removes the subscription (once it has answered).
    connection_id = created.json()["id"]
    assert api.post(f"/connections/{connection_id}/stop").status_code == 200
    wait_for(lambda: subscription() == [])


@pytest.mark.parametrize("moment", ["listed", "subscribed"])
def test_an_event_made_while_crmcal_subscribes_arrives_without_a_poll(
    served_crmcal: tuple[str, str],
    microsoft_emulator: MicrosoftEmulator,
    email: str,
    moment: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An event made after the first sync listed the calendar but before its subscription
    was made (``listed``: never notified), or made and notified once the subscription is
    there but before crmcal has stored it (``subscribed``: the webhook cannot tell the
    notification from a forgery, and answers it without a sync) still arrives within the
    minute, though polling is hourly: the sync that subscribed is followed by another."""
    url, token = served_crmcal
    api = httpx.Client(
        verify=tls(),
        base_url=f"{url}{V1}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    outlook = Outlook(microsoft_emulator, email)
    deliveries = subscriptions_of(microsoft_emulator.state).deliveries
    subscribe = MicrosoftProvider.watch

    async def book() -> None:
        start = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).replace(microsecond=0)
        end = start + dt.timedelta(hours=1)
        async with httpx.AsyncClient(
            verify=tls(), headers=outlook.http.headers, timeout=30
        ) as http:
            made = await http.post(f"{microsoft_emulator.url}/v1.0/me/events", json={
                "subject": "Booked meanwhile",
                "start": {"dateTime": start.replace(tzinfo=None).isoformat(), "timeZone": "UTC"},
                "end": {"dateTime": end.replace(tzinfo=None).isoformat(), "timeZone": "UTC"},
            })  # fmt: skip
        assert made.status_code == 201, made.text

    async def watch(self: MicrosoftProvider, *args: Any) -> tuple[str, dt.datetime]:
        if moment == "listed":
            await book()
        subscription_id, expires = await subscribe(self, *args)
        if moment == "subscribed":
            await book()

            # The notification is answered before crmcal hears of its subscription.
            def answered() -> bool:
                return any(d["subscription_id"] == subscription_id and d["status"] is not None
                           and d["kind"] == "notification" for d in deliveries)  # fmt: skip

            await asyncio.to_thread(wait_for, answered, 60)
        return subscription_id, expires

    monkeypatch.setattr(MicrosoftProvider, "watch", watch)
    body = {"provider": "microsoft", "refresh_token": outlook.tokens["refresh_token"]}
    assert api.post("/connections", json=body).status_code == 201

    def arrived() -> Any:
        items = api.get("/activities").json()["items"]
        return [a for a in items if a["subject"] == "Booked meanwhile"]

    # Polling is hourly, so an arrival within the minute came by the sync that followed.
    (activity,) = wait_for(arrived)
    assert activity["subject"] == "Booked meanwhile"


def test_lifecycle_notifications_renew_resubscribe_and_resync(
    served_crmcal: tuple[str, str], microsoft_emulator: MicrosoftEmulator, email: str
) -> None:
    url, token = served_crmcal
    api = httpx.Client(
        verify=tls(),
        base_url=f"{url}{V1}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    outlook = Outlook(microsoft_emulator, email)
    body = {"provider": "microsoft", "refresh_token": outlook.tokens["refresh_token"]}
    created = api.post("/connections", json=body)
    assert created.status_code == 201, created.text
    admin = f"{microsoft_emulator.url}/_emulator/subscriptions"
    requests = microsoft_emulator.state.requests

    def subscriptions() -> Any:
        return [
            s for s in plain.get(admin, timeout=30).json()["subscriptions"] if s["mailbox"] == email
        ]

    (first,) = wait_for(subscriptions)
    expires = first["expirationDateTime"]
    # Graph lists the subscription as soon as it made it, before crmcal has stored its
    # answer; a lifecycle notification then names a subscription crmcal cannot yet
    # tell from a forgery, and is rightly ignored. The sync that subscribed stores it
    # before it ends.
    connection = f"/connections/{created.json()['id']}"
    wait_for(lambda: api.get(connection).json()["last_sync_at"] is not None)

    def lifecycle(subscription: dict[str, Any], event: str) -> None:
        sent = plain.post(
            f"{admin}/{subscription['id']}/lifecycle", json={"event": event}, timeout=30
        )
        assert sent.status_code < 300, sent.text

    # reauthorizationRequired: the subscription is renewed (PATCH), not replaced.
    renewals = requests.get("subscriptions.update", 0)
    lifecycle(first, "reauthorizationRequired")
    wait_for(lambda: requests.get("subscriptions.update", 0) > renewals)
    (renewed,) = subscriptions()
    assert renewed["id"] == first["id"]
    assert renewed["expirationDateTime"] >= expires
    # missed: a delta round finds what the notifications did not say.
    rounds = requests.get("calendarView.delta", 0)
    lifecycle(renewed, "missed")
    wait_for(lambda: requests.get("calendarView.delta", 0) > rounds)
    # subscriptionRemoved: crmcal subscribes again.
    lifecycle(renewed, "subscriptionRemoved")
    (again,) = wait_for(lambda: [s for s in subscriptions() if s["id"] != first["id"]])
    assert again["notificationUrl"] == f"{url}/webhooks/microsoft"
    assert len(subscriptions()) == 1


def test_a_rotated_refresh_token_is_stored_and_its_access_token_reused(
    sam: Api, microsoft_emulator: MicrosoftEmulator, email: str, db_url: str
) -> None:
    outlook = Outlook(microsoft_emulator, email)
    state = microsoft_emulator.state
    before = state.requests.get("oauth.token", 0)
    connection_id = outlook.connect(sam)
    for _ in range(3):
        sync(sam, connection_id)
    # Microsoft hands out a new refresh token with the access token; the access token
    # lives an hour, so the connect and the syncs refresh once.
    assert state.requests.get("oauth.token", 0) - before == 1
    stored = run(_credentials(db_url, connection_id))
    assert stored != outlook.tokens["refresh_token"]  # the rotated one, sealed


async def _credentials(db_url: str, connection_id: int) -> str:
    from crmcal.db import Database
    from crmcal.sync.tables import Connection
    from crmcal.vault import Vault

    db = Database(db_url)
    try:
        async with db.read() as session:
            conn = await session.get(Connection, connection_id)
            assert conn is not None
            return Vault("test-key").open(conn.credentials)
    finally:
        await db.dispose()


def _move(emulator: MicrosoftEmulator, event_id: str, calendar_id: str) -> None:
    move = f"{emulator.url}/_emulator/events/{event_id}/move"
    assert plain.post(move, json={"calendar_id": calendar_id}, timeout=30).status_code == 200


def test_a_crm_event_moved_away_and_back_finds_its_activity_again(
    sam: Api, microsoft_emulator: MicrosoftEmulator, email: str
) -> None:
    outlook = Outlook(microsoft_emulator, email)
    other = outlook.http.post("/me/calendars", json={"name": "Team"}).json()
    home = outlook.http.get("/me/calendar").json()["id"]
    connection_id = outlook.connect(sam)
    start = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).replace(microsecond=0).isoformat()
    made = sam.post(
        f"{V1}/activities", json={"type": "call", "subject": "Call Ann", "start": start}
    )
    sync(sam, connection_id)
    sync(sam, connection_id)  # the next delta round has seen the event crmcal made
    (event,) = outlook.http.get("/me/calendar/events").json()["value"]
    _move(microsoft_emulator, event["id"], other["id"])
    gone = sync(sam, connection_id)
    assert gone["deleted"] == 1, str(gone)  # gone from the connected calendar
    _move(microsoft_emulator, event["id"], home)
    report = sync(sam, connection_id)
    assert (report["created"], report["problems"]) == (0, [])
    (restored,) = sam.get(f"{V1}/activities").json()["items"]
    assert (restored["id"], restored["subject"]) == (made.json()["id"], "Call Ann")
    assert outlook.subjects() == ["Call Ann"]


def test_crm_edits_never_land_in_a_calendar_that_was_not_connected(
    sam: Api, microsoft_emulator: MicrosoftEmulator, email: str
) -> None:
    outlook = Outlook(microsoft_emulator, email)
    other = outlook.http.post("/me/calendars", json={"name": "Private"}).json()
    connection_id = outlook.connect(sam)
    start = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).replace(microsecond=0).isoformat()
    made = sam.post(f"{V1}/activities", json={"type": "call", "subject": "Call Bo", "start": start})
    sync(sam, connection_id)
    (event,) = outlook.http.get("/me/calendar/events").json()["value"]
    _move(microsoft_emulator, event["id"], other["id"])
    edited = sam.patch(f"{V1}/activities/{made.json()['id']}", json={"subject": "Call Bo (CRM)"})
    assert edited.status_code == 200, edited.text
    sync(sam, connection_id)
    assert outlook.subjects(other["id"]) == ["Call Bo"]
    sam.delete(f"{V1}/activities/{made.json()['id']}")
    sync(sam, connection_id)
    assert outlook.subjects(other["id"]) == ["Call Bo"]
