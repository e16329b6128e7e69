"""Calendar data parsed in the pool's processes reads exactly as parsed in-process.

The texts are those a first import meets (VTIMEZONE, organizer, attendees, alarms,
weekly series with an overridden and a cancelled occurrence, all-day events), with
an unreadable one, a task and a floating time among them; the pool is asked for
more than one chunk, and its processes are checked to have done the parsing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import crmcal.sync.engine  # noqa: F401  (imported, it has the pool compute its digests)
from crmcal import model
from crmcal.config import ConfigError, Settings
from crmcal.providers import parse_pool
from crmcal.sync import merge
from tests.bulk_import import BERLIN_TZ, realistic
from tests.served import wait_for

TASK = (
    "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//test//EN\r\n"
    "BEGIN:VTODO\r\nUID:todo-1\r\nDTSTAMP:20260101T000000Z\r\nSUMMARY:A task\r\n"
    "END:VTODO\r\nEND:VCALENDAR\r\n"
)
BROKEN = (
    "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:broken-1\r\n"
    "DTSTART:not-a-time\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
)
FLOATING = (
    "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//test//EN\r\n"
    "BEGIN:VEVENT\r\nUID:floating-1\r\nDTSTAMP:20260101T000000Z\r\nSUMMARY:Local\r\n"
    "DTSTART:20270301T090000\r\nDTEND:20270301T100000\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
)
UNEXPLAINED_ZONE = FLOATING.replace("floating-1", "guess-1").replace(
    "DTSTART:", "DTSTART;TZID=Somewhere/Nowhere:"
)
SERIES_WITH_EXCEPTIONS = (
    "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//test//EN\r\n"
    f"{BERLIN_TZ}"
    "BEGIN:VEVENT\r\nUID:series-x\r\nDTSTAMP:20260101T000000Z\r\nSUMMARY:Weekly\r\n"
    "DTSTART;TZID=Europe/Berlin:20270104T100000\r\nDTEND;TZID=Europe/Berlin:20270104T110000\r\n"
    "RRULE:FREQ=WEEKLY;COUNT=6\r\nEXDATE;TZID=Europe/Berlin:20270118T100000\r\nEND:VEVENT\r\n"
    "BEGIN:VEVENT\r\nUID:series-x\r\nDTSTAMP:20260101T000000Z\r\nSUMMARY:Weekly, moved\r\n"
    "RECURRENCE-ID;TZID=Europe/Berlin:20270111T100000\r\n"
    "DTSTART;TZID=Europe/Berlin:20270111T140000\r\nDTEND;TZID=Europe/Berlin:20270111T150000\r\n"
    "END:VEVENT\r\nEND:VCALENDAR\r\n"
)


def texts() -> list[str]:
    found = [realistic("pool", n) for n in range(3 * parse_pool.CHUNK)]
    for at, odd in enumerate((TASK, BROKEN, FLOATING, UNEXPLAINED_ZONE, SERIES_WITH_EXCEPTIONS)):
        found.insert(37 * at + 5, odd)
    return found


@pytest.fixture
def pool() -> Iterator[None]:
    parse_pool.configure(2)
    try:
        yield
    finally:
        parse_pool.configure(None)
        parse_pool.shutdown()


@pytest.mark.parametrize("zone", [None, "America/New_York"])
def test_the_pool_parses_as_this_process_does(pool: None, zone: str | None) -> None:
    given = texts()
    here = parse_pool.parse_here(given, zone)
    before = parse_pool.parsed_in_workers()

    there = parse_pool.parse(given, zone)

    assert parse_pool.parsed_in_workers() - before == len(given)  # not parsed here
    assert there == here
    kinds = [(p.event is None, p.error is None, bool(p.problems)) for p in there]
    assert kinds.count((True, True, False)) == 1  # the task: nothing to import
    assert kinds.count((True, False, False)) == 1  # the broken one, with its reason
    assert kinds.count((False, True, True)) == 1  # a zone read by a guess
    series = next(p.event for p in there if p.event is not None and p.event.uid == "series-x")
    assert series.recurrence is not None
    assert len(series.overrides) == 1
    assert sum(1 for p in there if p.event is not None and p.event.recurrence) > 30


def test_events_from_the_pool_bring_their_digests(
    pool: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The content hash and the fields' digests the sync asks of every event are
    computed in the pool's processes, and are those this process computes."""
    given = texts()
    here = [p.event for p in parse_pool.parse_here(given, None) if p.event is not None]
    expected = [(merge.digests(e), e.content_hash()) for e in here]
    computed: list[str] = []

    def counted(name: str) -> Callable[[object], Any]:
        def compute(_event: object) -> Any:
            computed.append(name)
            return {} if name == "digests" else ""

        return compute

    monkeypatch.setattr(merge, "_digests", counted("digests"))
    monkeypatch.setattr(model, "content_hash", counted("content hash"))

    there = [p.event for p in parse_pool.parse(given, None) if p.event is not None]

    assert [(merge.digests(e), e.content_hash()) for e in there] == expected
    assert computed == []  # none of them here


def where(event: model.CalendarEvent, argument: object) -> object:
    """Computed beside the parse with the reader's argument (module-level: the pool's
    processes find it by name)."""
    if argument == "refuse":
        raise ValueError("not this one")
    return event.memo("where", lambda _: (os.getpid(), argument))


def test_what_a_reader_asks_beside_is_computed_in_the_pool_with_its_argument(
    pool: None,
) -> None:
    given = texts()
    with parse_pool.computing_beside(where, "owner 1"):
        there = [p.event for p in parse_pool.parse(given, None) if p.event is not None]
    outside = [p.event for p in parse_pool.parse(given, None) if p.event is not None]
    with parse_pool.computing_beside(where, "refuse"):
        refused = [p.event for p in parse_pool.parse(given, None) if p.event is not None]

    found = {e.__dict__["_memo"]["where"] for e in there}
    assert {argument for _, argument in found} == {"owner 1"}
    assert os.getpid() not in {pid for pid, _ in found}  # computed in the pool's processes
    # Only for the parses made in that context; a failure there costs no event.
    assert all("where" not in e.__dict__.get("_memo", {}) for e in outside + refused)
    assert len(refused) == len(outside) == len(there)


def test_a_few_texts_and_a_pool_of_none_are_parsed_here(pool: None) -> None:
    few = texts()[: parse_pool.IN_PROCESS_BELOW - 1]
    before = parse_pool.parsed_in_workers()
    assert parse_pool.parse(few, None) == parse_pool.parse_here(few, None)
    parse_pool.configure(0)
    assert parse_pool.parse(texts(), None) == parse_pool.parse_here(texts(), None)
    assert parse_pool.parsed_in_workers() == before


def test_the_pools_processes_yield_the_cpu_to_the_process_that_started_them(
    pool: None,
) -> None:
    executor = parse_pool._POOL.get()
    assert executor is not None
    lowest = 19  # the least favourable niceness there is
    assert executor.submit(os.nice, 0).result() == min(os.nice(0) + parse_pool.NICENESS, lowest)


def test_the_setting() -> None:
    assert Settings.from_env({}).parse_workers is None
    assert Settings.from_env({"CRMCAL_PARSE_WORKERS": "0"}).parse_workers == 0
    assert Settings.from_env({"CRMCAL_PARSE_WORKERS": " 3 "}).parse_workers == 3
    for wrong in ("-1", "two", "65"):
        with pytest.raises(ConfigError, match="CRMCAL_PARSE_WORKERS"):
            Settings.from_env({"CRMCAL_PARSE_WORKERS": wrong})


STARTER = """
import sys
from crmcal import model
from crmcal.providers import parse_pool
from crmcal.sync import merge
parse_pool.configure(2)
parse_pool.start()
from tests.bulk_import import realistic
parse_pool.parse([realistic("kill", n) for n in range(200)], None)
print("up", flush=True)
sys.stdin.read()
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="reads /proc")
def test_the_pool_ends_with_the_process_killed_that_started_it() -> None:
    """SIGKILL leaves a process no chance to shut its pool down: the pool's processes
    notice and end themselves, none outlives a killed worker."""
    starter = subprocess.Popen([sys.executable, "-c", STARTER], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert starter.stdout is not None
        assert starter.stdout.readline().strip() == "up"
        children = Path(f"/proc/{starter.pid}/task/{starter.pid}/children").read_text().split()
        assert len(children) >= 2  # the two parsers (and the resource tracker)
    finally:
        starter.kill()
        starter.wait()
    # However slowly a busy machine lets them notice (wait_for's bound is a hang guard).
    wait_for(lambda: not [pid for pid in children if _running(int(pid))])


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"
