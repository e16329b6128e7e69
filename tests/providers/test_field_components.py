"""Calendars that hold more than events, through a whole sync.

A collection may hold tasks (``VTODO``) and journal entries (``VJOURNAL``) beside its
events (RFC 4791 4.1), and a client may even write an event and a task into one
resource (which RFC 4791 forbids and Xandikos stores all the same). crmcal syncs
events only: what it does not sync is neither imported, nor deleted, nor rewritten,
however often the calendar is listed. A task list (its
``supported-calendar-component-set`` without ``VEVENT``) is refused when a
connection names it, saying why.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import pytest

from crmcal.crm.errors import Invalid
from crmcal.model import CalendarInfo
from crmcal.sync.connections import pick_calendar
from tests.caldav_proxy import Behaviour
from tests.providers.harness import calendar_text
from tests.providers.synced import SOON, V1, Proxied

LOCAL = "%Y%m%dT%H%M%S"


def component(kind: str, uid: str, summary: str, start: dt.datetime, *extra: str) -> str:
    times = (
        [f"DTSTART:{start:{LOCAL}}Z", f"DTEND:{start + dt.timedelta(hours=1):{LOCAL}}Z"]
        if kind == "VEVENT"
        else [f"DTSTART:{start:{LOCAL}}Z"]
    )
    lines = [f"UID:{uid}", "DTSTAMP:20261101T080000Z", f"SUMMARY:{summary}", *times, *extra]
    return f"BEGIN:{kind}\n" + "\n".join(lines) + f"\nEND:{kind}\n"


async def test_tasks_and_journal_entries_beside_events_are_never_imported_deleted_or_rewritten(
    proxied: Proxied,
    behaviour: Behaviour,
) -> None:
    harness = proxied.harness
    start = SOON.astimezone(dt.UTC).replace(tzinfo=None) + dt.timedelta(days=1)
    task = calendar_text(component("VTODO", f"task-{uuid.uuid4().hex}", "A task", start,
                                   "DUE:20301201T170000Z", "STATUS:NEEDS-ACTION"))  # fmt: skip
    journal = calendar_text(
        component("VJOURNAL", f"note-{uuid.uuid4().hex}", "A journal entry", start,
                  "DESCRIPTION:Notes of the day")
    )  # fmt: skip
    both = f"both-{uuid.uuid4().hex}"
    mixed = calendar_text(
        component("VEVENT", both, "Event and task", start + dt.timedelta(hours=2)),
        component("VTODO", both, "Event and task", start, "DUE:20301201T170000Z"),
    )
    ids = {"task": await harness.put_raw(task), "journal": await harness.put_raw(journal)}
    try:
        ids["mixed"] = await harness.put_raw(mixed)
    except AssertionError:  # Radicale refuses two component types in one resource
        assert harness.kind == "radicale"
    await harness.put_raw(calendar_text(component(
        "VEVENT", f"fine-{uuid.uuid4().hex}", "Fine", start + dt.timedelta(hours=4))))  # fmt: skip
    stored = {name: await harness.read_raw(href) for name, href in ids.items()}
    proxied.connect()
    counts = proxied.sync_with_problems()
    subjects = sorted(a["subject"] for a in proxied.activities())
    assert "A task" not in subjects
    assert "A journal entry" not in subjects
    assert "Fine" in subjects
    problems = {p["item"]: p["reason"] for p in counts["problems"]}
    assert ids["task"] not in problems
    assert ids["journal"] not in problems
    if "mixed" in ids:  # reported, and left alone
        assert "Event and task" not in subjects
        assert "VTODO" in problems[ids["mixed"]]
    # Listed again and again (a new option lists everything), edited in the CRM,
    # deleted there: nothing of what crmcal does not sync is touched.
    proxied.set_options(include_deal_and_contact_info=True)
    proxied.sync_with_problems()
    for activity in proxied.activities():
        proxied.edit_activity(activity["id"], location="Room 9")
    proxied.sync_with_problems()
    for activity in proxied.activities():
        assert proxied.user.delete(f"{V1}/activities/{activity['id']}").status_code in (200, 204)
    proxied.sync_with_problems()
    for name, href in ids.items():
        assert await harness.read_raw(href) == stored[name], name


async def test_a_task_list_is_refused_when_a_connection_names_it(
    proxied: Proxied,
) -> None:
    harness = proxied.harness
    principal = harness._principal
    tasks = await asyncio.to_thread(
        principal.make_calendar, name="Tasks", cal_id=uuid.uuid4().hex,
        supported_calendar_component_set=["VTODO"],
    )  # fmt: skip
    body = {**harness.connection_body(), "calendar_id": str(tasks.url), "sync_type": "two_way"}
    refused = proxied.user.post(f"{V1}/connections", json=body)
    assert refused.status_code in (409, 422), refused.text
    detail = refused.json()["detail"]
    assert "'Tasks' is a task list" in detail
    assert "crmcal syncs events" in detail
    # Nor is it offered among the account's calendars.
    connection = proxied.user.post(f"{V1}/connections", json=harness.connection_body())
    assert connection.status_code == 201, connection.text
    listed = proxied.user.get(f"{V1}/connections/{connection.json()['id']}/calendars")
    assert listed.status_code == 200, listed.text
    ids = [c["id"] for c in listed.json()["items"]]
    assert harness.calendar_id in ids
    assert str(tasks.url) not in ids


async def test_an_account_whose_default_calendar_is_a_task_list_connects_to_an_event_calendar(
    proxied: Proxied,
) -> None:
    """Connected by the account's URL alone, crmcal picks the calendar to sync itself:
    never a task list, even one named as servers name the default calendar."""
    harness = proxied.harness
    tasks = await asyncio.to_thread(
        harness._principal.make_calendar, name="Default", cal_id=uuid.uuid4().hex,
        supported_calendar_component_set=["VTODO"],
    )  # fmt: skip
    body = {**harness.connection_body(), "url": harness.principal_url, "sync_type": "two_way"}
    del body["calendar_id"]
    made = proxied.user.post(f"{V1}/connections", json=body)
    assert made.status_code == 201, made.text
    chosen = made.json()["calendar_id"]
    assert chosen != str(tasks.url)
    listed = proxied.user.get(f"{V1}/connections/{made.json()['id']}/calendars")
    assert listed.status_code == 200, listed.text
    assert chosen in [c["id"] for c in listed.json()["items"]]
    assert str(tasks.url) not in [c["id"] for c in listed.json()["items"]]


def test_an_account_with_task_lists_only_is_refused_saying_so() -> None:
    tasks = CalendarInfo(id="https://dav.example/tasks/", name="Tasks", writable=True,
                         primary=True, events=False)  # fmt: skip
    with pytest.raises(Invalid, match="task lists only \\('Tasks'\\)"):
        pick_calendar([tasks], None, "two_way")
    events = CalendarInfo(id="https://dav.example/work/", name="Work", writable=True)
    assert pick_calendar([tasks, events], None, "two_way") == events
