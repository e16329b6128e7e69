#!/usr/bin/env python3
"""crmcal against Google's own Python client on the Google Calendar emulator.

    .venv/bin/pip install -e '.[test,bench]'
    .venv/bin/python bench/google_sync.py [--events 5000] [--calendar 50000] [--runs 3]

The emulator (``crmcal emulator google``) runs as a separate process on a free
127.0.0.1 port and is stopped at the end, also on error. crmcal runs "in
server": the sync is timed inside this process, as the long-running server
spends it, with the CPU time this process used (the emulator's is not in it).
Request counts are differences of the emulator's ``GET /_emulator/requests``
taken before and after each measured step. Two measurements:

* push: N new activities to an empty calendar. crmcal (a fresh SQLite CRM,
  one user, N calls, a Google connection) runs one sync, batched as it ships,
  then again with batches hidden from the engine (one ``events.insert`` per
  event). The peer is googleapiclient (built from the discovery document it
  ships) inserting the same N events one by one, then in batches of 50.
* incremental: M events seeded straight into the emulator's data file, one
  untimed full sync, then one event changed by another client; timed are
  crmcal's incremental sync, googleapiclient listing the whole calendar (what
  a client without sync tokens does to notice the change) and googleapiclient's
  incremental listing with a sync token (the floor). crmcal's sync is also
  shown less the time it waited for its access token: on that request the
  emulator rewrites its whole data file, seconds at this size, which Google
  does not spend.

It prints medians and the ratios crmcal / peer (below 1 means crmcal is faster,
or sends fewer requests). Nothing here runs in the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

# `python bench/<script>.py` puts bench/ itself first on the path; the checkout
# above it is where `bench.*` comes from (`python -m bench.<script>` needs no help).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.benchkit import (
    BenchError,
    Counted,
    Sample,
    activity,
    free_port,
    ratio,
    without_batch_creates,
)
from crmcal import migrations
from crmcal.config import Settings
from crmcal.crm import activities
from crmcal.crm.schemas import ActivityCreate, UserCreate
from crmcal.crm.users import create_user
from crmcal.db import Database
from crmcal.providers.base import Provider
from crmcal.sync.engine import SyncFailed
from crmcal.sync.report import SyncReport
from crmcal.sync.runner import open_provider, run_sync
from crmcal.sync.tables import Connection
from crmcal.vault import Vault, vault_for

BIN = Path(sys.executable).parent
CLIENT_BATCH = 50  # googleapiclient's batches, as many calls as crmcal puts in one
PAGE = 2500  # the largest page Google serves, what both sides ask for
# Fields a client writes; the rest of a listed event is the server's.
WRITTEN = ("id", "summary", "description", "location", "start", "end", "transparency",
           "visibility", "reminders", "attendees", "extendedProperties")  # fmt: skip


# --- the emulator --------------------------------------------------------------------


class Emulator:
    """``crmcal emulator google`` as a separate process, with its admin API."""

    def __init__(self, root: Path, data_file: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = root / f"emulator-{self.port}.log"
        argv = [str(BIN / "crmcal"), "emulator", "google", "--port", str(self.port)]
        if data_file is not None:
            argv += ["--data-file", str(data_file)]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        self.http = httpx.Client(base_url=self.url, timeout=600)
        self._wait_ready()

    def _wait_ready(self) -> None:
        # Loading a large data file takes a while before the port opens.
        deadline = time.monotonic() + 600
        while True:
            if self.proc.poll() is not None:
                raise BenchError(f"the emulator exited at start-up:\n{self.log_tail()}")
            try:
                if self.http.get("_emulator/requests").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise BenchError(f"the emulator did not answer within 600 s:\n{self.log_tail()}")
            time.sleep(0.2)

    def log_tail(self) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return "(no log)"

    def requests(self) -> dict[str, int]:
        answer = self.http.get("_emulator/requests")
        if answer.status_code != 200:
            raise BenchError(f"GET /_emulator/requests answered {answer.status_code}")
        return {str(k): int(v) for k, v in answer.json().items()}

    def account(self, email: str) -> dict[str, str]:
        answer = self.http.post("_emulator/accounts", json={"email": email})
        if answer.status_code != 200:
            raise BenchError(f"creating the account {email} answered {answer.text}")
        return dict(answer.json())

    def timed_write(self) -> float:
        """One admin write that changes nothing: with a data file, what a save costs."""
        started = time.perf_counter()
        self.http.post("_emulator/faults", json={"clear": True}).raise_for_status()
        return time.perf_counter() - started

    def count_events(self, calendar_id: str, token: str) -> int:
        """Live events in a calendar, every page."""
        total, page = 0, None
        while True:
            params: dict[str, Any] = {"maxResults": PAGE, **({"pageToken": page} if page else {})}
            answer = self.http.get(f"calendar/v3/calendars/{calendar_id}/events", params=params,
                                   headers={"Authorization": f"Bearer {token}"})  # fmt: skip
            if answer.status_code != 200:
                raise BenchError(f"listing {calendar_id} answered {answer.text[:300]}")
            data = answer.json()
            total += sum(1 for item in data["items"] if item.get("status") != "cancelled")
            page = data.get("nextPageToken")
            if not page:
                return total

    def stop(self) -> None:
        self.http.close()
        if self.proc.poll() is None:
            self.proc.terminate()  # a clean stop: with a data file it saves once more
            try:
                self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# --- crmcal, in this process ---------------------------------------------------------


class Crm:
    """A fresh SQLite CRM with one user and a Google connection to the emulator, kept
    open across syncs as the long-running server keeps its database engine."""

    def __init__(self, root: Path, emulator: Emulator) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.settings = Settings(
            database_url=f"sqlite:///{root / 'crm.db'}",
            secret_key="bench",  # noqa: S106  # a throwaway key for a throwaway CRM
            # Push notifications go nowhere: nothing listens there.
            base_url=f"http://127.0.0.1:{free_port()}",
            google_api_url=emulator.url.rstrip("/"),
            google_oauth_url=emulator.url.rstrip("/"),
        )
        vault = vault_for(self.settings)
        assert vault is not None
        self.vault: Vault = vault
        self.db = Database(self.settings.database_url)
        self.connection_id = 0

    async def setup(self, refresh_token: str, count: int, start: dt.datetime) -> None:
        """The user, ``count`` calls from ``start`` on (hourly), and the connection."""
        # Alembic runs its own event loop: not in this one.
        await asyncio.to_thread(migrations.upgrade, self.settings.database_url)
        async with self.db.write() as session:
            user, api_token = await create_user(session, UserCreate(email="b@bench.test", name="B"))
            for first in range(0, count, 1000):
                items: list[tuple[ActivityCreate, str | None]] = [
                    (activity(n, start), None) for n in range(first, min(first + 1000, count))
                ]
                await activities.create_activities(session, user, items)
        # Connected through the REST API, as a user does (the account is checked and its
        # primary calendar picked there); the app runs its own loop, in a thread.
        self.connection_id = await asyncio.to_thread(self._connect, api_token, refresh_token)

    def _connect(self, api_token: str, refresh_token: str) -> int:
        from fastapi.testclient import TestClient

        from crmcal.web.app import create_app

        app = create_app(self.settings, background_jobs=False)
        with TestClient(app) as client:
            answer = client.post(
                "/api/v1/connections",
                json={"provider": "google", "refresh_token": refresh_token},
                headers={"Authorization": f"Bearer {api_token}"},
            )
        if answer.status_code != 201:
            raise BenchError(f"connecting answered {answer.status_code}: {answer.text[:300]}")
        return int(answer.json()["id"])

    async def sync(self, *, one_by_one: bool = False) -> tuple[float, float, SyncReport]:
        """One sync as the server runs it: (wall s, CPU s of this process, report)."""
        provider: Provider | None = None
        if one_by_one:
            async with self.db.read() as session:
                conn = await session.get(Connection, self.connection_id)
                assert conn is not None
            provider = without_batch_creates(open_provider(conn, self.vault, self.settings))
        started, cpu = time.perf_counter(), time.process_time()
        try:
            report = await run_sync(
                self.db, self.vault, self.settings, self.connection_id, provider=provider
            )
        finally:
            wall, cpu = time.perf_counter() - started, time.process_time() - cpu
            if provider is not None:
                await provider.close()
        return wall, cpu, report

    async def close(self) -> None:
        await self.db.dispose()


def event_body(n: int, start: dt.datetime) -> dict[str, Any]:
    """A seeded calendar event, like the activities above as another client wrote them."""
    begin = start + dt.timedelta(hours=n)
    zone = "Europe/Berlin"
    return {
        "id": f"bench{n:08d}",  # base32hex, so the bench can name the one it changes
        "summary": f"Customer call {n}",
        "start": {"dateTime": begin.isoformat(), "timeZone": zone},
        "end": {"dateTime": (begin + dt.timedelta(minutes=45)).isoformat(), "timeZone": zone},
        "location": f"Room {n % 9}",
        "description": f"Agenda for call {n}",
        "attendees": [
            {"email": f"contact{n % 40}@acme.example", "displayName": f"Contact {n % 40}"}
        ],
    }


# --- the peer: Google's own client ---------------------------------------------------


def google_client(emulator: Emulator, access_token: str) -> Any:
    """googleapiclient built from the discovery document it ships, aimed at the emulator."""
    import googleapiclient
    from google.oauth2.credentials import Credentials
    from googleapiclient.discovery import build_from_document

    document = Path(googleapiclient.__file__).parent / "discovery_cache/documents/calendar.v3.json"
    return build_from_document(
        document.read_text(),
        credentials=Credentials(token=access_token),
        client_options={"api_endpoint": emulator.url + "calendar/v3/"},
    )


def client_batch(emulator: Emulator, callback: Callable[..., None]) -> Any:
    """A batch for the emulator. ``new_batch_http_request`` posts to the discovery
    document's ``rootUrl`` + ``batchPath`` (Google's own host) whatever ``api_endpoint``
    says, so the same object is made here with the emulator's batch address."""
    from googleapiclient.http import BatchHttpRequest

    return BatchHttpRequest(callback=callback, batch_uri=emulator.url + "batch/calendar/v3")


def peer_insert(
    emulator: Emulator, service: Any, calendar_id: str, bodies: list[dict[str, Any]],
    *, batched: bool,
) -> None:  # fmt: skip
    if not batched:
        for body in bodies:
            service.events().insert(calendarId=calendar_id, body=body, sendUpdates="none").execute()
        return
    failures: list[str] = []

    def answered(request_id: str, response: Any, exception: Exception | None) -> None:
        if exception is not None:
            failures.append(f"{request_id}: {exception}")

    for first in range(0, len(bodies), CLIENT_BATCH):
        batch = client_batch(emulator, answered)
        for body in bodies[first : first + CLIENT_BATCH]:
            batch.add(service.events().insert(calendarId=calendar_id, body=body,
                                              sendUpdates="none"))  # fmt: skip
        batch.execute()
    if failures:
        raise BenchError(f"{len(failures)} batched inserts failed, e.g. {failures[0]}")


def peer_list(
    service: Any, calendar_id: str, sync_token: str | None = None
) -> tuple[list[Any], str]:
    """Every page of a listing: (items, nextSyncToken)."""
    events = service.events()
    params: dict[str, Any] = {"calendarId": calendar_id, "maxResults": PAGE}
    if sync_token:
        params["syncToken"] = sync_token
    request = events.list(**params)
    items: list[Any] = []
    while request is not None:
        answer = request.execute()
        items += answer.get("items", [])
        token = answer.get("nextSyncToken")
        request = events.list_next(request, answer)
    if not token:
        raise BenchError("the listing's last page carried no nextSyncToken")
    return items, str(token)


# --- 1. pushing N new activities -----------------------------------------------------


PUSH_ROWS = ("crmcal batched", "crmcal one by one", "googleapiclient one by one",
             "googleapiclient batch of 50")  # fmt: skip


def measure_push(events: int, runs: int, root: Path) -> dict[str, Sample]:
    samples = {row: Sample() for row in PUSH_ROWS}
    start = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).replace(minute=0, second=0,
                                                                      microsecond=0)  # fmt: skip
    bodies: list[dict[str, Any]] = []
    for run in range(runs):
        # In memory: with a data file the emulator rewrites the whole file after
        # every write, which one-by-one inserts would pay N times.
        emulator = Emulator(root)
        try:
            for one_by_one in (False, True):
                row = PUSH_ROWS[int(one_by_one)]
                email = f"crmcal-{run}-{int(one_by_one)}@bench.test"
                tokens = emulator.account(email)
                crm = Crm(root / f"push-{run}-{int(one_by_one)}", emulator)
                wall, cpu, report, counted = asyncio.run(
                    crmcal_push(crm, emulator, tokens["refresh_token"], events, start, one_by_one)
                )
                if report.created != events or report.problems:
                    raise BenchError(f"{row}: created {report.created} of {events}, "
                                     f"problems {report.problems[:3]}")  # fmt: skip
                found = emulator.count_events(email, tokens["access_token"])
                if found != events:
                    raise BenchError(f"{row}: the calendar holds {found} events, not {events}")
                samples[row].add(wall, cpu, counted)
                if not bodies:
                    bodies = written_bodies(emulator, email, tokens["access_token"])
            for batched in (False, True):
                row = PUSH_ROWS[2 + int(batched)]
                email = f"peer-{run}-{int(batched)}@bench.test"
                tokens = emulator.account(email)
                service = google_client(emulator, tokens["access_token"])
                before = emulator.requests()
                started, cpu = time.perf_counter(), time.process_time()
                peer_insert(emulator, service, email, bodies, batched=batched)
                wall, cpu = time.perf_counter() - started, time.process_time() - cpu
                counted = Counted.between(before, emulator.requests(),
                                          batched="events.insert")  # fmt: skip
                found = emulator.count_events(email, tokens["access_token"])
                if found != events:
                    raise BenchError(f"{row}: the calendar holds {found} events, not {events}")
                samples[row].add(wall, cpu, counted)
        finally:
            emulator.stop()
        print(f"push run {run + 1}/{runs} done", file=sys.stderr, flush=True)
    return samples


async def crmcal_push(
    crm: Crm, emulator: Emulator, refresh_token: str, events: int, start: dt.datetime,
    one_by_one: bool,
) -> tuple[float, float, SyncReport, Counted]:  # fmt: skip
    try:
        await crm.setup(refresh_token, events, start)
        before = emulator.requests()
        wall, cpu, report = await crm.sync(one_by_one=one_by_one)
        return wall, cpu, report, Counted.between(before, emulator.requests(),
                                                  batched="events.insert")  # fmt: skip
    finally:
        await crm.close()


def written_bodies(emulator: Emulator, calendar_id: str, token: str) -> list[dict[str, Any]]:
    """The events crmcal wrote, as a client would write them again (same ids and fields)."""
    found: list[dict[str, Any]] = []
    page = None
    while True:
        params: dict[str, Any] = {"maxResults": PAGE, **({"pageToken": page} if page else {})}
        answer = emulator.http.get(f"calendar/v3/calendars/{calendar_id}/events", params=params,
                                   headers={"Authorization": f"Bearer {token}"})  # fmt: skip
        answer.raise_for_status()
        data = answer.json()
        found += [{k: item[k] for k in WRITTEN if k in item} for item in data["items"]]
        page = data.get("nextPageToken")
        if not page:
            return found


# --- 2. incremental sync with one change --------------------------------------------


INCREMENTAL_ROWS = ("crmcal incremental sync", "googleapiclient full list",
                    "googleapiclient syncToken list")  # fmt: skip


@dataclass
class Incremental:
    samples: dict[str, Sample]
    seed_s: float
    first_sync_s: float
    save_s: float  # one write's data-file save in the emulator


def seed_file(path: Path, email: str, events: int, start: dt.datetime) -> dict[str, str]:
    """A data file holding an account with ``events`` events; answers its tokens."""
    from crmcal.emulators.google import persistence
    from crmcal.emulators.google.store import GoogleState

    state = GoogleState()
    tokens = state.create_account(email)
    calendar = state.calendars[email]
    for n in range(events):
        state.insert(calendar, event_body(n, start))
    persistence.save(state, path)
    return tokens


def measure_incremental(size: int, runs: int, root: Path) -> Incremental:
    email = "seeded@bench.test"
    start = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).replace(minute=0, second=0,
                                                                      microsecond=0)  # fmt: skip
    data_file = root / "google-emulator.json"
    began = time.perf_counter()
    tokens = seed_file(data_file, email, size, start)
    emulator = Emulator(root, data_file)
    seed_s = time.perf_counter() - began
    print(f"seeded {size} events in {seed_s:.1f} s", file=sys.stderr, flush=True)
    try:
        crm = Crm(root / "incremental", emulator)
        result = asyncio.run(incremental_runs(crm, emulator, email, tokens, size, runs, start))
    finally:
        emulator.stop()
    result.seed_s = seed_s
    return result


async def incremental_runs(
    crm: Crm, emulator: Emulator, email: str, tokens: dict[str, str], size: int, runs: int,
    start: dt.datetime,
) -> Incremental:  # fmt: skip
    samples = {row: Sample() for row in INCREMENTAL_ROWS}
    try:
        await crm.setup(tokens["refresh_token"], 0, start)
        first_s, _, report = await crm.sync()
        if report.created != size or report.problems:
            raise BenchError(f"the first sync imported {report.created} of {size} events, "
                             f"problems {report.problems[:3]}")  # fmt: skip
        print(f"first full sync: {first_s:.1f} s", file=sys.stderr, flush=True)
        # An access token issued now: the in-process ones date from the seeding.
        access = emulator.account(email)["access_token"]
        service = google_client(emulator, access)
        _, sync_token = peer_list(service, email)  # the floor's starting point
        save_s = statistics.median(emulator.timed_write() for _ in range(3))
        auth = {"Authorization": f"Bearer {access}"}
        for run in range(runs):
            changed = f"bench{(run * 7919) % size:08d}"
            summary = f"Customer call, moved (run {run})"
            patched = emulator.http.patch(f"calendar/v3/calendars/{email}/events/{changed}",
                                          json={"summary": summary}, headers=auth)  # fmt: skip
            if patched.status_code != 200:
                raise BenchError(f"changing {changed} answered {patched.text[:300]}")

            before = emulator.requests()
            # The access token of the first sync is still good: crmcal keeps it.
            wall, cpu, report = await crm.sync()
            counted = Counted.between(before, emulator.requests())
            if report.updated != 1 or report.created or report.problems:
                raise BenchError(f"the incremental sync reported {report.counts()}, "
                                 f"problems {report.problems[:3]}")  # fmt: skip
            samples[INCREMENTAL_ROWS[0]].add(wall, cpu, counted)

            before = emulator.requests()
            started, cpu_began = time.perf_counter(), time.process_time()
            items, _ = peer_list(service, email)
            wall, cpu = time.perf_counter() - started, time.process_time() - cpu_began
            noticed = [i for i in items if i["id"] == changed and i["summary"] == summary]
            if len(items) != size or not noticed:
                raise BenchError(f"the full listing gave {len(items)} events, change seen: "
                                 f"{bool(noticed)}")  # fmt: skip
            counted = Counted.between(before, emulator.requests())
            samples[INCREMENTAL_ROWS[1]].add(wall, cpu, counted)

            before = emulator.requests()
            started, cpu_began = time.perf_counter(), time.process_time()
            items, sync_token = peer_list(service, email, sync_token)
            wall, cpu = time.perf_counter() - started, time.process_time() - cpu_began
            if [i["id"] for i in items] != [changed]:
                raise BenchError(f"the incremental listing gave {[i['id'] for i in items][:5]}")
            counted = Counted.between(before, emulator.requests())
            samples[INCREMENTAL_ROWS[2]].add(wall, cpu, counted)
            print(f"incremental run {run + 1}/{runs} done", file=sys.stderr, flush=True)
    finally:
        await crm.close()
    return Incremental(samples, 0.0, first_s, save_s)


# --- the report ----------------------------------------------------------------------


def print_push(events: int, samples: dict[str, Sample]) -> None:
    peers = (samples[PUSH_ROWS[2]], samples[PUSH_ROWS[3]])
    print(f"\nPush {events} new activities to an empty calendar (medians)\n")
    print("| client | wall s | events/s | client CPU s | HTTP requests | API calls "
          "| wall / one-by-one peer | requests / one-by-one peer "
          "| wall / batch peer | requests / batch peer |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in PUSH_ROWS:
        got = samples[row]
        wall, http = got.median("wall"), got.median("http")
        cells = [f"{wall:.2f}", f"{events / wall:.0f}", f"{got.median('cpu'):.2f}",
                 f"{http:.0f}", f"{got.median('calls'):.0f}"]  # fmt: skip
        if row.startswith("crmcal"):
            for peer in peers:
                cells += [ratio(wall, peer.median("wall")), ratio(http, peer.median("http"))]
        else:
            cells += ["", "", "", ""]
        print(f"| {row} | " + " | ".join(cells) + " |")
    for row in PUSH_ROWS:
        print(f"{row}: calls by kind (last run) {samples[row].kinds}")


def print_incremental(size: int, result: Incremental) -> None:
    samples = result.samples
    mine = samples[INCREMENTAL_ROWS[0]]
    print(f"\nIncremental sync, 1 event changed in a calendar of {size} (medians)\n")
    print("| client | wall s | client CPU s | HTTP requests | crmcal wall / this "
          "| crmcal CPU / this | crmcal requests / this |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in INCREMENTAL_ROWS:
        got = samples[row]
        wall, http = got.median("wall"), got.median("http")
        cells = [f"{wall:.3f}", f"{got.median('cpu'):.3f}", f"{http:.0f}"]
        if row.startswith("crmcal"):
            cells += ["", "", ""]
        else:
            cells += [ratio(mine.median("wall"), wall),
                      ratio(mine.median("cpu"), got.median("cpu")),
                      ratio(mine.median("http"), http)]  # fmt: skip
        print(f"| {row} | " + " | ".join(cells) + " |")
    for row in INCREMENTAL_ROWS:
        print(f"{row}: calls by kind (last run) {samples[row].kinds}")
    print(f"set-up: seeding + emulator start {result.seed_s:.1f} s, first full sync "
          f"{result.first_sync_s:.1f} s; one write's data-file save in the emulator "
          f"{result.save_s:.3f} s")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=5000, help="activities to push (N)")
    parser.add_argument("--calendar", type=int, default=50_000,
                        help="events in the calendar for the incremental sync (M)")  # fmt: skip
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", choices=("push", "incremental"))
    args = parser.parse_args()
    if args.events < 1 or args.calendar < args.runs or args.runs < 1:
        parser.error("--events and --runs must be at least 1, --calendar at least --runs")
    root = Path(tempfile.mkdtemp(prefix="crmcal-bench-google-"))
    try:
        if args.only != "incremental":
            print_push(args.events, measure_push(args.events, args.runs, root))
        if args.only != "push":
            print_incremental(args.calendar, measure_incremental(args.calendar, args.runs, root))
    except (BenchError, SyncFailed) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
