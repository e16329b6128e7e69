"""The Google emulator's state kept in a JSON file, so a demo survives a restart.

``save`` writes the whole state atomically (a temporary file in the same
directory, fsynced, then renamed over the old one); ``restore`` reads it back
into a fresh ``GoogleState``. Kept: accounts, calendars with their events and
change logs, access and refresh tokens, invitation mails, request counts, and
the next value of each id counter, so ids, etags and sync-token serials never
repeat after a restart. Not kept: watch channels (their deliveries belong to the
process that opened them), pending faults and delays, and OAuth codes not yet
traded in (the OAuth endpoints hold those, for ten minutes at most).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import itertools
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from crmcal.emulators.google.store import AccessToken, Account, Calendar, GoogleState, Stored

FORMAT = 1
# GoogleState's id counters, by the name the file gives them.
_COUNTERS = {"serials": "_serials", "token_serials": "_token_serials", "etags": "_etags"}
# Everything GoogleState holds is either saved or dropped on purpose; a test checks
# that a new attribute is one or the other.
SAVED = frozenset(
    {"accounts", "calendars", "access_tokens", "refresh_tokens", "mails", "requests",
     *_COUNTERS.values()}
)  # fmt: skip
NOT_SAVED = frozenset(
    {
        "clock",
        "token_max_age",
        "access_token_lifetime",
        "channels",
        "faults",
        "refused_writes",
        "garbled",
        "delays",
        "short_pages",
        "instance_etags",
        "property_match",
        "_pages",
    }
)


class DataFileError(Exception):
    """The data file cannot be read (or written); the message names the file."""


def _next(state: GoogleState, attribute: str) -> int:
    """The value an id counter gives next, left for it to give."""
    value: int = next(getattr(state, attribute))
    setattr(state, attribute, itertools.count(value))
    return value


def snapshot(state: GoogleState) -> dict[str, Any]:
    """The state as JSON-ready data."""
    return {
        "format": FORMAT,
        "counters": {name: _next(state, attribute) for name, attribute in _COUNTERS.items()},
        "accounts": [dataclasses.asdict(a) for a in state.accounts.values()],
        "calendars": [dataclasses.asdict(c) for c in state.calendars.values()],
        "access_tokens": {
            token: dataclasses.asdict(found) | {"expires": found.expires.isoformat()}
            for token, found in state.access_tokens.items()
        },
        "refresh_tokens": state.refresh_tokens,
        "mails": state.mails,
        "requests": state.requests,
    }


def _parsed(data: Any) -> dict[str, Any]:
    """GoogleState's attributes from a snapshot; ``TypeError``, ``KeyError`` or
    ``ValueError`` when it is not one."""
    if not isinstance(data, dict):
        raise TypeError("not a JSON object")
    if data.get("format") != FORMAT:
        raise ValueError(f"unknown format {data.get('format')!r}, expected {FORMAT}")
    calendars: dict[str, Calendar] = {}
    for found in data["calendars"]:
        events = {i: Stored(**stored) for i, stored in found["events"].items()}
        calendars[found["id"]] = Calendar(**found | {"events": events})
    accounts = {found["email"]: Account(**found) for found in data["accounts"]}
    access_tokens = {
        token: AccessToken(**found | {"expires": dt.datetime.fromisoformat(found["expires"])})
        for token, found in data["access_tokens"].items()
    }
    parsed = {
        "accounts": accounts,
        "calendars": calendars,
        "access_tokens": access_tokens,
        "refresh_tokens": {str(k): str(v) for k, v in data["refresh_tokens"].items()},
        "mails": list(data["mails"]),
        "requests": {str(k): int(v) for k, v in data["requests"].items()},
    }
    for name, attribute in _COUNTERS.items():
        parsed[attribute] = itertools.count(int(data["counters"][name]))
    return parsed


def restore(state: GoogleState, path: Path) -> None:
    """Fill ``state`` (a fresh one) from the file at ``path``; ``DataFileError`` if it
    cannot be read, leaving ``state`` as it was."""
    try:
        data = json.loads(path.read_bytes())
    except OSError as exc:
        raise DataFileError(f"cannot read the emulator's data file {path}: {exc}") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise DataFileError(
            f"the emulator's data file {path} is not valid JSON ({exc}); "
            "fix it, or remove it to start afresh"
        ) from None
    try:
        parsed = _parsed(data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DataFileError(
            f"{path} is not a Google emulator data file ({type(exc).__name__}: {exc}); "
            "fix it, or remove it to start afresh"
        ) from None
    for attribute, value in parsed.items():
        setattr(state, attribute, value)


def save(state: GoogleState, path: Path) -> None:
    """Write the state to ``path`` atomically: a reader (or a crash) sees the old file
    or the new one, never half of one. Readable by its owner only (it holds tokens)."""
    payload = json.dumps(snapshot(state), separators=(",", ":")).encode()
    directory = path.parent
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(payload)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    if os.name == "posix":  # the rename itself is durable once the directory is synced
        directory_handle = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(directory_handle)
        finally:
            os.close(directory_handle)


def open_data_file(state: GoogleState, path: Path) -> None:
    """Restore ``state`` from ``path`` if the file exists, then save it there: a file
    that cannot be written fails at start-up, not on the first write."""
    if path.exists():
        restore(state, path)
    try:
        save(state, path)
    except OSError as exc:
        raise DataFileError(f"cannot write the emulator's data file {path}: {exc}") from None
