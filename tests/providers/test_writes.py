"""Writes change only what changed, through the REST API (issue 11, items 7 to 15, 19).

The CRM side is driven through the API as a CRM would, the calendar side as another
client would: against each provider (``api_harness``) where the rule holds for all,
against Radicale and Xandikos (``caldav_harness``) for the iCalendar particulars, and
through ``tests.caldav_proxy`` where a stricter server (Cyrus) answers differently.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests import plain
from tests.caldav_proxy import Behaviour
from tests.conftest import Api
from tests.microsoft_emulator import MicrosoftEmulator
from tests.providers.harness import Foreign, raw_event
from tests.providers.synced import (
    SOON,
    V1,
    OnCalDAV,
    OnGoogle,
    OnMicrosoft,
    Proxied,
    Synced,
    unfolded,
)

BERLIN = ZoneInfo("Europe/Berlin")
LOCAL = "%Y%m%dT%H%M%S"


def problems(connected: Synced) -> list[dict[str, str]]:
    status = connected.user.get(f"{V1}/connections/{connected.connection_id}/status")
    assert status.status_code == 200, status.text
    return status.json()["problems"]


# --- 7: an update writes only the fields that changed ----------------------------------


async def test_an_unrelated_crm_edit_cuts_nothing(synced: Synced) -> None:
    """A title and a description longer than the CRM keeps survive a change of place."""
    synced.connect()
    long_title = "Quarterly review " + "t" * 300
    long_note = "Agenda\n" + "point " * 12000 + "\nJoin: https://meet.example.test/abc-defg-hij"
    event_id = await synced.add_event(long_title, description=long_note)
    response = synced.user.post(f"{V1}/connections/{synced.connection_id}/sync")
    assert response.status_code == 200, response.text
    ((warned, why),) = [(p["item"], p["reason"]) for p in response.json()["problems"]]
    assert warned == event_id
    assert why.startswith(f"note cut to 65536 of {len(long_note)} characters"), why
    activity = synced.only_activity()
    assert len(activity["subject"]) == 255
    assert len(activity["note"]) == 65536
    synced.edit_activity(activity["id"], location="Room 5")
    synced.sync()
    event = await synced.event(event_id)
    assert event.location == "Room 5"
    assert event.summary == long_title
    assert event.description == long_note
    # And a change of the title writes the title alone.
    synced.edit_activity(activity["id"], subject="Quarterly review")
    synced.sync()
    event = await synced.event(event_id)
    assert (event.summary, event.description) == ("Quarterly review", long_note)


async def test_an_outlook_html_body_and_its_teams_link_survive(on_microsoft: OnMicrosoft) -> None:
    harness = on_microsoft.harness
    on_microsoft.connect()
    start = SOON.replace(tzinfo=None)
    html = (
        '<html><body><p>Agenda: <b>pricing</b></p><p><a href="https://teams.microsoft.com/'
        'l/meetup-join/19%3ameeting_abc">Join the meeting now</a></p></body></html>'
    )
    body = {
        "subject": "Pricing",
        "body": {"contentType": "html", "content": html},
        "start": {"dateTime": start.isoformat(), "timeZone": "UTC"},
        "end": {"dateTime": (start + dt.timedelta(hours=1)).isoformat(), "timeZone": "UTC"},
    }
    made = await harness.api("POST", harness._events(), json=body)  # fmt: skip
    on_microsoft.sync()
    activity = on_microsoft.only_activity()
    assert "Join the meeting now" in activity["note"]
    on_microsoft.edit_activity(activity["id"], location="Room 5", done=True)
    on_microsoft.sync()
    stored = json.loads(await harness.read_raw(made["id"]))
    assert stored["location"]["displayName"] == "Room 5"
    assert stored["body"]["contentType"] == "html"
    assert "https://teams.microsoft.com/l/meetup-join/19%3ameeting_abc" in stored["body"]["content"]


# Google's web page saves a description as HTML, wrappers and autolinked urls included.
GOOGLE_HTML = (
    "<html-blob><b>Agenda</b>: pricing &amp; terms<br><ul><li>one</li><li>two</li></ul>"
    'Notes in <a href="https://docs.example/q3?a=1&amp;b=2">the doc</a><br>'
    'Join: <a href="https://meet.example/abc">https://meet.example/abc</a></html-blob>'
)
GOOGLE_TEXT = (
    "Agenda: pricing & terms\none\ntwo\nNotes in the doc (https://docs.example/q3?a=1&b=2)\n"
    "Join: https://meet.example/abc"
)


def recorded_patches(
    on_google: OnGoogle, monkeypatch: pytest.MonkeyPatch
) -> list[tuple[str, dict[str, Any]]]:
    """Every PATCH the Google emulator receives from now on (batched ones included),
    as (event id, body)."""
    state = on_google.harness.emulator.state
    patches: list[tuple[str, dict[str, Any]]] = []
    patch = state.patch

    def recording(calendar: Any, event_id: str, body: dict[str, Any], *args: Any) -> Any:
        patches.append((event_id, dict(body)))
        return patch(calendar, event_id, body, *args)

    monkeypatch.setattr(state, "patch", recording)
    return patches


async def test_a_google_html_description_reaches_the_note_as_text_and_stays_html(
    on_google: OnGoogle, monkeypatch: pytest.MonkeyPatch
) -> None:
    harness = on_google.harness
    on_google.connect()
    start = SOON + dt.timedelta(hours=2)
    made = await harness.api("POST", harness._events(), json={
        "summary": "Pricing", "description": GOOGLE_HTML, "start": {"dateTime": start.isoformat()},
        "end": {"dateTime": (start + dt.timedelta(hours=1)).isoformat()}})  # fmt: skip
    on_google.sync()
    activity = on_google.only_activity()
    assert activity["note"] == GOOGLE_TEXT
    patches = recorded_patches(on_google, monkeypatch)
    # Nothing changed: the HTML reads as the same text, so nothing is written.
    on_google.sync()
    assert patches == []
    # A CRM edit of the title writes the title; the HTML description stays as it was.
    on_google.edit_activity(activity["id"], subject="Pricing (moved)")
    on_google.sync()
    assert [p for p in patches if p[0] == made["id"]] != []
    assert all("description" not in body for _, body in patches), patches
    stored = json.loads(await harness.read_raw(made["id"]))
    assert (stored["summary"], stored["description"]) == ("Pricing (moved)", GOOGLE_HTML)
    assert on_google.only_activity()["note"] == GOOGLE_TEXT
    # A CRM edit of the note is written as plain text, and then stays put.
    patches.clear()
    note = GOOGLE_TEXT + "\nBring the numbers"
    on_google.edit_activity(activity["id"], note=note)
    on_google.sync()
    assert [body.get("description") for _, body in patches] == [note]
    stored = json.loads(await harness.read_raw(made["id"]))
    assert stored["description"] == note
    patches.clear()
    on_google.sync()
    assert patches == []
    assert on_google.only_activity()["note"] == note


async def test_a_google_plain_text_with_angle_brackets_is_left_as_it_is(
    on_google: OnGoogle,
) -> None:
    harness = on_google.harness
    on_google.connect()
    start = SOON + dt.timedelta(hours=3)
    plain = "Check that a < b and c > d\nMail Ann <ann@acme.test>, see <https://x.example/a&b>"
    await harness.api("POST", harness._events(), json={
        "summary": "Plain", "description": plain, "start": {"dateTime": start.isoformat()},
        "end": {"dateTime": (start + dt.timedelta(hours=1)).isoformat()}})  # fmt: skip
    on_google.sync()
    assert on_google.only_activity()["note"] == plain


# --- 8: participants merge --------------------------------------------------------------


async def test_the_users_entry_the_organizer_and_rooms_are_written_back_as_they_were(
    on_caldav: OnCalDAV,
) -> None:
    harness = on_caldav.harness
    on_caldav.connect()
    start = SOON + dt.timedelta(hours=4)
    event_id = await harness.put_foreign(Foreign(
        summary="Kick-off", start=start, end=start + dt.timedelta(hours=1),
        organizer=("sam@crm.test", "Sam Organizer"), rooms=(("room-4@acme.test", "Room 4"),),
        attendees=(("Sam@CRM.test", "Sam", "accepted"), ("Jane@ACME.example", "Jane", "tentative")),
    ))  # fmt: skip
    on_caldav.sync()
    activity = on_caldav.only_activity()
    assert [(p["email"], p["status"]) for p in activity["participants"]] == [
        ("jane@acme.example", "tentative")
    ]
    # The same address in another case is the same participant: no change at all.
    same = on_caldav.edit_activity(activity["id"], participants=[
        {"email": "JANE@acme.EXAMPLE", "name": "Jane", "status": "tentative"}])  # fmt: skip
    assert [p["email"] for p in same["participants"]] == ["jane@acme.example"]
    before = await harness.read_raw(event_id)
    assert on_caldav.sync()["updated"] == 0
    assert await harness.read_raw(event_id) == before
    on_caldav.edit_activity(activity["id"], participants=[
        {"email": "jane@acme.example", "name": "Jane", "status": "tentative"},
        {"email": "bob@other.test", "name": "Bob"}])  # fmt: skip
    on_caldav.sync()
    lines = [line for line in unfolded(await harness.read_raw(event_id)).split("\n")
             if line.startswith(("ATTENDEE", "ORGANIZER"))]  # fmt: skip
    (organizer,) = [line for line in lines if line.startswith("ORGANIZER")]
    assert organizer.replace('"', "") == "ORGANIZER;CN=Sam Organizer:mailto:sam@crm.test"
    own = [line for line in lines if line.lower().endswith("mailto:sam@crm.test")
           and line.startswith("ATTENDEE")]  # fmt: skip
    assert len(own) == 1
    assert "PARTSTAT=ACCEPTED" in own[0]
    assert any("room-4@acme.test" in line and "CUTYPE=ROOM" in line for line in lines)
    assert any(line.lower().endswith("mailto:jane@acme.example") for line in lines)
    assert any(line.endswith("mailto:bob@other.test") for line in lines)
    assert len(lines) == 5


async def test_google_keeps_the_users_own_answer_and_the_room(on_google: OnGoogle) -> None:
    harness = on_google.harness
    on_google.connect()
    start = SOON + dt.timedelta(hours=4)
    body = {"summary": "Kick-off", "start": {"dateTime": start.isoformat()},
            "end": {"dateTime": (start + dt.timedelta(hours=1)).isoformat()},
            "attendees": [
                {"email": harness.email, "responseStatus": "accepted"},
                {"email": "Jane@ACME.example", "responseStatus": "tentative"},
                {"email": "room-4@resource.example", "resource": True,
                 "responseStatus": "accepted"}]}  # fmt: skip
    made = await harness.api("POST", harness._events(), json=body, params={"sendUpdates": "none"})
    on_google.sync()
    activity = on_google.only_activity()
    assert [p["email"] for p in activity["participants"]] == ["jane@acme.example"]
    on_google.edit_activity(activity["id"], participants=[
        {"email": "jane@acme.example", "status": "tentative"},
        {"email": "bob@other.test"}])  # fmt: skip
    on_google.sync()
    stored = json.loads(await harness.read_raw(made["id"]))
    found = {a["email"].lower(): a for a in stored["attendees"]}
    assert set(found) == {harness.email, "jane@acme.example", "room-4@resource.example",
                          "bob@other.test"}  # fmt: skip
    assert found[harness.email]["responseStatus"] == "accepted"
    assert found["room-4@resource.example"].get("resource") is True
    assert stored["organizer"]["email"] == harness.email


async def test_outlook_attendees_merge_with_participants_it_does_not_carry(
    on_microsoft: OnMicrosoft,
) -> None:
    harness = on_microsoft.harness
    on_microsoft.connect()
    quiet = on_microsoft.add_activity("Pricing", participants=[{"email": "crm.only@acme.test"}])
    assert len(on_microsoft.sync_warned()) == 1  # its participant stays in the CRM
    (event_id,) = await on_microsoft.events()

    async def outlook_attendees(*addresses: str) -> None:
        await harness.api("PATCH", f"/me/events/{event_id}", json={"attendees": [
            {"emailAddress": {"address": a, "name": a.split("@")[0]}, "type": "required"}
            for a in addresses]})  # fmt: skip

    await outlook_attendees("Jane@ACME.example")
    on_microsoft.sync()
    emails = [p["email"] for p in on_microsoft.activity(quiet["id"])["participants"]]
    assert emails == ["crm.only@acme.test", "jane@acme.example"]
    await outlook_attendees("jane@acme.example", "kim@acme.test")
    on_microsoft.sync()
    emails = [p["email"] for p in on_microsoft.activity(quiet["id"])["participants"]]
    assert emails == ["crm.only@acme.test", "jane@acme.example", "kim@acme.test"]
    await outlook_attendees("kim@acme.test")
    on_microsoft.sync()
    emails = [p["email"] for p in on_microsoft.activity(quiet["id"])["participants"]]
    assert emails == ["crm.only@acme.test", "kim@acme.test"]


# --- 9: someone else's meeting ------------------------------------------------------------


async def test_an_invitation_is_never_rewritten_and_its_calendar_fields_are_refused(
    synced: Synced,
) -> None:
    synced.connect(include_deal_and_contact_info=True)
    start = SOON + dt.timedelta(hours=5)
    event_id = await synced.harness.put_foreign(Foreign(
        uid=f"invite-{uuid.uuid4().hex}@elsewhere.test", summary="Board meeting", start=start,
        end=start + dt.timedelta(hours=1), organizer=("boss@elsewhere.test", "The Boss"),
        attendees=(("sam@crm.test", "Sam", "needs_action"), ("ann@acme.test", "Ann", "accepted")),
    ))  # fmt: skip
    synced.sync()
    activity = synced.only_activity()
    assert activity["organizer"] == "boss@elsewhere.test"
    before = await synced.harness.read_raw(event_id)
    # What the organizer owns is refused, naming them; what the CRM owns is not.
    change: dict[str, Any]
    for change in (
        {"subject": "Our board meeting"},
        {"location": "Room 1"},
        {"participants": []},
        {"start": (start + dt.timedelta(hours=1)).isoformat()},
    ):
        refused = synced.user.patch(f"{V1}/activities/{activity['id']}", json=change)
        assert refused.status_code == 409, refused.text
        assert "boss@elsewhere.test" in refused.json()["detail"]
    deal = synced.record("deals", title="Big deal")
    kept = synced.edit_activity(activity["id"], type="call", done=True, deal_id=deal,
                                note="Prepare the numbers", subject="Board meeting")  # fmt: skip
    assert (kept["type"], kept["done"], kept["note"]) == ("call", True, "Prepare the numbers")
    synced.sync()
    assert await synced.harness.read_raw(event_id) == before  # not one write
    # The organizer moves it: the CRM follows, and keeps its own note.
    await synced.harness.retitle(event_id, "Board meeting (moved)")
    after_retitle = await synced.harness.read_raw(event_id)
    synced.sync()
    again = synced.activity(activity["id"])
    assert (again["subject"], again["note"]) == ("Board meeting (moved)", "Prepare the numbers")
    assert await synced.harness.read_raw(event_id) == after_retitle


async def test_a_meeting_organised_under_another_address_of_the_account_is_the_users_own(
    on_caldav: OnCalDAV,
) -> None:
    harness = on_caldav.harness
    # The login is no e-mail address; the server names the account's addresses.
    if not await harness.set_addresses(["mailto:sam.work@elsewhere.test"]):
        pytest.skip(f"{harness.kind} names no mailto: address of its principal")
    try:
        on_caldav.connect()
        start = SOON + dt.timedelta(hours=5)
        ids = {}
        for name, organizer in (("Ours", "Sam.Work@elsewhere.test"), ("Theirs", "boss@else.test")):
            ids[name] = await harness.put_foreign(Foreign(
                uid=f"{name}-{uuid.uuid4().hex}", summary=name, start=start,
                end=start + dt.timedelta(hours=1), organizer=(organizer, name),
                attendees=(("ann@acme.test", "Ann", "accepted"),),
            ))  # fmt: skip
        on_caldav.sync()
        found = {a["subject"]: a for a in on_caldav.activities()}
        assert found["Ours"]["organizer"] is None
        assert found["Theirs"]["organizer"] == "boss@else.test"
        on_caldav.edit_activity(found["Ours"]["id"], subject="Ours (moved)")
        refused = on_caldav.user.patch(
            f"{V1}/activities/{found['Theirs']['id']}", json={"subject": "Theirs (moved)"}
        )
        assert refused.status_code == 409, refused.text
        theirs = await harness.read_raw(ids["Theirs"])
        on_caldav.sync()
        assert (await on_caldav.event(ids["Ours"])).summary == "Ours (moved)"
        assert await harness.read_raw(ids["Theirs"]) == theirs
    finally:
        await harness.set_addresses([])


# --- 10: an option change mails nobody ----------------------------------------------------


async def test_an_option_change_never_mails_the_guests_of_an_outlook_event(
    on_microsoft: OnMicrosoft, microsoft_emulator: MicrosoftEmulator
) -> None:
    on_microsoft.connect()
    guests = [{"email": "ann@acme.test", "name": "Ann"}]
    meeting = on_microsoft.add_activity("Pricing", participants=guests, notify_participants=True,
                                        note="Bring numbers")  # fmt: skip
    alone = on_microsoft.add_activity("Focus time", hours=3, note="Alone")
    on_microsoft.sync()
    ids = await on_microsoft.ids_by_title()

    def mails() -> list[str]:
        sent = plain.get(f"{microsoft_emulator.url}/_emulator/mail", timeout=60).json()
        return [m["event_id"] for m in sent if m["event_id"] == ids["Pricing"]]

    invitations = mails()
    assert invitations  # asked for: the guests were invited
    on_microsoft.set_options(include_deal_and_contact_info=True)
    on_microsoft.sync()
    assert mails() == invitations
    assert (await on_microsoft.event(ids["Pricing"])).description == "Bring numbers"
    # An event without guests mails nobody: it gets the block at once.
    assert "/activities/" in ((await on_microsoft.event(ids["Focus time"])).description or "")
    # The next real change brings the block along (and Outlook mails, as asked).
    on_microsoft.edit_activity(meeting["id"], location="Room 5")
    on_microsoft.sync()
    event = await on_microsoft.event(ids["Pricing"])
    assert event.location == "Room 5"
    assert "/activities/" in (event.description or "")
    assert alone["id"]


# --- 11: floating times ------------------------------------------------------------------


async def test_floating_times_are_the_users_own_and_stay_floating(on_caldav: OnCalDAV) -> None:
    harness = on_caldav.harness
    on_caldav.connect()
    day = (SOON + dt.timedelta(days=1)).date()
    start = dt.datetime.combine(day, dt.time(10))
    event_id = await harness.put_raw(raw_event(
        "floating-1", "SUMMARY:Floating", f"DTSTART:{start:{LOCAL}}",
        f"DTEND:{start + dt.timedelta(hours=1):{LOCAL}}",
    ))  # fmt: skip
    on_caldav.sync()
    activity = on_caldav.only_activity()
    # Sam works in Berlin: ten o'clock is ten o'clock there.
    assert dt.datetime.fromisoformat(activity["start"]) == start.replace(tzinfo=BERLIN)
    on_caldav.edit_activity(activity["id"], location="Room 5")
    on_caldav.sync()
    raw = unfolded(await harness.read_raw(event_id))
    assert f"DTSTART:{start:{LOCAL}}\n" in raw
    assert "LOCATION:Room 5" in raw
    # Moved in the CRM: written back as a floating time again.
    later = start + dt.timedelta(hours=2)
    on_caldav.edit_activity(activity["id"], start=later.isoformat(),
                            end=(later + dt.timedelta(hours=1)).isoformat())  # fmt: skip
    on_caldav.sync()
    raw = unfolded(await harness.read_raw(event_id))
    assert f"DTSTART:{later:{LOCAL}}\n" in raw
    assert f"DTEND:{later + dt.timedelta(hours=1):{LOCAL}}\n" in raw


# --- 12: a moment without an end, on a strict server --------------------------------------


async def test_activities_without_an_end_are_written_so_strict_servers_take_them(
    proxied: Proxied, behaviour: Behaviour
) -> None:
    behaviour.strict_times = True
    proxied.connect()
    no_end = proxied.add_activity("Call back", type="call", end=None)
    moment = proxied.add_activity("Deadline", hours=2, type="call")
    proxied.edit_activity(moment["id"], end=moment["start"])
    counts = proxied.sync_with_problems()
    assert counts["problems"] == []
    assert counts["created"] == 2
    events = await proxied.events()
    assert sorted(e.summary or "" for e in events.values()) == ["Call back", "Deadline"]
    assert all(e.end is None for e in events.values())
    # They come back as the same activities: nothing to do, nothing changed.
    for event_id in events:
        await proxied.harness.retitle(event_id, f"{events[event_id].summary} (seen)")
    counts = proxied.sync_with_problems()
    assert counts["problems"] == []
    for made in (no_end, moment):
        after = proxied.activity(made["id"])
        assert after["subject"] == f"{made['subject']} (seen)"
        assert after["end"] is None
        assert after["start"] == made["start"]


async def test_a_servers_refusal_reaches_the_problems(
    proxied: Proxied, behaviour: Behaviour
) -> None:
    behaviour.refuse["Forbidden words"] = "SUMMARY may not say that here"
    proxied.connect()
    bad = proxied.add_activity("Forbidden words")
    proxied.add_activity("Fine words", hours=2)
    counts = proxied.sync_with_problems()
    assert counts["created"] == 1
    (problem,) = problems(proxied)
    assert problem["item"] == f"activity {bad['id']}"
    assert "valid-calendar-data" in problem["reason"]
    assert "SUMMARY may not say that here" in problem["reason"]


# --- 13: time zones nobody defines ---------------------------------------------------------


async def test_offset_time_zones_are_read_and_unknown_ones_reported(on_caldav: OnCalDAV) -> None:
    harness = on_caldav.harness
    on_caldav.connect()
    day = (SOON + dt.timedelta(days=1)).date()
    start = dt.datetime.combine(day, dt.time(10))
    spellings = {"caldav-lib": '"UTC+01:00"', "gmt": "GMT+0100", "etc": "Etc/GMT-1",
                 "mars": "Mars/Olympus_Mons"}  # fmt: skip
    ids = {}
    for n, (name, tzid) in enumerate(spellings.items()):
        moment = start + dt.timedelta(hours=n)
        ids[name] = await harness.put_raw(raw_event(
            f"tz-{name}", f"SUMMARY:{name}", f"DTSTART;TZID={tzid}:{moment:{LOCAL}}",
            f"DTEND;TZID={tzid}:{moment + dt.timedelta(hours=1):{LOCAL}}",
        ))  # fmt: skip
    counts = on_caldav.sync_with_problems() if isinstance(on_caldav, Proxied) else None
    response = on_caldav.user.post(f"{V1}/connections/{on_caldav.connection_id}/sync")
    counts = response.json()
    assert counts["created"] == 4
    found = {a["subject"]: dt.datetime.fromisoformat(a["start"]) for a in on_caldav.activities()}
    plus_one = dt.timezone(dt.timedelta(hours=1))
    for n, name in enumerate(["caldav-lib", "gmt", "etc"]):
        assert found[name] == (start + dt.timedelta(hours=n)).replace(tzinfo=plus_one)
    # Nobody says where Mars is: Sam's own zone, and a word about it.
    assert found["mars"] == (start + dt.timedelta(hours=3)).replace(tzinfo=BERLIN)
    assert [(p["item"], "Mars/Olympus_Mons" in p["reason"]) for p in counts["problems"]] == [
        (ids["mars"], True)
    ]


# --- 14: a time that does not exist ----------------------------------------------------------


def test_a_local_time_in_the_dst_gap_is_refused(sam: Api) -> None:
    body = {"type": "meeting", "subject": "Too early", "start": "2027-03-28T02:30:00",
            "end": "2027-03-28T03:30:00", "timezone": "Europe/Berlin"}  # fmt: skip
    response = sam.post(f"{V1}/activities", json=body)
    assert response.status_code == 422, response.text
    assert "2027-03-28T02:30 does not exist in Europe/Berlin" in response.text
    assert "from 02:00 to 03:00" in response.text
    fine = sam.post(f"{V1}/activities", json={**body, "start": "2027-03-28T03:30:00",
                                              "end": "2027-03-28T04:30:00"})  # fmt: skip
    assert fine.status_code == 201, fine.text
    moved = sam.patch(f"{V1}/activities/{fine.json()['id']}", json={"start": "2027-03-28T02:00:00"})
    assert moved.status_code == 422, moved.text
    # With an offset it is a moment like any other.
    offset = sam.post(f"{V1}/activities", json={**body, "start": "2027-03-28T02:30:00+01:00",
                                                "end": None})  # fmt: skip
    assert offset.status_code == 201, offset.text


# --- 15: series are never flattened ----------------------------------------------------------


def _as_series(text: str) -> str:
    return text.replace("END:VEVENT", "RRULE:FREQ=WEEKLY;COUNT=4\r\nEND:VEVENT", 1)


async def test_an_event_that_became_a_series_is_neither_flattened_nor_brought_back(
    proxied: Proxied, behaviour: Behaviour
) -> None:
    harness = proxied.harness
    proxied.connect()
    (edited, trashed), by_title = await proxied.synced_activities(
        "Weekly one day", "Weekly some day"
    )
    # Another client makes both events series while crmcal writes: after its listing,
    # just before its write.
    proxied.edit_activity(edited["id"], location="Room 5")
    assert proxied.user.delete(f"{V1}/activities/{trashed['id']}").status_code == 200

    def make_series(path: str) -> None:
        for event_id in by_title.values():
            text = harness.request("GET", harness._url(event_id)).raw
            harness.request("PUT", harness._url(event_id), _as_series(text))

    behaviour.before["PUT"] = make_series
    behaviour.before["DELETE"] = make_series
    counts = proxied.sync_with_problems()
    assert counts["deleted"] == 0
    reasons = {p["item"]: p["reason"] for p in counts["problems"]}
    assert set(reasons) == set(by_title.values())
    assert all("series" in reason for reason in reasons.values())
    for event_id in by_title.values():
        assert "RRULE:FREQ=WEEKLY;COUNT=4" in unfolded(await harness.read_raw(event_id))
    assert proxied.activity(trashed["id"])["deleted_at"] is not None
    assert proxied.activity(edited["id"])["location"] == "Room 5"


# --- 19: weak ETags ----------------------------------------------------------------------------


async def test_one_crm_edit_costs_one_read_and_one_write_with_weak_etags(
    proxied: Proxied, behaviour: Behaviour
) -> None:
    behaviour.weak_etags = True
    proxied.connect()
    (made,), by_title = await proxied.synced_activities("Demo")
    (event_id,) = by_title.values()
    proxied.edit_activity(made["id"], location="Room 7")
    behaviour.requests.clear()
    behaviour.reports.clear()
    counts = proxied.sync()
    assert counts["updated"] == 1
    assert (await proxied.event(event_id)).location == "Room 7"
    reads = behaviour.count("GET", event_id) + behaviour.reports["calendar-multiget"]
    assert (reads, behaviour.count("PUT", event_id)) == (1, 1)


# --- partial answers: absence is not deletion, and nothing left out is lost --------------------


async def test_events_a_server_leaves_out_of_its_answer_are_read_on_the_next_sync(
    proxied: Proxied, behaviour: Behaviour
) -> None:
    harness = proxied.harness
    proxied.connect()
    (retitled, gone), by_title = await proxied.synced_activities("Linked", "Linked too")
    await harness.retitle(by_title["Linked"], "Linked (retitled)")
    await harness.retitle(by_title["Linked too"], "Linked too (retitled)")
    start = SOON.astimezone(dt.UTC) + dt.timedelta(days=1)
    added = {}
    for name in ("left-out", "refused", "fine"):
        added[name] = await harness.put_raw(raw_event(
            f"odd-{name}", f"SUMMARY:{name}", f"DTSTART:{start:{LOCAL}}Z",
            f"DTEND:{start + dt.timedelta(hours=1):{LOCAL}}Z",
        ), name=f"odd-{name}.ics")  # fmt: skip
    # The listing names all five; the multiget's answer leaves one out, answers two
    # with error statuses and one as gone since it was listed (it is not).
    behaviour.partial = {
        ("calendar-multiget", "odd-left-out"): None,
        ("calendar-multiget", "odd-refused"): 500,
        ("calendar-multiget", by_title["Linked"].rsplit("/", 1)[1]): 403,
        ("calendar-multiget", by_title["Linked too"].rsplit("/", 1)[1]): 404,
    }
    counts = proxied.sync_with_problems()
    assert (counts["created"], counts["updated"], counts["deleted"]) == (1, 0, 0)
    reasons = {p["item"]: p["reason"] for p in counts["problems"]}
    assert reasons == {
        added["left-out"]: "the server's answer left this event out; will retry",
        added["refused"]: "the server answered 500 for this event; will retry",
        by_title["Linked"]: "the server answered 403 for this event; will retry",
        by_title["Linked too"]: "listed as changed, then not found by a read; will retry",
    }
    assert proxied.activities(deleted=True) == []
    assert proxied.activity(retitled["id"])["subject"] == "Linked"
    assert proxied.activity(gone["id"])["subject"] == "Linked too"
    # The server answers in full again: what it left out or refused is read, though
    # the listing since the last sync names none of it.
    behaviour.partial.clear()
    behaviour.reports.clear()
    counts = proxied.sync_with_problems()
    assert counts["problems"] == []
    assert (counts["created"], counts["deleted"]) == (2, 0)
    assert behaviour.reports["calendar-multiget"] == 1
    assert sorted(a["subject"] for a in proxied.activities()) == sorted(
        ["Linked (retitled)", "Linked too (retitled)", "fine", "left-out", "refused"]
    )
    assert problems(proxied) == []


async def test_an_event_not_read_after_a_refused_write_is_not_gone(
    proxied: Proxied, behaviour: Behaviour
) -> None:
    harness = proxied.harness
    proxied.connect()
    (made,), by_title = await proxied.synced_activities("Plan")
    (event_id,) = by_title.values()
    # Both sides change it; crmcal's write is refused (If-Match), and the read that
    # follows is not answered.
    await harness.retitle(event_id, "Plan (calendar)")
    proxied.edit_activity(made["id"], location="Room 1")
    behaviour.partial = {("calendar-multiget", event_id.rsplit("/", 1)[1]): 500}
    counts = proxied.sync_with_problems()
    assert (counts["created"], counts["deleted"]) == (0, 0)
    assert {p["item"] for p in counts["problems"]} == {event_id}
    assert proxied.activities(deleted=True) == []
    assert len(await proxied.events()) == 1
    behaviour.partial.clear()
    event = await proxied.sync_keeping(event_id)
    assert (event.summary, event.location) == ("Plan (calendar)", "Room 1")
    after = proxied.activity(made["id"])
    assert (after["subject"], after["location"]) == ("Plan (calendar)", "Room 1")


async def test_an_event_a_full_listing_leaves_out_is_not_gone_while_unanswered(
    proxied: Proxied, behaviour: Behaviour
) -> None:
    proxied.connect()
    (made, _), by_title = await proxied.synced_activities("Kept", "Listed")
    event_id = by_title["Kept"]
    # New options: the next sync lists everything; that listing leaves the event out,
    # and the read that checks whether it is gone is not answered either.
    proxied.set_options(include_deal_and_contact_info=True)
    name = event_id.rsplit("/", 1)[1]
    behaviour.partial = {("sync-collection", name): None, ("calendar-multiget", name): 500}
    counts = proxied.sync_with_problems()
    assert counts["deleted"] == 0
    assert [p["item"] for p in counts["problems"]] == [event_id]
    assert proxied.activities(deleted=True) == []
    assert proxied.activity(made["id"])["deleted_at"] is None
    behaviour.partial.clear()
    assert proxied.sync_with_problems()["problems"] == []
    assert proxied.activity(made["id"])["deleted_at"] is None


# --- an event crmcal made, deleted before the next sync --------------------------------------


async def test_an_event_crmcal_made_and_the_user_deleted_before_the_next_sync_is_noticed(
    proxied: Proxied, behaviour: Behaviour
) -> None:
    """The cursor a sync keeps is read before its own writes, and a server may leave out
    of the listing since that cursor what was both made and deleted after it (RFC 6578
    allows it; Xandikos does): the next sync reads crmcal's new events the listing does
    not name, in one multiget, and what is gone is trashed like any deletion."""
    harness = proxied.harness
    proxied.connect()
    (gone, kept), by_title = await proxied.synced_activities("Gone", "Kept")
    await harness.remove(by_title["Gone"])
    behaviour.reports.clear()
    counts = proxied.sync_with_problems()
    assert counts["problems"] == []
    assert (counts["created"], counts["deleted"]) == (0, 1)
    assert proxied.activity(gone["id"])["deleted_at"] is not None
    assert proxied.activity(kept["id"])["deleted_at"] is None
    # At most the one multiget of what the listing did not name (none where it names
    # the deletion).
    assert behaviour.reports["calendar-multiget"] <= 1
    # The event kept was confirmed once: no later sync reads it again.
    for _ in range(2):
        behaviour.reports.clear()
        behaviour.requests.clear()
        counts = proxied.sync_with_problems()
        assert (counts["problems"], counts["deleted"]) == ([], 0)
        assert behaviour.reports["calendar-multiget"] == 0
        assert behaviour.count("GET") == 0
    assert proxied.activity(kept["id"])["deleted_at"] is None
    assert list(await proxied.ids_by_title()) == ["Kept"]


async def test_an_event_crmcal_made_and_the_user_moved_to_another_calendar_is_noticed(
    proxied: Proxied, behaviour: Behaviour
) -> None:
    """Moved to another calendar is gone from this one (a client copies it there and
    deletes it here): the same, and the copy elsewhere is left alone."""
    harness = proxied.harness
    proxied.connect()
    (moved,), by_title = await proxied.synced_activities("Moved")
    other = await harness.make_second_calendar()
    text = await harness.read_raw(by_title["Moved"])
    await asyncio.to_thread(harness.request, "PUT", other + "moved.ics", text)
    await harness.remove(by_title["Moved"])
    counts = proxied.sync_with_problems()
    assert counts["problems"] == []
    assert counts["deleted"] == 1
    assert proxied.activity(moved["id"])["deleted_at"] is not None
    assert await asyncio.to_thread(harness.request, "GET", other + "moved.ics")


async def test_an_event_crmcal_made_and_deleted_before_the_next_sync_is_noticed_on_each_service(
    synced: Synced,
) -> None:
    """The same on every service: Graph's delta names as removed only what it listed
    before (never an event made and deleted since its link), Google's syncToken every
    deletion since it (there the listing names it and nothing more is read)."""
    synced.connect()
    (gone, kept), by_title = await synced.synced_activities("Gone", "Kept")
    await synced.harness.remove(by_title["Gone"])
    assert synced.sync()["deleted"] == 1
    assert synced.activity(gone["id"])["deleted_at"] is not None
    for _ in range(2):
        assert synced.sync()["deleted"] == 0
    assert synced.activity(kept["id"])["deleted_at"] is None
    assert list(await synced.ids_by_title()) == ["Kept"]
