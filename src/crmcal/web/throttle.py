"""Failed sign-ins, counted per e-mail address and per client address, so that passwords
cannot be guessed at speed. Kept in the process's memory: a restart forgets them, and
each process of a multi-process installation counts its own."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

WINDOW = 15 * 60.0
PER_ACCOUNT = 5
PER_CLIENT = 20


class FailedSignIns:
    def __init__(self, window: float = WINDOW, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self._clock = clock
        self._seen: dict[str, deque[float]] = {}

    def _now(self) -> float:
        return self._clock()

    def _recent(self, key: str) -> deque[float]:
        found = self._seen.get(key)
        if found is None:
            return deque()
        cutoff = self._now() - self.window
        while found and found[0] < cutoff:
            found.popleft()
        if not found:
            del self._seen[key]
        return found

    def wait_seconds(self, email: str, client: str) -> int:
        """0 when a sign-in may be tried now, else how long until one may."""
        waits = []
        for key, limit in ((f"e:{email}", PER_ACCOUNT), (f"c:{client}", PER_CLIENT)):
            recent = self._recent(key)
            if len(recent) >= limit:
                waits.append(recent[len(recent) - limit] + self.window - self._now())
        return max(1, int(max(waits)) + 1) if waits else 0

    def failed(self, email: str, client: str) -> None:
        now = self._now()
        for key in (f"e:{email}", f"c:{client}"):
            self._seen.setdefault(key, deque()).append(now)
        if len(self._seen) > 100_000:  # bounded memory under a spray of addresses
            self._seen.clear()

    def succeeded(self, email: str) -> None:
        self._seen.pop(f"e:{email}", None)
