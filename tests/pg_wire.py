"""PostgreSQL's wire as a test needs to break it: a TCP proxy in front of the real server
that drops its connections on demand (as a restart or a network does, without a word
from the server), and a stand-in server that refuses every connection attempt with an
error of the server's own (as a server starting up or out of connections does)."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from sqlalchemy.engine import make_url

# The simple-protocol message psycopg commits a transaction with.
COMMIT = b"Q" + struct.pack("!I", 4 + len(b"COMMIT\0")) + b"COMMIT\0"
_SSL_OR_GSS_REQUEST = (80877103, 80877104)


def _pipe(source: socket.socket, target: socket.socket, upstream: bool, proxy: PgProxy) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            if not upstream and proxy.commit_sent.is_set():
                # The server answered the COMMIT, so it is stored: the answer is lost.
                proxy.commit_sent.clear()
                proxy.drop()
                return
            target.sendall(data)
            if upstream and COMMIT in data and proxy.drop_after_commit.is_set():
                proxy.drop_after_commit.clear()
                proxy.commit_sent.set()
    with contextlib.suppress(OSError):
        target.shutdown(socket.SHUT_WR)


@dataclass
class PgProxy:
    """Forwards every connection to ``upstream`` (host, port) until ``drop()``."""

    upstream: tuple[str, int]
    listener: socket.socket = field(default_factory=socket.socket)
    pairs: list[tuple[socket.socket, socket.socket]] = field(default_factory=list)
    # Set: the next COMMIT is forwarded, and every connection dropped as its answer comes.
    drop_after_commit: threading.Event = field(default_factory=threading.Event)
    commit_sent: threading.Event = field(default_factory=threading.Event)

    def serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.listener.accept()
                server = socket.create_connection(self.upstream)
                self.pairs.append((client, server))
                threading.Thread(target=_pipe, args=(client, server, True, self),
                                 daemon=True).start()  # fmt: skip
                threading.Thread(target=_pipe, args=(server, client, False, self),
                                 daemon=True).start()  # fmt: skip

    def drop(self) -> None:
        """Close every connection made so far, both ways, at once."""
        for pair in self.pairs:
            for sock in pair:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
        self.pairs.clear()


@contextlib.contextmanager
def pg_proxy(url: str) -> Iterator[tuple[PgProxy, str]]:
    """A proxy to the server of database URL ``url``, and ``url`` through it."""
    parsed = make_url(url)
    proxy = PgProxy((parsed.host or "127.0.0.1", parsed.port or 5432))
    proxy.listener.bind(("127.0.0.1", 0))
    proxy.listener.listen()
    threading.Thread(target=proxy.serve, daemon=True).start()
    try:
        port = proxy.listener.getsockname()[1]
        yield proxy, parsed.set(host="127.0.0.1", port=port).render_as_string(hide_password=False)
    finally:
        proxy.listener.close()
        proxy.drop()


def _refuse(listener: socket.socket, sqlstate: str, message: str) -> None:
    fields = b"".join(
        [b"SFATAL\0", b"VFATAL\0", b"C" + sqlstate.encode() + b"\0",
         b"M" + message.encode() + b"\0", b"\0"]
    )  # fmt: skip
    error = b"E" + struct.pack("!I", 4 + len(fields)) + fields
    with contextlib.suppress(OSError):
        while True:
            client, _ = listener.accept()
            with client, contextlib.suppress(OSError):
                while True:  # an SSL or GSS request is declined, then the startup message
                    (length,) = struct.unpack("!I", client.recv(4, socket.MSG_WAITALL))
                    body = client.recv(length - 4, socket.MSG_WAITALL)
                    if struct.unpack("!I", body[:4])[0] not in _SSL_OR_GSS_REQUEST:
                        break
                    client.sendall(b"N")
                client.sendall(error)


@contextlib.contextmanager
def refusing_server(sqlstate: str, message: str) -> Iterator[str]:
    """A stand-in PostgreSQL server that answers every connection's startup with the
    error ``sqlstate`` and ``message``, as PostgreSQL does; yields a database URL."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    threading.Thread(target=_refuse, args=(listener, sqlstate, message), daemon=True).start()
    try:
        yield f"postgresql+psycopg://crmcal@127.0.0.1:{listener.getsockname()[1]}/crmcal"
    finally:
        listener.close()
