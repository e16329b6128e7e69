"""Recurring series: crmcal against each provider's own client, in the same run.

    .venv/bin/python -m bench.series_sync [--series 50] [--providers caldav google microsoft]

For Radicale (a separate process, its request log counted) and the Google and
Microsoft emulators (``crmcal emulator ...``, counted by ``/_emulator/requests``):

* import: N recurring series (daily and weekly, every third with one occurrence
  cancelled, every fourth with one occurrence moved and retitled) are written
  into an empty calendar as another client would, untimed. Timed are crmcal's
  connect + first sync into a fresh SQLite CRM (through the REST API, in this
  process) and the same reads done directly with the provider's client: for
  CalDAV the ``caldav`` library fetching every event of the calendar and
  parsing it; for Google ``events.list`` (``singleEvents=false``) and then
  ``instances`` of every series; for Graph the series masters and then
  ``/calendarView`` over the series' span (plain httpx, as a direct client).
* one occurrence: a daily series of five years made in the CRM and synced
  (untimed); then one occurrence retitled in the CRM and synced, against the
  same edit made directly: CalDAV GET + PUT of the resource with a
  RECURRENCE-ID override (the ``caldav`` library), Google a lookup of the
  instance + PATCH, Graph ``/instances`` over that day + PATCH.

It prints one table of medians with the ratios crmcal / peer (below 1 means crmcal
is faster, or sends fewer requests). "Requests" are API calls, each part of a
batch request counted as one (what the service's quotas count); "HTTP" are the
HTTP requests crmcal sent (a batch request is one: what its latency pays), read
from its own ``crmcal_provider_requests`` counter; the peers send no batches.
Nothing here runs in the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from fastapi.testclient import TestClient

# `python bench/<script>.py` puts bench/ itself first on the path; the checkout
# above it is where `bench.*` comes from (`python -m bench.<script>` needs no help).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.benchkit import BenchError, free_port, ratio
from crmcal import metrics, migrations
from crmcal.config import Settings
from crmcal.crm.schemas import UserCreate
from crmcal.crm.users import create_user
from crmcal.db import Database
from crmcal.web.app import create_app

BIN = Path(sys.executable).parent
BERLIN = ZoneInfo("Europe/Berlin")
V1 = "/api/v1"
TIMEOUT = 600.0


# --- the series ----------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """One recurring series as another client writes it."""

    n: int
    start: dt.datetime  # Europe/Berlin
    daily: bool
    count: int
    cancelled: dt.datetime | None  # an occurrence's original start
    moved: dt.datetime | None  # an occurrence moved 30 minutes later and retitled

    @property
    def end(self) -> dt.datetime:
        return self.start + dt.timedelta(minutes=45)

    @property
    def rrule(self) -> str:
        return f"FREQ={'DAILY' if self.daily else 'WEEKLY'};COUNT={self.count}"

    def occurrence(self, k: int) -> dt.datetime:
        step = dt.timedelta(days=1 if self.daily else 7)
        # Wall-clock steps in the zone: 09:00 stays 09:00 across a switch.
        naive = self.start.replace(tzinfo=None) + k * step
        return naive.replace(tzinfo=BERLIN)


def specs(count: int) -> list[Spec]:
    today = dt.datetime.now(BERLIN).date()
    monday = today + dt.timedelta(days=7 - today.weekday())
    made = []
    for n in range(count):
        day = monday + dt.timedelta(days=n % 28)
        start = dt.datetime.combine(day, dt.time(7, 0), BERLIN) + dt.timedelta(
            minutes=15 * (n % 40)
        )
        daily = n % 2 == 0
        spec = Spec(n, start, daily, 15 if daily else 10, None, None)
        made.append(
            Spec(n, start, daily, spec.count,
                 spec.occurrence(3) if n % 3 == 0 else None,
                 spec.occurrence(2) if n % 4 == 0 else None)
        )  # fmt: skip
    return made


def occurrences_total(series: list[Spec]) -> int:
    return sum(s.count - (s.cancelled is not None) for s in series)


def utc_stamp(moment: dt.datetime) -> str:
    return f"{moment.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}"


def local_stamp(moment: dt.datetime) -> str:
    return f"{moment:%Y%m%dT%H%M%S}"


def ics(spec: Spec) -> str:
    uid = f"series-{spec.n:05d}@bench.test"
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//bench//series//EN", "BEGIN:VEVENT",
             f"UID:{uid}", "DTSTAMP:20260101T000000Z",
             f"DTSTART;TZID=Europe/Berlin:{local_stamp(spec.start)}",
             f"DTEND;TZID=Europe/Berlin:{local_stamp(spec.end)}",
             f"SUMMARY:Series {spec.n}", f"RRULE:{spec.rrule}"]  # fmt: skip
    if spec.cancelled:
        lines.append(f"EXDATE;TZID=Europe/Berlin:{local_stamp(spec.cancelled)}")
    lines.append("END:VEVENT")
    if spec.moved:
        later = spec.moved + dt.timedelta(minutes=30)
        lines += ["BEGIN:VEVENT", f"UID:{uid}", "DTSTAMP:20260101T000000Z",
                  f"RECURRENCE-ID;TZID=Europe/Berlin:{local_stamp(spec.moved)}",
                  f"DTSTART;TZID=Europe/Berlin:{local_stamp(later)}",
                  f"DTEND;TZID=Europe/Berlin:{local_stamp(later + dt.timedelta(minutes=45))}",
                  f"SUMMARY:Series {spec.n} (moved)", "END:VEVENT"]  # fmt: skip
    lines.append("END:VCALENDAR")
    return "\r\n".join(lines) + "\r\n"


def google_time(moment: dt.datetime) -> dict[str, str]:
    return {"dateTime": moment.isoformat(), "timeZone": "Europe/Berlin"}


def graph_time(moment: dt.datetime) -> dict[str, str]:
    return {"dateTime": moment.replace(tzinfo=None).isoformat(), "timeZone": "Europe/Berlin"}


GRAPH_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def graph_recurrence(spec: Spec) -> dict[str, Any]:
    pattern: dict[str, Any] = {"type": "daily", "interval": 1}
    if not spec.daily:
        pattern = {"type": "weekly", "interval": 1,
                   "daysOfWeek": [GRAPH_DAYS[spec.start.weekday()]]}  # fmt: skip
    return {"pattern": pattern, "range": {"type": "numbered", "numberOfOccurrences": spec.count,
                                          "startDate": spec.start.date().isoformat()}}  # fmt: skip


# --- the servers ---------------------------------------------------------------------


class Server:
    """A server process on a free port, its counted requests and how to reach it."""

    kind = ""
    proc: subprocess.Popen[bytes]
    url: str

    def start(self, argv: list[str], log: Path, ready: Callable[[], bool]) -> None:
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.kind} exited at start-up:\n{self.tail()}")
            try:
                if ready():
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise BenchError(f"{self.kind} did not answer:\n{self.tail()}")
            time.sleep(0.2)

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])

    def requests(self) -> int:
        raise NotImplementedError

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Radicale(Server):
    kind = "caldav"
    user, password = "bench", "x"

    def __init__(self, root: Path) -> None:
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        config = root / "radicale.conf"
        # Level info: Radicale logs one line per request, which is how they are counted.
        config.write_text(
            f"[server]\nhosts = 127.0.0.1:{port}\n[auth]\ntype = none\n"
            f"[storage]\nfilesystem_folder = {root / 'collections'}\n[logging]\nlevel = info\n"
        )
        self.http = httpx.Client(base_url=self.base, auth=(self.user, self.password),
                                 timeout=TIMEOUT)  # fmt: skip
        argv = [str(BIN / "python"), "-m", "radicale", "--config", str(config)]
        self.start(argv, root / "radicale.log",
                   lambda: self.http.request("OPTIONS", "/").status_code < 500)  # fmt: skip
        self.calendars = 0

    def new_calendar(self) -> str:
        self.calendars += 1
        path = f"/{self.user}/calendar-{self.calendars}/"
        made = self.http.request("MKCALENDAR", path)
        if made.status_code != 201:
            raise BenchError(f"MKCALENDAR answered {made.status_code}: {made.text[:200]}")
        return self.base + path

    def requests(self) -> int:
        return sum(" request for " in line for line in self.log.read_text().splitlines())


class Emulator(Server):
    def __init__(self, kind: str, root: Path) -> None:
        self.kind = kind
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.http = httpx.Client(base_url=self.url, timeout=TIMEOUT)
        argv = [str(BIN / "crmcal"), "emulator", kind, "--port", str(port)]
        self.start(argv, root / f"{kind}.log",
                   lambda: self.http.get("/_emulator/requests").status_code == 200)  # fmt: skip

    def requests(self) -> int:
        """API calls served, each part of a ``$batch`` counted as one (the envelope not)."""
        answer = self.http.get("/_emulator/requests")
        answer.raise_for_status()
        return sum(int(v) for k, v in answer.json().items() if k != "batch")

    def account(self, email: str) -> dict[str, str]:
        answer = self.http.post("/_emulator/accounts", json={"email": email})
        answer.raise_for_status()
        return dict(answer.json())


def checked(answer: httpx.Response) -> Any:
    if answer.status_code >= 300:
        raise BenchError(f"{answer.request.method} {answer.request.url} answered "
                         f"{answer.status_code}: {answer.text[:300]}")  # fmt: skip
    return answer.json() if answer.content else None


# --- one calendar of one kind, as another client --------------------------------------


class Calendar:
    """An empty calendar on ``server``, written and read as the provider's own client."""

    def __init__(self, server: Server, email: str) -> None:
        self.server = server
        self.kind = server.kind
        if isinstance(server, Radicale):
            self.id = server.new_calendar()
            self.http = server.http
            self.body = {"provider": "caldav", "url": self.id, "username": server.user,
                         "password": server.password, "calendar_id": self.id}  # fmt: skip
            return
        assert isinstance(server, Emulator)
        tokens = server.account(email)
        prefix = "/calendar/v3" if self.kind == "google" else "/v1.0"
        headers = {"Authorization": f"Bearer {tokens['access_token']}"}
        if self.kind == "microsoft":
            headers["Prefer"] = 'IdType="ImmutableId", outlook.timezone="Europe/Berlin"'
        self.http = httpx.Client(base_url=server.url + prefix, headers=headers, timeout=TIMEOUT)
        self.id = email if self.kind == "google" else checked(self.http.get("/me/calendar"))["id"]
        self.body = {"provider": self.kind, "refresh_token": tokens["refresh_token"],
                     "calendar_id": self.id}  # fmt: skip

    def events_path(self, suffix: str = "") -> str:
        if self.kind == "google":
            return f"/calendars/{self.id}/events{suffix}"
        return f"/me/calendars/{self.id}/events{suffix}"

    def seed(self, spec: Spec) -> None:
        if self.kind == "caldav":
            checked(self.http.put(f"{self.id}series-{spec.n:05d}.ics", content=ics(spec),
                                  headers={"Content-Type": "text/calendar"}))  # fmt: skip
        elif self.kind == "google":
            body = {"summary": f"Series {spec.n}", "start": google_time(spec.start),
                    "end": google_time(spec.end),
                    "recurrence": [f"RRULE:{spec.rrule}"]}  # fmt: skip
            event_id = checked(self.http.post(self.events_path(), json=body))["id"]
            if spec.moved:
                later = spec.moved + dt.timedelta(minutes=30)
                change = {"summary": f"Series {spec.n} (moved)", "start": google_time(later),
                          "end": google_time(later + dt.timedelta(minutes=45))}  # fmt: skip
                path = self.events_path(f"/{event_id}_{utc_stamp(spec.moved)}")
                checked(self.http.patch(path, json=change))
            if spec.cancelled:
                path = self.events_path(f"/{event_id}_{utc_stamp(spec.cancelled)}")
                checked(self.http.delete(path))
        else:
            body = {"subject": f"Series {spec.n}", "start": graph_time(spec.start),
                    "end": graph_time(spec.end), "recurrence": graph_recurrence(spec)}  # fmt: skip
            event_id = checked(self.http.post(self.events_path(), json=body))["id"]
            if not (spec.moved or spec.cancelled):
                return
            by_start = {
                dt.datetime.fromisoformat(o["originalStart"].replace("Z", "+00:00")): o["id"]
                for o in self.graph_instances(event_id, spec.start, spec.occurrence(spec.count))
            }
            if spec.moved:
                later = spec.moved + dt.timedelta(minutes=30)
                change = {"subject": f"Series {spec.n} (moved)", "start": graph_time(later),
                          "end": graph_time(later + dt.timedelta(minutes=45))}  # fmt: skip
                checked(self.http.patch(f"/me/events/{by_start[spec.moved]}", json=change))
            if spec.cancelled:
                checked(self.http.delete(f"/me/events/{by_start[spec.cancelled]}"))

    def graph_instances(
        self, event_id: str, begin: dt.datetime, end: dt.datetime
    ) -> list[dict[str, Any]]:
        window = {"startDateTime": begin.astimezone(dt.UTC).isoformat(),
                  "endDateTime": end.astimezone(dt.UTC).isoformat()}  # fmt: skip
        return self.pages(f"/me/events/{event_id}/instances", window)

    def pages(self, path: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Every page of a Google or Graph listing."""
        items: list[dict[str, Any]] = []
        url: str | None = path
        query: dict[str, Any] | None = params
        while url:
            # A nextLink carries its query; params, even empty, would replace it.
            data = checked(self.http.get(url, params=query))
            if self.kind == "google":
                items += data.get("items", [])
                page = data.get("nextPageToken")
                query = {**params, "pageToken": page}
                url = path if page else None
            else:
                items += data.get("value", [])
                url, query = data.get("@odata.nextLink"), None
        return items

    # --- the peer's reads and edits (timed) ---

    def read_all(self, series: list[Spec]) -> int:
        """Every series with its occurrences, as a direct client reads them; how many
        occurrences it found."""
        if self.kind == "caldav":
            from caldav.davclient import DAVClient

            client = DAVClient(url=self.id, username=Radicale.user,
                                      password=Radicale.password)  # fmt: skip
            found = 0
            for item in client.calendar(url=self.id).events():
                components = item.icalendar_instance.walk("VEVENT")
                found += len(components)
            client.close()
            return found
        if self.kind == "google":
            masters = self.pages(self.events_path(), {"singleEvents": "false", "maxResults": 2500})
            found = 0
            for master in masters:
                if master.get("recurrence"):
                    path = self.events_path(f"/{master['id']}/instances")
                    found += len(self.pages(path, {"maxResults": 2500}))
            return found
        masters = self.pages(self.events_path(), {"$top": 1000})
        first = min(s.start for s in series) - dt.timedelta(days=1)
        last = max(s.occurrence(s.count) for s in series) + dt.timedelta(days=1)
        window = {"startDateTime": first.astimezone(dt.UTC).isoformat(),
                  "endDateTime": last.astimezone(dt.UTC).isoformat(), "$top": 1000}  # fmt: skip
        view = self.pages(f"/me/calendars/{self.id}/calendarView", window)
        return len(view) if masters else 0

    def edit_occurrence(self, moment: dt.datetime, subject: str) -> None:
        """Retitle the occurrence of the one series in the calendar that starts at ``moment``."""
        if self.kind == "caldav":
            import icalendar
            from caldav.davclient import DAVClient

            client = DAVClient(url=self.id, username=Radicale.user,
                                      password=Radicale.password)  # fmt: skip
            (item,) = client.calendar(url=self.id).events()
            calendar = item.icalendar_instance
            master = next(c for c in calendar.walk("VEVENT") if "RECURRENCE-ID" not in c)
            override = icalendar.Event()
            for name in ("UID", "DTSTAMP"):
                override.add(name, master.decoded(name))
            length = master.decoded("DTEND") - master.decoded("DTSTART")
            override.add("RECURRENCE-ID", moment)
            override.add("DTSTART", moment)
            override.add("DTEND", moment + length)
            override.add("SUMMARY", subject)
            calendar.add_component(override)
            item.icalendar_instance = calendar
            item.save()
            client.close()
        elif self.kind == "google":
            # A client that knows the day asks for that day's instance, then patches it.
            # The listing holds the series and, apart, its overrides (crmcal's among them).
            listed = self.pages(self.events_path(), {"singleEvents": "false"})
            (master,) = [e for e in listed if e.get("recurrence")]
            after = moment + dt.timedelta(hours=1)
            window = {"timeMin": moment.astimezone(dt.UTC).isoformat(),
                      "timeMax": after.astimezone(dt.UTC).isoformat()}  # fmt: skip
            (instance,) = self.pages(self.events_path(f"/{master['id']}/instances"), window)
            checked(self.http.patch(self.events_path(f"/{instance['id']}"),
                                    json={"summary": subject}))  # fmt: skip
        else:
            (master,) = self.pages(self.events_path(), {"$top": 10})
            (instance,) = self.graph_instances(master["id"], moment,
                                               moment + dt.timedelta(hours=1))  # fmt: skip
            checked(self.http.patch(f"/me/events/{instance['id']}", json={"subject": subject}))


# --- crmcal, in this process -----------------------------------------------------------


class Crm:
    """A fresh SQLite CRM with one user, driven through its REST API."""

    def __init__(self, root: Path, emulators: dict[str, str]) -> None:
        root.mkdir(parents=True, exist_ok=True)
        google, graph = emulators.get("google", ""), emulators.get("microsoft", "")
        self.settings = Settings(
            database_url=f"sqlite:///{root / 'crm.db'}",
            secret_key="bench",  # noqa: S106  # a throwaway key for a throwaway CRM
            base_url=f"http://127.0.0.1:{free_port()}",  # push notifications go nowhere
            allow_private_networks=True,
            google_api_url=google, google_oauth_url=google,
            microsoft_api_url=graph, microsoft_oauth_url=graph,
        )  # fmt: skip
        self.token = asyncio.run(self._user())
        self.client = TestClient(create_app(self.settings, background_jobs=False))
        self.client.__enter__()
        self.client.headers["Authorization"] = f"Bearer {self.token}"
        self.connection_id = 0

    async def _user(self) -> str:
        await asyncio.to_thread(migrations.upgrade, self.settings.database_url)
        db = Database(self.settings.database_url)
        async with db.write() as session:
            _, token = await create_user(session, UserCreate(email="b@bench.test", name="B",
                                                             timezone="Europe/Berlin"))  # fmt: skip
        await db.dispose()
        return str(token)

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        answer = self.client.request(method, V1 + path, **kwargs)
        if answer.status_code >= 300:
            raise BenchError(f"{method} {path} answered {answer.status_code}: {answer.text[:300]}")
        return answer.json()

    def connect(self, body: dict[str, Any]) -> None:
        self.connection_id = int(self.call("POST", "/connections", json=body)["id"])

    def sync(self) -> dict[str, Any]:
        report = self.call("POST", f"/connections/{self.connection_id}/sync")
        if report["problems"]:
            raise BenchError(f"the sync reported problems: {report['problems'][:3]}")
        return dict(report)

    def activities(self, **params: Any) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            query = {**params, "limit": 500, **({"cursor": cursor} if cursor else {})}
            page = self.call("GET", "/activities", params=query)
            found += page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return found

    def close(self) -> None:
        self.client.__exit__(None, None, None)


# --- the measurements ------------------------------------------------------------------


@dataclass
class Row:
    wall: list[float] = field(default_factory=list)
    requests: list[int] = field(default_factory=list)
    http: list[int] = field(default_factory=list)

    def add(self, wall: float, requests: int, http: int | None = None) -> None:
        self.wall.append(wall)
        self.requests.append(requests)
        self.http.append(requests if http is None else http)

    def median(self, name: str) -> float:
        return float(statistics.median(getattr(self, name)))


def http_sent() -> int:
    """HTTP requests crmcal (in this process) has sent to calendar services so far."""
    return int(sum(sample.value for family in metrics.PROVIDER_REQUESTS.collect()
                   for sample in family.samples if sample.name.endswith("_total")))  # fmt: skip


def counted(server: Server, step: Callable[[], Any]) -> tuple[float, int, Any]:
    before = server.requests()
    started = time.perf_counter()
    result = step()
    wall = time.perf_counter() - started
    return wall, server.requests() - before, result


def counted_crmcal(server: Server, step: Callable[[], Any]) -> tuple[float, int, int, Any]:
    """``counted``, and the HTTP requests crmcal sent meanwhile."""
    before = http_sent()
    wall, requests, result = counted(server, step)
    return wall, requests, http_sent() - before, result


def measure_import(server: Server, root: Path, series: list[Spec], run: int) -> tuple[Row, Row]:
    mine, theirs = Row(), Row()
    emulators = {server.kind: server.url} if isinstance(server, Emulator) else {}
    crm = Crm(root / f"{server.kind}-import-{run}", emulators)
    try:
        calendar = Calendar(server, f"import-{run}@bench.test")
        for spec in series:
            calendar.seed(spec)

        def import_all() -> dict[str, Any]:
            crm.connect({**calendar.body, "options": {"incoming_activity_type": "meeting"}})
            return crm.sync()

        wall, requests, http, report = counted_crmcal(server, import_all)
        if report["created"] != len(series):
            raise BenchError(f"{server.kind}: the first sync created {report['created']} "
                             f"of {len(series)} series")  # fmt: skip
        imported = len(crm.activities())
        if imported != occurrences_total(series):
            raise BenchError(f"{server.kind}: {imported} occurrences in the CRM, "
                             f"{occurrences_total(series)} in the calendar")  # fmt: skip
        mine.add(wall, requests, http)
        wall, requests, found = counted(server, lambda: calendar.read_all(series))
        # CalDAV: one VEVENT per series and per override; the others: every occurrence.
        expected = (len(series) + sum(s.moved is not None for s in series)
                    if server.kind == "caldav" else occurrences_total(series))  # fmt: skip
        if found != expected:
            raise BenchError(f"{server.kind}: the peer read {found} items, not {expected}")
        theirs.add(wall, requests)
    finally:
        crm.close()
    return mine, theirs


def measure_edit(server: Server, root: Path, run: int) -> tuple[Row, Row]:
    mine, theirs = Row(), Row()
    emulators = {server.kind: server.url} if isinstance(server, Emulator) else {}
    crm = Crm(root / f"{server.kind}-edit-{run}", emulators)
    try:
        calendar = Calendar(server, f"edit-{run}@bench.test")
        crm.connect(calendar.body)
        today = dt.datetime.now(BERLIN).date()
        start = dt.datetime.combine(today + dt.timedelta(days=1), dt.time(9), BERLIN)
        first = crm.call("POST", "/activities", json={
            "type": "meeting", "subject": "Daily standup", "timezone": "Europe/Berlin",
            "start": start.isoformat(), "end": (start + dt.timedelta(minutes=15)).isoformat(),
            # Five years by its end (Outlook holds no COUNT above 999).
            "recurrence": f"FREQ=DAILY;UNTIL={start.year + 5}{start:%m%d}T235959Z",
        })  # fmt: skip
        if crm.sync()["created"] != 1:
            raise BenchError(f"{server.kind}: the series was not written as one event")
        crm.sync()  # Graph's delta brings the new series' occurrences once: not counted
        listed = crm.activities(series_id=first["series_id"])
        if len(listed) < 300:
            raise BenchError(f"{server.kind}: only {len(listed)} occurrences in the CRM")
        crm.call("PATCH", f"/activities/{listed[100]['id']}",
                 json={"subject": "Standup with the board"})  # fmt: skip
        wall, requests, http, report = counted_crmcal(server, crm.sync)
        if (report["updated"], report["created"], report["deleted"]) != (1, 0, 0):
            raise BenchError(f"{server.kind}: the edit's sync reported {report}")
        mine.add(wall, requests, http)
        moment = dt.datetime.fromisoformat(str(listed[200]["original_start"])).astimezone(BERLIN)
        wall, requests, _ = counted(
            server, lambda: calendar.edit_occurrence(moment, "Standup (offsite)")
        )
        theirs.add(wall, requests)
    finally:
        crm.close()
    return mine, theirs


PEERS = {
    "caldav": "caldav library (Radicale)",
    "google": "httpx, events.list + instances",
    "microsoft": "httpx, events + calendarView",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", type=int, default=50, help="series to import (N)")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--providers", nargs="+", default=list(PEERS), choices=list(PEERS))
    args = parser.parse_args()
    series = specs(args.series)
    root = Path(tempfile.mkdtemp(prefix="crmcal-bench-series-"))
    rows: list[tuple[str, str, Row, Row]] = []
    try:
        for kind in args.providers:
            server: Server = Radicale(root) if kind == "caldav" else Emulator(kind, root)
            try:
                imports, edits = (Row(), Row()), (Row(), Row())
                for run in range(args.runs):
                    for into, got in ((imports, measure_import(server, root, series, run)),
                                      (edits, measure_edit(server, root, run))):  # fmt: skip
                        for row, new in zip(into, got, strict=True):
                            row.add(new.wall[0], new.requests[0], new.http[0])
                    print(f"{kind} run {run + 1}/{args.runs} done", file=sys.stderr, flush=True)
                rows.append((kind, f"import {args.series} series", *imports))
                rows.append((kind, "edit 1 occurrence of a 5-year daily series", *edits))
            finally:
                server.stop()
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(
        f"\n{args.series} series, {occurrences_total(series)} occurrences; medians of "
        f"{args.runs} run(s); load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}\n"
    )
    print("| provider | step | crmcal s | crmcal requests | crmcal HTTP | peer | peer s "
          "| peer requests | ratio time | ratio requests | ratio HTTP |")  # fmt: skip
    print("|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|")
    for kind, step, mine, theirs in rows:
        print(f"| {kind} | {step} | {mine.median('wall'):.3f} | {mine.median('requests'):.0f} "
              f"| {mine.median('http'):.0f} "
              f"| {PEERS[kind]} | {theirs.median('wall'):.3f} | {theirs.median('requests'):.0f} "
              f"| {ratio(mine.median('wall'), theirs.median('wall'))} "
              f"| {ratio(mine.median('requests'), theirs.median('requests'))} "
              f"| {ratio(mine.median('http'), theirs.median('http'))} |")  # fmt: skip


if __name__ == "__main__":
    main()
