"""Google Calendar events as Google answers them in the field, synced through the REST
API with the Google emulator: events Gmail made, guest lists hidden from the user,
other people's locked copies, and zones other than the calendar's."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

from crmcal.providers import google_events
from tests.providers.harness import Foreign
from tests.providers.synced import SOON, V1, OnGoogle


def sync_answer(on: OnGoogle) -> dict[str, Any]:
    response = on.user.post(f"{V1}/connections/{on.connection_id}/sync")
    assert response.status_code == 200, response.text
    return response.json()


def google_time(moment: dt.datetime) -> dict[str, str]:
    return {"dateTime": moment.isoformat(), "timeZone": "UTC"}


def by_subject(on: OnGoogle) -> dict[str, dict[str, Any]]:
    return {a["subject"]: a for a in on.activities()}


async def test_an_event_from_gmail_is_written_only_where_google_lets_it_change(
    on_google: OnGoogle,
) -> None:
    """A flight Gmail put in the calendar (``eventType`` ``fromGmail``, organized by the
    user) is imported; Google refuses a change of anything but its reminders, colorId,
    visibility, status and extended properties (400), and no client can make one. A
    CRM edit of its subject and reminder writes the reminder, reports the subject once
    (never sent again each sync), and stops none of the other updates."""
    on = on_google
    harness = on.harness
    start = SOON.astimezone(dt.UTC)
    end = start + dt.timedelta(hours=8)
    flight = {"summary": "Flight LH 400 to New York", "location": "FRA",
              "start": google_time(start), "end": google_time(end)}  # fmt: skip
    headers = {"Authorization": f"Bearer {harness._access_token}"}
    refused = await harness._http.post(
        f"/calendar/v3/calendars/{harness.calendar_id}/events",
        json={**flight, "eventType": "fromGmail"}, headers=headers,
    )  # fmt: skip
    assert refused.status_code == 400, refused.text
    made = await harness._http.post(
        f"/_emulator/calendars/{harness.calendar_id}/from-gmail", json=flight
    )
    assert made.status_code == 200, made.text
    flight_id = made.json()["id"]
    later = start + dt.timedelta(days=1)
    await harness.api("POST", f"/calendars/{harness.calendar_id}/events", json={
        "summary": "Pipeline review", "start": google_time(later),
        "end": google_time(later + dt.timedelta(hours=1))})  # fmt: skip
    on.connect()
    on.sync()
    activities = by_subject(on)
    on.edit_activity(activities["Flight LH 400 to New York"]["id"], subject="My flight",
                     reminder_minutes=90)  # fmt: skip
    on.edit_activity(activities["Pipeline review"]["id"], subject="Pipeline review (moved)")

    counts = sync_answer(on)
    assert counts["updated"] == 2
    ((problem),) = counts["problems"]
    assert problem["kind"] == "warning"
    assert "summary" in problem["reason"]
    stored = await harness.api("GET", f"/calendars/{harness.calendar_id}/events/{flight_id}")
    assert stored["summary"] == "Flight LH 400 to New York"
    assert stored["reminders"]["overrides"] == [{"method": "popup", "minutes": 90}]
    titles = {e.summary for e in (await on.events()).values()}
    assert "Pipeline review (moved)" in titles
    assert by_subject(on)["My flight"]["reminder_minutes"] == 90
    # Nothing left to write, nothing reported again.
    again = sync_answer(on)
    assert (again["updated"], again["problems"]) == (0, [])
    same = await harness.api("GET", f"/calendars/{harness.calendar_id}/events/{flight_id}")
    assert same["etag"] == stored["etag"]


def participants(activity: dict[str, Any]) -> list[str]:
    return sorted(p["email"] for p in activity["participants"])


async def test_a_guest_list_hidden_from_the_user_is_not_taken_for_guests_removed(
    on_google: OnGoogle,
) -> None:
    """Someone else's meeting whose organizer then hides the guest list
    (``guestsCanSeeOtherGuests`` false): Google shows the user only their own entry,
    with ``attendeesOmitted``. The organizer's other changes come in; the guests not
    shown stay participants in the CRM, and nothing is written back."""
    on = on_google
    harness = on.harness
    event_id = await on.put_board_invitation("Board meeting")
    on.connect()
    on.sync()
    assert participants(on.only_activity()) == ["ann@acme.test", "bob@acme.test"]
    seen = await on.hide_guests(event_id)
    assert [a["email"] for a in seen["attendees"]] == [harness.email]

    on.sync()
    activity = on.only_activity()
    assert activity["location"] == "Board room"
    assert participants(activity) == ["ann@acme.test", "bob@acme.test"]
    path = f"/calendars/{harness.calendar_id}/events/{event_id}"
    assert (await harness.api("GET", path))["etag"] == seen["etag"]


def test_attendees_are_never_written_over_a_list_google_shows_in_part() -> None:
    """A patch over an event whose guest list Google shows in part leaves the attendees
    out: written, the list shown would replace the whole one."""
    current = {"attendeesOmitted": True, "attendees": [{"email": "me@x.test", "self": True}]}
    written = {"summary": "Renamed", "attendees": [{"email": "me@x.test"}]}
    assert google_events.writable(current, written) == {"summary": "Renamed"}


async def test_events_in_another_zone_than_the_calendars_keep_their_local_times(
    on_google: OnGoogle,
) -> None:
    """A calendar kept in Berlin time holds a weekly series written in New York time
    across both switches (the US one a fortnight before Europe's), and a single event
    in Tokyo time: each is read in its own zone, so every occurrence is at 09:00 New
    York time in the CRM, as Google's own instances are, and nothing is written back."""
    on = on_google
    harness = on.harness
    await harness.api("PATCH", f"/calendars/{harness.calendar_id}",
                      json={"timeZone": "Europe/Berlin"})  # fmt: skip
    new_york, tokyo = ZoneInfo("America/New_York"), ZoneInfo("Asia/Tokyo")
    today = dt.datetime.now(new_york).date()
    # A Tuesday five weeks before the next second Sunday of March.
    year = today.year + 1 if today >= dt.date(today.year, 2, 1) else today.year
    march = dt.date(year, 3, 1)
    switch = march + dt.timedelta(days=(6 - march.weekday()) % 7 + 7)
    first = switch - dt.timedelta(days=19)
    start = dt.datetime.combine(first, dt.time(9), new_york)
    series_id = await harness.put_foreign(
        Foreign(summary="New York stand-up", start=start, end=start + dt.timedelta(hours=1),
                rrule="FREQ=WEEKLY;COUNT=8")
    )  # fmt: skip
    lunch = dt.datetime.combine(first, dt.time(12), tokyo)
    await harness.put_foreign(
        Foreign(summary="Tokyo lunch", start=lunch, end=lunch + dt.timedelta(hours=1))
    )
    on.connect()
    on.sync()
    found = by_subject_all(on)
    stand_ups = sorted(dt.datetime.fromisoformat(a["start"]) for a in found["New York stand-up"])
    assert len(stand_ups) == 8
    assert {s.astimezone(new_york).time() for s in stand_ups} == {dt.time(9)}
    instances = await harness.api(
        "GET", f"/calendars/{harness.calendar_id}/events/{series_id}/instances"
    )
    google_starts = sorted(dt.datetime.fromisoformat(i["start"]["dateTime"])
                           for i in instances["items"])  # fmt: skip
    assert stand_ups == google_starts
    (meal,) = found["Tokyo lunch"]
    assert dt.datetime.fromisoformat(meal["start"]) == lunch
    assert meal["timezone"] == "Asia/Tokyo"
    again = sync_answer(on)
    assert (again["created"], again["updated"], again["problems"]) == (0, 0, [])


def by_subject_all(on: OnGoogle) -> dict[str, list[dict[str, Any]]]:
    listed = on.user.get(f"{V1}/activities", params={"limit": 100})
    assert listed.status_code == 200, listed.text
    found: dict[str, list[dict[str, Any]]] = {}
    for activity in listed.json()["items"]:
        found.setdefault(activity["subject"], []).append(activity)
    return found


async def test_someone_elses_locked_down_copy_is_never_written_and_the_run_goes_on(
    on_google: OnGoogle,
) -> None:
    """Someone else's meeting kept as a private copy (``privateCopy``) whose guests may
    not change it (``guestsCanModify`` false): Google would refuse a guest's edit of
    it. crmcal never writes another organizer's meeting: the CRM refuses edits of what
    the organizer owns, says whose it is, keeps its own fields, and the run goes on
    without a write or a problem."""
    on = on_google
    harness = on.harness
    start = SOON.astimezone(dt.UTC) + dt.timedelta(days=1)
    body = {"summary": "Supplier review", "iCalUID": "review-1@elsewhere.test",
            "start": google_time(start), "end": google_time(start + dt.timedelta(hours=1)),
            "organizer": {"email": "boss@elsewhere.test"}, "privateCopy": True,
            "guestsCanModify": False, "guestsCanInviteOthers": False,
            "attendees": [{"email": harness.email}, {"email": "ann@acme.test"}]}  # fmt: skip
    made = await harness.api("POST", f"/calendars/{harness.calendar_id}/events/import", json=body)
    assert made["privateCopy"] is True
    on.connect()
    on.sync()
    (activity,) = on.activities()
    refused = on.user.patch(f"{V1}/activities/{activity['id']}", json={"subject": "Ours"})
    assert refused.status_code == 409, refused.text
    assert "boss@elsewhere.test" in refused.json()["detail"]
    on.edit_activity(activity["id"], note="Ask about prices", type="call")
    counts = sync_answer(on)
    assert (counts["updated"], counts["problems"]) == (0, [])
    path = f"/calendars/{harness.calendar_id}/events/{made['id']}"
    assert (await harness.api("GET", path))["etag"] == made["etag"]
