"""A no-change sync job run by a real queue worker (procrastinate) on the real
PostgreSQL: its job finished by the sync's own closing statement, with nothing lost
when the worker dies on either side of it."""

from __future__ import annotations

from typing import Any

import pytest

from crmcal.jobs import queue
from tests.conftest import run
from tests.google_emulator import GoogleEmulator
from tests.queue_world import Statements, fresh_database, query
from tests.test_worker_cost import _google_connection, worker_runtime

pytestmark = pytest.mark.postgres

FINISH = "procrastinate_finish_job"


def test_a_quiet_sync_job_is_finished_by_its_release(
    google_emulator: GoogleEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job of a sync with nothing new is deleted by the statement that ends the sync
    (its run, its lease, its positions), and procrastinate's finish is not sent after
    it: three statements a job (fetch, lease, release) instead of four. A sync that
    writes (the first) is finished by procrastinate as before. Every job's row is gone
    afterwards and every run ended ok."""
    with fresh_database() as url:
        connection_id, _ = _google_connection(url, google_emulator)

        async def jobs() -> list[Statements]:
            found = []
            async with worker_runtime(url, google_emulator) as (runtime, _):
                for _ in range(3):  # the first sync, one that settles it, one quiet
                    await queue.defer_sync(runtime.app, connection_id)
                    sent = Statements(monkeypatch)
                    await queue.run_worker(runtime, concurrency=1, queues=[queue.SYNC_QUEUE],
                                           wait=False, install_signal_handlers=False)  # fmt: skip
                    monkeypatch.undo()
                    found.append(sent)
            return found

        first, _, quiet = run(jobs())
        jobs_left = query(url, "SELECT count(*) FROM procrastinate_jobs WHERE queue_name = 'sync'")
        runs = query(url, "SELECT outcome, count(*) FROM sync_runs GROUP BY 1")
    assert first.count(FINISH) == 1
    assert quiet.count(FINISH) == 0, quiet.texts
    assert quiet.count("procrastinate_fetch_job") >= 1
    assert quiet.count("DELETE FROM procrastinate_jobs") == 1
    assert jobs_left == [(0,)]
    assert runs == [("ok", 3)]


def test_a_worker_killed_after_a_quiet_release_leaves_nothing_to_retry(
    google_emulator: GoogleEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that dies right after the statement that ended a quiet sync (before
    anything else of the job): the job's row went with the release, in its
    transaction, so nothing is left running for the recovery of stalled jobs to
    retry; the connection is free and synced. One that dies before it leaves the job
    running, which the recovery queues again (``tests/test_queue.py``)."""
    with fresh_database() as url:
        connection_id, _ = _google_connection(url, google_emulator)

        async def jobs() -> None:
            async with worker_runtime(url, google_emulator) as (runtime, _):
                for _ in range(2):  # the first sync and one that settles it
                    await queue.defer_sync(runtime.app, connection_id)
                    await queue.run_worker(runtime, concurrency=1, queues=[queue.SYNC_QUEUE],
                                           wait=False, install_signal_handlers=False)  # fmt: skip
                await queue.defer_sync(runtime.app, connection_id)
                manager = runtime.app.job_manager
                assert isinstance(manager, queue.JobManager)

                seen: list[Any] = []

                async def killed(self: Any, job: Any, **kwargs: Any) -> None:
                    # The process dies here, where procrastinate would finish the job,
                    # after the sync's release: what the database holds at this moment
                    # is what a SIGKILL would leave.
                    seen.append(query(url, "SELECT status FROM procrastinate_jobs "
                                      "WHERE id = %s", job.id))  # fmt: skip
                    seen.append(query(url, "SELECT state, locked_by FROM connections "
                                      "WHERE id = %s", connection_id))  # fmt: skip

                monkeypatch.setattr(queue.JobManager, "finish_job", killed)
                await queue.run_worker(runtime, concurrency=1, queues=[queue.SYNC_QUEUE],
                                       wait=False, install_signal_handlers=False)  # fmt: skip
                monkeypatch.undo()
                assert seen == [[], [("active", None)]]
                assert await queue.recover(runtime.app, stalled_after=0) == 0

        run(jobs())
        jobs_left = query(
            url,
            "SELECT status, count(*) FROM procrastinate_jobs WHERE queue_name = 'sync' GROUP BY 1",
        )
        conn = query(url, "SELECT state, locked_by FROM connections WHERE id = %s", connection_id)
        runs = query(url, "SELECT outcome, count(*) FROM sync_runs GROUP BY 1")
    assert jobs_left == []
    assert conn == [("active", None)]
    assert runs == [("ok", 3)]
