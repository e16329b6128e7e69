"""The calendar and list views and the activity form, without a browser: what a user
sees of their own and colleagues' activities, filters, pages, create/edit/done/delete."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from fastapi.testclient import TestClient

from crmcal.web.ui import activities as views
from tests.conftest import Api
from tests.web_session import browser, csrf, people  # noqa: F401 - fixtures

MONDAY = dt.date(2031, 3, 3)


def add(user: Api, subject: str, day: dt.date, hour: int = 10, **fields: object) -> int:
    start = dt.datetime.combine(day, dt.time(hour), dt.UTC)
    body = {"type": "meeting", "subject": subject, "start": start.isoformat(),
            "end": (start + dt.timedelta(hours=1)).isoformat(), **fields}  # fmt: skip
    made = user.post("/api/v1/activities", json=body)
    assert made.status_code == 201, made.text
    return int(made.json()["id"])


def test_views_show_colleagues_and_busy_blocks(
    browser: TestClient,  # noqa: F811
    people: tuple[Api, Api],  # noqa: F811
) -> None:
    ann, bob = people
    add(ann, "Pitch to ACME", MONDAY, type="call")
    add(bob, "Team lunch", MONDAY + dt.timedelta(days=1), type="lunch")
    add(bob, "Doctor", MONDAY + dt.timedelta(days=2), visibility="owner", location="Clinic")
    week = browser.get("/calendar", params={"date": MONDAY.isoformat()})
    assert week.status_code == 200
    assert "New activity" in week.text
    for seen in ("Pitch to ACME", "Team lunch", "Busy"):
        assert seen in week.text
    assert "Doctor" not in week.text
    assert "Clinic" not in week.text
    assert 'class="busyblock' in week.text
    month = browser.get("/calendar", params={"view": "month", "date": MONDAY.isoformat()})
    assert "March 2031" in month.text
    assert "Team lunch" in month.text
    listed = browser.get("/activities", params={"from": MONDAY.isoformat()})
    assert "Doctor" not in listed.text
    assert "Busy" in listed.text
    calls = browser.get("/activities", params={"type": "call", "from": MONDAY.isoformat()})
    assert "Pitch to ACME" in calls.text
    assert "Team lunch" not in calls.text
    bobs = browser.get("/activities", params={"owner": str(bob.id)})
    assert "Team lunch" in bobs.text
    assert "Pitch to ACME" not in bobs.text


def test_list_view_pages(
    browser: TestClient,  # noqa: F811
    people: tuple[Api, Api],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ann, _bob = people
    monkeypatch.setattr(views, "PAGE_SIZE", 2)
    for n in range(5):
        add(ann, f"Call {n}", MONDAY + dt.timedelta(days=n))
    seen: list[str] = []
    url: str | None = "/activities?type=meeting"
    while url:
        text = browser.get(url).text
        seen += re.findall(r'<td class="[^"]*">(Call \d)', text)
        found = re.search(r'href="(/activities\?[^"]*cursor=[^"]+)">Next page', text)
        url = found.group(1).replace("&amp;", "&") if found else None
    assert seen == [f"Call {n}" for n in range(5)]


def test_create_edit_done_and_delete_from_the_form(
    browser: TestClient,  # noqa: F811
    people: tuple[Api, Api],  # noqa: F811
) -> None:
    ann, bob = people
    token = csrf(browser)
    form = {"csrf_token": token, "back": "/calendar", "type": "call", "subject": "Call Zed",
            "start": "2031-03-04T09:30", "end": "2031-03-04T10:00", "timezone": "Europe/Berlin",
            "location": "Phone", "note": "About the offer",
            "participants": "Zed Doe <zed@example.test>\nyan@example.test",
            "reminder_minutes": "15", "visibility": "everyone"}  # fmt: skip
    assert browser.post("/activities/new", data={**form, "csrf_token": ""}).status_code == 403
    bad = browser.post("/activities/new", data={**form, "end": "2031-03-04T08:00"})
    assert bad.status_code == 422
    assert "end: must not be before start" in bad.text
    made = browser.post("/activities/new", data=form, follow_redirects=False)
    assert made.status_code == 303
    assert made.headers["location"] == "/calendar"
    (item,) = ann.get("/api/v1/activities").json()["items"]
    assert item["start"] == "2031-03-04T09:30:00+01:00"
    assert [p["email"] for p in item["participants"]] == ["zed@example.test", "yan@example.test"]
    assert item["reminder_minutes"] == 15

    edit = browser.get(f"/activities/{item['id']}/edit")
    assert 'value="Call Zed"' in edit.text
    changed = {**form, "subject": "Call Zed again", "all_day": "on", "start": "2031-03-05T00:00",
               "end": "2031-03-05T00:00"}  # fmt: skip
    assert browser.post(f"/activities/{item['id']}/edit", data=changed).status_code == 200
    after = ann.get(f"/api/v1/activities/{item['id']}").json()
    assert after["subject"] == "Call Zed again"
    assert (after["all_day"], after["start"], after["end"]) == (True, "2031-03-05", "2031-03-06")

    browser.post(f"/activities/{item['id']}/done", data={"csrf_token": token, "done": "true"})
    assert ann.get(f"/api/v1/activities/{item['id']}").json()["done"] is True
    assert "Call Zed again" in browser.get("/activities", params={"done": "yes"}).text
    assert "Call Zed again" not in browser.get("/activities", params={"done": "no"}).text

    others = add(bob, "Bob's", MONDAY)
    refused = browser.post(f"/activities/{others}/delete", data={"csrf_token": token})
    assert refused.status_code == 403
    browser.post(f"/activities/{item['id']}/delete", data={"csrf_token": token})
    assert ann.get(f"/api/v1/activities/{item['id']}").json()["deleted_at"] is not None
