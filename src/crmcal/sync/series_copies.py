"""Deleting the series crmcal made for a CRM series that a split made in the
calendar now holds (a copy), as noted on the split's link (``DROPPING``)."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from crmcal.crm.tables import ActivitySeries
from crmcal.model import RemoteRef
from crmcal.providers.base import (
    EventNotFound,
    PreconditionFailed,
    ProviderError,
    delete_many,
)
from crmcal.sync.tables import Link

# In a split's link: the series crmcal made for the split's CRM part that the
# calendar's own split replaced, until it is deleted from the calendar. Stored in
# the split's transaction, so that a run cut off before the delete does it next time
# (``SplitCopies.drop_copy``) instead of leaving a second series there.
DROPPING = "dropping"

if TYPE_CHECKING:
    from crmcal.sync.series_sync import SeriesSync


class SplitCopies:
    """The series crmcal made for a CRM series that a split made in the calendar
    took over (its copy): deleted, in the run's batch where the provider has one."""

    def __init__(self, run: SeriesSync) -> None:
        self.run = run
        self.engine = run.engine
        # Series crmcal made that a split made in the calendar took over, waiting to be
        # deleted with the run's batch (see ``drop_copy``), by their links' ids.
        self.dropping: dict[int, Link] = {}

    async def drop_copy(self, link: Link) -> Link:
        """Delete the series crmcal made in the calendar for a CRM series that the
        calendar's own split now is (``link``'s ``DROPPING``, see
        ``CalendarSplits.link_split``): its occurrences are the split's. Left as it is,
        and reported, when someone changed it since crmcal wrote it.

        Where the provider batches changes, the delete waits for the run's batch
        requests with the other deletes (``send_drops``) and the link keeps its note
        until its answer (every store of a series link keeps the keys it does not set),
        so a run cut off before then deletes it next time. Answers the link: without
        the note when the delete was made now."""
        engine = self.engine
        copy = (link.field_hashes or {}).get(DROPPING) or {}
        batching = engine.provider.capabilities.batch_changes
        if copy.get("remote_id") and link.id is not None and batching:
            self.dropping[link.id] = link
            return link
        await self.run.updates.write_pending()  # the links it replaces are the ones written
        await self.run.new.create_pending()
        remote_id = str(copy.get("remote_id") or "")
        result: ProviderError | None = None
        if remote_id:
            try:
                await engine.provider.delete(
                    engine.ctx.calendar_id, remote_id, copy.get("remote_etag") or None
                )
            except PreconditionFailed as refused:
                result = refused
        return await self._dropped(link, remote_id, result)

    async def send_drops(self) -> None:
        """Delete the copies ``drop_copy`` left for the run's batch: in batch requests,
        each answering on its own (one the calendar refuses never stops the others; a
        failure other than a changed or vanished copy leaves its note, for the next
        run to try again)."""
        while self.dropping:
            dropping, self.dropping = list(self.dropping.values()), {}
            engine = self.engine
            copies = [(link, (link.field_hashes or {}).get(DROPPING) or {}) for link in dropping]
            items = [(str(copy["remote_id"]), copy.get("remote_etag") or None)
                     for _, copy in copies]  # fmt: skip
            results = await delete_many(engine.provider, engine.ctx.calendar_id, items)
            await engine._answered(
                (link, result, partial(self._answered_drop, link, remote_id, result))
                for (link, _), (remote_id, _), result in zip(copies, items, results, strict=True)
            )

    async def _answered_drop(
        self, queued: Link, remote_id: str, result: ProviderError | None
    ) -> None:
        """A copy's delete answered: its link's note is taken out (in the database, where
        a series write of this run may have stored the link since, and in this run's
        objects of it); a link this run dropped meanwhile is left gone."""
        if result is not None and not isinstance(result, PreconditionFailed | EventNotFound):
            raise result  # the note stays: tried again next run
        self._changed_copy(remote_id, result)
        engine = self.engine
        async with engine.db.write() as session:
            found = await session.get(Link, queued.id)
            if found is None:
                return
            found.field_hashes = without_note(found.field_hashes)
        seen = [queued, engine.links.by_remote.get(queued.remote_id),
                *engine.series_links.values()]  # fmt: skip
        for known in seen:
            if known is not None and known.id == queued.id:
                known.field_hashes = without_note(known.field_hashes)

    def _changed_copy(self, remote_id: str, result: ProviderError | None) -> None:
        # Already gone (a run cut off after deleting it) is no error.
        if isinstance(result, PreconditionFailed):
            self.engine.report.problem(
                remote_id,
                "a series crmcal made, now held by a split made in the calendar, was "
                "changed there meanwhile; left as it is",
            )

    async def _dropped(self, link: Link, remote_id: str, result: ProviderError | None) -> Link:
        """The copy's delete answered at once: the link without the note."""
        engine = self.engine
        self._changed_copy(remote_id, result)
        dropped = await engine.links.store(link, field_hashes=without_note(link.field_hashes))
        for series_id, known in list(engine.series_links.items()):
            if known is link:
                engine.series_links[series_id] = dropped
        return dropped

    async def left_copy(self, ref: RemoteRef) -> bool:
        """Whether ``ref`` is the series crmcal made for a CRM series that a split made
        in the calendar took over, left in the calendar by a run cut off before it
        deleted it (``drop_copy``): deleted now, never taken for a series of its own or
        a split of another."""
        engine = self.engine
        event = ref.event
        if event is None or not event.crm_id:
            return False
        async with engine.db.read() as session:
            series_id = await session.scalar(
                select(ActivitySeries.id).where(
                    ActivitySeries.uid == event.crm_id,
                    ActivitySeries.owner_id == engine.ctx.owner.id,
                )
            )
        link = await engine._series_link(series_id) if series_id is not None else None
        if link is None or link.remote_id == ref.id:
            return False
        copy = (link.field_hashes or {}).get(DROPPING) or {}
        if copy.get("remote_id") != ref.id:
            return False
        await self.drop_copy(link)
        return True


def without_note(hashes: Mapping[str, Any] | None) -> dict[str, Any]:
    """A link's field hashes without the note of a copy to delete (``DROPPING``)."""
    return {key: value for key, value in (hashes or {}).items() if key != DROPPING}
