"""The calendar sync settings page without a browser: a CalDAV account (Radicale) added,
kept pending while chosen, started, stopped, moved and reconnected through its forms."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tests import sync_api
from tests.conftest import client_of, make_user, run
from tests.providers.harness import CalDAVHarness, CalDAVServer
from tests.sync_api import edit_connection, events_in, on_radicale, settings
from tests.web_session import PASSWORD, sign_in

PAGE = "/settings/calendar-sync"


# sync_api's fixtures: a fresh calendar, here on Radicale alone.
server, calendar = sync_api.server, sync_api.calendar
pytestmark = on_radicale


@pytest.fixture
def browser(db_url: str) -> Iterator[TestClient]:
    make_user(db_url, email="sam@crm.test", name="Sam", password=PASSWORD)
    with client_of(settings(db_url)) as client:
        assert sign_in(client, "sam@crm.test").status_code == 303
        yield client


def csrf(client: TestClient) -> str:
    found = re.search(r'name="csrf-token" content="([^"]+)"', client.get(PAGE).text)
    assert found
    return found.group(1)


def test_settings_page_connects_caldav_and_syncs_only_after_start(
    browser: TestClient, radicale: CalDAVServer, calendar: CalDAVHarness
) -> None:
    page = browser.get(PAGE)
    assert page.status_code == 200
    assert "Add new account" in page.text
    choices = browser.get(PAGE, params={"add": "account"}).text
    for name in ("Google", "Microsoft 365 / Outlook", "CalDAV"):
        assert f">{name}</button>" in choices
    token = csrf(browser)
    form = {"csrf_token": token, "url": radicale.url, "username": radicale.username}
    wrong = browser.post(f"{PAGE}/caldav", data={**form, "password": "nope"})
    assert wrong.status_code == 422
    assert "refused the user name or password" in wrong.text
    assert "app password" in wrong.text
    added = browser.post(f"{PAGE}/caldav", data={**form, "password": radicale.password},
                         follow_redirects=False)  # fmt: skip
    assert added.status_code == 303, added.text
    pending = browser.get(PAGE).text
    assert "Start sync" in pending
    assert "crmcal tests" in pending  # the calendars to choose from
    conn = browser.get("/api/v1/connections").json()["items"][0]
    assert conn["state"] == "pending"
    browser.post("/api/v1/activities", headers={"X-CSRF-Token": token}, json={
        "type": "call", "subject": "Call Ann", "start": "2031-01-02T10:00:00Z"})  # fmt: skip
    chosen = browser.patch(f"/api/v1/connections/{conn['id']}", headers={"X-CSRF-Token": token},
                           json={"calendar_id": calendar.calendar_id,
                                 "options": {"backfill_days": 3}})  # fmt: skip
    assert chosen.status_code == 200, chosen.text
    assert events_in(calendar, calendar.calendar_id) == []
    assert 'value="3"' in browser.get(PAGE).text  # kept

    started = browser.post(f"{PAGE}/{conn['id']}/start", data={"csrf_token": token},
                           follow_redirects=False)  # fmt: skip
    assert started.status_code == 303
    assert browser.post(f"/api/v1/connections/{conn['id']}/sync",
                        headers={"X-CSRF-Token": token}).status_code == 200  # fmt: skip
    assert len(events_in(calendar, calendar.calendar_id)) == 1
    running = browser.get(PAGE).text
    assert "Stop sync" in running
    assert "Last synced" in running

    refused = browser.post(f"{PAGE}/{conn['id']}/stop", data={})
    assert refused.status_code == 403
    browser.post(f"{PAGE}/{conn['id']}/stop", data={"csrf_token": token})
    stopped = browser.get(PAGE).text
    assert "Previously synced accounts" in stopped
    assert "Reconnect" in stopped
    second = run(calendar.make_second_calendar())
    assert "second calendar" in browser.get(PAGE, params={"move": conn["id"]}).text
    move = {"csrf_token": token, "calendar_id": second}
    moved = browser.post(f"{PAGE}/{conn['id']}/move", data=move, follow_redirects=False)
    assert moved.status_code == 303, moved.text
    browser.post(f"{PAGE}/{conn['id']}/reconnect", data={"csrf_token": token})
    assert browser.get(f"/api/v1/connections/{conn['id']}").json()["state"] == "active"
    assert browser.post(f"/api/v1/connections/{conn['id']}/sync",
                        headers={"X-CSRF-Token": token}).status_code == 200  # fmt: skip
    assert len(events_in(calendar, second)) == 1


def test_skipped_items_and_a_failed_sync_say_what_to_do(
    browser: TestClient, radicale: CalDAVServer, calendar: CalDAVHarness, db_url: str
) -> None:
    token = csrf(browser)
    form = {"csrf_token": token, "url": radicale.url, "username": radicale.username,
            "password": radicale.password}  # fmt: skip
    browser.post(f"{PAGE}/caldav", data=form)
    conn = browser.get("/api/v1/connections").json()["items"][0]
    browser.post(f"{PAGE}/{conn['id']}/start", data={"csrf_token": token})
    made = browser.post("/api/v1/activities", headers={"X-CSRF-Token": token}, json={
        "type": "call", "subject": "Odd call", "start": "2031-01-02T10:00:00Z"})  # fmt: skip
    odd = made.json()["id"]
    edit_connection(db_url, conn["id"], state="error",
                    last_error="the calendar refused the credentials (401): reconnect to resume",
                    problems=[{"item": "bad.ics", "reason": "not a calendar event"},
                              {"item": f"activity {odd}", "reason": "refused"}])  # fmt: skip
    listed = browser.get("/activities").text
    assert re.search(r"Odd call.*?badge problem", listed, re.S)
    page = browser.get(PAGE).text
    assert "reconnect to resume" in page
    assert "New password (if it changed)" in page
    assert "bad.ics: not a calendar event" in page
    assert "the next sync tries it again" in page
    assert "for lack of room" not in page  # nothing was left out: no count
    # syncs found more than the connection keeps: the page says how many more
    edit_connection(db_url, conn["id"], left_out={"problems": 1200, "refusals": 34})
    more = "Items the last sync had to skip (2) · More not kept, for lack of room: 1,234"
    assert more in browser.get(PAGE).text
    german = browser.get(PAGE, headers={"Accept-Language": "de"}).text
    assert "(2) · Weitere, aus Platzmangel nicht aufbewahrt: 1.234" in german
    fixed = browser.post(f"{PAGE}/{conn['id']}/reconnect",
                         data={"csrf_token": token, "password": radicale.password})  # fmt: skip
    assert fixed.status_code == 200
    assert browser.get(f"/api/v1/connections/{conn['id']}").json()["state"] == "active"
