"""Parsing calendar data in worker processes, beside the process that syncs.

A first import parses thousands of iCalendar resources; in the syncing process that
costs the one core its event loop and database work run on. Here the texts are
parsed by a pool of processes (``CRMCAL_PARSE_WORKERS``, by default one per core,
at most four; 0 parses in the calling process), a chunk of ``CHUNK`` resources per
task and at most two chunks per worker in flight, so that what travels between the
processes stays bounded however large the calendar. Fewer than ``IN_PROCESS_BELOW``
resources (an incremental sync's few changes) are parsed where they are: sending
them costs more than parsing them.

The pool is started by ``start`` (``crmcal serve`` with its embedded worker and
``crmcal worker`` call it as they start, so that the first import does not wait for
the processes to come up), else on first use. Its processes are spawned, not forked:
the syncing process runs threads. A pool that breaks (a worker killed) is replaced
on the next call, and what it was given is parsed in the calling process; the
pool's processes end when the process that started them is gone, also when it
was killed with SIGKILL.

Besides parsing, the processes compute each event's content hash, and whatever its
reader registered with ``compute_beside`` (the sync engine: its fields' digests), so
that the values travel with the events; this module knows only the wire format.
What depends on the one reading (the sync engine's first import: the CRM's fields of
each event for its owner and options) is named with ``computing_beside``, for the
parses made in that context, and travels with each chunk as an argument of its own.
The modules of both are imported by each process as it starts (``prepare``), and it
collects garbage as the long-running processes do (``crmcal.collector``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import multiprocessing
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextvars import ContextVar
from dataclasses import dataclass

from crmcal import collector
from crmcal.model import CalendarEvent
from crmcal.providers.ical.read import parse_event

__all__ = [
    "Parsed",
    "compute_beside",
    "computing_beside",
    "configure",
    "parse",
    "parse_here",
    "prepare",
    "shutdown",
    "start",
    "with_organizer_known",
]

CHUNK = 100
IN_PROCESS_BELOW = 64
MAX_DEFAULT_WORKERS = 4
ENV = "CRMCAL_PARSE_WORKERS"


@dataclass(frozen=True)
class Parsed:
    """What one resource holds: its event (None: a task or journal entry, or an
    error), what could be read only by a guess, or why it could not be read."""

    event: CalendarEvent | None
    problems: tuple[str, ...] = ()
    error: str | None = None


def default_workers() -> int:
    return min(os.cpu_count() or 1, MAX_DEFAULT_WORKERS)


def workers_from(raw: str | None) -> int:
    """``CRMCAL_PARSE_WORKERS`` read: empty means the default; raises ValueError."""
    if raw is None or not raw.strip():
        return default_workers()
    value = raw.strip()
    if not (value.isascii() and value.isdigit()) or int(value) > 64:
        raise ValueError(f"{ENV} must be a whole number from 0 to 64, got {raw!r}")
    return int(value)


def with_organizer_known(event: CalendarEvent, addresses: frozenset[str]) -> CalendarEvent:
    """``event``, marked as not an invitation when its ORGANIZER is one of the
    account's ``addresses``. Anything else stays unsaid (None): the engine compares
    the organizer with the user's own addresses then, among them the one crmcal
    writes as organizer, which the server's set need not hold."""
    organizer = (event.organizer or "").strip().lower()
    if event.invitation is None and organizer and organizer in addresses:
        return dataclasses.replace(event, invitation=False)
    return event


def parse_one(text: str, zone: str | None, own: frozenset[str] = frozenset()) -> Parsed:
    guesses: list[str] = []
    try:
        event = parse_event(text, default_tz=zone, problems=guesses)
    except ValueError as failure:
        return Parsed(None, error=f"unreadable event: {failure}")
    except Exception as failure:  # a codec bug must not cost the whole batch
        return Parsed(None, error=f"unreadable event ({type(failure).__name__})")
    if own and event is not None:
        # Decided here, before anything is computed of the event: a new event made
        # after that would not carry what was (its memos), and the reader would
        # compute it all again one event at a time.
        event = with_organizer_known(event, own)
    return Parsed(event, tuple(guesses))


def parse_here(
    texts: Sequence[str], zone: str | None, own: frozenset[str] = frozenset()
) -> list[Parsed]:
    """Every text parsed in this process (what a pool's worker runs for a chunk);
    ``own``: the account's own addresses (see ``with_organizer_known``)."""
    return [parse_one(text, zone, own) for text in texts]


Derive = Callable[[CalendarEvent], object]
# What the pool's processes compute of each event besides its content hash (see
# ``compute_beside``): module-level functions, which travel with each chunk by name.
_beside: tuple[Derive, ...] = ()


def compute_beside(*derive: Derive) -> None:
    """Have the pool's processes also run each of ``derive`` on every event they parse,
    for what it keeps on the event (``CalendarEvent.memo``) to travel with it. Each
    must be a module-level function (it is sent to the processes by name), pure, and
    as cheap to call again here as a memo's lookup."""
    global _beside
    _beside = tuple(dict.fromkeys((*_beside, *derive)))
    prepare(*derive)


# The modules the pool's processes import as they start (see ``prepare``).
_modules: tuple[str, ...] = ()


def prepare(*derive: Callable[..., object]) -> None:
    """Have the pool's processes import the modules of ``derive`` as they start (those
    of what ``compute_beside`` and ``computing_beside`` name), not when the first chunk
    that asks for them comes: importing the sync engine's side of it cost each process
    about half a second of CPU in the middle of a first import. Only processes started
    later import them (``start`` comes after what registers them)."""
    global _modules
    _modules = tuple(dict.fromkeys((*_modules, *(d.__module__ for d in derive))))


DeriveWith = Callable[[CalendarEvent, object], object]
# What the parses made in this context compute of each event with an argument of the
# reader's (see ``computing_beside``).
_beside_with: ContextVar[tuple[tuple[DeriveWith, object], ...]] = ContextVar(
    "parse_pool_beside_with", default=()
)


@contextlib.contextmanager
def computing_beside(derive: DeriveWith, argument: object) -> Iterator[None]:
    """Within this block (and the threads and tasks that carry its context), the pool's
    processes also run ``derive(event, argument)`` on every event they parse, for what
    it keeps on the event (``CalendarEvent.memo``) to travel with it: what depends on
    who reads, such as the sync engine's view of each event for one owner. ``derive``
    must be a module-level function and ``argument`` picklable (both are sent with each
    chunk); what fails there is left for the reader to compute where it is missing."""
    token = _beside_with.set((*_beside_with.get(), (derive, argument)))
    try:
        yield
    finally:
        _beside_with.reset(token)


def parse_chunk(
    texts: Sequence[str],
    zone: str | None,
    beside: Sequence[Derive] = (),
    beside_with: Sequence[tuple[DeriveWith, object]] = (),
    own: frozenset[str] = frozenset(),
) -> list[Parsed]:
    """What a pool's process runs for a chunk: ``parse_here``, and what the sync will
    ask of each event (its content hash, ``beside`` and ``beside_with``) computed here
    too, beside the process that syncs; the values travel with the events."""
    parsed = parse_here(texts, zone, own)
    for one in parsed:
        if one.event is not None:
            one.event.content_hash()
            for derive in beside:
                derive(one.event)
            for derive_with, argument in beside_with:
                # Only ahead of the reader, which computes it again where it is missing
                # (and reports its failure there, with the item it belongs to).
                with contextlib.suppress(Exception):
                    derive_with(one.event, argument)
    return parsed


def _ready() -> int:
    return os.getpid()


PARENT_CHECK_SECONDS = 1.0


def _start_worker(parent: int, modules: Sequence[str]) -> None:
    """What a pool's process runs as it starts: the imports of what it will compute
    (``prepare``), the garbage collector's settings of a long-running process
    (``collector``: with CPython's defaults, the collections of young objects that a
    chunk's tens of thousands of short-lived ones set off cost the process about a
    tenth of its CPU), a lower priority than its parent's (``NICENESS``), and the watch
    on its parent."""
    for name in modules:
        # One that fails is imported again by the first chunk that needs it, which
        # fails there as it would have without this.
        with contextlib.suppress(Exception):
            importlib.import_module(name)
    collector.tune()
    os.nice(NICENESS)
    _watch_parent(parent)


def _watch_parent(parent: int) -> None:
    """In a pool's process: end it when the process that started it is gone (killed
    with SIGKILL, it cannot shut its pool down), so that no parser outlives it."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_SECONDS)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


# How much less a pool's process is given the CPU than the process that started it
# (``os.nice``). The starting process writes every event the pool parses, serves the
# web requests and runs the syncs' event loop: with the pool's processes on both cores
# as well, the scheduler shared them out evenly and the loop waited its turn behind
# parses of parts nobody was waiting for yet (a first import ran about 5 % longer).
# Lower, a pool's process still has every cycle nothing else asks for.
NICENESS = 5


class _Pool:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.workers: int | None = None  # None: not configured, read the environment
        self.executor: ProcessPoolExecutor | None = None
        # Resources parsed by the pool's processes (not here), since this process began.
        self.parsed_in_workers = 0

    def size(self) -> int:
        if self.workers is None:
            try:
                self.workers = workers_from(os.environ.get(ENV))
            except ValueError:
                self.workers = default_workers()  # the settings refuse it where they are read
        return self.workers

    def get(self) -> ProcessPoolExecutor | None:
        with self.lock:
            if self.size() == 0:
                return None
            if self.executor is None:
                self.executor = ProcessPoolExecutor(
                    max_workers=self.size(),
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_start_worker,
                    initargs=(os.getpid(), _modules),
                )
            return self.executor

    def drop(self, broken: ProcessPoolExecutor) -> None:
        with self.lock:
            if self.executor is broken:
                self.executor = None
        broken.shutdown(wait=False, cancel_futures=True)


_POOL = _Pool()


def configure(workers: int | None) -> None:
    """Set the pool's size (0: parse in the calling process, None: the default); a
    running pool is shut down, the next parse starts the new one."""
    with _POOL.lock:
        old, _POOL.executor = _POOL.executor, None
        _POOL.workers = default_workers() if workers is None else workers
    if old is not None:
        old.shutdown(wait=True, cancel_futures=True)


def start() -> None:
    """Bring the pool's processes up now (they import the parser and what ``prepare``
    named), without waiting."""
    pool = _POOL.get()
    if pool is not None:
        for _ in range(_POOL.size()):
            pool.submit(_ready)


def shutdown() -> None:
    with _POOL.lock:
        old, _POOL.executor = _POOL.executor, None
    if old is not None:
        old.shutdown(wait=True, cancel_futures=True)


def parsed_in_workers() -> int:
    """How many resources the pool's processes have parsed (for tests and figures)."""
    return _POOL.parsed_in_workers


def parse(
    texts: Sequence[str], zone: str | None, own: frozenset[str] = frozenset()
) -> list[Parsed]:
    """Each text parsed, in order: in the pool's processes when it is worth it.

    Blocks: call it from a thread, never from the event loop. ``zone``: the zone of
    floating times, as ``parse_event``'s ``default_tz``; ``own``: the account's own
    addresses, an event organised by one of them read as no invitation
    (``with_organizer_known``).
    """
    pool = _POOL.get() if len(texts) >= IN_PROCESS_BELOW else None
    if pool is None:
        return parse_here(texts, zone, own)
    beside_with = _beside_with.get()
    chunks = [texts[i : i + CHUNK] for i in range(0, len(texts), CHUNK)]
    window = 2 * _POOL.size()
    results: list[Parsed] = []
    pending: deque[Future[list[Parsed]]] = deque()
    given = 0
    try:
        while len(results) < len(texts):
            while given < len(chunks) and len(pending) < window:
                chunk = chunks[given]
                pending.append(pool.submit(parse_chunk, chunk, zone, _beside, beside_with, own))
                given += 1
            done = pending.popleft().result()
            results += done
            with _POOL.lock:
                _POOL.parsed_in_workers += len(done)
    except BrokenProcessPool:
        for future in pending:
            future.cancel()
        _POOL.drop(pool)
        results += parse_here(texts[len(results) :], zone, own)
    return results
