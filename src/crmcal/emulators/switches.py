"""What both emulators switch on, through their admin APIs, for the next API calls:
injected faults and slow responses, each for a ``count`` of calls, oldest first.

``Countdown`` is the queue both kinds wait in; each emulator keeps its own
``Fault`` (what an error looks like differs), and both share ``Delays``, which
checks the admin API's ``{"delay": s, "count": n}`` the same way for both.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

MAX_DELAY = 60.0
MAX_COUNT = 10_000


class Counted(Protocol):
    count: int


T = TypeVar("T", bound=Counted)


class Countdown(Generic[T]):
    """Switches waiting for calls: the oldest serves the next ``count`` calls, then goes."""

    def __init__(self) -> None:
        self.pending: list[T] = []

    def push(self, switch: T) -> None:
        self.pending.append(switch)

    def take_one(self) -> T | None:
        """The switch this call gets (its count lowered), or None when none waits."""
        if not self.pending:
            return None
        switch = self.pending[0]
        switch.count -= 1
        if switch.count <= 0:
            self.pending.pop(0)
        return switch

    def __len__(self) -> int:
        return len(self.pending)

    def __iter__(self) -> Iterator[T]:
        return iter(self.pending)

    def clear(self) -> None:
        self.pending.clear()


class BadDelay(ValueError):
    """A delay the admin API refuses; ``field`` names the part that is wrong."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass
class Delay:
    seconds: float
    count: int


class Delays(Countdown[Delay]):
    """Pending delays, oldest first."""

    def add(self, seconds: Any, count: Any) -> None:
        # bool is an int to Python, never a number of seconds (or calls) to a caller.
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise BadDelay("delay: a number of seconds", "delay")
        if not 0 < seconds <= MAX_DELAY:  # also refuses NaN, which JSON may carry
            raise BadDelay(f"delay: above 0 and at most {MAX_DELAY:g} seconds", "delay")
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_COUNT:
            raise BadDelay(f"count: an integer between 1 and {MAX_COUNT}", "count")
        self.push(Delay(float(seconds), count))

    def take(self) -> float:
        """The seconds this call waits before it is served (0 when none is pending)."""
        delay = self.take_one()
        return delay.seconds if delay is not None else 0.0

    def described(self) -> list[dict[str, Any]]:
        return [{"delay": d.seconds, "count": d.count} for d in self.pending]
