"""A CalDAV server that behaves like a stricter one: a proxy in front of Radicale or
Xandikos that counts requests and can answer the way other servers do.

``weak_etags`` gives every GET answer a weak ETag (``W/"…"``), as Cyrus does for a
compressed answer; ``strict_times`` refuses what Cyrus (Fastmail) refuses with
``valid-calendar-data``: a timed event whose DTEND equals its DTSTART, a zero
DURATION, or neither DTEND nor DURATION; ``refuse`` refuses writes whose body holds
a given text, with the server's own words, and ``refuse_delete`` deletions whose path
holds one; ``partial`` answers some members of a
REPORT's multistatus with another status, or leaves them out, as RFC 4918 lets a
server do (one status per resource); ``octet_folds`` folds the calendar data it answers
(GET, REPORT) at 75 octets wherever that falls, inside a UTF-8 sequence too, as some
servers do; ``garbled`` answers the calendar data of the resources it names (by a
text in their href) cut short, as a server with a broken resource in its store does.
``listing_etags`` leaves ``getetag`` out of every multistatus answer (``"missing"``) or
answers it empty (``"empty"``); ``unquoted_etags`` answers them without their quotes in
the REPORTs it names (``abc`` for ``"abc"``); ``all_weak`` makes every ETag weak, in headers and
listings, and takes in ``If-Match`` only the tag as it gave it (Cyrus does; any other
spelling is answered ``412``), and with ``weak_if_match_refused`` not even that: a
weak tag never matches, as If-Match's strong comparison says (RFC 9110 13.1.1), so
every conditional write is answered ``412``; ``rewrite_stored`` stores a PUT's body changed (a
property of the server's own, another property order, a new DTSTAMP) and answers
without an ETag; ``absolute_hrefs`` and ``recode_hrefs`` answer multistatus hrefs as
absolute URLs and percent-encoded another way than asked (every octet but ``/``, in
lower-case hex); ``collection_member`` lists the collection itself, without its
trailing slash, among a listing's members; ``foreign_member`` lists a resource on
another host among them; ``no_sync_tokens`` is a server without RFC 6578 (no
``sync-collection``, no ``DAV:sync-token``), ``no_ctag`` one without a CTag either;
``charset`` sends answers in another charset than UTF-8, declared in Content-Type only;
``read_only`` is a calendar shared read-only (writes 403, only ``DAV:read`` granted);
``page_sync`` pages sync-collection answers with 507 and tokens of its own;
``redirect`` answers paths with a redirect (or another status) of its own;
``content_coding`` answers gzip-compressed, or labelled with a coding nobody asked for;
``login_page`` answers methods with an HTML sign-in page (200); ``created_status``
answers a PUT that made a resource 200 or 204 (without its ETag) instead of 201;
``ignore_if_match`` is a server that ignores ``If-Match``.
Served on 127.0.0.1 port 0 by uvicorn.
"""

from __future__ import annotations

import asyncio
import gzip
import re
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

import httpx
from lxml import etree
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from crmcal.providers.caldav import IF_MATCH_CHECK
from crmcal.tls import tls
from tests.served import served_app

CYRUS_REFUSAL = (
    '<?xml version="1.0" encoding="utf-8"?>\n<D:error xmlns:D="DAV:" '
    'xmlns:C="urn:ietf:params:xml:ns:caldav"><C:valid-calendar-data/>'
    "<D:responsedescription>{}</D:responsedescription></D:error>"
)
# A deletion refused for that one event (a server that keeps some events, say).
DELETE_REFUSAL = (
    '<?xml version="1.0" encoding="utf-8"?>\n<D:error xmlns:D="DAV:"><D:need-privileges/>'
    "<D:responsedescription>{}</D:responsedescription></D:error>"
)
LOGIN_PAGE = (
    b"<!DOCTYPE html><html><head><title>Sign in</title></head><body><form method=post>"
    b"<input name=user><input name=password type=password></form></body></html>"
)
NO_SYNC_REPORT = b'<?xml version="1.0"?><D:error xmlns:D="DAV:"><D:supported-report/></D:error>'
_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding",
        "host"}  # fmt: skip


@dataclass
class Behaviour:
    weak_etags: bool = False
    strict_times: bool = False
    refuse: dict[str, str] = field(default_factory=dict)  # text in a PUT body -> reason
    # Text in a DELETE's path -> the reason it is refused (403, with a precondition).
    refuse_delete: dict[str, str] = field(default_factory=dict)
    requests: Counter[tuple[str, str]] = field(default_factory=Counter)  # (method, path)
    reports: Counter[str] = field(default_factory=Counter)  # REPORT kind -> how many
    # Run once before the next request of a method reaches the server (with its path):
    # another client's change that lands in the middle of a sync.
    before: dict[str, Callable[[str], None]] = field(default_factory=dict)
    # Run once after the server answered the next request of a method, before crmcal
    # gets that answer: a change that lands right after one of crmcal's own.
    after: dict[str, Callable[[str], None]] = field(default_factory=dict)
    # (REPORT kind, text in a member's href) -> the status that member is answered
    # with instead (None: the answer leaves it out).
    partial: dict[tuple[str, str], int | None] = field(default_factory=dict)
    octet_folds: bool = False
    garbled: set[str] = field(default_factory=set)  # texts in hrefs
    # (REPORT kind, text in a member's href) -> the status of the propstat its calendar
    # data is answered in (its ETag stays in a 200 propstat).
    propstat: dict[tuple[str, str], int] = field(default_factory=dict)
    truncate_sync: int | None = None  # members a sync-collection answer keeps
    volatile_etags: bool = False
    no_put_etag: bool = False
    gets: int = 0  # GETs answered (for volatile ETags)
    listing_etags: str | None = None  # "missing" or "empty"
    all_weak: bool = False
    weak_if_match_refused: bool = False
    rewrite_stored: bool = False
    stored: int = 0  # PUT bodies rewritten
    absolute_hrefs: bool = False
    recode_hrefs: bool = False
    collection_member: bool = False
    foreign_member: str | None = None  # an absolute URL
    if_matches: list[str] = field(default_factory=list)  # If-Match headers, as sent
    # (method, path) -> the status the next such request is answered with, unforwarded.
    fail_once: dict[tuple[str, str], int] = field(default_factory=dict)
    # No sync tokens: sync-collection refused (403 DAV:supported-report), no DAV:sync-token
    # property; ``no_ctag`` leaves the CTag (CS:getctag) out too.
    no_sync_tokens: bool = False
    no_ctag: bool = False
    # ETags answered without their quotes (``abc`` for ``"abc"``) in the REPORT answers
    # of these kinds: a server that spells one version two ways in two answers.
    unquoted_etags: set[str] = field(default_factory=set)
    # Answers (calendar data and XML) sent in this charset, declared in Content-Type
    # only, as a server configured for Latin-1 does.
    charset: str | None = None
    charset_label_only: bool = False  # ``charset`` declared, the body left in UTF-8
    # A calendar shared read-only: PUT and DELETE answered 403, and PROPFIND answers
    # granting ``DAV:read`` alone as ``current-user-privilege-set`` (RFC 3744 5.4).
    read_only: bool = False
    # A server that pages its sync-collection answers (RFC 6578 3.6): this many members
    # an answer, the collection answered 507, and a token of the proxy's own that
    # continues after them (a real token of the server once the rest fits).
    page_sync: int | None = None
    # path -> (status, Location): answered so for any method, unforwarded (no Location
    # header when it is empty).
    redirect: dict[str, tuple[int, str]] = field(default_factory=dict)
    # Every answer in this content coding ("gzip": compressed; any other: as it is,
    # only labelled so, as a server sending a coding nobody asked for).
    content_coding: str | None = None
    # Methods answered 200 with an HTML sign-in page, as a single sign-on proxy whose
    # session ran out answers them.
    login_page: set[str] = field(default_factory=set)
    # The status a successful PUT that made a resource is answered with (201 as the
    # server gives it: 200 or 204, as other servers do), its ETag dropped with 204.
    created_status: int | None = None
    ignore_if_match: bool = False  # If-Match dropped before the server sees it
    # The status crmcal's If-Match check (a PUT under a version no server gives) is
    # answered with, unforwarded: a 403 read-only, a 507 full, a 503 ... (None: forwarded).
    if_match_check: int | None = None
    sync_pages: dict[str, tuple[str, int]] = field(default_factory=dict)

    def count(self, method: str, suffix: str = "") -> int:
        """Requests of ``method`` to paths ending in ``suffix``, but the If-Match check
        (``CalDAVProvider._ignores_if_match``), which writes no event."""
        return sum(n for (m, p), n in self.requests.items()
                   if m == method and p.endswith(suffix) and IF_MATCH_CHECK not in p)  # fmt: skip


def _partial(body: bytes, kind: str, behaviour: Behaviour) -> bytes:
    """A multistatus ``body`` with the members ``behaviour.partial`` names changed."""
    rules = {text: status for (k, text), status in behaviour.partial.items() if k == kind}
    if not rules:
        return body
    tree = etree.fromstring(body)
    for response in tree.findall("{DAV:}response"):
        href = response.findtext("{DAV:}href") or ""
        status = next((rules[text] for text in rules if text in href), 0)
        if status is None:
            tree.remove(response)
        elif status:
            for child in list(response):
                if child.tag != "{DAV:}href":
                    response.remove(child)
            etree.SubElement(response, "{DAV:}status").text = f"HTTP/1.1 {status} Refused"
    return bytes(etree.tostring(tree, xml_declaration=True, encoding="utf-8"))


def _propstat(body: bytes, kind: str, behaviour: Behaviour) -> bytes:
    """A multistatus ``body`` whose members ``behaviour.propstat`` names have their
    calendar data moved to a propstat of the status it gives, emptied."""
    rules = {text: status for (k, text), status in behaviour.propstat.items() if k == kind}
    if not rules:
        return body
    tree = etree.fromstring(body)
    for response in tree.findall("{DAV:}response"):
        href = response.findtext("{DAV:}href") or ""
        status = next((rules[text] for text in rules if text in href), None)
        if status is None:
            continue
        for data in list(response.iter("{urn:ietf:params:xml:ns:caldav}calendar-data")):
            holder = data.getparent()
            if holder is not None:
                holder.remove(data)
        propstat = etree.SubElement(response, "{DAV:}propstat")
        prop = etree.SubElement(propstat, "{DAV:}prop")
        etree.SubElement(prop, "{urn:ietf:params:xml:ns:caldav}calendar-data")
        etree.SubElement(propstat, "{DAV:}status").text = f"HTTP/1.1 {status} Not Given"
    return bytes(etree.tostring(tree, xml_declaration=True, encoding="utf-8"))


def _truncated_sync(body: bytes, keep: int, collection: str) -> bytes:
    """A sync-collection answer cut to its first ``keep`` members, with the collection
    answered ``507`` (RFC 6578 3.6)."""
    tree = etree.fromstring(body)
    members = tree.findall("{DAV:}response")
    for response in members[keep:]:
        tree.remove(response)
    marker = etree.Element("{DAV:}response")
    etree.SubElement(marker, "{DAV:}href").text = collection
    etree.SubElement(marker, "{DAV:}status").text = "HTTP/1.1 507 Insufficient Storage"
    error = etree.SubElement(marker, "{DAV:}error")
    etree.SubElement(error, "{DAV:}number-of-matches-within-limits")
    tree.insert(min(keep, len(members)), marker)
    return bytes(etree.tostring(tree, xml_declaration=True, encoding="utf-8"))


def _unquoted(body: bytes) -> bytes:
    """A multistatus ``body`` with its ``getetag`` values stripped of their quotes."""
    tree = etree.fromstring(body)
    for etag in tree.iter("{DAV:}getetag"):
        etag.text = (etag.text or "").strip().strip('"')
    return bytes(etree.tostring(tree, xml_declaration=True, encoding="utf-8"))


def _read_only(body: bytes) -> bytes:
    """A PROPFIND answer whose members grant ``DAV:read`` alone."""
    tree = etree.fromstring(body)
    for response in tree.findall("{DAV:}response"):
        for found in list(response.iter("{DAV:}current-user-privilege-set")):
            holder = found.getparent()
            if holder is not None:
                holder.remove(found)
        propstat = etree.SubElement(response, "{DAV:}propstat")
        granted = etree.SubElement(
            etree.SubElement(propstat, "{DAV:}prop"), "{DAV:}current-user-privilege-set"
        )
        etree.SubElement(etree.SubElement(granted, "{DAV:}privilege"), "{DAV:}read")
        etree.SubElement(propstat, "{DAV:}status").text = "HTTP/1.1 200 OK"
    return bytes(etree.tostring(tree, xml_declaration=True, encoding="utf-8"))


def _recharset(body: bytes, headers: dict[str, str], charset: str, label_only: bool) -> bytes:
    """A UTF-8 calendar or XML ``body`` in ``charset``, declared in Content-Type alone
    (``headers`` changed so): the XML declaration is left out. ``label_only``: only
    declared so, the body left as it was (a server mislabelling its UTF-8)."""
    kind = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
    for name in [k for k in headers if k.lower() == "content-type"]:
        del headers[name]
    text = body.decode("utf-8")
    if label_only:
        xml = "xml" in kind or text.lstrip().startswith("<")
        headers["content-type"] = (
            f"{'application/xml' if xml else 'text/calendar'}; charset={charset}"
        )
        return body
    if "xml" in kind or text.lstrip().startswith("<"):
        text = re.sub(r"^\s*<\?xml[^>]*\?>", "", text)
        headers["content-type"] = f"application/xml; charset={charset}"
        return text.encode(charset, "xmlcharrefreplace")
    headers["content-type"] = f"text/calendar; charset={charset}"
    return text.encode(charset)


_SYNC_TOKEN = re.compile(rb"<(\w+:)?sync-token\s*/>|<(\w+:)?sync-token>([^<]*)</(\w+:)?sync-token>")
PAGE_TOKEN = "http://proxy.test/sync/page-"


def _paged_request(body: bytes, behaviour: Behaviour) -> tuple[bytes, tuple[str, int]]:
    """A sync-collection request with a page token of the proxy's put back to the
    server's token it continues, and (that token, members already answered)."""
    found = _SYNC_TOKEN.search(body)
    token = (found.group(3) or b"").decode().strip() if found else ""
    real, skip = behaviour.sync_pages.get(token, (token, 0))
    if found is not None and token != real:
        element = f"<D:sync-token>{real}</D:sync-token>" if real else "<D:sync-token/>"
        body = body[: found.start()] + element.encode() + body[found.end() :]
    return body, (real, skip)


def _paged_answer(body: bytes, page: tuple[str, int], collection: str, behaviour: Behaviour
                  ) -> bytes:  # fmt: skip
    """The members of a sync-collection answer after the ``page``'s first ones, at most
    ``behaviour.page_sync``: when more remain, the collection answered 507 and a page
    token of the proxy's own as the answer's token."""
    real, skip = page
    assert behaviour.page_sync is not None
    tree = etree.fromstring(body)
    members = tree.findall("{DAV:}response")
    for response in members[:skip] + members[skip + behaviour.page_sync :]:
        tree.remove(response)
    if skip + behaviour.page_sync >= len(members):
        return bytes(etree.tostring(tree, xml_declaration=True, encoding="utf-8"))
    token = f"{PAGE_TOKEN}{len(behaviour.sync_pages)}"
    behaviour.sync_pages[token] = (real, skip + behaviour.page_sync)
    marker = etree.SubElement(tree, "{DAV:}response")
    etree.SubElement(marker, "{DAV:}href").text = collection
    etree.SubElement(marker, "{DAV:}status").text = "HTTP/1.1 507 Insufficient Storage"
    error = etree.SubElement(marker, "{DAV:}error")
    etree.SubElement(error, "{DAV:}number-of-matches-within-limits")
    for element in tree.iter("{DAV:}sync-token"):
        element.text = token
    return bytes(etree.tostring(tree, xml_declaration=True, encoding="utf-8"))


def _weak(etag: str) -> str:
    return etag if etag.startswith("W/") else f"W/{etag}"


def _recoded(path: str) -> str:
    """``path`` percent-encoded in every octet but ``/`` and unreserved ASCII, lower-case hex."""
    encoded = quote(unquote(path), safe="/")
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), encoded)


def _listing(body: bytes, method: str, path: str, origin: str, behaviour: Behaviour) -> bytes:
    """A multistatus ``body`` with its ETags and hrefs answered as ``behaviour`` says."""
    tree = etree.fromstring(body)
    doomed = [*(tree.iter("{DAV:}sync-token") if behaviour.no_sync_tokens else ()),
              *(tree.iter("{http://calendarserver.org/ns/}getctag") if behaviour.no_ctag
                else ())]  # fmt: skip
    for element in doomed:
        holder = element.getparent()
        if holder is not None and holder.tag == "{DAV:}prop":
            holder.remove(element)
    for etag in list(tree.iter("{DAV:}getetag")):
        if behaviour.listing_etags == "missing":
            holder = etag.getparent()
            if holder is not None:
                holder.remove(etag)
        elif behaviour.listing_etags == "empty":
            etag.text = ""
        elif behaviour.all_weak and etag.text:
            etag.text = _weak(etag.text.strip())
    members = tree.findall("{DAV:}response")
    collection = path.rstrip("/")
    if behaviour.collection_member and method == "REPORT":
        member = etree.SubElement(tree, "{DAV:}response")
        etree.SubElement(member, "{DAV:}href").text = collection
        propstat = etree.SubElement(member, "{DAV:}propstat")
        etree.SubElement(
            etree.SubElement(propstat, "{DAV:}prop"), "{DAV:}getetag"
        ).text = '"the-collection"'
        etree.SubElement(propstat, "{DAV:}status").text = "HTTP/1.1 200 OK"
    if behaviour.foreign_member and (method == "REPORT" or len(members) > 1):
        member = etree.SubElement(tree, "{DAV:}response")
        etree.SubElement(member, "{DAV:}href").text = behaviour.foreign_member
        propstat = etree.SubElement(member, "{DAV:}propstat")
        etree.SubElement(
            etree.SubElement(propstat, "{DAV:}prop"), "{DAV:}getetag"
        ).text = '"elsewhere"'
        etree.SubElement(propstat, "{DAV:}status").text = "HTTP/1.1 200 OK"
    for response in tree.findall("{DAV:}response"):
        href = response.find("{DAV:}href")
        if href is None or not (href.text or "").startswith("/"):
            continue
        text = href.text or ""
        if behaviour.collection_member and text.rstrip("/") == collection:
            text = collection  # the collection, without its trailing slash
        if behaviour.recode_hrefs:
            text = _recoded(text)
        if behaviour.absolute_hrefs:
            text = origin + text
        href.text = text
    return bytes(etree.tostring(tree, xml_declaration=True, encoding="utf-8"))


def _stored_otherwise(body: bytes, behaviour: Behaviour) -> bytes:
    """A PUT body as a server that rewrites what it stores keeps it: unfolded, a
    property of its own and a new DTSTAMP in each event, SUMMARY moved to the end."""
    behaviour.stored += 1
    lines = _unfolded(body.decode()).replace("\r\n", "\n").split("\n")
    out: list[str] = []
    summary: str | None = None
    depth = 0
    for line in lines:
        name = line.split(":", 1)[0].split(";", 1)[0].upper()
        if line.upper() == "BEGIN:VEVENT":
            depth = 1
            out.append(line)
            out.append(f"X-SERVER-STORED:{behaviour.stored}")
            continue
        if depth and line.upper().startswith("BEGIN:"):
            depth += 1
        elif depth > 1 and line.upper().startswith("END:"):
            depth -= 1
        elif depth == 1 and line.upper() == "END:VEVENT":
            depth = 0
            if summary is not None:
                out.append(summary)
            summary = None
        elif depth == 1 and name == "SUMMARY":
            summary = line
            continue
        elif depth == 1 and name == "DTSTAMP":
            line = f"DTSTAMP:2030010{behaviour.stored % 10}T000000Z"
        out.append(line)
    return "\r\n".join(out).encode()


GARBLED = "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:broken\r\nDTSTART:2026-12-01\r\n"


def _garbled(body: bytes, behaviour: Behaviour) -> bytes:
    """A multistatus ``body`` whose members ``behaviour.garbled`` names have their
    calendar data cut short."""
    tree = etree.fromstring(body)
    for response in tree.findall("{DAV:}response"):
        href = response.findtext("{DAV:}href") or ""
        if any(text in href for text in behaviour.garbled):
            for data in response.iter("{urn:ietf:params:xml:ns:caldav}calendar-data"):
                data.text = GARBLED
    return bytes(etree.tostring(tree, xml_declaration=True, encoding="utf-8"))


def _folded_at_octets(text: str) -> bytes:
    """``text`` (iCalendar) folded every 75 octets, wherever that falls."""
    lines = []
    for line in _unfolded(text).replace("\r\n", "\n").split("\n"):
        raw = line.encode()
        parts = [raw[:75]] + [raw[n : n + 74] for n in range(75, len(raw), 74)]
        lines.append(b"\r\n ".join(parts))
    return b"\r\n".join(lines)


def _octet_folds(body: bytes, content_type: str) -> bytes:
    """A GET or REPORT answer with its calendar data folded by ``_folded_at_octets``."""
    if "calendar" in content_type and "xml" not in content_type:
        return _folded_at_octets(body.decode())
    tree = etree.fromstring(body)
    found = tree.findall(".//{urn:ietf:params:xml:ns:caldav}calendar-data")
    texts = [element.text or "" for element in found]
    for n, element in enumerate(found):
        element.text = f"@calendar-data-{n}@"
    out = bytes(etree.tostring(tree, xml_declaration=True, encoding="utf-8"))
    for n, text in enumerate(texts):
        folded = _folded_at_octets(text).replace(b"&", b"&amp;").replace(b"<", b"&lt;")
        out = out.replace(f"@calendar-data-{n}@".encode(), folded.replace(b">", b"&gt;"))
    return out


def _unfolded(text: str) -> str:
    return text.replace("\r\n ", "").replace("\n ", "")


def _cyrus_refuses(body: str) -> str | None:
    """Why Cyrus would refuse this event's times, if it would."""
    text = _unfolded(body)
    event = text[text.find("BEGIN:VEVENT") :]
    start = re.search(r"^DTSTART([;:][^\r\n]*)$", event, re.M)
    if start is None or "VALUE=DATE" in start.group(1).split(":", 1)[0]:
        return None
    end = re.search(r"^DTEND([;:][^\r\n]*)$", event, re.M)
    duration = re.search(r"^DURATION[;:]([^\r\n]*)$", event, re.M)
    if end is None and duration is None:
        return "VEVENT with DTSTART of type DATE-TIME must have DTEND or DURATION"
    if duration is not None and re.fullmatch(r"[+]?P(T0+[HMS]|0+[DW])", duration.group(1).strip()):
        return "DURATION must be positive"
    if end is not None and end.group(1).rsplit(":", 1)[-1] == start.group(1).rsplit(":", 1)[-1]:
        return "DTEND must be later than DTSTART"
    return None


@contextmanager
def caldav_proxy(upstream: str, behaviour: Behaviour) -> Iterator[str]:
    """Serve a proxy to ``upstream`` (scheme://host:port) acting as ``behaviour`` says."""
    client = httpx.AsyncClient(verify=tls(), base_url=upstream, timeout=60)

    async def forward(request: Request) -> Response:
        path = request.url.path
        behaviour.requests[(request.method, path)] += 1
        hook = behaviour.before.pop(request.method, None)
        if hook is not None:
            await asyncio.to_thread(hook, path)
        body = await request.body()
        if request.method in behaviour.login_page:
            return Response(LOGIN_PAGE, 200, media_type="text/html; charset=utf-8")
        if path in behaviour.redirect:
            status, location = behaviour.redirect[path]
            return Response(b"", status, headers={"Location": location} if location else {})
        failed = behaviour.fail_once.pop((request.method, path), None)
        if failed is not None:
            return Response(b"", failed)
        if (
            behaviour.if_match_check is not None
            and request.method == "PUT"
            and IF_MATCH_CHECK in path
        ):
            return Response(b"", behaviour.if_match_check)
        report = ""
        if request.method == "REPORT":
            kind = re.search(rb"<\w+:(sync-collection|calendar-multiget|calendar-query)", body)
            report = kind.group(1).decode() if kind else "other"
            behaviour.reports[report] += 1
            if report == "sync-collection" and behaviour.no_sync_tokens:
                return Response(NO_SYNC_REPORT, 403, media_type="application/xml")
        if behaviour.read_only and request.method in ("PUT", "DELETE"):
            return Response(b"Access to the requested resource forbidden", 403,
                            media_type="text/plain")  # fmt: skip
        page: tuple[str, int] | None = None
        if report == "sync-collection" and behaviour.page_sync is not None:
            body, page = _paged_request(body, behaviour)
        if request.method == "PUT" and behaviour.rewrite_stored:
            body = _stored_otherwise(body, behaviour)
        if request.method == "DELETE":
            reason = next((r for t, r in behaviour.refuse_delete.items() if t in path), None)
            if reason is not None:
                return Response(DELETE_REFUSAL.format(reason), 403,
                                media_type="application/xml; charset=utf-8")  # fmt: skip
        if request.method == "PUT":
            text = body.decode("utf-8", "replace")
            reason = next((r for t, r in behaviour.refuse.items() if t in text), None)
            if reason is None and behaviour.strict_times:
                reason = _cyrus_refuses(text)
            if reason is not None:
                return Response(CYRUS_REFUSAL.format(reason), 403,
                                media_type="application/xml; charset=utf-8")  # fmt: skip
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        if_match = request.headers.get("if-match")
        if if_match is not None and IF_MATCH_CHECK not in path:
            behaviour.if_matches.append(if_match)
        if behaviour.all_weak and if_match is not None and if_match.strip() != "*":
            if not if_match.strip().startswith("W/") or behaviour.weak_if_match_refused:
                return Response(b"", 412)  # only the tag as it was given matches, or none
            headers = {k: v for k, v in headers.items() if k.lower() != "if-match"}
            headers["If-Match"] = if_match.strip()[2:]
        if behaviour.rewrite_stored and request.method == "PUT":
            headers = {k: v for k, v in headers.items() if k.lower() != "content-length"}
        if behaviour.ignore_if_match:
            headers = {k: v for k, v in headers.items() if k.lower() != "if-match"}
        raw_path = request.scope.get("raw_path") or path.encode()
        query = request.url.query
        answer = await client.request(
            request.method,
            raw_path.decode("ascii", "replace") + (f"?{query}" if query else ""),
            content=body, headers=headers,
        )  # fmt: skip
        hook = behaviour.after.pop(request.method, None)
        if hook is not None:
            await asyncio.to_thread(hook, path)
        out = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP}
        etag = answer.headers.get("etag")
        if behaviour.weak_etags and request.method == "GET" and etag and not etag.startswith("W/"):
            out["etag"] = "W/" + etag
        if behaviour.volatile_etags and request.method == "GET" and etag:
            behaviour.gets += 1
            out["etag"] = f'"get-{behaviour.gets}"'
        if behaviour.all_weak and etag:
            out["etag"] = _weak(etag.strip())
        if (behaviour.no_put_etag or behaviour.rewrite_stored) and request.method == "PUT":
            out.pop("etag", None)
            out.pop("ETag", None)
        content = answer.content
        status = answer.status_code
        if request.method == "PUT" and status == 201 and behaviour.created_status:
            status = behaviour.created_status
            if status == 204:
                out.pop("etag", None)
                content = b""
        if report and answer.status_code == 207:
            content = _partial(content, report, behaviour)
            content = _propstat(content, report, behaviour)
            if page is not None:
                content = _paged_answer(content, page, path, behaviour)
            if report == "sync-collection" and behaviour.truncate_sync is not None:
                content = _truncated_sync(content, behaviour.truncate_sync, path)
            if behaviour.garbled:
                content = _garbled(content, behaviour)
            if report in behaviour.unquoted_etags:
                content = _unquoted(content)
        odd_listings = (behaviour.listing_etags, behaviour.all_weak, behaviour.absolute_hrefs,
                        behaviour.recode_hrefs, behaviour.collection_member,
                        behaviour.foreign_member, behaviour.no_sync_tokens,
                        behaviour.no_ctag)  # fmt: skip
        if (answer.status_code == 207 and request.method in ("PROPFIND", "REPORT")
                and any(odd_listings)):  # fmt: skip
            content = _listing(
                content,
                request.method,
                path,
                f"{request.url.scheme}://{request.headers.get('host', request.url.netloc)}",
                behaviour,
            )
        if request.method == "GET" and any(text in path for text in behaviour.garbled):
            content = GARBLED.encode()
        if behaviour.octet_folds and request.method in ("GET", "REPORT") and answer.is_success:
            content = _octet_folds(content, answer.headers.get("content-type", ""))
        asks_privileges = b"current-user-privilege-set" in body
        if behaviour.read_only and request.method == "PROPFIND" and asks_privileges:
            content = _read_only(content) if answer.status_code == 207 else content
        if behaviour.charset and answer.is_success and content:
            content = _recharset(content, out, behaviour.charset,
                                 behaviour.charset_label_only)  # fmt: skip
        if behaviour.content_coding and content:
            if behaviour.content_coding == "gzip":
                content = gzip.compress(content)
            out["content-encoding"] = behaviour.content_coding
        return Response(content, status, headers=out)

    methods = ["GET", "PUT", "DELETE", "PROPFIND", "REPORT", "OPTIONS", "MKCALENDAR", "HEAD",
               "PROPPATCH", "POST", "MOVE"]  # fmt: skip
    app = Starlette(routes=[Route("/{path:path}", forward, methods=methods)])
    with served_app(app) as url:
        yield url
