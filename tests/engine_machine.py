"""What the engine's state machines share (``test_engine_stateful``'s and the meanwhile
machine of ``meanwhile_machine``): a ``World`` on the machine's own copy of the SQLite
template, driven on the machine's own event loop, fresh values to follow items by; and
for the series machines the series each side makes, their occurrences' keys, how an
edit of a series reaches the occurrences it holds, and the check that both sides show
the same occurrences with values the conflict rules allow."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import shutil
import tempfile
from collections.abc import Awaitable, Iterable
from pathlib import Path
from typing import Any

from hypothesis.stateful import RuleBasedStateMachine

from crmcal.crm import activities
from crmcal.crm.schemas import ActivityCreate
from crmcal.db import Database
from crmcal.model import CalendarEvent, Recurrence
from tests.engine_world import World
from tests.memory_provider import MemoryCalendar
from tests.series_model import DELETED, Occurrence, _expansion

# Each series starts at its own minute from here, its occurrences a day apart.
SERIES_START = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0) + dt.timedelta(days=2)
LENGTH = dt.timedelta(hours=1)


class WorldMachine(RuleBasedStateMachine):
    """A state machine over a ``World`` whose database is ``database`` on a private copy
    of ``template``; ``fresh`` values start with ``prefix``."""

    prefix = "v"

    def __init__(self, template: Path, database: type[Database] = Database) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        # Beside the template: in memory where the tests keep their SQLite databases
        # (tests/conftest.py, ``sqlite_dir``), so that a commit's file syncs cost nothing.
        self.tmp = Path(tempfile.mkdtemp(dir=template.parent))
        shutil.copy(template, self.tmp / "db.sqlite")
        self.db = database(f"sqlite:///{self.tmp / 'db.sqlite'}")
        self.world = self.run(World(self.db, MemoryCalendar()).setup())
        self.counter = 0

    def run(self, coro: Awaitable[Any]) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self.db.dispose())
        self.loop.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _quiet_sync(self) -> Any:
        """One more sync, which finds nothing left to write; its report."""
        quiet = self.run(self.world.sync())
        assert quiet.created == quiet.updated == quiet.deleted == 0, quiet.counts()
        return quiet

    def fresh(self) -> str:
        """A value never written before: a copy shows up as a value seen twice."""
        self.counter += 1
        return f"{self.prefix}{self.counter}"


class SeriesWorldMachine(WorldMachine):
    """A ``WorldMachine`` that follows series by their occurrences' original starts."""

    def __init__(self, template: Path, database: type[Database] = Database) -> None:
        super().__init__(template, database)
        self.occurrences: dict[dt.datetime, Occurrence] = {}
        self.made = 0

    def _new_keys(self, count: int) -> list[dt.datetime]:
        """The original starts of the next series made, ``count`` occurrences long."""
        self.made += 1
        first = SERIES_START + dt.timedelta(minutes=self.made)
        return [first + dt.timedelta(days=n) for n in range(count)]

    def _crm_create_series(self, count: int) -> None:
        """The CRM makes a daily series of ``count`` occurrences with a fresh subject."""
        keys, value = self._new_keys(count), self.fresh()
        self.run(self._crm_create(keys[0], count, value))
        for key in keys:
            self.occurrences[key] = Occurrence(key, crm_pending=value)

    async def _crm_create(self, start: dt.datetime, count: int, value: str) -> None:
        data = ActivityCreate(type="meeting", subject=value, start=start.isoformat(),
                              end=(start + LENGTH).isoformat(), timezone="UTC",
                              recurrence=f"FREQ=DAILY;COUNT={count}")  # fmt: skip
        async with self.db.write() as session:
            await activities.create_activity(session, await self.world.user(session), data)

    def _renamed(self, keys: Iterable[dt.datetime], side: str, value: str) -> None:
        """``side`` renamed the series holding ``keys``: each occurrence there that is not
        changed on its own on that side, nor cancelled there, now has ``value``."""
        for key in keys:
            tracked = self.occurrences.get(key)
            if tracked is None:
                continue
            if side == "crm":
                if not tracked.own_crm and tracked.crm_pending is not DELETED:
                    tracked.crm_pending = value
            elif not tracked.own_cal and tracked.cal_pending is not DELETED:
                tracked.cal_pending = value

    def _check_series(
        self, masters: Iterable[CalendarEvent], *, skip_gone: bool
    ) -> dict[dt.datetime, str | None]:
        """Both sides show the same occurrences (each in one calendar series) with the
        same subjects, each one a value the rules allow; then that value is the settled
        one. ``skip_gone``: occurrences cancelled at an earlier check are not looked at."""
        crm = {a.original_start_at: a.subject for a in self.run(self.world.live_activities())}
        calendar: dict[dt.datetime, str | None] = {}
        for master in masters:
            shown = _expansion(master)
            assert not shown.keys() & calendar.keys(), "an occurrence in two series"
            calendar.update(shown)
        assert crm == calendar, "sides disagree"
        for occurrence in self.occurrences.values():
            if skip_gone and occurrence.gone:
                continue
            value = crm.get(occurrence.key, DELETED)
            allowed = occurrence.allowed()
            assert value in allowed, f"{occurrence.key}: {value} is not one of {allowed}"
            occurrence.value = value
            occurrence.crm_pending = occurrence.cal_pending = None
            occurrence.own_crm = occurrence.own_cal = occurrence.own_crm or occurrence.own_cal
            occurrence.moved_by = None
            occurrence.gone = value is DELETED
        return crm


def daily_series(start: dt.datetime, count: int, summary: str) -> CalendarEvent:
    """A calendar series as another client makes it: ``count`` days from ``start``."""
    return CalendarEvent(
        summary=summary,
        start=start,
        end=start + LENGTH,
        timezone="UTC",
        recurrence=Recurrence(f"FREQ=DAILY;COUNT={count}"),
    )


def with_own_occurrence(master: CalendarEvent, key: dt.datetime, summary: str) -> CalendarEvent:
    """``master`` with its occurrence at ``key`` changed on its own to ``summary``."""
    own = CalendarEvent(summary=summary, start=key, end=key + LENGTH, timezone="UTC",
                        recurrence_id=key)  # fmt: skip
    others = tuple(o for o in master.overrides if o.recurrence_id != key)
    return dataclasses.replace(master, overrides=(*others, own))
