"""The queue's worker (``jobs.queue_worker``): procrastinate's, its log context made only
for a record that is written. Run on the real PostgreSQL."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from procrastinate.jobs import Job

from crmcal.jobs import queue
from tests.conftest import run
from tests.queue_world import queue_db  # noqa: F401

pytestmark = pytest.mark.postgres


@pytest.fixture
def queue_log() -> Iterator[logging.Logger]:
    log = logging.getLogger("procrastinate")
    level = log.level
    try:
        yield log
    finally:
        log.setLevel(level)


def _log_contexts(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    made: list[dict[str, Any]] = []
    real = Job.log_context

    def log_context(job: Job) -> dict[str, Any]:
        made.append(real(job))
        return made[-1]

    monkeypatch.setattr(Job, "log_context", log_context)
    return made


async def _run_one_job(database_url: str, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The log contexts made of the job while a worker ran it."""
    app = queue.queue_app(database_url, pool_size=2)
    name = f"w_{uuid.uuid4().hex[:10]}"

    @app.task(name=f"crmcal.test.{name}", queue=name)
    async def noop() -> None:
        return None

    async with app.open_async():
        job_id = await noop.defer_async()
        made = _log_contexts(monkeypatch)
        await app.run_worker_async(queues=[name], wait=False, install_signal_handlers=False)
    return [context for context in made if context["id"] == job_id]


def test_a_job_makes_no_log_context_when_the_queue_logs_warnings_only(
    queue_db: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    queue_log: logging.Logger,
) -> None:
    """procrastinate built a job's context four times a job (loaded, started, ended,
    acknowledged) before asking whether the level was on; crmcal keeps it at warnings."""
    queue_log.setLevel(logging.WARNING)
    assert run(_run_one_job(queue_db, monkeypatch)) == []


def test_a_record_written_carries_the_context_procrastinate_gives_it(
    queue_db: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    queue_log: logging.Logger,
    caplog: pytest.LogCaptureFixture,
) -> None:
    queue_log.setLevel(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="procrastinate")
    made = run(_run_one_job(queue_db, monkeypatch))
    of_the_job = [r for r in caplog.records if r.__dict__.get("job") in made]
    actions = [getattr(r, "action", None) for r in of_the_job]
    assert actions == ["loaded_job_info", "start_job", "job_success", "finish_task"]
    assert [r.__dict__["job"] for r in of_the_job] == made
    assert made[0]["call_string"].startswith("crmcal.test.w_")
    ended = of_the_job[2]
    assert ended.__dict__["worker"]["job_id"] == made[0]["id"]
    assert ended.__dict__["end_timestamp"] >= ended.__dict__["start_timestamp"]
