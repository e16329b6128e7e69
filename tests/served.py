"""An ASGI app served by uvicorn in a thread on 127.0.0.1, for tests that need a real
socket (a server calling another over HTTP, Google's own client), and what such
tests do with it: wait for something to happen, click through a consent screen."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs, urlsplit

import uvicorn

from tests import plain
from tests.caldav_servers import HOST


def bound_socket() -> socket.socket:
    """A socket bound to a port the system picks on 127.0.0.1, for an app whose own URL
    must be known before it is served: nobody else can take the port in between."""
    sock = socket.socket()
    sock.bind((HOST, 0))
    return sock


@contextmanager
def served_app(
    app: Any,
    sock: socket.socket | None = None,
    shutdown_grace: int | None = None,
    keep_alive: int = 5,
) -> Iterator[str]:
    """Serve ``app`` (on ``sock``, else on a port the system picks) until the block ends;
    yields its URL. ``shutdown_grace``: seconds requests still in flight get at the end;
    ``keep_alive``: seconds an idle connection stays open (uvicorn's default, 5)."""
    sock = sock or bound_socket()
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, host=HOST, port=port, log_level="warning", timeout_graceful_shutdown=shutdown_grace,
        timeout_keep_alive=keep_alive,
    )  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120  # a generous bound on a failure, never on a pass
    while not server.started:
        assert thread.is_alive(), "the app stopped while starting"
        assert time.monotonic() < deadline, "the app did not start"
        time.sleep(0.02)
    try:
        yield f"http://{HOST}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        sock.close()


# How long a test waits for a state before it gives up: a hang guard, not a bound on how
# long a passing test may take on a busy machine.
HANG_GUARD = 600.0


def wait_for(check: Callable[[], Any], seconds: float = HANG_GUARD) -> Any:
    """``check()``'s first true answer, asked every 20 ms (for ``seconds`` at most)."""
    deadline = time.monotonic() + seconds
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"not within {seconds} s"
        time.sleep(0.02)


def grant_in_browser(authorize_url: str, email: str) -> str:
    """What a person does on an emulator's consent screen (pick the account, agree);
    answers where the browser is sent back to."""
    page = plain.get(authorize_url, timeout=30)
    assert page.status_code == 200, page.text
    query = {k: v[0] for k, v in parse_qs(urlsplit(authorize_url).query).items()}
    answer = plain.post(authorize_url.split("?")[0], data={**query, "email": email}, timeout=30)
    assert answer.status_code == 302, answer.text
    return answer.headers["location"]
