"""A connection made with ``"start": false`` stays pending, its calendar and options
chosen before anything syncs; a stopped one can move to another calendar (Radicale)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from tests import sync_api
from tests.conftest import Api, client_of, make_user, run
from tests.providers.harness import CalDAVHarness, CalDAVServer, Foreign
from tests.sync_api import (
    SOON,
    activity,
    calendar_events,
    events_in,
    on_radicale,
    settings,
    subjects,
)

V1 = "/api/v1"


# sync_api's fixtures: a fresh calendar, here on Radicale alone.
server, calendar = sync_api.server, sync_api.calendar
pytestmark = on_radicale


@pytest.fixture
def sam(db_url: str) -> Iterator[Api]:
    with client_of(settings(db_url)) as client:
        user_id, token = make_user(db_url, email="sam@crm.test", name="Sam")
        yield Api(client, token, user_id)


def test_nothing_syncs_until_start_and_the_calendar_is_chosen_first(
    sam: Api, radicale: CalDAVServer, calendar: CalDAVHarness
) -> None:
    second = run(calendar.make_second_calendar())
    end = SOON + dt.timedelta(hours=1)
    run(calendar.put_foreign(Foreign(summary="Dentist", start=SOON, end=end, name="dentist.ics")))
    activity(sam, "Pitch")
    body = {"provider": "caldav", "url": radicale.url, "username": radicale.username,
            "password": radicale.password, "start": False}  # fmt: skip
    made = sam.post(f"{V1}/connections", json=body)
    assert made.status_code == 201, made.text
    conn = made.json()
    assert conn["state"] == "pending"
    assert sam.post(f"{V1}/connections/{conn['id']}/sync").status_code == 409
    names = {
        c["id"]: c for c in sam.get(f"{V1}/connections/{conn['id']}/calendars").json()["items"]
    }
    assert second in names

    chosen = sam.patch(f"{V1}/connections/{conn['id']}", json={
        "calendar_id": second, "sync_type": "crm_to_calendar",
        "options": {"backfill_days": 1}})  # fmt: skip
    assert chosen.status_code == 200, chosen.text
    assert chosen.json()["calendar_id"] == second
    assert chosen.json()["state"] == "pending"
    unknown = sam.patch(f"{V1}/connections/{conn['id']}", json={"calendar_id": second + "x/"})
    assert unknown.status_code == 409  # the account has no such calendar
    # Nothing was written to either side while pending.
    assert events_in(calendar, second) == []
    assert len(calendar_events(calendar)) == 1  # only the dentist
    assert subjects(sam) == ["Pitch"]

    started = sam.post(f"{V1}/connections/{conn['id']}/start")
    assert started.status_code == 200, started.text
    assert started.json()["state"] == "active"
    assert sam.post(f"{V1}/connections/{conn['id']}/start").status_code == 409
    assert sam.post(f"{V1}/connections/{conn['id']}/sync").status_code == 200
    assert len(events_in(calendar, second)) == 1
    assert subjects(sam) == ["Pitch"]  # crm_to_calendar: the dentist stays out
    running = sam.patch(
        f"{V1}/connections/{conn['id']}", json={"calendar_id": calendar.calendar_id}
    )
    assert running.status_code == 409


def test_a_stopped_connection_moves_to_another_calendar(
    sam: Api, radicale: CalDAVServer, calendar: CalDAVHarness
) -> None:
    second = run(calendar.make_second_calendar())
    activity(sam, "Review")
    body = {"provider": "caldav", "url": radicale.url, "username": radicale.username,
            "password": radicale.password, "calendar_id": calendar.calendar_id}  # fmt: skip
    conn = sam.post(f"{V1}/connections", json=body).json()
    assert conn["state"] == "active"
    # The activity predates the connection: a backfill brings it along.
    sam.patch(f"{V1}/connections/{conn['id']}", json={"options": {"backfill_days": 1}})
    assert sam.post(f"{V1}/connections/{conn['id']}/sync").status_code == 200
    assert len(events_in(calendar, calendar.calendar_id)) == 1

    assert sam.post(f"{V1}/connections/{conn['id']}/stop").status_code == 200
    moved = sam.patch(f"{V1}/connections/{conn['id']}", json={"calendar_id": second})
    assert moved.status_code == 200, moved.text
    assert moved.json()["calendar_id"] == second
    assert sam.post(f"{V1}/connections/{conn['id']}/reconnect").status_code == 200
    assert sam.post(f"{V1}/connections/{conn['id']}/sync").status_code == 200
    assert len(events_in(calendar, second)) == 1
    # The old calendar keeps its event; the CRM did not lose or double the activity.
    assert len(events_in(calendar, calendar.calendar_id)) == 1
    assert subjects(sam) == ["Review"]
