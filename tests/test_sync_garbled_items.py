"""One garbled event in a Google events page or a Graph delta page, end to end: it is
skipped and reported, the rest of the page imports, and nothing is lost (the calendar's
position moves on only where the event can be found again).

The emulators serve the event garbled (their test control ``garble``) while storing it
as it was: lifted, the event reads as it should.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from crmcal.config import Settings
from tests import plain
from tests.conftest import Api, client_of, make_user
from tests.google_emulator import GoogleEmulator
from tests.microsoft_emulator import MicrosoftEmulator
from tests.test_sync_microsoft_api import Outlook, settings_for

V1 = "/api/v1"
CRM = "https://crm.example"
# Most of a megabyte, which the emulators' admin API takes (a note keeps 65536 characters).
HUGE = "x" * 900_000

# What is served in place of the event's own fields (None: left out); a garble that
# leaves the event out of the run's reach under any id is "nameless". (Google's times
# carry their offset: an unknown timeZone there is read in the calendar's zone.)
GOOGLE_GARBLES: dict[str, dict[str, Any]] = {
    "no start": {"start": None},
    "garbage dateTime": {"start": {"dateTime": "2026-13-45T99:00:00"}},
    "garbage recurrence": {"recurrence": ["RRULE:FREQ=DAILY", 5, None]},
    "garbage attendees": {"attendees": [None, "x"]},
    "no id": {"id": None},
    "an id that is no string": {"id": {"nested": True}},
}
GRAPH_GARBLES: dict[str, dict[str, Any]] = {
    "no start": {"start": None},
    "garbage dateTime": {"start": {"dateTime": "garbage", "timeZone": "UTC"}},
    "unknown timeZone": {"start": {"dateTime": "2026-12-10T10:00:00", "timeZone": "Z" * 5000}},
    "garbage attendees": {"attendees": "x"},
    "no id": {"id": None},
    "an id that is no string": {"id": 5},
}
NAMELESS = ("no id", "an id that is no string")


@pytest.fixture
def email() -> str:
    return f"user-{uuid.uuid4().hex[:10]}@example.test"


@pytest.fixture
def google_garbles(google_emulator: GoogleEmulator) -> Iterator[None]:
    """The answers garbled on purpose are no finding of the emulator's schema check: what
    they caused is dropped (what crmcal sent is still checked)."""
    before = len(google_emulator.schema_problems)
    yield
    found = google_emulator.schema_problems[before:]
    google_emulator.schema_problems[before:] = [p for p in found if " answer: " not in p]


@pytest.fixture
def graph_garbles(microsoft_emulator: MicrosoftEmulator) -> Iterator[None]:
    """As ``google_garbles``: the model check reads answers only."""
    before = len(microsoft_emulator.model_problems)
    yield
    del microsoft_emulator.model_problems[before:]


def sync(api: Api, connection_id: int) -> dict[str, Any]:
    answer = api.post(f"{V1}/connections/{connection_id}/sync")
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def subjects(api: Api) -> list[str]:
    return sorted(a["subject"] for a in api.get(f"{V1}/activities").json()["items"])


def status_problems(api: Api, connection_id: int) -> list[dict[str, str]]:
    answer = api.get(f"{V1}/connections/{connection_id}/status")
    assert answer.status_code == 200, answer.text
    return list(answer.json()["problems"])


def check_garbled_page(
    api: Api, connection_id: int, bad_id: str, garble: Any, edit: Any, *, nameless: bool
) -> None:
    """With ``bad_id`` served garbled, a sync imports the rest and reports it; lifted, it
    arrives: at once when it had no id (the position was not kept), else once it
    changes (an unreadable version is not read again until then)."""
    report = sync(api, connection_id)
    assert report["created"] == 2, report
    assert subjects(api) == ["Before", "Good A", "Good B"]
    expected = "" if nameless else bad_id
    (problem,) = [p for p in report["problems"] if p["item"] == expected]
    assert problem["reason"].startswith("unreadable event"), problem
    assert problem in status_problems(api, connection_id)

    garble(None)
    report = sync(api, connection_id)
    if not nameless:
        assert subjects(api) == ["Before", "Good A", "Good B"]
        assert any(p["item"] == bad_id for p in status_problems(api, connection_id))
        edit()
        report = sync(api, connection_id)
    assert report["created"] == 1, report
    assert subjects(api) == ["Bad", "Before", "Good A", "Good B"]
    assert status_problems(api, connection_id) == []
    quiet = sync(api, connection_id)
    assert (quiet["created"], quiet["updated"], quiet["deleted"]) == (0, 0, 0)


# --- Google ------------------------------------------------------------------------------


@pytest.fixture
def sam_google(db_url: str, google_emulator: GoogleEmulator, google_garbles: None) -> Iterator[Api]:
    settings = Settings(database_url=db_url, secret_key="test-key", base_url=CRM,
                        google_api_url=google_emulator.url, google_oauth_url=google_emulator.url,
                        google_client_id="crmcal-test-client", retry_backoff=0.01)  # fmt: skip
    with client_of(settings, base_url=CRM) as client:
        user_id, token = make_user(db_url, email="sam@crm.test", name="Sam")
        yield Api(client, token, user_id)


@pytest.mark.parametrize("kind", list(GOOGLE_GARBLES))
def test_a_garbled_google_event_is_skipped_and_the_page_imports(
    sam_google: Api, google_emulator: GoogleEmulator, email: str, kind: str
) -> None:
    state = google_emulator.state
    refresh = state.create_account(email)["refresh_token"]
    calendar = state.calendars[email]
    start = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).replace(microsecond=0)

    def make(summary: str, hours: int) -> str:
        moment = start + dt.timedelta(hours=hours)
        body = {"summary": summary, "start": {"dateTime": moment.isoformat()},
                "end": {"dateTime": (moment + dt.timedelta(hours=1)).isoformat()}}  # fmt: skip
        return str(state.insert(calendar, body)["id"])

    make("Before", 0)
    made = sam_google.post(f"{V1}/connections", json={"provider": "google",
                                                      "refresh_token": refresh})  # fmt: skip
    assert made.status_code == 201, made.text
    connection_id = int(made.json()["id"])
    assert sync(sam_google, connection_id)["created"] == 1
    make("Good A", 1)
    bad = make("Bad", 2)
    make("Good B", 3)

    def garble(fields: dict[str, Any] | None) -> None:
        answer = plain.post(f"{google_emulator.url}/_emulator/events/{bad}/garble",
                            json={"fields": fields}, timeout=30)  # fmt: skip
        assert answer.status_code == 200, answer.text

    def edit() -> None:
        state.patch(calendar, bad, {"location": "Room 2"}, None)

    garble(GOOGLE_GARBLES[kind])
    check_garbled_page(sam_google, connection_id, bad, garble, edit, nameless=kind in NAMELESS)


def test_a_google_event_with_a_huge_description_imports_with_its_note_cut(
    sam_google: Api, google_emulator: GoogleEmulator, email: str
) -> None:
    state = google_emulator.state
    refresh = state.create_account(email)["refresh_token"]
    start = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).replace(microsecond=0)
    body = {"summary": "Long", "start": {"dateTime": start.isoformat()},
            "end": {"dateTime": (start + dt.timedelta(hours=1)).isoformat()}}  # fmt: skip
    event_id = str(state.insert(state.calendars[email], body)["id"])
    answer = plain.post(f"{google_emulator.url}/_emulator/events/{event_id}/garble",
                        json={"fields": {"description": HUGE}}, timeout=30)  # fmt: skip
    assert answer.status_code == 200, answer.text
    made = sam_google.post(f"{V1}/connections", json={"provider": "google",
                                                      "refresh_token": refresh})  # fmt: skip
    report = sync(sam_google, int(made.json()["id"]))
    assert report["created"] == 1, report
    (warning,) = report["problems"]
    assert (warning["item"], warning.get("kind")) == (event_id, "warning")


# --- Microsoft Graph ---------------------------------------------------------------------


@pytest.fixture
def sam_graph(
    db_url: str, microsoft_emulator: MicrosoftEmulator, graph_garbles: None
) -> Iterator[Api]:
    with client_of(settings_for(db_url, microsoft_emulator), base_url=CRM) as client:
        user_id, token = make_user(db_url, email="sam@crm.test", name="Sam")
        yield Api(client, token, user_id)


@pytest.mark.parametrize("kind", list(GRAPH_GARBLES))
def test_a_garbled_graph_event_is_skipped_and_the_page_imports(
    sam_graph: Api, microsoft_emulator: MicrosoftEmulator, email: str, kind: str
) -> None:
    outlook = Outlook(microsoft_emulator, email)
    outlook.create("Before", hours=24)
    connection_id = outlook.connect(sam_graph)
    assert sync(sam_graph, connection_id)["created"] == 1
    outlook.create("Good A", hours=25)
    bad = str(outlook.create("Bad", hours=26)["id"])
    outlook.create("Good B", hours=27)

    def garble(fields: dict[str, Any] | None) -> None:
        answer = plain.post(f"{microsoft_emulator.url}/_emulator/events/{bad}/garble",
                            json={"email": email, "fields": fields}, timeout=30)  # fmt: skip
        assert answer.status_code == 200, answer.text

    def edit() -> None:
        changed = outlook.http.patch(f"/me/events/{bad}", json={"location": {"displayName": "2"}})
        assert changed.status_code == 200, changed.text

    garble(GRAPH_GARBLES[kind])
    check_garbled_page(sam_graph, connection_id, bad, garble, edit, nameless=kind in NAMELESS)


def test_a_graph_event_with_a_huge_body_imports_with_its_note_cut(
    sam_graph: Api, microsoft_emulator: MicrosoftEmulator, email: str
) -> None:
    outlook = Outlook(microsoft_emulator, email)
    event_id = str(outlook.create("Long")["id"])
    answer = plain.post(f"{microsoft_emulator.url}/_emulator/events/{event_id}/garble",
                        json={"email": email, "fields": {"body": {"contentType": "text",
                                                                  "content": HUGE}}},
                        timeout=30)  # fmt: skip
    assert answer.status_code == 200, answer.text
    report = sync(sam_graph, outlook.connect(sam_graph))
    assert report["created"] == 1, report
    (warning,) = report["problems"]
    assert (warning["item"], warning.get("kind")) == (event_id, "warning")
