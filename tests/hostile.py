"""Stand-in hostile servers on 127.0.0.1 for the security tests.

``HostileServer`` answers each request with the handler its path names (one
function of the request's method, path, headers and body, writing to the raw
connection so that it can redirect, drip or stream without end). ``Sentinel``
stands for an internal service (a cloud metadata endpoint, an intranet host):
it only records that somebody reached it. ``stand_in_dns`` replaces name
resolution and "the public Internet" for the guarded transport: 127.0.0.1 is
public there, every other loopback address internal.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from crmcal.providers import guarded_http

PUBLIC = "127.0.0.1"  # the stand-in for an address on the Internet
INTERNAL = "127.0.0.2"  # the stand-in for an internal service


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


Handler = Callable[[Request, BaseHTTPRequestHandler], None]


@dataclass
class HostileServer:
    host: str = PUBLIC
    port: int = 0
    routes: dict[str, Handler] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    active: int = 0
    sent: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def count(self, delta: int = 0, sent: int = 0) -> None:
        with self._lock:
            self.active += delta
            self.sent += sent


def reply(
    handler: BaseHTTPRequestHandler,
    status: int,
    body: bytes | str = b"",
    headers: dict[str, str] | None = None,
) -> None:
    data = body.encode() if isinstance(body, str) else body
    handler.send_response(status)
    for name, value in {"Content-Type": "text/xml; charset=utf-8", **(headers or {})}.items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def _handler_class(server: HostileServer) -> type[BaseHTTPRequestHandler]:
    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            request = Request(self.command, self.path, dict(self.headers.items()), body)
            server.requests.append(request)
            route = server.routes.get(self.path.split("?", 1)[0]) or server.routes.get("*")
            server.count(+1)
            try:
                if route is None:
                    reply(self, 404, "", {"Content-Type": "text/plain"})
                else:
                    route(request, self)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True
            finally:
                server.count(-1)

        do_GET = do_PROPFIND = do_REPORT = do_PUT = do_DELETE = do_OPTIONS = _any

    return _Handler


@contextmanager
def serving(server: HostileServer) -> Iterator[HostileServer]:
    httpd = ThreadingHTTPServer((server.host, server.port), _handler_class(server))
    httpd.daemon_threads = True
    server.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stop.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=30)


@contextmanager
def sentinel(port: int = 0) -> Iterator[HostileServer]:
    """An internal service at 127.0.0.2 that records whoever reaches it."""
    with serving(HostileServer(host=INTERNAL, port=port, routes={"*": _ok})) as found:
        yield found


def _ok(request: Request, handler: BaseHTTPRequestHandler) -> None:
    reply(handler, 200, "internal secrets", {"Content-Type": "text/plain"})


def stand_in_dns(monkeypatch: pytest.MonkeyPatch, names: dict[str, Any]) -> list[str]:
    """Resolve ``names`` (a name -> address list, or a function answering one) for the
    guarded transport, and make 127.0.0.1 the one public address; answers the log
    of names looked up."""
    looked_up: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        looked_up.append(host)
        answer = names.get(host)
        if answer is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return list(answer() if callable(answer) else answer)

    def is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return str(ip) == PUBLIC or (ip.is_global and not ip.is_multicast)

    monkeypatch.setattr(guarded_http, "resolve", resolve)
    monkeypatch.setattr(guarded_http, "is_public", is_public)
    return looked_up


MULTISTATUS = (
    '<?xml version="1.0"?><D:multistatus xmlns:D="DAV:" '
    'xmlns:C="urn:ietf:params:xml:ns:caldav">{}</D:multistatus>'
)


def response(href: str, props: str, status: str = "HTTP/1.1 200 OK") -> str:
    return (
        f"<D:response><D:href>{href}</D:href><D:propstat><D:prop>{props}</D:prop>"
        f"<D:status>{status}</D:status></D:propstat></D:response>"
    )
