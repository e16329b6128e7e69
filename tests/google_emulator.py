"""A Google Calendar emulator served on a free 127.0.0.1 port, for tests that need a
real socket (crmcal's server calls it over HTTP), and a harness on a fresh account."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn

from crmcal.emulators.google import GoogleState, create_app
from crmcal.providers.google import GoogleProvider
from crmcal.providers.google_oauth import RefreshingTokens


class GoogleEmulator:
    def __init__(self, url: str, state: GoogleState) -> None:
        self.url = url
        self.state = state


@pytest.fixture(scope="session")
def google_emulator() -> Iterator[GoogleEmulator]:
    state = GoogleState()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(state), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert time.monotonic() < deadline, "the Google emulator did not start"
        time.sleep(0.02)
    try:
        yield GoogleEmulator(f"http://127.0.0.1:{port}", state)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


class GoogleHarness:
    """A fresh Google account on the emulator, driven as another client would."""

    kind = "google"

    def __init__(self, emulator: GoogleEmulator) -> None:
        self.emulator = emulator
        self.email = f"user-{uuid.uuid4().hex[:12]}@example.test"
        tokens = emulator.state.create_account(self.email)
        self.refresh_token = tokens["refresh_token"]
        self.calendar_id = self.email
        self._providers: list[GoogleProvider] = []
        self.provider = self._provider(self.refresh_token)
        self._http = httpx.AsyncClient(base_url=emulator.url)

    def _provider(self, refresh_token: str) -> GoogleProvider:
        tokens = RefreshingTokens(refresh_token, oauth_url=self.emulator.url)
        provider = GoogleProvider(tokens, api_url=self.emulator.url, backoff=0.01)
        self._providers.append(provider)
        return provider

    def connection_body(self) -> dict[str, Any]:
        return {"provider": "google", "refresh_token": self.refresh_token,
                "calendar_id": self.calendar_id}  # fmt: skip

    async def sends_invitations(self, event_id: str) -> bool:
        mails = (await self._http.get("/_emulator/mail")).json()
        return any(mail["event_id"] == event_id for mail in mails)

    def with_wrong_password(self) -> GoogleProvider:
        return self._provider("revoked-or-never-issued")

    async def close(self) -> None:
        for provider in self._providers:
            await provider.close()
        await self._http.aclose()
