"""What a poll tick's search for due connections reads, against the real PostgreSQL:
counted by the server (the blocks its transaction asked for), not timed."""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

import psycopg
import pytest
from sqlalchemy.dialects import postgresql

from crmcal.jobs.queue import conninfo, due_batch
from tests.queue_world import blocks_fetched, queue_db  # noqa: F401

pytestmark = pytest.mark.postgres

DUE = 20


def _seed(url: str, waiting: int, now: dt.datetime) -> None:
    """``DUE`` connections whose time came by ``now``, and ``waiting`` polled ones whose
    time is to come (spread over the poll period after it) or that wait for their user.
    Timed from ``now``, not from the clock: however long the rows take to write on a busy
    machine, none of those to come is due at ``now``."""
    utc = now.astimezone(dt.UTC).replace(tzinfo=None)  # as crmcal's columns keep time
    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        conn.execute("TRUNCATE connections CASCADE")
        user = conn.execute(
            "INSERT INTO users (email, name, is_admin, permissions, timezone, active, "
            "created_at, updated_at) VALUES (%s, 'Poll', false, '{}', 'UTC', true, now(), now()) "
            "RETURNING id",
            (f"poll-{os.urandom(4).hex()}@crm.test",),
        ).fetchone()
        assert user is not None
        conn.execute(
            "INSERT INTO connections (user_id, provider, account, credentials, calendar_id, "
            "calendar_name, sync_type, options, state, connected_at, counts, problems, "
            "failures, next_sync_at, created_at, updated_at) "
            "SELECT %(user)s, 'google', 'poll' || n || '@example.test', '\\x00', 'primary', "
            "'Poll', 'two_way', '{}', CASE WHEN n %% 10 = 0 THEN 'error' ELSE 'active' END, "
            "now(), '{}', '[]', 0, CASE "
            "  WHEN n <= %(due)s THEN %(now)s - n * interval '1 second' "
            "  WHEN n %% 10 = 0 THEN NULL "
            "  ELSE %(now)s + (n %% 180) * interval '1 second' END, "
            "now(), now() FROM generate_series(1, %(due)s + %(waiting)s) n",
            {"user": user[0], "due": DUE, "waiting": waiting, "now": utc},
        )
        conn.execute("ANALYZE connections")


def _tick_reads(url: str, waiting: int) -> tuple[int, int]:
    """With ``waiting`` connections not due beside ``DUE`` due ones, a tick's search
    for up to 50 of them: how many it found, and the blocks it asked for."""
    now = dt.datetime.now(dt.UTC)
    _seed(url, waiting, now)
    compiled: Any = due_batch(now, 50).compile(
        dialect=postgresql.psycopg.dialect(), compile_kwargs={"render_postcompile": True}
    )
    # A session of its own, whose counts are its own, rolled back.
    with psycopg.connect(conninfo(url)) as conn:
        conn.execute("SET TimeZone = 'UTC'")  # as crmcal's columns keep time
        found = conn.execute(str(compiled), compiled.params).fetchall()
        blocks = blocks_fetched(conn, "connections")
        conn.rollback()
    return len(found), blocks


def test_a_poll_tick_reads_what_is_due_not_every_connection(
    queue_db: str,  # noqa: F811
) -> None:
    """The search goes by the index on state and next sync time: the blocks it asks
    for are the same with 200 connections not yet due as with 20,000. Without that
    index it read every connection's row at every tick."""
    few = _tick_reads(queue_db, 200)
    many = _tick_reads(queue_db, 20_000)
    assert few[0] == many[0] == DUE
    assert many[1] <= few[1] + 10, (few, many)


def test_the_polled_connections_are_counted_once_a_poll_period() -> None:
    """The count that paces the ticks reads every connection's entry: a process makes
    it once a poll period, not at each tick."""
    import asyncio
    from types import SimpleNamespace

    from crmcal.jobs.queue import POLL_EVERY, _polled_count

    counted: list[int] = []

    class Session:
        async def scalar(self, statement: Any) -> int:
            counted.append(1)
            return 1_000

    runtime: Any = SimpleNamespace(settings=SimpleNamespace(poll_seconds=60), polled=None)
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

    async def ticks() -> list[int]:
        return [
            await _polled_count(runtime, Session(), start + dt.timedelta(seconds=t))  # type: ignore[arg-type]
            for t in range(0, 125, POLL_EVERY)
        ]

    assert asyncio.run(ticks()) == [1_000] * 25
    assert len(counted) == 3  # at 0, 60 and 120 s
