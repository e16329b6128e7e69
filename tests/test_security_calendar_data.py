"""Hostile calendar data: time-zone bombs are refused cheaply, and the server keeps
answering while a hostile server is synced."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from crmcal.config import Settings
from crmcal.providers.ical.read import parse_event
from crmcal.tls import tls
from crmcal.web.app import create_app
from tests.conftest import make_user
from tests.hostile import (
    MULTISTATUS,
    Handler,
    HostileServer,
    Request,
    reply,
    response,
    serving,
)
from tests.served import served_app, wait_for

EVENT = (
    "BEGIN:VEVENT\r\nUID:{uid}\r\nDTSTAMP:20300101T000000Z\r\n"
    "DTSTART;TZID=Bomb:20300105T100000\r\nDTEND;TZID=Bomb:20300105T110000\r\n"
    "SUMMARY:{uid}\r\nEND:VEVENT\r\n"
)


def with_zone(rules: str, uid: str = "bomb") -> str:
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//hostile//EN\r\n"
        "BEGIN:VTIMEZONE\r\nTZID:Bomb\r\n" + rules + "END:VTIMEZONE\r\n"
        + EVENT.format(uid=uid) + "END:VCALENDAR\r\n"
    )  # fmt: skip


def rule(rrule: str, start: str = "19700101T000000") -> str:
    return (
        f"BEGIN:STANDARD\r\nDTSTART:{start}\r\nTZOFFSETFROM:+0100\r\nTZOFFSETTO:+0000\r\n"
        f"RRULE:{rrule}\r\nEND:STANDARD\r\n"
    )


BOMBS = {
    "secondly": with_zone(rule("FREQ=SECONDLY")),
    "hourly": with_zone(rule("FREQ=HOURLY;INTERVAL=1")),
    "daily since year one": with_zone(rule("FREQ=DAILY", "00010101T000000")),
    "impossible with a count": with_zone(rule("FREQ=DAILY;BYMONTH=2;BYMONTHDAY=30;COUNT=3")),
    "until year 9999": with_zone(rule("FREQ=WEEKLY;UNTIL=99991231T000000Z")),
    "a thousand yearly rules": with_zone(rule("FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU") * 1000),
}
OUTLOOK = with_zone(
    rule("FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU", "16010101T030000")
    + rule("FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU", "16010101T020000").replace("STANDARD", "DAYLIGHT"),
    uid="fine",
)
UNCLOSED = (
    "BEGIN:VCALENDAR\r\nVERSION:2.0\r\n" + "BEGIN:VTIMEZONE\r\n" * 30_000 + EVENT.format(uid="x")
)


def finishes(work: Callable[[], Any], seconds: float = 120) -> Any:
    """``work()``'s result or exception, or a failure if it has not ended within a
    generous deadline (a bomb that explodes takes hours)."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(work())
        except Exception as error:  # the outcome to look at
            outcome.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, "still working: the data froze the parser"
    return outcome[0]


@pytest.mark.parametrize("name", list(BOMBS))
def test_time_zone_bombs_are_refused(name: str) -> None:
    outcome = finishes(lambda: parse_event(BOMBS[name]))
    assert isinstance(outcome, ValueError), outcome
    assert "VTIMEZONE" in str(outcome)


def test_thousands_of_unclosed_vtimezones_cost_one_pass() -> None:
    outcome = finishes(lambda: parse_event(UNCLOSED))
    assert isinstance(outcome, ValueError)
    assert "never closed" in str(outcome)


def test_a_real_custom_zone_still_reads() -> None:
    event = parse_event(OUTLOOK)
    assert event is not None
    assert isinstance(event.start, dt.datetime)
    assert event.start.utcoffset() is not None


def test_healthz_answers_while_a_hostile_server_is_synced(db_url: str) -> None:
    """The sync waits on the hostile server's answer while /healthz is asked (so the
    sync certainly runs), then reads the bombs: they are reported, the rest imported."""
    user_id, token = make_user(db_url, email="hostile@crm.test", name="H")
    release = threading.Event()
    contents = [*BOMBS.values(), UNCLOSED, OUTLOOK]

    def root(request: Request, handler: BaseHTTPRequestHandler) -> None:
        props = (
            "<D:current-user-principal><D:href>/p/</D:href></D:current-user-principal>"
            "<C:calendar-home-set><D:href>/home/</D:href></C:calendar-home-set>"
        )
        reply(handler, 207, MULTISTATUS.format(response(request.path, props)))

    def home(request: Request, handler: BaseHTTPRequestHandler) -> None:
        calendar = "<D:resourcetype><D:collection/><C:calendar/></D:resourcetype>"
        reply(handler, 207, MULTISTATUS.format(response("/home/cal/", calendar)))

    def calendar(request: Request, handler: BaseHTTPRequestHandler) -> None:
        if request.method == "PROPFIND":
            token_prop = "<D:sync-token>t1</D:sync-token>"
            return reply(handler, 207, MULTISTATUS.format(response("/home/cal/", token_prop)))
        release.wait(120)
        members = "".join(
            response(
                f"/home/cal/{n}.ics",
                f'<D:getetag>"{n}"</D:getetag><C:calendar-data>{text.replace("&", "&amp;")}'
                "</C:calendar-data>",
            )
            for n, text in enumerate(contents)
        )
        reply(handler, 207, MULTISTATUS.format(members + "<D:sync-token>t1</D:sync-token>"))

    routes: dict[str, Handler] = {"/": root, "/p/": root, "/home/": home, "/home/cal/": calendar}
    settings = Settings(database_url=db_url, secret_key="k" * 43, allow_private_networks=True)
    app = create_app(settings, background_jobs=False)
    with serving(HostileServer(routes=routes)) as hostile, served_app(app) as base:
        auth = {"Authorization": f"Bearer {token}"}
        with httpx.Client(verify=tls(), base_url=base, headers=auth, timeout=60) as client:
            made = client.post("/api/v1/connections", json={
                "provider": "caldav", "url": hostile.url + "/", "username": "u",
                "password": "p", "sync_type": "calendar_to_crm",
            })  # fmt: skip
            assert made.status_code == 201, made.text
            outcome: list[httpx.Response] = []
            syncing = threading.Thread(
                target=lambda: outcome.append(
                    client.post(f"/api/v1/connections/{made.json()['id']}/sync", timeout=300)
                ),
                daemon=True,
            )
            syncing.start()
            wait_for(lambda: any(r.method == "REPORT" for r in hostile.requests))
            health = client.get("/healthz")
            assert health.status_code == 200
            assert not outcome  # the sync was running all along
            release.set()
            syncing.join(300)
            assert outcome, "the sync froze"
            summary = outcome[0].json()
            assert outcome[0].status_code == 200, summary
            assert summary["created"] == 1
            unreadable = [p for p in summary["problems"] if "unreadable" in p["reason"]]
            assert len(unreadable) == len(BOMBS) + 1, summary
            assert client.get("/healthz").status_code == 200
    assert user_id


def test_an_unreadable_item_is_fetched_again_only_when_its_etag_changes(db_url: str) -> None:
    etag = ['"1"']

    def root(request: Request, handler: BaseHTTPRequestHandler) -> None:
        props = (
            "<D:current-user-principal><D:href>/p/</D:href></D:current-user-principal>"
            "<C:calendar-home-set><D:href>/home/</D:href></C:calendar-home-set>"
        )
        reply(handler, 207, MULTISTATUS.format(response(request.path, props)))

    def home(request: Request, handler: BaseHTTPRequestHandler) -> None:
        calendar = "<D:resourcetype><D:collection/><C:calendar/></D:resourcetype>"
        reply(handler, 207, MULTISTATUS.format(response("/home/cal/", calendar)))

    def calendar(request: Request, handler: BaseHTTPRequestHandler) -> None:
        if request.method == "PROPFIND":  # no sync-token: no one-query first import
            return reply(handler, 207, MULTISTATUS.format(response("/home/cal/", "")))
        if b"calendar-multiget" in request.body:
            data = "<C:calendar-data>BEGIN:VCALENDAR\nBROKEN</C:calendar-data>"
            member = response("/home/cal/x.ics", f"<D:getetag>{etag[0]}</D:getetag>{data}")
            return reply(handler, 207, MULTISTATUS.format(member))
        member = response("/home/cal/x.ics", f"<D:getetag>{etag[0]}</D:getetag>")
        reply(handler, 207, MULTISTATUS.format(member + "<D:sync-token>t1</D:sync-token>"))

    routes: dict[str, Handler] = {"/": root, "/p/": root, "/home/": home, "/home/cal/": calendar}
    settings = Settings(database_url=db_url, secret_key="k" * 43, allow_private_networks=True)
    user_id, token = make_user(db_url, email="memo@crm.test", name="M")
    with serving(HostileServer(routes=routes)) as hostile:
        app = create_app(settings, background_jobs=False)
        with TestClient(app) as client:
            auth = {"Authorization": f"Bearer {token}"}
            made = client.post("/api/v1/connections", headers=auth, json={
                "provider": "caldav", "url": hostile.url + "/", "username": "u",
                "password": "p", "sync_type": "calendar_to_crm",
            })  # fmt: skip
            assert made.status_code == 201, made.text
            sync = f"/api/v1/connections/{made.json()['id']}/sync"

            def fetches() -> int:
                return sum(b"calendar-multiget" in r.body for r in hostile.requests)

            for expected in (1, 1, 1):
                summary = client.post(sync, headers=auth)
                assert summary.status_code == 200, summary.text
                assert [p["item"] for p in summary.json()["problems"]] == ["/home/cal/x.ics"]
                assert fetches() == expected
            etag[0] = '"2"'
            assert client.post(sync, headers=auth).status_code == 200
            assert fetches() == 2
    assert user_id


def test_one_account_check_at_a_time_per_user(db_url: str) -> None:
    """A server that never answers holds one check of a user's, not a pile of them."""
    held = threading.Event()

    def stall(request: Request, handler: BaseHTTPRequestHandler) -> None:
        held.wait(120)
        reply(handler, 404, "", {"Content-Type": "text/plain"})

    settings = Settings(database_url=db_url, secret_key="k" * 43, allow_private_networks=True)
    user_id, token = make_user(db_url, email="stack@crm.test", name="S")
    app = create_app(settings, background_jobs=False)
    with serving(HostileServer(routes={"*": stall})) as hostile, served_app(app) as base:
        auth = {"Authorization": f"Bearer {token}"}
        body = {"provider": "caldav", "url": hostile.url + "/", "username": "u", "password": "p"}
        with httpx.Client(verify=tls(), base_url=base, headers=auth, timeout=300) as client:
            first: list[httpx.Response] = []
            checking = threading.Thread(
                target=lambda: first.append(client.post("/api/v1/connections", json=body)),
                daemon=True,
            )
            checking.start()
            wait_for(lambda: hostile.active > 0)
            second = client.post("/api/v1/connections", json=body)
            assert second.status_code == 409
            assert "still running" in second.json()["detail"]
            held.set()
            checking.join(300)
            assert first[0].status_code == 422
            # Once it ended, the user may check again.
            assert client.post("/api/v1/connections", json=body).status_code == 422
    assert user_id
