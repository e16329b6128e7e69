"""An in-memory calendar behind the Provider interface, for engine tests.

It behaves like a careful server: versions (etags) change on every write,
every write stamps a last-modified time (to the second, as iCalendar has it),
preconditions are enforced, a change log gives incremental listings, cursors
can be expired on demand, creates can be batched, and "a person using another
client" can edit it directly. Faults can be injected: a crash at any provider
call, and full listings that come back short (``hidden`` ids left out, or only
the first ``listing_limit`` items), as a server or proxy that drops items does.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import Any, ClassVar

from crmcal.model import (
    Attendee,
    CalendarEvent,
    CalendarInfo,
    ChangeListing,
    Recurrence,
    RemoteRef,
    with_fields,
)
from crmcal.providers.base import (
    CalendarNotFound,
    Capabilities,
    EventNotFound,
    PreconditionFailed,
    ProviderError,
    SeriesInCalendar,
    Unreachable,
)


class Crash(Exception):
    """Raised by an injected fault: the process 'dies' at this call."""


class MemoryCalendar:
    """One calendar: each event as the provider-neutral shape (a series with its
    overrides inside its master, as every provider hands them over)."""

    def __init__(self, name: str = "Calendar") -> None:
        self.name = name
        self.events: dict[str, tuple[str, CalendarEvent]] = {}
        # What other clients store that crmcal does not read, kept across its writes
        # as a careful server keeps unknown properties.
        self.extras: dict[str, str] = {}
        self.unreadable: dict[str, str] = {}  # id -> etag of items no one can parse
        self.non_events: set[str] = set()  # tasks and the like: never listed
        self.log: list[tuple[int, str]] = []  # (position, event id)
        self._versions = itertools.count(1)
        self._position = 0
        self.expired_before = 0  # cursors older than this are refused

    def _touch(self, event_id: str) -> None:
        self._position += 1
        self.log.append((self._position, event_id))

    def put(self, event_id: str, event: CalendarEvent) -> str:
        """Store the event, stamped with the time of the write; a last-modified time set
        on purpose (not the one the event was read with) is kept instead."""
        etag = f'"{next(self._versions)}"'
        previous = self.events.get(event_id)
        modified = event.last_modified
        if modified is None or (previous is not None and previous[1].last_modified == modified):
            modified = dt.datetime.now(dt.UTC).replace(microsecond=0)
        self.events[event_id] = (
            etag,
            dataclasses.replace(event, uid=event.uid or event_id, last_modified=modified),
        )
        self._touch(event_id)
        return etag

    def remove(self, event_id: str) -> None:
        self.events.pop(event_id, None)
        self._touch(event_id)

    def expire_cursors(self) -> None:
        """Refuse every cursor handed out so far (the next listing gives a fresh one)."""
        self._position += 1
        self.expired_before = self._position


class MemoryProvider:
    capabilities: ClassVar[Capabilities] = Capabilities(batch_creates=True)

    def __init__(
        self,
        calendar: MemoryCalendar | None = None,
        *,
        account: dict[str, MemoryCalendar] | None = None,
    ) -> None:
        # The account's calendars by id; the first is the primary one.
        self.account = account if account is not None else {"cal": calendar or MemoryCalendar()}
        self.cal = next(iter(self.account.values()))
        self.calls = 0
        self.crash_at: int | None = None  # the call number that "crashes"
        self.unreachable = False
        self.hidden: set[str] = set()  # left out of full listings
        self.listing_limit: int | None = None  # full listings cut after so many items

    def _call(self) -> None:
        if self.unreachable:
            raise Unreachable("connection refused")
        self.calls += 1
        if self.crash_at is not None and self.calls == self.crash_at:
            raise Crash(f"crash at provider call {self.calls}")

    async def discover(self) -> None:
        self._call()

    def _calendar(self, calendar_id: str) -> MemoryCalendar:
        found = self.account.get(calendar_id)
        if found is None:
            raise CalendarNotFound(f"no calendar {calendar_id!r}")
        return found

    async def list_calendars(self) -> list[CalendarInfo]:
        self._call()
        return [
            CalendarInfo(id=i, name=c.name, writable=True, primary=n == 0)
            for n, (i, c) in enumerate(self.account.items())
        ]

    async def list_changes(
        self, calendar_id: str, cursor: str | None, *, with_contents: bool = False
    ) -> ChangeListing:
        self._call()
        cal = self._calendar(calendar_id)
        position = int(cursor) if cursor and cursor.isdigit() else None
        head = str(cal._position)
        if position is None or position < cal.expired_before:
            # Like a server that can list contents cheaply, when asked to.
            refs = [
                RemoteRef(id=i, etag=e, event=event if with_contents else None)
                for i, (e, event) in cal.events.items()
                if i not in self.hidden
            ]
            refs += [self._unreadable(cal, i) if with_contents else RemoteRef(id=i, etag=e)
                     for i, e in cal.unreadable.items()]  # fmt: skip
            return ChangeListing(full=True, changed=refs[: self.listing_limit], cursor=head)
        touched = dict.fromkeys(i for p, i in cal.log if p > position)
        changed = [RemoteRef(id=i, etag=cal.events[i][0]) for i in touched if i in cal.events]
        deleted = [i for i in touched if i not in cal.events]
        return ChangeListing(full=False, changed=changed, deleted=deleted, cursor=head)

    @staticmethod
    def _unreadable(cal: MemoryCalendar, event_id: str) -> RemoteRef:
        return RemoteRef(id=event_id, etag=cal.unreadable[event_id],
                         error="the event cannot be read")  # fmt: skip

    async def fetch(self, calendar_id: str, ids: Sequence[str]) -> list[RemoteRef]:
        self._call()
        cal = self._calendar(calendar_id)
        found = []
        for event_id in ids:
            if event_id in cal.events:
                etag, event = cal.events[event_id]
                found.append(RemoteRef(id=event_id, etag=etag, event=event))
            elif event_id in cal.unreadable:
                found.append(self._unreadable(cal, event_id))
        return found

    @staticmethod
    def id_for(key: str) -> str:
        return f"crmcal-{key}"

    async def get_by_key(self, calendar_id: str, key: str) -> RemoteRef | None:
        found = await self.fetch(calendar_id, [self.id_for(key)])
        return found[0] if found else None

    async def create(self, calendar_id: str, key: str, event: CalendarEvent) -> RemoteRef:
        self._call()
        cal = self._calendar(calendar_id)
        event_id = self.id_for(key)
        if event_id in cal.events:
            raise PreconditionFailed(f"{event_id} exists")
        event = dataclasses.replace(event, uid=event_id)
        etag = cal.put(event_id, event)
        return RemoteRef(id=event_id, etag=etag, event=cal.events[event_id][1])

    async def create_many(
        self, calendar_id: str, items: Sequence[tuple[str, CalendarEvent]]
    ) -> list[RemoteRef | ProviderError]:
        """Creates in one "batch request": one call, each item answering on its own."""
        self._call()
        cal = self._calendar(calendar_id)
        results: list[RemoteRef | ProviderError] = []
        for key, event in items:
            event_id = self.id_for(key)
            if event_id in cal.events:
                results.append(PreconditionFailed(f"{event_id} exists"))
                continue
            cal.put(event_id, dataclasses.replace(event, uid=event_id))
            etag, stored = cal.events[event_id]
            results.append(RemoteRef(id=event_id, etag=etag, event=stored))
        return results

    async def update(
        self,
        calendar_id: str,
        event_id: str,
        etag: str,
        event: CalendarEvent,
        *,
        changed: frozenset[str] | None = None,
    ) -> RemoteRef:
        self._call()
        cal = self._calendar(calendar_id)
        if event_id not in cal.events:
            raise EventNotFound(event_id)
        current_etag, current = cal.events[event_id]
        if current_etag != etag:
            raise PreconditionFailed(f"{event_id} is at {current_etag}, not {etag}")
        if current.recurrence is not None and event.recurrence is None:
            raise SeriesInCalendar(f"{event_id} is a series")
        if changed is not None:
            event = with_fields(current, event, changed)
        event = dataclasses.replace(event, uid=current.uid, last_modified=None)
        new_etag = cal.put(event_id, event)
        return RemoteRef(id=event_id, etag=new_etag, event=cal.events[event_id][1])

    async def delete(self, calendar_id: str, event_id: str, etag: str | None) -> None:
        self._call()
        cal = self._calendar(calendar_id)
        if event_id not in cal.events:
            return
        if etag is not None and cal.events[event_id][0] != etag:
            raise PreconditionFailed(f"{event_id} changed")
        cal.remove(event_id)

    async def close(self) -> None:
        pass


class PartsProvider(MemoryProvider):
    """The in-memory calendar as a kind that syncs series and delivers a first
    import's listing in parts of ``part_size`` events (``lists_in_parts``), as CalDAV
    does. ``before_part`` is awaited before each part is handed over, with the part's
    number (from 0). Its whole listing with contents is never asked for: the engine
    reads a first import in parts."""

    capabilities: ClassVar[Capabilities] = Capabilities(
        batch_creates=True, syncs_series=True, lists_in_parts=True
    )

    def __init__(self, calendar: MemoryCalendar, *, part_size: int) -> None:
        super().__init__(calendar)
        self.part_size = part_size
        self.before_part: Callable[[int], Awaitable[None]] | None = None
        self.parts = 0  # parts handed over

    async def list_changes(
        self, calendar_id: str, cursor: str | None, *, with_contents: bool = False
    ) -> ChangeListing:
        assert cursor or not with_contents, "a first import is read in parts"
        return await super().list_changes(calendar_id, cursor, with_contents=with_contents)

    async def list_changes_in_parts(
        self, calendar_id: str, cursor: str | None, *, with_contents: bool = False
    ) -> AsyncGenerator[ChangeListing, None]:
        whole = await super().list_changes(calendar_id, cursor, with_contents=with_contents)
        for number, start in enumerate(range(0, max(len(whole.changed), 1), self.part_size)):
            if self.before_part is not None:
                await self.before_part(number)
            self.parts += 1
            yield ChangeListing(
                full=whole.full,
                changed=whole.changed[start : start + self.part_size],
                deleted=whole.deleted if number == 0 else [],
                cursor=whole.cursor,
            )


class MemoryHarness:
    """The in-memory calendar in the provider contract suite (``tests/providers``): the
    engine's model-based test relies on it behaving as real providers do."""

    kind = "memory"
    extra_markers = ("X-OTHER-CLIENT:kept",)
    unsupported: dict[str, str] = {}
    attendee_answers_written = True

    def __init__(self) -> None:
        self.primary = MemoryCalendar("crmcal tests")
        self.account = {"primary": self.primary}
        self.calendar_id = "primary"
        self.provider = MemoryProvider(account=self.account)

    async def put_foreign(self, foreign: Any) -> str:
        """The event as another client writes it (an all-day event without an end
        lasts its day; moved occurrences are kept as that client's own data)."""
        event_id = foreign.name or f"foreign-{uuid.uuid4().hex}"
        start, end = foreign.start, foreign.end
        all_day = not isinstance(start, dt.datetime)
        if all_day and end is None:
            end = start + dt.timedelta(days=1)
        recurrence = None
        overrides: tuple[CalendarEvent, ...] = ()
        if foreign.rrule:
            recurrence = Recurrence(foreign.rrule, exdates=tuple(foreign.cancelled))
            length = end - start if end is not None else dt.timedelta(0)
            overrides = tuple(
                CalendarEvent(summary=summary, start=new, end=new + length,
                              timezone=getattr(new.tzinfo, "key", None), recurrence_id=old)
                for old, new, summary in foreign.moved
            )  # fmt: skip
        attendees = tuple(Attendee(a, n or None, s) for a, n, s in foreign.attendees) + tuple(
            Attendee(a, n or None, resource=True) for a, n in foreign.rooms
        )
        event = CalendarEvent(
            summary=foreign.summary,
            start=start,
            end=end,
            all_day=all_day,
            timezone=None if all_day else getattr(start.tzinfo, "key", None),
            private=foreign.confidential,
            busy=not foreign.free,
            reminder_minutes=foreign.reminders[0] if foreign.reminders else None,
            attendees=attendees,
            organizer=foreign.organizer[0] if foreign.organizer else None,
            uid=foreign.uid or event_id,
            recurrence=recurrence,
            overrides=overrides,
        )
        self.primary.put(event_id, event)
        extras = []
        if foreign.extras:
            extras.append("X-OTHER-CLIENT:kept")
        if extras:
            self.primary.extras[event_id] = "\n".join(extras)
        return str(event_id)

    async def read_raw(self, event_id: str) -> str:
        _, event = self.primary.events[event_id]
        return f"{event!r}\n{self.primary.extras.get(event_id, '')}"

    async def retitle(self, event_id: str, summary: str) -> None:
        _, event = self.primary.events[event_id]
        self.primary.put(event_id, dataclasses.replace(event, summary=summary))

    async def remove(self, event_id: str) -> None:
        self.primary.remove(event_id)

    async def answer(self, event_id: str, address: str, status: Any) -> None:
        _, event = self.primary.events[event_id]
        attendees = tuple(
            dataclasses.replace(a, status=status) if a.email.lower() == address.lower() else a
            for a in event.attendees
        )
        self.primary.put(event_id, dataclasses.replace(event, attendees=attendees))

    async def put_unreadable(self) -> str | None:
        event_id = f"unreadable-{uuid.uuid4().hex}"
        self.primary.unreadable[event_id] = '"broken"'
        return event_id

    async def put_non_event(self) -> str | None:
        event_id = f"task-{uuid.uuid4().hex}"
        self.primary.non_events.add(event_id)
        return event_id

    async def make_second_calendar(self) -> str:
        self.account["second"] = MemoryCalendar("second calendar")
        return "second"

    def provider_for(self, url: str) -> MemoryProvider:
        raise NotImplementedError("the memory calendar is reached by no URL")

    def connection_body(self) -> dict[str, Any]:
        raise NotImplementedError("the REST API connects to real calendars only")

    async def sends_invitations(self, event_id: str) -> bool:
        return False

    def with_wrong_password(self) -> None:
        return None

    async def close(self) -> None:
        pass
