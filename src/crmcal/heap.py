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
When to call it (``Trimmer``):

* when the process has grown by ``TRIM_ABOVE`` since its last trim and its heap holds
  at least that much free, looked at every ``CHECK_EVERY_JOBS`` jobs. Both readings
  are needed: glibc's count of free bytes (``mallinfo2``) does not fall when a trim
  gives their pages back (the blocks stay free, only their pages go), so it alone
  would trim again and again for nothing; and growth alone may be memory in use,
  which no trim gives back. A fixed count of jobs (every 1,000, as before) let the
  peak between two trims reach 198 MB.
* when the worker goes idle: the queue found no job for it and none ended for
  ``IDLE_SECONDS``, so what a burst left behind does not wait for the next burst.

Each reading costs about a microsecond; a trim a few milliseconds for tens of MB.
On a C library other than glibc (musl, macOS) nothing is done.
"""

from __future__ import annotations

import ctypes
import logging
import os
import time
from collections.abc import Callable
from functools import cache

log = logging.getLogger(__name__)

# Growth since the last trim (and free bytes in the heap) worth a trim. A trim that
# gives back 16 MB costs about 2 ms, and the pages' reuse about as much in faults.
TRIM_ABOVE = 16 * 2**20
# Jobs between two looks at the readings: at 200 jobs a second, four looks a second;
# a burst of first syncs grows a worker by about 4 MB in that many jobs.
CHECK_EVERY_JOBS = 50
# No job ended for this long and the queue has none: the worker is idle. Its fetch
# polls every 2 s when idle, so an idle worker trims 2-4 s after its last job.
IDLE_SECONDS = 2.0
# Where the process's resident size cannot be read: a trim every so many jobs.
TRIM_EVERY_JOBS = 1000


@cache
def _glibc() -> ctypes.CDLL | None:
    """The process's C library when it is glibc."""
    try:
        libc = ctypes.CDLL(None)
        # glibc's own symbol: musl and others have none of that name.
        if not hasattr(libc, "gnu_get_libc_version"):
            return None
    except OSError:
        return None
    return libc


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library is another."""
    libc = _glibc()
    if libc is None or not hasattr(libc, "malloc_trim"):
        return None
    found = libc.malloc_trim
    found.argtypes = [ctypes.c_size_t]
    found.restype = ctypes.c_int
    return found


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd",
            "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost",
        )
    ]  # fmt: skip


@cache
def _mallinfo2() -> Callable[[], _Mallinfo2] | None:
    """glibc's ``mallinfo2`` (2.33 and later), or None."""
    libc = _glibc()
    if libc is None or not hasattr(libc, "mallinfo2"):
        return None
    found = libc.mallinfo2
    found.argtypes = []
    found.restype = _Mallinfo2
    return found


def available() -> bool:
    return _malloc_trim() is not None


def trim() -> bool:
    """Give the free pages of every malloc arena back to the system; True if any were."""
    found = _malloc_trim()
    return bool(found(0)) if found is not None else False


def arenas() -> dict[str, int] | None:
    """The malloc arenas' bytes: in all (``heap``), in use, free (resident or not) and
    in blocks mapped on their own (``mmapped``); None where glibc cannot tell."""
    found = _mallinfo2()
    if found is None:
        return None
    info = found()
    return {"heap": int(info.arena), "in_use": int(info.uordblks),
            "free": int(info.fordblks), "mmapped": int(info.hblkhd)}  # fmt: skip


def free_bytes() -> int | None:
    """Bytes in free blocks of the malloc arenas, resident or not; None if unknown."""
    found = arenas()
    return found["free"] if found is not None else None


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident() -> int | None:
    """The process's resident size in bytes; None where /proc cannot tell."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return None


class Trimmer:
    """Decides when a process's heap is trimmed, from its jobs and its memory.

    The readings, the trim itself and the clock are given so that the decisions can be
    checked without a real heap; by default they are glibc's and nothing is done on
    another C library."""

    def __init__(
        self,
        *,
        check_every: int = CHECK_EVERY_JOBS,
        trim_above: int = TRIM_ABOVE,
        idle_after: float = IDLE_SECONDS,
        every: int = TRIM_EVERY_JOBS,
        free: Callable[[], int | None] = free_bytes,
        size: Callable[[], int | None] = resident,
        give_back: Callable[[], bool] | None = trim if available() else None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.check_every, self.trim_above = check_every, trim_above
        self.idle_after, self.every = idle_after, every
        self.free, self.size, self.give_back, self.clock = free, size, give_back, clock
        self.since = 0  # jobs ended since the last trim
        self.trims = 0
        self.last_job = clock()
        # The process's size after its last trim (at its start before the first).
        self.size_after = (size() or 0) if give_back is not None else 0

    def job_done(self) -> bool:
        """One more job ended; True when the heap was trimmed now."""
        self.since += 1
        if self.give_back is None:
            return False
        self.last_job = self.clock()
        if self.since % self.check_every:
            return False
        free = self.free()
        if free is not None and free < self.trim_above:
            return False  # not enough free to be worth giving back, however large
        size = self.size()
        if size is None:
            grown = self.since >= self.every
        else:
            grown = size - self.size_after >= self.trim_above
        return grown and self._trim()

    def idle(self) -> bool:
        """The queue had no job for this process; True when the heap was trimmed now."""
        if self.give_back is None or not self.since:
            return False  # nothing ran since the last trim: nothing new to give back
        if self.clock() - self.last_job < self.idle_after:
            return False
        return self._trim()

    def _trim(self) -> bool:
        assert self.give_back is not None
        self.since = 0
        self.trims += 1
        try:
            self.give_back()
        except Exception as exc:  # memory given back is a help, not the job's purpose
            log.warning("giving freed memory back to the system failed: %s", exc)
            return False
        finally:
            self.size_after = self.size() or 0
        return True
