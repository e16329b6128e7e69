"""Fixtures: a fresh database per test on SQLite and on PostgreSQL, an API client, users.

PostgreSQL tests run in a schema of their own inside the ``test`` database at
127.0.0.1:5432, created for this run and dropped at its end, so runs on one
machine never see each other's data. Without a reachable server they are
skipped, except under ``CI=true`` where that is a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import graphlib
import os
import shutil
import types
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import argon2
import hypothesis
import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from starlette.datastructures import State

from crmcal import collector, migrations
from crmcal.config import Settings
from crmcal.crm import changefeed, passwords, users
from crmcal.crm.schemas import UserCreate
from crmcal.crm.tables import User
from crmcal.db import Database
from crmcal.sync.tables import Connection
from crmcal.web.app import create_app
from crmcal.web.throttle import FailedSignIns

if TYPE_CHECKING:
    from tests.engine_world import World

pytest_plugins = [
    "tests.caldav_servers",
    "tests.cli_process",
    "tests.google_emulator",
    "tests.microsoft_emulator",
]

# Hypothesis times each example (200 ms) and how long drawing takes: on a machine whose
# cores are busy with other work that measures the machine, not crmcal. Tests may still
# set limits of their own; none has reason to.
hypothesis.settings.register_profile(
    "busy-machine", deadline=None, suppress_health_check=[hypothesis.HealthCheck.too_slow]
)
hypothesis.settings.load_profile("busy-machine")

# A password's argon2id hash at the library's recommended cost takes 64 MB and about
# 0.2 s of CPU, and so does each sign-in's check of it: a test signing in two people
# paid 0.6 s for it, most of what such a test costs. The tests' own passwords are hashed
# and checked by the same code with the same algorithm at its lowest cost, but for the
# tests marked ``real_password_hashes`` (tests/test_web_auth.py: the cost itself, an
# unknown address costing what a known one does, a hash of another cost made anew).
CHEAP_HASHER = argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


@pytest.fixture(autouse=True)
def _cheap_password_hashes(request: pytest.FixtureRequest) -> Iterator[None]:
    if request.node.get_closest_marker("real_password_hashes") is not None:
        yield
        return
    real, passwords._hasher = passwords._hasher, CHEAP_HASHER
    try:
        yield
    finally:
        passwords._hasher = real


PG_SERVER = os.environ.get("CRMCAL_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() == "true"
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


# The tests that take a minute or more (workers, fuzzers, killed servers, state machines
# on real servers). They are collected first: under `pytest -n` with `--dist worksteal`
# (pyproject.toml) they start at once, while the short tests fill the other workers'
# time, instead of one of them starting last and running on alone.
LONGEST = (
    "tests/test_queue_scale.py::",
    "tests/test_schemathesis.py::",
    "tests/test_crash_recovery.py::test_killing_the_server",
    "tests/test_sync_caldav_api.py::test_killing_the_sync",
    "tests/providers/test_refused_writes.py::test_more_refused_new_events",
    "tests/test_series_meanwhile.py::test_series_edits_while",
    "tests/test_engine_stateful.py::TestSyncMachine",
    "tests/test_engine_stateful.py::TestSeriesMachine",
    "tests/test_browser.py::",
    "tests/test_demo.py::",
)


# The provider tests (tests/providers) run each provider kind on SQLite, and on
# PostgreSQL one kind per test: the first of these among its kinds. The sync engine
# stores what every provider gives it alike, so a test's PostgreSQL run on a second kind
# repeated the first's statements on other wire formats; what each provider's ids,
# versions and cursors do on PostgreSQL is tested by tests/test_sync_*_api.py, and the
# cloud providers' series by tests/test_sync_cloud_series.py, on both backends.
POSTGRES_KIND_ORDER = ("radicale", "xandikos", "google", "microsoft", "memory")


def _kind(item: pytest.Item) -> str | None:
    params = getattr(item, "callspec", None)
    values = params.params.values() if params is not None else ()
    return next((v for v in values if isinstance(v, str) and v in POSTGRES_KIND_ORDER), None)


def _backend(item: pytest.Item) -> str | None:
    params = getattr(item, "callspec", None)
    return params.params.get("db_url") if params is not None else None


def _postgres_repeats(items: list[pytest.Item]) -> list[pytest.Item]:
    """The provider tests' PostgreSQL runs on a kind other than their first."""
    kinds: dict[tuple[str, str], set[str]] = {}
    for item in items:
        kind = _kind(item)
        if kind is not None and item.nodeid.startswith("tests/providers/"):
            kinds.setdefault((item.path.name, getattr(item, "originalname", "")), set()).add(kind)
    repeats = []
    for item in items:
        kind = _kind(item)
        of = kinds.get((item.path.name, getattr(item, "originalname", "")))
        if kind is None or of is None or _backend(item) != "postgres":
            continue
        if kind != min(of, key=POSTGRES_KIND_ORDER.index):
            repeats.append(item)
    return repeats


def pytest_collection_finish(session: pytest.Session) -> None:
    """The garbage collector set as crmcal's servers and workers set theirs
    (``crmcal.collector``), once the tests are collected: the apps, emulators and syncs
    the tests run in this process are those servers' code, and with CPython's defaults
    a test process spent about a sixth of its CPU time in collections, the full ones
    walking every module, test and fixture collected (a tenth of a second each)."""
    collector.tune()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    repeats = _postgres_repeats(items)
    if repeats:
        dropped = set(repeats)
        items[:] = [item for item in items if item not in dropped]
        config.hook.pytest_deselected(items=repeats)
    items.sort(key=lambda item: not item.nodeid.startswith(LONGEST))  # stable: else as found


# For tests whose requests are answered before anything they send reaches the database
# (a missing token, JSON that does not parse, a body the schema refuses): the code they
# test is the same on both backends, and SQLite alone runs it. Whatever a database
# stores, compares or refuses (lengths, NUL, large numbers, times, uniqueness, locks,
# leases, the queue) is tested on both.
sqlite_only = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def pg_url(schema: str) -> str:
    base = PG_SERVER.replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}?options={quote(f'-csearch_path={schema}')}"


def _pg_unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"PostgreSQL is required under CI=true: {reason}")
    pytest.skip(f"PostgreSQL not reachable: {reason}")


@pytest.fixture(scope="session")
def pg_schema() -> Iterator[str]:
    """A schema of this run's own, migrated to head, dropped at the end."""
    schema = f"crmcal_test_{uuid.uuid4().hex[:12]}"
    try:
        conn = psycopg.connect(PG_SERVER, autocommit=True, connect_timeout=30)
    except psycopg.OperationalError as exc:
        _pg_unavailable(str(exc).strip())
    with conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
        try:
            migrations.upgrade(pg_url(schema))
            yield schema
        finally:
            kept = _RESETTING.pop(schema, None)
            if kept is not None:
                kept.close()
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(scope="session")
def sqlite_dir(server_root: Path) -> Path:
    """Where the tests' SQLite databases are: in memory when possible, beside the CalDAV
    servers' data (tests/caldav_servers.py, ``server_root``). The file syncs SQLite asks
    for (a WAL checkpoint as a test's last connection closes, the first switch to WAL)
    cost nothing there; on disk they were half of an API test's set-up."""
    path = server_root / "sqlite"
    path.mkdir()
    return path


@pytest.fixture(scope="session")
def sqlite_template(sqlite_dir: Path) -> Path:
    path = sqlite_dir / "template.db"
    migrations.upgrade(f"sqlite:///{path}")
    return path


# What empties a schema, by its tables: the same for every test.
_EMPTYING: dict[tuple[str, ...], str] = {}
# The connection each process empties its schema on, kept from test to test: a new one
# cost about as much as the emptying itself.
_RESETTING: dict[str, psycopg.Connection[Any]] = {}


def _emptying(conn: psycopg.Connection[Any], schema: str, tables: list[str]) -> str:
    """DELETEs of ``tables`` (referencing tables first) and the restart of their ids: what
    ``TRUNCATE … RESTART IDENTITY CASCADE`` does, in a fraction of its time on the few
    rows one test leaves (a TRUNCATE makes every table anew). The ids restart by
    ``setval``, and only those a test drew: an ``ALTER SEQUENCE … RESTART`` of each is a
    change of the schema, and cost most of the emptying; so did updating the built-in
    types' every row when none had changed."""
    references = conn.execute(
        "SELECT child.relname, parent.relname FROM pg_constraint c "
        "JOIN pg_class child ON child.oid = c.conrelid "
        "JOIN pg_class parent ON parent.oid = c.confrelid "
        "JOIN pg_namespace n ON n.oid = c.connamespace "
        "WHERE c.contype = 'f' AND n.nspname = %s",
        (schema,),
    ).fetchall()
    # A table comes after every table that refers to it.
    graph = {table: {child for child, parent in references if parent == table != child}
             for table in tables}  # fmt: skip
    order = [t for t in graphlib.TopologicalSorter(graph).static_order() if t in tables]
    sequences = [
        row[0]
        for row in conn.execute(
            "SELECT s.relname FROM pg_class s "
            "JOIN pg_depend d ON d.objid = s.oid AND d.classid = 'pg_class'::regclass "
            "JOIN pg_class t ON t.oid = d.refobjid "
            "JOIN pg_namespace n ON n.oid = s.relnamespace "
            "WHERE s.relkind = 'S' AND n.nspname = %s AND t.relname = ANY(%s)",
            (schema, tables),
        )
    ]
    listed = ", ".join(f"'{s}'" for s in sequences)
    return "; ".join(
        [f'DELETE FROM "{t}"' for t in order]
        + ["DELETE FROM activity_types WHERE NOT builtin",
           "UPDATE activity_types SET active = true, name = initcap(key) "
           "WHERE NOT active OR name IS DISTINCT FROM initcap(key)",
           # A sequence no value was drawn from since its restart has no last value.
           "SELECT setval(format('%I.%I', schemaname, sequencename)::regclass, start_value, false) "
           f"FROM pg_sequences WHERE schemaname = '{schema}' "
           f"AND sequencename IN ({listed}) AND last_value IS NOT NULL"]
    )  # fmt: skip


def _resetting(schema: str) -> psycopg.Connection[Any]:
    """This process's connection for emptying ``schema``: the kept one, or a new one when
    it is gone (a test may have ended it on the server)."""
    conn = _RESETTING.get(schema)
    if conn is None or conn.closed or conn.broken:
        conn = psycopg.connect(PG_SERVER, autocommit=True)
        conn.execute(f'SET search_path TO "{schema}"')
        _RESETTING[schema] = conn
    return conn


def _reset_postgres(schema: str) -> None:
    """Empty every table but keep the migration's seed rows (the built-in types)."""
    try:
        _empty(_resetting(schema), schema)
    except psycopg.OperationalError:  # the kept connection was ended: once more anew
        _RESETTING.pop(schema).close()
        _empty(_resetting(schema), schema)


def _empty(conn: psycopg.Connection[Any], schema: str) -> None:
    tables = [
        row[0]
        for row in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s "
            "AND tablename NOT IN ('alembic_version', 'activity_types') ORDER BY tablename",
            (schema,),
        )
    ]
    key = (schema, *tables)
    if key not in _EMPTYING:
        _EMPTYING[key] = _emptying(conn, schema, tables)
    with conn.transaction():
        conn.execute(_EMPTYING[key])


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """The URL of an empty, migrated database on each backend."""
    if request.param == "sqlite":
        path = request.getfixturevalue("sqlite_dir") / f"{uuid.uuid4().hex}.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        try:
            yield f"sqlite:///{path}"
        finally:  # in memory: gone with the test
            for suffix in ("", "-wal", "-shm", "-journal"):
                path.with_name(path.name + suffix).unlink(missing_ok=True)
        return
    schema = request.getfixturevalue("pg_schema")
    _reset_postgres(schema)
    yield pg_url(schema)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def recorded_sleeps(monkeypatch: pytest.MonkeyPatch, module: types.ModuleType) -> list[float]:
    """The waits ``module`` asks of ``asyncio.sleep`` from now on, noted and taken at once:
    a test checks the waits the code asks for, never the clock."""
    waits: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(seconds: float, result: Any = None) -> Any:
        waits.append(seconds)
        return await real_sleep(0, result)

    clock = types.ModuleType("asyncio")
    vars(clock).update(vars(asyncio))
    clock.sleep = sleep  # type: ignore[attr-defined]
    monkeypatch.setattr(module, "asyncio", clock)
    return waits


async def create_user_in(db_url: str, **fields: Any) -> tuple[int, str]:
    """Create a user directly in the database; returns (id, token)."""
    db = Database(db_url)
    try:
        async with db.write() as session:
            user, token = await users.create_user(session, UserCreate(**fields))
            return user.id, token
    finally:
        await db.dispose()


async def create_connection_in(db_url: str, **columns: Any) -> tuple[int, str, int]:
    """A new user and an active connection of theirs, stored directly as the API would
    store them: a Google account due in an hour unless ``columns`` say otherwise (they
    must give ``credentials``, sealed with the key the test's code opens them with).
    Returns (user id, token, connection id)."""
    db = Database(db_url)
    try:
        async with db.write() as session:
            user, token = await users.create_user(
                session, UserCreate(email=f"u{os.urandom(4).hex()}@crm.test", name="U")
            )
            await session.flush()
            defaults: dict[str, Any] = dict(
                user_id=user.id, provider="google", account="someone@example.test",
                username=None, calendar_id="someone@example.test", calendar_name="Someone",
                sync_type="two_way", options={}, state="active", counts={}, problems=[],
                failures=0, next_sync_at=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1),
            )  # fmt: skip
            conn = Connection(**{**defaults, **columns})
            session.add(conn)
            await session.flush()
            return user.id, token, conn.id
    finally:
        await db.dispose()


async def newest_change_in(db_url: str) -> int:
    """The change feed's newest sequence number (0 when empty), read directly."""
    db = Database(db_url)
    try:
        async with db.read() as session:
            return int(await session.scalar(select(changefeed.head())) or 0)
    finally:
        await db.dispose()


async def issue_token_in(db_url: str, user_id: int) -> str:
    """Another API token of user ``user_id``, issued directly in the database."""
    db = Database(db_url)
    try:
        async with db.write() as session:
            user = await session.get(User, user_id)
            assert user is not None
            return await users.issue_token(session, user)
    finally:
        await db.dispose()


def make_user(db_url: str, **fields: Any) -> tuple[int, str]:
    """``create_user_in`` for synchronous tests."""
    return run(create_user_in(db_url, **fields))


class Api:
    """A TestClient speaking as one user."""

    def __init__(self, client: TestClient, token: str, user_id: int) -> None:
        self.client = client
        self.token = token
        self.id = user_id

    def _headers(self, extra: dict[str, str] | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", **(extra or {})}

    def get(self, path: str, **kw: Any) -> Any:
        return self.client.get(path, headers=self._headers(kw.pop("headers", None)), **kw)

    def post(self, path: str, **kw: Any) -> Any:
        return self.client.post(path, headers=self._headers(kw.pop("headers", None)), **kw)

    def patch(self, path: str, **kw: Any) -> Any:
        return self.client.patch(path, headers=self._headers(kw.pop("headers", None)), **kw)

    def delete(self, path: str, **kw: Any) -> Any:
        return self.client.delete(path, headers=self._headers(kw.pop("headers", None)), **kw)


# The apps of ``app_of``, by the settings they keep as built, and those in use.
_APPS: dict[int, list[FastAPI]] = {}
_IN_USE: set[int] = set()


def _as_made(app: FastAPI, settings: Settings) -> FastAPI:
    """``app`` with the state ``create_app`` gives a new one (``settings``, no failed
    sign-ins), nothing an earlier test left in it."""
    app.state = State()
    app.state.settings = settings
    app.state.failed_signins = FailedSignIns()
    app.dependency_overrides.clear()
    return app


@contextlib.contextmanager
def app_of(settings: Settings) -> Iterator[FastAPI]:
    """``create_app(settings, background_jobs=False)``, built once a process for each body
    limit: a new app's first request builds every route's parameter models (FastAPI
    builds an included router's routes for each app), about 90 ms of CPU that every API
    test paid. Everything else the app reads of its settings it reads from
    ``app.state`` (each request, and the start that opens the database), so a test's
    own settings (its database, its own address) are the ones it runs on; the body
    limit, kept as the app is built, is what tells apps apart. An app in use until the
    block ends is not handed out again."""
    built = _APPS.setdefault(settings.max_body_bytes, [])
    free = [app for app in built if id(app) not in _IN_USE]
    if free:
        app = _as_made(free[0], settings)
    else:
        app = create_app(settings, background_jobs=False)
        built.append(app)
    _IN_USE.add(id(app))
    try:
        yield app
    finally:
        _IN_USE.discard(id(app))


@contextlib.contextmanager
def client_of(settings: Settings, **options: Any) -> Iterator[TestClient]:
    """``TestClient(create_app(settings, background_jobs=False), **options)``, entered,
    on the app of ``app_of``."""
    with app_of(settings) as app, TestClient(app, **options) as test_client:
        yield test_client


@pytest.fixture
def client(db_url: str) -> Iterator[TestClient]:
    with client_of(Settings(database_url=db_url)) as test_client:
        yield test_client


@pytest.fixture
def admin(client: TestClient, db_url: str) -> Api:
    user_id, token = make_user(db_url, email="admin@crm.test", name="Admin", is_admin=True)
    return Api(client, token, user_id)


def new_user(admin: Api, email: str, **fields: Any) -> Api:
    """A user created through the API by ``admin``."""
    response = admin.post("/api/v1/users", json={"email": email, "name": email.split("@")[0],
                                                 **fields})  # fmt: skip
    assert response.status_code == 201, response.text
    body = response.json()
    return Api(admin.client, body["token"], body["id"])


@pytest.fixture
def alice(admin: Api) -> Api:
    return new_user(admin, "alice@crm.test", timezone="Europe/Berlin")


@pytest.fixture
def bob(admin: Api) -> Api:
    return new_user(admin, "bob@crm.test")


@pytest.fixture
async def world(db_url: str) -> AsyncIterator[World]:
    """An engine test's world (a CRM and an in-memory calendar) on ``db_url``; a module
    that needs another calendar or provider defines its own ``world``."""
    from tests.engine_world import World
    from tests.memory_provider import MemoryCalendar

    db = Database(db_url)
    try:
        yield await World(db, MemoryCalendar()).setup()
    finally:
        await db.dispose()
