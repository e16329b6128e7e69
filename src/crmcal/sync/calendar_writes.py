"""Writes to the calendar: new events for activities, updates and deletes of linked
ones, each kind sent in batches.

The engine decides; ``CalendarWrites`` queues each write (an update or delete with
the calendar version it was decided against), sends them together (in as few
requests as the provider allows, each item answering on its own) and takes each
answer: a new event is linked (one that exists already is adopted), a version
changed meanwhile (412) is read and decided again, an event gone is made again, a
written one has its link saved.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING

from crmcal.crm.tables import Activity, utcnow
from crmcal.model import CalendarEvent, RemoteRef, changed_fields
from crmcal.providers.base import (
    FATAL,
    EventNotFound,
    ItemRefused,
    PreconditionFailed,
    ProviderError,
    Update,
    create_many,
    delete_many,
    update_many,
)
from crmcal.sync import mapping, merge
from crmcal.sync.links import field_hashes
from crmcal.sync.pair import Pair
from crmcal.sync.states import LinkOrigin
from crmcal.sync.tables import Link

if TYPE_CHECKING:
    from crmcal.sync.engine import Engine


# Said of an item the calendar refused for good (``ItemRefused``): its version is
# remembered (on its link, or with the problem of a new event) and not sent again.
REFUSED_KEPT = "not sent again until the activity or the event changes"
# Why an activity's participants are not in the event made for it, where the calendar
# e-mails every attendee it is told about (``mapping.as_told``).
PARTICIPANTS_KEPT = (
    "its participants stay in the CRM: this calendar e-mails an invitation to every "
    "attendee it is told about, so they are written only when the activity asks for "
    "invitations (notify_participants)"
)


class CalendarWrites:
    """One run's writes to the calendar: new events, and updates and deletes of linked ones."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # New events for activities, made together (see create_all).
        self.outgoing: list[tuple[Activity, CalendarEvent]] = []
        self.updates: list[tuple[Pair, Link, Activity, CalendarEvent, Update]] = []
        self.deletes: list[tuple[Pair, Link, str | None]] = []

    def waiting(self) -> int:
        """How many updates and deletes wait for the batch."""
        return len(self.updates) + len(self.deletes)

    async def create_all(self) -> None:
        """Create the events of the activities waiting for one: in as few requests as
        the provider allows, their links in one transaction."""
        engine = self.engine
        while self.outgoing or engine.series.creating:  # adopting one can ask for another
            if self.outgoing:
                await self._create()
            await engine.series.create_pending()

    async def _create(self) -> None:
        """Make the events waiting in ``outgoing``; link those made, adopt those that
        exist already (their key taken)."""
        engine = self.engine
        pending, self.outgoing = self.outgoing, []
        items = [(activity.uid, event) for activity, event in pending]
        await engine.written.note([(activity.id, engine._crm_hash(activity), event.content_hash())
                                 for activity, event in pending])  # fmt: skip
        results = await create_many(engine.provider, engine.ctx.calendar_id, items)
        made: list[tuple[Activity, RemoteRef, CalendarEvent]] = []
        existing: list[Activity] = []
        fatal: Exception | None = None
        for (activity, event), result in zip(pending, results, strict=True):
            if isinstance(result, RemoteRef):
                made.append((activity, result, event))
                if engine.ctx.mails_attendees and activity.participants and not event.attendees:
                    # Not written, so as not to mail them: said, not left to be found out.
                    engine.report.warning(f"activity {activity.id}", PARTICIPANTS_KEPT)
            elif isinstance(result, PreconditionFailed):
                existing.append(activity)
            elif isinstance(result, FATAL):
                fatal = fatal or result
            elif isinstance(result, ItemRefused):
                # Refused for good: not sent again until the activity changes (the
                # problem keeps the version refused, there being no link to keep it).
                engine.report.problem(f"activity {activity.id}", f"{result}; {REFUSED_KEPT}",
                                      refused=engine._crm_hash(activity))  # fmt: skip
                engine.report.skipped += 1
            else:
                engine.report.problem(f"activity {activity.id}", str(result))
                engine.report.skipped += 1
        await self._save_new_links(made)
        if fatal is not None:
            raise fatal  # what was made is linked: a later run goes on from there
        for activity in existing:
            await self._adopt(activity)

    async def _adopt(self, activity: Activity) -> None:
        """Link the event that exists already for the activity: made by a run that
        stopped before saving the link, or by an earlier connection to this calendar."""
        engine = self.engine
        existing = await engine.provider.get_by_key(engine.ctx.calendar_id, activity.uid)
        if existing is None or existing.event is None:
            reason = existing.error if existing else None
            engine.report.problem(
                existing.id if existing else f"activity {activity.id}",
                reason or "its event exists but cannot be read; will retry",
            )
            engine.report.skipped += 1
            return
        await engine.relinking.link(Pair(activity=activity, remote=existing), activity, existing)

    async def _save_new_links(self, made: list[tuple[Activity, RemoteRef, CalendarEvent]]) -> None:
        """Link the events just made, in one transaction."""
        engine = self.engine
        if not made:
            return
        now = utcnow()
        links = [
            Link(
                connection_id=engine.ctx.connection_id,
                activity_id=activity.id,
                origin=LinkOrigin.CRM,
                remote_id=ref.id,
                remote_uid=(ref.event or written).uid,
                remote_etag=ref.etag,
                remote_hash=(ref.event or written).content_hash(),
                crm_hash=engine._crm_hash(activity),
                field_hashes=field_hashes(
                    written, ref.event or written, engine.kept_participants(activity)
                ),
                last_synced_at=now,
                # Made after the cursor the run keeps was read: see Link.unconfirmed.
                unconfirmed=True,
            )
            for activity, ref, written in made
        ]
        await engine.links.store_many(links)
        engine.report.created += len(links)

    def _seen_etag(self, pair: Pair, link: Link) -> str | None:
        """The calendar version decisions were made against: as listed now, else as linked."""
        return pair.remote.etag if pair.remote is not None else link.remote_etag

    async def _current(self, pair: Pair, link: Link) -> Pair | None:
        """The pair again with the event as it is now, after a precondition failed.

        None when it changed yet again, so that a busy event cannot keep a run
        going round in circles: the next run picks it up.
        """
        engine = self.engine
        if pair.retried:
            engine.report.problem(link.remote_id, "changed while syncing; will retry")
            return None
        current = await engine.provider.fetch(engine.ctx.calendar_id, [link.remote_id])
        if current and current[0].error:
            # Not read is not gone: the next run reads it again (or at its next version).
            engine.report.cannot_read(current[0])
            return None
        remote = current[0] if current and current[0].event is not None else None
        if remote is not None:
            remote = engine.reading.placed(remote)
        return Pair(link, pair.activity, remote, remote is None, pair.activity_id, True)

    async def update(self, pair: Pair, link: Link) -> None:
        """Write the activity as it now is to its event: queued for the batch (sent at
        once where the provider has no batches)."""
        engine = self.engine
        activity = pair.activity
        assert activity is not None
        event = engine._event_of(activity)
        changed = self._changed(link, pair, event)
        if self._mails_for_options_only(activity, link):
            # Writing it would mail every guest about a setting: it gets the new
            # description with its next real change (the link keeps the old one).
            return
        await engine.written.note([(activity.id, engine._crm_hash(activity), event.content_hash())])
        etag = self._seen_etag(pair, link) or ""
        listed = pair.remote.event if pair.remote is not None else None
        # As listed now, or as linked: crmcal writes a single activity to a single
        # event, and any change there (into a series too) moves the version.
        single = event.recurrence is None and (
            pair.remote is None or (listed is not None and listed.recurrence is None)
        )
        sent = await self._whole_there(pair, link, activity, event, changed)
        update = Update(link.remote_id, etag, sent, changed, single)
        # Each names the version it was decided against, so it may wait for its batch:
        # an event changed meanwhile answers 412 and is decided again (_updated).
        self.updates.append((pair, link, activity, event, update))  # see send
        if not engine.provider.capabilities.batch_changes:
            await self.send()

    async def _whole_there(
        self,
        pair: Pair,
        link: Link,
        activity: Activity,
        event: CalendarEvent,
        changed: frozenset[str] | None,
    ) -> CalendarEvent:
        """``event`` as it is written to the calendar: with the calendar's whole note
        where the activity's is that note cut to what the CRM keeps (mapping.uncut_note),
        so that the CRM's other edits, or a new deal-and-contact block, never cut the
        description there. The event is read only for a note of the CRM's full length
        whose description is written."""
        engine = self.engine
        note = activity.note
        if note is None or len(note) < mapping.NOTE_MAX:
            return event
        if changed is not None and "description" not in changed:
            return event
        if event.description is None or not event.description.startswith(note):
            return event
        there = pair.remote.event if pair.remote is not None else None
        if there is None:
            (found,) = await engine.provider.fetch(engine.ctx.calendar_id, [link.remote_id])
            if found.error:
                # Not read: nothing is written over a description that may be whole.
                raise ProviderError(f"{found.error}; will retry")
            there = found.event
        whole = mapping.uncut_note(note, there.description if there is not None else None)
        if whole is None:
            return event
        return replace(event, description=whole + event.description[len(note) :])

    async def send(self) -> None:
        """Send the updates and deletes gathered so far: in as few requests as the
        provider allows, each item answering on its own."""
        engine = self.engine
        while self.updates or self.deletes or engine.series.pending:
            # (a retried item can ask for another write)
            updates, self.updates = self.updates, []
            deletes, self.deletes = self.deletes, []
            if updates:
                await self._send_updates(updates)
            if deletes:
                await self._send_deletes(deletes)
            await engine.series.write_pending()
        # After the series' writes, which store their links with the notes of the copies
        # these delete (and take out once answered).
        await engine.series.send_drops()

    async def _send_updates(
        self, updates: list[tuple[Pair, Link, Activity, CalendarEvent, Update]]
    ) -> None:
        engine = self.engine
        calendar = engine.ctx.calendar_id
        results = await update_many(engine.provider, calendar, [u[-1] for u in updates])
        await engine._answered(
            (
                pair,
                result,
                partial(self._updated, pair, link, activity, event, _as_sent(result, update)),
            )
            for (pair, link, activity, event, update), result in zip(updates, results, strict=True)
        )

    async def _updated(
        self,
        pair: Pair,
        link: Link,
        activity: Activity,
        event: CalendarEvent,
        result: RemoteRef | ProviderError,
    ) -> None:
        engine = self.engine
        if isinstance(result, EventNotFound):
            await engine.links.drop(link)
            await engine._new_activity(activity, recreate=True)
            return
        if isinstance(result, PreconditionFailed):
            # Changed in the calendar since we listed it: decide again with its
            # current content.
            again = await self._current(pair, link)
            if again is not None:
                await engine._settle_linked(again, link)
            return
        if isinstance(result, ProviderError):
            raise result
        if engine.newly_kept(link, activity):
            # A participant added to an event already there: kept out of it too, said
            # once (the link now remembers them).
            engine.report.warning(f"activity {activity.id}", PARTICIPANTS_KEPT)
        await self._save_link(link, activity, result, event, origin=link.origin)
        engine.report.updated += 1
        if result.warning:
            # Written in part (what the calendar takes of it): linked as it is there, so
            # the rest is not sent again each run, and said once.
            engine.report.warning(pair.item(), result.warning)

    def _mails_for_options_only(self, activity: Activity, link: Link) -> bool:
        """Whether an update would mail attendees (Microsoft 365 mails every attendee of
        an event its organizer changes) only because the connection's options changed."""
        engine = self.engine
        if not (engine.ctx.mails_attendees and engine.ctx.options_changed):
            return False
        guests = bool((link.field_hashes or {}).get("attendees")) or activity.notify_participants
        unchanged = link.last_synced_at is not None and activity.updated_at <= link.last_synced_at
        return guests and unchanged

    async def delete(self, pair: Pair, link: Link) -> None:
        """Delete the linked event: queued for the batch like an update."""
        self.deletes.append((pair, link, self._seen_etag(pair, link)))  # see send
        if not self.engine.provider.capabilities.batch_changes:
            await self.send()

    async def _send_deletes(self, deletes: list[tuple[Pair, Link, str | None]]) -> None:
        engine = self.engine
        items = [(link.remote_id, etag) for _, link, etag in deletes]
        results = await delete_many(engine.provider, engine.ctx.calendar_id, items)
        await engine._answered(
            (pair, result, partial(self._deleted, pair, link, result))
            for (pair, link, _), result in zip(deletes, results, strict=True)
        )

    async def _deleted(self, pair: Pair, link: Link, result: ProviderError | None) -> None:
        engine = self.engine
        if isinstance(result, PreconditionFailed):
            again = await self._current(pair, link)
            if again is None or engine._skip_recurring(again):
                # Not read now, or a series now: neither deleted nor brought back as
                # a single activity (an item not read is read again next run).
                return
            if again.remote is not None and engine.ctx.pull:
                # Edited in the calendar meanwhile: the edit beats the deletion.
                await engine.crm.update(again, link)
                return
            await engine.provider.delete(engine.ctx.calendar_id, link.remote_id, None)
        elif result is not None:
            raise result
        await engine.links.drop(link)
        engine.report.deleted += 1

    def _changed(self, link: Link, pair: Pair, event: CalendarEvent) -> frozenset[str] | None:
        """The fields the CRM changed since the last sync (None: all, when the link does
        not know; then against the calendar's current content where it is at hand)."""
        before = (link.field_hashes or {}).get("crm")
        if not before:
            remote = pair.remote.event if pair.remote is not None else None
            return changed_fields(remote, event) if remote is not None else None
        return merge.changed(merge.digests(event), before)

    async def _save_link(
        self,
        link: Link | None,
        activity: Activity,
        ref: RemoteRef,
        written: CalendarEvent,
        *,
        origin: str,
    ) -> None:
        """Remember the pair as just written: the event's new version and both digests."""
        engine = self.engine
        remote_event = ref.event or written
        if link is None:
            link = Link(
                connection_id=engine.ctx.connection_id, activity_id=activity.id, origin=origin
            )
        await engine.links.store(
            link,
            remote_id=ref.id,
            remote_uid=remote_event.uid,
            remote_etag=ref.etag,
            remote_hash=remote_event.content_hash(),
            crm_hash=engine._crm_hash(activity),
            field_hashes=field_hashes(written, remote_event, engine.kept_participants(activity)),
            refused_hash=None,  # written: nothing waits refused
            last_synced_at=utcnow(),
        )


def _as_sent(result: RemoteRef | ProviderError, update: Update) -> RemoteRef | ProviderError:
    """An update's answer, with the event as written where the answer has no content:
    what the link remembers of the calendar's side (its whole note, say)."""
    if isinstance(result, RemoteRef) and result.event is None:
        return replace(result, event=update.event)
    return result
