"""Microsoft's OAuth 2.0 (Entra ID v2.0): where its endpoints are and what crmcal asks
for (the flow itself, refresh-token rotation included, is ``oauth2.OAuthService``)."""

from __future__ import annotations

from crmcal.providers.oauth2 import OAuthService

LOGIN = "https://login.microsoftonline.com"
TENANT = "common"  # work, school and personal accounts alike
SCOPES = "offline_access User.Read Calendars.ReadWrite"


def service(oauth_url: str | None = None, tenant: str = TENANT) -> OAuthService:
    """Microsoft's own endpoints, or the same paths under another root (an emulator)."""
    root = (oauth_url or LOGIN).rstrip("/")
    return OAuthService(
        "Microsoft",
        f"{root}/{tenant}/oauth2/v2.0/authorize",
        f"{root}/{tenant}/oauth2/v2.0/token",
        SCOPES,
        authorize_params={"response_mode": "query", "prompt": "select_account"},
        scopes_on_token_calls=True,
    )
