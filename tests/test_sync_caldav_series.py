"""CRM series to real CalDAV servers (Radicale, Xandikos), driven through the REST API:
one resource with its rule and left-out dates, never one event per occurrence."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from tests import test_sync_caldav_api as api
from tests.conftest import Api, run
from tests.providers.harness import CalDAVHarness, CalDAVServer

V1, calendar_events, connect, sync = api.V1, api.calendar_events, api.connect, api.sync
# The fixtures of the CalDAV API tests: both servers, a fresh calendar, an API user.
server, calendar, app_client, user = api.server, api.calendar, api.app_client, api.user

BERLIN = ZoneInfo("Europe/Berlin")


def next_tuesday_nine() -> dt.datetime:
    """09:00 Berlin time on a Tuesday soon, so that 20 weeks span a DST switch."""
    today = dt.datetime.now(BERLIN).date() + dt.timedelta(days=7)
    day = today + dt.timedelta(days=(1 - today.weekday()) % 7)
    return dt.datetime.combine(day, dt.time(9), BERLIN)


def occurrences(user: Api, series_id: int, **params: object) -> list[dict[str, object]]:
    listed = user.get(f"{V1}/activities", params={"series_id": series_id, "limit": 100, **params})
    assert listed.status_code == 200, listed.text
    return listed.json()["items"]  # type: ignore[no-any-return]


def test_a_crm_series_becomes_one_calendar_series_and_goes_with_it(
    user: Api, server: CalDAVServer, calendar: CalDAVHarness
) -> None:
    conn = connect(user, server, calendar)
    start = next_tuesday_nine()
    body = {"type": "meeting", "subject": "Weekly pipeline review", "timezone": "Europe/Berlin",
            "start": start.isoformat(), "end": (start + dt.timedelta(hours=1)).isoformat(),
            "recurrence": "FREQ=WEEKLY;COUNT=20"}  # fmt: skip
    made = user.post(f"{V1}/activities", json=body)
    assert made.status_code == 201, made.text
    series_id = made.json()["series_id"]
    listed = occurrences(user, series_id)
    assert len(listed) == 20
    cancelled = listed[3]
    gone = user.delete(f"{V1}/activities/{cancelled['id']}")
    assert gone.status_code == 200, gone.text

    counts = sync(user, conn["id"])
    assert (counts["created"], counts["skipped"], counts["problems"]) == (1, 0, [])
    events = calendar_events(calendar)
    assert len(events) == 1  # one series, never a pile of single events
    ((event_id, event),) = events.items()
    assert event.summary == "Weekly pipeline review"
    assert event.recurrence is not None
    assert event.recurrence.rrule == "FREQ=WEEKLY;COUNT=20"
    left_out = [m.astimezone(dt.UTC) for m in event.recurrence.exdates]  # type: ignore[union-attr]
    assert left_out == [dt.datetime.fromisoformat(str(cancelled["original_start"]))]
    # 09:00 Berlin wall time, so every occurrence stays at 09:00 across the switches.
    raw = run(calendar.read_raw(event_id))
    assert f"DTSTART;TZID=Europe/Berlin:{start:%Y%m%d}T090000" in raw.replace("\r\n ", "")
    assert event.start == start

    # Nothing sent twice, nothing reported, on the next runs.
    again = sync(user, conn["id"])
    assert (again["created"], again["skipped"], again["problems"]) == (0, 0, [])
    assert list(calendar_events(calendar)) == [event_id]

    # Deleting the whole series in the CRM deletes the one series in the calendar.
    first = occurrences(user, series_id)[0]
    deleted = user.delete(f"{V1}/activities/{first['id']}", params={"scope": "series"})
    assert deleted.status_code == 200, deleted.text
    counts = sync(user, conn["id"])
    assert counts["deleted"] == 1
    assert calendar_events(calendar) == {}
    assert occurrences(user, series_id) == []
