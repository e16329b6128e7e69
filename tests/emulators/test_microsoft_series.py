"""Recurring events on the Graph emulator: masters, occurrences, exceptions, cancellations."""

from __future__ import annotations

from typing import Any

import pytest

from tests.emulators.conftest import Graph, code, event_body
from tests.emulators.graph_delta import WINDOW, follow, full_round

DECEMBER = {"startDateTime": "2026-12-01T00:00:00Z", "endDateTime": "2027-01-01T00:00:00Z"}


def weekly(count: int = 4, **pattern: Any) -> dict[str, Any]:
    return {
        "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["tuesday"], **pattern},
        "range": {"type": "numbered", "startDate": "2026-12-01", "numberOfOccurrences": count},
    }


def instances(graph: Graph, series_id: str, window: dict[str, str] = DECEMBER) -> list[Any]:
    return graph.ok("GET", f"/me/events/{series_id}/instances", params=window)["value"]


def test_a_series_has_occurrences_with_ids_of_their_own(graph: Graph) -> None:
    series = graph.create(recurrence=weekly())
    assert series["type"] == "seriesMaster"
    assert series["recurrence"]["pattern"] == {
        "type": "weekly",
        "interval": 1,
        "month": 0,
        "dayOfMonth": 0,
        "daysOfWeek": ["tuesday"],
        "firstDayOfWeek": "sunday",
        "index": "first",
    }
    found = instances(graph, series["id"])
    assert [o["start"]["dateTime"][:10] for o in found] == [
        "2026-12-01",
        "2026-12-08",
        "2026-12-15",
        "2026-12-22",
    ]
    assert {o["type"] for o in found} == {"occurrence"}
    assert {o["seriesMasterId"] for o in found} == {series["id"]}
    assert len({o["id"] for o in found} | {series["id"]}) == 5
    assert len({o["iCalUId"] for o in found}) == 4  # different for each occurrence
    assert found[1]["originalStart"] == "2026-12-08T09:00:00Z"
    one = graph.ok("GET", f"/me/events/{found[1]['id']}")
    assert (one["id"], one["type"], one["recurrence"]) == (found[1]["id"], "occurrence", None)
    # /events lists the series once; a calendar view lists its occurrences.
    assert [e["id"] for e in graph.ok("GET", "/me/events")["value"]] == [series["id"]]
    view = graph.ok("GET", "/me/calendarView", params=DECEMBER)["value"]
    assert [e["id"] for e in view] == [o["id"] for o in found]
    with_window = graph.call("GET", f"/me/events/{series['id']}/instances")
    assert code(with_window) == (400, "ErrorInvalidParameter")
    single = graph.create(subject="single")
    not_a_series = graph.call("GET", f"/me/events/{single['id']}/instances", params=DECEMBER)
    assert code(not_a_series) == (400, "ErrorInvalidRequest")


def test_changing_or_deleting_an_occurrence(graph: Graph) -> None:
    series = graph.create(recurrence=weekly())
    found = instances(graph, series["id"])
    _, link, _ = full_round(graph, window=DECEMBER)
    moved = graph.ok(
        "PATCH",
        f"/me/events/{found[1]['id']}",
        json={"subject": "Moved", **{k: v for k, v in event_body(day=9).items() if k != "subject"}},
    )
    assert (moved["id"], moved["type"], moved["seriesMasterId"]) == (
        found[1]["id"],
        "exception",
        series["id"],
    )
    assert moved["start"]["dateTime"] == "2026-12-09T09:00:00.0000000"
    assert graph.call("DELETE", f"/me/events/{found[2]['id']}").status_code == 204
    assert code(graph.call("GET", f"/me/events/{found[2]['id']}")) == (404, "ErrorItemNotFound")
    now = instances(graph, series["id"])
    assert [(o["type"], o["subject"]) for o in now] == [
        ("occurrence", "Demo"),
        ("exception", "Moved"),
        ("occurrence", "Demo"),
    ]
    master = graph.ok(
        "GET", f"/me/events/{series['id']}", params={"$select": "subject,cancelledOccurrences"}
    )
    assert master["cancelledOccurrences"] == [f"OID.{series['id']}.2026-12-15"]
    assert "cancelledOccurrences" not in graph.ok("GET", f"/me/events/{series['id']}")
    changes, _ = follow(graph, link)
    # A cancelled occurrence changes the master (its cancelledOccurrences), so the
    # occurrences it makes come again, with its new change key.
    assert {(c["id"], "@removed" in c) for c in changes} == {
        (found[0]["id"], False),
        (found[1]["id"], False),
        (found[2]["id"], True),
        (found[3]["id"], False),
    }
    master_key = graph.ok("GET", f"/me/events/{series['id']}")["@odata.etag"]
    assert {c["@odata.etag"] for c in changes if c["id"] in (found[0]["id"], found[3]["id"])} == {
        master_key
    }
    occurrence = graph.call("PATCH", f"/me/events/{found[0]['id']}", json={"recurrence": weekly()})
    assert code(occurrence) == (400, "ErrorInvalidRequest")


def test_deleting_a_series_removes_every_occurrence(graph: Graph) -> None:
    series = graph.create(recurrence=weekly())
    found = instances(graph, series["id"])
    graph.ok("PATCH", f"/me/events/{found[0]['id']}", json={"subject": "exception"})
    _, link, _ = full_round(graph)
    assert graph.call("DELETE", f"/me/events/{series['id']}").status_code == 204
    changes, _ = follow(graph, link)
    in_window = [o["id"] for o in found if o["start"]["dateTime"] < "2026-12-08"]
    assert sorted(c["id"] for c in changes) == sorted(in_window)
    assert all("@removed" in c for c in changes)
    assert code(graph.call("GET", f"/me/events/{found[1]['id']}")) == (404, "ErrorItemNotFound")
    assert graph.ok("GET", "/me/calendarView", params=DECEMBER)["value"] == []


def test_a_series_master_shows_its_exceptions_when_asked_by_name(graph: Graph) -> None:
    series = graph.create(recurrence=weekly())
    found = instances(graph, series["id"])
    graph.ok("PATCH", f"/me/events/{found[1]['id']}", json={"subject": "Moved"})
    graph.call("DELETE", f"/me/events/{found[2]['id']}")
    asked = {"$select": "subject,cancelledOccurrences,exceptionOccurrences",
             "$expand": "exceptionOccurrences"}  # fmt: skip
    master = graph.ok("GET", f"/me/events/{series['id']}", params=asked)
    # Changed occurrences only: cancelled ones are the master's cancelledOccurrences.
    ((exception,),) = [master["exceptionOccurrences"]]
    assert (exception["id"], exception["type"], exception["subject"]) == (
        found[1]["id"], "exception", "Moved"
    )  # fmt: skip
    assert exception["originalStart"] == "2026-12-08T09:00:00Z"
    assert master["cancelledOccurrences"] == [f"OID.{series['id']}.2026-12-15"]
    # Both $select and $expand are needed.
    only_select = {"$select": "subject,exceptionOccurrences"}
    assert "exceptionOccurrences" not in graph.ok(
        "GET", f"/me/events/{series['id']}", params=only_select
    )


def test_changing_a_series_pattern_drops_its_exceptions(graph: Graph) -> None:
    series = graph.create(recurrence=weekly())
    found = instances(graph, series["id"])
    graph.ok("PATCH", f"/me/events/{found[0]['id']}", json={"subject": "exception"})
    graph.ok("PATCH", f"/me/events/{series['id']}", json={"recurrence": weekly(count=2)})
    assert [o["type"] for o in instances(graph, series["id"])] == ["occurrence"] * 2
    renamed = graph.ok("PATCH", f"/me/events/{series['id']}", json={"subject": "Weekly"})
    assert renamed["type"] == "seriesMaster"
    assert {o["subject"] for o in instances(graph, series["id"])} == {"Weekly"}


@pytest.mark.parametrize(
    ("recurrence", "days"),
    [
        (
            {
                "pattern": {"type": "daily", "interval": 3},
                "range": {"type": "endDate", "startDate": "2026-12-01", "endDate": "2026-12-10"},
            },
            ["2026-12-01", "2026-12-04", "2026-12-07", "2026-12-10"],
        ),
        (
            {
                "pattern": {
                    "type": "relativeMonthly",
                    "interval": 1,
                    "daysOfWeek": ["tuesday"],
                    "index": "second",
                },
                "range": {"type": "numbered", "startDate": "2026-12-01", "numberOfOccurrences": 3},
            },
            ["2026-12-08", "2027-01-12", "2027-02-09"],
        ),
        (
            {
                "pattern": {"type": "absoluteMonthly", "interval": 2, "dayOfMonth": 31},
                "range": {"type": "numbered", "startDate": "2026-12-01", "numberOfOccurrences": 3},
            },
            ["2026-12-31", "2027-08-31", "2027-10-31"],
        ),
        (
            {
                "pattern": {
                    "type": "relativeYearly",
                    "interval": 1,
                    "daysOfWeek": ["friday"],
                    "index": "last",
                    "month": 12,
                },
                "range": {"type": "numbered", "startDate": "2026-12-01", "numberOfOccurrences": 2},
            },
            ["2026-12-25", "2027-12-31"],
        ),
    ],
)
def test_patterns_expand_as_outlook_does(
    graph: Graph, recurrence: dict[str, Any], days: list[str]
) -> None:
    series = graph.create(recurrence=recurrence)
    window = {"startDateTime": "2026-12-01T00:00:00Z", "endDateTime": "2028-01-01T00:00:00Z"}
    found = instances(graph, series["id"], window)
    assert [o["start"]["dateTime"][:10] for o in found] == days


def test_occurrences_keep_their_local_time_across_daylight_saving(graph: Graph) -> None:
    series = graph.create(
        recurrence={
            "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["tuesday"]},
            "range": {"type": "noEnd", "startDate": "2026-12-01"},
        }
    )
    window = {"startDateTime": "2027-03-20T00:00:00Z", "endDateTime": "2027-04-05T00:00:00Z"}
    berlin = {"Prefer": 'outlook.timezone="Europe/Berlin"'}
    found = graph.ok("GET", f"/me/events/{series['id']}/instances", params=window, headers=berlin)[
        "value"
    ]
    assert [o["start"]["dateTime"] for o in found] == [
        "2027-03-23T10:00:00.0000000",
        "2027-03-30T10:00:00.0000000",
    ]
    utc = graph.ok("GET", f"/me/events/{series['id']}/instances", params=window)["value"]
    assert [o["start"]["dateTime"][11:13] for o in utc] == ["09", "08"]


@pytest.mark.parametrize(
    "recurrence",
    [
        {
            "pattern": {"type": "weekly", "interval": 1},
            "range": {"type": "noEnd", "startDate": "2026-12-01"},
        },
        {
            "pattern": {"type": "hourly", "interval": 1},
            "range": {"type": "noEnd", "startDate": "2026-12-01"},
        },
        {
            "pattern": {"type": "daily", "interval": 0},
            "range": {"type": "noEnd", "startDate": "2026-12-01"},
        },
        {
            "pattern": {"type": "daily", "interval": 1},
            "range": {"type": "endDate", "startDate": "2026-12-01"},
        },
        {
            "pattern": {"type": "daily", "interval": 1},
            "range": {"type": "numbered", "startDate": "2026-12-01", "numberOfOccurrences": 0},
        },
        {
            "pattern": {"type": "absoluteYearly", "interval": 1, "dayOfMonth": 1},
            "range": {"type": "noEnd", "startDate": "2026-12-01"},
        },
    ],
)
def test_bad_recurrences_are_refused(graph: Graph, recurrence: dict[str, Any]) -> None:
    response = graph.call("POST", "/me/events", json=event_body(recurrence=recurrence))
    assert code(response)[0] == 400
    assert code(response)[1] in ("ErrorPropertyValidationFailure", "RequestBodyRead")


def test_an_endless_series_is_listed_window_by_window(graph: Graph) -> None:
    graph.create(
        recurrence={
            "pattern": {"type": "daily", "interval": 1},
            "range": {"type": "noEnd", "startDate": "2026-12-01"},
        }
    )
    late = {"startDateTime": "2030-06-01T00:00:00Z", "endDateTime": "2030-06-08T00:00:00Z"}
    page = graph.ok(
        "GET", "/me/calendarView", params=late, headers={"Prefer": "odata.maxpagesize=50"}
    )["value"]
    assert len(page) == 7
    items, _, _ = full_round(graph)
    assert len(items) == 7  # WINDOW is a week
    assert WINDOW["startDateTime"].startswith("2026-12-01")
