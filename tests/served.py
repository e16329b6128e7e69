"""An ASGI app served by uvicorn in a thread on 127.0.0.1, for tests that need a real
socket (a server calling another over HTTP, Google's own client)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from tests.caldav_servers import HOST, free_port


@contextmanager
def served_app(app: Any, port: int | None = None) -> Iterator[str]:
    """Serve ``app`` (on ``port``, else a free one) until the block ends; yields its URL."""
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host=HOST, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive(), "the app stopped while starting"
        assert time.monotonic() < deadline, "the app did not start"
        time.sleep(0.02)
    try:
        yield f"http://{HOST}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
