"""The ``crmcal`` command line: serve, worker, sync, users, db, emulator, demo."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from sqlalchemy.exc import DBAPIError

from crmcal import collector, migrations
from crmcal.config import ConfigError, Settings
from crmcal.crm import users
from crmcal.crm.errors import CrmError
from crmcal.crm.schemas import UserCreate
from crmcal.db import Database, is_sqlite

app = typer.Typer(
    help="crmcal: two-way calendar sync for a CRM.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
users_app = typer.Typer(help="Manage users.", no_args_is_help=True)
db_app = typer.Typer(help="Manage the database.", no_args_is_help=True)
app.add_typer(users_app, name="users")
app.add_typer(db_app, name="db")
keys_app = typer.Typer(help="Manage the secret key.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")

out = Console()
err = Console(stderr=True)
T = TypeVar("T")


class CliError(Exception):
    """Stops the command with one line on stderr and exit status 1."""


FdOption = Annotated[
    int | None,
    typer.Option(
        "--fd",
        help="Serve on this inherited socket, already bound (by a supervisor, or a test that "
        "keeps the port), instead of --host/--port.",
        min=0,
    ),
]


def _inherited(fd: int) -> tuple[socket.socket, str]:
    """The bound socket behind ``fd`` and the URL it serves."""
    try:
        sock = socket.socket(fileno=fd)  # family and type come from the descriptor
    except OSError as exc:
        raise CliError(f"--fd {fd}: not a socket ({exc.strerror})") from None
    host, port = sock.getsockname()[:2]
    return sock, f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _run_uvicorn(asgi: Any, host: str, port: int, sock: socket.socket | None, **kw: Any) -> None:
    """uvicorn on ``host:port``, or on the inherited ``sock``."""
    import uvicorn

    if sock is None:
        uvicorn.run(asgi, host=host, port=port, **kw)
    else:
        uvicorn.Server(uvicorn.Config(asgi, **kw)).run(sockets=[sock])


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except ConfigError as exc:
        raise CliError(str(exc)) from None


def _setup_logs() -> None:
    from crmcal import logs

    try:
        logs.setup()
    except ValueError as exc:
        raise CliError(str(exc)) from None


def _require_strong_key(settings: Settings) -> None:
    """A server refuses a secret key that an attacker could guess."""
    from crmcal.vault import VaultError, vault_for, weak_key_problem

    if settings.secret_key:
        problem = weak_key_problem(settings.secret_key)
        if problem is not None:
            raise CliError(problem)
        return
    try:
        vault_for(settings)  # a generated key file: refused when empty or short
    except VaultError as exc:
        raise CliError(str(exc)) from None


def _run(make: Callable[[Database], Awaitable[T]], settings: Settings) -> T:
    async def main() -> T:
        db = Database.for_settings(settings)
        try:
            return await make(db)
        finally:
            await db.dispose()

    return asyncio.run(main())


def _require_current_schema(settings: Settings) -> None:
    current = migrations.current_revision(settings.database_url)
    if current != migrations.head_revision():
        raise CliError(
            f"the database schema is at {current or 'nothing'}, this crmcal needs "
            f"{migrations.head_revision()}: run 'crmcal db upgrade'"
        )


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply every pending migration to CRMCAL_DATABASE_URL."""
    settings = _settings()
    migrations.upgrade(settings.database_url)
    out.print(f"database at revision {migrations.current_revision(settings.database_url)}")
    if not is_sqlite(settings.database_url):
        from crmcal.jobs.queue import ensure_schema

        out.print(ensure_schema(settings.database_url))


@users_app.command("create")
def users_create(
    email: Annotated[str, typer.Option(help="E-mail address (unique).")],
    name: Annotated[str, typer.Option(help="Display name.")],
    admin: Annotated[bool, typer.Option("--admin", help="Make the user an admin.")] = False,
    password: Annotated[
        str | None,
        typer.Option(
            help="A password for signing in to the web pages (at least 8 characters); "
            "also read from CRMCAL_USER_PASSWORD, so that it stays out of the shell history.",
            envvar="CRMCAL_USER_PASSWORD",
        ),
    ] = None,
) -> None:
    """Create a user and print its API token (shown only this once)."""
    settings = _settings()
    _require_current_schema(settings)
    try:
        data = UserCreate(email=email, name=name, is_admin=admin, password=password)
    except ValidationError as exc:
        problem = exc.errors()[0]
        message = str(problem["msg"]).removeprefix("Value error, ")
        raise CliError(f"--{problem['loc'][0]}: {message}") from None

    async def create(db: Database) -> str:
        async with db.write() as session:
            _, token = await users.create_user(session, data)
            return token

    token = _run(create, settings)
    err.print(f"created user {data.email}; API token:")
    print(token)


@users_app.command("token")
def users_token(email: Annotated[str, typer.Option(help="E-mail of an existing user.")]) -> None:
    """Issue a new API token for an existing user (earlier tokens keep working)."""
    settings = _settings()
    _require_current_schema(settings)

    async def issue(db: Database) -> str:
        async with db.write() as session:
            return await users.issue_token(session, await users.user_by_email(session, email))

    token = _run(issue, settings)
    err.print(f"new API token for {email.strip().lower()}:")
    print(token)


@app.command()
def sync(
    connection_id: Annotated[int | None, typer.Argument(help="The connection to sync.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Sync every active connection.")] = False,
    force: Annotated[
        bool, typer.Option(help="Apply deletions even if a calendar suddenly looks empty.")
    ] = False,
) -> None:
    """Run one sync now, with a progress bar and a summary."""
    from rich.progress import Progress, TaskID
    from rich.table import Table
    from sqlalchemy import or_, select

    from crmcal.crm.tables import utcnow
    from crmcal.sync import lease
    from crmcal.sync.engine import SyncFailed
    from crmcal.sync.runner import Busy, run_sync
    from crmcal.sync.states import ConnectionState
    from crmcal.sync.tables import Connection
    from crmcal.vault import vault_for

    if (connection_id is None) == (not all_):
        raise CliError("give a CONNECTION_ID or --all (not both)")
    settings = _settings()
    _require_current_schema(settings)
    vault = vault_for(settings)
    if vault is None:
        raise CliError("set CRMCAL_SECRET_KEY: stored credentials cannot be read without it")

    async def run_all(db: Database) -> list[tuple[int, dict[str, int] | str]]:
        async with db.read() as session:
            if all_:
                query = select(Connection.id).where(
                    or_(
                        Connection.state.in_((ConnectionState.ACTIVE, ConnectionState.ERROR)),
                        lease.expired(utcnow()),
                    )
                )
                ids = list(await session.scalars(query.order_by(Connection.id)))
            else:
                if await session.get(Connection, connection_id) is None:
                    raise CliError(f"connection {connection_id} not found")
                assert connection_id is not None  # given, as --all is not (checked above)
                ids = [connection_id]
        results: list[tuple[int, dict[str, int] | str]] = []
        with Progress(console=err, transient=True) as bar:
            for cid in ids:
                task = bar.add_task(f"connection {cid}", total=None)

                def advance(done: int, total: int, task: TaskID = task) -> None:
                    bar.update(task, completed=done, total=total)

                try:
                    # Long enough for the lease of a run that was killed to expire.
                    wait = max(30.0, settings.lease_seconds + 5)
                    report = await run_sync(
                        db, vault, settings, cid, force=force, progress=advance, wait=wait
                    )
                    results.append((cid, report.counts()))
                except (Busy, SyncFailed) as exc:
                    results.append((cid, str(exc)))
        return results

    results = _run(run_all, settings)
    columns = ("created", "updated", "deleted", "conflicts", "skipped")
    table = Table("connection", *columns, "result")
    failed = 0
    for cid, outcome in results:
        if isinstance(outcome, str):
            failed += 1
            table.add_row(str(cid), "", "", "", "", "", f"error: {outcome}")
        else:
            table.add_row(str(cid), *(str(outcome[k]) for k in columns), "ok")
    out.print(table if results else "no connection to sync")
    if failed:
        raise typer.Exit(1)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)] = 8000,
    with_worker: Annotated[
        bool,
        typer.Option(
            "--with-worker",
            help="On PostgreSQL, also run a queue worker in this process (one-process mode).",
        ),
    ] = False,
    fd: FdOption = None,
) -> None:
    """Run the app: REST API and the in-process worker (SQLite); on PostgreSQL it
    queues syncs for `crmcal worker` processes, or runs one too with --with-worker."""
    import uvicorn

    from crmcal.web.app import create_app

    sock, url = _inherited(fd) if fd is not None else (None, f"http://{host}:{port}")

    settings = _settings()
    _require_strong_key(settings)
    jobs: Literal["embedded", "queue", "queue+worker"] = "embedded"
    if is_sqlite(settings.database_url):
        if with_worker:
            raise CliError("--with-worker needs a PostgreSQL database: SQLite syncs in-process")
        migrations.upgrade(settings.database_url)  # the embedded database looks after itself
    else:
        _require_current_schema(settings)
        from crmcal.jobs.queue import ensure_schema

        ensure_schema(settings.database_url)
        jobs = "queue+worker" if with_worker else "queue"

    async def first_admin(db: Database) -> str | None:
        async with db.write() as session:
            created = await users.create_first_admin(session)
            return created[1] if created else None

    token = _run(first_admin, settings)
    if token:
        out.print(f"First admin: {users.FIRST_ADMIN_EMAIL}")
        out.print(f"API token:   {token}")
        out.print(f"Try:         curl -H 'Authorization: Bearer {token}' {url}/api/v1/me")
    out.print(f"crmcal on {url} (API docs at {url}/docs)")
    if jobs == "queue":
        out.print("syncs are queued for 'crmcal worker' processes")
    _setup_logs()
    # In JSON, uvicorn's own lines go through the same handler as everything else.
    plain = (os.environ.get("CRMCAL_LOG_FORMAT") or "text").strip().lower() != "json"
    log_config = uvicorn.config.LOGGING_CONFIG if plain else None
    if jobs != "queue":
        _start_parsing(settings)
    asgi = create_app(settings, jobs=jobs)
    collector.tune()
    try:
        _run_uvicorn(asgi, host, port, sock, log_level="info", log_config=log_config)
    finally:
        _stop_parsing()


def _start_parsing(settings: Settings) -> None:
    """Bring up the processes that parse calendar data for this process's syncs."""
    import crmcal.sync.engine  # noqa: F401  # it names what the processes will compute
    from crmcal.providers import parse_pool

    parse_pool.configure(settings.parse_workers)
    parse_pool.start()


def _stop_parsing() -> None:
    from crmcal.providers import parse_pool

    parse_pool.shutdown()


@app.command()
def worker(
    concurrency: Annotated[
        int, typer.Option(help="Syncs this process runs at once.", min=1, max=1000)
    ] = 8,
    metrics_port: Annotated[
        int | None,
        typer.Option(help="Serve Prometheus metrics on this port.", min=1, max=65535),
    ] = None,
    metrics_host: Annotated[
        str, typer.Option(help="Address the metrics port listens on.")
    ] = "127.0.0.1",
) -> None:
    """Run jobs from the queue (needs a PostgreSQL CRMCAL_DATABASE_URL); stops on
    SIGTERM or Ctrl-C once its running syncs end."""
    from crmcal.jobs import queue
    from crmcal.providers import api_client
    from crmcal.vault import vault_for

    settings = _settings()
    if is_sqlite(settings.database_url):
        raise CliError(
            "crmcal worker needs a PostgreSQL CRMCAL_DATABASE_URL; "
            "with SQLite, 'crmcal serve' runs the syncs itself"
        )
    _require_current_schema(settings)
    _require_strong_key(settings)
    vault = vault_for(settings)
    if vault is None:
        raise CliError("set CRMCAL_SECRET_KEY: stored credentials cannot be read without it")
    queue.ensure_schema(settings.database_url)

    async def work() -> None:
        db = Database.for_settings(settings, syncs=concurrency)
        app_ = queue.queue_app(settings.database_url, pool_size=min(concurrency, 4) + 2)
        try:
            async with app_.open_async():
                runtime = queue.Runtime(db, vault, settings, app_)
                await queue.run_worker(runtime, concurrency=concurrency)
        finally:
            await api_client.close_shared()  # the connections its syncs kept open
            await db.dispose()

    _setup_logs()
    if metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr=metrics_host)
    err.print(f"crmcal worker {queue.worker_name()}: {concurrency} syncs at once")
    _start_parsing(settings)
    collector.tune()
    try:
        asyncio.run(work())
    finally:
        _stop_parsing()


@keys_app.command("rotate")
def keys_rotate() -> None:
    """Re-encrypt every stored credential under the current secret key.

    With CRMCAL_SECRET_KEY: set the new key there and the old one in
    CRMCAL_OLD_SECRET_KEYS (comma-separated), restart, run this, then drop the old
    key. With a generated key file (SQLite, no CRMCAL_SECRET_KEY): this makes a new
    key, re-encrypts, and replaces the file."""
    import secrets

    from sqlalchemy import select

    from crmcal.sync.tables import Connection
    from crmcal.vault import (
        Vault,
        VaultError,
        key_file,
        next_key_file,
        read_key_file,
        write_key_file,
    )

    settings = _settings()
    _require_current_schema(settings)
    path = None
    if settings.secret_key:
        _require_strong_key(settings)
        vault = Vault(settings.secret_key, settings.old_secret_keys)
    else:
        path = key_file(settings.database_url)
        if path is None or not path.exists():
            raise CliError("set CRMCAL_SECRET_KEY (and the old key in CRMCAL_OLD_SECRET_KEYS)")
        try:
            old = read_key_file(path)
            pending = next_key_file(path)
            if not pending.exists():
                write_key_file(pending, secrets.token_urlsafe(32), replace=True)
            vault = Vault(read_key_file(pending), [old])
        except VaultError as exc:
            raise CliError(str(exc)) from None

    async def rotate(db: Database) -> tuple[int, list[int]]:
        done, failed = 0, []
        async with db.write() as session:
            for conn in await session.scalars(select(Connection).order_by(Connection.id)):
                try:
                    conn.credentials = vault.reseal(conn.credentials)
                    done += 1
                except VaultError:
                    failed.append(conn.id)
        return done, failed

    done, failed = _run(rotate, settings)
    if path is not None:
        os.replace(next_key_file(path), path)
    out.print(f"re-encrypted the credentials of {done} connection(s) under the current key")
    if failed:
        ids = ", ".join(str(i) for i in failed)
        raise CliError(
            f"no key decrypts the credentials of connection(s) {ids}: add the key they "
            "were stored with to CRMCAL_OLD_SECRET_KEYS, or reconnect them"
        )


@app.command()
def demo(
    port: Annotated[
        int,
        typer.Option(
            help="crmcal's port; the emulators and Radicale take the next three.", min=1, max=65532
        ),
    ] = 8000,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="Keep the demo's data here between runs (default: a temporary "
            "directory, removed on exit).",
            file_okay=False,
        ),
    ] = None,
) -> None:
    """The offline demo: Radicale, the Google and Microsoft emulators and crmcal on
    127.0.0.1 with demo users and data. Ctrl-C stops everything."""
    from crmcal import demo as demo_module

    try:
        demo_module.main(port, data_dir)
    except demo_module.DemoError as exc:
        raise CliError(str(exc)) from None


EMULATORS = ("google", "microsoft")


@app.command()
def emulator(
    name: Annotated[str, typer.Argument(help="Which service: google or microsoft.")],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)] = 8100,
    data_file: Annotated[
        Path | None,
        typer.Option(
            help="Keep the state in this JSON file across restarts (created if missing).",
            dir_okay=False,
        ),
    ] = None,
    fd: FdOption = None,
) -> None:
    """Run a local emulator of a calendar service (see docs/emulators.md)."""
    if name not in EMULATORS:
        raise CliError(f"no emulator named {name!r}: choose from {', '.join(EMULATORS)}")
    if name == "microsoft":
        if data_file is not None:
            raise CliError("--data-file: only the Google emulator keeps its state in a file")
        from crmcal.emulators.microsoft import create_app as create_graph

        sock, url = _inherited(fd) if fd is not None else (None, f"http://{host}:{port}")
        out.print(f"Microsoft Graph emulator on {url} (admin API at /_emulator/)")
        _run_uvicorn(create_graph(), host, port, sock, log_level="warning")
        return
    from crmcal.emulators.google import create_app
    from crmcal.emulators.google.persistence import DataFileError

    try:
        google = create_app(data_file=data_file)
    except DataFileError as exc:
        raise CliError(str(exc)) from None
    sock, url = _inherited(fd) if fd is not None else (None, f"http://{host}:{port}")
    out.print(f"Google Calendar emulator on {url} (admin API at /_emulator/)")
    if data_file is not None:
        out.print(f"State kept in {data_file}")
    _run_uvicorn(google, host, port, sock, log_level="warning")


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def main() -> None:
    try:
        app()
    except (CliError, CrmError, ConfigError) as exc:
        _fail(str(exc))
    except DBAPIError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        _fail(f"database: {reason}")
