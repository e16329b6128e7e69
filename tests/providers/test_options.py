"""The sync options (F6, F9 to F11, F14), each value both ways, through the REST API.

Every test runs against each provider crmcal connects to (``api_harness``:
Radicale, Xandikos, the Google emulator): the CRM side is driven through the API
as a CRM would, the calendar side through the provider as another calendar
client would.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from crmcal.config import Settings
from crmcal.model import Attendee, CalendarEvent
from crmcal.sync import info_block
from crmcal.web.app import create_app
from tests.conftest import Api, make_user, new_user
from tests.google_emulator import GoogleEmulator
from tests.microsoft_emulator import MicrosoftEmulator
from tests.providers.harness import Foreign, Harness

V1 = "/api/v1"
BASE_URL = "https://crm.example"
SOON = (dt.datetime.now(dt.UTC) + dt.timedelta(days=3)).replace(minute=0, second=0, microsecond=0)


class Synced:
    """One CRM user connected to the harness's calendar, with both sides at hand."""

    def __init__(self, harness: Harness, user: Api, admin: Api) -> None:
        self.harness = harness
        self.provider = harness.provider
        self.calendar_id = harness.calendar_id
        self.user = user
        self.admin = admin
        self.connection_id = 0

    # --- the CRM side, through the API ---------------------------------------------

    def connect(self, sync_type: str = "two_way", **options: Any) -> dict[str, Any]:
        body = {**self.harness.connection_body(), "sync_type": sync_type, "options": options}
        response = self.user.post(f"{V1}/connections", json=body)
        assert response.status_code == 201, response.text
        self.connection_id = response.json()["id"]
        return response.json()

    def set_options(self, **options: Any) -> None:
        response = self.user.patch(
            f"{V1}/connections/{self.connection_id}", json={"options": options}
        )
        assert response.status_code == 200, response.text

    def sync(self) -> dict[str, Any]:
        response = self.user.post(f"{V1}/connections/{self.connection_id}/sync")
        assert response.status_code == 200, response.text
        assert response.json()["problems"] == []
        return response.json()

    def add_activity(self, subject: str, hours: float = 0, **fields: Any) -> dict[str, Any]:
        start = SOON + dt.timedelta(hours=hours)
        body = {"type": "meeting", "subject": subject, "start": start.isoformat(),
                "end": (start + dt.timedelta(hours=1)).isoformat(), **fields}  # fmt: skip
        response = self.user.post(f"{V1}/activities", json=body)
        assert response.status_code == 201, response.text
        return response.json()

    def edit_activity(self, activity_id: int, **fields: Any) -> dict[str, Any]:
        response = self.user.patch(f"{V1}/activities/{activity_id}", json=fields)
        assert response.status_code == 200, response.text
        return response.json()

    def activity(self, activity_id: int, viewer: Api | None = None) -> dict[str, Any]:
        response = (viewer or self.user).get(f"{V1}/activities/{activity_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def activities(self, *, deleted: bool = False) -> list[dict[str, Any]]:
        params = {"deleted": "true"} if deleted else {}
        response = self.user.get(f"{V1}/activities", params=params)
        assert response.status_code == 200, response.text
        return response.json()["items"]

    def only_activity(self) -> dict[str, Any]:
        (found,) = self.activities()
        return found

    async def synced_activities(
        self, *subjects: str
    ) -> tuple[list[dict[str, Any]], dict[str | None, str]]:
        """Activities made in the CRM two hours apart and written to the calendar by a
        sync: their records, and their events' ids by title."""
        made = [self.add_activity(subject, hours=2 * n) for n, subject in enumerate(subjects)]
        self.sync()
        return made, await self.ids_by_title()

    def persons(self) -> list[dict[str, Any]]:
        return self.admin.get(f"{V1}/persons").json()["items"]

    def record(self, kind: str, **fields: Any) -> int:
        response = self.admin.post(f"{V1}/{kind}", json=fields)
        assert response.status_code == 201, response.text
        return response.json()["id"]

    # --- the calendar side, as another client --------------------------------------

    async def add_event(self, summary: str = "Made in the calendar", **fields: Any) -> str:
        start = SOON + dt.timedelta(hours=fields.pop("hours", 0))
        if "attendees" in fields:
            # Guests who answered: only another client (or the guests) can say so.
            guests: tuple[Attendee, ...] = fields.pop("attendees")
            organizer = fields.pop("organizer", None)
            assert not fields, "the harness writes guests, a title and times only"
            return await self.harness.put_foreign(Foreign(
                summary=summary, start=start, end=start + dt.timedelta(hours=1),
                attendees=tuple((a.email, a.name or "", a.status) for a in guests
                                if not a.resource),
                rooms=tuple((a.email, a.name or "") for a in guests if a.resource),
                organizer=(organizer, organizer) if organizer else None,
            ))  # fmt: skip
        event = CalendarEvent(summary=summary, start=start, end=start + dt.timedelta(hours=1),
                              timezone="UTC", **fields)  # fmt: skip
        ref = await self.provider.create(self.calendar_id, uuid.uuid4().hex, event)
        return ref.id

    async def event(self, event_id: str) -> CalendarEvent:
        (ref,) = await self.provider.fetch(self.calendar_id, [event_id])
        assert ref.event is not None, ref.error
        return ref.event

    async def change_event(self, event_id: str, **fields: Any) -> None:
        (ref,) = await self.provider.fetch(self.calendar_id, [event_id])
        assert ref.event is not None
        changed = dataclasses.replace(ref.event, **fields)
        await self.provider.update(self.calendar_id, event_id, ref.etag, changed)

    async def events(self) -> dict[str, CalendarEvent]:
        listing = await self.provider.list_changes(self.calendar_id, None)
        fetched = await self.provider.fetch(self.calendar_id, [r.id for r in listing.changed])
        return {ref.id: ref.event for ref in fetched if ref.event is not None}

    async def only_event(self) -> tuple[str, CalendarEvent]:
        (found,) = (await self.events()).items()
        return found

    async def ids_by_title(self) -> dict[str | None, str]:
        """The id of each event in the calendar, by its title."""
        return {event.summary: event_id for event_id, event in (await self.events()).items()}


@pytest.fixture
def client(
    db_url: str, google_emulator: GoogleEmulator, microsoft_emulator: MicrosoftEmulator
) -> Iterator[TestClient]:
    settings = Settings(database_url=db_url, secret_key="test-key", base_url=BASE_URL,
                        allow_private_networks=True, google_api_url=google_emulator.url,
                        google_oauth_url=google_emulator.url,
                        microsoft_api_url=microsoft_emulator.url,
                        microsoft_oauth_url=microsoft_emulator.url)  # fmt: skip
    with TestClient(create_app(settings, background_jobs=False)) as test_client:
        yield test_client


@pytest.fixture
def admin(client: TestClient, db_url: str) -> Api:
    user_id, token = make_user(db_url, email="admin@crm.test", name="Admin", is_admin=True)
    return Api(client, token, user_id)


@pytest.fixture
def sam(admin: Api) -> Api:
    return new_user(admin, "sam@crm.test", timezone="Europe/Berlin")


@pytest.fixture
def bob(admin: Api) -> Api:
    return new_user(admin, "bob@crm.test")


@pytest.fixture
def synced(api_harness: Harness, sam: Api, admin: Api) -> Synced:
    return Synced(api_harness, sam, admin)


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
    synced.sync()
    event_id, event = await synced.only_event()
    answer = "accepted" if synced.harness.attendee_answers_written else "needs_action"
    expected = [("ann@acme.test", "Ann", answer)]
    if synced.harness.provider.capabilities.mails_attendees and not notify:
        expected = []  # such a calendar would mail them: they stay in the CRM
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
