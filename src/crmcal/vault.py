"""Encrypting stored credentials (CalDAV passwords, OAuth refresh tokens) at rest.

Fernet (AES-128-CBC + HMAC-SHA256) with a key derived from CRMCAL_SECRET_KEY.
An embedded (SQLite) installation without that variable gets a random key kept
in a file beside the database, so that the demo needs no set-up; any other
installation must set it.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy.engine import make_url

from crmcal.config import Settings
from crmcal.db import is_sqlite


class VaultError(Exception):
    pass


class Vault:
    def __init__(self, secret_key: str) -> None:
        digest = hashlib.sha256(secret_key.encode()).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(digest))

    def seal(self, plaintext: str) -> bytes:
        return self._fernet.encrypt(plaintext.encode())

    def seal_for_a_while(self, plaintext: str) -> str:
        """A URL-safe token that ``open_recent`` reads back until it is too old."""
        return self._fernet.encrypt(plaintext.encode()).decode()

    def open_recent(self, token: str, max_age: int) -> str:
        """What ``seal_for_a_while`` sealed, if that was at most ``max_age`` seconds ago."""
        try:
            return self._fernet.decrypt(token.encode(), ttl=max_age).decode()
        except (InvalidToken, ValueError):
            raise VaultError("the token is expired, damaged or not ours") from None

    def open(self, sealed: bytes) -> str:
        try:
            return self._fernet.decrypt(sealed).decode()
        except InvalidToken:
            raise VaultError(
                "stored credentials cannot be decrypted: CRMCAL_SECRET_KEY changed; "
                "reconnect the calendar"
            ) from None


def key_file(database_url: str) -> Path | None:
    """Where an embedded database keeps its generated key, or None for a server database."""
    if not is_sqlite(database_url):
        return None
    database = make_url(database_url).database
    if not database or database == ":memory:":
        return None
    return Path(database).with_suffix(".key")


def vault_for(settings: Settings) -> Vault | None:
    """The vault of this installation, or None when credentials cannot be stored."""
    if settings.secret_key:
        return Vault(settings.secret_key)
    path = key_file(settings.database_url)
    if path is None:
        return None
    try:
        # Created readable by the owner only, before anything is written to it.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(32))
    return Vault(path.read_text().strip())
