"""The Graph emulator's change notifications: subscriptions, the validation handshake,
notifications and lifecycle notifications, delivered over real HTTP.

A small receiving app is served on 127.0.0.1 (``Receiver``); each of its paths
behaves as a test tells it (echo the validation token or not, answer
notifications 202, 500, or not in time) and records what it was sent. The
emulator calls it for real, from the test client's event loop, or from its own
server in the end-to-end test. Every subscription answer is parsed with
msgraph-sdk's ``Subscription`` models by the ``graph`` fixture's checker.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from msgraph.generated.models.subscription import Subscription
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from crmcal.emulators.microsoft import MicrosoftState, create_app
from crmcal.emulators.microsoft.store import TENANT_ID
from crmcal.tls import tls
from tests.caldav_servers import closed_port
from tests.emulators.conftest import Clock, Graph, code, event_body
from tests.emulators.graph_models import GraphChecked, check
from tests.served import served_app, wait_for

IMMUTABLE = {"Prefer": 'IdType="ImmutableId"'}
# How long the emulator waits for the receiver's answers: the longest it allows, since the
# receiver shares this busy process (Graph's own 10 s and 3 s would fail a slow answer).
PATIENT = {"validation_timeout": 60, "notification_timeout": 60}
# Deliveries that give up quickly: few attempts, close together.
FAST = {"notification_attempts": 3, "notification_backoff": 0.05}


# --- the receiving end ----------------------------------------------------------------------


@dataclass
class Received:
    path: str
    token: str | None  # the validation token, for a validation request
    content_type: str
    body: bytes
    at: float = field(default_factory=time.monotonic)


class Receiver:
    """A webhook endpoint. Per path, ``modes`` says how it behaves:

    ``ok`` (the default) echoes validation tokens and answers notifications 202;
    ``refuse`` answers validation 500; ``wrong`` echoes a different token; ``json``
    echoes the token as JSON; ``slow`` echoes it after ``pause`` seconds; ``dead``
    validates, then answers notifications 503; ``hang`` validates, then answers
    notifications after ``pause`` seconds. ``failures[path]`` notifications are
    answered 500 before it answers 202 again."""

    def __init__(self) -> None:
        self.url = ""
        self.modes: dict[str, str] = {}
        self.failures: dict[str, int] = {}
        self.pause = 1.5
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self.app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["POST"])])

    async def _handle(self, request: Request) -> Response:
        path = request.url.path
        token = request.query_params.get("validationToken")
        body = await request.body()
        with self._lock:  # the test's thread reads the list
            self.received.append(
                Received(path, token, request.headers.get("content-type", ""), body)
            )
        mode = self.modes.get(path, "ok")
        if token is not None:
            if mode == "slow":
                await asyncio.sleep(self.pause)
            return {
                "refuse": Response(status_code=500),
                "wrong": PlainTextResponse(token + "!"),
                "json": JSONResponse(token),
            }.get(mode, PlainTextResponse(token))
        with self._lock:
            failing = self.failures.get(path, 0)
            if failing:
                self.failures[path] = failing - 1
        if failing:
            return Response(status_code=500)
        if mode == "dead":
            return Response(status_code=503)
        if mode == "hang":
            await asyncio.sleep(self.pause)
        return Response(status_code=202)

    def at(self, path: str) -> str:
        return self.url + path

    def validations(self, path: str) -> list[Received]:
        return [r for r in list(self.received) if r.path == path and r.token is not None]

    def posts(self, path: str) -> list[Received]:
        return [r for r in list(self.received) if r.path == path and r.token is None]

    def values(self, path: str) -> list[dict[str, Any]]:
        """Every notification POSTed to ``path``, in the order they came."""
        return [item for r in self.posts(path) for item in json.loads(r.body)["value"]]


@pytest.fixture(scope="module")
def served_receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    with served_app(receiver.app, shutdown_grace=1) as url:
        receiver.url = url
        yield receiver


@pytest.fixture
def receiver(served_receiver: Receiver) -> Receiver:
    served_receiver.modes.clear()
    served_receiver.failures.clear()
    served_receiver.received.clear()
    served_receiver.pause = 1.5
    return served_receiver


@pytest.fixture
def graph(graph: Graph) -> Graph:
    """Sam's account on an emulator that waits patiently for the receiver's answers."""
    graph.admin("POST", "/settings", json=PATIENT)
    return graph


@pytest.fixture
def fast(graph: Graph) -> Graph:
    """Sam's account on an emulator whose deliveries give up quickly."""
    graph.admin("POST", "/settings", json=FAST)
    return graph


def all_sent(graph: Graph) -> dict[str, Any] | None:
    """The emulator's view of subscriptions once nothing is queued or on its way (every
    notification so far delivered or given up on), else None."""
    view: dict[str, Any] = graph.admin("GET", "/subscriptions")
    return view if not view["sending"] else None


def create(graph: Graph, path: str = "/me/events", **fields: Any) -> dict[str, Any]:
    """An event, answered with its immutable id (as subscriptions here are made)."""
    return graph.ok("POST", path, 201, json=event_body(**fields), headers=IMMUTABLE)


def deliveries(graph: Graph, at_least: int) -> list[dict[str, Any]]:
    """The admin API's delivery records, once there are that many: an attempt is recorded
    when its answer is back, a moment after the receiver has seen it."""
    return wait_for(
        lambda: (
            (found := graph.admin("GET", "/subscriptions")["deliveries"])
            and len(found) >= at_least
            and found
        )
    )


def later(clock: Clock, **delta: float) -> str:
    return (clock.now + dt.timedelta(**delta)).isoformat()


def subscribe(
    graph: Graph, url: str, clock: Clock, status: int = 201, headers: Any = None, **fields: Any
) -> Any:
    body = {
        "changeType": "created,updated,deleted",
        "notificationUrl": url,
        "resource": "/me/events",
        "expirationDateTime": later(clock, days=2),
        "clientState": "crm-secret",
        **fields,
    }
    headers = IMMUTABLE if headers is None else headers
    response = graph.call("POST", "/subscriptions", json=body, headers=headers)
    assert response.status_code == status, response.text
    return response.json() if status < 400 else response


# --- creating subscriptions ---------------------------------------------------------------


def test_a_subscription_is_made_once_its_address_echoes_the_token(
    graph: Graph, receiver: Receiver, clock: Clock
) -> None:
    made = subscribe(graph, receiver.at("/hook"), clock)
    check(Subscription, {k: v for k, v in made.items() if k != "@odata.context"})
    (validation,) = receiver.validations("/hook")
    # The token is opaque text with spaces and colons, URL-encoded in the query.
    assert validation.token is not None
    assert validation.token.startswith("Validation: Testing client application reachability")
    assert validation.content_type.startswith("text/plain")
    assert validation.body == b""
    me = graph.ok("GET", "/me")
    assert made["changeType"] == "created,updated,deleted"
    assert (made["resource"], made["clientState"], made["creatorId"]) == (
        "/me/events",
        "crm-secret",
        me["id"],
    )
    assert (made["includeResourceData"], made["latestSupportedTlsVersion"]) == (False, "v1_2")
    assert made["lifecycleNotificationUrl"] is None
    assert made["expirationDateTime"] == "2026-11-23T09:00:00.0000000Z"
    listed = graph.ok("GET", "/subscriptions")["value"]
    assert [s["id"] for s in listed] == [made["id"]]
    assert graph.ok("GET", f"/subscriptions/{made['id']}")["notificationUrl"] == receiver.at(
        "/hook"
    )
    assert graph.admin("GET", "/requests")["subscriptions.create"] == 1


def test_the_lifecycle_url_is_validated_too(graph: Graph, receiver: Receiver, clock: Clock) -> None:
    made = subscribe(
        graph, receiver.at("/hook"), clock, lifecycleNotificationUrl=receiver.at("/life")
    )
    assert made["lifecycleNotificationUrl"] == receiver.at("/life")
    assert len(receiver.validations("/hook")) == len(receiver.validations("/life")) == 1
    receiver.modes["/life"] = "refuse"
    response = subscribe(
        graph,
        receiver.at("/hook"),
        clock,
        400,
        lifecycleNotificationUrl=receiver.at("/life"),
    )
    assert code(response) == (400, "ValidationError")
    assert len(graph.ok("GET", "/subscriptions")["value"]) == 1


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("refuse", "HTTP status code is 'InternalServerError'"),
        ("wrong", "must respond with 200 OK to validation request"),
        ("json", "must respond with 200 OK to validation request"),
        ("slow", "Subscription validation request timed out."),
        ("unreachable", "must respond with 200 OK to validation request"),
    ],
)
def test_a_failed_handshake_makes_no_subscription(
    fast: Graph, receiver: Receiver, clock: Clock, mode: str, message: str
) -> None:
    receiver.modes["/hook"] = mode
    if mode == "slow":  # an answer that comes long after the emulator stopped waiting
        fast.admin("POST", "/settings", json={"validation_timeout": 1})
        receiver.pause = 60.0
    with closed_port() as shut:
        url = f"http://127.0.0.1:{shut}/hook" if mode == "unreachable" else receiver.at("/hook")
        response = subscribe(fast, url, clock, 400)
    assert code(response) == (400, "ValidationError")
    assert message in response.json()["error"]["message"]
    assert fast.ok("GET", "/subscriptions")["value"] == []
    (record,) = fast.admin("GET", "/subscriptions")["deliveries"]
    assert record["kind"] == "validation"
    if mode == "slow":
        assert record["error"] == "timeout"


@pytest.mark.parametrize(
    ("fields", "status", "error", "message"),
    [
        ({"changeType": "created,moved"}, 400, "InvalidRequest", "'moved'"),
        ({"changeType": ""}, 400, "InvalidRequest", "changeType is a required property"),
        ({"notificationUrl": "http://example.test/hook"}, 400, "InvalidRequest", "HTTPS"),
        ({"notificationUrl": "hook"}, 400, "InvalidRequest", "not a valid URL"),
        ({"expirationDateTime": None}, 400, "InvalidRequest", "expirationDateTime is a required"),
        ({"expirationDateTime": "soon"}, 400, "InvalidRequest", "Could not process"),
        (
            {"expirationDateTime": "2026-11-28T09:01:00Z"},
            400,
            "ExtensionError",
            "Subscription expiration can only be 10080 minutes in the future.",
        ),
        ({"clientState": "x" * 129}, 400, "InvalidRequest", "128 characters"),
        ({"latestSupportedTlsVersion": "v2"}, 400, "InvalidRequest", "v1_2"),
        ({"resource": "/me/messages"}, 400, "ExtensionError", "is not supported"),
        ({"resource": "/me/events/abc"}, 400, "ExtensionError", "is not supported"),
        ({"resource": "/users/kim@example.test/events"}, 403, "ExtensionError", "Forbidden"),
        ({"resource": "/me/calendars/nope/events"}, 404, "ExtensionError", "NotFound"),
        ({"crmId": "7"}, 400, "InvalidRequest", "camelCased"),
        ({"includeResourceData": True}, 400, "InvalidRequest", "includeResourceData"),
    ],
)
def test_bad_subscriptions_are_refused_before_any_handshake(
    graph: Graph,
    receiver: Receiver,
    clock: Clock,
    fields: dict[str, Any],
    status: int,
    error: str,
    message: str,
) -> None:
    response = subscribe(graph, receiver.at("/hook"), clock, status, **fields)
    assert code(response) == (status, error)
    assert message in response.json()["error"]["message"]
    assert receiver.received == []


def test_an_expiry_under_45_minutes_is_raised_to_45(
    graph: Graph, receiver: Receiver, clock: Clock
) -> None:
    made = subscribe(graph, receiver.at("/hook"), clock, expirationDateTime=later(clock, minutes=5))
    assert made["expirationDateTime"] == "2026-11-21T09:45:00.0000000Z"
    # Exactly 10,080 minutes is allowed.
    subscribe(graph, receiver.at("/hook"), clock, expirationDateTime=later(clock, minutes=10_080))


def test_the_resource_forms_graph_accepts(graph: Graph, receiver: Receiver, clock: Clock) -> None:
    me = graph.ok("GET", "/me")
    team = graph.ok("POST", "/me/calendars", 201, json={"name": "Team"})
    for resource in (
        "me/events",
        "/me/events/",
        "Me/Events",
        f"/users/{me['id']}/events",
        "/users/SAM@example.test/events",
        f"/users('{me['id']}')/events",
        "/me/calendar/events",
        f"/me/calendars/{team['id']}/events",
        f"/me/calendars('{team['id']}')/events",
        f"/users/{me['id']}/calendars/{team['id']}/events",
    ):
        assert subscribe(graph, receiver.at("/hook"), clock, resource=resource)["resource"] == (
            resource
        )


def test_subscriptions_belong_to_the_app_that_made_them(
    graph: Graph, receiver: Receiver, clock: Clock
) -> None:
    crm = graph.admin("POST", "/accounts", json={"email": graph.email, "client_id": "crm-app"})
    other = graph.admin("POST", "/accounts", json={"email": graph.email, "client_id": "other"})
    as_crm = {"Authorization": f"Bearer {crm['access_token']}"}
    as_other = {"Authorization": f"Bearer {other['access_token']}"}
    made = subscribe(graph, receiver.at("/hook"), clock, headers=as_crm)
    assert made["applicationId"] == "crm-app"
    assert [s["id"] for s in graph.ok("GET", "/subscriptions", headers=as_crm)["value"]] == [
        made["id"]
    ]
    assert graph.ok("GET", "/subscriptions", headers=as_other)["value"] == []
    missing = graph.call("DELETE", f"/subscriptions/{made['id']}", headers=as_other)
    assert code(missing) == (404, "ResourceNotFound")


# --- notifications ---------------------------------------------------------------------------


def test_changes_are_notified_in_order_as_graph_words_them(
    graph: Graph, receiver: Receiver, clock: Clock
) -> None:
    made = subscribe(graph, receiver.at("/hook"), clock)
    user_id = graph.ok("GET", "/me")["id"]
    created = create(graph)
    updated = graph.ok("PATCH", f"/me/events/{created['id']}", json={"subject": "Moved"})
    graph.ok("DELETE", f"/me/events/{created['id']}", 204)
    values = wait_for(lambda: len(receiver.values("/hook")) >= 3 and receiver.values("/hook"))
    assert [v["changeType"] for v in values] == ["created", "updated", "deleted"]
    for post in receiver.posts("/hook"):
        assert post.content_type.startswith("application/json")
    resource = f"Users/{user_id}/Events/{created['id']}"
    assert values[0] == {
        "subscriptionId": made["id"],
        "subscriptionExpirationDateTime": made["expirationDateTime"],
        "changeType": "created",
        "resource": resource,
        "resourceData": {
            "@odata.type": "#Microsoft.Graph.Event",
            "@odata.id": resource,
            "@odata.etag": created["@odata.etag"],
            "id": created["id"],
        },
        "clientState": "crm-secret",
        "tenantId": TENANT_ID,
    }
    assert values[1]["resourceData"]["@odata.etag"] == updated["@odata.etag"]
    # Messages queued while a POST is on its way go out together in the next one, so a
    # busy machine may see the three changes in fewer than three POSTs.
    sent = wait_for(lambda: all_sent(graph))["deliveries"]
    assert sent[0]["status"] == 200  # the validation
    assert {d["status"] for d in sent[1:]} == {202}
    assert [v["changeType"] for d in sent[1:] for v in d["value"]] == [
        "created",
        "updated",
        "deleted",
    ]


def test_ids_are_regular_ones_without_the_immutable_preference(
    graph: Graph, receiver: Receiver, clock: Clock
) -> None:
    subscribe(graph, receiver.at("/hook"), clock, headers={})
    created = graph.create()  # answered with its regular id
    (value,) = wait_for(lambda: receiver.values("/hook"))
    assert value["resourceData"]["id"] == created["id"]
    immutable = graph.ok("GET", f"/me/events/{created['id']}", headers=IMMUTABLE)["id"]
    assert immutable != created["id"]


def test_a_calendar_subscription_hears_only_its_calendar_and_change_types(
    graph: Graph, receiver: Receiver, clock: Clock
) -> None:
    team = graph.ok("POST", "/me/calendars", 201, json={"name": "Team"})
    subscribe(
        graph,
        receiver.at("/team"),
        clock,
        resource=f"/me/calendars/{team['id']}/events",
        changeType="created",
    )
    graph.create()  # in the default calendar: not heard
    first = create(graph, f"/me/calendars/{team['id']}/events", subject="first")
    graph.ok("PATCH", f"/me/events/{first['id']}", json={"subject": "changed"})  # not created
    last = create(graph, f"/me/calendars/{team['id']}/events", subject="last")
    # A subscription delivers in order, so once the last is in, nothing else is coming.
    values = wait_for(lambda: len(receiver.values("/team")) >= 2 and receiver.values("/team"))
    assert [v["resourceData"]["id"] for v in values] == [first["id"], last["id"]]


def test_failed_deliveries_are_retried_in_order_and_recorded(
    fast: Graph, receiver: Receiver, clock: Clock
) -> None:
    made = subscribe(fast, receiver.at("/flaky"), clock)
    receiver.failures["/flaky"] = 2
    created = create(fast)
    fast.ok("DELETE", f"/me/events/{created['id']}", 204)
    wait_for(lambda: {v["changeType"] for v in receiver.values("/flaky")} >= {"deleted"})
    delivered = [v["changeType"] for p in receiver.posts("/flaky")[2:] for v in _values(p)]
    assert delivered == ["created", "deleted"]  # the retried one first, then the next
    records = deliveries(fast, 4)  # the validation, then 500, 500, 202
    notifications = [d for d in records if d["kind"] == "notification"]
    assert [(d["attempt"], d["status"]) for d in notifications][:3] == [
        (1, 500),
        (2, 500),
        (3, 202),
    ]
    assert all(d["subscription_id"] == made["id"] for d in records)


def _values(post: Received) -> list[dict[str, Any]]:
    return json.loads(post.body)["value"]


def test_an_address_that_does_not_answer_holds_up_no_other_subscription(
    graph: Graph, receiver: Receiver, clock: Clock
) -> None:
    # /hang is given far longer than any test machine needs to deliver to /hook.
    graph.admin("POST", "/settings", json={"notification_timeout": 20, "notification_attempts": 1})
    receiver.modes["/hang"] = "hang"
    receiver.pause = 25.0
    stuck = subscribe(graph, receiver.at("/hang"), clock)
    subscribe(graph, receiver.at("/hook"), clock)
    graph.create()
    wait_for(lambda: receiver.values("/hook"))
    # While /hang's delivery still waits for its answer: the other queue did not wait for it
    # (/hang's POST may reach the receiver a moment after /hook's on a busy machine).
    wait_for(lambda: len(receiver.posts("/hang")) == 1)
    pending = [
        d
        for d in graph.admin("GET", "/subscriptions")["deliveries"]
        if d["kind"] == "notification" and d["subscription_id"] == stuck["id"]
    ]
    assert pending == []  # still waiting for its answer


def test_a_dead_address_is_given_up_on_then_missed(
    fast: Graph, receiver: Receiver, clock: Clock
) -> None:
    receiver.modes["/dead"] = "dead"
    made = subscribe(
        fast, receiver.at("/dead"), clock, lifecycleNotificationUrl=receiver.at("/life")
    )
    fast.create()
    (missed,) = wait_for(lambda: receiver.values("/life"))
    assert (missed["subscriptionId"], missed["lifecycleEvent"]) == (made["id"], "missed")
    assert len(receiver.posts("/dead")) == 3  # notification_attempts
    records = deliveries(fast, 6)
    assert [(d["kind"], d["attempt"], d["status"]) for d in records] == [
        ("validation", 1, 200),
        ("validation", 1, 200),
        ("notification", 1, 503),
        ("notification", 2, 503),
        ("notification", 3, 503),
        ("lifecycle", 1, 202),
    ]
    assert fast.ok("GET", f"/subscriptions/{made['id']}")["id"] == made["id"]


# --- renewal, deletion, expiry ----------------------------------------------------------------


def test_patch_renews_within_the_same_limits(
    graph: Graph, receiver: Receiver, clock: Clock
) -> None:
    made = subscribe(graph, receiver.at("/hook"), clock)
    path = f"/subscriptions/{made['id']}"
    renewed = graph.ok("PATCH", path, json={"expirationDateTime": later(clock, days=6)})
    assert renewed["expirationDateTime"] == "2026-11-27T09:00:00.0000000Z"
    assert renewed["clientState"] == "crm-secret"
    too_far = graph.call("PATCH", path, json={"expirationDateTime": later(clock, days=8)})
    assert code(too_far) == (400, "ExtensionError")
    other = graph.call("PATCH", path, json={"notificationUrl": receiver.at("/other")})
    assert code(other) == (400, "InvalidRequest")
    soon = graph.ok("PATCH", path, json={"expirationDateTime": later(clock, minutes=1)})
    assert soon["expirationDateTime"] == "2026-11-21T09:45:00.0000000Z"
    unknown = graph.call("PATCH", "/subscriptions/nope", json={"expirationDateTime": "x"})
    assert code(unknown) == (404, "ResourceNotFound")
    assert len(receiver.validations("/hook")) == 1  # renewing validates nothing
    assert graph.admin("GET", "/requests")["subscriptions.update"] == 5


def test_a_deleted_subscription_sends_nothing_more(
    graph: Graph, receiver: Receiver, clock: Clock
) -> None:
    gone = subscribe(graph, receiver.at("/gone"), clock)
    subscribe(graph, receiver.at("/hook"), clock)
    graph.ok("DELETE", f"/subscriptions/{gone['id']}", 204)
    assert code(graph.call("GET", f"/subscriptions/{gone['id']}")) == (404, "ResourceNotFound")
    assert code(graph.call("DELETE", f"/subscriptions/{gone['id']}")) == (404, "ResourceNotFound")
    graph.create()
    wait_for(lambda: receiver.values("/hook"))
    # Everything the change queued is delivered; nothing was ever on its way to /gone.
    view = wait_for(lambda: all_sent(graph))
    assert [
        d
        for d in view["deliveries"]
        if d["subscription_id"] == gone["id"] and d["kind"] != "validation"
    ] == []
    assert receiver.posts("/gone") == []


def test_an_expired_subscription_sends_nothing_and_is_gone(
    graph: Graph, receiver: Receiver, clock: Clock
) -> None:
    short = subscribe(
        graph, receiver.at("/short"), clock, expirationDateTime=later(clock, minutes=50)
    )
    subscribe(graph, receiver.at("/hook"), clock)
    clock.now += dt.timedelta(minutes=55)  # within the access token's hour
    graph.create()
    wait_for(lambda: receiver.values("/hook"))
    view = wait_for(lambda: all_sent(graph))
    assert [
        d
        for d in view["deliveries"]
        if d["subscription_id"] == short["id"] and d["kind"] != "validation"
    ] == []
    assert receiver.posts("/short") == []
    assert code(graph.call("GET", f"/subscriptions/{short['id']}")) == (404, "ResourceNotFound")
    assert len(graph.ok("GET", "/subscriptions")["value"]) == 1


def test_the_admin_api_expires_a_subscription_now(
    graph: Graph, receiver: Receiver, clock: Clock
) -> None:
    made = subscribe(graph, receiver.at("/hook"), clock)
    graph.admin("POST", f"/subscriptions/{made['id']}/expire")
    assert graph.ok("GET", "/subscriptions")["value"] == []
    assert graph.client.post(f"/_emulator/subscriptions/{made['id']}/expire").status_code == 404


# --- lifecycle notifications --------------------------------------------------------------------


def test_lifecycle_notifications_on_demand(graph: Graph, receiver: Receiver, clock: Clock) -> None:
    made = subscribe(
        graph, receiver.at("/hook"), clock, lifecycleNotificationUrl=receiver.at("/life")
    )
    admin = f"/subscriptions/{made['id']}/lifecycle"
    sent = graph.admin("POST", admin, json={"event": "reauthorizationRequired"})
    (value,) = wait_for(lambda: receiver.values("/life"))
    assert (
        value
        == sent
        == {
            "subscriptionId": made["id"],
            "subscriptionExpirationDateTime": made["expirationDateTime"],
            "tenantId": TENANT_ID,
            "clientState": "crm-secret",
            "lifecycleEvent": "reauthorizationRequired",
        }
    )
    (listed,) = graph.admin("GET", "/subscriptions")["subscriptions"]
    assert listed["reauthorization_required"] is True
    graph.ok("POST", f"/subscriptions/{made['id']}/reauthorize", 204)
    (listed,) = graph.admin("GET", "/subscriptions")["subscriptions"]
    assert listed["reauthorization_required"] is False
    graph.admin("POST", admin, json={"event": "missed"})
    graph.admin("POST", admin, json={"event": "subscriptionRemoved"})
    events = wait_for(lambda: len(receiver.values("/life")) >= 3 and receiver.values("/life"))
    assert [v["lifecycleEvent"] for v in events] == [
        "reauthorizationRequired",
        "missed",
        "subscriptionRemoved",
    ]
    assert graph.ok("GET", "/subscriptions")["value"] == []  # removed
    assert receiver.posts("/hook") == []  # lifecycle notifications go only to their URL


def test_lifecycle_notifications_need_a_lifecycle_url(
    graph: Graph, receiver: Receiver, clock: Clock
) -> None:
    made = subscribe(graph, receiver.at("/hook"), clock)
    admin = f"/_emulator/subscriptions/{made['id']}/lifecycle"
    assert code(graph.client.post(admin, json={"event": "missed"})) == (400, "BadRequest")
    with_url = subscribe(
        graph, receiver.at("/hook"), clock, lifecycleNotificationUrl=receiver.at("/life")
    )
    admin = f"/_emulator/subscriptions/{with_url['id']}/lifecycle"
    assert code(graph.client.post(admin, json={"event": "nope"})) == (400, "BadRequest")
    unknown = graph.client.post("/_emulator/subscriptions/nope/lifecycle", json={"event": "missed"})
    assert code(unknown) == (404, "ResourceNotFound")


# --- settings, and the whole thing served -------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"validation_timeout": 0},
        {"notification_timeout": "3"},
        {"notification_attempts": 1.5},
        {"notification_attempts": 0},
        {"notification_backoff": -1},
        {"mailbox_concurrency": 0},
    ],
)
def test_bad_delivery_settings_are_refused(graph: Graph, body: dict[str, Any]) -> None:
    before = graph.admin("GET", "/settings")
    assert code(graph.client.post("/_emulator/settings", json=body)) == (400, "BadRequest")
    assert graph.admin("GET", "/settings") == before


def test_a_served_emulator_validates_and_notifies_over_http(receiver: Receiver) -> None:
    state = MicrosoftState()
    checked = GraphChecked(create_app(state))
    with served_app(checked) as url, httpx.Client(verify=tls(), base_url=url, timeout=30) as client:
        tokens = client.post("/_emulator/accounts", json={"email": "kim@example.test"}).json()
        assert client.post("/_emulator/settings", json=PATIENT).status_code == 200
        auth = {"Authorization": f"Bearer {tokens['access_token']}", **IMMUTABLE}
        expires = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat()
        made = client.post(
            "/v1.0/subscriptions",
            headers=auth,
            json={
                "changeType": "created",
                "notificationUrl": receiver.at("/served"),
                "resource": "me/events",
                "expirationDateTime": expires,
                "clientState": "s",
            },
        )
        assert made.status_code == 201, made.text
        event = {
            "subject": "Served",
            "start": {"dateTime": "2026-12-01T10:00:00", "timeZone": "UTC"},
            "end": {"dateTime": "2026-12-01T11:00:00", "timeZone": "UTC"},
        }
        created = client.post("/v1.0/me/events", headers=auth, json=event).json()
        (value,) = wait_for(lambda: receiver.values("/served"))
        assert (value["subscriptionId"], value["resourceData"]["id"]) == (
            made.json()["id"],
            created["id"],
        )
    assert checked.problems == []
