"""Settings read from the environment (``CRMCAL_*``), in one typed object."""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_DATABASE_URL = "sqlite:///./crmcal.db"
DEFAULT_POLL_SECONDS = 180
DEFAULT_GOOGLE_BACKOFF = 0.5


class ConfigError(ValueError):
    """A setting has a value crmcal cannot use."""


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    secret_key: str | None = None
    base_url: str = "http://127.0.0.1:8000"
    poll_seconds: int = DEFAULT_POLL_SECONDS
    allow_private_networks: bool = False
    max_body_bytes: int = 1024 * 1024
    # Google: the API and OAuth roots (None: Google's own), and crmcal's OAuth client.
    google_api_url: str | None = None
    google_oauth_url: str | None = None
    google_client_id: str = ""
    google_client_secret: str = ""
    # Seconds before the first retry of a rate-limited or failed Google call (doubling).
    google_backoff: float = DEFAULT_GOOGLE_BACKOFF

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
        backoff = env.get("CRMCAL_GOOGLE_BACKOFF") or str(DEFAULT_GOOGLE_BACKOFF)
        try:
            google_backoff = float(backoff)
        except ValueError:
            raise ConfigError(f"CRMCAL_GOOGLE_BACKOFF must be a number, got {backoff!r}") from None
        if not 0 <= google_backoff <= 60:  # also refuses NaN
            raise ConfigError("CRMCAL_GOOGLE_BACKOFF must be between 0 and 60 seconds")
        return cls(
            database_url=env.get("CRMCAL_DATABASE_URL") or DEFAULT_DATABASE_URL,
            secret_key=env.get("CRMCAL_SECRET_KEY") or None,
            base_url=(env.get("CRMCAL_BASE_URL") or "http://127.0.0.1:8000").rstrip("/"),
            poll_seconds=poll_seconds,
            allow_private_networks=_flag(env.get("CRMCAL_ALLOW_PRIVATE_NETWORKS")),
            google_api_url=(env.get("CRMCAL_GOOGLE_API_URL") or "").rstrip("/") or None,
            google_oauth_url=(env.get("CRMCAL_GOOGLE_OAUTH_URL") or "").rstrip("/") or None,
            google_client_id=env.get("CRMCAL_GOOGLE_CLIENT_ID") or "",
            google_client_secret=env.get("CRMCAL_GOOGLE_CLIENT_SECRET") or "",
            google_backoff=google_backoff,
        )
