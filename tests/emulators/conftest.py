"""Fixtures for the Microsoft Graph emulator's tests: a clock, the state, and a client
whose every answer is checked with msgraph-sdk's models (``graph_models``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from crmcal.emulators.microsoft import MicrosoftState, create_app
from tests.emulators.graph_models import GraphChecked, check

V1 = "/v1.0"


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 11, 21, 9, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


class Graph:
    """A TestClient on the Graph emulator, speaking as one account."""

    def __init__(self, client: TestClient, email: str) -> None:
        self.client = client
        self.email = email
        tokens = client.post("/_emulator/accounts", json={"email": email}).json()
        self.token = tokens["access_token"]
        self.refresh_token = tokens["refresh_token"]

    def call(self, method: str, path: str, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.token}", **kw.pop("headers", {})}
        url = path if path.startswith("http") else V1 + path
        return self.client.request(method, url, headers=headers, **kw)

    def ok(self, method: str, path: str, status: int = 200, **kw: Any) -> Any:
        response = self.call(method, path, **kw)
        assert response.status_code == status, response.text
        return response.json() if response.content else None

    def create(self, path: str = "/me/events", **fields: Any) -> dict[str, Any]:
        return self.ok("POST", path, 201, json=event_body(**fields))

    def admin(self, method: str, path: str, **kw: Any) -> Any:
        response = self.client.request(method, "/_emulator" + path, **kw)
        assert response.status_code < 300, response.text
        return response.json() if response.content else None


def event_body(
    subject: str = "Demo", hour: int = 10, day: int = 1, **fields: Any
) -> dict[str, Any]:
    return {
        "subject": subject,
        "start": {"dateTime": f"2026-12-{day:02d}T{hour:02d}:00:00", "timeZone": "Europe/Berlin"},
        "end": {"dateTime": f"2026-12-{day:02d}T{hour + 1:02d}:00:00", "timeZone": "Europe/Berlin"},
        **fields,
    }


def code(response: Any) -> tuple[int, str]:
    """The status and Graph error code of an error answer (its body checked as ODataError)."""
    from msgraph.generated.models.o_data_errors.o_data_error import ODataError

    parsed = check(ODataError, response.content)
    inner = response.json()["error"]["innerError"]
    assert set(inner) == {"date", "request-id", "client-request-id"}
    return response.status_code, parsed.error.code


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def graph_state(clock: Clock) -> MicrosoftState:
    return MicrosoftState(clock=clock)


@pytest.fixture
def graph_app(graph_state: MicrosoftState) -> GraphChecked:
    return GraphChecked(create_app(graph_state))


@pytest.fixture
def graph(graph_app: GraphChecked) -> Iterator[Graph]:
    """Sam's account; after the test, every answer must have matched Graph's models."""
    with TestClient(graph_app) as client:
        yield Graph(client, "sam@example.test")
    found = graph_app.problems
    assert not found, "answers Graph would not send:\n" + "\n".join(found[:15])
