"""Conflicts of one sync run: which side wins one, what becomes of a decision about
someone else's meeting, and the record kept of each (``SyncConflict``).

A conflict is recorded with both full versions, the winner and the result, once per
item and calendar version: decided again (a pull left for the next run, a write
answered 412), the same record is brought up to date and counted once.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from crmcal.crm.tables import Activity, utcnow
from crmcal.db import Database
from crmcal.model import CalendarEvent
from crmcal.sync import merge
from crmcal.sync.decisions import Act, Decision, crm_edit_is_later
from crmcal.sync.pair import Pair
from crmcal.sync.report import SyncReport
from crmcal.sync.states import Winner
from crmcal.sync.tables import SyncConflict

# Conflict versions compared as their JSON column holds them (keys in order).
_JSON_KEY = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)


def crm_wins(policy: str, activity: Activity | None, event: CalendarEvent | None) -> bool:
    """Whether the CRM's side wins under the connection's conflict ``policy``."""
    if policy != "latest":
        return policy == "crm"
    crm_time = (activity.deleted_at or activity.updated_at) if activity else None
    # An event without a modification time changed after the last sync, as
    # far as anyone can tell: count it as changed when it was seen.
    calendar_time = (event.last_modified if event else None) or utcnow()
    if crm_time is None:
        return False
    return crm_edit_is_later(crm_time, calendar_time)


def for_invitation(decision: Decision) -> Decision:
    """What becomes of a decision about someone else's meeting: nothing is written to
    the calendar; an invitation gone from the calendar goes to the CRM's trash."""
    match decision.act:
        case Act.PUSH_UPDATE | Act.PUSH_DELETE:
            return Decision(Act.NOTHING)
        case Act.PUSH_CREATE:
            return Decision(Act.PULL_TRASH)
        case _:
            return Decision(decision.act)  # the calendar's version is no conflict


class Conflicts:
    """The conflict records of one run of one connection."""

    def __init__(self, db: Database, connection_id: int, report: SyncReport) -> None:
        self.db = db
        self.connection_id = connection_id
        self.report = report
        # The conflicts this run recorded: (activity id, event id) -> the record's id.
        self.recorded: dict[tuple[int | None, str | None], int] = {}

    async def record(
        self, pair: Pair, decision: Decision, crm_event: CalendarEvent | None, policy: str
    ) -> None:
        """Record both full versions (every synced field), the winner and the result;
        ``crm_event``: the activity as the calendar would get it."""
        activity = pair.activity
        event = pair.remote.event if pair.remote else None
        crm_version = None
        if activity is not None:
            crm_version = {
                "subject": activity.subject,
                **(merge.version(crm_event) or {}),
                "updated_at": activity.updated_at.isoformat(),
                "deleted": activity.deleted_at is not None,
            }
        calendar_version = merge.version(event)
        result: dict[str, Any] | None = None
        plan = pair.plan
        if plan is not None and event is not None and crm_event is not None:
            result = {
                **(merge.version(merge.merged(event, crm_event, plan.from_crm)) or {}),
                "conflicting": sorted(plan.conflicting),
                "from_crm": sorted(plan.from_crm),
                "from_calendar": sorted(plan.from_calendar),
            }
        elif decision.winner is not None:
            result = merge.version(crm_event if decision.winner == Winner.CRM else event)
        activity_id = activity.id if activity else None
        remote_id = pair.remote.id if pair.remote else None
        values: dict[str, Any] = {
            "policy": policy,
            "winner": decision.winner or "",
            "crm_version": crm_version,
            "calendar_version": calendar_version,
            "result": result,
        }
        async with self.db.write() as session:
            same = await self._same(session, activity_id, remote_id, calendar_version)
            if same is not None:
                # Decided again (a pull left for the next run, a write answered 412):
                # the record says how it was settled last, and counts once.
                for name, value in values.items():
                    setattr(same, name, value)
                same.detected_at = utcnow()
                return
            recorded = SyncConflict(
                connection_id=self.connection_id,
                activity_id=activity_id,
                remote_id=remote_id,
                **values,
            )
            session.add(recorded)
            await session.flush()
            self.recorded[(activity_id, remote_id)] = recorded.id
        self.report.conflicts += 1

    async def _same(
        self,
        session: AsyncSession,
        activity_id: int | None,
        remote_id: str | None,
        calendar_version: dict[str, Any] | None,
    ) -> SyncConflict | None:
        """The record of the conflict being decided, when it has one already: this run's
        of the same item, or the item's last one if it names the same calendar version.

        A conflict's calendar side is settled once the decision is applied (the link
        then holds that version), so the same version in conflict again means the
        decision was not applied: the engine left the pull for the next run (a CRM
        edit made while it ran) or a write failed, and this is the same conflict."""
        known = self.recorded.get((activity_id, remote_id))
        if known is not None:
            return await session.get(SyncConflict, known)
        if activity_id is None:
            return None
        last = await session.scalar(
            select(SyncConflict)
            .where(
                SyncConflict.connection_id == self.connection_id,
                SyncConflict.activity_id == activity_id,
            )
            .order_by(SyncConflict.id.desc())
            .limit(1)
        )
        if last is None or last.remote_id != remote_id:
            return None
        return last if _same_json(last.calendar_version, calendar_version) else None


def _same_json(stored: object, new: object) -> bool:
    """Whether a value read back from a JSON column is ``new`` (compared as stored)."""
    return _JSON_KEY.encode(stored) == _JSON_KEY.encode(new)
