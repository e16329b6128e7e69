"""Webhooks take hostile bodies: bounded work per notification, secrets stored hashed."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import event, select

from crmcal.config import Settings
from crmcal.db import Database
from crmcal.sync.push import token_digest
from crmcal.sync.tables import Connection
from crmcal.vault import Vault
from tests.conftest import client_of, create_connection_in, run

SECRET = "s" * 43


async def _connection(db_url: str, **columns: Any) -> int:
    """A Microsoft connection stored with ``columns``; its id."""
    columns.setdefault("provider", "microsoft")
    _, _, connection_id = await create_connection_in(
        db_url, credentials=Vault(SECRET).seal("refresh"),
        calendar_id="cal", calendar_name="Cal", **columns,
    )  # fmt: skip
    return connection_id


@pytest.fixture
def client(db_url: str) -> Iterator[TestClient]:
    with client_of(Settings(database_url=db_url, secret_key=SECRET)) as client:
        yield client


def test_deeply_nested_json_is_a_400(client: TestClient) -> None:
    body = '{"value": ' + "[" * 100_000 + "]" * 100_000 + "}"
    answer = client.post("/webhooks/microsoft", content=body)
    assert answer.status_code == 400


def test_too_many_items_are_refused(client: TestClient) -> None:
    body = {"value": [{"subscriptionId": f"s{n}", "clientState": "x"} for n in range(1001)]}
    assert client.post("/webhooks/microsoft", json=body).status_code == 413


def test_a_notification_is_looked_up_in_one_query(client: TestClient, db_url: str) -> None:
    run(_connection(db_url, push_resource_id="res-1", push_token=token_digest("secret-1")))
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "connections" in statement and statement.lstrip().upper().startswith("SELECT"):
            statements.append(statement)

    assert isinstance(client.app, FastAPI)
    engine = client.app.state.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        forged = [{"subscriptionId": f"s{n}", "clientState": "x"} for n in range(300)]
        same = [{"subscriptionId": "res-1", "clientState": "secret-1"}] * 300
        answer = client.post("/webhooks/microsoft", json={"value": forged + same})
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert answer.status_code == 202
    assert len(statements) == 1, statements


def test_channel_secrets_are_stored_hashed(client: TestClient, db_url: str) -> None:
    run(_connection(db_url, push_resource_id="res-2", push_token=token_digest("secret-2")))

    async def stored() -> list[str | None]:
        db = Database(db_url)
        try:
            async with db.read() as session:
                return list(await session.scalars(select(Connection.push_token)))
        finally:
            await db.dispose()

    assert all(token is None or "secret" not in token for token in run(stored()))
    # The secret itself is what Graph sends back; the stored hash is no secret.
    hits: list[str] = []
    assert isinstance(client.app, FastAPI)
    engine = client.app.state.db.engine.sync_engine

    def writes(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE"):
            hits.append(statement)

    event.listen(engine, "before_cursor_execute", writes)
    try:
        forged = {"subscriptionId": "res-2", "clientState": token_digest("secret-2"),
                  "lifecycleEvent": "subscriptionRemoved"}  # fmt: skip
        assert client.post("/webhooks/microsoft", json={"value": [forged]}).status_code == 202
        assert hits == []
        genuine = {**forged, "clientState": "secret-2"}
        assert client.post("/webhooks/microsoft", json={"value": [genuine]}).status_code == 202
        assert hits
    finally:
        event.remove(engine, "before_cursor_execute", writes)


def test_the_validation_echo_is_plain_text_and_bounded(client: TestClient) -> None:
    markup = "<script>alert(1)</script>"
    echo = client.post("/webhooks/microsoft", params={"validationToken": markup})
    assert (echo.status_code, echo.text) == (200, markup)
    assert echo.headers["content-type"].startswith("text/plain")
    assert echo.headers["x-content-type-options"] == "nosniff"
    assert echo.headers["content-security-policy"] == "default-src 'none'"
    # Cut short, an echo would fail Graph's check anyway: a clear refusal instead.
    huge = client.post("/webhooks/microsoft", params={"validationToken": "x" * 5000})
    assert huge.status_code == 400


@pytest.mark.parametrize(
    "subscription", ["res-3\x00", "res-3" + "x" * 600, {"id": "res-3"}, ["res-3"], 3]
)
def test_a_garbage_subscription_id_is_skipped_not_a_500(
    client: TestClient, db_url: str, subscription: Any
) -> None:
    run(_connection(db_url, push_resource_id="res-3", push_token=token_digest("secret-3")))
    garbage = {"subscriptionId": subscription, "clientState": "secret-3"}
    genuine = {"subscriptionId": "res-3", "clientState": "secret-3"}
    requested = _requests(client)
    answer = client.post("/webhooks/microsoft", json={"value": [garbage, genuine]})
    assert answer.status_code == 202
    assert len(requested) == 1  # the genuine one still counts


@pytest.mark.parametrize(
    "header",
    [
        {"X-Goog-Channel-ID": b"chan-4\x00"},
        {"X-Goog-Channel-ID": b"c" * 5000},
        {"X-Goog-Channel-ID": "chan-\xe9".encode("latin-1")},
        {"X-Goog-Resource-State": b"exists" * 100},
        {"X-Goog-Resource-State": b"exists\x00"},
        {"X-Goog-Resource-ID": b"r\x00"},
        {"X-Goog-Resource-ID": b"r" * 501},
    ],
)
def test_garbage_google_headers_are_a_400(
    client: TestClient, db_url: str, header: dict[str, bytes]
) -> None:
    """Even with the channel's secret (the resource id of a channel whose opening went
    unanswered is stored from its first notification)."""
    run(_connection(db_url, provider="google", push_channel_id="chan-4",
                    push_token=token_digest("secret-4")))  # fmt: skip
    headers = {"X-Goog-Channel-ID": b"chan-4", "X-Goog-Channel-Token": b"secret-4",
               "X-Goog-Resource-State": b"exists", "X-Goog-Resource-ID": b"res-4"}  # fmt: skip
    requested = _requests(client)
    assert client.post("/webhooks/google", headers={**headers, **header}).status_code == 400
    assert requested == []
    # The message number is not used: garbage there changes nothing.
    noisy = {**headers, "X-Goog-Message-Number": b"\xff" * 3000}
    assert client.post("/webhooks/google", headers=noisy).status_code == 200
    assert len(requested) == 1


def _requests(client: TestClient) -> list[int]:
    """The connections the webhooks ask to sync, as they ask."""
    assert isinstance(client.app, FastAPI)
    requested: list[int] = []

    async def stop() -> None:
        pass

    client.app.state.scheduler = SimpleNamespace(request=requested.append, stop=stop)
    return requested
