"""The user declines one occurrence of a series someone else organises, in Google
Calendar or Outlook, as their clients do it: Google's PATCH of that instance with the
user's own ``responseStatus``, Graph's ``POST /events/{occurrence id}/decline``.

As on CalDAV (tests/providers/test_field_invitations.py), the answer is read without
anything written back: the occurrences stay activities, with the CRM's own edits of
them, nothing of the organizer's series is rewritten, and the next sync has nothing to
do. Nor is anything written to the CRM: the answer shows in no field of an activity (the
user is not among its participants), so no activity is touched and the change feed gets
no row.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Iterable
from typing import Any

from tests.conftest import newest_change_in
from tests.emulator_calls import emulator_calls
from tests.microsoft_emulator import graph_time
from tests.providers.harness import Foreign
from tests.providers.synced import SOON, OnGoogle, OnMicrosoft, Synced

# What crmcal could write with, by the emulators' names for the calls.
WRITES = (
    "events.insert", "events.import", "events.patch", "events.update", "events.delete",
    "events.move", "events.create", "events.decline", "events.accept",
    "events.tentativelyAccept",
)  # fmt: skip


def writes(calls: Counter[str]) -> int:
    return sum(calls[kind] for kind in WRITES)


def occurrences(on: Synced) -> list[dict[str, Any]]:
    found = sorted((a for a in on.activities() if a["subject"] == "Weekly board"),
                   key=lambda a: a["start"])  # fmt: skip
    assert len(found) == 4
    return found


def sync_writing_nothing(on: Synced) -> dict[str, Any]:
    before = emulator_calls(on.harness)
    counts = on.sync()
    assert writes(emulator_calls(on.harness)) == writes(before)
    return counts


def shown(found: Iterable[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """The activities by id, as the CRM shows them (their link's state aside)."""
    return {a["id"]: {k: v for k, v in a.items() if k != "sync"} for a in found}


async def the_same_occurrences_after(
    on: Synced, listed: list[dict[str, Any]], head: int, db_url: str
) -> None:
    """The sync after the answer writes nothing to the calendar, nor to the CRM: the
    occurrences as ``listed`` (with the CRM's note), not one of them touched, and no
    row in the change feed after ``head``; the sync after it has nothing to do."""
    sync_writing_nothing(on)
    after = {a["id"]: a for a in occurrences(on)}
    assert shown(after.values()) == shown(listed)
    assert after[listed[1]["id"]]["note"] == "Ask about pricing"
    assert await newest_change_in(db_url) == head
    counts = sync_writing_nothing(on)
    assert (counts["created"], counts["updated"], counts["deleted"]) == (0, 0, 0)


async def test_a_google_occurrence_declined_is_read_and_nothing_written(
    on_google: OnGoogle, db_url: str
) -> None:
    on, harness = on_google, on_google.harness
    # No guest has answered yet: the CRM keeps each occurrence's own answers, and one
    # the organizer's series carried would show on the instance once it stands apart.
    start = SOON.astimezone(dt.UTC) + dt.timedelta(days=1)
    series_id = await harness.put_foreign(
        Foreign(summary="Weekly board", start=start, end=start + dt.timedelta(hours=1),
                rrule="FREQ=WEEKLY;COUNT=4", organizer=("boss@elsewhere.test", "The Boss"),
                attendees=((harness.email, "Sam", "needs_action"),
                           ("ann@acme.test", "Ann", "needs_action")))
    )  # fmt: skip
    on.connect()
    on.sync()
    first = occurrences(on)
    on.edit_activity(first[1]["id"], note="Ask about pricing", done=True)
    sync_writing_nothing(on)
    listed, head = occurrences(on), await newest_change_in(db_url)
    master = await harness.api("GET", harness._events(series_id))
    # Sam declines the third occurrence: Google's clients PATCH that instance.
    instances = await harness.api("GET", harness._events(series_id) + "/instances")
    third = instances["items"][2]
    await harness.api("PATCH", harness._events(third["id"]), json={"attendees": [
        a | {"responseStatus": "declined"} if a.get("self") else a for a in third["attendees"]
    ]})  # fmt: skip
    declined = await harness.api("GET", harness._events(third["id"]))
    assert [a["responseStatus"] for a in declined["attendees"] if a.get("self")] == ["declined"]
    await the_same_occurrences_after(on, listed, head, db_url)
    # The organizer's series is as it was: the answer is the instance's alone.
    assert await harness.api("GET", harness._events(series_id)) == master
    stored = json.loads(await harness.read_raw(series_id))
    assert [e["id"] for e in stored] == [series_id, third["id"]]


async def test_a_graph_occurrence_declined_is_read_and_nothing_written(
    on_microsoft: OnMicrosoft, db_url: str
) -> None:
    on, harness = on_microsoft, on_microsoft.harness
    start = (SOON.astimezone(dt.UTC) + dt.timedelta(days=1)).replace(tzinfo=None)

    def attendee(address: str) -> dict[str, Any]:
        return {"emailAddress": {"address": address, "name": address.split("@")[0]},
                "type": "required"}  # fmt: skip

    series_id = await harness.invite({
        "subject": "Weekly board", "start": graph_time(start),
        "end": graph_time(start + dt.timedelta(hours=1)),
        "recurrence": {
            "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": [f"{start:%A}".lower()]},
            "range": {"type": "numbered", "startDate": f"{start:%Y-%m-%d}",
                      "numberOfOccurrences": 4}},
        "attendees": [attendee(harness.email), attendee("ann@acme.test")],
    })  # fmt: skip
    on.connect()
    on.sync()
    first = occurrences(on)
    on.edit_activity(first[1]["id"], note="Ask about pricing", done=True)
    sync_writing_nothing(on)
    listed, head = occurrences(on), await newest_change_in(db_url)
    master = await harness.api("GET", f"/me/events/{series_id}")
    window = {"startDateTime": "2026-01-01T00:00:00Z", "endDateTime": "2027-12-31T00:00:00Z"}
    found = await harness.api("GET", f"/me/events/{series_id}/instances", params=window)
    third = found["value"][2]
    await harness.api("POST", f"/me/events/{third['id']}/decline",
                      json={"comment": "Away that week", "sendResponse": True})  # fmt: skip
    declined = await harness.api("GET", f"/me/events/{third['id']}")
    assert (declined["type"], declined["responseStatus"]["response"]) == ("exception", "declined")
    await the_same_occurrences_after(on, listed, head, db_url)
    # The organizer's series is as it was: the answer is the occurrence's alone.
    assert await harness.api("GET", f"/me/events/{series_id}") == master
