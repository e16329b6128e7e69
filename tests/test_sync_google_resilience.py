"""Google sync under rate-limit storms and expired sync tokens, end to end: crmcal's REST
API, its server calling the Google emulator, and the emulator's admin API injecting the
trouble."""

from __future__ import annotations

import datetime as dt
import itertools
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from crmcal.config import Settings
from crmcal.emulators.google import GoogleState
from crmcal.tls import tls
from tests.conftest import Api, client_of, make_user
from tests.google_emulator import GoogleEmulator

V1 = "/api/v1"
CRM = "https://crm.example"
# crmcal's first retry waits BACKOFF * uniform(0.5, 1) seconds, each next one twice as
# long: small, so that a storm costs a test well under a second.
BACKOFF = 0.02
RETRIES = 5  # GoogleProvider's budget of retries per call
# Google's quota counts every call inside a batch request, not the envelope: count the
# same, so that the bounds hold whether events are created one by one or in batches.
ENVELOPES = ("batch",)


# --- fixtures and helpers ---------------------------------------------------------------


@pytest.fixture
def crm(db_url: str, google_emulator: GoogleEmulator) -> Iterator[TestClient]:
    settings = Settings(database_url=db_url, secret_key="test-key", base_url=CRM,
                        google_api_url=google_emulator.url, google_oauth_url=google_emulator.url,
                        google_client_id="crmcal-test-client", retry_backoff=BACKOFF)  # fmt: skip
    with client_of(settings) as client:
        yield client


class Calls:
    """The emulator's record of the calls it served, and a hand on its faults.

    Injected faults hit the next calls of any account on the emulator, which every
    test of the session shares: they are always cleared when the test ends.
    """

    def __init__(self, emulator: GoogleEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
        self.admin = httpx.Client(verify=tls(), base_url=emulator.url, timeout=30)
        self.state: GoogleState = emulator.state
        self.served: list[tuple[str, float]] = []  # (kind, when), in order of arrival
        # (method, path, when) of every request crmcal's server sends, in order of
        # departure: taken by crmcal's side, so that a request slow to arrive on a busy
        # machine does not shorten the pause before the next one.
        self.sent: list[tuple[str, str, float]] = []
        self._wires: list[tuple[str, int, list[int]]] = []
        counted = emulator.state.count

        def count(kind: str) -> None:
            counted(kind)
            self.served.append((kind, time.monotonic()))
            for wire in list(self._wires):
                wanted, nth, statuses = wire
                if kind == wanted and sum(k == kind for k, _ in self.served) == nth:
                    # Queued on the state itself: this runs inside the emulator's request
                    # handling, where a call to its admin API would wait on itself. The
                    # emulator counts a call before it looks for a fault, so this call
                    # is the storm's first victim.
                    self._wires.remove(wire)
                    for status in statuses:
                        self.state.add_fault(status, 1)

        monkeypatch.setattr(emulator.state, "count", count)
        send = httpx.AsyncClient.send

        async def departing(client: httpx.AsyncClient, request: httpx.Request, **kw: Any) -> Any:
            self.sent.append((request.method, request.url.path, time.monotonic()))
            return await send(client, request, **kw)

        monkeypatch.setattr(httpx.AsyncClient, "send", departing)

    def fail_next(self, statuses: list[int]) -> None:
        """The next API calls (of any account) fail with these statuses, in order."""
        for status in statuses:
            answer = self.admin.post("/_emulator/faults", json={"status": status, "count": 1})
            assert answer.status_code == 200, answer.text

    def fail_from(self, kind: str, statuses: list[int], nth: int = 1) -> None:
        """Once the ``nth`` call of ``kind`` from now arrives, it and the calls after it
        fail with these statuses: a storm that starts in the middle of a sync."""
        self._wires.append((kind, nth + sum(k == kind for k, _ in self.served), statuses))

    def unspent(self) -> list[Any]:
        """Failures injected but not yet served, and storms not yet started."""
        return [*((f.status, f.count) for f in self.state.faults), *self._wires]

    def clear(self) -> None:
        self._wires.clear()
        self.admin.post("/_emulator/faults", json={"clear": True}).raise_for_status()

    def counts(self) -> Counter[str]:
        answer = self.admin.get("/_emulator/requests")
        assert answer.status_code == 200, answer.text
        return Counter({k: v for k, v in answer.json().items() if k not in ENVELOPES})


@pytest.fixture
def calls(google_emulator: GoogleEmulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[Calls]:
    found = Calls(google_emulator, monkeypatch)
    try:
        yield found
    finally:
        found.clear()
        found.admin.close()


def later(hours: int) -> str:
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=1, hours=hours)
    return start.isoformat()


@dataclass
class Linked:
    """A CRM user whose fresh Google account is connected, and that account as another
    client (a phone, Google's web app) sees and edits it."""

    crm: Api
    google: httpx.Client
    email: str
    connection_id: int

    def sync(self) -> httpx.Response:
        return self.crm.post(f"{V1}/connections/{self.connection_id}/sync")

    def status(self) -> dict[str, Any]:
        return self.crm.get(f"{V1}/connections/{self.connection_id}/status").json()

    def activities(self, *, deleted: bool = False) -> list[dict[str, Any]]:
        params = {"owner_id": self.crm.id, "limit": 1000, "deleted": str(deleted).lower()}
        found = self.crm.get(f"{V1}/activities", params=params).json()
        assert found["next_cursor"] is None
        return found["items"]

    def add_activity(self, subject: str, hours: int) -> int:
        body = {"type": "call", "subject": subject, "start": later(hours)}
        made = self.crm.post(f"{V1}/activities", json=body)
        assert made.status_code == 201, made.text
        return int(made.json()["id"])

    def events(self) -> list[dict[str, Any]]:
        """The calendar's events, as the other client lists them (an API call: never
        while faults are pending)."""
        found = self.google.get(f"/calendars/{self.email}/events", params={"maxResults": 2500})
        assert found.status_code == 200, found.text
        assert "nextPageToken" not in found.json()
        return found.json()["items"]

    def add_event(self, summary: str, hours: int) -> str:
        start = dt.datetime.fromisoformat(later(hours))
        body = {"summary": summary, "start": {"dateTime": start.isoformat()},
                "end": {"dateTime": (start + dt.timedelta(hours=1)).isoformat()}}  # fmt: skip
        made = self.google.post("/calendars/primary/events", json=body)
        assert made.status_code == 200, made.text
        return str(made.json()["id"])


Connect = Callable[[str], Linked]


@pytest.fixture
def connect(crm: TestClient, db_url: str, google_emulator: GoogleEmulator) -> Iterator[Connect]:
    """Connects a new CRM user (named as given) to a new Google account."""
    made: list[Linked] = []

    def linked(name: str) -> Linked:
        email = f"{name}-{uuid.uuid4().hex[:10]}@example.test"
        tokens = google_emulator.state.create_account(email)
        user_id, token = make_user(db_url, email=f"{name}@crm.test", name=name)
        user = Api(crm, token, user_id)
        body = {"provider": "google", "refresh_token": tokens["refresh_token"]}
        answer = user.post(f"{V1}/connections", json=body)
        assert answer.status_code == 201, answer.text
        auth = {"Authorization": f"Bearer {tokens['access_token']}"}
        google = httpx.Client(
            verify=tls(), base_url=f"{google_emulator.url}/calendar/v3", headers=auth, timeout=30
        )
        made.append(Linked(user, google, email, answer.json()["id"]))
        return made[-1]

    yield linked
    for side in made:
        side.google.close()


def populate(side: Linked, count: int) -> tuple[list[str], list[str]]:
    """``count`` events made in Google by another client and ``count`` activities made in
    the CRM: (the events' summaries, the activities' subjects)."""
    events = [f"Booked in Google {n}" for n in range(count)]
    subjects = [f"Call from the CRM {n}" for n in range(count)]
    for n in range(count):
        side.add_event(events[n], hours=n)
        side.add_activity(subjects[n], hours=count + n)
    return events, subjects


def assert_once_each(found: list[str], expected: list[str]) -> None:
    """``found`` holds exactly the ``expected`` titles, none of them twice."""
    copies = [title for title, n in Counter(found).items() if n > 1]
    assert not copies, f"duplicates: {copies}"
    assert sorted(found) == sorted(expected)


def assert_kept(before: dict[str, Any], after: dict[str, Any], renames: dict[str, str]) -> None:
    """Every item of ``before`` (title: id) is still there, with the same id, under its
    new title where ``renames`` gives one: linked as it was, not made again."""
    expected = {renames.get(title, title): id_ for title, id_ in before.items()}
    assert {title: after.get(title) for title in expected} == expected


def minimum_backoff(retries: int) -> float:
    """The least GoogleProvider can wait before ``retries`` retries of one call."""
    return sum(BACKOFF * 2**n * 0.5 for n in range(retries))


# --- rate-limit storms ----------------------------------------------------------------------


def test_a_storm_within_the_retry_budget_costs_one_call_per_failure(
    connect: Connect, calls: Calls
) -> None:
    # The same sync without trouble, on an account of its own, measures what it costs.
    clean = connect("clean")
    populate(clean, 5)
    before = calls.counts()
    assert clean.sync().status_code == 200
    clean_cost = (calls.counts() - before).total()

    stormy = connect("stormy")
    events, subjects = populate(stormy, 5)
    # The first call of the sync (its listing) uses up the whole budget of retries,
    # then writes and the push channel are refused a few times each.
    listing_storm, write_storm, watch_storm = [403, 403, 429, 503, 429], [503, 429, 403], [503]
    assert len(listing_storm) == RETRIES
    calls.fail_next(listing_storm)
    calls.fail_from("events.insert", write_storm)
    calls.fail_from("events.watch", watch_storm)
    injected = len(listing_storm) + len(write_storm) + len(watch_storm)
    before, first = calls.counts(), len(calls.sent)
    began = time.monotonic()
    synced = stormy.sync()
    took = time.monotonic() - began
    cost = (calls.counts() - before).total()

    assert synced.status_code == 200, synced.text
    report = synced.json()
    assert (report["created"], report["deleted"], report["problems"]) == (10, 0, [])
    assert calls.unspent() == []  # every injected failure was served
    assert stormy.status()["state"] == "active"
    assert_once_each([a["subject"] for a in stormy.activities()], events + subjects)
    assert_once_each([e["summary"] for e in stormy.events()], events + subjects)
    assert cost <= clean_cost + injected, (cost, clean_cost, injected)

    # Backoff: the listing's attempts left crmcal ever further apart, as GoogleProvider's
    # delays (min(backoff * 2**n, 32) * uniform(0.5, 1)) have them. Departures, not
    # arrivals: each pause runs from an answer to the next attempt's departure, so the
    # gap between two departures is never shorter than it, however slow the machine.
    listing = f"/calendar/v3/calendars/{stormy.email}/events"
    listings = [when for method, path, when in calls.sent[first:]
                if (method, path) == ("GET", listing)]  # fmt: skip
    attempts = listings[: RETRIES + 1]
    assert len(attempts) == RETRIES + 1
    for n, (one, then) in enumerate(itertools.pairwise(attempts)):
        assert then - one >= BACKOFF * 2**n * 0.5, f"retry {n + 1} came after {then - one:.3f} s"
    assert took >= minimum_backoff(RETRIES)


@pytest.mark.parametrize("where", ["listing", "writes"])
def test_a_storm_beyond_the_retry_budget_fails_the_sync_and_loses_nothing(
    connect: Connect, calls: Calls, where: str
) -> None:
    side = connect("stormy")
    events, subjects = populate(side, 3)
    assert side.sync().status_code == 200
    kept = {a["subject"]: a["id"] for a in side.activities()}
    event_ids = {e["summary"]: e["id"] for e in side.events()}
    # Changes on both sides wait for the next sync.
    side.google.patch(f"/calendars/primary/events/{event_ids[events[0]]}",
                      json={"summary": "Moved in Google"}).raise_for_status()  # fmt: skip
    side.add_event("New in Google", hours=20)
    new_subjects = ["New in the CRM 1", "New in the CRM 2"]
    for n, subject in enumerate(new_subjects):
        side.add_activity(subject, hours=21 + n)

    # More failures in a row than any call may retry: from the sync's first call on,
    # or from its second new event on, once the first is made.
    storm = [403, 429, 503] * 10
    if where == "listing":
        calls.fail_next(storm)
    else:
        calls.fail_from("events.insert", storm, nth=2)
    failed = side.sync()
    assert failed.status_code == 409, failed.text
    assert "Google Calendar is busy" in failed.json()["detail"]
    status = side.status()
    assert status["state"] == "error"
    assert "Google Calendar is busy" in status["last_error"]
    calls.clear()  # the storm is over

    # Nothing was deleted on either side (a change may have been applied already).
    assert set(kept.values()) <= {a["id"] for a in side.activities()}
    assert side.activities(deleted=True) == []
    calendar = side.events()
    assert set(event_ids.values()) <= {e["id"] for e in calendar}
    made = [e for e in calendar if e["summary"] in new_subjects]
    assert len(made) == (1 if where == "writes" else 0)

    # The next sync brings everything across, once.
    again = side.sync()
    assert again.status_code == 200, again.text
    assert again.json()["deleted"] == 0
    assert side.status()["state"] == "active"
    everything = ["Moved in Google", *events[1:], "New in Google", *subjects, *new_subjects]
    activities, calendar = side.activities(), side.events()
    assert_once_each([a["subject"] for a in activities], everything)
    assert_once_each([e["summary"] for e in calendar], everything)
    renames = {events[0]: "Moved in Google"}
    assert_kept(kept, {a["subject"]: a["id"] for a in activities}, renames)
    assert_kept(event_ids, {e["summary"]: e["id"] for e in calendar}, renames)
    assert side.activities(deleted=True) == []
    settled = side.sync().json()
    assert (settled["created"], settled["updated"], settled["deleted"]) == (0, 0, 0)


# --- expired sync tokens -------------------------------------------------------------------


def test_an_expired_sync_token_resyncs_in_full_without_copies(
    connect: Connect, calls: Calls
) -> None:
    side = connect("expired")
    events, subjects = populate(side, 3)
    first = side.sync()
    assert first.status_code == 200, first.text
    assert first.json()["created"] == 6
    ids = {a["subject"]: a["id"] for a in side.activities()}
    event_ids = {e["summary"]: e["id"] for e in side.events()}

    expired = calls.admin.post(f"/_emulator/calendars/{side.email}/expire-sync-tokens")
    assert expired.status_code == 204, expired.text
    # One change on each side, and a new event, while the token is dead.
    side.google.patch(f"/calendars/primary/events/{event_ids[events[0]]}",
                      json={"summary": "Moved in Google"}).raise_for_status()  # fmt: skip
    side.add_event("New in Google", hours=20)
    edited = side.crm.patch(f"{V1}/activities/{ids[subjects[0]]}",
                            json={"subject": "Renamed in the CRM"})  # fmt: skip
    assert edited.status_code == 200, edited.text

    before = calls.counts()
    resync = side.sync()
    assert resync.status_code == 200, resync.text
    # The expired token was refused, then the calendar listed in full.
    assert (calls.counts() - before)["events.list"] >= 2
    report = resync.json()
    assert (report["created"], report["updated"], report["deleted"]) == (1, 2, 0)
    assert report["problems"] == []

    everything = ["Moved in Google", *events[1:], "New in Google", "Renamed in the CRM",
                  *subjects[1:]]  # fmt: skip
    activities, calendar = side.activities(), side.events()
    assert_once_each([a["subject"] for a in activities], everything)
    assert_once_each([e["summary"] for e in calendar], everything)
    # The links were kept: the same activities and events, changed in place.
    renames = {events[0]: "Moved in Google", subjects[0]: "Renamed in the CRM"}
    assert_kept(ids, {a["subject"]: a["id"] for a in activities}, renames)
    assert_kept(event_ids, {e["summary"]: e["id"] for e in calendar}, renames)
    assert side.activities(deleted=True) == []
    settled = side.sync().json()
    assert (settled["created"], settled["updated"], settled["deleted"]) == (0, 0, 0)
