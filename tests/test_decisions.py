"""The decision table of docs/sync.md, row by row, against ``decisions.decide``.

The table is read from the document itself, so the page and the engine cannot
drift apart: every cell's words name one action, and a row the code decides
differently (or a new row nobody mapped) fails here.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import replace
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from crmcal.model import Attendee, CalendarEvent, Recurrence, content_hash, content_hash_beside
from crmcal.sync import merge
from crmcal.sync.decisions import Act, Decision, State, crm_edit_is_later, decide
from crmcal.sync.states import Winner

DOC = Path(__file__).resolve().parents[1] / "docs" / "sync.md"
SYNC_TYPES = ("two_way", "crm_to_calendar", "calendar_to_crm")

SIDES = {
    "unchanged": State.UNCHANGED,
    "changed": State.CHANGED,
    "trashed": State.GONE,
    "deleted": State.GONE,
    "deleted or cancelled": State.GONE,
}

# The words of a cell -> the decision they mean (crm_wins -> decision for the policy).
OUTCOMES: dict[str, Decision | tuple[Decision, Decision]] = {
    "—": Decision(Act.NOTHING),
    "— (remembered)": Decision(Act.NOTHING),
    "event updated": Decision(Act.PUSH_UPDATE),
    "crm version": Decision(Act.PUSH_UPDATE),
    "activity updated": Decision(Act.PULL_UPDATE),
    "calendar version": Decision(Act.PULL_UPDATE),
    "— (overwritten by the next crm change)": Decision(Act.NOTHING),
    "event deleted": Decision(Act.PUSH_DELETE),
    "activity to the trash": Decision(Act.PULL_TRASH),
    "link forgotten; the next crm change re-creates the event": Decision(Act.UNLINK),
    "activity restored and updated (an edit beats a deletion)": Decision(Act.PULL_UPDATE),
    "activity restored and updated": Decision(Act.PULL_UPDATE),
    "event re-created (an edit beats a deletion)": Decision(Act.PUSH_CREATE),
    "event re-created": Decision(Act.PUSH_CREATE),
    "forgotten": Decision(Act.UNLINK),
    "nothing": Decision(Act.NOTHING),
}
# Both sides changed, two-way: merged; a conflict iff a field collided, whose value the
# policy picks. Without per-field digests (just relinked) the policy picks the item.
MERGED = "**merged field by field**"


def table(after: str, header_word: str) -> list[list[str]]:
    """The cells of the first table after the line starting with ``after``."""
    text = DOC.read_text().split("\n" + after, 1)[1]
    lines = [line for line in text.split("\n|", 1)[1].split("\n\n", 1)[0].splitlines()]
    header, _rule, *body = ["|" + lines[0], *lines[1:]]
    assert header_word in header
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in body]


def table_rows() -> list[tuple[str, str, str, str]]:
    """(crm side, calendar side, sync type, outcome) for every cell of the table."""
    rows = []
    for cells in table("## Decisions", "two-way"):
        crm, calendar, *outcomes = cells
        assert len(outcomes) == len(SYNC_TYPES), cells
        for sync_type, outcome in zip(SYNC_TYPES, outcomes, strict=True):
            rows.append((crm, calendar, sync_type, outcome))
    return rows


ROWS = table_rows()


def test_the_table_covers_every_pair_of_states_but_the_quiet_one() -> None:
    covered = {(SIDES[crm], SIDES[calendar]) for crm, calendar, _, _ in ROWS}
    every = {(a, b) for a in State for b in State} - {(State.UNCHANGED, State.UNCHANGED)}
    assert covered == every


@pytest.mark.parametrize(("crm", "calendar", "sync_type", "outcome"), ROWS)
def test_each_cell_of_the_table(crm: str, calendar: str, sync_type: str, outcome: str) -> None:
    for crm_wins in (True, False):
        for overlap in (None, False, True):
            got = decide(SIDES[crm], SIDES[calendar], sync_type, crm_wins, overlap)
            if outcome != MERGED:
                assert got == OUTCOMES[re.sub(r"\s+", " ", outcome.lower())]
            elif overlap is None:  # no per-field base: the policy picks the whole item
                act = Act.PUSH_UPDATE if crm_wins else Act.PULL_UPDATE
                assert got == Decision(
                    act, conflict=True, winner=Winner.CRM if crm_wins else Winner.CALENDAR
                )
            else:
                winner = (Winner.CRM if crm_wins else Winner.CALENDAR) if overlap else None
                assert got == Decision(Act.MERGE, conflict=overlap, winner=winner)


FIELD_ROWS = table("For each field, against", "in the CRM")
BASE, X, Y = "base", "x", "y"


@pytest.mark.parametrize(("crm", "calendar", "becomes", "conflict"), FIELD_ROWS)
@pytest.mark.parametrize("field", list(merge.FIELDS))
def test_each_row_of_the_field_merge_table(
    field: str, crm: str, calendar: str, becomes: str, conflict: str
) -> None:
    base = dict.fromkeys(merge.FIELDS, BASE)
    crm_now = {**base, field: X if crm.startswith("changed") else BASE}
    calendar_now = dict(base)
    if calendar == "changed":
        calendar_now[field] = Y
    elif calendar == "changed to the same value":
        calendar_now[field] = X
    elif calendar == "changed to another value":
        calendar_now[field] = Y
    for crm_wins in (True, False):
        plan = merge.plan(crm_now, calendar_now, base, base, crm_wins)
        assert plan.conflict is (conflict == "yes")
        takes_crm = field in plan.from_crm
        takes_calendar = field in plan.from_calendar
        if becomes == "the CRM's value":
            assert (takes_crm, takes_calendar) == (True, False)
        elif becomes == "the calendar's value":
            assert (takes_crm, takes_calendar) == (False, True)
        elif becomes == "the conflict policy's pick":
            assert (takes_crm, takes_calendar) == (crm_wins, not crm_wins)
        else:  # the same on both sides already: nothing to copy either way
            assert becomes in ("that value", "as it was")
            assert not takes_calendar
            assert crm_now[field] == calendar_now[field]


@pytest.mark.parametrize("sync_type", SYNC_TYPES)
def test_nothing_moved_means_nothing_to_do(sync_type: str) -> None:
    assert decide(State.UNCHANGED, State.UNCHANGED, sync_type, True) == Decision(Act.NOTHING)


def test_every_action_is_reachable() -> None:
    """No action the engine has to handle that no decision ever makes."""
    made = {
        decide(a, b, sync_type, crm_wins, overlap).act
        for a in State
        for b in State
        for sync_type in SYNC_TYPES
        for crm_wins in (True, False)
        for overlap in (None, False, True)
    }
    assert made == set(Act)


BERLIN_NINE = dt.datetime(2027, 3, 1, 9, tzinfo=ZoneInfo("Europe/Berlin"))
BASE_EVENT = CalendarEvent(
    summary="Review",
    start=BERLIN_NINE,
    end=dt.datetime(2027, 3, 1, 10, tzinfo=ZoneInfo("Europe/Berlin")),
    description="Agenda",
    reminder_minutes=15,
    attendees=(Attendee("Ann@x.example", "Ann"), Attendee("bob@x.example")),
    recurrence=Recurrence("FREQ=WEEKLY;COUNT=4"),
)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"summary": "Review, moved"},
        # The same instant in another zone, and the attendees in another order: equal
        # digests, taken from the other side or not.
        {"start": BERLIN_NINE.astimezone(dt.UTC)},
        {"attendees": tuple(reversed(BASE_EVENT.attendees))},
        {"attendees": (Attendee("ann@x.example", "Ann"),)},
        {"busy": 1, "private": 0},  # equal to True and False, not the same JSON
        {"reminder_minutes": 15.0},
        {"description": "Agenda\n\n-- deal: X --"},
        {"recurrence": Recurrence("FREQ=WEEKLY;COUNT=5")},
        {"all_day": True, "start": dt.date(2027, 3, 1), "end": dt.date(2027, 3, 2)},
    ],
)
def test_digests_taken_from_the_other_side_are_the_event_own(changes: dict[str, Any]) -> None:
    """What the CRM's side of an import takes from the calendar's digests is exactly
    what digesting it would give."""
    crm = replace(BASE_EVENT, **changes)
    assert merge.digests_beside(crm, BASE_EVENT) == merge.digests(replace(crm))
    assert content_hash_beside(crm, BASE_EVENT) == content_hash(crm)


@pytest.mark.parametrize(
    ("crm", "calendar", "crm_wins"),
    [
        # Google's milliseconds, Graph's fractions: one second holds two ordered edits.
        ("10:00:00.300000", "10:00:00.301", False),
        ("10:00:00.302000", "10:00:00.301", True),
        ("10:00:00.301400", "10:00:00.301", True),  # inside the calendar's millisecond
        ("10:00:00.301000", "10:00:00.301", True),  # the very same time
        # CalDAV's whole seconds: a CRM edit inside the calendar's second cannot be
        # ordered against it, and goes to the CRM, as an exact tie does.
        ("10:00:00.700000", "10:00:00", True),
        ("09:59:59.999999", "10:00:00", False),
    ],
)
def test_latest_compares_each_side_at_its_own_precision(
    crm: str, calendar: str, crm_wins: bool
) -> None:
    day = "2026-12-06T"
    assert (
        crm_edit_is_later(
            dt.datetime.fromisoformat(day + crm + "+00:00"),
            dt.datetime.fromisoformat(day + calendar + "+00:00"),
        )
        is crm_wins
    )
