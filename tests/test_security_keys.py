"""The secret key: strong enough, derived per purpose, written atomically, rotatable."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import threading
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select

from crmcal import migrations
from crmcal.config import Settings
from crmcal.db import Database
from crmcal.sync.tables import Connection
from crmcal.vault import Vault, VaultError, key_file, vault_for
from tests.cli_process import InProcess
from tests.conftest import create_connection_in, run

OLD = "old-key-Hq3Zm8Wx1Lp6Rv4Ns9Kb2Yc7Td5Gf0Ja"
NEW = "new-key-Pz4Xq9Wm2Lr7Tv1Ns6Kc3Yb8Hd5Gf0Je"


async def _stored(db_url: str, sealed: bytes) -> int:
    """A CalDAV connection whose credentials are ``sealed``, due now; its id."""
    _, _, connection_id = await create_connection_in(
        db_url, provider="caldav", account="https://dav.example.test/", username="u",
        credentials=sealed, calendar_id="https://dav.example.test/c/", calendar_name="C",
        next_sync_at=dt.datetime.now(dt.UTC),
    )  # fmt: skip
    return connection_id


async def _credentials(db_url: str, connection_id: int) -> bytes:
    db = Database(db_url)
    try:
        async with db.read() as session:
            query = select(Connection.credentials).where(Connection.id == connection_id)
            return (await session.scalars(query)).one()
    finally:
        await db.dispose()


@pytest.mark.parametrize("weak", ["test-key", "k" * 64, "a1" * 30])
def test_serve_refuses_a_weak_key(crmcal_here: InProcess, weak: str, tmp_path: Path) -> None:
    result = crmcal_here("serve", "--port", "1", CRMCAL_SECRET_KEY=weak,
                         CRMCAL_DATABASE_URL=f"sqlite:///{tmp_path / 'w.db'}")  # fmt: skip
    assert result.returncode == 1
    assert "too weak" in result.stderr
    assert "secrets.token_urlsafe(32)" in result.stderr


def test_credentials_and_oauth_state_use_separate_keys() -> None:
    vault = Vault(NEW)
    credential = vault.seal("password")
    with pytest.raises(VaultError):
        vault.open_recent(credential.decode(), 600)
    state = vault.seal_for_a_while("state")
    with pytest.raises(VaultError):
        vault.open(state.encode())
    assert vault.open(credential) == "password"
    assert vault.open_recent(state, 600) == "state"


def test_credentials_sealed_before_keys_were_derived_still_open() -> None:
    legacy = Fernet(base64.urlsafe_b64encode(hashlib.sha256(NEW.encode()).digest()))
    assert Vault(NEW).open(legacy.encrypt(b"from before")) == "from before"


def test_an_empty_or_short_key_file_is_refused(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'crm.db'}")
    path = key_file(settings.database_url)
    assert path is not None
    for content in ("", "\n", "short"):
        path.write_text(content)
        with pytest.raises(VaultError, match="empty or too short"):
            vault_for(settings)


def test_racing_processes_all_read_the_whole_generated_key(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'race.db'}")
    vaults: list[Vault | Exception | None] = []

    def start() -> None:
        try:
            vaults.append(vault_for(settings))
        except Exception as error:  # what the test looks at
            vaults.append(error)

    threads = [threading.Thread(target=start) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    made = key_file(settings.database_url)
    assert made is not None
    sealed = Vault(made.read_text().strip()).seal("x")
    assert all(isinstance(v, Vault) and v.open(sealed) == "x" for v in vaults), vaults


def test_keys_rotate_reencrypts_under_the_new_key(crmcal_here: InProcess, db_url: str) -> None:
    connection_id = run(_stored(db_url, Vault(OLD).seal("hunter2")))
    result = crmcal_here("keys", "rotate", CRMCAL_DATABASE_URL=db_url, CRMCAL_SECRET_KEY=NEW,
                         CRMCAL_OLD_SECRET_KEYS=OLD)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "1 connection" in result.stdout
    stored = run(_credentials(db_url, connection_id))
    assert Vault(NEW).open(stored) == "hunter2"  # without the old key
    with pytest.raises(VaultError):
        Vault(OLD).open(stored)


def test_keys_rotate_replaces_a_generated_key_file(crmcal_here: InProcess, tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'crm.db'}"
    migrations.upgrade(db_url)
    settings = Settings(database_url=db_url)
    vault = vault_for(settings)
    assert vault is not None
    connection_id = run(_stored(db_url, vault.seal("hunter2")))
    path = key_file(db_url)
    assert path is not None
    before = path.read_text()
    result = crmcal_here("keys", "rotate", CRMCAL_DATABASE_URL=db_url)
    assert result.returncode == 0, result.stderr
    assert path.read_text() != before
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    stored = run(_credentials(db_url, connection_id))
    assert Vault(path.read_text().strip()).open(stored) == "hunter2"
