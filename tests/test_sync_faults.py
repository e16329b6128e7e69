"""Syncs through the REST API with a fault-injecting proxy in front of the calendar:
Radicale, the Google emulator and the Graph emulator, each behind ``fault_proxy``.

The proxy truncates listings, holds requests (to act while a sync is in the
middle of something) and answers chosen errors; the tests check that the sync
loses nothing, keeps going past one bad item and stops cleanly.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import shutil
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from crmcal.config import Settings
from crmcal.db import Database
from crmcal.model import CalendarEvent, RemoteRef
from crmcal.providers import caldav
from crmcal.providers.base import create_many
from crmcal.sync import engine as engine_module
from crmcal.sync import lease
from crmcal.sync.tables import Connection
from crmcal.web.app import create_app
from tests import plain
from tests.conftest import Api, make_user, run
from tests.fault_proxy import Action, FaultProxy, fault_proxy
from tests.google_emulator import GoogleHarness
from tests.microsoft_emulator import MicrosoftHarness
from tests.providers.conftest import HARNESSES
from tests.providers.harness import CalDAVHarness, Foreign, Harness
from tests.served import wait_for

V1 = "/api/v1"
SOON = (dt.datetime.now(dt.UTC) + dt.timedelta(days=3)).replace(minute=0, second=0, microsecond=0)
KINDS = ["radicale", "google", "microsoft"]

# The request that lists a calendar, per kind (fetches by id look different).
LISTING = {
    "radicale": ("REPORT", r"^[^?]*/$"),
    "google": ("GET", r"/events(\?|$)"),
    "microsoft": ("GET", r"/delta"),
}
# The request that writes one event's changes, per kind.
UPDATE = {
    "radicale": ("PUT", r"\.ics$"),
    "google": ("PATCH", r"/events/"),
    "microsoft": ("PATCH", r"/events/"),
}
# How each kind of server refuses to let this user change one event.
REFUSAL = {
    "radicale": (
        '<?xml version="1.0" encoding="utf-8"?><D:error xmlns:D="DAV:" '
        'xmlns:C="urn:ietf:params:xml:ns:caldav"><C:valid-calendar-data/></D:error>',
        "application/xml; charset=utf-8",
    ),
    "google": (
        '{"error": {"code": 403, "message": "Forbidden", "errors": [{"domain": "calendar", '
        '"reason": "forbiddenForNonOrganizer", "message": "Forbidden"}]}}',
        "application/json",
    ),
    "microsoft": (
        '{"error": {"code": "ErrorAccessDenied", "message": "Access is denied."}}',
        "application/json",
    ),
}
REASON = {"radicale": "valid-calendar-data", "google": "forbiddenForNonOrganizer",
          "microsoft": "ErrorAccessDenied"}  # fmt: skip


@pytest.fixture
def db_url(sqlite_dir: Path, sqlite_template: Path) -> Iterator[str]:
    """One backend is enough here: what is tested is the talk with the calendar."""
    path = sqlite_dir / f"{uuid.uuid4().hex}.db"
    shutil.copy(sqlite_template, path)
    try:
        yield f"sqlite:///{path}"
    finally:
        for suffix in ("", "-wal", "-shm"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)


class Behind:
    """A calendar of one kind, the proxy in front of it, and a user connected through it."""

    def __init__(self, kind: str, harness: Harness, proxy: FaultProxy, url: str, loop: Any) -> None:
        self.kind, self.harness, self.proxy, self.url = kind, harness, proxy, url
        # The harness's clients belong to one event loop: every call to it runs there.
        self.loop = loop
        self.user: Api
        self.connection_id = 0

    def connect(self, **body: Any) -> int:
        fields = self.harness.connection_body()
        if isinstance(self.harness, CalDAVHarness):
            origin = _origin(self.harness.server.url)
            fields["url"] = fields["url"].replace(origin, self.url)
            fields["calendar_id"] = fields["calendar_id"].replace(origin, self.url)
        made = self.user.post(f"{V1}/connections", json={**fields, **body})
        assert made.status_code == 201, made.text
        self.connection_id = made.json()["id"]
        return self.connection_id

    def sync(self, **params: Any) -> Any:
        return self.user.post(f"{V1}/connections/{self.connection_id}/sync", params=params)

    def synced(self, **params: Any) -> dict[str, Any]:
        answer = self.sync(**params)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def status(self) -> dict[str, Any]:
        return self.user.get(f"{V1}/connections/{self.connection_id}/status").json()

    def subjects(self, **params: Any) -> list[str]:
        items = self.user.get(f"{V1}/activities", params=params).json()["items"]
        return sorted(a["subject"] for a in items)

    def add_activity(self, subject: str, hours: float = 0) -> dict[str, Any]:
        start = SOON + dt.timedelta(hours=hours)
        body = {"type": "meeting", "subject": subject, "start": start.isoformat(),
                "end": (start + dt.timedelta(hours=1)).isoformat()}  # fmt: skip
        made = self.user.post(f"{V1}/activities", json=body)
        assert made.status_code == 201, made.text
        return made.json()

    def add_event(self, summary: str, hours: float = 0) -> str:
        start = SOON + dt.timedelta(hours=hours)
        foreign = Foreign(summary=summary, start=start, end=start + dt.timedelta(hours=1))
        return self.run(self.harness.put_foreign(foreign))

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def forget_position(self, db_url: str) -> None:
        """Make the next sync list the whole calendar, as after an expired cursor."""

        async def edit() -> None:
            db = Database(db_url)
            try:
                async with db.write() as session:
                    conn = await session.get(Connection, self.connection_id)
                    assert conn is not None
                    conn.remote_cursor = None
            finally:
                await db.dispose()

        run(edit())

    def on(self, which: dict[str, tuple[str, str]], action: Action, **fields: Any) -> Any:
        method, path = which[self.kind]
        rules = [self.proxy.add(action, method=m, path=path, **fields)
                 for m in method.split("|")]  # fmt: skip
        return rules[0] if len(rules) == 1 else rules


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@pytest.fixture(params=KINDS)
def behind(request: pytest.FixtureRequest, db_url: str) -> Iterator[Behind]:
    with _behind(request, db_url, request.param) as made:
        yield made


@contextmanager
def _behind(
    request: pytest.FixtureRequest, db_url: str, kind: str, *, scheduled: bool = False, **more: Any
) -> Iterator[Behind]:
    """A user connected to ``kind`` through the proxy; with ``scheduled`` the app runs
    its embedded scheduler, with the settings in ``more``."""
    if kind != "radicale":
        # An emulator's first answer can hold up the next for seconds (the Graph model
        # checks load then): warm it with patient requests before the harness's own
        # client, with its short timeout, talks to it.
        emulator = request.getfixturevalue(f"{kind}_emulator")
        token = emulator.state.create_account("warm-up@example.test")["access_token"]
        path = "/v1.0/me/calendar" if kind == "microsoft" else "/calendar/v3/users/me/calendarList"
        for _ in range(2):  # the second waits for the first answer's model check
            plain.get(emulator.url + path, headers={"Authorization": f"Bearer {token}"},
                      timeout=120)  # fmt: skip
    loop = asyncio.new_event_loop()
    harness: Harness = loop.run_until_complete(HARNESSES[kind](request))
    if isinstance(harness, CalDAVHarness):
        upstream = _origin(harness.server.url)
    else:
        assert isinstance(harness, GoogleHarness | MicrosoftHarness)
        upstream = harness.emulator.url
    try:
        with fault_proxy(upstream) as (proxy, url):
            if kind == "google":
                more |= {"google_api_url": url, "google_oauth_url": upstream}
            elif kind == "microsoft":
                more |= {"microsoft_api_url": url, "microsoft_oauth_url": upstream}
            settings = Settings(database_url=db_url, secret_key="test-key",
                                allow_private_networks=True, retry_backoff=0.01,
                                **more)  # fmt: skip
            with TestClient(create_app(settings, background_jobs=scheduled)) as client:
                user_id, token = make_user(db_url, email="sam@crm.test", name="Sam")
                made = Behind(kind, harness, proxy, url, loop)
                made.user = Api(client, token, user_id)
                yield made
    finally:
        loop.run_until_complete(harness.close())
        loop.close()


# --- item 1: a short listing trashes nothing -------------------------------------------


def test_a_truncated_listing_trashes_only_what_is_really_gone(behind: Behind, db_url: str) -> None:
    ids = [behind.add_event(f"Event {n}", hours=n) for n in range(4)]
    behind.connect()
    assert behind.synced()["created"] == 4
    behind.run(behind.harness.remove(ids[3]))  # really deleted
    behind.forget_position(db_url)
    behind.on(LISTING, "truncate", keep=1, times=1)  # the listing shows one event
    report = behind.synced()
    assert report["deleted"] == 1
    assert behind.subjects() == ["Event 0", "Event 1", "Event 2"]
    assert behind.subjects(deleted="true") == ["Event 3"]


# Threads the tests start, joined at the end of each test that makes one.
def _in_thread(target: Any) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def work() -> None:
        out["answer"] = target()

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread, out


def _wait_held(proxy: FaultProxy) -> None:
    wait_for(lambda: proxy.waiting)


# --- item 16: one refused write skips one item --------------------------------------------


def test_a_write_the_server_refuses_skips_that_item_and_the_rest_goes_on(
    behind: Behind,
) -> None:
    behind.connect()
    first = behind.add_activity("First", hours=1)
    second = behind.add_activity("Second", hours=2)
    assert behind.synced()["created"] == 2
    for made in (first, second):
        edited = behind.user.patch(f"{V1}/activities/{made['id']}",
                                   json={"subject": f"{made['subject']}, moved"})  # fmt: skip
        assert edited.status_code == 200, edited.text
    body, content_type = REFUSAL[behind.kind]
    behind.on(UPDATE, "answer", status=403, body=body, content_type=content_type, times=1)
    report = behind.synced()
    assert (report["updated"], report["skipped"]) == (1, 1)
    (problem,) = report["problems"]
    assert REASON[behind.kind] in problem["reason"]
    assert "None" not in problem["item"]
    assert behind.status()["problems"] == [problem]
    # Changed again, the item is tried again; synced, its problem is gone.
    again = behind.user.patch(f"{V1}/activities/{first['id']}",
                              json={"subject": "First, moved again"})  # fmt: skip
    assert again.status_code == 200
    second_again = behind.user.patch(f"{V1}/activities/{second['id']}",
                                     json={"subject": "Second, moved again"})  # fmt: skip
    assert second_again.status_code == 200
    report = behind.synced()
    assert (report["updated"], report["problems"]) == (2, [])
    assert behind.status()["problems"] == []


# --- item 18: stop and DELETE during a sync -------------------------------------------------


@pytest.mark.parametrize("how", ["stop", "delete"])
def test_stop_or_delete_during_a_sync_ends_it_before_its_next_write(
    behind: Behind, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    # Asked at every write here, so that the test need not wait a quarter second; and
    # each update sent on its own, so that there is a next write to stop before.
    monkeypatch.setattr(engine_module, "STOP_CHECK_SECONDS", 0.0)
    monkeypatch.setattr(engine_module, "OUTGOING_BATCH", 1)
    behind.connect()
    made = [behind.add_activity(f"Meeting {n}", hours=n) for n in range(3)]
    assert behind.synced()["created"] == 3
    behind.synced()  # Graph's delta brings back what the first sync wrote: read here
    for activity in made:
        edited = behind.user.patch(f"{V1}/activities/{activity['id']}",
                                   json={"subject": f"{activity['subject']}, moved"})  # fmt: skip
        assert edited.status_code == 200, edited.text
    before = len(behind.proxy.requests)
    held = behind.on(UPDATE, "hold", times=1)
    thread, out = _in_thread(behind.sync)
    _wait_held(behind.proxy)
    path = f"{V1}/connections/{behind.connection_id}"
    answer = behind.user.post(f"{path}/stop") if how == "stop" else behind.user.delete(path)
    assert answer.status_code in (200, 204), answer.text
    held.release()
    thread.join(timeout=120)
    assert not thread.is_alive()
    assert out["answer"].status_code == 200, out["answer"].text  # ended cleanly
    method, pattern = UPDATE[behind.kind]
    writes = [r for r in behind.proxy.requests[before:]
              if r[0] == method and re.search(pattern, r[1])]  # fmt: skip
    assert len(writes) == 1  # the one in flight, none after
    if how == "stop":
        status = behind.status()
        assert (status["state"], status["last_error"]) == ("stopped", None)
    else:
        assert behind.user.get(path).status_code == 404


# --- item 3: a CRM change during a sync brings another sync right after it --------------


@pytest.fixture
def scheduled(request: pytest.FixtureRequest, db_url: str) -> Iterator[Behind]:
    """Radicale, with the embedded scheduler on and a poll too far off to count: only
    the change feed can start a sync within the test."""
    with _behind(request, db_url, "radicale", scheduled=True, poll_seconds=3600) as made:
        yield made


def test_a_crm_edit_during_a_sync_triggers_another_sync_right_after_it(
    scheduled: Behind,
) -> None:
    behind = scheduled
    made = behind.add_activity("Planning")
    held = behind.on(UPDATE, "hold", times=1)  # the first sync's write of the event
    behind.connect()  # due at once: the scheduler starts its first sync
    _wait_held(behind.proxy)
    ((_, href),) = behind.proxy.waiting
    # Made after that sync read the CRM: only another sync can carry it.
    edited = behind.user.patch(f"{V1}/activities/{made['id']}",
                               json={"subject": "Planning moved"})  # fmt: skip
    assert edited.status_code == 200, edited.text
    held.release()

    def finished() -> list[dict[str, Any]]:
        runs = behind.status()["recent_syncs"]
        return [r for r in runs if r["outcome"] != "running"]

    # The poll is an hour off: only the change feed can bring a second sync this soon.
    runs = wait_for(lambda: len(finished()) >= 2 and finished())
    assert [r["outcome"] for r in runs[:2]] == ["ok", "ok"], runs
    assert "SUMMARY:Planning moved" in behind.run(behind.harness.read_raw(href))
    assert behind.subjects() == ["Planning moved"]  # the first sync did not undo it


def test_a_crm_edit_waits_out_a_sync_another_process_holds(
    scheduled: Behind, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The scheduler cannot run while another process holds the sync: it asks again
    once that sync is over, rather than leaving the edit to the next poll."""
    behind = scheduled
    caplog.set_level(logging.INFO, logger="crmcal.jobs.scheduler")
    made = behind.add_activity("Planning")
    behind.connect()

    def first_sync() -> Any:
        activity = behind.user.get(f"{V1}/activities/{made['id']}").json()
        return activity["sync"] and activity["sync"]["state"] == "synced" and activity["sync"]

    event_id = wait_for(first_sync)["event_id"]

    async def take() -> lease.Lease | None:
        db = Database(db_url)
        try:
            return await lease.take(db, behind.connection_id, 600)
        finally:
            await db.dispose()

    # Another process syncs the connection, once the scheduler's first sync has let go
    # of it (the activity shows synced a moment before that sync ends).
    other: lease.Lease = wait_for(lambda: run(take()))
    edited = behind.user.patch(f"{V1}/activities/{made['id']}", json={"subject": "Planning moved"})
    assert edited.status_code == 200, edited.text

    def turned_away() -> bool:
        return any(r.name == "crmcal.jobs.scheduler" and "is running" in r.getMessage()
                   for r in caplog.records)  # fmt: skip

    wait_for(turned_away)  # the scheduler tried, and found the sync taken

    async def give_back() -> None:
        db = Database(db_url)
        try:
            async with db.write() as session:
                conn = await lease.give_back(session, other, "ok")
                assert conn is not None
                conn.state = "active"
        finally:
            await db.dispose()

    run(give_back())
    # The poll is an hour off: only the scheduler asking again can carry the edit now.
    wait_for(lambda: "SUMMARY:Planning moved" in behind.run(behind.harness.read_raw(event_id)))


# --- issue 15 item 5: one refused part of a batch of updates is that item's alone -------

BATCHED = ["google", "microsoft"]
# A call inside a batch that writes one event's changes, per kind.
PATCH_PART = ("PATCH", r"/events/[^/?]+(\?|$)")
PART_FAULTS: dict[str, dict[int, tuple[str, dict[str, str]]]] = {
    "google": {
        412: ('{"error": {"code": 412, "message": "Precondition Failed", "errors": [{"domain":'
              ' "global", "reason": "conditionNotMet", "message": "Precondition Failed"}]}}', {}),
        429: ('{"error": {"code": 429, "message": "Rate Limit Exceeded", "errors": [{"domain":'
              ' "usageLimits", "reason": "rateLimitExceeded", "message": "Rate Limit Exceeded"}]}}',
              {"Retry-After": "1"}),
        400: ('{"error": {"code": 400, "message": "Invalid start time.", "errors": [{"domain":'
              ' "global", "reason": "invalid", "message": "Invalid start time."}]}}', {}),
    },
    "microsoft": {
        412: ('{"error": {"code": "ErrorIrresolvableConflict", "message": "The change key '
              'passed in the request does not match the current change key for the item."}}',
              {}),
        429: ('{"error": {"code": "ApplicationThrottled", "message": "Application is over its '
              'MailboxConcurrency limit."}}', {"Retry-After": "1"}),
        400: ('{"error": {"code": "ErrorInvalidRequest", "message": "Invalid start time."}}', {}),
    },
}  # fmt: skip


@pytest.fixture(params=BATCHED)
def batched(request: pytest.FixtureRequest, db_url: str) -> Iterator[Behind]:
    with _behind(request, db_url, request.param) as made:
        yield made


def _three_edited(behind: Behind) -> list[dict[str, Any]]:
    """Three synced activities, each edited in the CRM since: one batch of updates waits."""
    behind.connect()
    made = [behind.add_activity(f"Call {n}", hours=n) for n in range(3)]
    assert behind.synced()["created"] == 3
    behind.synced()  # Graph's delta brings back what the first sync wrote: read here
    for activity in made:
        edited = behind.user.patch(f"{V1}/activities/{activity['id']}",
                                   json={"subject": f"{activity['subject']}, moved"})  # fmt: skip
        assert edited.status_code == 200, edited.text
    return [behind.user.get(f"{V1}/activities/{a['id']}").json() for a in made]


def _calendar_titles(behind: Behind) -> list[str]:
    harness = behind.harness
    assert isinstance(harness, GoogleHarness | MicrosoftHarness)
    listing = behind.run(harness.provider.list_changes(harness.calendar_id, None))
    return sorted(ref.event.summary for ref in listing.changed if ref.event is not None)


def _batches(behind: Behind, since: int) -> list[tuple[str, str]]:
    return [r for r in behind.proxy.requests[since:] if re.search(r"/(\$)?batch", r[0] + r[1])]


@pytest.mark.parametrize("status", [412, 429])
def test_a_part_of_a_batch_refused_for_its_version_or_throttled_is_tried_again_alone(
    batched: Behind, status: int
) -> None:
    """A 412 for one part: that event is read and decided again, and its edit written;
    a 429 for one part: that part alone goes again after the backoff. The other parts of
    the batch go through at once, and no edit is lost."""
    behind = batched
    _three_edited(behind)
    body, headers = PART_FAULTS[behind.kind][status]
    behind.proxy.add("answer", method=PATCH_PART[0], path=PATCH_PART[1], status=status,
                     body=body, headers=headers, times=1)  # fmt: skip
    requests, parts = len(behind.proxy.requests), len(behind.proxy.parts)
    report = behind.synced()
    assert (report["updated"], report["skipped"], report["problems"]) == (3, 0, []), report
    assert _calendar_titles(behind) == ["Call 0, moved", "Call 1, moved", "Call 2, moved"]
    assert behind.subjects() == ["Call 0, moved", "Call 1, moved", "Call 2, moved"]
    # The three went in one batch; only the refused one was written again.
    assert _batches(behind, requests)
    patches = [p for p in behind.proxy.parts[parts:] if p[0] == "PATCH"]
    method, pattern = UPDATE[behind.kind]
    alone = [r for r in behind.proxy.requests[requests:]
             if r[0] == method and re.search(pattern, r[1])]  # fmt: skip
    assert len(patches) + len(alone) == 4, (patches, alone)


def test_a_part_of_a_batch_the_server_refuses_is_one_problem(batched: Behind) -> None:
    behind = batched
    edited = _three_edited(behind)
    body, headers = PART_FAULTS[behind.kind][400]
    behind.proxy.add("answer", method=PATCH_PART[0], path=PATCH_PART[1], status=400,
                     body=body, headers=headers, times=1)  # fmt: skip
    requests = len(behind.proxy.requests)
    report = behind.synced()
    assert len(_batches(behind, requests)) == 1  # the three updates in one batch
    assert (report["updated"], report["skipped"]) == (2, 1), report
    (problem,) = report["problems"]
    assert "Invalid start time" in problem["reason"] or "400" in problem["reason"], problem
    refused = next(a for a in edited if a["sync"]["event_id"] == problem["item"])
    titles = _calendar_titles(behind)
    assert sorted(titles) == sorted(
        a["subject"] if a is not refused else refused["subject"].removesuffix(", moved")
        for a in edited
    )
    # The CRM keeps the edit, and the next change of it is written.
    assert behind.subjects() == ["Call 0, moved", "Call 1, moved", "Call 2, moved"]
    again = behind.user.patch(f"{V1}/activities/{refused['id']}", json={"subject": "Again"})
    assert again.status_code == 200, again.text
    report = behind.synced()
    assert (report["updated"], report["problems"]) == (1, []), report
    assert "Again" in _calendar_titles(behind)


def test_an_event_deleted_while_its_batch_of_updates_waits_is_made_again(batched: Behind) -> None:
    """A real 404 for one part: the event went between the listing and the write."""
    behind = batched
    edited = _three_edited(behind)
    held = behind.proxy.add("hold", method=PATCH_PART[0], path=PATCH_PART[1], times=1)
    requests = len(behind.proxy.requests)
    thread, out = _in_thread(behind.sync)
    _wait_held(behind.proxy)
    behind.run(behind.harness.remove(edited[1]["sync"]["event_id"]))
    held.release()
    thread.join(timeout=120)
    assert not thread.is_alive()
    assert out["answer"].status_code == 200, out["answer"].text
    report = out["answer"].json()
    assert (report["updated"], report["created"], report["problems"]) == (2, 1, []), report
    assert _batches(behind, requests)  # the updates went in a batch
    assert _calendar_titles(behind) == ["Call 0, moved", "Call 1, moved", "Call 2, moved"]
    assert behind.subjects() == ["Call 0, moved", "Call 1, moved", "Call 2, moved"]


# --- a first import read in parts, cut off mid-way ------------------------------------------


@pytest.fixture
def behind_radicale(request: pytest.FixtureRequest, db_url: str) -> Iterator[Behind]:
    with _behind(request, db_url, "radicale") as made:
        yield made


def test_a_first_import_cut_off_mid_way_keeps_its_parts_and_the_next_sync_brings_the_rest(
    behind_radicale: Behind, monkeypatch: pytest.MonkeyPatch
) -> None:
    behind = behind_radicale
    # Parts of two events, one asked for at a time, each part's events written as it comes.
    monkeypatch.setattr(caldav, "PART_SIZE", 2)
    monkeypatch.setattr(caldav, "PARTS_AHEAD", 1)
    monkeypatch.setattr(engine_module, "IMPORT_BATCH", 2)
    titles = [f"Event {n}" for n in range(6)]
    for n, title in enumerate(titles):
        behind.add_event(title, hours=n)
    behind.connect()
    # The query of every event's contents is refused, so they are read by name in
    # multigets: the first part's answer comes whole, the second's is cut off half-way
    # through, and so is that read's second sending (a read a connection drops goes
    # once more).
    refused = behind.proxy.add("answer", method="REPORT", times=1, status=501)
    cut = behind.proxy.add("cut", method="REPORT", skip=1, times=2)
    failed = behind.sync()
    assert (refused.hits, cut.hits) == (1, 2)
    assert failed.status_code == 409, failed.text
    assert "cannot reach the CalDAV server" in failed.json()["detail"]
    reports = [r for r in behind.proxy.requests if r[0] == "REPORT"]
    assert len(reports) == 4  # nothing asked for after the cut
    # What the first part held is in the CRM, nothing of the cut one.
    first = behind.subjects()
    assert len(first) == 2, first
    assert set(first) < set(titles), first
    # The next sync reads the rest; nothing is imported twice.
    report = behind.synced()
    assert (report["created"], report["deleted"], report["problems"]) == (4, 0, []), report
    assert behind.subjects() == titles
    report = behind.synced()
    assert (report["created"], report["updated"], report["deleted"]) == (0, 0, 0), report
    assert behind.subjects() == titles


# --- a fatal answer while writing series' occurrences ---------------------------------


@pytest.fixture
def graph(request: pytest.FixtureRequest, db_url: str) -> Iterator[Behind]:
    with _behind(request, db_url, "microsoft") as made:
        yield made


def test_an_account_failing_while_series_occurrences_are_written_stops_the_writes(
    graph: Behind,
) -> None:
    """Graph takes a series' pattern alone, so a new series with a left-out date has
    that occurrence deleted after its master is made. When the service fails for the
    whole account there (here every occurrence's delete answers 503 until the retries
    give up), the sync stops: the other new series' occurrences are not written on
    after it, as a per-item refusal would let them be. Nothing is lost: the next sync
    finds both masters by their creates' keys and writes what is left."""
    graph.connect()
    for n in range(2):
        start = SOON + dt.timedelta(days=n, hours=n)
        made = graph.user.post(f"{V1}/activities", json={
            "type": "meeting", "subject": f"Series {n}", "start": start.isoformat(),
            "end": (start + dt.timedelta(hours=1)).isoformat(),
            "recurrence": "FREQ=WEEKLY;COUNT=4"})  # fmt: skip
        assert made.status_code == 201, made.text
        listed = graph.user.get(f"{V1}/activities",
                                params={"series_id": made.json()["series_id"]})  # fmt: skip
        third = listed.json()["items"][2]
        assert graph.user.delete(f"{V1}/activities/{third['id']}").status_code == 200
    graph.on({"microsoft": ("DELETE", r"/events/")}, "answer", status=503,
             body='{"error": {"code": "serviceNotAvailable", "message": "down"}}')  # fmt: skip

    def deleted() -> set[str]:
        return {target for method, target in [*graph.proxy.requests, *graph.proxy.parts]
                if method == "DELETE"}  # fmt: skip

    failed = graph.sync()
    assert failed.status_code == 409, failed.text
    assert graph.status()["state"] == "error"
    assert len(deleted()) == 1, deleted()  # one series' occurrence tried, not the other's
    graph.proxy.clear()
    report = graph.synced()
    assert report["problems"] == [], report
    assert len(deleted()) == 2, deleted()  # the other series' occurrence now too
    quiet = graph.synced()
    assert (quiet["created"], quiet["updated"], quiet["deleted"]) == (0, 0, 0), quiet
    listed = graph.user.get(f"{V1}/activities").json()["items"]
    assert sorted(a["subject"] for a in listed) == ["Series 0"] * 3 + ["Series 1"] * 3


def test_a_batch_with_a_part_failing_for_the_account_writes_nothing_more(
    batched: Behind,
) -> None:
    """A batch of deletions: one part refused for its version (412), the others failing
    for the whole service (503 until the retries give up). The sync stops without
    taking the refused one up again (a CRM-to-calendar connection would delete it once
    more, whatever its version): nothing more is written to a service the sync stops
    for. The next sync, the service back, deletes all three."""
    behind = batched
    behind.connect(sync_type="crm_to_calendar")
    made = [behind.add_activity(f"Call {n}", hours=n) for n in range(3)]
    assert behind.synced()["created"] == 3
    for activity in made:
        gone = behind.user.delete(f"{V1}/activities/{activity['id']}")
        assert gone.status_code == 200, gone.text
    refused, _ = PART_FAULTS[behind.kind][412]
    down = ('{"error": {"code": "serviceNotAvailable", "message": "down"}}'
            if behind.kind == "microsoft" else
            '{"error": {"code": 503, "message": "Backend Error", "errors": [{"domain": '
            '"global", "reason": "backendError", "message": "Backend Error"}]}}')  # fmt: skip
    first = behind.proxy.add("answer", method="DELETE", path=PATCH_PART[1], status=412,
                             body=refused, times=1)  # fmt: skip
    behind.proxy.add("answer", method="DELETE", path=PATCH_PART[1], status=503, body=down)
    requests, parts = len(behind.proxy.requests), len(behind.proxy.parts)
    failed = behind.sync()
    assert failed.status_code == 409, failed.text
    assert first.hits == 1
    deleted = [target.split("?")[0] for method, target in
               [*behind.proxy.parts[parts:], *behind.proxy.requests[requests:]]
               if method == "DELETE"]  # fmt: skip
    # The refused one's DELETE is the first one sent: it is not sent again.
    assert deleted.count(deleted[0]) == 1, deleted
    behind.proxy.clear()
    report = behind.synced()
    assert (report["deleted"], report["problems"]) == (3, []), report
    assert _calendar_titles(behind) == []


# --- a create whose answer the connection loses -------------------------------------------

# The request that creates events, per kind: one alone, or a batch of them.
CREATE = {
    "radicale": ("PUT", r"\.ics$"),
    "google": ("POST", r"/(events|batch/calendar/v3)(\?|$)"),
    "microsoft": ("POST", r"/(events|\$batch)(\?|$)"),
}


def _titles(behind: Behind) -> list[str]:
    """The summaries of the events in the calendar, as the server holds them now."""
    harness = behind.harness
    listing = behind.run(
        harness.provider.list_changes(harness.calendar_id, None, with_contents=True)
    )
    return sorted(ref.event.summary for ref in listing.changed if ref.event is not None)


@pytest.mark.parametrize("count", [1, 3])
def test_a_create_the_server_did_but_whose_answer_was_lost_makes_one_event(
    behind: Behind, count: int
) -> None:
    """The server makes the event, then the connection drops before its answer: the
    create is sent again (each kind's create is safe to repeat: a client-chosen href
    with ``If-None-Match: *``, a client-chosen Google event id, a Graph
    ``transactionId``) and the event it made is the activity's, in the same sync:
    never a second event, never an activity left without one."""
    behind.connect()
    made = [behind.add_activity(f"New {n}", hours=n) for n in range(count)]
    lost = behind.on(CREATE, "lose", times=1)
    before = len(behind.proxy.requests)
    report = behind.synced()
    assert lost.hits == 1
    method, path = CREATE[behind.kind]
    sent = [r for r in behind.proxy.requests[before:] if r[0] == method and re.search(path, r[1])]
    # The lost one was sent again (one request of its own, or its whole batch).
    assert len(sent) == (count + 1 if behind.kind == "radicale" else 2), sent
    assert report["problems"] == [], report
    assert report["created"] == count, report
    assert _titles(behind) == [f"New {n}" for n in range(count)]
    for activity in made:
        linked = behind.user.get(f"{V1}/activities/{activity['id']}").json()
        assert linked["sync"], linked
        assert linked["sync"]["event_id"], linked
    behind.synced()  # Graph's delta brings back what the first sync wrote: read here
    quiet = behind.synced()
    assert (quiet["created"], quiet["updated"], quiet["deleted"]) == (0, 0, 0), quiet
    assert _titles(behind) == [f"New {n}" for n in range(count)]


@pytest.mark.parametrize("kind", ["google", "microsoft"])
@pytest.mark.parametrize("count", [1, 3])
async def test_a_create_a_kept_connection_drops_unanswered_is_sent_again_at_once(
    request: pytest.FixtureRequest, kind: str, count: int
) -> None:
    """The transport itself sends a create (or a batch of creates) again when a kept
    connection drops it unanswered, as it does an idempotent request: a Google insert
    with its client-chosen id and a Graph create with its ``transactionId`` cannot make
    a second event. No retry of the API client is needed (none is allowed here), and
    none of its back-off is waited."""
    harness = await HARNESSES[kind](request)
    assert isinstance(harness, GoogleHarness | MicrosoftHarness)
    try:
        with fault_proxy(harness.emulator.url) as (proxy, url):
            provider = harness.provider_for(url)
            provider._api.retries = 0
            await provider.list_calendars()  # a connection to keep
            method, path = CREATE[kind]
            lost = proxy.add("lose", method=method, path=path, times=1)
            items = [(uuid.uuid4().hex, _event(f"New {n}", n)) for n in range(count)]
            results = await create_many(provider, harness.calendar_id, items)
        assert lost.hits == 1
        assert all(isinstance(r, RemoteRef) for r in results), results
        sent = [r for r in proxy.requests if r[0] == method and re.search(path, r[1])]
        assert len(sent) == 2, sent
        listing = await harness.provider.list_changes(harness.calendar_id, None, with_contents=True)
        titles = sorted(ref.event.summary or "" for ref in listing.changed if ref.event is not None)
        assert titles == [f"New {n}" for n in range(count)]
    finally:
        await harness.close()


def _event(summary: str, hours: int) -> CalendarEvent:
    start = SOON + dt.timedelta(hours=hours)
    return CalendarEvent(summary=summary, start=start, end=start + dt.timedelta(hours=1),
                         timezone="UTC", crm_id=uuid.uuid4().hex, crm_type="meeting")  # fmt: skip
