"""Google's OAuth 2.0: where its endpoints are and what crmcal asks for (the flow
itself is ``oauth2.OAuthService``)."""

from __future__ import annotations

from crmcal.providers.oauth2 import OAuthService

TOKEN_URL = "https://oauth2.googleapis.com/token"  # noqa: S105  # a URL, not a secret
AUTHORIZE_URL = "https://accounts.google.com/o/oauth2/v2/auth"
SCOPES = (
    "https://www.googleapis.com/auth/calendar.events "
    "https://www.googleapis.com/auth/calendar.calendarlist.readonly"
)


def service(oauth_url: str | None = None) -> OAuthService:
    """Google's own endpoints, or all under one root (an emulator)."""
    root = oauth_url.rstrip("/") if oauth_url else None
    return OAuthService(
        "Google",
        f"{root}/o/oauth2/v2/auth" if root else AUTHORIZE_URL,
        f"{root}/token" if root else TOKEN_URL,
        SCOPES,
        authorize_params={
            "access_type": "offline",  # a refresh token ...
            "prompt": "consent",  # ... every time, also when the user had granted before
            "include_granted_scopes": "true",
        },
    )
