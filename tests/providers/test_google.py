"""The Google provider against the Google Calendar emulator.

The contract suite (``test_contract.py``) runs on the emulator too; these tests
cover what is particular to Google: request counts, batches, retries, tokens.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from crmcal.emulators.google import GoogleState, create_app
from crmcal.model import Attendee, CalendarEvent, RemoteRef
from crmcal.providers import google_events
from crmcal.providers.base import (
    AuthenticationFailed,
    CalendarNotFound,
    EventNotFound,
    PreconditionFailed,
    Unreachable,
)
from crmcal.providers.google import GoogleProvider
from tests.providers.harness import BERLIN, meeting

EMULATOR = "http://google.emulator"


class World:
    """The emulator, one account on it, and a provider for that account."""

    def __init__(self) -> None:
        self.state = GoogleState()
        self.app = create_app(self.state)
        self.admin = httpx.AsyncClient(transport=httpx.ASGITransport(self.app), base_url=EMULATOR)
        tokens = self.state.create_account("sam@example.test")
        self.token = tokens["access_token"]
        self.calendar_id = "sam@example.test"
        self.refreshes = 0
        self.provider = self.provider_with(self.token)

    def provider_with(self, token: str, **kw: Any) -> GoogleProvider:
        async def tokens(refresh: bool = False) -> str:
            self.refreshes += refresh
            return token

        return GoogleProvider(tokens, api_url=EMULATOR, backoff=0.001,
                              transport=httpx.ASGITransport(self.app), **kw)  # fmt: skip

    async def as_another_client(self, method: str, path: str, **kw: Any) -> Any:
        response = await self.admin.request(
            method, "/calendar/v3" + path, headers={"Authorization": f"Bearer {self.token}"}, **kw
        )
        assert response.status_code < 300, response.text
        return response.json() if response.content else None

    async def close(self) -> None:
        await self.provider.close()
        await self.admin.aclose()


@pytest.fixture
async def world() -> AsyncIterator[World]:
    made = World()
    try:
        yield made
    finally:
        await made.close()


def key() -> str:
    return uuid.uuid4().hex


def same(ref: Any, event: CalendarEvent) -> bool:
    assert ref.event is not None, ref.error
    return ref.event.content_hash() == event.content_hash()


async def test_calendars_with_write_access(world: World) -> None:
    await world.admin.post("/_emulator/calendars", json={
        "email": "sam@example.test", "id": "holidays@group.calendar.google.com",
        "summary": "Holidays", "access_role": "reader",
    })  # fmt: skip
    calendars = {c.id: c for c in await world.provider.list_calendars()}
    own, holidays = calendars["sam@example.test"], calendars["holidays@group.calendar.google.com"]
    assert (own.primary, own.writable) == (True, True)
    assert (holidays.primary, holidays.writable, holidays.name) == (False, False, "Holidays")


async def test_created_events_read_back_the_same(world: World) -> None:
    event = meeting(
        attendees=(Attendee("ann@acme.test", "Ann", "accepted"),),
        reminder_minutes=15,
        private=True,
        busy=False,
    )
    ref = await world.provider.create(world.calendar_id, key(), event)
    listing = await world.provider.list_changes(world.calendar_id, None)
    assert listing.full
    assert [(r.id, r.etag) for r in listing.changed] == [(ref.id, ref.etag)]
    assert same(listing.changed[0], event)
    (fetched,) = await world.provider.fetch(world.calendar_id, [ref.id])
    assert same(fetched, event)
    assert fetched.event is not None
    assert (fetched.event.crm_id, fetched.event.crm_type) == ("activity-1", "meeting")
    all_day = meeting(start=dt.date(2026, 12, 24), end=dt.date(2026, 12, 27), all_day=True)
    day_ref = await world.provider.create(world.calendar_id, key(), all_day)
    assert same(day_ref, all_day)


async def test_creating_twice_is_refused_and_found_by_key(world: World) -> None:
    activity = key()
    ref = await world.provider.create(world.calendar_id, activity, meeting())
    assert ref.id == google_events.event_id_for(activity)
    with pytest.raises(PreconditionFailed):
        await world.provider.create(world.calendar_id, activity, meeting(summary="other"))
    found = await world.provider.get_by_key(world.calendar_id, activity)
    assert found is not None
    assert found.id == ref.id


async def test_an_insert_sent_again_answers_the_event_the_first_made(world: World) -> None:
    """The same insert once more (its answer was lost): Google answers 409 duplicate for
    the client-chosen id, and the event there, holding what was sent, is the one made:
    answered as made, nothing written over it and no second event."""
    activity = key()
    ref = await world.provider.create(world.calendar_id, activity, meeting())
    before = dict(world.state.requests)
    again = await world.provider.create(world.calendar_id, activity, meeting())
    assert (again.id, again.etag) == (ref.id, ref.etag)
    assert world.state.requests.get("events.insert", 0) - before.get("events.insert", 0) == 1
    assert world.state.requests.get("events.update", 0) == before.get("events.update", 0)
    (result,) = await world.provider.create_many(world.calendar_id, [(activity, meeting())])
    assert isinstance(result, RemoteRef)
    assert (result.id, result.etag) == (ref.id, ref.etag)
    assert await world.provider.get_by_key(world.calendar_id, key()) is None


async def test_incremental_listing_and_an_expired_cursor(world: World) -> None:
    provider, calendar = world.provider, world.calendar_id
    kept = await provider.create(calendar, key(), meeting(summary="kept"))
    edited = await provider.create(calendar, key(), meeting(summary="edited"))
    removed = await provider.create(calendar, key(), meeting(summary="removed"))
    first = await provider.list_changes(calendar, None)
    assert first.cursor
    await world.as_another_client("PATCH", f"/calendars/{calendar}/events/{edited.id}",
                                  json={"summary": "edited elsewhere"})  # fmt: skip
    await world.as_another_client("DELETE", f"/calendars/{calendar}/events/{removed.id}")
    changes = await provider.list_changes(calendar, first.cursor)
    assert not changes.full
    assert [r.id for r in changes.changed] == [edited.id]
    assert changes.changed[0].event is not None
    assert changes.changed[0].event.summary == "edited elsewhere"
    assert changes.deleted == [removed.id]
    quiet = await provider.list_changes(calendar, changes.cursor)
    assert (quiet.changed, quiet.deleted) == ([], [])

    await world.admin.post(f"/_emulator/calendars/{calendar}/expire-sync-tokens")
    again = await provider.list_changes(calendar, changes.cursor)
    assert again.full  # 410: a full listing, without the cancelled one
    assert {r.id for r in again.changed} == {kept.id, edited.id}


async def test_long_listings_come_in_pages(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("crmcal.providers.google_api.PAGE_SIZE", 2)
    made = [await world.provider.create(world.calendar_id, key(), meeting(summary=f"#{n}"))
            for n in range(5)]  # fmt: skip
    listing = await world.provider.list_changes(world.calendar_id, None)
    assert [r.id for r in listing.changed] == [r.id for r in made]
    assert world.state.requests["events.list"] == 3


async def test_updates_and_deletes_name_the_version(world: World) -> None:
    provider, calendar = world.provider, world.calendar_id
    ref = await provider.create(calendar, key(), meeting(location="Room 4"))
    changed = meeting(summary="moved", location=None,
                      start=dt.datetime(2026, 12, 1, 14, tzinfo=BERLIN),
                      end=dt.datetime(2026, 12, 1, 15, tzinfo=BERLIN))  # fmt: skip
    updated = await provider.update(calendar, ref.id, ref.etag, changed)
    assert same(updated, changed)
    with pytest.raises(PreconditionFailed):
        await provider.update(calendar, ref.id, ref.etag, meeting(summary="stale"))
    with pytest.raises(PreconditionFailed):
        await provider.delete(calendar, ref.id, ref.etag)
    await provider.delete(calendar, ref.id, updated.etag)
    await provider.delete(calendar, ref.id, None)  # already gone: fine
    assert await provider.fetch(calendar, [ref.id]) == []
    with pytest.raises(EventNotFound):
        await provider.update(calendar, "nosuchevent0", "x", meeting())


async def test_updates_keep_what_another_client_set(world: World) -> None:
    ref = await world.provider.create(world.calendar_id, key(), meeting())
    await world.as_another_client(
        "PATCH", f"/calendars/{world.calendar_id}/events/{ref.id}",
        json={"colorId": "5", "extendedProperties": {"private": {"theirs": "keep"}}},
    )  # fmt: skip
    (current,) = await world.provider.fetch(world.calendar_id, [ref.id])
    assert current.event is not None
    await world.provider.update(world.calendar_id, ref.id, current.etag,
                                dataclasses.replace(current.event, summary="renamed"))  # fmt: skip
    stored = await world.as_another_client("GET", f"/calendars/{world.calendar_id}/events/{ref.id}")
    assert (stored["summary"], stored["colorId"]) == ("renamed", "5")
    assert stored["extendedProperties"]["private"]["theirs"] == "keep"


@pytest.mark.parametrize("notify", [False, True])
async def test_attendees_are_mailed_only_when_asked(world: World, notify: bool) -> None:
    event = meeting(attendees=(Attendee("ann@acme.test", "Ann"),), notify_attendees=notify)
    ref = await world.provider.create(world.calendar_id, key(), event)
    await world.provider.update(world.calendar_id, ref.id, ref.etag,
                                dataclasses.replace(event, summary="again"))  # fmt: skip
    mails = (await world.admin.get("/_emulator/mail")).json()
    assert mails == ([{"event_id": ref.id, "to": ["ann@acme.test"]}] * 2 if notify else [])


async def test_rate_limits_and_server_errors_are_retried(world: World) -> None:
    for status in (403, 429, 500, 503):
        await world.admin.post("/_emulator/faults", json={"status": status, "count": 2})
    persistent = world.provider_with(world.token, retries=8)
    assert await persistent.list_calendars()
    assert world.state.requests["calendarList.list"] == 9  # 8 failures, then success
    await persistent.close()
    await world.admin.post("/_emulator/faults", json={"status": 503, "count": 10})
    patient_enough = world.provider_with(world.token, retries=3)
    with pytest.raises(Unreachable):
        await patient_enough.list_calendars()
    await patient_enough.close()


async def test_a_refused_token_is_refreshed_once_then_reported(world: World) -> None:
    revoked = world.provider_with("revoked-token")
    with pytest.raises(AuthenticationFailed, match="reconnect required"):
        await revoked.list_calendars()
    assert world.refreshes == 1
    await revoked.close()


async def test_errors_name_what_failed(world: World) -> None:
    with pytest.raises(CalendarNotFound):
        await world.provider.list_changes("nobody@group.calendar.google.com", None)
    dead = GoogleProvider(lambda refresh=False: _token(), api_url="http://127.0.0.1:9",
                          retries=1, backoff=0.001)  # fmt: skip
    with pytest.raises(Unreachable):
        await dead.list_calendars()
    await dead.close()


async def _token() -> str:
    return "token"


async def test_many_creates_go_in_batches_and_answer_one_by_one(world: World) -> None:
    taken = key()
    await world.provider.create(world.calendar_id, taken, meeting(summary="there already"))
    deleted = await world.provider.create(world.calendar_id, key(), meeting(summary="deleted"))
    await world.as_another_client("DELETE", f"/calendars/{world.calendar_id}/events/{deleted.id}")
    deleted_key = deleted.id.removeprefix("crmcal")
    before = dict(world.state.requests)
    items = [(key(), meeting(summary=f"new {n}")) for n in range(120)]
    items[7] = (taken, meeting(summary="again"))
    items[9] = (deleted_key, meeting(summary="back again"))
    results = await world.provider.create_many(world.calendar_id, items)

    def made(kind: str) -> int:
        return world.state.requests.get(kind, 0) - before.get(kind, 0)

    assert made("batch") == 3  # 50 calls a batch
    assert made("events.insert") == 120
    assert isinstance(results[7], PreconditionFailed)
    for (_, event), result in zip(items, results, strict=True):
        if result is not results[7]:
            assert same(result, event)
    listed = await world.provider.list_changes(world.calendar_id, None)
    assert sorted(r.event.summary or "" for r in listed.changed if r.event) == sorted(
        ["there already"] + [e.summary or "" for n, (_, e) in enumerate(items) if n != 7]
    )


async def test_rate_limited_calls_in_a_batch_are_sent_again(world: World) -> None:
    await world.admin.post("/_emulator/faults", json={"status": 429, "count": 3})
    await world.admin.post("/_emulator/faults", json={"status": 403, "count": 2})
    items = [(key(), meeting(summary=f"new {n}")) for n in range(10)]
    results = await world.provider.create_many(world.calendar_id, items)
    assert all(not isinstance(r, Exception) for r in results), results
    # 5 refused calls, sent once more in a second batch; no copies.
    assert world.state.requests["events.insert"] == 15
    assert world.state.requests["batch"] == 2
    assert len((await world.provider.list_changes(world.calendar_id, None)).changed) == 10

    await world.admin.post("/_emulator/faults", json={"status": 503, "count": 100})
    impatient = world.provider_with(world.token, retries=2)
    failed = await impatient.create_many(world.calendar_id, items[:2])
    assert all(isinstance(r, Unreachable) for r in failed)
    await impatient.close()
    await world.admin.post("/_emulator/faults", json={"clear": True})


async def test_short_and_empty_pages_lose_nothing(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("crmcal.providers.google_api.PAGE_SIZE", 4)
    made = {
        (await world.provider.create(world.calendar_id, key(), meeting())).id for _ in range(25)
    }
    world.state.configure({"short_pages": True})
    listing = await world.provider.list_changes(world.calendar_id, None)
    assert sorted(r.id for r in listing.changed) == sorted(made)
    assert world.state.requests["events.list"] > 25 // 4  # it did page, shortly
    assert (await world.provider.list_changes(world.calendar_id, listing.cursor)).changed == []


# Items of the owner's status, not events (Google's event types): (type, its properties).
STATUS_ITEMS = {
    "outOfOffice": ("outOfOfficeProperties", {"autoDeclineMode": "declineNone"}),
    "focusTime": ("focusTimeProperties", {"chatStatus": "doNotDisturb"}),
    "workingLocation": ("workingLocationProperties", {"type": "homeOffice", "homeOffice": {}}),
}


async def test_the_owners_status_items_are_no_events_and_mails_are(world: World) -> None:
    """Out-of-office blocks, focus time and working locations are the owner's status:
    neither listed nor read as events, in full and incremental listings and by id. An
    event Gmail made (``fromGmail``) is an event."""
    first = await world.provider.list_changes(world.calendar_id, None)
    start = dt.datetime(2026, 12, 2, 9, tzinfo=dt.UTC)
    ids = []
    for kind, (field, properties) in STATUS_ITEMS.items():
        body = {"eventType": kind, "summary": kind, field: properties,
                "start": {"dateTime": start.isoformat()},
                "end": {"dateTime": (start + dt.timedelta(hours=1)).isoformat()}}  # fmt: skip
        if kind != "workingLocation":
            body["transparency"] = "opaque"
        ids.append((await world.as_another_client(
            "POST", f"/calendars/{world.calendar_id}/events", json=body))["id"])  # fmt: skip
    made = await world.provider.create(world.calendar_id, uuid.uuid4().hex, meeting())
    for cursor in (first.cursor, None):
        listing = await world.provider.list_changes(world.calendar_id, cursor)
        assert [ref.id for ref in listing.changed] == [made.id]
        assert listing.deleted == []
    assert await world.provider.fetch(world.calendar_id, ids) == []
    mail = {"id": "x", "eventType": "fromGmail", "summary": "Flight",
            "start": {"date": "2026-12-02"}, "end": {"date": "2026-12-03"}}  # fmt: skip
    assert google_events.is_event(mail)
