"""Refusing calendar URLs that point into crmcal's own network (server-side request forgery).

A user who may type a CalDAV URL could otherwise make the server probe
loopback, private or link-local addresses. Such URLs are refused unless the
operator allows them (CRMCAL_ALLOW_PRIVATE_NETWORKS), as the demo and tests do.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit


class UrlRefused(ValueError):
    pass


def _is_internal(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


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
    if not parts.hostname:
        raise UrlRefused("url: the URL has no host name")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise UrlRefused("url: the port is not a number between 1 and 65535") from None
    return parts.hostname, port


async def check_public(url: str) -> None:
    """Refuse ``url`` if its host resolves to an internal address."""
    host, port = check_scheme(url)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise UrlRefused(f"url: the host name {host!r} does not resolve") from None
    for info in infos:
        if _is_internal(str(info[4][0])):
            raise UrlRefused(
                f"url: {host} is on a private or loopback network, which this server does "
                "not allow (CRMCAL_ALLOW_PRIVATE_NETWORKS)"
            )
