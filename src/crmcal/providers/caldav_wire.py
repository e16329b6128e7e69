"""What the CalDAV modules share of the wire: the XML namespaces, a resource's id
(``normalize_href``) and an account's origin, and a multistatus answer (RFC 4918 13)
read from its parsed XML, one ``Member`` a ``DAV:response``.

``caldav`` (listings, contents, writes) and ``caldav_discovery`` (principal, home,
calendars) both read answers this way; neither knows the other's requests.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, unquote_to_bytes, urlsplit

import httpx

from crmcal.providers import guarded_http
from crmcal.providers.base import ProviderError

__all__ = [
    "ADDRESS_SET",
    "CALDAV",
    "DAV",
    "WRITE_PRIVILEGES",
    "MalformedReply",
    "Member",
    "Reply",
    "collection_url",
    "href_in",
    "members",
    "normalize_href",
    "origin",
    "origin_key",
    "text_of",
]

DAV = "{DAV:}"
CALDAV = "{urn:ietf:params:xml:ns:caldav}"
_PATH_SAFE = "/:@!$&'()*+,;=-._~"
# A path of these characters alone is what ``quote`` leaves as it is.
_SAFE_ONLY = re.compile(r"[A-Za-z0-9/:@!$&'()*+,;=\-._~]*")
ADDRESS_SET = f"{CALDAV}calendar-user-address-set"
# The privileges (RFC 3744 3) of a ``current-user-privilege-set`` that let one write.
WRITE_PRIVILEGES = frozenset({f"{DAV}all", f"{DAV}write", f"{DAV}write-content"})


def normalize_href(href: str) -> str:
    """The canonical id of a resource: its URL path, percent-encoded one way."""
    path = urlsplit(href).path if "://" in href else href.split("?", 1)[0].split("#", 1)[0]
    # ``quote(unquote(path))``, without their cost for the hrefs of every member of a
    # listing (5,000 twice in a first import): an ASCII path's escapes read as UTF-8
    # bytes as ``unquote`` reads them, and a path of safe characters quoted as it is.
    if "%" in path and path.isascii():
        path = unquote_to_bytes(path).decode("utf-8", "replace")
    elif "%" in path:
        path = unquote(path)
    if _SAFE_ONLY.fullmatch(path):
        return path or "/"
    return quote(path, safe=_PATH_SAFE) or "/"


def collection_url(url: str) -> str:
    parts = urlsplit(url)
    path = normalize_href(parts.path or "/")
    if not path.endswith("/"):
        path += "/"
    return f"{parts.scheme}://{parts.netloc}{path}"


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def origin_key(url: str) -> str:
    """``scheme://host:port`` of a URL, one way however it was written."""
    try:
        scheme, host, port = guarded_http.origin(url)
    except (httpx.InvalidURL, ValueError):
        return "(an invalid URL)"
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


class MalformedReply(ProviderError):
    """An answer that claims to be XML and is not."""


@dataclass
class Reply:
    """What a request came back with, whatever its status."""

    status: int
    headers: Mapping[str, str]
    tree: Any  # the parsed XML body, if it was XML
    text: str  # the body, if it was not
    preconditions: list[str]  # Clark tags of a DAV:error body (RFC 4918 16)
    # Sent a second time: the connection dropped the first before any answer.
    repeated: bool = False

    def header(self, name: str) -> str | None:
        value = self.headers.get(name)
        return value.strip() if isinstance(value, str) and value.strip() else None


@dataclass
class Member:
    href: str  # normalised
    status: int
    props: dict[str, Any]  # Clark tag -> element, from propstats with status 200
    # Clark tag -> status, for the properties a propstat of another status answers
    withheld: dict[str, int] = dataclasses.field(default_factory=dict)


_RESPONSE, _HREF, _STATUS = f"{DAV}response", f"{DAV}href", f"{DAV}status"
_PROPSTAT, _PROP = f"{DAV}propstat", f"{DAV}prop"


def members(tree: Any) -> Iterator[Member]:
    """The ``DAV:response`` elements of a multistatus body.

    Each response's children are walked once (a listing has one response per
    resource: lxml's ``find``/``findtext`` per child cost twice as much); as with them,
    the first ``href`` and ``status`` of a response or propstat count."""
    if tree is None:
        return
    for response in tree.iter(_RESPONSE):
        href: str | None = None
        line: str | None = None
        propstats = []
        for child in response:
            tag = child.tag
            if tag == _HREF:
                href = (child.text or "") if href is None else href
            elif tag == _PROPSTAT:
                propstats.append(child)
            elif tag == _STATUS and line is None:
                line = child.text or ""
        if not href:
            continue
        props: dict[str, Any] = {}
        withheld: dict[str, int] = {}
        for propstat in propstats:
            code, prop = _status_and_prop(propstat)
            if prop is None:
                continue
            for child in prop:
                if code == 200:
                    props[child.tag] = child
                else:
                    withheld[child.tag] = code or 0
        yield Member(normalize_href(href.strip()), _status_code(line) or 200, props, withheld)


def _status_and_prop(propstat: Any) -> tuple[int | None, Any]:
    """A propstat's status code and its ``prop`` element (the first of each)."""
    line: str | None = None
    prop = None
    for child in propstat:
        tag = child.tag
        if tag == _STATUS and line is None:
            line = child.text or ""
        elif tag == _PROP and prop is None:
            prop = child
    return _status_code(line), prop


def _status_code(line: str | None) -> int | None:
    parts = (line or "").split()
    return int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else None


def href_in(element: Any) -> str | None:
    if element is None:
        return None
    href = element.findtext(f"{DAV}href")
    return href.strip() if href and href.strip() else None


def text_of(element: Any) -> str | None:
    if element is None or element.text is None:
        return None
    return element.text.strip() or None
