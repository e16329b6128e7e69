"""Migrations from an empty database, on SQLite and PostgreSQL, match the tables in code."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

import crmcal.sync.tables  # noqa: F401 - the sync tables belong to the schema too
from crmcal import migrations
from crmcal.crm.tables import Base
from crmcal.db import sync_url
from tests.conftest import BACKENDS, PG_SERVER, pg_url


@pytest.fixture(params=BACKENDS)
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    request.getfixturevalue("pg_schema")  # skips, or fails under CI, without a server
    schema = f"crmcal_mig_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_SERVER, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
        try:
            yield pg_url(schema)
        finally:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def test_upgrade_from_empty_reaches_head_and_matches_models(empty_url: str) -> None:
    assert migrations.current_revision(empty_url) is None
    migrations.upgrade(empty_url)
    assert migrations.current_revision(empty_url) == migrations.head_revision()

    engine = create_engine(sync_url(empty_url))
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
            assert diff == [], f"migrations and crm/tables.py disagree: {diff}"
            keys = conn.execute(text("SELECT key FROM activity_types ORDER BY id")).scalars()
            assert list(keys) == ["call", "meeting", "task", "deadline", "email", "lunch"]
    finally:
        engine.dispose()


def test_upgrade_is_repeatable_and_downgrade_empties(empty_url: str) -> None:
    migrations.upgrade(empty_url)
    migrations.upgrade(empty_url)  # nothing to do the second time
    command.downgrade(migrations.alembic_config(empty_url), "base")
    engine = create_engine(sync_url(empty_url))
    try:
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    finally:
        engine.dispose()
    migrations.upgrade(empty_url)
    assert migrations.current_revision(empty_url) == migrations.head_revision()


def test_head_revision_read_from_the_files_is_alembics() -> None:
    from alembic.script import ScriptDirectory

    assert migrations.head_revision() == ScriptDirectory(str(migrations.HERE)).get_current_head()


def test_current_revision_after_a_partial_upgrade(empty_url: str) -> None:
    migrations.upgrade(empty_url, "0001")
    assert migrations.current_revision(empty_url) == "0001"
    assert migrations.current_revision(empty_url) != migrations.head_revision()


def test_an_activity_that_had_a_rule_becomes_the_first_occurrence_of_a_series(
    empty_url: str,
) -> None:
    migrations.upgrade(empty_url, "0007")
    engine = create_engine(sync_url(empty_url))
    try:
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO users (id, email, name, is_admin, permissions, timezone, active,"
                " created_at, updated_at) VALUES (1, 'a@b.test', 'A', false, '[]', 'UTC', true,"
                " '2026-01-01', '2026-01-01')"
            ))  # fmt: skip
            conn.execute(text(
                "INSERT INTO activities (id, uid, type, subject, all_day, start_at, timezone,"
                " done, busy, visibility, owner_id, notify_participants, recurrence,"
                " created_at, updated_at) VALUES (1, 'u1', 'call', 'Weekly', false,"
                " '2027-01-05 08:00:00', 'Europe/Berlin', false, true, 'everyone', 1, false,"
                " 'FREQ=WEEKLY;COUNT=3', '2026-01-01', '2026-01-01')"
            ))  # fmt: skip
        migrations.upgrade(empty_url)
        with engine.connect() as conn:
            series = conn.execute(
                text("SELECT id, rrule, subject, timezone FROM activity_series")
            ).one()
            assert tuple(series[1:]) == ("FREQ=WEEKLY;COUNT=3", "Weekly", "Europe/Berlin")
            row = conn.execute(
                text("SELECT series_id, original_start_at FROM activities WHERE id = 1")
            ).one()
            assert row[0] == series[0]
            assert str(row[1]).startswith("2027-01-05 08:00:00")
    finally:
        engine.dispose()


def test_a_series_takes_the_organizer_of_its_occurrences(empty_url: str) -> None:
    migrations.upgrade(empty_url, "0007")
    engine = create_engine(sync_url(empty_url))
    try:
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO users (id, email, name, is_admin, permissions, timezone, active,"
                " created_at, updated_at) VALUES (1, 'a@b.test', 'A', false, '[]', 'UTC', true,"
                " '2026-01-01', '2026-01-01')"
            ))  # fmt: skip
            for n, subject in ((1, "Invited"), (2, "Own")):
                conn.execute(text(
                    "INSERT INTO activities (id, uid, type, subject, all_day, start_at,"
                    " timezone, done, busy, visibility, owner_id, notify_participants,"
                    f" recurrence, created_at, updated_at) VALUES ({n}, 'u{n}', 'call',"
                    f" '{subject}', false, '2027-01-05 08:00:00', 'UTC', false, true,"
                    " 'everyone', 1, false, 'FREQ=WEEKLY;COUNT=3', '2026-01-01', '2026-01-01')"
                ))  # fmt: skip
        migrations.upgrade(empty_url, "0016")
        with engine.begin() as conn:
            conn.execute(text("UPDATE activities SET organizer = 'lee@partner.test' WHERE id = 1"))
        migrations.upgrade(empty_url)
        with engine.connect() as conn:
            found = conn.execute(
                text("SELECT subject, organizer FROM activity_series ORDER BY subject")
            ).all()
        assert [tuple(r) for r in found] == [("Invited", "lee@partner.test"), ("Own", None)]
    finally:
        engine.dispose()
