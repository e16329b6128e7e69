"""Reading the calendar's side of a sync run: which listed items moved (their content,
fetched where the listing has none), which synced ones are gone, and the guards
that refuse a run whose listing looks wrong (an empty calendar, a mass deletion).

Items an earlier run could not read are known from the connection's problems:
those that may pass are read again, those unreadable at a version are not fetched
again until it changes.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from crmcal.model import ChangeListing, RemoteRef
from crmcal.sync import mapping
from crmcal.sync.context import SyncRefused
from crmcal.sync.tables import Connection, Link

if TYPE_CHECKING:
    from crmcal.sync.engine import Engine

# A run that would trash more than this many activities and more than this share of
# the linked ones stops until forced (see CalendarReading._check_mass_deletion).
MASS_DELETION_ITEMS = 10
MASS_DELETION_SHARE = 0.2


class CalendarReading:
    """The calendar's side of one run, as read."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # The connection's problems as read with the run's start (None: read them).
        self.problems_before: list[dict[str, Any]] | None = None
        # Activities whose new event was refused for good, as earlier runs said (None:
        # not read yet; see refused).
        self._refused: dict[str, str] | None = None
        # What the run's listing says is gone.
        self.listed_gone: set[str] = set()
        # The links of events earlier runs made that no listing had named when the run
        # began (event id -> link id; see ``Link.unconfirmed``), those of them the
        # run's listing does not name either (read to know whether they are there), and
        # those the read did not answer for or found gone (left unconfirmed until their
        # link is dropped).
        self.unconfirmed: dict[str, int] = {}
        self.unnamed: set[str] = set()
        self.unanswered: set[str] = set()
        self.found_gone: set[str] = set()
        # The items read again (see remote_side), and the synced ones of them the read
        # answered for without them: gone, as a read confirming a deletion finds.
        self.again: set[str] = set()
        self.absent_again: set[str] = set()

    async def remote_side(self, listing: ChangeListing) -> tuple[list[RemoteRef], set[str]]:
        """Calendar items whose content moved (fetched), and ids that are gone.

        Items an earlier run could not read for a reason that may pass (``retry``) are
        read again with them: the cursor has moved past them, and the listing may
        not name them again until they change."""
        engine = self.engine
        listed = {ref.id for ref in listing.changed}
        engine.seen = listed | set(listing.deleted)
        if not listing.full:
            # The cursor was read before the last run's own writes, and a listing from
            # it may leave out an event made and deleted since (RFC 6578 allows it): the
            # events that run made that this listing does not name are read (see
            # remote_gone). A full listing names all there are.
            self.unnamed = set(self.unconfirmed) - engine.seen
        again = [rid for rid in await self._retries()
                 if rid not in engine.seen and rid not in self.unnamed]  # fmt: skip
        engine.seen |= set(again) | self.unnamed
        self.again = set(again)
        if listing.full:
            await engine.links.load()
        else:
            await engine.links.load_of(Link.remote_id, list(engine.seen))
        await self.refuse_empty(listing, listed)
        retried = [RemoteRef(rid, "") for rid in again]
        self.listed_gone = set(listing.deleted)
        moved = await self.remote_items(listing.changed + retried, await self.unreadable())
        more, gone = await self.remote_gone(listing, listed)
        return moved + more, gone

    async def refuse_empty(self, listing: ChangeListing, listed: set[str]) -> None:
        """Refuse a full listing with nothing in it where events were synced before."""
        engine = self.engine
        if listing.full and not listed and not engine.ctx.force and await engine.links.count():
            raise SyncRefused(
                f"the calendar looks empty but {await engine.links.count()} events were synced "
                "before; nothing was deleted. If the calendar really was emptied, "
                "run the sync again with force."
            )

    async def remote_items(
        self, changed: list[RemoteRef], unreadable: dict[str, tuple[str, str]]
    ) -> list[RemoteRef]:
        """The listed items whose content moved, with their content (fetched where the
        listing has none); those that cannot be read are reported. An item read again
        (see remote_side) is settled again whether it moved or not: what was left
        undone for want of a read (a CRM change to write) is done then."""
        engine = self.engine
        moved: list[RemoteRef] = []
        to_fetch: list[str] = []
        for ref in changed:
            if ref.error:
                engine.report.cannot_read(ref)
                continue
            if ref.warning:
                engine.report.problem(ref.id, ref.warning)
            link = engine.links.by_remote.get(ref.id)
            if link is not None and ref.etag and link.remote_etag == ref.etag:
                continue  # our own write coming back, or nothing new (a listing
                # without a version says nothing of that: read)
            known = unreadable.get(ref.id)
            if ref.event is None and known is not None and ref.etag and known[0] == ref.etag:
                # Unreadable at this version already: not fetched (and parsed) again.
                engine.report.problem(ref.id, known[1], ref.etag)
            elif ref.event is None:
                to_fetch.append(ref.id)
            else:
                moved.append(self.placed(ref))
        if to_fetch:
            found = await engine.provider.fetch(engine.ctx.calendar_id, to_fetch)
            for ref in found:
                if ref.error:
                    engine.report.cannot_read(ref)
                    continue
                if ref.warning:
                    engine.report.problem(ref.id, ref.warning)
                moved.append(self.placed(ref))
            self._not_found(to_fetch, {ref.id for ref in found})
        return moved

    def placed(self, ref: RemoteRef) -> RemoteRef:
        """``ref`` with its event as the run reads it: a series in a zone the calendar
        does not name is kept in the user's (``mapping.kept_in_own_zone``)."""
        if ref.event is None or ref.event.timezone is not None:
            return ref
        event = mapping.kept_in_own_zone(ref.event, mapping.zone_of(self.engine.ctx.owner))
        return ref if event is ref.event else replace(ref, event=event)

    def _not_found(self, fetched: list[str], found: set[str]) -> None:
        """A synced event listed as changed, then not found by the read of its content:
        deleted since the listing (which the next one says), or a server's passing
        error (a multiget answering 404 for a resource still there), after which no
        listing names it until it changes again. Either way it is read again next run
        (not dropped): found, or listed as gone, or not found again. (What was never
        synced is no loss to leave: a task, say, which a listing names like an event.)

        An item read again that way (or one whose read confirming a listed deletion
        failed) which a read now answers without is gone: no listing from the moved
        cursor names it any more, and reading it again would only find the same every
        run. It goes with the run's other deletions (``remote_gone``)."""
        engine = self.engine
        for rid in fetched:
            if rid in found or rid in self.listed_gone or rid not in engine.links.by_remote:
                continue
            if rid in self.again:
                self.absent_again.add(rid)
                continue
            engine.report.cannot_read(RemoteRef(
                rid, "", error="listed as changed, then not found by a read", retry=True
            ))  # fmt: skip

    async def remote_gone(
        self, listing: ChangeListing, listed: set[str]
    ) -> tuple[list[RemoteRef], set[str]]:
        """The synced events that are gone, and those the listing was unsure of that a
        read finds changed."""
        engine = self.engine
        moved: list[RemoteRef] = []
        gone = {rid for rid in listing.deleted if rid in engine.links.by_remote}
        # Removed is not always deleted (an event that left a listing's window): those
        # the listing is unsure of are read, only the synced ones.
        unsure = gone & listing.unconfirmed
        # The events crmcal made that the listing does not name (see remote_side): gone
        # unless the same read finds them.
        unnamed = {rid for rid in self.unnamed if rid in engine.links.by_remote}
        gone |= unnamed
        unsure |= unnamed
        # Read again this run and not found by that read: confirmed already.
        gone |= self.absent_again
        if listing.full:
            # Absence is not deletion: a listing can come back short (a server or
            # proxy that drops items, a truncated page, a windowed listing).
            missing = {rid for rid in engine.links.by_remote
                       if rid not in listed and rid not in self.absent_again}  # fmt: skip
            gone |= missing
            unsure |= missing
        if unsure:
            # Only what a direct read of this calendar no longer finds is gone.
            for ref in await engine.provider.fetch(engine.ctx.calendar_id, sorted(unsure)):
                # Found, or not answered (``error``): either way not gone.
                gone.discard(ref.id)
                if ref.error:
                    engine.report.cannot_read(ref)
                    if ref.id in self.unconfirmed:
                        self.unanswered.add(ref.id)  # not confirmed: read again next run
                link = engine.links.by_remote.get(ref.id)
                if ref.error or ref.event is None or link is None:
                    continue
                if link.remote_etag != ref.etag:
                    moved.append(self.placed(ref))
        self.found_gone = gone & unnamed
        await self._check_mass_deletion(gone)
        return moved, gone

    def confirmed(self) -> list[int]:
        """The links of ``unconfirmed`` this run confirmed, to be marked so when it ends:
        named by its listing, or found by its read, or gone and dropped. (Once a run's
        cursor is kept, which was read after those events were made, the listings
        from it name whatever becomes of them.) Not those the read did not answer for,
        nor one found gone whose link stays (its deletion not taken): the next run reads
        them again."""
        links = self.engine.links.by_remote
        left = self.unanswered | {rid for rid in self.found_gone if rid in links}
        return [link_id for rid, link_id in self.unconfirmed.items() if rid not in left]

    async def _earlier_problems(self) -> list[dict[str, Any]]:
        """The connection's problems as the run found them."""
        engine = self.engine
        if self.problems_before is None:
            async with engine.db.read() as session:
                problems = await session.scalar(
                    select(Connection.problems).where(Connection.id == engine.connection_id)
                )
            self.problems_before = [p for p in problems or [] if isinstance(p, dict)]
        return self.problems_before

    async def unreadable(self) -> dict[str, tuple[str, str]]:
        """Items earlier runs could not read: id -> (etag, reason)."""
        return {
            str(p["item"]): (str(p["etag"]), str(p.get("reason", "")))
            for p in await self._earlier_problems()
            if isinstance(p, dict) and p.get("etag") and p.get("item")
        }

    async def refused(self) -> dict[str, str]:
        """Activities whose new event earlier runs saw refused for good: item -> the
        digest of the version refused (``SyncReport.problem``). Read once a run: asked
        for every activity sent."""
        if self._refused is None:
            self._refused = {
                str(p["item"]): str(p["refused"])
                for p in await self._earlier_problems()
                if isinstance(p, dict) and p.get("refused") and p.get("item")
            }
        return self._refused

    async def _retries(self) -> list[str]:
        """Items earlier runs could not read for a reason that may pass: read them again."""
        found = [str(p["item"]) for p in await self._earlier_problems()
                 if isinstance(p, dict) and p.get("retry") and p.get("item")]  # fmt: skip
        return list(dict.fromkeys(found))

    async def _check_mass_deletion(self, gone: set[str]) -> None:
        """Refuse a run that would trash an unusual share of the linked activities: a
        calendar does not lose most of its events between two syncs by accident of
        the user, but a broken server or proxy can make it look so."""
        engine = self.engine
        if not engine.ctx.pull or engine.ctx.force or len(gone) <= MASS_DELETION_ITEMS:
            return
        linked = await engine.links.count()
        if len(gone) > MASS_DELETION_SHARE * linked:
            raise SyncRefused(
                f"{len(gone)} of the {linked} synced events look deleted in the calendar; "
                "nothing was deleted. If they really were deleted, run the sync again "
                "with force."
            )
