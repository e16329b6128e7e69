"""Statements a worker runs on every job, sent on the pooled psycopg connection directly.

A sync with nothing new makes two statements of fixed shape (its lease, and its
release with the closing write). Through SQLAlchemy each cost four to six times the
CPU the driver spends on it: the statement's cache key built again from the whole
statement tree, the asyncio layer's greenlet switches for every cursor call, the
result's metadata, the ORM's loading of each row into objects. Measured in one
process, one read of a connection and its owner: 1.3 ms through the ORM, 0.7 ms
through SQLAlchemy Core, 0.25 ms sent here (checkout and checkin included).

A statement is compiled once (``Prepared``: its SQL text, the values of the
parameters it carries, the bind and result processors of its columns' types) and
sent on a connection checked out of the engine's own pool, so the pool's size, its
ping of an idle connection and its invalidation of a broken one all hold as for
any other statement. It runs committed by itself (autocommit), as
``Database.execute_one`` runs one. Its errors are SQLAlchemy's, as any other
statement's: ``crmcal.db_errors`` reads them the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import psycopg
from psycopg import pq
from sqlalchemy import ClauseElement, Executable
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import make_transient_to_detached
from sqlalchemy.orm.base import instance_state
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.util.concurrency import greenlet_spawn

Processor = Callable[[Any], Any]


class Prepared:
    """A statement compiled once for a PostgreSQL dialect: its SQL, its parameters'
    fixed values and processors, and its result columns' processors."""

    __slots__ = ("binds", "fixed", "results", "sql", "statement")

    def __init__(self, statement: Executable, dialect: Dialect) -> None:
        compiled = cast(SQLCompiler, cast(ClauseElement, statement).compile(dialect=dialect))
        if "POSTCOMPILE" in compiled.string:
            # An IN list of values (expanding parameters) is rendered only at execution.
            raise ValueError("a statement sent directly takes no expanding parameters")
        self.statement = statement  # kept: its identity keys the cache
        self.sql = compiled.string
        processors = cast(dict[str, Processor], dict(compiled._bind_processors))
        named = set(compiled.bind_names.values())
        self.fixed: dict[str, Any] = {}
        for name, bind in compiled.binds.items():
            if name not in named or bind.required or bind.callable is not None:
                continue
            value = bind.value
            process = processors.get(name)
            self.fixed[name] = process(value) if process is not None else value
        self.binds = {name: process for name, process in processors.items()
                      if name not in self.fixed}  # fmt: skip
        self.results: list[Processor | None] = [
            column[3]._cached_result_processor(dialect, None)
            for column in compiled._result_columns or ()
        ]

    def parameters(self, given: dict[str, Any]) -> dict[str, Any]:
        values = dict(self.fixed)
        for name, value in given.items():
            process = self.binds.get(name)
            # As SQLAlchemy does, None too (a JSON column's None is JSON's null).
            values[name] = process(value) if process is not None else value
        return values

    def rows(self, found: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
        results = self.results
        if not any(results):
            return [tuple(row) for row in found]
        return [
            tuple(
                value if process is None else process(value)
                for process, value in zip(results, row, strict=True)
            )
            for row in found
        ]


_PREPARED: dict[int, Prepared] = {}


def prepared(statement: Executable, dialect: Dialect) -> Prepared:
    """``statement`` compiled once (statements of fixed shape are built once, so their
    identity is the key; the entry keeps the statement, so the identity is not reused)."""
    found = _PREPARED.get(id(statement))
    if found is None or found.statement is not statement:
        found = _PREPARED[id(statement)] = Prepared(statement, dialect)
    return found


async def rows(
    engine: AsyncEngine, statement: Executable, parameters: dict[str, Any]
) -> list[tuple[Any, ...]]:
    """Run ``statement`` (fixed shape, PostgreSQL) committed by itself on a connection of
    ``engine``'s pool; its rows, their values processed as SQLAlchemy's would be."""
    sync_engine = engine.sync_engine
    dialect = sync_engine.dialect
    one = prepared(statement, dialect)
    values = one.parameters(parameters)
    # The pool's checkout (and its ping of a connection idle for a while) and checkin
    # (which rolls back nothing: no transaction is left open) are synchronous code
    # that awaits the driver, so they run in SQLAlchemy's greenlet, once each.
    fairy = await greenlet_spawn(sync_engine.pool.connect)
    try:
        connection = cast(psycopg.AsyncConnection[Any], fairy.driver_connection)
        try:
            # Out of autocommit again before the connection goes back: the pool's
            # other users (sessions) run transactions on it.
            if not connection.autocommit:
                await connection.set_autocommit(True)
            cursor = await connection.execute(one.sql, values)
            # Rows or not, read from the result's status: ``description`` would make an
            # object per column first.
            result = cursor.pgresult
            tuples = result is not None and result.status == pq.ExecStatus.TUPLES_OK
            found = await cursor.fetchall() if tuples else []
            await connection.set_autocommit(False)
        except psycopg.Error as exc:
            broken = connection.closed or connection.broken or not await _restored(connection)
            if broken:
                fairy.invalidate(exc)
            raise DBAPIError.instance(one.sql, values, exc, psycopg.Error, dialect=dialect,
                                      connection_invalidated=broken) from exc  # fmt: skip
        except BaseException:
            # Cancelled mid-statement: the connection's state is unknown, so it is not
            # handed out again (as SQLAlchemy invalidates one).
            fairy.invalidate()
            raise
    finally:
        await greenlet_spawn(fairy.close)
    return one.rows(found)


async def _restored(connection: psycopg.AsyncConnection[Any]) -> bool:
    """After a statement's error (its own: the connection is in no transaction), the
    connection out of autocommit again; False when that fails (it is not handed out)."""
    try:
        await connection.set_autocommit(False)
    except psycopg.Error:
        return False
    return True


def detached(cls: type[Any], keys: Sequence[str], values: Sequence[Any]) -> Any:
    """An instance of the mapped class ``cls`` with these column attributes, as a
    session that loaded it and closed would leave it (detached, nothing changed)."""
    obj = cls.__mapper__.class_manager.new_instance()
    instance_state(obj).dict.update(zip(keys, values, strict=True))
    make_transient_to_detached(obj)
    return obj
