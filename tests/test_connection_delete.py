"""Deleting or stopping a connection closes its push channel at the provider (a Google
watch channel, a Graph subscription), from the settings page and through the REST API
alike, once the connection is deleted or stopped: a channel that cannot be closed (the
grant revoked meanwhile) does not keep the connection, and a provider slow to answer
holds up neither the answer nor the database."""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from crmcal.config import Settings
from crmcal.tls import tls
from tests import plain
from tests.conftest import app_of, make_user
from tests.fault_proxy import FaultProxy, fault_proxy
from tests.google_emulator import GoogleEmulator
from tests.microsoft_emulator import MicrosoftEmulator
from tests.served import bound_socket, served_app, wait_for
from tests.web_session import PASSWORD, sign_in

PAGE = "/settings/calendar-sync"


@dataclass
class Site:
    """crmcal served on a socket of its own (Graph checks the webhook address when it
    subscribes), with a browser signed in on its pages and an API client, as one user."""

    browser: httpx.Client
    api: httpx.Client
    google: GoogleEmulator
    microsoft: MicrosoftEmulator


@pytest.fixture
def site(
    db_url: str, google_emulator: GoogleEmulator, microsoft_emulator: MicrosoftEmulator
) -> Iterator[Site]:
    with _serving(db_url, google_emulator, microsoft_emulator) as served:
        yield served


@contextlib.contextmanager
def _serving(
    db_url: str,
    google_emulator: GoogleEmulator,
    microsoft_emulator: MicrosoftEmulator,
    *,
    google_api_url: str | None = None,
    microsoft_api_url: str | None = None,
) -> Iterator[Site]:
    _, token = make_user(db_url, email="sam@crm.test", name="Sam", password=PASSWORD)
    sock = bound_socket()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    settings = Settings(database_url=db_url, secret_key="test-key", base_url=url,
                        retry_backoff=0.01, google_api_url=google_api_url or google_emulator.url,
                        google_oauth_url=google_emulator.url,
                        microsoft_api_url=microsoft_api_url or microsoft_emulator.url,
                        microsoft_oauth_url=microsoft_emulator.url)  # fmt: skip
    with (
        app_of(settings) as app,
        served_app(app, sock),
        httpx.Client(verify=tls(), base_url=url, timeout=60) as browser,
        httpx.Client(
            verify=tls(),
            base_url=f"{url}/api/v1",
            timeout=60,
            headers={"Authorization": f"Bearer {token}"},
        ) as api,  # fmt: skip
    ):
        assert sign_in(browser, "sam@crm.test").status_code == 303  # type: ignore[arg-type]
        yield Site(browser, api, google_emulator, microsoft_emulator)


class Account:
    """A calendar account at one of the emulators: its grant, its open push channels
    as the emulator's admin API lists them, and its owner revoking the grant."""

    def __init__(self, site: Site, provider: str) -> None:
        self.provider = provider
        self.email = f"user-{uuid.uuid4().hex[:10]}@example.test"
        self.emulator: Any = site.google if provider == "google" else site.microsoft
        self.tokens = self.emulator.state.create_account(self.email)

    def channels(self) -> list[str]:
        if self.provider == "google":
            listed = plain.get(f"{self.emulator.url}/_emulator/channels", timeout=60).json()
            return [c["id"] for c in listed["channels"] if c["calendar_id"] == self.email]
        listed = plain.get(f"{self.emulator.url}/_emulator/subscriptions", timeout=60).json()
        return [s["id"] for s in listed["subscriptions"] if s["mailbox"] == self.email]

    def revoke(self) -> None:
        if self.provider == "google":
            plain.post(f"{self.emulator.url}/revoke",
                       params={"token": self.tokens["refresh_token"]}, timeout=60)  # fmt: skip
        else:
            revoked = plain.post(
                f"{self.emulator.url}/v1.0/me/revokeSignInSessions",
                timeout=60,
                headers={"Authorization": f"Bearer {self.tokens['access_token']}"},
            )
            assert revoked.status_code == 200, revoked.text
        self.emulator.state.expire_access_tokens()


def connected(site: Site, account: Account) -> int:
    """A connection to the account, synced once: its push channel is open."""
    body = {"provider": account.provider, "refresh_token": account.tokens["refresh_token"]}
    made = site.api.post("/connections", json=body)
    assert made.status_code == 201, made.text
    connection_id = int(made.json()["id"])
    synced = site.api.post(f"/connections/{connection_id}/sync")
    assert synced.status_code == 200, synced.text
    assert len(account.channels()) == 1
    return connection_id


def delete(site: Site, connection_id: int, how: str) -> None:
    if how == "api":
        deleted = site.api.delete(f"/connections/{connection_id}")
        assert deleted.status_code == 204, deleted.text
        return
    found = re.search(r'name="csrf-token" content="([^"]+)"', site.browser.get(PAGE).text)
    assert found
    deleted = site.browser.post(f"{PAGE}/{connection_id}/delete",
                                data={"csrf_token": found.group(1)})  # fmt: skip
    assert deleted.status_code == 303, deleted.text
    assert deleted.headers["location"] == PAGE


@pytest.mark.parametrize("how", ["page", "api"])
@pytest.mark.parametrize("provider", ["google", "microsoft"])
def test_deleting_a_connection_closes_its_push_channel(site: Site, provider: str, how: str) -> None:
    account = Account(site, provider)
    connection_id = connected(site, account)
    delete(site, connection_id, how)
    assert site.api.get(f"/connections/{connection_id}").status_code == 404
    # The channel is closed once the answer is sent.
    wait_for(lambda: account.channels() == [])


@pytest.mark.parametrize("how", ["page", "api"])
@pytest.mark.parametrize("provider", ["google", "microsoft"])
def test_a_channel_that_cannot_be_closed_does_not_keep_the_connection(
    site: Site, provider: str, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    account = Account(site, provider)
    connection_id = connected(site, account)
    (channel,) = account.channels()
    account.revoke()
    caplog.set_level(logging.WARNING, logger="crmcal")
    delete(site, connection_id, how)
    assert site.api.get(f"/connections/{connection_id}").status_code == 404

    def told() -> list[logging.LogRecord]:
        said = f"connection {connection_id}: push channel "
        return [r for r in caplog.records
                if said in r.getMessage() and "not closed" in r.getMessage()]  # fmt: skip

    (record,) = wait_for(told)
    assert record.levelno == logging.WARNING
    assert "expires on its own" in record.getMessage()
    assert record.exc_info is None
    assert account.channels() == [channel]  # left to expire


def act(site: Site, connection_id: int, action: str, how: str) -> None:
    """Stop or delete the connection, on the settings page or through the API."""
    if action == "delete":
        delete(site, connection_id, how)
        return
    if how == "api":
        stopped = site.api.post(f"/connections/{connection_id}/stop")
        assert stopped.status_code == 200, stopped.text
        assert stopped.json()["state"] == "stopped"
        return
    found = re.search(r'name="csrf-token" content="([^"]+)"', site.browser.get(PAGE).text)
    assert found
    stopped = site.browser.post(f"{PAGE}/{connection_id}/stop",
                                data={"csrf_token": found.group(1)})  # fmt: skip
    assert stopped.status_code == 303, stopped.text


@pytest.mark.parametrize("how", ["page", "api"])
@pytest.mark.parametrize("provider", ["google", "microsoft"])
def test_stopping_a_connection_closes_its_push_channel(site: Site, provider: str, how: str) -> None:
    account = Account(site, provider)
    connection_id = connected(site, account)
    act(site, connection_id, "stop", how)
    assert site.api.get(f"/connections/{connection_id}").json()["state"] == "stopped"
    wait_for(lambda: account.channels() == [])


@pytest.mark.parametrize("how", ["page", "api"])
def test_a_channel_that_cannot_be_closed_does_not_keep_the_connection_going(
    site: Site, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    account = Account(site, "google")
    connection_id = connected(site, account)
    (channel,) = account.channels()
    account.revoke()
    caplog.set_level(logging.WARNING, logger="crmcal")
    act(site, connection_id, "stop", how)
    assert site.api.get(f"/connections/{connection_id}").json()["state"] == "stopped"
    said = f"connection {connection_id}: push channel {channel} not closed"
    wait_for(lambda: [r for r in caplog.records if said in r.getMessage()])
    assert account.channels() == [channel]  # left to expire


# The request that closes a channel, by provider: (method, path).
CLOSING = {"google": ("POST", r"/channels/stop"), "microsoft": ("DELETE", r"/subscriptions/")}


@pytest.mark.parametrize("action", ["stop", "delete"])
@pytest.mark.parametrize("how", ["page", "api"])
@pytest.mark.parametrize("provider", ["google", "microsoft"])
def test_a_provider_slow_to_close_the_channel_holds_up_no_answer_nor_transaction(
    db_url: str,
    google_emulator: GoogleEmulator,
    microsoft_emulator: MicrosoftEmulator,
    provider: str,
    how: str,
    action: str,
) -> None:
    """The provider is asked to close the channel only once the connection is stopped
    or deleted for good and the answer sent: while it has not answered, the change is
    there for every other request to see."""
    upstream = google_emulator.url if provider == "google" else microsoft_emulator.url
    with fault_proxy(upstream) as (proxy, proxy_url):
        urls = {f"{provider}_api_url": proxy_url}
        with _serving(db_url, google_emulator, microsoft_emulator, **urls) as site:
            account = Account(site, provider)
            connection_id = connected(site, account)
            method, path = CLOSING[provider]
            held = proxy.add("hold", method=method, path=path)
            acting = threading.Thread(target=act, args=(site, connection_id, action, how))
            try:
                acting.start()
                wait_for(lambda: _asked_to_close(proxy, method, path))
                # Asked, not answered: the stop or delete is committed all the same ...
                shown = site.api.get(f"/connections/{connection_id}")
                if action == "stop":
                    assert shown.json()["state"] == "stopped"
                else:
                    assert shown.status_code == 404
                # ... and answered (the close comes after the answer, in the background).
                wait_for(lambda: not acting.is_alive())
            finally:
                held.release()
                acting.join()
            wait_for(lambda: account.channels() == [])


def _asked_to_close(proxy: FaultProxy, method: str, path: str) -> bool:
    return any(m == method and re.search(path, target) for m, target in proxy.waiting)
