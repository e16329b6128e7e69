"""What the parse pool's processes do per event, made cheaper without a change of what
they answer: the digests' JSON, the content lines' split, the parameters read once,
and the garbage collector's settings of a pool's process."""

from __future__ import annotations

import datetime as dt
import decimal
import gc
import importlib
import json
import re
import sys
from collections.abc import Iterator

import pytest

from crmcal import collector, model
from crmcal.providers import parse_pool
from crmcal.providers.ical import scanner

VALUES: list[object] = [
    [],
    {},
    None,
    "plain",
    ["Ünïcode — text", "tab\there", 'quote " and \\ slash', "\x00\x1f", "😀"],
    {"b": 1, "a": [True, False, None], "c": {"z": 1.5, "y": -0.0, "x": 10**30}},
    [[dt.datetime(2027, 3, 1, 9, tzinfo=dt.UTC)], dt.date(2027, 3, 1), decimal.Decimal("1.10")],
    [float("inf"), float("nan"), 1e-300, 3.141592653589793],
    {"attendees": [("a@x.example", "A", "accepted")], "recurrence": None},
]


@pytest.mark.parametrize("separators", [(",", ":"), (", ", ": ")])
def test_the_digests_json_is_the_standard_encoders_text(separators: tuple[str, str]) -> None:
    standard = json.JSONEncoder(sort_keys=True, separators=separators, default=str)
    encode = model.digest_json(separators)
    for value in VALUES:
        assert encode(value) == standard.encode(value), value


# The split as it was before the one regular expression (the reference it must equal).
_NAME = re.compile(r"[A-Za-z0-9-]+")


def _split_before(line: str) -> tuple[str, str, str] | None:
    colon = line.find(":")
    if colon > 0 and line.find('"', 0, colon) < 0:
        head, value = line[:colon], line[colon + 1 :]
        semi = head.find(";")
        name, params = (head, "") if semi < 0 else (head[:semi], head[semi:])
        return (name.upper(), params, value) if _NAME.fullmatch(name) else None
    match = scanner._QUOTED_LINE.match(line)
    return (match.group(1).upper(), match.group(2), match.group(3)) if match else None


LINES = [
    "SUMMARY:Plain",
    "summary:lower case",
    "DTSTART;TZID=Europe/Berlin:20270301T090000",
    'ATTENDEE;CN="Meyer, Lukas";PARTSTAT=ACCEPTED:mailto:l@x.example',
    'ATTENDEE;CN="a:b;c":mailto:l@x.example',
    'ORGANIZER;CN="unclosed:mailto:o@x.example',
    "X-A-1;X=1;Y=2,3:value: with: colons",
    "DESCRIPTION:",
    ":no name",
    ";X=1:no name",
    "NO COLON HERE",
    "BAD NAME:value",
    "BAD_NAME;X=1:value",
    'NAME;X=a"b:value',
    'NAME;X="a":"quoted value"',
    "NAME;;:double semicolon",
    "NAME;X=1;Y=2",
    "DESCRIPTION:line\rwith carriage return",
    "NAME:" + "x" * 5000,
    "NAME;" + "X=1;" * 500 + ":value",
]


def test_a_content_line_is_split_as_before() -> None:
    for line in LINES:
        expected = _split_before(line)
        if expected is None:
            with pytest.raises(ValueError, match="not an iCalendar content line"):
                scanner._split(line, 1)
        else:
            assert scanner._split(line, 1) == expected, line


def test_parameters_are_read_once_and_cannot_be_changed() -> None:
    short = ';CN="Meyer, Lukas";PARTSTAT=ACCEPTED;X-Y=a,b'
    long = ";CN=" + "n" * (scanner.CACHED_PARAMETERS_LENGTH + 1)
    first = scanner.parse_parameters(short)
    assert first == {"CN": "Meyer, Lukas", "PARTSTAT": "ACCEPTED", "X-Y": "a,b"}
    assert scanner.parse_parameters(short) is first  # a calendar's repeats: read once
    with pytest.raises(TypeError):
        first["CN"] = "changed"  # type: ignore[index]
    assert scanner.parse_parameters(long) == {"CN": "n" * (scanner.CACHED_PARAMETERS_LENGTH + 1)}
    assert scanner.parse_parameters(long) is not scanner.parse_parameters(long)  # not kept
    assert scanner.parse_parameters("") == {}


def _threshold() -> int:
    return gc.get_threshold()[0]


@pytest.fixture
def pool() -> Iterator[None]:
    parse_pool.configure(1)
    try:
        yield
    finally:
        parse_pool.configure(None)
        parse_pool.shutdown()


def test_a_pool_s_process_collects_garbage_as_a_long_running_process_does(pool: None) -> None:
    executor = parse_pool._POOL.get()
    assert executor is not None
    assert executor.submit(_threshold).result() >= collector.YOUNG_THRESHOLD


def _imported() -> list[str]:
    return sorted(name for name in sys.modules if name.startswith("crmcal.sync."))


def test_a_pool_s_process_imports_what_it_will_compute_as_it_starts(pool: None) -> None:
    """Not when the first chunk asking for it comes, in the middle of a first import."""
    importlib.import_module("crmcal.sync.engine")  # it names what the pool will compute
    parse_pool.configure(1)  # processes started after that
    executor = parse_pool._POOL.get()
    assert executor is not None
    imported = executor.submit(_imported).result()
    assert "crmcal.sync.import_fields" in imported
    assert "crmcal.sync.merge" in imported
