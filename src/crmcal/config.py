"""Settings read from the environment (``CRMCAL_*``), in one typed object."""

from __future__ import annotations

import os
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
# Database connections the web server's pool opens at most (PostgreSQL).
DEFAULT_DATABASE_POOL_SIZE = 30


class ConfigError(ValueError):
    """A setting has a value crmcal cannot use."""


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _seconds(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = env.get(name) or ""
    if not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from None
    if not low <= value <= high:  # also refuses NaN
        raise ConfigError(f"{name} must be between {low:g} and {high:g} seconds")
    return value


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    # The most database connections the web server's pool opens (PostgreSQL; a
    # session waits for one to come free beyond that).
    database_pool_size: int = DEFAULT_DATABASE_POOL_SIZE
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

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        poll = env.get("CRMCAL_POLL_SECONDS", str(DEFAULT_POLL_SECONDS))
        try:
            poll_seconds = int(poll)
        except ValueError:
            raise ConfigError(f"CRMCAL_POLL_SECONDS must be a whole number, got {poll!r}") from None
        if poll_seconds < 1:
            raise ConfigError("CRMCAL_POLL_SECONDS must be at least 1")
        backoff = env.get("CRMCAL_RETRY_BACKOFF") or str(DEFAULT_RETRY_BACKOFF)
        try:
            retry_backoff = float(backoff)
        except ValueError:
            raise ConfigError(f"CRMCAL_RETRY_BACKOFF must be a number, got {backoff!r}") from None
        if not 0 <= retry_backoff <= 60:  # also refuses NaN
            raise ConfigError("CRMCAL_RETRY_BACKOFF must be between 0 and 60 seconds")
        heartbeat = env.get("CRMCAL_WORKER_HEARTBEAT_SECONDS") or str(DEFAULT_WORKER_HEARTBEAT)
        try:
            worker_heartbeat = float(heartbeat)
        except ValueError:
            raise ConfigError(
                f"CRMCAL_WORKER_HEARTBEAT_SECONDS must be a number, got {heartbeat!r}"
            ) from None
        if not 0.2 <= worker_heartbeat <= 600:
            raise ConfigError("CRMCAL_WORKER_HEARTBEAT_SECONDS must be between 0.2 and 600")
        lease_seconds = _seconds(
            env, "CRMCAL_LEASE_SECONDS", min(DEFAULT_LEASE_SECONDS, poll_seconds), 1, 3600
        )
        sync_max_seconds = _seconds(
            env, "CRMCAL_SYNC_MAX_SECONDS", DEFAULT_SYNC_MAX_SECONDS, 1, 7 * 86400
        )
        per_server = env.get("CRMCAL_CALDAV_SERVER_CONCURRENCY") or "8"
        if not per_server.strip().isdigit() or not 1 <= int(per_server) <= 1000:
            raise ConfigError("CRMCAL_CALDAV_SERVER_CONCURRENCY must be a whole number, 1 to 1000")
        quota = (env.get("CRMCAL_GOOGLE_PROJECT_QUOTA") or "10000").strip()
        if not quota.isdigit() or int(quota) > 10_000_000:
            raise ConfigError(
                "CRMCAL_GOOGLE_PROJECT_QUOTA must be a whole number of requests a minute "
                "(0: no limit)"
            )
        parse_raw = (env.get("CRMCAL_PARSE_WORKERS") or "").strip()
        if parse_raw and (not parse_raw.isdigit() or int(parse_raw) > 64):
            raise ConfigError("CRMCAL_PARSE_WORKERS must be a whole number from 0 to 64")
        pool_raw = (env.get("CRMCAL_DATABASE_POOL_SIZE") or "").strip()
        if pool_raw and (
            not (pool_raw.isascii() and pool_raw.isdigit()) or not 1 <= int(pool_raw) <= 1000
        ):
            raise ConfigError(
                f"CRMCAL_DATABASE_POOL_SIZE must be a whole number of connections from 1 to "
                f"1000, got {pool_raw!r}"
            )
        return cls(
            database_pool_size=int(pool_raw) if pool_raw else DEFAULT_DATABASE_POOL_SIZE,
            parse_workers=int(parse_raw) if parse_raw else None,
            caldav_server_concurrency=int(per_server),
            google_project_quota=int(quota),
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
