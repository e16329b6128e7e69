"""What a ``crmcal worker`` holds when its resident memory peaks: the worker run with a
probe thread beside it, for the bench (``queue_workers rounds --probe DIR``).

    python -m bench.memory_probe DIR worker --concurrency 8

runs ``crmcal worker --concurrency 8`` with a thread that reads the process's resident
size (``/proc/self/status``) ten times a second and writes JSON lines to
``DIR/probe-<pid>.jsonl``:

* once a second: resident size and peak, glibc's heap in use and free
  (``mallinfo2``), tracemalloc's traced bytes when it runs, the asyncio tasks alive
  and the garbage collector's counts;
* each time the resident size passes its last reported level by ``CRMCAL_PROBE_STEP_MB``
  (default 10): the same, and the live objects the collector tracks, counted by type
  (the 40 most numerous), so that what a peak is made of can be read afterwards;
* with ``CRMCAL_PROBE_TRACE=<frames>``, tracemalloc runs with that many frames a
  trace and each time its traced bytes pass the last reported level by the step, the
  30 largest allocation sites by traceback are written too. tracemalloc adds its
  own memory to the resident size, so the trigger then is the traced size (memory in
  use by Python, whatever the heap's holes), not the resident one.

``python -m bench.memory_probe read FILE`` prints a probe's file: the readings once a
second where the size moved, and the objects at each reported level.

Only the bench uses it; nothing of it is in the worker crmcal ships.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import json
import os
import sys
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

from crmcal.heap import arenas

STEP = int(os.environ.get("CRMCAL_PROBE_STEP_MB", "10")) * 2**20
TRACE_FRAMES = int(os.environ.get("CRMCAL_PROBE_TRACE", "0") or 0)
SAMPLE_SECONDS = 0.1


def _mallinfo() -> dict[str, float]:
    found = arenas()
    if found is None:
        return {}
    return {f"{name}_mb": value / 2**20 for name, value in found.items()}


def _status() -> dict[str, float]:
    found = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon"):
            found[key] = int(value.split()[0]) / 1024
    return found


def _tasks() -> int:
    try:
        return len(asyncio.tasks._scheduled_tasks)  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError):
        return -1


def _by_type(top: int = 40) -> list[tuple[str, int]]:
    counts: collections.Counter[str] = collections.Counter()
    for obj in gc.get_objects():
        kind = type(obj)
        counts[f"{kind.__module__}.{kind.__qualname__}"] += 1
    return counts.most_common(top)


def _traced_sites(top: int = 30) -> list[dict[str, Any]]:
    snapshot = tracemalloc.take_snapshot()
    snapshot = snapshot.filter_traces([
        tracemalloc.Filter(False, tracemalloc.__file__),
        tracemalloc.Filter(False, __file__),
    ])  # fmt: skip
    stats = snapshot.statistics("traceback")[:top]
    total = sum(s.size for s in snapshot.statistics("filename"))
    found: list[dict[str, Any]] = [{"total_mb": total / 2**20}]
    for stat in stats:
        found.append({
            "kb": stat.size // 1024, "count": stat.count,
            "where": [f"{f.filename.rsplit('site-packages/', 1)[-1]}:{f.lineno}"
                      for f in stat.traceback][::-1],
        })  # fmt: skip
    del snapshot, stats
    return found


class Probe:
    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.out = (folder / f"probe-{os.getpid()}.jsonl").open("w", buffering=1)
        self.started = time.monotonic()
        self.level = 0.0  # bytes: the level last reported in detail
        self.traced_level = 0

    def line(self, kind: str, **more: Any) -> None:
        record = {"t": round(time.monotonic() - self.started, 2), "kind": kind, **_status(),
                  **_mallinfo(), "tasks": _tasks(), "gc": gc.get_count(), **more}  # fmt: skip
        if tracemalloc.is_tracing():
            record["traced_mb"] = tracemalloc.get_traced_memory()[0] / 2**20
        self.out.write(json.dumps(record) + "\n")

    def run(self) -> None:
        last = 0.0
        while True:
            time.sleep(SAMPLE_SECONDS)
            rss = _status().get("VmRSS", 0) * 2**20
            if TRACE_FRAMES:
                traced = tracemalloc.get_traced_memory()[0]
                if traced >= self.traced_level + STEP:
                    self.traced_level = traced
                    self.line("traced", sites=_traced_sites(), types=_by_type())
            elif rss >= self.level + STEP:
                self.level = rss
                self.line("peak", types=_by_type())
            now = time.monotonic()
            if now - last >= 1:
                last = now
                self.line("tick")


def read(path: Path) -> None:
    """A probe's file, for reading: where the size moved, and what was alive then."""
    last = None
    for text in path.read_text().splitlines():
        record = json.loads(text)
        size = round(record.get("VmRSS", 0))
        heap = (record.get(k, 0) for k in ("heap_mb", "in_use_mb", "free_mb"))
        memory = (f"t={record['t']:.1f}s resident {size} MB (peak {record.get('VmHWM', 0):.0f}), "
                  "heap {:.0f} MB: in use {:.0f}, free {:.0f}".format(*heap))  # fmt: skip
        if record["kind"] == "tick":
            if size != last:
                print(memory)
            last = size
            continue
        print(f"{record['kind'].upper()} {memory}")
        print(
            "   ", ", ".join(f"{name.rsplit('.', 1)[-1]} {n}" for name, n in record["types"][:12])
        )
        for site in record.get("sites", [])[1:6]:
            print(f"    {site['kb']} KB in {site['count']}: {' <- '.join(site['where'][-3:])}")


def main() -> None:
    if sys.argv[1] == "read":
        read(Path(sys.argv[2]))
        return
    folder, *argv = sys.argv[1:]
    if TRACE_FRAMES:
        tracemalloc.start(TRACE_FRAMES)
    probe = Probe(Path(folder))
    threading.Thread(target=probe.run, name="memory-probe", daemon=True).start()
    from crmcal.cli import main as crmcal

    sys.argv = ["crmcal", *argv]
    crmcal()


if __name__ == "__main__":
    main()
