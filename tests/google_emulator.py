"""A Google Calendar emulator served on a free 127.0.0.1 port, for tests that need a
real socket (crmcal's server calls it over HTTP), and a harness on a fresh account."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from crmcal.emulators.google import GoogleState, create_app
from crmcal.model import ResponseStatus
from crmcal.providers import google_oauth
from crmcal.providers.google import GoogleProvider
from crmcal.tls import tls
from tests.providers.harness import Foreign, Moment
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
    if len(parts) <= 2:  # calendars.insert, get, patch, update
        return "Calendar" if answer or method != "GET" else None
    if parts[-1] == "watch":
        return "Channel"
    if (len(parts) == 3 or parts[-1] == "instances") and method == "GET":
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


def _google_time(moment: Moment) -> dict[str, str]:
    if isinstance(moment, dt.datetime):
        zone = getattr(moment.tzinfo, "key", "UTC")
        return {"dateTime": moment.isoformat(), "timeZone": zone}
    return {"date": moment.isoformat()}


def foreign_json(event: Foreign) -> dict[str, Any]:
    """``event`` as another client sends it to Google (the uid only on an import)."""
    end = event.end
    if end is None:  # Google needs an end
        timed = isinstance(event.start, dt.datetime)
        end = event.start if timed else event.start + dt.timedelta(days=1)
    body: dict[str, Any] = {
        "summary": event.summary,
        "start": _google_time(event.start),
        "end": _google_time(end),
    }
    if event.description is not None:
        body["description"] = event.description
    if event.confidential:
        body["visibility"] = "confidential"
    if event.free:
        body["transparency"] = "transparent"
    if event.attendees or event.rooms:
        answers = {"needs_action": "needsAction"}
        body["attendees"] = [
            {"email": address, "displayName": name, "responseStatus": answers.get(answer, answer)}
            for address, name, answer in event.attendees
        ] + [{"email": address, "displayName": name, "resource": True}
             for address, name in event.rooms]  # fmt: skip
    overrides = [{"method": "popup", "minutes": minutes} for minutes in event.reminders]
    if event.extras:
        overrides.append({"method": "email", "minutes": 1440})
        body["colorId"] = "7"
        body["source"] = {"title": "Review", "url": "https://example.test/review"}
        body["extendedProperties"] = {"shared": {"otherClientColor": "keep-me-please"}}
    if overrides:
        body["reminders"] = {"useDefault": False, "overrides": overrides}
    if event.rrule:
        body["recurrence"] = [f"RRULE:{event.rrule}"]
    if event.uid or event.organizer:
        body["iCalUID"] = event.uid or f"{uuid.uuid4()}@another.client"
    if event.organizer:
        body["organizer"] = {"email": event.organizer[0], "displayName": event.organizer[1]}
    return body


class GoogleHarness:
    """A fresh Google account on the emulator, driven as another client would."""

    kind = "google"
    extra_markers = ("keep-me-please", "https://example.test/review", '"colorId": "7"',
                     '"minutes": 1440')  # fmt: skip
    unsupported = {"cancelled": "a cancelled Google event is a deleted one"}
    attendee_answers_written = True

    def __init__(self, emulator: GoogleEmulator) -> None:
        self.emulator = emulator
        self.email = f"user-{uuid.uuid4().hex[:12]}@example.test"
        tokens = emulator.state.create_account(self.email)
        self.refresh_token = tokens["refresh_token"]
        self._access_token = tokens["access_token"]
        self.calendar_id = self.email
        self._providers: list[GoogleProvider] = []
        self.provider = self._provider(self.refresh_token)
        self._http = httpx.AsyncClient(base_url=emulator.url, timeout=60, verify=tls())

    @classmethod
    async def open(cls, emulator: GoogleEmulator) -> GoogleHarness:
        """A harness whose primary calendar is called "crmcal tests", as the suite expects."""
        harness = cls(emulator)
        await harness.api("PATCH", f"/calendars/{harness.email}", json={"summary": "crmcal tests"})
        return harness

    def _provider(self, refresh_token: str, api_url: str | None = None) -> GoogleProvider:
        tokens = google_oauth.service(self.emulator.url).tokens(refresh_token)
        provider = GoogleProvider(tokens, api_url=api_url or self.emulator.url, backoff=0.01)
        self._providers.append(provider)
        return provider

    async def api(self, method: str, path: str, **kwargs: Any) -> Any:
        """One Calendar API call as the account's other client; its answer's JSON."""
        for _ in range(2):
            headers = {"Authorization": f"Bearer {self._access_token}"}
            response = await self._http.request(
                method, "/calendar/v3" + path, headers=headers, **kwargs
            )
            if response.status_code != 401:
                break
            # Some tests expire every access token; another client would refresh.
            self._access_token = self.emulator.state.issue_access_token(self.email, None)
        assert response.status_code < 300, f"{method} {path}: {response.text}"
        return response.json() if response.content else None

    def _events(self, event_id: str = "") -> str:
        return f"/calendars/{self.calendar_id}/events" + (f"/{event_id}" if event_id else "")

    async def put_foreign(self, event: Foreign) -> str:
        body = foreign_json(event)
        path = self._events("import") if "iCalUID" in body else self._events()
        event_id: str = (await self.api("POST", path, json=body))["id"]
        for original, start, summary in event.moved:
            # The moved occurrences of a timed series keep its length.
            assert isinstance(event.start, dt.datetime)
            assert isinstance(event.end, dt.datetime)
            end = start + (event.end - event.start)
            change = {"summary": summary, "start": _google_time(start),
                      "end": _google_time(end)}  # fmt: skip
            await self.api("PATCH", self._events(_instance_id(event_id, original)), json=change)
        for original in event.cancelled:
            await self.api("DELETE", self._events(_instance_id(event_id, original)))
        return event_id

    async def read_raw(self, event_id: str) -> str:
        event = await self.api("GET", self._events(event_id))
        if not event.get("recurrence"):
            return json.dumps(event)
        # A series is its master and its exceptions, each an event of its own.
        params = {"iCalUID": event["iCalUID"], "showDeleted": "true"}
        return json.dumps((await self.api("GET", self._events(), params=params))["items"])

    async def retitle(self, event_id: str, summary: str) -> None:
        await self.api("PATCH", self._events(event_id), json={"summary": summary})

    async def remove(self, event_id: str) -> None:
        await self.api("DELETE", self._events(event_id))

    async def answer(self, event_id: str, address: str, status: ResponseStatus) -> None:
        event = await self.api("GET", self._events(event_id))
        answer = {"needs_action": "needsAction"}.get(status, status)
        attendees = [
            a | {"responseStatus": answer} if a["email"].lower() == address.lower() else a
            for a in event.get("attendees", [])
        ]
        await self.api("PATCH", self._events(event_id), json={"attendees": attendees})

    async def put_unreadable(self) -> str | None:
        return None  # Google checks what it stores

    async def put_non_event(self) -> str | None:
        body = {
            "eventType": "workingLocation",
            "summary": "Home",
            "start": {"date": "2026-12-02"},
            "end": {"date": "2026-12-03"},
            "visibility": "public",
            "transparency": "transparent",
            "workingLocationProperties": {"type": "homeOffice", "homeOffice": {}},
        }
        return str((await self.api("POST", self._events(), json=body))["id"])

    async def make_second_calendar(self) -> str:
        return str(
            (await self.api("POST", "/calendars", json={"summary": "second calendar"}))["id"]
        )

    def provider_for(self, url: str) -> GoogleProvider:
        return self._provider(self.refresh_token, api_url=url)

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


def _instance_id(series_id: str, original: dt.datetime) -> str:
    """Google's id of a series' occurrence: the series id and the original start in UTC."""
    return f"{series_id}_{original.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}"
