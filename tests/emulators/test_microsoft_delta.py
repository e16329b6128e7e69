"""Delta queries on the Graph emulator's calendar views: pages, deltaLinks, removals, expiry."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.emulators.conftest import Clock, Graph, code, event_body
from tests.emulators.graph_delta import DELTA, WINDOW, follow, full_round


def test_a_first_round_pages_with_maxpagesize_and_ends_with_a_delta_link(graph: Graph) -> None:
    made = [graph.create(subject=f"e{n}", day=1 + n) for n in range(5)]
    graph.create(subject="outside", day=20)
    items, link, pages = full_round(graph, page_size=2)
    assert pages == 3
    assert [i["id"] for i in items] == [m["id"] for m in made]
    assert {i["@odata.type"] for i in items} == {"#microsoft.graph.event"}
    assert link.startswith("http://testserver/v1.0/me/calendarView/delta?$deltatoken=")
    assert all("singleValueExtendedProperties" not in i for i in items)
    quiet, again = follow(graph, link)
    assert quiet == []
    assert again != link


def test_the_next_round_answers_changes_deletions_and_departures(graph: Graph) -> None:
    stays, edited, deleted, leaves = (
        graph.create(subject=s, day=d)
        for s, d in (("stays", 1), ("edited", 2), ("deleted", 3), ("leaves", 4))
    )
    _, link, _ = full_round(graph)
    graph.ok("PATCH", f"/me/events/{edited['id']}", json={"subject": "edited twice"})
    graph.call("DELETE", f"/me/events/{deleted['id']}")
    graph.ok("PATCH", f"/me/events/{leaves['id']}", json=event_body(day=25))
    added = graph.create(subject="added", day=5)
    graph.create(subject="never in the window", day=28)
    items, link = follow(graph, link)
    by_id = {i["id"]: i for i in items}
    assert set(by_id) == {edited["id"], deleted["id"], leaves["id"], added["id"]}
    assert by_id[edited["id"]]["subject"] == "edited twice"
    for gone in (deleted, leaves):
        assert by_id[gone["id"]] == {
            "@odata.type": "#microsoft.graph.event",
            "id": gone["id"],
            "@removed": {"reason": "deleted"},
        }
    assert stays["id"] not in by_id
    assert follow(graph, link)[0] == []


def test_a_change_made_while_paging_waits_for_the_next_round(graph: Graph) -> None:
    made = [graph.create(subject=f"e{n}", day=1 + n) for n in range(3)]
    first = graph.ok("GET", DELTA, params=WINDOW, headers={"Prefer": "odata.maxpagesize=2"})
    graph.ok("PATCH", f"/me/events/{made[2]['id']}", json={"subject": "changed meanwhile"})
    rest, link = follow(graph, first["@odata.nextLink"])
    assert [i["subject"] for i in rest] == ["e2"]  # the snapshot of the round
    later, _ = follow(graph, link)
    assert [i["subject"] for i in later] == ["changed meanwhile"]


def test_parameters_belong_to_the_first_request_only(graph: Graph) -> None:
    _, link, _ = full_round(graph)
    again = graph.call("GET", link + "&startDateTime=2026-12-01T00:00:00Z")
    assert code(again) == (400, "BadRequest")
    for option in ("$select", "$expand", "$filter", "$orderby", "$top"):
        refused = graph.call("GET", DELTA, params=WINDOW | {option: "subject"})
        assert code(refused) == (400, "BadRequest"), option
    assert code(graph.call("GET", DELTA)) == (400, "ErrorInvalidParameter")
    forged = graph.call("GET", DELTA, params={"$deltatoken": "not-a-token"})
    assert code(forged) == (400, "BadRequest")


def test_expired_tokens_answer_410_sync_state_not_found(graph: Graph, clock: Clock) -> None:
    graph.create()
    graph.create(day=2)
    _, link, _ = full_round(graph)
    page = graph.ok("GET", DELTA, params=WINDOW, headers={"Prefer": "odata.maxpagesize=1"})
    assert graph.admin("POST", "/expire-delta-tokens", json={"email": graph.email})["expired"] > 0
    for stale in (link, page["@odata.nextLink"]):
        gone = graph.call("GET", stale)
        assert code(gone) == (410, "SyncStateNotFound")
        assert "sync state generation is not found" in gone.json()["error"]["message"]
    _, fresh, _ = full_round(graph)
    assert graph.call("GET", fresh).status_code == 200
    graph.admin("POST", "/settings", json={"delta_token_max_age": 60})
    clock.now += dt.timedelta(seconds=61)
    graph.token = graph.client.post("/_emulator/accounts", json={"email": graph.email}).json()[
        "access_token"
    ]
    assert code(graph.call("GET", fresh)) == (410, "SyncStateNotFound")


def test_a_move_is_a_removal_here_and_an_arrival_there(graph: Graph) -> None:
    team = graph.ok("POST", "/me/calendars", 201, json={"name": "Team"})
    team_delta = f"/me/calendars/{team['id']}/calendarView/delta"
    event = graph.create()
    immutable = {"Prefer": 'IdType="ImmutableId"'}
    _, source_link, _ = full_round(graph)
    _, source_immutable, _ = full_round(graph, headers=immutable)
    _, target_link, _ = full_round(graph, team_delta)
    moved = graph.admin("POST", f"/events/{event['id']}/move", json={"calendar_id": team["id"]})
    (removed,) = follow(graph, source_link)[0]
    assert removed == {
        "@odata.type": "#microsoft.graph.event",
        "id": event["id"],
        "@removed": {"reason": "deleted"},
    }
    (removed_immutable,) = follow(graph, source_immutable, headers=immutable)[0]
    assert removed_immutable["id"] == moved["immutable_id"]
    (arrived,) = follow(graph, target_link)[0]
    assert (arrived["id"], arrived["subject"]) == (moved["id"], "Demo")


@pytest.mark.parametrize("page_size", [1, 3, 50])
def test_series_in_a_delta_are_occurrences_never_masters(graph: Graph, page_size: int) -> None:
    graph.create(
        subject="weekly",
        recurrence={
            "pattern": {"type": "daily", "interval": 2},
            "range": {"type": "numbered", "startDate": "2026-12-01", "numberOfOccurrences": 10},
        },
    )
    items, _, _ = full_round(graph, page_size=page_size)
    assert [i["type"] for i in items] == ["occurrence"] * 4  # Dec 1, 3, 5, 7
    assert len({i["seriesMasterId"] for i in items}) == 1
