"""The OAuth authorization-code grant as both emulators run it: consent, codes, PKCE.

A person picks an account on the consent page (``hidden_fields()`` carries the
client's query through the form); the page's POST makes a ``Grant`` and
redirects to the client with its code (``redirect()``). The token endpoint
trades the code in once, within ``CODE_SECONDS``, when the PKCE verifier
matches (``Grant.verifies()``). Codes not yet traded in belong to the app that
handed them out (``codes_of()``), reached through the request. What differs —
the pages' words, the errors' shapes, the tokens themselves — stays with each
emulator's ``oauth`` module.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import html
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import RedirectResponse

CODE_SECONDS = 600


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


@dataclass
class Grant:
    """What a code stands for until it is traded in."""

    email: str
    client_id: str
    redirect_uri: str
    challenge: str | None
    method: str
    scope: str
    issued: dt.datetime
    redeemed: bool = False

    @classmethod
    def consented(
        cls, form: Mapping[str, Any], email: str, scope: str, issued: dt.datetime
    ) -> Grant:
        """The grant a consent form's POST makes (``scope``: what it asked for)."""
        return cls(
            email=email,
            client_id=str(form.get("client_id") or ""),
            redirect_uri=str(form.get("redirect_uri") or ""),
            challenge=str(form.get("code_challenge") or "") or None,
            method=str(form.get("code_challenge_method") or "plain"),
            scope=scope,
            issued=issued,
        )

    def expired(self, now: dt.datetime) -> bool:
        return (now - self.issued).total_seconds() > CODE_SECONDS

    def verifies(self, verifier: str) -> bool:
        """Whether the PKCE verifier matches the challenge (no challenge: any does)."""
        if self.challenge is None:
            return True
        expected = s256(verifier) if self.method == "S256" else verifier
        return bool(verifier) and expected == self.challenge


def codes_of(request: Request) -> dict[str, Grant]:
    """The codes this app has handed out and not yet seen traded in (made on first use)."""
    codes: dict[str, Grant] | None = getattr(request.app.state, "oauth_codes", None)
    if codes is None:
        codes = request.app.state.oauth_codes = {}
    return codes


def consenting_email(form: Mapping[str, Any]) -> str:
    """The address a consent form posts: an account's button, else the one typed."""
    return str(form.get("email") or form.get("other_email") or "").strip().lower()


def hidden_fields(query: Iterable[tuple[str, str]]) -> str:
    """The client's query, carried through the consent form."""
    return "".join(
        f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">' for k, v in query
    )


def redirect(redirect_uri: str, params: dict[str, str]) -> RedirectResponse:
    """Back to the client, with ``params`` added to its redirect URI's query."""
    separator = "&" if "?" in redirect_uri else "?"
    return RedirectResponse(f"{redirect_uri}{separator}{urlencode(params)}", status_code=302)
