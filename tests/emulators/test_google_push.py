"""The Google emulator's push deliveries: what is tried again, as Google does, and what not.

A receiving app served on 127.0.0.1 answers each message with the next status a test
scripted (200 once the script is spent) and records what it got.
"""

from __future__ import annotations

import ssl
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from crmcal.emulators.google import GoogleState, create_app
from crmcal.emulators.google.push import DELIVERY_ATTEMPTS
from crmcal.tls import tls
from tests import plain
from tests.emulators.google_client import V3
from tests.served import bound_socket, served_app, wait_for


class Receiver:
    def __init__(self) -> None:
        self.script: list[int] = []
        self.states: list[str] = []
        self._lock = threading.Lock()
        self.app = Starlette(routes=[Route("/hook", self._handle, methods=["POST"])])

    async def _handle(self, request: Request) -> Response:
        with self._lock:  # the test's thread reads and writes these
            self.states.append(request.headers.get("x-goog-resource-state", ""))
            status = self.script.pop(0) if self.script else 200
        return Response(status_code=status)


@pytest.fixture
def emulator() -> Iterator[tuple[str, GoogleState]]:
    state = GoogleState()
    with served_app(create_app(state), shutdown_grace=1) as url:
        yield url, state


def watch(url: str, state: GoogleState, address: str) -> tuple[str, dict[str, str]]:
    """A channel on a new account's calendar (its ``sync`` message goes out): its id, and
    the account's authorization header."""
    tokens = state.create_account(f"push-{uuid.uuid4().hex[:8]}@example.test")
    auth = {"Authorization": f"Bearer {tokens['access_token']}"}
    channel_id = uuid.uuid4().hex
    made = plain.post(
        f"{url}{V3}/calendars/primary/events/watch",
        headers=auth,
        json={"id": channel_id, "type": "web_hook", "address": address, "token": "t"},
        timeout=30,
    )
    assert made.status_code == 200, made.text
    return channel_id, auth


def attempts(state: GoogleState, channel_id: str) -> list[dict[str, Any]]:
    return [d for d in list(state.channels.delivered) if d["channel"] == channel_id]


def test_server_errors_are_tried_again_until_answered(
    emulator: tuple[str, GoogleState],
) -> None:
    url, state = emulator
    receiver = Receiver()
    receiver.script = [503, 500, 502, 504]
    with served_app(receiver.app, shutdown_grace=1) as hook:
        channel_id, _ = watch(url, state, f"{hook}/hook")
        wait_for(lambda: attempts(state, channel_id)[4:])
    assert [a["status"] for a in attempts(state, channel_id)] == [503, 500, 502, 504, 200]
    assert [a["attempt"] for a in attempts(state, channel_id)] == [1, 2, 3, 4, 5]
    assert receiver.states == ["sync"] * 5


def test_an_address_that_cannot_be_reached_yet_gets_the_message_later(
    emulator: tuple[str, GoogleState],
) -> None:
    url, state = emulator
    receiver = Receiver()
    sock = bound_socket()  # bound, not listening: connections are refused
    hook = f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
    channel_id, _ = watch(url, state, hook)
    (refused,) = wait_for(lambda: attempts(state, channel_id))
    assert (refused["status"], refused["error"]) == (None, "ConnectError")
    with served_app(receiver.app, sock, shutdown_grace=1):
        wait_for(lambda: [a for a in attempts(state, channel_id) if a["status"] == 200])
    assert receiver.states == ["sync"]
    assert len(attempts(state, channel_id)) <= DELIVERY_ATTEMPTS


@pytest.mark.parametrize("status", [400, 404, 410])
def test_other_answers_end_the_delivery(emulator: tuple[str, GoogleState], status: int) -> None:
    url, state = emulator
    receiver = Receiver()
    receiver.script = [status]
    with served_app(receiver.app, shutdown_grace=1) as hook:
        channel_id, auth = watch(url, state, f"{hook}/hook")
        wait_for(lambda: attempts(state, channel_id))
        # A change sends the next message, after the refused one (a channel's messages go
        # out in order): had that been tried again, the tries would come in between.
        event = {"summary": "x", "start": {"dateTime": "2030-01-01T10:00:00Z"},
                 "end": {"dateTime": "2030-01-01T11:00:00Z"}}  # fmt: skip
        made = plain.post(f"{url}{V3}/calendars/primary/events", headers=auth, json=event,
                          timeout=30)  # fmt: skip
        assert made.status_code == 200, made.text
        wait_for(lambda: attempts(state, channel_id)[1:])
    assert [(a["status"], a["attempt"]) for a in attempts(state, channel_id)] == [
        (status, 1),
        (200, 1),
    ]
    assert receiver.states == ["sync", "exists"]


def test_deliveries_build_no_tls_context_of_their_own(
    emulator: tuple[str, GoogleState], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each delivery's client takes the process's one TLS context: building one loads
    the CA bundle (about 20 ms of CPU), more than the delivery itself."""
    url, state = emulator
    tls()  # the process's own, built once
    built: list[object] = []  # by the emulator's thread (the test's own requests build some)
    real, test_thread = ssl.create_default_context, threading.current_thread()

    def counted(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        if threading.current_thread() is not test_thread:
            built.append(args or kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(ssl, "create_default_context", counted)
    receiver = Receiver()
    with served_app(receiver.app, shutdown_grace=1) as hook:
        channel_id, _ = watch(url, state, f"{hook}/hook")
        wait_for(lambda: attempts(state, channel_id))
    assert [a["status"] for a in attempts(state, channel_id)] == [200]
    assert built == []
