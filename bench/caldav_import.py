#!/usr/bin/env python3
"""crmcal against vdirsyncer on the same Radicale collection: import, no-change and 1% re-sync.

    .venv/bin/pip install -e '.[test,bench]'
    .venv/bin/python bench/caldav_import.py 500 5000 [--runs 3]

For each size N it starts Radicale on a free 127.0.0.1 port, seeds a collection
with N events by writing the files into Radicale's storage (one PUT per event
grows superlinearly slow on both test servers), reads the collection once so
Radicale builds its caches (once per size; each run starts from a copy), then
times, each as a whole process (interpreter start-up included, as a user would
run them):

* ``crmcal sync`` into a new SQLite CRM: the initial import, a re-sync with no
  change, a re-sync after 1% of the events changed on the server;
* ``vdirsyncer sync`` into a filesystem storage: the same three.

crmcal is also timed "in server": the same sync measured inside the process,
as the long-running server (which does every sync) spends it, with the CPU
time crmcal itself used (what Radicale spends is not in it: a no-change sync
costs Radicale time in proportion to the collection, crmcal's own share stays
flat). It prints medians,
events per second and the ratios crmcal / vdirsyncer (below 1 means crmcal is
faster). Nothing here runs in the test suite.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent
USER = "bench"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def event_text(n: int, start: dt.datetime, version: int = 0) -> str:
    begin = (start + dt.timedelta(hours=n)).strftime("%Y%m%dT%H%M%S")
    end = (start + dt.timedelta(hours=n, minutes=45)).strftime("%Y%m%dT%H%M%S")
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//bench//bench//EN\r\nBEGIN:VEVENT\r\n"
        f"UID:bench-{n:06d}\r\nDTSTAMP:20260101T000000Z\r\nSEQUENCE:{version}\r\n"
        f"DTSTART;TZID=Europe/Berlin:{begin}\r\nDTEND;TZID=Europe/Berlin:{end}\r\n"
        f"SUMMARY:Customer call {n} v{version}\r\nLOCATION:Room {n % 9}\r\n"
        f"DESCRIPTION:Agenda for call {n}\r\n"
        f"ATTENDEE;CN=Contact {n % 40};PARTSTAT=ACCEPTED:mailto:contact{n % 40}@acme.example\r\n"
        "END:VEVENT\r\nEND:VCALENDAR\r\n"
    )


class Radicale:
    """A Radicale server on a copy of ``seed``'s storage (seeded and cached once per size)."""

    def __init__(self, root: Path, seed: Seed) -> None:
        self.root = root
        self.port = free_port()
        shutil.copytree(seed.root / "collections", root / "collections")
        self.collection = root / "collections" / "collection-root" / USER / "calendar"
        self.start = seed.start
        config = root / "radicale.conf"
        config.write_text(
            f"[server]\nhosts = 127.0.0.1:{self.port}\n[auth]\ntype = none\n"
            f"[storage]\nfilesystem_folder = {root / 'collections'}\n[logging]\nlevel = error\n"
        )
        self.proc = subprocess.Popen(
            [str(BIN / "python"), "-m", "radicale", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.url = f"http://127.0.0.1:{self.port}/{USER}/calendar/"
        self._warm_up()

    def _warm_up(self) -> None:
        """Let Radicale build its caches: items (a query) and sync history (a sync-token)."""
        deadline = time.monotonic() + 600
        query = (
            b'<?xml version="1.0"?><C:calendar-query xmlns:D="DAV:" '
            b'xmlns:C="urn:ietf:params:xml:ns:caldav"><D:prop><D:getetag/></D:prop>'
            b'<C:filter><C:comp-filter name="VCALENDAR"/></C:filter></C:calendar-query>'
        )
        token = b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:sync-token/>'
        token += b"</D:prop></D:propfind>"
        for method, body, depth in (("REPORT", query, "1"), ("PROPFIND", token, "0")):
            while True:
                try:
                    request = urllib.request.Request(
                        self.url, data=body, method=method, headers={"Depth": depth}
                    )
                    urllib.request.urlopen(request, timeout=600).read()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)

    def change(self, fraction: float, version: int) -> int:
        files = sorted(self.collection.glob("bench-*.ics"))
        step = max(1, round(1 / fraction))
        changed = files[::step]
        for path in changed:
            n = int(path.stem.split("-")[1])
            path.write_text(event_text(n, self.start, version))
        self._warm_up()
        return len(changed)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


class Seed:
    """N events written into a Radicale storage, with the cache Radicale builds on first read.

    Building that cache (Radicale parses every item) takes minutes at 5,000 events:
    it is done once per size and each run starts from a copy.
    """

    def __init__(self, events: int) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="crmcal-bench-seed-"))
        collection = self.root / "collections" / "collection-root" / USER / "calendar"
        collection.mkdir(parents=True)
        (collection / ".Radicale.props").write_text(json.dumps({"tag": "VCALENDAR"}))
        self.start = dt.datetime.now(dt.UTC).replace(minute=0, second=0) + dt.timedelta(days=1)
        for n in range(events):
            (collection / f"bench-{n:06d}.ics").write_text(event_text(n, self.start))
        warm = Radicale(self.root / "warm", self)
        warm.stop()
        shutil.rmtree(self.root / "collections")
        shutil.move(warm.root / "collections", self.root / "collections")
        shutil.rmtree(self.root / "warm", ignore_errors=True)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{result.stdout}\n{result.stderr}")
    return elapsed


class Crmcal:
    def __init__(self, root: Path, server: Radicale) -> None:
        root.mkdir(exist_ok=True)
        self.cpu = 0.0
        self.env = {
            **os.environ,
            "CRMCAL_DATABASE_URL": f"sqlite:///{root / 'crm.db'}",
            "CRMCAL_SECRET_KEY": "bench-key-Tq8Wm3Zx6Lp1Rv9Ns4Kb7Yc2Hd5Gf0Ja",
            "CRMCAL_ALLOW_PRIVATE_NETWORKS": "1",
        }
        subprocess.run([str(BIN / "crmcal"), "db", "upgrade"], env=self.env, check=True,
                       capture_output=True)  # fmt: skip
        code = (
            "import asyncio\n"
            "from crmcal.config import Settings\n"
            "from crmcal.db import Database\n"
            "from crmcal.crm.schemas import UserCreate\n"
            "from crmcal.crm.users import create_user\n"
            "from crmcal.sync.connections import create\n"
            "from crmcal.sync.schemas import ConnectionCreate\n"
            "from crmcal.model import CalendarInfo\n"
            "from crmcal.vault import vault_for\n"
            "async def main():\n"
            "    settings = Settings.from_env()\n"
            "    db = Database(settings.database_url)\n"
            "    async with db.write() as s:\n"
            "        user, _ = await create_user(s, UserCreate(email='b@bench.test', name='B'))\n"
            f"        data = ConnectionCreate(provider='caldav', url={server.url!r},\n"
            "                                username='bench', password='x')\n"
            f"        cal = CalendarInfo(id={server.url!r}, name='calendar', writable=True)\n"
            "        conn = await create(s, user, data, cal, vault_for(settings))\n"
            "        conn.connected_at = conn.connected_at.replace(year=2000)\n"
            "    await db.dispose()\n"
            "asyncio.run(main())\n"
        )
        subprocess.run([str(BIN / "python"), "-c", code], env=self.env, check=True)

    def sync(self) -> float:
        return timed([str(BIN / "crmcal"), "sync", "1"], self.env)

    def sync_in_server(self) -> float:
        """The sync alone, as the long-running server does it (no process start-up)."""
        code = (
            "import asyncio, time\n"
            "from crmcal.config import Settings\n"
            "from crmcal.db import Database\n"
            "from crmcal.sync.runner import run_sync\n"
            "from crmcal.vault import vault_for\n"
            "import crmcal.providers.caldav, crmcal.sync.engine\n"
            "async def main():\n"
            "    settings = Settings.from_env()\n"
            "    db = Database(settings.database_url)\n"
            "    started, cpu = time.perf_counter(), time.process_time()\n"
            "    await run_sync(db, vault_for(settings), settings, 1)\n"
            "    print(time.perf_counter() - started, time.process_time() - cpu)\n"
            "    await db.dispose()\n"
            "asyncio.run(main())\n"
        )
        done = subprocess.run([str(BIN / "python"), "-c", code], env=self.env, check=True,
                              capture_output=True, text=True)  # fmt: skip
        wall, cpu = done.stdout.strip().splitlines()[-1].split()
        self.cpu = float(cpu)  # crmcal's own CPU, whatever the server spends
        return float(wall)


class Vdirsyncer:
    def __init__(self, root: Path, server: Radicale) -> None:
        (root / "vdir").mkdir()
        (root / "status").mkdir()
        config = root / "vdirsyncer.conf"
        config.write_text(
            f'[general]\nstatus_path = "{root / "status"}"\n\n'
            '[pair bench]\na = "server"\nb = "local"\ncollections = null\n'
            'conflict_resolution = "a wins"\n\n'
            f'[storage server]\ntype = "caldav"\nurl = "{server.url}"\n'
            'username = "bench"\npassword = "x"\n\n'
            f'[storage local]\ntype = "filesystem"\npath = "{root / "vdir"}"\n'
            'fileext = ".ics"\n'
        )
        self.env = {**os.environ, "VDIRSYNCER_CONFIG": str(config)}

    def sync(self, *, first: bool = False) -> float:
        elapsed = 0.0
        if first:
            elapsed += timed([str(BIN / "vdirsyncer"), "discover"], self.env)
        return elapsed + timed([str(BIN / "vdirsyncer"), "sync"], self.env)


def measure(events: int, runs: int) -> dict[str, dict[str, float]]:
    tools = ("crmcal", "crmcal in server", "crmcal CPU", "vdirsyncer")
    results: dict[str, dict[str, list[float]]] = {
        tool: {"initial": [], "nochange": [], "1pct": []} for tool in tools
    }
    seed = Seed(events)
    for run in range(runs):
        root = Path(tempfile.mkdtemp(prefix="crmcal-bench-"))
        server = Radicale(root, seed)
        try:
            # Two CRMs on the same collection: one synced by the command line,
            # one as the server does it.
            crm, vdir = Crmcal(root, server), Vdirsyncer(root, server)
            served = Crmcal(root / "served", server)
            results["crmcal"]["initial"].append(crm.sync())
            results["crmcal in server"]["initial"].append(served.sync_in_server())
            results["crmcal CPU"]["initial"].append(served.cpu)
            results["vdirsyncer"]["initial"].append(vdir.sync(first=True))
            results["crmcal"]["nochange"].append(crm.sync())
            results["crmcal in server"]["nochange"].append(served.sync_in_server())
            results["crmcal CPU"]["nochange"].append(served.cpu)
            results["vdirsyncer"]["nochange"].append(vdir.sync())
            server.change(0.01, version=run + 1)
            results["crmcal"]["1pct"].append(crm.sync())
            results["crmcal in server"]["1pct"].append(served.sync_in_server())
            results["crmcal CPU"]["1pct"].append(served.cpu)
            results["vdirsyncer"]["1pct"].append(vdir.sync())
        finally:
            server.stop()
            shutil.rmtree(root, ignore_errors=True)
    seed.remove()
    return {tool: {op: statistics.median(times) for op, times in ops.items()}
            for tool, ops in results.items()}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sizes", nargs="+", type=int)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print("| events | operation | crmcal s (process) | crmcal s (in server) | crmcal CPU s "
          "| vdirsyncer s | ratio process | ratio in server | events/s in server |")  # fmt: skip
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for size in args.sizes:
        medians = measure(size, args.runs)
        for op in ("initial", "nochange", "1pct"):
            cli, served = medians["crmcal"][op], medians["crmcal in server"][op]
            cpu, theirs = medians["crmcal CPU"][op], medians["vdirsyncer"][op]
            print(f"| {size} | {op} | {cli:.2f} | {served:.2f} | {cpu:.2f} | {theirs:.2f} "
                  f"| {cli / theirs:.2f} | {served / theirs:.2f} | {size / served:.0f} |",
                  flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
