"""A recurring meeting whose organizer hides the guest list: Google shows a guest only
their own entry (``attendeesOmitted``), Outlook lists only the mailbox
(``hideAttendees``). The series' occurrences keep the participants not shown, as a
single event's do; the organizer's other changes come in."""

from __future__ import annotations

import datetime as dt
from typing import Any

from tests.microsoft_emulator import graph_time
from tests.providers.synced import SOON, OnGoogle, OnMicrosoft, Synced

GUESTS = ["ann@acme.test", "bob@acme.test"]


def occurrences(on: Synced) -> list[dict[str, Any]]:
    found = [a for a in on.activities() if a["subject"] == "Weekly board"]
    assert len(found) >= 2
    return found


def participants(activity: dict[str, Any]) -> list[str]:
    return sorted(p["email"] for p in activity["participants"] if p["email"] in GUESTS)


async def test_a_google_series_whose_guests_are_hidden_keeps_them(on_google: OnGoogle) -> None:
    on = on_google
    series_id = await on.put_board_invitation("Weekly board", rrule="FREQ=WEEKLY;COUNT=4")
    on.connect()
    on.sync()
    assert all(participants(a) == GUESTS for a in occurrences(on))
    await on.hide_guests(series_id)
    on.sync()
    found = occurrences(on)
    assert all(a["location"] == "Board room" for a in found)
    assert [participants(a) for a in found] == [GUESTS] * len(found)


async def test_an_outlook_series_whose_guests_are_hidden_keeps_them(
    on_microsoft: OnMicrosoft,
) -> None:
    on = on_microsoft
    harness = on.harness
    start = (SOON.astimezone(dt.UTC) + dt.timedelta(days=1)).replace(tzinfo=None)
    end = start + dt.timedelta(hours=1)

    def attendee(address: str) -> dict[str, Any]:
        return {"emailAddress": {"address": address, "name": address.split("@")[0]},
                "type": "required"}  # fmt: skip

    series_id = await harness.invite({
        "subject": "Weekly board", "start": graph_time(start), "end": graph_time(end),
        "recurrence": {
            "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": [f"{start:%A}".lower()]},
            "range": {"type": "numbered", "startDate": f"{start:%Y-%m-%d}",
                      "numberOfOccurrences": 4}},
        "attendees": [attendee(harness.email), attendee("ann@acme.test"),
                      attendee("bob@acme.test")],
    })  # fmt: skip
    on.connect()
    on.sync()
    assert all(participants(a) == GUESTS for a in occurrences(on))
    # The organizer's update: the attendees hidden, the place changed.
    await harness.api("PATCH", f"/me/events/{series_id}", json={
        "hideAttendees": True, "attendees": [attendee(harness.email)],
        "location": {"displayName": "Board room"}})  # fmt: skip
    on.sync()
    found = occurrences(on)
    assert all(a["location"] == "Board room" for a in found)
    assert [participants(a) for a in found] == [GUESTS] * len(found)
