"""What the CRM is given for a new calendar event of a first import, for one owner.

For every new event an import checks the activity it makes against the CRM's input
model (``ActivityCreate``) and derives its CRM uid, its organizer and whether its
note comes in cut. That depends on the event and on who imports it (the owner's id,
address and zone, the connection's options, its own addresses: ``Importer``) and on
nothing else, so a first import has it computed in ``parse_pool``'s processes as they
parse each event (``Engine._first_import`` names it with ``computing_beside``): it
travels with the event as a memo, and the syncing process computes it only where it
is missing (an event parsed in-process, or one the pool could not check). Both ways
run the same function, so what is imported does not depend on where it ran.

For a new single event it also computes what its link keeps of the CRM's side (the
CRM's version's content hash and field digests: ``NewLinkHashes``), from the activity
as the CRM will write it, assuming its participants are named as the event names its
attendees; for a plain new series (no occurrence changed on its own), its first
occurrence's content hash and both sides' series units, from the series and first
occurrence as ``crm.series.write_many`` will write them. The syncing process takes
them after checking that assumption against the participants written (a person
matched by e-mail may lend a nameless attendee its name); where it does not hold, it
computes them itself from what was written.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import ValidationError

from crmcal.crm import series as crm_series
from crmcal.crm.activities import (
    Checked,
    Written,
    check_values,
    new_row,
    participants_as_given,
    read_as_written,
)
from crmcal.crm.errors import CrmError
from crmcal.crm.schemas import ActivityCreate, create_values
from crmcal.crm.tables import User, utcnow
from crmcal.model import CalendarEvent, content_hash_beside, same_content
from crmcal.sync import links, mapping, series_mapping, series_units
from crmcal.sync.links import field_hashes
from crmcal.sync.options import SyncOptions


@dataclass(frozen=True)
class Importer:
    """Who imports: what the CRM's fields of an event depend on besides the event."""

    owner_id: int
    owner_email: str
    owner_timezone: str
    options: SyncOptions
    own_addresses: frozenset[str]
    # Whether the calendar e-mails every attendee it is told about (``mapping.as_told``).
    mails_attendees: bool = False

    @classmethod
    def of(
        cls,
        owner: User,
        options: SyncOptions,
        own_addresses: frozenset[str],
        mails_attendees: bool = False,
    ) -> Importer:
        return cls(owner.id, owner.email, owner.timezone, options, own_addresses, mails_attendees)

    # The name of an event's memo for this importer: another owner or other options
    # never read it. Made with the importer, never on first use: the importer is
    # pickled for the parse pool on another thread while the event loop reads this,
    # and a dict that grows as it is pickled fails the pickle.
    memo_name: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        addresses = ",".join(sorted(self.own_addresses))
        name = (
            f"import_fields:{self.owner_id}:{self.owner_email}:{self.owner_timezone}:"
            f"{self.options.digest()}:{addresses}:{int(self.mails_attendees)}"
        )
        object.__setattr__(self, "memo_name", name)

    def owner(self) -> User:
        """A stand-in of the owner with what the mapping reads of one (never stored)."""
        return _owner(self.owner_id, self.owner_email, self.owner_timezone)


@functools.lru_cache(maxsize=64)
def _owner(owner_id: int, email: str, timezone: str) -> User:
    return User(id=owner_id, email=email, timezone=timezone)


# What ``activity_to_event`` reads of each participant: (e-mail, name, answer).
Named = tuple[tuple[str | None, str | None, str | None], ...]


def named(participants: list[dict[str, Any]]) -> Named:
    """Participant rows as the CRM event of their activity reads them."""
    return tuple((p["email"], p["name"], p["status"]) for p in participants if p["email"])


@dataclass(frozen=True)
class NewLinkHashes:
    """What the link of a new single event keeps of the CRM's side, computed for the
    activity as written with participants ``named``: valid for the activity written
    only if its participants are those (``for_written``)."""

    named: Named
    crm_hash: str
    # The link's field digests as the JSON text stored (``json.dumps`` of them):
    # encoded here, where the event is parsed, not on the event loop as its batch is
    # written, and a text crosses from the pool cheaper than the dict.
    field_hashes: str

    def for_written(self, written: Written) -> NewLinkHashes | None:
        return self if named(written.participants) == self.named else None


@dataclass(frozen=True)
class ImportFields:
    """A new event as the CRM is to get it: ``data`` checked (and read by the CRM's
    ``check_new`` where the CRM takes it), or why it cannot be stored (``refusal``);
    ``uid`` derived from the event's UID (None when it has none: the item's id stands
    in, which only the reader knows); the organizer of someone else's meeting; the
    note's whole length when the CRM keeps only its start."""

    data: ActivityCreate | Checked | None
    refusal: str | None
    uid: str | None
    organizer: str | None
    cut: int | None
    link: NewLinkHashes | None = None


def import_fields(event: CalendarEvent, importer: Importer) -> ImportFields:
    """``event``'s fields for ``importer``, computed once per event (see the module)."""
    return event.memo(importer.memo_name, functools.partial(_computed, importer=importer))


def known(event: CalendarEvent, importer: Importer) -> ImportFields | None:
    """``event``'s fields for ``importer`` if they were computed already (where it was
    parsed, or here), else None: for what is cheaper to derive again than the whole."""
    found = event.memoized(importer.memo_name)
    return found if isinstance(found, ImportFields) else None


def compute_beside(event: CalendarEvent, importer: object) -> None:
    """What ``parse_pool``'s processes run on each event they parse for an import."""
    if isinstance(importer, Importer):
        import_fields(event, importer)


def organizer_of(
    event: CalendarEvent, owner_email: str, own_addresses: frozenset[str]
) -> str | None:
    """The organizer's address when the event is someone else's meeting."""
    organizer = (event.organizer or "").strip().lower() or None
    if event.invitation is not None:
        return organizer if event.invitation else None
    ours = {owner_email.lower(), *own_addresses}
    return organizer if organizer is not None and organizer not in ours else None


def refusal(exc: ValidationError) -> str:
    """What the CRM refused of an event, naming the field ("note: String should have at
    most 65536 characters")."""
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error.get("loc", ()))
    return f"{where}: {error['msg']}" if where else str(error["msg"])


def _computed(event: CalendarEvent, importer: Importer) -> ImportFields:
    owner, options = importer.owner(), importer.options
    fields: dict[str, Any]
    if event.recurring:
        fields = series_mapping.events_to_series(
            event, (), owner, options, importer.own_addresses
        ).fields
        what = "series"
    else:
        fields = {
            "type": options.incoming_activity_type,
            **mapping.event_fields(event, owner, options, importer.own_addresses),
        }
        what = "event"
    uid = mapping.derived_uid(importer.owner_id, event.uid) if event.uid else None
    organizer = organizer_of(event, importer.owner_email, importer.own_addresses)
    if event.recurrence is not None and not event.recurrence.rrule.strip():
        return ImportFields(None, series_mapping.RDATES_ONLY, uid, organizer, None)
    # The model's values made without it where they plainly hold (the model's own
    # checks cost an event more than the rest of its fields): the model decides the rest.
    values = create_values(fields)
    if values is None:
        try:
            values = ActivityCreate(**fields).model_dump()
        except ValidationError as exc:
            return ImportFields(
                None, f"the {what} cannot be stored: {refusal(exc)}", uid, organizer, None
            )
    data: ActivityCreate | Checked
    try:
        # Read as the CRM reads it (plain values, cheaper to send than the model); one
        # the CRM refuses goes as it came, to be refused where it is written, as ever.
        checked = check_values(values, importer.owner_timezone, from_calendar=True)
    except CrmError:
        data = ActivityCreate(**fields)
    else:
        data = _sharing_text(checked, event)
    link = None
    if isinstance(data, Checked) and not event.recurring:
        if not importer.options.include_deal_and_contact_info:
            link = _link_hashes(event, data, importer, organizer)
    elif isinstance(data, Checked) and not event.crm_id and not event.live_overrides():
        # A plain new series, written with an import's batch (``Engine._new_event``).
        data, link = _new_series(event, data, importer, uid, organizer)
    return ImportFields(data, None, uid, organizer, mapping.note_cut(event), link)


# The columns of a new activity that hold an event's text as it came, mostly.
_TEXT_COLUMNS = (("subject", "summary"), ("location", "location"), ("note", "description"))


def _sharing_text(data: Checked, event: CalendarEvent) -> Checked:
    """``data`` holding the event's own strings wherever its text equals the event's
    (the same values): what the pool sends back pickles each of them once, with the
    event, instead of a copy made by the checks (a note is most of an event's size).
    Its participants' addresses are left as they are: sharing them cost the pool more
    than their copies cost the pickles."""
    columns = data.columns
    for column, attribute in _TEXT_COLUMNS:
        text = getattr(event, attribute)
        if text is not None and columns.get(column) == text:
            columns[column] = text
    return data


def _link_hashes(
    event: CalendarEvent, data: Checked, importer: Importer, organizer: str | None
) -> NewLinkHashes:
    """The CRM side of a new single event's link, for the activity ``data`` makes with
    its participants named as given (not where the CRM's version depends on what only
    the written activity knows: its id, in the deal-and-contact block)."""
    row = new_row(data.columns, "", importer.owner_id, organizer, utcnow())
    participants = participants_as_given(data.participants)
    activity = read_as_written(row, participants, 0)
    crm = mapping.activity_to_event(activity, importer.owner(), importer.options)
    crm = mapping.as_told(crm, importer.mails_attendees)
    # Mostly the calendar's event itself: compared once, for its hash and digests.
    alike = same_content(crm, event)
    if alike:
        return NewLinkHashes(
            named(participants), event.content_hash(), links.alike_hashes_text(event)
        )
    hashes = field_hashes(crm, event, alike=alike)
    return NewLinkHashes(named(participants), crm.content_hash(), json.dumps(hashes))


def _new_series(
    event: CalendarEvent,
    data: Checked,
    importer: Importer,
    uid: str | None,
    organizer: str | None,
) -> tuple[Checked, NewLinkHashes | None]:
    """``data`` with its occurrences' starts computed ahead (``series.starts_ahead``),
    and what the link of the plain new series keeps of the CRM's side: its first
    occurrence's content hash and both sides' series units, for the series
    ``crm_series.write_many`` makes of ``data`` with its participants named as given
    (not where the CRM's version depends on the written activity's id)."""
    owner, options = importer.owner(), importer.options
    now = utcnow()
    row = new_row(data.columns, uid or "", importer.owner_id, organizer, now)
    del row["organizer"]  # the series' own, given apart (as write_activities does)
    given = participants_as_given(data.participants)
    item = crm_series.NewSeries(owner, row, given, data.exdates, data.rdates, uid, organizer)
    try:
        ahead = crm_series.starts_ahead(item, now)
        item = replace(item, ahead=ahead)
        series, rule, starts = crm_series.planned(item, now)
    except CrmError:
        return data, None
    data = replace(data, ahead=ahead)
    if options.include_deal_and_contact_info:
        return data, None
    series.id = 0
    first_row, people = crm_series.first_occurrence(series, rule, starts[0], item)
    # Only read (as the link's hashes are): a plain object, without an ORM object's state.
    first = read_as_written(first_row, people, 0)
    told = importer.mails_attendees
    crm = mapping.as_told(mapping.activity_to_event(first, owner, options), told)
    master = series_mapping.crm_master(series, [first], owner, options, told)
    within = series_units.within_horizon_of(series)
    hashes = series_units.remembered_hashes(
        {}, series_units.digests_of(master, within), series_units.digests_of(event, within)
    )
    return data, NewLinkHashes(named(people), content_hash_beside(crm, event), json.dumps(hashes))
