"""Opening a push channel whose answer the connection loses leaves no channel nobody
knows of: Google's channel (our id) is kept and learns its resource id from its first
notification, so that it can be closed; a Graph subscription (the service's id) is not
asked for twice blindly, and the one the lost request may have made is removed."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from crmcal.sync import push
from crmcal.sync.tables import Connection
from tests import plain
from tests.engine_world import World
from tests.fault_proxy import fault_proxy
from tests.google_emulator import GoogleHarness
from tests.microsoft_emulator import MicrosoftHarness
from tests.providers.conftest import HARNESSES
from tests.served import served_app


async def _as_connection_of(world: World, provider: str, calendar_id: str) -> None:
    async with world.db.write() as session:
        conn = await session.get(Connection, world.connection_id)
        assert conn is not None
        conn.provider, conn.calendar_id = provider, calendar_id


@pytest.fixture
def receiver() -> Iterator[str]:
    """A webhook address that answers Graph's validation and takes every notification."""

    async def hook(request: Request) -> Response:
        token = request.query_params.get("validationToken")
        if token is not None:
            return PlainTextResponse(token)
        return Response(status_code=202)

    app = Starlette(routes=[Route("/webhooks/microsoft", hook, methods=["POST"])])
    with served_app(app, shutdown_grace=1) as url:
        yield url


async def test_a_google_channel_whose_answer_was_lost_is_stored_and_can_be_closed(
    request: pytest.FixtureRequest, world: World
) -> None:
    harness = await HARNESSES["google"](request)
    assert isinstance(harness, GoogleHarness)
    channels = harness.emulator.state.channels
    try:
        await _as_connection_of(world, "google", harness.calendar_id)
        with fault_proxy(harness.emulator.url) as (proxy, url):
            provider = harness.provider_for(url)
            lost = proxy.add("lose", method="POST", path=r"/events/watch", times=1)
            # (An address nobody answers at: the channel's messages go nowhere.)
            await push.keep_channel(world.db, world.connection_id, provider, "http://127.0.0.1:9")
            assert lost.hits == 1
            # Sent again with the same id: Google opened one channel, not two.
            (opened,) = [c for c in channels.by_id.values() if c.calendar_id == harness.email]
            conn = await world.connection()
            assert conn.push_channel_id == opened.id
            assert conn.push_resource_id is None  # the lost answer named it
            assert conn.push_expires_at is not None
            # Its notifications are the connection's, and the first one names the
            # resource; one of a channel crmcal does not know is no connection's.
            assert opened.token is not None
            found = await push.connection_for(
                world.db, "google", opened.id, opened.token, opened.resource_id
            )
            assert found == world.connection_id
            unknown = await push.connection_for(
                world.db, "google", "not-ours", opened.token, opened.resource_id
            )
            assert unknown is None
            conn = await world.connection()
            assert conn.push_resource_id == opened.resource_id
            # So stopping the connection closes the channel.
            await push.stop_channel(conn, provider)
            assert [c for c in channels.by_id.values() if c.calendar_id == harness.email] == []
    finally:
        await harness.close()


def _live(harness: MicrosoftHarness) -> list[dict[str, Any]]:
    """The Graph emulator's subscriptions of the harness's mailbox."""
    listed = plain.get(f"{harness.emulator.url}/_emulator/subscriptions", timeout=60)
    return [s for s in listed.json()["subscriptions"] if s["mailbox"] == harness.email]


@asynccontextmanager
async def _graph_behind_proxy(
    request: pytest.FixtureRequest, world: World
) -> AsyncIterator[tuple[MicrosoftHarness, Any, Any]]:
    """The world's connection on the Graph emulator, reached through a fault proxy:
    (the harness, the proxy, a provider that sends through it)."""
    harness = await HARNESSES["microsoft"](request)
    assert isinstance(harness, MicrosoftHarness)
    try:
        await _as_connection_of(world, "microsoft", harness.calendar_id)
        with fault_proxy(harness.emulator.url) as (proxy, url):
            yield harness, proxy, harness.provider_for(url)
    finally:
        await harness.close()


async def test_a_graph_subscription_whose_answer_was_lost_is_not_left_behind(
    request: pytest.FixtureRequest, world: World, receiver: str
) -> None:
    async with _graph_behind_proxy(request, world) as (harness, proxy, provider):
        lost = proxy.add("lose", method="POST", path=r"/subscriptions$", times=1)
        await push.keep_channel(world.db, world.connection_id, provider, receiver)
        assert lost.hits == 1
        # The one the lost request made is gone; the one crmcal knows is the only one.
        (subscription,) = _live(harness)
        conn = await world.connection()
        assert conn.push_resource_id == subscription["id"]
        expires = conn.push_expires_at
        assert expires is not None
        assert expires.replace(tzinfo=dt.UTC) > dt.datetime.now(dt.UTC) + dt.timedelta(days=1)


@pytest.mark.parametrize("status", [500, 503, 504])
async def test_a_graph_subscription_answered_5xx_after_it_was_made_is_not_left_behind(
    request: pytest.FixtureRequest, world: World, receiver: str, status: int
) -> None:
    async with _graph_behind_proxy(request, world) as (harness, proxy, provider):
        # Graph made the subscription; a gateway answered 5xx in place of its answer.
        failed = proxy.add("fail", method="POST", path=r"/subscriptions$", times=1,
                           status=status, body='{"error": {"code": "x"}}')  # fmt: skip
        await push.keep_channel(world.db, world.connection_id, provider, receiver)
        assert failed.hits == 1
        posts = [r for r in proxy.requests if r == ("POST", "/v1.0/subscriptions")]
        assert len(posts) == 2  # asked once more, not retried blindly
        (subscription,) = _live(harness)
        conn = await world.connection()
        assert conn.push_resource_id == subscription["id"]


async def test_a_graph_subscription_answered_5xx_twice_leaves_none_behind(
    request: pytest.FixtureRequest, world: World, receiver: str
) -> None:
    async with _graph_behind_proxy(request, world) as (harness, proxy, provider):
        failed = proxy.add("fail", method="POST", path=r"/subscriptions$", status=503)
        await push.keep_channel(world.db, world.connection_id, provider, receiver)
        assert failed.hits == 2  # the first, and the one more asked for
        assert _live(harness) == []
        conn = await world.connection()
        assert conn.push_resource_id is None
