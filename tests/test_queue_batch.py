"""Routine syncs queued in bulk (a poll tick, a channel renewal) against the real
PostgreSQL: statements counted at the driver, each job with its own locks."""

from __future__ import annotations

import random
import types
from typing import Any

import pytest

from crmcal.jobs import queue
from tests.conftest import run
from tests.queue_world import Statements, query, queue_db  # noqa: F401

pytestmark = pytest.mark.postgres


def _ids(count: int) -> list[int]:
    first = random.randrange(10**9, 2 * 10**9)
    return list(range(first, first + count))


def _jobs(database_url: str, ids: list[int]) -> list[tuple[Any, ...]]:
    return query(
        database_url,
        "SELECT lock, queueing_lock, (args->>'connection_id')::bigint, priority, status "
        "FROM procrastinate_jobs WHERE queueing_lock = ANY(%s) ORDER BY id",
        [queue.lock_of(n) for n in ids],
    )


@pytest.mark.parametrize("count", [3, 600])
def test_a_bulk_of_routine_syncs_is_queued_in_two_statements_whatever_its_size(
    queue_db: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    count: int,
) -> None:
    """Those already waiting found in one statement, the rest queued in one more: the
    same two for 3 connections as for 600 (one a connection before), each job with
    the queueing lock and lock of its own connection, as ``defer_sync`` queues one.
    A connection whose sync is already waiting keeps that job (and is not counted)."""
    ids = _ids(count)
    waiting = ids[1]

    async def scenario() -> tuple[int, list[str]]:
        app = queue.queue_app(queue_db, pool_size=2)
        async with app.open_async():
            await queue.defer_sync(app, waiting, urgent=True)
            counted = Statements(monkeypatch)
            # What a poll tick and a channel renewal queue their syncs through.
            runtime: Any = types.SimpleNamespace(app=app, statistics=None)
            queued = await queue._defer_all(runtime, [*ids, ids[0]])  # a repeat queues one
            monkeypatch.undo()
            return queued, counted.first_words

    queued, sent = run(scenario())
    assert queued == count - 1
    assert sent == ["SELECT", "SELECT"], sent  # the look-up, and the batch's function
    rows = _jobs(queue_db, ids)
    assert len(rows) == count
    for lock, queueing_lock, connection_id, priority, status in rows:
        assert lock == queueing_lock == queue.lock_of(connection_id)
        assert status == "todo"
        # The sync someone waits for keeps its place ahead; the others are routine.
        assert priority == (queue.URGENT if connection_id == waiting else 0)
    assert sorted(row[2] for row in rows) == sorted(ids)


def test_a_bulk_meeting_a_sync_queued_meanwhile_queues_the_rest_one_by_one(
    queue_db: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another process queues one of the connections between the look-up and the batch:
    the batch, one INSERT, fails whole on that queueing lock, and its jobs are queued
    one at a time instead; none is lost and none is queued twice."""
    ids = _ids(5)

    async def scenario() -> int:
        app = queue.queue_app(queue_db, pool_size=2)
        async with app.open_async():
            looked_up = app.connector.execute_query_all_async

            async def look_up(query: str, **arguments: Any) -> list[dict[str, Any]]:
                found = await looked_up(query, **arguments)
                if "queueing_lock = ANY" in query:
                    await queue.defer_sync(app, ids[3])  # the other process
                return found

            monkeypatch.setattr(app.connector, "execute_query_all_async", look_up)
            return await queue.defer_syncs(app, ids)

    assert run(scenario()) == 4
    rows = _jobs(queue_db, ids)
    assert sorted(row[2] for row in rows) == sorted(ids)
