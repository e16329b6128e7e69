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
import dataclasses
import datetime as dt
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote
from zoneinfo import ZoneInfo

from caldav.davclient import DAVClient
from caldav.response import DAVResponse

from crmcal.model import CalendarEvent, ChangeListing, RemoteRef, ResponseStatus
from crmcal.providers.base import Provider
from crmcal.providers.caldav import CalDAVProvider, normalize_href

BERLIN = ZoneInfo("Europe/Berlin")
Moment = dt.datetime | dt.date


@dataclass(frozen=True)
class Foreign:
    """An event as a person makes it in another client, in words every provider can spell.

    Each harness writes it in its own wire format, by hand, so the provider under
    test reads something it did not write itself.
    """

    summary: str = "Made elsewhere"
    start: Moment = dt.datetime(2026, 12, 2, 9, tzinfo=BERLIN)
    end: Moment | None = dt.datetime(2026, 12, 2, 10, tzinfo=BERLIN)
    uid: str | None = None
    confidential: bool = False
    free: bool = False
    organizer: tuple[str, str] | None = None  # (address, name)
    attendees: tuple[tuple[str, str, ResponseStatus], ...] = ()  # (address, name, answer)
    rooms: tuple[tuple[str, str], ...] = ()  # (address, name) of booked resources
    reminders: tuple[int, ...] = ()  # minutes before the start, in the client's order
    # What only other clients use (categories, a link, a colour, a second reminder):
    # crmcal's writes must leave it; ``Harness.extra_markers`` is how it reads back.
    extras: bool = False
    rrule: str | None = None
    # Changed occurrences of a series: (original start, new start, new summary).
    moved: tuple[tuple[dt.datetime, dt.datetime, str], ...] = ()
    cancelled: tuple[dt.datetime, ...] = ()  # cancelled occurrences of a series
    name: str | None = None  # a resource name, where the server has such a thing
    description: str | None = None  # plain text, as the person typed it


def occurrence_of(master: CalendarEvent, moment: Moment, **changes: Any) -> CalendarEvent:
    """The occurrence of series ``master`` at ``moment`` (its original start) as an
    exception of its own, changed by ``changes``: what a client puts among the
    master's ``overrides`` when one occurrence is edited."""
    return dataclasses.replace(
        master, overrides=(), recurrence=None, recurrence_id=moment, uid=None, **changes
    )


def cancelled_occurrence(master: CalendarEvent, moment: Moment) -> CalendarEvent:
    """The occurrence of series ``master`` at ``moment``, cancelled."""
    return occurrence_of(master, moment, cancelled=True)


# --- what the tests of every provider share -------------------------------------------


def meeting(**fields: Any) -> CalendarEvent:
    base = CalendarEvent(
        summary="Demo with ACME",
        start=dt.datetime(2026, 12, 1, 10, tzinfo=BERLIN),
        end=dt.datetime(2026, 12, 1, 11, tzinfo=BERLIN),
        timezone="Europe/Berlin",
        location="Room 4",
        description="Agenda:\n- pricing, next steps; owners",
        crm_id="activity-1",
        crm_type="meeting",
    )
    return dataclasses.replace(base, **fields)


def key() -> str:
    return uuid.uuid4().hex


async def fetch_one(harness: Harness, event_id: str) -> RemoteRef:
    refs = await harness.provider.fetch(harness.calendar_id, [event_id])
    assert len(refs) == 1, refs
    return refs[0]


async def listed(harness: Harness, cursor: str | None = None) -> ChangeListing:
    return await harness.provider.list_changes(harness.calendar_id, cursor)


class Harness(Protocol):
    kind: str  # the parametrised id: "radicale", "xandikos", ...
    calendar_id: str

    # Read-only, so that each harness may name its own provider class and markers.
    @property
    def provider(self) -> Provider: ...

    @property
    def extra_markers(self) -> tuple[str, ...]:
        """Strings found in ``read_raw`` of a ``Foreign(extras=True)`` event."""
        ...

    # Contract cases (``test_contract.EVENTS``) the service cannot hold, with why.
    unsupported: dict[str, str]
    # Whether a client may write attendees' answers (else only attendees answer).
    attendee_answers_written: bool

    async def put_foreign(self, event: Foreign) -> str:
        """Store an event as another client would; returns the provider's id."""
        ...

    async def read_raw(self, event_id: str) -> str:
        """The stored representation of an event (iCalendar text, Google's JSON ...)."""
        ...

    async def retitle(self, event_id: str, summary: str) -> None:
        """Change an event's title out of band."""
        ...

    async def remove(self, event_id: str) -> None:
        """Delete an event out of band."""
        ...

    async def answer(self, event_id: str, address: str, status: ResponseStatus) -> None:
        """An attendee's answer to an event arrives (as the service records it)."""
        ...

    async def put_unreadable(self) -> str | None:
        """Store an event the provider cannot read (None: the service stores no such thing)."""
        ...

    async def put_non_event(self) -> str | None:
        """Store an item that is no event for crmcal (a task, a working location ...)."""
        ...

    async def make_second_calendar(self) -> str:
        """Another calendar of the same account, named "second calendar"; returns its id."""
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

    def client(self) -> DAVClient:
        return DAVClient(
            url=self.url,
            username=self.username,
            password=self.password,
            auth_type="basic",
            enable_rfc6764=False,
            timeout=30,
        )


def _ics_moment(name: str, value: Moment) -> str:
    if isinstance(value, dt.datetime):
        zone = getattr(value.tzinfo, "key", None)
        if zone is None:
            return f"{name}:{value.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}"
        return f"{name};TZID={zone}:{value:%Y%m%dT%H%M%S}"
    return f"{name};VALUE=DATE:{value:%Y%m%d}"


def _ics_text(name: str, value: str) -> str:
    """A TEXT property escaped (RFC 5545 3.3.11) and folded at 75 octets (3.1), as a
    careful client writes it: a line break is ``\\n``, and a fold never splits a
    character's octets, so a multi-byte character at the limit starts the next line."""
    escaped = (value.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,")
               .replace("\r\n", "\\n").replace("\n", "\\n"))  # fmt: skip
    lines, line, size = [], f"{name}:", len(name) + 1
    for char in escaped:
        octets = len(char.encode())
        if size + octets > 75:
            lines.append(line)
            line, size = " ", 1
        line += char
        size += octets
    return "\r\n".join([*lines, line])


def _vevent(uid: str, *props: str) -> list[str]:
    return ["BEGIN:VEVENT", f"UID:{uid}", "DTSTAMP:20260101T000000Z", *props, "END:VEVENT"]


def _vcalendar(*components: list[str]) -> str:
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//another client//EN"]
    for component in components:
        lines += component
    return "\r\n".join([*lines, "END:VCALENDAR", ""])


def raw_event(uid: str, *props: str) -> str:
    """A calendar object of one event with ``props``, as another client writes it."""
    return _vcalendar(_vevent(uid, *props))


# iCalendar text as clients in the field write it, for the tests that store it as it is.
LOCAL = "%Y%m%dT%H%M%S"
STAMP = "20261101T080000Z"
BERLIN_VTIMEZONE = """BEGIN:VTIMEZONE
TZID:{tzid}
BEGIN:DAYLIGHT
TZNAME:CEST
DTSTART:19700329T020000
TZOFFSETFROM:+0100
TZOFFSETTO:+0200
RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU
END:DAYLIGHT
BEGIN:STANDARD
TZNAME:CET
DTSTART:19701025T030000
TZOFFSETFROM:+0200
TZOFFSETTO:+0100
RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU
END:STANDARD
END:VTIMEZONE
"""


def calendar_text(*parts: str, prodid: str = "-//Field//Audit//EN") -> str:
    body = "".join(parts)
    text = f"BEGIN:VCALENDAR\nVERSION:2.0\nPRODID:{prodid}\n{body}END:VCALENDAR\n"
    return text.replace("\n", "\r\n")


def timed(uid: str, summary: str, tzid: str | None, start: dt.datetime, *extra: str,
          hours: int = 1) -> str:  # fmt: skip
    """A timed VEVENT in ``tzid`` (None: floating)."""
    zone = f";TZID={tzid}" if tzid is not None else ""
    end = start + dt.timedelta(hours=hours)
    lines = [f"UID:{uid}", f"DTSTAMP:{STAMP}", f"SUMMARY:{summary}",
             f"DTSTART{zone}:{start:{LOCAL}}", f"DTEND{zone}:{end:{LOCAL}}", *extra]  # fmt: skip
    return "BEGIN:VEVENT\n" + "\n".join(lines) + "\nEND:VEVENT\n"


def foreign_ics(event: Foreign) -> str:
    """``event`` in iCalendar, as another CalDAV client writes it."""
    uid = event.uid or str(uuid.uuid4())
    props = [f"SUMMARY:{event.summary}", _ics_moment("DTSTART", event.start)]
    if event.end is not None:
        props.append(_ics_moment("DTEND", event.end))
    if event.confidential:
        props.append("CLASS:CONFIDENTIAL")
    if event.free:
        props.append("TRANSP:TRANSPARENT")
    if event.organizer:
        props.append(f'ORGANIZER;CN="{event.organizer[1]}":mailto:{event.organizer[0]}')
    for address, name, answer in event.attendees:
        partstat = answer.upper().replace("_", "-")
        props.append(f"ATTENDEE;PARTSTAT={partstat};CN={name}:mailto:{address}")
    for address, name in event.rooms:
        props.append(f"ATTENDEE;CUTYPE=ROOM;CN={name}:mailto:{address}")
    if event.rrule:
        props.append(f"RRULE:{event.rrule}")
    if event.description is not None:
        props.append(_ics_text("DESCRIPTION", event.description))
    if event.extras:
        props += ["CATEGORIES:Sales,VIP", "URL:https://example.test/review",
                  "X-OTHER-CLIENT-COLOR:keep-me-please"]  # fmt: skip
    reminders = [*event.reminders, *((1440,) if event.extras else ())]
    for n, minutes in enumerate(reminders):
        label = "second-alarm-stays" if n else event.summary
        props += ["BEGIN:VALARM", "ACTION:DISPLAY", f"DESCRIPTION:{label}",
                  f"TRIGGER:-PT{minutes}M", "END:VALARM"]  # fmt: skip
    overrides = []
    duration = (event.end - event.start) if event.end is not None else dt.timedelta()
    for original, start, summary in event.moved:
        overrides.append(_vevent(uid, _ics_moment("RECURRENCE-ID", original),
                                 f"SUMMARY:{summary}", _ics_moment("DTSTART", start),
                                 _ics_moment("DTEND", start + duration)))  # fmt: skip
    for original in event.cancelled:
        overrides.append(_vevent(uid, _ics_moment("RECURRENCE-ID", original),
                                 "STATUS:CANCELLED", _ics_moment("DTSTART", original)))  # fmt: skip
    return _vcalendar(_vevent(uid, *props), *overrides)


class CalDAVHarness:
    """Radicale or Xandikos, driven out of band through the ``caldav`` library."""

    extra_markers = ("Sales", "VIP", "https://example.test/review", "keep-me-please",
                     "second-alarm-stays")  # fmt: skip
    unsupported: dict[str, str] = {}
    attendee_answers_written = True

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
        provider = CalDAVProvider(
            url, self.server.username, password, timeout=30, allow_private=True
        )
        self._providers.append(provider)
        return provider

    def _url(self, event_id: str) -> str:
        base = self.calendar_id.split("/", 3)
        return f"{base[0]}//{base[2]}{normalize_href(event_id)}"

    def request(self, method: str, url: str, body: str = "") -> DAVResponse:
        headers = {"Content-Type": "text/calendar; charset=utf-8"} if body else {}
        response = self._client.request(url, method, body, headers)
        assert response.status < 300, f"{method} {url}: {response.status} {response.raw}"
        return response

    async def put_raw(self, ics_text: str, *, name: str | None = None) -> str:
        name = name or f"{uuid.uuid4().hex}.ics"
        url = self.calendar_id + quote(name)
        await asyncio.to_thread(self.request, "PUT", url, ics_text)
        return normalize_href(url)

    async def put_foreign(self, event: Foreign) -> str:
        return await self.put_raw(foreign_ics(event), name=event.name)

    async def read_raw(self, event_id: str) -> str:
        response = await asyncio.to_thread(self.request, "GET", self._url(event_id))
        return response.raw

    async def edit(self, event_id: str, mutate: Callable[[str], str]) -> None:
        """Change an event out of band: ``mutate`` maps its iCalendar text to the new one."""
        text = await self.read_raw(event_id)
        await asyncio.to_thread(self.request, "PUT", self._url(event_id), mutate(text))

    async def answer(self, event_id: str, address: str, status: ResponseStatus) -> None:
        partstat = status.upper().replace("_", "-")

        def answered(text: str) -> str:
            lines = text.replace("\r\n ", "").splitlines()
            return (
                "\r\n".join(
                    re.sub(r"PARTSTAT=[^;:]+", f"PARTSTAT={partstat}", line)
                    if line.upper().startswith("ATTENDEE")
                    and line.lower().endswith(address.lower())
                    else line
                    for line in lines
                )
                + "\r\n"
            )

        await self.edit(event_id, answered)

    async def retitle(self, event_id: str, summary: str) -> None:
        def retitled(text: str) -> str:
            lines = text.replace("\r\n ", "").splitlines()
            return (
                "\r\n".join(
                    f"SUMMARY:{summary}" if line.startswith("SUMMARY") else line for line in lines
                )
                + "\r\n"
            )

        await self.edit(event_id, retitled)

    async def remove(self, event_id: str) -> None:
        await asyncio.to_thread(self.request, "DELETE", self._url(event_id))

    async def make_second_calendar(self) -> str:
        return await asyncio.to_thread(self._new_calendar, "second calendar")

    async def put_unreadable(self) -> str | None:
        if self.kind == "radicale":
            return None  # it refuses what crmcal cannot read, and rewrites the rest
        return await self.put_raw(self.unreadable_ics())

    async def put_non_event(self) -> str | None:
        todo = _vcalendar(_vevent(str(uuid.uuid4()), "SUMMARY:a task"))
        return await self.put_raw(todo.replace("VEVENT", "VTODO"))

    def unreadable_ics(self) -> str:
        # Two events of one UID, neither an occurrence of the other: Xandikos stores
        # it, and crmcal will not guess which one is meant. (A time zone nobody
        # defines is read as floating time, and reported, since it costs nothing.)
        uid = str(uuid.uuid4())
        return _vcalendar(
            _vevent(uid, "DTSTART:20261201T100000Z", "SUMMARY:One"),
            _vevent(uid, "DTSTART:20261202T100000Z", "SUMMARY:Or the other"),
        )

    def provider_for(self, url: str) -> CalDAVProvider:
        return self._provider(url, self.server.password)

    async def set_addresses(self, addresses: list[str]) -> bool:
        """Set the principal's ``calendar-user-address-set`` (RFC 6638 2.4.1); none
        removes it. False where the server does not let clients set it (Radicale
        answers the principal's path, always)."""
        inner = "".join(f"<D:href>{a}</D:href>" for a in addresses)
        change = (
            f"<D:set><D:prop><C:calendar-user-address-set>{inner}</C:calendar-user-address-set>"
            "</D:prop></D:set>"
            if addresses
            else "<D:remove><D:prop><C:calendar-user-address-set/></D:prop></D:remove>"
        )
        body = (
            '<?xml version="1.0" encoding="utf-8"?><D:propertyupdate xmlns:D="DAV:" '
            f'xmlns:C="urn:ietf:params:xml:ns:caldav">{change}</D:propertyupdate>'
        )
        response = await asyncio.to_thread(
            self._client.request, self.principal_url, "PROPPATCH", body,
            {"Content-Type": "application/xml; charset=utf-8"},
        )  # fmt: skip
        if response.status != 207 or not addresses:
            return False
        # Radicale stores it, and answers the principal's path all the same.
        propfind = (
            '<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:" '
            'xmlns:C="urn:ietf:params:xml:ns:caldav"><D:prop><C:calendar-user-address-set/>'
            "</D:prop></D:propfind>"
        )
        answer = await asyncio.to_thread(
            self._client.request, self.principal_url, "PROPFIND", propfind,
            {"Content-Type": "application/xml; charset=utf-8", "Depth": "0"},
        )  # fmt: skip
        return all(a in str(answer.raw) for a in addresses)

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
