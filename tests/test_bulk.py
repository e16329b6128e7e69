"""``bulk.insert_many`` writes what SQLAlchemy's multi-row INSERT writes, and on SQLite
without building each row's parameters in SQLAlchemy."""

from __future__ import annotations

import datetime as dt
import json
import zoneinfo
from typing import Any

import pytest
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Date,
    Integer,
    MetaData,
    String,
    Table,
    insert,
    select,
    text,
)
from sqlalchemy.sql.compiler import SQLCompiler

from crmcal import bulk
from crmcal.crm.tables import UTCDateTime, utcnow
from crmcal.db import Database
from tests.conftest import run

META = MetaData()
PROBE = Table(
    "bulk_probe", META,
    Column("id", Integer, primary_key=True),
    Column("name", String(50)),
    Column("at", UTCDateTime),
    Column("day", Date),
    Column("flag", Boolean),
    Column("data", JSON),
    Column("kind", String(16), server_default="plain"),
)  # fmt: skip
DEFAULTED = Table(
    "bulk_defaulted", META,
    Column("id", Integer, primary_key=True),
    Column("at", UTCDateTime, default=utcnow),
)  # fmt: skip


def rows(first: int, count: int) -> list[dict[str, Any]]:
    berlin = zoneinfo.ZoneInfo("Europe/Berlin")
    return [
        {"id": first + n, "name": None if n % 5 == 0 else f"row {n} ü",
         "at": None if n % 7 == 0 else dt.datetime(2026, 3, 29, 1, n % 60, n % 60, n,
                                                   tzinfo=berlin),
         "day": dt.date(2026, 1, 1) + dt.timedelta(days=n), "flag": n % 2 == 0,
         "data": None if n % 3 == 0 else {"n": n, "list": [1, "a", None], "ü": True}}
        for n in range(count)
    ]  # fmt: skip


async def _with_tables(db_url: str, body: Any) -> Any:
    db = Database(db_url)
    try:
        async with db.write() as session:
            await session.run_sync(lambda s: META.create_all(s.connection()))
        try:
            return await body(db)
        finally:
            async with db.write() as session:
                await session.run_sync(lambda s: META.drop_all(s.connection()))
    finally:
        await db.dispose()


def test_rows_are_written_as_sqlalchemy_writes_them(db_url: str) -> None:
    async def body(db: Database) -> tuple[list[Any], list[Any]]:
        async with db.write() as session:
            await session.execute(insert(PROBE), rows(0, 40))
            await bulk.insert_many(session, PROBE, rows(1000, 40))
            await bulk.insert_many(session, PROBE, [])
        async with db.read() as session:
            columns = "name, at, day, flag, data, kind"
            # As stored (the text on SQLite), and as SQLAlchemy reads it back.
            raw = list(await session.execute(text(f"SELECT {columns} FROM bulk_probe ORDER BY id")))
            typed = list(await session.execute(select(PROBE).order_by(PROBE.c.id)))
            return [tuple(r) for r in raw], [tuple(r)[1:] for r in typed]

    raw, typed = run(_with_tables(db_url, body))
    assert len(raw) == 80
    assert raw[:40] == raw[40:]
    assert typed[:40] == typed[40:]


def test_sqlite_rows_skip_sqlalchemy_parameter_building(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An import's participants and links are tens of thousands of rows: their
    parameters are not built one by one in SQLAlchemy on SQLite."""
    built = [0]
    construct = SQLCompiler.construct_params

    def counted(self: SQLCompiler, *args: Any, **kwargs: Any) -> Any:
        built[0] += 1
        return construct(self, *args, **kwargs)

    async def body(db: Database) -> int:
        monkeypatch.setattr(SQLCompiler, "construct_params", counted)
        async with db.write() as session:
            await bulk.insert_many(session, PROBE, rows(0, 200))
        async with db.read() as session:
            return int(await session.scalar(select(PROBE.c.id).order_by(PROBE.c.id.desc())) or 0)

    assert run(_with_tables(db_url, body)) == 199
    if db_url.startswith("sqlite"):
        assert built[0] <= 2  # the SELECT; none per row
    else:
        assert built[0] >= 200  # SQLAlchemy's own multi-row INSERT, unchanged


def test_rows_a_python_default_would_fill_go_through_sqlalchemy(db_url: str) -> None:
    async def body(db: Database) -> list[Any]:
        async with db.write() as session:
            await bulk.insert_many(session, DEFAULTED, [{"id": 1}, {"id": 2}])
            # A default the database fills is the database's.
            await bulk.insert_many(
                session, PROBE, [{"id": 1, "name": "a"}, {"id": 2, "name": None}]
            )
        async with db.read() as session:
            made = list(await session.scalars(select(DEFAULTED.c.at).order_by(DEFAULTED.c.id)))
            probe = list(
                await session.execute(select(PROBE.c.name, PROBE.c.kind).order_by(PROBE.c.id))
            )
            return [made, [tuple(r) for r in probe]]

    made, probe = run(_with_tables(db_url, body))
    assert len(made) == 2
    assert all(isinstance(at, dt.datetime) for at in made)
    assert probe == [("a", "plain"), (None, "plain")]


def test_ids_answered_are_those_of_the_rows_in_order(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``insert_many_ids``: each row's own id, in row order, after rows already there
    (and after one deleted at the end); on SQLite no row's parameters built by
    SQLAlchemy."""
    built = [0]
    construct = SQLCompiler.construct_params

    def counted(self: SQLCompiler, *args: Any, **kwargs: Any) -> Any:
        built[0] += 1
        return construct(self, *args, **kwargs)

    def named(first: int) -> list[dict[str, Any]]:
        return [{k: v for k, v in row.items() if k != "id"} for row in rows(first, 150)]

    async def body(db: Database) -> tuple[list[int], list[int], dict[int, Any], int]:
        async with db.write() as session:
            before = await bulk.insert_many_ids(session, PROBE, named(0))
            await session.execute(PROBE.delete().where(PROBE.c.id == before[-1]))
        monkeypatch.setattr(SQLCompiler, "construct_params", counted)
        async with db.write() as session:
            given = named(0)
            for n, row in enumerate(given):
                row["name"] = f"second {n}"
            ids = await bulk.insert_many_ids(session, PROBE, given)
        monkeypatch.undo()
        async with db.read() as session:
            found = dict(tuple(r) for r in await session.execute(select(PROBE.c.id, PROBE.c.name)))
        return before, ids, found, built[0]

    before, ids, found, calls = run(_with_tables(db_url, body))
    # New ids, past every row there (the one deleted last may be given again, as
    # SQLite itself does without AUTOINCREMENT).
    assert len(set(ids)) == 150
    assert min(ids) > max(before[:-1])
    assert [found[i] for i in ids] == [f"second {n}" for n in range(150)]
    if db_url.startswith("sqlite"):
        assert calls <= 2  # the max(id); none per row


def test_shared_values_are_bound_once_on_sqlite(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The objects an import's rows share (its ``created_at``, flags, NULLs) are
    processed once, not once per row; equal values that are not the same object are
    processed each (the two 02:30 of the night the clocks go back are equal datetimes
    of different instants), and the rows stay as written."""
    if not db_url.startswith("sqlite"):
        pytest.skip("SQLAlchemy binds the rows on other databases")
    seen: list[Any] = []
    made = UTCDateTime.bind_processor

    def counting(self: UTCDateTime, dialect: Any) -> Any:
        process = made(self, dialect)
        assert process is not None

        def counted(value: Any) -> Any:
            seen.append(value)
            return process(value)

        return counted

    monkeypatch.setattr(UTCDateTime, "bind_processor", counting)
    monkeypatch.setattr(bulk, "_PLANS", {})
    berlin = zoneinfo.ZoneInfo("Europe/Berlin")
    summer = dt.datetime(2026, 10, 25, 2, 30, tzinfo=berlin)  # 00:30 UTC, in CEST
    winter = summer.replace(fold=1)  # an hour later, in CET, and equal to it
    assert summer == winter
    shared = [summer, winter, None]
    given = [
        {"id": n, "name": f"r{n}", "flag": n % 2 == 0, "data": {"n": n}, "at": shared[n % 3]}
        for n in range(300)
    ]  # fmt: skip

    async def body(db: Database) -> list[Any]:
        async with db.write() as session:
            await bulk.insert_many(session, PROBE, given)
        async with db.read() as session:
            found = await session.execute(
                select(PROBE.c.at, PROBE.c.flag, PROBE.c.data).order_by(PROBE.c.id)
            )
            return [tuple(r) for r in found]

    stored = run(_with_tables(db_url, body))
    assert len(seen) == 3  # not 300
    instants = [summer.astimezone(dt.UTC), winter.astimezone(dt.UTC), None]
    assert instants[0] != instants[1]
    assert stored == [(instants[n % 3], n % 2 == 0, {"n": n}) for n in range(300)]


def test_one_row_shared_by_many_with_columns_given_apart(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows that are one dict shared by many (the occurrences of a series, their
    participants), with the columns that differ from row to row given apart: each
    row written with its own values; on SQLite the shared dict is bound once, and no
    row's parameters are built by SQLAlchemy."""
    built = [0]
    construct = SQLCompiler.construct_params

    def counted(self: SQLCompiler, *args: Any, **kwargs: Any) -> Any:
        built[0] += 1
        return construct(self, *args, **kwargs)

    at = dt.datetime(2026, 5, 4, 9, 30, tzinfo=dt.UTC)
    shared = {"at": at, "flag": True, "data": {"same": [1, 2]}}
    other = {"at": None, "flag": False, "data": None}  # the same keys, another dict
    given: list[dict[str, Any]] = [other, *[shared] * 199]
    names = [f"row {n}" for n in range(200)]

    async def body(db: Database) -> list[Any]:
        monkeypatch.setattr(SQLCompiler, "construct_params", counted)
        async with db.write() as session:
            await bulk.insert_many(
                session, PROBE, given, {"id": list(range(1, 201)), "name": names}
            )
        monkeypatch.undo()
        async with db.read() as session:
            found = await session.execute(
                select(PROBE.c.id, PROBE.c.name, PROBE.c.at, PROBE.c.flag, PROBE.c.data).order_by(
                    PROBE.c.id
                )
            )
            return [tuple(r) for r in found]

    stored = run(_with_tables(db_url, body))
    assert stored[0] == (1, "row 0", None, False, None)
    assert stored[1:] == [(n + 1, f"row {n}", at, True, {"same": [1, 2]}) for n in range(1, 200)]
    if db_url.startswith("sqlite"):
        assert built[0] <= 1  # none per row
    assert shared == {"at": at, "flag": True, "data": {"same": [1, 2]}}  # left as given
    with pytest.raises(ValueError, match="a value for each row"):
        run(_with_tables(db_url, lambda db: _insert_short(db, given)))


async def _insert_short(db: Database, given: list[dict[str, Any]]) -> None:
    async with db.write() as session:
        await bulk.insert_many(session, PROBE, given, {"id": [1, 2]})


def test_json_given_as_text_is_stored_as_its_value_would_be(db_url: str) -> None:
    """A JSON column's values given encoded already (an import's link digests, encoded
    where their events were parsed) are stored as the values themselves would be: the
    same text on SQLite, the same JSON elsewhere."""

    def without_data(first: int) -> list[dict[str, Any]]:
        return [{k: v for k, v in row.items() if k != "data"} for row in rows(first, 30)]

    async def body(db: Database) -> tuple[list[Any], list[Any]]:
        async with db.write() as session:
            await session.execute(insert(PROBE), rows(0, 30))
            texts = [json.dumps(row["data"]) for row in rows(1000, 30)]
            await bulk.insert_many(session, PROBE, without_data(1000), json_texts={"data": texts})
            with pytest.raises(ValueError, match="a value for each row"):
                await bulk.insert_many(session, PROBE, without_data(2000), json_texts={"data": []})
        async with db.read() as session:
            stored = text("SELECT data FROM bulk_probe WHERE id >= :low AND id < :high ORDER BY id")
            given = list(await session.scalars(stored, {"low": 0, "high": 1000}))
            encoded = list(await session.scalars(stored, {"low": 1000, "high": 2000}))
        return given, encoded

    given, encoded = run(_with_tables(db_url, body))
    assert len(encoded) == 30
    assert encoded == given
