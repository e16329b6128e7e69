"""Relinking: an unlinked calendar event found to belong to a CRM activity (it carries
or derives from the activity's id) is linked to it, then settled as a linked pair.

A first sync against a calendar crmcal wrote to before, or a run cut off before it
saved a link, finds such pairs; they are linked, never imported twice. When both
sides already say the same, the pair is in sync at once, with no conflict.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from crmcal.crm.tables import Activity
from crmcal.model import CalendarEvent, RemoteRef
from crmcal.sync.links import TRASHED, field_hashes
from crmcal.sync.pair import Pair
from crmcal.sync.states import LinkOrigin
from crmcal.sync.tables import Link

if TYPE_CHECKING:
    from crmcal.sync.engine import Engine


class Relinking:
    """The relinking of one run's unlinked pairs."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def link(self, pair: Pair, activity: Activity, ref: RemoteRef) -> None:
        """An unlinked event that belongs to an activity: link them, then reconcile."""
        engine = self.engine
        event = ref.event
        assert event is not None
        if engine._skip_recurring(pair):
            return
        crm_hash, remote_hash = engine._crm_hash(activity), event.content_hash()
        origin = LinkOrigin.CRM if event.crm_id == activity.uid else LinkOrigin.CALENDAR
        link = Link(
            connection_id=engine.ctx.connection_id,
            activity_id=activity.id,
            remote_id=ref.id,
            remote_uid=event.uid,
            remote_etag=ref.etag,
            origin=origin,
            # Unknown common ancestor: both sides count as changed unless equal.
            crm_hash=None,
            remote_hash=None,
        )
        if crm_hash == remote_hash or self._agrees(activity, event):
            # The same item on both sides (written alike, or the activity already is
            # what the event says): in sync, nothing to decide, no conflict.
            await engine.links.store(
                link,
                crm_hash=crm_hash,
                remote_hash=remote_hash,
                field_hashes=field_hashes(engine._event_of(activity), event),
            )
            return
        if (known := engine.written.explains(activity.id, remote_hash)) is not None:
            # Written by a run that stopped before linking it: not the calendar's edit.
            link.crm_hash, link.remote_hash = known
        if activity.deleted_at is not None and not engine._remote_absent(pair):
            # The event is still (or again) in the calendar: keep the activity.
            link.crm_hash = TRASHED
        link = await engine.links.store(link)
        pair.link = link
        await engine._settle_linked(pair, link)

    def _agrees(self, activity: Activity, event: CalendarEvent) -> bool:
        """Whether importing the event would leave the live activity as it is.

        The two renderings of one item can differ without anyone having edited
        either (the owner's own attendee entry, a resource, a trimmed title ...):
        compared as activity fields, they are the same item.
        """
        engine = self.engine
        if activity.deleted_at is not None or engine._remote_absent(Pair(remote=RemoteRef(
            id="", etag="", event=event))):  # fmt: skip
            return False
        try:
            fields = engine._fields(event, activity)
        except (ValueError, TypeError):
            return False
        if fields["all_day"] != activity.all_day:
            return False
        if activity.all_day:
            start: Any = activity.start_date.isoformat() if activity.start_date else None
            end: Any = activity.end_date.isoformat() if activity.end_date else None
            times = (fields["start"], fields["end"]) == (start, end)
        else:
            moments = [dt.datetime.fromisoformat(v) if v else None
                       for v in (fields["start"], fields["end"])]  # fmt: skip
            times = moments == [activity.start_at, activity.end_at]
        if not times:
            return False
        plain = ("subject", "location", "note", "busy", "visibility", "reminder_minutes")
        if any(fields[name] != getattr(activity, name) for name in plain):
            return False
        if "participants" in fields:
            theirs = sorted((p["email"].lower(), p["status"]) for p in fields["participants"])
            ours = sorted((p.email.lower(), p.status) for p in activity.participants if p.email)
            if theirs != ours:
                return False
        return True
