#!/usr/bin/env python3
"""Connect + first sync of a realistic calendar through the REST API, against vdirsyncer.

    .venv/bin/python -m bench.caldav_first_import 2000 5000 [--runs 3]

The calendar is what ``../shared/bench/anchor/gen_events.py`` writes (time zones with
VTIMEZONE, an organizer and 1-3 attendees, categories, 10 % weekly series, 5 %
all-day; ``--generator`` names another copy). For each size N it seeds a Radicale
collection with those N events by writing them into Radicale's storage, lets
Radicale build its caches once, and then, each run on a fresh copy of that storage:

* crmcal: ``crmcal serve`` on a new SQLite CRM is started first and has served
  one connect + sync of a small calendar of another user (not timed: what a
  running server has done before, its first requests' one-time costs); the time
  is from ``POST /api/v1/connections`` until the end of that connection's first
  sync as the server records it (``recent_syncs[0].ended_at`` of its status,
  asked every 0.25 s; same machine, same clock);
* vdirsyncer: ``vdirsyncer discover`` + ``vdirsyncer sync`` into an empty
  filesystem storage, each a whole process, as its users run them.

It prints medians, the ratio crmcal / vdirsyncer (below 1: crmcal is faster),
crmcal's server CPU from the connect request until the sync was seen ended (all
its threads and its parse pool's processes, from ``/proc``; the status requests
included) and of that the server's own process (where the event loop runs), how much
of crmcal's time passed before its sync began (the connect request's discovery, the
scheduler taking the sync: ``recent_syncs[0].started_at``), Radicale's
CPU while it served each tool (a floor neither can go under on these two cores: both
read the same calendar from it), what the sync reported, and the load average. vdirsyncer is looked
up with ``--vdirsyncer``, else beside this interpreter, else on PATH (it can live
in a virtualenv of its own). Nothing here runs in the test suite.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

# `python bench/<script>.py` puts bench/ itself first on the path; the checkout
# above it is where `bench.*` comes from (`python -m bench.<script>` needs no help).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.benchkit import free_port
from bench.caldav_import import USER, Radicale

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent
GENERATOR = ROOT.parent / "shared" / "bench" / "anchor" / "gen_events.py"
SECRET = "bench-key-Tq8Wm3Zx6Lp1Rv9Ns4Kb7Yc2Hd5Gf0Ja"  # noqa: S105  # a bench CRM of its own


class Seed:
    """N generated events in a Radicale storage, with the caches Radicale builds on first
    read; each run starts from a copy."""

    def __init__(self, events: int, generator: Path) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="crmcal-bench-seed-"))
        self.start = None
        generated = self.root / "generated"
        subprocess.run([str(BIN / "python"), str(generator), str(events), str(generated)],
                       check=True)  # fmt: skip
        collection = self.root / "collections" / "collection-root" / USER / "calendar"
        collection.mkdir(parents=True)
        (collection / ".Radicale.props").write_text(json.dumps({"tag": "VCALENDAR"}))
        for path in generated.glob("*.ics"):
            shutil.move(path, collection / path.name)
        warm = Radicale(self.root / "warm", self)  # type: ignore[arg-type]
        warm.stop()
        shutil.rmtree(self.root / "collections")
        shutil.move(warm.root / "collections", self.root / "collections")
        shutil.rmtree(self.root / "warm", ignore_errors=True)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children that ended (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def tree_cpu(pid: int) -> float:
    """CPU of ``pid`` and of its live child processes (a process pool's workers)."""
    total = cpu_seconds(pid)
    children = Path(f"/proc/{pid}/task/{pid}/children")
    for child in children.read_text().split() if children.exists() else []:
        # One that ended meanwhile has its time in the parent's cutime.
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            total += tree_cpu(int(child))
    return total


class CrmcalServer:
    """``crmcal serve`` on a new SQLite CRM with one user; stopped by its own pid."""

    def __init__(self, root: Path) -> None:
        root.mkdir(exist_ok=True)
        self.port = free_port()
        self.env = {
            **os.environ,
            "CRMCAL_DATABASE_URL": f"sqlite:///{root / 'crm.db'}",
            "CRMCAL_SECRET_KEY": SECRET,
            "CRMCAL_ALLOW_PRIVATE_NETWORKS": "1",
            "CRMCAL_BASE_URL": f"http://127.0.0.1:{self.port}",
        }
        crmcal = str(BIN / "crmcal")
        subprocess.run([crmcal, "db", "upgrade"], env=self.env, check=True, capture_output=True)
        made = subprocess.run(
            [crmcal, "users", "create", "--email", "b@bench.test", "--name", "B"],
            env=self.env, check=True, capture_output=True, text=True,
        )  # fmt: skip
        self.token = made.stdout.strip().split()[-1]
        self.log = (root / "serve.log").open("w")
        self.proc = subprocess.Popen(
            [crmcal, "serve", "--port", str(self.port)],
            env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.api = httpx.Client(
            base_url=f"http://127.0.0.1:{self.port}/api/v1",
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=600,
        )
        deadline = time.monotonic() + 120
        while True:
            try:
                if self.api.get("/me").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"crmcal serve did not start: {self.log.name}")
            time.sleep(0.05)

    def warm_up(self, url: str) -> None:
        """Another user connects a small calendar and it syncs (one-time costs of a
        fresh process: imports, the TLS context, the API's first requests)."""
        made = subprocess.run(
            [str(BIN / "crmcal"), "users", "create", "--email", "w@bench.test", "--name", "W"],
            env=self.env, check=True, capture_output=True, text=True,
        )  # fmt: skip
        token = made.stdout.strip().split()[-1]
        self.connect_and_sync(url, token)

    def connect_and_sync(self, url: str, token: str | None = None) -> dict[str, Any]:
        """Time from the connect request until its first sync ended."""
        headers = {"Authorization": f"Bearer {token or self.token}"}
        cpu, own = tree_cpu(self.proc.pid), cpu_seconds(self.proc.pid)
        started = dt.datetime.now(dt.UTC)
        made = self.api.post(
            "/connections",
            json={"provider": "caldav", "url": url, "username": USER, "password": "x"},
            headers=headers,
        )
        if made.status_code != 201:
            raise RuntimeError(f"connect failed: {made.status_code} {made.text}")
        conn_id = made.json()["id"]
        while True:
            status = self.api.get(f"/connections/{conn_id}/status", headers=headers).json()
            if status["last_sync_at"] and status["state"] != "syncing":
                break
            if status["state"] == "error":
                raise RuntimeError(f"the first sync failed: {status['last_error']}")
            time.sleep(0.25)
        ended = dt.datetime.fromisoformat(status["recent_syncs"][0]["ended_at"])
        began = dt.datetime.fromisoformat(status["recent_syncs"][0]["started_at"])
        wall = (ended - started).total_seconds()
        return {"wall": wall, "cpu": tree_cpu(self.proc.pid) - cpu,
                "own_cpu": cpu_seconds(self.proc.pid) - own, "status": status,
                "before": (began - started).total_seconds()}  # fmt: skip

    def stop(self) -> None:
        self.api.close()
        self.proc.terminate()
        self.proc.wait(timeout=60)
        self.log.close()


def timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False,
                          stdin=subprocess.DEVNULL)  # fmt: skip
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{done.stdout}\n{done.stderr}")
    return elapsed


def vdirsyncer_initial(root: Path, url: str, program: str, events: int) -> float:
    (root / "vdir").mkdir(parents=True)
    (root / "status").mkdir()
    config = root / "vdirsyncer.conf"
    config.write_text(
        f'[general]\nstatus_path = "{root / "status"}"\n\n'
        '[pair bench]\na = "server"\nb = "local"\ncollections = null\n'
        'conflict_resolution = "a wins"\n\n'
        f'[storage server]\ntype = "caldav"\nurl = "{url}"\n'
        f'username = "{USER}"\npassword = "x"\n\n'
        f'[storage local]\ntype = "filesystem"\npath = "{root / "vdir"}"\nfileext = ".ics"\n'
    )
    env = {**os.environ, "VDIRSYNCER_CONFIG": str(config)}
    elapsed = timed([program, "discover"], env) + timed([program, "sync"], env)
    copied = len(list((root / "vdir").glob("*.ics")))
    if copied != events:
        raise RuntimeError(f"vdirsyncer copied {copied} of {events} events")
    return elapsed


def find_vdirsyncer(given: str | None) -> str:
    for candidate in (given, str(BIN / "vdirsyncer"), shutil.which("vdirsyncer")):
        if candidate and Path(candidate).exists():
            return candidate
    raise SystemExit("vdirsyncer not found: pip install vdirsyncer (any venv), or --vdirsyncer")


def measure(events: int, runs: int, generator: Path, program: str) -> dict[str, Any]:
    ours: list[float] = []
    cpu: list[float] = []
    own_cpu: list[float] = []
    before: list[float] = []  # from the connect request until the sync began
    theirs: list[float] = []
    radicale_ours: list[float] = []  # Radicale's CPU while it served crmcal's import
    radicale_theirs: list[float] = []  # ... and vdirsyncer's
    counts: dict[str, Any] = {}
    seed = Seed(events, generator)
    tiny = Seed(20, generator)
    try:
        for run in range(runs):
            root = Path(tempfile.mkdtemp(prefix="crmcal-bench-"))
            radicale = Radicale(root, seed)  # type: ignore[arg-type]
            small = Radicale(root / "small", tiny)  # type: ignore[arg-type]
            crmcal = None
            try:
                crmcal = CrmcalServer(root / "crm")
                crmcal.warm_up(small.url)
                # Alternate who goes first: Radicale's caches warm up for both.
                order = ("crmcal", "vdirsyncer") if run % 2 == 0 else ("vdirsyncer", "crmcal")
                for tool in order:
                    served = cpu_seconds(radicale.proc.pid)
                    if tool == "crmcal":
                        done = crmcal.connect_and_sync(radicale.url)
                        ours.append(done["wall"])
                        cpu.append(done["cpu"])
                        own_cpu.append(done["own_cpu"])
                        before.append(done["before"])
                        counts = done["status"].get("counts") or {}
                        radicale_ours.append(cpu_seconds(radicale.proc.pid) - served)
                    else:
                        theirs.append(vdirsyncer_initial(root / "vdir", radicale.url, program,
                                                         events))  # fmt: skip
                        radicale_theirs.append(cpu_seconds(radicale.proc.pid) - served)
            finally:
                if crmcal is not None:
                    crmcal.stop()
                radicale.stop()
                small.stop()
                shutil.rmtree(root, ignore_errors=True)
    finally:
        seed.remove()
        tiny.remove()
    return {
        "crmcal": statistics.median(ours),
        "crmcal_runs": ours,
        "cpu": statistics.median(cpu),
        "own_cpu": statistics.median(own_cpu),
        "before": statistics.median(before),
        "vdirsyncer": statistics.median(theirs),
        "vdirsyncer_runs": theirs,
        "counts": counts,
        "radicale_ours": statistics.median(radicale_ours),
        "radicale_theirs": statistics.median(radicale_theirs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[2000, 5000])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--generator", type=Path, default=GENERATOR)
    parser.add_argument("--vdirsyncer", default=None)
    args = parser.parse_args()
    program = find_vdirsyncer(args.vdirsyncer)
    print("| events | crmcal connect + first sync s | crmcal server CPU s | of it the server's "
          "own process s | of the time, before the sync began s | vdirsyncer discover + sync s "
          "| ratio | Radicale CPU s serving crmcal | serving vdirsyncer | crmcal runs "
          "| vdirsyncer runs | imported | load avg |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|---|")
    for size in args.sizes:
        found = measure(size, args.runs, args.generator, program)
        load = " ".join(f"{v:.1f}" for v in os.getloadavg())
        runs = " ".join(f"{v:.2f}" for v in found["crmcal_runs"])
        peer = " ".join(f"{v:.2f}" for v in found["vdirsyncer_runs"])
        print(f"| {size} | {found['crmcal']:.2f} | {found['cpu']:.2f} | {found['own_cpu']:.2f} "
              f"| {found['before']:.2f} | {found['vdirsyncer']:.2f} "
              f"| **{found['crmcal'] / found['vdirsyncer']:.2f}** "
              f"| {found['radicale_ours']:.2f} | {found['radicale_theirs']:.2f} | {runs} | {peer} "
              f"| {found['counts']} | {load} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
