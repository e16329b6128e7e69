"""Reads run ahead in threads (``providers.read_ahead``): in order, a bounded window, and
nothing left running once the consumer has stopped."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from crmcal.providers import read_ahead


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(max_workers=1)
    yield pool
    pool.shutdown(wait=True)


async def test_results_come_in_order_with_a_bounded_window() -> None:
    started: list[int] = []
    lock = threading.Lock()

    def read(number: int) -> Callable[[], int]:
        def run() -> int:
            with lock:
                started.append(number)
            return number

        return run

    with ThreadPoolExecutor(max_workers=4) as pool:
        got: list[int] = []
        async for value in read_ahead.in_order((read(n) for n in range(7)), 2, pool):
            # Never more than two reads begun beyond what was handed over.
            assert len(started) <= len(got) + 1 + 2
            got.append(value)
    assert got == list(range(7))


WHO = contextvars.ContextVar("who", default="nobody")


async def test_reads_run_in_the_consumers_context(executor: ThreadPoolExecutor) -> None:
    """What the consumer set (the sync's request to the parse pool) reaches the reads."""
    WHO.set("the sync")
    reads = [WHO.get, WHO.get]
    assert [who async for who in read_ahead.in_order(reads, 2, executor)] == ["the sync"] * 2


async def test_a_read_that_fails_is_raised_in_its_turn(executor: ThreadPoolExecutor) -> None:
    def failing() -> int:
        raise ValueError("the second part")

    reads = [lambda: 1, failing, lambda: 3]
    got: list[int] = []

    async def consume() -> None:
        async for value in read_ahead.in_order(reads, 3, executor):
            got.append(value)

    with pytest.raises(ValueError, match="the second part"):
        await consume()
    assert got == [1]


async def test_closed_midway_no_read_is_left_running_and_none_starts_later(
    executor: ThreadPoolExecutor,
) -> None:
    """Closing the reads after the first result waits for the read running in a
    thread (a request cannot be interrupted: it would go on with the consumer gone)
    and drops those not begun."""
    running = threading.Event()
    release = threading.Event()
    ended: list[str] = []
    begun: list[str] = []

    def first() -> str:
        return "first"

    def second() -> str:
        begun.append("second")
        running.set()
        release.wait()
        ended.append("second")
        return "second"

    def third() -> str:
        begun.append("third")
        return "third"

    reads = read_ahead.in_order([first, second, third], 3, executor)
    try:
        assert await anext(reads) == "first"
        # The one thread of the executor now runs ``second``; ``third`` waits behind it.
        await asyncio.get_running_loop().run_in_executor(None, running.wait)
        closing = asyncio.ensure_future(reads.aclose())
        await asyncio.sleep(0)  # one turn of the loop: the close has begun
        assert not closing.done()  # waiting for ``second``, which still runs
    finally:
        release.set()
    await closing
    assert ended == ["second"]
    # The executor has run everything it was given by now: ``third`` never began.
    await asyncio.get_running_loop().run_in_executor(executor, lambda: None)
    assert begun == ["second"]


async def test_cancelled_midway_the_running_read_ends_first(
    executor: ThreadPoolExecutor,
) -> None:
    """A consumer cancelled while it waits for a result: the cancellation is raised
    after the read running in a thread has ended, not before."""
    running = threading.Event()
    release = threading.Event()
    ended: list[str] = []

    def slow() -> str:
        running.set()
        release.wait()
        ended.append("slow")
        return "slow"

    async def consume() -> None:
        async with contextlib.aclosing(read_ahead.in_order([slow], 1, executor)) as reads:
            async for _ in reads:
                pass

    consumer = asyncio.ensure_future(consume())
    try:
        await asyncio.get_running_loop().run_in_executor(None, running.wait)
        consumer.cancel()
        await asyncio.sleep(0)  # one turn of the loop: the cancellation has arrived
        assert not consumer.done()
    finally:
        release.set()
    with pytest.raises(asyncio.CancelledError):
        await consumer
    assert ended == ["slow"]
