"""A worker gives what its syncs freed back to the system (``crmcal.heap``): measured on
the resident memory of a process of its own, not on a mocked call."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import types
from typing import Any

import pytest

from crmcal import heap
from crmcal.db import Database
from crmcal.jobs import queue
from crmcal.sync import limits
from crmcal.vault import Vault
from tests.conftest import run
from tests.queue_world import SECRET, queue_db, settings  # noqa: F401

glibc = pytest.mark.skipif(not heap.available(), reason="malloc_trim is glibc's")

# Blocks of 100 kB (below glibc's threshold for a mapping of their own, so they come
# from the heap), every 50th kept: the freed ones are holes glibc does not give back
# by itself, as the blocks a burst of syncs frees between those that stay.
FRAGMENTED_HEAP = """
import json, os, sys
from crmcal import heap

def resident():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

blocks = [b"x" * 100_000 for _ in range(1500)]
kept = blocks[::50]
del blocks
trimmer = heap.Trimmer(every=3)
freed = resident()
early = [trimmer.job_done(), trimmer.job_done()]
before = resident()
third = trimmer.job_done()
print(json.dumps({"freed": freed, "before": before, "after": resident(),
                  "early": early, "third": third, "trims": trimmer.trims, "kept": len(kept)}))
"""


@glibc
def test_a_trimmer_gives_the_holes_of_the_heap_back_after_its_jobs() -> None:
    found = subprocess.run(
        [sys.executable, "-c", FRAGMENTED_HEAP], capture_output=True, text=True, check=True
    )
    sizes = json.loads(found.stdout)
    assert sizes["early"] == [False, False]
    assert sizes["third"] is True
    assert sizes["trims"] == 1
    # Nothing given back before the third job: about 145 MB of holes stay resident.
    assert sizes["before"] > sizes["freed"] - 10_000_000
    assert sizes["before"] > 140_000_000
    # The third gives them back: what stays is the 30 blocks kept, the interpreter, crmcal.
    assert sizes["after"] < sizes["before"] - 100_000_000


@pytest.mark.postgres
def test_a_workers_sync_jobs_are_counted_towards_a_trim(queue_db: str) -> None:  # noqa: F811
    """Every sync job counts, whatever it ended with (here: no such connection)."""

    async def scenario() -> heap.Trimmer:
        db = Database(queue_db)
        app = queue.queue_app(queue_db)
        try:
            async with app.open_async():
                runtime = queue.Runtime(db, Vault(SECRET), settings(queue_db), app=app)
                runtime.trimmer = heap.Trimmer(every=2)
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
    assert (trimmer.trims, trimmer.since) == ((1, 1) if heap.available() else (0, 3))
