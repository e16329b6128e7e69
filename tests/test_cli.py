"""The ``crmcal`` command line: its start and ``serve`` as real processes, what each
command prints and answers run by its entry point in the test's process."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from crmcal import cli, migrations
from tests import plain
from tests.cli_process import (
    InProcess,
    crmcal,
    first_answer,
    on_socket,
    start_serve,
    url_of,
    wait_healthy,
)
from tests.conftest import client_of
from tests.served import bound_socket


def test_the_installed_command_has_help(tmp_path: Path) -> None:
    result = crmcal("--help", db_url=f"sqlite:///{tmp_path / 'x.db'}")
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout


# Each command's help asked of the same command line in this process: a process of its
# own for each (a few seconds of imports apiece) would test the start above again.
@pytest.mark.parametrize(
    "command",
    [["serve"], ["users"], ["users", "create"], ["users", "token"], ["db"], ["db", "upgrade"],
     ["emulator"], ["demo"]],
)  # fmt: skip
def test_every_command_has_help(command: list[str], tmp_path: Path) -> None:
    env = {"CRMCAL_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"}
    result = CliRunner().invoke(cli.app, [*command, "--help"], env=env)
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_db_upgrade_then_users_create_prints_a_working_token(
    crmcal_here: InProcess, db_url: str
) -> None:
    assert crmcal_here("db", "upgrade", CRMCAL_DATABASE_URL=db_url).returncode == 0
    result = crmcal_here(
        "users", "create", "--email", "Eve@CRM.test", "--name", "Eve", CRMCAL_DATABASE_URL=db_url
    )
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert token.startswith("crmcal_")

    from crmcal.config import Settings

    with client_of(Settings(database_url=db_url)) as client:
        me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200
    assert me.json()["email"] == "eve@crm.test"
    assert me.json()["is_admin"] is False


def test_users_create_admin_then_a_new_token(crmcal_here: InProcess, db_url: str) -> None:
    created = crmcal_here("users", "create", "--email", "root@crm.test", "--name", "R",
                          "--admin", CRMCAL_DATABASE_URL=db_url)  # fmt: skip
    assert created.returncode == 0, created.stderr
    again = crmcal_here("users", "token", "--email", "ROOT@crm.test", CRMCAL_DATABASE_URL=db_url)
    assert again.returncode == 0, again.stderr
    first, second = created.stdout.strip(), again.stdout.strip()
    assert second.startswith("crmcal_")
    assert second != first

    from crmcal.config import Settings

    with client_of(Settings(database_url=db_url)) as client:
        for token in (first, second):
            me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
            assert me.json()["is_admin"] is True
    unknown = crmcal_here(
        "users", "token", "--email", "nobody@crm.test", CRMCAL_DATABASE_URL=db_url
    )
    assert unknown.returncode == 1
    assert unknown.stderr == "error: no user with e-mail nobody@crm.test\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--email", "not-an-address", "--name", "X"], "--email: 'not-an-address' is not"),
        (["--email", "a@crm.test", "--name", ""], "--name:"),
    ],
)
def test_users_create_refuses_bad_input_in_one_line(
    crmcal_here: InProcess, db_url: str, args: list[str], message: str
) -> None:
    result = crmcal_here("users", "create", *args, CRMCAL_DATABASE_URL=db_url)
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: {message}")
    assert result.stderr.count("\n") == 1


def test_duplicate_user_is_one_clear_line(crmcal_here: InProcess, db_url: str) -> None:
    crmcal_here(
        "users", "create", "--email", "dup@crm.test", "--name", "D", CRMCAL_DATABASE_URL=db_url
    )
    result = crmcal_here(
        "users", "create", "--email", "DUP@crm.test", "--name", "D", CRMCAL_DATABASE_URL=db_url
    )
    assert result.returncode == 1
    assert result.stderr == "error: a user with e-mail dup@crm.test already exists\n"


def test_commands_refuse_an_unmigrated_database(crmcal_here: InProcess, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new.db'}"
    result = crmcal_here(
        "users", "create", "--email", "a@crm.test", "--name", "A", CRMCAL_DATABASE_URL=url
    )
    assert result.returncode == 1
    assert "run 'crmcal db upgrade'" in result.stderr
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://u@h/db", "error: unsupported database 'mysql'"),
        ("postgresql+psycopg://postgres@127.0.0.1:1/none", "error: database: connection"),
    ],
)
def test_unusable_database_url_is_one_clear_line(
    crmcal_here: InProcess, url: str, message: str
) -> None:
    result = crmcal_here("db", "upgrade", CRMCAL_DATABASE_URL=url)
    assert result.returncode == 1
    assert result.stderr.startswith(message), result.stderr
    assert result.stderr.count("\n") == 1


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    """``crmcal serve`` on a new embedded database, stopped and started again:
    (base URL, the first run's output, database path)."""
    db_path, log_path = tmp_path / "served.db", tmp_path / "serve.log"
    with bound_socket() as sock:
        base = url_of(sock)
        proc = start_serve(sock, db_path, log_path)
        try:
            wait_healthy(base, proc)
            proc.terminate()
            proc.wait(timeout=60)
            output = log_path.read_text()
            proc = start_serve(sock, db_path, log_path)
            wait_healthy(base, proc)
            yield base, output, db_path
        finally:
            proc.terminate()
            proc.wait(timeout=60)


def test_serve_migrates_creates_first_admin_once_and_prints_its_token(
    served: tuple[str, str, Path],
) -> None:
    base, output, db_path = served
    token = re.findall(r"API token:\s+(crmcal_\S+)", output)[0]
    me = plain.get(f"{base}/api/v1/me", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert me.status_code == 200
    assert me.json()["is_admin"] is True
    assert migrations.current_revision(f"sqlite:///{db_path}") == migrations.head_revision()
    users = plain.get(
        f"{base}/api/v1/users", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    assert len(users.json()["items"]) == 1  # the restart did not add a second admin
    assert output.count("API token:") == 1


def test_emulator_google_serves_the_api(tmp_path: Path) -> None:
    with bound_socket() as sock:
        base = url_of(sock)
        proc = on_socket(["emulator", "google"], sock, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        assert proc.stdout is not None
        assert base in proc.stdout.readline().decode()  # the address it announces
        tokens = first_answer(proc, lambda: plain.post(
            f"{base}/_emulator/accounts", json={"email": "a@b.test"}, timeout=30))  # fmt: skip
        auth = {"Authorization": f"Bearer {tokens.json()['access_token']}"}
        listing = plain.get(f"{base}/calendar/v3/users/me/calendarList", headers=auth, timeout=30)
        assert [c["id"] for c in listing.json()["items"]] == ["a@b.test"]
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def test_an_unknown_emulator_is_one_clear_line(crmcal_here: InProcess) -> None:
    result = crmcal_here("emulator", "outlook")
    assert result.returncode == 1
    assert (
        result.stderr.strip() == "error: no emulator named 'outlook': choose from google, microsoft"
    )


def test_an_unreadable_emulator_data_file_stops_it_with_one_clear_line(
    crmcal_here: InProcess, tmp_path: Path
) -> None:
    data_file = tmp_path / "google.json"
    data_file.write_text("{half a file")
    result = crmcal_here("emulator", "google", "--data-file", str(data_file))
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith(
        f"error: the emulator's data file {data_file} is not valid JSON"
    )
    assert data_file.read_text() == "{half a file"
