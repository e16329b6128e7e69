"""What the cloud-calendar benchmarks share: free ports, request counts from an
emulator's ``/_emulator/requests``, medians, a provider that creates one event at a
time, the activities pushed, and the ratio cells of the tables."""

from __future__ import annotations

import datetime as dt
import socket
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import ClassVar, cast

from crmcal.crm.schemas import ActivityCreate, ParticipantIn
from crmcal.model import CalendarEvent, CalendarInfo, ChangeListing, RemoteRef
from crmcal.providers.base import (
    BatchChanging,
    Capabilities,
    Provider,
    ProviderError,
    Update,
)
from crmcal.sync.push import Pushing, Renewing


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class BenchError(Exception):
    """A step failed; the message says which and why."""


@dataclass
class Counted:
    """What one step cost the emulator: calls by kind, and the HTTP requests they took."""

    kinds: dict[str, int]
    http: int
    calls: int

    @classmethod
    def between(
        cls, before: dict[str, int], after: dict[str, int], *, batched: str | None = None
    ) -> Counted:
        """``batched``: the kind of call that travelled inside ``$batch`` requests in this
        step (the emulator counts an envelope once as "batch" and each call in it by its
        own kind)."""
        kinds = {k: after.get(k, 0) - before.get(k, 0) for k in after}
        kinds = {k: v for k, v in kinds.items() if v}
        calls = sum(v for k, v in kinds.items() if k != "batch")
        inside = kinds.get(batched, 0) if batched and kinds.get("batch") else 0
        return cls(kinds, kinds.get("batch", 0) + calls - inside, calls)


@dataclass
class Sample:
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    http: list[int] = field(default_factory=list)
    calls: list[int] = field(default_factory=list)
    kinds: dict[str, int] = field(default_factory=dict)  # of the last run, for the notes

    def add(self, wall: float, cpu: float, counted: Counted) -> None:
        self.wall.append(wall)
        self.cpu.append(cpu)
        self.http.append(counted.http)
        self.calls.append(counted.calls)
        self.kinds = counted.kinds

    def median(self, name: str) -> float:
        return float(statistics.median(getattr(self, name)))


class OneByOne:
    """A provider without ``create_many``: the engine then creates events one by one.
    It keeps what it was asked to create, for the peer to write the same events.

    Everything else goes to the provider it wraps, method by method: the batched
    updates and deletes and the push channel, which the engine calls where the
    capabilities say so. Its capabilities are a class's, as ``Provider`` says: the
    wrapped one's less ``batch_creates``, in the class ``without_batch_creates`` makes."""

    capabilities: ClassVar[Capabilities]

    def __init__(self, inner: Provider) -> None:
        self.inner = inner
        self.created: list[tuple[str, CalendarEvent]] = []

    async def discover(self) -> str | None:
        return await self.inner.discover()

    async def list_calendars(self) -> list[CalendarInfo]:
        return await self.inner.list_calendars()

    async def list_changes(
        self, calendar_id: str, cursor: str | None, *, with_contents: bool = False
    ) -> ChangeListing:
        return await self.inner.list_changes(calendar_id, cursor, with_contents=with_contents)

    async def fetch(self, calendar_id: str, ids: Sequence[str]) -> list[RemoteRef]:
        return await self.inner.fetch(calendar_id, ids)

    async def get_by_key(self, calendar_id: str, key: str) -> RemoteRef | None:
        return await self.inner.get_by_key(calendar_id, key)

    async def create(self, calendar_id: str, key: str, event: CalendarEvent) -> RemoteRef:
        self.created.append((key, event))
        return await self.inner.create(calendar_id, key, event)

    async def update(
        self,
        calendar_id: str,
        event_id: str,
        etag: str,
        event: CalendarEvent,
        *,
        changed: frozenset[str] | None = None,
    ) -> RemoteRef:
        return await self.inner.update(calendar_id, event_id, etag, event, changed=changed)

    async def delete(self, calendar_id: str, event_id: str, etag: str | None) -> None:
        await self.inner.delete(calendar_id, event_id, etag)

    async def close(self) -> None:
        await self.inner.close()

    # Called only where the capabilities (the wrapped provider's) say so.

    async def update_many(
        self, calendar_id: str, items: Sequence[Update]
    ) -> Sequence[RemoteRef | ProviderError]:
        return await cast(BatchChanging, self.inner).update_many(calendar_id, items)

    async def delete_many(
        self, calendar_id: str, items: Sequence[tuple[str, str | None]]
    ) -> Sequence[ProviderError | None]:
        return await cast(BatchChanging, self.inner).delete_many(calendar_id, items)

    async def watch(
        self, calendar_id: str, channel_id: str, address: str, token: str
    ) -> tuple[str | None, dt.datetime]:
        return await cast(Pushing, self.inner).watch(calendar_id, channel_id, address, token)

    async def stop_watching(self, channel_id: str, resource_id: str) -> None:
        await cast(Pushing, self.inner).stop_watching(channel_id, resource_id)

    async def renew_watch(self, resource_id: str) -> dt.datetime:
        return await cast(Renewing, self.inner).renew_watch(resource_id)


def without_batch_creates(inner: Provider) -> OneByOne:
    """``inner`` in a ``OneByOne`` whose class has ``inner``'s capabilities less
    ``batch_creates``."""

    class Wrapped(OneByOne):
        capabilities = replace(inner.capabilities, batch_creates=False)

    return Wrapped(inner)


def activity(n: int, start: dt.datetime) -> ActivityCreate:
    begin = start + dt.timedelta(hours=n)
    return ActivityCreate(
        type="call",
        subject=f"Customer call {n}",
        start=begin.isoformat(),
        end=(begin + dt.timedelta(minutes=45)).isoformat(),
        timezone="Europe/Berlin",
        location=f"Room {n % 9}",
        note=f"Agenda for call {n}",
        participants=[
            ParticipantIn(email=f"contact{n % 40}@acme.example", name=f"Contact {n % 40}")
        ],
    )


def ratio(mine: float, theirs: float) -> str:
    return f"{mine / theirs:.2f}" if theirs else "-"
