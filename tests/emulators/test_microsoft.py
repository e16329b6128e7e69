"""The Microsoft Graph emulator: calendars, events, ids, change keys, extended properties.

Every answer in these tests is parsed with msgraph-sdk's own Kiota models and
serialised again (``graph_models``); a body Graph could not have sent fails the
test that received it.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from typing import Any

import pytest
from msgraph.generated.models.calendar import Calendar
from msgraph.generated.models.event import Event
from msgraph.generated.models.event_collection_response import EventCollectionResponse
from msgraph.generated.models.sensitivity import Sensitivity

from crmcal.emulators.microsoft import MicrosoftState
from crmcal.emulators.microsoft import app as microsoft_app
from tests import plain
from tests.cli_process import first_answer
from tests.conftest import recorded_sleeps
from tests.emulators import graph_models
from tests.emulators.conftest import V1, Clock, Graph, code, event_body
from tests.emulators.graph_models import check, problems
from tests.served import bound_socket

CRM_ID = "String {66f5a359-4659-4830-9070-00047ec6ac6e} Name crmId"


# --- the checker itself -----------------------------------------------------------------


def test_the_model_checker_catches_what_kiota_would_swallow(graph: Graph) -> None:
    created = graph.create()
    assert problems(Event, graph.call("GET", f"/me/events/{created['id']}").content) == []
    bad_enum = created | {"showAs": "veryBusy"}
    unknown = created | {"crmId": "7"}
    wrong_kind = created | {"isAllDay": "yes"}
    for body, expected in ((bad_enum, "showAs"), (unknown, "crmId"), (wrong_kind, "isAllDay")):
        found = problems(Event, json.dumps(body).encode())
        assert any(expected in p for p in found), (expected, found)


def test_the_checker_reads_a_body_as_kiota_does_with_deserializers_made_once(
    graph: Graph, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``parse`` reads what Kiota's own parse node reads (the same model, serialised
    again the same, the same properties it does not know), asking each model class for
    its field deserializers once, not once per object (5 ms an event)."""
    for n in range(3):
        graph.create(subject=f"e{n}", hour=9 + n)
    answer = graph.ok("GET", "/me/events")
    answer["value"][2]["crmId"] = "7"  # a property Graph does not define, kept aside
    listed = json.dumps(answer).encode()
    asked: list[str] = []
    real = Event.get_field_deserializers

    def counted(self: Event) -> Any:
        asked.append(type(self).__name__)
        return real(self)

    monkeypatch.setattr(Event, "get_field_deserializers", counted)
    monkeypatch.setattr(graph_models, "_DESERIALIZERS", {})
    mine = graph_models.parse(EventCollectionResponse, listed)
    assert asked == ["Event"]
    kiotas = graph_models.parse_as_kiota(EventCollectionResponse, listed)
    assert len(asked) == 1 + 3  # Kiota's own node asks again for each event
    assert graph_models.serialise(mine) == graph_models.serialise(kiotas)
    assert [e.additional_data for e in mine.value] == [e.additional_data for e in kiotas.value]
    assert mine.value[2].additional_data["crmId"] == "7"
    assert sorted(e.subject for e in mine.value) == ["e0", "e1", "e2"]


# --- the user and calendars ---------------------------------------------------------------


def test_me_and_the_default_calendar(graph: Graph) -> None:
    me = graph.ok("GET", "/me")
    assert (me["mail"], me["userPrincipalName"]) == (graph.email, graph.email)
    assert me["id"]
    assert me["displayName"]
    (calendar,) = graph.ok("GET", "/me/calendars")["value"]
    check(Calendar, calendar)
    assert (calendar["name"], calendar["isDefaultCalendar"], calendar["canEdit"]) == (
        "Calendar",
        True,
        True,
    )
    assert calendar["owner"] == {"name": me["displayName"], "address": graph.email}
    assert graph.ok("GET", "/me/calendar")["id"] == calendar["id"]
    assert graph.ok("GET", f"/me/calendars/{calendar['id']}")["changeKey"]


def test_every_call_needs_a_valid_token(graph: Graph) -> None:
    for headers, message in (
        ({}, "Access token is empty."),
        ({"Authorization": "Bearer nope"}, "Invalid audience"),
    ):
        response = graph.client.get(V1 + "/me/events", headers=headers)
        assert code(response) == (401, "InvalidAuthenticationToken")
        assert message in response.json()["error"]["message"]
        assert response.headers["www-authenticate"].startswith("Bearer")
    graph.admin("POST", "/expire-access-tokens")
    expired = graph.call("GET", "/me")
    assert code(expired) == (401, "InvalidAuthenticationToken")
    assert "expired" in expired.json()["error"]["message"]


def test_calendars_are_created_renamed_and_paged(graph: Graph) -> None:
    made = [graph.ok("POST", "/me/calendars", 201, json={"name": f"Team {n}"}) for n in range(3)]
    assert [c["isDefaultCalendar"] for c in made] == [False] * 3
    duplicate = graph.call("POST", "/me/calendars", json={"name": "team 0"})
    assert code(duplicate) == (409, "ErrorFolderExists")
    assert code(graph.call("POST", "/me/calendars", json={})) == (400, "ErrorInvalidParameter")
    renamed = graph.ok("PATCH", f"/me/calendars/{made[0]['id']}", json={"name": "Sales"})
    assert renamed["name"] == "Sales"
    assert renamed["changeKey"] != made[0]["changeKey"]
    first = graph.ok("GET", "/me/calendars", params={"$top": 2})
    assert len(first["value"]) == 2
    rest = graph.ok("GET", first["@odata.nextLink"])
    assert "@odata.nextLink" not in rest
    names = [c["name"] for c in first["value"] + rest["value"]]
    assert names == ["Calendar", "Sales", "Team 1", "Team 2"]
    assert code(graph.call("GET", "/me/calendars/AAMkAGCalnope")) == (404, "ErrorItemNotFound")


def test_read_only_calendars_refuse_writes(graph: Graph) -> None:
    shared = graph.admin(
        "POST",
        "/calendars",
        json={
            "email": graph.email,
            "name": "Boss",
            "can_edit": False,
            "owner": "boss@example.test",
        },
    )
    check(Calendar, shared)
    assert (shared["canEdit"], shared["owner"]["address"]) == (False, "boss@example.test")
    refused = graph.call("POST", f"/me/calendars/{shared['id']}/events", json=event_body())
    assert code(refused) == (403, "ErrorAccessDenied")


# --- events -------------------------------------------------------------------------------


def test_create_read_update_delete(graph: Graph, clock: Clock) -> None:
    created = graph.create(
        body={"contentType": "html", "content": "<p>Agenda: <b>numbers</b></p>"},
        location={"displayName": "Room 4"},
        sensitivity="Private",
        showAs="tentative",
        categories=["CRM"],
        importance="high",
        isReminderOn=False,
    )
    event = check(Event, created)
    assert event.sensitivity == Sensitivity.Private
    assert created["type"] == "singleInstance"
    assert created["bodyPreview"] == "Agenda: numbers"
    assert created["@odata.etag"] == f'W/"{created["changeKey"]}"'
    assert created["iCalUId"].startswith("040000008200E00074C5B7101A82E008")
    assert created["organizer"]["emailAddress"]["address"] == graph.email
    assert (created["isOrganizer"], created["responseStatus"]["response"]) == (True, "organizer")
    assert created["start"] == {"dateTime": "2026-12-01T09:00:00.0000000", "timeZone": "UTC"}
    path = f"/me/events/{created['id']}"
    read = graph.ok("GET", path)
    assert {k: v for k, v in read.items() if k != "@odata.context"} == {
        k: v for k, v in created.items() if k != "@odata.context"
    }
    clock.now += dt.timedelta(minutes=5)
    patched = graph.ok("PATCH", path, json={"subject": "Renamed", "location": None})
    assert (patched["subject"], patched["location"]["displayName"]) == ("Renamed", "")
    assert patched["changeKey"] != created["changeKey"]
    assert patched["lastModifiedDateTime"] > created["lastModifiedDateTime"]
    assert patched["createdDateTime"] == created["createdDateTime"]
    assert patched["categories"] == ["CRM"]  # untouched properties stay
    listed = check(EventCollectionResponse, graph.ok("GET", "/me/events"))
    assert [e.id for e in listed.value] == [created["id"]]
    assert graph.call("DELETE", path).status_code == 204
    assert code(graph.call("GET", path)) == (404, "ErrorItemNotFound")
    assert code(graph.call("DELETE", path)) == (404, "ErrorItemNotFound")
    assert graph.ok("GET", "/me/events")["value"] == []


def test_events_live_in_the_calendar_they_were_made_in(graph: Graph) -> None:
    team = graph.ok("POST", "/me/calendars", 201, json={"name": "Team"})
    in_team = graph.create(f"/me/calendars/{team['id']}/events", subject="team")
    in_default = graph.create("/me/calendar/events", subject="mine")
    assert [e["subject"] for e in graph.ok("GET", "/me/events")["value"]] == ["mine"]
    listed = graph.ok("GET", f"/me/calendars/{team['id']}/events")["value"]
    assert [e["id"] for e in listed] == [in_team["id"]]
    assert graph.ok("GET", f"/me/events/{in_team['id']}")["subject"] == "team"
    wrong = graph.call("GET", f"/me/calendars/{team['id']}/events/{in_default['id']}")
    assert code(wrong) == (404, "ErrorItemNotFound")
    assert graph.ok("GET", f"/me/calendar/events/{in_default['id']}")["subject"] == "mine"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"crmId": "7"}, (400, "RequestBodyRead")),
        ({"showAs": "veryBusy"}, (400, "RequestBodyRead")),
        ({"sensitivity": "secret"}, (400, "RequestBodyRead")),
        ({"isAllDay": "yes"}, (400, "RequestBodyRead")),
        ({"body": {"contentType": "markdown", "content": "x"}}, (400, "RequestBodyRead")),
        ({"location": {"displayName": "x", "floor": 3}}, (400, "RequestBodyRead")),
        (
            {"attendees": [{"emailAddress": {"name": "No address"}}]},
            (400, "ErrorInvalidRecipients"),
        ),
        (
            {"end": {"dateTime": "2026-12-01T08:00:00", "timeZone": "Europe/Berlin"}},
            (400, "ErrorPropertyValidationFailure"),
        ),
        (
            {"start": {"dateTime": "2026-12-01T10:00:00Z", "timeZone": "UTC"}},
            (400, "ErrorInvalidRequest"),
        ),
        (
            {"start": {"dateTime": "2026-12-01T10:00:00", "timeZone": "Mars/Olympus"}},
            (400, "TimeZoneNotSupportedException"),
        ),
        (
            {"singleValueExtendedProperties": [{"id": "String crmId", "value": "7"}]},
            (400, "ErrorInvalidProperty"),
        ),
    ],
)
def test_bad_events_are_refused_with_graphs_codes(
    graph: Graph, change: dict[str, Any], expected: tuple[int, str]
) -> None:
    assert code(graph.call("POST", "/me/events", json=event_body() | change)) == expected
    assert graph.ok("GET", "/me/events")["value"] == []


def test_a_body_that_is_not_json_is_refused(graph: Graph) -> None:
    broken = graph.call(
        "POST", "/me/events", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert code(broken) == (400, "BadRequest")


def test_all_day_events_start_and_end_at_midnight(graph: Graph) -> None:
    def all_day(start: str, end: str, zone: str = "Europe/Berlin", end_zone: str = "") -> Any:
        return graph.call(
            "POST",
            "/me/events",
            json={
                "subject": "Offsite",
                "isAllDay": True,
                "start": {"dateTime": start, "timeZone": zone},
                "end": {"dateTime": end, "timeZone": end_zone or zone},
            },
        )

    made = all_day("2026-12-01T00:00:00", "2026-12-03T00:00:00")
    assert made.status_code == 201, made.text
    # Answered midnight to midnight whatever the zone, as Graph does.
    assert made.json()["start"] == {"dateTime": "2026-12-01T00:00:00.0000000", "timeZone": "UTC"}
    assert made.json()["end"]["dateTime"] == "2026-12-03T00:00:00.0000000"
    assert all_day("2026-12-05", "2026-12-06").status_code == 201  # a date alone is midnight
    for bad in (
        all_day("2026-12-01T09:00:00", "2026-12-02T00:00:00"),
        all_day("2026-12-01T00:00:00", "2026-12-01T00:00:00"),
        all_day("2026-12-01T00:00:00", "2026-12-02T00:00:00", end_zone="UTC"),
    ):
        assert code(bad) == (400, "ErrorPropertyValidationFailure")


def test_times_are_answered_in_the_zone_prefer_names(graph: Graph) -> None:
    created = graph.create(
        start={"dateTime": "2026-12-01T10:00:00", "timeZone": "W. Europe Standard Time"},
        end={"dateTime": "2026-12-01T11:30:00", "timeZone": "Europe/Berlin"},
        body={"contentType": "html", "content": "<p>Line one</p><p>Line <i>two</i></p>"},
    )
    assert created["originalStartTimeZone"] == "W. Europe Standard Time"
    assert created["originalEndTimeZone"] == "Europe/Berlin"
    assert created["end"] == {"dateTime": "2026-12-01T10:30:00.0000000", "timeZone": "UTC"}
    path = f"/me/events/{created['id']}"
    for zone, hour in (("Pacific Standard Time", "01"), ("America/New_York", "04")):
        response = graph.call("GET", path, headers={"Prefer": f'outlook.timezone="{zone}"'})
        assert response.json()["start"] == {
            "dateTime": f"2026-12-01T{hour}:00:00.0000000",
            "timeZone": zone,
        }
        assert f'outlook.timezone="{zone}"' in response.headers["preference-applied"]
    as_text = graph.ok("GET", path, headers={"Prefer": 'outlook.body-content-type="text"'})
    assert as_text["body"] == {"contentType": "text", "content": "Line one\nLine two"}
    refused = graph.call("GET", path, headers={"Prefer": 'outlook.timezone="Nowhere"'})
    assert code(refused) == (400, "TimeZoneNotSupportedException")


def test_if_match_refuses_a_stale_change_key(graph: Graph) -> None:
    created = graph.create()
    path = f"/me/events/{created['id']}"
    fresh = graph.ok(
        "PATCH", path, json={"subject": "one"}, headers={"If-Match": created["@odata.etag"]}
    )
    stale = graph.call(
        "PATCH", path, json={"subject": "two"}, headers={"If-Match": created["@odata.etag"]}
    )
    assert code(stale) == (412, "ErrorIrresolvableConflict")
    assert code(graph.call("DELETE", path, headers={"If-Match": created["@odata.etag"]})) == (
        412,
        "ErrorIrresolvableConflict",
    )
    assert graph.ok("GET", path)["subject"] == "one"
    response = graph.call("DELETE", path, headers={"If-Match": fresh["@odata.etag"]})
    assert response.status_code == 204


def test_a_transaction_id_makes_a_create_idempotent(graph: Graph) -> None:
    first = graph.create(transactionId="crm-activity-7")
    again = graph.create(transactionId="crm-activity-7", subject="retried")
    assert (again["id"], again["subject"]) == (first["id"], "Demo")
    assert first["transactionId"] == "crm-activity-7"
    assert len(graph.ok("GET", "/me/events")["value"]) == 1
    changed = graph.call("PATCH", f"/me/events/{first['id']}", json={"transactionId": "other"})
    assert code(changed) == (400, "ErrorInvalidRequest")
    graph.call("DELETE", f"/me/events/{first['id']}")
    assert graph.create(transactionId="crm-activity-7")["id"] != first["id"]


def test_extended_properties_are_read_only_when_asked_for(graph: Graph) -> None:
    tagged = graph.create(singleValueExtendedProperties=[{"id": CRM_ID, "value": "7"}])
    graph.create(
        singleValueExtendedProperties=[
            {"id": "String {66F5A359-4659-4830-9070-00047EC6AC6E} Name crmId", "value": "8"}
        ]
    )
    graph.create(subject="plain")
    assert "singleValueExtendedProperties" not in tagged
    path = f"/me/events/{tagged['id']}"
    expand = f"singleValueExtendedProperties($filter=id eq '{CRM_ID}')"
    read = graph.ok("GET", path, params={"$expand": expand})
    assert read["singleValueExtendedProperties"] == [{"id": CRM_ID, "value": "7"}]
    assert "singleValueExtendedProperties" not in graph.ok("GET", path)
    wanted = f"singleValueExtendedProperties/Any(ep: ep/id eq '{CRM_ID}' and ep/value eq '7')"
    found = graph.ok("GET", "/me/events", params={"$filter": wanted, "$expand": expand})
    assert [(e["id"], e["singleValueExtendedProperties"][0]["value"]) for e in found["value"]] == [
        (tagged["id"], "7")
    ]
    any_value = f"singleValueExtendedProperties/any(p: p/id eq '{CRM_ID}')"
    assert len(graph.ok("GET", "/me/events", params={"$filter": any_value})["value"]) == 2
    graph.ok(
        "PATCH",
        path,
        json={
            "singleValueExtendedProperties": [
                {"id": "Integer PSETID_Common Id 0x8503", "value": "1"}
            ]
        },
    )
    both = graph.ok(
        "GET",
        path,
        params={
            "$expand": expand[:-1] + " or id eq "
            "'Integer {00062008-0000-0000-c000-000000000046} "
            "Id 0x8503')"
        },
    )
    assert len(both["singleValueExtendedProperties"]) == 2


@pytest.mark.parametrize(
    "params",
    [
        {"$filter": "subject eq 'x'"},
        {"$filter": f"singleValueExtendedProperties/Any(ep: ep/id eq '{CRM_ID}' and)"},
        {"$filter": "singleValueExtendedProperties/Any(ep: ep/id eq 'Nonsense')"},
        {"$expand": "singleValueExtendedProperties"},
        {"$expand": "attachments"},
        {"$select": "subject,nonsense"},
        {"$orderby": "bodyPreview"},
        {"$top": "none"},
        {"$search": "x"},
    ],
)
def test_malformed_odata_is_refused(graph: Graph, params: dict[str, str]) -> None:
    response = graph.call("GET", "/me/events", params=params)
    assert response.status_code == 400
    assert code(response)[1] in ("BadRequest", "ErrorInvalidProperty", "RequestBroker--ParseUri")


def test_select_top_and_orderby(graph: Graph) -> None:
    for day in (3, 1, 2):
        graph.create(subject=f"day {day}", day=day)
    ordered = graph.ok(
        "GET", "/me/events", params={"$orderby": "start/dateTime desc", "$select": "subject,start"}
    )
    assert [e["subject"] for e in ordered["value"]] == ["day 3", "day 2", "day 1"]
    assert set(ordered["value"][0]) == {"@odata.etag", "id", "subject", "start"}
    first = graph.ok("GET", "/me/events", params={"$top": 2, "$orderby": "start/dateTime"})
    assert [e["subject"] for e in first["value"]] == ["day 1", "day 2"]
    rest = graph.ok("GET", first["@odata.nextLink"])
    assert [e["subject"] for e in rest["value"]] == ["day 3"]
    by_prefer = graph.ok("GET", "/me/events", headers={"Prefer": "odata.maxpagesize=1"})
    assert len(by_prefer["value"]) == 1
    assert "$skip=1" in by_prefer["@odata.nextLink"]


# --- ids ------------------------------------------------------------------------------------


def test_immutable_ids_survive_a_move_and_regular_ids_do_not(graph: Graph) -> None:
    immutable = {"Prefer": 'IdType="ImmutableId"'}
    team = graph.ok("POST", "/me/calendars", 201, json={"name": "Team"})
    regular = graph.create()
    kept = graph.ok("GET", f"/me/events/{regular['id']}", headers=immutable)
    assert kept["id"] != regular["id"]
    assert graph.ok("GET", f"/me/events/{kept['id']}")["id"] == regular["id"]  # both resolve
    created = graph.ok("POST", "/me/events", 201, json=event_body(), headers=immutable)
    assert (
        graph.ok("GET", f"/me/events/{created['id']}", headers=immutable)["id"] == (created["id"])
    )
    moved = graph.admin("POST", f"/events/{regular['id']}/move", json={"calendar_id": team["id"]})
    assert moved["immutable_id"] == kept["id"]
    assert moved["id"] != regular["id"]
    assert code(graph.call("GET", f"/me/events/{regular['id']}")) == (404, "ErrorItemNotFound")
    after = graph.ok("GET", f"/me/events/{kept['id']}", headers=immutable)
    assert after["id"] == kept["id"]
    assert graph.ok("GET", f"/me/events/{kept['id']}")["id"] == moved["id"]
    in_team = graph.ok("GET", f"/me/calendars/{team['id']}/events")["value"]
    assert [e["id"] for e in in_team] == [moved["id"]]


# --- calendar views -------------------------------------------------------------------------


def test_calendar_view_shows_what_overlaps_the_window(graph: Graph) -> None:
    early, late = graph.create(subject="early", hour=8), graph.create(subject="late", hour=18)
    graph.create(subject="tomorrow", day=2)
    window = {"startDateTime": "2026-12-01T07:30:00Z", "endDateTime": "2026-12-01T12:00:00Z"}
    view = graph.ok("GET", "/me/calendarView", params=window)
    assert [e["id"] for e in view["value"]] == [early["id"]]
    whole_day = {"startDateTime": "2026-12-01T00:00:00", "endDateTime": "2026-12-02T00:00:00"}
    assert [e["id"] for e in graph.ok("GET", "/me/calendarView", params=whole_day)["value"]] == [
        early["id"],
        late["id"],
    ]
    cid = graph.ok("GET", "/me/calendar")["id"]
    assert len(graph.ok("GET", f"/me/calendars/{cid}/calendarView", params=whole_day)["value"]) == 2
    missing = graph.call("GET", "/me/calendarView")
    assert code(missing) == (400, "ErrorInvalidParameter")
    too_long = graph.call(
        "GET",
        "/me/calendarView",
        params={"startDateTime": "2026-01-01T00:00:00Z", "endDateTime": "2031-01-02T00:00:00Z"},
    )
    assert code(too_long) == (400, "ErrorInvalidRequest")
    assert "1825" in too_long.json()["error"]["message"]


# --- attendees, faults, counts ----------------------------------------------------------------


def test_attendee_writes_are_mailed(graph: Graph) -> None:
    guests = [
        {"type": "required", "emailAddress": {"address": "ann@acme.test", "name": "Ann"}},
        {"type": "optional", "emailAddress": {"address": "bob@acme.test"}},
    ]
    created = graph.create(attendees=guests)
    assert created["attendees"][0]["status"] == {"response": "none", "time": "0001-01-01T00:00:00Z"}
    path = f"/me/events/{created['id']}"
    graph.ok(
        "PATCH",
        path,
        json={"attendees": [guests[0], {"emailAddress": {"address": "cy@acme.test"}}]},
    )
    graph.call("DELETE", path)
    graph.create(subject="alone")
    mails = graph.admin("GET", "/mail")
    assert [(m["kind"], m["to"]) for m in mails] == [
        ("invitation", ["ann@acme.test", "bob@acme.test"]),
        ("invitation", ["cy@acme.test"]),
        ("update", ["ann@acme.test"]),
        ("cancellation", ["bob@acme.test"]),
        ("cancellation", ["ann@acme.test", "cy@acme.test"]),
    ]
    assert {m["event_id"] for m in mails} == {mails[0]["event_id"]}


def test_faults_answer_graphs_errors_then_stop(graph: Graph) -> None:
    pending = graph.admin("POST", "/faults", json={"status": 429, "count": 2, "retry_after": 7})
    assert pending["pending"][0]["code"] == "ApplicationThrottled"
    graph.admin("POST", "/faults", json={"status": 429, "code": "TooManyRequests"})
    graph.admin("POST", "/faults", json={"status": 503})
    graph.admin("POST", "/faults", json={"status": 500})
    first = graph.call("GET", "/me/events")
    assert code(first) == (429, "ApplicationThrottled")
    assert first.headers["retry-after"] == "7"
    assert code(graph.call("GET", "/me/events")) == (429, "ApplicationThrottled")
    throttled = graph.call("GET", "/me/events")
    assert code(throttled) == (429, "TooManyRequests")
    assert throttled.headers["retry-after"] == "1"
    assert code(graph.call("GET", "/me/events")) == (503, "serviceNotAvailable")
    assert code(graph.call("GET", "/me/events")) == (500, "ErrorInternalServerError")
    assert graph.call("GET", "/me/events").status_code == 200
    # Unauthenticated calls and the admin API take no fault.
    graph.admin("POST", "/faults", json={"status": 503})
    assert graph.client.get(V1 + "/me").status_code == 401
    assert graph.admin("POST", "/faults", json={"clear": True}) == {"pending": []}
    assert graph.call("GET", "/me").status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"status": 404},
        {"status": 429, "count": 0},
        {"status": 429, "retry_after": -1},
        {"status": 429, "code": "Nope"},
        {"status": 500, "code": "TooManyRequests"},
        {"delay": 0},
        {"delay": 61},
        {"delay": True},
        {"delay": 1, "status": 503},
    ],
)
def test_bad_faults_are_refused(graph: Graph, body: dict[str, Any]) -> None:
    response = graph.client.post("/_emulator/faults", json=body)
    assert code(response) == (400, "BadRequest")
    assert graph.admin("POST", "/faults", json={"clear": True}) == {"pending": []}


def test_a_delay_slows_the_next_api_call(graph: Graph, monkeypatch: pytest.MonkeyPatch) -> None:
    waits = recorded_sleeps(monkeypatch, microsoft_app)
    graph.admin("POST", "/faults", json={"delay": 0.3, "count": 1})
    assert graph.call("GET", "/me").status_code == 200
    assert waits == [0.3]
    # The delay was taken by that call alone: none is left for the next.
    pending = graph.admin("POST", "/faults", json={"status": 503, "count": 1})["pending"]
    assert [p.get("delay") for p in pending] == [None]  # only the fault just added
    assert graph.admin("POST", "/faults", json={"clear": True}) == {"pending": []}


def test_requests_are_counted_by_kind(graph: Graph) -> None:
    created = graph.create()
    graph.ok("GET", "/me/events")
    graph.ok("GET", "/me/events")
    graph.ok("PATCH", f"/me/events/{created['id']}", json={"subject": "x"})
    graph.ok(
        "GET",
        "/me/calendarView/delta",
        params={"startDateTime": "2026-12-01T00:00:00Z", "endDateTime": "2026-12-02T00:00:00Z"},
    )
    counts = graph.admin("GET", "/requests")
    assert (
        counts["events.create"],
        counts["events.list"],
        counts["events.update"],
        counts["calendarView.delta"],
    ) == (1, 2, 1, 1)


def test_settings_change_the_default_page_size(graph: Graph, graph_state: MicrosoftState) -> None:
    assert graph.admin("POST", "/settings", json={"page_size": 2})["page_size"] == 2
    for _ in range(3):
        graph.create()
    assert len(graph.ok("GET", "/me/events")["value"]) == 2
    refused = graph.client.post("/_emulator/settings", json={"page_size": 0})
    assert code(refused) == (400, "BadRequest")
    assert graph_state.page_size == 2


# --- the command line ---------------------------------------------------------------------------


def test_the_cli_serves_the_microsoft_emulator() -> None:
    with bound_socket() as sock:  # kept bound until the emulator has it: no one else can
        base = f"http://127.0.0.1:{sock.getsockname()[1]}"
        fd = sock.fileno()
        command = [sys.executable, "-m", "crmcal", "emulator", "microsoft", "--fd", str(fd)]
        proc = subprocess.Popen(
            command, pass_fds=[fd], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
    try:
        tokens = first_answer(proc, lambda: plain.post(
            f"{base}/_emulator/accounts", json={"email": "a@b.test"}, timeout=30))  # fmt: skip
        auth = {"Authorization": f"Bearer {tokens.json()['access_token']}"}
        calendars = plain.get(f"{base}/v1.0/me/calendars", headers=auth, timeout=30).json()
        assert [c["name"] for c in calendars["value"]] == ["Calendar"]
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def test_an_invitation_from_someone_else_lands_unanswered(graph: Graph) -> None:
    invited = graph.admin("POST", "/invitations", json={
        "email": graph.email, "organizer": {"address": "ann@acme.test", "name": "Ann"},
        "uid": "meeting-42@acme.test", "event": event_body(subject="Ann's review")})  # fmt: skip
    event = graph.ok("GET", f"/me/events/{invited['id']}",
                     headers={"Prefer": 'IdType="ImmutableId"'})  # fmt: skip
    assert (event["subject"], event["isOrganizer"], event["iCalUId"]) == (
        "Ann's review", False, "meeting-42@acme.test"
    )  # fmt: skip
    assert event["organizer"]["emailAddress"] == {"name": "Ann", "address": "ann@acme.test"}
    assert event["responseStatus"]["response"] == "notResponded"
    refused = graph.client.post("/_emulator/invitations", json={"email": graph.email,
                                                                "event": event_body()})  # fmt: skip
    assert refused.status_code == 400


def test_an_invited_user_declines_one_occurrence_or_accepts_a_meeting(graph: Graph) -> None:
    weekly = {
        "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["tuesday"]},
        "range": {"type": "numbered", "startDate": "2026-12-01", "numberOfOccurrences": 3},
    }
    invited = graph.admin("POST", "/invitations", json={
        "email": graph.email, "organizer": {"address": "ann@acme.test", "name": "Ann"},
        "event": event_body(subject="Weekly", recurrence=weekly, attendees=[
            {"emailAddress": {"address": graph.email}, "type": "required"}])})  # fmt: skip
    ids = {"Prefer": 'IdType="ImmutableId"'}
    master = graph.ok("GET", f"/me/events/{invited['id']}", headers=ids)
    window = "startDateTime=2026-11-01T00:00:00Z&endDateTime=2026-12-31T00:00:00Z"
    found = graph.ok("GET", f"/me/events/{invited['id']}/instances?{window}", headers=ids)
    second = found["value"][1]["id"]
    answered = graph.call("POST", f"/me/events/{second}/decline", headers=ids,
                          json={"comment": "Away", "sendResponse": True})  # fmt: skip
    assert (answered.status_code, answered.content) == (202, b"")
    declined = graph.ok("GET", f"/me/events/{second}", headers=ids)
    assert (declined["type"], declined["responseStatus"]["response"]) == ("exception", "declined")
    assert [a["status"]["response"] for a in declined["attendees"]] == ["declined"]
    # The series keeps its answer, and its other occurrences theirs.
    assert (
        graph.ok("GET", f"/me/events/{invited['id']}", headers=ids)["responseStatus"]
        == (master["responseStatus"])
    )
    found = graph.ok("GET", f"/me/events/{invited['id']}/instances?{window}", headers=ids)
    assert [o["responseStatus"]["response"] for o in found["value"]] == [
        "notResponded", "declined", "notResponded"]  # fmt: skip
    # Accepting the whole meeting; the organizer's own meeting cannot be answered.
    accepted = graph.call("POST", f"/me/events/{invited['id']}/accept", headers=ids, json={})
    assert accepted.status_code == 202
    read = graph.ok("GET", f"/me/events/{invited['id']}", headers=ids)
    assert read["responseStatus"]["response"] == "accepted"
    own = graph.create()
    assert code(graph.call("POST", f"/me/events/{own['id']}/decline", json={})) == (
        400, "ErrorInvalidRequest")  # fmt: skip
    assert code(graph.call("POST", f"/me/events/{invited['id']}/decline",
                           json={"unknown": 1})) == (400, "RequestBodyRead")  # fmt: skip
