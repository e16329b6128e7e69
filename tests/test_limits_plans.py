"""What giving back a request's turns of Google's project quota reads, planned as
PostgreSQL plans a statement psycopg has prepared (one plan for any parameters):
counted by the server on the real PostgreSQL, not timed."""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

import psycopg
import pytest
from sqlalchemy import literal_column, select
from sqlalchemy.dialects import postgresql

from crmcal.jobs.queue import conninfo
from crmcal.sync import limits
from tests.queue_world import blocks_fetched, fresh_database, queue_db  # noqa: F401

pytestmark = pytest.mark.postgres

TURNS = 20_000
ACCOUNTS = 2_000


def _blocks_under_a_generic_plan(url: str, statement: Any, values: dict[str, Any]) -> int:
    """Blocks of ``provider_slots`` and its indexes that ``statement`` asks for, run as a
    prepared statement planned once for any parameters, in a session of its own (whose
    counts are its own) and a transaction rolled back."""
    compiled = statement.compile(dialect=postgresql.psycopg.dialect())
    params = {**compiled.params, **values}
    with psycopg.connect(conninfo(url)) as conn:
        conn.execute("SET plan_cache_mode = force_generic_plan")
        conn.execute(str(compiled), params, prepare=True)
        blocks = blocks_fetched(conn, "provider_slots")
        conn.rollback()
    return blocks


def _quota(url: str) -> tuple[limits.Limit, list[int]]:
    """An account's limit counting against a quota of ``TURNS`` turns, its rows made,
    and two turns held (scattered, as turns are taken from a random one)."""
    name = os.urandom(4).hex()
    rate = limits.Rate(None, f"google-project:plans-{name}", TURNS, dt.timedelta(minutes=1))  # type: ignore[arg-type]
    limit = limits.Limit(None, f"google:plans-{name}@example.test", 8, rate)  # type: ignore[arg-type]
    turns = [TURNS // 2, TURNS // 2 + 3]
    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        for key, count in ((rate.turns.key, TURNS), (limit.key, 8)):
            conn.execute(
                "INSERT INTO provider_slots (key, slot) SELECT %s, generate_series(0, %s - 1)",
                (key, count),
            )
        conn.execute(
            "UPDATE provider_slots SET holder = %s, expires_at = now() + interval '1 minute' "
            "WHERE (key = %s AND slot = 0) OR (key = %s AND slot = ANY(%s))",
            (limits.PROCESS, limit.key, rate.turns.key, turns),
        )
        # The accounts of a worker's connections beside them, 8 rows each: the planner
        # then takes any one key for a few rows.
        conn.execute(
            "INSERT INTO provider_slots (key, slot) SELECT 'google:plans-' || %s || '-' || a, "
            "s FROM generate_series(1, %s) a, generate_series(0, 7) s",
            (name, ACCOUNTS),
        )
        conn.execute("ANALYZE provider_slots")
    return limit, turns


def test_a_release_gives_back_its_turns_without_reading_the_quota() -> None:
    """The slot and turns a sync's release gives back (``give_back_parts``, part of the
    release's statement) are found by the index, key and turn, under the plan
    PostgreSQL keeps for a prepared statement: without the turns' bounds beside their
    array, that plan found the quota's rows by its key alone and read all 20,000.
    In a database of its own: the plan follows the table's statistics, which other
    tests' rows in a shared one would change."""
    with fresh_database(queue_schema=False) as url:
        limit, turns = _quota(url)
        statement: Any = select(literal_column("1")).add_cte(*limits.give_back_parts())
        values = limits.give_back_values(limits.Kept(limit, 0, turns))
        blocks = _blocks_under_a_generic_plan(url, statement, values)
    assert blocks < 40, blocks  # 20 or so; about 300 without the bounds


def _spend(url: str, take: Any, taken: int, account: str) -> int:
    """Take ``taken`` turns one request at a time with ``take`` (answering a statement
    and its parameters, made afresh each time as a request makes them), then one more in
    a session of its own, rolled back: the blocks that one asked for. The slot of
    ``account`` a request takes is given back after each."""

    def run(conn: psycopg.Connection[Any]) -> list[Any]:
        statement, values = take()
        compiled = statement.compile(
            dialect=postgresql.psycopg.dialect(), compile_kwargs={"render_postcompile": True}
        )
        return conn.execute(str(compiled), {**compiled.params, **values}).fetchall()

    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        conn.execute("SET TimeZone = 'UTC'")  # as crmcal's columns keep time
        for _ in range(taken):
            assert run(conn)
            # The account's slot given back: only the quota's turns stay taken.
            conn.execute(
                "UPDATE provider_slots SET holder = NULL WHERE key = %s AND holder IS NOT NULL",
                (account,),
            )
        conn.execute("ANALYZE provider_slots")
    with psycopg.connect(conninfo(url)) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        assert run(conn)
        blocks = blocks_fetched(conn, "provider_slots")
        conn.rollback()
    return blocks


def _spending(url: str, turns: int) -> tuple[limits.Limit, limits.Rate]:
    """An account's limit counting against a quota of ``turns``, their rows made."""
    name = os.urandom(4).hex()
    rate = limits.Rate(None, f"google-project:spend-{name}", turns, dt.timedelta(minutes=1))  # type: ignore[arg-type]
    limit = limits.Limit(None, f"google:spend-{name}@example.test", 8, rate)  # type: ignore[arg-type]
    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        for key, count in ((rate.turns.key, turns), (limit.key, 8)):
            conn.execute(
                "INSERT INTO provider_slots (key, slot) SELECT %s, generate_series(0, %s - 1)",
                (key, count),
            )
    return limit, rate


@pytest.mark.parametrize("path", ["with its slot", "alone"])
def test_a_requests_turn_is_searched_for_from_anywhere_in_the_quota(
    queue_db: str,  # noqa: F811
    path: str,
) -> None:
    """A request's turn of the quota, taken with its account's slot
    (``_TAKE_WITH_TURNS``) or alone (``Rate.take``), is searched for from a random turn:
    with 1,500 of 2,000 turns taken that way, the next search reads a few of them.
    Searched for from the lowest, every turn taken lay below the first free one, and
    each search read them all."""
    limit, rate = _spending(queue_db, 2_000)

    def with_its_slot() -> tuple[Any, dict[str, Any]]:
        return limits._TAKE_WITH_TURNS, limit._take_with_turns_values(1)

    def alone() -> tuple[Any, dict[str, Any]]:
        statement = rate.turns._take_statement(1, limits.REQUEST_TTL, anywhere=True)
        return statement, {}

    take = with_its_slot if path == "with its slot" else alone
    blocks = _spend(queue_db, take, 1_500, limit.key)
    assert blocks < 100, blocks  # 20-24 measured; 650-700 from the lowest


def test_turns_searched_for_from_anywhere_wrap_to_the_lowest(
    queue_db: str,  # noqa: F811
) -> None:
    """Several turns at once, searched for from a random one, take the free ones above
    it and then from the lowest: never a taken one, never more than asked for, all of
    the quota's free ones when asked for more."""
    _, rate = _spending(queue_db, 50)
    statement = rate.turns._take_statement(30, limits.REQUEST_TTL, anywhere=True)
    compiled = statement.compile(dialect=postgresql.psycopg.dialect())
    with psycopg.connect(conninfo(queue_db), autocommit=True) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        first = [row[0] for row in conn.execute(str(compiled), compiled.params).fetchall()]
        statement = rate.turns._take_statement(30, limits.REQUEST_TTL, anywhere=True)
        compiled = statement.compile(dialect=postgresql.psycopg.dialect())
        second = [row[0] for row in conn.execute(str(compiled), compiled.params).fetchall()]
    assert len(first) == 30 == len(set(first))
    assert sorted(first + second) == list(range(50))
