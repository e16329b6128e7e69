"""The Graph emulator's state: accounts and their mailboxes, tokens, faults and counts.

No HTTP here (``app.py`` maps requests onto these operations). A mailbox is
created with its account and a default calendar called "Calendar"; its events
live in ``mailbox.Events`` and its delta sync states in ``delta.DeltaStates``.
``listeners`` are called with a ``model.Change`` on every event change in any
mailbox: the hook change notifications are built on. ``extensions`` hold what
features installed on the app keep (subscriptions, requests in flight) and add
their settings to the admin API's.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from crmcal.emulators.microsoft import ids
from crmcal.emulators.microsoft.delta import DeltaStates
from crmcal.emulators.microsoft.errors import GraphError, bad_request, unauthorized
from crmcal.emulators.microsoft.mailbox import Events
from crmcal.emulators.microsoft.model import Calendar, ChangeListener, Mailbox
from crmcal.emulators.switches import MAX_COUNT, BadDelay, Countdown, Delays

GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
DEFAULT_SCOPE = "Calendars.ReadWrite User.Read offline_access"
TENANT_ID = "9188040d-6c67-4c5b-b112-36a304b66dad"
THROTTLING = {
    "ApplicationThrottled": "Application is over its MailboxConcurrency limit.",
    "TooManyRequests": "Too many requests, retry after some time.",
}
FAULTS = {
    429: ("ApplicationThrottled", THROTTLING["ApplicationThrottled"]),
    500: ("ErrorInternalServerError", "An internal server error occurred. The operation failed."),
    503: ("serviceNotAvailable", "The service is temporarily unavailable. Please retry later."),
}


@dataclass
class AccessToken:
    email: str
    client_id: str | None
    scope: str
    issued: dt.datetime
    expires: dt.datetime
    serial: int  # issue order, compared with a mailbox's revoked_before


@dataclass
class RefreshToken:
    email: str
    client_id: str | None
    scope: str
    issued: dt.datetime
    last_used: dt.datetime
    serial: int


@dataclass
class Fault:
    status: int
    count: int
    code: str
    retry_after: int | None


class Extension(Protocol):
    """A feature installed on the app (change notifications, the concurrency limit) that
    keeps its state here and has settings of its own among the admin API's settings."""

    def settings(self) -> dict[str, Any]: ...

    def check(self, changes: dict[str, Any]) -> None:
        """Raise a ``GraphError`` if any of ``changes`` (only its own settings) is bad."""

    def apply(self, changes: dict[str, Any]) -> None: ...


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def _problem(message: str) -> GraphError:
    return bad_request(message)


class MicrosoftState:
    def __init__(
        self,
        *,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        delta_token_max_age: dt.timedelta | None = dt.timedelta(days=7),
    ) -> None:
        self.clock = clock
        self.mailboxes: dict[str, Mailbox] = {}
        # Called with a model.Change on every event change (created, updated, deleted).
        self.listeners: list[ChangeListener] = []
        self.events = Events(clock, self.listeners)
        self.delta = DeltaStates(clock, delta_token_max_age)
        self.access_tokens: dict[str, AccessToken] = {}
        self.refresh_tokens: dict[str, RefreshToken] = {}
        self.access_token_lifetime = dt.timedelta(hours=1)
        self.refresh_token_max_age = dt.timedelta(days=90)  # unused for that long: expired
        self.page_size = 10  # what lists answer without $top or odata.maxpagesize
        self.requests: dict[str, int] = {}
        self.faults: Countdown[Fault] = Countdown()
        # Events (by the id a write names) whose every update and delete is refused
        # with Graph's 403 ``ErrorAccessDenied``, as for a meeting the mailbox may not
        # change (``/_emulator/events/{id}/refuse-writes``).
        self.refused_writes: set[str] = set()
        self.delays = Delays()
        # Features installed on an app keep their state here, by name, so that every app
        # serving this state shares it (one set of subscriptions, one in-flight count).
        self.extensions: dict[str, Extension] = {}
        self._token_serial = 0

    # --- accounts and calendars -----------------------------------------------------

    def create_account(
        self, email: str, client_id: str | None = None, display_name: str | None = None
    ) -> dict[str, str]:
        """A mailbox with its default calendar (if new), and tokens for it."""
        mailbox = self.mailbox(email, client_id, display_name)
        return self.issue_tokens(mailbox.email, client_id or mailbox.client_id, DEFAULT_SCOPE)

    def mailbox(
        self, email: str, client_id: str | None = None, display_name: str | None = None
    ) -> Mailbox:
        address = email.strip().lower()
        found = self.mailboxes.get(address)
        if found is None:
            name = display_name or address.split("@")[0].replace(".", " ").title()
            found = Mailbox(address, name, str(uuid.uuid4()), client_id)
            self.mailboxes[address] = found
            self.add_calendar(address, "Calendar", default=True)
        return found

    def add_calendar(
        self,
        email: str,
        name: str,
        *,
        can_edit: bool = True,
        default: bool = False,
        owner: str | None = None,
        color: str = "auto",
    ) -> Calendar:
        mailbox = self.mailboxes[email]
        calendar = Calendar(
            ids.calendar_id(),
            name,
            (owner or email).lower(),
            can_edit,
            default,
            ids.change_key(),
            color=color,
        )
        mailbox.calendars[calendar.id] = calendar
        return calendar

    # --- tokens --------------------------------------------------------------------

    def issue_access_token(self, email: str, client_id: str | None, scope: str) -> str:
        mailbox = self.mailboxes[email]
        now = self.clock()
        expires = now + self.access_token_lifetime
        claims = {
            "aud": GRAPH_APP_ID,
            "iss": f"https://sts.windows.net/{TENANT_ID}/",
            "iat": int(now.timestamp()),
            "nbf": int(now.timestamp()),
            "exp": int(expires.timestamp()),
            "appid": client_id or "",
            "oid": mailbox.user_id,
            "upn": email,
            "scp": scope,
            "tid": TENANT_ID,
            "uti": secrets.token_urlsafe(8),
        }
        token = ".".join(
            (_b64({"typ": "JWT", "alg": "RS256"}), _b64(claims), secrets.token_urlsafe(32))
        )
        self.access_tokens[token] = AccessToken(
            email, client_id, scope, now, expires, self._next_token_serial()
        )
        return token

    def _next_token_serial(self) -> int:
        self._token_serial += 1
        return self._token_serial

    def issue_tokens(
        self, email: str, client_id: str | None, scope: str, *, refresh: bool = True
    ) -> dict[str, str]:
        tokens = {"access_token": self.issue_access_token(email, client_id, scope)}
        if refresh:
            token = "0.A" + secrets.token_urlsafe(64)
            now = self.clock()
            self.refresh_tokens[token] = RefreshToken(
                email, client_id, scope, now, now, self._next_token_serial()
            )
            tokens["refresh_token"] = token
        return tokens

    def mailbox_for(self, access_token: str | None) -> Mailbox:
        """The mailbox an access token opens (401 with Graph's message if none)."""
        if not access_token:
            raise unauthorized()
        found = self.access_tokens.get(access_token)
        if found is None:
            raise unauthorized("Access token validation failure. Invalid audience.")
        if found.expires <= self.clock():
            raise unauthorized("Lifetime validation failed, the token is expired.")
        mailbox = self.mailboxes[found.email]
        if found.serial < mailbox.revoked_before:
            raise unauthorized(
                "Continuous access evaluation resulted in challenge with result: "
                "InteractionRequired and code: TokenIssuedBeforeRevocationTimestamp"
            )
        return mailbox

    def revoke_sessions(self, mailbox: Mailbox) -> None:
        """``revokeSignInSessions``: every token issued so far stops working."""
        mailbox.tokens_valid_from = self.clock()
        mailbox.revoked_before = self._next_token_serial()

    def expire_access_tokens(self) -> None:
        for token in self.access_tokens.values():
            token.expires = self.clock()

    # --- requests, faults and delays --------------------------------------------------

    def count(self, kind: str) -> None:
        self.requests[kind] = self.requests.get(kind, 0) + 1

    def add_fault(self, body: dict[str, Any]) -> None:
        status, count = body.get("status"), body.get("count", 1)
        if status not in FAULTS or isinstance(status, bool):
            raise _problem(f"status: one of {sorted(FAULTS)}")
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_COUNT:
            raise _problem(f"count: an integer between 1 and {MAX_COUNT}")
        code = body.get("code", FAULTS[status][0])
        if status == 429 and code not in THROTTLING:
            raise _problem(f"code: one of {sorted(THROTTLING)}")
        if status != 429 and code != FAULTS[status][0]:
            raise _problem("code: only throttling faults (429) take a code")
        retry_after = body.get("retry_after", 1 if status == 429 else None)
        if retry_after is not None and (
            isinstance(retry_after, bool)
            or not isinstance(retry_after, int)
            or not 0 <= retry_after <= 3600
        ):
            raise _problem("retry_after: whole seconds between 0 and 3600")
        self.faults.push(Fault(status, count, code, retry_after))

    def fault(self) -> GraphError | None:
        """The injected failure this call gets, if any (Graph's error bodies)."""
        fault = self.faults.take_one()
        if fault is None:
            return None
        message = THROTTLING.get(fault.code) or FAULTS[fault.status][1]
        headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
        return GraphError(fault.status, fault.code, message, headers=headers)

    def add_delay(self, seconds: Any, count: Any) -> None:
        try:
            self.delays.add(seconds, count)
        except BadDelay as bad:
            raise _problem(str(bad)) from None

    def delay(self) -> float:
        return self.delays.take()

    def pending(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = [
            {"status": f.status, "count": f.count, "code": f.code, "retry_after": f.retry_after}
            for f in self.faults
        ]
        return found + self.delays.described()

    # --- settings --------------------------------------------------------------------

    def settings(self) -> dict[str, Any]:
        age = self.delta.max_age
        found = {
            "page_size": self.page_size,
            "delta_token_max_age": age.total_seconds() if age is not None else None,
        }
        for extension in self.extensions.values():
            found |= extension.settings()
        return found

    def configure(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Change the settings ``changes`` names (all checked before any is applied)."""
        unknown = sorted(set(changes) - set(self.settings()))
        if unknown:
            raise _problem(f"unknown setting: {unknown[0]}")
        size = changes.get("page_size", self.page_size)
        age = changes.get("delta_token_max_age", self.settings()["delta_token_max_age"])
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 1000:
            raise _problem("page_size: an integer between 1 and 1000")
        if age is not None and (
            isinstance(age, bool) or not isinstance(age, int | float) or age <= 0
        ):
            raise _problem("delta_token_max_age: seconds above 0, or null")
        theirs = [
            (extension, {k: v for k, v in changes.items() if k in extension.settings()})
            for extension in self.extensions.values()
        ]
        for extension, own in theirs:
            extension.check(own)
        self.page_size = size
        self.delta.max_age = dt.timedelta(seconds=age) if age is not None else None
        for extension, own in theirs:
            extension.apply(own)
        return self.settings()
