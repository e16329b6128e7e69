"""HTTP to servers that users name: no internal addresses, bounded size and time.

A CalDAV URL comes from a user, and every later href from that server. So every
request to such a server goes through one transport that:

- parses the URL once, with the HTTP client's own parser (``httpx.URL``), and
  refuses the forms parsers disagree on (user info, backslashes, encoded or
  non-ASCII host names, control characters) before any request;
- resolves the host name itself, refuses the connection if any address is not
  globally routable (``ip.is_global``: loopback, private, carrier-grade NAT
  100.64/10, link-local and cloud metadata 169.254.169.254 all fail it), and
  connects to the very address it checked: no second lookup, so no DNS rebinding;
- asks for compressed answers (``content_coding``) except from a server on this very
  machine (``codings_for``), where compressing costs the server and saves nothing;
- never follows redirects (callers that want one follow it by hand, and it comes
  back through the same check);
- reads an answer in chunks under a size cap and a total deadline, so a server
  that sends 150 MiB or drips a byte at a time costs a bounded amount of memory
  and time; the deadline holds from the request's first byte, on every read and
  write of its connection, so a server that drips its status line and headers
  (which the HTTP client reads before handing the answer over) meets it too;
- or (``stream``) hands an answer over piece by piece as it arrives, under the same
  deadline, each piece bounded once decoded, for a caller that bounds what it keeps.

``allow_private=True`` (``CRMCAL_ALLOW_PRIVATE_NETWORKS``) turns the address
check off, for a calendar server on the operator's own network. ``resolve`` and
``is_public`` are module attributes so that tests can stand in for DNS and for
"the Internet".
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import ssl
import threading
import time
import typing
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpcore
import httpx

from crmcal.providers import content_coding

MiB = 1024 * 1024
MAX_RESPONSE_BYTES = 20 * MiB
TOTAL_DEADLINE = 120.0  # seconds per request, whatever the server's pace
READ_TIMEOUT = 30.0  # seconds of silence


class AddressRefused(Exception):
    """The URL or the address it resolves to is one crmcal does not connect to."""


class AnswerTooLarge(Exception):
    pass


class DeadlineExceeded(Exception):
    pass


def resolve(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to (tests replace this with a stub)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether an address is one crmcal may reach (tests replace this)."""
    return ip.is_global and not ip.is_multicast


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    ip = ipaddress.ip_address(text.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is not None:
            return embedded
    return ip


def check_address(text: str) -> None:
    """Refuse an address that is not globally routable."""
    try:
        ip = _address(text)
    except ValueError:
        raise AddressRefused(f"{text!r} is not an IP address") from None
    if not is_public(ip):
        raise AddressRefused(
            "the server is on a private or loopback network (or another address that is "
            "not public), which this server does not allow (CRMCAL_ALLOW_PRIVATE_NETWORKS)"
        )


def checked_addresses(host: str, port: int) -> list[str]:
    """The addresses of ``host``, all globally routable, or AddressRefused."""
    try:
        addresses = [str(_address(host))]
    except ValueError:
        try:
            addresses = resolve(host, port)
        except (OSError, UnicodeError):
            raise AddressRefused(f"the host name {host!r} does not resolve") from None
    if not addresses:
        raise AddressRefused(f"the host name {host!r} does not resolve")
    for address in addresses:
        check_address(address)
    return addresses


_CONTROL = {chr(c) for c in range(0x21)} | {"\x7f"}


def parse_url(url: str) -> httpx.URL:
    """``url`` as the HTTP client reads it, or AddressRefused for any form that
    parsers read differently (so what was checked is what is connected to)."""
    if "\\" in url:
        raise AddressRefused("the URL contains a backslash")
    if any(c in _CONTROL for c in url):
        raise AddressRefused("the URL contains spaces or control characters")
    try:
        parsed = httpx.URL(url)
        split = urlsplit(url)
        split_port = split.port
    except (httpx.InvalidURL, ValueError):
        raise AddressRefused("the URL is not valid") from None
    if parsed.scheme not in ("http", "https"):
        raise AddressRefused("the URL must start with http:// or https://")
    if parsed.userinfo or "@" in split.netloc:
        raise AddressRefused(
            "the URL contains a user name or password: give them in their own fields"
        )
    host = parsed.host
    if not host:
        raise AddressRefused("the URL has no host name")
    if "%" in split.netloc or not split.netloc.isascii():
        raise AddressRefused("the host name is percent-encoded or not plain ASCII")
    if (split.hostname or "").lower().strip("[]") != host.lower() or split_port != parsed.port:
        raise AddressRefused("the URL's host name is ambiguous")
    return parsed


def origin(url: str | httpx.URL) -> tuple[str, str, int]:
    """(scheme, host, port) of a URL, the default port filled in."""
    parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    return parsed.scheme, parsed.host.lower(), port


# The monotonic time by which the request this thread is making must be answered:
# each request runs in one thread, start to end (the client is synchronous).
_deadline = threading.local()


def _within_deadline(timeout: float | None) -> float | None:
    """``timeout`` cut to what is left of this thread's request deadline."""
    until: float | None = getattr(_deadline, "until", None)
    if until is None:
        return timeout
    left = until - time.monotonic()
    if left <= 0:
        raise httpcore.ReadTimeout("the request's total deadline passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read and write ends by the request's deadline."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _within_deadline(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _within_deadline(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        inner = self._inner.start_tls(ssl_context, server_hostname, _within_deadline(timeout))
        return _DeadlineStream(inner)

    def get_extra_info(self, info: str) -> typing.Any:
        return self._inner.get_extra_info(info)


class _GuardedBackend(httpcore.NetworkBackend):
    """Connects only to checked addresses, the very ones it checked (unless
    ``check`` is off), and bounds each connection's reads by the request's deadline."""

    def __init__(self, check: bool = True) -> None:
        self._backend = httpcore.SyncBackend()
        self._check = check

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[typing.Any] | None = None,
    ) -> httpcore.NetworkStream:
        if not self._check:
            stream = self._backend.connect_tcp(
                host, port, _within_deadline(timeout), local_address, socket_options
            )
            return _DeadlineStream(stream)
        try:
            addresses = checked_addresses(host, port)
        except AddressRefused as refused:
            raise httpcore.ConnectError(str(refused)) from refused
        failure: Exception | None = None
        for address in addresses:
            try:
                stream = self._backend.connect_tcp(
                    address, port, _within_deadline(timeout), local_address, socket_options
                )
                return _DeadlineStream(stream)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as error:
                failure = error
        assert failure is not None
        raise failure

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class _Transport(httpx.HTTPTransport):
    def __init__(self, tls: ssl.SSLContext, guarded: bool) -> None:
        super().__init__(verify=tls, trust_env=False)
        self._pool = httpcore.ConnectionPool(
            ssl_context=tls,
            max_connections=4,
            max_keepalive_connections=4,
            network_backend=_GuardedBackend(check=guarded),
        )


@dataclass
class Answer:
    status: int
    headers: httpx.Headers
    body: bytes


# The most bytes of an answer read as a stream handed over at once, decoded.
PIECE = 64 * 1024


@dataclass
class Streamed:
    """An answer being read: its status and headers, and its body's pieces as they come."""

    status: int
    headers: httpx.Headers
    pieces: Iterator[bytes]


class GuardedClient:
    """A synchronous HTTP client for one user-named server (run it in worker threads)."""

    def __init__(
        self,
        *,
        tls: ssl.SSLContext,
        allow_private: bool = False,
        auth: tuple[str, str] | None = None,
        read_timeout: float = READ_TIMEOUT,
        deadline: float = TOTAL_DEADLINE,
        max_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        self.deadline = deadline
        self.max_bytes = max_bytes
        self._guarded = not allow_private
        self._client = httpx.Client(
            transport=_Transport(tls, self._guarded),
            auth=httpx.BasicAuth(*auth) if auth else None,
            timeout=httpx.Timeout(read_timeout),
            follow_redirects=False,
            trust_env=False,
        )

    def request(
        self, method: str, url: str, body: bytes | str = b"", headers: Mapping[str, str] = {}
    ) -> Answer:
        """One request, its answer read whole within the caps. Raises AddressRefused,
        AnswerTooLarge, DeadlineExceeded, or httpx.TransportError for the network."""
        with self._sent(method, url, body, headers) as (r, started):
            chunks: list[bytes] = []
            size = 0
            declared = r.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self.max_bytes:
                raise AnswerTooLarge(self._too_large())
            for chunk in r.iter_raw():
                size += len(chunk)
                if size > self.max_bytes:
                    raise AnswerTooLarge(self._too_large())
                self._in_time(started)
                chunks.append(chunk)
            raw = b"".join(chunks)
            return Answer(r.status_code, r.headers, _decoded(raw, r.headers, self.max_bytes))

    @contextlib.contextmanager
    def stream(
        self, method: str, url: str, body: bytes | str = b"", headers: Mapping[str, str] = {}
    ) -> Iterator[Streamed]:
        """One request whose answer is read as it arrives (``Streamed.pieces``), in this
        thread, within the same total deadline as ``request``'s but under no cap on the
        whole answer: each piece is at most ``PIECE`` bytes decoded, and the caller bounds
        what it keeps of them. Raises as ``request`` does, also while it is read."""
        with self._sent(method, url, body, headers) as (r, started):
            yield Streamed(r.status_code, r.headers, self._pieces(r, started))

    @contextlib.contextmanager
    def _sent(
        self, method: str, url: str, body: bytes | str, headers: Mapping[str, str]
    ) -> Iterator[tuple[httpx.Response, float]]:
        """The request sent, its answer open to be read, and when it was started (the
        total deadline runs from then)."""
        parsed = parse_url(url)
        started = time.monotonic()
        content = body.encode() if isinstance(body, str) else body
        sent = {"Accept-Encoding": codings_for(parsed.host), **headers}
        with (
            self._held_to_deadline(started),
            self._client.stream(method, parsed, content=content, headers=sent) as r,
        ):
            yield r, started

    def _pieces(self, answer: httpx.Response, started: float) -> Iterator[bytes]:
        try:
            decoder = content_coding.Decoder(answer.headers.get("content-encoding"), PIECE)
            for chunk in answer.iter_raw():
                self._in_time(started)
                yield from decoder.pieces(chunk)
        except content_coding.CodingRefused as refused:
            raise httpx.DecodingError(str(refused)) from None

    def _in_time(self, started: float) -> None:
        if time.monotonic() - started > self.deadline:
            raise DeadlineExceeded(f"the server took longer than {self.deadline:g} s to answer")

    @contextlib.contextmanager
    def _held_to_deadline(self, started: float) -> Iterator[None]:
        """The request begun at ``started`` held to the deadline in this thread, and its
        failures told as ``request`` tells them."""
        _deadline.until = started + self.deadline
        try:
            yield
        except httpx.TimeoutException:
            if time.monotonic() - started >= self.deadline:
                raise DeadlineExceeded(
                    f"the server took longer than {self.deadline:g} s to answer"
                ) from None
            raise
        except httpx.ConnectError as error:
            cause: BaseException | None = error
            while cause is not None and not isinstance(cause, AddressRefused):
                cause = cause.__cause__ or cause.__context__
            if isinstance(cause, AddressRefused):
                raise cause from None
            raise
        finally:
            _deadline.until = None

    def _too_large(self) -> str:
        return f"the server's answer is larger than {self.max_bytes // MiB} MiB"

    def close(self) -> None:
        self._client.close()


def codings_for(host: str) -> str:
    """What ``Accept-Encoding`` asks of ``host``: the codings crmcal decodes, except of a
    server on this very machine (a loopback address, ``localhost``), where the answer
    crosses no network and compressing it costs the server CPU for nothing (Radicale
    compresses every answer asked so: 0.13 s of its CPU for a first import of 5,000
    events, on the machine crmcal runs on)."""
    name = host.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return "identity"
    try:
        loopback = ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        loopback = False
    return "identity" if loopback else content_coding.ACCEPTED


def _decoded(raw: bytes, headers: httpx.Headers, cap: int) -> bytes:
    """The body without its content coding, itself under the cap (no zip bombs)."""
    try:
        return content_coding.decoded(raw, headers.get("content-encoding"), cap)
    except content_coding.DecodedTooLarge:
        raise AnswerTooLarge(f"the server's answer is larger than {cap // MiB} MiB") from None
    except content_coding.CodingRefused as refused:
        raise httpx.DecodingError(str(refused)) from None


def reason(failure: BaseException) -> str:
    """One sentence about a transport failure, without library internals."""
    if isinstance(failure, AddressRefused | AnswerTooLarge | DeadlineExceeded):
        return str(failure)
    if isinstance(failure, httpx.ConnectTimeout):
        return "the connection timed out"
    if isinstance(failure, httpx.TimeoutException):
        return "the server stopped answering"
    if isinstance(failure, httpx.ConnectError):
        text = str(failure).lower()
        if "certificate" in text or "ssl" in text or "tls" in text:
            return "the server's TLS certificate is not valid"
        if "name" in text and ("resolve" in text or "known" in text):
            return "the host name does not resolve"
        return "the connection was refused"
    if isinstance(failure, httpx.RemoteProtocolError | httpx.ReadError):
        return "the server closed the connection or broke the HTTP protocol"
    if isinstance(failure, httpx.DecodingError):
        # Raised by ``_decoded`` with content_coding's own words (which coding, or
        # that it is corrupt or too large), none of a library's internals.
        detail = str(failure).strip()
        said = "the server's answer could not be decoded"
        return f"{said} ({detail})" if detail else said
    return "a network error occurred"


__all__ = [
    "MAX_RESPONSE_BYTES",
    "AddressRefused",
    "Answer",
    "AnswerTooLarge",
    "DeadlineExceeded",
    "GuardedClient",
    "Streamed",
    "check_address",
    "checked_addresses",
    "codings_for",
    "origin",
    "parse_url",
    "reason",
]
