"""Slow responses on demand, as both emulators inject them: a queue of delays, each
for the next ``count`` API calls (the admin API's ``{"delay": s, "count": n}``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MAX_DELAY = 60.0
MAX_COUNT = 10_000


class BadDelay(ValueError):
    """A delay the admin API refuses; ``field`` names the part that is wrong."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass
class Delay:
    seconds: float
    count: int


class Delays:
    """Pending delays, oldest first."""

    def __init__(self) -> None:
        self.pending: list[Delay] = []

    def add(self, seconds: Any, count: Any) -> None:
        # bool is an int to Python, never a number of seconds (or calls) to a caller.
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise BadDelay("delay: a number of seconds", "delay")
        if not 0 < seconds <= MAX_DELAY:  # also refuses NaN, which JSON may carry
            raise BadDelay(f"delay: above 0 and at most {MAX_DELAY:g} seconds", "delay")
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_COUNT:
            raise BadDelay(f"count: an integer between 1 and {MAX_COUNT}", "count")
        self.pending.append(Delay(float(seconds), count))

    def take(self) -> float:
        """The seconds this call waits before it is served (0 when none is pending)."""
        if not self.pending:
            return 0.0
        delay = self.pending[0]
        delay.count -= 1
        if delay.count <= 0:
            self.pending.pop(0)
        return delay.seconds

    def __len__(self) -> int:
        return len(self.pending)

    def clear(self) -> None:
        self.pending.clear()

    def described(self) -> list[dict[str, Any]]:
        return [{"delay": d.seconds, "count": d.count} for d in self.pending]
