"""Opening a push channel races nothing: a channel the service opened is stored by crmcal
or closed again, whatever happens to the sync that asked for it meanwhile."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import ClassVar

import pytest

from crmcal.providers.base import Capabilities
from crmcal.sync import push
from crmcal.sync.states import ConnectionState
from crmcal.sync.tables import Connection
from tests.engine_world import World

CRM = "https://crm.example"


class Service:
    """A calendar service's channels; ``watch`` answers once the test lets it."""

    capabilities: ClassVar[Capabilities] = Capabilities(push=True)

    def __init__(self) -> None:
        self.asked = asyncio.Event()
        self.answer = asyncio.Event()
        self.open: dict[str, str] = {}  # channel id -> resource id

    async def watch(
        self, calendar_id: str, channel_id: str, address: str, token: str
    ) -> tuple[str, dt.datetime]:
        self.open[channel_id] = f"resource-{channel_id}"  # made as the request arrives
        self.asked.set()
        await self.answer.wait()
        return self.open[channel_id], dt.datetime.now(dt.UTC) + dt.timedelta(days=7)

    async def stop_watching(self, channel_id: str, resource_id: str) -> None:
        assert self.open.pop(channel_id) == resource_id


async def opened(world: World, service: Service) -> asyncio.Task[bool]:
    """keep_channel running, up to the moment the service has made the channel."""
    task = asyncio.ensure_future(
        push.keep_channel(world.db, world.connection_id, service, CRM)  # type: ignore[arg-type]
    )
    await service.asked.wait()
    return task


async def test_a_sync_stopped_while_its_channel_opens_still_stores_it(world: World) -> None:
    service = Service()
    keeping = await opened(world, service)
    keeping.cancel()  # the sync's lease is lost, or its time is up
    with pytest.raises(asyncio.CancelledError):
        await keeping
    service.answer.set()
    await asyncio.gather(*push._OPENING)
    (channel_id,) = service.open
    assert (await world.connection()).push_channel_id == channel_id


async def test_a_channel_opened_for_a_connection_stopped_meanwhile_is_closed(
    world: World,
) -> None:
    service = Service()
    keeping = await opened(world, service)
    async with world.db.write() as session:
        conn = await session.get(Connection, world.connection_id)
        assert conn is not None
        conn.state = ConnectionState.STOPPED
    service.answer.set()
    assert await keeping is False
    assert service.open == {}
    assert (await world.connection()).push_channel_id is None


async def test_a_channel_another_sync_stored_first_is_kept_and_the_late_one_closed(
    world: World,
) -> None:
    service = Service()
    keeping = await opened(world, service)
    async with world.db.write() as session:
        conn = await session.get(Connection, world.connection_id)
        assert conn is not None
        conn.push_channel_id, conn.push_resource_id = "first", "resource-first"
    service.open["first"] = "resource-first"
    service.answer.set()
    assert await keeping is False
    assert service.open == {"first": "resource-first"}
    assert (await world.connection()).push_channel_id == "first"
