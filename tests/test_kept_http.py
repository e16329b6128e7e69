"""The calendar APIs' HTTP transport (``providers.kept_http``) against scripted servers
on 127.0.0.1: connections kept and reused, never reused after an exchange that did not
end cleanly, and every server byte read under the bounds httpx's transport kept."""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import ipaddress
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from crmcal.providers import api_client
from crmcal.providers.kept_http import (
    MAX_HEAD_BYTES,
    ONCE,
    REPEATABLE,
    AnswerTooLarge,
    KeptTransport,
)
from crmcal.tls import tls

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


class Server:
    """Runs ``script(reader, writer, n)`` for the n-th connection it accepts."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.accepted = 0
        self.requests: list[bytes] = []
        self.url = ""

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            await self.script(reader, writer, self.accepted)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def request(self, reader: asyncio.StreamReader) -> bytes:
        """One request's head (and nothing after it: the tests' requests have no body)."""
        head = await reader.readuntil(b"\r\n\r\n")
        self.requests.append(head)
        return head


@asynccontextmanager
async def serving(script: Script) -> AsyncIterator[Server]:
    server = Server(script)
    listener = await asyncio.start_server(server._serve, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    server.url = f"http://127.0.0.1:{port}"
    try:
        yield server
    finally:
        listener.close()


async def until(condition: Callable[[], bool]) -> None:
    """Let the loop run until ``condition`` holds (what the test waits for is the
    loop's own work: callbacks, other tasks' steps)."""
    for _ in range(100_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


def answer(body: bytes, *headers: str, status: str = "200 OK") -> bytes:
    lines = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def client(
    timeout: float = 600, limits: httpx.Limits = api_client.POOL_LIMITS, **bounds: Any
) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        timeout=timeout,
        transport=KeptTransport(tls(), limits, **bounds),
        trust_env=False,
    )


async def test_successive_requests_reuse_one_connection() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while True:
            await server.request(reader)
            writer.write(
                answer(b'{"n": %d}' % len(server.requests), "Content-Type: application/json")
            )

    async with serving(script) as server, client() as http:
        found = [(await http.get(server.url + f"/events?page={k}")).json()["n"] for k in range(3)]

    assert found == [1, 2, 3]
    assert server.accepted == 1
    assert b"GET /events?page=2 HTTP/1.1" in server.requests[2]
    assert b"host: 127.0.0.1" in server.requests[0].lower()


async def test_a_connection_the_server_closed_is_not_used_again() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await server.request(reader)
        writer.write(answer(b"first" if n == 1 else b"again"))
        await writer.drain()
        if n == 1:
            writer.close()  # after its answer: the client must notice before reusing it
            return
        await reader.read()

    async with serving(script) as server, client() as http:
        assert (await http.get(server.url)).content == b"first"
        transport = http._transport
        assert isinstance(transport, KeptTransport)
        # Until the loop has told the kept connection that its stream ended.
        await until(lambda: all(conn.ended for idle in transport._idle.values() for conn in idle))
        assert (await http.get(server.url)).content == b"again"

    assert server.accepted == 2


async def test_an_answer_that_closes_its_connection_is_not_kept() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await server.request(reader)
        writer.write(answer(b"bye", "Connection: close"))
        await writer.drain()
        await reader.read()

    async with serving(script) as server, client() as http:
        for _ in range(2):
            assert (await http.get(server.url)).content == b"bye"

    assert server.accepted == 2


async def test_a_cancelled_request_leaves_no_answer_for_the_next() -> None:
    """A request cancelled while its answer is awaited: that answer, arriving later,
    must never be read as the next request's."""
    release = asyncio.Event()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while True:
            await server.request(reader)
            if len(server.requests) == 1:
                await release.wait()
                writer.write(answer(b"stale"))
            else:
                writer.write(answer(b"fresh"))
            await writer.drain()

    async with serving(script) as server, client() as http:
        first = asyncio.create_task(http.get(server.url))
        await until(lambda: bool(server.requests))
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        release.set()
        assert (await http.get(server.url)).content == b"fresh"

    assert server.accepted == 2


async def test_a_server_that_never_answers_meets_the_read_timeout() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await server.request(reader)
        await reader.read()  # no answer, ever

    async with serving(script) as server, client(timeout=0.05) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.get(server.url)


async def test_a_server_that_drips_its_headers_meets_the_read_timeout() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await server.request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")  # and never the rest
        await writer.drain()
        await reader.read()

    async with serving(script) as server, client(timeout=0.05) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.get(server.url)


async def test_a_server_pacing_each_byte_inside_the_read_timeout_meets_the_deadline() -> None:
    """Each byte comes well within the read timeout, the whole answer never does."""
    finished = asyncio.Event()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await server.request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        while not finished.is_set():  # a byte at a time until the client gives up
            writer.write(b"1\r\nx\r\n")
            await writer.drain()
            await asyncio.sleep(0.001)

    async with serving(script) as server, client(timeout=600, deadline=0.05) as http:
        try:
            with pytest.raises(httpx.ReadTimeout):
                await http.get(server.url)
        finally:
            finished.set()


async def test_a_body_over_the_bound_is_refused() -> None:
    finished = asyncio.Event()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await server.request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        while not finished.is_set():  # endless
            writer.write(b"400\r\n" + b"y" * 1024 + b"\r\n")
            await writer.drain()

    async with serving(script) as server, client(max_body=64 * 1024) as http:
        try:
            with pytest.raises(AnswerTooLarge, match="larger than"):
                await http.get(server.url)
        finally:
            finished.set()


async def test_headers_over_the_bound_are_refused() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await server.request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n")
        for k in range(MAX_HEAD_BYTES // 1000 + 10):
            writer.write(f"X-Filler-{k}: {'x' * 1000}\r\n".encode())
            await writer.drain()
        await reader.read()

    async with serving(script) as server, client() as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.get(server.url)


async def test_a_body_cut_short_is_an_error_and_the_connection_goes() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await server.request(reader)
        if n == 1:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")
            await writer.drain()
            return  # closed: 91 bytes short
        writer.write(answer(b"whole"))
        await writer.drain()
        await reader.read()

    async with serving(script) as server, client() as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.get(server.url)
        assert (await http.get(server.url)).content == b"whole"

    assert server.accepted == 2


async def test_a_server_that_closes_without_answering_is_an_error() -> None:
    """On a new connection: never tried again, however idempotent the request."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await server.request(reader)

    async with serving(script) as server, client() as http:
        with pytest.raises(httpx.RemoteProtocolError, match="closed the connection before"):
            await http.get(server.url)

    assert (server.accepted, len(server.requests)) == (1, 1)


def closing_after_one_answer(server: Server) -> Script:
    """The first connection answers one request, then reads the next and closes on it
    unanswered (a server closing an idle connection as a request arrives on it);
    later connections answer every request."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while True:
            await server.request(reader)
            if n == 1 and len(server.requests) > 1:
                return  # closed: the request read, no byte of an answer
            writer.write(answer(b"answer %d" % len(server.requests)))
            await writer.drain()

    return script


async def test_an_idempotent_request_a_kept_connection_drops_unanswered_is_sent_again() -> None:
    async with serving(lambda r, w, n: asyncio.sleep(0)) as server:
        server.script = closing_after_one_answer(server)
        async with client() as http:
            assert (await http.get(server.url)).content == b"answer 1"
            assert (await http.get(server.url + "/again")).content == b"answer 3"

    assert server.accepted == 2  # the dropped one, and one new
    assert len(server.requests) == 3
    assert server.requests[1].startswith(b"GET /again ")
    assert server.requests[2].startswith(b"GET /again ")


async def test_a_post_a_kept_connection_drops_unanswered_fails_clearly_once() -> None:
    """Whether the server acted on it cannot be known: a POST is not sent twice."""
    async with serving(lambda r, w, n: asyncio.sleep(0)) as server:
        server.script = closing_after_one_answer(server)
        async with client() as http:
            assert (await http.get(server.url)).content == b"answer 1"
            with pytest.raises(httpx.RemoteProtocolError) as raised:
                await http.post(server.url + "/token", content=b"grant_type=refresh_token")
            message = str(raised.value)
            assert "closed the connection before answering" in message
            assert "role=" not in message  # not h11's internal state
            # The connection is gone: the next request goes on a new one.
            assert (await http.get(server.url)).content == b"answer 3"

    assert server.accepted == 2
    assert len(server.requests) == 3
    assert server.requests[1].startswith(b"POST /token ")


async def test_a_post_marked_repeatable_a_kept_connection_drops_unanswered_is_sent_again() -> None:
    """A create the service makes idempotent (a client-chosen id) is marked so by its
    sender: sent once more on a new connection, like an idempotent request."""
    async with serving(lambda r, w, n: asyncio.sleep(0)) as server:
        server.script = closing_after_one_answer(server)
        async with client() as http:
            assert (await http.get(server.url)).content == b"answer 1"
            made = await http.post(server.url + "/events", extensions={REPEATABLE: True})
            assert made.content == b"answer 3"

    assert server.accepted == 2
    assert [r.split(b" ", 2)[:2] for r in server.requests[1:]] == [[b"POST", b"/events"]] * 2


async def test_a_request_marked_once_a_kept_connection_drops_unanswered_is_not_sent_again() -> None:
    """A request whose second sending would make a second thing is marked so by its
    sender: once written, never sent again by the transport, whatever its method."""
    async with serving(lambda r, w, n: asyncio.sleep(0)) as server:
        server.script = closing_after_one_answer(server)
        async with client() as http:
            assert (await http.get(server.url)).content == b"answer 1"
            with pytest.raises(httpx.RemoteProtocolError, match="before answering"):
                await http.put(server.url + "/subscriptions", extensions={ONCE: True})

    assert server.accepted == 1
    assert [r.split(b" ", 2)[:2] for r in server.requests[1:]] == [[b"PUT", b"/subscriptions"]]


async def test_request_bodies_and_compressed_answers() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        head = await server.request(reader)
        length = next(
            int(line.split(b":")[1]) for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )  # fmt: skip
        body = await reader.readexactly(length)
        writer.write(answer(gzip.compress(body[::-1]), "Content-Encoding: gzip"))
        await writer.drain()
        await reader.read()

    async with serving(script) as server, client() as http:
        found = await http.post(server.url + "/batch", content=b"0123456789" * 1000)

    assert found.status_code == 200
    assert found.content == (b"0123456789" * 1000)[::-1]


async def test_a_compressed_answer_over_the_bound_once_decoded_is_refused() -> None:
    bomb = gzip.compress(b"\0" * (1024 * 1024))  # about 1 KiB sent, 1 MiB decoded

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        head = await server.request(reader)
        assert b"accept-encoding: gzip, deflate\r\n" in head.lower()
        writer.write(answer(bomb, "Content-Encoding: gzip"))
        await writer.drain()
        await reader.read()

    async with serving(script) as server, client(max_body=64 * 1024) as http:
        with pytest.raises(AnswerTooLarge, match="once decoded"):
            await http.get(server.url)
    assert len(bomb) < 64 * 1024


async def test_a_corrupt_or_unknown_coding_is_a_transport_error() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await server.request(reader)
        coding = "gzip" if n == 1 else "compress"
        writer.write(answer(b"not gzip at all", f"Content-Encoding: {coding}"))
        await writer.drain()

    async with serving(script) as server, client() as http:
        for _ in range(2):
            with pytest.raises(httpx.RemoteProtocolError):
                await http.get(server.url)


async def test_a_cookie_one_answer_sets_rides_on_no_later_request() -> None:
    """The shared clients carry every account's requests to a host."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while True:
            await server.request(reader)
            writer.write(answer(b"ok", "Set-Cookie: session=account-a; Path=/"))
            await writer.drain()

    async with serving(script) as server, client() as http:
        first = await http.get(server.url + "/calendars/a")
        await http.get(server.url + "/calendars/b")

    assert "set-cookie" not in first.headers
    assert not any(b"cookie:" in head.lower() for head in server.requests)


async def test_no_more_connections_than_the_limit() -> None:
    release = asyncio.Event()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while True:
            await server.request(reader)
            await release.wait()
            writer.write(answer(b"ok"))
            await writer.drain()

    limits = httpx.Limits(max_connections=2, max_keepalive_connections=2)
    async with serving(script) as server, client(limits=limits) as http:
        calls = [asyncio.create_task(http.get(server.url)) for _ in range(5)]
        transport = http._transport
        assert isinstance(transport, KeptTransport)
        slots = transport._slots
        assert slots is not None
        await until(lambda: len(server.requests) >= 2 and len(slots._waiters or ()) >= 3)
        assert len(server.requests) == 2  # the other three wait for a free connection
        release.set()
        answers = await asyncio.gather(*calls)

    assert [a.content for a in answers] == [b"ok"] * 5
    assert server.accepted == 2


async def test_a_refused_connection_is_a_connect_error() -> None:
    async with serving(lambda reader, writer, n: asyncio.sleep(0)) as server:
        url = server.url
    async with client() as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(url)


async def test_the_shared_clients_use_this_transport() -> None:
    """The clients the providers share (``api_client.shared_client``) run on it."""
    found = api_client.shared_client("https://www.googleapis.com/calendar/v3", 30)
    assert found is not None
    try:
        assert isinstance(found._transport, KeptTransport)
    finally:
        await api_client.close_shared()


async def test_the_shared_clients_read_cookies_only_from_answers_that_set_some(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """httpx reads every answer's cookies into the client's store (a urllib request and
    an email message of its headers each time); the shared clients skip answers with no
    ``Set-Cookie``, which is every answer through this transport, and still read the
    others."""
    read: list[httpx.Response] = []
    monkeypatch.setattr(httpx.Cookies, "extract_cookies", lambda self, answer: read.append(answer))
    found = api_client.shared_client("https://www.googleapis.com/calendar/v3", 30)
    assert found is not None
    try:
        request = httpx.Request("GET", "https://www.googleapis.com/calendar/v3/users/me")
        plain = httpx.Response(200, headers={"content-type": "application/json"}, request=request)
        found.cookies.extract_cookies(plain)
        assert read == []
        setting = httpx.Response(200, headers={"set-cookie": "a=b"}, request=request)
        found.cookies.extract_cookies(setting)
        assert read == [setting]
    finally:
        await api_client.close_shared()


def self_signed(tmp_path: Path) -> tuple[Path, Path, str]:
    """A certificate for 127.0.0.1 signed by its own key: (cert file, key file, PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_text(pem)
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file, pem


async def test_https_with_the_servers_certificate_checked(tmp_path: Path) -> None:
    cert_file, key_file, pem = self_signed(tmp_path)
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(cert_file, key_file)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(answer(b"secure"))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    listener = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=served)
    url = f"https://127.0.0.1:{listener.sockets[0].getsockname()[1]}/"
    trusting = ssl.create_default_context(cadata=pem)
    try:
        async with httpx.AsyncClient(
            timeout=600, transport=KeptTransport(trusting, api_client.POOL_LIMITS), trust_env=False
        ) as http:
            assert [(await http.get(url)).content for _ in range(2)] == [b"secure"] * 2
        # The default trust store does not know this certificate: refused.
        async with client() as http:
            with pytest.raises(httpx.ConnectError, match=r"(?i)certificate"):
                await http.get(url)
    finally:
        listener.close()


@pytest.mark.parametrize(
    "params",
    [
        {"maxResults": 250, "singleEvents": "false", "syncToken": "CPjY4tbW0oIDEPjY4tbW0oIDGAU="},
        {"q": "a b&c=d/é", "flag": True, "none": None, "many": ["x", "y"], "n": 1.5},
        {"empty": []},
        {},
    ],
)
async def test_a_calls_params_are_written_into_its_url_as_httpx_writes_them(
    params: dict[str, Any],
) -> None:
    """An API call's params go into its URL before httpx sees it (parsed once, not once
    more for them): the URL sent is the one httpx makes of the same params."""
    sent: list[tuple[httpx.URL, Any]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={})

    async def tokens(refresh: bool = False) -> str:
        return "token"

    client = api_client.ApiClient(
        tokens, base_url="https://api.test/v1", owner="Test", service="Test API",
        reason=lambda response: "", retryable=lambda response: False,
        settings=api_client.ClientSettings(transport=httpx.MockTransport(answer)),
    )  # fmt: skip
    request = client._client.request

    async def spy(method: str, url: Any, **options: Any) -> httpx.Response:
        response = await request(method, url, **options)
        sent.append((response.request.url, options.get("params")))
        return response

    client._client.request = spy  # type: ignore[method-assign]
    url = "https://api.test/v1/calendars/a%40b.test/events"
    await client.send("GET", url, params=params)
    expected = httpx.Request("GET", url, params=params).url
    assert sent == [(expected, None if str(httpx.QueryParams(params)) else params)]
    await client.send("GET", url + "?alt=json", params=params)
    assert sent[-1] == (httpx.Request("GET", url + "?alt=json", params=params).url, params)
