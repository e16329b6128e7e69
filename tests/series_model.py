"""What the series state machines (``test_engine_stateful``, ``test_series_meanwhile``,
``test_series_edges``) model of a series: its occurrences by original start, with the
values each side may end with, and a calendar series' occurrences as it shows them."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from dateutil.rrule import rrulestr

from crmcal.model import CalendarEvent

DELETED = object()


@dataclasses.dataclass
class Occurrence:
    """One occurrence of a series, by its original start (unique across series: each
    series starts at its own minute)."""

    key: dt.datetime
    value: Any = None  # its subject at the last quiet sync (DELETED: cancelled)
    crm_pending: Any = None
    cal_pending: Any = None
    # Changed on its own (an override) on each side: a series edit on that side leaves
    # it be; synced, both sides have it.
    own_crm: bool = False
    own_cal: bool = False
    # Moved to another series by a split on one side since the last sync: the other
    # side does not edit it on its own until then (splits on both sides are reconciled,
    # each side's split kept; see docs/sync.md).
    moved_by: str | None = None
    gone: bool = False

    def allowed(self) -> set[Any]:
        crm, cal = self.crm_pending, self.cal_pending
        if crm is None and cal is None:
            return {self.value}
        if cal is None:
            return {crm}
        if crm is None:
            return {cal}
        # Changed on its own on one side, the whole series edited on the other: a
        # series edit leaves an occurrence changed on its own be (another unit).
        if self.own_cal and not self.own_crm and crm is not DELETED:
            return {cal}
        if self.own_crm and not self.own_cal and cal is not DELETED:
            return {crm}
        # Both sides: the policy's pick per unit (an occurrence edited on one side and
        # cancelled on the other may end either way; neither is lost silently).
        return {crm, cal}


def _expansion(master: CalendarEvent) -> dict[dt.datetime, str | None]:
    """Each occurrence of a calendar series (original start -> its title)."""
    if master.recurrence is None:
        return {}
    assert isinstance(master.start, dt.datetime)
    rule_ = rrulestr(master.recurrence.rrule, dtstart=master.start)
    left_out = set(master.cancelled_moments())
    own = {o.recurrence_id: o.summary for o in master.overrides if not o.cancelled}
    return {moment: own.get(moment, master.summary) for moment in rule_ if moment not in left_out}
