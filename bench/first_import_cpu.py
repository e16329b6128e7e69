#!/usr/bin/env python3
"""The CPU of a CalDAV first import in the syncing process alone, thread by thread.

    .venv/bin/python -m bench.first_import_cpu 2000 5000 [--runs 3]

For each size N it seeds a Radicale collection with the calendar
``../shared/bench/anchor/gen_events.py`` writes (as ``bench/caldav_first_import.py``
does), then, each run in a fresh process on a new SQLite CRM: the parse pool started
and up, the collector set as ``crmcal serve`` sets it, one ``run_sync`` of a new
connection to that calendar, called directly. It prints the run's wall time, the
CPU of the event loop's thread and of the whole process (the pool's processes not
included), and each thread's CPU (the database's thread, CalDAV's threads, the
pool's result thread, ``pool-results``, which unpickles what the pool sends back) and
the pool's processes' together (``pool``). These CPU times are what the process
itself spends, so they tell two codes apart on a busy machine where wall times do
not: run the same command from two checkouts, interleaved.

``--run URL DIR`` is one run against a running server (what each run's process
executes). Nothing here runs in the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# `python bench/<script>.py` puts bench/ itself first on the path; the checkout
# above it is where `bench.*` comes from (`python -m bench.<script>` needs no help).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SECRET = "bench-key-Tq8Wm3Zx6Lp1Rv9Ns4Kb7Yc2Hd5Gf0Ja"  # noqa: S105  # a bench CRM of its own


def thread_cpu() -> dict[str, float]:
    """CPU seconds of each live thread of this process, by name and id."""
    found = {}
    tick = os.sysconf("SC_CLK_TCK")
    for thread in threading.enumerate():
        try:
            stat = Path(f"/proc/self/task/{thread.native_id}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        found[f"{thread.name}:{thread.native_id}"] = (int(fields[11]) + int(fields[12])) / tick
    return found


def pool_cpu(pids: list[int]) -> float:
    """CPU seconds of the parse pool's processes (from /proc)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def one_run(url: str, root: Path) -> None:
    """One first import of ``url`` into a new CRM under ``root``; prints its figures."""
    os.environ.update({
        "CRMCAL_DATABASE_URL": f"sqlite:///{root / 'crm.db'}",
        "CRMCAL_SECRET_KEY": SECRET,
        "CRMCAL_ALLOW_PRIVATE_NETWORKS": "1",
    })  # fmt: skip
    crmcal = str(Path(sys.executable).parent / "crmcal")
    subprocess.run([crmcal, "db", "upgrade"], check=True, capture_output=True)

    from crmcal import collector
    from crmcal.config import Settings
    from crmcal.crm.schemas import UserCreate
    from crmcal.crm.users import create_user
    from crmcal.db import Database
    from crmcal.model import CalendarInfo
    from crmcal.providers import parse_pool
    from crmcal.sync.connections import create
    from crmcal.sync.runner import run_sync
    from crmcal.sync.schemas import ConnectionCreate
    from crmcal.vault import vault_for

    async def main() -> None:
        settings = Settings.from_env()
        vault = vault_for(settings)
        assert vault is not None
        db = Database(settings.database_url)
        async with db.write() as session:
            user, _ = await create_user(session, UserCreate(email="b@bench.test", name="B"))
            data = ConnectionCreate(
                provider="caldav",
                url=url,
                username="bench",
                password="x",  # noqa: S106
            )
            info = CalendarInfo(id=url, name="calendar", writable=True)
            conn = await create(session, user, data, info, vault)
            # Every event in the sync's window, whenever the calendar was generated.
            conn.connected_at = conn.connected_at.replace(year=2000)
            connection_id = conn.id
        parse_pool.start()
        pool = parse_pool._POOL.get()
        if pool is not None:  # its processes up before the clock starts
            for ready in [pool.submit(parse_pool._ready) for _ in range(parse_pool._POOL.size())]:
                ready.result()
        collector.tune()
        pids = list(pool._processes) if pool is not None else []
        in_pool = pool_cpu(pids)
        threads = thread_cpu()
        started, loop, process = time.perf_counter(), time.thread_time(), time.process_time()
        report = await run_sync(db, vault, settings, connection_id)
        wall = time.perf_counter() - started
        loop, process = time.thread_time() - loop, time.process_time() - process
        spent = {name: cpu - threads.get(name, 0.0) for name, cpu in thread_cpu().items()}
        spent["pool"] = pool_cpu(pids) - in_pool
        results = getattr(pool, "_executor_manager_thread", None)  # unpickles the results
        for name in list(spent):
            if results is not None and name == f"{results.name}:{results.native_id}":
                spent[f"pool-results:{results.native_id}"] = spent.pop(name)
        busy = " ".join(
            f"{name.split(':')[0]}={cpu:.2f}"
            for name, cpu in sorted(spent.items(), key=lambda item: -item[1])
            if cpu > 0.005
        )
        print(f"{wall:.3f} {loop:.3f} {process:.3f} {report.created} {busy}", flush=True)
        await db.dispose()
        parse_pool.shutdown()

    asyncio.run(main())


def measure(events: int, runs: int, generator: Path) -> None:
    from bench.caldav_first_import import Seed
    from bench.caldav_import import Radicale

    seed = Seed(events, generator)
    root = Path(tempfile.mkdtemp(prefix="crmcal-bench-"))
    radicale = Radicale(root, seed)  # type: ignore[arg-type]
    loops: list[float] = []
    processes: list[float] = []
    try:
        for _ in range(runs):
            crm = root / "crm"
            shutil.rmtree(crm, ignore_errors=True)
            crm.mkdir()
            done = subprocess.run(
                [sys.executable, "-m", "bench.first_import_cpu", "--run", radicale.url, str(crm)],
                check=True, capture_output=True, text=True, cwd=Path(__file__).parent.parent,
            )  # fmt: skip
            wall, loop, process, created, busy = (done.stdout.strip().splitlines()[-1] + " ").split(
                " ", 4
            )
            loops.append(float(loop))
            processes.append(float(process))
            load = os.getloadavg()[0]
            print(f"| {events} | {wall} | {loop} | {process} | {created} | {busy.strip()} "
                  f"| {load:.1f} |", flush=True)  # fmt: skip
    finally:
        radicale.stop()
        seed.remove()
        shutil.rmtree(root, ignore_errors=True)
    print(f"| {events} | medians | {statistics.median(loops):.3f} "
          f"| {statistics.median(processes):.3f} | | | |", flush=True)  # fmt: skip


def main() -> None:
    from bench.caldav_first_import import GENERATOR

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[2000, 5000])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--generator", type=Path, default=GENERATOR)
    parser.add_argument("--run", nargs=2, metavar=("URL", "DIR"))
    args = parser.parse_args()
    if args.run:
        one_run(args.run[0], Path(args.run[1]))
        return
    print("| events | wall s | event loop CPU s | process CPU s | created | threads' CPU s "
          "| load |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---|---:|")
    for size in args.sizes:
        measure(size, args.runs, args.generator)


if __name__ == "__main__":
    main()
