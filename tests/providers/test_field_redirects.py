"""Redirects from a CalDAV account's URL, as servers in the field send them.

Radicale and Xandikos serve the calendar; crmcal reaches them through
``tests.caldav_proxy``, which redirects the paths a test names. A calendar's URL
given without its trailing slash is answered ``301``, ``302`` or ``308`` by many
servers (and ``/.well-known/caldav`` may be missing): the redirect is followed, on
the account's origin, and the account connects and syncs. A redirect loop is
refused at once, saying so. (A redirect to another origin, an internal address
among them, is refused as well: ``tests/test_security_transport.py``.)
"""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from tests.caldav_proxy import Behaviour
from tests.providers.synced import V1, Proxied


@pytest.mark.parametrize("status", [301, 302, 308])
async def test_a_calendar_url_without_its_slash_is_followed_to_the_calendar(
    proxied: Proxied,
    behaviour: Behaviour,
    status: int,
) -> None:
    path = urlsplit(proxied.calendar_id).path
    behaviour.redirect = {
        path.rstrip("/"): (status, path),
        "/.well-known/caldav": (404, ""),  # no help there
    }
    body = {**proxied.harness.connection_body(), "url": proxied.proxy + path.rstrip("/"),
            "calendar_id": proxied.proxy + path}  # fmt: skip
    made = proxied.user.post(f"{V1}/connections", json=body)
    assert made.status_code == 201, made.text
    proxied.connection_id = made.json()["id"]
    proxied.add_activity("Through the redirect")
    counts = proxied.sync_with_problems()
    assert (counts["problems"], counts["created"]) == ([], 1)
    assert list((await proxied.ids_by_title()).keys()) == ["Through the redirect"]


async def test_a_redirect_loop_is_refused_saying_so(
    proxied: Proxied,
    behaviour: Behaviour,
) -> None:
    behaviour.redirect = {
        "/dav": (301, "/dav/"),
        "/dav/": (308, "/dav"),
        "/.well-known/caldav": (301, "/.well-known/caldav"),
    }
    for url in (proxied.proxy + "/dav", proxied.proxy + "/"):
        if url.endswith("/"):  # the root is no account: discovery asks the well-known URL
            behaviour.redirect["/"] = (404, "")
        body = {**proxied.harness.connection_body(), "url": url}
        body.pop("calendar_id")
        refused = proxied.user.post(f"{V1}/connections", json=body)
        assert refused.status_code in (409, 422, 502), refused.text
        assert "redirects in a loop" in refused.text
