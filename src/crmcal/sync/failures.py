"""How a sync that did not go through ended, read from the exception that stopped it.

A failure puts the connection in ``error`` with a message and a ``FailureKind``, which
decides when it is tried again by itself (``runner.retry_at``). An interruption,
through no fault of the calendar's (the lease lost, the database out of reach, the
process stopping), counts no failure: the connection is due again at once. Which
exception means which failure is one table, ``FAILURES``; an exception it does not
name is an interruption or a bug (``ending``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from crmcal import db_errors
from crmcal.providers.base import AuthenticationFailed, ProviderError, WritesRefused
from crmcal.sync import lease
from crmcal.sync.context import SyncFailed, SyncRefused
from crmcal.sync.states import RECONNECT_REQUIRED, SERVER_ACTION_REQUIRED, FailureKind
from crmcal.vault import VaultError


@dataclass(frozen=True)
class Ending:
    """How a sync ended: ``error`` (and its ``failure``) when it failed, ``interrupted``
    when it stopped short through no fault of the calendar's, neither when it went
    through. ``raised``: its exception goes on up as it was (a bug, the database out of
    reach, a cancellation), not as a ``SyncFailed``."""

    error: str | None = None
    failure: FailureKind = FailureKind.SERVER
    interrupted: str | None = None
    raised: bool = False

    @property
    def went_through(self) -> bool:
        return self.error is None and self.interrupted is None

    @property
    def message(self) -> str:
        return self.error or self.interrupted or ""


WENT_THROUGH = Ending()


def _credentials(exc: Any) -> str:
    # Provider-neutral: a new password (CalDAV) or a new grant (OAuth) resumes it.
    said = str(exc)
    if RECONNECT_REQUIRED in said:
        return said
    return f"the calendar refused the credentials ({said}): {RECONNECT_REQUIRED}"


def _server_setup(exc: Any) -> str:
    # The server's setup, not a passing fault: said as such (and tried rarely).
    return f"{exc}: {SERVER_ACTION_REQUIRED}"


# Each exception that fails a sync: the kind of failure (None: the exception's own, a
# SyncFailed's) and the connection's error it makes. The first row whose type the
# exception is wins (an AuthenticationFailed and a WritesRefused are ProviderErrors too).
FAILURES: tuple[tuple[type[Exception], FailureKind | None, Callable[[Any], str]], ...] = (
    (AuthenticationFailed, FailureKind.CREDENTIALS, _credentials),
    (WritesRefused, FailureKind.SERVER_SETUP, _server_setup),
    (SyncFailed, None, str),
    (SyncRefused, FailureKind.REFUSED, str),
    (ProviderError, FailureKind.SERVER, str),
    (VaultError, FailureKind.SERVER, str),
    (lease.SyncTimedOut, FailureKind.SERVER, str),
)


def ending(exc: BaseException) -> Ending:
    """How the sync that ``exc`` stopped ended."""
    for raised, kind, error in FAILURES:
        if isinstance(exc, raised):
            failure = kind if kind is not None else cast(SyncFailed, exc).kind
            return Ending(error=error(exc), failure=failure)
    if isinstance(exc, lease.LeaseLost):
        return Ending(interrupted=str(exc))
    if not isinstance(exc, Exception):  # cancelled: the process stops; the next sync resumes
        return Ending(interrupted="stopped with its process before it finished", raised=True)
    if (found := db_errors.transient(exc)) is not None:
        # The database's state (out of reach, restarting, too busy), not the
        # connection's: no failure is counted, and the sync is due again at once.
        return Ending(interrupted=f"the database was unavailable: {found.meaning}", raised=True)
    return Ending(
        error=f"unexpected error: {exc.__class__.__name__}: {exc}",
        failure=FailureKind.UNEXPECTED,
        raised=True,
    )
