"""The cyclic garbage collector is set once when a server or worker starts, not changed
back and forth by the sync engine around each batch it imports."""

from __future__ import annotations

import asyncio
import gc
import shutil
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from crmcal import cli, collector, logs
from tests.bulk_import import calendars, import_calendar, realistic  # noqa: F401
from tests.cli_process import NO_PARSE_POOL
from tests.providers.harness import CalDAVHarness, CalDAVServer
from tests.queue_world import SECRET, queue_db  # noqa: F401


@pytest.fixture
def collector_restored() -> Iterator[None]:
    """The test process's collector as it was, whatever a start-up set."""
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_tune_raises_the_young_threshold_and_freezes_what_exists(
    collector_restored: None,
) -> None:
    gc.set_threshold(700, 10, 10)
    gc.unfreeze()
    assert collector.tune() == (collector.YOUNG_THRESHOLD, 10, 10)
    assert gc.get_threshold() == (collector.YOUNG_THRESHOLD, 10, 10)
    assert gc.get_freeze_count() > 0


def test_an_import_leaves_the_collector_alone(
    db_url: str,
    radicale: CalDAVServer,
    calendars: list[CalDAVHarness],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    changed: list[tuple[int, ...]] = []
    monkeypatch.setattr(gc, "set_threshold", lambda *values: changed.append(values))
    texts = [realistic("gc", n) for n in range(12)]
    imported = import_calendar(db_url, radicale, calendars[0], texts, "gc@crm.test")
    report, _, _ = asyncio.run(imported)
    assert report.created == 12
    assert changed == []


def _started(monkeypatch: pytest.MonkeyPatch, seen: list[tuple[tuple[int, ...], int]]) -> None:
    """What the collector is set to once a command has started (uvicorn or the worker's
    loop not run)."""

    def serving(*_: Any, **__: Any) -> None:
        seen.append((gc.get_threshold(), gc.get_freeze_count()))

    real_run = asyncio.run

    def run(coro: Coroutine[Any, Any, Any], **kw: Any) -> Any:
        if getattr(coro, "__qualname__", "").endswith("worker.<locals>.work"):
            coro.close()
            seen.append((gc.get_threshold(), gc.get_freeze_count()))
            return None
        return real_run(coro, **kw)

    monkeypatch.setattr(cli, "_run_uvicorn", serving)
    # The command would point the root logger at the stderr this runner lends it and
    # closes afterwards: every later test's log line would be a logging error.
    monkeypatch.setattr(logs, "setup", lambda *_, **__: None)
    monkeypatch.setattr(cli.asyncio, "run", run)
    gc.set_threshold(700, 10, 10)
    gc.unfreeze()


def test_serve_sets_the_collector_when_it_starts(
    tmp_path: Path,
    sqlite_template: Path,
    monkeypatch: pytest.MonkeyPatch,
    collector_restored: None,
    parse_pool_kept: None,
) -> None:
    seen: list[tuple[tuple[int, ...], int]] = []
    _started(monkeypatch, seen)
    # A migrated database: serve's own upgrade finds nothing to do.
    db = tmp_path / "crm.db"
    shutil.copy(sqlite_template, db)
    env = {"CRMCAL_DATABASE_URL": f"sqlite:///{db}", "CRMCAL_SECRET_KEY": SECRET, **NO_PARSE_POOL}
    result = CliRunner().invoke(cli.app, ["serve"], env=env)
    assert result.exit_code == 0, result.output
    assert len(seen) == 1
    thresholds, frozen = seen[0]
    assert thresholds[0] == collector.YOUNG_THRESHOLD
    assert frozen > 0


@pytest.mark.postgres
def test_a_worker_sets_the_collector_when_it_starts(
    queue_db: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    collector_restored: None,
    parse_pool_kept: None,
) -> None:
    seen: list[tuple[tuple[int, ...], int]] = []
    _started(monkeypatch, seen)
    env = {"CRMCAL_DATABASE_URL": queue_db, "CRMCAL_SECRET_KEY": SECRET, **NO_PARSE_POOL}
    result = CliRunner().invoke(cli.app, ["worker"], env=env)
    assert result.exit_code == 0, result.output
    assert len(seen) == 1
    thresholds, frozen = seen[0]
    assert thresholds[0] == collector.YOUNG_THRESHOLD
    assert frozen > 0
