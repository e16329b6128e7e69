"""UTC columns store the same text on SQLite however they are bound, and read back the
same instants on every backend."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, TypeDecorator, insert, select, text
from sqlalchemy.dialects import sqlite

from crmcal.crm.tables import UTCDateTime
from crmcal.db import Database
from tests.conftest import run

BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
VALUES = [
    None,
    dt.datetime(2026, 12, 6, 8, 0, tzinfo=dt.UTC),
    dt.datetime(2026, 12, 6, 8, 0, 5, 123, tzinfo=dt.UTC),
    dt.datetime(2026, 3, 29, 2, 30, 0, 999_999, tzinfo=BERLIN),  # not a local time there
    dt.datetime(2026, 10, 25, 2, 30, fold=1, tzinfo=BERLIN),
    dt.datetime(999, 5, 5, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
    dt.datetime(1, 1, 1, 12, 0, tzinfo=dt.timezone.utc),  # noqa: UP017  # another UTC object
    dt.datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=dt.UTC),
]


def _two_steps(value: Any) -> Any:
    """What SQLAlchemy binds for a decorated type: the conversion, then SQLite's own."""
    dialect = sqlite.dialect()
    decorated: Any = UTCDateTime().dialect_impl(dialect)
    plain = TypeDecorator.bind_processor(decorated, dialect)
    assert plain is not None
    return plain(value)


def test_sqlite_binds_in_one_step_the_text_of_two() -> None:
    process = UTCDateTime().dialect_impl(sqlite.dialect()).bind_processor(sqlite.dialect())
    assert process is not None
    for value in VALUES:
        assert process(value) == _two_steps(value), value


def test_sqlite_binding_does_not_go_through_the_decorator(monkeypatch: pytest.MonkeyPatch) -> None:
    """An import binds some ten of these per activity: one call each, not two layers."""

    def refuse(*args: Any) -> Any:
        raise AssertionError("bound through the two-step path")

    monkeypatch.setattr(UTCDateTime, "process_bind_param", refuse)
    process = UTCDateTime().dialect_impl(sqlite.dialect()).bind_processor(sqlite.dialect())
    assert process is not None
    assert process(VALUES[1]) == "2026-12-06 08:00:00.000000"


def test_a_naive_datetime_is_refused() -> None:
    process = UTCDateTime().dialect_impl(sqlite.dialect()).bind_processor(sqlite.dialect())
    assert process is not None
    with pytest.raises(ValueError, match="naive"):
        process(dt.datetime(2026, 1, 1))


def test_values_read_back_as_the_same_instants(db_url: str) -> None:
    table = Table(
        "utc_probe", MetaData(), Column("id", Integer, primary_key=True), Column("at", UTCDateTime)
    )

    async def main() -> tuple[list[Any], list[Any]]:
        db = Database(db_url)
        try:
            async with db.write() as session:
                await session.run_sync(lambda s: table.create(s.connection()))
                await session.execute(
                    insert(table), [{"id": n, "at": v} for n, v in enumerate(VALUES)]
                )
            async with db.read() as session:
                back = list(await session.scalars(select(table.c.at).order_by(table.c.id)))
                stored = []
                if db.sqlite:
                    stored = list(
                        await session.scalars(text("SELECT at FROM utc_probe ORDER BY id"))
                    )
            async with db.write() as session:
                await session.run_sync(lambda s: table.drop(s.connection()))
            return back, stored
        finally:
            await db.dispose()

    back, stored = run(main())
    assert back == [None if v is None else v.astimezone(dt.UTC) for v in VALUES]
    assert all(v is None or v.tzinfo is dt.UTC for v in back)
    if stored:
        assert stored == [_two_steps(v) for v in VALUES]
