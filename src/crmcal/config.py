"""Settings read from the environment (``CRMCAL_*``), in one typed object."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_DATABASE_URL = "sqlite:///./crmcal.db"
DEFAULT_POLL_SECONDS = 180
DEFAULT_RETRY_BACKOFF = 0.5
DEFAULT_WORKER_HEARTBEAT = 10.0
# A sync's lease (renewed while it runs): how soon a connection whose sync holder
# vanished syncs again. Never longer than the poll interval unless set so.
DEFAULT_LEASE_SECONDS = 60.0
DEFAULT_SYNC_MAX_SECONDS = 3600.0
# Days ahead that the occurrences of recurring series exist as activities.
DEFAULT_SERIES_HORIZON_DAYS = 365
# Database connections the web server's (and a command's) pool opens at most
# (PostgreSQL), when CRMCAL_DATABASE_POOL_SIZE does not say (see ``db.pool_size``).
DEFAULT_DATABASE_POOL_SIZE = 30


class ConfigError(ValueError):
    """A setting has a value crmcal cannot use."""


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


_DIGITS = re.compile(r"[0-9]+")
_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")
# Surrounding spaces, tabs and line ends are dropped (an env file's trailing space);
# anything else that is no ASCII digit or point is refused, Unicode digits included.
_BLANKS = " \t\r\n"


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)


def _bounds(low: float, high: float | None, unit: str) -> str:
    what = f" {unit}" if unit else ""
    if high is None:
        return f"at least {_number(low)}{what}"
    return f"from {_number(low)} to {_number(high)}{what}"


def whole_number(
    env: Mapping[str, str],
    name: str,
    default: int,
    low: int,
    high: int | None,
    unit: str = "",
) -> int:
    """The whole-number setting ``name`` (unset or blank: ``default``), written in
    ASCII digits and between ``low`` and ``high`` (None: no upper bound); anything
    else raises one line naming the variable, its value and the range."""
    raw = env.get(name) or ""
    text = raw.strip(_BLANKS)
    if not text:
        return default
    # More than 30 digits is past every bound (and int() refuses thousands of them).
    value = int(text) if _DIGITS.fullmatch(text) and len(text) <= 30 else None
    if value is None or value < low or (high is not None and value > high):
        raise ConfigError(f"{name} must be a whole number {_bounds(low, high, unit)}, got {raw!r}")
    return value


def series_horizon_days(env: Mapping[str, str]) -> int:
    """How many days ahead the occurrences of recurring series exist as activities
    (``CRMCAL_SERIES_HORIZON_DAYS``): checked at start with the other settings, and read
    so by the CRM's series wherever they need it."""
    return whole_number(
        env, "CRMCAL_SERIES_HORIZON_DAYS", DEFAULT_SERIES_HORIZON_DAYS, 1, 3650, "days"
    )


def _seconds(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    """A number of seconds (``12`` or ``0.5``: ASCII digits and one point), as
    :func:`whole_number` reads a whole one."""
    raw = env.get(name) or ""
    text = raw.strip(_BLANKS)
    if not text:
        return default
    value = float(text) if _DECIMAL.fullmatch(text) and len(text) <= 30 else None
    if value is None or not low <= value <= high:
        raise ConfigError(
            f"{name} must be a number of seconds {_bounds(low, high, '')}, got {raw!r}"
        )
    return value


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    # The most database connections a process's pool opens (PostgreSQL; a session
    # waits for one to come free beyond that); None: the process's own default. Read
    # through ``db.pool_size`` only, which gives both their meaning.
    database_pool_size: int | None = None
    secret_key: str | None = None
    # Keys that still decrypt stored credentials while `crmcal keys rotate` runs.
    old_secret_keys: tuple[str, ...] = ()
    base_url: str = "http://127.0.0.1:8000"
    poll_seconds: int = DEFAULT_POLL_SECONDS
    allow_private_networks: bool = False
    max_body_bytes: int = 1024 * 1024
    # Google: the API and OAuth roots (None: Google's own), and crmcal's OAuth client.
    google_api_url: str | None = None
    google_oauth_url: str | None = None
    google_client_id: str = ""
    google_client_secret: str = ""
    microsoft_api_url: str | None = None
    microsoft_oauth_url: str | None = None
    microsoft_client_id: str = ""
    microsoft_client_secret: str = ""
    # Seconds before the first retry of a rate-limited or failed Google or Microsoft call
    # (doubling).
    retry_backoff: float = DEFAULT_RETRY_BACKOFF
    # Seconds between a queue worker's heartbeats; a worker silent for three is taken
    # for dead and its jobs run again elsewhere.
    worker_heartbeat: float = DEFAULT_WORKER_HEARTBEAT
    # Length of a sync's lease on its connection, and the most a sync may take.
    lease_seconds: float = DEFAULT_LEASE_SECONDS
    sync_max_seconds: float = DEFAULT_SYNC_MAX_SECONDS
    # Syncs of CalDAV connections on one server at once, across all workers.
    caldav_server_concurrency: int = 8
    # Requests a minute to Google from all workers together (the project's quota; each
    # call in a batch counts); 0 keeps none. Held on PostgreSQL only.
    google_project_quota: int = 10_000
    # Processes that parse calendar data for the syncs of this process (a first
    # import's thousands of events); 0 parses in the syncing process itself, None is
    # one per core, at most four.
    parse_workers: int | None = None
    # Days ahead that series' occurrences exist (``series_horizon_days``).
    series_horizon_days: int = DEFAULT_SERIES_HORIZON_DAYS

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        poll_seconds = whole_number(env, "CRMCAL_POLL_SECONDS", DEFAULT_POLL_SECONDS, 1, None)
        retry_backoff = _seconds(env, "CRMCAL_RETRY_BACKOFF", DEFAULT_RETRY_BACKOFF, 0, 60)
        worker_heartbeat = _seconds(
            env, "CRMCAL_WORKER_HEARTBEAT_SECONDS", DEFAULT_WORKER_HEARTBEAT, 0.2, 600
        )
        lease_seconds = _seconds(
            env, "CRMCAL_LEASE_SECONDS", min(DEFAULT_LEASE_SECONDS, poll_seconds), 1, 3600
        )
        sync_max_seconds = _seconds(
            env, "CRMCAL_SYNC_MAX_SECONDS", DEFAULT_SYNC_MAX_SECONDS, 1, 7 * 86400
        )
        per_server = whole_number(env, "CRMCAL_CALDAV_SERVER_CONCURRENCY", 8, 1, 1000)
        quota = whole_number(
            env, "CRMCAL_GOOGLE_PROJECT_QUOTA", 10_000, 0, 10_000_000, "requests a minute"
        )
        parse_workers = whole_number(env, "CRMCAL_PARSE_WORKERS", -1, 0, 64)
        pool_size = whole_number(env, "CRMCAL_DATABASE_POOL_SIZE", -1, 1, 1000, "connections")
        return cls(
            database_pool_size=None if pool_size < 0 else pool_size,
            series_horizon_days=series_horizon_days(env),
            parse_workers=None if parse_workers < 0 else parse_workers,
            caldav_server_concurrency=per_server,
            google_project_quota=quota,
            worker_heartbeat=worker_heartbeat,
            lease_seconds=lease_seconds,
            sync_max_seconds=sync_max_seconds,
            database_url=env.get("CRMCAL_DATABASE_URL") or DEFAULT_DATABASE_URL,
            secret_key=env.get("CRMCAL_SECRET_KEY") or None,
            old_secret_keys=tuple(
                k.strip() for k in (env.get("CRMCAL_OLD_SECRET_KEYS") or "").split(",") if k.strip()
            ),
            base_url=(env.get("CRMCAL_BASE_URL") or "http://127.0.0.1:8000").rstrip("/"),
            poll_seconds=poll_seconds,
            allow_private_networks=_flag(env.get("CRMCAL_ALLOW_PRIVATE_NETWORKS")),
            google_api_url=(env.get("CRMCAL_GOOGLE_API_URL") or "").rstrip("/") or None,
            google_oauth_url=(env.get("CRMCAL_GOOGLE_OAUTH_URL") or "").rstrip("/") or None,
            google_client_id=env.get("CRMCAL_GOOGLE_CLIENT_ID") or "",
            google_client_secret=env.get("CRMCAL_GOOGLE_CLIENT_SECRET") or "",
            retry_backoff=retry_backoff,
            microsoft_api_url=(env.get("CRMCAL_MICROSOFT_API_URL") or "").rstrip("/") or None,
            microsoft_oauth_url=(env.get("CRMCAL_MICROSOFT_OAUTH_URL") or "").rstrip("/") or None,
            microsoft_client_id=env.get("CRMCAL_MICROSOFT_CLIENT_ID") or "",
            microsoft_client_secret=env.get("CRMCAL_MICROSOFT_CLIENT_SECRET") or "",
        )
