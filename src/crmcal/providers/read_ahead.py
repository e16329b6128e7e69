"""Blocking reads run in threads ahead of whoever consumes them, their results in order.

A provider reading a calendar in parts (a CalDAV first import's multigets, a fetch in
chunks) keeps the server answering and its answers being parsed while the caller works
on what came before. ``in_order`` starts up to ``window`` reads in an executor's
threads, yields their results in the order given, and starts the next read as each
result is handed over, so at most ``window`` answers are in memory besides the one the
caller holds.

A thread cannot be interrupted: cancelling the future of a read already running leaves
its request running after the caller has gone (and the provider's client may be closed
under it). So when the consumer stops early (it closes the generator, is cancelled, or a
read fails), the reads not yet started are dropped, and those running are waited for:
when ``in_order`` has ended, no read it started is still running and none starts later.
Each read's time is bounded where it runs (the HTTP client's deadline).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import threading
from collections import deque
from collections.abc import AsyncGenerator, Callable, Iterable
from concurrent.futures import Executor
from typing import TypeVar

from crmcal import tasks

__all__ = ["in_order"]

T = TypeVar("T")


class _Dropped(Exception):
    """A read whose turn came after the consumer had stopped: never run."""


async def in_order(
    reads: Iterable[Callable[[], T]], window: int, executor: Executor
) -> AsyncGenerator[T, None]:
    """The result of each of ``reads``, in order, each run in ``executor`` (in a copy
    of the consumer's context) with up to ``window`` (at least 1) running or done and
    not yet handed over. A read's exception is raised in its turn, after the reads
    before it were handed over."""
    stopped = threading.Event()
    pending: deque[concurrent.futures.Future[T]] = deque()
    given = iter(reads)

    def guarded(read: Callable[[], T]) -> Callable[[], T]:
        def run() -> T:
            if stopped.is_set():
                raise _Dropped  # queued in the executor when the consumer stopped
            return read()

        return run

    def refill() -> None:
        while len(pending) < max(window, 1):
            read = next(given, None)
            if read is None:
                return
            # In the consumer's context, as ``asyncio.to_thread`` runs a function: what
            # the reader asks of the parse pool (``parse_pool.computing_beside``) is in it.
            context = contextvars.copy_context()
            pending.append(executor.submit(context.run, guarded(read)))

    try:
        refill()
        while pending:
            result = await asyncio.wrap_future(pending[0])
            pending.popleft()
            refill()  # the next reads run while the consumer has this one
            yield result
    finally:
        stopped.set()
        running = [future for future in pending if not future.cancel()]
        if running:
            # Waited for even when the consumer is cancelled meanwhile (that
            # cancellation is raised once they have ended). Their results and errors
            # are dropped: the error that brought us here, if any, is the one raised.
            await tasks.to_completion(_ended(running))


async def _ended(futures: list[concurrent.futures.Future[T]]) -> None:
    waited = [asyncio.wrap_future(future) for future in futures]
    await asyncio.wait(waited)
    for future in waited:
        if not future.cancelled():
            future.exception()  # retrieved: dropped on purpose, not "never retrieved"
