"""CRM series to real CalDAV servers (Radicale, Xandikos), driven through the REST API:
one resource with its rule and left-out dates, never one event per occurrence."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from tests import sync_api as api
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
    return listed.json()["items"]


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
    left_out = [m.astimezone(dt.UTC) for m in event.recurrence.exdates]
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


def series_ics(uid: str, summary: str, start: dt.datetime, rule: str, extra: str = "") -> str:
    """A weekly series as another client writes it: wall times in Europe/Berlin."""
    local = "%Y%m%dT%H%M%S"
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//test//EN\r\nBEGIN:VEVENT\r\n"
        f"UID:{uid}\r\nDTSTAMP:20260101T000000Z\r\n"
        f"DTSTART;TZID=Europe/Berlin:{start.strftime(local)}\r\n"
        f"DTEND;TZID=Europe/Berlin:{(start + dt.timedelta(hours=1)).strftime(local)}\r\n"
        f"RRULE:{rule}\r\nSUMMARY:{summary}\r\n{extra}END:VEVENT\r\nEND:VCALENDAR\r\n"
    )


def test_a_calendar_series_becomes_one_crm_series_of_the_incoming_type(
    user: Api, server: CalDAVServer, calendar: CalDAVHarness
) -> None:
    conn = connect(user, server, calendar, options={"incoming_activity_type": "call"})
    start = next_tuesday_nine()
    skipped = start + dt.timedelta(weeks=2)
    local = "%Y%m%dT%H%M%S"
    run(calendar.put_raw(series_ics(
        "weekly-call", "Weekly call", start, "FREQ=WEEKLY;COUNT=20",
        f"EXDATE;TZID=Europe/Berlin:{skipped.strftime(local)}\r\n",
    )))  # fmt: skip
    # A series with an occurrence moved on its own: that occurrence comes in moved.
    day = start + dt.timedelta(days=1)
    override = (
        "BEGIN:VEVENT\r\nUID:moved\r\nDTSTAMP:20260101T000000Z\r\n"
        f"RECURRENCE-ID;TZID=Europe/Berlin:{day.strftime(local)}\r\n"
        f"DTSTART;TZID=Europe/Berlin:{(day + dt.timedelta(hours=2)).strftime(local)}\r\n"
        f"DTEND;TZID=Europe/Berlin:{(day + dt.timedelta(hours=3)).strftime(local)}\r\n"
        "SUMMARY:Moved one\r\nEND:VEVENT\r\nEND:VCALENDAR"
    )
    text = series_ics("moved", "Moved one", start, "FREQ=DAILY;COUNT=3")
    run(calendar.put_raw(text.replace("END:VCALENDAR", override)))

    counts = sync(user, conn["id"])
    assert (counts["created"], counts["skipped"], counts["problems"]) == (2, 0, [])
    everything = user.get(f"{V1}/activities", params={"limit": 100}).json()["items"]
    moved = [a for a in everything if a["subject"] == "Moved one"]
    assert len(moved) == 3
    late = [a for a in moved if a["start"] != a["original_start"]]
    assert [dt.datetime.fromisoformat(a["start"]) for a in late] == [day + dt.timedelta(hours=2)]
    listed = [a for a in everything if a["subject"] == "Weekly call"]
    series_ids = {a["series_id"] for a in listed}
    assert len(series_ids) == 1
    assert None not in series_ids
    assert len(listed) == 19
    assert {a["type"] for a in listed} == {"call"}
    # 09:00 Berlin on every occurrence, before and after the daylight-saving switch.
    starts = [dt.datetime.fromisoformat(a["start"]).astimezone(BERLIN) for a in listed]
    assert {s.time() for s in starts} == {dt.time(9)}
    assert {s.utcoffset() for s in starts} == {dt.timedelta(hours=1), dt.timedelta(hours=2)}
    assert skipped not in starts
    shown = user.get(f"{V1}/series/{series_ids.pop()}").json()
    assert "FREQ=WEEKLY" in str(shown)

    # The next run neither imports it again nor sends it back.
    again = sync(user, conn["id"])
    assert (again["created"], again["updated"]) == (0, 0)
    assert len(user.get(f"{V1}/activities", params={"limit": 100}).json()["items"]) == 22
    assert len(calendar_events(calendar)) == 2


def test_crm_edits_of_a_series_rewrite_the_one_calendar_series(
    user: Api, server: CalDAVServer, calendar: CalDAVHarness
) -> None:
    conn = connect(user, server, calendar)
    start = next_tuesday_nine()
    body = {"type": "meeting", "subject": "Team sync", "timezone": "Europe/Berlin",
            "start": start.isoformat(), "end": (start + dt.timedelta(hours=1)).isoformat(),
            "recurrence": "FREQ=WEEKLY;COUNT=20"}  # fmt: skip
    first = user.post(f"{V1}/activities", json=body).json()
    series_id = first["series_id"]
    assert sync(user, conn["id"])["created"] == 1
    ((event_id, _),) = calendar_events(calendar).items()

    # The whole series: new subject, an hour later, every second week.
    later = start + dt.timedelta(hours=1)
    edit = {"subject": "Team sync (new)", "start": later.isoformat(),
            "end": (later + dt.timedelta(hours=1)).isoformat(),
            "recurrence": "FREQ=WEEKLY;INTERVAL=2;COUNT=10", "scope": "series"}  # fmt: skip
    edited = user.patch(f"{V1}/activities/{first['id']}", json=edit)
    assert edited.status_code == 200, edited.text
    counts = sync(user, conn["id"])
    assert (counts["updated"], counts["created"], counts["skipped"]) == (1, 0, 0)
    ((same_id, event),) = calendar_events(calendar).items()
    assert same_id == event_id
    assert event.summary == "Team sync (new)"
    # A server may reorder the parts of a rule (Xandikos does).
    assert set(event.recurrence.rrule.split(";")) == {"FREQ=WEEKLY", "INTERVAL=2", "COUNT=10"}
    raw = run(calendar.read_raw(event_id)).replace("\r\n ", "")
    assert f"DTSTART;TZID=Europe/Berlin:{start:%Y%m%d}T100000" in raw

    # One occurrence to the trash: an EXDATE of the same series.
    listed = occurrences(user, series_id)
    assert len(listed) == 10
    cancelled = listed[5]
    assert user.delete(f"{V1}/activities/{cancelled['id']}").status_code == 200
    counts = sync(user, conn["id"])
    assert (counts["updated"], counts["deleted"], counts["skipped"]) == (1, 0, 0)
    ((_, event),) = calendar_events(calendar).items()
    assert [m.astimezone(dt.UTC) for m in event.recurrence.exdates] == [
        dt.datetime.fromisoformat(str(cancelled["original_start"]))
    ]

    # One occurrence changed on its own: an override in the same resource.
    moved = listed[2]
    patched = user.patch(f"{V1}/activities/{moved['id']}", json={"subject": "Special"})
    assert patched.status_code == 200, patched.text
    counts = sync(user, conn["id"])
    assert (counts["updated"], counts["skipped"], counts["problems"]) == (1, 0, [])
    ((_, event),) = calendar_events(calendar).items()
    assert event.summary == "Team sync (new)"
    assert [o.summary for o in event.overrides] == ["Special"]
    raw = run(calendar.read_raw(event_id)).replace("\r\n ", "")
    assert raw.count("RECURRENCE-ID") == 1


def test_calendar_edits_of_a_synced_series_reach_the_crm_series(
    user: Api, server: CalDAVServer, calendar: CalDAVHarness
) -> None:
    conn = connect(user, server, calendar)
    start = next_tuesday_nine()
    text = series_ics("call", "Weekly call", start, "FREQ=WEEKLY;COUNT=8")
    event_id = run(calendar.put_raw(text))
    assert sync(user, conn["id"])["created"] == 1
    (series_id,) = {a["series_id"] for a in user.get(f"{V1}/activities").json()["items"]}
    assert len(occurrences(user, series_id)) == 8

    # Retitled and one occurrence cancelled in the calendar.
    cancelled = start + dt.timedelta(weeks=3)
    exdate = f"EXDATE;TZID=Europe/Berlin:{cancelled:%Y%m%dT%H%M%S}\r\nSUMMARY:"

    def edited(text: str) -> str:
        return text.replace("SUMMARY:Weekly call", "SUMMARY:Weekly call v2").replace(
            "SUMMARY:", exdate, 1
        )

    run(calendar.edit(event_id, edited))
    counts = sync(user, conn["id"])
    assert (counts["updated"], counts["skipped"], counts["problems"]) == (1, 0, [])
    live = occurrences(user, series_id)
    assert len(live) == 7
    assert {a["subject"] for a in live} == {"Weekly call v2"}
    starts = {dt.datetime.fromisoformat(str(a["start"])) for a in live}
    assert cancelled not in starts
    trashed = occurrences(user, series_id, deleted="true")
    assert [dt.datetime.fromisoformat(str(a["start"])) for a in trashed] == [cancelled]

    # Deleted in the calendar: the whole CRM series goes to the trash.
    run(calendar.remove(event_id))
    counts = sync(user, conn["id"])
    assert counts["deleted"] == 1
    assert occurrences(user, series_id) == []


@pytest.mark.parametrize("titles_own", [1, 3], ids=["one-title-own", "every-title-own"])
def test_a_series_renamed_in_the_crm_with_every_occurrence_changed_on_its_own(
    user: Api, server: CalDAVServer, calendar: CalDAVHarness, titles_own: int
) -> None:
    """Every occurrence of a series already has a change of its own (an override each)
    when the CRM renames the series: the rename reaches the series there and the
    occurrences whose title followed the series, and those whose title was edited on
    their own keep it; also when every title is an occurrence's own, and the rename
    changes no occurrence in the CRM, only the series (the later occurrences)."""
    conn = connect(user, server, calendar)
    start = next_tuesday_nine()
    body = {"type": "meeting", "subject": "Team sync", "timezone": "Europe/Berlin",
            "start": start.isoformat(), "end": (start + dt.timedelta(hours=1)).isoformat(),
            "recurrence": "FREQ=WEEKLY;COUNT=3"}  # fmt: skip
    first = user.post(f"{V1}/activities", json=body).json()
    series_id = first["series_id"]
    assert sync(user, conn["id"])["created"] == 1
    own = [{"location": f"Room {n}"} for n in range(3 - titles_own)]
    own += [{"subject": f"Special {n}"} for n in range(titles_own)]
    for occurrence, change in zip(occurrences(user, series_id), own, strict=True):
        patched = user.patch(f"{V1}/activities/{occurrence['id']}", json=change)
        assert patched.status_code == 200, patched.text
    counts = sync(user, conn["id"])
    assert (counts["updated"], counts["problems"]) == (1, []), counts
    ((event_id, event),) = calendar_events(calendar).items()
    assert len(event.overrides) == 3

    renamed = user.patch(f"{V1}/activities/{first['id']}",
                         json={"subject": "Team sync (new)", "scope": "series"})  # fmt: skip
    assert renamed.status_code == 200, renamed.text
    wanted = [(c.get("subject", "Team sync (new)"), c.get("location")) for c in own]
    assert [(o["subject"], o["location"]) for o in occurrences(user, series_id)] == wanted
    counts = sync(user, conn["id"])

    assert (counts["updated"], counts["skipped"], counts["problems"]) == (1, 0, []), counts
    ((same_id, event),) = calendar_events(calendar).items()
    assert same_id == event_id
    assert event.summary == "Team sync (new)"
    by_start = sorted(event.overrides, key=lambda o: str(o.recurrence_id))
    assert [(o.summary, o.location) for o in by_start] == wanted
    again = sync(user, conn["id"])
    assert (again["updated"], again["created"], again["problems"]) == (0, 0, []), again
    assert [(o["subject"], o["location"]) for o in occurrences(user, series_id)] == wanted
