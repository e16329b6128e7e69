"""A Google Calendar emulator served on a free 127.0.0.1 port, for tests that need a
real socket (crmcal's server calls it over HTTP), and a harness on a fresh account."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from crmcal.emulators.google import GoogleState, create_app
from crmcal.providers.google import GoogleProvider
from crmcal.providers.google_oauth import RefreshingTokens
from tests.served import served_app


class GoogleEmulator:
    def __init__(self, url: str, state: GoogleState) -> None:
        self.url = url
        self.state = state
        # Bodies that did not match Google's discovery document, as "METHOD path: why".
        self.schema_problems: list[str] = []


def _schema_of(method: str, path: str, answer: bool) -> str | None:
    """The discovery schema of a Calendar v3 request (or answer) body, if it has one."""
    parts = path.removeprefix("/calendar/v3/").split("/")
    if parts[:3] == ["users", "me", "calendarList"]:
        return ("CalendarList" if len(parts) == 3 else "CalendarListEntry") if answer else None
    if parts[0] == "channels":
        return None
    if parts[0] != "calendars":
        return None
    if len(parts) == 2:
        return "Calendar" if answer else None
    if parts[-1] == "watch":
        return "Channel"
    if len(parts) == 3 and method == "GET":
        return "Events" if answer else None
    if method in ("POST", "PUT", "PATCH", "GET"):
        return "Event"
    return None


def _without_nulls(value: Any) -> Any:
    # A PATCH clears a field with null, which the discovery schemas cannot say.
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    return [_without_nulls(v) for v in value] if isinstance(value, list) else value


class SchemaChecked:
    """ASGI wrapper: every Calendar v3 body in and out is checked against the schemas
    made from Google's discovery document; what does not match is recorded."""

    def __init__(self, app: Any, problems: list[str]) -> None:
        self.app = app
        self.problems = problems

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/calendar/v3/"):
            await self.app(scope, receive, send)
            return
        from tests.emulators.google_schema import validator

        method, path = scope["method"], scope["path"]
        messages, body = [], b""
        while True:
            message = await receive()
            messages.append(message)
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self._check(method, path, body, answer=False, validator=validator)

        async def replay() -> Any:
            return messages.pop(0) if messages else await receive()

        status, answer = 0, b""

        async def capture(message: Any) -> None:
            nonlocal status, answer
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                answer += message.get("body", b"")
            await send(message)

        await self.app(scope, replay, capture)
        if status == 200:
            self._check(method, path, answer, answer=True, validator=validator)

    def _check(self, method: str, path: str, raw: bytes, *, answer: bool, validator: Any) -> None:
        schema = _schema_of(method, path, answer)
        if schema is None or not raw:
            return
        try:
            body = json.loads(raw)
        except ValueError:
            return  # not JSON: the emulator's own parse error answers it
        if method == "PATCH" and not answer:
            body = _without_nulls(body)
        for problem in validator(schema).iter_errors(body):
            side = "answer" if answer else "request"
            self.problems.append(f"{method} {path} {side}: {list(problem.path)}: {problem.message}")


@pytest.fixture(scope="session")
def google_emulator() -> Iterator[GoogleEmulator]:
    state = GoogleState()
    problems: list[str] = []
    with served_app(SchemaChecked(create_app(state), problems)) as url:
        emulator = GoogleEmulator(url, state)
        emulator.schema_problems = problems
        yield emulator


@pytest.fixture(autouse=True)
def _google_bodies_match_the_discovery_document(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test that used the emulator sent and got only bodies Google defines."""
    if "google_emulator" not in request.fixturenames:
        yield
        return
    emulator: GoogleEmulator = request.getfixturevalue("google_emulator")
    before = len(emulator.schema_problems)
    yield
    found = emulator.schema_problems[before:]
    assert not found, "bodies Google would not accept or send:\n" + "\n".join(found[:10])


class GoogleHarness:
    """A fresh Google account on the emulator, driven as another client would."""

    kind = "google"

    def __init__(self, emulator: GoogleEmulator) -> None:
        self.emulator = emulator
        self.email = f"user-{uuid.uuid4().hex[:12]}@example.test"
        tokens = emulator.state.create_account(self.email)
        self.refresh_token = tokens["refresh_token"]
        self.calendar_id = self.email
        self._providers: list[GoogleProvider] = []
        self.provider = self._provider(self.refresh_token)
        self._http = httpx.AsyncClient(base_url=emulator.url)

    def _provider(self, refresh_token: str) -> GoogleProvider:
        tokens = RefreshingTokens(refresh_token, oauth_url=self.emulator.url)
        provider = GoogleProvider(tokens, api_url=self.emulator.url, backoff=0.01)
        self._providers.append(provider)
        return provider

    def connection_body(self) -> dict[str, Any]:
        return {"provider": "google", "refresh_token": self.refresh_token,
                "calendar_id": self.calendar_id}  # fmt: skip

    async def sends_invitations(self, event_id: str) -> bool:
        mails = (await self._http.get("/_emulator/mail")).json()
        return any(mail["event_id"] == event_id for mail in mails)

    def with_wrong_password(self) -> GoogleProvider:
        return self._provider("revoked-or-never-issued")

    async def close(self) -> None:
        for provider in self._providers:
            await provider.close()
        await self._http.aclose()
