"""Many rows inserted at once, nothing asked back (an import's participants and links).

SQLAlchemy builds each row's parameters in Python, key by key, before it binds them:
for an import of thousands of events, tens of thousands of rows, that cost more than
SQLite's own work. On SQLite the rows go to the driver's ``executemany`` as tuples,
each value bound by its column type's own processor (the very values SQLAlchemy would
bind), in one statement as before. Other databases take SQLAlchemy's multi-row
INSERT unchanged.

The tuples are built a column at a time, and a column's processor is called once per
value object, not once per row: an import's rows share the very same objects for
their ``created_at``, ``updated_at``, flags and NULLs, and processing every row's
copy of them was most of the cost left in Python. By identity, not equality: equal
values may bind apart (the two 02:30 of a night the clocks go back are equal
datetimes of different instants; True and 1 are different JSON).
"""

from __future__ import annotations

from collections.abc import Callable
from operator import itemgetter
from typing import Any

from sqlalchemy import Table, func, insert, select
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession

# Each parameter of a statement: its column's key and its type's bind processor.
_Step = tuple[str, Callable[[Any], Any] | None]

# (table, the rows' columns, dialect name) -> the statement and its parameters' steps
_PLANS: dict[tuple[Table, tuple[str, ...], str], tuple[str, list[_Step]]] = {}


async def insert_many(session: AsyncSession, table: Table, rows: list[dict[str, Any]]) -> None:
    """INSERT ``rows`` (dicts with the same keys) into ``table`` in the session's
    transaction."""
    if not rows:
        return
    connection = await session.connection()
    keys = tuple(rows[0])
    dialect = connection.dialect
    if dialect.name != "sqlite" or not _direct(table, keys, rows):
        await session.execute(insert(table), rows)
        return
    statement, plan = _plan(table, keys, dialect)
    await connection.exec_driver_sql(statement, _bound(rows, plan))


def _bound(rows: list[dict[str, Any]], plan: list[_Step]) -> list[tuple[Any, ...]]:
    """The rows' parameters in the statement's order, built a column at a time, each
    value object processed once (the loops over rows are the builtins' own)."""
    columns = []
    for key, process in plan:
        column = list(map(itemgetter(key), rows))
        if process is not None:
            ids = list(map(id, column))
            # Alive in ``rows`` meanwhile: an id stands for one object.
            bound = {n: process(value) for n, value in dict(zip(ids, column, strict=True)).items()}
            column = list(map(bound.__getitem__, ids))
        columns.append(column)
    return list(zip(*columns, strict=True))


async def insert_many_ids(
    session: AsyncSession, table: Table, rows: list[dict[str, Any]]
) -> list[int]:
    """``insert_many``, answering the new rows' ids (the integer primary key ``id``) in
    row order.

    On SQLite the ids are given, not asked back: SQLite gives a new row the largest id
    plus one (a table without AUTOINCREMENT), and a writer's transaction there holds
    the only write lock from its ``BEGIN IMMEDIATE`` on, so the ids read with one
    ``max(id)`` are the ones SQLite would choose (a transaction that did not begin as a
    writer fails rather than write over another's rows: the ids are its primary key).
    Elsewhere a multi-row INSERT ... RETURNING in row order.
    """
    if not rows:
        return []
    connection = await session.connection()
    keys = tuple(rows[0])
    id_column = table.c.id
    if (
        connection.dialect.name != "sqlite"
        or "id" in keys
        or table.dialect_options["sqlite"]["autoincrement"]
        or not _direct(table, keys, rows)
    ):
        returning = insert(table).returning(id_column, sort_by_parameter_order=True)
        return list(await session.scalars(returning, rows))
    last = int(await session.scalar(select(func.max(id_column))) or 0)
    ids = list(range(last + 1, last + 1 + len(rows)))
    await insert_many(session, table, [{"id": n, **row} for n, row in zip(ids, rows, strict=True)])
    return ids


def _direct(table: Table, keys: tuple[str, ...], rows: list[dict[str, Any]]) -> bool:
    """Whether the rows can skip SQLAlchemy: all of the same columns, in the same order,
    and none it would fill in Python (a default or onupdate it computes)."""
    if any(tuple(row) != keys for row in rows):
        return False
    return not any(
        column.key not in keys and (column.default is not None or column.onupdate is not None)
        for column in table.columns
    )


def _plan(table: Table, keys: tuple[str, ...], dialect: Dialect) -> tuple[str, list[_Step]]:
    """The statement SQLAlchemy compiles for these columns, and for each of its
    parameters in their order, the column's key and its type's bind processor."""
    found = _PLANS.get((table, keys, dialect.name))
    if found is None:
        compiled = insert(table).compile(dialect=dialect, column_keys=list(keys))
        order = list(compiled.positiontup or ())
        assert sorted(order) == sorted(keys), (order, keys)
        columns = [(key, table.c[key].type.dialect_impl(dialect)) for key in order]
        plan: list[_Step] = [(key, kind.bind_processor(dialect)) for key, kind in columns]
        found = _PLANS[(table, keys, dialect.name)] = (compiled.string, plan)
    return found
