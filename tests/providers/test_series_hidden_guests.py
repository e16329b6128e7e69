"""A recurring meeting whose organizer hides the guest list: Google shows a guest only
their own entry (``attendeesOmitted``), Outlook lists only the mailbox
(``hideAttendees``). The series' occurrences keep the participants not shown, as a
single event's do; the organizer's other changes come in."""

from __future__ import annotations

import datetime as dt
from typing import Any

from tests.microsoft_emulator import graph_time
from tests.providers.harness import Foreign
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
    harness = on.harness
    start = SOON.astimezone(dt.UTC) + dt.timedelta(days=1)
    series_id = await harness.put_foreign(
        Foreign(summary="Weekly board", start=start, end=start + dt.timedelta(hours=1),
                rrule="FREQ=WEEKLY;COUNT=4", organizer=("boss@elsewhere.test", "The Boss"),
                attendees=((harness.email, "Sam", "needs_action"),
                           ("ann@acme.test", "Ann", "accepted"),
                           ("bob@acme.test", "Bob", "needs_action")))
    )  # fmt: skip
    on.connect()
    on.sync()
    assert all(participants(a) == GUESTS for a in occurrences(on))
    path = f"/calendars/{harness.calendar_id}/events/{series_id}"
    await harness.api("PATCH", path, json={"guestsCanSeeOtherGuests": False,
                                           "location": "Board room"})  # fmt: skip
    seen = await harness.api("GET", path)
    assert seen["attendeesOmitted"] is True
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
