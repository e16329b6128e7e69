"""``update_many`` on Google and Graph: updates in batch requests, each item on its own."""

from __future__ import annotations

import dataclasses
import uuid
from collections import Counter

from crmcal.providers.base import PreconditionFailed, Update, update_many
from tests import plain
from tests.google_emulator import GoogleEmulator, GoogleHarness
from tests.microsoft_emulator import MicrosoftEmulator, MicrosoftHarness
from tests.providers.harness import meeting


def counts(url: str) -> Counter[str]:
    return Counter(plain.get(f"{url}/_emulator/requests", timeout=60).json())


async def _check(
    harness: GoogleHarness | MicrosoftHarness,
    url: str,
    envelopes: int,
    changed: frozenset[str] = frozenset({"summary"}),
    *,
    single: bool = True,
) -> None:
    provider, calendar = harness.provider, harness.calendar_id
    made = [
        await provider.create(calendar, f"k{uuid.uuid4().hex}", meeting(summary=f"M{n}"))
        for n in range(3)
    ]
    items = [
        Update(
            ref.id,
            ref.etag,
            dataclasses.replace(meeting(summary=f"M{n}"), summary="Moved"),
            changed,
            single,
        )
        for n, ref in enumerate(made)
    ]
    items[1] = dataclasses.replace(items[1], etag=made[0].etag)  # a stale version
    before = counts(url)
    results = await update_many(provider, calendar, items)
    spent = counts(url) - before
    assert spent["batch"] == envelopes, spent
    assert isinstance(results[1], PreconditionFailed)
    for n in (0, 2):
        result = results[n]
        assert not isinstance(result, Exception), result
        assert result.event is not None
        assert result.event.summary == "Moved"


async def test_google_updates_in_batches(google_emulator: GoogleEmulator) -> None:
    harness = await GoogleHarness.open(google_emulator)
    try:
        # The patches name their versions: Google refuses the stale one (412) itself.
        await _check(harness, google_emulator.url, 1)
        # Attendees merge with what the event holds: the reads, then the patches.
        await _check(harness, google_emulator.url, 2, frozenset({"summary", "attendees"}))
        # Not known to be single events: read first, lest they be series now.
        await _check(harness, google_emulator.url, 2, single=False)
    finally:
        await harness.close()


async def test_graph_updates_in_batches(microsoft_emulator: MicrosoftEmulator) -> None:
    harness = await MicrosoftHarness.open(microsoft_emulator)
    try:
        await _check(harness, microsoft_emulator.url, 1)  # known single events: no guard
        # Times of events not known to be single: the series guard's reads first.
        await _check(
            harness, microsoft_emulator.url, 2, frozenset({"when", "summary"}), single=False
        )
    finally:
        await harness.close()


async def test_google_reads_by_id_go_in_one_batch(google_emulator: GoogleEmulator) -> None:
    """``fetch`` of several events: one batch request, not a GET each; an id that names
    no event is left out."""
    harness = await GoogleHarness.open(google_emulator)
    try:
        provider, calendar = harness.provider, harness.calendar_id
        made = [
            await provider.create(calendar, f"k{uuid.uuid4().hex}", meeting(summary=f"R{n}"))
            for n in range(3)
        ]
        before = counts(google_emulator.url)
        found = await provider.fetch(calendar, [ref.id for ref in made] + ["nosuchevent0"])
        spent = counts(google_emulator.url) - before
        assert sorted(ref.event.summary or "" for ref in found if ref.event) == ["R0", "R1", "R2"]
        assert (spent["batch"], spent["events.get"], spent.total()) == (1, 4, 5), spent
    finally:
        await harness.close()
