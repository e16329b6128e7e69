"""Problems and refusals past their caps are counted, and the status shows the count.

A connection keeps its last ``PROBLEMS_KEPT`` problems and ``REFUSALS_KEPT`` refusals
(``sync/run_end``); what a sync finds beyond those is dropped. The status says how many
were (``left_out``), so that whoever reads it knows the list is not all there is. The
count is the run's end's own: tested here on the run's end, and through a sync on each
backend with the cap lowered (the caps on a real server: tests/providers/test_refused_writes).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

import pytest

from crmcal.crm.tables import User
from crmcal.db import Database
from crmcal.model import ChangeListing
from crmcal.sync import connections, run_end
from crmcal.sync.context import RunContext
from crmcal.sync.options import SyncOptions
from crmcal.sync.report import SyncReport
from crmcal.sync.run_end import PROBLEMS_KEPT, REFUSALS_KEPT, RunEnd
from crmcal.sync.written import Written
from tests.engine_world import World

Problems = list[dict[str, str]]


def _end(found: Problems, *, whole: bool = False, seen: set[str] | None = None) -> RunEnd:
    """The end of a run that found ``found``; ``whole``: a run that looked at every
    activity (the first, or one with new options)."""
    ctx = RunContext(
        connection_id=1, calendar_id="cal", sync_type="two_way", owner=User(),
        options=SyncOptions(), push=True, pull=True, sync_from=dt.datetime.now(dt.UTC),
        own_addresses=frozenset(), feed_head=0, crm_cursor=None if whole else 1,
        remote_cursor=None, options_changed=False, options_digest="", force=False,
        base_url="https://crm.test", mails_attendees=False,
    )  # fmt: skip
    return RunEnd(
        ctx, ChangeListing(full=False), False, SyncReport(problems=found), seen or set(),
        Written(cast(Database, None), 1),
    )  # fmt: skip


def unreadable(count: int, name: str = "event") -> Problems:
    return [{"item": f"{name}-{n}", "reason": "unreadable", "etag": '"1"'} for n in range(count)]


def refused(count: int, name: str = "activity") -> Problems:
    return [{"item": f"{name} {n}", "reason": "refused", "refused": "x"} for n in range(count)]


def test_what_a_run_drops_past_each_cap_is_counted() -> None:
    listed, left_out = _end(unreadable(PROBLEMS_KEPT + 7) + refused(REFUSALS_KEPT + 3)).problems(
        [], None, full=False
    )
    assert len(listed) == PROBLEMS_KEPT + REFUSALS_KEPT
    assert left_out == {"problems": 7, "refusals": 3}
    # The newest are kept.
    assert listed[0]["item"] == "event-7"


def test_nothing_dropped_counts_nothing() -> None:
    listed, left_out = _end(unreadable(PROBLEMS_KEPT) + refused(REFUSALS_KEPT)).problems(
        [], None, full=False
    )
    assert len(listed) == PROBLEMS_KEPT + REFUSALS_KEPT
    assert left_out is None


def test_later_runs_add_what_they_drop_and_a_run_that_reads_all_counts_anew() -> None:
    first, left_out = _end(unreadable(PROBLEMS_KEPT + 5) + refused(REFUSALS_KEPT + 2)).problems(
        [], None, full=False
    )
    # The next run finds more: the earlier problems stay listed, so as many more go.
    more = unreadable(3, "later") + refused(1, "later activity")
    second, left_out = _end(more).problems(first, left_out, full=False)
    assert left_out == {"problems": 8, "refusals": 3}
    # A quiet run leaves the count as it is.
    assert _end([]).problems(second, left_out, full=False) == (second, left_out)
    # A full listing says every problem anew (the refusals stay): those it drops alone.
    after_full = _end(unreadable(PROBLEMS_KEPT + 1)).problems(second, left_out, full=True)[1]
    assert after_full == {"problems": 1, "refusals": 3}
    # A run that looks at every activity says every refusal anew.
    after_whole = _end(refused(4), whole=True).problems(second, left_out, full=False)[1]
    assert after_whole == {"problems": 8, "refusals": 0}


async def test_the_status_shows_how_many_problems_were_left_out(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(run_end, "PROBLEMS_KEPT", 2)  # as at 200, with a few items
    for n in range(5):
        world.calendar.unreadable[f"broken-{n}"] = '"1"'
    await world.sync_via_runner()
    status = await _status(world)
    assert (len(status["problems"]), status["left_out"]) == (2, {"problems": 3, "refusals": 0})

    # A full listing (the cursor expired) names all six: counted anew, not added.
    world.calendar.unreadable["broken-5"] = '"1"'
    world.calendar.expired_before = world.calendar._position + 1
    await world.sync_via_runner()
    status = await _status(world)
    assert (len(status["problems"]), status["left_out"]) == (2, {"problems": 4, "refusals": 0})


async def _status(world: World) -> dict[str, Any]:
    async with world.db.read() as session:
        conn = await world.connection()
        owner = await world.user(session)
        return (await connections.status_of(session, owner, conn)).model_dump(mode="json")
