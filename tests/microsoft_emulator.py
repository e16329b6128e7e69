"""A Microsoft Graph emulator served on a free 127.0.0.1 port, every answer checked with
msgraph-sdk's models, and a harness on a fresh mailbox for the provider contract suite."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from crmcal.emulators.microsoft import MicrosoftState, create_app
from crmcal.model import ResponseStatus
from crmcal.providers import microsoft_oauth
from crmcal.providers.microsoft import MicrosoftProvider
from crmcal.tls import tls
from tests import plain
from tests.emulators.graph_models import GraphChecked
from tests.providers.harness import Foreign, Moment
from tests.served import served_app

_ANSWERS = {"needs_action": "none", "tentative": "tentativelyAccepted"}
_DAYS = {"MO": "monday", "TU": "tuesday", "WE": "wednesday", "TH": "thursday", "FR": "friday",
         "SA": "saturday", "SU": "sunday"}  # fmt: skip


class MicrosoftEmulator:
    def __init__(self, url: str, state: MicrosoftState, problems: list[str]) -> None:
        self.url = url
        self.state = state
        # Answers msgraph-sdk's models would not read back unchanged, as "METHOD path: why".
        self.model_problems = problems


def patient(url: str) -> str:
    """The emulator at ``url`` made to wait for crmcal's webhook as long as it allows
    rather than Graph's 10 s (a subscription's validation) and 3 s (a notification):
    on a machine busy with other tests a slow answer would lose a subscription or a
    notification that a test awaits. Every emulator a test serves needs this."""
    settings = {"validation_timeout": 60, "notification_timeout": 60}
    assert plain.post(f"{url}/_emulator/settings", json=settings, timeout=30).is_success
    return url


@pytest.fixture(scope="session")
def microsoft_emulator() -> Iterator[MicrosoftEmulator]:
    state = MicrosoftState()
    problems: list[str] = []
    with served_app(GraphChecked(create_app(state), problems)) as url:
        yield MicrosoftEmulator(patient(url).rstrip("/"), state, problems)


@pytest.fixture(autouse=True)
def _graph_answers_match_the_sdk_models(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test that used the emulator got only answers Graph's models read unchanged."""
    if "microsoft_emulator" not in request.fixturenames:
        yield
        return
    emulator: MicrosoftEmulator = request.getfixturevalue("microsoft_emulator")
    before = len(emulator.model_problems)
    yield
    found = emulator.model_problems[before:]
    assert not found, "answers Graph's models do not read back:\n" + "\n".join(found[:10])


def graph_time(moment: Moment) -> dict[str, str]:
    if isinstance(moment, dt.datetime):
        zone = getattr(moment.tzinfo, "key", "UTC")
        return {"dateTime": moment.replace(tzinfo=None).isoformat(), "timeZone": zone}
    return {"dateTime": f"{moment.isoformat()}T00:00:00", "timeZone": "UTC"}


def _pattern(rule: str, start: Moment) -> dict[str, Any]:
    parts = dict(p.split("=", 1) for p in rule.split(";"))
    first = start.date() if isinstance(start, dt.datetime) else start
    assert parts["FREQ"] == "WEEKLY", "the harness writes weekly series only"
    days = [_DAYS[d] for d in parts.get("BYDAY", "").split(",") if d] or [
        list(_DAYS.values())[first.weekday()]
    ]
    span: dict[str, Any] = {"type": "noEnd", "startDate": first.isoformat()}
    if "COUNT" in parts:
        span = {**span, "type": "numbered", "numberOfOccurrences": int(parts["COUNT"])}
    return {"pattern": {"type": "weekly", "interval": 1, "daysOfWeek": days}, "range": span}


def foreign_json(event: Foreign) -> dict[str, Any]:
    """``event`` as another client (Outlook) writes it to Graph."""
    end = event.end
    if end is None:  # Graph needs an end
        timed = isinstance(event.start, dt.datetime)
        end = event.start if timed else event.start + dt.timedelta(days=1)
    body: dict[str, Any] = {
        "subject": event.summary,
        "start": graph_time(event.start),
        "end": graph_time(end),
        "isAllDay": not isinstance(event.start, dt.datetime),
    }
    if event.description is not None:
        body["body"] = {"contentType": "text", "content": event.description}
    if event.confidential:
        body["sensitivity"] = "confidential"
    if event.free:
        body["showAs"] = "free"
    if event.attendees or event.rooms:
        body["attendees"] = [
            {"emailAddress": {"address": address, "name": name}, "type": "required",
             "status": {"response": _ANSWERS.get(answer, answer)}}
            for address, name, answer in event.attendees
        ] + [{"emailAddress": {"address": address, "name": name}, "type": "resource"}
             for address, name in event.rooms]  # fmt: skip
    if event.reminders:
        body |= {"isReminderOn": True, "reminderMinutesBeforeStart": event.reminders[0]}
    else:
        body["isReminderOn"] = False
    if event.extras:
        body |= {"categories": ["Sales", "VIP"], "importance": "high"}
    if event.rrule:
        body["recurrence"] = _pattern(event.rrule, event.start)
    return body


class MicrosoftHarness:
    """A fresh mailbox on the Graph emulator, driven as Outlook would."""

    kind = "microsoft"
    extra_markers = ("Sales", "VIP", '"importance": "high"')
    unsupported = {
        "cancelled": "a cancelled Outlook event is a deleted one (isCancelled is read-only)",
        "weekly-series": "a series' left-out dates are written with the recurring-series work",
    }
    attendee_answers_written = False

    def __init__(self, emulator: MicrosoftEmulator) -> None:
        self.emulator = emulator
        self.email = f"user-{uuid.uuid4().hex[:12]}@example.test"
        tokens = emulator.state.create_account(self.email)
        self.refresh_token = tokens["refresh_token"]
        self._access_token = tokens["access_token"]
        self.calendar_id = ""
        self._providers: list[MicrosoftProvider] = []
        self.provider = self._provider(self.refresh_token)
        self._http = httpx.AsyncClient(base_url=emulator.url, timeout=60, verify=tls())

    @classmethod
    async def open(cls, emulator: MicrosoftEmulator) -> MicrosoftHarness:
        """A harness whose default calendar is called "crmcal tests", as the suite expects."""
        harness = cls(emulator)
        calendar = await harness.api("GET", "/me/calendar")
        harness.calendar_id = calendar["id"]
        await harness.api("PATCH", f"/me/calendars/{calendar['id']}", json={"name": "crmcal tests"})
        return harness

    def _provider(self, refresh_token: str, api_url: str | None = None) -> MicrosoftProvider:
        tokens = microsoft_oauth.service(self.emulator.url).tokens(refresh_token)
        provider = MicrosoftProvider(tokens, api_url=api_url or self.emulator.url, backoff=0.01)
        self._providers.append(provider)
        return provider

    async def api(self, method: str, path: str, **kwargs: Any) -> Any:
        """One Graph call as the mailbox's other client; its answer's JSON."""
        headers = {"Prefer": 'IdType="ImmutableId"', **kwargs.pop("headers", {})}
        for _ in range(2):
            headers["Authorization"] = f"Bearer {self._access_token}"
            response = await self._http.request(method, "/v1.0" + path, headers=headers, **kwargs)
            if response.status_code != 401:
                break
            # Some tests expire every access token; another client would refresh.
            self._access_token = self.emulator.state.create_account(self.email)["access_token"]
        assert response.status_code < 300, f"{method} {path}: {response.text}"
        return response.json() if response.content else None

    def _events(self, event_id: str = "") -> str:
        return f"/me/calendars/{self.calendar_id}/events" + (f"/{event_id}" if event_id else "")

    async def invite(
        self,
        event: dict[str, Any],
        organizer: tuple[str, str] = ("boss@elsewhere.test", "The Boss"),
        uid: str | None = None,
    ) -> str:
        """``event`` (Graph's JSON) put in the mailbox as an invitation from
        ``organizer``, as Exchange delivers one; its id."""
        answer = await self._http.post("/_emulator/invitations", json={
            "email": self.email, "calendar_id": self.calendar_id, "event": event,
            "organizer": {"address": organizer[0], "name": organizer[1]}, "uid": uid,
        })  # fmt: skip
        assert answer.status_code == 200, answer.text
        return str(answer.json()["id"])

    async def put_foreign(self, event: Foreign) -> str:
        body = foreign_json(event)
        if event.organizer or event.uid:
            # Only an invitation carries someone else's organizer and UID.
            organizer = event.organizer or ("someone@elsewhere.test", "Someone")
            event_id = await self.invite(body, organizer, event.uid)
        else:
            event_id = str((await self.api("POST", self._events(), json=body))["id"])
        if event.moved or event.cancelled:
            await self._change_occurrences(event_id, event)
        return event_id

    async def _change_occurrences(self, series_id: str, event: Foreign) -> None:
        window = {"startDateTime": "2026-01-01T00:00:00Z", "endDateTime": "2027-12-31T00:00:00Z"}
        found = await self.api("GET", f"/me/events/{series_id}/instances", params=window)
        by_start = {
            dt.datetime.fromisoformat(o["originalStart"].replace("Z", "+00:00")): o["id"]
            for o in found["value"]
        }
        for original, start, summary in event.moved:
            # The moved occurrences of a timed series keep its length.
            assert isinstance(event.start, dt.datetime)
            assert isinstance(event.end, dt.datetime)
            end = start + (event.end - event.start)
            change = {"subject": summary, "start": graph_time(start), "end": graph_time(end)}
            await self.api("PATCH", f"/me/events/{by_start[original]}", json=change)
        for original in event.cancelled:
            await self.api("DELETE", f"/me/events/{by_start[original]}")

    async def read_raw(self, event_id: str) -> str:
        event = await self.api("GET", f"/me/events/{event_id}")
        if event.get("type") != "seriesMaster":
            return json.dumps(event)
        window = {"startDateTime": "2026-01-01T00:00:00Z", "endDateTime": "2027-12-31T00:00:00Z"}
        found = await self.api("GET", f"/me/events/{event_id}/instances", params=window)
        return json.dumps([event, *found["value"]])

    async def retitle(self, event_id: str, summary: str) -> None:
        await self.api("PATCH", f"/me/events/{event_id}", json={"subject": summary})

    async def remove(self, event_id: str) -> None:
        await self.api("DELETE", f"/me/events/{event_id}")

    async def answer(self, event_id: str, address: str, status: ResponseStatus) -> None:
        # The emulator keeps an answer a client writes, standing in for the attendee's
        # own reply (Graph takes answers only from the attendees themselves).
        event = await self.api("GET", f"/me/events/{event_id}")
        response = _ANSWERS.get(status, status)
        attendees = [
            a | {"status": {"response": response}}
            if a["emailAddress"]["address"].lower() == address.lower()
            else a
            for a in event.get("attendees", [])
        ]
        await self.api("PATCH", f"/me/events/{event_id}", json={"attendees": attendees})

    async def put_unreadable(self) -> str | None:
        return None  # Graph checks what it stores

    async def put_non_event(self) -> str | None:
        return None  # an Outlook calendar holds events only

    async def make_second_calendar(self) -> str:
        made = await self.api("POST", "/me/calendars", json={"name": "second calendar"})
        return str(made["id"])

    def provider_for(self, url: str) -> MicrosoftProvider:
        return self._provider(self.refresh_token, api_url=url)

    def connection_body(self) -> dict[str, Any]:
        return {"provider": "microsoft", "refresh_token": self.refresh_token,
                "calendar_id": self.calendar_id}  # fmt: skip

    async def sends_invitations(self, event_id: str) -> bool:
        mails = (await self._http.get("/_emulator/mail")).json()
        return any(mail["event_id"] == event_id for mail in mails)

    def with_wrong_password(self) -> MicrosoftProvider:
        return self._provider("revoked-or-never-issued")

    async def close(self) -> None:
        for provider in self._providers:
            await provider.close()
        await self._http.aclose()
