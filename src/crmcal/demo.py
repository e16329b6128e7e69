"""``crmcal demo``: the whole product on one machine, with no account anywhere (F25).

Radicale (a real CalDAV server, in a child process), the Google and Microsoft
emulators and crmcal run on 127.0.0.1 — crmcal on ``--port``, the others on the
three ports after it — with demo users, contacts, a week of activities and some
events on each calendar side. Everything lives in ``--data-dir`` (kept between
runs) or in a temporary directory removed at the end. Ctrl-C stops it all.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from crmcal import migrations
from crmcal.config import Settings
from crmcal.db import Database

HOST = "127.0.0.1"
PASSWORD = "demo-pass"  # noqa: S105 - the demo's published password
USERS = [("ann@crmcal.test", "Ann Archer", True), ("bob@crmcal.test", "Bob Baker", False)]
GOOGLE_ACCOUNT = "ann@example.com"
MICROSOFT_ACCOUNT = "bob@example.com"
CALDAV_USER, CALDAV_PASSWORD = "ann", "caldav-pass"
CLIENT_ID, CLIENT_SECRET = "crmcal-demo", "demo-secret"


class DemoError(Exception):
    """The demo cannot start; ``str()`` says why."""


@dataclass(frozen=True)
class Ports:
    app: int
    google: int
    microsoft: int
    caldav: int

    @classmethod
    def from_base(cls, port: int) -> Ports:
        return cls(port, port + 1, port + 2, port + 3)

    def url(self, port: int) -> str:
        return f"http://{HOST}:{port}"


def _check_free(ports: Ports) -> None:
    for port in (ports.app, ports.google, ports.microsoft, ports.caldav):
        with socket.socket() as sock:
            # As the servers will: connections of a previous run in TIME_WAIT do not count.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((HOST, port))
            except OSError:
                raise DemoError(
                    f"port {port} on {HOST} is in use: choose another with --port "
                    "(the demo uses it and the three after it)"
                ) from None


def settings_for(data_dir: Path, ports: Ports) -> Settings:
    google, microsoft = ports.url(ports.google), ports.url(ports.microsoft)
    return Settings(
        database_url=f"sqlite:///{data_dir / 'crmcal.db'}",
        base_url=ports.url(ports.app),
        poll_seconds=15,
        allow_private_networks=True,
        google_api_url=google, google_oauth_url=google,
        google_client_id=CLIENT_ID, google_client_secret=CLIENT_SECRET,
        microsoft_api_url=microsoft, microsoft_oauth_url=microsoft,
        microsoft_client_id=CLIENT_ID, microsoft_client_secret=CLIENT_SECRET,
    )  # fmt: skip


# --- Radicale ----------------------------------------------------------------------


@contextlib.contextmanager
def radicale(data_dir: Path, port: int) -> Iterator[str]:
    """A Radicale server in a child process; yields its URL."""
    try:
        import radicale as _  # noqa: F401
    except ImportError:
        raise DemoError("the demo needs Radicale: pip install 'crmcal[demo]'") from None
    root = data_dir / "radicale"
    root.mkdir(parents=True, exist_ok=True)
    users = root / "users"
    users.write_text(f"{CALDAV_USER}:{CALDAV_PASSWORD}\n")
    config = root / "config"
    config.write_text(
        f"[server]\nhosts = {HOST}:{port}\n\n[auth]\ntype = htpasswd\n"
        f"htpasswd_filename = {users}\nhtpasswd_encryption = plain\ndelay = 0\n\n"
        f"[rights]\ntype = owner_only\n\n[storage]\nfilesystem_folder = {root / 'collections'}\n\n"
        "[logging]\nlevel = warning\n"
    )
    log = (root / "radicale.log").open("ab")
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and a file we wrote
        [sys.executable, "-m", "radicale", "--config", str(config)],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://{HOST}:{port}/"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise DemoError(f"Radicale stopped at once; see {root / 'radicale.log'}")
            try:
                httpx.get(url, timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise DemoError("Radicale did not start within 30 s") from None
                time.sleep(0.1)
        yield url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        log.close()


def seed_caldav(url: str, monday: dt.date) -> None:
    """Ann's CalDAV calendar with two events, unless it exists already."""
    from caldav.davclient import DAVClient

    with DAVClient(url=url, username=CALDAV_USER, password=CALDAV_PASSWORD,
                          timeout=30) as client:  # fmt: skip
        principal = client.principal()
        if principal.calendars():
            return
        calendar = principal.make_calendar(name="Ann's CalDAV calendar", cal_id="work")
        principal.make_calendar(name="Holidays (shared)", cal_id="holidays")
        for uid, summary, day, hour in (
            ("demo-gym", "Gym", 1, 7),
            ("demo-dentist", "Dentist", 3, 16),
        ):
            start = dt.datetime.combine(monday + dt.timedelta(days=day), dt.time(hour), dt.UTC)
            stamp = "%Y%m%dT%H%M%SZ"
            calendar.save_event(
                "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//crmcal//demo//EN\r\n"
                f"BEGIN:VEVENT\r\nUID:{uid}\r\nDTSTAMP:{start.strftime(stamp)}\r\n"
                f"DTSTART:{start.strftime(stamp)}\r\n"
                f"DTEND:{(start + dt.timedelta(hours=1)).strftime(stamp)}\r\n"
                f"SUMMARY:{summary}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
            )


# --- the emulators -------------------------------------------------------------------


async def seed_google(url: str, monday: dt.date) -> None:
    """Ann's Google account with a few events in her primary calendar."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        tokens = (await client.post("/_emulator/accounts", json={"email": GOOGLE_ACCOUNT})).json()
        auth = {"Authorization": f"Bearer {tokens['access_token']}"}
        for summary, day, hour in (("Lunch with Maria", 0, 12), ("Flight to Vienna", 4, 8)):
            start = dt.datetime.combine(monday + dt.timedelta(days=day), dt.time(hour), dt.UTC)
            end = start + dt.timedelta(hours=2)
            body = {"summary": summary, "start": {"dateTime": start.isoformat()},
                    "end": {"dateTime": end.isoformat()}}  # fmt: skip
            await client.post(f"/calendar/v3/calendars/{GOOGLE_ACCOUNT}/events", json=body,
                              headers=auth)  # fmt: skip


async def seed_microsoft(url: str, monday: dt.date) -> None:
    """Bob's Outlook mailbox with a few events in his calendar."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        tokens = (await client.post("/_emulator/accounts",
                                    json={"email": MICROSOFT_ACCOUNT})).json()  # fmt: skip
        auth = {"Authorization": f"Bearer {tokens['access_token']}"}
        for subject, day, hour in (("1:1 with Ann", 1, 9), ("Quarterly review", 2, 14)):
            start = dt.datetime.combine(monday + dt.timedelta(days=day), dt.time(hour))
            end = start + dt.timedelta(hours=1)
            body = {"subject": subject,
                    "start": {"dateTime": start.isoformat(), "timeZone": "UTC"},
                    "end": {"dateTime": end.isoformat(), "timeZone": "UTC"}}  # fmt: skip
            await client.post("/v1.0/me/events", json=body, headers=auth)


# --- the CRM -------------------------------------------------------------------------


async def seed_crm(db: Database, monday: dt.date) -> bool:
    """Users, contacts and a week of activities, on an empty database; False if not empty."""
    from crmcal.crm import activities, contacts, users
    from crmcal.crm.schemas import (
        ActivityCreate,
        DealCreate,
        OrganizationCreate,
        PersonCreate,
        UserCreate,
    )
    from crmcal.crm.tables import Deal, Organization, Person

    async with db.write() as session:
        if await users.count_users(session):
            return False
        people = []
        for email, name, admin in USERS:
            user, _token = await users.create_user(
                session, UserCreate(email=email, name=name, is_admin=admin, password=PASSWORD)
            )
            people.append(user)
        ann, bob = people
        acme = await contacts.create(session, Organization, OrganizationCreate(name="ACME Corp"))
        globex = await contacts.create(session, Organization,
                                       OrganizationCreate(name="Globex"))  # fmt: skip
        maria = await contacts.create(session, Person, PersonCreate(
            name="Maria Lopez", email="maria@acme.example", organization_id=acme.id))  # fmt: skip
        hank = await contacts.create(session, Person, PersonCreate(
            name="Hank Scorpio", email="hank@globex.example",
            organization_id=globex.id))  # fmt: skip
        deal = await contacts.create(session, Deal, DealCreate(
            title="ACME rollout", value="12000", currency="EUR", owner_id=ann.id,
            person_id=maria.id, organization_id=acme.id))  # fmt: skip
        week = [
            (ann, "call", "Call Maria about the rollout", 0, 9, {"person_id": maria.id,
                                                                 "deal_id": deal.id}),
            (ann, "meeting", "ACME kick-off", 1, 10, {"location": "ACME, room 4",
             "participants": [{"email": "maria@acme.example", "name": "Maria Lopez"}],
             "deal_id": deal.id, "organization_id": acme.id}),
            (ann, "task", "Send the offer", 2, 15, {"deal_id": deal.id}),
            (ann, "lunch", "Lunch with Hank", 3, 12, {"person_id": hank.id}),
            (ann, "deadline", "Offer expires", 4, 17, {"deal_id": deal.id}),
            (bob, "meeting", "Globex demo", 1, 14, {"organization_id": globex.id}),
            (bob, "call", "Call Hank", 2, 11, {"person_id": hank.id}),
            (bob, "meeting", "Doctor's appointment", 3, 8, {"visibility": "owner"}),
        ]  # fmt: skip
        for owner, kind, subject, day, hour, extra in week:
            start = dt.datetime.combine(monday + dt.timedelta(days=day), dt.time(hour), dt.UTC)
            data = ActivityCreate(type=kind, subject=subject, start=start.isoformat(),
                                  end=(start + dt.timedelta(hours=1)).isoformat(),
                                  **extra)  # fmt: skip
            await activities.create_activity(session, owner, data, origin="demo")
    return True


# --- running it all ------------------------------------------------------------------


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signals to the demo, which stops them all at once."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _server(app: Any, port: int) -> _Server:
    return _Server(uvicorn.Config(app, host=HOST, port=port, log_level="warning",
                                  lifespan="on"))  # fmt: skip


async def api_token(db: Database) -> str:
    """A new API token for the first demo user (an admin), for trying the REST API."""
    from crmcal.crm import users

    async with db.write() as session:
        return await users.issue_token(session, await users.user_by_email(session, USERS[0][0]))


def banner(ports: Ports, caldav_url: str, data_dir: Path, kept: bool, token: str) -> str:
    app = ports.url(ports.app)
    lines = [
        "",
        "crmcal demo is running.",
        "",
        f"  crmcal              {app}/  (API docs: {app}/docs)",
        "  Sign in as          " + "  or  ".join(f"{e} / {PASSWORD}" for e, _n, _a in USERS),
        f"  API token ({USERS[0][0]}): {token}",
        "",
        f"  Google emulator     {ports.url(ports.google)}/  account {GOOGLE_ACCOUNT}",
        f"  Microsoft emulator  {ports.url(ports.microsoft)}/  account {MICROSOFT_ACCOUNT}",
        f"  CalDAV (Radicale)   {caldav_url}  user {CALDAV_USER}  password {CALDAV_PASSWORD}",
        "",
        "  In crmcal: Calendar sync > Add new account > Google, pick "
        f"{GOOGLE_ACCOUNT}, then Start sync.",
        f"  Data: {data_dir}" + ("" if kept else " (removed on exit; keep it with --data-dir)"),
        "",
        "Press Ctrl-C to stop.",
    ]
    return "\n".join(lines)


async def run(port: int, data_dir: Path | None, printer: Any = print) -> None:
    """Start everything, print where it is, and run until SIGINT or SIGTERM."""
    from crmcal.emulators.google import GoogleState
    from crmcal.emulators.google import create_app as google_app
    from crmcal.emulators.microsoft import create_app as microsoft_app
    from crmcal.web.app import create_app

    ports = Ports.from_base(port)
    _check_free(ports)
    kept = data_dir is not None
    root = data_dir or Path(tempfile.mkdtemp(prefix="crmcal-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    today = dt.datetime.now(dt.UTC).date()
    monday = today - dt.timedelta(days=today.weekday())
    settings = settings_for(root, ports)
    try:
        migrations.upgrade(settings.database_url)
        google_state = GoogleState()
        google = google_app(google_state, data_file=root / "google-emulator.json")
        new_google = not google_state.accounts
        servers = [
            _server(google, ports.google),
            _server(microsoft_app(), ports.microsoft),
        ]
        with radicale(root, ports.caldav) as caldav_url:
            await asyncio.to_thread(seed_caldav, caldav_url, monday)
            db = Database.for_settings(settings)
            try:
                await seed_crm(db, monday)
                token = await api_token(db)
            finally:
                await db.dispose()
            tasks = [asyncio.create_task(s.serve()) for s in servers]
            while not all(s.started for s in servers):
                if any(t.done() for t in tasks):
                    raise DemoError("an emulator could not start")
                await asyncio.sleep(0.05)
            if new_google:
                await seed_google(ports.url(ports.google), monday)
            await seed_microsoft(ports.url(ports.microsoft), monday)
            app_server = _server(create_app(settings), ports.app)
            servers.append(app_server)
            tasks.append(asyncio.create_task(app_server.serve()))
            while not app_server.started:
                if tasks[-1].done():
                    raise DemoError("crmcal could not start")
                await asyncio.sleep(0.05)
            printer(banner(ports, caldav_url, root, kept, token))
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, stop.set)
            try:
                stopped = asyncio.ensure_future(stop.wait())
                await asyncio.wait([*tasks, stopped], return_when=asyncio.FIRST_COMPLETED)
                stopped.cancel()
            finally:
                for signum in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(signum)
                # crmcal first, so that no sync talks to an emulator that is gone.
                for server in reversed(servers):
                    server.should_exit = True
                    await asyncio.gather(tasks[servers.index(server)], return_exceptions=True)
                printer("crmcal demo stopped.")
    finally:
        if not kept:
            shutil.rmtree(root, ignore_errors=True)


def main(port: int, data_dir: Path | None) -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    asyncio.run(run(port, data_dir))
