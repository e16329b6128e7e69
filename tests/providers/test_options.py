"""The sync options (F6, F9 to F11, F14), each value both ways, through the REST API.

Every test runs against each provider crmcal connects to (``api_harness``:
Radicale, Xandikos, the Google emulator): the CRM side is driven through the API
as a CRM would, the calendar side through the provider as another calendar
client would.
"""

from __future__ import annotations

from typing import Any

import pytest

from crmcal.model import Attendee
from crmcal.sync import info_block
from tests.conftest import Api, new_user
from tests.providers.harness import Harness
from tests.providers.synced import BASE_URL, SOON, V1, Synced


@pytest.fixture
def bob(admin: Api) -> Api:
    return new_user(admin, "bob@crm.test")


# --- F9 private events ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "visibility"), [("everyone", "everyone"), ("owner_only", "owner"), ("skip", None)]
)
async def test_private_events_come_in_as_the_option_says(
    synced: Synced, bob: Api, mode: str, visibility: str | None
) -> None:
    synced.connect(private_events=mode)
    await synced.add_event("Doctor", private=True, location="Clinic", description="Checkup")
    await synced.add_event("Team call", hours=2)
    synced.sync()
    found = {a["subject"]: a for a in synced.activities()}
    assert found["Team call"]["visibility"] == "everyone"
    if visibility is None:
        assert set(found) == {"Team call"}
        return
    doctor = found["Doctor"]
    assert doctor["visibility"] == visibility
    seen_by_bob = synced.activity(doctor["id"], viewer=bob)
    if visibility == "owner":
        assert (seen_by_bob["subject"], seen_by_bob["location"], seen_by_bob["note"]) == (
            "Busy",
            None,
            None,
        )
        assert seen_by_bob["start"] == doctor["start"]
    else:
        assert seen_by_bob["subject"] == "Doctor"


async def test_skipped_private_events_leave_and_come_back(synced: Synced) -> None:
    synced.connect(private_events="skip")
    event_id = await synced.add_event("Lunch")
    synced.sync()
    lunch = synced.only_activity()
    await synced.change_event(event_id, private=True)
    assert synced.sync()["deleted"] == 1
    assert synced.activities() == []
    assert [a["id"] for a in synced.activities(deleted=True)] == [lunch["id"]]
    await synced.change_event(event_id, private=False, summary="Lunch again")
    synced.sync()
    back = synced.only_activity()
    assert (back["id"], back["subject"], back["deleted_at"]) == (lunch["id"], "Lunch again", None)


@pytest.mark.parametrize("default", ["everyone", "owner"])
async def test_default_visibility_of_imported_events(synced: Synced, default: str) -> None:
    synced.connect(default_visibility=default)
    await synced.add_event("Public meeting")
    synced.sync()
    assert synced.only_activity()["visibility"] == default


@pytest.mark.parametrize("mode", ["everyone", "owner_only", "skip"])
async def test_owner_only_activities_are_private_events_and_stay_so(
    synced: Synced, mode: str
) -> None:
    synced.connect(private_events=mode)
    secret = synced.add_activity("Job interview", visibility="owner")
    synced.sync()
    event_id, event = await synced.only_event()
    assert event.private
    # Edited in the calendar: still the owner's alone, whatever the option for
    # private events made elsewhere says.
    await synced.change_event(event_id, summary="Job interview (moved)")
    synced.sync()
    changed = synced.activity(secret["id"])
    assert (changed["subject"], changed["visibility"]) == ("Job interview (moved)", "owner")
    # Made public in the CRM: public in the calendar.
    synced.edit_activity(secret["id"], visibility="everyone")
    synced.sync()
    assert not (await synced.event(event_id)).private


# --- F10 guests become contacts -------------------------------------------------------


GUESTS = (
    Attendee(email="Ann.Lee@ACME.test", name="Ann Lee", status="accepted"),
    Attendee(email="new.guest@other.test", name="Nina Guest", status="tentative"),
    Attendee(email="sam@crm.test", name="Sam", status="accepted"),  # the user
    Attendee(email="room-4@acme.test", name="Room 4", resource=True),
)


async def test_guests_become_contacts(synced: Synced) -> None:
    ann = synced.record("persons", name="Ann (in the CRM)", email="ann.lee@acme.test")
    synced.connect(attendees_to_contacts=True)
    await synced.add_event("Kick-off", attendees=GUESTS, organizer="sam@crm.test")
    synced.sync()
    participants = synced.only_activity()["participants"]
    nina = next(p for p in synced.persons() if p["email"] == "new.guest@other.test")
    assert nina["name"] == "Nina Guest"
    assert participants == [
        {"email": "ann.lee@acme.test", "name": "Ann Lee", "person_id": ann, "status": "accepted"},
        {"email": "new.guest@other.test", "name": "Nina Guest", "person_id": nina["id"],
         "status": "tentative"},
    ]  # fmt: skip
    assert len(synced.persons()) == 2  # neither the user nor the room became a contact


async def test_guests_stay_plain_addresses_when_the_option_is_off(synced: Synced) -> None:
    synced.connect(attendees_to_contacts=False)
    event_id = await synced.add_event("Kick-off", attendees=GUESTS)
    synced.sync()
    activity = synced.only_activity()
    assert [(p["email"], p["person_id"], p["status"]) for p in activity["participants"]] == [
        ("ann.lee@acme.test", None, "accepted"),
        ("new.guest@other.test", None, "tentative"),
    ]
    assert synced.persons() == []
    # An answer changed in the calendar reaches the participant, still no contact.
    await synced.harness.answer(event_id, GUESTS[0].email, "declined")
    synced.sync()
    participants = synced.activity(activity["id"])["participants"]
    assert participants[0]["status"] == "declined"
    assert synced.persons() == []


@pytest.mark.parametrize("notify", [False, True])
async def test_participants_become_attendees_without_mail_unless_asked(
    synced: Synced, notify: bool
) -> None:
    synced.connect()
    fields: dict[str, Any] = {"notify_participants": True} if notify else {}
    synced.add_activity(
        "Demo",
        participants=[{"email": "ann@acme.test", "name": "Ann", "status": "accepted"}],
        **fields,
    )
    warnings = synced.sync_warned()
    event_id, event = await synced.only_event()
    answer = "accepted" if synced.harness.attendee_answers_written else "needs_action"
    expected = [("ann@acme.test", "Ann", answer)]
    if synced.harness.provider.capabilities.mails_attendees and not notify:
        expected = []  # such a calendar would mail them: they stay in the CRM, and it is said
    assert len(warnings) == (0 if expected else 1)
    assert [(a.email, a.name, a.status) for a in event.attendees] == expected
    assert await synced.harness.sends_invitations(event_id) is notify
    if not expected:  # and they stay there, untouched, through the next sync
        synced.sync()
        participants = synced.only_activity()["participants"]
        assert [(p["email"], p["status"]) for p in participants] == [("ann@acme.test", "accepted")]


# --- F11 deal and contact info --------------------------------------------------------


async def test_deal_and_contact_info_round_trips_without_growing(synced: Synced) -> None:
    acme = synced.record("organizations", name="ACME GmbH")
    ann = synced.record("persons", name="Ann Lee", email="ann@acme.test", phone="+49 30 1234",
                        organization_id=acme)  # fmt: skip
    deal = synced.record("deals", title="Renewal 2027", person_id=ann, organization_id=acme)
    synced.connect(include_deal_and_contact_info=True)
    demo = synced.add_activity("Demo", note="Agenda: pricing", deal_id=deal, person_id=ann,
                               organization_id=acme)  # fmt: skip
    synced.sync()
    event_id, event = await synced.only_event()
    assert event.description == (
        "Agenda: pricing\n\n"
        f"{info_block.BEGIN}\n"
        "Deal: Renewal 2027\n"
        "Person: Ann Lee, ann@acme.test, +49 30 1234\n"
        "Organization: ACME GmbH\n"
        f"Activity: {BASE_URL}/activities/{demo['id']}\n"
        f"{info_block.END}"
    )
    for _ in range(20):
        counts = synced.sync()
        assert (counts["created"], counts["updated"]) == (0, 0)
    assert (await synced.event(event_id)).description == event.description
    assert synced.activity(demo["id"])["note"] == "Agenda: pricing"

    # Edited in the calendar: the note changes, the block never reaches it.
    assert event.description is not None
    edited = event.description.replace("Agenda: pricing", "Agenda: pricing, legal")
    await synced.change_event(event_id, description=edited, summary="Demo v2")
    synced.sync()
    after = synced.activity(demo["id"])
    assert (after["subject"], after["note"]) == ("Demo v2", "Agenda: pricing, legal")
    assert (await synced.event(event_id)).description == edited

    # A renamed deal reaches the block on the next sync.
    response = synced.admin.patch(f"{V1}/deals/{deal}", json={"title": "Renewal 2028"})
    assert response.status_code == 200, response.text
    assert synced.sync()["updated"] == 1
    assert "Deal: Renewal 2028" in ((await synced.event(event_id)).description or "")

    # Turned off: the descriptions are rewritten without it.
    synced.set_options(include_deal_and_contact_info=False)
    assert synced.sync()["updated"] == 1
    assert (await synced.event(event_id)).description == "Agenda: pricing, legal"
    assert synced.activity(demo["id"])["note"] == "Agenda: pricing, legal"


async def test_without_the_option_descriptions_are_the_note(synced: Synced) -> None:
    deal = synced.record("deals", title="Renewal 2027")
    synced.connect(include_deal_and_contact_info=False)
    synced.add_activity("Demo", note="Agenda", deal_id=deal)
    synced.sync()
    _, event = await synced.only_event()
    assert event.description == "Agenda"
    # Turned on, already synced activities get the block on the next sync.
    synced.set_options(include_deal_and_contact_info=True)
    assert synced.sync()["updated"] == 1
    _, event = await synced.only_event()
    assert (event.description or "").startswith(f"Agenda\n\n{info_block.BEGIN}\nDeal: Renewal 2027")


# --- F6 permissions and ownership ------------------------------------------------------


@pytest.mark.parametrize(
    ("permissions", "sync_type", "missing"),
    [
        (["activities.view", "activities.create", "activities.edit", "activities.delete"],
         "two_way", "calendar_sync"),
        (["calendar_sync", "activities.view", "activities.edit", "activities.delete"],
         "two_way", "activities.create"),
        (["calendar_sync", "activities.view", "activities.create", "activities.delete"],
         "calendar_to_crm", "activities.edit"),
        (["calendar_sync", "activities.view", "activities.create", "activities.edit"],
         "two_way", "activities.delete"),
    ],
)  # fmt: skip
def test_connecting_needs_the_permissions(
    api_harness: Harness, admin: Api, permissions: list[str], sync_type: str, missing: str
) -> None:
    user = new_user(admin, "limited@crm.test", permissions=permissions)
    body = {**api_harness.connection_body(), "sync_type": sync_type}
    response = user.post(f"{V1}/connections", json=body)
    assert response.status_code == 403, response.text
    assert missing in response.json()["detail"]
    assert user.get(f"{V1}/connections").json()["items"] == []


def test_a_one_way_push_needs_no_import_permissions(api_harness: Harness, admin: Api) -> None:
    user = new_user(admin, "pusher@crm.test", permissions=["calendar_sync", "activities.view"])
    body = {**api_harness.connection_body(), "sync_type": "crm_to_calendar"}
    assert user.post(f"{V1}/connections", json=body).status_code == 201


async def test_a_revoked_permission_stops_the_sync_with_the_reason(synced: Synced) -> None:
    synced.connect()
    synced.add_activity("Before")
    synced.sync()
    response = synced.admin.patch(
        f"{V1}/users/{synced.user.id}",
        json={"permissions": ["calendar_sync", "activities.view", "activities.edit"]},
    )
    assert response.status_code == 200, response.text
    await synced.add_event("Made meanwhile")
    refused = synced.user.post(f"{V1}/connections/{synced.connection_id}/sync")
    assert refused.status_code == 409
    assert "activities.create" in refused.json()["detail"]
    status = synced.user.get(f"{V1}/connections/{synced.connection_id}/status").json()
    assert status["state"] == "error"
    assert "activities.create" in status["last_error"]
    assert [a["subject"] for a in synced.activities()] == ["Before"]  # nothing half-synced


async def test_only_the_owners_activities_go_to_their_calendar(synced: Synced, bob: Api) -> None:
    synced.connect()
    mine = synced.add_activity("Mine")
    theirs = synced.admin.post(f"{V1}/activities", json={
        "type": "meeting", "subject": "Bob's", "start": SOON.isoformat(), "owner_id": bob.id,
    })  # fmt: skip
    assert theirs.status_code == 201, theirs.text
    synced.sync()
    assert [e.summary for e in (await synced.events()).values()] == ["Mine"]
    # Given to Bob: the event leaves Sam's calendar; the activity lives on, Bob's.
    response = synced.admin.patch(f"{V1}/activities/{mine['id']}", json={"owner_id": bob.id})
    assert response.status_code == 200, response.text
    assert synced.sync()["deleted"] == 1
    assert await synced.events() == {}
    assert synced.activity(mine["id"], viewer=synced.admin)["deleted_at"] is None


# --- F14 reminders and busy/free; option changes -------------------------------------------


async def test_reminder_and_busy_round_trip(synced: Synced) -> None:
    synced.connect()
    call = synced.add_activity("Call", reminder_minutes=15, busy=False)
    synced.sync()
    event_id, event = await synced.only_event()
    assert (event.reminder_minutes, event.busy) == (15, False)
    await synced.change_event(event_id, reminder_minutes=30, busy=True)
    synced.sync()
    back = synced.activity(call["id"])
    assert (back["reminder_minutes"], back["busy"]) == (30, True)
    imported_id = await synced.add_event("Focus time", hours=3, busy=False, reminder_minutes=5)
    synced.sync()
    focus = next(a for a in synced.activities() if a["subject"] == "Focus time")
    assert (focus["reminder_minutes"], focus["busy"]) == (5, False)
    synced.edit_activity(focus["id"], reminder_minutes=None)
    synced.sync()
    assert (await synced.event(imported_id)).reminder_minutes is None


async def test_a_type_added_to_the_outgoing_types_goes_out_on_the_next_sync(
    synced: Synced,
) -> None:
    synced.connect(outgoing_activity_types=["meeting"])
    synced.add_activity("Lunch with Ann", type="lunch")
    synced.sync()
    assert await synced.events() == {}
    synced.set_options(outgoing_activity_types=["meeting", "lunch"])
    assert synced.sync()["created"] == 1
    _, event = await synced.only_event()
    assert event.summary == "Lunch with Ann"
