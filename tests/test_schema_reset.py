"""The databases each test starts on (tests/conftest.py, ``db_url``). The PostgreSQL
schema is emptied between tests (``_reset_postgres``): every row a test left goes, the
ids start again at 1, the built-in activity types are as migrated, and the connection
kept for the emptying is made anew when the server has ended it. A SQLite database is a
copy of the migrated one, in memory where the machine has a tmpfs, gone after its test."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import _RESETTING, PG_SERVER, _reset_postgres, make_user, pg_url, sqlite_only


def _rows(schema: str, statement: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(PG_SERVER, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        return conn.execute(statement).fetchall()


def _leave_traces(schema: str) -> None:
    """What a test may leave: rows, ids drawn, a type of its own, built-in types changed."""
    make_user(pg_url(schema), email="a@crm.test", name="A")
    make_user(pg_url(schema), email="b@crm.test", name="B")
    _rows(schema, "INSERT INTO activity_types (key, name, active, builtin, created_at, "
                  "updated_at) VALUES ('custom', 'Custom', true, false, now(), now()) "
                  "RETURNING id")  # fmt: skip
    _rows(schema, "UPDATE activity_types SET name = 'Renamed', active = false "
                  "WHERE builtin RETURNING id")  # fmt: skip


TYPES = "SELECT key, name, active, builtin FROM activity_types ORDER BY key"


@pytest.mark.postgres
def test_what_a_test_left_is_gone_and_ids_start_again(pg_schema: str) -> None:
    _reset_postgres(pg_schema)
    migrated = _rows(pg_schema, TYPES)
    assert migrated
    assert all(builtin for *_, builtin in migrated)
    _leave_traces(pg_schema)
    _reset_postgres(pg_schema)
    assert _rows(pg_schema, "SELECT count(*) FROM users") == [(0,)]
    assert _rows(pg_schema, TYPES) == migrated
    assert make_user(pg_url(pg_schema), email="c@crm.test", name="C")[0] == 1
    # An id drawn after the emptying is reset by the next one as well.
    _reset_postgres(pg_schema)
    assert _rows(pg_schema, "SELECT last_value, is_called FROM users_id_seq") == [(1, False)]


@pytest.mark.postgres
def test_the_kept_connection_ended_by_the_server_is_made_anew(pg_schema: str) -> None:
    _reset_postgres(pg_schema)
    kept = _RESETTING[pg_schema]
    _rows(pg_schema, f"SELECT pg_terminate_backend({kept.info.backend_pid})")
    _leave_traces(pg_schema)
    _reset_postgres(pg_schema)
    assert _RESETTING[pg_schema] is not kept
    assert _rows(pg_schema, "SELECT count(*) FROM users") == [(0,)]


SHM = Path("/dev/shm")  # noqa: S108  # only read: is there a tmpfs


@sqlite_only
def test_a_sqlite_database_is_a_migrated_copy_in_memory(
    db_url: str, sqlite_template: Path, sqlite_dir: Path
) -> None:
    path = Path(db_url.removeprefix("sqlite:///"))
    assert path.parent == sqlite_dir
    assert path.read_bytes() == sqlite_template.read_bytes()
    if SHM.is_dir() and os.access(SHM, os.W_OK):
        assert path.is_relative_to(SHM)
