"""Two-way sync with real CalDAV servers, driven through the REST API as a CRM would."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from crmcal.db import Database
from crmcal.sync.tables import Connection
from crmcal.web.app import create_app
from tests import sync_api
from tests.cli_process import InProcess
from tests.conftest import Api, client_of, make_user, run
from tests.providers.harness import CalDAVHarness, CalDAVServer
from tests.served import wait_for
from tests.sync_api import (
    SOON,
    V1,
    activity,
    calendar_events,
    connect,
    edit_connection,
    settings,
    subjects,
    sync,
)

# The fixtures of these tests: both servers, a fresh calendar, an API user.
server, calendar, app_client, user = (
    sync_api.server,
    sync_api.calendar,
    sync_api.app_client,
    sync_api.user,
)


def ics(uid: str, summary: str, start: dt.datetime, *, extra: str = "") -> str:
    """A minimal event as another calendar client would write it (summary left unescaped)."""
    stamp = "%Y%m%dT%H%M%SZ"
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//test//EN\r\nBEGIN:VEVENT\r\n"
        f"UID:{uid}\r\nDTSTAMP:{start.strftime(stamp)}\r\n"
        f"DTSTART:{start.strftime(stamp)}\r\n"
        f"DTEND:{(start + dt.timedelta(hours=1)).strftime(stamp)}\r\n"
        f"SUMMARY:{summary}\r\n{extra}END:VEVENT\r\nEND:VCALENDAR\r\n"
    )


def test_two_way_sync_through_the_api(
    user: Api, server: CalDAVServer, calendar: CalDAVHarness
) -> None:
    conn = connect(user, server, calendar)
    assert conn["state"] == "active"
    assert "password" not in conn
    made = activity(user, "Demo with ACME", location="Room 4", reminder_minutes=15)
    run(calendar.put_raw(ics("from-calendar-1", "Lunch with Bob", SOON + dt.timedelta(hours=5))))
    counts = sync(user, conn["id"])
    assert (counts["created"], counts["conflicts"]) == (2, 0)
    events = {e.summary: e for e in calendar_events(calendar).values()}
    assert sorted(events) == ["Demo with ACME", "Lunch with Bob"]
    demo = events["Demo with ACME"]
    assert (demo.location, demo.reminder_minutes) == ("Room 4", 15)
    assert demo.start == SOON
    assert subjects(user) == ["Demo with ACME", "Lunch with Bob"]
    synced = user.get(f"{V1}/activities/{made['id']}").json()
    assert synced["sync"]["connection_id"] == conn["id"]
    assert synced["sync"]["state"] == "synced"
    assert synced["sync"]["event_id"] in calendar_events(calendar)
    listed = user.get(f"{V1}/activities").json()["items"]
    assert [a["sync"]["state"] for a in listed] == ["synced", "synced"]

    # Edits both ways, then deletions both ways.
    user.patch(f"{V1}/activities/{made['id']}", json={"subject": "Demo, v2"})
    assert user.get(f"{V1}/activities/{made['id']}").json()["sync"]["state"] == "pending"
    lunch_id = next(
        i for i, e in calendar_events(calendar).items() if e.summary == "Lunch with Bob"
    )
    run(calendar.edit(lunch_id, lambda text: text.replace("Lunch with Bob", "Lunch with Bob+Ann")))
    counts = sync(user, conn["id"])
    assert counts["updated"] == 2
    assert subjects(user) == ["Demo, v2", "Lunch with Bob+Ann"]
    assert sorted(e.summary for e in calendar_events(calendar).values()) == [
        "Demo, v2", "Lunch with Bob+Ann"]  # fmt: skip
    user.delete(f"{V1}/activities/{made['id']}")
    run(calendar.remove(lunch_id))
    assert sync(user, conn["id"])["deleted"] == 2
    assert calendar_events(calendar) == {}
    assert subjects(user) == []
    assert len(user.get(f"{V1}/activities", params={"deleted": "true"}).json()["items"]) == 2
    status = user.get(f"{V1}/connections/{conn['id']}/status").json()
    assert status["state"] == "active"
    assert status["last_sync_at"] is not None
    assert status["counts"]["created"] == 2


def test_connect_refuses_bad_accounts_with_clear_errors(
    user: Api, server: CalDAVServer, plain_http: str, closed_port_url: str
) -> None:
    base = {"provider": "caldav", "username": server.username, "password": server.password}
    cases = [
        ({**base, "url": closed_port_url}, "cannot be reached"),
        ({**base, "url": plain_http}, "not a CalDAV server"),
        ({**base, "provider": "imap", "url": "imap://mail.example.com"}, "mail protocol"),
        ({**base, "url": "imap://mail.example.com"}, "mail protocol"),
        ({**base, "url": "ftp://example.com/"}, "http:// or https://"),
    ]
    if server.checks_auth:
        cases.append(({**base, "url": server.url, "password": "wrong"}, "password"))
    for body, message in cases:
        response = user.post(f"{V1}/connections", json=body)
        assert response.status_code == 422, (body, response.text)
        assert message in response.json()["detail"], (body, response.json())
    assert user.get(f"{V1}/connections").json()["items"] == []
    # An account without the calendar asked for: its state, not the request, is at odds.
    body = {**base, "url": server.url, "calendar_id": server.url + "nope/"}
    response = user.post(f"{V1}/connections", json=body)
    assert response.status_code == 409, response.text
    assert "no calendar" in response.json()["detail"]


def test_private_network_urls_are_refused_unless_allowed(db_url: str, server: CalDAVServer) -> None:
    _, token = make_user(db_url, email="eve@crm.test", name="Eve")
    app = create_app(settings(db_url, allow_private_networks=False), background_jobs=False)
    with TestClient(app) as client:
        response = client.post(
            f"{V1}/connections",
            headers={"Authorization": f"Bearer {token}"},
            json={"provider": "caldav", "url": server.url, "username": "u", "password": "p"},
        )
    assert response.status_code == 422
    assert "private or loopback" in response.json()["detail"]


def test_password_is_encrypted_at_rest_and_never_returned(
    user: Api, server: CalDAVServer, calendar: CalDAVHarness, db_url: str
) -> None:
    conn = connect(user, server, calendar)
    for path in ("", f"/{conn['id']}", f"/{conn['id']}/status"):
        assert server.password not in user.get(f"{V1}/connections{path}").text

    async def stored() -> bytes:
        db = Database(db_url)
        try:
            async with db.read() as session:
                return (await session.scalars(select(Connection.credentials))).one()
        finally:
            await db.dispose()

    blob = run(stored())
    assert server.password.encode() not in blob


def test_one_active_connection_stopped_ones_are_previously_synced(
    user: Api, server: CalDAVServer, calendar: CalDAVHarness
) -> None:
    first = connect(user, server, calendar)
    again = user.post(f"{V1}/connections", json={
        "provider": "caldav", "url": server.url, "username": server.username,
        "password": server.password})  # fmt: skip
    assert again.status_code == 409
    stopped = user.post(f"{V1}/connections/{first['id']}/stop").json()
    assert (stopped["state"], stopped["previously_synced"]) == ("stopped", True)
    assert user.post(f"{V1}/connections/{first['id']}/sync").status_code == 409
    second = connect(user, server, calendar)
    listed = user.get(f"{V1}/connections").json()["items"]
    assert [(c["id"], c["state"]) for c in listed] == [
        (first["id"], "stopped"), (second["id"], "active")]  # fmt: skip
    reconnect = user.post(f"{V1}/connections/{first['id']}/reconnect")
    assert reconnect.status_code == 409  # the second one is active
    calendars = user.get(f"{V1}/connections/{second['id']}/calendars").json()["items"]
    assert calendar.calendar_id in [c["id"] for c in calendars]
    assert all(c["writable"] for c in calendars)


def test_stop_and_reconnect_reconcile_the_pause(
    user: Api, server: CalDAVServer, calendar: CalDAVHarness
) -> None:
    conn = connect(user, server, calendar)
    kept = activity(user, "Before the pause")
    sync(user, conn["id"])
    user.post(f"{V1}/connections/{conn['id']}/stop")
    user.patch(f"{V1}/activities/{kept['id']}", json={"subject": "Edited in the pause"})
    activity(user, "Made in the pause", hours=2)
    run(calendar.put_raw(ics("pause-1", "Calendar in the pause", SOON + dt.timedelta(hours=4))))
    assert subjects(user) == ["Edited in the pause", "Made in the pause"]
    assert user.post(f"{V1}/connections/{conn['id']}/reconnect").json()["state"] == "active"
    sync(user, conn["id"])
    expected = ["Calendar in the pause", "Edited in the pause", "Made in the pause"]
    assert subjects(user) == expected
    assert sorted(e.summary for e in calendar_events(calendar).values()) == expected


def test_delete_and_recreate_the_connection_makes_no_copies(
    user: Api, server: CalDAVServer, calendar: CalDAVHarness
) -> None:
    conn = connect(user, server, calendar)
    activity(user, "From the CRM")
    run(calendar.put_raw(ics("cal-1", "From the calendar", SOON + dt.timedelta(hours=2))))
    sync(user, conn["id"])
    assert user.delete(f"{V1}/connections/{conn['id']}").status_code == 204
    again = connect(user, server, calendar)
    counts = sync(user, again["id"])
    assert counts["created"] == 0
    assert subjects(user) == ["From the CRM", "From the calendar"]
    assert len(calendar_events(calendar)) == 2


@pytest.mark.parametrize("policy", ["latest", "crm", "calendar"])
def test_conflicts_follow_the_policy_and_are_listed(
    user: Api, server: CalDAVServer, calendar: CalDAVHarness, policy: str
) -> None:
    conn = connect(user, server, calendar, options={"conflict_policy": policy})
    made = activity(user, "Original")
    sync(user, conn["id"])
    (event_id,) = calendar_events(calendar)
    # The calendar edit is stamped an hour ago, so under "latest" the CRM edit wins.
    earlier = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).strftime("%Y%m%dT%H%M%SZ")

    def edit(text: str) -> str:
        text = text.replace("SUMMARY:Original", "SUMMARY:Calendar edit")
        return text.replace("LAST-MODIFIED:", f"LAST-MODIFIED:{earlier}\r\nX-OLD-LM:")

    run(calendar.edit(event_id, edit))
    user.patch(f"{V1}/activities/{made['id']}", json={"subject": "CRM edit"})
    assert sync(user, conn["id"])["conflicts"] == 1
    winner = "Calendar edit" if policy == "calendar" else "CRM edit"
    assert subjects(user) == [winner]
    assert [e.summary for e in calendar_events(calendar).values()] == [winner]
    conflicts = user.get(f"{V1}/connections/{conn['id']}/conflicts").json()["items"]
    assert [(c["policy"], c["winner"]) for c in conflicts] == [
        (policy, "calendar" if policy == "calendar" else "crm")]  # fmt: skip


def test_moving_an_event_out_and_back_restores_the_same_activity(
    user: Api, server: CalDAVServer, calendar: CalDAVHarness
) -> None:
    conn = connect(user, server, calendar)
    run(calendar.put_raw(ics("movable", "Board meeting", SOON)))
    sync(user, conn["id"])
    (original,) = user.get(f"{V1}/activities").json()["items"]
    (event_id,) = calendar_events(calendar)
    text = run(calendar.read_raw(event_id))
    run(calendar.remove(event_id))  # moved to another calendar of the account
    sync(user, conn["id"])
    assert subjects(user) == []
    run(calendar.put_raw(text, name="moved-back.ics"))  # and back again
    sync(user, conn["id"])
    (restored,) = user.get(f"{V1}/activities").json()["items"]
    assert restored["id"] == original["id"]


def test_options_are_saved_at_once_and_apply_from_the_next_sync(
    user: Api, server: CalDAVServer, calendar: CalDAVHarness
) -> None:
    conn = connect(user, server, calendar, options={"outgoing_activity_types": ["call"]})
    activity(user, "A meeting")
    sync(user, conn["id"])
    assert calendar_events(calendar) == {}
    patched = user.patch(
        f"{V1}/connections/{conn['id']}",
        json={"options": {"outgoing_activity_types": ["call", "meeting"]}},
    )
    assert patched.status_code == 200
    assert patched.json()["options"]["outgoing_activity_types"] == ["call", "meeting"]
    assert patched.json()["options"]["conflict_policy"] == "latest"  # others kept
    sync(user, conn["id"])
    assert [e.summary for e in calendar_events(calendar).values()] == ["A meeting"]
    bad = user.patch(f"{V1}/connections/{conn['id']}",
                     json={"options": {"incoming_activity_type": "nope"}})  # fmt: skip
    assert bad.status_code == 409  # no such type is stored


def test_unreadable_events_are_reported_and_delete_nothing(
    user: Api, server: CalDAVServer, calendar: CalDAVHarness
) -> None:
    if server.kind == "radicale":
        pytest.skip("Radicale refuses what crmcal cannot read")
    conn = connect(user, server, calendar)
    run(calendar.put_raw(ics("good", "Readable", SOON)))
    bad_id = run(calendar.put_raw(calendar.unreadable_ics(), name="broken.ics"))
    counts = sync(user, conn["id"])
    assert counts["created"] == 1
    assert [p["item"] for p in counts["problems"]] == [bad_id]
    status = user.get(f"{V1}/connections/{conn['id']}/status").json()
    assert [p["item"] for p in status["problems"]] == [bad_id]
    assert subjects(user) == ["Readable"]


def test_an_emptied_calendar_stops_the_sync_and_deletes_nothing(
    user: Api, server: CalDAVServer, calendar: CalDAVHarness, db_url: str
) -> None:
    conn = connect(user, server, calendar)
    for n in range(12):
        run(calendar.put_raw(ics(f"many-{n}", f"Event {n:02}", SOON + dt.timedelta(hours=n))))
    assert sync(user, conn["id"])["created"] == 12
    for event_id in calendar_events(calendar):
        run(calendar.remove(event_id))
    # As after an expired sync token: the next sync lists the whole calendar.
    edit_connection(db_url, conn["id"], remote_cursor=None)
    refused = user.post(f"{V1}/connections/{conn['id']}/sync")
    assert refused.status_code == 409
    assert "looks empty" in refused.json()["detail"]
    status = user.get(f"{V1}/connections/{conn['id']}/status").json()
    assert status["state"] == "error"
    assert "looks empty" in status["last_error"]
    assert len(subjects(user)) == 12
    assert sync(user, conn["id"], force="true")["deleted"] == 12


def test_a_crm_change_reaches_the_calendar_without_a_manual_sync(
    db_url: str, server: CalDAVServer, calendar: CalDAVHarness
) -> None:
    user_id, token = make_user(db_url, email="ivy@crm.test", name="Ivy")
    # Polling is hourly, so a change on the calendar within the minute was pushed.
    app = create_app(settings(db_url, poll_seconds=3600), background_jobs=True)
    with TestClient(app) as client:
        ivy = Api(client, token, user_id)
        conn = connect(ivy, server, calendar)
        # Waited for as long as a busy machine takes (wait_for's bound is a hang guard).
        status = f"{V1}/connections/{conn['id']}/status"
        wait_for(lambda: ivy.get(status).json()["last_sync_at"] is not None)
        activity(ivy, "Pushed at once")
        wait_for(lambda: calendar_events(calendar))
    assert [e.summary for e in calendar_events(calendar).values()] == ["Pushed at once"]


def test_a_failing_server_puts_only_its_connection_in_error(
    db_url: str, server: CalDAVServer, calendar: CalDAVHarness, closed_port_url: str
) -> None:
    good_id, good_token = make_user(db_url, email="good@crm.test", name="Good")
    bad_id, bad_token = make_user(db_url, email="bad@crm.test", name="Bad")
    with client_of(settings(db_url)) as client:
        good, bad = Api(client, good_token, good_id), Api(client, bad_token, bad_id)
        good_conn = connect(good, server, calendar)
        bad_conn = connect(bad, server, calendar)
        calendar_id = bad_conn["calendar_id"].replace(server.url, closed_port_url)
        edit_connection(db_url, bad_conn["id"], account=closed_port_url, calendar_id=calendar_id)
        failed = bad.post(f"{V1}/connections/{bad_conn['id']}/sync")
        assert failed.status_code == 409
        status = bad.get(f"{V1}/connections/{bad_conn['id']}/status").json()
        assert status["state"] == "error"
        assert "reach" in status["last_error"] or "refused" in status["last_error"]
        assert status["next_sync_at"] is not None  # retried later, with back-off
        activity(good, "Still syncing")
        assert sync(good, good_conn["id"])["created"] == 1


def test_crmcal_sync_command_shows_a_summary(
    user: Api, server: CalDAVServer, calendar: CalDAVHarness, db_url: str, crmcal_here: InProcess
) -> None:
    """What the command prints, run by its entry point in this process (a process of its
    own is killed mid-sync below)."""
    conn = connect(user, server, calendar)
    activity(user, "Via the CLI")
    env = {
        "CRMCAL_DATABASE_URL": db_url,
        "CRMCAL_SECRET_KEY": "test-key",
        "CRMCAL_ALLOW_PRIVATE_NETWORKS": "1",
    }
    result = crmcal_here("sync", str(conn["id"]), **env)
    assert result.returncode == 0, result.stderr
    assert "created" in result.stdout
    row = next(line for line in result.stdout.splitlines() if f" {conn['id']} " in line)
    cells = [cell.strip() for cell in row.strip("│┃ ").split("│")]
    assert cells == [str(conn["id"]), "1", "0", "0", "0", "0", "ok"]
    assert [e.summary for e in calendar_events(calendar).values()] == ["Via the CLI"]
    bad = crmcal_here("sync", **env)
    assert bad.returncode == 1
    assert bad.stderr.startswith("error: give a CONNECTION_ID or --all")


def _linked_at_least(db_path: Path, pid: int, count: int) -> bool:
    """Whether process ``pid`` runs a sync now, and ``count`` pairs are linked."""
    with contextlib.closing(sqlite3.connect(db_path, timeout=60)) as db:
        (running,) = db.execute(
            "SELECT count(*) FROM sync_runs WHERE outcome = 'running' AND process LIKE ?",
            (f"%:{pid}",),
        ).fetchone()
        (linked,) = db.execute("SELECT count(*) FROM sync_links").fetchone()
    return bool(running) and linked >= count


def test_killing_the_sync_at_random_points_converges_without_copies(
    radicale: CalDAVServer, sqlite_template: Path, tmp_path: Path
) -> None:
    """SIGKILL ``crmcal sync`` mid-run, again and again; the next run makes it whole."""
    db_path = tmp_path / "killed.db"
    shutil.copy(sqlite_template, db_path)
    db_url = f"sqlite:///{db_path}"
    calendar = CalDAVHarness(radicale)
    try:
        with client_of(settings(db_url)) as client:
            user_id, token = make_user(db_url, email="kim@crm.test", name="Kim")
            kim = Api(client, token, user_id)
            conn = connect(kim, radicale, calendar)
            for n in range(30):
                activity(kim, f"CRM {n:02}", hours=n)
                run(calendar.put_raw(ics(f"kill-{n}", f"Cal {n:02}", SOON + dt.timedelta(hours=n))))
        env = {**os.environ, "CRMCAL_DATABASE_URL": db_url, "CRMCAL_SECRET_KEY": "test-key",
               "CRMCAL_ALLOW_PRIVATE_NETWORKS": "1"}  # fmt: skip
        argv = [sys.executable, "-m", "crmcal", "sync", str(conn["id"])]
        rng = random.Random(7)
        for _ in range(5):
            # A killed run's lease frees the connection when it expires, soon here (each
            # run waits for the one before it to expire). A run starved past its lease
            # ends by itself, which the loop below takes as it comes.
            short = {**env, "CRMCAL_LEASE_SECONDS": "3"}
            proc = subprocess.Popen(argv, env=short, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)  # fmt: skip
            # Killed at a point of its progress, not of the clock: once its run is under
            # way and has linked some number of pairs (or when it has ended by itself).
            target = rng.randint(0, 59)
            deadline = time.monotonic() + 300
            while proc.poll() is None and not _linked_at_least(db_path, proc.pid, target):
                assert time.monotonic() < deadline, "the run never got under way"
                time.sleep(0.01)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        # The runs that finish keep the default lease (a minute): however starved, they
        # renew it in time, and they wait for the killed run's lease to expire.
        for _ in range(2):
            done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300,
                                  check=False)  # fmt: skip
            assert done.returncode == 0, done.stdout + done.stderr
        with client_of(settings(db_url)) as client:
            kim = Api(client, token, user_id)
            names = subjects(kim, limit=1000)
        expected = sorted([f"CRM {n:02}" for n in range(30)] + [f"Cal {n:02}" for n in range(30)])
        assert names == expected
        assert sorted(e.summary for e in calendar_events(calendar).values()) == expected
    finally:
        run(calendar.close())


def test_guests_of_a_private_event_are_not_listed_to_others(
    app_client: TestClient, db_url: str, user: Api, radicale: CalDAVServer
) -> None:
    calendar = CalDAVHarness(radicale)
    try:
        conn = connect(user, radicale, calendar)
        guest = "ATTENDEE;CN=Dr Who:mailto:doctor@clinic.test\r\nCLASS:PRIVATE\r\n"
        start = SOON + dt.timedelta(hours=2)
        run(calendar.put_raw(ics("private-1", "Therapy", start, extra=guest)))
        sync(user, conn["id"])
    finally:
        run(calendar.close())
    other_id, token = make_user(db_url, email="olga@crm.test", name="Olga")
    other = Api(app_client, token, other_id)

    def listed(api: Api) -> list[str]:
        items = api.get(f"{V1}/persons", params={"email": "doctor@clinic.test"}).json()["items"]
        return [p["name"] for p in items]

    assert listed(user) == ["Dr Who"]
    assert listed(other) == []
