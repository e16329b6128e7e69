"""Injected faults on the Google emulator: slow responses, alone and beside failures."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from crmcal.emulators.google import GoogleState, create_app
from tests.emulators.test_google import V3, Google, reason
from tests.served import served_app

DELAY = 0.3
FAST = 0.2  # well under DELAY, with room for a slow test machine


def timed(call: Any) -> tuple[float, Any]:
    started = time.monotonic()
    answer = call()
    return time.monotonic() - started, answer


@pytest.fixture
def google() -> Iterator[Google]:
    with TestClient(create_app(GoogleState())) as client:
        yield Google(client, "sam@example.test")


def test_a_delay_slows_the_next_api_calls_and_can_come_with_a_failure(google: Google) -> None:
    faults = "/_emulator/faults"
    google.client.post(faults, json={"status": 503, "count": 1})
    answer = google.client.post(faults, json={"delay": DELAY, "count": 2})
    assert answer.json() == {"pending": [{"status": 503, "count": 1}, {"delay": DELAY, "count": 2}]}
    took, _ = timed(lambda: google.client.get("/_emulator/requests"))
    assert took < FAST  # the admin API is never delayed
    took, refused = timed(lambda: google.client.get(V3 + "/users/me/calendarList"))
    assert (took < FAST, refused.status_code) == (True, 401)  # unauthenticated: no fault applies

    took, failed = timed(lambda: google.call("GET", "/users/me/calendarList"))
    assert took >= DELAY
    assert reason(failed) == (503, "backendError")
    took, slow = timed(lambda: google.call("GET", "/users/me/calendarList"))
    assert (took >= DELAY, slow.status_code) == (True, 200)
    took, fast = timed(lambda: google.call("GET", "/users/me/calendarList"))
    assert (took < FAST, fast.status_code) == (True, 200)
    assert google.client.post(faults, json={"clear": True}).json() == {"pending": []}


def test_a_delayed_call_holds_up_no_other_request() -> None:
    state = GoogleState()
    with served_app(create_app(state)) as url:
        auth = {
            "Authorization": f"Bearer {state.create_account('sam@example.test')['access_token']}"
        }
        httpx.post(f"{url}/_emulator/faults", json={"delay": DELAY, "count": 1})
        slow: dict[str, float] = {}

        def delayed() -> None:
            slow["took"], _ = timed(lambda: httpx.get(f"{url}{V3}/calendars/primary", headers=auth))

        waiting = threading.Thread(target=delayed)
        waiting.start()
        deadline = time.monotonic() + 5
        while state.delays:  # until the delayed call has taken the delay and sleeps
            assert time.monotonic() < deadline
            time.sleep(0.01)
        took, answer = timed(lambda: httpx.get(f"{url}{V3}/calendars/primary", headers=auth))
        waiting.join(timeout=5)
    assert (answer.status_code, took < FAST) == (200, True)
    assert slow["took"] >= DELAY


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
