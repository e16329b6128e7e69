"""The Google Calendar emulator's state: accounts, calendars, events and their change log.

No HTTP here (the route modules map requests onto these operations). Every write stamps
the event with the calendar's next log position; a sync token names a position,
so an incremental list answers what changed after it, cancelled tombstones
included. Tokens expire after ``token_max_age`` or on demand (410
``fullSyncRequired``). Pages are keyset pages over a snapshot: an event changed
after the first page is left to the next incremental sync, never lost.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import itertools
import json
import random
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from crmcal.emulators.google import events, recurrence
from crmcal.emulators.google.errors import GoogleError, invalid, not_found, required
from crmcal.emulators.google.push import Channels
from crmcal.emulators.switches import BadDelay, Countdown, Delays

# events.list parameters that Google refuses together with a syncToken.
NOT_WITH_SYNC_TOKEN = (
    "iCalUID", "orderBy", "privateExtendedProperty", "q", "sharedExtendedProperty", "timeMin",
    "timeMax", "updatedMin",
)  # fmt: skip
MAX_RESULTS, DEFAULT_RESULTS = 2500, 250


def _encode(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).decode()


def _decode(token: str) -> dict[str, Any] | None:
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


# Failures the admin API can inject: status -> (reason, message), as Google sends them.
FAULTS = {
    403: ("rateLimitExceeded", "Rate Limit Exceeded"),
    429: ("rateLimitExceeded", "Rate Limit Exceeded"),
    500: ("backendError", "Backend Error"),
    503: ("backendError", "The service is currently unavailable."),
}
_DOMAINS = {"rateLimitExceeded": "usageLimits"}
# How Google refuses a write of one event for good, by status (``refuse_writes``): a
# guest's change of what the organizer owns, a value Google will not take.
REFUSALS = {
    400: ("invalid", "Invalid value for: the event cannot take this change."),
    403: ("forbiddenForNonOrganizer", "Shared properties can only be changed by the "
          "organizer of the event."),
}  # fmt: skip


@dataclass
class AccessToken:
    email: str
    refresh_token: str | None  # the grant it came from, revoked with it
    expires: dt.datetime


@dataclass
class Fault:
    status: int
    count: int


@dataclass
class Stored:
    body: dict[str, Any]
    serial: int  # creation order: the key pages are cut by
    position: int  # the calendar's log position of the last change


@dataclass
class Calendar:
    id: str
    summary: str
    owner: str
    time_zone: str = "UTC"
    events: dict[str, Stored] = field(default_factory=dict)
    position: int = 0
    # Sync tokens with a lower serial answer 410 (``expire_sync_tokens``).
    expired_before: int = 0


@dataclass
class Account:
    email: str
    client_id: str | None
    # calendar id -> accessRole
    calendars: dict[str, str] = field(default_factory=dict)


class GoogleState:
    def __init__(
        self,
        *,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        token_max_age: dt.timedelta | None = dt.timedelta(days=7),
    ) -> None:
        self.clock = clock
        self.token_max_age = token_max_age
        self.accounts: dict[str, Account] = {}
        self.calendars: dict[str, Calendar] = {}
        self.access_tokens: dict[str, AccessToken] = {}
        self.refresh_tokens: dict[str, str] = {}  # refresh token -> account email
        self.access_token_lifetime = dt.timedelta(hours=1)
        self._serials = itertools.count(1)
        self._token_serials = itertools.count(1)
        self._etags = itertools.count(int(self.clock().timestamp() * 1000))
        self.requests: dict[str, int] = {}
        self.channels = Channels()
        # The invitation mails Google would have sent: {"event_id", "to": [...]}.
        self.mails: list[dict[str, Any]] = []
        # Injected failures, oldest first: each answers the next ``count`` API calls.
        self.faults: Countdown[Fault] = Countdown()
        # Events whose every write (update, patch, delete) is refused: id -> status.
        self.refused_writes: dict[str, int] = {}
        # Events served garbled (a test control, ``/_emulator/events/{id}/garble``): id ->
        # fields served in place of the stored ones (None: left out), stored untouched.
        self.garbled: dict[str, dict[str, Any]] = {}
        # Injected slow responses, oldest first; they run alongside ``faults``.
        self.delays = Delays()
        # Behaviours clients must cope with, off by default (``/_emulator/settings``):
        # pages shorter than asked, even empty ones with a nextPageToken, as Google
        # sends; and whether repeated privateExtendedProperty filters must all match
        # (as the reference says) or any one (as the extended-properties guide says).
        self.short_pages = False
        # An occurrence that is no exception has an etag of its own ("own"), or its
        # series' ("series"): PROVIDERS.md does not say which Google does.
        self.instance_etags = "own"
        self.property_match = "all"
        self._pages = random.Random(0)

    # --- accounts ------------------------------------------------------------------

    def create_account(self, email: str, client_id: str | None = None) -> dict[str, str]:
        """An account with its primary calendar (id = the address); answers its tokens."""
        email = email.strip().lower()
        if email not in self.accounts:
            self.accounts[email] = Account(email, client_id)
            self.add_calendar(email, email, email, role="owner")
        refresh = secrets.token_urlsafe(32)
        self.refresh_tokens[refresh] = email
        return {"access_token": self.issue_access_token(email, refresh), "refresh_token": refresh}

    def issue_access_token(self, email: str, refresh_token: str | None) -> str:
        token = "ya29." + secrets.token_urlsafe(24)
        expires = self.clock() + self.access_token_lifetime
        self.access_tokens[token] = AccessToken(email, refresh_token, expires)
        return token

    def revoke(self, token: str) -> bool:
        """Revoke a refresh token (and the access tokens it issued) or an access token."""
        if token in self.refresh_tokens:
            del self.refresh_tokens[token]
            for access in [a for a, t in self.access_tokens.items() if t.refresh_token == token]:
                del self.access_tokens[access]
            return True
        return self.access_tokens.pop(token, None) is not None

    def expire_access_tokens(self) -> None:
        for token in self.access_tokens.values():
            token.expires = self.clock()

    def add_calendar(
        self, email: str, calendar_id: str, summary: str, *, role: str = "owner"
    ) -> Calendar:
        calendar = self.calendars.get(calendar_id)
        if calendar is None:
            calendar = Calendar(calendar_id, summary, email)
            self.calendars[calendar_id] = calendar
        self.accounts[email].calendars[calendar_id] = role
        return calendar

    def account_for(self, access_token: str) -> Account | None:
        found = self.access_tokens.get(access_token)
        if found is None or found.expires <= self.clock():
            return None
        return self.accounts.get(found.email)

    def settings(self) -> dict[str, Any]:
        age = self.token_max_age
        return {"short_pages": self.short_pages, "extended_property_match": self.property_match,
                "sync_token_max_age": age.total_seconds() if age is not None else None,
                "instance_etags": self.instance_etags}  # fmt: skip

    def configure(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Change the settings ``changes`` names (all checked before any is applied)."""
        unknown = set(changes) - set(self.settings())
        if unknown:
            raise invalid(f"unknown setting: {sorted(unknown)[0]}", location=sorted(unknown)[0])
        short = changes.get("short_pages", self.short_pages)
        match = changes.get("extended_property_match", self.property_match)
        age = changes.get("sync_token_max_age", self.settings()["sync_token_max_age"])
        etags = changes.get("instance_etags", self.instance_etags)
        if not isinstance(short, bool):
            raise invalid("short_pages: true or false", location="short_pages")
        if etags not in ("own", "series"):
            raise invalid("instance_etags: own or series", location="instance_etags")
        if match not in ("all", "any"):
            raise invalid("extended_property_match: all or any", location="extended_property_match")
        if age is not None and (isinstance(age, bool) or not isinstance(age, (int, float))
                                or age <= 0):  # fmt: skip
            raise invalid(
                "sync_token_max_age: seconds above 0, or null", location="sync_token_max_age"
            )
        self.short_pages, self.property_match, self.instance_etags = short, match, etags
        self.token_max_age = dt.timedelta(seconds=age) if age is not None else None
        return self.settings()

    def count(self, kind: str) -> None:
        self.requests[kind] = self.requests.get(kind, 0) + 1

    def add_fault(self, status: int, count: int) -> None:
        if status not in FAULTS:
            raise invalid(f"status: one of {sorted(FAULTS)}", location="status")
        if not 1 <= count <= 10_000:
            raise invalid("count: between 1 and 10000", location="count")
        self.faults.push(Fault(status, count))

    def fault(self) -> GoogleError | None:
        """The injected failure this call gets, if any (Google's real error bodies)."""
        fault = self.faults.take_one()
        if fault is None:
            return None
        reason, message = FAULTS[fault.status]
        return GoogleError(fault.status, reason, message, domain=_DOMAINS.get(reason, "global"))

    def refuse_writes(self, event_id: str, status: Any) -> None:
        """Refuse every later write of ``event_id`` with ``status`` (one of REFUSALS), as
        Google refuses one event's change for good; None lifts it."""
        if status is None:
            self.refused_writes.pop(event_id, None)
            return
        if status not in REFUSALS:
            raise invalid(f"status: one of {sorted(REFUSALS)}, or null", location="status")
        self.refused_writes[event_id] = status

    def served(self, event: dict[str, Any]) -> dict[str, Any]:
        """``event`` as answered: garbled when a test asked for it (``garbled``)."""
        fields = self.garbled.get(str(event.get("id")))
        if fields is None:
            return event
        out = {**event, **fields}
        return {key: value for key, value in out.items() if value is not None}

    def check_writable(self, event_id: str) -> None:
        """Raise the refusal of a write of ``event_id`` switched on by ``refuse_writes``."""
        status = self.refused_writes.get(event_id)
        if status is not None:
            reason, message = REFUSALS[status]
            raise GoogleError(status, reason, message)

    def add_delay(self, seconds: Any, count: Any) -> None:
        try:
            self.delays.add(seconds, count)
        except BadDelay as bad:
            raise invalid(str(bad), location=bad.field) from None

    def delay(self) -> float:
        """The seconds this call waits before it is served (0 when no delay is pending)."""
        return self.delays.take()

    # --- calendars -----------------------------------------------------------------

    def calendar(self, account: Account, calendar_id: str, *, write: bool = False) -> Calendar:
        if calendar_id == "primary":
            calendar_id = account.email
        role = account.calendars.get(calendar_id)
        if role is None or calendar_id not in self.calendars:
            raise not_found()
        if write and role not in ("owner", "writer"):
            raise GoogleError(403, "requiredAccessLevel",
                              "You need to have writer access to this calendar.")  # fmt: skip
        return self.calendars[calendar_id]

    def calendar_entry(self, account: Account, calendar: Calendar) -> dict[str, Any]:
        role = account.calendars[calendar.id]
        entry: dict[str, Any] = {
            "kind": "calendar#calendarListEntry",
            "etag": f'"{calendar.position}"',
            "id": calendar.id,
            "summary": calendar.summary,
            "timeZone": calendar.time_zone,
            "accessRole": role,
            "defaultReminders": [{"method": "popup", "minutes": 30}] if role == "owner" else [],
        }
        if calendar.id == account.email:
            entry["primary"] = True
        return entry

    def calendar_list(
        self, account: Account, *, max_results: int | None, page_token: str | None
    ) -> dict[str, Any]:
        ids = sorted(account.calendars, key=lambda c: (c != account.email, c))
        start = 0
        if page_token:
            data = _decode(page_token)
            if data is None or not isinstance(data.get("o"), int):
                raise invalid("Invalid page token.", location="pageToken")
            start = data["o"]
        size = min(max_results or 100, 250)
        page = ids[start : start + size]
        body: dict[str, Any] = {
            "kind": "calendar#calendarList",
            "etag": f'"{sum(self.calendars[c].position for c in ids)}"',
            "items": [self.calendar_entry(account, self.calendars[c]) for c in page],
        }
        if start + size < len(ids):
            body["nextPageToken"] = _encode({"o": start + size})
        else:
            body["nextSyncToken"] = _encode({"calendars": len(ids)})
        return body

    # --- writes --------------------------------------------------------------------

    def _etag(self) -> str:
        return f'"{next(self._etags)}"'

    def mail_guests(self, body: dict[str, Any], send_updates: str | None) -> None:
        """Record the invitations a write with ``sendUpdates`` would send (none by default,
        as for API writes; ``externalOnly`` mails everyone here: all guests are external)."""
        if send_updates not in ("all", "externalOnly"):
            return
        guests = [a["email"] for a in body.get("attendees") or [] if not a.get("self")]
        if guests:
            self.mails.append({"event_id": body["id"], "to": guests})

    def _stamp(self, calendar: Calendar, event_id: str, body: dict[str, Any]) -> dict[str, Any]:
        calendar.position += 1
        current = calendar.events.get(event_id)
        serial = current.serial if current else next(self._serials)
        calendar.events[event_id] = Stored(body, serial, calendar.position)
        self.channels.changed(calendar.id, self.clock())
        return body

    def _stored(
        self, written: dict[str, Any], calendar: Calendar, previous: dict[str, Any] | None
    ) -> dict[str, Any]:
        return events.stored(
            written,
            previous=previous,
            owner=calendar.owner,
            calendar_id=calendar.id,
            etag=self._etag(),
            now=self.clock(),
        )

    @staticmethod
    def new_id() -> str:
        return secrets.token_hex(13).translate(str.maketrans("wxyz", "0123"))

    def insert(self, calendar: Calendar, written: dict[str, Any]) -> dict[str, Any]:
        event_id = written.get("id")
        if event_id is None:
            event_id = self.new_id()
        elif not isinstance(event_id, str) or not events.valid_id(event_id):
            raise invalid("Invalid resource id value.")
        if event_id in calendar.events:
            # Deleted events keep their ids too: Google never reuses one.
            raise GoogleError(409, "duplicate", "The requested identifier already exists.")
        if written.get("eventType") == "fromGmail":
            # [GD] eventType: "An event from Gmail. This type of event cannot be created."
            raise GoogleError(400, "eventTypeRestriction",
                              "Events of type fromGmail cannot be created.")  # fmt: skip
        body = self._stored({**written, "id": event_id}, calendar, None)
        return self._stamp(calendar, event_id, body)

    def from_gmail(self, calendar: Calendar, written: dict[str, Any]) -> dict[str, Any]:
        """An event Gmail made from a mail (a flight, a hotel stay): ``eventType``
        ``fromGmail``, organized by the mail's recipient, the calendar's user."""
        body = self._stored({**written, "id": self.new_id()}, calendar, None)
        body["eventType"] = "fromGmail"
        return self._stamp(calendar, body["id"], body)

    def import_event(self, calendar: Calendar, written: dict[str, Any]) -> dict[str, Any]:
        """``events.import``: a private copy of an event known by its ``iCalUID`` (added,
        or the copy already there updated); the organizer is the one given."""
        uid = written.get("iCalUID")
        if not isinstance(uid, str) or not uid:
            raise required("iCalUID")
        if written.get("eventType", "default") != "default":
            raise GoogleError(400, "eventTypeRestriction", "This event type cannot be imported.")
        existing = next(
            (s.body for s in calendar.events.values()
             if s.body.get("iCalUID") == uid and not s.body.get("recurringEventId")),
            None,
        )  # fmt: skip
        event_id = existing["id"] if existing else self.new_id()
        body = self._stored({**written, "id": event_id}, calendar, existing)
        organizer = written.get("organizer")
        if isinstance(organizer, dict) and organizer.get("email"):
            own = str(organizer["email"]).lower() == calendar.id.lower()
            body["organizer"] = {**organizer, **({"self": True} if own else {})}
        return self._stamp(calendar, event_id, body)

    def get(self, calendar: Calendar, event_id: str) -> dict[str, Any]:
        """An event, or an occurrence of a series by its instance id."""
        found = calendar.events.get(event_id)
        if found is not None:
            return found.body
        parts = recurrence.split_id(event_id)
        master = calendar.events.get(parts[0]) if parts else None
        if master is not None and recurrence.is_series(master.body):
            occurrence = recurrence.find_instance(master.body, event_id)
            if occurrence is not None:
                return self._instance_etag(occurrence, master.body)
        raise not_found()

    def _live(self, calendar: Calendar, event_id: str, if_match: str | None) -> dict[str, Any]:
        current = self.get(calendar, event_id)
        if if_match is not None and if_match not in ("*", current["etag"]):
            raise GoogleError(412, "conditionNotMet", "Precondition Failed",
                              location="If-Match", location_type="header")  # fmt: skip
        return current

    def instances(
        self, calendar: Calendar, event_id: str, params: dict[str, Any]
    ) -> dict[str, Any]:
        """``events.instances``: the occurrences of a series, its exceptions in place."""
        master = self.get(calendar, event_id)
        if not recurrence.is_series(master):
            raise not_found()
        offset = 0
        if params.get("pageToken"):
            page = _decode(str(params["pageToken"]))
            if page is None or not isinstance(page.get("o"), int):
                raise invalid("Invalid page token.", location="pageToken")
            offset = page["o"]
        after = _instant(params["timeMin"], "timeMin") if params.get("timeMin") else None
        found = [
            occurrence for occurrence in self._occurrences(calendar, master, after)
            if (occurrence["status"] != "cancelled" or params.get("showDeleted"))
            and _in_window(occurrence, params)
        ]  # fmt: skip
        size = min(int(params.get("maxResults") or DEFAULT_RESULTS), MAX_RESULTS)
        body: dict[str, Any] = {
            "kind": "calendar#events",
            "etag": master["etag"],
            "summary": calendar.summary,
            "updated": master["updated"],
            "timeZone": calendar.time_zone,
            "accessRole": "owner",
            "defaultReminders": [{"method": "popup", "minutes": 30}],
            "items": [events.as_seen(item) for item in found[offset : offset + size]],
        }
        if offset + size < len(found):
            body["nextPageToken"] = _encode({"o": offset + size})
        return body

    def _occurrences(
        self, calendar: Calendar, master: dict[str, Any], after: dt.datetime | None = None
    ) -> list[dict[str, Any]]:
        """Every occurrence of a series (from ``after``): the generated instance or its
        exception."""
        found = []
        for original in recurrence.occurrences(master, after):
            instance_id = recurrence.instance_id(master["id"], original)
            exception = calendar.events.get(instance_id)
            found.append(
                exception.body
                if exception
                else self._instance_etag(recurrence.instance(master, original), master)
            )
        return found

    def _instance_etag(self, occurrence: dict[str, Any], master: dict[str, Any]) -> dict[str, Any]:
        """A generated occurrence with the etag the ``instance_etags`` setting gives it."""
        if self.instance_etags == "series":
            occurrence["etag"] = master["etag"]
        return occurrence

    def update(
        self, calendar: Calendar, event_id: str, written: dict[str, Any], if_match: str | None
    ) -> dict[str, Any]:
        current = self._live(calendar, event_id, if_match)
        written = {**written, "id": event_id}
        events.check_event_type(current, written)
        if current["status"] == "cancelled" and "status" not in written:
            written["status"] = "confirmed"  # an update brings a deleted event back
        body = self._stored(written, calendar, current)
        # An occurrence stays one: changed, it becomes an exception of its series.
        for key in ("recurringEventId", "originalStartTime"):
            if key in current:
                body[key] = current[key]
        return self._stamp(calendar, event_id, body)

    def patch(
        self, calendar: Calendar, event_id: str, patch: dict[str, Any], if_match: str | None
    ) -> dict[str, Any]:
        current = self._live(calendar, event_id, if_match)
        patch = events.patch_of_answers(current, patch)
        return self.update(calendar, event_id, events.merge_patch(current, patch), None)

    def delete(self, calendar: Calendar, event_id: str, if_match: str | None) -> None:
        if self.get(calendar, event_id)["status"] == "cancelled":
            raise GoogleError(410, "deleted", "Resource has been deleted")
        current = self._live(calendar, event_id, if_match)
        if current.get("recurringEventId"):
            # A cancelled occurrence keeps no more than Google keeps of it.
            stub = {"kind": "calendar#event", "etag": self._etag(), "id": event_id,
                    "status": "cancelled", "recurringEventId": current["recurringEventId"],
                    "originalStartTime": current["originalStartTime"]}  # fmt: skip
            self._stamp(calendar, event_id, stub)
            return
        self._stamp(calendar, event_id, events.cancelled(current, self._etag(), self.clock()))
        if recurrence.is_series(current):
            for stored in list(calendar.events.values()):
                exception = stored.body
                if exception.get("recurringEventId") == event_id and (
                    exception["status"] != "cancelled"
                ):
                    gone = events.cancelled(exception, self._etag(), self.clock())
                    self._stamp(calendar, exception["id"], gone)

    def move(self, source: Calendar, event_id: str, destination: Calendar) -> dict[str, Any]:
        """``events.move``: the event changes calendar (and organizer); the source keeps a
        cancelled stub with only its id, as Google leaves when the old organizer is no
        attendee."""
        current = self.get(source, event_id)
        if current["status"] == "cancelled":
            raise not_found()
        if current.get("eventType", "default") != "default":
            raise GoogleError(400, "eventTypeRestriction", "This event type cannot be moved.")
        there = destination.events.get(event_id)
        if there is not None and there.body["status"] != "cancelled":
            raise GoogleError(409, "duplicate", "The requested identifier already exists.")
        organizer = {"email": destination.id, "self": True}
        moved = current | {"etag": self._etag(), "updated": events.rfc3339(self.clock()),
                           "organizer": organizer}  # fmt: skip
        stub = {"kind": "calendar#event", "etag": self._etag(), "id": event_id,
                "status": "cancelled"}  # fmt: skip
        self._stamp(source, event_id, stub)
        return self._stamp(destination, event_id, moved)

    # --- listing -------------------------------------------------------------------

    def expire_sync_tokens(self, calendar: Calendar) -> None:
        """Every sync token issued so far for ``calendar`` answers 410 from now on."""
        calendar.expired_before = next(self._token_serials)

    def sync_token(self, calendar: Calendar, position: int) -> str:
        issued = self.clock().timestamp()
        serial = next(self._token_serials)
        return _encode({"c": calendar.id, "p": position, "t": issued, "n": serial})

    def _since(self, calendar: Calendar, token: str) -> int:
        data = _decode(token)
        if (
            data is None
            or data.get("c") != calendar.id
            or not isinstance(data.get("p"), int)
            or not isinstance(data.get("n"), int)
        ):
            raise invalid("Invalid sync token value.", location="syncToken")
        too_old = self.token_max_age is not None and (
            self.clock().timestamp() - float(data.get("t", 0)) > self.token_max_age.total_seconds()
        )
        if data["n"] < calendar.expired_before or too_old:
            raise GoogleError(
                410, "fullSyncRequired", "Sync token is no longer valid, a full sync is required."
            )
        return int(data["p"])

    def list_events(self, calendar: Calendar, params: dict[str, Any]) -> dict[str, Any]:
        """``events.list``: full (filtered) or incremental (``syncToken``), in pages."""
        sync_token = params.get("syncToken")
        if sync_token:
            clashing = [p for p in NOT_WITH_SYNC_TOKEN if params.get(p) not in (None, [], "")]
            if clashing or params.get("showDeleted") is False:
                raise invalid(
                    f"Sync token cannot be used with {clashing[0] if clashing else 'showDeleted'}."
                )
        page_token = params.get("pageToken")
        signature = self._signature(params)
        if page_token:
            page = _decode(page_token)
            if page is None or page.get("q") != signature or not {"a", "s"} <= set(page):
                raise invalid("Invalid page token.", location="pageToken")
            after, snapshot, since = page["a"], int(page["s"]), page.get("since")
            serial = page["n"] + 1 if isinstance(page.get("n"), int) else 1
        else:
            after, snapshot, serial = None, calendar.position, 1
            since = self._since(calendar, sync_token) if sync_token else None
        if params.get("orderBy") == "startTime" and not params.get("singleEvents"):
            raise invalid("The requested ordering is not available for the particular query.",
                          location="orderBy")  # fmt: skip
        max_results = int(params.get("maxResults") or DEFAULT_RESULTS)
        if max_results < 1:
            raise invalid("Invalid value for: maxResults", location="maxResults")
        max_results = min(max_results, MAX_RESULTS)
        matching = self._entries(calendar, params, snapshot, since)
        if after is not None:
            matching = [entry for entry in matching if entry[0] > after]
        size = self._pages.randint(0, max_results) if self.short_pages else max_results
        page_items = matching[:size]
        body: dict[str, Any] = {
            "kind": "calendar#events",
            "etag": f'"{snapshot}"',
            "summary": calendar.summary,
            "description": "",
            "updated": events.rfc3339(self.clock()),
            "timeZone": calendar.time_zone,
            "accessRole": "owner",
            "defaultReminders": [{"method": "popup", "minutes": 30}],
            "items": [self.served(events.as_seen(item)) for _, item in page_items],
        }
        if len(matching) > size:
            last = page_items[-1][0] if page_items else after
            # The page's serial keeps the token of an empty page apart from the one
            # that asked for it: a token that comes back means a loop to clients.
            body["nextPageToken"] = _encode(
                {"a": last, "s": snapshot, "since": since, "q": signature, "n": serial}
            )
        else:
            body["nextSyncToken"] = self.sync_token(calendar, snapshot)
        return body

    @staticmethod
    def _signature(params: dict[str, Any]) -> str:
        """What a page token is bound to: the query, less the paging itself."""
        query = {k: v for k, v in params.items() if k not in ("pageToken", "maxResults")}
        return hashlib.sha256(json.dumps(query, sort_keys=True, default=str).encode()).hexdigest()[
            :16
        ]

    def _entries(
        self, calendar: Calendar, params: dict[str, Any], snapshot: int, since: int | None
    ) -> list[tuple[list[Any], dict[str, Any]]]:
        """What a listing answers, each item with the key pages are cut by (keyset
        paging: an item changed after the first page never shifts another one out)."""
        found: list[tuple[list[Any], dict[str, Any]]] = []
        for stored in calendar.events.values():
            if stored.position <= snapshot:
                found.extend(self._listed(calendar, stored, params, since))
        return _ordered(found, params.get("orderBy"))

    def _listed(
        self, calendar: Calendar, stored: Stored, params: dict[str, Any], since: int | None
    ) -> list[tuple[list[Any], dict[str, Any]]]:
        """The entries one stored event gives a listing: none, itself, or its occurrences."""
        body = stored.body
        single = bool(params.get("singleEvents"))
        changed = since is None or stored.position > since
        if single and body.get("recurringEventId"):
            # Listed with its series, or alone when only the exception changed.
            master = calendar.events.get(body["recurringEventId"])
            alone = since is not None and (master is None or master.position <= since)
            return [([stored.serial, 0], body)] if alone and changed else []
        if single and recurrence.is_series(body):
            if not changed:
                return []
            return [
                ([stored.serial, n], item)
                for n, item in enumerate(self._occurrences(calendar, body), 1)
                if since is not None or self._visible(calendar, item, params)
            ]
        if since is not None:
            # Tombstones included: that is the point.
            return [([stored.serial, 0], body)] if changed else []
        return [([stored.serial, 0], body)] if self._visible(calendar, body, params) else []

    def _visible(self, calendar: Calendar, event: dict[str, Any], params: dict[str, Any]) -> bool:
        """Whether a full listing with these filters shows the event."""
        # Cancelled occurrences of a live series stay listed unless expanded.
        hidden_occurrence = not event.get("recurringEventId") or params.get("singleEvents")
        if event["status"] == "cancelled" and not params.get("showDeleted") and hidden_occurrence:
            return False
        if params.get("iCalUID") and _uid(calendar, event) != params["iCalUID"]:
            return False
        wanted = [str(w).partition("=")[::2] for w in params.get("privateExtendedProperty") or []]
        if wanted:
            private = (event.get("extendedProperties") or {}).get("private") or {}
            found = [private.get(key) == value for key, value in wanted]
            if not (all(found) if self.property_match == "all" else any(found)):
                return False
        if not (params.get("timeMin") or params.get("timeMax")):
            return True
        if recurrence.is_series(event) and not params.get("singleEvents"):
            occurrences = self._occurrences(calendar, event)
            return any(_in_window(item, params) for item in occurrences)
        return _in_window(event, params)


def _uid(calendar: Calendar, event: dict[str, Any]) -> str | None:
    """An event's iCalUID; a cancelled occurrence, which shows none, has its series'."""
    if "iCalUID" not in event and event.get("recurringEventId") in calendar.events:
        return calendar.events[event["recurringEventId"]].body.get("iCalUID")
    return event.get("iCalUID")


def _ordered(
    found: list[tuple[list[Any], dict[str, Any]]], order: str | None
) -> list[tuple[list[Any], dict[str, Any]]]:
    """Listing entries sorted by ``orderBy`` (its key first), then by storage order."""
    if order == "startTime":
        found = [([_start_key(item), *key], item) for key, item in found]
    elif order == "updated":
        found = [([item.get("updated", ""), *key], item) for key, item in found]
    found.sort(key=lambda entry: entry[0])
    return found


def _start_key(event: dict[str, Any]) -> str:
    found = _span(event)
    return found[0].astimezone(dt.UTC).isoformat() if found else ""


def _span(event: dict[str, Any]) -> tuple[dt.datetime, dt.datetime] | None:
    found = events.span(event)
    if found is None and event.get("originalStartTime"):  # a cancelled occurrence
        start = events.span({"start": event["originalStartTime"],
                             "end": event["originalStartTime"]})  # fmt: skip
        return start
    return found


def _in_window(event: dict[str, Any], params: dict[str, Any]) -> bool:
    time_min, time_max = params.get("timeMin"), params.get("timeMax")
    if not (time_min or time_max):
        return True
    found = _span(event)
    if found is None:
        return False
    start, end = found
    if time_min and end <= _instant(time_min, "timeMin"):
        return False
    return not (time_max and start >= _instant(time_max, "timeMax"))


def _instant(text: str, name: str) -> dt.datetime:
    try:
        parsed = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        raise invalid(f"Invalid value for: {name}", location=name) from None
    if parsed.tzinfo is None:
        raise invalid(f"Invalid value for: {name}", location=name)
    return parsed
