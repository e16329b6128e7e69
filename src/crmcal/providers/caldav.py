"""CalDAV calendars (RFC 4791) behind ``providers.base.Provider``.

Protocol use:

- discovery (RFC 6764/5397/4791 6.2.1): the given URL, else ``/.well-known/caldav``
  -> ``current-user-principal`` -> ``calendar-home-set`` -> the home's calendars;
  the principal's ``calendar-user-address-set`` (RFC 6638 2.4.1) is asked for in
  the same requests: an event whose ORGANIZER is one of those ``mailto:`` addresses
  is the account's own meeting (``invitation`` False), whatever the login is; any
  other is left for the engine to compare with the user's addresses. What
  discovery learnt is kept for the account's later runs (``caldav_discovery``);
- listings: ``sync-collection`` (RFC 6578) with the cursor as sync-token, hrefs
  and etags only; a member it answers ``404`` is removed from the collection, which
  the caller confirms with a read before taking it as deleted (``unconfirmed``: a
  server's word that something is gone is not proof of it); a refused token
  (Radicale 403, Xandikos 412 or 500, any
  ``DAV:valid-sync-token`` error) or a server without the report falls back to a
  full listing. ``DAV:limit`` is never sent: Xandikos truncates at it silently.
  A first import (``list_changes_in_parts``, with contents and no cursor) reads the
  ``DAV:sync-token`` property (Depth 0), then every event's contents with one
  ``calendar-query`` whose answer is read as it arrives (``caldav_stream``): parsed
  response by response in a thread of its own and handed over in parts of
  ``PART_SIZE`` (the first of ``FIRST_PART_SIZE``, so that the caller starts sooner)
  while the rest still comes, at most ``PARTS_AHEAD`` waiting for the caller (a slow
  caller slows the reading, never makes it hold the whole answer). Then every
  resource's href (Depth 1), and the contents of those the stream did not hand over
  (a query refused or cut off, malformed or too slow; members without their data,
  in error, or named outside the collection; tasks) in ``calendar-multiget``s of
  ``PART_SIZE``. ``list_changes`` with
  contents and no cursor is one ``calendar-query`` after the same PROPFINDs, and a
  multiget of what the query left out;
- contents: ``calendar-multiget`` in chunks, fetched while the previous chunk is
  parsed, each resource parsed on its own so one bad event never fails a batch
  (many of them in ``parse_pool``'s processes). A multistatus answers each href on
  its own (RFC 4918 13): a 404 is gone since listed; an href left out or answered
  with another status, or whose calendar data comes in a propstat of another
  status, comes back with an ``error`` to retry, never as gone;
- writes: ``PUT`` with ``If-None-Match: *`` (create, at ``crmcal-{key}.ics`` with
  UID ``crmcal-{key}``; sent once more when the connection drops before the answer,
  see ``_create``) or ``If-Match`` (update), ``DELETE`` with ``If-Match`` (sent once
  more on a dropped connection too, as reads are).

Event ids are the resources' hrefs as URL paths, percent-encoded one canonical way
(``normalize_href``): Radicale writes ``%40`` where Xandikos writes ``@``, and a
server may echo an href differently encoded than it was requested.

Transport: ``guarded_http`` (httpx, synchronous, Basic credentials sent with the
first request), run in a thread pool of CalDAV's own (``POOL``; the streamed query's
reading in ``STREAMS``) so that slow servers can hold only those threads. It refuses
internal addresses, connects to the address it checked, caps every answer (20 MiB;
for the streamed query, what is held of it at once: one response, and the parts
waiting together) and bounds its total time (the streamed query's too: what it has
not brought by then is read by name, so a calendar of any size is read in the end).
Every request stays on the account's origin (scheme, host and port of the URL the
user gave): hrefs in answers that leave it are dropped, and credentials never go
anywhere else. Requests carry bodies written here, and multistatus answers are
read from the parsed XML directly (the ``caldav`` library's high-level objects
hide what this module must act on, and cost a wrapper object per event). One
lock keeps one request in flight per provider: one connection should not hammer
one server. The streamed query is read outside it (a part's parse may ask for the
account's addresses meanwhile, on a second connection).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import contextvars
import dataclasses
import functools
import hashlib
import logging
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar, TypeVar
from urllib.parse import quote, unquote, urlsplit
from xml.sax.saxutils import escape

import httpx
from caldav.lib import error as dav_error
from lxml import etree

from crmcal import metrics
from crmcal.model import CalendarEvent, CalendarInfo, ChangeListing, RemoteRef
from crmcal.providers import caldav_stream, guarded_http, kinds, parse_pool, read_ahead
from crmcal.providers.base import (
    AuthenticationFailed,
    CalendarNotFound,
    Capabilities,
    EventNotFound,
    ItemRefused,
    PreconditionFailed,
    ProviderError,
    SeriesInCalendar,
    Unreachable,
    WritesRefused,
)
from crmcal.providers.caldav_discovery import Discovery, account_addresses, account_key
from crmcal.providers.caldav_discovery import vtimezone_zone as _vtimezone_zone
from crmcal.providers.caldav_stream import Found
from crmcal.providers.caldav_wire import ADDRESS_SET as _ADDRESS_SET
from crmcal.providers.caldav_wire import CALDAV, DAV, WRITE_PRIVILEGES, normalize_href
from crmcal.providers.caldav_wire import MalformedReply as _MalformedReply
from crmcal.providers.caldav_wire import Member as _Member
from crmcal.providers.caldav_wire import Reply as _Reply
from crmcal.providers.caldav_wire import collection_url as _collection_url
from crmcal.providers.caldav_wire import members as _members
from crmcal.providers.caldav_wire import origin as _origin
from crmcal.providers.caldav_wire import origin_key as _origin_key
from crmcal.providers.caldav_wire import text_of as _text_of
from crmcal.providers.ical.patch import patch_event
from crmcal.providers.ical.read import is_series, parse_event, resource_uid
from crmcal.providers.ical.serialize import serialize_event
from crmcal.providers.parse_pool import with_organizer_known
from crmcal.tls import tls

__all__ = [
    "CalDAVProvider",
    "account_addresses",
    "normalize_href",
    "same_version",
    "with_organizer_known",
]

log = logging.getLogger(__name__)

MULTIGET_CHUNK = 200
# A first import read in parts (``list_changes_in_parts``): events per multiget, and
# how many parts are being read or parsed while the caller works on the one it has.
PART_SIZE = 250
PARTS_AHEAD = 3
# Its first part is smaller: nothing else is on its way while the caller waits for
# it, and one chunk of ``parse_pool.CHUNK`` is parsed by one process while the next
# parts' chunks go to the others.
FIRST_PART_SIZE = 100
# Raw texts kept for updates (so foreign properties survive without a GET);
# bounded so that a large import does not hold every event twice.
TEXT_CACHE_SIZE = 2000
EVENT_PREFIX = "crmcal-"
# Whether a server honours If-Match (``_ignores_if_match``): a version no server gives,
# and the resource the check writes, which a server honouring If-Match never makes.
IF_MATCH_CHECK = "if-match-check-"
NEVER_MATCHES = '"crmcal-no-such-version"'
_CHECK_EVENT = (
    "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//crmcal//If-Match check//EN\r\n"
    "BEGIN:VEVENT\r\nUID:{uid}\r\nDTSTAMP:19700101T000000Z\r\n"
    "DTSTART:19700101T000000Z\r\nDTEND:19700101T000100Z\r\nSUMMARY:crmcal check\r\n"
    "END:VEVENT\r\nEND:VCALENDAR\r\n"
)
MAX_EVENT_BYTES = 1024 * 1024  # one event's calendar data
# CalDAV's own threads: a server that drips or stalls holds one of these, never
# the threads the rest of crmcal (database, parsing elsewhere) runs on.
POOL_SIZE = 8
POOL = ThreadPoolExecutor(max_workers=POOL_SIZE, thread_name_prefix="caldav")
# The threads that read first imports' streamed queries (``caldav_stream``): apart from
# ``POOL``, where their parts are parsed, so that readers waiting for their callers
# never hold the threads those parses need.
STREAMS = ThreadPoolExecutor(max_workers=POOL_SIZE, thread_name_prefix="caldav-stream")
_XML = etree.XMLParser(
    remove_blank_text=True, resolve_entities=False, no_network=True, huge_tree=False
)


T = TypeVar("T")


async def _in_pool(function: Callable[..., T], *args: Any) -> T:
    # In the caller's context, as asyncio.to_thread runs a function: what a reader asks
    # the parse pool to compute beside parsing (parse_pool.computing_beside) is in it.
    context = contextvars.copy_context()
    return await asyncio.get_running_loop().run_in_executor(
        POOL, functools.partial(context.run, function, *args)
    )


CALENDARSERVER = "{http://calendarserver.org/ns/}"
_GETCTAG = '<CS:getctag xmlns:CS="http://calendarserver.org/ns/"/>'
# The cursor of a server without sync tokens: the collection's CTag (which changes
# whenever anything in it does) when the last full listing was read.
CTAG_CURSOR = "ctag:"
_NAMESPACES = 'xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"'
# Every event's version and contents (tasks and journal entries left out).
_EVERY_EVENT = (
    f"<C:calendar-query {_NAMESPACES}><D:prop><D:getetag/><C:calendar-data/></D:prop>"
    '<C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT"/>'
    "</C:comp-filter></C:filter></C:calendar-query>"
)


def _part_bounds(count: int, first: int) -> list[tuple[int, int]]:
    """Where a first import's parts of ``count`` names begin and end: the first of
    ``first`` (at most ``PART_SIZE``), the others of ``PART_SIZE``."""
    first = min(first, PART_SIZE)
    bounds = [(0, min(first, count))] if count else []
    bounds += [(start, min(start + PART_SIZE, count)) for start in range(first, count, PART_SIZE)]
    return bounds


def _confine_hrefs(tree: Any, url: str) -> None:
    """Make every ``DAV:href`` of an answer a path on the origin of ``url``; drop the
    responses (or properties) whose href leaves it: another host or port, user
    info, a scheme-relative ``//host`` or a path that does not start with ``/``."""
    here = _origin_key(url)
    for element in list(tree.iter(f"{DAV}href")):
        text = element.text or ""
        path = _path_on(text.strip(), url, here)
        if path is not None and path == text:
            continue  # a path on this origin already (nearly every href: no more to do)
        holder_of = element.getparent()
        if holder_of is not None and holder_of.tag == _ADDRESS_SET:
            continue  # addresses (mailto: ...), read as such and never requested
        if path is not None:
            element.text = path
            continue
        parent = element.getparent()
        if parent is None:
            continue
        doomed = parent if parent.tag == f"{DAV}response" else element
        holder = doomed.getparent()
        if holder is not None:
            holder.remove(doomed)


# A backslash, a space or a control character: in no href crmcal follows.
_NOT_IN_AN_HREF = re.compile(r"[\x00-\x20\\]")


def _path_on(href: str, url: str, here: str) -> str | None:
    """``href`` as a path on the origin ``here``, or None when it leaves it."""
    if not href or _NOT_IN_AN_HREF.search(href):
        return None
    if "://" in href:
        parts = urlsplit(href)
        if "@" in parts.netloc or _origin_key(href) != here:
            return None
        return parts.path or "/"
    if href.startswith("//") or not href.startswith("/"):
        # Relative paths are legal in theory and unseen in practice; a
        # scheme-relative "//host" names another server.
        return None
    return href


# The version crmcal gives a resource whose server names none (no ETag in a listing,
# a multiget or a GET): a digest of its calendar data, so that a change of content is
# a change of version, and the same content the same version. Never sent to a server.
CONTENT_VERSION = "crmcal-content:"


def _spelt(etag: str | None) -> str:
    """A server's ETag in the one spelling HTTP gives an entity-tag (RFC 9110 8.8.3:
    quoted, a weak one after ``W/``), "" for none. Some servers answer ``getetag``
    unquoted in one report and quoted in another (or in the ETag header): one version
    must read as one, or each sync after a write reads the event again."""
    etag = (etag or "").strip()
    weak = etag[:2] in ("W/", "w/")
    opaque = etag[2:].strip() if weak else etag
    if not opaque:
        return ""
    if len(opaque) < 2 or not (opaque.startswith('"') and opaque.endswith('"')):
        opaque = '"' + opaque.strip('"') + '"'
    return ("W/" if weak else "") + opaque


def _if_match(etag: str | None) -> dict[str, str]:
    """The ``If-Match`` condition for a write over version ``etag``: the tag as the
    server gave it (a weak ``W/"…"`` too: Cyrus takes its weak tags back as given, and
    a server whose tags are all weak matches nothing else), or none when the server
    gave none."""
    etag = (etag or "").strip()
    if not etag or etag.startswith(CONTENT_VERSION):
        return {}
    if etag[:2] in ("W/", "w/") or etag.startswith('"'):
        return {"If-Match": etag}
    return {"If-Match": f'"{etag}"'}


def _strong_if_match(version: str) -> dict[str, str]:
    """The ``If-Match`` condition for a write over the version a GET just read: its
    ETag when the server gave a strong one; none for a weak one (If-Match compares
    strongly, so it may never match) or a digest of the contents (no ETag at all)."""
    version = version.strip()
    return {"If-Match": version} if version.startswith('"') else {}


def _weak_tag_refused(sent: str | None, current: str) -> WritesRefused | None:
    """After a write over ``sent`` was refused 412, the resource read again has that very
    tag: nobody changed it, the server refused its own tag. It does so with a weak one
    (``W/"…"``), which If-Match compares strongly (RFC 9110 13.1.1) and so never matches;
    a server that gives only weak tags then refuses every update and deletion. The
    ``WritesRefused`` that says so, else None."""
    sent = (sent or "").strip()
    if sent[:2] not in ("W/", "w/") or current.strip() != sent:
        return None
    return WritesRefused(
        f"the CalDAV server refused an unchanged event's write over the weak ETag it "
        f"gave ({sent}) in If-Match: it gives weak ETags only and matches none of "
        "them, so crmcal cannot update or delete events in this calendar without "
        "risking other clients' edits; the server must give strong ETags or accept "
        "its weak ones in If-Match"
    )


def _version(etag: str | None, text: str | None) -> str:
    """A resource's version: its ETag as given, else a digest of its calendar data
    (``CONTENT_VERSION``), else "" (nothing to tell one version from another)."""
    etag = _spelt(etag)
    if etag or not text:
        return etag
    # Line ends as XML parsing leaves them (CRLF read as LF), so that a multiget's
    # text and a GET's give one version.
    normal = text.replace("\r\n", "\n").strip()
    digest = hashlib.sha256(normal.encode("utf-8", "replace")).hexdigest()
    return CONTENT_VERSION + digest[:32]


def same_version(one: str | None, other: str | None) -> bool:
    """Whether two ETags name one version, by weak comparison (RFC 9110 8.8.3.2): Cyrus
    answers a compressed GET with ``W/"…"`` for the version a listing names ``"…"``; and
    quoted or not, a tag is one tag (``_spelt``)."""

    def opaque(etag: str | None) -> str:
        etag = _spelt(etag)  # quoted or not, as servers differ
        return etag[2:] if etag.startswith("W/") else etag

    return bool(opaque(one)) and opaque(one) == opaque(other)


_TAG = re.compile(r"<[^>]*>")
# A line fold (RFC 5545 3.1) that splits a UTF-8 sequence: the byte after it continues
# a character begun before it. Servers that fold at 75 octets wherever that falls send
# it; as bytes it is no UTF-8 (one such event made a whole multistatus unreadable), and
# unfolding removes it anyway. In XML the CR may come as a character reference
# (``&#13;``, ``&#xD;``, ``&#x0D;`` ...).
_FOLD_IN_A_CHARACTER = re.compile(rb"(?:\r|&#0*13;|&#[xX]0*[dD];)?\n[ \t](?=[\x80-\xbf])")
# Whether there is one at all, looked for from the line feed: a pattern that begins
# with a literal is scanned for at the speed of a byte search, where the one above,
# with its optional start, is tried at every byte (0.11-0.18 s of the syncing process's
# CPU for the 3.4 MB of a 2,000-event first import, before anything else could start).
_FOLD_BEFORE_A_CONTINUATION = re.compile(rb"\n[ \t][\x80-\xbf]")


def _joined_characters(body: bytes) -> bytes:
    """``body`` without line folds that split a UTF-8 sequence (no other byte changes)."""
    if not body.isascii() and _FOLD_BEFORE_A_CONTINUATION.search(body):
        return _FOLD_IN_A_CHARACTER.sub(b"", body)
    return body


_CHARSET = re.compile(r';\s*charset\s*=\s*"?([A-Za-z0-9._:-]+)"?')
_XML_DECLARATION = re.compile(rb"^\s*<\?xml[^>]*\?>")


def _in_utf8(body: bytes, content_type: str) -> bytes:
    """``body`` in UTF-8, from the charset its Content-Type declares (which rules over
    an XML declaration, RFC 7303 3.2): a server set up for Latin-1 says so there only,
    and its calendar data read as UTF-8 is malformed XML or mangled text, which a CRM
    edit would write back. Bodies in UTF-8 (or ASCII), in a charset no codec knows, or
    without one declared are left as they are (XML then declares its own); so is a body
    that is valid UTF-8 whatever it declares: servers label UTF-8 as ISO-8859-1 by a
    framework's default, and text in a single-byte charset with any letter beyond ASCII
    is hardly ever valid UTF-8."""
    found = _CHARSET.search(content_type)
    if found is None or not body:
        return body
    try:
        codec = codecs.lookup(found.group(1)).name
    except LookupError:
        return body
    if codec in ("utf-8", "ascii"):
        return body
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        return body  # UTF-8 after all (or ASCII, the same in either)
    text = body.decode(codec, "replace").encode("utf-8")
    return _XML_DECLARATION.sub(b"", text, count=1) if "xml" in content_type else text


def _reason(reply: _Reply) -> str:
    """The status with the preconditions the server names (RFC 4791 5.3.2, RFC 6638
    3.2.4) and the words it gave (Cyrus: ``valid-calendar-data`` and why): the
    server's reason, which the user needs to see."""
    names = [tag.rpartition("}")[2] for tag in reply.preconditions]
    words = " ".join(_TAG.sub(" ", reply.text or "").split())
    if reply.tree is not None:
        words = " ".join(" ".join(reply.tree.itertext()).split())
    for name in names:
        words = words.replace(name, "").strip(" :;,")
    detail = ", ".join(names + ([words[:200]] if words else []))
    return f"{reply.status}: {detail}" if detail else str(reply.status)


_TITLE = re.compile(r"<title[^>]*>([^<]{0,200})", re.IGNORECASE)


def _web_page(reply: _Reply) -> str | None:
    """The title of an HTML page answered where WebDAV was expected ("" without one),
    or None when the answer is no HTML page."""
    kind = (reply.header("Content-Type") or "").lower()
    root = reply.tree.tag if reply.tree is not None else ""
    looks = reply.text.lstrip()[:15].lower().startswith(("<!doctype html", "<html"))
    if "html" not in kind and not looks and not str(root).lower().endswith("html"):
        return None
    if reply.tree is not None:
        title = next((e.text for e in reply.tree.iter() if str(e.tag).endswith("title")), None)
    else:
        found = _TITLE.search(reply.text)
        title = found.group(1) if found else None
    return " ".join((title or "").split())[:80]


def _refused(member: _Member) -> RemoteRef:
    """A member a multistatus answers with an error status: to read again next run."""
    return RemoteRef(
        member.href, "", error=f"the server answered {member.status} for this event", retry=True
    )


def _not_a_member(href: str, calendar: str) -> bool:
    """Whether ``href`` (normalised) in a listing of ``calendar`` names no resource in it:
    the collection itself, however its trailing slash is spelt (iCloud lists it among
    its members, some servers without the slash), or a collection (its href ends in
    ``/``)."""
    return href.endswith("/") or href == _collection_path(calendar)


@functools.lru_cache(maxsize=256)
def _collection_path(calendar: str) -> str:
    """The path of ``calendar``'s URL, normalised, without its trailing slash (asked for
    each member of a listing)."""
    return normalize_href(urlsplit(calendar).path).rstrip("/")


class CalDAVProvider(Discovery):
    """One CalDAV account: a server or account URL with a user name and password."""

    capabilities: ClassVar[Capabilities] = kinds.CALDAV.capabilities

    def __init__(
        self,
        url: str,
        username: str,
        password: str,
        *,
        timeout: float = guarded_http.READ_TIMEOUT,
        allow_private: bool = False,
        deadline: float = guarded_http.TOTAL_DEADLINE,
        max_response_bytes: int = guarded_http.MAX_RESPONSE_BYTES,
    ) -> None:
        given = url.strip()
        url = given if "://" in given else f"https://{given}"
        self.url = url
        # A bad URL is reported by the first call, like every other account problem.
        self._problem = _url_problem(url, given)
        self._origin = _origin(url) if self._problem is None else ""
        self._origin_key = _origin_key(url) if self._problem is None else ""
        self._client = guarded_http.GuardedClient(
            tls=tls(),
            allow_private=allow_private,
            auth=(username, password),
            read_timeout=timeout,
            deadline=deadline,
            max_bytes=max_response_bytes,
        )
        self._lock = threading.Lock()
        self._home: str | None = None
        self._single_calendar: str | None = None
        # The principal's calendar-user-address-set; None until discovery read it.
        self._addresses: frozenset[str] | None = None
        self._principal: str | None = None
        self._zones: dict[str, str | None] = {}
        self._zones_read: set[str] = set()  # those the server answered (not guessed)
        self._addresses_read = False
        self._addresses_lock = threading.Lock()
        self._learnt_since: float | None = None
        self._if_match_ignored: bool | None = None  # see _ignores_if_match
        # This run's check of If-Match, when the server answered it neither way: its status.
        self._if_match_unchecked: int | None = None
        self._account = account_key(url, username, password)
        self._recall_learnt()
        # href -> (etag, text): the last version seen of each resource, for updates.
        self._texts: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._texts_lock = threading.Lock()  # fetch parses in one thread, requests in another

    # --- the interface ----------------------------------------------------------

    async def discover(self) -> None:
        """Find the account's calendars now; raises the ``base`` error that explains why not.
        Asks the server whatever earlier runs learnt: this is the check of an account."""
        await _in_pool(self._rediscover)

    async def list_calendars(self) -> list[CalendarInfo]:
        return await _in_pool(self._list_calendars)

    async def list_changes(
        self, calendar_id: str, cursor: str | None, *, with_contents: bool = False
    ) -> ChangeListing:
        calendar = _collection_url(calendar_id)
        try:
            return await _in_pool(self._list_changes, calendar, cursor, with_contents)
        except (CalendarNotFound, AuthenticationFailed):
            self._unlearn()  # the account moved or changed: discover again next time
            raise

    async def list_changes_in_parts(
        self, calendar_id: str, cursor: str | None, *, with_contents: bool = False
    ) -> AsyncGenerator[ChangeListing, None]:
        """``list_changes`` in parts (``base.list_changes_in_parts``), for a first import.

        With contents and no cursor: the collection's sync-token first (as for
        ``list_changes``: what changes after it is listed again from it, never missed);
        then one ``calendar-query`` of every event's contents, read as it arrives and
        handed over in parts as its responses come (``_stream_contents``), each parsed
        in ``parse_pool``'s processes while the next are read, so that the server
        sends, the pool parses and the caller writes at the same time; then every
        resource's href, and the contents of those the query did not hand over, in
        ``calendar-multiget``s of ``PART_SIZE`` hrefs read ahead (``_unstreamed_parts``):
        what the query left out or could not bring (refused, cut off, malformed, over
        its deadline) is read so, each event handed over once. A multiget's answer
        that leaves out an href or answers it with an error comes with an ``error`` to
        retry (``_read_answer``), never as gone; an event changed after the token comes
        with its newer contents (the next sync lists it again from the token, and
        finds it unchanged), one deleted meanwhile is left out. A request other than
        the query that fails (the server unreachable, an answer cut off) ends the
        listing with its error after the parts already handed over: what those hold
        may be written, and the rest is read by the next sync's listing. Anything
        else is ``list_changes``, in one part."""
        if cursor or not with_contents:
            yield await self.list_changes(calendar_id, cursor, with_contents=with_contents)
            return
        calendar = _collection_url(calendar_id)
        parts = self._first_import_parts(calendar)
        try:
            async with contextlib.aclosing(parts):
                async for part in parts:
                    yield part
        except (CalendarNotFound, AuthenticationFailed):
            self._unlearn()  # the account moved or changed: discover again next time
            raise

    async def _first_import_parts(self, calendar: str) -> AsyncGenerator[ChangeListing, None]:
        token = await _in_pool(self._sync_token, calendar)
        if token is None:
            # No sync-token: a listing (the caller fetches the contents it needs).
            yield await _in_pool(self._list_changes, calendar, None, False)
            return
        zone = await _in_pool(self._calendar_zone, calendar)
        handed: set[str] = set()
        read = _Streaming()
        streamed = caldav_stream.parts_as_they_come(
            functools.partial(self._stream_contents, calendar, read),
            functools.partial(self._read_found, zone),
            PARTS_AHEAD,
            (STREAMS, POOL),
            time.monotonic() + self._client.deadline,
        )
        async with contextlib.aclosing(streamed) as parts:
            async for hrefs, refs in parts:
                handed.update(hrefs)
                yield ChangeListing(full=True, changed=refs, cursor=token)
        rest = self._unstreamed_parts(calendar, token, zone, handed, read)
        async with contextlib.aclosing(rest) as parts:
            async for part in parts:
                yield part

    async def _unstreamed_parts(
        self, calendar: str, token: str, zone: str | None, handed: set[str], read: _Streaming
    ) -> AsyncGenerator[ChangeListing, None]:
        """A first import's parts that the streamed query did not hand over: the href
        of every resource (read after the token, as ``_token_and_names`` says why; by
        the reader, as soon as the answer ended), and
        the contents of those not handed over in ``calendar-multiget``s of ``PART_SIZE``
        (the first of ``FIRST_PART_SIZE`` when nothing came before), read ahead."""
        if isinstance(read.names, ProviderError):
            raise read.names
        names, complete = read.names, read.complete
        if not names and not complete:
            # No member named for sure, and the stream stopped short: the whole query,
            # less what was handed over (its cursor the token read before everything).
            listing = await _in_pool(self._list_changes, calendar, None, True)
            changed = [ref for ref in listing.changed if ref.id not in handed]
            if changed or not handed:
                yield ChangeListing(full=True, changed=changed, cursor=token)
            return
        missing = [href for href in names or () if href not in handed]
        if not missing and not handed:
            yield ChangeListing(full=True, cursor=token)  # nothing in the calendar
            return
        first = FIRST_PART_SIZE if not handed else PART_SIZE
        reads = (
            functools.partial(self._read_part, calendar, missing[start:end], zone)
            for start, end in _part_bounds(len(missing), first)
        )
        # The next parts are read and parsed while the caller has this one.
        async with contextlib.aclosing(read_ahead.in_order(reads, PARTS_AHEAD, POOL)) as parts:
            async for refs in parts:
                yield ChangeListing(full=True, changed=refs, cursor=token)

    async def fetch(self, calendar_id: str, ids: Sequence[str]) -> list[RemoteRef]:
        calendar = _collection_url(calendar_id)
        hrefs = list(dict.fromkeys(normalize_href(i) for i in ids))
        if not hrefs:
            return []
        zone = await _in_pool(self._calendar_zone, calendar)
        reads = (
            functools.partial(self._read_part, calendar, hrefs[i : i + MULTIGET_CHUNK], zone)
            for i in range(0, len(hrefs), MULTIGET_CHUNK)
        )
        refs: list[RemoteRef] = []
        # Two chunks at a time: the server answers the next while this one is parsed.
        async with contextlib.aclosing(read_ahead.in_order(reads, 2, POOL)) as chunks:
            async for chunk in chunks:
                refs += chunk
        return refs

    async def get_by_key(self, calendar_id: str, key: str) -> RemoteRef | None:
        return await _in_pool(self._get_by_key, _collection_url(calendar_id), key)

    async def create(self, calendar_id: str, key: str, event: CalendarEvent) -> RemoteRef:
        return await _in_pool(self._create, _collection_url(calendar_id), key, event)

    async def update(
        self,
        calendar_id: str,
        event_id: str,
        etag: str,
        event: CalendarEvent,
        *,
        changed: frozenset[str] | None = None,
    ) -> RemoteRef:
        calendar = _collection_url(calendar_id)
        return await _in_pool(
            self._update, calendar, normalize_href(event_id), etag.strip(), event, changed
        )

    async def delete(self, calendar_id: str, event_id: str, etag: str | None) -> None:
        calendar = _collection_url(calendar_id)
        await _in_pool(self._delete, calendar, normalize_href(event_id), etag)

    async def close(self) -> None:
        await _in_pool(self._client.close)

    # --- requests ------------------------------------------------------------------

    def _send(
        self,
        method: str,
        url: str,
        body: str = "",
        headers: Mapping[str, str] | None = None,
        *,
        repeatable: bool = False,
    ) -> _Reply:
        """One request; connection trouble and 401 become provider errors, the rest a
        reply. A ``repeatable`` one (whose second sending cannot do what the first did
        twice) is sent once more when the connection drops before the whole answer
        came: the reply says so (``repeated``)."""
        repeatable = repeatable or method in _SAFE_TO_REPEAT
        repeated = False
        while True:
            try:
                answer = self._exchange(method, url, body, headers)
                break
            except _Dropped as dropped:
                metrics.request_done("CalDAV", None)
                if not repeatable or repeated:
                    raise Unreachable(dropped.message) from None
                # A server closes kept connections at any time, also as a request goes
                # out on one; whether it acted on the request cannot be known.
                repeated = True
            except Unreachable:
                metrics.request_done("CalDAV", None)
                raise
        status = answer.status
        metrics.request_done("CalDAV", status)
        if status == 401:
            raise AuthenticationFailed("the CalDAV server refused the user name or password")
        if status in (429, 503):
            metrics.PROVIDER_THROTTLED.labels("CalDAV").inc()
            raise Unreachable(f"the CalDAV server is busy ({status}); retry later")
        tree = None
        content_type = answer.headers.get("content-type", "").lower()
        raw = _joined_characters(_in_utf8(answer.body, content_type))
        # (``isspace`` and a look at the first bytes: no copy of a multiget's answer)
        if raw and not raw.isspace() and ("xml" in content_type or raw.lstrip()[:1] == b"<"):
            try:
                tree = etree.fromstring(raw, parser=_XML)
            except etree.XMLSyntaxError:
                if "xml" in content_type or status == 207:
                    raise _MalformedReply(f"the server at {url} sent malformed XML") from None
        if tree is not None:
            _confine_hrefs(tree, url)
            text = ""  # XML is read from the tree
        else:
            text = raw.decode("utf-8", "replace")
        preconditions = dav_error.parse_preconditions(raw) if status >= 400 else []
        return _Reply(status, answer.headers, tree, text, preconditions, repeated)

    def _exchange(
        self, method: str, url: str, body: str = "", headers: Mapping[str, str] | None = None
    ) -> guarded_http.Answer:
        """The raw answer to one request on the account's origin, or the provider error."""
        if self._problem is not None:
            raise ProviderError(self._problem)
        if _origin_key(url) != self._origin_key:
            # Credentials and requests stay on the server the user named.
            raise ProviderError(
                f"the CalDAV server pointed at {_origin(url)}, which is not {self._origin}: refused"
            )
        sent = dict(headers or {})
        if body and not any(name.lower() == "content-type" for name in sent):
            sent["Content-Type"] = 'application/xml; charset="utf-8"'
        try:
            with self._lock:
                return self._client.request(method, url, body, sent)
        except guarded_http.AddressRefused as refused:
            raise ProviderError(f"refused to connect: {refused}") from None
        except (guarded_http.AnswerTooLarge, guarded_http.DeadlineExceeded) as failure:
            raise Unreachable(f"the CalDAV server failed: {failure}") from None
        except (httpx.HTTPError, OSError) as failure:
            reason = f"cannot reach the CalDAV server: {guarded_http.reason(failure)}"
            if isinstance(failure, httpx.DecodingError):
                reason = f"the CalDAV server's answer is unreadable: {guarded_http.reason(failure)}"
            if isinstance(failure, _DROPS):
                raise _Dropped(reason) from None
            raise Unreachable(reason) from None

    def _expect(self, reply: _Reply, what: str, *ok: int, write: bool = False) -> _Reply:
        """``reply`` if its status is one of ``ok``, else the matching provider error.
        ``write``: the answer to writing one event, which a 403, 415 or 422 refuses for
        good (``ItemRefused``: the same write would get the same answer)."""
        if reply.status in ok:
            return reply
        if reply.status >= 500 and reply.status != 501:
            raise Unreachable(f"the CalDAV server failed ({reply.status}) on {what}; retry later")
        if write and reply.status in (415, 422):
            raise ItemRefused(f"the CalDAV server refused {what} ({_reason(reply)})")
        if reply.status == 403:
            refused = ItemRefused if write else ProviderError
            raise refused(f"the CalDAV server does not allow {what} ({_reason(reply)})")
        if reply.status == 404:
            raise CalendarNotFound(f"{what}: not found on the CalDAV server (404)")
        page = _web_page(reply)
        if page is not None:
            raise ProviderError(
                f"the CalDAV server answered {what} with a web page ({reply.status}, HTML"
                f"{': ' + repr(page) if page else ''}), not WebDAV: a login or sign-in page "
                "of something in front of the server, or a URL that is no CalDAV account's"
            )
        raise ProviderError(f"the CalDAV server answered {_reason(reply)} to {what}")

    def _propfind(self, url: str, props: Sequence[str], depth: int) -> _Reply:
        body = (
            f'<?xml version="1.0" encoding="utf-8"?><D:propfind {_NAMESPACES}>'
            f"<D:prop>{''.join(props)}</D:prop></D:propfind>"
        )
        return self._send("PROPFIND", url, body, {"Depth": str(depth)})

    def _report(self, url: str, body: str, depth: int | None) -> _Reply:
        headers = {"Depth": str(depth)} if depth is not None else {}
        return self._send("REPORT", url, '<?xml version="1.0" encoding="utf-8"?>' + body, headers)

    def _url(self, calendar: str, href: str) -> str:
        return _origin(calendar) + href

    # --- listings -----------------------------------------------------------------

    def _list_changes(
        self, calendar: str, cursor: str | None, with_contents: bool
    ) -> ChangeListing:
        if cursor and cursor.startswith(CTAG_CURSOR):
            if self._ctag(calendar) == cursor[len(CTAG_CURSOR) :]:
                return ChangeListing(full=False, cursor=cursor)  # nothing changed since
            # Something did (or the CTag is gone): list everything, the way that gave
            # this cursor (the server had no sync tokens then).
            return self._propfind_listing(calendar)
        if cursor:
            listing = self._sync_collection(calendar, cursor)
            if listing is not None:
                return listing
        if with_contents:
            listing = self._query_listing(calendar)
            if listing is not None:
                return listing
        listing = self._sync_collection(calendar, "")
        if listing is not None:
            return listing
        return self._propfind_listing(calendar)

    def _sync_collection(self, calendar: str, token: str) -> ChangeListing | None:
        """Changes since ``token`` ("" = everything); None if the server refuses it."""
        listing = ChangeListing(full=not token)
        seen_tokens: set[str] = set()
        while True:
            token_xml = f"<D:sync-token>{escape(token)}</D:sync-token>" if token else (
                "<D:sync-token/>"
            )  # fmt: skip
            body = (
                f"<D:sync-collection {_NAMESPACES}>{token_xml}<D:sync-level>1</D:sync-level>"
                "<D:prop><D:getetag/></D:prop></D:sync-collection>"
            )
            reply = self._report(calendar, body, 0)
            if reply.status == 404:
                raise CalendarNotFound(f"the calendar {calendar} does not exist (404)")
            if reply.status != 207 or reply.tree is None:
                # With a token, any refusal means "start over" (Radicale 403, Xandikos
                # 412, or 500 for a token it cannot even read); a server in real
                # trouble fails the full listing that follows. Without one, only a
                # server error is an error: the rest says the report is unsupported.
                if not token and reply.status >= 500 and reply.status != 501:
                    self._expect(reply, "listing changes")
                return None
            truncated = False
            for member in _members(reply.tree):
                if _not_a_member(member.href, calendar):
                    # The collection itself: the truncation marker (RFC 6578 3.6),
                    # or a server listing the collection as its own member (iCloud).
                    truncated = truncated or member.status == 507
                    continue
                if member.status == 404:
                    listing.deleted.append(member.href)
                elif member.status in (200, 201):
                    etag = _spelt(_text_of(member.props.get(f"{DAV}getetag")))
                    listing.changed.append(RemoteRef(id=member.href, etag=etag))
                else:
                    # Listed, but not as changed or gone (a multistatus answers each
                    # member on its own): read again next run, never taken as gone.
                    listing.changed.append(_refused(member))
            new_token = _text_of(reply.tree.find(f"{DAV}sync-token"))
            listing.cursor = new_token
            if not truncated or not new_token or new_token in seen_tokens:
                break
            seen_tokens.add(new_token)
            token = new_token  # the rest of a truncated answer
        self._dedupe(listing)
        # Servers answer 404 for members still there (a resource they failed to read,
        # one moved and back, a token table rebuilt): only what a read no longer
        # finds is gone, and the caller reads those it synced.
        listing.unconfirmed.update(listing.deleted)
        return listing

    def _query_listing(self, calendar: str) -> ChangeListing | None:
        """Every event with its contents, in one ``calendar-query``; None if the server cannot.

        For a first import this is one request where a listing and then multigets
        are many, and servers answer it from the same stored texts. The cursor is
        the collection's ``DAV:sync-token`` (RFC 6578 4), read first: what changes
        while the query runs is listed again next time, never missed.
        """
        named = self._token_and_names(calendar)
        if named is None:
            return None  # no incremental sync after it: let the listing find out why
        token, names = named
        reply = self._report(calendar, _EVERY_EVENT, 1)
        if reply.status != 207 or reply.tree is None:
            return None  # cannot search: a server in real trouble fails the listing next
        members = list(_members(reply.tree))
        if any(m.status == 507 for m in members):
            return None  # a truncated answer (RFC 4791 7.8 allows 507): list instead
        listing = ChangeListing(full=True, cursor=token)
        zone = self._calendar_zone(calendar)
        members = [m for m in members if not _not_a_member(m.href, calendar)]
        listing.changed = self._read_answer(members, zone)
        # A query may leave events out without a word (a server whose index misses
        # them), and the cursor counts them as seen: later listings would never name
        # them. The names read with the token are every resource; those the answer
        # left out are read (tasks and journal entries, which the query rightly left
        # out, are dropped again there).
        answered = {member.href for member in members}
        left_out = [href for href in names or () if href not in answered]
        for start in range(0, len(left_out), MULTIGET_CHUNK):
            chunk = left_out[start : start + MULTIGET_CHUNK]
            listing.changed += self._read_answer(self._multiget(calendar, chunk), zone, chunk)
        return listing

    def _token_and_names(self, calendar: str) -> tuple[str, list[str] | None] | None:
        """The collection's current sync-token and the href of every resource in it;
        None when it has no token, and no names (None) when the server cut its answer
        short (RFC 4918 507) or would not list its members.

        Two PROPFINDs, the token (and the calendar's zone) first: the names, read after
        it and before any contents, are at least what the token counts as seen (one
        made in between is read now and listed again from the token, found unchanged;
        one deleted in between is not named). Not one Depth 1 PROPFIND of both: a
        server answers every property asked for every member, and for each member
        Radicale then writes a ``404`` for the token and the zone, an answer two thirds
        larger than the names alone, and costs it more than the two requests do (at
        5,000 events 0.9 s of its CPU against 0.3 s and 0.45 s), all of it before the
        first event can be read.
        """
        token = self._sync_token(calendar)
        return None if token is None else (token, self._names(calendar))

    def _sync_token(self, calendar: str) -> str | None:
        """The collection's ``DAV:sync-token`` (its ``calendar-timezone`` read along),
        or None when it has none."""
        reply = self._propfind(calendar, ["<D:sync-token/>", "<C:calendar-timezone/>"], 0)
        if reply.status == 404:
            raise CalendarNotFound(f"the calendar {calendar} does not exist (404)")
        if reply.status != 207 or reply.tree is None:
            return None
        token = None
        for member in _members(reply.tree):
            if f"{DAV}sync-token" in member.props:  # the collection's own answer
                token = _text_of(member.props[f"{DAV}sync-token"])
                zone = _vtimezone_zone(_text_of(member.props.get(f"{CALDAV}calendar-timezone")))
                self._zones.setdefault(calendar, zone)
        return token or None

    def _names(self, calendar: str) -> list[str] | None:
        """The href of every resource in the collection (Depth 1, nothing else asked);
        None when the server cut its answer short (RFC 4918 507) or would not list."""
        reply = self._propfind(calendar, ["<D:resourcetype/>"], 1)
        if reply.status == 404:
            raise CalendarNotFound(f"the calendar {calendar} does not exist (404)")
        if reply.status != 207 or reply.tree is None:
            return None  # no names: the caller's query finds what there is
        names: list[str] = []
        cut = False
        for member in _members(reply.tree):
            cut = cut or member.status == 507
            kind = member.props.get(f"{DAV}resourcetype")
            if _not_a_member(member.href, calendar) or (kind is not None and len(kind)):
                continue  # the collection itself, or a sub-collection
            if member.status != 404:
                names.append(member.href)
        return None if cut else names

    def _ctag(self, calendar: str) -> str | None:
        """The collection's CTag (``CS:getctag``), or None when it gives none."""
        reply = self._propfind(calendar, [_GETCTAG], 0)
        if reply.status == 404:
            raise CalendarNotFound(f"the calendar {calendar} does not exist (404)")
        for member in _members(reply.tree if reply.status == 207 else None):
            return _text_of(member.props.get(f"{CALENDARSERVER}getctag"))
        return None

    def _propfind_listing(self, calendar: str) -> ChangeListing:
        """Every member with its ETag, for a server without sync tokens. Its cursor is
        the collection's CTag, read in the same request: while it stays the same,
        nothing changed, and the next listing is that one request of it."""
        reply = self._expect(
            self._propfind(calendar, ["<D:getetag/>", "<D:resourcetype/>", _GETCTAG], 1),
            "listing events",
            207,
        )
        listing = ChangeListing(full=True, cursor=None)
        here = normalize_href(urlsplit(calendar).path).rstrip("/")
        for member in _members(reply.tree):
            if member.href.rstrip("/") == here:
                ctag = _text_of(member.props.get(f"{CALENDARSERVER}getctag"))
                listing.cursor = CTAG_CURSOR + ctag if ctag else None
                continue
            kind = member.props.get(f"{DAV}resourcetype")
            if _not_a_member(member.href, calendar) or (kind is not None and len(kind)):
                continue  # the collection itself, or a sub-collection
            if member.status == 200:
                etag = _spelt(_text_of(member.props.get(f"{DAV}getetag")))
                listing.changed.append(RemoteRef(id=member.href, etag=etag))
            elif member.status != 404:
                listing.changed.append(_refused(member))  # there, but not readable now
        return listing

    @staticmethod
    def _dedupe(listing: ChangeListing) -> None:
        # A truncated answer continued may name an item twice: the last word counts.
        changed = {ref.id: ref for ref in listing.changed}
        deleted = [href for href in dict.fromkeys(listing.deleted) if href not in changed]
        listing.changed = list(changed.values())
        listing.deleted = deleted

    # --- contents -----------------------------------------------------------------

    def _multiget(self, calendar: str, hrefs: Sequence[str]) -> list[_Member]:
        body = (
            f"<C:calendar-multiget {_NAMESPACES}><D:prop><D:getetag/><C:calendar-data/>"
            f"</D:prop>{''.join(f'<D:href>{escape(h)}</D:href>' for h in hrefs)}"
            "</C:calendar-multiget>"
        )
        reply = self._report(calendar, body, None)
        if reply.status == 404:
            raise CalendarNotFound(f"the calendar {calendar} does not exist (404)")
        return list(_members(self._expect(reply, "reading events", 207).tree))

    def _stream_contents(
        self, calendar: str, read: _Streaming, hand_over: Callable[[Sequence[Found]], bool]
    ) -> None:
        """Every event's contents, from one ``calendar-query`` whose answer is read as
        it arrives (``caldav_stream``), handed over in parts (the first of
        ``FIRST_PART_SIZE``, the others of ``PART_SIZE``; smaller when they would hold
        more than a ``PARTS_AHEAD + 1``-th of the answer cap). ``read.complete`` says
        whether the answer was read to its end; ``read.names`` the names read after it
        (``_names``), or the error that read met. A refusal, an answer cut off or
        malformed, one response over the cap, the deadline, or a caller that waits too
        long ends it where it is: what was not handed over is read otherwise."""
        try:
            read.complete = self._stream_query(calendar, hand_over)
        except (
            httpx.HTTPError, OSError, etree.XMLSyntaxError, caldav_stream.TooLarge,
            guarded_http.AnswerTooLarge, guarded_http.DeadlineExceeded,
        ) as failure:  # fmt: skip
            metrics.request_done("CalDAV", None)
            log.info(
                "the CalDAV server's streamed answer for %s ended early (%s): what it did "
                "not bring is read by name",
                calendar,
                guarded_http.reason(failure) if not isinstance(failure, etree.Error) else failure,
            )
        # The names, asked for as soon as the answer has ended (the caller still has
        # its last parts to write), not once the caller has written them: what the
        # query left out is read sooner. Their own errors are the caller's to meet.
        try:
            read.names = self._names(calendar)
        except ProviderError as failure:
            read.names = failure

    def _stream_query(self, calendar: str, hand_over: Callable[[Sequence[Found]], bool]) -> bool:
        if self._problem is not None or _origin_key(calendar) != self._origin_key:
            return False  # said by the listing that follows (_exchange)
        headers = {"Depth": "1", "Content-Type": 'application/xml; charset="utf-8"'}
        body = '<?xml version="1.0" encoding="utf-8"?>' + _EVERY_EVENT
        # Not under the provider's lock: while this answer is read, a part's parse may
        # need the account's addresses (discovery), asked on a connection of its own.
        with self._client.stream("REPORT", calendar, body, headers) as answer:
            if not _streamable(answer):
                metrics.request_done("CalDAV", answer.status)
                return False  # refused (403, 501, 507 ...), or nothing to read as it comes
            complete = self._hand_over_answer(calendar, answer.pieces, hand_over)
        metrics.request_done("CalDAV", answer.status)
        return complete

    def _hand_over_answer(
        self, calendar: str, pieces: Iterator[bytes], hand_over: Callable[[Sequence[Found]], bool]
    ) -> bool:
        """The resources of a streamed answer handed over in parts as their responses
        end; True when it was read to its end. What an answer that breaks off brought
        whole is handed over before its error is raised."""
        responses = caldav_stream.Responses(_joined_characters, self._client.max_bytes)
        most_held = max(self._client.max_bytes // (PARTS_AHEAD + 1), 1)
        size, held = min(FIRST_PART_SIZE, PART_SIZE), 0
        part: list[Found] = []
        seen: set[str] = set()
        try:
            for piece in pieces:
                held += len(piece)
                part += self._found(calendar, responses.feed(piece), seen)
                while len(part) >= size or (part and held >= most_held):
                    out, part = part[:size], part[size:]
                    held = held if part else 0
                    if not hand_over(out):
                        return False
                    size = PART_SIZE
            while ended := responses.close():  # raises once what came before is given
                part += self._found(calendar, ended, seen)
        except BaseException:
            if part:
                hand_over(part)  # each whole: read before the answer broke off
            raise
        return not part or hand_over(part)

    def _found(self, calendar: str, ended: list[Any], seen: set[str]) -> list[Found]:
        """The resources of ``ended`` (responses of a query's answer) to hand over: in
        the collection (an href elsewhere is dropped, as ``_confine_hrefs`` drops it),
        answered 200 with their calendar data, each once. The others (an error status,
        no data given) are read by name, as what a query leaves out is."""
        inside = _collection_path(calendar) + "/"
        found: list[Found] = []
        for element in ended:
            given = (element.findtext(f"{DAV}href") or "").strip()
            if _path_on(given, calendar, self._origin_key) is None:
                continue
            for member in _members(element):
                href = member.href
                if member.status != 200 or href in seen or not href.startswith(inside):
                    continue
                if "/" in href[len(inside) :] or _not_a_member(href, calendar):
                    continue  # deeper than the collection's members, or itself
                data = member.props.get(f"{CALDAV}calendar-data")
                text = data.text if data is not None else None
                if text:
                    seen.add(href)
                    found.append(Found(href, _text_of(member.props.get(f"{DAV}getetag")), text))
        return found

    def _read_part(self, calendar: str, hrefs: Sequence[str], zone: str | None) -> list[RemoteRef]:
        """The events at ``hrefs``, read with one multiget and parsed (a part of
        ``list_changes_in_parts``)."""
        return self._read_answer(self._multiget(calendar, hrefs), zone, hrefs)

    def _read_answer(
        self, members: list[_Member], zone: str | None, asked: Sequence[str] | None = None
    ) -> list[RemoteRef]:
        """The events of a multistatus answer, and an ``error`` to retry for each member
        it answers with a status other than 200 or 404 (RFC 4918 13: one status per
        resource; a 403, 500 or 507 says nothing of whether the event exists) and, given
        the hrefs ``asked`` for, for each one it leaves out. A 404 is gone since it was
        listed: left out, so that the next listing says so. Members not asked for are
        not this answer's to give, and are dropped."""
        wanted = set(asked) if asked is not None else None
        answered: set[str] = set()
        readable: list[_Member] = []
        failed: list[RemoteRef] = []
        for member in members:
            if (wanted is not None and member.href not in wanted) or member.href in answered:
                continue  # not asked for, or a second answer for one href
            answered.add(member.href)
            if member.status == 200:
                readable.append(member)
            elif member.status != 404:
                failed.append(_refused(member))
        for href in asked or ():
            if href not in answered:
                failed.append(
                    RemoteRef(href, "", error="the server's answer left this event out",
                              retry=True)
                )  # fmt: skip
        return self._read_members(readable, zone) + failed

    def _read_members(self, members: list[_Member], zone: str | None) -> list[RemoteRef]:
        """The events of ``members``, parsed in ``parse_pool``'s processes when many;
        those with a status other than 200 are skipped (see ``_read_answer``)."""
        refs: list[RemoteRef] = []
        found: list[Found] = []
        for member in members:
            if member.status != 200:
                continue  # 404: gone since it was listed
            element = member.props.get(f"{CALDAV}calendar-data")
            text = element.text if element is not None else None
            if text:
                etag = _text_of(member.props.get(f"{DAV}getetag"))
                found.append(Found(member.href, etag, text))
                continue
            withheld = member.withheld.get(f"{CALDAV}calendar-data")
            if withheld is not None and withheld != 200:
                # The resource is there; its data was not given now (403, 507 ...).
                refs.append(RemoteRef(member.href, "", retry=True, error=(
                    f"the server answered {withheld or 'an unknown status'} for this "
                    "event's calendar data"
                )))  # fmt: skip
            else:
                etag = _version(_text_of(member.props.get(f"{DAV}getetag")), text)
                refs.append(RemoteRef(member.href, etag, error="the server sent no calendar data"))
        return refs + self._read_found(zone, found)

    def _read_found(self, zone: str | None, found: Sequence[Found]) -> list[RemoteRef]:
        """The events of resources whose contents came (a multiget's or a streamed
        query's), parsed in ``parse_pool``'s processes when many."""
        refs: list[RemoteRef] = []
        texts: list[str] = []
        readable: list[tuple[str, str, str]] = []  # (href, etag, text)
        for resource in found:
            etag = _version(resource.etag, resource.text)
            if len(resource.text) > MAX_EVENT_BYTES:
                refs.append(RemoteRef(resource.href, etag, error="the event is larger than 1 MiB"))
                continue
            readable.append((resource.href, etag, resource.text))
            texts.append(resource.text)
        # Whose meetings these are is decided where they are parsed, before their
        # digests and CRM fields are computed there; asked of the server (discovery)
        # only when an event names an organizer.
        # (A plain look for the property's name, as clients spell it: a regular
        # expression for every spelling cost 20 ms at 5,000 events. One missed is
        # decided by _ref, as before, only without what the pool computed.)
        own = self._account_addresses() if any("ORGANIZER" in t for t in texts) else frozenset()
        for (href, etag, text), parsed in zip(
            readable, parse_pool.parse(texts, zone, own), strict=True
        ):
            ref = self._ref(href, etag, text, parsed)
            if ref is not None:
                refs.append(ref)
        return refs

    def _ref(self, href: str, etag: str, text: str, parsed: parse_pool.Parsed) -> RemoteRef | None:
        if parsed.error is not None:
            return RemoteRef(href, etag, error=parsed.error)
        if parsed.event is None:
            return None  # a task or journal entry
        if etag:
            self._remember(href, etag, text)
        event = parsed.event
        if event.organizer and event.invitation is None:
            # Decided where it was parsed (see _read_members); here only for what the
            # look for an ORGANIZER there missed.
            event = with_organizer_known(event, self._account_addresses())
        return RemoteRef(href, etag, event, warning="; ".join(parsed.problems) or None)

    def _remember(self, href: str, etag: str, text: str) -> None:
        with self._texts_lock:
            self._texts[href] = (etag, text)
            self._texts.move_to_end(href)
            while len(self._texts) > TEXT_CACHE_SIZE:
                self._texts.popitem(last=False)

    def _recall(self, href: str) -> tuple[str, str] | None:
        with self._texts_lock:
            return self._texts.get(href)

    def _forget(self, href: str) -> None:
        with self._texts_lock:
            self._texts.pop(href, None)

    def _get(self, calendar: str, href: str) -> tuple[str, str] | None:
        """(etag, text) of a resource, or None when it does not exist."""
        reply = self._send("GET", self._url(calendar, href), "", {"Accept": "text/calendar"})
        if reply.status == 404:
            self._forget(href)
            return None
        self._expect(reply, "reading an event", 200)
        text = reply.text
        etag = _version(reply.header("ETag"), text)
        if etag:
            self._remember(href, etag, text)
        return etag, text

    def _get_by_key(self, calendar: str, key: str) -> RemoteRef | None:
        href = self._event_href(calendar, key)
        refs = self._read_members(self._multiget(calendar, [href]), self._calendar_zone(calendar))
        if refs:
            return refs[0]
        # Stored under another name (moved by another client, or renamed by the
        # server): look the UID up.
        uid = EVENT_PREFIX + key
        body = (
            f"<C:calendar-query {_NAMESPACES}><D:prop><D:getetag/><C:calendar-data/></D:prop>"
            '<C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT">'
            f'<C:prop-filter name="UID"><C:text-match>{escape(uid)}</C:text-match>'
            "</C:prop-filter></C:comp-filter></C:comp-filter></C:filter></C:calendar-query>"
        )
        reply = self._report(calendar, body, 1)
        if reply.status != 207:
            if reply.status >= 500 and reply.status != 501:
                self._expect(reply, "searching for an event")
            return None  # the server cannot search; the deterministic href was the best bet
        zone = self._calendar_zone(calendar)
        for ref in self._read_members(list(_members(reply.tree)), zone):
            if ref.event is not None and ref.event.uid == uid:
                return ref
        return None

    # --- writes -------------------------------------------------------------------

    @staticmethod
    def _event_href(calendar: str, key: str) -> str:
        path = normalize_href(urlsplit(calendar).path)
        return f"{path}{quote(EVENT_PREFIX + key, safe='')}.ics"

    def _put(
        self,
        calendar: str,
        href: str,
        text: str,
        condition: dict[str, str],
        *,
        repeatable: bool = False,
    ) -> _Reply:
        headers = {"Content-Type": "text/calendar; charset=utf-8", **condition}
        return self._send("PUT", self._url(calendar, href), text, headers, repeatable=repeatable)

    def _written(self, calendar: str, href: str, reply: _Reply, text: str) -> str:
        """The new etag after a successful PUT; reads it back when the server gave none."""
        etag = _spelt(reply.header("ETag"))
        if etag and not etag.startswith("W/"):
            # An ETag on a PUT means the server stored what was sent (RFC 4791 5.3.4;
            # Radicale reorders properties, which changes nothing crmcal reads).
            self._remember(href, etag, text)
            return etag
        current = self._read_back(calendar, href)
        if current is None:
            raise EventNotFound(f"the event {href} vanished right after it was written")
        return current[0]

    def _read_back(self, calendar: str, href: str) -> tuple[str, str] | None:
        """(version, text) of what the server stored at ``href``, read once after a PUT
        answered without a strong ETag (it may have stored the body otherwise, RFC 4791
        5.3.4); None when it is not there. Read with a multiget, whose ``getetag`` is
        spelt as the listings that follow spell it (Cyrus answers a GET with a weak tag
        for the version its listings name strong); a GET when that gives nothing."""
        try:
            members = self._multiget(calendar, [href])
        except (AuthenticationFailed, Unreachable):
            raise
        except ProviderError:
            members = []  # no multiget here (or a refused one): the GET tells
        for member in members:
            if member.href != href:
                continue
            if member.status == 404:
                self._forget(href)
                return None
            element = member.props.get(f"{CALDAV}calendar-data")
            text = element.text if element is not None else None
            etag = _version(_text_of(member.props.get(f"{DAV}getetag")), text)
            if member.status == 200 and text and etag:
                self._remember(href, etag, text)
                return etag, text
        return self._get(calendar, href)

    def _create(self, calendar: str, key: str, event: CalendarEvent) -> RemoteRef:
        href = self._event_href(calendar, key)
        uid = EVENT_PREFIX + key
        text = serialize_event(event, uid)
        # If-None-Match: * makes a second PUT to the same href unable to make a second
        # event: sent again when the connection drops before the answer.
        reply = self._put(calendar, href, text, {"If-None-Match": "*"}, repeatable=True)
        uid_taken = f"{CALDAV}no-uid-conflict" in reply.preconditions
        if reply.status == 404 or (reply.status == 409 and not uid_taken and self._gone(calendar)):
            # 409 also means "no such parent collection" (RFC 4918 9.7.1; Radicale).
            raise CalendarNotFound(f"the calendar {calendar} does not exist ({reply.status})")
        if reply.status == 412 and reply.repeated:
            # Most likely the first PUT made it, and only its answer was lost.
            made = self._made_before(calendar, href, text)
            if made is not None:
                return RemoteRef(href, made, dataclasses.replace(event, uid=uid))
        if reply.status in (412, 409) or (reply.status == 403 and uid_taken):
            raise PreconditionFailed(f"an event for {key!r} exists already ({reply.status})")
        self._check_writable(calendar, reply)
        self._expect(reply, "creating an event", 200, 201, 204, write=True)
        etag = self._written(calendar, href, reply, text)
        return RemoteRef(href, etag, dataclasses.replace(event, uid=uid))

    def _made_before(self, calendar: str, href: str, text: str) -> str | None:
        """The version of the event at ``href`` when it holds what ``text`` says (the
        create whose answer was lost made it); None when it holds something else (then
        it is an existing event, for the caller to pair and reconcile) or is gone."""
        current = self._read_back(calendar, href)
        if current is None:
            return None
        try:
            sent, stored = parse_event(text), parse_event(current[1])
        except ValueError:
            return None
        if sent is None or stored is None or stored.uid != sent.uid:
            return None
        if stored.content_hash() != sent.content_hash():
            return None
        return current[0]

    def _gone(self, calendar: str) -> bool:
        """Whether the calendar collection no longer exists."""
        reply = self._propfind(calendar, ["<D:resourcetype/>"], 0)
        if reply.status == 207:
            # Xandikos answers for a missing resource with a 404 inside a 207.
            return all(member.status == 404 for member in _members(reply.tree))
        return reply.status == 404

    def _update(
        self,
        calendar: str,
        href: str,
        etag: str,
        event: CalendarEvent,
        changed: frozenset[str] | None = None,
    ) -> RemoteRef:
        # A version the server did not name (none, or a digest crmcal made of the
        # contents) matches nothing in If-Match: the event is read now, whatever text
        # is at hand, and written under the tag that read gives.
        derived = not etag or etag.startswith(CONTENT_VERSION)
        cached = self._recall(href)
        if (
            cached is not None
            and not derived
            and same_version(cached[0], etag)
            # A server that ignores If-Match would write over an edit made since
            # the version at hand was read: read again, right before writing.
            and not self._ignores_if_match(calendar)
        ):
            previous, condition = cached[1], _if_match(etag)
        else:
            current = self._get(calendar, href)
            if current is None:
                raise EventNotFound(f"the event {href} does not exist")
            # A version crmcal derived from content is compared as such.
            seen = _version(None, current[1]) if etag.startswith(CONTENT_VERSION) else current[0]
            if seen and etag and not same_version(seen, etag):
                raise PreconditionFailed(f"the event {href} changed since {etag}")
            previous = current[1]
            condition = _strong_if_match(current[0]) if derived else _if_match(etag)
        if event.recurrence is None and is_series(previous):
            raise SeriesInCalendar(
                f"the event {href} is a recurring series in the calendar; "
                "crmcal does not rewrite series yet"
            )
        uid = resource_uid(previous) or event.uid or unquote(href.rsplit("/", 1)[-1])
        if changed is None:
            text = serialize_event(event, uid, previous=previous)
        else:
            text = patch_event(event, uid, previous, changed)
        # No ETag to match when the server gives none at all (its contents checked
        # above, just before).
        reply = self._put(calendar, href, text, condition)
        if reply.status == 412:
            raise self._refused_over(calendar, href, etag) or EventNotFound(
                f"the event {href} does not exist"
            )
        if reply.status == 404:
            self._forget(href)
            raise EventNotFound(f"the event {href} does not exist")
        if reply.status == 409 or (reply.status == 403 and reply.preconditions):
            raise ItemRefused(f"the CalDAV server refused the event ({_reason(reply)})")
        self._check_writable(calendar, reply)
        self._expect(reply, "updating an event", 200, 201, 204, write=True)
        new_etag = self._written(calendar, href, reply, text)
        return RemoteRef(href, new_etag, dataclasses.replace(event, uid=uid))

    def _delete(self, calendar: str, href: str, etag: str | None) -> None:
        condition = _if_match(etag)
        derived = (etag or "").strip().startswith(CONTENT_VERSION)
        if derived or (etag and self._ignores_if_match(calendar)):
            # A digest crmcal made of the contents (the server named no version), or a
            # server that ignores If-Match: the event is read now, compared, and
            # deleted under the tag that read gives.
            current = self._get(calendar, href)
            if current is None:
                return  # already gone: what the caller wanted
            seen = _version(None, current[1]) if derived else current[0]
            if not same_version(seen, (etag or "").strip()):
                raise PreconditionFailed(f"the event {href} changed since {etag}")
            condition = _strong_if_match(current[0])
        reply = self._send("DELETE", self._url(calendar, href), "", condition)
        self._forget(href)
        if reply.status in (200, 202, 204, 404, 410):
            return
        if reply.status == 412:
            refused = self._refused_over(calendar, href, etag)
            if refused is not None:
                raise refused
            return  # already gone: what the caller wanted
        self._check_writable(calendar, reply)
        self._expect(reply, "deleting an event", write=True)

    def _ignores_if_match(self, calendar: str) -> bool:
        """Whether the server takes a write whatever version ``If-Match`` names (some
        do, against RFC 9110 13.1.1): then a write over a version read earlier in the
        run would overwrite, without a word, an edit another client made since, and
        crmcal reads the event again right before writing it. Found out once per
        account (kept with what discovery learnt) by a PUT to a new resource under an
        ``If-Match`` nothing matches: answered 412 by a server that honours it; one
        that takes it has the resource deleted again at once.

        Any other answer (403 on a calendar shared read-only, 405, 507 when full; a
        server error fails the run as any request's does) says nothing either way: the
        server is taken to ignore it for the rest of the run (a read more before each
        update or deletion: the writes of such a run are few, as the server refuses
        them too, and one overwrite without a word is what this all avoids), and the
        check is made again next run (``findings`` says so)."""
        if self._if_match_ignored is None and self._if_match_unchecked is None:
            name = f"{IF_MATCH_CHECK}{uuid.uuid4().hex}"
            href = f"{normalize_href(urlsplit(calendar).path)}{name}.ics"
            text = _CHECK_EVENT.format(uid=f"{name}@crmcal")
            reply = self._put(calendar, href, text, {"If-Match": NEVER_MATCHES})
            if reply.status in (200, 201, 204):
                self._if_match_ignored = True
                self._send("DELETE", self._url(calendar, href), "", {})
                log.warning(
                    "the CalDAV server at %s ignores If-Match: each event is read again "
                    "right before crmcal writes it",
                    self._origin,
                )
                self._learn()
            elif reply.status == 412:
                self._if_match_ignored = False
                self._learn()
            else:
                self._if_match_unchecked = reply.status
                log.info("the CalDAV server at %s answered the If-Match check %s: checked "
                         "again next sync", self._origin, reply.status)  # fmt: skip
        return self._if_match_ignored is not False

    def findings(self) -> tuple[str, ...] | None:
        """What this run found out of the server that its user should know (a warning of
        the connection's status); None: nothing found out (what earlier runs said stands)."""
        if self._if_match_ignored:
            return (
                "the CalDAV server ignores If-Match (it took a write over a version it never "
                "gave): each event is read again right before crmcal writes it",
            )
        if self._if_match_unchecked is not None:
            return (
                f"the CalDAV server answered crmcal's If-Match check {self._if_match_unchecked}, "
                "so whether it honours If-Match is not known: each event is read again right "
                "before crmcal writes it, and the check is made again next sync",
            )
        return () if self._if_match_ignored is False else None

    def _check_writable(self, calendar: str, reply: _Reply) -> None:
        """After a write answered 403 without a precondition named: ``WritesRefused``
        when the calendar now grants this account no write privilege (RFC 3744 5.4; its
        owner shared it read-only, or took write access back). Every write would be
        refused the same way: said once, as the calendar's setup, instead of one
        refused event at every sync. A server that does not say leaves it at that one
        event's refusal."""
        if reply.status != 403 or reply.preconditions:
            return
        answer = self._propfind(calendar, ["<D:current-user-privilege-set/>"], 0)
        for member in _members(answer.tree if answer.status == 207 else None):
            privileges = member.props.get(f"{DAV}current-user-privilege-set")
            if privileges is None:
                return
            if {p.tag for privilege in privileges for p in privilege} & WRITE_PRIVILEGES:
                return
            raise WritesRefused(
                f"the calendar {calendar} is read-only for this account: the CalDAV server "
                "refused a write (403) and grants no write privilege on it (shared "
                "read-only?); crmcal can sync it only calendar_to_crm: connect it so, or "
                "get write access to it"
            )

    def _refused_over(self, calendar: str, href: str, etag: str | None) -> ProviderError | None:
        """What a 412 to a write (update or deletion) over ``etag`` means, read from the
        resource as it is now: None when it is gone (Radicale answers 412 for a missing
        resource too); ``WritesRefused`` when it still has that very weak tag (the
        server refused its own, ``_weak_tag_refused``); else ``PreconditionFailed``:
        someone changed it."""
        found = self._get(calendar, href)
        if found is None:
            return None
        return _weak_tag_refused(etag, found[0]) or PreconditionFailed(
            f"the event {href} changed since {etag}"
        )


@dataclasses.dataclass
class _Streaming:
    """How a first import's streamed query went: read to its end or not."""

    complete: bool = False
    # The names read once the answer ended: ``_names``'s answer, or the error it met.
    names: list[str] | ProviderError | None = None


def _streamable(answer: guarded_http.Streamed) -> bool:
    """Whether an answer to the streamed query is a multistatus to read as it comes: in
    XML, and in UTF-8 (one in another charset, ``_in_utf8``, is read by name instead)."""
    content_type = answer.headers.get("content-type", "").lower()
    if answer.status != 207 or "xml" not in content_type:
        return False
    declared = _CHARSET.search(content_type)
    if declared is None:
        return True
    try:
        return codecs.lookup(declared.group(1)).name in ("utf-8", "ascii")
    except LookupError:
        return False


class _Dropped(Unreachable):
    """The connection ended while a request went out or before its answer came (not a
    timeout: a server that is slow may still be at work on it)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


_DROPS = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)
# Requests whose second sending does nothing the first did not: reads, and a DELETE
# (one that went through before is answered 404, which ``_delete`` takes as done).
_SAFE_TO_REPEAT = frozenset({"GET", "PROPFIND", "REPORT", "DELETE"})


def _url_problem(url: str, given: str) -> str | None:
    """Why ``url`` (as ``given`` by the user) cannot be a CalDAV server's URL, if it cannot."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  # raises on a port that is no number
    except ValueError:
        return f"{given!r} is not a valid URL"
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return f"{given!r} is not an http:// or https:// address of a CalDAV server"
    if any(c.isspace() for c in url):
        return f"{given!r} is not a valid URL (it contains spaces)"
    try:
        guarded_http.parse_url(url)
    except guarded_http.AddressRefused as refused:
        return f"{given!r} is refused: {refused}"
    return None
