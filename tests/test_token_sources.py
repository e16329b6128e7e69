"""The OAuth token sources a worker keeps between syncs: one per grant, for as many
connections as a worker is sized for, so a sync refreshes no token an earlier one got."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Any

import pytest

from crmcal.sync import runner

CONNECTIONS = 10_000  # what one worker is sized for (docs/scaling.md)


class Source:
    """Stands for a token source: ``_grant`` only sets its ``on_rotate``."""

    on_rotate: Any = None


def test_a_worker_keeps_the_token_source_of_each_of_ten_thousand_connections(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Jobs go to whichever worker is free, so a worker syncs nearly every connection in
    turn: a second round of syncs finds every grant's source, none is made again (each
    new one would refresh its access token: one more request to the service per sync)."""
    monkeypatch.setattr(runner, "_GRANTS", OrderedDict())
    made: list[Source] = []

    def make() -> Any:
        made.append(Source())
        return made[-1]

    async def rounds() -> list[Any]:
        found: list[Any] = []
        for _ in range(2):
            found = []
            for n in range(CONNECTIONS):
                grant = ("google", f"refresh-{n}", "https://oauth", "client")
                found.append(runner._grant(grant, make, None))
        return found

    second = asyncio.run(rounds())
    assert len(made) == CONNECTIONS
    assert second == made
