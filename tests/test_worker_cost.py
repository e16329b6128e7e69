"""What a worker's job costs in database round trips when the connection has nothing
new: counted with SQLAlchemy's cursor and transaction events on the real PostgreSQL,
through the job a worker runs (``crmcal.sync``), shared limits and all."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import types
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from psycopg import _queries
from psycopg.pq import TransactionStatus
from sqlalchemy import event, inspect

from crmcal.config import Settings
from crmcal.crm.tables import User
from crmcal.db import Database
from crmcal.jobs import queue
from crmcal.sync import context, lease, limits
from crmcal.sync.tables import Connection
from crmcal.vault import Vault
from tests.conftest import run
from tests.google_emulator import GoogleEmulator
from tests.queue_world import SECRET, _user_with_connection, query, queue_db  # noqa: F401

pytestmark = pytest.mark.postgres


class RoundTrips:
    """Statements sent to the server by any psycopg connection of this process, and
    transactions they opened (psycopg sends BEGIN before a statement on a connection
    not in autocommit and in no transaction); and, apart, the statements that went
    through SQLAlchemy's execution on ``db``'s engine. Counted at the driver: a job's
    statements sent directly (``crmcal.db_direct``) go through no SQLAlchemy event."""

    def __init__(self, db: Database) -> None:
        self.statements: list[str] = []
        # Each statement's length and number of parameters.
        self.sizes: list[tuple[int, int]] = []
        self.transactions = 0
        self.through_sqlalchemy = 0
        self.engine = db.engine.sync_engine
        event.listen(self.engine, "before_cursor_execute", self._sqlalchemy)
        self._patch = pytest.MonkeyPatch()
        original = psycopg.AsyncCursor.execute
        counted = self

        async def execute(cursor: psycopg.AsyncCursor[Any], query: Any, params: Any = None,
                          **options: Any) -> Any:  # fmt: skip
            text = query if isinstance(query, str) else query.as_string(cursor.connection)
            counted.statements.append(text.split(None, 1)[0].upper())
            counted.sizes.append((len(text.encode()), len(params or ())))
            conn = cursor.connection
            if not conn.autocommit and conn.info.transaction_status == TransactionStatus.IDLE:
                counted.transactions += 1
            return await original(cursor, query, params, **options)

        self._patch.setattr(psycopg.AsyncCursor, "execute", execute)
        # ORM sessions opened on ``db`` (each costs CPU made and closed, used or not).
        self.sessions = 0
        for kind in ("read", "write", "at_once"):
            self._patch.setattr(db, kind, self._session_counted(getattr(db, kind)))

    def _session_counted(self, opened: Any) -> Any:
        def opening(*args: Any, **kwargs: Any) -> Any:
            self.sessions += 1
            return opened(*args, **kwargs)

        return opening

    def _sqlalchemy(self, *_: Any) -> None:
        self.through_sqlalchemy += 1

    def stop(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._sqlalchemy)
        self._patch.undo()


def _settings(database_url: str, emulator: GoogleEmulator) -> Settings:
    return Settings(database_url=database_url, secret_key=SECRET, base_url="http://127.0.0.1:9",
                    google_api_url=emulator.url, google_oauth_url=emulator.url,
                    allow_private_networks=True, retry_backoff=0.05)  # fmt: skip


def _google_connection(database_url: str, emulator: GoogleEmulator) -> tuple[int, str]:
    email = f"cost-{os.urandom(4).hex()}@example.test"
    tokens = emulator.state.create_account(email)
    sealed = Vault(SECRET).seal(tokens["refresh_token"])
    _, _, connection_id = run(_user_with_connection(
        database_url, provider="google", account=email, calendar_id=email, credentials=sealed,
        connected_at=dt.datetime.now(dt.UTC),
    ))  # fmt: skip
    return connection_id, email


@contextlib.asynccontextmanager
async def worker_runtime(
    database_url: str, emulator: GoogleEmulator
) -> AsyncIterator[tuple[queue.Runtime, Any]]:
    """What a worker's jobs get: its Runtime, in the context procrastinate passes."""
    db = Database(database_url)
    app = queue.queue_app(database_url)
    runtime = queue.Runtime(db, Vault(SECRET), _settings(database_url, emulator), app=app)
    try:
        async with app.open_async():
            yield runtime, types.SimpleNamespace(additional_context={"crmcal": runtime})
    finally:
        limits.install(None)
        await db.dispose()


def test_a_no_change_sync_job_costs_few_round_trips(
    queue_db: str,  # noqa: F811
    google_emulator: GoogleEmulator,
) -> None:
    """The lease taken, the run opened and what the sync starts from read (unless the
    account is held after a throttling answer) in one statement; one statement to take
    the request's slot with its turn of the project's quota; the release with the
    closing write (the run ended, the positions saved and the lease freed) and the
    slot given back (the turn's window started) in one statement: 3 statements, each
    committed by itself (no BEGIN). It was 4, the slot given back in a statement of its
    own; before that 8 in 2 transactions: the lease read, updated, the run inserted and
    the start read apart, the connection read again at the release and then written."""
    connection_id, email = _google_connection(queue_db, google_emulator)
    since = dt.datetime.now(dt.UTC).replace(tzinfo=None)  # set again before the counted jobs

    async def jobs() -> list[RoundTrips]:
        async with worker_runtime(queue_db, google_emulator) as (runtime, context):
            for _ in range(2):  # the first sync, and one that settles what it did
                await queue.sync_connection(context, connection_id)
            nonlocal since
            since = dt.datetime.now(dt.UTC).replace(tzinfo=None)
            found = []
            for _ in range(2):
                counted = RoundTrips(runtime.db)
                await queue.sync_connection(context, connection_id)
                counted.stop()
                found.append(counted)
            return found

    first, second = run(jobs())
    assert Counter(second.statements) == Counter(first.statements)
    assert len(first.statements) <= 2, first.statements
    assert first.transactions == 0, first.statements
    # Both sent directly to the driver (``crmcal.db_direct``), neither through
    # SQLAlchemy's execution: its layers cost four to six times the driver's CPU a
    # statement, most of a no-change job's.
    assert first.through_sqlalchemy == 0, first.statements
    # Nor a session opened for nothing (the CRM's side, with nothing written since the
    # last run, is known to be empty from what the lease read).
    assert first.sessions == 0
    # psycopg parses each statement's placeholders once and keeps the result, not again
    # on every job: only for statements within its limits of size and parameters.
    kept = (_queries.MAX_CACHED_STATEMENT_LENGTH, _queries.MAX_CACHED_STATEMENT_PARAMS)
    for length, parameters in first.sizes:
        assert length <= kept[0], (length, kept)
        assert parameters <= kept[1], (parameters, kept)
    # The listing's slot was given back with the release: none of the account's is held.
    held = query(queue_db, "SELECT count(*) FROM provider_slots WHERE key = %s "
                 "AND holder IS NOT NULL", f"google:{email.lower()}")  # fmt: skip
    assert held == [(0,)]
    # Each job's listing spent one turn of the project's quota, whose minute runs from
    # the release (the turn taken with the lease is the one the listing used).
    turns = query(queue_db, "SELECT count(*) FROM provider_slots WHERE key LIKE "
                  "'google-project:%%' AND expires_at > %s",
                  since + limits.QUOTA_WINDOW)  # fmt: skip
    assert turns == [(2,)]


def test_a_jobs_turn_of_the_quota_is_searched_for_from_where_it_is_told(
    queue_db: str,  # noqa: F811
    google_emulator: GoogleEmulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The turn of the project's quota taken with a lease is the first free one from
    ``limits.turn_start`` on (random in a worker), and the lowest free one when none
    above is: searched always from the lowest, a job's search read every turn of the
    last minute's requests before it found one (thousands at a worker's rate)."""
    connection_id, _ = _google_connection(queue_db, google_emulator)

    def turns() -> dict[int, Any]:
        rows = query(queue_db, "SELECT slot, expires_at, holder IS NULL OR expires_at < "
                     "(now() AT TIME ZONE 'utc') FROM provider_slots "
                     "WHERE key LIKE 'google-project:%%'")  # fmt: skip
        return {slot: (expires, free) for slot, expires, free in rows}

    async def jobs(count: int) -> None:
        async with worker_runtime(queue_db, google_emulator) as (_, job_context):
            for _ in range(count):
                await queue.sync_connection(job_context, connection_id)

    run(jobs(2))  # the first sync (its token and listing take turns of their own), settled
    before = turns()
    free = sorted(slot for slot, (_, is_free) in before.items() if is_free)
    highest, lowest = free[-1], free[0]
    starts = iter([highest, highest])
    monkeypatch.setattr(limits, "turn_start", lambda count: next(starts))
    run(jobs(2))
    after = turns()
    taken = sorted(slot for slot in after if after[slot][0] != before[slot][0])
    # From the highest free turn on: that one; from it again: none free above, the lowest.
    assert taken == sorted({highest, lowest}), (taken, highest, lowest)


def test_a_held_accounts_job_is_deferred_without_a_run_or_a_request(
    queue_db: str,  # noqa: F811
    google_emulator: GoogleEmulator,
) -> None:
    """The hold is read in the lease's transaction: a held account's sync takes no lease,
    records no run, sends nothing, and its job goes back to the queue for the hold."""
    connection_id, email = _google_connection(queue_db, google_emulator)

    async def scenario() -> tuple[int, int]:
        async with worker_runtime(queue_db, google_emulator) as (runtime, context):
            await queue.sync_connection(context, connection_id)  # known not to be CalDAV
            assert runtime.limits is not None
            account = runtime.limits.for_account("google", email)
            assert account is not None
            await account.throttled(120)
            runs = int(query(queue_db, "SELECT count(*) FROM sync_runs WHERE connection_id = %s",
                             connection_id)[0][0])  # fmt: skip
            requests = sum(google_emulator.state.requests.values())
            await queue.sync_connection(context, connection_id)
            after = int(query(queue_db, "SELECT count(*) FROM sync_runs WHERE connection_id = %s",
                              connection_id)[0][0])  # fmt: skip
            return after - runs, sum(google_emulator.state.requests.values()) - requests

    new_runs, new_requests = run(scenario())
    assert new_runs == 0
    assert new_requests == 0
    waiting = query(
        queue_db,
        "SELECT extract(epoch FROM scheduled_at - now()) FROM procrastinate_jobs "
        "WHERE queueing_lock = %s AND status = 'todo'",
        queue.lock_of(connection_id),
    )
    assert len(waiting) == 1
    assert 60 < float(waiting[0][0]) <= 120
    state = query(queue_db, "SELECT state, locked_by FROM connections WHERE id = %s",
                  connection_id)  # fmt: skip
    assert state == [("active", None)]


def test_a_slot_taken_with_the_lease_goes_back_when_the_sync_sends_nothing(
    queue_db: str,  # noqa: F811
    google_emulator: GoogleEmulator,
) -> None:
    """The request slot taken with the lease for the listing is given back when the sync
    stops before it (here: its user was deactivated), and nothing is sent."""
    connection_id, email = _google_connection(queue_db, google_emulator)

    async def jobs() -> int:
        async with worker_runtime(queue_db, google_emulator) as (_runtime, context):
            await queue.sync_connection(context, connection_id)  # known not to be CalDAV
            query(queue_db, "UPDATE users SET active = false WHERE id = "
                  "(SELECT user_id FROM connections WHERE id = %s)", connection_id)  # fmt: skip
            requests = sum(google_emulator.state.requests.values())
            await queue.sync_connection(context, connection_id)
            return sum(google_emulator.state.requests.values()) - requests

    assert run(jobs()) == 0
    last = query(queue_db, "SELECT outcome, error FROM sync_runs WHERE connection_id = %s "
                 "ORDER BY id DESC LIMIT 1", connection_id)  # fmt: skip
    assert last[0][0] == "error", last
    assert "deactivated" in last[0][1], last
    held = query(queue_db, "SELECT count(*) FROM provider_slots WHERE key = %s "
                 "AND holder IS NOT NULL", f"google:{email.lower()}")  # fmt: skip
    assert held == [(0,)]


def test_the_run_that_prunes_the_history_ends_in_the_same_statements(
    queue_db: str,  # noqa: F811
    google_emulator: GoogleEmulator,
) -> None:
    """Every PRUNE_EVERY-th run cuts the connection's history to its newest RUNS_KEPT
    runs; with nothing new to write, that cut goes in the release's statement too (it
    took a transaction of its own, and the release with it)."""
    connection_id, _ = _google_connection(queue_db, google_emulator)
    old = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(days=1)

    async def job() -> RoundTrips:
        async with worker_runtime(queue_db, google_emulator) as (runtime, context):
            for _ in range(2):  # the first sync, and one that settles what it did
                await queue.sync_connection(context, connection_id)
            query(queue_db, "INSERT INTO sync_runs (connection_id, process, started_at, "
                  "ended_at, outcome, counts) SELECT %s, 'old', %s, %s, 'ok', '{}' "
                  "FROM generate_series(1, %s)", connection_id, old, old,
                  lease.RUNS_KEPT + 5)  # fmt: skip
            # The next run's id is a multiple of PRUNE_EVERY.
            query(queue_db, "SELECT setval('sync_runs_id_seq', (SELECT (max(id) / %s + 1) "
                  "* %s - 1 FROM sync_runs))", lease.PRUNE_EVERY, lease.PRUNE_EVERY)  # fmt: skip
            counted = RoundTrips(runtime.db)
            await queue.sync_connection(context, connection_id)
            counted.stop()
            return counted

    counted = run(job())
    runs = query(queue_db, "SELECT id, outcome FROM sync_runs WHERE connection_id = %s "
                 "ORDER BY id DESC", connection_id)  # fmt: skip
    assert runs[0][0] % lease.PRUNE_EVERY == 0
    assert runs[0][1] == "ok"
    assert len(runs) == lease.RUNS_KEPT
    assert len(counted.statements) <= 2, counted.statements
    assert counted.transactions == 0, counted.statements


def test_what_a_lease_reads_directly_is_what_the_orm_loads(
    queue_db: str,  # noqa: F811
    google_emulator: GoogleEmulator,
) -> None:
    """The connection and its owner read with the lease (sent directly, made into objects
    by crmcal) are the objects the ORM loads: every column attribute equal, detached,
    nothing changed on them; what the sync starts from is read with them."""
    connection_id, _ = _google_connection(queue_db, google_emulator)

    async def scenario() -> tuple[Any, Connection, User]:
        async with worker_runtime(queue_db, google_emulator) as (runtime, _context):
            held = await lease.take(runtime.db, connection_id, 60, reading=context.READING)
            assert held is not None
            async with runtime.db.read() as session:
                conn = await session.get(Connection, connection_id)
                assert conn is not None
                owner = await session.get(User, conn.user_id)
                assert owner is not None
            async with runtime.db.write() as session:
                await lease.give_back(session, held, lease.OK)
            return held.found, conn, owner

    start, conn, owner = run(scenario())
    for made, loaded in ((start.conn, conn), (start.owner, owner)):
        assert type(made) is type(loaded)
        state = inspect(made)
        assert state.detached
        assert not state.modified
        assert state.identity == inspect(loaded).identity
        for attr in inspect(type(made)).column_attrs:
            assert getattr(made, attr.key) == getattr(loaded, attr.key), attr.key
    assert start.conn.state == "syncing"
    assert start.conn.connected_at.tzinfo is not None
    assert start.written == {}
