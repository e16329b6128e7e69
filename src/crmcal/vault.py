"""Encrypting stored credentials (CalDAV passwords, OAuth refresh tokens) at rest.

Fernet (AES-128-CBC + HMAC-SHA256). Separate keys are derived from
CRMCAL_SECRET_KEY with HKDF-SHA256: one for stored credentials, one for the
short-lived OAuth ``state``, so that neither can be passed off as the other.
Older keys (CRMCAL_OLD_SECRET_KEYS) still decrypt while ``crmcal keys rotate``
re-encrypts everything under the current one (MultiFernet); credentials sealed
before keys were derived (with the SHA-256 of the key) are still read.

An embedded (SQLite) installation without that variable gets a random key kept
in a file beside the database, written atomically (never read half-written), so
that the demo needs no set-up; any other installation must set it. A key with
too little entropy (under 128 bits, estimated) is refused where it matters.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import math
import os
import secrets
from collections.abc import Sequence
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy.engine import make_url

from crmcal.config import Settings
from crmcal.db import is_sqlite

MIN_KEY_BITS = 128
GENERATE = 'python3 -c "import secrets; print(secrets.token_urlsafe(32))"'


class VaultError(Exception):
    pass


def key_bits(secret_key: str) -> float:
    """A rough estimate of a key's entropy: its length times the bits of its alphabet
    (as many symbols as it uses distinct ones), no more than 8 bits a character."""
    distinct = len(set(secret_key))
    if distinct < 2:
        return 0.0
    return len(secret_key) * min(math.log2(distinct), 8.0)


def weak_key_problem(secret_key: str | None) -> str | None:
    """Why ``secret_key`` is too weak to protect stored credentials, if it is."""
    if not secret_key:
        return "CRMCAL_SECRET_KEY is not set"
    bits = key_bits(secret_key)
    if bits < MIN_KEY_BITS:
        return (
            f"CRMCAL_SECRET_KEY is too weak (about {bits:.0f} bits of entropy; at least "
            f"{MIN_KEY_BITS} needed): generate one with {GENERATE}"
        )
    return None


def _derive(secret_key: str, purpose: bytes) -> Fernet:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(
        secret_key.encode()
    )
    return Fernet(base64.urlsafe_b64encode(key))


def _legacy(secret_key: str) -> Fernet:
    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(secret_key.encode()).digest()))


class Vault:
    def __init__(self, secret_key: str, old_keys: Sequence[str] = ()) -> None:
        keys = [secret_key, *(k for k in old_keys if k and k != secret_key)]
        # The first key encrypts; every one (and its pre-derivation form) decrypts.
        self._credentials = MultiFernet(
            [_derive(k, b"crmcal credentials") for k in keys] + [_legacy(k) for k in keys]
        )
        self._state = _derive(secret_key, b"crmcal oauth state")

    def seal(self, plaintext: str) -> bytes:
        return self._credentials.encrypt(plaintext.encode())

    def seal_for_a_while(self, plaintext: str) -> str:
        """A URL-safe token that ``open_recent`` reads back until it is too old."""
        return self._state.encrypt(plaintext.encode()).decode()

    def open_recent(self, token: str, max_age: int) -> str:
        """What ``seal_for_a_while`` sealed, if that was at most ``max_age`` seconds ago."""
        try:
            return self._state.decrypt(token.encode(), ttl=max_age).decode()
        except (InvalidToken, ValueError):
            raise VaultError("the token is expired, damaged or not ours") from None

    def open(self, sealed: bytes) -> str:
        try:
            return self._credentials.decrypt(sealed).decode()
        except InvalidToken:
            raise VaultError(
                "stored credentials cannot be decrypted: CRMCAL_SECRET_KEY changed; "
                "reconnect the calendar"
            ) from None

    def reseal(self, sealed: bytes) -> bytes:
        """``sealed`` encrypted again under the current key (VaultError if no key opens it)."""
        try:
            return self._credentials.rotate(sealed)
        except InvalidToken:
            raise VaultError("stored credentials that no key decrypts") from None


def key_file(database_url: str) -> Path | None:
    """Where an embedded database keeps its generated key, or None for a server database."""
    if not is_sqlite(database_url):
        return None
    database = make_url(database_url).database
    if not database or database == ":memory:":
        return None
    return Path(database).with_suffix(".key")


def write_key_file(path: Path, key: str, *, replace: bool = False) -> bool:
    """Write ``key`` to ``path`` atomically, readable by the owner only: a reader sees
    no file or the whole key, never an empty one. Without ``replace`` an existing
    file wins (False)."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(key + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        if replace:
            os.replace(temporary, path)
            return True
        try:
            os.link(temporary, path)  # fails if another process got there first
        except FileExistsError:
            return False
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def read_key_file(path: Path) -> str:
    key = path.read_text().strip()
    problem = weak_key_problem(key)
    if problem is not None:
        raise VaultError(
            f"the key file {path} is empty or too short ({problem.split(': ', 1)[0]}); "
            "restore it from a backup, or remove it and reconnect every calendar"
        )
    return key


def next_key_file(path: Path) -> Path:
    """Where ``crmcal keys rotate`` puts the new key until every credential uses it."""
    return path.with_suffix(".key.next")


def vault_for(settings: Settings) -> Vault | None:
    """The vault of this installation, or None when credentials cannot be stored."""
    if settings.secret_key:
        return Vault(settings.secret_key, settings.old_secret_keys)
    path = key_file(settings.database_url)
    if path is None:
        return None
    write_key_file(path, secrets.token_urlsafe(32))
    key = read_key_file(path)
    pending = next_key_file(path)
    # A rotation that stopped half-way: both keys decrypt until it is run again.
    old = [read_key_file(pending)] if pending.exists() else []
    return Vault(key, old)
