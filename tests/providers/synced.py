"""One CRM user connected to a provider's calendar through the REST API, with both sides
at hand: what the end-to-end option, write and field tests drive. The fixtures at the
end are those tests' (tests/providers/conftest.py offers them to every test there)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from crmcal.config import Settings
from crmcal.model import Attendee, CalendarEvent
from tests.caldav_proxy import Behaviour, caldav_proxy
from tests.conftest import Api, client_of, make_user, new_user
from tests.google_emulator import GoogleEmulator, GoogleHarness
from tests.microsoft_emulator import MicrosoftEmulator, MicrosoftHarness
from tests.providers.harness import CalDAVHarness, Foreign, Harness

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

    def sync_warned(self) -> list[str]:
        """A sync whose only problems are warnings (items synced with something to
        say); the warnings' reasons."""
        response = self.user.post(f"{V1}/connections/{self.connection_id}/sync")
        assert response.status_code == 200, response.text
        problems = response.json()["problems"]
        assert [p for p in problems if p.get("kind") != "warning"] == []
        return [p["reason"] for p in problems]

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


class OnCalDAV(Synced):
    """``Synced`` on Radicale or Xandikos, whose iCalendar text the test reads and writes."""

    harness: CalDAVHarness


class OnGoogle(Synced):
    """``Synced`` on the Google emulator, whose API the test calls as another client."""

    harness: GoogleHarness

    async def put_board_invitation(self, summary: str, rrule: str | None = None) -> str:
        """Someone else's hour-long meeting a day after ``SOON`` (a series when given an
        ``rrule``), the user invited with Ann and Bob: its event id."""
        start = SOON.astimezone(dt.UTC) + dt.timedelta(days=1)
        return await self.harness.put_foreign(
            Foreign(summary=summary, start=start, end=start + dt.timedelta(hours=1),
                    rrule=rrule, organizer=("boss@elsewhere.test", "The Boss"),
                    attendees=((self.harness.email, "Sam", "needs_action"),
                               ("ann@acme.test", "Ann", "accepted"),
                               ("bob@acme.test", "Bob", "needs_action")))
        )  # fmt: skip

    async def hide_guests(self, event_id: str) -> dict[str, Any]:
        """The organizer hides the guest list and moves the meeting to the board room:
        the event as Google then shows it to the user (``attendeesOmitted``)."""
        path = f"/calendars/{self.harness.calendar_id}/events/{event_id}"
        await self.harness.api("PATCH", path, json={"guestsCanSeeOtherGuests": False,
                                                    "location": "Board room"})  # fmt: skip
        seen = await self.harness.api("GET", path)
        assert seen["attendeesOmitted"] is True
        return seen


class OnMicrosoft(Synced):
    """``Synced`` on the Microsoft emulator, whose API the test calls as another client."""

    harness: MicrosoftHarness


class Proxied(OnCalDAV):
    """A CalDAV calendar reached by crmcal through a proxy (another client goes direct)."""

    def __init__(self, harness: CalDAVHarness, user: Api, admin_api: Api, proxy: str) -> None:
        super().__init__(harness, user, admin_api)
        self.proxy = proxy

    def connect(self, sync_type: str = "two_way", **options: Any) -> dict[str, Any]:
        body = self.harness.connection_body()
        path = urlsplit(self.calendar_id).path
        body |= {"url": self.proxy + "/", "calendar_id": self.proxy + path,
                 "sync_type": sync_type, "options": options}  # fmt: skip
        response = self.user.post(f"{V1}/connections", json=body)
        assert response.status_code == 201, response.text
        self.connection_id = response.json()["id"]
        return response.json()

    def sync_with_problems(self) -> dict[str, Any]:
        response = self.user.post(f"{V1}/connections/{self.connection_id}/sync")
        assert response.status_code == 200, response.text
        return response.json()

    async def sync_keeping(self, event_id: str) -> CalendarEvent:
        """A sync without problems that creates and deletes nothing, after which
        ``event_id`` is still the calendar's one event (returned)."""
        counts = self.sync_with_problems()
        assert counts["problems"] == []
        assert (counts["created"], counts["deleted"]) == (0, 0)
        ((same_id, event),) = (await self.events()).items()
        assert same_id == event_id
        return event


def unfolded(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\n ", "")


# --- the fixtures -----------------------------------------------------------------------


@pytest.fixture
def client(
    db_url: str, google_emulator: GoogleEmulator, microsoft_emulator: MicrosoftEmulator
) -> Iterator[TestClient]:
    """The app, with the emulators as Google's and Microsoft's services."""
    settings = Settings(database_url=db_url, secret_key="test-key", base_url=BASE_URL,
                        allow_private_networks=True, google_api_url=google_emulator.url,
                        google_oauth_url=google_emulator.url,
                        microsoft_api_url=microsoft_emulator.url,
                        microsoft_oauth_url=microsoft_emulator.url)  # fmt: skip
    with client_of(settings) as test_client:
        yield test_client


@pytest.fixture
def admin(client: TestClient, db_url: str) -> Api:
    user_id, token = make_user(db_url, email="admin@crm.test", name="Admin", is_admin=True)
    return Api(client, token, user_id)


@pytest.fixture
def sam(admin: Api) -> Api:
    """The CRM user whose calendar is synced."""
    return new_user(admin, "sam@crm.test", timezone="Europe/Berlin")


@pytest.fixture
def synced(api_harness: Harness, sam: Api, admin: Api) -> Synced:
    """Sam on a calendar of each provider the REST API connects to (not connected yet)."""
    return Synced(api_harness, sam, admin)


@pytest.fixture
def on_caldav(caldav_harness: CalDAVHarness, sam: Api, admin: Api) -> OnCalDAV:
    return OnCalDAV(caldav_harness, sam, admin)


@pytest.fixture
def behaviour() -> Behaviour:
    """How ``proxied``'s proxy answers: a test changes it to play a stricter server."""
    return Behaviour()


@pytest.fixture
def proxied(
    caldav_harness: CalDAVHarness, sam: Api, admin: Api, behaviour: Behaviour
) -> Iterator[Proxied]:
    parts = urlsplit(caldav_harness.calendar_id)
    with caldav_proxy(f"{parts.scheme}://{parts.netloc}", behaviour) as url:
        yield Proxied(caldav_harness, sam, admin, url)


@pytest.fixture
async def on_google(
    google_emulator: GoogleEmulator, sam: Api, admin: Api
) -> AsyncIterator[OnGoogle]:
    harness = await GoogleHarness.open(google_emulator)
    try:
        yield OnGoogle(harness, sam, admin)
    finally:
        await harness.close()


@pytest.fixture
async def on_microsoft(
    microsoft_emulator: MicrosoftEmulator, sam: Api, admin: Api
) -> AsyncIterator[OnMicrosoft]:
    harness = await MicrosoftHarness.open(microsoft_emulator)
    try:
        yield OnMicrosoft(harness, sam, admin)
    finally:
        await harness.close()
