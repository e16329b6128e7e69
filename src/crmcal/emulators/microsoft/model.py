"""The Graph emulator's records: mailboxes, calendars, stored events and views of them.

``Item`` is what a calendar stores: an event (single or series master) under its
immutable id, or an exception or cancelled occurrence of a series under
``"{series key}/{original start}"``. Deleted items stay as tombstones so their
ids can still be reported as removed. ``Entry`` is one event as a listing sees
it (an occurrence of a series is an entry, never an item); answers are rendered
from entries.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Item:
    key: str
    calendar_id: str
    body: dict[str, Any]
    props: dict[str, str]
    serial: int
    position: int  # the mailbox's change-log position of the last change
    regular_id: str
    immutable_id: str
    master: str | None = None  # the series' key, for exceptions and cancelled occurrences
    stamp: str | None = None  # the original start, for the same
    deleted: bool = False


@dataclass
class Calendar:
    id: str
    name: str
    owner: str
    can_edit: bool
    is_default: bool
    change_key: str
    color: str = "auto"
    hex_color: str = ""
    items: dict[str, Item] = field(default_factory=dict)


@dataclass
class Change:
    """One entry of a mailbox's change log, as handed to listeners."""

    position: int
    mailbox: str  # the address
    calendar_id: str
    event_id: str  # the immutable id (of the series, for an occurrence)
    regular_id: str
    change_type: str  # "created" | "updated" | "deleted"
    event: dict[str, Any]  # the stored properties after the change (before, for deletions)


ChangeListener = Callable[[Change], None]


@dataclass
class Mailbox:
    email: str
    display_name: str
    user_id: str
    client_id: str | None
    calendars: dict[str, Calendar] = field(default_factory=dict)
    # Every current event id (regular and immutable) -> (calendar id, item key).
    ids: dict[str, tuple[str, str]] = field(default_factory=dict)
    # transactionId -> the immutable id of the event it created.
    transactions: dict[str, str] = field(default_factory=dict)
    position: int = 0
    changes: list[Change] = field(default_factory=list)
    # Tokens with a lower serial are revoked (revokeSignInSessions), since this moment.
    revoked_before: int = 0
    tokens_valid_from: dt.datetime | None = None

    @property
    def default_calendar(self) -> Calendar:
        return next(c for c in self.calendars.values() if c.is_default)


@dataclass
class Entry:
    """One event as a listing shows it."""

    key: str  # unique within the calendar's view: an item key, or "{series}/{stamp}"
    kind: str  # singleInstance | seriesMaster | occurrence | exception
    body: dict[str, Any]
    props: dict[str, str]
    regular_id: str
    immutable_id: str
    calendar_id: str
    start: dt.datetime  # UTC instants
    end: dt.datetime
    version: int  # change-log position that last changed what the entry shows
    master_ids: tuple[str, str] | None = None  # (regular, immutable) of the series
    original: dt.datetime | None = None
    cancelled_days: list[str] = field(default_factory=list)  # of a series, as dates
