"""Access logs without secrets: the query string of ``/oauth/*`` requests is dropped.

The OAuth callback carries the authorization ``code`` and the ``state`` in its
query string; uvicorn's access log would otherwise write both to every log
aggregator the operator ships logs to.
"""

from __future__ import annotations

import logging

REDACTED_PREFIXES = ("/oauth/",)


class RedactOAuthQueries(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        # uvicorn.access: (client address, method, path with query, HTTP version, status)
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            path = args[2]
            if path.startswith(REDACTED_PREFIXES) and "?" in path:
                record.args = (*args[:2], path.split("?", 1)[0] + "?[redacted]", *args[3:])
        return True


def install() -> None:
    """Add the filter to uvicorn's access logger, once per process."""
    logger = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactOAuthQueries) for f in logger.filters):
        logger.addFilter(RedactOAuthQueries())
