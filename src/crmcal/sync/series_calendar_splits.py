"""A split made in the calendar ("this and following") becomes a split of the CRM
series.

A calendar client that ends a series and starts another one from an occurrence
writes the old master with an earlier end and a new master: that becomes a split of
the CRM series (``crm.series.split``), the later occurrences keeping their ids and
CRM data, never a new series plus deletions. The split's link is stored in the
split's own transaction (``link_split``)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from crmcal.crm import series as crm_series
from crmcal.crm import times
from crmcal.crm.errors import CrmError
from crmcal.crm.tables import Activity, ActivitySeries, utcnow
from crmcal.model import (
    CalendarEvent,
    RemoteRef,
)
from crmcal.sync import series_mapping
from crmcal.sync.series_copies import DROPPING
from crmcal.sync.series_rows import load_occurrences
from crmcal.sync.series_units import (
    Digests,
    digests_of,
    plain_title,
    remembered_hashes,
    rule_shape,
    utc_instant,
    within_horizon_of,
)
from crmcal.sync.states import LinkOrigin
from crmcal.sync.tables import Link

if TYPE_CHECKING:
    from crmcal.sync.series_sync import SeriesSync

# The length of each frequency's step, for telling how far a split's new series may
# start from the occurrence it was cut at.
_STEPS = {
    "SECONDLY": dt.timedelta(seconds=1),
    "MINUTELY": dt.timedelta(minutes=1),
    "HOURLY": dt.timedelta(hours=1),
    "DAILY": dt.timedelta(days=1),
    "WEEKLY": dt.timedelta(weeks=1),
    "MONTHLY": dt.timedelta(days=28),
    "YEARLY": dt.timedelta(days=365),
}


class CalendarSplits:
    """Telling and taking the splits ("this and following") made in the calendar."""

    def __init__(self, run: SeriesSync) -> None:
        self.run = run
        self.engine = run.engine
        # The new calendar series of this run already taken as a split of another.
        self.taken: set[str] = set()

    def source_of(self, event: CalendarEvent, event_id: str = "") -> tuple[Any, int] | None:
        """The linked pair of this run whose calendar series now ends where ``event``
        (a new series, ``event_id`` in the calendar) starts: (the pair, its series id)."""
        for pair in self._candidates(event):
            cut = self._cut_of(pair, pair.remote.event, event, event_id)
            if cut is not None:
                if self._nearer_split(pair, cut, event, event_id):
                    return None  # another new series continues it there: this one is new
                return pair, pair.activity.series_id
        return None

    def _nearer_split(
        self, pair: Any, cut: dt.datetime, event: CalendarEvent, event_id: str
    ) -> bool:
        """Whether another new calendar series of this run is cut from ``pair`` at the
        same occurrence and starts nearer to it than ``event`` does: a series the user
        made the same week is not taken for a split whose own new part is there too."""

        def distance(found: CalendarEvent, found_id: str) -> tuple[dt.timedelta, str]:
            return abs(utc_instant(found.start, found.timezone) - cut), found_id

        mine = distance(event, event_id)
        for other in self.engine.pairs:
            remote = other.remote
            if other.link is not None or remote is None or remote.id == event_id:
                continue
            found = remote.event
            if found is None or found.recurrence is None or remote.id in self.taken:
                continue
            if (
                distance(found, remote.id) < mine
                and self._cut_of(pair, pair.remote.event, found, remote.id) == cut
            ):
                return True
        return False

    def _candidates(self, event: CalendarEvent) -> list[Any]:
        """The linked pairs of this run whose calendar series was cut (its rule now
        ends) and started before ``event``."""
        start = utc_instant(event.start, event.timezone)
        found = []
        for pair in self.engine.pairs:
            old = pair.remote.event if pair.remote is not None else None
            activity = pair.activity
            if (
                pair.link is None
                or old is None
                or old.recurrence is None
                or activity is None
                or activity.series_id is None
                or activity.series_id in self.engine.series_done
                or pair.remote is None
                or pair.remote.etag == pair.link.remote_etag
            ):
                continue
            rule = old.recurrence.rrule.upper()
            if "UNTIL=" not in rule and "COUNT=" not in rule:
                continue
            if utc_instant(old.start, old.timezone) >= start:
                continue
            found.append(pair)
        return found

    def _cut_of(
        self, pair: Any, old: CalendarEvent, new: CalendarEvent, new_id: str = ""
    ) -> dt.datetime | None:
        """The occurrence of the CRM series where ``new`` (a new calendar series,
        ``new_id`` there) split off from ``old``, or None.

        The old series' new rule makes none of the CRM series' occurrences from there
        on, and ``new`` starts where one of them was, or near it: clients that split
        "this and following" often move the following occurrences too (09:00 to 14:00,
        or to the next day), and rename them. So ``new`` is cut at
        - the first of them, when it starts on its day, or within one period of the
          series around it (whatever its title: started where the old one ends);
        - the very moment of a later one, or the one nearest its start within a
          period when it keeps the old title: a client that split the series again at
          an earlier occurrence left one new series per cut;
        - the one of the date the calendar names, whatever the new start, when it
          says ``new`` is the old one's continuation (Google names it
          ``{old id}_R{date of the cut}``).
        A series that merely starts later (weeks on, another title) is no split."""
        stored = pair.link.field_hashes or {}
        before = (stored.get("series_calendar") or stored.get("series") or {}).get("recurrence")
        if before is not None and before == digests_of(old, lambda _m: True).master["recurrence"]:
            return None  # the rule did not change
        cuts = self._cuts(pair.activity.series_id, old, pair.link.last_synced_at)
        if cuts is None:
            return None
        series, moments = cuts
        zone = times.zone(series.timezone)
        new_day = (
            new.start
            if not isinstance(new.start, dt.datetime)
            else new.start.astimezone(zone).date()
        )
        if moments[0].astimezone(zone).date() == new_day:
            return moments[0]
        start = utc_instant(new.start, new.timezone)
        if start in moments:
            # A later cut (split again, at an earlier occurrence): at its very moment.
            return start
        nearest = min(moments, key=lambda m: (abs(m - start), m))
        same_title = plain_title(new.summary) == plain_title(old.summary)
        if pair.remote is not None and new_id.startswith(f"{pair.remote.id}_R"):
            return _cut_named(new_id[len(pair.remote.id) + 2 :], moments, zone)
        if abs(nearest - start) < _period(series) and (nearest == moments[0] or same_title):
            return nearest
        return moments[0] if same_title else None

    def _cuts(
        self, series_id: int, old: CalendarEvent, since: dt.datetime | None = None
    ) -> tuple[ActivitySeries, list[dt.datetime]] | None:
        """The CRM series' live occurrences after the end of ``old``'s new rule, in
        order. When none is live there, those moved to the trash after ``since`` (the
        last sync): the CRM cancelled every one of them while the calendar split them
        off, and the split is still theirs (its link carries the cancellations to it)."""
        cached = self.engine.series_rows.get(series_id)
        if cached is None:
            return None
        series, occurrences = cached
        assert old.recurrence is not None
        rule = crm_series.rule_of(series)
        rule = dataclasses.replace(rule, rrule=old.recurrence.rrule)
        until = series.materialised_until or utcnow()
        try:
            slots = {rule.instant(m) for m in rule.starts(rule.instant(rule.first), until, 100_000)}
        except CrmError:
            return None
        # The old rule's last occurrence; none when it now makes only occurrences the
        # series leaves out (its first ones cancelled): then every live one is cut.
        last = max(slots, default=None)
        after = [
            o
            for o in occurrences
            if o.original_start_at is not None
            and o.original_start_at not in slots
            and (last is None or o.original_start_at > last)
        ]
        cut = [o.original_start_at for o in after if o.deleted_at is None]
        if not cut and since is not None:
            cut = [o.original_start_at for o in after if _trashed_after(o, since)]
        return (series, sorted(c for c in cut if c is not None)) if cut else None

    async def prepare(self) -> None:
        """Load the CRM series of the linked calendar series that changed this run, for
        telling splits made in the calendar (only when a new series came in too)."""
        engine = self.engine
        new_series = any(
            p.link is None
            and p.remote is not None
            and p.remote.event is not None
            and p.remote.event.recurrence is not None
            for p in engine.pairs
        )
        if not new_series:
            return
        for pair in engine.pairs:
            old = pair.remote.event if pair.remote is not None else None
            activity = pair.activity
            if pair.link is None or old is None or old.recurrence is None or activity is None:
                continue
            if activity.series_id is None or activity.series_id in engine.series_rows:
                continue
            series, occurrences = await self.run.load(activity.series_id)
            if series is not None:
                engine.series_rows[activity.series_id] = (series, occurrences)

    async def split(self, source: tuple[Any, int], ref: RemoteRef) -> None:
        """The CRM series splits where the calendar's did: its later occurrences (with
        their ids and CRM data) become a new CRM series, which takes the new calendar
        series' fields and is linked to it; the old one takes its calendar edits.

        A client that split the series again at an earlier occurrence left one new
        series per cut: all of them are taken here, the latest cut first, so that each
        CRM part holds the occurrences of its calendar series and no other."""
        engine = self.engine
        pair, series_id = source
        old = pair.remote.event
        chain: dict[dt.datetime, RemoteRef] = {}
        for other in [ref, *(p.remote for p in engine.pairs if p.link is None and p.remote)]:
            event = other.event
            if event is None or event.recurrence is None or other.id in self.taken:
                continue
            if other is not ref and self.source_of(event, other.id) != source:
                continue
            cut = self._cut_of(pair, old, event, other.id)
            if cut is not None and cut not in chain:
                chain[cut] = other
        assert ref in chain.values()
        # Whether the CRM changed the series' rule since the last sync too (its own
        # "this and following" at another occurrence): then its end is its own edit.
        before = (pair.link.field_hashes or {}).get("series") or {}
        series, occurrences = await self.run.load(series_id)
        assert series is not None
        crm_rule = digests_of(
            self.run.crm_event(series, occurrences), within_horizon_of(series)
        ).master["recurrence"]
        split_too = before.get("recurrence") not in (None, crm_rule)
        kept = (pair.link.field_hashes or {}).get("occurrences") or {}
        old_link = pair.link
        made: list[tuple[int, Link | None, RemoteRef]] = []
        for cut in sorted(chain, reverse=True):
            self.taken.add(chain[cut].id)
            old_link, new_id, link = await self._split_at(
                series_id, old_link, cut, chain[cut], split_too, kept
            )
            made.append((new_id, link, chain[cut]))
        engine.series_done.update((series_id, *(new_id for new_id, _, _ in made)))
        old_series, old_occurrences = await self.run.load(series_id)
        assert old_series is not None
        await self.run.linked.reconcile_read(
            old_series, old_occurrences, old_link, pair.remote, False
        )
        for new_id, link, made_from in reversed(made):
            if link is None:
                continue
            engine.series_links[new_id] = link
            new_series, new_occurrences = await self.run.load(new_id)
            assert new_series is not None
            await self.run.linked.reconcile_read(
                new_series, new_occurrences, link, made_from, False
            )
            engine.report.created += 1
            if split_too:
                await self.run.crm_splits.both_split(old, made_from, new_series, link)

    async def _split_at(
        self,
        series_id: int,
        old_link: Link,
        first_cut: dt.datetime,
        ref: RemoteRef,
        split_too: bool,
        kept: Mapping[str, Any],
    ) -> tuple[Link, int, Link | None]:
        """One cut of ``split``: (the old link, the new series' id, its link)."""
        engine, ctx = self.engine, self.engine.ctx
        event = ref.event
        assert event is not None
        # One transaction: the split, the old link's note that the CRM's new end is no
        # edit of its own, and the new series' link, so that a run cut off anywhere
        # finds either all of it or none.
        async with engine.db.write() as session:
            series = await session.get(ActivitySeries, series_id)
            assert series is not None
            anchor = await session.scalar(
                select(Activity).where(
                    Activity.series_id == series_id, Activity.original_start_at == first_cut
                )
            )
            assert anchor is not None
            later = await crm_series.split(session, series, anchor, ctx.origin)
            new_id = later.id
            old_occurrences = await load_occurrences(session, series_id)
            new_occurrences = await load_occurrences(session, new_id)
            # A part the CRM cancelled whole since the last sync is linked too (from an
            # occurrence in the trash), so that its cancellations reach the split.
            since = old_link.last_synced_at
            live = [o for o in new_occurrences if o.deleted_at is None]
            trashed = (
                not live
                and since is not None
                and all(_trashed_after(o, since) for o in new_occurrences)
            )
            stored = dict(old_link.field_hashes or {})
            if stored.get("series"):
                # The calendar's spelling of the new end is taken (no conflict).
                ours = digests_of(
                    self.run.crm_event(series, old_occurrences), within_horizon_of(series)
                )
                stored["series"] = {**stored["series"], "recurrence": ours.master["recurrence"]}
            old_link = await engine.links.store(old_link, session=session, field_hashes=stored)
            link: Link | None = None
            if live or trashed:
                # The new series' master as if the calendar had been the CRM's at the
                # last sync (its new fields come in); its occurrences as the old link
                # remembers them, so that an edit of one since then on either side is
                # that side's.
                crm_now = digests_of(
                    self.run.crm_event(later, new_occurrences), within_horizon_of(later)
                )
                base_crm = Digests(dict(crm_now.master), {})
                base_cal = Digests(dict(crm_now.master), {})
                if split_too:
                    # Split on both sides at other occurrences: the CRM's end stays (the
                    # calendar's new series ends where the CRM's later part begins), so
                    # each occurrence is in one series on both sides.
                    theirs = digests_of(event, within_horizon_of(later)).master["recurrence"]
                    base_crm.master["recurrence"] = base_cal.master["recurrence"] = theirs
                moved = {series_mapping.original_key(later, o) for o in new_occurrences}
                for side, base in (("crm", base_crm), ("calendar", base_cal)):
                    remembered = kept.get(side) or {}
                    base.occurrences = {k: v for k, v in remembered.items() if k in moved}
                link = await self.link_split(
                    session,
                    new_occurrences,
                    ref,
                    remembered_hashes({}, base_crm, base_cal),
                    old_link,
                    trashed=trashed,
                )
        if link is not None and DROPPING in (link.field_hashes or {}):
            link = await self.run.copies.drop_copy(link)
        return old_link, new_id, link

    async def link_split(
        self,
        session: AsyncSession,
        occurrences: list[Activity],
        ref: RemoteRef,
        hashes: dict[str, Any],
        source: Link,
        *,
        trashed: bool = False,
    ) -> Link | None:
        """Link a split's later CRM part (its ``occurrences``) to ``ref``, the calendar
        series it is, in the split's transaction (``session``): the one place a split
        stores its link, and never a second row for either side. The row already
        naming ``ref`` (the split taken again) or the part (sent to the calendar as a
        series of its own before the calendar's split was seen) is updated instead.

        When the part's link named another series crmcal made for the part, the
        calendar's split holds those occurrences now: the link notes that series
        (``DROPPING``) for the caller to delete once this transaction is committed
        (``SplitCopies.drop_copy``). The part's link to a series someone else made is left as it
        is (reported). ``source`` (the link of the series split) stays that series',
        whichever occurrence it is on. ``trashed``: when no occurrence of the part is
        live, one in the trash holds the link (the CRM cancelled every one of it since
        the last sync: the calendar's split is to lose them, not to bring them back)."""
        engine, ctx = self.engine, self.engine.ctx
        event = ref.event
        assert event is not None
        live = [o for o in occurrences if o.deleted_at is None] or (
            list(occurrences) if trashed else []
        )
        if not live:
            return None
        held = [
            found
            for found in await session.scalars(
                select(Link).where(
                    Link.connection_id == ctx.connection_id,
                    or_(
                        Link.remote_id == ref.id, Link.activity_id.in_([o.id for o in occurrences])
                    ),
                    Link.id != source.id,
                )
            )
        ]
        values: dict[str, Any] = {
            "remote_id": ref.id,
            "remote_uid": event.uid,
            "remote_etag": "",
            "origin": LinkOrigin.CALENDAR,
            "field_hashes": hashes,
            "last_synced_at": utcnow(),
        }
        mine = next((found for found in held if found.remote_id == ref.id), None)
        other = next((found for found in held if found.remote_id != ref.id), None)
        if mine is None and other is not None:
            if other.origin != LinkOrigin.CRM:
                engine.report.problem(
                    ref.id,
                    "a split of a series whose later part is already linked to another "
                    "calendar series; not linked",
                )
                return None
            copy = {"remote_id": other.remote_id, "remote_etag": other.remote_etag or ""}
            values["field_hashes"] = {**hashes, DROPPING: copy}
            mine = other
        if mine is not None:
            return await engine.links.store(mine, session=session, **values)
        taken = {found.activity_id for found in held} | {source.activity_id}
        anchor = next((o for o in live if o.id not in taken), None)
        if anchor is None:
            return None
        link = Link(connection_id=ctx.connection_id, activity_id=anchor.id, **values)
        return await engine.links.store(link, session=session)


def _trashed_after(occurrence: Activity, since: dt.datetime) -> bool:
    """Whether ``occurrence`` went to the trash after ``since``."""
    deleted = occurrence.deleted_at
    if deleted is None:
        return False
    if deleted.tzinfo is None:
        deleted = deleted.replace(tzinfo=dt.UTC)
    if since.tzinfo is None:
        since = since.replace(tzinfo=dt.UTC)
    return deleted > since


def _cut_named(stamp: str, moments: list[dt.datetime], zone: dt.tzinfo) -> dt.datetime:
    """The occurrence of ``moments`` on the date a Google split's id names (the first
    eight digits of ``stamp``, in UTC or the series' zone); the first one otherwise."""
    try:
        day = dt.datetime.strptime(stamp[:8], "%Y%m%d").date()
    except ValueError:
        return moments[0]
    return next(
        (m for m in moments if day in (m.astimezone(dt.UTC).date(), m.astimezone(zone).date())),
        moments[0],
    )


def _period(series: ActivitySeries) -> dt.timedelta:
    """One step of the series' rule (its frequency times its interval)."""
    freq, interval = rule_shape(series.rrule)
    try:
        count = max(int(interval), 1)
    except ValueError:
        count = 1
    return _STEPS.get(freq, dt.timedelta(weeks=1)) * count
