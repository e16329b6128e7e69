"""What the provider contract suite needs from each provider kind.

A harness bundles the provider under test, bound to a fresh calendar, with
out-of-band helpers that act like a person using another client directly on the
same server (so the suite can check that the provider notices). The CalDAV
harness serves Radicale and Xandikos; the Google and Microsoft emulators get
harnesses of their own that satisfy the same protocol and join the same
parametrised suite.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import quote

import caldav

from crmcal.providers.base import Provider
from crmcal.providers.caldav import CalDAVProvider, normalize_href


class Harness(Protocol):
    kind: str  # the parametrised id: "radicale", "xandikos", ...
    provider: Provider
    calendar_id: str

    async def put_raw(self, ics_text: str, *, name: str | None = None) -> str:
        """Store an iCalendar object as another client would; returns the provider's id.

        ``name`` is a hint for the resource name where the server has such a thing.
        """
        ...

    async def read_raw(self, event_id: str) -> str:
        """The stored representation of an event (iCalendar text for CalDAV)."""
        ...

    async def edit(self, event_id: str, mutate: Callable[[str], str]) -> None:
        """Change an event out of band: ``mutate`` maps its iCalendar text to the new one."""
        ...

    async def remove(self, event_id: str) -> None:
        """Delete an event out of band."""
        ...

    async def make_second_calendar(self) -> str:
        """Another calendar of the same account; returns its id."""
        ...

    def unreadable_ics(self) -> str | None:
        """An event the server stores but the provider cannot read (None: no such thing)."""
        ...

    def provider_for(self, url: str) -> Provider:
        """A provider of this kind with the same credentials, aimed at another URL."""
        ...

    def connection_body(self) -> dict[str, Any]:
        """The ``POST /connections`` fields that connect crmcal to this calendar."""
        ...

    async def sends_invitations(self, event_id: str) -> bool:
        """Whether the service would e-mail the event's attendees as it is stored."""
        ...

    def with_wrong_password(self) -> Provider | None:
        """A provider with wrong credentials (None when the server checks none)."""
        ...

    async def close(self) -> None:
        """Close every provider this harness made."""
        ...


class CalDAVServer:
    """A running CalDAV server and the account the tests use on it."""

    def __init__(self, kind: str, url: str, username: str, password: str, *, checks_auth: bool):
        self.kind = kind
        self.url = url
        self.username = username
        self.password = password
        self.checks_auth = checks_auth

    def client(self) -> caldav.DAVClient:
        return caldav.DAVClient(
            url=self.url,
            username=self.username,
            password=self.password,
            auth_type="basic",
            enable_rfc6764=False,
            timeout=10,
        )


class CalDAVHarness:
    """Radicale or Xandikos, driven out of band through the ``caldav`` library."""

    def __init__(self, server: CalDAVServer) -> None:
        self.kind = server.kind
        self.server = server
        self._client = server.client()
        self._principal = self._client.principal()
        self.principal_url = str(self._principal.url)
        self.calendar_id = self._new_calendar("crmcal tests")
        self._providers: list[CalDAVProvider] = []
        self.provider: CalDAVProvider = self._provider(server.url, server.password)

    def _new_calendar(self, name: str) -> str:
        calendar = self._principal.make_calendar(name=name, cal_id=uuid.uuid4().hex)
        return str(calendar.url)

    def _provider(self, url: str, password: str) -> CalDAVProvider:
        provider = CalDAVProvider(url, self.server.username, password, timeout=5)
        self._providers.append(provider)
        return provider

    def _url(self, event_id: str) -> str:
        base = self.calendar_id.split("/", 3)
        return f"{base[0]}//{base[2]}{normalize_href(event_id)}"

    def request(self, method: str, url: str, body: str = "") -> caldav.response.DAVResponse:
        headers = {"Content-Type": "text/calendar; charset=utf-8"} if body else {}
        response = self._client.request(url, method, body, headers)
        assert response.status < 300, f"{method} {url}: {response.status} {response.raw}"
        return response

    async def put_raw(self, ics_text: str, *, name: str | None = None) -> str:
        name = name or f"{uuid.uuid4().hex}.ics"
        url = self.calendar_id + quote(name)
        await asyncio.to_thread(self.request, "PUT", url, ics_text)
        return normalize_href(url)

    async def read_raw(self, event_id: str) -> str:
        response = await asyncio.to_thread(self.request, "GET", self._url(event_id))
        return response.raw

    async def edit(self, event_id: str, mutate: Callable[[str], str]) -> None:
        text = await self.read_raw(event_id)
        await asyncio.to_thread(self.request, "PUT", self._url(event_id), mutate(text))

    async def remove(self, event_id: str) -> None:
        await asyncio.to_thread(self.request, "DELETE", self._url(event_id))

    async def make_second_calendar(self) -> str:
        return await asyncio.to_thread(self._new_calendar, "second calendar")

    def unreadable_ics(self) -> str | None:
        # Both servers store a TZID that no VTIMEZONE defines (Radicale refuses
        # most other broken data); crmcal will not guess what time that is.
        return "\r\n".join(
            [
                "BEGIN:VCALENDAR",
                "VERSION:2.0",
                "PRODID:-//another client//EN",
                "BEGIN:VEVENT",
                f"UID:{uuid.uuid4()}",
                "DTSTAMP:20260101T000000Z",
                "DTSTART;TZID=Mars/Olympus_Mons:20261201T100000",
                "SUMMARY:On Mars",
                "END:VEVENT",
                "END:VCALENDAR",
                "",
            ]
        )

    def provider_for(self, url: str) -> CalDAVProvider:
        return self._provider(url, self.server.password)

    def connection_body(self) -> dict[str, Any]:
        return {
            "provider": "caldav",
            "url": self.server.url,
            "username": self.server.username,
            "password": self.server.password,
            "calendar_id": self.calendar_id,
        }

    async def sends_invitations(self, event_id: str) -> bool:
        # RFC 6638: a scheduling server mails every attendee not marked as
        # scheduled by the client.
        text = (await self.read_raw(event_id)).replace("\r\n ", "").replace("\n ", "")
        attendees = [line for line in text.splitlines() if line.upper().startswith("ATTENDEE")]
        assert attendees, "the event has no attendees"
        return any("SCHEDULE-AGENT=CLIENT" not in line.upper() for line in attendees)

    def with_wrong_password(self) -> CalDAVProvider | None:
        if not self.server.checks_auth:
            return None
        return self._provider(self.server.url, self.server.password + "-wrong")

    async def close(self) -> None:
        for provider in self._providers:
            await provider.close()
        await asyncio.to_thread(self._client.close)
