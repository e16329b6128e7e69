"""The decision table of docs/sync.md, row by row, against ``decisions.decide``.

The table is read from the document itself, so the page and the engine cannot
drift apart: every cell's words name one action, and a row the code decides
differently (or a new row nobody mapped) fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from crmcal.sync.decisions import Act, Decision, State, decide

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
    "**conflict policy**": (
        Decision(Act.PUSH_UPDATE, conflict=True, winner="crm"),
        Decision(Act.PULL_UPDATE, conflict=True, winner="calendar"),
    ),
}


def table_rows() -> list[tuple[str, str, str, str]]:
    """(crm side, calendar side, sync type, outcome) for every cell of the table."""
    text = DOC.read_text()
    section = text.split("## Decisions", 1)[1].split("\n\n", 2)[1]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    header, _rule, *body = lines
    assert "two-way" in header
    rows = []
    for line in body:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        crm, calendar, *outcomes = cells
        assert len(outcomes) == len(SYNC_TYPES), line
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
    expected = OUTCOMES[re.sub(r"\s+", " ", outcome.lower())]
    for crm_wins in (True, False):
        got = decide(SIDES[crm], SIDES[calendar], sync_type, crm_wins)
        if isinstance(expected, tuple):
            assert got == expected[0 if crm_wins else 1]
        else:
            assert got == expected


@pytest.mark.parametrize("sync_type", SYNC_TYPES)
def test_nothing_moved_means_nothing_to_do(sync_type: str) -> None:
    assert decide(State.UNCHANGED, State.UNCHANGED, sync_type, True) == Decision(Act.NOTHING)


def test_every_action_is_reachable() -> None:
    """No action the engine has to handle that no decision ever makes."""
    made = {
        decide(a, b, sync_type, crm_wins).act
        for a in State
        for b in State
        for sync_type in SYNC_TYPES
        for crm_wins in (True, False)
    }
    assert made == set(Act)
