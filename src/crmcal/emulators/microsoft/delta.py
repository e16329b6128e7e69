"""Delta queries on calendar views: server-side sync states behind opaque tokens.

A round starts with ``calendarView/delta?startDateTime=&endDateTime=`` and pages
(``Prefer: odata.maxpagesize``) through ``@odata.nextLink`` (``$skiptoken``) to an
``@odata.deltaLink`` (``$deltatoken``). Each token names a sync state kept here,
as Exchange keeps them: the window, the change-log position the round started
at, and which view entries the client has been told about. Calling a deltaLink
answers the entries changed since (created or updated events, occurrences and
exceptions in the window) and ``@removed`` for every entry the client knows that
is no longer in the view — deleted, cancelled, moved to another calendar, or
changed so that it left the window. A round's pages are cut from a snapshot
taken when it started; a change made meanwhile is answered in the next round.

States expire after ``max_age``, when a mailbox holds more than ``MAX_STATES``
(the oldest go), or on demand; an expired token answers 410 ``SyncStateNotFound``.
"""

from __future__ import annotations

import base64
import binascii
import copy
import datetime as dt
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from crmcal.emulators.microsoft import ids, render, times
from crmcal.emulators.microsoft.errors import GraphError, bad_request
from crmcal.emulators.microsoft.mailbox import Events
from crmcal.emulators.microsoft.model import Calendar, Entry, Mailbox
from crmcal.emulators.microsoft.odata import Preferences

DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 1000
MAX_STATES = 1000  # per mailbox
MAX_WINDOW_DAYS = 1825


@dataclass
class Removed:
    key: str
    regular_id: str
    immutable_id: str


@dataclass
class SyncState:
    generation: int
    email: str
    calendar_id: str
    start: dt.datetime
    end: dt.datetime
    issued: dt.datetime
    # What the next round compares with (a deltatoken's state) ...
    since: int = 0
    seen: frozenset[str] = frozenset()
    # ... or the rest of a round being paged (a skiptoken's state).
    pending: list[Entry | Removed] | None = None
    after_since: int = 0
    after_seen: frozenset[str] = field(default_factory=frozenset)


def gone(generation: int, highest: int) -> GraphError:
    return GraphError(
        410,
        "SyncStateNotFound",
        f"The sync state generation is not found; generation={generation};[highest={highest}].",
    )


class DeltaStates:
    def __init__(
        self, clock: Callable[[], dt.datetime], max_age: dt.timedelta | None = dt.timedelta(days=7)
    ) -> None:
        self.clock = clock
        self.max_age = max_age
        self.states: dict[str, SyncState] = {}
        self._generation = 0

    def expire(self, email: str | None = None) -> int:
        """Drop every sync state (of one mailbox): their tokens answer 410 from now on."""
        doomed = [t for t, s in self.states.items() if email is None or s.email == email]
        for token in doomed:
            del self.states[token]
        return len(doomed)

    def _issue(self, state: SyncState) -> str:
        self._generation += 1
        state.generation = self._generation
        token = (
            base64.urlsafe_b64encode(
                json.dumps({"g": state.generation, "k": secrets.token_urlsafe(12)}).encode()
            )
            .decode()
            .rstrip("=")
        )
        self.states[token] = state
        mine = [t for t, s in self.states.items() if s.email == state.email]
        for old in mine[: max(0, len(mine) - MAX_STATES)]:
            del self.states[old]
        return token

    def _state(self, token: str, mailbox: Mailbox, calendar: Calendar) -> SyncState:
        try:
            padded = token + "=" * (-len(token) % 4)
            generation = int(json.loads(base64.urlsafe_b64decode(padded))["g"])
        except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError):
            raise bad_request("The state token is malformed.") from None
        state = self.states.get(token)
        if (
            state is not None
            and self.max_age is not None
            and (self.clock() - state.issued > self.max_age)
        ):
            del self.states[token]
            state = None
        if state is None:
            raise gone(generation, self._generation)
        if state.email != mailbox.email or state.calendar_id != calendar.id:
            raise bad_request("The state token belongs to another calendar view.")
        return state

    def page(
        self,
        events: Events,
        mailbox: Mailbox,
        calendar: Calendar,
        params: dict[str, str],
        prefs: Preferences,
        link: str,
    ) -> dict[str, Any]:
        """One page of a delta round; ``link`` is the request URL without its query."""
        tokens = {k: v for k, v in params.items() if k.lower() in ("$deltatoken", "$skiptoken")}
        if tokens:
            others = sorted(set(params) - set(tokens))
            if others or len(tokens) > 1:
                raise bad_request(
                    f"Query parameter '{(others or sorted(tokens))[0]}' cannot be given with a "
                    "state token: the parameters of the first request are encoded in it."
                )
            ((name, token),) = tokens.items()
            state = self._state(token, mailbox, calendar)
            if name.lower() == "$skiptoken":
                if state.pending is None:
                    raise bad_request("The state token is not a skip token.")
                round_items, since, seen = state.pending, state.after_since, state.after_seen
            else:
                if state.pending is not None:
                    raise bad_request("The state token is not a delta token.")
                round_items, since, seen = self._round(events, mailbox, calendar, state)
            start, end = state.start, state.end
        else:
            start, end = window(params, delta=True)
            state = SyncState(0, mailbox.email, calendar.id, start, end, self.clock())
            round_items, since, seen = self._round(events, mailbox, calendar, state, full=True)
        size = min(prefs.max_page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        page, rest = round_items[:size], round_items[size:]
        body: dict[str, Any] = {
            "@odata.context": link.split("/v1.0/")[0] + "/v1.0/$metadata#Collection(event)"
        }
        following = SyncState(0, mailbox.email, calendar.id, start, end, self.clock())
        if rest:
            following.pending, following.after_since, following.after_seen = rest, since, seen
            body["@odata.nextLink"] = f"{link}?$skiptoken={self._issue(following)}"
        else:
            following.since, following.seen = since, seen
            body["@odata.deltaLink"] = f"{link}?$deltatoken={self._issue(following)}"
        body["value"] = [
            render.removed(item.immutable_id if prefs.immutable_ids else item.regular_id)
            if isinstance(item, Removed)
            else render.event(item, prefs, delta=True)
            for item in page
        ]
        return body

    def _round(
        self,
        events: Events,
        mailbox: Mailbox,
        calendar: Calendar,
        state: SyncState,
        *,
        full: bool = False,
    ) -> tuple[list[Entry | Removed], int, frozenset[str]]:
        """A round's items (a snapshot), and the position and keys the next round starts from."""
        view = events.view(mailbox, calendar, state.start, state.end)
        keys = frozenset(e.key for e in view)
        items: list[Entry | Removed] = []
        if not full:
            items += [_removed(calendar, key) for key in sorted(state.seen - keys)]
        changed = [e for e in view if full or e.version > state.since or e.key not in state.seen]
        items += [_snapshot(e) for e in changed]
        return items, mailbox.position, keys


def _snapshot(entry: Entry) -> Entry:
    snapshot = copy.copy(entry)
    snapshot.body = copy.deepcopy(entry.body)
    return snapshot


def _removed(calendar: Calendar, key: str) -> Removed:
    """The ids a client knows a view entry by, from what the calendar still holds of it."""
    item = calendar.items.get(key)
    if item is not None:
        return Removed(key, item.regular_id, item.immutable_id)
    master_key, _, stamp = key.partition("/")
    master = calendar.items.get(master_key)
    if master is not None and stamp:
        return Removed(
            key,
            ids.occurrence_id(master.regular_id, stamp),
            ids.occurrence_id(master.immutable_id, stamp),
        )
    return Removed(key, key, key)


def window(params: dict[str, str], *, delta: bool = False) -> tuple[dt.datetime, dt.datetime]:
    """The ``startDateTime``/``endDateTime`` window of a calendar view (names in any case)."""
    lowered = {k.lower(): v for k, v in params.items()}
    if not lowered.get("startdatetime") or not lowered.get("enddatetime"):
        raise GraphError(
            400,
            "ErrorInvalidParameter",
            "This request requires a time window specified by the query string parameters "
            "StartDateTime and EndDateTime.",
        )
    start = times.parameter(lowered["startdatetime"], "StartDateTime")
    end = times.parameter(lowered["enddatetime"], "EndDateTime")
    if end < start:
        raise GraphError(
            400,
            "ErrorInvalidParameter",
            "The parameter 'EndDateTime' must be later than 'StartDateTime'.",
        )
    if (end - start).days > MAX_WINDOW_DAYS:
        raise GraphError(
            400,
            "ErrorInvalidRequest",
            "Your request can't be completed. The range between the start and end dates is "
            f"greater than the allowed range. Maximum number of days: {MAX_WINDOW_DAYS}",
        )
    if delta:
        refused = [
            k
            for k in params
            if k.lower() in ("$select", "$expand", "$filter", "$orderby", "$search", "$top")
        ]
        if refused:
            raise bad_request(
                f"Query option '{refused[0]}' is not supported with change "
                "tracking over the 'CalendarView' resource."
            )
        unknown = [k for k in params if k.startswith("$")]
        if unknown:
            raise bad_request(f"Query option '{unknown[0]}' is not allowed here.")
    return start, end
