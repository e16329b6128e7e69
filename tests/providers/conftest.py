"""The provider contract suite's fixtures: each test gets a fresh calendar through
``harness``, parametrised over the provider kinds (``HARNESSES``), or through
``caldav_harness`` for CalDAV-only tests. The servers are in tests/caldav_servers.py.
The end-to-end tests through the REST API (a CRM user on such a calendar) take the
fixtures of ``tests.providers.synced``, offered here to every test."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol, TypeVar

import pytest

from tests.caldav_servers import CALDAV_KINDS
from tests.google_emulator import GoogleHarness
from tests.memory_provider import MemoryHarness
from tests.microsoft_emulator import MicrosoftHarness
from tests.providers.harness import CalDAVHarness, CalDAVServer, Harness
from tests.providers.synced import (  # noqa: F401  # the API tests' fixtures, for every test here
    admin,
    behaviour,
    client,
    on_caldav,
    on_google,
    on_microsoft,
    proxied,
    sam,
    synced,
)


class _Closing(Protocol):
    async def close(self) -> None: ...


H = TypeVar("H", bound=_Closing)


async def _caldav_harness(request: pytest.FixtureRequest, kind: str) -> CalDAVHarness:
    server: CalDAVServer = request.getfixturevalue(kind)
    return await asyncio.to_thread(CalDAVHarness, server)


async def _google_harness(request: pytest.FixtureRequest) -> Harness:
    return await GoogleHarness.open(request.getfixturevalue("google_emulator"))


async def _microsoft_harness(request: pytest.FixtureRequest) -> Harness:
    return await MicrosoftHarness.open(request.getfixturevalue("microsoft_emulator"))


async def _memory_harness(request: pytest.FixtureRequest) -> Harness:
    return MemoryHarness()


# Every provider kind the contract suite runs against: parametrised id -> factory.
HARNESSES: dict[str, Callable[[pytest.FixtureRequest], Awaitable[Harness]]] = {
    "radicale": lambda request: _caldav_harness(request, "radicale"),
    "xandikos": lambda request: _caldav_harness(request, "xandikos"),
    "google": _google_harness,
    "microsoft": _microsoft_harness,
    # The engine's model-based test drives this one: it must keep the same contract.
    "memory": _memory_harness,
}


@contextlib.asynccontextmanager
async def opened(making: Awaitable[H]) -> AsyncIterator[H]:
    """A harness for the length of a test, closed after it."""
    made = await making
    try:
        yield made
    finally:
        await made.close()


def opened_harness(
    request: pytest.FixtureRequest, kind: str
) -> contextlib.AbstractAsyncContextManager[Harness]:
    """The harness of provider ``kind`` (a key of ``HARNESSES``) on a fresh calendar, for
    the length of an ``async with``: what a fixture of one kind, or of its own list of
    kinds, yields."""
    return opened(HARNESSES[kind](request))


@pytest.fixture(params=list(HARNESSES))
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    """The provider under test on a fresh calendar, with out-of-band helpers."""
    async with opened_harness(request, request.param) as made:
        yield made


# Providers whose connections the REST API can make, for the end-to-end option
# tests: all of them.
API_HARNESSES = {kind: made for kind, made in HARNESSES.items() if kind != "memory"}


@pytest.fixture(params=list(API_HARNESSES))
async def api_harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    """A calendar of each provider crmcal can connect to through its REST API."""
    async with opened_harness(request, request.param) as made:
        yield made


@pytest.fixture(params=CALDAV_KINDS)
async def caldav_harness(request: pytest.FixtureRequest) -> AsyncIterator[CalDAVHarness]:
    """Like ``harness``, for the tests particular to CalDAV."""
    async with opened(_caldav_harness(request, request.param)) as made:
        yield made
