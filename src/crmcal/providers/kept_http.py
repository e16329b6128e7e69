"""A lean HTTP/1.1 transport for the calendar services' APIs (Google, Microsoft Graph).

A worker's no-change sync is one listing request, and httpx's default transport
(httpcore on anyio) spent about 1 ms of CPU on it beyond the socket's own work: a
system call on every request to check that the kept connection is still open, a
dictionary of attribute callbacks built to answer that check, cancel scopes and
task look-ups around every read and write, the pool's bookkeeping of waiting
requests. This transport does the same exchange on asyncio's own protocol callbacks:

* a connection is an ``asyncio.Protocol`` whose bytes are parsed by h11, the parser
  httpcore itself uses (with httpcore's bound on a status line and headers, 100 KiB),
  so what a server may send is read exactly as before;
* a kept connection is known to be usable from the loop's own callbacks (the server
  closed it, ended its stream or sent bytes nobody asked for): no system call to find
  out before a request; one idle longer than ``keepalive_expiry`` is closed instead;
* a request is written in one ``write``; every wait for the server's bytes ends by the
  request's read timeout (``httpx.ReadTimeout``), the connection by its connect
  timeout, a wait for a free connection by its pool timeout, and a wait for the
  socket to take more bytes by its write timeout, as httpx's timeouts mean them;
* an answer's body is at most ``MAX_BODY_BYTES``, as sent and once decoded (gzip
  and deflate, the only codings asked for, are decoded here under that bound), and
  a whole exchange lasts at most ``TOTAL_DEADLINE`` seconds, however the server
  paces its bytes (httpx's own transport had none of these bounds); an answer over
  the bound is ``AnswerTooLarge``, which a sender does not retry;
* at most ``max_connections`` requests are in flight and at most
  ``max_keepalive_connections`` connections kept idle, as ``httpx.Limits`` says;
* a connection whose exchange did not end cleanly (an error, a timeout, a
  cancellation, an answer that closes it) is closed, never handed out again;
* a server may close a kept connection at any time, also just as a request goes out
  on it: a request a *kept* connection fails before any byte of its answer is sent
  once more on a new connection, if it was never written, its method is idempotent,
  or its sender marked it safe to send twice (the ``REPEATABLE`` extension: a
  create the service itself makes idempotent, see ``_may_retry``), and never once
  written if its sender marked it not safe to repeat (``ONCE``); a new
  connection's failure is never retried;
* failures are httpx's own exceptions (``ConnectError``, ``ReadTimeout``,
  ``RemoteProtocolError`` ...), so callers map them as before.

Redirects, authentication and proxies from the environment stay with
``httpx.AsyncClient`` around this transport; cookies do not pass it (``Set-Cookie`` is
dropped: the client is shared by every account a worker syncs). Only http and https, HTTP/1.1.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable

import h11
import httpx

from crmcal.providers import content_coding

# A status line with its headers, at most (httpcore's bound too).
MAX_HEAD_BYTES = 100 * 1024
# An answer's body as sent, at most: far above a full page of Google events (2,500) or
# a Graph $batch of twenty, far below what would strain a worker's memory.
MAX_BODY_BYTES = 64 * 1024 * 1024
# One exchange, from the request's first byte to the answer's last, at most: a server
# sending a byte just inside each read timeout cannot hold a sync for longer.
TOTAL_DEADLINE = 120.0

Origin = tuple[bytes, bytes, int]
# A request extension (``extensions={REPEATABLE: True}``): the request may be sent twice
# though its method is not idempotent, because its second sending cannot do what the
# first did twice (a Google insert with a client-chosen event id answers 409, a Graph
# create with a ``transactionId`` answers the event made before).
REPEATABLE = "crmcal.repeatable"
# A request extension (``extensions={ONCE: True}``): the request is not safe to repeat,
# whatever its method, because a second sending makes what the service cannot tell from
# the first (a Graph subscription: the service's id, nothing of the sender's to match).
# Sent again only when not one byte of it was written; its sender (``ApiClient.send``)
# does not retry it after a failure or a 5xx answer either, but reports the answer lost,
# so that the caller can look for what the first sending made.
ONCE = "crmcal.once"


class AnswerTooLarge(httpx.RemoteProtocolError):
    """An answer's body over ``max_body`` bytes, as sent or once decoded. Asking again
    gets the same answer: a sender gives up at once instead of reading it again."""


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection to an origin and the h11 state of its exchanges."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD_BYTES)
        self.pending: list[bytes] = []  # received, not yet given to the parser
        self.ended = False  # the server ended its stream (or the connection is gone)
        self.fed_end = False  # ... and the parser was told
        self.lost = False
        self.paused = False  # the socket's buffer is full: wait before writing more
        self.waiter: asyncio.Future[None] | None = None
        self.idle_since = 0.0
        self.received = 0  # bytes received, ever: did an exchange's answer begin?

    # --- the loop's callbacks -----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        self.pending.append(data)
        self._wake()

    def eof_received(self) -> bool:
        self.ended = True
        self._wake()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = self.ended = True
        self.paused = False
        self._wake()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- used by the transport ----------------------------------------------------------

    def reusable(self, now: float, expiry: float) -> bool:
        """Whether a kept connection may carry the next request: still open, nothing
        received since its last answer, not idle too long."""
        return (
            not self.ended
            and not self.pending
            and self.transport is not None
            and not self.transport.is_closing()
            and self.parser.our_state is h11.IDLE
            and self.parser.their_state is h11.IDLE
            and now - self.idle_since < expiry
        )

    async def wait(self, seconds: float | None, expired: Callable[[], Exception]) -> None:
        """Until the loop calls back (bytes, end, loss, room to write), or ``seconds``
        pass: then ``expired()`` is raised."""
        waiter = self.waiter = self.loop.create_future()
        timer = None
        if seconds is not None:
            timer = self.loop.call_later(seconds, _expire, waiter, expired)
        try:
            await waiter
        finally:
            self.waiter = None
            if timer is not None:
                timer.cancel()

    def close(self) -> None:
        self.ended = True
        if self.transport is not None:
            self.transport.abort()


def _expire(waiter: asyncio.Future[None], expired: Callable[[], Exception]) -> None:
    if not waiter.done():
        waiter.set_exception(expired())


class KeptTransport(httpx.AsyncBaseTransport):
    """Requests over connections kept per origin, for one event loop."""

    def __init__(
        self,
        tls: ssl.SSLContext,
        limits: httpx.Limits,
        *,
        max_body: int = MAX_BODY_BYTES,
        deadline: float = TOTAL_DEADLINE,
    ) -> None:
        self._tls = tls
        self._max_body = max_body
        self._deadline = deadline
        # As httpcore does for HTTP/1.1 only (the context is shared with other clients,
        # which ask for the same).
        tls.set_alpn_protocols(["http/1.1"])
        keep = limits.max_keepalive_connections
        self._max_keep: int = keep if keep is not None else 1 << 30
        self._expiry = limits.keepalive_expiry if limits.keepalive_expiry is not None else 1e9
        self._slots = (
            asyncio.Semaphore(limits.max_connections)
            if limits.max_connections is not None
            else None
        )
        self._idle: dict[Origin, list[_Connection]] = {}
        self._kept = 0
        self._closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """One request and its answer, on a connection kept for its origin or a new one,
        while holding one of the transport's ``max_connections`` slots."""
        url = request.url
        origin = self._origin(url)
        timeouts = request.extensions.get("timeout", {})
        try:
            body = request.content
        except httpx.RequestNotRead:
            body = await request.aread()
        slots = self._slots
        if slots is not None:
            await _take_slot(slots, timeouts.get("pool"))
        try:
            return await self._send(origin, request, body, timeouts)
        finally:
            if slots is not None:
                slots.release()

    def _origin(self, url: httpx.URL) -> Origin:
        """Where ``url`` is served (scheme, host, port), the key its connections are kept
        under; refuses a scheme other than http(s), and any request once closed."""
        scheme = url.raw_scheme
        if scheme not in (b"http", b"https"):
            raise httpx.UnsupportedProtocol(f"the URL's scheme {url.scheme!r} is not http(s)")
        if self._closed:
            raise RuntimeError("the transport is closed")
        return (scheme, url.raw_host, url.port or (443 if scheme == b"https" else 80))

    async def _send(
        self,
        origin: Origin,
        request: httpx.Request,
        body: bytes,
        timeouts: dict[str, float | None],
    ) -> httpx.Response:
        """The exchange of ``request`` on a kept connection, else a new one; the connection
        is kept again after a complete answer. A kept one that the server closed as the
        request went out is replaced once, when the request may be sent again."""
        url, port = request.url, origin[2]
        conn = self._kept_connection(origin)
        kept = conn is not None
        if conn is None:
            conn = await self._connect(url, port, timeouts.get("connect"))
        while True:
            try:
                response = await self._exchange(conn, request, body, timeouts)
            except _Unanswered as error:
                conn.close()
                if not (kept and _may_retry(request, error)):
                    raise
                # The server closed the kept connection as the request went out
                # (idle ones are closed at any time): once more, on a new one.
                kept = False
                conn = await self._connect(url, port, timeouts.get("connect"))
                continue
            except BaseException:
                conn.close()  # its state is not known: never handed out again
                raise
            self._keep(origin, conn)
            return response

    def _kept_connection(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        if not idle:
            return None
        now = asyncio.get_running_loop().time()
        while idle:
            conn = idle.pop()  # the most recently used: the likeliest to be open still
            self._kept -= 1
            if conn.reusable(now, self._expiry):
                return conn
            conn.close()
        return None

    def _keep(self, origin: Origin, conn: _Connection) -> None:
        parser = conn.parser
        if parser.our_state is h11.DONE and parser.their_state is h11.DONE and not conn.ended:
            parser.start_next_cycle()
        if self._closed or self._kept >= self._max_keep:
            conn.close()
            return
        conn.idle_since = conn.loop.time()
        if not conn.reusable(conn.idle_since, self._expiry):
            conn.close()
            return
        self._idle.setdefault(origin, []).append(conn)
        self._kept += 1

    async def _connect(self, url: httpx.URL, port: int, seconds: float | None) -> _Connection:
        loop = asyncio.get_running_loop()
        host = url.host
        secure = url.raw_scheme == b"https"
        conn = _Connection(loop)
        try:
            async with asyncio.timeout(seconds):
                await loop.create_connection(
                    lambda: conn,
                    host,
                    port,
                    ssl=self._tls if secure else None,
                    server_hostname=host if secure else None,
                )
        except TimeoutError:
            conn.close()
            raise httpx.ConnectTimeout("the connection timed out") from None
        except (OSError, ssl.SSLError) as error:
            conn.close()
            raise httpx.ConnectError(str(error) or error.__class__.__name__) from error
        return conn

    async def _exchange(
        self,
        conn: _Connection,
        request: httpx.Request,
        body: bytes,
        timeouts: dict[str, float | None],
    ) -> httpx.Response:
        """One request written and its answer read, within ``TOTAL_DEADLINE``."""
        data = _encoded(conn.parser, request, body)
        deadline = conn.loop.time() + self._deadline
        received = conn.received
        try:
            await _write(conn, data, timeouts.get("write"), deadline)
            head, content = await self._read_answer(conn, timeouts.get("read"), deadline)
        except (httpx.WriteError, httpx.RemoteProtocolError) as error:
            if isinstance(error, _Unanswered) or conn.received != received or not conn.ended:
                raise
            # The connection ended before any byte of the answer (h11 says so in its
            # own terms: "can't handle event type ConnectionClosed when role=SERVER
            # and state=SEND_RESPONSE").
            raise _ClosedBeforeAnswer(
                "the server closed the connection before answering the request"
            ) from error
        return self._response(head, content)

    async def _read_answer(
        self, conn: _Connection, read_timeout: float | None, deadline: float
    ) -> tuple[h11.Response, bytes]:
        """The answer's head and its body as sent, at most ``max_body`` bytes of it."""
        parser = conn.parser
        head: h11.Response | None = None
        chunks: list[bytes] = []
        size = 0
        try:
            while True:
                event = parser.next_event()
                if event is h11.NEED_DATA:
                    await _feed(conn, read_timeout, deadline)
                elif isinstance(event, h11.Response):
                    head = event
                elif isinstance(event, h11.Data):
                    size += len(event.data)
                    if size > self._max_body:
                        raise AnswerTooLarge(f"the answer is larger than {self._max_body:,} bytes")
                    chunks.append(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    raise httpx.RemoteProtocolError(
                        "the server disconnected without sending a response"
                    )
                # InformationalResponse (1xx): the final answer follows.
        except h11.RemoteProtocolError as error:
            raise httpx.RemoteProtocolError(str(error)) from error
        assert head is not None
        return head, b"".join(chunks) if len(chunks) != 1 else chunks[0]

    def _response(self, head: h11.Response, content: bytes) -> httpx.Response:
        """httpx's answer: the body decoded (under the same cap), the headers it is
        handed on with (no cookies; no coding or length of a body decoded here)."""
        headers = head.headers.raw_items()
        dropped = _NOT_PASSED
        coding = [value for name, value in headers if name.lower() == b"content-encoding"]
        if coding:
            # Decoded here, under the same cap: a small compressed answer may inflate
            # to gigabytes, and httpx would decode it whole.
            try:
                content = content_coding.decoded(
                    content, b",".join(coding).decode("latin-1"), self._max_body
                )
            except content_coding.DecodedTooLarge as refused:
                raise AnswerTooLarge(str(refused)) from None
            except content_coding.CodingRefused as refused:
                raise httpx.RemoteProtocolError(str(refused)) from None
            dropped = _NOT_PASSED | _DECODED
        headers = [(name, value) for name, value in headers if name.lower() not in dropped]
        return httpx.Response(
            status_code=head.status_code,
            headers=headers,
            stream=httpx.ByteStream(content),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": head.reason},
        )

    async def aclose(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
        self._kept = 0


# A client is shared by every account a worker syncs at that host: a cookie one
# account's answer sets must never ride on another account's requests.
_NOT_PASSED = frozenset({b"set-cookie", b"set-cookie2"})
# Headers that describe the body as sent, not as handed on decoded.
_DECODED = frozenset({b"content-encoding", b"content-length"})


def _encoded(parser: h11.Connection, request: httpx.Request, body: bytes) -> bytes:
    """The request's bytes as h11 writes them (head, body, end)."""
    try:
        data = parser.send(
            h11.Request(method=request.method, target=request.url.raw_path, headers=_sent(request))
        )
        if body:
            data = (data or b"") + (parser.send(h11.Data(data=body)) or b"")
        return (data or b"") + (parser.send(h11.EndOfMessage()) or b"")
    except h11.LocalProtocolError as error:
        raise httpx.LocalProtocolError(str(error)) from error


async def _write(
    conn: _Connection, data: bytes, write_timeout: float | None, deadline: float
) -> None:
    """``data`` handed to the socket in one write, waiting while its buffer is full."""
    transport = conn.transport
    if conn.ended or transport is None or transport.is_closing():
        raise _ClosedBeforeWrite("the connection was closed before the request was sent")
    transport.write(data)
    while conn.paused:
        await conn.wait(_bounded(write_timeout, deadline, conn.loop), _write_timeout)
    if conn.lost and not conn.pending:
        raise httpx.WriteError("the connection was closed while the request was sent")


async def _feed(conn: _Connection, read_timeout: float | None, deadline: float) -> None:
    """The parser given what came since it last asked: bytes, the stream's end once
    (a second ask after it is a disconnection), or else what the next wait brings."""
    if conn.pending:
        received = b"".join(conn.pending) if len(conn.pending) > 1 else conn.pending[0]
        conn.pending.clear()
        conn.parser.receive_data(received)
    elif conn.ended:
        if conn.fed_end:
            raise httpx.RemoteProtocolError("the server closed the connection")
        conn.fed_end = True
        conn.parser.receive_data(b"")
    else:
        await conn.wait(_bounded(read_timeout, deadline, conn.loop), _read_timeout)


class _Unanswered(Exception):
    """The connection ended before any byte of the answer (with an httpx error type)."""

    written = True  # whether any byte of the request may have reached the server


class _ClosedBeforeWrite(_Unanswered, httpx.WriteError):
    written = False


class _ClosedBeforeAnswer(_Unanswered, httpx.RemoteProtocolError):
    pass


# RFC 9110's idempotent methods, urllib3's default ``Retry.allowed_methods`` too.
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


async def _take_slot(slots: asyncio.Semaphore, pool_timeout: float | None) -> None:
    """One of ``slots``, waiting up to the request's pool timeout when none is free
    (``PoolTimeout`` after it); a free one is taken without arming a timer."""
    if not slots.locked():
        await slots.acquire()
        return
    try:
        async with asyncio.timeout(pool_timeout):
            await slots.acquire()
    except TimeoutError:
        raise httpx.PoolTimeout("no connection was free in time") from None


def _may_retry(request: httpx.Request, error: _Unanswered) -> bool:
    """Whether a request a kept connection failed before any answer is sent again.

    Whether the server processed a request it closed on without answering cannot be
    known. An idempotent one is sent again whatever happened (urllib3's read-error
    retries), and so is one its sender marked ``REPEATABLE``. Any other (a token
    POST, a PATCH, one marked ``ONCE``) only when not one byte of it was written, as
    httpcore does (it retries a request only on a connection found unusable before
    sending, never after) and urllib3 (a POST whose connection dropped after sending
    is not retried): its failure reaches the caller, who knows whether it is safe to
    repeat.
    """
    if not error.written:
        return True
    if request.extensions.get(ONCE) is True:
        return False
    return request.method.upper() in _IDEMPOTENT or request.extensions.get(REPEATABLE) is True


def _sent(request: httpx.Request) -> list[tuple[bytes, bytes]]:
    """The request's headers, asking only for the codings ``content_coding`` decodes."""
    return [
        (name, _ACCEPTED if name.lower() == b"accept-encoding" else value)
        for name, value in request.headers.raw
    ]


_ACCEPTED = content_coding.ACCEPTED.encode()


def _bounded(timeout: float | None, deadline: float, loop: asyncio.AbstractEventLoop) -> float:
    """``timeout``, shortened to what is left of the exchange's ``deadline`` (then the
    wait's expiry is a read or write timeout, as a silent server's would be)."""
    left = max(deadline - loop.time(), 0.0)
    return left if timeout is None else min(timeout, left)


def _read_timeout() -> Exception:
    return httpx.ReadTimeout("the server stopped answering")


def _write_timeout() -> Exception:
    return httpx.WriteTimeout("the server stopped reading the request")
