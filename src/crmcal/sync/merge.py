"""Field-level merge: when both sides changed an item, keep every change that does not
collide, and let the conflict policy decide only the fields changed on both sides.

Pure, like ``decisions``. The link table keeps, per side, a digest of each synced
field as it was at the last sync (``digests``); a side changed a field iff its
digest moved. The fields (and the event attributes each covers):

* ``summary``; ``when`` (start, end, all-day: they move together); ``location``;
  ``description``; ``private``; ``busy``; ``reminder``; ``attendees``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from operator import attrgetter

from crmcal.model import FIELD_GROUPS, CalendarEvent, digest_json, same_value, same_values
from crmcal.sync import info_block

# Field -> the CalendarEvent attributes it covers: the groups an update writes that
# a person edits one by one (a series' rule and a cancellation are decided apart).
MERGED = ("summary", "when", "location", "description", "private", "busy", "reminder", "attendees")
FIELDS: dict[str, tuple[str, ...]] = {name: FIELD_GROUPS[name] for name in MERGED}

Digests = dict[str, str]
# Every attribute the digests read.
_same_merged = same_values(attrgetter(*{a: 0 for names in FIELDS.values() for a in names}))
NOTE = "note"


def _canonical(value: object) -> object:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, tuple):
        # Attendees: their order and the case of addresses say nothing.
        return sorted((a.email.lower(), a.name or "", a.status) for a in value)
    return value


# One encoder for every digest: json.dumps with options makes a new one per call.
_JSON = digest_json((",", ":"))


def _digest(values: list[object]) -> str:
    raw = _JSON(values)
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def digests(event: CalendarEvent) -> Digests:
    """A short digest of each field of the event, and of its ``note``: the description
    without the CRM's deal-and-contact block (which a person does not type).

    Computed once per event (an event parsed in ``parse_pool``'s processes comes
    with them); a new dict each call."""
    return dict(event.memo("merge.digests", _digests))


def digests_beside(event: CalendarEvent, known: CalendarEvent) -> Digests:
    """``digests(event)``, taking ``known``'s digest of each field in which both hold the
    very same values (of the same types: then their canonical forms are equal too).
    The CRM's side of an event just imported is mostly the calendar's: its digests
    are then not computed again."""
    theirs = digests(known)
    if known is event or _same_merged(event, known):
        return theirs
    out: Digests = {}
    for name, attributes in FIELDS.items():
        if all(same_value(getattr(event, a), getattr(known, a)) for a in attributes):
            out[name] = theirs[name]
        else:
            out[name] = _digest([_canonical(getattr(event, a)) for a in attributes])
    if same_value(event.description, known.description):
        out[NOTE] = theirs[NOTE]
    else:
        out[NOTE] = _digest([info_block.without_block(event.description)])
    return out


# The digests of a field of one attribute by its value, for the values a calendar
# repeats in nearly every event (a flag, no reminder, a reminder's usual minutes):
# looked up, not hashed again. Bounded: an int may be anything.
_ONE_VALUE: dict[tuple[type, object], str] = {}
_ONE_VALUE_MAX = 512


def _one_value(value: object) -> str:
    if value is not None and type(value) not in (bool, int):
        return _digest([_canonical(value)])
    key = (type(value), value)
    found = _ONE_VALUE.get(key)
    if found is None:
        found = _digest([value])
        if len(_ONE_VALUE) < _ONE_VALUE_MAX:
            _ONE_VALUE[key] = found
    return found


def _digests(event: CalendarEvent) -> Digests:
    out: Digests = {}
    for name, attributes in FIELDS.items():
        if len(attributes) == 1:
            out[name] = _one_value(getattr(event, attributes[0]))
        else:
            out[name] = _digest([_canonical(getattr(event, a)) for a in attributes])
    note = info_block.without_block(event.description)
    # Mostly the description itself (no block in it): its digest is the note's.
    out[NOTE] = out["description"] if note is event.description else _digest([note])
    return out


def edited_by_a_person(now: Mapping[str, str], base: Mapping[str, str]) -> bool:
    """Whether a change of the CRM's version is an edit of synced fields, not only a new
    deal-and-contact block (a deal, person or organization renamed or relinked)."""
    moved = changed(now, base)
    if moved - {"description"}:
        return True
    return bool(moved) and now.get(NOTE) != base.get(NOTE)


def changed(now: Mapping[str, str], base: Mapping[str, str]) -> frozenset[str]:
    return frozenset(name for name in FIELDS if now.get(name) != base.get(name))


@dataclass(frozen=True)
class Plan:
    """Which side's value each changed field takes, and which fields collided."""

    from_crm: frozenset[str]
    from_calendar: frozenset[str]
    conflicting: frozenset[str]  # changed on both sides to different values

    @property
    def conflict(self) -> bool:
        return bool(self.conflicting)


def plan(
    crm_now: Mapping[str, str],
    calendar_now: Mapping[str, str],
    base_crm: Mapping[str, str],
    base_calendar: Mapping[str, str],
    crm_wins: bool,
) -> Plan:
    """The merge of two changed versions, given each side's digests now and at the last
    sync. A field changed on one side takes that side's value; changed on both to the
    same value it is no conflict; changed on both to different values, ``crm_wins``
    (the policy's verdict) picks."""
    crm_changed = changed(crm_now, base_crm)
    calendar_changed = changed(calendar_now, base_calendar)
    both = crm_changed & calendar_changed
    conflicting = frozenset(f for f in both if crm_now.get(f) != calendar_now.get(f))
    from_crm = crm_changed - (frozenset() if crm_wins else conflicting)
    from_calendar = (
        calendar_changed - (conflicting if crm_wins else frozenset()) - (both - conflicting)
    )
    return Plan(from_crm, from_calendar, conflicting)


def merged(calendar: CalendarEvent, crm: CalendarEvent, from_crm: frozenset[str]) -> CalendarEvent:
    """The calendar's version with the fields ``from_crm`` taken from the CRM's."""
    values = {a: getattr(crm, a) for name in from_crm for a in FIELDS[name]}
    return dataclasses.replace(calendar, **values)


def version(event: CalendarEvent | None) -> dict[str, object] | None:
    """Every synced field of a version, as recorded with a conflict."""
    if event is None:
        return None
    out: dict[str, object] = {}
    for attributes in FIELDS.values():
        for attribute in attributes:
            value = getattr(event, attribute)
            if attribute == "attendees":
                value = [{"email": a.email, "name": a.name, "status": a.status} for a in value]
            elif hasattr(value, "isoformat"):
                value = value.isoformat()
            out[attribute] = value
    out["last_modified"] = event.last_modified.isoformat() if event.last_modified else None
    return out
