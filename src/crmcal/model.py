"""Provider-neutral calendar types: what the sync engine and every provider agree on.

No I/O and nothing about the CRM's tables or any wire format lives here. A
provider turns its own format into these types; ``sync/`` maps them to and from
CRM activities.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from operator import attrgetter
from typing import Any, Literal, TypeVar, cast

ResponseStatus = Literal["needs_action", "accepted", "declined", "tentative"]
T = TypeVar("T")
RESPONSE_STATUSES = frozenset(("needs_action", "accepted", "declined", "tentative"))


@dataclass(frozen=True)
class Attendee:
    email: str
    name: str | None = None
    status: ResponseStatus = "needs_action"
    # Rooms and other resources are attendees in calendars, never CRM contacts.
    resource: bool = False


@dataclass(frozen=True)
class Recurrence:
    """A series rule, for the recurring-series support that builds on this shape."""

    rrule: str
    exdates: tuple[dt.datetime | dt.date, ...] = ()
    rdates: tuple[dt.datetime | dt.date, ...] = ()


@dataclass(frozen=True)
class CalendarEvent:
    """One calendar event: a single event, a series master, or one occurrence of a
    series that changed on its own (an override).

    Timed events have aware ``start``/``end`` datetimes and the IANA ``timezone``
    they were written in; all-day events have dates and an exclusive ``end``.

    A series travels as one unit: its master (``recurrence`` set) carries its
    ``overrides``, the occurrences that differ from what the rule makes — each a
    whole event of its own with ``recurrence_id`` = the occurrence's original
    start (in the master's kind of moment: a date for all-day series), and
    ``cancelled=True`` for one that was cancelled. A cancelled occurrence may
    equally be an EXDATE of ``recurrence``: both spellings digest alike. Every
    provider reads and writes a series' overrides with its master (create,
    update, fetch and list), and an update writes exactly the overrides given.
    """

    summary: str | None
    start: dt.datetime | dt.date
    end: dt.datetime | dt.date | None
    all_day: bool = False
    timezone: str | None = None
    location: str | None = None
    description: str | None = None
    private: bool = False
    busy: bool = True
    reminder_minutes: int | None = None
    attendees: tuple[Attendee, ...] = ()
    organizer: str | None = None
    # The CRM's id of the activity this event mirrors, carried inside the event
    # (iCalendar X- property, Google/Graph extended property) so any crmcal
    # connection to this calendar can recognise it.
    crm_id: str | None = None
    crm_type: str | None = None
    cancelled: bool = False
    recurrence: Recurrence | None = None
    # Set on a changed or cancelled occurrence of a series.
    recurrence_id: dt.datetime | dt.date | None = None
    last_modified: dt.datetime | None = None
    # The event's own identity in its calendar (iCalendar UID, Google iCalUID).
    uid: str | None = None
    # A write-time wish, not content: let the provider e-mail invitations to the
    # attendees (F10). Off, a provider that can write attendees silently does so.
    notify_attendees: bool = False
    # Read: the times are wall-clock times of no zone (iCalendar "floating" times,
    # or a TZID nothing explains); ``timezone`` is None then unless the calendar
    # names the zone they are read in, and the CRM reads them in its user's zone.
    floating: bool = False
    # Read: someone else organises this meeting and the calendar's user was invited
    # (None: the service does not say, and the reader compares ``organizer`` with
    # the user's own addresses).
    invitation: bool | None = None
    # A series master's occurrences that changed on their own or were cancelled
    # (see the class' docstring); empty for every other event.
    overrides: tuple[CalendarEvent, ...] = ()
    # Read: the service shows this user only some of the guests (the organizer hides
    # them from each other): ``attendees`` are those shown, and one not shown is not
    # one removed.
    attendees_partial: bool = False

    @property
    def recurring(self) -> bool:
        return self.recurrence is not None or self.recurrence_id is not None

    @property
    def changed_occurrences(self) -> int:
        """How many occurrences of this series changed on their own (not cancelled)."""
        return sum(1 for o in self.overrides if not o.cancelled)

    def cancelled_moments(self) -> tuple[dt.datetime | dt.date, ...]:
        """The original starts of the occurrences left out: EXDATEs and cancelled
        overrides alike."""
        found = list(self.recurrence.exdates) if self.recurrence is not None else []
        found += [o.recurrence_id for o in self.overrides if o.cancelled and o.recurrence_id]
        return tuple(dict.fromkeys(found))

    def live_overrides(self) -> dict[str, CalendarEvent]:
        """The occurrences changed on their own (not cancelled), by ``moment_key`` of
        their original start."""
        return {
            moment_key(o.recurrence_id): o
            for o in self.overrides
            if not o.cancelled and o.recurrence_id is not None
        }

    def leaving_out(self, moments: Sequence[dt.datetime | dt.date]) -> CalendarEvent:
        """The series without the occurrences at ``moments`` (among its EXDATEs)."""
        if self.recurrence is None or not moments:
            return self
        exdates = tuple(dict.fromkeys([*self.recurrence.exdates, *moments]))
        return replace(self, recurrence=replace(self.recurrence, exdates=exdates))

    def content_hash(self) -> str:
        """A digest of the fields that sync both ways; equal digests mean nothing to do."""
        return self.memo("content_hash", content_hash)

    def memo(self, name: str, compute: Callable[[CalendarEvent], T]) -> T:
        """``compute(self)``, computed once per event: the event is frozen, so what is
        derived from it stays true. The values travel with the event when it is
        pickled (an event parsed in ``parse_pool``'s processes brings its digests);
        ``replace`` makes a new event without them."""
        memo: dict[str, Any] = self.__dict__.setdefault("_memo", {})
        if name not in memo:
            memo[name] = compute(self)
        return cast("T", memo[name])

    def memoized(self, name: str) -> object | None:
        """What ``memo`` keeps under ``name``, if it was computed (else None)."""
        memo: dict[str, Any] = self.__dict__.get("_memo", {})
        return memo.get(name)


# What an update may write, field by field: the names a provider's ``update`` takes
# in ``changed`` (the first eight are sync/merge.py's fields). Times go together (a
# start means nothing without its end and zone), and so do the attendees and the
# organizer.
FIELD_GROUPS: dict[str, tuple[str, ...]] = {
    "summary": ("summary",),
    "when": ("start", "end", "all_day"),
    "location": ("location",),
    "description": ("description",),
    "private": ("private",),
    "busy": ("busy",),
    "reminder": ("reminder_minutes",),
    "attendees": ("attendees",),
    "recurrence": ("recurrence", "recurrence_id"),
    "cancelled": ("cancelled",),
    # A series' occurrences changed on their own, as one group: an update that
    # names it writes exactly the overrides given (cancelled ones count under
    # "recurrence", with the EXDATEs they are equal to).
    "overrides": ("overrides",),
}
ALL_FIELDS = frozenset(FIELD_GROUPS)


def moment_key(moment: dt.datetime | dt.date) -> str:
    """One spelling of an occurrence's original start, to match overrides by."""
    if isinstance(moment, dt.datetime):
        return moment.astimezone(dt.UTC).isoformat()
    return moment.isoformat()


def field_digests(event: CalendarEvent) -> dict[str, str]:
    """A digest per field group, in the same canonical forms as ``content_hash``."""
    subset = _subset(event)
    found = {}
    for group, names in FIELD_GROUPS.items():
        raw = _GROUP_JSON([subset.get(n) for n in names])
        found[group] = hashlib.sha256(raw.encode()).hexdigest()[:16]
    return found


# The "overrides" digest of an event without any: digests stored before the group
# existed lack it, and mean this.
NO_OVERRIDES = hashlib.sha256(b"[null]").hexdigest()[:16]


def changed_groups(before: dict[str, str], after: dict[str, str]) -> frozenset[str]:
    """The groups whose digest moved from ``before`` to ``after`` (``field_digests``
    outputs; a stored one may predate the "overrides" group)."""
    old = {"overrides": NO_OVERRIDES, **before}
    new = {"overrides": NO_OVERRIDES, **after}
    return frozenset(group for group in FIELD_GROUPS if old.get(group) != new.get(group))


def changed_fields(before: CalendarEvent | None, after: CalendarEvent) -> frozenset[str]:
    """The field groups in which ``after`` differs from ``before`` (all without one)."""
    if before is None:
        return ALL_FIELDS
    return changed_groups(field_digests(before), field_digests(after))


def with_fields(
    base: CalendarEvent, source: CalendarEvent, groups: frozenset[str]
) -> CalendarEvent:
    """``base`` with the field groups ``groups`` (and the CRM ids) taken from ``source``:
    what a write of only those fields leaves in a calendar."""
    names = {name for group in groups for name in FIELD_GROUPS.get(group, ())}
    if "when" in groups:
        names |= {"timezone", "floating"}
    if "attendees" in groups:
        names.add("organizer")
    values = {name: getattr(source, name) for name in names}
    values.update({k: getattr(source, k) for k in ("crm_id", "crm_type") if getattr(source, k)})
    return replace(base, **values)


def _moment_text(value: dt.datetime | dt.date) -> str:
    """What _canonical makes of a moment: the UTC instant, or the date."""
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat()
    return value.isoformat()


def _canonical(value: object) -> object:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    return value


# Fields that describe what the event says, as opposed to bookkeeping
# (who last touched it, which CRM record it belongs to): plain values, moments,
# and the attendees and recurrence, which have canonical forms of their own.
_PLAIN_FIELDS = (
    "summary", "all_day", "location", "description", "private", "busy", "reminder_minutes",
    "cancelled",
)  # fmt: skip
_MOMENT_FIELDS = ("start", "end", "recurrence_id")


# The parts of an RRULE in the order RFC 5545 (3.3.10) lists them.
_RRULE_ORDER = (
    "FREQ", "UNTIL", "COUNT", "INTERVAL", "BYSECOND", "BYMINUTE", "BYHOUR", "BYDAY",
    "BYMONTHDAY", "BYYEARDAY", "BYWEEKNO", "BYMONTH", "BYSETPOS", "WKST",
)  # fmt: skip


def canonical_rrule(rule: str) -> str:
    """One spelling per recurrence rule: upper case, parts in RFC order, defaults dropped.

    Servers store rules in their own spelling (Xandikos turns
    ``FREQ=WEEKLY;BYDAY=TU;COUNT=10`` into ``FREQ=WEEKLY;COUNT=10;BYDAY=TU``); that
    is no edit.
    """
    text = rule.strip().upper().removeprefix("RRULE:")
    parts = {p.split("=", 1)[0].strip(): p.strip() for p in text.split(";") if p.strip()}
    if parts.get("INTERVAL") == "INTERVAL=1":
        del parts["INTERVAL"]
    if parts.get("WKST") == "WKST=MO":
        del parts["WKST"]
    rank = {name: i for i, name in enumerate(_RRULE_ORDER)}
    names = sorted(parts, key=lambda name: (rank.get(name, len(rank)), name))
    return ";".join(parts[name] for name in names)


def digest_json(separators: tuple[str, str]) -> Callable[[object], str]:
    """``json.JSONEncoder(sort_keys=True, separators=separators, default=str).encode``
    for the acyclic values digests encode, the same text, made cheaper: that method
    makes its C encoder anew at every call (with a dict to catch cycles), half of
    what encoding a digest's few values costs; this one is made once."""
    item, key = separators
    made = c_make_encoder and c_make_encoder(
        None, str, encode_basestring_ascii, None, key, item, True, False, True
    )
    if not made:  # a Python without the C encoder
        return json.JSONEncoder(sort_keys=True, separators=separators, default=str).encode

    def encode(value: object) -> str:
        return "".join(made(value, 0))

    return encode


# Encoders made once: json.dumps with options makes a new one per call, which
# weighed on digesting thousands of events.
_JSON = digest_json((",", ":"))
_GROUP_JSON = digest_json((", ", ": "))


def same_value(one: object, other: object) -> bool:
    """Equal values of the same type: whatever is derived from them is equal (a bool
    and an int may be equal, not their JSON)."""
    return type(one) is type(other) and one == other


def same_values(read: Callable[[CalendarEvent], tuple[object, ...]]) -> SameValues:
    """A test of whether two events hold the same values (``same_value``) in the
    attributes ``read`` (an ``operator.attrgetter`` of several) answers."""

    def same(one: CalendarEvent, other: CalendarEvent) -> bool:
        mine, theirs = read(one), read(other)
        return mine == theirs and list(map(type, mine)) == list(map(type, theirs))

    return same


SameValues = Callable[[CalendarEvent, CalendarEvent], bool]
# What ``content_hash`` reads of an event.
_same_hashed = same_values(
    attrgetter(*_PLAIN_FIELDS, *_MOMENT_FIELDS, "attendees", "recurrence", "overrides")
)


def same_content(event: CalendarEvent, known: CalendarEvent) -> bool:
    """Whether both events hold the very same values (``same_value``) in every field
    ``content_hash`` reads, which are all that any digest of an event reads."""
    return _same_hashed(event, known)


def content_hash_beside(event: CalendarEvent, known: CalendarEvent) -> str:
    """``event.content_hash()``, taken from ``known`` when both hold the very same
    values in every field it reads."""
    return known.content_hash() if _same_hashed(event, known) else event.content_hash()


def content_hash(event: CalendarEvent) -> str:
    raw = _JSON(_subset(event))
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def _subset(event: CalendarEvent) -> dict[str, object]:
    # Read field by field: dataclasses.asdict deep-copies, which dominated
    # the cost of digesting thousands of events. An event's time zone matters
    # only through its instants (all-day dates are zone-free anyway).
    subset: dict[str, object] = {name: getattr(event, name) for name in _PLAIN_FIELDS}
    for name in _MOMENT_FIELDS:
        subset[name] = _canonical(getattr(event, name))
    subset["attendees"] = sorted((a.email.lower(), a.name or "", a.status) for a in event.attendees)
    subset["recurrence"] = None
    if event.recurrence is not None:
        # The spelling of a rule and the order of its dates say nothing, nor whether
        # an occurrence is left out by EXDATE or by a cancelled override.
        exdates = event.recurrence.exdates
        if any(o.cancelled for o in event.overrides):
            exdates = event.cancelled_moments()
        subset["recurrence"] = {
            "rrule": canonical_rrule(event.recurrence.rrule),
            "exdates": sorted(map(_moment_text, exdates)),
            "rdates": sorted(map(_moment_text, event.recurrence.rdates)),
        }
    live = [o for o in event.overrides if not o.cancelled]
    if live:
        # Only when there are some: the digests of every other event stay as they were.
        subset["overrides"] = sorted(content_hash(o) for o in live)
    return subset


@dataclass(frozen=True)
class CalendarInfo:
    id: str
    name: str
    writable: bool
    primary: bool = False
    timezone: str | None = None
    # False: a calendar that can hold no events (a CalDAV task list), listed only so
    # that a connection naming it is refused with the reason; never synced or shown.
    events: bool = True


@dataclass(frozen=True)
class RemoteRef:
    """An event as a change listing names it: its id, its version, maybe its content."""

    id: str
    etag: str
    event: CalendarEvent | None = None
    # Why the content could not be read, when it could not (the item is then
    # skipped and reported, never treated as deleted).
    error: str | None = None
    # The failure may pass (the server left the item out of its answer, or answered
    # it with an error status): the item is read again next run, whatever its version.
    # Without it, an item that failed is not read again until its version moves.
    retry: bool = False
    # What was read by a guess (a time zone nobody names ...): the item syncs, and
    # this is reported.
    warning: str | None = None


@dataclass
class ChangeListing:
    """What changed in a calendar since a cursor.

    ``full`` listings name every event there is, so an id missing from one is
    gone — unless the listing is not ``complete`` (a service that lists only a
    window of time): then only an event that can no longer be read is gone.
    Incremental listings name changed items and deleted ids only. A deleted id also
    in ``unconfirmed`` may still exist (a windowed listing names events that left
    the window as removed too): only what a read no longer finds is gone.
    """

    full: bool
    changed: list[RemoteRef] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    cursor: str | None = None
    complete: bool = True
    unconfirmed: set[str] = field(default_factory=set)
