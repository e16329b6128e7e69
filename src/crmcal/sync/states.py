"""The states a connection is in, the kinds of failure that put it in ``error``, where a
linked pair began and which side won a conflict.

All are stored and shown as plain strings; these types name every value there is,
so code that decides on them can be checked for the cases it misses.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal


class ConnectionState(StrEnum):
    PENDING = "pending"  # made, calendar not yet chosen and started
    ACTIVE = "active"
    SYNCING = "syncing"  # a sync holds its lease
    STOPPED = "stopped"  # paused by the user: nothing syncs until reconnected
    ERROR = "error"  # the last sync failed; see FailureKind for what happens next


# ConnectionState's values as the API answers them (a connection's and its status's
# ``state``): a Literal, which the OpenAPI document shows as the enum it is, inline.
# tests/test_openapi.py checks the two name the same values.
ShownState = Literal["pending", "active", "syncing", "stopped", "error"]


class FailureKind(StrEnum):
    """Why a sync failed, which decides whether it is tried again by itself."""

    # The calendar refused the credentials, or the grant was revoked: only the user
    # can mend that (a new password or grant), so nothing retries until they do.
    CREDENTIALS = "credentials"
    # The CRM user may not sync (a revoked permission, a deactivated user).
    PERMISSION = "permission"
    # A guard stopped the run before it changed anything (an emptied calendar ...).
    REFUSED = "refused"
    # The server answers, but works in a way crmcal cannot write to safely (a CalDAV
    # server refusing its own weak ETags): whoever runs it must change that, or the
    # user move to another server. Every try costs a refused write, and nothing says
    # when it is mended, so it is tried rarely (``RARE_RETRY``) and at once when the
    # user asks (a sync or a reconnection); the CRM's changes wait meanwhile.
    SERVER_SETUP = "server_setup"
    # The server could not be reached or failed: retried with back-off.
    SERVER = "server"
    # Anything else: a bug; retried with back-off.
    UNEXPECTED = "unexpected"

    @property
    def needs_user(self) -> bool:
        """Whether the connection waits for the user instead of being retried."""
        return self in (FailureKind.CREDENTIALS, FailureKind.PERMISSION)

    @property
    def needs_action(self) -> bool:
        """Whether someone must act before a retry can go through (the user, or the
        server's administrator): such a connection is retried rarely if at all."""
        return self.needs_user or self is FailureKind.SERVER_SETUP


class LinkOrigin(StrEnum):
    """Where a linked pair began (``sync_links.origin``)."""

    CRM = "crm"  # crmcal created the event for an activity
    CALENDAR = "calendar"  # the event came first; crmcal made the activity


class Winner(StrEnum):
    """Whose version a conflict kept (``sync_conflicts.winner``)."""

    CRM = "crm"
    CALENDAR = "calendar"


RECONNECT_REQUIRED = "reconnect required"
# Ends the ``last_error`` of a connection failed for its server's setup.
SERVER_ACTION_REQUIRED = (
    "the server's administrator must change this; crmcal tries again once a day, "
    "or at once when synced or reconnected"
)
