"""What procrastinate's fetch of a job reads in the queue's table, against the real
PostgreSQL: counted by the server (the blocks its transaction asked for), not timed."""

from __future__ import annotations

import psycopg
import pytest

from crmcal.jobs.queue import LOCK_INDEX, conninfo
from tests.queue_world import fresh_database

pytestmark = pytest.mark.postgres

# The blocks of the queue's table and of each of its indexes one session's transaction
# asked for (the server's count of buffer accesses, found in its cache or read).
_BLOCKS_READ = """
SELECT c.relname, pg_stat_get_xact_blocks_fetched(c.oid)
  FROM pg_class c
 WHERE c.oid = 'procrastinate_jobs'::regclass
    OR c.oid IN (SELECT indexrelid FROM pg_index WHERE indrelid = 'procrastinate_jobs'::regclass)
"""


def _fetch_reads(url: str, waiting: int) -> dict[str, int]:
    """With ``waiting`` sync jobs queued (a lock each, as crmcal queues them) and the
    table analyzed (as crmcal does after a bulk), one fetch: the blocks it asked for,
    by table and index."""
    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        conn.execute("TRUNCATE procrastinate_jobs CASCADE")
        conn.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, lock, queueing_lock, args) "
            "SELECT 'sync', 'crmcal.sync', 'connection:' || n, 'connection:' || n, "
            "jsonb_build_object('connection_id', n) FROM generate_series(1, %s) n",
            (waiting,),
        )
        conn.execute("ANALYZE procrastinate_jobs")
    # A session of its own: a backend's counts not yet reported include its earlier
    # statements' (the inserts' checks of their keys).
    with psycopg.connect(conninfo(url), autocommit=True) as conn, conn.transaction():
        fetched = conn.execute(
            "SELECT id, lock FROM procrastinate_fetch_job_v2(ARRAY['sync'], NULL)"
        ).fetchone()
        assert fetched is not None
        assert fetched[1] == "connection:1"
        return {name: int(n) for name, n in conn.execute(_BLOCKS_READ).fetchall()}


def test_a_jobs_fetch_reads_the_same_whatever_the_queues_length() -> None:
    """procrastinate's fetch looks, for the job it takes, for another job of its lock
    waiting or running. crmcal's index on the lock finds those at once: the fetch asks
    for 35 blocks with 50 jobs waiting and 48 with 20,000 (a level more in each B-tree
    it descends and writes), as with 5,000. Without it, the search read procrastinate's
    ``(id, lock)`` index whole, every waiting job's entry at every fetch: 154 blocks
    with 20,000 waiting, 114 of them that index's."""
    with fresh_database() as url:
        few = _fetch_reads(url, 50)
        many = _fetch_reads(url, 20_000)
    assert sum(many.values()) <= sum(few.values()) + 20, (few, many)
    assert many.get(LOCK_INDEX, 0) >= 1, many  # the lock's jobs found by it


def test_the_lock_index_is_made_again_when_an_earlier_try_left_it_unfinished() -> None:
    """An index built concurrently that failed half-way stays behind, invalid, and is
    never used: the next start of a worker or server makes it again."""
    from crmcal.jobs.queue import ensure_schema

    with fresh_database() as url:
        with psycopg.connect(conninfo(url), autocommit=True) as conn:
            conn.execute(
                "UPDATE pg_index SET indisvalid = false WHERE indexrelid = %s::regclass",
                (LOCK_INDEX,),
            )
        ensure_schema(url)
        with psycopg.connect(conninfo(url), autocommit=True) as conn:
            valid = conn.execute(
                "SELECT indisvalid FROM pg_index WHERE indexrelid = %s::regclass", (LOCK_INDEX,)
            ).fetchone()
    assert valid == (True,)
