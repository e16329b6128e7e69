"""Many rows inserted at once, nothing asked back (an import's participants and links).

SQLAlchemy builds each row's parameters in Python, key by key, before it binds them:
for an import of thousands of events, tens of thousands of rows, that cost more than
SQLite's own work. On SQLite the rows go to the driver's ``executemany`` as tuples,
each value bound by its column type's own processor (the very values SQLAlchemy would
bind), in one statement as before. Other databases take SQLAlchemy's multi-row
INSERT unchanged.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table, func, insert, select
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession

# (table, the rows' columns, dialect name) -> the statement, and each of its parameters'
# column key and bind processor
_PLANS: dict[tuple[Table, tuple[str, ...], str], tuple[str, list[Any]]] = {}


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
    values = [
        tuple([row[key] if process is None else process(row[key]) for key, process in plan])
        for row in rows
    ]
    await connection.exec_driver_sql(statement, values)


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


def _plan(table: Table, keys: tuple[str, ...], dialect: Dialect) -> tuple[str, list[Any]]:
    """The statement SQLAlchemy compiles for these columns, and for each of its
    parameters in their order, the column's key and its type's bind processor."""
    found = _PLANS.get((table, keys, dialect.name))
    if found is None:
        compiled = insert(table).compile(dialect=dialect, column_keys=list(keys))
        order = list(compiled.positiontup or ())
        assert sorted(order) == sorted(keys), (order, keys)
        columns = [(key, table.c[key].type.dialect_impl(dialect)) for key in order]
        plan = [(key, kind.bind_processor(dialect)) for key, kind in columns]
        found = _PLANS[(table, keys, dialect.name)] = (compiled.string, plan)
    return found
