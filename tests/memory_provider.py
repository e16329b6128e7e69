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
from collections.abc import Sequence

from crmcal.model import CalendarEvent, CalendarInfo, ChangeListing, RemoteRef
from crmcal.providers.base import (
    Capabilities,
    EventNotFound,
    PreconditionFailed,
    ProviderError,
    Unreachable,
)


class Crash(Exception):
    """Raised by an injected fault: the process 'dies' at this call."""


class MemoryCalendar:
    def __init__(self) -> None:
        self.events: dict[str, tuple[str, CalendarEvent]] = {}
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
        self.expired_before = self._position + 1


class MemoryProvider:
    capabilities = Capabilities(batch_creates=True)

    def __init__(self, calendar: MemoryCalendar | None = None) -> None:
        self.cal = calendar or MemoryCalendar()
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

    async def list_calendars(self) -> list[CalendarInfo]:
        self._call()
        return [CalendarInfo(id="cal", name="Calendar", writable=True, primary=True)]

    async def list_changes(
        self, calendar_id: str, cursor: str | None, *, with_contents: bool = False
    ) -> ChangeListing:
        self._call()
        position = int(cursor) if cursor and cursor.isdigit() else None
        head = str(self.cal._position)
        if position is None or position < self.cal.expired_before:
            # Like a server that can list contents cheaply, when asked to.
            refs = [
                RemoteRef(id=i, etag=e, event=event if with_contents else None)
                for i, (e, event) in self.cal.events.items()
                if i not in self.hidden
            ]
            return ChangeListing(full=True, changed=refs[: self.listing_limit], cursor=head)
        touched = dict.fromkeys(i for p, i in self.cal.log if p > position)
        changed = [
            RemoteRef(id=i, etag=self.cal.events[i][0]) for i in touched if i in self.cal.events
        ]
        deleted = [i for i in touched if i not in self.cal.events]
        return ChangeListing(full=False, changed=changed, deleted=deleted, cursor=head)

    async def fetch(self, calendar_id: str, ids: Sequence[str]) -> list[RemoteRef]:
        self._call()
        found = []
        for event_id in ids:
            if event_id in self.cal.events:
                etag, event = self.cal.events[event_id]
                found.append(RemoteRef(id=event_id, etag=etag, event=event))
        return found

    @staticmethod
    def id_for(key: str) -> str:
        return f"crmcal-{key}"

    async def get_by_key(self, calendar_id: str, key: str) -> RemoteRef | None:
        found = await self.fetch(calendar_id, [self.id_for(key)])
        return found[0] if found else None

    async def create(self, calendar_id: str, key: str, event: CalendarEvent) -> RemoteRef:
        self._call()
        event_id = self.id_for(key)
        if event_id in self.cal.events:
            raise PreconditionFailed(f"{event_id} exists")
        event = dataclasses.replace(event, uid=event_id)
        etag = self.cal.put(event_id, event)
        return RemoteRef(id=event_id, etag=etag, event=self.cal.events[event_id][1])

    async def create_many(
        self, calendar_id: str, items: Sequence[tuple[str, CalendarEvent]]
    ) -> list[RemoteRef | ProviderError]:
        """Creates in one "batch request": one call, each item answering on its own."""
        self._call()
        results: list[RemoteRef | ProviderError] = []
        for key, event in items:
            event_id = self.id_for(key)
            if event_id in self.cal.events:
                results.append(PreconditionFailed(f"{event_id} exists"))
                continue
            self.cal.put(event_id, dataclasses.replace(event, uid=event_id))
            etag, stored = self.cal.events[event_id]
            results.append(RemoteRef(id=event_id, etag=etag, event=stored))
        return results

    async def update(
        self, calendar_id: str, event_id: str, etag: str, event: CalendarEvent
    ) -> RemoteRef:
        self._call()
        if event_id not in self.cal.events:
            raise EventNotFound(event_id)
        current_etag, current = self.cal.events[event_id]
        if current_etag != etag:
            raise PreconditionFailed(f"{event_id} is at {current_etag}, not {etag}")
        event = dataclasses.replace(event, uid=current.uid)
        new_etag = self.cal.put(event_id, event)
        return RemoteRef(id=event_id, etag=new_etag, event=self.cal.events[event_id][1])

    async def delete(self, calendar_id: str, event_id: str, etag: str | None) -> None:
        self._call()
        if event_id not in self.cal.events:
            return
        if etag is not None and self.cal.events[event_id][0] != etag:
            raise PreconditionFailed(f"{event_id} changed")
        self.cal.remove(event_id)

    async def close(self) -> None:
        pass
