"""Database engines and sessions: SQLite (embedded, WAL) or PostgreSQL (psycopg 3).

Writers on SQLite start with ``BEGIN IMMEDIATE`` so two concurrent write
transactions queue on the busy timeout instead of failing when the second one
tries to upgrade its read lock.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any, NamedTuple

from sqlalchemy import Executable, Result, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from crmcal.config import DEFAULT_DATABASE_POOL_SIZE, ConfigError, Settings

SQLITE_BUSY_TIMEOUT_MS = 30_000
# Each SQLite connection's page cache, in KiB (SQLite's default is 2 MiB). A first
# import writes rows all over the tables' and indexes' pages (a 5,000-event calendar
# makes a database of about 18 MB); with the default cache, most of those pages were
# read again from the file, a system call each, on SQLite's thread. The cache is
# filled only as pages are read, so a small database holds no more than before.
SQLITE_CACHE_KIB = 32 * 1024


def _parse(url: str) -> Any:
    try:
        return make_url(url)
    except ArgumentError:
        raise ConfigError(f"CRMCAL_DATABASE_URL is not a database URL: {url!r}") from None


def _backend(url: str) -> str:
    scheme = _parse(url).drivername.split("+", 1)[0]
    if scheme == "sqlite":
        return "sqlite"
    if scheme in {"postgresql", "postgres"}:
        return "postgresql"
    raise ConfigError(
        f"unsupported database {scheme!r} in CRMCAL_DATABASE_URL: use sqlite:///path "
        "or postgresql+psycopg://user@host/db"
    )


def async_url(url: str) -> str:
    """The URL with the async driver crmcal uses for its backend."""
    parsed = _parse(url)
    driver = "sqlite+aiosqlite" if _backend(url) == "sqlite" else "postgresql+psycopg"
    return parsed.set(drivername=driver).render_as_string(hide_password=False)


def sync_url(url: str) -> str:
    """The URL with a synchronous driver, for migrations."""
    parsed = _parse(url)
    driver = "sqlite" if _backend(url) == "sqlite" else "postgresql+psycopg"
    return parsed.set(drivername=driver).render_as_string(hide_password=False)


def is_sqlite(url: str) -> bool:
    return _backend(url) == "sqlite"


def install_sqlite_pragmas(sync_engine: Any) -> None:
    """WAL, foreign keys and explicit BEGIN on every SQLite connection of an engine."""

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy emit BEGIN itself (see _on_begin) instead of the driver.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")

    @event.listens_for(sync_engine, "invalidate")
    def _on_invalidate(dbapi_connection: Any, _record: Any, _exception: Any) -> None:
        # A task cancelled during a statement has its connection invalidated and closed
        # at once, while the statement's cursor lives on (held by the cancellation's
        # traceback, until a garbage collection). SQLite then closes the connection
        # only in name and keeps its transaction open: a write transaction kept the
        # whole database locked, every other writer waiting out the busy timeout and
        # failing. Rolled back first, the transaction and its lock end now.
        if dbapi_connection is None:
            return
        with suppress(Exception):  # the connection may be unusable: nothing to end then
            dbapi_connection.rollback()


# A pooled connection idle longer than this is pinged before it is handed out.
IDLE_PING_SECONDS = 5.0
# psycopg parses each query's placeholders and keeps the result only for queries of at
# most 4 KB and 50 parameters (longer ones are mostly bulk INSERTs whose shape varies).
# The statement that takes a sync's lease (its run, what it starts from, a request's
# slot: 5 KB, 51 parameters) runs on every job and would be parsed again each time,
# about as much CPU as the rest of its execution: fixed-shape statements up to these
# sizes are kept (a bulk INSERT of an import batch has hundreds of parameters).
CACHED_STATEMENT_LENGTH = 8192
CACHED_STATEMENT_PARAMS = 100


def cache_long_statements() -> None:
    """Let psycopg keep the parsed form of statements up to the sizes above (its module
    constants; a psycopg without them keeps its own choice)."""
    try:
        from psycopg import _queries
    except ImportError:  # pragma: no cover - another psycopg layout
        return
    if isinstance(getattr(_queries, "MAX_CACHED_STATEMENT_LENGTH", None), int):
        _queries.MAX_CACHED_STATEMENT_LENGTH = max(
            _queries.MAX_CACHED_STATEMENT_LENGTH, CACHED_STATEMENT_LENGTH
        )
    if isinstance(getattr(_queries, "MAX_CACHED_STATEMENT_PARAMS", None), int):
        _queries.MAX_CACHED_STATEMENT_PARAMS = max(
            _queries.MAX_CACHED_STATEMENT_PARAMS, CACHED_STATEMENT_PARAMS
        )


def install_idle_ping(sync_engine: Any) -> None:
    """Ping a pooled connection before use when it sat idle for a while (the server may
    have restarted or a firewall dropped it meanwhile); one used moments ago is handed
    out as it is. A busy worker takes connections hundreds of times a second, and a
    ping on each would be a round trip on every transaction. A connection that died
    unnoticed fails its statement as a disconnect, which empties the pool."""

    @event.listens_for(sync_engine, "checkin")
    def _checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(sync_engine, "checkout")
    def _checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < IDLE_PING_SECONDS:
            return
        try:
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute("SELECT 1")
            finally:
                cursor.close()
            # The driver began a transaction for the ping: hand the connection out idle,
            # as the pool's own reset leaves it (a session may want autocommit).
            dbapi_connection.rollback()
        except Exception as exc:
            # The pool drops this connection and hands out another.
            raise DisconnectionError(str(exc)) from exc


# Connections a pool keeps open between uses unless told otherwise; the rest of its
# size it opens at peaks and closes again.
KEPT_CONNECTIONS = 10


def pool_limits(connections: int, kept: int = KEPT_CONNECTIONS) -> tuple[int, int]:
    """SQLAlchemy's ``pool_size`` and ``max_overflow`` for a pool that opens at most
    ``connections`` connections and keeps up to ``kept`` of them open between uses."""
    kept = min(kept, connections)
    return kept, connections - kept


class PoolSize(NamedTuple):
    """A process's database pool: the most connections it opens, and how many of them
    it keeps open between uses."""

    connections: int
    kept: int


def pool_size(settings: Settings, syncs: int | None = None) -> PoolSize:
    """What ``CRMCAL_DATABASE_POOL_SIZE`` means for a process of crmcal, decided here
    alone. ``syncs``: the syncs the process runs at once from the queue (``crmcal
    worker --concurrency``); None for the web server (with or without a worker of its
    own) and the one-off commands.

    Set, every process's pool opens at most that many connections. Unset, each its own
    need: ``DEFAULT_DATABASE_POOL_SIZE`` for the server and a command; for a worker a
    connection for each sync and four more, ``syncs + 2`` of them kept open. A sync
    holds one database connection at a time, and only for the moments of its
    transactions (a lease renewal may want a second one meanwhile); the queue needs a
    few of its own (listening, fetching, finishing). Bounded, so that several workers
    and the server fit in PostgreSQL's max_connections."""
    if syncs is None:
        default, kept = DEFAULT_DATABASE_POOL_SIZE, KEPT_CONNECTIONS
    else:
        default, kept = syncs + 4, syncs + 2
    given = settings.database_pool_size
    connections = default if given is None else given
    return PoolSize(connections, min(kept, connections))


class Database:
    """One engine plus the two ways to open a session: read or write."""

    def __init__(
        self,
        url: str,
        *,
        echo: bool = False,
        connections: int = DEFAULT_DATABASE_POOL_SIZE,
        kept: int = KEPT_CONNECTIONS,
        pool_timeout: float = 30,
    ) -> None:
        """PostgreSQL: the pool opens at most ``connections`` connections, keeps up to
        ``kept`` open between uses, and a session waits ``pool_timeout`` seconds for one
        to come free, then fails (SQLite has no such pool)."""
        self.url = url
        self.sqlite = is_sqlite(url)
        options: dict[str, Any] = {"echo": echo}
        if not self.sqlite:
            pool_size, max_overflow = pool_limits(connections, kept)
            options.update(
                pool_size=pool_size, max_overflow=max_overflow, pool_timeout=pool_timeout
            )
        self.engine: AsyncEngine = create_async_engine(async_url(url), **options)
        if self.sqlite:
            install_sqlite_pragmas(self.engine.sync_engine)
        else:
            install_idle_ping(self.engine.sync_engine)
            cache_long_statements()
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        # The same pool, each statement committed on its own (PostgreSQL): no BEGIN and
        # COMMIT round trips around a statement that is atomic by itself.
        self._autocommit = (
            None if self.sqlite else self.engine.execution_options(isolation_level="AUTOCOMMIT")
        )

    @classmethod
    def for_settings(cls, settings: Settings, *, syncs: int | None = None) -> Database:
        """The database of ``settings`` for a process of crmcal that runs ``syncs``
        syncs at once from the queue (None: the server, a command), its pool sized by
        ``pool_size``."""
        connections, kept = pool_size(settings, syncs)
        return cls(settings.database_url, connections=connections, kept=kept)

    async def execute_one(
        self, statement: Executable, parameters: dict[str, Any] | None = None
    ) -> Result[Any]:
        """Run one statement (with ``parameters`` for its bound names) in a transaction
        of its own (buffered: its rows stay readable). On PostgreSQL without BEGIN and
        COMMIT, which a single statement does not need; for the small statements a
        worker runs on every request."""
        if self._autocommit is None:
            async with self.engine.begin() as connection:
                return await connection.execute(statement, parameters)
        async with self._autocommit.connect() as connection:
            return await connection.execute(statement, parameters)

    async def direct_rows(
        self, statement: Executable, parameters: dict[str, Any]
    ) -> list[tuple[Any, ...]]:
        """PostgreSQL: the rows of one statement of fixed shape, committed by itself, sent
        on a pooled connection without SQLAlchemy's execution layers (``crmcal.db_direct``):
        for the statements a worker makes on every job."""
        from crmcal import db_direct

        assert not self.sqlite, "PostgreSQL only"
        return await db_direct.rows(self.engine, statement, parameters)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """A session in one transaction, committed when the block ends without error."""
        async with self._sessions() as session:
            await session.connection(execution_options={"sqlite_begin": "IMMEDIATE"})
            try:
                yield session
                await session.commit()
            except BaseException:
                await session.rollback()
                raise

    @asynccontextmanager
    async def at_once(self) -> AsyncIterator[AsyncSession]:
        """A session whose every statement commits by itself (PostgreSQL: no BEGIN and
        COMMIT), for a single statement that is atomic alone but loads ORM objects."""
        assert self._autocommit is not None, "PostgreSQL only"
        async with self._sessions(bind=self._autocommit) as session:
            yield session

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A session for reads; nothing it does is committed.

        Closing (not rolling back) ends it, so loaded objects stay readable afterwards.
        """
        async with self._sessions() as session:
            yield session

    async def dispose(self) -> None:
        await self.engine.dispose()
