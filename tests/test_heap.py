"""A worker gives what its syncs freed back to the system (``crmcal.heap``): when it
trims is decided from readings given to it here; that a trim gives memory back is
measured on the resident memory of a process of its own, not on a mocked call."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import subprocess
import sys
import types
import uuid
from typing import Any

import pytest

from crmcal import heap
from crmcal.db import Database
from crmcal.jobs import queue
from crmcal.sync import limits
from crmcal.vault import Vault
from tests.conftest import run
from tests.queue_world import SECRET, fresh_database, queue_db, settings  # noqa: F401

glibc = pytest.mark.skipif(not heap.available(), reason="malloc_trim is glibc's")

MB = 2**20


class Heap:
    """Readings of a process's memory as a test sets them, and the trims asked of it."""

    def __init__(
        self, size: int | None = 100 * MB, free: int | None = 0, left: int | None = None
    ) -> None:
        self.size, self.free, self.now = size, free, 0.0
        self.left = left  # the process's size once a trim gave back what it could
        self.trims = 0

    def trimmer(self, **policy: Any) -> heap.Trimmer:
        given: dict[str, Any] = {
            "check_every": 10, "trim_above": 16 * MB, "idle_after": 2.0,
            "free": lambda: self.free, "size": lambda: self.size,
            "give_back": self.give_back, "clock": lambda: self.now,
        }  # fmt: skip
        return heap.Trimmer(**(given | policy))

    def give_back(self) -> bool:
        self.trims += 1
        if self.left is not None:
            self.size = self.left
        return True


def jobs(trimmer: heap.Trimmer, count: int) -> list[int]:
    """The jobs (1-based) after which the trimmer trimmed."""
    return [n for n in range(1, count + 1) if trimmer.job_done()]


def test_a_heap_grown_with_free_blocks_is_trimmed_at_the_next_look() -> None:
    memory = Heap()
    trimmer = memory.trimmer()
    memory.size, memory.free = 130 * MB, 30 * MB
    # Looked at after every 10th job only: the 10th trims, not the 1st to 9th.
    assert jobs(trimmer, 10) == [10]
    assert (memory.trims, trimmer.trims, trimmer.since) == (1, 1, 0)


def test_memory_in_use_is_not_trimmed_for() -> None:
    memory = Heap()
    trimmer = memory.trimmer()
    memory.size, memory.free = 300 * MB, 15 * MB  # grown, but by blocks in use
    assert jobs(trimmer, 100) == []
    memory.free = 16 * MB  # then freed: now worth it
    assert jobs(trimmer, 10) == [10]


def test_free_blocks_given_back_once_are_not_trimmed_for_again() -> None:
    """glibc's count of free bytes stays where it was after a trim: the blocks stay
    free, only their pages go. Growth since the trim decides the next one."""
    memory = Heap(size=150 * MB, free=60 * MB, left=140 * MB)
    trimmer = memory.trimmer()
    memory.size = 200 * MB
    assert jobs(trimmer, 10) == [10]
    assert memory.size == 140 * MB
    assert jobs(trimmer, 100) == []
    memory.size = 140 * MB + 16 * MB - 1
    assert jobs(trimmer, 100) == []
    memory.size = 140 * MB + 16 * MB
    assert jobs(trimmer, 10) == [10]
    assert memory.trims == 2


def test_the_size_at_the_start_is_where_growth_is_counted_from() -> None:
    memory = Heap(size=90 * MB, free=40 * MB)
    trimmer = memory.trimmer()
    memory.size = 105 * MB
    assert jobs(trimmer, 50) == []
    memory.size = 106 * MB
    assert jobs(trimmer, 10) == [10]


def test_without_a_count_of_free_bytes_growth_alone_decides() -> None:
    """glibc before 2.33 has no mallinfo2."""
    memory = Heap(size=100 * MB, free=None)
    trimmer = memory.trimmer()
    memory.size = 120 * MB
    assert jobs(trimmer, 10) == [10]


def test_without_the_processs_size_a_fixed_count_of_jobs_decides() -> None:
    memory = Heap(size=None, free=40 * MB)
    trimmer = memory.trimmer(every=30)
    assert jobs(trimmer, 90) == [30, 60, 90]
    memory.free = 1 * MB
    assert jobs(trimmer, 30) == []


def test_an_idle_worker_trims_once_after_its_last_jobs() -> None:
    memory = Heap(size=100 * MB, free=1 * MB)  # too little for a trim between jobs
    trimmer = memory.trimmer()
    assert trimmer.idle() is False  # no job ran since the start: nothing to give back
    memory.now = 100.0
    assert jobs(trimmer, 3) == []
    memory.now = 101.9
    assert trimmer.idle() is False  # the last job ended 1.9 s ago: a pause between jobs
    memory.now = 102.0
    assert trimmer.idle() is True
    memory.now = 500.0
    assert trimmer.idle() is False  # still idle, nothing ran since the trim
    assert memory.trims == 1
    assert jobs(trimmer, 1) == []
    assert trimmer.idle() is False  # that job ended just now
    memory.now = 502.0
    assert trimmer.idle() is True
    assert memory.trims == 2


def test_a_trim_counts_jobs_and_growth_afresh() -> None:
    memory = Heap(size=100 * MB, free=40 * MB, left=112 * MB)
    trimmer = memory.trimmer()
    memory.size = 125 * MB
    assert jobs(trimmer, 5) == []
    memory.now = 10.0
    assert trimmer.idle() is True
    assert trimmer.since == 0
    # Growth counts from the size the trim left, jobs from the trim.
    memory.size = 127 * MB
    assert jobs(trimmer, 20) == []
    memory.size = 128 * MB
    assert jobs(trimmer, 10) == [10]


def test_nothing_is_done_without_glibc() -> None:
    def unread() -> int:
        raise AssertionError("read without glibc")

    trimmer = heap.Trimmer(check_every=1, free=unread, size=unread, give_back=None)
    assert not any(trimmer.job_done() for _ in range(5))
    assert trimmer.idle() is False
    assert (trimmer.trims, trimmer.since) == (0, 5)


def test_a_failed_trim_is_logged_and_the_jobs_go_on(caplog: pytest.LogCaptureFixture) -> None:
    def failing() -> bool:
        raise OSError("no")

    sizes = iter([0, 5, 5])
    trimmer = heap.Trimmer(check_every=1, trim_above=1, free=lambda: 10,
                           size=lambda: next(sizes), give_back=failing)  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="crmcal.heap"):
        assert trimmer.job_done() is False
    assert "giving freed memory back to the system failed: no" in caplog.text
    assert (trimmer.trims, trimmer.since, trimmer.size_after) == (1, 0, 5)


# Blocks of 100 kB (below glibc's threshold for a mapping of their own, so they come
# from the heap), every 50th kept: the freed ones are holes glibc does not give back
# by itself, as the blocks a burst of syncs frees between those that stay.
FRAGMENTED_HEAP = """
import json
from crmcal import heap

trimmer = heap.Trimmer(check_every=2, trim_above=50 * 2**20)
started = heap.resident()
blocks = [b"x" * 100_000 for _ in range(1500)]
kept = blocks[::50]
del blocks
first = trimmer.job_done()
before = heap.resident()
free = heap.free_bytes()
second = trimmer.job_done()
after = heap.resident()
later = [trimmer.job_done() for _ in range(10)]
print(json.dumps({"started": started, "before": before, "after": after, "free": free,
                  "first": first, "second": second, "later": later,
                  "free_after": heap.free_bytes(), "kept": len(kept)}))
"""


@glibc
def test_a_trimmer_gives_the_holes_of_the_heap_back_when_the_process_has_grown() -> None:
    found = subprocess.run(
        [sys.executable, "-c", FRAGMENTED_HEAP], capture_output=True, text=True, check=True
    )
    sizes = json.loads(found.stdout)
    # About 145 MB of holes resident, grown since the start by as much.
    assert sizes["before"] > sizes["started"] + 140_000_000
    assert sizes["first"] is False  # not looked at yet
    assert sizes["second"] is True
    # The trim gives them back: what stays is the 30 blocks kept, the interpreter, crmcal.
    assert sizes["after"] < sizes["before"] - 100_000_000
    # glibc still counts the holes as free (their pages went, the blocks stay free), so
    # the process's growth since the trim decides: no trim again.
    if sizes["free"] is not None:
        assert sizes["free"] > 140_000_000
        assert sizes["free_after"] > 140_000_000
    assert sizes["later"] == [False] * 10


@pytest.mark.postgres
def test_a_workers_sync_jobs_are_counted_towards_a_trim(queue_db: str) -> None:  # noqa: F811
    """Every sync job counts, whatever it ended with (here: no such connection)."""
    memory = Heap(size=100 * MB, free=40 * MB)

    async def scenario() -> heap.Trimmer:
        db = Database(queue_db)
        app = queue.queue_app(queue_db)
        try:
            async with app.open_async():
                runtime = queue.Runtime(db, Vault(SECRET), settings(queue_db), app=app)
                runtime.trimmer = memory.trimmer(check_every=2)
                memory.size = 200 * MB
                context: Any = types.SimpleNamespace(
                    additional_context={"crmcal": runtime}, job=None
                )
                for _ in range(3):
                    with contextlib.suppress(LookupError):
                        await queue.sync_connection(context, 2_000_000_000)
                return runtime.trimmer
        finally:
            limits.install(None)
            await db.dispose()

    trimmer = run(scenario())
    assert (memory.trims, trimmer.trims, trimmer.since) == (1, 1, 1)


@pytest.mark.postgres
def test_the_queue_tells_when_it_has_no_job_for_the_worker(queue_db: str) -> None:  # noqa: F811
    name = f"heap-{uuid.uuid4().hex[:8]}"

    async def scenario() -> list[bool]:
        app = queue.queue_app(queue_db)
        async with app.open_async():
            manager = app.job_manager
            assert isinstance(manager, queue.JobManager)
            idle: list[bool] = []
            manager.on_idle = lambda: idle.append(True)
            worker = await manager.register_worker()
            try:
                await app.configure_task("crmcal.test.noop", queue=name,
                                         allow_unknown=True).defer_async()  # fmt: skip
                found = await manager.fetch_job(queues=[name], worker_id=worker)
                fetched = [found is not None, bool(idle)]
                assert await manager.fetch_job(queues=[name], worker_id=worker) is None
                return [*fetched, bool(idle)]
            finally:
                await manager.unregister_worker(worker)

    # A job found: not idle; none left: idle.
    assert run(scenario()) == [True, False, True]


@pytest.mark.postgres
def test_a_worker_with_no_job_gives_back_what_its_jobs_left() -> None:
    memory = Heap(size=100 * MB, free=1 * MB)

    async def scenario(url: str) -> heap.Trimmer:
        db = Database(url)
        app = queue.queue_app(url)
        trimmed = asyncio.Event()

        def give_back() -> bool:
            trimmed.set()
            return True

        try:
            async with app.open_async():
                runtime = queue.Runtime(db, Vault(SECRET), settings(url), app=app)
                runtime.trimmer = memory.trimmer(give_back=give_back)
                runtime.trimmer.job_done()  # a job ended, long ago on its clock
                memory.now = 60.0
                worker = asyncio.create_task(
                    queue.run_worker(runtime, concurrency=1, install_signal_handlers=False)
                )
                await trimmed.wait()
                worker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await worker
                return runtime.trimmer
        finally:
            limits.install(None)
            await db.dispose()

    with fresh_database() as url:
        trimmer = run(scenario(url))
    # Once: nothing ran after the trim, however often the queue found no job.
    assert (trimmer.trims, trimmer.since) == (1, 0)
