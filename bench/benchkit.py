"""What the cloud-calendar benchmarks share: free ports, request counts from an
emulator's ``/_emulator/requests``, medians, a provider that creates one event at a
time, the activities pushed, and the ratio cells of the tables."""

from __future__ import annotations

import datetime as dt
import socket
import statistics
from dataclasses import dataclass, field, replace
from typing import Any

from crmcal.crm.schemas import ActivityCreate, ParticipantIn
from crmcal.model import CalendarEvent, RemoteRef
from crmcal.providers.base import Capabilities


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
    """The provider without ``create_many``: the engine then creates events one by one.
    It keeps what it was asked to create, for the peer to write the same events."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.created: list[tuple[str, CalendarEvent]] = []

    @property
    def capabilities(self) -> Capabilities:
        # The engine asks the capabilities, not the methods, whether to batch.
        return replace(self.inner.capabilities, batch_creates=False)

    def __getattr__(self, name: str) -> Any:
        if name == "create_many":
            raise AttributeError(name)
        return getattr(self.inner, name)

    async def create(self, calendar_id: str, key: str, event: CalendarEvent) -> RemoteRef:
        self.created.append((key, event))
        return await self.inner.create(calendar_id, key, event)  # type: ignore[no-any-return]


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
