"""One TLS context for every HTTP client of a process.

Building one loads the CA bundle: about 20 ms of CPU, more than the rest of a small
sync, and as much again for each client that builds its own. The providers' clients
and the emulators' outgoing ones (push deliveries, Graph's validation handshake) share
this one.
"""

from __future__ import annotations

import functools
import ssl

import httpx


@functools.cache
def tls() -> ssl.SSLContext:
    """The process's TLS context, as httpx builds it by default."""
    return httpx.create_ssl_context()
