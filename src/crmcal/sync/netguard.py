"""Refusing calendar URLs that point into crmcal's own network (server-side request forgery).

A user who may type a CalDAV URL could otherwise make the server probe
loopback, private or link-local addresses. Such URLs are refused when the
connection is made, with a message for the user, unless the operator allows
them (CRMCAL_ALLOW_PRIVATE_NETWORKS), as the demo and tests do. The check uses
the provider transport's own URL parser, resolver and address policy
(``providers.guarded_http``), which checks every request again when it connects.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from crmcal.providers import guarded_http


class UrlRefused(ValueError):
    pass


def check_scheme(url: str) -> tuple[str, int]:
    """The host and port of an http(s) URL, or UrlRefused with the reason."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in {"imap", "imaps", "pop", "pop3", "pop3s", "smtp"}:
        raise UrlRefused(
            f"{scheme.upper()} is a mail protocol, not a calendar one: give the CalDAV URL "
            "of the account (https://…)"
        )
    if scheme not in {"http", "https"}:
        raise UrlRefused("url: give an http:// or https:// CalDAV URL")
    try:
        parsed = guarded_http.parse_url(url)
    except guarded_http.AddressRefused as refused:
        raise UrlRefused(f"url: {refused}") from None
    return parsed.host, guarded_http.origin(parsed)[2]


async def check_public(url: str) -> None:
    """Refuse ``url`` if its host resolves to an address that is not public."""
    host, port = check_scheme(url)
    try:
        await asyncio.to_thread(guarded_http.checked_addresses, host, port)
    except guarded_http.AddressRefused as refused:
        raise UrlRefused(f"url: {refused}") from None
