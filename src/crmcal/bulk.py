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

A JSON column's values may come encoded already (``json_texts``: an import's links
have their digests encoded where their events were parsed, off the event loop): on
SQLite they are bound as they are, the text SQLAlchemy would bind for them; elsewhere
they are decoded and bound as any value.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from operator import itemgetter
from typing import Any

from sqlalchemy import Table, func, insert, select
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession

# Each parameter of a statement: its column's key and its type's bind processor.
_Step = tuple[str, Callable[[Any], Any] | None]

# (table, the rows' columns, dialect name) -> the statement and its parameters' steps
_PLANS: dict[tuple[Table, tuple[str, ...], str], tuple[str, list[_Step]]] = {}


async def insert_many(
    session: AsyncSession,
    table: Table,
    rows: list[dict[str, Any]],
    columns: Mapping[str, Sequence[Any]] | None = None,
    json_texts: Mapping[str, Sequence[str]] | None = None,
) -> None:
    """INSERT ``rows`` (dicts with the same keys) into ``table`` in the session's
    transaction; ``columns``: more columns, given apart, a value for each row (an id
    that differs from row to row, beside rows that may be one dict shared by many);
    ``json_texts``: JSON columns given apart the same way, each value as the text
    ``json.dumps`` makes of it (what SQLAlchemy binds for it on SQLite)."""
    if not rows:
        return
    connection = await session.connection()
    texts = json_texts or {}
    extra = {**(columns or {}), **texts}
    if any(len(values) != len(rows) for values in extra.values()):
        raise ValueError("a column given apart needs a value for each row")
    keys = (*rows[0], *extra)
    dialect = connection.dialect
    if dialect.name != "sqlite" or not _direct(table, keys, rows, extra):
        decoded = {key: [json.loads(text) for text in values] for key, values in texts.items()}
        await session.execute(insert(table), _merged(rows, {**extra, **decoded}))
        return
    statement, plan = _plan(table, keys, dialect)
    bound = [(key, None if key in texts else process) for key, process in plan]
    await connection.exec_driver_sql(statement, _bound(rows, bound, extra))


def _merged(rows: list[dict[str, Any]], extra: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Each row with its values of ``extra`` (new dicts: a row may be shared)."""
    if not extra:
        return rows
    values = [
        dict(zip(extra, row_values, strict=True))
        for row_values in zip(*extra.values(), strict=True)
    ]
    return [{**row, **more} for row, more in zip(rows, values, strict=True)]


def _bound(
    rows: list[dict[str, Any]], plan: list[_Step], extra: Mapping[str, Sequence[Any]]
) -> list[tuple[Any, ...]]:
    """The rows' parameters in the statement's order, built a column at a time, each
    value object processed once (the loops over rows are the builtins' own)."""
    columns = []
    for key, process in plan:
        column = list(extra[key]) if key in extra else list(map(itemgetter(key), rows))
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
        or not _direct(table, keys, rows, {})
    ):
        returning = insert(table).returning(id_column, sort_by_parameter_order=True)
        return list(await session.scalars(returning, rows))
    last = int(await session.scalar(select(func.max(id_column))) or 0)
    ids = list(range(last + 1, last + 1 + len(rows)))
    await insert_many(session, table, rows, {"id": ids})
    return ids


def _direct(
    table: Table,
    keys: tuple[str, ...],
    rows: list[dict[str, Any]],
    extra: Mapping[str, Sequence[Any]],
) -> bool:
    """Whether the rows can skip SQLAlchemy: all of the same columns, in the same order,
    and none it would fill in Python (a default or onupdate it computes)."""
    given = keys[: len(keys) - len(extra)]
    # Each dict once: rows may share one (the occurrences of a series, their people).
    if any(tuple(row) != given for row in {id(row): row for row in rows}.values()):
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
