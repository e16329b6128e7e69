"""Identifiers as Outlook hands them out: opaque, base64-looking, case-sensitive.

Every event has two ids: a regular one (``AAMkA…``) that changes when the event
moves to another calendar, and an immutable one (``AAkAL…``) that does not;
which of them an answer shows depends on ``Prefer: IdType="ImmutableId"``.
Occurrences of a series are never stored: their ids encode the series' id and
the original start, so any of them can be read, changed or cancelled by id.
``changeKey`` values change on every write.
"""

from __future__ import annotations

import base64
import binascii
import secrets

REGULAR_PREFIX = "AAMkA"
IMMUTABLE_PREFIX = "AAkAL"
CALENDAR_PREFIX = "AAMkAGCal"
_OCCURRENCE_PREFIX = "AAMkAOcc"
_SEPARATOR = "\x1f"


def _opaque(size: int) -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(size)).decode().rstrip("=")


def regular_id() -> str:
    return f"{REGULAR_PREFIX}{_opaque(48)}AAA="


def immutable_id() -> str:
    return f"{IMMUTABLE_PREFIX}{_opaque(48)}AAA="


def calendar_id() -> str:
    return f"{CALENDAR_PREFIX}{_opaque(30)}AAA="


def change_key() -> str:
    return base64.b64encode(secrets.token_bytes(22)).decode()


def ical_uid() -> str:
    """Outlook's global object id form: a fixed prefix and random hex."""
    return "040000008200E00074C5B7101A82E00800000000" + secrets.token_hex(28).upper()


def occurrence_id(master_id: str, stamp: str) -> str:
    """The id of the occurrence of series ``master_id`` originally starting at ``stamp``."""
    raw = f"{master_id}{_SEPARATOR}{stamp}".encode()
    return _OCCURRENCE_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def split_occurrence_id(event_id: str) -> tuple[str, str] | None:
    """(series id, original start stamp) of an occurrence id, or None."""
    if not event_id.startswith(_OCCURRENCE_PREFIX):
        return None
    body = event_id[len(_OCCURRENCE_PREFIX) :]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    master_id, separator, stamp = raw.partition(_SEPARATOR)
    return (master_id, stamp) if separator and master_id and stamp else None
