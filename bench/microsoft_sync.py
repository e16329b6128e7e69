#!/usr/bin/env python3
"""crmcal against Microsoft's own Python SDK on the Microsoft Graph emulator.

    .venv/bin/pip install -e '.[test,bench]'
    .venv/bin/python bench/microsoft_sync.py [--events 5000] [--calendar 50000] [--runs 3]

The emulator runs as a separate process on a free 127.0.0.1 port and is stopped
at the end, also on error: ``crmcal emulator microsoft`` for the pushes, and
for the incremental sync this script itself (``--serve-seeded``), which builds a
``MicrosoftState``, creates M events through its own ``Events.create`` and
serves it with uvicorn (the emulator keeps no data file). crmcal runs "in
server": the sync is timed inside this process, as the long-running server
spends it, with the CPU time this process used (the emulator's is not in it).
Request counts are differences of the emulator's ``GET /_emulator/requests``
taken before and after each measured step. Two measurements:

* push: N new activities to an empty calendar. crmcal (a fresh SQLite CRM,
  one user, N calls, a Microsoft connection) runs one sync, batched as it ships
  (``$batch`` requests of 20 creates), then again with ``create_many`` hidden
  from the engine (one ``POST .../events`` per event). The peer is msgraph-sdk's
  ``GraphServiceClient`` creating the same N events one by one, then, when
  msgraph-core's batch classes import, in ``$batch`` requests of 20.
* incremental: M events, one untimed full sync, then one event changed by
  another client; timed are crmcal's incremental sync, the SDK listing the
  whole calendar view (what a client without delta does to notice the change)
  and the SDK following the deltaLink of its previous delta round (the floor).

It prints medians and the ratios crmcal / peer (below 1 means crmcal is faster,
or sends fewer requests). At M = 50,000 the SDK's full listing alone takes
minutes a run on two cores; bench/RESULTS.md was made with ``--calendar 10000``.
Nothing here runs in the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

# `python bench/<script>.py` puts bench/ itself first on the path; the checkout
# above it is where `bench.*` comes from (`python -m bench.<script>` needs no help).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.benchkit import (
    BenchError,
    Counted,
    OneByOne,
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
from crmcal.model import CalendarEvent
from crmcal.providers import microsoft_events as codec
from crmcal.sync.engine import SyncFailed
from crmcal.sync.report import SyncReport
from crmcal.sync.runner import open_provider, run_sync
from crmcal.sync.tables import Connection
from crmcal.vault import Vault, vault_for

BIN = Path(sys.executable).parent
CLIENT_BATCH = 20  # Graph's most requests in one $batch, what crmcal sends too
PAGE = 1000  # the largest page Graph (and the emulator) serves, what the peer asks for
SEEDED = "seeded@bench.test"
WINDOW_DAYS = 1800  # the peer's calendar view: under Graph's 1,825 days, every event inside


# --- the emulator --------------------------------------------------------------------


class Emulator:
    """The Graph emulator as a separate process, with its admin API: ``crmcal emulator
    microsoft``, or with ``seed`` this script serving a mailbox of that many events."""

    def __init__(self, root: Path, seed: dict[str, Any] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = root / f"emulator-{self.port}.log"
        self.seeded: dict[str, Any] = {}
        if seed is None:
            argv = [str(BIN / "crmcal"), "emulator", "microsoft", "--port", str(self.port)]
        else:
            out = root / f"seeded-{self.port}.json"
            argv = [sys.executable, __file__, "--serve-seeded", str(seed["size"]),
                    "--port", str(self.port), "--seed-out", str(out),
                    "--seed-start", seed["start"].isoformat(),
                    "--seed-changes", ",".join(map(str, seed["changes"]))]  # fmt: skip
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        self.http = httpx.Client(base_url=self.url, timeout=600)
        self._wait_ready()
        if seed is not None:
            self.seeded = json.loads(out.read_text())

    def _wait_ready(self) -> None:
        # Seeding a large mailbox takes a while before the port opens.
        deadline = time.monotonic() + 600
        while True:
            if self.proc.poll() is not None:
                raise BenchError(f"the emulator exited at start-up:\n{self.log_tail()}")
            try:
                if self.http.get("/_emulator/requests").status_code == 200:
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
        answer = self.http.get("/_emulator/requests")
        if answer.status_code != 200:
            raise BenchError(f"GET /_emulator/requests answered {answer.status_code}")
        return {str(k): int(v) for k, v in answer.json().items()}

    def account(self, email: str) -> dict[str, str]:
        """Tokens for the account (made if new): new ones for an existing account."""
        answer = self.http.post("/_emulator/accounts", json={"email": email})
        if answer.status_code != 200:
            raise BenchError(f"creating the account {email} answered {answer.text}")
        return dict(answer.json())

    def graph(self, token: str) -> httpx.Client:
        """Plain Graph calls with a token, for set-up and checks (not measured)."""
        return httpx.Client(base_url=self.url + "/v1.0", timeout=600,
                            headers={"Authorization": f"Bearer {token}"})  # fmt: skip

    def default_calendar(self, token: str) -> str:
        with self.graph(token) as graph:
            answer = graph.get("/me/calendar")
        if answer.status_code != 200:
            raise BenchError(f"GET /me/calendar answered {answer.text[:300]}")
        return str(answer.json()["id"])

    def count_events(self, token: str, calendar_id: str) -> int:
        """Events in a calendar, every page."""
        total = 0
        with self.graph(token) as graph:
            url: str | None = f"/me/calendars/{calendar_id}/events"
            params: dict[str, Any] | None = {"$select": "id", "$top": PAGE}
            while url:
                answer = graph.get(url, params=params)
                if answer.status_code != 200:
                    raise BenchError(f"listing {calendar_id} answered {answer.text[:300]}")
                data = answer.json()
                total += len(data["value"])
                url, params = data.get("@odata.nextLink"), None
        return total

    def stop(self) -> None:
        self.http.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def serve_seeded(size: int, port: int, out: Path, start: dt.datetime, changes: set[int]) -> None:
    """The emulator with one mailbox of ``size`` events, made through the state's own
    operations (as ``POST /me/events`` makes them, without HTTP); what the bench needs of
    it goes to ``out`` before the port opens."""
    import uvicorn

    from crmcal.emulators.microsoft import MicrosoftState, create_app

    began = time.perf_counter()
    state = MicrosoftState()
    tokens = state.create_account(SEEDED)
    mailbox = state.mailboxes[SEEDED]
    calendar = next(c for c in mailbox.calendars.values() if c.is_default)
    ids: dict[str, str] = {}
    for n in range(size):
        entry, _ = state.events.create(mailbox, calendar, seed_body(n, start))
        if n in changes:
            ids[str(n)] = entry.immutable_id
    seeded = {"tokens": tokens, "calendar_id": calendar.id, "ids": ids,
              "seed_s": time.perf_counter() - began}  # fmt: skip
    out.write_text(json.dumps(seeded))
    uvicorn.run(create_app(state), host="127.0.0.1", port=port, log_level="warning")


class Webhook:
    """What listens at crmcal's base URL here: it answers Graph's subscription
    validation (the emulator checks ``notificationUrl`` before it makes a subscription,
    as Graph does) and takes notifications without acting on them."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # http.server's name
                token = parse_qs(urlsplit(self.path).query).get("validationToken")
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = token[0].encode() if token else b""
                self.send_response(200 if token else 202)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- crmcal, in this process ---------------------------------------------------------


class Crm:
    """A fresh SQLite CRM with one user and a Microsoft connection to the emulator, kept
    open across syncs as the long-running server keeps its database engine."""

    def __init__(self, root: Path, emulator: Emulator, webhook: Webhook) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.settings = Settings(
            database_url=f"sqlite:///{root / 'crm.db'}",
            secret_key="bench",  # noqa: S106  # a throwaway key for a throwaway CRM
            base_url=webhook.url,
            microsoft_api_url=emulator.url,
            microsoft_oauth_url=emulator.url,
            microsoft_client_id="crmcal-bench",
        )
        vault = vault_for(self.settings)
        assert vault is not None
        self.vault: Vault = vault
        self.db = Database(self.settings.database_url)
        self.connection_id = 0
        self.created: list[tuple[str, CalendarEvent]] = []  # by the last one-by-one sync

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
        # Connected through the REST API, as a user does (the mailbox is read and its
        # default calendar picked there); the app runs its own loop, in a thread.
        self.connection_id = await asyncio.to_thread(self._connect, api_token, refresh_token)

    def _connect(self, api_token: str, refresh_token: str) -> int:
        from fastapi.testclient import TestClient

        from crmcal.web.app import create_app

        app = create_app(self.settings, background_jobs=False)
        with TestClient(app) as client:
            answer = client.post(
                "/api/v1/connections",
                json={"provider": "microsoft", "refresh_token": refresh_token},
                headers={"Authorization": f"Bearer {api_token}"},
            )
        if answer.status_code != 201:
            raise BenchError(f"connecting answered {answer.status_code}: {answer.text[:300]}")
        return int(answer.json()["id"])

    async def sync(self, *, one_by_one: bool = False) -> tuple[float, float, SyncReport]:
        """One sync as the server runs it: (wall s, CPU s of this process, report)."""
        provider: OneByOne | None = None
        if one_by_one:
            async with self.db.read() as session:
                conn = await session.get(Connection, self.connection_id)
                assert conn is not None
            inner = open_provider(conn, self.vault, self.settings, self.db)
            provider = without_batch_creates(inner)
        started, cpu = time.perf_counter(), time.process_time()
        try:
            report = await run_sync(self.db, self.vault, self.settings, self.connection_id,
                                    provider=provider)  # fmt: skip
        finally:
            wall, cpu = time.perf_counter() - started, time.process_time() - cpu
            if provider is not None:
                await provider.close()
                self.created = provider.created
        return wall, cpu, report

    async def close(self) -> None:
        await self.db.dispose()


def seed_body(n: int, start: dt.datetime) -> dict[str, Any]:
    """A seeded event, like the activities above as another client wrote it to Graph
    (every half hour, so that 50,000 fit well inside a calendar view's 1,825 days)."""
    begin = (start + dt.timedelta(minutes=30 * n)).replace(tzinfo=None)  # Graph: wall clock
    zone = "Europe/Berlin"
    return {
        "subject": f"Customer call {n}",
        "start": {"dateTime": begin.isoformat(), "timeZone": zone},
        "end": {"dateTime": (begin + dt.timedelta(minutes=25)).isoformat(), "timeZone": zone},
        "location": {"displayName": f"Room {n % 9}"},
        "body": {"contentType": "text", "content": f"Agenda for call {n}"},
        "attendees": [
            {"emailAddress": {"address": f"contact{n % 40}@acme.example",
                              "name": f"Contact {n % 40}"}, "type": "required"}
        ],
    }  # fmt: skip


# --- the peer: Microsoft's own SDK ---------------------------------------------------


def graph_client(emulator: Emulator, access_token: str) -> Any:
    """msgraph-sdk's ``GraphServiceClient`` on its own request adapter (the middleware
    it ships with: retries, redirects, ``/me`` URL replacement), aimed at the emulator."""
    from kiota_abstractions.authentication import (
        AccessTokenProvider,
        AllowedHostsValidator,
        BaseBearerTokenAuthenticationProvider,
    )
    from msgraph import GraphServiceClient
    from msgraph.graph_request_adapter import GraphRequestAdapter

    class Token(AccessTokenProvider):
        def __init__(self) -> None:
            self.hosts = AllowedHostsValidator(["127.0.0.1"])

        async def get_authorization_token(self, uri: str, context: Any = None) -> str:
            return access_token

        def get_allowed_hosts_validator(self) -> AllowedHostsValidator:
            return self.hosts

    adapter = GraphRequestAdapter(BaseBearerTokenAuthenticationProvider(Token()))
    adapter.base_url = emulator.url + "/v1.0"
    return GraphServiceClient(request_adapter=adapter)


def sdk_batch_classes() -> tuple[Any, Any] | str:
    """msgraph-core's ``BatchRequestContent`` and ``BatchRequestItem``, or why not."""
    try:
        from msgraph_core.requests.batch_request_content import BatchRequestContent
        from msgraph_core.requests.batch_request_item import BatchRequestItem
    except ImportError as failure:
        return f"{failure.__class__.__name__}: {failure}"
    return BatchRequestContent, BatchRequestItem


def sdk_events(created: Sequence[tuple[str, CalendarEvent]]) -> list[Any]:
    """crmcal's creates as the SDK's ``Event`` models: the bodies crmcal posted (with
    its ``transactionId`` and extended properties), read by the SDK's own JSON reader."""
    from kiota_serialization_json.json_parse_node_factory import JsonParseNodeFactory
    from msgraph.generated.models.event import Event

    factory = JsonParseNodeFactory()
    made = []
    for key, event in created:
        body = codec.body(event, with_attendees=event.notify_attendees, key=key)
        raw = json.dumps({**body, "transactionId": key}).encode()
        node = factory.get_root_parse_node("application/json", raw)
        made.append(node.get_object_value(Event))
    return made


async def peer_create(client: Any, calendar_id: str, events: list[Any], *, batched: bool) -> None:
    calendar = client.me.calendars.by_calendar_id(calendar_id)
    if not batched:
        for event in events:
            await calendar.events.post(event)
        return
    classes = sdk_batch_classes()
    assert not isinstance(classes, str)
    content_class, item_class = classes
    failures: list[str] = []
    for first in range(0, len(events), CLIENT_BATCH):
        content = content_class()
        for event in events[first : first + CLIENT_BATCH]:
            content.add_request(item_class(calendar.events.to_post_request_information(event)))
        answer = await client.batch.post(content)
        for item_id, response in (answer.responses or {}).items():
            if response.status not in (200, 201):
                failures.append(f"{item_id}: {response.status}")
    if failures:
        raise BenchError(f"{len(failures)} batched creates failed, e.g. {failures[0]}")


async def peer_list(client: Any, calendar_id: str, start: dt.datetime) -> list[Any]:
    """Every page of the calendar view over the window: (items)."""
    from kiota_abstractions.base_request_configuration import RequestConfiguration

    view = client.me.calendars.by_calendar_id(calendar_id).calendar_view
    end = start + dt.timedelta(days=WINDOW_DAYS)
    query = view.CalendarViewRequestBuilderGetQueryParameters(
        start_date_time=utc(start),
        end_date_time=utc(end),
        top=PAGE,
    )
    answer = await view.get(RequestConfiguration(query_parameters=query))
    items = list(answer.value or [])
    while answer.odata_next_link:
        answer = await view.with_url(answer.odata_next_link).get()
        items += answer.value or []
    return items


async def peer_delta(client: Any, calendar_id: str, link: str) -> tuple[list[Any], str]:
    """Every page of a delta round from a stored deltaLink: (items, the next deltaLink)."""
    from kiota_abstractions.base_request_configuration import RequestConfiguration

    delta = client.me.calendars.by_calendar_id(calendar_id).calendar_view.delta
    config: Any = RequestConfiguration()
    config.headers.add("Prefer", f"odata.maxpagesize={PAGE}")
    items: list[Any] = []
    url = link
    while True:
        answer = await delta.with_url(url).get(config)
        items += answer.value or []
        if answer.odata_next_link:
            url = answer.odata_next_link
            continue
        if not answer.odata_delta_link:
            raise BenchError("the delta round ended without a deltaLink")
        return items, str(answer.odata_delta_link)


def utc(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def first_delta_link(emulator: Emulator, token: str, calendar_id: str, start: dt.datetime) -> str:
    """The deltaLink of a whole first delta round (set-up for the floor, not measured)."""
    end = start + dt.timedelta(days=WINDOW_DAYS)
    with emulator.graph(token) as graph:
        url = f"/me/calendars/{calendar_id}/calendarView/delta"
        params: dict[str, Any] | None = {"startDateTime": utc(start), "endDateTime": utc(end)}
        while True:
            answer = graph.get(url, params=params,
                               headers={"Prefer": f"odata.maxpagesize={PAGE}"})  # fmt: skip
            if answer.status_code != 200:
                raise BenchError(f"the first delta round answered {answer.text[:300]}")
            data = answer.json()
            if data.get("@odata.deltaLink"):
                return str(data["@odata.deltaLink"])
            url, params = data["@odata.nextLink"], None


# --- 1. pushing N new activities -----------------------------------------------------


PUSH_ROWS = ("crmcal batched", "crmcal one by one", "msgraph-sdk one by one",
             "msgraph-sdk $batch of 20")  # fmt: skip


@dataclass
class Push:
    samples: dict[str, Sample]
    batch_skipped: str | None  # why the SDK's batch was not measured


def tomorrow() -> dt.datetime:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).replace(minute=0, second=0,
                                                                     microsecond=0)  # fmt: skip


def measure_push(events: int, runs: int, root: Path, webhook: Webhook) -> Push:
    classes = sdk_batch_classes()
    skipped = classes if isinstance(classes, str) else None
    rows = PUSH_ROWS if skipped is None else PUSH_ROWS[:3]
    samples = {row: Sample() for row in rows}
    start = tomorrow()
    bodies: list[Any] = []
    for run in range(runs):
        emulator = Emulator(root)
        try:
            for one_by_one in (False, True):
                row = PUSH_ROWS[int(one_by_one)]
                email = f"crmcal-{run}-{int(one_by_one)}@bench.test"
                tokens = emulator.account(email)
                crm = Crm(root / f"push-{run}-{int(one_by_one)}", emulator, webhook)
                wall, cpu, report, counted = asyncio.run(
                    crmcal_push(crm, emulator, tokens["refresh_token"], events, start, one_by_one)
                )
                if report.created != events or report.problems:
                    raise BenchError(f"{row}: created {report.created} of {events}, "
                                     f"problems {report.problems[:3]}")  # fmt: skip
                calendar_id = emulator.default_calendar(tokens["access_token"])
                found = emulator.count_events(tokens["access_token"], calendar_id)
                if found != events:
                    raise BenchError(f"{row}: the calendar holds {found} events, not {events}")
                samples[row].add(wall, cpu, counted)
                if one_by_one and not bodies:
                    bodies = sdk_events(crm.created)
            for row in rows[2:]:
                batched = row == PUSH_ROWS[3]
                email = f"peer-{run}-{int(batched)}@bench.test"
                tokens = emulator.account(email)
                calendar_id = emulator.default_calendar(tokens["access_token"])
                client = graph_client(emulator, tokens["access_token"])
                before = emulator.requests()
                started, cpu = time.perf_counter(), time.process_time()
                asyncio.run(peer_create(client, calendar_id, bodies, batched=batched))
                wall, cpu = time.perf_counter() - started, time.process_time() - cpu
                counted = Counted.between(before, emulator.requests(),
                                          batched="events.create")  # fmt: skip
                found = emulator.count_events(tokens["access_token"], calendar_id)
                if found != events:
                    raise BenchError(f"{row}: the calendar holds {found} events, not {events}")
                samples[row].add(wall, cpu, counted)
        finally:
            emulator.stop()
        print(f"push run {run + 1}/{runs} done", file=sys.stderr, flush=True)
    return Push(samples, skipped)


async def crmcal_push(
    crm: Crm, emulator: Emulator, refresh_token: str, events: int, start: dt.datetime,
    one_by_one: bool,
) -> tuple[float, float, SyncReport, Counted]:  # fmt: skip
    try:
        await crm.setup(refresh_token, events, start)
        before = emulator.requests()
        wall, cpu, report = await crm.sync(one_by_one=one_by_one)
        return wall, cpu, report, Counted.between(before, emulator.requests(),
                                                  batched="events.create")  # fmt: skip
    finally:
        await crm.close()


# --- 2. incremental sync with one change --------------------------------------------


INCREMENTAL_ROWS = ("crmcal incremental sync", "msgraph-sdk full calendarView list",
                    "msgraph-sdk deltaLink")  # fmt: skip


@dataclass
class Incremental:
    samples: dict[str, Sample]
    seed_s: float  # seeding in the emulator's process
    start_s: float  # from launching the emulator to its answering
    first_sync_s: float
    first_sync_kinds: dict[str, int]


def measure_incremental(size: int, runs: int, root: Path, webhook: Webhook) -> Incremental:
    start = tomorrow()
    changes = [(run * 7919) % size for run in range(runs)]
    began = time.perf_counter()
    emulator = Emulator(root, {"size": size, "start": start, "changes": changes})
    start_s = time.perf_counter() - began
    seeded = emulator.seeded
    print(f"seeded {size} events in {seeded['seed_s']:.1f} s (emulator up after {start_s:.1f} s)",
          file=sys.stderr, flush=True)  # fmt: skip
    try:
        crm = Crm(root / "incremental", emulator, webhook)
        ids = [seeded["ids"][str(n)] for n in changes]
        result = asyncio.run(incremental_runs(crm, emulator, seeded, ids, size, runs))
    finally:
        emulator.stop()
    result.seed_s, result.start_s = float(seeded["seed_s"]), start_s
    return result


async def incremental_runs(
    crm: Crm, emulator: Emulator, seeded: dict[str, Any], ids: list[str], size: int, runs: int
) -> Incremental:
    samples = {row: Sample() for row in INCREMENTAL_ROWS}
    calendar_id = str(seeded["calendar_id"])
    try:
        await crm.setup(seeded["tokens"]["refresh_token"], 0, tomorrow())
        before = emulator.requests()
        first_s, _, report = await crm.sync()
        first_kinds = Counted.between(before, emulator.requests()).kinds
        if report.created != size or report.problems:
            raise BenchError(f"the first sync imported {report.created} of {size} events, "
                             f"problems {report.problems[:3]}")  # fmt: skip
        print(f"first full sync: {first_s:.1f} s {first_kinds}", file=sys.stderr, flush=True)
        # An access token issued now (the seeded one dates from the seeding).
        access = emulator.account(SEEDED)["access_token"]
        client = graph_client(emulator, access)
        window_start = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
        link = first_delta_link(emulator, access, calendar_id, window_start)
        with emulator.graph(access) as other:  # another client, changing one event
            for run in range(runs):
                changed, subject = ids[run], f"Customer call, moved (run {run})"
                patched = other.patch(f"/me/events/{changed}", json={"subject": subject})
                if patched.status_code != 200:
                    raise BenchError(f"changing {changed} answered {patched.text[:300]}")

                before = emulator.requests()
                wall, cpu, report = await crm.sync()
                counted = Counted.between(before, emulator.requests())
                if report.updated != 1 or report.created or report.problems:
                    raise BenchError(f"the incremental sync reported {report.counts()}, "
                                     f"problems {report.problems[:3]}")  # fmt: skip
                samples[INCREMENTAL_ROWS[0]].add(wall, cpu, counted)

                before = emulator.requests()
                started, cpu_began = time.perf_counter(), time.process_time()
                items = await peer_list(client, calendar_id, window_start)
                wall, cpu = time.perf_counter() - started, time.process_time() - cpu_began
                noticed = [i for i in items if i.subject == subject]
                if len(items) != size or len(noticed) != 1:
                    raise BenchError(f"the full listing gave {len(items)} events, change seen: "
                                     f"{len(noticed)}")  # fmt: skip
                counted = Counted.between(before, emulator.requests())
                samples[INCREMENTAL_ROWS[1]].add(wall, cpu, counted)

                before = emulator.requests()
                started, cpu_began = time.perf_counter(), time.process_time()
                items, link = await peer_delta(client, calendar_id, link)
                wall, cpu = time.perf_counter() - started, time.process_time() - cpu_began
                if [i.subject for i in items] != [subject]:
                    raise BenchError(f"the delta round gave {[i.subject for i in items][:5]}")
                counted = Counted.between(before, emulator.requests())
                samples[INCREMENTAL_ROWS[2]].add(wall, cpu, counted)
                print(f"incremental run {run + 1}/{runs} done", file=sys.stderr, flush=True)
    finally:
        await crm.close()
    return Incremental(samples, 0.0, 0.0, first_s, first_kinds)


# --- the report ----------------------------------------------------------------------


def print_push(events: int, push: Push) -> None:
    samples = push.samples
    peers = [samples[row] for row in PUSH_ROWS[2:] if row in samples]
    print(f"\nPush {events} new activities to an empty calendar (medians)\n")
    head = "| client | wall s | events/s | client CPU s | HTTP requests | API calls "
    head += "| wall / SDK one by one | requests / SDK one by one "
    if len(peers) > 1:
        head += "| wall / SDK batch | requests / SDK batch "
    print(head + "|")
    print("|---|" + "---:|" * (5 + 2 * len(peers)))
    for row, got in samples.items():
        wall, http = got.median("wall"), got.median("http")
        cells = [f"{wall:.2f}", f"{events / wall:.0f}", f"{got.median('cpu'):.2f}",
                 f"{http:.0f}", f"{got.median('calls'):.0f}"]  # fmt: skip
        for peer in peers:
            if row.startswith("crmcal"):
                cells += [ratio(wall, peer.median("wall")), ratio(http, peer.median("http"))]
            else:
                cells += ["", ""]
        print(f"| {row} | " + " | ".join(cells) + " |")
    for row, got in samples.items():
        print(f"{row}: calls by kind (last run) {got.kinds}")
    if push.batch_skipped:
        print(f"msgraph-sdk $batch not measured: msgraph-core's batch classes do not import "
              f"({push.batch_skipped})")  # fmt: skip


def print_incremental(size: int, result: Incremental) -> None:
    samples = result.samples
    mine = samples[INCREMENTAL_ROWS[0]]
    print(f"\nIncremental sync, 1 event changed in a calendar of {size} (medians)\n")
    print("| client | wall s | client CPU s | HTTP requests | crmcal wall / this "
          "| crmcal CPU / this | crmcal requests / this |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in INCREMENTAL_ROWS:
        got = samples[row]
        wall, cpu, http = got.median("wall"), got.median("cpu"), got.median("http")
        cells = [f"{wall:.3f}", f"{cpu:.3f}", f"{http:.0f}"]
        if row == INCREMENTAL_ROWS[0]:
            cells += ["", "", ""]
        else:
            cells += [ratio(mine.median("wall"), wall), ratio(mine.median("cpu"), cpu),
                      ratio(mine.median("http"), http)]  # fmt: skip
        print(f"| {row} | " + " | ".join(cells) + " |")
    for row in INCREMENTAL_ROWS:
        print(f"{row}: calls by kind (last run) {samples[row].kinds}")
    print(f"set-up: seeding {result.seed_s:.1f} s in the emulator's process (up after "
          f"{result.start_s:.1f} s); first full sync {result.first_sync_s:.1f} s, "
          f"calls {result.first_sync_kinds}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=5000, help="activities to push (N)")
    parser.add_argument("--calendar", type=int, default=50_000,
                        help="events in the calendar for the incremental sync (M)")  # fmt: skip
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", choices=("push", "incremental"))
    # The seeded emulator's own process (started by this script).
    parser.add_argument("--serve-seeded", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--seed-out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--seed-start", type=dt.datetime.fromisoformat, help=argparse.SUPPRESS)
    parser.add_argument("--seed-changes", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_seeded is not None:
        changes = {int(n) for n in args.seed_changes.split(",") if n}
        serve_seeded(args.serve_seeded, args.port, args.seed_out, args.seed_start, changes)
        return
    if args.events < 1 or args.calendar < args.runs or args.runs < 1:
        parser.error("--events and --runs must be at least 1, --calendar at least --runs")
    root = Path(tempfile.mkdtemp(prefix="crmcal-bench-microsoft-"))
    webhook = Webhook()
    try:
        if args.only != "incremental":
            print_push(args.events, measure_push(args.events, args.runs, root, webhook))
        if args.only != "push":
            print_incremental(
                args.calendar, measure_incremental(args.calendar, args.runs, root, webhook)
            )
    except (BenchError, SyncFailed) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    finally:
        webhook.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
