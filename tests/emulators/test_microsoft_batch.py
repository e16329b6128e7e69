"""The Graph emulator's ``$batch`` and its limit of concurrent requests per mailbox.

Every ``$batch`` answer is checked by the ``graph`` fixture: its envelope field
by field, each inner body with the msgraph-sdk model its request calls for. The
concurrency tests serve the emulator on a real port and send requests from
threads, slowed by the delay fault so that they are in flight together.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from crmcal.emulators.microsoft import MicrosoftState, create_app
from crmcal.emulators.microsoft.throttle import concurrency_of
from tests import plain
from tests.emulators.conftest import Graph, code, event_body
from tests.emulators.graph_models import GraphChecked, batch_problems
from tests.served import served_app, wait_for

JSON = {"Content-Type": "application/json"}
IMMUTABLE = 'IdType="ImmutableId"'


def batch(graph: Graph, *requests: dict[str, Any], status: int = 200) -> Any:
    response = graph.call("POST", "/$batch", json={"requests": list(requests)})
    assert response.status_code == status, response.text
    return response.json()["responses"] if status == 200 else response


def by_id(answers: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {a["id"]: a for a in answers}


# --- $batch ----------------------------------------------------------------------------------


def test_each_request_of_a_batch_answers_on_its_own(graph: Graph) -> None:
    kept = graph.create(subject="kept")
    stale = kept["@odata.etag"]
    graph.ok("PATCH", f"/me/events/{kept['id']}", json={"subject": "changed"})
    answers = batch(
        graph,
        {
            "id": "new",
            "method": "POST",
            "url": "/me/events",
            "headers": {**JSON, "Prefer": IMMUTABLE},
            "body": event_body(subject="from a batch"),
        },
        {"id": "get", "method": "GET", "url": f"me/events/{kept['id']}?$select=subject"},
        {"id": "missing", "method": "GET", "url": "/me/events/nope"},
        {
            "id": "stale",
            "method": "PATCH",
            "url": f"/me/events/{kept['id']}",
            "headers": {**JSON, "If-Match": stale},
            "body": {"subject": "lost update"},
        },
        {
            "id": "zone",
            "method": "GET",
            "url": f"/me/events/{kept['id']}",
            "headers": {"Prefer": 'outlook.timezone="Europe/Berlin"'},
        },
        {"id": "gone", "method": "DELETE", "url": f"/me/events/{kept['id']}"},
        {"id": "bad path", "method": "GET", "url": "/me/nothing"},
    )
    assert [a["id"] for a in answers] == [
        "new",
        "get",
        "missing",
        "stale",
        "zone",
        "gone",
        "bad path",
    ]
    found = by_id(answers)
    assert {k: a["status"] for k, a in found.items()} == {
        "new": 201,
        "get": 200,
        "missing": 404,
        "stale": 412,
        "zone": 200,
        "gone": 204,
        "bad path": 400,
    }
    # Each request's own headers, and only its own, apply to it.
    assert found["new"]["headers"]["Preference-Applied"] == IMMUTABLE
    assert found["new"]["body"]["subject"] == "from a batch"
    assert (
        found["new"]["body"]["id"]
        == graph.ok(
            "GET", f"/me/events/{found['new']['body']['id']}", headers={"Prefer": IMMUTABLE}
        )["id"]
    )
    assert found["get"]["body"]["subject"] == "changed"
    assert "start" not in found["get"]["body"]
    assert found["missing"]["body"]["error"]["code"] == "ErrorItemNotFound"
    assert found["stale"]["body"]["error"]["code"] == "ErrorIrresolvableConflict"
    assert found["zone"]["body"]["start"]["timeZone"] == "Europe/Berlin"
    assert "body" not in found["gone"]
    assert found["get"]["headers"]["Content-Type"] == "application/json"
    assert code(graph.call("GET", f"/me/events/{kept['id']}")) == (404, "ErrorItemNotFound")


def test_depends_on_orders_requests_and_fails_the_dependents(graph: Graph) -> None:
    answers = by_id(
        batch(
            graph,
            {"id": "list", "method": "GET", "url": "/me/events", "dependsOn": ["make"]},
            {
                "id": "make",
                "method": "POST",
                "url": "/me/events",
                "headers": JSON,
                "body": event_body(subject="first"),
            },
            {"id": "fail", "method": "GET", "url": "/me/events/nope"},
            {"id": "after fail", "method": "GET", "url": "/me", "dependsOn": ["FAIL"]},
            {"id": "after that", "method": "GET", "url": "/me", "dependsOn": ["after fail"]},
        )
    )
    assert [e["subject"] for e in answers["list"]["body"]["value"]] == ["first"]
    assert (answers["fail"]["status"], answers["after fail"]["status"]) == (404, 424)
    assert answers["after that"]["status"] == 424
    assert answers["after fail"]["body"]["error"]["code"] == "FailedDependency"
    # The requests that failed for their dependencies were never sent.
    assert "me.get" not in graph.admin("GET", "/requests")


def test_throttled_requests_answer_429_inside_a_200(graph: Graph) -> None:
    graph.admin("POST", "/faults", json={"status": 429, "count": 1, "retry_after": 7})
    answers = batch(
        graph,
        *({"id": str(n), "method": "GET", "url": "/me/events"} for n in range(3)),
    )
    throttled = [a for a in answers if a["status"] == 429]
    assert len(throttled) == 1
    assert throttled[0]["headers"]["Retry-After"] == "7"
    assert throttled[0]["body"]["error"]["code"] == "ApplicationThrottled"
    assert sorted(a["status"] for a in answers) == [200, 200, 429]


def test_a_batch_and_its_requests_are_counted(graph: Graph) -> None:
    batch(
        graph,
        {"id": "1", "method": "POST", "url": "/me/events", "headers": JSON, "body": event_body()},
        {"id": "2", "method": "POST", "url": "/me/events", "headers": JSON, "body": event_body()},
        {"id": "3", "method": "GET", "url": "/me/calendars"},
    )
    counts = graph.admin("GET", "/requests")
    assert (counts["batch"], counts["events.create"], counts["calendars.list"]) == (1, 2, 1)


def test_twenty_requests_at_most(graph: Graph) -> None:
    many = [{"id": str(n), "method": "GET", "url": "/me"} for n in range(20)]
    assert [a["status"] for a in batch(graph, *many)] == [200] * 20
    refused = batch(graph, *many, {"id": "20", "method": "GET", "url": "/me"}, status=400)
    assert code(refused) == (400, "BadRequest")
    assert "limit of 20" in refused.json()["error"]["message"]


@pytest.mark.parametrize(
    ("requests", "message"),
    [
        ([], "no requests"),
        ([{"id": "a", "method": "GET", "url": "/me"}] * 2, "more than one request"),
        (
            [
                {"id": "a", "method": "GET", "url": "/me"},
                {"id": "A", "method": "GET", "url": "/me"},
            ],
            "more than one request",
        ),
        ([{"id": "a", "method": "GET"}], "url is required"),
        ([{"id": "a", "method": "HEAD", "url": "/me"}], "method"),
        ([{"method": "GET", "url": "/me"}], "id is required"),
        ([{"id": "a", "method": "POST", "url": "/me/events", "body": {}}], "Content-Type"),
        ([{"id": "a", "method": "GET", "url": "https://graph.microsoft.com/v1.0/me"}], "relative"),
        ([{"id": "a", "method": "GET", "url": "/../_emulator/requests"}], "'..'"),
        ([{"id": "a", "method": "POST", "url": "/$batch"}], "another batch"),
        ([{"id": "a", "method": "GET", "url": "/me", "dependsOn": ["b"]}], "not in the batch"),
        (
            [
                {"id": "a", "method": "GET", "url": "/me", "dependsOn": ["b"]},
                {"id": "b", "method": "GET", "url": "/me", "dependsOn": ["a"]},
            ],
            "cycle",
        ),
    ],
)
def test_a_malformed_batch_is_refused_whole(
    graph: Graph, requests: list[dict[str, Any]], message: str
) -> None:
    refused = batch(graph, *requests, status=400)
    assert code(refused) == (400, "BadRequest")
    assert message in refused.json()["error"]["message"]
    assert "me.get" not in graph.admin("GET", "/requests")


def test_a_batch_needs_json_and_a_token(graph: Graph) -> None:
    not_json = graph.call("POST", "/$batch", content=b"{", headers=JSON)
    assert code(not_json) == (400, "BadRequest")
    assert code(graph.call("POST", "/$batch", json={"requests": {}})) == (400, "BadRequest")
    anonymous = graph.client.post("/v1.0/$batch", json={"requests": []})
    assert code(anonymous) == (401, "InvalidAuthenticationToken")


def test_the_envelope_checker_catches_what_graph_would_not_send() -> None:
    sent = b'{"requests": [{"id": "1", "method": "GET", "url": "/me/events/x"}]}'
    good = b'{"responses": [{"id": "1", "status": 200, "headers": {}, "body": {"subject": "s"}}]}'
    assert batch_problems(sent, good) == []
    assert batch_problems(sent, b'{"responses": [], "x": 1}') != []
    assert batch_problems(sent, b'{"responses": [{"id": "2", "status": 200}]}') != []
    wrong_body = b'{"responses": [{"id": "1", "status": 200, "body": {"crmId": "7"}}]}'
    assert batch_problems(sent, wrong_body) != []


# --- the concurrency limit ---------------------------------------------------------------------


# Requests are held in flight this long by the delay fault: far longer than the moment a
# test needs, once it has seen them in flight, to send the next ones, however busy the machine.
HOLD = 5.0


class Served:
    """The emulator on a real port, with two accounts, every answer model-checked."""

    def __init__(self, url: str, state: MicrosoftState) -> None:
        self.url = url
        self.state = state
        self.tokens = {
            who: plain.post(
                f"{url}/_emulator/accounts", json={"email": f"{who}@example.test"}, timeout=30
            ).json()["access_token"]
            for who in ("sam", "kim")
        }

    def admin(self, path: str, body: dict[str, Any]) -> Any:
        response = plain.post(f"{self.url}/_emulator{path}", json=body, timeout=30)
        assert response.status_code == 200, response.text
        return response.json()

    def get(self, who: str, path: str = "/me") -> httpx.Response:
        auth = {"Authorization": f"Bearer {self.tokens[who]}"}
        return plain.get(f"{self.url}/v1.0{path}", headers=auth, timeout=60)

    def batch(self, who: str, requests: list[dict[str, Any]]) -> httpx.Response:
        auth = {"Authorization": f"Bearer {self.tokens[who]}"}
        body = {"requests": requests}
        return plain.post(f"{self.url}/v1.0/$batch", headers=auth, json=body, timeout=60)

    def in_flight(self, count: int) -> None:
        """Wait until sam has ``count`` requests being served."""
        held = concurrency_of(self.state).in_flight
        wait_for(lambda: sum(dict(held).values()) == count)  # a copy: it changes


@pytest.fixture
def served() -> Iterator[Served]:
    problems: list[str] = []
    state = MicrosoftState()
    with served_app(GraphChecked(create_app(state), problems)) as url:
        yield Served(url, state)
    assert not problems, "answers Graph would not send:\n" + "\n".join(problems[:15])


def test_a_fifth_request_in_flight_for_a_mailbox_is_throttled(served: Served) -> None:
    assert served.admin("/settings", {"mailbox_concurrency": 4})["mailbox_concurrency"] == 4
    served.admin("/faults", {"delay": HOLD, "count": 5})  # the 4 let in for sam, and kim's
    with ThreadPoolExecutor(6) as pool:
        sams = [pool.submit(served.get, "sam") for _ in range(5)]
        wait_for(lambda: sum(f.done() for f in sams) == 1)  # the fifth is refused
        served.in_flight(4)  # while four are held by the delay
        kims = pool.submit(served.get, "kim")
        answers = [f.result() for f in sams]
    assert sorted(a.status_code for a in answers) == [200, 200, 200, 200, 429]
    (throttled,) = [a for a in answers if a.status_code == 429]
    assert code(throttled) == (429, "ApplicationThrottled")
    assert throttled.json()["error"]["message"] == (
        "Application is over its MailboxConcurrency limit."
    )
    assert throttled.headers["retry-after"] == "1"
    assert kims.result().status_code == 200  # another mailbox is not held to sam's count
    assert served.get("sam").status_code == 200  # once they are done, sam may go on
    counts = plain.get(f"{served.url}/_emulator/requests", timeout=30).json()
    assert (counts["throttled"], counts["me.get"]) == (1, 6)


def test_requests_in_a_batch_count_one_by_one(served: Served) -> None:
    served.admin("/settings", {"mailbox_concurrency": 4})
    me = [{"id": str(n), "method": "GET", "url": "/me"} for n in range(4)]
    # The envelope takes no slot: four requests fit.
    assert [a["status"] for a in served.batch("sam", me).json()["responses"]] == [200] * 4
    served.admin("/faults", {"delay": HOLD, "count": 4})
    with ThreadPoolExecutor(2) as pool:
        alone = pool.submit(served.get, "sam")
        served.in_flight(1)  # three slots are left for the batch
        answered = served.batch("sam", me)
    assert answered.status_code == 200
    statuses = sorted(a["status"] for a in answered.json()["responses"])
    assert statuses == [200, 200, 200, 429]
    (throttled,) = [a for a in answered.json()["responses"] if a["status"] == 429]
    assert throttled["headers"]["Retry-After"] == "1"
    assert alone.result().status_code == 200


def test_the_limit_is_off_until_asked_for(served: Served) -> None:
    served.admin("/faults", {"delay": 0.3, "count": 8})
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: served.get("sam"), range(8)))
    assert [a.status_code for a in answers] == [200] * 8
    assert served.admin("/settings", {"mailbox_concurrency": None})["mailbox_concurrency"] is None


def test_the_limit_is_per_app_and_mailbox() -> None:
    """Two apps of one mailbox have a limit each, as at Graph."""
    state = MicrosoftState()
    with served_app(create_app(state)) as url:
        tokens = [
            plain.post(
                f"{url}/_emulator/accounts",
                json={"email": "sam@example.test", "client_id": app},
                timeout=30,
            ).json()["access_token"]
            for app in ("crm", "other")
        ]
        plain.post(f"{url}/_emulator/settings", json={"mailbox_concurrency": 1}, timeout=30)
        plain.post(f"{url}/_emulator/faults", json={"delay": 0.4, "count": 2}, timeout=30)
        results: dict[str, int] = {}

        def get(n: int) -> None:
            auth = {"Authorization": f"Bearer {tokens[n]}"}
            results[str(n)] = plain.get(f"{url}/v1.0/me", headers=auth, timeout=30).status_code

        threads = [threading.Thread(target=get, args=(n,)) for n in (0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert results == {"0": 200, "1": 200}
