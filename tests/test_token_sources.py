"""The OAuth access tokens a worker keeps between syncs: one per grant, for as many
connections as a worker is sized for, so a sync refreshes no token an earlier one got;
and only the tokens: nothing one sync holds outlives it in what is kept."""

from __future__ import annotations

import asyncio
import gc
import sys
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import pytest

from crmcal.config import Settings
from crmcal.providers import google, oauth2
from crmcal.providers.oauth2 import AccessToken
from crmcal.sync import runner

CONNECTIONS = 10_000  # what one worker is sized for (docs/scaling.md)


class Source:
    """Stands for a token source: what ``_grant`` made it with."""

    def __init__(self, access: AccessToken | None, on_refresh: Callable[..., None]) -> None:
        self.access, self.on_refresh = access, on_refresh


def test_a_worker_keeps_the_access_token_of_each_of_ten_thousand_connections(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Jobs go to whichever worker is free, so a worker syncs nearly every connection in
    turn: a second round of syncs finds every grant's access token, none is asked for
    again (each would be one more request to the service per sync)."""
    monkeypatch.setattr(runner, "_GRANTS", OrderedDict())
    made: list[Source] = []

    def make(access: AccessToken | None, on_refresh: Callable[..., None], _grant: Any) -> Any:
        made.append(Source(access, on_refresh))
        return made[-1]

    async def rounds() -> None:
        for n in range(CONNECTIONS):  # first syncs: each source asks for a token
            grant = ("google", f"refresh-{n}", "https://oauth", "client")
            source: Any = runner._grant(grant, make)
            assert source.access is None
            source.on_refresh(f"refresh-{n}", AccessToken(f"access-{n}", 3600.0))
        for n in range(CONNECTIONS):
            grant = ("google", f"refresh-{n}", "https://oauth", "client")
            source = runner._grant(grant, make)
            assert source.access == AccessToken(f"access-{n}", 3600.0)

    asyncio.run(rounds())


class Provider:
    """Stands for the provider: keeps the token source it is given."""

    def __init__(self, tokens: Any, **_: Any) -> None:
        self.tokens = tokens


class Sync:
    """Stands for what one sync holds: its connection, its session, its provider."""

    rotated: str | None = None


@pytest.fixture
def token_service(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The token endpoint, answering each refresh token with an access token and a
    rotated refresh token (as Microsoft does); the refresh tokens it was asked with.
    The provider is left out: the test takes the token source it is given."""
    asked: list[str] = []

    async def token_call(service: str, url: str, form: dict[str, str], *_: Any) -> Any:
        refresh = form["refresh_token"]
        asked.append(refresh)
        return {"access_token": f"access-of-{refresh}", "expires_in": 3600,
                "refresh_token": f"rotated-{refresh}"}  # fmt: skip

    monkeypatch.setattr(oauth2, "token_call", token_call)
    monkeypatch.setattr(google, "GoogleProvider", Provider)
    monkeypatch.setattr(runner, "_GRANTS", OrderedDict())
    return asked


SETTINGS = Settings(secret_key="test-key", google_oauth_url="https://oauth.test",
                    google_client_id="client")  # fmt: skip


async def one_sync(refresh: str) -> tuple[str, str | None, weakref.ref[Sync]]:
    """A sync of a connection whose stored refresh token is ``refresh``: the access
    token it sends, the refresh token it stored, and a weak reference to what it held."""
    held = Sync()

    async def keep(rotated: str) -> None:  # stores the rotated token for this connection
        held.rotated = rotated

    provider: Any = runner.provider_for("google", "a@test", None, refresh, SETTINGS,
                                        on_rotate=keep)  # fmt: skip
    access = await provider.tokens()
    return access, held.rotated, weakref.ref(held)


def test_a_kept_token_holds_nothing_of_the_sync_that_got_it(token_service: list[str]) -> None:
    """Each sync's token source stores a rotated refresh token for its own connection,
    through a callback of that sync: kept with the token between syncs, the callback
    and all it holds outlived the sync, for every grant a worker keeps (10,000)."""

    async def syncs() -> list[weakref.ref[Sync]]:
        held = []
        for n in range(100):
            access, stored, sync = await one_sync(f"refresh-{n}")
            assert (access, stored) == (f"access-of-refresh-{n}", f"rotated-refresh-{n}")
            held.append(sync)
        return held

    # The collection scans only what the syncs made: what the process held before is
    # frozen out of it (in a worker that ran many tests, a full one took 25 s).
    gc.freeze()
    try:
        held = asyncio.run(syncs())
        gc.collect()
    finally:
        gc.unfreeze()
    assert [sync for sync in held if sync() is not None] == []
    # What a grant costs kept: its key and its access token, a few hundred bytes.
    kept = [part for key, access in runner._GRANTS.items() for part in (key, access,
            access.value, access.expires)]  # fmt: skip
    assert len(runner._GRANTS) == 100
    assert sum(sys.getsizeof(part) for part in kept) / 100 < 300


def test_the_next_sync_reuses_the_token_under_the_rotated_refresh_token(
    token_service: list[str],
) -> None:
    """The next sync of a connection opens the refresh token the last one stored (the
    rotated one) and reuses the access token: no request to the token endpoint."""

    async def syncs() -> None:
        first, stored, _ = await one_sync("refresh-1")
        again, _, _ = await one_sync(str(stored))
        assert again == first
        # A sync that opens the refresh token before the rotation (its storing failed)
        # refreshes: that gets a refresh token stored for the connection again.
        assert (await one_sync("refresh-1"))[0] == "access-of-refresh-1"

    asyncio.run(syncs())
    assert token_service == ["refresh-1", "refresh-1"]


def test_a_failed_refresh_is_every_waiters_failure_and_not_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two syncs of one grant at once: the refresh fails (the sign-in service is away),
    both are told so, nothing is kept, and the next sync refreshes again."""
    from crmcal.providers.base import Unreachable

    monkeypatch.setattr(google, "GoogleProvider", Provider)
    monkeypatch.setattr(runner, "_GRANTS", OrderedDict())
    asked: list[str] = []
    failing = True

    async def token_call(service: str, url: str, form: dict[str, str], *_: Any) -> Any:
        asked.append(form["refresh_token"])
        if failing:
            raise Unreachable("cannot reach Google's sign-in service")
        return {"access_token": "fresh", "expires_in": 3600}

    monkeypatch.setattr(oauth2, "token_call", token_call)

    async def syncs() -> list[Any]:
        nonlocal failing
        made: list[Any] = [runner.provider_for("google", "a@test", None, "shared", SETTINGS)
                           for _ in range(2)]  # fmt: skip
        sources = [provider.tokens for provider in made]
        told = await asyncio.gather(*(source() for source in sources), return_exceptions=True)
        assert len(runner._GRANTS) == 0
        assert len(runner._FLIGHTS) == 0
        failing = False
        again: Any = runner.provider_for("google", "a@test", None, "shared", SETTINGS)
        return [*told, await again.tokens()]

    told = asyncio.run(syncs())
    assert [type(t).__name__ for t in told[:2]] == ["Unreachable", "Unreachable"]
    assert told[2] == "fresh"
    assert asked == ["shared", "shared"]


def test_a_slow_refresh_of_one_grant_holds_up_no_other(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refreshes are one at a time per grant, not per process: another grant's refresh
    goes through while one waits for its answer."""
    monkeypatch.setattr(google, "GoogleProvider", Provider)
    monkeypatch.setattr(runner, "_GRANTS", OrderedDict())
    answer: dict[str, asyncio.Event] = {}

    async def token_call(service: str, url: str, form: dict[str, str], *_: Any) -> Any:
        await answer.setdefault(form["refresh_token"], asyncio.Event()).wait()
        return {"access_token": f"access-of-{form['refresh_token']}", "expires_in": 3600}

    monkeypatch.setattr(oauth2, "token_call", token_call)

    async def syncs() -> None:
        slow: Any = runner.provider_for("google", "a@test", None, "slow", SETTINGS)
        other: Any = runner.provider_for("google", "b@test", None, "other", SETTINGS)
        waiting = asyncio.ensure_future(slow.tokens())
        answer["other"] = asyncio.Event()
        answer["other"].set()
        assert await other.tokens() == "access-of-other"
        assert not waiting.done()
        answer.setdefault("slow", asyncio.Event()).set()
        assert await waiting == "access-of-slow"

    asyncio.run(syncs())
