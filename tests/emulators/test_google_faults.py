"""Injected faults on the Google emulator: slow responses, alone and beside failures."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from crmcal.emulators.google import GoogleState, create_app
from crmcal.emulators.google import app as google_app
from tests import plain
from tests.conftest import recorded_sleeps
from tests.emulators.google_client import V3, Google, reason
from tests.served import served_app, wait_for

DELAY = 0.3
# Long enough that a call answered while the delayed one still waits was not held up by
# it, however busy the machine; the delayed call is cut short when the server stops.
HOLD = 30.0


@pytest.fixture
def google() -> Iterator[Google]:
    with TestClient(create_app(GoogleState())) as client:
        yield Google(client, "sam@example.test")


def test_a_delay_slows_the_next_api_calls_and_can_come_with_a_failure(
    google: Google, monkeypatch: pytest.MonkeyPatch
) -> None:
    waits = recorded_sleeps(monkeypatch, google_app)
    faults = "/_emulator/faults"
    google.client.post(faults, json={"status": 503, "count": 1})
    answer = google.client.post(faults, json={"delay": DELAY, "count": 2})
    assert answer.json() == {"pending": [{"status": 503, "count": 1}, {"delay": DELAY, "count": 2}]}
    assert isinstance(google.client.app, FastAPI)
    state: GoogleState = google.client.app.state.google
    google.client.get("/_emulator/requests")
    assert state.delays.described() == [{"delay": DELAY, "count": 2}]  # admin: never delayed
    refused = google.client.get(V3 + "/users/me/calendarList")
    assert refused.status_code == 401
    assert state.delays.described() == [{"delay": DELAY, "count": 2}]  # unauthenticated: none

    assert waits == []
    failed = google.call("GET", "/users/me/calendarList")
    assert waits == [DELAY]
    assert reason(failed) == (503, "backendError")
    slow = google.call("GET", "/users/me/calendarList")
    assert (waits, slow.status_code) == ([DELAY, DELAY], 200)
    assert state.delays.described() == []  # so the next call is not delayed
    assert google.call("GET", "/users/me/calendarList").status_code == 200
    assert google.client.post(faults, json={"clear": True}).json() == {"pending": []}


def test_a_delayed_call_holds_up_no_other_request() -> None:
    state = GoogleState()
    with served_app(create_app(state), shutdown_grace=1) as url:
        auth = {
            "Authorization": f"Bearer {state.create_account('sam@example.test')['access_token']}"
        }
        plain.post(f"{url}/_emulator/faults", json={"delay": HOLD, "count": 1}, timeout=30)
        answered = threading.Event()

        def delayed() -> None:
            try:
                plain.get(f"{url}{V3}/calendars/primary", headers=auth, timeout=2 * HOLD)
                answered.set()
            except httpx.HTTPError:
                pass  # cut short when the server stops

        waiting = threading.Thread(target=delayed, daemon=True)
        waiting.start()
        # until the delayed call has taken the delay and sleeps
        wait_for(lambda: not state.delays)
        answer = plain.get(f"{url}{V3}/calendars/primary", headers=auth, timeout=30)
        assert answer.status_code == 200
        assert not answered.is_set()  # answered while the delayed call still waits
    waiting.join(timeout=30)


@pytest.mark.parametrize(
    "body",
    [{"delay": 0}, {"delay": -1}, {"delay": 60.5}, {"delay": "1"}, {"delay": True},
     {"delay": None}, {"delay": [1]}, {"delay": 1, "count": 0}, {"delay": 1, "count": 10_001},
     {"delay": 1, "count": 1.5}, {"delay": 1, "status": 503}],
)  # fmt: skip
def test_bad_delays_are_refused(google: Google, body: dict[str, Any]) -> None:
    answer = google.client.post("/_emulator/faults", json=body)
    assert reason(answer) == (400, "invalid")
    assert google.client.post("/_emulator/faults", json={"delay": 60, "count": 10_000}).json() == {
        "pending": [{"delay": 60, "count": 10_000}]
    }  # the limits themselves are allowed
