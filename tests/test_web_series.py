"""Recurring activities in the web pages, without a browser: "Repeat" in the form, and
"this / this and following / all" when an occurrence is edited or deleted."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.conftest import Api
from tests.web_session import browser, csrf, people  # noqa: F401 - fixtures

FORM = {"back": "/activities", "type": "meeting", "subject": "Weekly",
        "start": "2031-03-04T09:30", "end": "2031-03-04T10:00", "timezone": "Europe/Berlin",
        "visibility": "everyone"}  # fmt: skip


def occurrences(api: Api, series_id: int) -> list[dict[str, Any]]:
    found = api.get("/api/v1/activities", params={"series_id": series_id}).json()["items"]
    return list(found)


def test_repeat_makes_a_series_and_edits_ask_what_they_apply_to(
    browser: TestClient,  # noqa: F811
    people: tuple[Api, Api],  # noqa: F811
) -> None:
    ann, _bob = people
    token = csrf(browser)
    new = browser.get("/activities/new")
    assert "Repeat" in new.text
    assert "Every week" in new.text
    assert "All in the series" not in new.text  # a new activity has no series yet
    made = browser.post("/activities/new", data={**FORM, "csrf_token": token,
                                                  "recurrence": "FREQ=WEEKLY"},
                        follow_redirects=False)  # fmt: skip
    assert made.status_code == 303, made.text
    first = ann.get("/api/v1/activities").json()["items"][0]
    assert first["series_id"] is not None
    assert first["recurrence"] == "FREQ=WEEKLY"
    series = occurrences(ann, first["series_id"])
    assert len(series) > 40

    second = series[1]
    edit = browser.get(f"/activities/{second['id']}/edit")
    for choice in ("This activity", "This and following", "All in the series"):
        assert choice in edit.text
    assert 'value="FREQ=WEEKLY" selected' in edit.text
    form = {**FORM, "csrf_token": token, "recurrence": "FREQ=WEEKLY",
            "start": second["start"][:16], "end": second["end"][:16]}  # fmt: skip
    alone = browser.post(f"/activities/{second['id']}/edit",
                         data={**form, "subject": "Moved", "scope": "this"})  # fmt: skip
    assert alone.status_code == 200, alone.text
    assert [o["subject"] for o in occurrences(ann, first["series_id"])[:3]] == [
        "Weekly", "Moved", "Weekly"]  # fmt: skip
    third = series[2]
    form = {**form, "start": third["start"][:16], "end": third["end"][:16]}
    everything = browser.post(f"/activities/{third['id']}/edit",
                              data={**form, "subject": "Team call", "scope": "series"})  # fmt: skip
    assert everything.status_code == 200, everything.text
    after = occurrences(ann, first["series_id"])
    assert [o["subject"] for o in after[:4]] == ["Team call", "Moved", "Team call", "Team call"]

    listed = browser.get("/activities")
    assert "Delete which" in listed.text
    browser.post(f"/activities/{after[2]['id']}/delete",
                 data={"csrf_token": token, "scope": "following"})  # fmt: skip
    assert [o["id"] for o in occurrences(ann, first["series_id"])] == [
        after[0]["id"], after[1]["id"]]  # fmt: skip
    browser.post(f"/activities/{after[0]['id']}/delete",
                 data={"csrf_token": token, "scope": "series"})  # fmt: skip
    assert occurrences(ann, first["series_id"]) == []
