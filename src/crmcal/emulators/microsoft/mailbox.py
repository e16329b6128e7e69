"""Events in a mailbox: resolving ids, writes, moves, and the views listings are made of.

No HTTP here. Every write stamps the item with the mailbox's next change-log
position, gives it a new ``changeKey`` and tells the listeners (the hook change
notifications hang on). Deleted events stay as tombstones with their ids. A
series' occurrences are computed; changing one by id stores an exception,
deleting one stores a cancelled occurrence. Writing to an event with attendees
records the mail Graph would send them.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Callable
from typing import Any

from crmcal.emulators.microsoft import events, ids, properties, recurrence, times
from crmcal.emulators.microsoft.errors import GraphError, access_denied, not_found
from crmcal.emulators.microsoft.model import Calendar, Change, ChangeListener, Entry, Item, Mailbox


def conflict() -> GraphError:
    return GraphError(
        412,
        "ErrorIrresolvableConflict",
        "The send or update operation could not be performed because the change key passed "
        "in the request does not match the current change key for the item.",
    )


class Events:
    """The event operations of every mailbox, sharing a clock, listeners and the mail log."""

    def __init__(self, clock: Callable[[], dt.datetime], listeners: list[ChangeListener]) -> None:
        self.clock = clock
        self.listeners = listeners
        # The mails Graph would have sent to attendees, oldest first.
        self.mails: list[dict[str, Any]] = []
        self._serial = 0

    # --- the change log ------------------------------------------------------------

    def _record(self, mailbox: Mailbox, item: Item, change_type: str) -> None:
        mailbox.position += 1
        item.position = mailbox.position
        if not item.deleted:
            item.body["changeKey"] = ids.change_key()
            item.body["lastModifiedDateTime"] = times.timestamp(self.clock())
        event_id, regular = item.immutable_id, item.regular_id
        change = Change(
            mailbox.position,
            mailbox.email,
            item.calendar_id,
            event_id,
            regular,
            change_type,
            copy.deepcopy(item.body),
        )
        mailbox.changes.append(change)
        for listener in list(self.listeners):
            listener(change)

    def touch(self, mailbox: Mailbox, item: Item) -> None:
        """Record a change the admin API made to an item's body (a new change key, a
        delta entry, change notifications)."""
        self._record(mailbox, item, "updated")

    def _next_serial(self) -> int:
        self._serial += 1
        return self._serial

    # --- resolving ids -------------------------------------------------------------

    def item(self, mailbox: Mailbox, event_id: str) -> Item | None:
        found = mailbox.ids.get(event_id)
        if found is None:
            return None
        item = mailbox.calendars[found[0]].items.get(found[1])
        return item if item is not None and not item.deleted else None

    def resolve(self, mailbox: Mailbox, event_id: str, calendar: Calendar | None = None) -> Entry:
        """The event an id names (any calendar unless ``calendar``), occurrences included."""
        entry = self._resolve(mailbox, event_id)
        if entry is None or (calendar is not None and entry.calendar_id != calendar.id):
            raise not_found()
        return entry

    def _resolve(self, mailbox: Mailbox, event_id: str) -> Entry | None:
        item = self.item(mailbox, event_id)
        if item is not None:
            return self.entry(mailbox, item)
        split = ids.split_occurrence_id(event_id)
        if split is None:
            return None
        master = self.item(mailbox, split[0])
        original = recurrence.from_stamp(split[1])
        if master is None or original is None or master.body.get("type") != "seriesMaster":
            return None
        calendar = mailbox.calendars[master.calendar_id]
        stored = calendar.items.get(f"{master.key}/{split[1]}")
        if stored is not None:
            return None if stored.deleted else self.entry(mailbox, stored)
        if not recurrence.has_original(master.body, original):
            return None
        return self.occurrence(master, original)

    # --- entries -------------------------------------------------------------------

    def entry(self, mailbox: Mailbox, item: Item) -> Entry:
        start, end = events.span(item.body)
        entry = Entry(
            item.key,
            "exception" if item.master is not None else item.body["type"],
            item.body,
            item.props,
            item.regular_id,
            item.immutable_id,
            item.calendar_id,
            start,
            end,
            item.position,
        )
        if item.master is not None:
            # An occurrence changed on its own: it names its series and where it was.
            master = mailbox.calendars[item.calendar_id].items[item.master]
            entry.master_ids = (master.regular_id, master.immutable_id)
            entry.original = recurrence.from_stamp(item.stamp or "")
        elif entry.kind == "seriesMaster":
            entry.cancelled_days = self._cancelled(mailbox, item)
        return entry

    def _cancelled(self, mailbox: Mailbox, master: Item) -> list[str]:
        calendar = mailbox.calendars[master.calendar_id]
        zone = recurrence.series_zone(master.body)
        found = []
        for item in calendar.items.values():
            if item.master == master.key and item.deleted and item.stamp:
                original = recurrence.from_stamp(item.stamp)
                if original is not None:
                    found.append(times.local(original, zone).date().isoformat())
        return sorted(found)

    def occurrence(self, master: Item, original: dt.datetime) -> Entry:
        start, end = events.span(master.body)
        stamp = recurrence.stamp(original)
        return Entry(
            f"{master.key}/{stamp}",
            "occurrence",
            master.body,
            master.props,
            ids.occurrence_id(master.regular_id, stamp),
            ids.occurrence_id(master.immutable_id, stamp),
            master.calendar_id,
            original,
            original + (end - start),
            master.position,
            master_ids=(master.regular_id, master.immutable_id),
            original=original,
        )

    def listing(self, calendar: Calendar, mailbox: Mailbox) -> list[Entry]:
        """What ``/events`` lists: single events and series masters, oldest first."""
        items = sorted(
            (i for i in calendar.items.values() if not i.deleted and i.master is None),
            key=lambda i: i.serial,
        )
        return [self.entry(mailbox, item) for item in items]

    def view(
        self, mailbox: Mailbox, calendar: Calendar, start: dt.datetime, end: dt.datetime
    ) -> list[Entry]:
        """What a calendar view shows: singles, occurrences and exceptions in the window."""
        found: list[Entry] = []
        for item in calendar.items.values():
            if item.deleted:
                continue
            if item.master is not None or item.body["type"] == "singleInstance":
                entry = self.entry(mailbox, item)
                if _overlaps(entry, start, end):
                    found.append(entry)
            else:
                found.extend(self._occurrences(calendar, item, start, end))
        found.sort(key=lambda e: (e.start, e.key))
        return found

    def _occurrences(
        self, calendar: Calendar, master: Item, start: dt.datetime, end: dt.datetime
    ) -> list[Entry]:
        """The generated occurrences of a series in a window (not its exceptions)."""
        found = []
        for original in recurrence.originals(master.body):
            if original >= end:
                break
            if f"{master.key}/{recurrence.stamp(original)}" in calendar.items:
                continue  # an exception or a cancelled occurrence
            entry = self.occurrence(master, original)
            if _overlaps(entry, start, end):
                found.append(entry)
        return found

    def instances(
        self, mailbox: Mailbox, master: Item, start: dt.datetime, end: dt.datetime
    ) -> list[Entry]:
        """``/events/{id}/instances``: a series' occurrences and exceptions in a window."""
        calendar = mailbox.calendars[master.calendar_id]
        found = self._occurrences(calendar, master, start, end)
        for item in calendar.items.values():
            if item.master == master.key and not item.deleted:
                entry = self.entry(mailbox, item)
                if _overlaps(entry, start, end):
                    found.append(entry)
        found.sort(key=lambda e: (e.start, e.key))
        return found

    def exceptions(self, mailbox: Mailbox, master: Entry) -> list[Entry]:
        """A series' exceptions (changed occurrences; cancelled ones are not), in order."""
        calendar = mailbox.calendars[master.calendar_id]
        found = [
            self.entry(mailbox, item)
            for item in calendar.items.values()
            if item.master == master.key and not item.deleted
        ]
        return sorted(found, key=lambda e: (e.original or e.start, e.key))

    # --- writes --------------------------------------------------------------------

    def create(self, mailbox: Mailbox, calendar: Calendar, raw: Any) -> tuple[Entry, bool]:
        """A POSTed event; (the entry, whether it was made now). A ``transactionId``
        already used in the mailbox answers the event it made instead."""
        if not calendar.can_edit:
            raise access_denied()
        written = events.read(raw, creating=True)
        props = properties.written(written.pop("singleValueExtendedProperties", None) or [])
        transaction = written.get("transactionId")
        if transaction and transaction in mailbox.transactions:
            existing = self.item(mailbox, mailbox.transactions[transaction])
            if existing is not None:
                return self.entry(mailbox, existing), False
        body = events.defaults(mailbox.display_name, mailbox.email) | written
        body["type"] = "seriesMaster" if body.get("recurrence") else "singleInstance"
        events.check_times(body)
        if body["type"] == "seriesMaster":
            next(recurrence.originals(body), None)  # the rule can be expanded
        body.update(
            {
                "iCalUId": ids.ical_uid(),
                "bodyPreview": events.preview(body["body"]),
                "originalStartTimeZone": body["start"]["timeZone"],
                "originalEndTimeZone": body["end"]["timeZone"],
            }
        )
        immutable = ids.immutable_id()
        item = Item(
            immutable, calendar.id, body, props, self._next_serial(), 0, ids.regular_id(), immutable
        )
        calendar.items[item.key] = item
        mailbox.ids[item.regular_id] = mailbox.ids[item.immutable_id] = (calendar.id, item.key)
        if transaction:
            mailbox.transactions[transaction] = item.immutable_id
        self._record(mailbox, item, "created")
        body["createdDateTime"] = body["lastModifiedDateTime"]
        self._mail(mailbox, item, "invitation", body["attendees"])
        return self.entry(mailbox, item), True

    def _check_if_match(self, entry: Entry, if_match: str | None) -> None:
        if if_match is None or if_match.strip() == "*":
            return
        given = if_match.strip().removeprefix("W/").strip('"')
        if given != entry.body.get("changeKey"):
            raise conflict()

    def _writable(self, mailbox: Mailbox, entry: Entry) -> Calendar:
        calendar = mailbox.calendars[entry.calendar_id]
        if not calendar.can_edit:
            raise access_denied()
        return calendar

    def update(self, mailbox: Mailbox, entry: Entry, raw: Any, if_match: str | None) -> Entry:
        """A PATCH of an event, a series or one occurrence (which becomes an exception)."""
        self._check_if_match(entry, if_match)
        calendar = self._writable(mailbox, entry)
        written = events.read(raw, creating=False, previous=entry.body)
        props = written.pop("singleValueExtendedProperties", None)
        new_props = properties.written(props) if props is not None else {}
        if entry.kind in ("occurrence", "exception") and "recurrence" in written:
            raise GraphError(
                400, "ErrorInvalidRequest", "An occurrence of a series cannot have a recurrence."
            )
        item, change = self._changed_item(mailbox, calendar, entry)
        before = item.body
        body = events.merged(before, written)
        if entry.kind in ("singleInstance", "seriesMaster"):
            body["type"] = "seriesMaster" if body.get("recurrence") else "singleInstance"
        events.check_times(body)
        if body["type"] == "seriesMaster":
            next(recurrence.originals(body), None)
        body["bodyPreview"] = events.preview(body["body"])
        body["originalStartTimeZone"] = body["start"]["timeZone"]
        body["originalEndTimeZone"] = body["end"]["timeZone"]
        if "start" in written:
            body.pop(events.UNNAMED_ZONE, None)  # written in a zone Graph names
        item.body = body
        item.props = item.props | new_props
        if entry.kind == "seriesMaster" and any(
            before.get(k) != body.get(k) for k in ("start", "end", "recurrence")
        ):
            self._drop_exceptions(mailbox, calendar, item)
        self._record(mailbox, item, change)
        self._mail_update(mailbox, item, before.get("attendees") or [], body["attendees"])
        return self.entry(mailbox, item)

    def _changed_item(self, mailbox: Mailbox, calendar: Calendar, entry: Entry) -> tuple[Item, str]:
        """The item a change of ``entry`` lands on, and the change it records: an
        occurrence changed on its own becomes a new exception of its series."""
        if entry.kind == "occurrence":
            return self._exception(mailbox, calendar, entry), "created"
        return calendar.items[entry.key], "updated"

    def respond(self, mailbox: Mailbox, entry: Entry, response: str) -> None:
        """``accept``, ``tentativelyAccept`` or ``decline`` of a meeting the mailbox was
        invited to: its ``responseStatus`` and its own attendee's status say the answer;
        an occurrence answered on its own becomes an exception of its series, as in
        Outlook (the rest of the series keeps its answer). The organizer cannot answer."""
        calendar = self._writable(mailbox, entry)
        if calendar.items[entry.key.split("/", 1)[0]].body.get("isOrganizer", True):
            raise GraphError(
                400,
                "ErrorInvalidRequest",
                "Your request can't be completed. You can't respond to this meeting because "
                "you're the meeting organizer.",
            )
        item, change = self._changed_item(mailbox, calendar, entry)
        answered = {"response": response, "time": times.timestamp(self.clock())}
        item.body["responseStatus"] = answered
        for attendee in item.body.get("attendees") or []:
            address = str((attendee.get("emailAddress") or {}).get("address") or "")
            if address.lower() == mailbox.email.lower():
                attendee["status"] = dict(answered)
        self._record(mailbox, item, change)

    def _exception(self, mailbox: Mailbox, calendar: Calendar, entry: Entry) -> Item:
        """The exception an occurrence becomes when it is changed."""
        master = calendar.items[entry.key.split("/", 1)[0]]
        body = copy.deepcopy(master.body)
        zone_start, zone_end = body["start"]["timeZone"], body["end"]["timeZone"]
        body["start"] = {
            "dateTime": times.graph_date_time(times.local(entry.start, zone_start)),
            "timeZone": zone_start,
        }
        body["end"] = {
            "dateTime": times.graph_date_time(times.local(entry.end, zone_end)),
            "timeZone": zone_end,
        }
        body["type"] = "exception"
        body["recurrence"] = None
        stamp = entry.key.split("/", 1)[1]
        item = Item(
            entry.key,
            calendar.id,
            body,
            dict(master.props),
            self._next_serial(),
            0,
            entry.regular_id,
            entry.immutable_id,
            master=master.key,
            stamp=stamp,
        )
        calendar.items[item.key] = item
        return item

    def _drop_exceptions(self, mailbox: Mailbox, calendar: Calendar, master: Item) -> None:
        """A series whose times or pattern change loses its exceptions, as in Outlook."""
        for item in list(calendar.items.values()):
            if item.master == master.key:
                if not item.deleted:
                    item.deleted = True
                    self._record(mailbox, item, "deleted")
                # Gone for good: the occurrence it replaced is the series' again.
                del calendar.items[item.key]

    def delete(self, mailbox: Mailbox, entry: Entry, if_match: str | None) -> None:
        self._check_if_match(entry, if_match)
        calendar = self._writable(mailbox, entry)
        if entry.kind == "occurrence":
            master = calendar.items[entry.key.split("/", 1)[0]]
            stamp = entry.key.split("/", 1)[1]
            item = Item(
                entry.key,
                calendar.id,
                copy.deepcopy(master.body),
                {},
                self._next_serial(),
                0,
                entry.regular_id,
                entry.immutable_id,
                master=master.key,
                stamp=stamp,
                deleted=True,
            )
            calendar.items[item.key] = item
        else:
            item = calendar.items[entry.key]
            item.deleted = True
        if entry.kind in ("singleInstance", "seriesMaster"):
            mailbox.ids.pop(item.regular_id, None)
            mailbox.ids.pop(item.immutable_id, None)
        if entry.kind == "seriesMaster":
            self._drop_exceptions(mailbox, calendar, item)
        self._record(mailbox, item, "deleted")
        if item.master is not None:
            # The series' list of cancelled occurrences is the master's own property
            # (``cancelledOccurrences``): the master changes with it, and so do the
            # occurrences it makes (their change key is the master's).
            self._record(mailbox, calendar.items[item.master], "updated")
        self._mail(mailbox, item, "cancellation", item.body.get("attendees") or [])

    def move(self, mailbox: Mailbox, entry: Entry, destination: Calendar) -> Entry:
        """An event taken to another calendar of the mailbox, as a person does in Outlook:
        the immutable id stays, the regular id changes, the source keeps a tombstone."""
        if entry.kind not in ("singleInstance", "seriesMaster"):
            raise GraphError(400, "ErrorInvalidRequest", "Only whole events can be moved.")
        source = mailbox.calendars[entry.calendar_id]
        if source.id == destination.id:
            return entry
        moving = [source.items[entry.key]] + [
            i for i in source.items.values() if i.master == entry.key
        ]
        moved_master = None
        for old in moving:
            new = copy.deepcopy(old)
            new.calendar_id = destination.id
            new.serial = self._next_serial()
            old.deleted = True
            if old.master is None:
                new.regular_id = ids.regular_id()
                mailbox.ids.pop(old.regular_id, None)
                mailbox.ids[new.regular_id] = mailbox.ids[new.immutable_id] = (
                    destination.id,
                    new.key,
                )
                moved_master = new
            else:
                assert moved_master is not None
                assert old.stamp is not None
                new.regular_id = ids.occurrence_id(moved_master.regular_id, old.stamp)
            destination.items[new.key] = new
            if not new.deleted:
                self._record(mailbox, old, "deleted")
                self._record(mailbox, new, "created")
        assert moved_master is not None
        return self.entry(mailbox, moved_master)

    # --- mail ----------------------------------------------------------------------

    def _mail(
        self, mailbox: Mailbox, item: Item, kind: str, attendees: list[dict[str, Any]]
    ) -> None:
        to = [
            a["emailAddress"]["address"]
            for a in attendees
            if a["emailAddress"]["address"].lower() != mailbox.email
        ]
        if not to:
            return
        self.mails.append(
            {
                "kind": kind,
                "event_id": item.immutable_id,
                "regular_id": item.regular_id,
                "mailbox": mailbox.email,
                "from": mailbox.email,
                "to": to,
                "subject": item.body.get("subject") or "",
                "sent": times.timestamp(self.clock()),
            }
        )

    def _mail_update(
        self,
        mailbox: Mailbox,
        item: Item,
        before: list[dict[str, Any]],
        after: list[dict[str, Any]],
    ) -> None:
        """Graph mails every attendee on every change: new ones an invitation, removed ones
        a cancellation, the others an update."""
        old = {a["emailAddress"]["address"].lower() for a in before}
        new = {a["emailAddress"]["address"].lower() for a in after}
        self._mail(
            mailbox,
            item,
            "invitation",
            [a for a in after if a["emailAddress"]["address"].lower() not in old],
        )
        self._mail(
            mailbox,
            item,
            "update",
            [a for a in after if a["emailAddress"]["address"].lower() in old],
        )
        self._mail(
            mailbox,
            item,
            "cancellation",
            [a for a in before if a["emailAddress"]["address"].lower() not in new],
        )


def _overlaps(entry: Entry, start: dt.datetime, end: dt.datetime) -> bool:
    if entry.start == entry.end:
        return start <= entry.start < end
    return entry.start < end and entry.end > start
