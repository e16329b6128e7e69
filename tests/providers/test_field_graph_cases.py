"""Outlook events as Graph answers them in the field, synced through the REST API with
the Graph emulator: zones Graph cannot name, participants Graph is not told about,
and items only an attendee's copy or a delta page shows."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from crmcal.providers import microsoft_delta
from tests.microsoft_emulator import MicrosoftHarness, graph_time
from tests.providers.synced import V1, OnMicrosoft
from tests.test_sync_cloud_series import tuesday_nine_before_switch

BERLIN = ZoneInfo("Europe/Berlin")


def sync_answer(on: OnMicrosoft) -> dict[str, Any]:
    response = on.user.post(f"{V1}/connections/{on.connection_id}/sync")
    assert response.status_code == 200, response.text
    return response.json()


def series_starts(on: OnMicrosoft) -> list[dt.datetime]:
    listed = on.user.get(f"{V1}/activities", params={"limit": 100})
    assert listed.status_code == 200, listed.text
    return sorted(dt.datetime.fromisoformat(a["start"]) for a in listed.json()["items"])


async def weekly_planning(harness: MicrosoftHarness, start: dt.datetime) -> dict[str, Any]:
    """Six weekly "Weekly planning" meetings from ``start``, 09:00 to 10:00 Berlin time
    (Outlook's Windows zone name), made in the harness's calendar."""
    day = start.date().isoformat()
    weekday = start.strftime("%A").lower()
    made = await harness.api("POST", f"/me/calendars/{harness.calendar_id}/events", json={
        "subject": "Weekly planning",
        "start": {"dateTime": f"{day}T09:00:00", "timeZone": "W. Europe Standard Time"},
        "end": {"dateTime": f"{day}T10:00:00", "timeZone": "W. Europe Standard Time"},
        "recurrence": {
            "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": [weekday]},
            "range": {"type": "numbered", "startDate": day, "numberOfOccurrences": 6},
        },
    })  # fmt: skip
    return made


@pytest.mark.parametrize("zone_name", [None, "tzone://Microsoft/Custom", "Customized Time Zone"])
async def test_a_series_in_a_zone_graph_cannot_name_keeps_its_wall_clock_time(
    on_microsoft: OnMicrosoft, zone_name: str | None
) -> None:
    """A weekly series written in Outlook at 09:00 Berlin time across a daylight-saving
    switch: its zone is a Windows name, or one Graph names only "tzone://Microsoft/Custom"
    (desktop Outlook's legacy custom zones) or "Customized Time Zone" (an iCalendar
    import). Graph answers its times in UTC; read in UTC, the rule would put the
    occurrences after the switch an hour off. Unnamed, the series is kept in its user's
    zone, and the guess is reported."""
    on = on_microsoft
    harness = on.harness
    start = tuesday_nine_before_switch()
    made = await weekly_planning(harness, start)
    if zone_name is not None:
        answer = await harness._http.post(
            f"/_emulator/events/{made['id']}/unnamed-zone",
            json={"email": harness.email, "name": zone_name},
        )
        assert answer.status_code == 200, answer.text
        seen = await harness.api("GET", f"/me/events/{made['id']}")
        assert seen["originalStartTimeZone"] == zone_name
        assert seen["recurrence"]["range"]["recurrenceTimeZone"] == zone_name
    on.connect()
    counts = sync_answer(on)
    starts = series_starts(on)
    assert len(starts) == 6
    assert len({s.astimezone(BERLIN).utcoffset() for s in starts}) == 2  # across the switch
    assert {s.astimezone(BERLIN).time() for s in starts} == {dt.time(9)}
    reasons = [p["reason"] for p in counts["problems"]]
    if zone_name is None:
        assert reasons == []
    else:
        (reason,) = reasons
        assert "time zone" in reason
    # Nothing to write back: the CRM's series is the one in Outlook.
    again = sync_answer(on)
    assert (again["created"], again["updated"], again["deleted"]) == (0, 0, 0)


async def cancel_occurrence(on: OnMicrosoft, master_id: str, start: dt.datetime) -> None:
    """Cancels the occurrence that starts at ``start``, as a person would in Outlook."""
    harness = on.harness
    window = {
        name: f"{(start + dt.timedelta(hours=hours)).astimezone(dt.UTC):%Y-%m-%dT%H:%M:%SZ}"
        for name, hours in (("startDateTime", -2), ("endDateTime", 2))
    }
    found = await harness.api("GET", f"/me/events/{master_id}/instances", params=window)
    (occurrence,) = found["value"]
    await harness.api("DELETE", f"/me/events/{occurrence['id']}")


@pytest.mark.parametrize("zone_name", ["tzone://Microsoft/Custom", "Customized Time Zone"])
async def test_a_cancelled_occurrence_of_a_series_in_an_unnamed_zone_is_the_one_cancelled(
    on_microsoft: OnMicrosoft, zone_name: str
) -> None:
    """Graph names a cancelled occurrence by its day alone. A series in a zone Graph
    cannot name is kept in its user's zone, and so is the time of day of its cancelled
    occurrences: taken at the start's UTC time, an occurrence cancelled after a
    daylight-saving switch was an hour off the one cancelled, and the CRM cancelled
    none. Cancelled before the first sync and after it, the CRM leaves out that one,
    and a sync after that has nothing to do."""
    on = on_microsoft
    harness = on.harness
    start = tuesday_nine_before_switch()
    made = await weekly_planning(harness, start)
    answer = await harness._http.post(
        f"/_emulator/events/{made['id']}/unnamed-zone",
        json={"email": harness.email, "name": zone_name},
    )
    assert answer.status_code == 200, answer.text
    weeks = [start + dt.timedelta(weeks=n) for n in range(6)]
    after_switch = [w for w in weeks if w.utcoffset() != start.utcoffset()]
    await cancel_occurrence(on, made["id"], after_switch[0])
    on.connect()
    sync_answer(on)
    assert series_starts(on) == [w for w in weeks if w != after_switch[0]]

    await cancel_occurrence(on, made["id"], after_switch[1])
    sync_answer(on)
    assert series_starts(on) == [w for w in weeks if w not in after_switch[:2]]
    again = sync_answer(on)
    assert (again["created"], again["updated"], again["deleted"]) == (0, 0, 0)
    assert series_starts(on) == [w for w in weeks if w not in after_switch[:2]]


async def test_attendees_hidden_from_an_attendee_are_not_taken_for_removed(
    on_microsoft: OnMicrosoft,
) -> None:
    """Someone else's meeting whose organizer then hides the attendees from each other
    (``hideAttendees``): the user's copy lists only the user. The organizer's other
    changes come in; the attendees not shown stay participants, nothing is written."""
    on = on_microsoft
    harness = on.harness
    start = (dt.datetime.now(dt.UTC) + dt.timedelta(days=2)).replace(microsecond=0)
    end = start + dt.timedelta(hours=1)

    def attendee(address: str) -> dict[str, Any]:
        return {"emailAddress": {"address": address, "name": address.split("@")[0]},
                "type": "required"}  # fmt: skip

    event_id = await harness.invite({
        "subject": "Board meeting", "start": graph_time(start), "end": graph_time(end),
        "attendees": [attendee(harness.email), attendee("ann@acme.test"),
                      attendee("bob@acme.test")],
    })  # fmt: skip
    on.connect()
    on.sync()
    (activity,) = on.activities()
    assert {"ann@acme.test", "bob@acme.test"} <= {p["email"] for p in activity["participants"]}
    # The organizer's update: the attendees hidden, the place changed.
    await harness.api("PATCH", f"/me/events/{event_id}", json={
        "hideAttendees": True, "attendees": [attendee(harness.email)],
        "location": {"displayName": "Board room"}})  # fmt: skip
    seen = await harness.api("GET", f"/me/events/{event_id}")
    on.sync()
    (activity,) = on.activities()
    assert activity["location"] == "Board room"
    assert {"ann@acme.test", "bob@acme.test"} <= {p["email"] for p in activity["participants"]}
    assert (await harness.api("GET", f"/me/events/{event_id}"))["changeKey"] == seen["changeKey"]


async def test_participants_kept_from_outlook_are_reported_when_the_event_is_made(
    on_microsoft: OnMicrosoft,
) -> None:
    """Graph e-mails every attendee written to an event, with no way to write one
    silently: an activity's participants go to Outlook only when it asks for
    invitations, and otherwise stay in the CRM, which the run now says."""
    on = on_microsoft
    on.connect()
    guests = [{"email": "ann@acme.test", "name": "Ann"}]
    quiet = on.add_activity("Quiet", participants=guests)
    on.add_activity("Invited", hours=2, participants=guests, notify_participants=True)
    on.add_activity("Alone", hours=4)
    counts = sync_answer(on)
    assert counts["created"] == 3
    ((problem),) = counts["problems"]
    assert (problem["item"], problem["kind"]) == (f"activity {quiet['id']}", "warning")
    assert "notify_participants" in problem["reason"]
    events = {e.summary: e for e in (await on.events()).values()}
    assert events["Quiet"].attendees == ()
    assert [a.email for a in events["Invited"].attendees] == ["ann@acme.test"]
    assert [p["email"] for p in on.activity(quiet["id"])["participants"]] == ["ann@acme.test"]
    assert sync_answer(on)["problems"] == []


async def test_an_invitation_its_organizer_cancels_goes_to_the_trash_unwritten(
    on_microsoft: OnMicrosoft,
) -> None:
    """The organizer cancels a meeting the user was invited to: Exchange keeps the
    user's copy, ``isCancelled`` and "Canceled: " before its subject. The activity
    goes to the CRM's trash (restorable, its CRM note kept) and the copy is left as
    Exchange has it, for the user to remove."""
    on = on_microsoft
    harness = on.harness
    start = (dt.datetime.now(dt.UTC) + dt.timedelta(days=2)).replace(microsecond=0)
    end = start + dt.timedelta(hours=1)
    event_id = await harness.invite({
        "subject": "Board meeting", "responseRequested": False,
        "start": graph_time(start), "end": graph_time(end),
    })  # fmt: skip
    on.connect()
    on.sync()
    (activity,) = on.activities()
    on.edit_activity(activity["id"], note="Bring the numbers")
    on.sync()
    cancelled = await harness._http.post(
        f"/_emulator/events/{event_id}/organizer-cancels", json={"email": harness.email}
    )
    assert cancelled.status_code == 200, cancelled.text
    seen = await harness.api("GET", f"/me/events/{event_id}")
    assert seen["isCancelled"] is True
    counts = sync_answer(on)
    assert counts["problems"] == []
    assert on.activities() == []
    (trashed,) = on.activities(deleted=True)
    assert (trashed["id"], trashed["note"]) == (activity["id"], "Bring the numbers")
    assert (await harness.api("GET", f"/me/events/{event_id}"))["changeKey"] == seen["changeKey"]
    assert sync_answer(on)["problems"] == []


def test_a_delta_occurrence_that_names_no_series_is_reported_not_made_an_event() -> None:
    """Delta lists a series by its occurrences and exceptions, each naming its master
    (``seriesMasterId``), which is then read whole. One that names none is reported,
    never taken for a single event (which would become an activity beside its
    series')."""
    start = {"dateTime": "2027-03-02T09:00:00.0000000", "timeZone": "UTC"}
    end = {"dateTime": "2027-03-02T10:00:00.0000000", "timeZone": "UTC"}
    items: list[dict[str, Any]] = [
        {"id": "occ-1", "type": "occurrence", "seriesMasterId": "master-1", "start": start,
         "end": end, "@odata.etag": 'W/"1"'},
        {"id": "exc-2", "type": "exception", "seriesMasterId": None, "start": start,
         "end": end, "@odata.etag": 'W/"2"', "subject": "Orphan"},
        {"id": "single-3", "type": "singleInstance", "start": start, "end": end,
         "@odata.etag": 'W/"3"', "subject": "Single"},
    ]  # fmt: skip
    listing, series = microsoft_delta._fold(items, full=False)
    assert series == {"master-1"}
    found = {r.id: r for r in listing.changed}
    assert found["master-1"].event is None  # read whole
    assert found["exc-2"].error is not None
    assert found["exc-2"].event is None
    assert found["single-3"].event is not None


async def test_the_mailbox_itself_is_never_a_participant_of_a_meeting_it_was_invited_to(
    on_microsoft: OnMicrosoft,
) -> None:
    """Graph lists the invited mailbox among a meeting's attendees and marks no entry as
    its own (Google does, with ``self``): the mailbox address the connection is named
    by is the user's own, never a participant."""
    on = on_microsoft
    harness = on.harness
    start = (dt.datetime.now(dt.UTC) + dt.timedelta(days=2)).replace(microsecond=0)
    end = start + dt.timedelta(hours=1)
    await harness.invite({
        "subject": "Board meeting", "start": graph_time(start), "end": graph_time(end),
        "attendees": [{"emailAddress": {"address": a.upper()}, "type": "required"}
                      for a in (harness.email, "ann@acme.test")],
    })  # fmt: skip
    on.connect()
    on.sync()
    (activity,) = on.activities()
    assert [p["email"] for p in activity["participants"]] == ["ann@acme.test"]


async def test_a_participant_added_to_an_event_already_in_outlook_is_reported_once(
    on_microsoft: OnMicrosoft,
) -> None:
    """An activity already in Outlook, not asking for invitations, gets a participant:
    Graph cannot write them without mailing them, so they stay in the CRM, and the run
    says so as when the event was made, once, not at every sync after."""
    on = on_microsoft
    on.connect()
    quiet = on.add_activity("Quiet")
    assert sync_answer(on)["problems"] == []
    guests = [{"email": "ann@acme.test", "name": "Ann"}]
    on.edit_activity(quiet["id"], participants=guests)
    counts = sync_answer(on)
    ((problem),) = counts["problems"]
    assert (problem["item"], problem["kind"]) == (f"activity {quiet['id']}", "warning")
    assert "notify_participants" in problem["reason"]
    # A warning is said in the status, and is no error: the sync went through.
    status = on.user.get(f"{V1}/connections/{on.connection_id}/status")
    assert status.status_code == 200, status.text
    assert (status.json()["state"], status.json()["last_error"]) == ("active", None)
    assert status.json()["recent_syncs"][0]["outcome"] == "ok"
    assert [p.get("kind") for p in status.json()["problems"]] == ["warning"]
    assert sync_answer(on)["problems"] == []
    # Another one added with a change that is written: said again, once.
    more = [*guests, {"email": "bob@acme.test", "name": "Bob"}]
    on.edit_activity(quiet["id"], participants=more, location="Room 1")
    counts = sync_answer(on)
    assert counts["updated"] == 1
    assert [(p["item"], p["kind"]) for p in counts["problems"]] == [
        (f"activity {quiet['id']}", "warning")
    ]
    assert sync_answer(on)["problems"] == []
    (event,) = (await on.events()).values()
    assert (event.attendees, event.location) == ((), "Room 1")
    assert sorted(p["email"] for p in on.activity(quiet["id"])["participants"]) == [
        "ann@acme.test",
        "bob@acme.test",
    ]
