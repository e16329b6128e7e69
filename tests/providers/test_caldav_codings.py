"""What a CalDAV request asks of the server's content codings (``Accept-Encoding``).

A server on the machine crmcal runs on is asked for its answers as they are: they cross
no network, and compressing them costs it CPU (Radicale compresses whatever it is asked
to, 9 MB of multistatus for a first import of 5,000 events). Any other server is asked
for gzip or deflate, which crmcal decodes (under the size cap: ``content_coding``).
"""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler

import pytest

from crmcal.providers import content_coding, guarded_http
from crmcal.providers.caldav import CalDAVProvider
from tests.hostile import HostileServer, Request, reply, response, serving, stand_in_dns


@pytest.mark.parametrize(
    ("host", "asked"),
    [
        ("127.0.0.1", "identity"),
        ("127.3.4.5", "identity"),
        ("::1", "identity"),
        ("[::1]", "identity"),
        ("localhost", "identity"),
        ("LocalHost.", "identity"),
        ("cal.localhost", "identity"),
        ("calendar.example", content_coding.ACCEPTED),
        ("10.0.0.7", content_coding.ACCEPTED),
        ("192.168.1.2", content_coding.ACCEPTED),
        ("2001:db8::1", content_coding.ACCEPTED),
        ("localhost.example", content_coding.ACCEPTED),
    ],
)
def test_a_server_on_this_machine_is_asked_for_no_compression(host: str, asked: str) -> None:
    assert guarded_http.codings_for(host) == asked


def _listing(asked: list[str]) -> dict:
    def answer(request: Request, handler: BaseHTTPRequestHandler) -> None:
        asked.append(request.headers.get("Accept-Encoding", ""))
        body = (
            '<?xml version="1.0"?><D:multistatus xmlns:D="DAV:">'
            + response("/cal/", "<D:getetag>\"c\"</D:getetag><D:resourcetype><D:collection/>"
                       "</D:resourcetype>")
            + "</D:multistatus>"
        )  # fmt: skip
        reply(handler, 207, body.encode(), {"Content-Type": "application/xml"})

    return {"*": answer}


async def test_requests_to_a_loopback_server_ask_for_no_compression() -> None:
    asked: list[str] = []
    with serving(HostileServer(routes=_listing(asked))) as server:
        provider = CalDAVProvider(server.url + "/cal/", "alice", "s3cret", allow_private=True)
        await provider.list_changes(server.url + "/cal/", None)
        await provider.close()
    assert asked
    assert set(asked) == {"identity"}


async def test_requests_to_a_named_server_ask_for_gzip(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []
    with serving(HostileServer(routes=_listing(asked))) as server:
        stand_in_dns(monkeypatch, {"calendar.example": ["127.0.0.1"]})
        url = server.url.replace("127.0.0.1", "calendar.example") + "/cal/"
        provider = CalDAVProvider(url, "alice", "s3cret")
        await provider.list_changes(url, None)
        await provider.close()
    assert asked
    assert set(asked) == {content_coding.ACCEPTED}
