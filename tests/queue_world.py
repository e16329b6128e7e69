"""What the distributed-queue tests share: a PostgreSQL database of their own, worker
processes, a look into procrastinate's job table, their settings, and a user with a
connection stored as the API would store it."""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy.engine import make_url

from crmcal import migrations
from crmcal.config import Settings
from crmcal.jobs.queue import conninfo, ensure_schema
from crmcal.vault import Vault
from tests.conftest import PG_SERVER, _pg_unavailable, create_connection_in

SECRET = "queue-test-key-6Jq2vT9xWmP4rZ8sN1bL5cK7dF3hG0yE"


def _database_url(name: str) -> str:
    url = make_url(PG_SERVER).set(drivername="postgresql+psycopg", database=name)
    return url.render_as_string(hide_password=False)


# This process's migrated databases that new ones are copied from, by whether they hold
# the queue's schema: made at the first ask, dropped when the process ends.
_TEMPLATES: dict[bool, str] = {}


def _drop_templates() -> None:
    with psycopg.connect(PG_SERVER, autocommit=True, connect_timeout=30) as admin:
        for name in _TEMPLATES.values():
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    _TEMPLATES.clear()


def _template(admin: psycopg.Connection[Any], queue_schema: bool) -> str:
    """The name of a database migrated to head (and with the queue's schema if
    ``queue_schema``) that nobody connects to: a copy of it (``CREATE DATABASE …
    TEMPLATE``) costs a fraction of migrating a new one."""
    if queue_schema not in _TEMPLATES:
        name = f"crmcal_template_{uuid.uuid4().hex[:12]}"
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            migrations.upgrade(_database_url(name))
            if queue_schema:
                ensure_schema(_database_url(name))
        except BaseException:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            raise
        if not _TEMPLATES:
            atexit.register(_drop_templates)
        _TEMPLATES[queue_schema] = name
    return _TEMPLATES[queue_schema]


@contextlib.contextmanager
def fresh_database(*, queue_schema: bool = True) -> Iterator[str]:
    """A database of its own (the queue's LISTEN/NOTIFY channels are per database, so
    parallel test runs never wake each other's workers), migrated, dropped at the end."""
    name = f"crmcal_queue_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(PG_SERVER, autocommit=True, connect_timeout=30)
    except psycopg.OperationalError as exc:
        _pg_unavailable(str(exc).strip())
    with admin:
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{_template(admin, queue_schema)}"')
        try:
            yield _database_url(name)
        finally:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def queue_db() -> Iterator[str]:
    """One database per test session (making and dropping one costs seconds); tests keep
    apart by using connections, or schemas, of their own."""
    with fresh_database() as url:
        yield url


@contextlib.contextmanager
def fresh_schema(database_url: str) -> Iterator[str]:
    """The URL of an empty schema of its own in ``database_url``, dropped at the end."""
    schema = f"s_{uuid.uuid4().hex[:12]}"
    query(database_url, f'CREATE SCHEMA "{schema}"')
    try:
        yield (
            make_url(database_url)
            .update_query_dict({"options": f"-csearch_path={schema}"})
            .render_as_string(hide_password=False)
        )
    finally:
        query(database_url, f'DROP SCHEMA "{schema}" CASCADE')


# How long a test's own question waits for a free connection slot of the server.
SLOT_WAIT_SECONDS = 300.0


def query(database_url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with _connect(database_url) as conn:
        cursor = conn.execute(sql, params)
        return cursor.fetchall() if cursor.description else []


def _connect(database_url: str) -> psycopg.Connection[Any]:
    """A new connection, once the server has a slot for it. The server is shared by test
    runs in parallel (and a test's own workers): all its ``max_connections`` in use at
    a moment is their doing, which crmcal's processes wait out as a transient refusal
    (``db_errors``), and so does a test's own question rather than fail the test."""
    deadline = time.monotonic() + SLOT_WAIT_SECONDS
    while True:
        try:
            return psycopg.connect(conninfo(database_url), autocommit=True)
        except psycopg.OperationalError as refused:
            # libpq keeps the SQLSTATE (53300) of a refused connection to itself.
            if "too many clients" not in str(refused) or time.monotonic() > deadline:
                raise
        time.sleep(0.1)


class Statements:
    """The text of every statement any psycopg connection of this process sends, from
    its making until ``monkeypatch`` is undone: counted at the driver, whatever sent it
    (SQLAlchemy, procrastinate, crmcal's direct statements)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.texts: list[str] = []
        original = psycopg.AsyncCursor.execute
        texts = self.texts

        async def execute(cursor: psycopg.AsyncCursor[Any], statement: Any, params: Any = None,
                          **options: Any) -> Any:  # fmt: skip
            texts.append(statement if isinstance(statement, str) else statement.as_string(cursor))
            return await original(cursor, statement, params, **options)

        monkeypatch.setattr(psycopg.AsyncCursor, "execute", execute)

    @property
    def first_words(self) -> list[str]:
        """Each statement's first word, in capitals (``SELECT``, ``INSERT`` …)."""
        return [text.split(None, 1)[0].upper() for text in self.texts]

    def count(self, part: str) -> int:
        """How many statements contain ``part``."""
        return sum(part in text for text in self.texts)


def blocks_fetched(conn: psycopg.Connection[Any], table: str) -> int:
    """The blocks of ``table`` and its indexes that this connection's transaction has
    asked PostgreSQL for so far: what a statement read, whatever the machine's load."""
    found = conn.execute(
        "SELECT sum(pg_stat_get_xact_blocks_fetched(c.oid)) FROM pg_class c"
        " WHERE c.oid = %(table)s::regclass"
        " OR c.oid IN (SELECT indexrelid FROM pg_index WHERE indrelid = %(table)s::regclass)",
        {"table": table},
    ).fetchone()
    return int(found[0] or 0) if found is not None else 0


def sync_jobs(database_url: str, status: str = "todo") -> list[str]:
    """The queueing locks of the sync jobs in ``status``."""
    rows = query(
        database_url,
        "SELECT queueing_lock FROM procrastinate_jobs WHERE task_name = 'crmcal.sync' "
        "AND status = %s ORDER BY id",
        status,
    )
    return [row[0] for row in rows]


class Worker:
    """A ``crmcal worker`` process, its output in a file."""

    def __init__(self, env: dict[str, str], log: Path, concurrency: int = 4) -> None:
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "crmcal", "worker", "--concurrency", str(concurrency)],
                # Its syncs stay under the events the parse pool is for: no pool processes.
                env={**os.environ, "CRMCAL_PARSE_WORKERS": "0", **env},
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def worker_env(database_url: str, **extra: str) -> dict[str, str]:
    return {
        "CRMCAL_DATABASE_URL": database_url,
        "CRMCAL_SECRET_KEY": SECRET,
        "CRMCAL_ALLOW_PRIVATE_NETWORKS": "1",
        "CRMCAL_RETRY_BACKOFF": "0.05",
        **extra,
    }


def settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"database_url": database_url, "secret_key": SECRET,
                              "allow_private_networks": True, "retry_backoff": 0.05}  # fmt: skip
    return Settings(**{**values, **overrides})


async def _user_with_connection(database_url: str, **columns: Any) -> tuple[int, str, int]:
    """A user and an active connection of theirs, stored as the API would; (user, token, id).
    Its credentials are sealed with the key these tests give crmcal (``SECRET``)."""
    return await create_connection_in(
        database_url, **{"credentials": Vault(SECRET).seal("refresh"), **columns}
    )
