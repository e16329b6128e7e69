"""The Google Calendar emulator against Google's own discovery document and client.

Every body the emulator answers (and every body these tests send) is checked
against a JSON Schema made from ``calendar.v3.json``; one test drives the
emulator with ``googleapiclient`` itself, so parameters are Google's too.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from crmcal.emulators.google import GoogleState, create_app
from tests.emulators.google_client import V3, Clock, Google, event_body, reason
from tests.emulators.google_schema import check, discovery
from tests.served import served_app


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def state(clock: Clock) -> GoogleState:
    return GoogleState(clock=clock, token_max_age=dt.timedelta(days=7))


@pytest.fixture
def google(state: GoogleState) -> Iterator[Google]:
    with TestClient(create_app(state)) as client:
        yield Google(client, "sam@example.test")


# --- accounts and calendars ---------------------------------------------------------


def test_accounts_have_a_primary_calendar_and_tokens_are_checked(google: Google) -> None:
    listing = google.ok("GET", "/users/me/calendarList", "CalendarList")
    (entry,) = listing["items"]
    assert (entry["id"], entry["primary"], entry["accessRole"]) == (google.email, True, "owner")
    assert "nextSyncToken" in listing
    assert google.ok("GET", "/calendars/primary", "Calendar")["id"] == google.email
    for headers in ({}, {"Authorization": "Bearer nope"}):
        response = google.client.get(V3 + "/users/me/calendarList", headers=headers)
        assert reason(response) == (401, "authError")


def test_calendar_list_pages_and_read_only_calendars(google: Google) -> None:
    for number in range(3):
        google.client.post("/_emulator/calendars", json={
            "email": google.email, "id": f"team{number}@group.calendar.google.com",
            "summary": f"Team {number}", "access_role": "reader",
        })  # fmt: skip
    first = google.ok("GET", "/users/me/calendarList", "CalendarList", params={"maxResults": 2})
    second = google.ok("GET", "/users/me/calendarList", "CalendarList",
                       params={"maxResults": 2, "pageToken": first["nextPageToken"]})  # fmt: skip
    entries = first["items"] + second["items"]
    assert entries[0]["id"] == google.email
    assert len(entries) == 4
    assert "nextSyncToken" in second
    assert {e["accessRole"] for e in entries[1:]} == {"reader"}
    refused = google.call("POST", "/calendars/team0@group.calendar.google.com/events",
                          json=event_body())  # fmt: skip
    assert reason(refused) == (403, "requiredAccessLevel")


# --- events -------------------------------------------------------------------------


def test_an_html_description_is_stored_and_returned_as_given(google: Google) -> None:
    """Google's web page saves descriptions as HTML; the API hands them back unchanged."""
    markup = ('<html-blob><b>Agenda</b>&nbsp;pricing &amp; terms<br><ul><li>one</li></ul>'
              '<a href="https://docs.example/x?a=1&amp;b=2">the doc</a></html-blob>')  # fmt: skip
    made = google.insert(description=markup)
    assert made["description"] == markup
    fetched = google.ok("GET", f"/calendars/primary/events/{made['id']}", "Event")
    assert fetched["description"] == markup
    (listed,) = [e for e in google.list()["items"] if e["id"] == made["id"]]
    assert listed["description"] == markup


def test_insert_with_a_client_id_is_idempotent(google: Google) -> None:
    created = google.insert(id="crmcal0a1b2c3d4e5f", extendedProperties={"private": {"crm": "7"}})
    assert (created["id"], created["status"], created["sequence"]) == (
        "crmcal0a1b2c3d4e5f",
        "confirmed",
        0,
    )
    assert created["iCalUID"] == "crmcal0a1b2c3d4e5f@google.com"
    assert created["organizer"] == {"email": google.email, "self": True}
    again = google.call("POST", "/calendars/primary/events",
                        json=event_body(id="crmcal0a1b2c3d4e5f"))  # fmt: skip
    assert reason(again) == (409, "duplicate")
    for bad in ("UPPER1", "abc", "has-dash1", "wxyz0123"):
        response = google.call("POST", "/calendars/primary/events", json=event_body(id=bad))
        assert reason(response) == (400, "invalid"), bad


def test_updates_need_the_current_etag_and_bump_the_sequence(google: Google, clock: Clock) -> None:
    created = google.insert()
    path = f"/calendars/primary/events/{created['id']}"
    clock.now += dt.timedelta(minutes=5)
    moved = google.ok("PUT", path, "Event", json=event_body(hour=14),
                      headers={"If-Match": created["etag"]})  # fmt: skip
    assert moved["sequence"] == 1
    assert moved["etag"] != created["etag"]
    assert moved["updated"] > created["updated"]
    assert moved["created"] == created["created"]
    stale = google.call(
        "PUT", path, json=event_body(hour=15), headers={"If-Match": created["etag"]}
    )
    assert reason(stale) == (412, "conditionNotMet")
    patched = google.ok("PATCH", path, "Event", json={"summary": "Renamed",
                        "extendedProperties": {"private": {"a": "1"}}})  # fmt: skip
    assert (patched["summary"], patched["start"], patched["sequence"]) == (
        "Renamed",
        moved["start"],
        1,
    )
    patched = google.ok(
        "PATCH", path, "Event", json={"extendedProperties": {"private": {"b": "2"}}}
    )
    assert patched["extendedProperties"]["private"] == {"a": "1", "b": "2"}


def test_deleting_leaves_a_cancelled_tombstone(google: Google) -> None:
    created = google.insert()
    path = f"/calendars/primary/events/{created['id']}"
    google.ok("PATCH", path, "Event", json={"summary": "edited elsewhere"})
    stale = google.call("DELETE", path, headers={"If-Match": created["etag"]})
    assert reason(stale) == (412, "conditionNotMet")
    response = google.call("DELETE", path)
    assert response.status_code == 204
    assert google.ok("GET", path, "Event")["status"] == "cancelled"
    assert reason(google.call("DELETE", path)) == (410, "deleted")
    assert google.list()["items"] == []
    assert [e["id"] for e in google.list(showDeleted="true")["items"]] == [created["id"]]
    assert reason(google.call("GET", "/calendars/primary/events/nosuchevent1")) == (404, "notFound")


def test_bad_events_are_refused_with_googles_reasons(google: Google) -> None:
    cases = [
        ({"summary": "x", "start": {"dateTime": "2026-12-01T10:00:00Z"}}, (400, "required")),
        (event_body() | {"end": {"dateTime": "2026-12-01T08:00:00+01:00"}},
         (400, "timeRangeEmpty")),
        (event_body() | {"end": {"date": "2026-12-02"}}, (400, "invalid")),
        (event_body() | {"start": {"dateTime": "2026-12-01T10:00:00"}}, (400, "invalid")),
        (event_body() | {"visibility": "secret"}, (400, "invalid")),
        (event_body() | {"reminders": {"useDefault": False, "overrides": [
            {"method": "popup", "minutes": 5}] * 6}}, (400, "cannotUseMoreThanFiveReminders")),
        (event_body() | {"unknownField": 1}, (400, "invalid")),
    ]  # fmt: skip
    for body, expected in cases:
        response = google.call("POST", "/calendars/primary/events", json=body)
        assert reason(response) == expected, body
    broken = google.call("POST", "/calendars/primary/events", content=b"{not json",
                         headers={"Content-Type": "application/json"})  # fmt: skip
    assert reason(broken) == (400, "parseError")


def test_extended_properties_have_googles_silent_limits(google: Google) -> None:
    created = google.insert(
        extendedProperties={"private": {"k" * 45: "dropped", "crm": "v" * 1100}}
    )
    assert created["extendedProperties"]["private"] == {"crm": "v" * 1024}


# --- listing and sync tokens ----------------------------------------------------------


def test_full_sync_in_pages_then_incremental(google: Google) -> None:
    made = [google.insert(summary=f"Event {n}", hour=8 + n) for n in range(5)]
    pages, token = [], None
    while True:
        page = google.list(maxResults=2, **({"pageToken": token} if token else {}))
        pages.append(page)
        token = page.get("nextPageToken")
        if token is None:
            break
        assert "nextSyncToken" not in page  # only the last page has one
    assert [len(p["items"]) for p in pages] == [2, 2, 1]
    assert [e["id"] for p in pages for e in p["items"]] == [e["id"] for e in made]
    sync_token = pages[-1]["nextSyncToken"]

    quiet = google.list(syncToken=sync_token)
    assert (quiet["items"], "nextSyncToken" in quiet) == ([], True)

    google.ok("PATCH", f"/calendars/primary/events/{made[1]['id']}", "Event",
              json={"summary": "changed"})  # fmt: skip
    assert google.call("DELETE", f"/calendars/primary/events/{made[3]['id']}").status_code == 204
    added = google.insert(summary="new")
    changes = google.list(syncToken=sync_token)
    by_id = {e["id"]: e for e in changes["items"]}
    assert set(by_id) == {made[1]["id"], made[3]["id"], added["id"]}
    assert by_id[made[3]["id"]]["status"] == "cancelled"
    assert by_id[made[1]["id"]]["summary"] == "changed"
    assert google.list(syncToken=changes["nextSyncToken"])["items"] == []


def test_a_change_between_pages_waits_for_the_next_sync(google: Google) -> None:
    made = [google.insert(summary=f"Event {n}") for n in range(4)]
    first = google.list(maxResults=2)
    google.ok("PATCH", f"/calendars/primary/events/{made[3]['id']}", "Event",
              json={"summary": "changed meanwhile"})  # fmt: skip
    rest = google.list(maxResults=2, pageToken=first["nextPageToken"])
    assert [e["id"] for e in rest["items"]] == [made[2]["id"]]
    later = google.list(syncToken=rest["nextSyncToken"])
    assert [e["summary"] for e in later["items"]] == ["changed meanwhile"]


@pytest.mark.parametrize(
    "param",
    [{"timeMin": "2026-01-01T00:00:00Z"}, {"q": "x"}, {"orderBy": "updated"},
     {"iCalUID": "x@google.com"}, {"privateExtendedProperty": "a=b"}, {"showDeleted": "false"},
     {"updatedMin": "2026-01-01T00:00:00Z"}, {"timeMax": "2026-01-01T00:00:00Z"}],
)  # fmt: skip
def test_sync_tokens_refuse_the_parameters_google_refuses(
    google: Google, param: dict[str, str]
) -> None:
    token = google.list()["nextSyncToken"]
    response = google.call("GET", "/calendars/primary/events", params={"syncToken": token, **param})
    assert reason(response) == (400, "invalid")


def test_sync_tokens_expire_on_demand_and_with_age(
    google: Google, state: GoogleState, clock: Clock
) -> None:
    google.insert()
    token = google.list()["nextSyncToken"]
    response = google.client.post(f"/_emulator/calendars/{google.email}/expire-sync-tokens")
    assert response.status_code == 204
    expired = google.call("GET", "/calendars/primary/events", params={"syncToken": token})
    assert reason(expired) == (410, "fullSyncRequired")
    fresh = google.list()["nextSyncToken"]
    assert google.list(syncToken=fresh)["items"] == []
    clock.now += dt.timedelta(days=8)
    google.token = google.client.post("/_emulator/accounts", json={"email": google.email}).json()[
        "access_token"
    ]  # the old access token has long expired
    aged = google.call("GET", "/calendars/primary/events", params={"syncToken": fresh})
    assert reason(aged) == (410, "fullSyncRequired")
    forged = google.call("GET", "/calendars/primary/events", params={"syncToken": "forged"})
    assert reason(forged) == (400, "invalid")


def test_time_window_and_extended_property_filters(google: Google) -> None:
    early, late = google.insert(hour=8), google.insert(hour=18)
    tagged = google.insert(hour=12, extendedProperties={"private": {"crm": "42"}})
    window = google.list(timeMin="2026-12-01T10:00:00Z", timeMax="2026-12-01T16:00:00Z")
    assert [e["id"] for e in window["items"]] == [tagged["id"]]
    found = google.list(privateExtendedProperty="crm=42")
    assert [e["id"] for e in found["items"]] == [tagged["id"]]
    assert {e["id"] for e in google.list()["items"]} == {early["id"], late["id"], tagged["id"]}


def test_requests_are_counted_by_kind(google: Google) -> None:
    google.insert()
    google.list()
    google.list()
    counts = google.client.get("/_emulator/requests").json()
    assert (counts["events.insert"], counts["events.list"]) == (1, 2)


# --- Google's own client --------------------------------------------------------------


@pytest.fixture
def served(state: GoogleState) -> Iterator[str]:
    with served_app(create_app(state)) as url:
        yield url + "/"


def test_googles_client_drives_the_emulator(served: str, state: GoogleState) -> None:
    from google.oauth2.credentials import Credentials
    from googleapiclient.discovery import build_from_document
    from googleapiclient.errors import HttpError

    tokens = state.create_account("ann@example.test")
    service = build_from_document(
        discovery(),
        credentials=Credentials(token=tokens["access_token"]),
        client_options={"api_endpoint": served + "calendar/v3/"},
    )
    calendars = check("CalendarList", service.calendarList().list().execute())
    assert calendars["items"][0]["id"] == "ann@example.test"
    created = check("Event", service.events().insert(
        calendarId="primary", body=event_body(id="fromgoogleclient1"), sendUpdates="none"
    ).execute())  # fmt: skip
    listing = check("Events", service.events().list(calendarId="primary", maxResults=10).execute())
    assert [e["id"] for e in listing["items"]] == [created["id"]]
    service.events().patch(
        calendarId="primary", eventId=created["id"], body={"summary": "patched"}
    ).execute()
    changes = check("Events", service.events().list(
        calendarId="primary", syncToken=listing["nextSyncToken"]).execute())  # fmt: skip
    assert [e["summary"] for e in changes["items"]] == ["patched"]
    service.events().delete(calendarId="primary", eventId=created["id"]).execute()
    with pytest.raises(HttpError) as refused:
        service.events().insert(
            calendarId="primary", body=event_body(id="fromgoogleclient1")
        ).execute()
    assert refused.value.resp.status == 409
    assert refused.value.error_details[0]["reason"] == "duplicate"

    # Series, imports and calendars, through the same client.
    made = check("Calendar", service.calendars().insert(body={"summary": "Team"}).execute())
    service.calendars().patch(calendarId=made["id"], body={"summary": "Sales team"}).execute()
    assert service.calendars().get(calendarId=made["id"]).execute()["summary"] == "Sales team"
    series = (
        service.events()
        .insert(calendarId=made["id"], body=event_body(recurrence=["RRULE:FREQ=DAILY;COUNT=3"]))
        .execute()
    )
    instances = check("Events", service.events().instances(
        calendarId=made["id"], eventId=series["id"], maxResults=2).execute())  # fmt: skip
    assert len(instances["items"]) == 2
    assert instances["nextPageToken"]
    imported = (
        service.events()
        .import_(calendarId=made["id"], body=event_body(iCalUID="from-elsewhere@example.test"))
        .execute()
    )
    assert check("Event", imported)["iCalUID"] == "from-elsewhere@example.test"


# --- batch ----------------------------------------------------------------------------------


def test_batch_serves_each_part_on_its_own(google: Google) -> None:
    existing = google.insert(summary="to rename")

    def part(content_id: str, request_line: str, body: dict[str, Any] | None = None) -> str:
        inner = request_line + "\r\n"
        if body is not None:
            inner += "Content-Type: application/json\r\n\r\n" + json.dumps(body)
        else:
            inner += "\r\n"
        return (f"--xyz\r\nContent-Type: application/http\r\nContent-ID: <{content_id}>\r\n\r\n"
                f"{inner}\r\n")  # fmt: skip

    events = "/calendar/v3/calendars/primary/events"
    payload = (
        part("a", f"POST {events} HTTP/1.1", event_body(id="batch00001"))
        + part("b", "GET /calendar/v3/calendars/primary/events/missing001 HTTP/1.1")
        + part("c", f"PATCH /calendar/v3/calendars/primary/events/{existing['id']} HTTP/1.1",
               {"summary": "renamed in a batch"})
        + "--xyz--\r\n"
    )  # fmt: skip
    response = google.client.post(
        "/batch/calendar/v3", content=payload.encode(),
        headers={"Authorization": f"Bearer {google.token}",
                 "Content-Type": "multipart/mixed; boundary=xyz"},
    )  # fmt: skip
    assert response.status_code == 200, response.text
    boundary = response.headers["content-type"].split("boundary=")[1]
    answers = {}
    for chunk in response.text.split(f"--{boundary}")[1:-1]:
        head, _, inner = chunk.strip().partition("\r\n\r\n")
        content_id = head.split("Content-ID: <")[1].split(">")[0]
        status_line, _, rest = inner.partition("\r\n")
        answers[content_id] = (int(status_line.split()[1]), rest.partition("\r\n\r\n")[2])
    assert answers["response-a"][0] == 200
    assert check("Event", json.loads(answers["response-a"][1]))["id"] == "batch00001"
    assert answers["response-b"][0] == 404
    assert answers["response-c"][0] == 200
    assert google.ok("GET", f"/calendars/primary/events/{existing['id']}", "Event")["summary"] == (
        "renamed in a batch"
    )
    unauthorised = google.client.post(
        "/batch/calendar/v3",
        content=payload.encode(),
        headers={"Content-Type": "multipart/mixed; boundary=xyz"},
    )
    assert unauthorised.status_code == 200  # the batch answers; each part says 401
    assert unauthorised.text.count("HTTP/1.1 401") == 3


def test_move_leaves_a_cancelled_stub_behind(google: Google) -> None:
    google.client.post(
        "/_emulator/calendars", json={"email": google.email, "id": "team@group.calendar.google.com"}
    )
    created = google.insert()
    token = google.list()["nextSyncToken"]
    moved = google.ok("POST", f"/calendars/primary/events/{created['id']}/move", "Event",
                      params={"destination": "team@group.calendar.google.com"})  # fmt: skip
    assert moved["organizer"]["email"] == "team@group.calendar.google.com"
    (stub,) = google.list(syncToken=token)["items"]
    assert stub == {"kind": "calendar#event", "etag": stub["etag"], "id": created["id"],
                    "status": "cancelled"}  # fmt: skip
    team = google.ok("GET", "/calendars/team@group.calendar.google.com/events", "Events")
    assert [e["id"] for e in team["items"]] == [created["id"]]
    again = google.call("POST", f"/calendars/primary/events/{created['id']}/move",
                        params={"destination": "team@group.calendar.google.com"})  # fmt: skip
    assert reason(again) == (404, "notFound")
    missing = google.call("POST", f"/calendars/primary/events/{created['id']}/move")
    assert reason(missing) == (400, "required")


# --- recurring events and imports -------------------------------------------------------


@pytest.mark.parametrize("instance_etags", ["own", "series"])
def test_an_occurrence_has_the_etag_the_setting_gives_it(
    google: Google, instance_etags: str
) -> None:
    """An occurrence that is no exception has an etag of its own (the default), new
    whenever its series changes, or its series' etag; If-Match takes only that one."""
    settings = google.client.post("/_emulator/settings", json={"instance_etags": instance_etags})
    assert settings.status_code == 200, settings.text
    series = google.insert(recurrence=["RRULE:FREQ=WEEKLY;COUNT=4"])
    sid = series["id"]
    path = f"/calendars/primary/events/{sid}/instances"
    first, second = google.ok("GET", path, "Events")["items"][:2]
    read = google.ok("GET", f"/calendars/primary/events/{second['id']}", "Event")
    assert read["etag"] == second["etag"]
    if instance_etags == "series":
        assert first["etag"] == second["etag"] == series["etag"]
    else:
        assert len({first["etag"], second["etag"], series["etag"]}) == 3
        wrong = google.call(
            "PATCH", f"/calendars/primary/events/{second['id']}",
            json={"summary": "Moved"}, headers={"If-Match": series["etag"]},
        )  # fmt: skip
        assert reason(wrong) == (412, "conditionNotMet")
        renamed = google.ok("PATCH", f"/calendars/primary/events/{sid}", "Event",
                            json={"summary": "Renamed"})  # fmt: skip
        again = google.ok("GET", path, "Events")["items"][1]
        assert again["etag"] not in (second["etag"], renamed["etag"])
        second = again
    written = google.call(
        "PATCH", f"/calendars/primary/events/{second['id']}",
        json={"summary": "Moved"}, headers={"If-Match": second["etag"]},
    )  # fmt: skip
    assert written.status_code == 200, written.text
    assert (
        google.client.post("/_emulator/settings", json={"instance_etags": "x"}).status_code == 400
    )


def test_a_series_has_instances_and_exceptions(google: Google) -> None:
    series = google.insert(recurrence=["RRULE:FREQ=WEEKLY;COUNT=4"])
    sid = series["id"]
    path = f"/calendars/primary/events/{sid}/instances"
    instances = google.ok("GET", path, "Events")["items"]
    ids = [f"{sid}_{day}T090000Z" for day in ("20261201", "20261208", "20261215", "20261222")]
    assert [i["id"] for i in instances] == ids
    assert {i["recurringEventId"] for i in instances} == {sid}
    assert instances[1]["originalStartTime"] == {
        "dateTime": "2026-12-08T10:00:00+01:00", "timeZone": "Europe/Berlin"
    }  # fmt: skip
    assert "recurrence" not in instances[0]
    token = google.list()["nextSyncToken"]

    # An occurrence changed by id becomes an exception; one deleted, a cancelled stub.
    moved = google.ok("PATCH", f"/calendars/primary/events/{ids[1]}", "Event",
                      json={"summary": "Moved"})  # fmt: skip
    assert (moved["id"], moved["recurringEventId"]) == (ids[1], sid)
    assert google.call("DELETE", f"/calendars/primary/events/{ids[2]}").status_code == 204
    assert google.ok("GET", f"/calendars/primary/events/{ids[2]}", "Event")["status"] == (
        "cancelled"
    )
    changes = google.list(syncToken=token)["items"]
    assert {c["id"] for c in changes} == {ids[1], ids[2]}
    stub = next(c for c in changes if c["id"] == ids[2])
    assert set(stub) == {"kind", "etag", "id", "status", "recurringEventId", "originalStartTime"}

    listed = google.list()["items"]  # the series, its exception and its cancelled occurrence
    assert [e["id"] for e in listed] == [sid, ids[1], ids[2]]
    single = google.list(singleEvents="true", orderBy="startTime")["items"]
    assert [(e["id"], e["summary"]) for e in single] == [
        (ids[0], "Demo"), (ids[1], "Moved"), (ids[3], "Demo")
    ]  # fmt: skip
    assert len(google.ok("GET", path, "Events", params={"showDeleted": "true"})["items"]) == 4
    refused = google.call("GET", "/calendars/primary/events", params={"orderBy": "startTime"})
    assert reason(refused) == (400, "invalid")
    window = google.list(singleEvents="true", timeMin="2026-12-14T00:00:00Z")["items"]
    assert [e["id"] for e in window] == [ids[3]]

    # Deleting the series cancels its exceptions with it.
    token = google.list()["nextSyncToken"]
    assert google.call("DELETE", f"/calendars/primary/events/{sid}").status_code == 204
    gone = google.list(syncToken=token)["items"]
    assert {(e["id"], e["status"]) for e in gone} == {(sid, "cancelled"), (ids[1], "cancelled")}
    assert google.call("GET", f"/calendars/primary/events/{sid}_20261201T100000Z").status_code == (
        404
    )


def test_import_keeps_the_organizer_and_updates_by_ical_uid(google: Google) -> None:
    body = event_body(iCalUID="ext-1@example.test",
                      organizer={"email": "ann@acme.test", "displayName": "Ann"})  # fmt: skip
    first = google.ok("POST", "/calendars/primary/events/import", "Event", json=body)
    assert first["organizer"] == {"email": "ann@acme.test", "displayName": "Ann"}
    again = google.ok("POST", "/calendars/primary/events/import", "Event",
                      json=body | {"summary": "Changed"})  # fmt: skip
    assert (again["id"], again["summary"]) == (first["id"], "Changed")
    assert [e["id"] for e in google.list()["items"]] == [first["id"]]
    refused = google.call("POST", "/calendars/primary/events/import", json=event_body())
    assert reason(refused) == (400, "required")


# --- settings -----------------------------------------------------------------------------


def test_short_pages_still_list_everything_once(google: Google) -> None:
    made = {google.insert(summary=f"e{n}", hour=n % 12)["id"] for n in range(30)}
    settings = google.client.post("/_emulator/settings", json={"short_pages": True})
    assert settings.json()["short_pages"] is True
    seen: list[str] = []
    sizes = []
    page = google.list(maxResults=5)
    while True:
        sizes.append(len(page["items"]))
        seen += [e["id"] for e in page["items"]]
        if "nextPageToken" not in page:
            break
        page = google.list(maxResults=5, pageToken=page["nextPageToken"])
    assert sorted(seen) == sorted(made)
    assert min(sizes) < 5  # some pages were short (the generator is seeded)
    assert "nextSyncToken" in page


def test_extended_property_filters_match_all_or_any(google: Google) -> None:
    both = google.insert(extendedProperties={"private": {"a": "1", "b": "2"}})
    only_a = google.insert(extendedProperties={"private": {"a": "1"}})
    query = {"privateExtendedProperty": ["a=1", "b=2"]}
    assert [e["id"] for e in google.list(**query)["items"]] == [both["id"]]
    google.client.post("/_emulator/settings", json={"extended_property_match": "any"})
    assert [e["id"] for e in google.list(**query)["items"]] == [both["id"], only_a["id"]]


def test_sync_token_age_is_a_setting(google: Google, clock: Clock) -> None:
    answer = google.client.post("/_emulator/settings", json={"sync_token_max_age": 60})
    assert answer.json()["sync_token_max_age"] == 60
    token = google.list()["nextSyncToken"]
    clock.now += dt.timedelta(seconds=61)
    aged = google.call("GET", "/calendars/primary/events", params={"syncToken": token})
    assert reason(aged) == (410, "fullSyncRequired")
    google.client.post("/_emulator/settings", json={"sync_token_max_age": None})
    assert google.client.get("/_emulator/settings").json()["sync_token_max_age"] is None


@pytest.mark.parametrize(
    "body",
    [{"short_pages": "yes"}, {"extended_property_match": "some"}, {"sync_token_max_age": 0},
     {"sync_token_max_age": True}, {"unknown": 1}],
)  # fmt: skip
def test_bad_settings_are_refused(google: Google, body: dict[str, Any]) -> None:
    before = google.client.get("/_emulator/settings").json()
    assert reason(google.client.post("/_emulator/settings", json=body)) == (400, "invalid")
    assert google.client.get("/_emulator/settings").json() == before


def test_any_instance_of_a_long_series_can_be_read_changed_and_listed(google: Google) -> None:
    """A five-year daily series: the instance on day 1,500 is there by id and by window,
    as in Google (not only the first few hundred)."""
    series = google.insert(recurrence=["RRULE:FREQ=DAILY;COUNT=1826"])
    sid = series["id"]
    late = f"{sid}_20310109T090000Z"  # 2026-12-01 + 1,500 days, 10:00 Berlin
    found = google.ok("GET", f"/calendars/primary/events/{late}", "Event")
    assert found["originalStartTime"]["dateTime"] == "2031-01-09T10:00:00+01:00"
    moved = google.ok("PATCH", f"/calendars/primary/events/{late}", "Event",
                      json={"summary": "Late review"})  # fmt: skip
    assert (moved["id"], moved["recurringEventId"]) == (late, sid)
    window = google.ok("GET", f"/calendars/primary/events/{sid}/instances", "Events",
                       params={"timeMin": "2031-01-08T12:00:00Z",
                               "timeMax": "2031-01-11T00:00:00Z"})["items"]  # fmt: skip
    assert [(e["id"], e["summary"]) for e in window] == [
        (late, "Late review"), (f"{sid}_20310110T090000Z", "Demo")]  # fmt: skip
    beyond = google.call("GET", f"/calendars/primary/events/{sid}_20311202T090000Z")
    assert beyond.status_code == 404  # after the 1,826th day
    off_grid = google.call("GET", f"/calendars/primary/events/{sid}_20310109T091500Z")
    assert off_grid.status_code == 404
