"""Giving the memory a long-running process has freed back to the system.

A worker's resident memory was set by what its busiest moments left behind, not by
what it keeps: measured in a worker after a round of 1,000 first syncs and one of
no-change syncs (``bench/RESULTS.md``), 183 MB resident, of which glibc's main heap
held 77 MB with 25 MB in use and 52 MB free in some 290 holes between blocks still
in use. glibc gives back on its own only the free space at the heap's top, so those
holes stay resident however long the process runs; which blocks pin them depends on
how the syncs of the busiest minutes interleaved, so the same bench ended between
140 and 240 MB from run to run. Threads' own malloc arenas held under 1 MB.

``malloc_trim(0)`` hands the free pages inside the heap back too (the memory stays
the process's to reuse; the next use costs a page fault): in that worker 183 → 131 MB.
So a worker calls it once every ``TRIM_EVERY_JOBS`` sync jobs (a few milliseconds,
not per job). On a C library other than glibc (musl, macOS) nothing is done.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable
from functools import cache

log = logging.getLogger(__name__)

# Sync jobs between two trims: at 100-200 jobs a second, every 5-10 s. A burst of
# first syncs frees tens of MB within seconds; what is freed in between is reused.
TRIM_EVERY_JOBS = 1000


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library is another."""
    try:
        libc = ctypes.CDLL(None)
        # glibc's own symbol: musl and others have none of that name.
        if not hasattr(libc, "gnu_get_libc_version"):
            return None
        trim = libc.malloc_trim
    except (AttributeError, OSError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def available() -> bool:
    return _malloc_trim() is not None


def trim() -> bool:
    """Give the free pages of every malloc arena back to the system; True if any were."""
    found = _malloc_trim()
    return bool(found(0)) if found is not None else False


class Trimmer:
    """Counts a process's jobs and trims its heap after every ``every`` of them."""

    def __init__(self, every: int = TRIM_EVERY_JOBS) -> None:
        self.every = every
        self.since = 0
        self.trims = 0

    def job_done(self) -> bool:
        """One more job ended; True when the heap was trimmed now."""
        self.since += 1
        if self.since < self.every or not available():
            return False
        self.since = 0
        self.trims += 1
        try:
            trim()
        except Exception as exc:  # memory given back is a help, not the job's purpose
            log.warning("giving freed memory back to the system failed: %s", exc)
            return False
        return True
