"""Speaking to the Google Calendar emulator as its tests do: a TestClient as one
account (every body checked against Google's schema), a clock the tests move, an
event's body, and the reason of an error answer."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi.testclient import TestClient

from tests.emulators.google_schema import check

V3 = "/calendar/v3"


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 11, 21, 9, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


class Google:
    """A TestClient on the emulator, speaking as one account."""

    def __init__(self, client: TestClient, email: str) -> None:
        self.client = client
        tokens = client.post("/_emulator/accounts", json={"email": email}).json()
        self.token = tokens["access_token"]
        self.email = email

    def call(self, method: str, path: str, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.token}", **kw.pop("headers", {})}
        return self.client.request(method, V3 + path, headers=headers, **kw)

    def ok(self, method: str, path: str, schema: str | None, **kw: Any) -> Any:
        response = self.call(method, path, **kw)
        assert response.status_code == 200, response.text
        return check(schema, response.json()) if schema else response.json()

    def insert(self, **fields: Any) -> dict[str, Any]:
        body = check("Event", event_body(**fields))
        return self.ok("POST", "/calendars/primary/events", "Event", json=body)

    def list(self, **params: Any) -> dict[str, Any]:
        return self.ok("GET", "/calendars/primary/events", "Events", params=params)


def event_body(summary: str = "Demo", hour: int = 10, **fields: Any) -> dict[str, Any]:
    return {
        "summary": summary,
        "start": {"dateTime": f"2026-12-01T{hour:02d}:00:00+01:00", "timeZone": "Europe/Berlin"},
        "end": {"dateTime": f"2026-12-01T{hour + 1:02d}:00:00+01:00", "timeZone": "Europe/Berlin"},
        **fields,
    }


def reason(response: Any) -> tuple[int, str]:
    body = response.json()["error"]
    assert body["code"] == response.status_code
    return response.status_code, body["errors"][0]["reason"]
