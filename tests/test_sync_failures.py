"""How a sync that did not go through ended, from the exception that stopped it: a
failure of a kind (which decides its retry), an interruption, or a bug raised on."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.exc import TimeoutError as PoolTimeout

from crmcal import db_errors
from crmcal.providers.base import AuthenticationFailed, Unreachable, WritesRefused
from crmcal.sync import failures, lease
from crmcal.sync.context import SyncFailed, SyncRefused
from crmcal.sync.failures import Ending
from crmcal.sync.states import RECONNECT_REQUIRED, SERVER_ACTION_REQUIRED, FailureKind
from crmcal.vault import VaultError

SERVER, REFUSED = FailureKind.SERVER, FailureKind.REFUSED


@pytest.mark.parametrize(
    ("exc", "ended"),
    [
        (AuthenticationFailed(f"Google refused the access: {RECONNECT_REQUIRED}"),
         Ending(error=f"Google refused the access: {RECONNECT_REQUIRED}",
                failure=FailureKind.CREDENTIALS)),
        (AuthenticationFailed("401 Unauthorized"),
         Ending(error=f"the calendar refused the credentials (401 Unauthorized): "
                      f"{RECONNECT_REQUIRED}", failure=FailureKind.CREDENTIALS)),
        (WritesRefused("weak ETags"),
         Ending(error=f"weak ETags: {SERVER_ACTION_REQUIRED}", failure=FailureKind.SERVER_SETUP)),
        (SyncFailed("may not sync", FailureKind.PERMISSION),
         Ending(error="may not sync", failure=FailureKind.PERMISSION)),
        (SyncRefused("the calendar was emptied"),
         Ending(error="the calendar was emptied", failure=REFUSED)),
        (Unreachable("connection refused"), Ending(error="connection refused", failure=SERVER)),
        (VaultError("no key"), Ending(error="no key", failure=SERVER)),
        (lease.SyncTimedOut("ran past 3600 s"), Ending(error="ran past 3600 s", failure=SERVER)),
        (lease.LeaseLost("taken over"), Ending(interrupted="taken over")),
        (PoolTimeout("no connection"),
         Ending(interrupted=f"the database was unavailable: "
                            f"{db_errors.POOL_EXHAUSTED.meaning}", raised=True)),
        (asyncio.CancelledError(),
         Ending(interrupted="stopped with its process before it finished", raised=True)),
        (KeyError("uid"),
         Ending(error="unexpected error: KeyError: 'uid'", failure=FailureKind.UNEXPECTED,
                raised=True)),
    ],
)  # fmt: skip
def test_each_exception_ends_a_sync_as_its_kind(exc: BaseException, ended: Ending) -> None:
    assert failures.ending(exc) == ended
    assert not ended.went_through
    assert ended.message == (ended.error or ended.interrupted)


def test_a_sync_that_went_through_has_no_message() -> None:
    assert failures.WENT_THROUGH.went_through
    assert failures.WENT_THROUGH.message == ""
