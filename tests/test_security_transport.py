"""CalDAV servers are hostile: the guarded transport against stand-in servers on 127.0.0.1.

Addresses: 127.0.0.1 stands for the Internet, 127.0.0.2 for an internal service
(``tests/hostile.py``); DNS is a stub. Each test shows that the internal service
is never reached, and that answers are bounded in size and time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from crmcal.providers import guarded_http
from crmcal.providers.base import NotACalendarServer, ProviderError, Unreachable
from crmcal.providers.caldav import POOL_SIZE, CalDAVProvider
from crmcal.tls import tls
from tests.hostile import (
    INTERNAL,
    MULTISTATUS,
    PUBLIC,
    Handler,
    HostileServer,
    Request,
    reply,
    response,
    sentinel,
    serving,
    stand_in_dns,
)

pytestmark = pytest.mark.asyncio


@pytest.fixture
def internal() -> Iterator[HostileServer]:
    with sentinel() as found:
        yield found


def provider(url: str, **kw: Any) -> CalDAVProvider:
    return CalDAVProvider(url, "alice", "s3cret", **kw)


def caldav_routes(principal: str, extra_calendars: str = "", events: str = "") -> dict:
    """A small CalDAV server whose principal href, calendars and events are given."""

    def root(request: Request, handler: BaseHTTPRequestHandler) -> None:
        if request.method != "PROPFIND":
            return reply(handler, 405)
        props = f"<D:current-user-principal><D:href>{principal}</D:href></D:current-user-principal>"
        reply(handler, 207, MULTISTATUS.format(response("/", props)))

    def principal_(request: Request, handler: BaseHTTPRequestHandler) -> None:
        home = "<C:calendar-home-set><D:href>/home/</D:href></C:calendar-home-set>"
        reply(handler, 207, MULTISTATUS.format(response("/p/", home)))

    def home(request: Request, handler: BaseHTTPRequestHandler) -> None:
        calendar = "<D:resourcetype><D:collection/><C:calendar/></D:resourcetype>"
        body = response("/home/", "<D:resourcetype><D:collection/></D:resourcetype>")
        body += response("/home/cal/", calendar + "<D:displayname>Mine</D:displayname>")
        body += extra_calendars.replace("{calendar}", calendar)
        reply(handler, 207, MULTISTATUS.format(body))

    def calendar(request: Request, handler: BaseHTTPRequestHandler) -> None:
        if request.method == "PROPFIND":
            return reply(handler, 207, MULTISTATUS.format(response("/home/cal/", "")))
        listing = response("/home/cal/a.ics", '<D:getetag>"1"</D:getetag>') + events
        reply(handler, 207, MULTISTATUS.format(listing + "<D:sync-token>t1</D:sync-token>"))

    return {"/": root, "/p/": principal_, "/home/": home, "/home/cal/": calendar}


# --- 1: one parser, confusing forms refused before any request --------------------------


async def test_parser_confusion_is_refused_before_any_request(
    internal: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    stand_in_dns(monkeypatch, {"example.test": ["93.184.215.14"]})
    port = internal.port
    for url in (
        f"http://{INTERNAL}:{port}\\@93.184.215.14/",
        f"http://{INTERNAL}:{port}\\\\@example.test/",
        f"http://93.184.215.14@{INTERNAL}:{port}/",
        f"http://example.test:80@{INTERNAL}:{port}/",
        f"http://{INTERNAL}%3A{port}@example.test/",
        f"http://{INTERNAL}:{port}%2F@example.test/",
        f"http://{INTERNAL}:{port}\t/",
        f"http://exam\u0440le.test:{port}/",
    ):
        with pytest.raises(ProviderError):
            await provider(url).discover()
        with pytest.raises(guarded_http.AddressRefused):
            guarded_http.parse_url(url)
    # Parsers agree on this one: it names the internal host, and is refused as such.
    with pytest.raises(ProviderError, match="private or loopback"):
        await provider(f"http://{INTERNAL}:{port}#@example.test/").discover()
    assert internal.requests == []


# --- 2: every address is checked, the checked one is connected to -----------------------


async def test_internal_addresses_are_refused_whatever_the_name(
    internal: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    stand_in_dns(monkeypatch, {
        "loopback.test": [INTERNAL],
        "metadata.test": ["169.254.169.254"],
        "cgnat.test": ["100.64.0.1"],
        "lan.test": ["10.1.2.3"],
        "mixed.test": [PUBLIC, INTERNAL],
        "mapped.test": [f"::ffff:{INTERNAL}"],
    })  # fmt: skip
    for host in ("loopback.test", "metadata.test", "cgnat.test", "lan.test", "mixed.test",
                 "mapped.test", INTERNAL, "[::1]", "0.0.0.0", f"[::ffff:{INTERNAL}]"):  # noqa: S104 # fmt: skip
        with pytest.raises(ProviderError, match="private or loopback"):
            await provider(f"http://{host}:{internal.port}/").discover()
    assert internal.requests == []


async def test_the_address_checked_is_the_address_connected_to(
    internal: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: the name answers a public address, then an internal one."""
    answers = iter([[PUBLIC]] + [[INTERNAL]] * 50)
    refusals: list[str] = []
    # The internal service listens on the same port as the public one.
    with (
        serving(HostileServer(routes=caldav_routes("/p/"))) as server,
        sentinel(server.port) as same_port,
    ):
        stand_in_dns(monkeypatch, {"rebind.test": lambda: next(answers)})
        hostile = provider(f"http://rebind.test:{server.port}/")
        try:
            await hostile.discover()  # every request goes to the address checked first
            for _ in range(3):
                await hostile.list_calendars()
        except ProviderError as refused:  # a new connection re-checks: refused
            refusals.append(str(refused))
        await hostile.close()
        assert server.requests
        assert same_port.requests == []
    assert all("private or loopback" in text for text in refusals)


async def test_redirects_are_not_followed_out_of_the_origin(internal: HostileServer) -> None:
    elsewhere = f"http://{INTERNAL}:{internal.port}/dav/"

    def away(request: Request, handler: BaseHTTPRequestHandler) -> None:
        reply(handler, 301 if request.method == "PROPFIND" else 302, "", {"Location": elsewhere})

    routes: dict[str, Handler] = {"/": away, "/.well-known/caldav": away}
    with (
        serving(HostileServer(routes=routes)) as server,
        pytest.raises(NotACalendarServer, match="give that address"),
    ):
        await provider(server.url + "/", allow_private=True).discover()
    assert internal.requests == []


# --- 3: hrefs stay on the server's origin -----------------------------------------------


@pytest.mark.parametrize(
    "principal",
    [
        "http://{internal}/p/",
        "//{internal}/p/",
        "http://{public}@{internal}/p/",
        "http://alice:s3cret@{public}/p/",
        "p/",
        "\\\\{internal}/p/",
    ],
)
async def test_hrefs_that_leave_the_origin_are_refused(
    principal: str, internal: HostileServer
) -> None:
    target = f"{INTERNAL}:{internal.port}"
    with serving(HostileServer()) as server:
        server.routes.update(
            caldav_routes(principal.format(internal=target, public=f"{PUBLIC}:{server.port}"))
        )
        with pytest.raises(NotACalendarServer):
            await provider(server.url + "/", allow_private=True).discover()
    assert internal.requests == []


async def test_calendars_and_events_elsewhere_are_left_out(internal: HostileServer) -> None:
    target = f"http://{INTERNAL}:{internal.port}"
    calendars = response(f"{target}/evil/", "{calendar}") + response(
        f"http://x@{PUBLIC}/evil2/", "{calendar}"
    )
    events = response(f"{target}/b.ics", '<D:getetag>"2"</D:getetag>') + response(
        "c.ics", '<D:getetag>"3"</D:getetag>'
    )
    with serving(HostileServer()) as server:
        server.routes.update(caldav_routes("/p/", calendars, events))
        hostile = provider(server.url + "/", allow_private=True)
        found = await hostile.list_calendars()
        assert [c.name for c in found] == ["Mine"]
        listing = await hostile.list_changes(found[0].id, None)
        assert [ref.id for ref in listing.changed] == ["/home/cal/a.ics"]
        with pytest.raises(ProviderError, match="not"):
            await hostile.list_changes(f"{target}/evil/", None)
        await hostile.close()
    assert internal.requests == []
    assert all("Authorization" not in r.headers for r in internal.requests)


# --- 6: size caps, total deadline, CalDAV's own threads ----------------------------------


def endless(request: Request, handler: BaseHTTPRequestHandler, server: HostileServer) -> None:
    """150 MiB of XML-looking bytes, generated as they are sent."""
    handler.send_response(207)
    handler.send_header("Content-Type", "text/xml")
    handler.send_header("Content-Length", str(150 * guarded_http.MiB))
    handler.end_headers()
    handler.wfile.write(b'<?xml version="1.0"?><D:multistatus xmlns:D="DAV:">')
    chunk = b"<D:response><D:href>/x</D:href></D:response>" * 1400
    total = 0
    while total < 150 * guarded_http.MiB and not server.stop.is_set():
        handler.wfile.write(chunk)
        total += len(chunk)
        server.count(sent=len(chunk))


async def test_a_150_mib_answer_is_cut_off_at_the_cap() -> None:
    with serving(HostileServer()) as server:
        server.routes["*"] = lambda r, h: endless(r, h, server)
        hostile = provider(server.url + "/", allow_private=True)
        with pytest.raises(Unreachable, match="larger than 20 MiB"):
            await hostile.list_changes(server.url + "/cal/", None)
        await hostile.close()
        # Declared lengths are believed only when small: an undeclared one is counted.
        server.routes["*"] = lambda r, h: chunked_endless(r, h, server)
        hostile = provider(server.url + "/", allow_private=True)
        with pytest.raises(Unreachable, match="larger than 20 MiB"):
            await hostile.list_changes(server.url + "/cal/", None)
        await hostile.close()
        server.stop.set()
        assert server.sent < 100 * guarded_http.MiB


def chunked_endless(
    request: Request, handler: BaseHTTPRequestHandler, server: HostileServer
) -> None:
    handler.send_response(207)
    handler.send_header("Content-Type", "text/xml")
    handler.end_headers()  # no length: the body ends when the connection closes
    handler.close_connection = True
    chunk = b"<D:response><D:href>/x</D:href></D:response>" * 1400
    total = 0
    while total < 150 * guarded_http.MiB and not server.stop.is_set():
        handler.wfile.write(chunk)
        total += len(chunk)
        server.count(sent=len(chunk))


def drip(request: Request, handler: BaseHTTPRequestHandler, server: HostileServer) -> None:
    """A byte at a time, until the test ends."""
    handler.send_response(207)
    handler.send_header("Content-Type", "text/xml")
    handler.end_headers()
    handler.close_connection = True
    handler.wfile.write(b"<")
    handler.wfile.flush()
    while not server.stop.wait(0.05):
        handler.wfile.write(b" ")
        handler.wfile.flush()


async def test_a_dripping_server_meets_the_total_deadline() -> None:
    with serving(HostileServer()) as server:
        server.routes["*"] = lambda r, h: drip(r, h, server)
        hostile = provider(server.url + "/", allow_private=True, deadline=1)
        with pytest.raises(Unreachable, match="longer than 1 s"):
            await hostile.list_changes(server.url + "/cal/", None)
        await hostile.close()


def drip_headers(request: Request, handler: BaseHTTPRequestHandler, server: HostileServer) -> None:
    """A status line, then a header line every 50 ms, never the end of the headers."""
    handler.close_connection = True
    handler.wfile.write(b"HTTP/1.1 207 Multi-Status\r\n")
    handler.wfile.flush()
    while not server.stop.wait(0.05):
        handler.wfile.write(b"X-Slow: " + b"a" * 90 + b"\r\n")
        handler.wfile.flush()


async def test_a_server_dripping_its_headers_meets_the_total_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The HTTP client reads the headers before it hands the answer over: the
    deadline holds there too, not only while the body is read."""
    with serving(HostileServer()) as server:
        server.routes["*"] = lambda r, h: drip_headers(r, h, server)
        hostile = provider(server.url + "/", allow_private=True, deadline=1)
        with pytest.raises(Unreachable, match="longer than 1 s"):
            await hostile.list_changes(server.url + "/cal/", None)
        await hostile.close()
        # And through the guarded transport (no private networks allowed).
        stand_in_dns(monkeypatch, {})
        guarded = guarded_http.GuardedClient(tls=tls(), deadline=1)
        try:
            with pytest.raises(guarded_http.DeadlineExceeded):
                await asyncio.to_thread(guarded.request, "GET", server.url + "/x")
        finally:
            guarded.close()


async def test_dripping_servers_hold_only_caldav_threads() -> None:
    """With every CalDAV thread held by a dripping server, the default executor
    (which the rest of crmcal uses) still runs work."""
    with serving(HostileServer()) as server:
        server.routes["*"] = lambda r, h: drip(r, h, server)
        held = [provider(server.url + "/", allow_private=True) for _ in range(POOL_SIZE + 2)]
        tasks = [asyncio.ensure_future(p.list_changes(server.url + "/cal/", None)) for p in held]
        deadline = asyncio.get_running_loop().time() + 600  # a hang guard, not a bound
        while server.active < POOL_SIZE:
            assert asyncio.get_running_loop().time() < deadline, server.active
            await asyncio.sleep(0.05)
        assert await asyncio.wait_for(asyncio.to_thread(lambda: "free"), 600) == "free"
        server.stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        for p in held:
            await p.close()


async def test_an_event_over_one_mib_is_unreadable_not_fatal() -> None:
    big = "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:big\r\nDTSTART:20300101T100000Z\r\n"
    big += "DESCRIPTION:" + "x" * (1024 * 1024) + "\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    small = big.replace("x" * (1024 * 1024), "small").replace("UID:big", "UID:small")

    def multiget(request: Request, handler: BaseHTTPRequestHandler) -> None:
        members = "".join(
            response(
                f"/cal/{name}.ics",
                f'<D:getetag>"1"</D:getetag><C:calendar-data>{text}</C:calendar-data>',
            )
            for name, text in (("big", big), ("small", small))
        )
        reply(handler, 207, MULTISTATUS.format(members))

    with serving(HostileServer(routes={"/cal/": multiget})) as server:
        hostile = provider(server.url + "/", allow_private=True)
        refs = await hostile.fetch(server.url + "/cal/", ["/cal/big.ics", "/cal/small.ics"])
        await hostile.close()
    by_id = {ref.id: ref for ref in refs}
    assert "larger than 1 MiB" in (by_id["/cal/big.ics"].error or "")
    assert by_id["/cal/small.ics"].event is not None


# --- 7: compressed bombs and hostile XML --------------------------------------------------


def _bomb(coding: str) -> bytes:
    """A multistatus of 100 MiB, compressed to about 100 KiB."""
    import zlib

    squeeze = zlib.compressobj(9, zlib.DEFLATED, (16 if coding == "gzip" else 0) + zlib.MAX_WBITS)
    head = b'<?xml version="1.0"?><D:multistatus xmlns:D="DAV:">'
    parts = [squeeze.compress(head)]
    block = b" " * guarded_http.MiB
    parts += [squeeze.compress(block) for _ in range(100)]
    parts.append(squeeze.compress(b"</D:multistatus>") + squeeze.flush())
    return b"".join(parts)


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
async def test_a_compressed_bomb_is_cut_off_at_the_cap(coding: str) -> None:
    bomb = _bomb(coding)
    assert len(bomb) < guarded_http.MiB

    def answer(request: Request, handler: BaseHTTPRequestHandler) -> None:
        reply(handler, 207, bomb, {"Content-Encoding": coding})

    with serving(HostileServer(routes={"*": answer})) as server:
        hostile = provider(server.url + "/", allow_private=True)
        with pytest.raises(Unreachable, match="larger than 20 MiB"):
            await hostile.list_changes(server.url + "/cal/", None)
        await hostile.close()


LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE D:multistatus [<!ENTITY a "aaaaaaaaaa">'
    + "".join(f'<!ENTITY {chr(98 + n)} "{("&" + chr(97 + n) + ";") * 10}">' for n in range(9))
    + '<!ENTITY file SYSTEM "file:///etc/passwd">]>'
    '<D:multistatus xmlns:D="DAV:"><D:response><D:href>/cal/&j;&file;.ics</D:href>'
    '<D:propstat><D:prop><D:getetag>"&j;"</D:getetag></D:prop>'
    "<D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>"
    "<D:sync-token>t1</D:sync-token></D:multistatus>"
)
EXTERNAL = (
    '<?xml version="1.0"?><!DOCTYPE D:multistatus [<!ENTITY file SYSTEM "file:///etc/passwd">]>'
    '<D:multistatus xmlns:D="DAV:"><D:response><D:href>/cal/a&file;.ics</D:href>'
    '<D:propstat><D:prop><D:getetag>"&file;"</D:getetag></D:prop>'
    "<D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>"
    "<D:sync-token>t1</D:sync-token></D:multistatus>"
)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(LAUGHS, id="entities"),
        pytest.param(
            MULTISTATUS.format(response("/cal/a.ics", "<D:x>" * 100_000 + "</D:x>" * 100_000)),
            id="nested",
        ),
    ],
)
async def test_entity_bombs_and_deep_nesting_are_refused_as_malformed(body: str) -> None:
    """A billion laughs is never expanded, elements nested a hundred thousand deep are
    not followed down: the answer is refused, with a clear error."""

    def answer(request: Request, handler: BaseHTTPRequestHandler) -> None:
        reply(handler, 207, body)

    with serving(HostileServer(routes={"*": answer})) as server:
        hostile = provider(server.url + "/", allow_private=True)
        with pytest.raises(ProviderError, match="malformed XML"):
            await hostile.list_changes(server.url + "/cal/", None)
        await hostile.close()


async def test_an_external_entity_is_never_read() -> None:
    def answer(request: Request, handler: BaseHTTPRequestHandler) -> None:
        reply(handler, 207, EXTERNAL)

    with serving(HostileServer(routes={"*": answer})) as server:
        hostile = provider(server.url + "/", allow_private=True)
        listing = await hostile.list_changes(server.url + "/cal/", None)
        await hostile.close()
    assert listing.changed
    for ref in listing.changed:
        assert "root:" not in ref.id + ref.etag


@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_a_redirect_in_the_middle_of_a_sync_is_not_followed(
    status: int, internal: HostileServer
) -> None:
    """Past discovery, a redirect to an internal address (or anywhere) is an error."""
    elsewhere = f"http://{INTERNAL}:{internal.port}/cal/"

    def away(request: Request, handler: BaseHTTPRequestHandler) -> None:
        reply(handler, status, "", {"Location": elsewhere})

    with serving(HostileServer(routes={"*": away})) as server:
        hostile = provider(server.url + "/", allow_private=True)
        with pytest.raises(ProviderError, match=f"answered {status}"):
            await hostile.list_changes(server.url + "/cal/", "token-1")
        with pytest.raises(ProviderError, match=f"answered {status}"):
            await hostile.fetch(server.url + "/cal/", ["/cal/a.ics"])
        await hostile.close()
    assert internal.requests == []
