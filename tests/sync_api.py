"""Syncing a CalDAV calendar through the REST API as the tests do: the settings of a
test database, activities made and listed through the API, the events a calendar
holds as another client reads them, and a stored connection changed behind the
API's back; and the fixtures of those tests: both CalDAV servers, a fresh calendar on
one, the app and a user of it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from crmcal.config import Settings
from crmcal.db import Database
from crmcal.sync.tables import Connection
from tests.caldav_servers import CALDAV_KINDS
from tests.conftest import Api, client_of, make_user, run
from tests.providers.harness import CalDAVHarness, CalDAVServer

V1 = "/api/v1"
SOON = (dt.datetime.now(dt.UTC) + dt.timedelta(days=3)).replace(minute=0, second=0, microsecond=0)


def settings(db_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"database_url": db_url, "secret_key": "test-key",
                              "allow_private_networks": True}  # fmt: skip
    return Settings(**{**values, **overrides})


def activity(user: Api, subject: str, hours: float = 0, **fields: Any) -> dict[str, Any]:
    start = SOON + dt.timedelta(hours=hours)
    body = {"type": "meeting", "subject": subject, "start": start.isoformat(),
            "end": (start + dt.timedelta(hours=1)).isoformat(), **fields}  # fmt: skip
    response = user.post(f"{V1}/activities", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def calendar_events(calendar: CalDAVHarness) -> dict[str, Any]:
    async def listing() -> dict[str, Any]:
        changes = await calendar.provider.list_changes(calendar.calendar_id, None)
        fetched = await calendar.provider.fetch(
            calendar.calendar_id, [ref.id for ref in changes.changed]
        )
        return {ref.id: ref.event for ref in fetched}

    return run(listing())


def edit_connection(db_url: str, connection_id: int, **fields: Any) -> None:
    """Change a stored connection behind the API's back."""

    async def edit() -> None:
        db = Database(db_url)
        try:
            async with db.write() as session:
                stored = await session.get(Connection, connection_id)
                assert stored is not None
                for name, value in fields.items():
                    setattr(stored, name, value)
        finally:
            await db.dispose()

    run(edit())


def subjects(user: Api, **params: Any) -> list[str]:
    items = user.get(f"{V1}/activities", params=params).json()["items"]
    return sorted(a["subject"] for a in items)


def events_in(calendar: CalDAVHarness, calendar_id: str) -> list[str]:
    async def listing() -> list[str]:
        changes = await calendar.provider.list_changes(calendar_id, None)
        return [ref.id for ref in changes.changed]

    return run(listing())


@pytest.fixture(params=CALDAV_KINDS)
def server(request: pytest.FixtureRequest) -> CalDAVServer:
    return request.getfixturevalue(request.param)


# For the tests whose calendar (``calendar``) is on Radicale alone.
on_radicale = pytest.mark.parametrize("server", ["radicale"], indirect=True)


@pytest.fixture
def calendar(server: CalDAVServer) -> Iterator[CalDAVHarness]:
    """A fresh calendar on ``server``, closed after the test."""
    harness = CalDAVHarness(server)
    yield harness
    run(harness.close())


@pytest.fixture
def app_client(db_url: str) -> Iterator[TestClient]:
    with client_of(settings(db_url)) as client:
        yield client


@pytest.fixture
def user(app_client: TestClient, db_url: str) -> Api:
    user_id, token = make_user(db_url, email="sam@crm.test", name="Sam", timezone="Europe/Berlin")
    return Api(app_client, token, user_id)


def connect(user: Api, server: CalDAVServer, calendar: CalDAVHarness, **body: Any) -> Any:
    payload = {
        "provider": "caldav",
        "url": server.url,
        "username": server.username,
        "password": server.password,
        "calendar_id": calendar.calendar_id,
        **body,
    }
    response = user.post(f"{V1}/connections", json=payload)
    assert response.status_code == 201, response.text
    return response.json()


def sync(user: Api, connection_id: int, **params: Any) -> dict[str, Any]:
    response = user.post(f"{V1}/connections/{connection_id}/sync", params=params)
    assert response.status_code == 200, response.text
    return response.json()
