"""Passwords for signing in to the web pages: argon2id hashes (argon2-cffi), never the
password itself. API tokens stay the way scripts authenticate."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_LENGTH = 8
_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters
# Verified against when the e-mail is unknown, so that a wrong address costs as much
# time as a wrong password and the answer time does not tell which addresses exist:
# a hash of the hasher's own parameters, so verifying it costs what a user's does
# (``tests/test_web_auth.py`` checks they are the same). Written out, not computed when
# the module is imported: that hash took 64 MB (argon2's memory cost) and tens of ms of
# CPU in every process that imports the CRM, a worker's highest moment of memory once
# its first jobs no longer made its limits' rows in memory (bench/RESULTS.md).
_DUMMY = (
    "$argon2id$v=19$m=65536,t=3,p=4$2Evzz+zFw7N7qRJ2UC87UA$"
    "2Feb9yNQFjU7ArVJMtp3cLQs1uZA+ZpZElRSmzl3ibY"
)


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify(password_hash: str | None, password: str) -> bool:
    """True if ``password`` matches; a user without a password never matches."""
    try:
        return _hasher.verify(password_hash or _DUMMY, password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)
