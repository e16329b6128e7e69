"""One item of a sync run as both sides currently show it (``Pair``).

The engine pairs each calendar event with its CRM activity through the link table
and settles them together; the modules that write either side take the pair.
"""

from __future__ import annotations

from dataclasses import dataclass

from crmcal.crm.tables import Activity
from crmcal.model import RemoteRef
from crmcal.sync import merge
from crmcal.sync.tables import Link


@dataclass
class Pair:
    """One item as both sides currently show it."""

    link: Link | None = None
    activity: Activity | None = None
    remote: RemoteRef | None = None  # content, when the calendar side moved or is new
    remote_gone: bool = False
    activity_id: int | None = None
    retried: bool = False  # decided again after a precondition failed
    plan: merge.Plan | None = None  # both sides changed: which fields each gives

    def item(self) -> str:
        """How problems name the item: its event's id, else its activity."""
        if self.remote is not None:
            return self.remote.id
        if self.link is not None:
            return self.link.remote_id
        activity_id = self.activity.id if self.activity is not None else self.activity_id
        return f"activity {activity_id}"
