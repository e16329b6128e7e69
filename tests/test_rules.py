"""Which series rules each kind of calendar can hold (a pure function of capabilities)."""

from __future__ import annotations

import pytest

from crmcal.providers import kinds
from crmcal.sync.rules import unsupported

GRAPH = kinds.MICROSOFT.capabilities


@pytest.mark.parametrize(
    "rule",
    [
        "FREQ=WEEKLY;BYDAY=TU;COUNT=10",
        "FREQ=DAILY;INTERVAL=2;UNTIL=20270101T000000Z",
        "FREQ=MONTHLY;BYDAY=TU;BYSETPOS=2",
        "FREQ=YEARLY;BYMONTH=12;BYMONTHDAY=24",
        "FREQ=WEEKLY;COUNT=999",
    ],
)
def test_graph_holds_its_patterns(rule: str) -> None:
    assert unsupported(GRAPH, [rule]) == []


@pytest.mark.parametrize(
    ("rule", "part"),
    [
        ("FREQ=HOURLY;COUNT=5", "FREQ=HOURLY"),
        ("FREQ=MINUTELY", "FREQ=MINUTELY"),
        ("FREQ=DAILY;BYHOUR=9,17", "BYHOUR"),
        ("FREQ=YEARLY;BYYEARDAY=100", "BYYEARDAY"),
        ("FREQ=YEARLY;BYWEEKNO=20", "BYWEEKNO"),
        ("FREQ=MONTHLY;BYMONTHDAY=1,15", "BYMONTHDAY"),
        ("FREQ=WEEKLY;COUNT=1000", "COUNT"),
    ],
)
def test_graph_refuses_naming_the_part(rule: str, part: str) -> None:
    (refusal,) = unsupported(GRAPH, [rule], service="Microsoft 365")
    assert refusal.part == part
    assert str(refusal).startswith(f"{part}: Microsoft 365 ")


def test_graph_refuses_rdates_exrules_and_several_rules() -> None:
    found = unsupported(GRAPH, ["FREQ=WEEKLY", "FREQ=MONTHLY"], rdates=2, exrules=1)
    assert [u.part for u in found] == ["RRULE", "RDATE", "EXRULE"]


@pytest.mark.parametrize("kind", [kinds.CALDAV, kinds.GOOGLE])
def test_caldav_and_google_hold_every_rule(kind: kinds.ProviderKind) -> None:
    rules = ["FREQ=HOURLY;BYMINUTE=0,30", "FREQ=YEARLY;BYWEEKNO=1;COUNT=5000"]
    assert unsupported(kind.capabilities, rules, rdates=3, exrules=1) == []
