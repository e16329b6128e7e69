"""What a sync costs in requests, counted by the Google and Graph emulators: a sync of a
connection with nothing new on either side costs one request, and changes go out in
batches rather than one request each.

What is counted is what the providers send, the same on either backend: these tests run
on SQLite (``sqlite_only``), while what the syncs store is tested on both backends by
the sync tests (tests/test_engine.py, test_sync_*_api.py, tests/providers). Two syncs
of one grant at once, which meet in the database, run on both here too."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import pytest

from crmcal.config import Settings
from crmcal.model import CalendarEvent, Recurrence, RemoteRef
from crmcal.providers import google_events, google_oauth, microsoft_creates, microsoft_events
from crmcal.providers.api_client import close_shared
from crmcal.providers.base import Provider, ProviderError, Update
from crmcal.providers.google import GoogleProvider
from crmcal.providers.microsoft import MicrosoftProvider
from crmcal.tls import tls
from tests import plain
from tests.conftest import Api, client_of, make_user, sqlite_only
from tests.fault_proxy import fault_proxy
from tests.google_emulator import GoogleEmulator, GoogleHarness
from tests.microsoft_emulator import MicrosoftEmulator, MicrosoftHarness
from tests.providers.conftest import opened
from tests.providers.harness import occurrence_of

V1 = "/api/v1"
CRM = "https://crm.example"
TIMEOUT = 60.0
HOUR = dt.timedelta(hours=1)
# These tests count requests, not how a lease fares on a busy machine (test_lease's
# subject): a lease longer than any of their syncs is never renewed, so a large import
# slowed by other work cannot lose it and fail for that.
LEASE_SECONDS = 3600.0


def counts(url: str) -> Counter[str]:
    answer = plain.get(f"{url}/_emulator/requests", timeout=TIMEOUT)
    assert answer.status_code == 200, answer.text
    return Counter(answer.json())


def later(hours: int) -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=1, hours=hours)


@pytest.fixture
def google_crm(db_url: str, google_emulator: GoogleEmulator) -> Iterator[Api]:
    settings = Settings(database_url=db_url, secret_key="test-key", base_url=CRM,
                        google_api_url=google_emulator.url, google_oauth_url=google_emulator.url,
                        google_client_id="crmcal-test-client", retry_backoff=0.01,
                        lease_seconds=LEASE_SECONDS)  # fmt: skip
    with client_of(settings, base_url=CRM) as client:
        name = f"g{uuid.uuid4().hex[:8]}"
        user_id, token = make_user(db_url, email=f"{name}@crm.test", name=name)
        yield Api(client, token, user_id)


@pytest.fixture
def graph_crm(db_url: str, microsoft_emulator: MicrosoftEmulator) -> Iterator[Api]:
    settings = Settings(database_url=db_url, secret_key="test-key", base_url=CRM,
                        microsoft_api_url=microsoft_emulator.url,
                        microsoft_oauth_url=microsoft_emulator.url,
                        microsoft_client_id="crmcal-test-client", retry_backoff=0.01,
                        lease_seconds=LEASE_SECONDS)  # fmt: skip
    with client_of(settings, base_url=CRM) as client:
        name = f"m{uuid.uuid4().hex[:8]}"
        user_id, token = make_user(db_url, email=f"{name}@crm.test", name=name)
        yield Api(client, token, user_id)


def sync(crm: Api, connection_id: int) -> dict[str, Any]:
    answer = crm.post(f"{V1}/connections/{connection_id}/sync")
    assert answer.status_code == 200, answer.text
    return answer.json()


def counted_sync(
    crm: Api, connection_id: int, emulator_url: str
) -> tuple[dict[str, Any], Counter[str]]:
    """A sync's report, and the requests it cost the emulator at ``emulator_url``."""
    before = counts(emulator_url)
    report = sync(crm, connection_id)
    return report, counts(emulator_url) - before


def graph_event(subject: str, start: dt.datetime, length: dt.timedelta = HOUR
                ) -> dict[str, Any]:  # fmt: skip
    """A single Outlook event's body at ``start`` (UTC, written without its offset)."""
    start = start.replace(tzinfo=None)
    return {"subject": subject, "start": {"dateTime": start.isoformat(), "timeZone": "UTC"},
            "end": {"dateTime": (start + length).isoformat(), "timeZone": "UTC"}}  # fmt: skip


def add_activities(crm: Api, count: int) -> list[int]:
    made = []
    for n in range(count):
        body = {"type": "call", "subject": f"Call {n}", "start": later(n).isoformat()}
        answer = crm.post(f"{V1}/activities", json=body)
        assert answer.status_code == 201, answer.text
        made.append(int(answer.json()["id"]))
    return made


def connect_google(crm: Api, emulator: GoogleEmulator) -> tuple[int, httpx.Client]:
    email = f"floor-{uuid.uuid4().hex[:10]}@example.test"
    tokens = emulator.state.create_account(email)
    body = {"provider": "google", "refresh_token": tokens["refresh_token"]}
    answer = crm.post(f"{V1}/connections", json=body)
    assert answer.status_code == 201, answer.text
    auth = {"Authorization": f"Bearer {tokens['access_token']}"}
    client = httpx.Client(
        verify=tls(), base_url=f"{emulator.url}/calendar/v3", headers=auth, timeout=TIMEOUT
    )
    return int(answer.json()["id"]), client


def connect_graph(
    crm: Api, emulator: MicrosoftEmulator, email: str | None = None
) -> tuple[int, httpx.Client]:
    email = email or f"floor-{uuid.uuid4().hex[:10]}@example.test"
    tokens = emulator.state.create_account(email)
    body = {"provider": "microsoft", "refresh_token": tokens["refresh_token"]}
    answer = crm.post(f"{V1}/connections", json=body)
    assert answer.status_code == 201, answer.text
    headers = {"Authorization": f"Bearer {tokens['access_token']}",
               "Prefer": 'IdType="ImmutableId"'}  # fmt: skip
    client = httpx.Client(
        verify=tls(), base_url=f"{emulator.url}/v1.0", headers=headers, timeout=TIMEOUT
    )
    return int(answer.json()["id"]), client


@sqlite_only
def test_a_google_sync_with_no_changes_costs_one_request(
    google_crm: Api, google_emulator: GoogleEmulator
) -> None:
    connection_id, google = connect_google(google_crm, google_emulator)
    with google:
        for n in range(3):
            start = later(10 + n)
            body = {"summary": f"Booked {n}", "start": {"dateTime": start.isoformat()},
                    "end": {"dateTime": (start + dt.timedelta(hours=1)).isoformat()}}  # fmt: skip
            assert google.post("/calendars/primary/events", json=body).status_code == 200
    add_activities(google_crm, 3)
    sync(google_crm, connection_id)
    sync(google_crm, connection_id)  # settles what the first sync wrote

    report, spent = counted_sync(google_crm, connection_id, google_emulator.url)

    assert (report["created"], report["updated"], report["deleted"]) == (0, 0, 0), report
    assert spent.total() == 1, spent


@sqlite_only
def test_a_graph_sync_with_no_changes_costs_one_request(
    graph_crm: Api, microsoft_emulator: MicrosoftEmulator
) -> None:
    connection_id, graph = connect_graph(graph_crm, microsoft_emulator)
    with graph:
        for n in range(3):
            made = graph.post("/me/events", json=graph_event(f"Booked {n}", later(10 + n)))
            assert made.status_code == 201, made.text
    add_activities(graph_crm, 3)
    sync(graph_crm, connection_id)
    sync(graph_crm, connection_id)

    report, spent = counted_sync(graph_crm, connection_id, microsoft_emulator.url)

    assert (report["created"], report["updated"], report["deleted"]) == (0, 0, 0), report
    assert spent.total() == 1, spent


# The page size asked of Graph is the provider's, the same on either backend; the import
# of those pages is tested on both (tests/test_import_bulk.py, test_first_import_parts.py).
@sqlite_only
def test_graph_delta_reads_the_largest_pages(
    graph_crm: Api, microsoft_emulator: MicrosoftEmulator
) -> None:
    email = f"floor-{uuid.uuid4().hex[:10]}@example.test"
    connection_id, graph = connect_graph(graph_crm, microsoft_emulator, email)
    graph.close()
    state = microsoft_emulator.state
    mailbox = state.mailbox(email)
    calendar = mailbox.default_calendar
    for n in range(450):
        state.events.create(mailbox, calendar, graph_event(f"Booked {n}", later(n % 200)))

    report, spent = counted_sync(graph_crm, connection_id, microsoft_emulator.url)

    assert report["created"] == 450, report
    # Graph answers up to 1,000 events a delta page when asked: one page, not three.
    assert spent["calendarView.delta"] == 1, spent


def delete_all(crm: Api, ids: list[int]) -> None:
    for activity_id in ids:
        answer = crm.delete(f"{V1}/activities/{activity_id}")
        assert answer.status_code in (200, 204), answer.text


@sqlite_only
def test_google_deletes_go_in_batches(google_crm: Api, google_emulator: GoogleEmulator) -> None:
    connection_id, google = connect_google(google_crm, google_emulator)
    ids = add_activities(google_crm, 6)
    sync(google_crm, connection_id)
    delete_all(google_crm, ids[2:])

    report, spent = counted_sync(google_crm, connection_id, google_emulator.url)

    assert (report["deleted"], report["problems"]) == (4, []), report
    assert (spent["batch"], spent["events.delete"]) == (1, 4), spent
    with google:
        found = google.get("/calendars/primary/events").json()["items"]
    assert sorted(e["summary"] for e in found if e.get("status") != "cancelled") == [
        "Call 0",
        "Call 1",
    ]


@sqlite_only
def test_graph_deletes_go_in_batches(graph_crm: Api, microsoft_emulator: MicrosoftEmulator) -> None:
    connection_id, graph = connect_graph(graph_crm, microsoft_emulator)
    ids = add_activities(graph_crm, 6)
    sync(graph_crm, connection_id)
    delete_all(graph_crm, ids[2:])

    report, spent = counted_sync(graph_crm, connection_id, microsoft_emulator.url)

    assert (report["deleted"], report["problems"]) == (4, []), report
    # The deletes in one batch; another reads crmcal's ids of the six events the first
    # sync made, which this delta round brings back.
    assert (spent["batch"], spent["events.delete"], spent["events.get"]) == (2, 4, 6), spent
    assert spent.total() == 1 + 2 + 4 + 6, spent
    with graph:
        found = graph.get("/me/events", params={"$top": 100}).json()["value"]
    assert sorted(e["subject"] for e in found) == ["Call 0", "Call 1"]


@sqlite_only
def test_a_refused_update_in_a_batch_is_that_items_problem_alone(
    google_crm: Api, google_emulator: GoogleEmulator
) -> None:
    connection_id, google = connect_google(google_crm, google_emulator)
    ids = add_activities(google_crm, 3)
    sync(google_crm, connection_id)
    for activity_id in ids:
        answer = google_crm.patch(f"{V1}/activities/{activity_id}", json={"subject": "Moved"})
        assert answer.status_code == 200, answer.text
    with google:
        found = google.get("/calendars/primary/events").json()["items"]
        # Someone turns one of them into a series: crmcal does not write a single
        # event over it, and the two others go through.
        target = next(e for e in found if e["summary"] == "Call 1")
        made = google.patch(f"/calendars/primary/events/{target['id']}",
                            json={"recurrence": ["RRULE:FREQ=DAILY;COUNT=3"]})  # fmt: skip
        assert made.status_code == 200, made.text
        report = sync(google_crm, connection_id)
        titles = sorted(
            e["summary"] for e in google.get("/calendars/primary/events").json()["items"]
        )
    assert report["updated"] == 2, report
    assert titles == ["Call 1", "Moved", "Moved"]


@sqlite_only
def test_successive_syncs_reuse_one_connection_and_one_token(
    db_url: str, google_emulator: GoogleEmulator
) -> None:
    """The HTTP client and the token source outlive a sync: the next sync of the
    connection in the same process goes over the same TCP connection, and the access
    token is asked for once."""
    # An hour's keep-alive: only crmcal can close the connection between the syncs.
    with fault_proxy(google_emulator.url, keep_alive=3600) as (proxy, url):
        settings = Settings(database_url=db_url, secret_key="test-key", base_url=CRM,
                            google_api_url=url, google_oauth_url=google_emulator.url,
                            google_client_id="crmcal-test-client",
                            retry_backoff=0.01)  # fmt: skip
        with client_of(settings, base_url=CRM) as client:
            name = f"g{uuid.uuid4().hex[:8]}"
            user_id, token = make_user(db_url, email=f"{name}@crm.test", name=name)
            crm = Api(client, token, user_id)
            tokens_before = counts(google_emulator.url)["oauth.token"]
            connection_id, google = connect_google(crm, google_emulator)
            google.close()
            add_activities(crm, 2)
            seen = len(proxy.clients)
            assert sync(crm, connection_id)["created"] == 2
            add_activities(crm, 1)
            assert sync(crm, connection_id)["created"] == 1
            connections = set(proxy.clients[seen:])
            refreshed = counts(google_emulator.url)["oauth.token"] - tokens_before
    assert len(proxy.clients) > seen + 2
    assert len(connections) == 1, connections
    assert refreshed == 1


def connected(request: pytest.FixtureRequest, kind: str) -> tuple[Api, Any, int]:
    """The CRM connected to the ``kind`` emulator ("google" or "graph"): (the CRM, the
    emulator, the connection's id)."""
    crm: Api = request.getfixturevalue(f"{kind}_crm")
    emulator = request.getfixturevalue(
        "google_emulator" if kind == "google" else "microsoft_emulator"
    )
    connect = connect_google if kind == "google" else connect_graph
    connection_id, direct = connect(crm, emulator)
    direct.close()
    return crm, emulator, connection_id


def edit_all(crm: Api, ids: list[int]) -> None:
    for activity_id in ids:
        answer = crm.patch(f"{V1}/activities/{activity_id}", json={"subject": "Moved"})
        assert answer.status_code == 200, answer.text


@sqlite_only
@pytest.mark.parametrize(("kind", "count", "batch_size"), [("google", 60, 50), ("graph", 25, 20)])
def test_updates_cost_one_request_per_batch(
    request: pytest.FixtureRequest, db_url: str, kind: str, count: int, batch_size: int
) -> None:
    """N CRM edits of synced activities cost the listing and ceil(N / batch size) batch
    requests: no read per event, no request per event."""
    crm, emulator, connection_id = connected(request, kind)
    ids = add_activities(crm, count)
    assert sync(crm, connection_id)["created"] == count
    sync(crm, connection_id)  # settles what the first sync wrote
    edit_all(crm, ids)

    report, spent = counted_sync(crm, connection_id, emulator.url)

    assert (report["updated"], report["problems"]) == (count, []), report
    batches = -(-count // batch_size)
    patches = "events.patch" if kind == "google" else "events.update"
    assert (spent["batch"], spent[patches]) == (batches, count), spent
    assert spent.total() - spent[patches] == 1 + batches, spent  # the listing, the batches


# --- series ---------------------------------------------------------------------------------


def weekly_series(n: int) -> tuple[dt.datetime, dict[str, Any]]:
    """A weekly series another client writes to Google, ``n`` hours apart from the others."""
    start = later(20 + n).replace(minute=0, second=0)
    body = {"summary": f"Weekly {n}", "recurrence": ["RRULE:FREQ=WEEKLY;COUNT=6"],
            "start": {"dateTime": start.replace(tzinfo=None).isoformat(), "timeZone": "UTC"},
            "end": {"dateTime": (start + dt.timedelta(hours=1)).replace(tzinfo=None).isoformat(),
                    "timeZone": "UTC"}}  # fmt: skip
    return start, body


@sqlite_only
def test_google_reads_the_exceptions_of_changed_series_in_one_batch(
    google_crm: Api, google_emulator: GoogleEmulator
) -> None:
    """Series changed in the calendar are read back with their exceptions: the masters in
    one batch request and the exceptions of all of them in another, not a listing each."""
    connection_id, google = connect_google(google_crm, google_emulator)
    with google:
        made = []
        for n in range(3):
            start, body = weekly_series(n)
            answer = google.post("/calendars/primary/events", json=body)
            assert answer.status_code == 200, answer.text
            made.append((answer.json()["id"], start))
        assert sync(google_crm, connection_id)["created"] == 3
        sync(google_crm, connection_id)
        for event_id, start in made:  # another client retitles each one's second occurrence
            second = start + dt.timedelta(weeks=1)
            instance = f"{event_id}_{second.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}"
            answer = google.patch(f"/calendars/primary/events/{instance}",
                                  json={"summary": "Moved on"})  # fmt: skip
            assert answer.status_code == 200, answer.text

    report, spent = counted_sync(google_crm, connection_id, google_emulator.url)

    assert (report["updated"], report["problems"]) == (3, []), report
    # The listing, then the three masters (one batch) and their exceptions (one batch).
    assert (spent["batch"], spent["events.get"], spent["events.list"]) == (2, 3, 4), spent
    assert spent.total() == 2 + 3 + 4, spent
    activities = google_crm.get(f"{V1}/activities", params={"limit": 100}).json()["items"]
    assert sorted(a["subject"] for a in activities).count("Moved on") == 3


@sqlite_only
def test_a_graph_import_reads_its_series_in_batches(
    graph_crm: Api, microsoft_emulator: MicrosoftEmulator
) -> None:
    """Delta shows a series as its occurrences: the masters and their exceptions and
    cancellations are read in ``$batch`` requests of 20, not two requests a series."""
    email = f"floor-{uuid.uuid4().hex[:10]}@example.test"
    connection_id, graph = connect_graph(graph_crm, microsoft_emulator, email)
    graph.close()
    state = microsoft_emulator.state
    mailbox = state.mailbox(email)
    for n in range(25):
        start = later(20 + n).replace(minute=0, second=0)
        state.events.create(
            mailbox, mailbox.default_calendar, graph_weekly(start, 4, f"Weekly {n}")
        )

    report, spent = counted_sync(graph_crm, connection_id, microsoft_emulator.url)

    assert (report["created"], report["problems"]) == (25, []), report
    # Each master read twice (its fields, then its exceptions), 20 reads a batch.
    assert (spent["batch"], spent["events.get"]) == (4, 50), spent
    # Besides: the delta page, the one query of crmcal's ids, the first sync's subscription.
    assert spent.total() - spent["events.get"] == 4 + 3, spent


def graph_weekly(start: dt.datetime, count: int, subject: str) -> dict[str, Any]:
    """An Outlook series' body: ``count`` weekly occurrences an hour long from ``start``."""
    start = start.replace(tzinfo=None)
    return {
        **graph_event(subject, start),
        "recurrence": {
            "pattern": {"type": "weekly", "interval": 1,
                        "daysOfWeek": [start.strftime("%A").lower()]},
            "range": {"type": "numbered", "startDate": start.date().isoformat(),
                      "numberOfOccurrences": count},
        },
    }  # fmt: skip


@sqlite_only
def test_a_series_deleted_in_outlook_costs_no_read_per_occurrence(
    graph_crm: Api, microsoft_emulator: MicrosoftEmulator
) -> None:
    """Delta removes a deleted series occurrence by occurrence: those are no events of
    crmcal's and are not read one by one; the series' master is read, and only the
    removed events crmcal synced are read to tell a deletion from a move out of the
    window."""
    connection_id, graph = connect_graph(graph_crm, microsoft_emulator)
    with graph:
        start = later(20).replace(minute=0, second=0)
        made = graph.post("/me/events", json=graph_weekly(start, 30, "Weekly review"))
        assert made.status_code == 201, made.text
        single = graph.post("/me/events", json=graph_event("Booked", start, dt.timedelta(hours=2)))
        assert single.status_code == 201, single.text
        assert sync(graph_crm, connection_id)["created"] == 2
        sync(graph_crm, connection_id)
        assert graph.delete(f"/me/events/{made.json()['id']}").status_code == 204
        assert graph.delete(f"/me/events/{single.json()['id']}").status_code == 204

        report, spent = counted_sync(graph_crm, connection_id, microsoft_emulator.url)

    assert (report["deleted"], report["problems"]) == (2, []), report
    # The delta round, the series' master (gone), the single event (gone).
    assert (spent["calendarView.delta"], spent["events.get"]) == (1, 2), spent
    assert spent.total() == 3, spent
    listed = graph_crm.get(f"{V1}/activities", params={"limit": 100}).json()["items"]
    assert listed == []


@sqlite_only
def test_an_event_moved_out_of_the_graph_window_is_not_deleted(
    graph_crm: Api, microsoft_emulator: MicrosoftEmulator
) -> None:
    """Delta says removed for an event moved out of its window as for a deleted one: the
    synced event is read, and found, so its activity moves with it."""
    connection_id, graph = connect_graph(graph_crm, microsoft_emulator)
    with graph:
        start = later(5).replace(tzinfo=None)
        made = graph.post("/me/events", json=graph_event("Planning", start))
        assert made.status_code == 201, made.text
        assert sync(graph_crm, connection_id)["created"] == 1
        sync(graph_crm, connection_id)
        far = start + dt.timedelta(days=7 * 365)
        moved = graph.patch(f"/me/events/{made.json()['id']}", json={
            key: graph_event("Planning", far)[key] for key in ("start", "end")
        })  # fmt: skip
        assert moved.status_code == 200, moved.text
        report = sync(graph_crm, connection_id)

    assert (report["deleted"], report["updated"], report["problems"]) == (0, 1, []), report
    (activity,) = graph_crm.get(f"{V1}/activities", params={"limit": 100}).json()["items"]
    assert dt.datetime.fromisoformat(activity["start"]).year == far.year


def series_event(n: int, **fields: Any) -> CalendarEvent:
    start = later(30 + n).replace(minute=0, second=0)
    return CalendarEvent(summary=f"Weekly {n}", start=start, end=start + dt.timedelta(hours=1),
                         timezone="UTC", recurrence=Recurrence("FREQ=WEEKLY;COUNT=5"),
                         **fields)  # fmt: skip


def with_override(series: CalendarEvent, summary: str) -> CalendarEvent:
    """``series`` with its second occurrence retitled."""
    assert isinstance(series.start, dt.datetime)
    assert series.end is not None
    moment = series.start + dt.timedelta(weeks=1)
    override = occurrence_of(series, moment, summary=summary, start=moment,
                             end=moment + (series.end - series.start))  # fmt: skip
    return dataclasses.replace(series, overrides=(override,))


async def singles_and_series_retitled(
    provider: Provider, calendar: str
) -> tuple[list[RemoteRef], list[Update]]:
    """Three single events and three series (each with a retitled occurrence) made in
    ``calendar``; the series, and the updates that retitle all six, a series' changed
    occurrence too."""
    singles = [await provider.create(calendar, uuid.uuid4().hex,
                                     CalendarEvent(summary=f"Call {n}", start=later(n),
                                                   end=later(n + 1), timezone="UTC"))
               for n in range(3)]  # fmt: skip
    series = [
        await provider.create(calendar, uuid.uuid4().hex, with_override(series_event(n), "Kept"))
        for n in range(3)
    ]
    updates = [
        Update(ref.id, ref.etag, dataclasses.replace(ref.event, summary="Moved"),
               frozenset({"summary"}), single=True)
        for ref in singles if ref.event is not None
    ] + [
        Update(ref.id, ref.etag,
               with_override(dataclasses.replace(ref.event, summary="Moved", overrides=()),
                             "Moved on"),
               frozenset({"summary", "overrides"}))
        for ref in series if ref.event is not None
    ]  # fmt: skip
    return series, updates


async def assert_series_retitled(
    provider: Provider, calendar: str, series: list[RemoteRef], results: list[Any]
) -> None:
    """Each of ``series`` is read back as its update's ``results`` left it: retitled, and
    its changed occurrence too."""
    found = await provider.fetch(calendar, [ref.id for ref in series])
    for ref, result in zip(found, results, strict=True):
        assert ref.event is not None
        assert isinstance(result, RemoteRef)
        assert ref.etag == result.etag
        assert ref.event.summary == "Moved"
        assert [o.summary for o in ref.event.overrides] == ["Moved on"]


async def test_google_series_updates_go_in_the_batches_of_single_updates(
    google_emulator: GoogleEmulator,
) -> None:
    """Series written with single events go in the same batch requests: the series'
    masters read in one, their exceptions in another, every patch (single events and
    masters) in a third, every occurrence's write in a fourth; not three or four
    requests a series."""
    async with opened(GoogleHarness.open(google_emulator)) as harness:
        provider, calendar = harness.provider, harness.calendar_id
        series, updates = await singles_and_series_retitled(provider, calendar)

        before = counts(google_emulator.url)
        results = await provider.update_many(calendar, updates)
        spent = counts(google_emulator.url) - before

        assert [type(r).__name__ for r in results] == ["RemoteRef"] * 6, results
        assert (spent["batch"], spent["events.get"], spent["events.list"]) == (4, 3, 3), spent
        # Three single events and three masters patched, then three occurrences.
        assert spent["events.patch"] == 3 + 3 + 3, spent
        assert spent.total() == 4 + 3 + 3 + 9, spent
        await assert_series_retitled(provider, calendar, series, results[3:])


async def test_graph_series_updates_go_in_the_batches_of_single_updates(
    microsoft_emulator: MicrosoftEmulator,
) -> None:
    """Series written with single events share their ``$batch`` requests: the series'
    masters read in one, their cancelled occurrences and exceptions in another, every
    patch (single events and masters) in a third; then each series' changed occurrence;
    not four requests a series and one for the single events."""
    async with opened(MicrosoftHarness.open(microsoft_emulator)) as harness:
        provider, calendar = harness.provider, harness.calendar_id
        series, updates = await singles_and_series_retitled(provider, calendar)

        before = counts(microsoft_emulator.url)
        results = await provider.update_many(calendar, updates)
        spent = counts(microsoft_emulator.url) - before

        assert [type(r).__name__ for r in results] == ["RemoteRef"] * 6, results
        assert (spent["batch"], spent["events.get"]) == (3, 3 + 3), spent
        # Three single events and three masters patched, then three occurrences.
        assert spent["events.update"] == 3 + 3 + 3, spent
        assert spent.total() == 3 + 6 + 9, spent
        await assert_series_retitled(provider, calendar, series, results[3:])


def graph_crm_series(
    crm: Api, emulator: MicrosoftEmulator
) -> tuple[int, int, list[dict[str, Any]]]:
    """A weekly series of five made in the CRM, connected to Outlook and synced until
    settled: (the connection's id, the series' id, its occurrences)."""
    connection_id, graph = connect_graph(crm, emulator)
    graph.close()
    start = later(30).replace(minute=0, second=0)
    made = crm.post(f"{V1}/activities", json={
        "type": "meeting", "subject": "Weekly", "start": start.isoformat(),
        "end": (start + dt.timedelta(hours=1)).isoformat(), "timezone": "UTC",
        "recurrence": "FREQ=WEEKLY;COUNT=5",
    })  # fmt: skip
    assert made.status_code == 201, made.text
    series_id = made.json()["series_id"]
    assert sync(crm, connection_id)["created"] == 1
    sync(crm, connection_id)
    return connection_id, series_id, occurrences(crm, series_id)


def occurrences(crm: Api, series_id: int) -> list[dict[str, Any]]:
    return crm.get(f"{V1}/activities", params={"series_id": series_id, "limit": 10}).json()["items"]


@sqlite_only
def test_a_graph_series_read_back_after_a_cancelled_occurrence_is_one_request(
    graph_crm: Api, microsoft_emulator: MicrosoftEmulator
) -> None:
    """An occurrence cancelled in the CRM is deleted in Outlook, and the series read back
    (its master, then its cancelled occurrences and exceptions) in one ``$batch``."""
    connection_id, series_id, listed = graph_crm_series(graph_crm, microsoft_emulator)
    gone = graph_crm.delete(f"{V1}/activities/{listed[2]['id']}", params={"scope": "this"})
    assert gone.status_code == 200, gone.text

    report, spent = counted_sync(graph_crm, connection_id, microsoft_emulator.url)

    assert (report["updated"], report["problems"]) == (1, []), report
    assert spent["events.delete"] == 1, spent
    assert spent["batch"] == 1, spent  # the read back: master and occurrences together
    sync(graph_crm, connection_id)
    after = occurrences(graph_crm, series_id)
    assert [a["id"] for a in after] == [a["id"] for a in listed if a["id"] != listed[2]["id"]]


@sqlite_only
def test_a_graph_occurrence_edited_in_the_crm_reads_its_series_once(
    graph_crm: Api, microsoft_emulator: MicrosoftEmulator
) -> None:
    """An occurrence edited in the CRM: the series is read (its master, then its
    cancelled occurrences and exceptions) once for the write, not once by the series
    engine and again by the provider's update."""
    connection_id, series_id, listed = graph_crm_series(graph_crm, microsoft_emulator)
    edited = graph_crm.patch(
        f"{V1}/activities/{listed[2]['id']}", json={"subject": "Moved on", "scope": "this"}
    )
    assert edited.status_code == 200, edited.text

    report, spent = counted_sync(graph_crm, connection_id, microsoft_emulator.url)

    assert (report["updated"], report["problems"]) == (1, []), report
    # The master and its occurrences read once; the occurrence found and patched.
    assert spent["events.get"] == 2, spent
    assert (spent["events.instances"], spent["events.update"]) == (1, 1), spent
    again = sync(graph_crm, connection_id)
    assert (again["updated"], again["created"]) == (0, 0), again
    after = occurrences(graph_crm, series_id)
    assert [a["subject"] for a in after] == ["Weekly"] * 2 + ["Moved on"] + ["Weekly"] * 2


def crm_series(crm: Api, count: int) -> list[int]:
    """``count`` weekly series made in the CRM, an hour apart: their first occurrences."""
    firsts = []
    for n in range(count):
        start = later(40 + n).replace(minute=0, second=0)
        made = crm.post(f"{V1}/activities", json={
            "type": "meeting", "subject": f"Weekly {n}", "start": start.isoformat(),
            "end": (start + HOUR).isoformat(), "timezone": "UTC",
            "recurrence": "FREQ=WEEKLY;COUNT=4",
        })  # fmt: skip
        assert made.status_code == 201, made.text
        firsts.append(int(made.json()["id"]))
    return firsts


def retitle_series(crm: Api, firsts: list[int], subject: str = "Moved") -> None:
    for activity_id in firsts:
        answer = crm.patch(f"{V1}/activities/{activity_id}",
                           json={"subject": subject, "scope": "series"})  # fmt: skip
        assert answer.status_code == 200, answer.text


def synced_series(request: pytest.FixtureRequest, kind: str, count: int
                  ) -> tuple[Api, Any, int, list[int]]:  # fmt: skip
    """``count`` CRM series synced to a new connection until settled: (the CRM, the
    emulator, the connection's id, each series' first occurrence)."""
    crm, emulator, connection_id = connected(request, kind)
    firsts = crm_series(crm, count)
    assert sync(crm, connection_id)["created"] == count
    sync(crm, connection_id)  # settles what the first sync wrote
    return crm, emulator, connection_id, firsts


@sqlite_only
@pytest.mark.parametrize(("kind", "count", "batch_size"), [("google", 51, 50), ("graph", 21, 20)])
def test_series_updates_go_in_batches(
    request: pytest.FixtureRequest, db_url: str, kind: str, count: int, batch_size: int
) -> None:
    """N series edited in the CRM are written in the batch requests of the run's
    updates: the listing and three rounds of ceil(N / batch size) batch requests (the
    masters read, their exceptions read, the patches), not three requests a series."""
    crm, emulator, connection_id, firsts = synced_series(request, kind, count)
    retitle_series(crm, firsts)

    report, spent = counted_sync(crm, connection_id, emulator.url)

    assert (report["updated"], report["problems"]) == (count, []), report
    batches = 3 * -(-count // batch_size)
    patches = "events.patch" if kind == "google" else "events.update"
    assert (spent["batch"], spent[patches]) == (batches, count), spent
    # Every call but the listing went inside a batch (the emulator counts each call).
    inner = spent.total() - spent["batch"] - 1
    assert inner == 3 * count, spent
    again = sync(crm, connection_id)
    assert (again["updated"], again["created"], again["problems"]) == (0, 0, []), again
    found = crm.get(f"{V1}/activities", params={"limit": 500}).json()["items"]
    assert {a["subject"] for a in found} == {"Moved"}


@sqlite_only
@pytest.mark.parametrize("kind", ["google", "graph"])
def test_a_series_refused_in_a_batch_is_that_series_problem_alone(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, db_url: str, kind: str
) -> None:
    """One series the calendar refuses in a batch of series updates: the others are
    written and linked, the refused one is reported (its link left as it was, as a
    refused single event's) and written with its next change."""
    crm, _, connection_id, firsts = synced_series(request, kind, 3)
    retitle_series(crm, firsts)
    provider = GoogleProvider if kind == "google" else MicrosoftProvider
    original = provider.update_many
    refused: list[str] = []

    async def refusing(self: Any, calendar_id: str, items: Sequence[Update]) -> list[Any]:
        if refused or len(items) < 2:
            return list(await original(self, calendar_id, items))
        refused.append(items[1].event_id)
        rest = await original(self, calendar_id, [items[0], *items[2:]])
        return [rest[0], ProviderError("refused"), *rest[1:]]

    monkeypatch.setattr(provider, "update_many", refusing)

    report = sync(crm, connection_id)

    assert report["updated"] == 2, report
    assert [(p["item"], p["reason"]) for p in report["problems"]] == [(refused[0], "refused")]
    assert sync(crm, connection_id)["updated"] == 0  # the others are linked as written
    monkeypatch.undo()
    retitle_series(crm, firsts, "Moved again")
    again = sync(crm, connection_id)
    assert (again["updated"], again["problems"]) == (3, []), again
    assert sync(crm, connection_id)["updated"] == 0
    found = crm.get(f"{V1}/activities", params={"limit": 100}).json()["items"]
    assert {a["subject"] for a in found} == {"Moved again"}


async def test_token_refreshes_reuse_one_connection(google_emulator: GoogleEmulator) -> None:
    """Refreshing the access tokens of several grants in a worker goes over the HTTP
    client the worker keeps for the sign-in service's host: one TCP connection (and one
    TLS handshake at a real service), not one per refresh."""
    grants = [google_emulator.state.create_account(f"refresh-{uuid.uuid4().hex[:10]}@ex.test")
              for _ in range(3)]  # fmt: skip
    # An hour's keep-alive: only crmcal can close the connection between the calls.
    with fault_proxy(google_emulator.url, keep_alive=3600) as (proxy, url):
        try:
            for grant in grants:
                tokens = google_oauth.service(url).tokens(
                    grant["refresh_token"], client_id="crmcal-test-client"
                )
                assert await tokens()
        finally:
            await close_shared()
        assert len(proxy.requests) == 3, proxy.requests
        assert len(set(proxy.clients)) == 1, proxy.clients


@sqlite_only
def test_google_series_made_in_the_crm_go_in_batches(
    google_crm: Api, google_emulator: GoogleEmulator
) -> None:
    """N series made in the CRM are created in batch requests of 50, as single
    activities are: not a request per series."""
    connection_id, direct = connect_google(google_crm, google_emulator)
    direct.close()
    sync(google_crm, connection_id)
    crm_series(google_crm, 51)

    report, spent = counted_sync(google_crm, connection_id, google_emulator.url)

    assert (report["created"], report["problems"]) == (51, []), report
    assert (spent["batch"], spent["events.insert"]) == (2, 51), spent
    assert spent.total() == 1 + 2 + 51, spent  # the listing, the batches and their calls
    again = sync(google_crm, connection_id)
    assert (again["created"], again["updated"], again["problems"]) == (0, 0, []), again


@sqlite_only
def test_graph_series_made_in_the_crm_go_in_batches(
    graph_crm: Api, microsoft_emulator: MicrosoftEmulator
) -> None:
    """N series made in the CRM are created in ``$batch`` requests of 20, as single
    activities are, and read back for their occurrences in batches of 20 too: the
    listing and two rounds of ceil(N / 20) batches, not two requests a series."""
    connection_id, direct = connect_graph(graph_crm, microsoft_emulator)
    sync(graph_crm, connection_id)
    crm_series(graph_crm, 21)

    report, spent = counted_sync(graph_crm, connection_id, microsoft_emulator.url)

    assert (report["created"], report["problems"]) == (21, []), report
    assert (spent["batch"], spent["events.create"], spent["events.get"]) == (4, 21, 21), spent
    assert spent.total() == 1 + 4 + 21 + 21, spent  # the listing, the batches and their calls
    again = sync(graph_crm, connection_id)
    assert (again["created"], again["updated"], again["problems"]) == (0, 0, []), again
    with direct:
        assert len(outlook_series(direct)) == 21


def outlook_series(direct: httpx.Client) -> list[str]:
    """The subjects of the series in the Outlook calendar ``direct`` reads."""
    found = direct.get("/me/events", params={"$top": 1000})
    assert found.status_code == 200, found.text
    return sorted(str(e.get("subject")) for e in found.json()["value"]
                  if e.get("type") == "seriesMaster")  # fmt: skip


@sqlite_only
def test_a_series_refused_in_a_batch_of_creates_is_that_series_problem_alone(
    graph_crm: Api, microsoft_emulator: MicrosoftEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outlook refuses one series of a ``$batch`` of creates, and crmcal cannot even
    write another's body: both are reported, each on its own, and the other series
    and single activities of the batch are made and linked; the refused ones are made
    with their next change, as a refused single activity is."""
    connection_id, direct = connect_graph(graph_crm, microsoft_emulator)
    sync(graph_crm, connection_id)
    firsts = crm_series(graph_crm, 4)
    add_activities(graph_crm, 2)
    original = microsoft_creates._create_body
    spoilt: list[str] = []

    def spoiling(key: str, event: CalendarEvent) -> dict[str, Any]:
        body = original(key, event)
        if event.recurrence is not None and len(spoilt) < 2:
            spoilt.append(key)
            if len(spoilt) == 1:  # Outlook answers this part 400
                body["recurrence"]["range"] = {"type": "endDate", "startDate": "never"}
            else:
                raise ProviderError("this series cannot be written to Outlook")
        return body

    monkeypatch.setattr(microsoft_creates, "_create_body", spoiling)

    report, spent = counted_sync(graph_crm, connection_id, microsoft_emulator.url)

    assert report["created"] == 4, report
    assert len(report["problems"]) == 2, report
    assert any("cannot be written" in p["reason"] for p in report["problems"]), report
    assert spent["events.create"] == 5, spent  # the spoilt body was never sent
    monkeypatch.undo()
    retitle_series(graph_crm, firsts, "Weekly again")  # tried again with their next change
    again = sync(graph_crm, connection_id)
    assert (again["created"], again["updated"], again["problems"]) == (2, 2, []), again
    with direct:
        assert len(outlook_series(direct)) == 4
    assert sync(graph_crm, connection_id)["created"] == 0


@pytest.mark.parametrize("kind", ["google", "graph"])
def test_two_syncs_of_one_grant_at_once_refresh_its_token_once(
    request: pytest.FixtureRequest, kind: str, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two connections of one account (one grant: the same refresh token; two users of a
    shared calendar account) sync at once in one worker, the grant's access token
    expired: the first sync's refresh is the second's too, one request to the token
    endpoint, and both syncs go through."""
    import asyncio

    from sqlalchemy import update

    from crmcal.db import Database
    from crmcal.providers import oauth2
    from crmcal.providers.oauth2 import AccessToken
    from crmcal.sync import runner
    from crmcal.sync.tables import Connection
    from crmcal.vault import Vault

    crm: Api = request.getfixturevalue(f"{kind}_crm")
    emulator = request.getfixturevalue(
        "google_emulator" if kind == "google" else "microsoft_emulator"
    )
    name = f"o{uuid.uuid4().hex[:8]}"
    other_id, other_token = make_user(db_url, email=f"{name}@crm.test", name=name)
    other = Api(crm.client, other_token, other_id)
    provider = "google" if kind == "google" else "microsoft"
    tokens = emulator.state.create_account(f"shared-{uuid.uuid4().hex[:10]}@example.test")
    ids = []
    for user in (crm, other):
        body = {"provider": provider, "refresh_token": tokens["refresh_token"]}
        answer = user.post(f"{V1}/connections", json=body)
        assert answer.status_code == 201, answer.text
        ids.append(int(answer.json()["id"]))
    settings = Settings(database_url=db_url, secret_key="test-key", base_url=CRM,
                        google_api_url=emulator.url, google_oauth_url=emulator.url,
                        microsoft_api_url=emulator.url, microsoft_oauth_url=emulator.url,
                        google_client_id="crmcal-test-client",
                        microsoft_client_id="crmcal-test-client", retry_backoff=0.01)  # fmt: skip
    vault = Vault("test-key")
    together = asyncio.Event()
    # Every access token this process keeps has expired.
    expired = {key: AccessToken(access.value, 0.0) for key, access in runner._GRANTS.items()}
    monkeypatch.setattr(runner, "_GRANTS", type(runner._GRANTS)(expired))
    one_grant = vault.seal(tokens["refresh_token"])  # stored for both (Graph rotates it)
    # At the same moment: the token endpoint answers once both syncs have asked their
    # token source for a token (whether or not the second one calls it).
    asking: set[int] = set()
    ask, call = oauth2.RefreshingTokens.__call__, oauth2.token_call

    async def asked(source: oauth2.RefreshingTokens, refresh: bool = False) -> str:
        asking.add(id(source))
        if len(asking) == 2:
            together.set()
        return await ask(source, refresh)

    async def answered(*args: Any, **kwargs: Any) -> dict[str, object]:
        await together.wait()
        return await call(*args, **kwargs)

    monkeypatch.setattr(oauth2.RefreshingTokens, "__call__", asked)
    monkeypatch.setattr(oauth2, "token_call", answered)

    async def both() -> list[Any]:
        nonlocal together
        together = asyncio.Event()
        db = Database(db_url)
        try:
            async with db.write() as session:
                await session.execute(
                    update(Connection).where(Connection.id.in_(ids)).values(credentials=one_grant)
                )
            syncs = (runner.run_sync(db, vault, settings, id_) for id_ in ids)
            return await asyncio.gather(*syncs)
        finally:
            await db.dispose()

    before = counts(emulator.url)
    reports = asyncio.run(both())
    cost = counts(emulator.url) - before
    assert len(reports) == 2
    assert cost["oauth.token"] == 1, cost


async def series_links(db_url: str, connection_id: int) -> list[tuple[int, str]]:
    """The connection's series links: (link id, the series' uid), in the order made."""
    from sqlalchemy import select

    from crmcal.crm.tables import Activity, ActivitySeries
    from crmcal.db import Database
    from crmcal.sync.tables import Link

    db = Database(db_url)
    try:
        async with db.read() as session:
            rows = await session.execute(
                select(Link.id, ActivitySeries.uid)
                .join(Activity, Activity.id == Link.activity_id)
                .join(ActivitySeries, ActivitySeries.id == Activity.series_id)
                .where(Link.connection_id == connection_id)
                .order_by(Link.id)
            )
            return [(int(link_id), str(uid)) for link_id, uid in rows]
    finally:
        await db.dispose()


async def note_copies(db_url: str, copies: dict[int, str]) -> None:
    """Each link (by id) notes its copy to delete (``DROPPING``): a series crmcal made for
    a CRM series that a split made in the calendar took over, left by a run cut off
    before it deleted it."""
    from crmcal.db import Database
    from crmcal.sync.series_copies import DROPPING
    from crmcal.sync.tables import Link

    db = Database(db_url)
    try:
        async with db.write() as session:
            for link_id, copy in copies.items():
                link = await session.get(Link, link_id)
                assert link is not None
                note = {DROPPING: {"remote_id": copy, "remote_etag": ""}}
                link.field_hashes = {**(link.field_hashes or {}), **note}
    finally:
        await db.dispose()


def make_copy(direct: httpx.Client, kind: str, uid: str, start: dt.datetime) -> str:
    """A weekly series in the calendar as crmcal writes one for the CRM series ``uid``."""
    body: dict[str, Any]
    if kind == "google":
        body = {"summary": "Copy", "start": {"dateTime": start.isoformat(), "timeZone": "UTC"},
                "end": {"dateTime": (start + HOUR).isoformat(), "timeZone": "UTC"},
                "recurrence": ["RRULE:FREQ=WEEKLY;COUNT=2"],
                "extendedProperties": {"private": {google_events.CRM_ID_KEY: uid}}}  # fmt: skip
        made = direct.post("/calendars/primary/events", json=body)
    else:
        body = graph_event("Copy", start)
        day = start.strftime("%A").lower()
        body["recurrence"] = {
            "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": [day]},
            "range": {"type": "numbered", "startDate": start.date().isoformat(),
                      "numberOfOccurrences": 2},
        }  # fmt: skip
        body["singleValueExtendedProperties"] = [{"id": microsoft_events.CRM_ID, "value": uid}]
        made = direct.post("/me/events", json=body)
    assert made.status_code in (200, 201), made.text
    return str(made.json()["id"])


@sqlite_only
@pytest.mark.parametrize(("kind", "count", "batch_size"), [("google", 51, 50), ("graph", 21, 20)])
def test_copies_taken_over_by_splits_are_deleted_in_batches(
    request: pytest.FixtureRequest, db_url: str, kind: str, count: int, batch_size: int
) -> None:
    """N series crmcal made that splits made in the calendar took over, left by a run
    cut off before it deleted them, are deleted in the run's batch requests (ceil(N /
    batch size) of them) with its other calls, not one request each. Each link loses
    its note, and the next sync deletes nothing more."""
    import asyncio

    emulator = request.getfixturevalue(
        "google_emulator" if kind == "google" else "microsoft_emulator"
    )
    with fault_proxy(emulator.url) as (proxy, url):
        settings = Settings(database_url=db_url, secret_key="test-key", base_url=CRM,
                            google_api_url=url, google_oauth_url=emulator.url,
                            microsoft_api_url=url, microsoft_oauth_url=emulator.url,
                            google_client_id="crmcal-test-client",
                            microsoft_client_id="crmcal-test-client",
                            retry_backoff=0.01)  # fmt: skip
        with client_of(settings, base_url=CRM) as client:
            name = f"c{uuid.uuid4().hex[:8]}"
            user_id, token = make_user(db_url, email=f"{name}@crm.test", name=name)
            crm = Api(client, token, user_id)
            connect = connect_google if kind == "google" else connect_graph
            connection_id, direct = connect(crm, emulator)
            with direct:
                crm_series(crm, count)
                assert sync(crm, connection_id)["created"] == count
                sync(crm, connection_id)  # settles what the first sync wrote
                links = asyncio.run(series_links(db_url, connection_id))
                assert len(links) == count
                copies = {link_id: make_copy(direct, kind, uid, later(300 + n))
                          for n, (link_id, uid) in enumerate(links)}  # fmt: skip
                asyncio.run(note_copies(db_url, copies))
                requests, parts = len(proxy.requests), len(proxy.parts)

                report, spent = counted_sync(crm, connection_id, emulator.url)

                assert (report["created"], report["problems"]) == (0, []), report
                sent, inside = proxy.requests[requests:], proxy.parts[parts:]
                # Every delete went inside a batch request: none alone.
                assert [call for call in sent if call[0] == "DELETE"] == []
                assert len([call for call in inside if call[0] == "DELETE"]) == count
                assert spent["events.delete"] == count, spent
                # The run's requests are its listing (Graph's delta link goes to the
                # service itself) and its batches, nothing alone; the copies' deletes
                # took ceil(N / batch size) of the batches.
                batches = [call for call in sent if "batch" in call[1]]
                assert [call for call in sent if call not in batches] in ([], [sent[0]]), sent
                assert len(batches) == spent["batch"] >= -(-count // batch_size), spent
                for copy in copies.values():
                    path = (f"/calendars/primary/events/{copy}" if kind == "google"
                            else f"/me/events/{copy}")  # fmt: skip
                    found = direct.get(path)
                    gone = found.status_code in (404, 410) or found.json().get("status") == (
                        "cancelled"
                    )
                    assert gone, found.text
            again, spent = counted_sync(crm, connection_id, emulator.url)
            assert (again["created"], again["deleted"], again["problems"]) == (0, 0, []), again
            assert spent["events.delete"] == 0, spent
