"""What CalDAV discovery learns of an account, and the steps that learn it.

Discovery (RFC 6764/5397/4791 6.2.1) finds an account's principal, its calendar home
(or the lone calendar the URL names), the principal's ``calendar-user-address-set``
(RFC 6638 2.4.1) and each calendar's zone. A provider lives for one sync run; what it
learnt is kept in a process-wide cache (``_LEARNT``: ``LEARNT_SECONDS`` at most,
``LEARNT_ACCOUNTS`` accounts, the least recently learnt dropped first) so that the
account's later runs cost only what their listings need.

``Discovery`` holds the steps; ``caldav.CalDAVProvider`` inherits them and gives them
its requests (``_propfind``, ``_exchange``, ``_expect``) and its per-run state.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urljoin, urlsplit

from crmcal.model import CalendarInfo
from crmcal.providers import guarded_http
from crmcal.providers.base import (
    AuthenticationFailed,
    NotACalendarServer,
    ProviderError,
    Unreachable,
)
from crmcal.providers.caldav_wire import ADDRESS_SET as _ADDRESS_SET
from crmcal.providers.caldav_wire import CALDAV, DAV, WRITE_PRIVILEGES, normalize_href
from crmcal.providers.caldav_wire import MalformedReply as _MalformedReply
from crmcal.providers.caldav_wire import Reply as _Reply
from crmcal.providers.caldav_wire import collection_url as _collection_url
from crmcal.providers.caldav_wire import href_in as _href_in
from crmcal.providers.caldav_wire import members as _members
from crmcal.providers.caldav_wire import origin as _origin
from crmcal.providers.caldav_wire import origin_key as _origin_key
from crmcal.providers.caldav_wire import text_of as _text_of
from crmcal.providers.ical.zone_names import iana_zone

__all__ = [
    "LEARNT_ACCOUNTS",
    "LEARNT_SECONDS",
    "Discovery",
    "account_addresses",
    "account_key",
    "forget_discovered",
    "vtimezone_zone",
]

# Redirects followed in discovery, from one URL (RFC 9110 15.4 suggests five).
MAX_REDIRECTS = 5
_DEFAULT_NAMES = ("default", "calendar", "home", "personal", "primary", "main")


def account_addresses(element: Any) -> frozenset[str]:
    """The e-mail addresses of a ``calendar-user-address-set`` (RFC 6638 2.4.1): its
    ``mailto:`` hrefs, lower-case (other forms, a principal's path or a ``urn:uuid:``,
    name no address an ORGANIZER could hold)."""
    found: set[str] = set()
    for href in element.findall(f"{DAV}href") if element is not None else ():
        text = (href.text or "").strip()
        if text[:7].lower() == "mailto:":
            address = unquote(text[7:]).strip().lower()
            if "@" in address and len(address) <= 320:
                found.add(address)
    return frozenset(found)


def _same_path(url: str, href: str) -> bool:
    """Whether ``href`` (as an answer to ``url`` gives it) names ``url`` itself."""
    here = normalize_href(urlsplit(url).path or "/").rstrip("/")
    return normalize_href(urlsplit(urljoin(url, href)).path).rstrip("/") == here


def vtimezone_zone(text: str | None) -> str | None:
    """The IANA zone of a ``calendar-timezone`` property (a VCALENDAR with a VTIMEZONE)."""
    if not text:
        return None
    for line in text.replace("\r\n", "\n").split("\n"):
        if line.upper().startswith("TZID"):
            return iana_zone(line.split(":", 1)[-1])
    return None


@dataclass(frozen=True)
class _Learnt:
    """What discovery found out about one account (see ``_LEARNT``)."""

    since: float  # time.monotonic() of the discovery
    home: str | None
    single_calendar: str | None
    principal: str | None
    addresses: frozenset[str] | None  # None: not read
    zones: tuple[tuple[str, str | None], ...]  # (calendar URL, zone) read from the server
    # Whether the server takes a write whatever version If-Match names (None: not
    # found out yet; see ``CalDAVProvider._ignores_if_match``).
    if_match_ignored: bool | None = None


# A provider lives for one sync run; what discovery learnt (principal, home, the
# account's addresses, calendars' zones) is kept here for the account's later runs,
# so that a run costs only what its listing needs. Keyed by the URL, the user name
# and a keyed digest of the password (other credentials learn nothing from it);
# discovered again after LEARNT_SECONDS, and at once when a request that relied on it
# fails (the calendar or home gone, credentials refused). Only answers are kept,
# never a failure.
LEARNT_SECONDS = 3600.0
LEARNT_ACCOUNTS = 20_000
_LEARNT: OrderedDict[tuple[str, str, str], _Learnt] = OrderedDict()
_LEARNT_LOCK = threading.Lock()
_LEARNT_KEY = os.urandom(32)


def forget_discovered() -> None:
    """Forget what discovery learnt of every account (as a new process starts)."""
    with _LEARNT_LOCK:
        _LEARNT.clear()


def account_key(url: str, username: str, password: str) -> tuple[str, str, str]:
    """The key of an account in ``_LEARNT``: a keyed digest stands for the password."""
    digest = hmac.new(_LEARNT_KEY, password.encode(), hashlib.sha256).hexdigest()
    return (url, username, digest)


class Discovery:
    """The discovery steps of ``caldav.CalDAVProvider``, which provides what is declared
    here: the account's URL and origin, its requests, and what this run has learnt."""

    url: str
    _problem: str | None
    _origin: str
    _origin_key: str
    _account: tuple[str, str, str]
    _home: str | None
    _single_calendar: str | None
    _addresses: frozenset[str] | None
    _principal: str | None
    _zones: dict[str, str | None]
    _zones_read: set[str]
    _addresses_read: bool
    _learnt_since: float | None
    _if_match_ignored: bool | None
    _addresses_lock: threading.Lock  # one discovery for the addresses, however many ask

    if TYPE_CHECKING:

        def _exchange(
            self, method: str, url: str, body: str = "", headers: Mapping[str, str] | None = None
        ) -> guarded_http.Answer: ...

        def _expect(self, reply: _Reply, what: str, *ok: int) -> _Reply: ...

        def _propfind(self, url: str, props: Sequence[str], depth: int) -> _Reply: ...

    # --- discovery ----------------------------------------------------------------

    def _discover(self) -> str | None:
        """The calendar home's URL (None when the URL is a lone calendar)."""
        if self._home is not None or self._single_calendar is not None:
            return self._home
        found = self._probe(self.url)
        if found is None:
            well_known = self._well_known()
            found = self._probe(well_known) if well_known else None
        if found is None:
            raise NotACalendarServer(
                f"{self.url} does not answer as a CalDAV server (no WebDAV principal found)"
            )
        principal, home, calendar = found
        self._principal = principal
        if principal and not home:
            reply = self._propfind(
                principal, ["<C:calendar-home-set/>", "<C:calendar-user-address-set/>"], 0
            )
            if reply.status == 207:
                for member in _members(reply.tree):
                    found_home = _href_in(member.props.get(f"{CALDAV}calendar-home-set"))
                    home = urljoin(principal, found_home) if found_home else None
                    self._addresses = account_addresses(member.props.get(_ADDRESS_SET))
                    break
            elif reply.status >= 500 and reply.status != 501:
                self._expect(reply, "reading the principal")
        if self._addresses is not None:
            self._addresses_read = True
        if home:
            self._home = _collection_url(home)
            self._learn()
            return self._home
        if calendar:
            self._single_calendar = _collection_url(calendar)
            self._learn()
            return None
        raise NotACalendarServer(
            f"{self.url} answers WebDAV but names no calendar home (not a CalDAV account?)"
        )

    def _probe(self, url: str) -> tuple[str | None, str | None, str | None] | None:
        """(principal URL, home URL, this URL if a calendar), or None when no DAV answers.
        A redirect on the origin is followed (a calendar's URL without its trailing
        slash is answered 301 by many servers); see ``_redirected``."""
        seen: list[str] = []
        while True:
            try:
                reply = self._propfind(
                    url,
                    ["<D:current-user-principal/>", "<C:calendar-home-set/>",
                     "<D:resourcetype/>", "<C:calendar-user-address-set/>"],
                    0,
                )  # fmt: skip
            except _MalformedReply:
                return None
            target = self._redirected(url, reply.status, reply.headers.get("location"), seen)
            if target is None:
                break
            url = target
        if reply.status != 207 or reply.tree is None:
            if reply.status >= 500 and reply.status != 501:
                self._expect(reply, "discovery")  # server trouble, not "no DAV here"
            return None  # 404, 405, 501, a web page ...
        for member in _members(reply.tree):
            principal = _href_in(member.props.get(f"{DAV}current-user-principal"))
            home = _href_in(member.props.get(f"{CALDAV}calendar-home-set"))
            kind = member.props.get(f"{DAV}resourcetype")
            is_calendar = kind is not None and kind.find(f"{CALDAV}calendar") is not None
            if _ADDRESS_SET in member.props and principal and _same_path(url, principal):
                # The URL is the user's principal itself (another principal's
                # addresses are not the user's).
                self._addresses = account_addresses(member.props[_ADDRESS_SET])
                self._addresses_read = True
            if principal or home or is_calendar:
                return (
                    urljoin(url, principal) if principal else None,
                    urljoin(url, home) if home else None,
                    url if is_calendar else None,
                )
            return None
        return None

    def _well_known(self) -> str | None:
        """Where ``/.well-known/caldav`` redirects to (RFC 6764 section 5), on this origin."""
        url = self._origin + "/.well-known/caldav"
        seen: list[str] = []
        while True:
            answer = self._exchange("PROPFIND", url, "", {"Depth": "0"})
            if answer.status == 401:
                raise AuthenticationFailed("the CalDAV server refused the user name or password")
            target = self._redirected(url, answer.status, answer.headers.get("location"), seen)
            if target is None:
                return url if answer.status == 207 else None
            url = target

    def _redirected(
        self, url: str, status: int, location: str | None, seen: list[str]
    ) -> str | None:
        """Where an answer to ``url`` redirects to, on this origin; None when it does not
        redirect. ``seen`` holds the URLs redirected from so far. Redirects are followed
        by hand: HTTP libraries turn a redirected PROPFIND into a GET on 302, which no
        DAV server answers usefully; and only within the origin, where the credentials
        may go (and whose address was checked): a redirect elsewhere, in a loop or
        longer than ``MAX_REDIRECTS`` is refused, saying so."""
        if not (300 <= status < 400 and location and location.strip()):
            return None
        target = urljoin(url, location.strip())
        if _origin_key(target) != self._origin_key:
            raise NotACalendarServer(
                f"{self._origin} sends CalDAV clients to {_origin(target)}: "
                "give that address as the server URL"
            )
        seen.append(url)
        if target in seen or len(seen) > MAX_REDIRECTS:
            raise NotACalendarServer(
                f"{seen[0]} redirects in a loop (or more than {MAX_REDIRECTS} times): "
                "the server's setup is broken, or the URL is not a CalDAV account's"
            )
        return target

    # --- calendars ----------------------------------------------------------------

    def _rediscover(self) -> str | None:
        """``_discover`` asking the server, whatever earlier runs learnt."""
        self._unlearn()
        return self._discover()

    def _list_calendars(self) -> list[CalendarInfo]:
        learnt = self._learnt_since is not None
        try:
            return self._calendars_of(self._discover())
        except ProviderError as failure:
            if not learnt or isinstance(failure, (Unreachable, AuthenticationFailed)):
                raise
        # The home an earlier run found is no more: find it again.
        return self._calendars_of(self._rediscover())

    def _calendars_of(self, home: str | None) -> list[CalendarInfo]:
        props = [
            "<D:resourcetype/>",
            "<D:displayname/>",
            "<D:current-user-privilege-set/>",
            "<C:supported-calendar-component-set/>",
            "<C:calendar-timezone/>",
        ]
        url = home or self._single_calendar
        assert url is not None
        reply = self._expect(self._propfind(url, props, 1 if home else 0), "listing calendars", 207)
        calendars: list[CalendarInfo] = []
        for member in _members(reply.tree):
            if member.status != 200:
                continue
            kind = member.props.get(f"{DAV}resourcetype")
            if kind is None or kind.find(f"{CALDAV}calendar") is None:
                continue
            components = member.props.get(f"{CALDAV}supported-calendar-component-set")
            events = True
            if components is not None and len(components):
                names = {str(c.get("name", "")).upper() for c in components}
                events = "VEVENT" in names  # else a task list (RFC 4791 5.2.3)
            calendar_url = _collection_url(_origin(url) + member.href)
            zone = vtimezone_zone(_text_of(member.props.get(f"{CALDAV}calendar-timezone")))
            self._zones[calendar_url] = zone
            self._zones_read.add(calendar_url)
            privileges = member.props.get(f"{DAV}current-user-privilege-set")
            if privileges is None:
                writable = True  # the server does not say: assume so, writes will tell
            else:
                granted = {p.tag for privilege in privileges for p in privilege}
                writable = bool(granted & WRITE_PRIVILEGES)
            segment = unquote(member.href.rstrip("/").rsplit("/", 1)[-1])
            name = _text_of(member.props.get(f"{DAV}displayname")) or segment
            calendars.append(CalendarInfo(id=calendar_url, name=name, writable=writable,
                                          timezone=zone, events=events))  # fmt: skip
        usable = [i for i, c in enumerate(calendars) if c.events]
        if usable:
            primary = next(
                (
                    i
                    for i in usable
                    if calendars[i].name.lower() in _DEFAULT_NAMES
                    or calendars[i].id.rstrip("/").rsplit("/", 1)[-1].lower() in _DEFAULT_NAMES
                ),
                usable[0],
            )
            calendars[primary] = dataclasses.replace(calendars[primary], primary=True)
        self._learn()
        return calendars

    def _account_addresses(self) -> frozenset[str]:
        """The principal's calendar user addresses (empty when the server names none),
        read with discovery, which a sync run makes only when it needs them."""
        if self._addresses is not None:
            return self._addresses
        # A first import's parts are read in several threads at once, and each asks as
        # its first events name an organizer: the first to ask discovers, the others
        # wait for what it found (each discovering too made three of every request).
        with self._addresses_lock:
            if self._addresses is None:
                with contextlib.suppress(ProviderError):
                    self._discover()
                    if self._addresses is None and self._principal:
                        # Discovery found the home without reading the principal.
                        reply = self._propfind(
                            self._principal, ["<C:calendar-user-address-set/>"], 0
                        )
                        for member in _members(reply.tree if reply.status == 207 else None):
                            self._addresses = account_addresses(member.props.get(_ADDRESS_SET))
                            self._addresses_read = True
                            self._learn()
                if self._addresses is None:
                    self._addresses = frozenset()  # none to be had: the engine compares
            return self._addresses

    def _calendar_zone(self, calendar: str) -> str | None:
        """The zone this calendar names for its floating times; None when it names none
        (they are then wall-clock times the CRM reads in its user's zone)."""
        if calendar not in self._zones:
            zone = None
            with contextlib.suppress(ProviderError):
                reply = self._propfind(calendar, ["<C:calendar-timezone/>"], 0)
                for member in _members(reply.tree if reply.status == 207 else None):
                    prop = member.props.get(f"{CALDAV}calendar-timezone")
                    zone = vtimezone_zone(_text_of(prop))
                    self._zones_read.add(calendar)
            self._zones[calendar] = zone
            self._learn()
        return self._zones[calendar]

    def _recall_learnt(self) -> None:
        """Take up what discovery learnt of this account in an earlier run, if recent."""
        if self._problem is not None:
            return
        with _LEARNT_LOCK:
            learnt = _LEARNT.get(self._account)
            if learnt is not None and time.monotonic() - learnt.since > LEARNT_SECONDS:
                del _LEARNT[self._account]
                learnt = None
        if learnt is None:
            return
        self._learnt_since = learnt.since
        self._home, self._single_calendar = learnt.home, learnt.single_calendar
        self._principal = learnt.principal
        if learnt.addresses is not None:
            self._addresses, self._addresses_read = learnt.addresses, True
        self._zones.update(learnt.zones)
        self._zones_read.update(calendar for calendar, _ in learnt.zones)
        self._if_match_ignored = learnt.if_match_ignored

    def _learn(self) -> None:
        """Keep what discovery has learnt of this account so far, for its later runs."""
        if self._problem is not None:
            return
        if self._learnt_since is None:
            self._learnt_since = time.monotonic()
        learnt = _Learnt(
            since=self._learnt_since,
            home=self._home,
            single_calendar=self._single_calendar,
            principal=self._principal,
            addresses=self._addresses if self._addresses_read else None,
            zones=tuple((c, self._zones.get(c)) for c in sorted(self._zones_read)),
            if_match_ignored=self._if_match_ignored,
        )
        with _LEARNT_LOCK:
            _LEARNT[self._account] = learnt
            _LEARNT.move_to_end(self._account)
            while len(_LEARNT) > LEARNT_ACCOUNTS:
                _LEARNT.popitem(last=False)

    def _unlearn(self) -> None:
        """Forget what discovery learnt of this account (here and for later runs)."""
        with _LEARNT_LOCK:
            _LEARNT.pop(self._account, None)
        self._learnt_since = None
        self._home = self._single_calendar = self._principal = None
        self._addresses, self._addresses_read = None, False
        self._zones.clear()
        self._zones_read.clear()
        self._if_match_ignored = None
