"""What a worker's no-change sync costs it, counted rather than timed, at two sizes.

    python -m bench.worker_counts --connections 300 3000 [--out DIR] [--profile]

For each number of connections: a fresh database and emulator (as ``queue_workers
rounds``), one worker of concurrency 8 run beside a probe (``probe`` below), its
round of first syncs, then two rounds of no-change syncs of every connection. Over
each no-change round the probe reads, in the worker itself:

* its CPU (user and system apart), minor page faults and context switches
  (``getrusage``), a sync;
* the garbage collector's collections of each generation a sync, the objects each
  examined (what a collection costs grows with them) and the CPU they took, and the
  objects the collector tracks at the round's start and end;
* with ``--profile``, on the second no-change round only: cProfile's count of Python
  calls a sync, function by function (``DIR/profile-<connections>.prof``), which
  does not move with the machine's load as times do.

The figures compare two sizes in the same code: what a sync costs that grows with the
number of connections shows as a count that grows, whatever the load.

Only the bench uses it; nothing of it is in the worker crmcal ships.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.queue_workers import (
    CONCURRENCY,
    Emulator,
    fresh_database,
    last_run,
    queue_all,
    seed,
    settle,
    wait_done,
    worker_env,
)

# --- in the worker ------------------------------------------------------------------


class Probe:
    """Counters read at SIGUSR1 (start) and SIGUSR2 (stop: written as one JSON line)."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.gc_cpu = [0.0, 0.0, 0.0]
        self._gc_started = 0.0
        self.profiler: cProfile.Profile | None = None
        self.start: dict[str, Any] = {}
        gc.callbacks.append(self._gc)
        signal.signal(signal.SIGUSR1, self._begin)
        signal.signal(signal.SIGUSR2, self._end)

    def _gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.process_time()
        else:
            self.gc_cpu[info["generation"]] += time.process_time() - self._gc_started

    def _reading(self) -> dict[str, Any]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "user": usage.ru_utime, "system": usage.ru_stime, "minflt": usage.ru_minflt,
            "nvcsw": usage.ru_nvcsw, "nivcsw": usage.ru_nivcsw,
            "collections": [s["collections"] for s in gc.get_stats()],
            "gc_cpu": list(self.gc_cpu), "tracked": len(gc.get_objects()),
            "gc_counts": gc.get_count(),
        }  # fmt: skip

    def _begin(self, signum: int, frame: Any) -> None:
        self.start = self._reading()
        # The driver asks for a profile of this round by making a file beside the output.
        if Path(f"{self.out}.profile").exists():
            self.profiler = cProfile.Profile()
            self.profiler.enable()

    def _end(self, signum: int, frame: Any) -> None:
        profiled = self.profiler is not None
        if self.profiler is not None:
            self.profiler.disable()
            self.profiler.dump_stats(str(self.out.with_suffix(".prof")))
            self.profiler = None
        end = self._reading()
        record = {"start": self.start, "end": end, "profiled": profiled}
        with self.out.open("a") as out:
            out.write(json.dumps(record) + "\n")


def run_worker(out: str, argv: list[str]) -> None:
    Probe(Path(out))
    from crmcal.cli import main as crmcal

    sys.argv = ["crmcal", *argv]
    crmcal()


# --- the driver -----------------------------------------------------------------------


def one_round(url: str, count: int) -> None:
    since = last_run(url)
    asyncio.run(queue_all(url))
    wait_done(url, count, since)


def measure(connections: int, workdir: Path, out: Path, profile: bool) -> list[dict[str, Any]]:
    record = out / f"counts-{connections}.jsonl"
    record.unlink(missing_ok=True)
    Path(f"{record}.profile").unlink(missing_ok=True)
    with fresh_database() as db_url:
        emulator = Emulator(workdir, connections)
        worker = None
        try:
            asyncio.run(seed(db_url, connections))
            env = worker_env(db_url, emulator)
            log = (workdir / "worker.log").open("wb")
            worker = subprocess.Popen(
                [sys.executable, "-m", "bench.worker_counts", "worker", str(record),
                 "worker", "--concurrency", str(CONCURRENCY)],
                env=env, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
            one_round(db_url, connections)  # first syncs
            settle(db_url)
            found = []
            for n in range(2):
                settle(db_url)
                if profile and n == 1:
                    Path(f"{record}.profile").touch()
                worker.send_signal(signal.SIGUSR1)
                time.sleep(0.5)  # the handler runs between two of the worker's steps
                one_round(db_url, connections)
                worker.send_signal(signal.SIGUSR2)
                deadline = time.monotonic() + 120
                while (not record.exists() or len(record.read_text().splitlines()) <= n) and (
                    time.monotonic() < deadline
                ):
                    time.sleep(0.2)
            for line in record.read_text().splitlines():
                found.append(json.loads(line))
            return found
        finally:
            if worker is not None:
                worker.send_signal(signal.SIGTERM)
                worker.wait(timeout=120)
            emulator.stop()


def describe(connections: int, found: dict[str, Any]) -> str:
    start, end = found["start"], found["end"]

    def per(key: str, scale: float = 1.0) -> float:
        return scale * (end[key] - start[key]) / connections

    collections = [(e - s) / connections * 1000 for s, e in
                   zip(start["collections"], end["collections"], strict=True)]  # fmt: skip
    gc_ms = [1000 * (e - s) / connections for s, e in
             zip(start["gc_cpu"], end["gc_cpu"], strict=True)]  # fmt: skip
    return (f"{connections} connections{' (profiled)' if found['profiled'] else ''}: "
            f"user {per('user', 1000):.2f} ms, system {per('system', 1000):.2f} ms a sync; "
            f"minor faults {per('minflt'):.1f}, voluntary switches {per('nvcsw'):.1f}, "
            f"involuntary {per('nivcsw'):.2f} a sync; gc collections a 1,000 syncs "
            f"{', '.join(f'{c:.0f}' for c in collections)} (gen 0, 1, 2), their CPU a sync "
            f"{', '.join(f'{m:.3f}' for m in gc_ms)} ms; objects tracked "
            f"{start['tracked']} -> {end['tracked']}")  # fmt: skip


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "worker":
        run_worker(sys.argv[2], sys.argv[3:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, nargs="+", default=[300, 3000])
    parser.add_argument("--out", default=None)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out) if args.out else Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        for connections in args.connections:
            for found in measure(connections, Path(tmp), out, args.profile):
                print(describe(connections, found), flush=True)


if __name__ == "__main__":
    main()
