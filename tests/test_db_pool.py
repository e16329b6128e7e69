"""The PostgreSQL pool: connections idle for a while are checked before use, and a
single statement runs without a transaction around it."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from crmcal import db as dbmod
from crmcal.db import Database
from tests.conftest import run
from tests.queue_world import query, queue_db  # noqa: F401

pytestmark = pytest.mark.postgres


def test_an_idle_connection_the_server_dropped_is_replaced_unseen(
    queue_db: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def scenario() -> tuple[int, int, int, int]:
        db = Database(queue_db, pool_size=1, max_overflow=0)
        try:
            async with db.read() as session:
                first = await session.scalar(text("SELECT pg_backend_pid()"))
            # The server ends the pooled connection while it sits idle (a restart, a
            # firewall): the next use gets a working connection, and no error.
            query(queue_db, "SELECT pg_terminate_backend(%s)", first)
            monkeypatch.setattr(dbmod, "IDLE_PING_SECONDS", 0.0)
            found = await db.execute_one(text("SELECT pg_backend_pid()"))
            second = found.scalar_one()
            # Checked again, and left out of any transaction: a session works as usual.
            async with db.write() as session:
                third = await session.scalar(text("SELECT pg_backend_pid()"))
            in_transaction = await db.execute_one(
                text("SELECT count(*) FROM pg_stat_activity WHERE pid = pg_backend_pid() "
                     "AND state = 'idle in transaction'")
            )  # fmt: skip
            return first, second, third, in_transaction.scalar_one()
        finally:
            await db.dispose()

    first, second, third, in_transaction = run(scenario())
    assert second != first
    assert third == second
    assert in_transaction == 0
