"""What to do with one item, given what each side did since the last sync.

Pure: no I/O, so the rules can be read (and tested) on their own. The rules,
in vdirsyncer's spirit:

* a side changed iff its content digest moved since the last sync;
* only one side changed -> copy it to the other (a deletion too);
* both changed -> merged field by field (``merge``): a field changed on one side
  takes that side's value, and only a field changed on both sides to different
  values goes to the connection's conflict policy (without per-field digests of the
  last sync, as right after relinking, the policy picks the whole item);
* an edit beats a deletion (nothing is lost by keeping an item);
* a one-way connection never writes to the side it only reads.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass

from crmcal.sync.options import writes_calendar, writes_crm
from crmcal.sync.states import Winner


class Act(enum.Enum):
    NOTHING = "nothing"  # remember both sides as they are now
    PUSH_CREATE = "push_create"  # create the event from the activity
    PUSH_UPDATE = "push_update"  # overwrite the event with the activity
    PUSH_DELETE = "push_delete"  # delete the event
    PULL_UPDATE = "pull_update"  # overwrite the activity with the event (restoring it)
    PULL_TRASH = "pull_trash"  # move the activity to the trash
    UNLINK = "unlink"  # both sides are gone: forget the pair
    MERGE = "merge"  # both changed: each side gets the other's changes, field by field


class State(enum.Enum):
    UNCHANGED = "unchanged"
    CHANGED = "changed"
    GONE = "gone"  # deleted (CRM: in the trash; calendar: deleted or cancelled)


@dataclass(frozen=True)
class Decision:
    act: Act
    conflict: bool = False
    winner: Winner | None = None  # when conflict


def decide(
    crm: State, calendar: State, sync_type: str, crm_wins: bool, overlap: bool | None = None
) -> Decision:
    """The action for a linked pair. ``crm_wins`` is the policy's verdict if both changed;
    ``overlap`` whether both changed a field to different values (None: not known)."""
    push, pull = writes_calendar(sync_type), writes_crm(sync_type)
    if crm is State.UNCHANGED and calendar is State.UNCHANGED:
        return Decision(Act.NOTHING)
    if crm is State.GONE and calendar is State.GONE:
        return Decision(Act.UNLINK)
    if calendar is State.UNCHANGED:
        if not push:
            return Decision(Act.NOTHING)
        return Decision(Act.PUSH_DELETE if crm is State.GONE else Act.PUSH_UPDATE)
    if crm is State.UNCHANGED:
        if not pull:
            # The calendar is only written to: a calendar edit is overwritten by
            # the next CRM change; a deleted event is made again by it.
            return Decision(Act.UNLINK if calendar is State.GONE else Act.NOTHING)
        return Decision(Act.PULL_TRASH if calendar is State.GONE else Act.PULL_UPDATE)
    return _both_moved(crm, calendar, push, pull, crm_wins, overlap)


def _both_moved(
    crm: State, calendar: State, push: bool, pull: bool, crm_wins: bool, overlap: bool | None
) -> Decision:
    """``decide`` for a pair both sides moved, at most one of them by a deletion:
    an edit beats a deletion, a one-way connection copies its one way, and a two-way
    one merges (``overlap`` known) or lets the policy pick the whole item."""
    if crm is State.GONE:  # trashed in the CRM, edited in the calendar: the edit wins
        return Decision(Act.PULL_UPDATE) if pull else Decision(Act.PUSH_DELETE)
    if calendar is State.GONE:  # edited in the CRM, deleted in the calendar: the edit wins
        return Decision(Act.PUSH_CREATE) if push else Decision(Act.PULL_TRASH)
    if not pull:
        return Decision(Act.PUSH_UPDATE)
    if not push:
        return Decision(Act.PULL_UPDATE)
    if overlap is not None:
        winner = (Winner.CRM if crm_wins else Winner.CALENDAR) if overlap else None
        return Decision(Act.MERGE, conflict=overlap, winner=winner)
    if crm_wins:
        return Decision(Act.PUSH_UPDATE, conflict=True, winner=Winner.CRM)
    return Decision(Act.PULL_UPDATE, conflict=True, winner=Winner.CALENDAR)


def crm_edit_is_later(crm_time: dt.datetime, calendar_time: dt.datetime) -> bool:
    """The ``latest`` policy's rule: the CRM's edit wins iff it is not earlier than the
    calendar's.

    Each time is taken at the precision its side keeps: the CRM's ``updated_at`` in
    microseconds, the calendar's last-modified time as the service gives it (Google
    milliseconds, Graph fractions of a second, CalDAV's ``LAST-MODIFIED`` whole
    seconds). Rounding both to whole seconds made two edits in one second a tie that
    the CRM always won, losing a later calendar edit. A service's time is its edit's
    moment cut to that precision, so a CRM edit inside the calendar's last tick (the
    same millisecond on Google, the same second on CalDAV) cannot be ordered against
    it: that tie, and an exact one, goes to the CRM, whose edit crmcal saw made."""
    return crm_time >= calendar_time
