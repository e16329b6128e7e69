"""Who spent the CPU of a bench round, and keeping the worker on a core of its own.

A round of no-change syncs on one machine is paid by four parties: the worker(s),
the calendar service's emulator, the PostgreSQL backends that answer the worker's
statements (and the bench's own queries and enqueues), and the bench process. On a
2-core machine they share the cores, so the wall-clock rate of a round is set by
all four, not by the worker alone; in production the calendar service and the
database are other machines. ``Parties`` reads each one's CPU from ``/proc``:

* the worker processes and the emulator by their pids;
* PostgreSQL's backends by the postmaster's children serving the bench's database
  (``postgres: user db host(port) ...``), each attributed to the worker when its
  client port is one of the worker processes' sockets, else to the bench; a backend
  that appears during the round counts from zero, one that ends during it counts
  up to its last sample (``sampling()`` looks ten times a second while the round
  runs);
* the server's own background processes (WAL writer, checkpointer ...), which serve
  every database on the server, shown apart as shared.

``Pinning`` puts the worker processes on the last core and everything else the bench
starts or serves (the emulator, the bench process, the backends of the bench's
database) on the others, so that the worker gets a core of its own as it would in
production. Only processes of the bench are pinned (the postmaster and other
databases' backends are not), and those still alive are given every core back at
the end.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def cpu_of(pid: int) -> float | None:
    """User + system CPU seconds of a process so far; None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICK


def _parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _children_of(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def _title(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _socket_inodes(pid: int) -> set[int]:
    """The inodes of the sockets a process and its children hold."""
    found: set[int] = set()
    for one in [pid, *_children_of(pid)]:
        try:
            fds = list(Path(f"/proc/{one}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                found.add(int(target[8:-1]))
    return found


def _local_ports(inodes: set[int]) -> set[int]:
    """The local TCP ports of those sockets."""
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if int(parts[9]) in inodes:
                ports.add(int(parts[1].rsplit(":", 1)[1], 16))
    return ports


@dataclass
class _Backend:
    first: float  # CPU when first seen (0 for one that began during the round)
    last: float
    worker: bool


@dataclass
class Parties:
    """CPU seconds each party spent between ``__init__`` and the last ``sample()``."""

    database: str
    postmaster: int
    workers: list[int]
    emulator: int | None
    pin: Pinning | None = None
    _backends: dict[int, _Backend] = field(default_factory=dict)
    _others: dict[int, float] = field(default_factory=dict)
    _start: dict[str, float] = field(default_factory=dict)
    _now: dict[str, float] = field(default_factory=dict)
    _worker_ports: set[int] = field(default_factory=set)
    _started = False

    def __post_init__(self) -> None:
        self.sample()
        self._start = dict(self._now)
        for backend in self._backends.values():
            backend.first = backend.last
        self._others_start = dict(self._others)
        self._started = True

    def sample(self) -> None:
        self._now = {
            "worker": sum(cpu_of(p) or 0.0 for p in self.workers),
            "emulator": (cpu_of(self.emulator) or 0.0) if self.emulator else 0.0,
            "bench": cpu_of(os.getpid()) or 0.0,
        }
        marker = f" {self.database} "
        for pid in _children_of(self.postmaster):
            cpu = cpu_of(pid)
            if cpu is None:
                continue
            known = self._backends.get(pid)
            if known is not None:
                known.last = cpu
                continue
            if pid in self._others:
                self._others[pid] = cpu
                continue
            title = _title(pid)
            if marker not in title:
                if "(" not in title:  # the server's own: WAL writer, checkpointer ...
                    self._others[pid] = cpu
                continue  # another database's backend: not the bench's
            first = cpu if not self._started else 0.0
            self._backends[pid] = _Backend(first, cpu, self._is_worker(title))
            if self.pin is not None:
                self.pin.backend(pid)

    def _is_worker(self, title: str) -> bool:
        try:
            port = int(title.split("(", 1)[1].split(")", 1)[0])
        except (IndexError, ValueError):
            return False
        if port not in self._worker_ports:
            self._worker_ports = _local_ports(set().union(*map(_socket_inodes, self.workers)))
        return port in self._worker_ports

    @contextlib.contextmanager
    def sampling(self, every: float = 0.1) -> Iterator[None]:
        """Sampled on a thread of its own while the block runs (backends that serve
        only part of the round, like the bench's enqueues, end before a look from the
        round's own loop would see them)."""
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(every):
                self.sample()

        thread = threading.Thread(target=loop, name="cpu-parties", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def spent(self) -> dict[str, float]:
        """CPU seconds by party: worker, emulator, bench, pg_worker (the backends of the
        worker's connections), pg_bench (the bench's), pg_shared (the server's own)."""
        self.sample()
        spent = {name: self._now[name] - self._start.get(name, 0.0) for name in self._now}
        spent["pg_worker"] = sum(b.last - b.first for b in self._backends.values() if b.worker)
        spent["pg_bench"] = sum(b.last - b.first for b in self._backends.values() if not b.worker)
        spent["pg_shared"] = sum(
            cpu - self._others_start.get(pid, cpu) for pid, cpu in self._others.items()
        )
        return spent


def postmaster_of(backend_pid: int) -> int:
    """The postmaster of a backend (``SELECT pg_backend_pid()`` names one)."""
    return _parent_of(backend_pid)


class Pinning:
    """The worker processes on the last core, the rest of the bench on the others."""

    def __init__(self) -> None:
        cores = sorted(os.sched_getaffinity(0))
        if len(cores) < 2:
            raise SystemExit("--pin needs at least two cores")
        self.all = set(cores)
        self.worker = {cores[-1]}
        self.rest = set(cores[:-1])
        self._pinned: list[int] = []

    def worker_preexec(self) -> None:
        """For ``Popen(preexec_fn=...)``: the worker and whatever it starts."""
        os.sched_setaffinity(0, self.worker)

    def rest_preexec(self) -> None:
        os.sched_setaffinity(0, self.rest)

    def bench(self) -> None:
        os.sched_setaffinity(0, self.rest)

    def backend(self, pid: int) -> None:
        try:
            os.sched_setaffinity(pid, self.rest)
            self._pinned.append(pid)
        except OSError:
            pass  # gone already

    def undo(self) -> None:
        """Every core back to the bench process and the backends still alive."""
        os.sched_setaffinity(0, self.all)
        for pid in self._pinned:
            with contextlib.suppress(OSError):  # gone already
                os.sched_setaffinity(pid, self.all)
        self._pinned.clear()
