"""Logs for people (text) or machines (``CRMCAL_LOG_FORMAT=json``: one JSON object a line).

Each record of a sync carries the connection's id (``connection_id``), set by the
runner for everything logged while that sync runs, and the process
(``process``, host:pid) so that lines from many workers can be told apart. Secrets
never reach a line: messages are scrubbed of bearer tokens and of token, secret
and password parameters, and HTTP client libraries, which log request lines, are
kept to warnings. So is the job queue (procrastinate), which logs two lines a job
(its start and its end) beside the sync's own line with its counts: a worker's
no-change syncs made two thirds of their log lines there; ``CRMCAL_QUEUE_LOG_LEVEL``
(``info``, ``debug``) brings them back. A sync that found nothing to do logs its line
at debug, which ``CRMCAL_LOG_LEVEL=debug`` shows.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import os
import re
import socket
import sys

CONNECTION: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "crmcal_connection", default=None
)
PROCESS = f"{socket.gethostname()}:{os.getpid()}"
_SECRETS = re.compile(
    r"(?i)(bearer\s+)[^\s\"',]+"
    r"|((?:access_token|refresh_token|id_token|client_secret|password|token|code)"
    r"[\"']?\s*[=:]\s*[\"']?)[^\s\"'&,}]+"
)
QUIET = ("httpx", "httpcore", "niquests", "urllib3", "caldav")
QUEUE_LOGGER = "procrastinate"
OWN_LOGGER = "crmcal"


def scrub(text: str) -> str:
    """``text`` with anything that looks like a credential replaced by ``***``."""
    return _SECRETS.sub(lambda m: (m.group(1) or m.group(2) or "") + "***", text)


class _Context(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "connection_id", None) is None:
            record.connection_id = CONNECTION.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": scrub(record.getMessage()),
            "process": PROCESS,
        }
        connection_id = getattr(record, "connection_id", None)
        if connection_id is not None:
            line["connection_id"] = connection_id
        if record.exc_info:
            line["error"] = scrub(self.formatException(record.exc_info))
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = scrub(super().format(record))
        connection_id = getattr(record, "connection_id", None)
        return f"{text} [connection {connection_id}]" if connection_id is not None else text


def _level_of(variable: str, default: str) -> int:
    """The log level a variable names (a level's name), else ``default``."""
    name = (os.environ.get(variable) or default).strip().upper()
    level = logging.getLevelName(name)
    if not isinstance(level, int):
        raise ValueError(f"{variable}: {name.lower()!r} is no log level")
    return level


def queue_level() -> int:
    """The job queue's log level: ``CRMCAL_QUEUE_LOG_LEVEL`` (a level's name), else
    warnings only."""
    return _level_of("CRMCAL_QUEUE_LOG_LEVEL", "warning")


def own_level() -> int:
    """crmcal's own log level: ``CRMCAL_LOG_LEVEL`` (a level's name), else info, where a
    sync that found nothing to do writes no line (it logs at debug)."""
    return _level_of("CRMCAL_LOG_LEVEL", "info")


def setup(fmt: str | None = None, level: int = logging.INFO) -> None:
    """Send every log record to stderr as ``fmt`` (``json`` or ``text``; default from
    ``CRMCAL_LOG_FORMAT``) from ``level`` up; crmcal's own at ``own_level()``, the job
    queue's at ``queue_level()``."""
    fmt = (fmt or os.environ.get("CRMCAL_LOG_FORMAT") or "text").strip().lower()
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_Context())
    handler.setFormatter(
        JsonFormatter()
        if fmt == "json"
        else TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger(QUEUE_LOGGER).setLevel(queue_level())
    logging.getLogger(OWN_LOGGER).setLevel(own_level())
