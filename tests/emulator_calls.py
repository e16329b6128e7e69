"""What a Google or Graph emulator has served so far, counted by kind of request
(``GET /_emulator/requests``): what tests of a sync's cost count."""

from __future__ import annotations

from collections import Counter

from tests import plain
from tests.google_emulator import GoogleHarness
from tests.microsoft_emulator import MicrosoftHarness
from tests.providers.harness import Harness


def emulator_calls(harness: Harness) -> Counter[str]:
    assert isinstance(harness, GoogleHarness | MicrosoftHarness)
    url = harness.emulator.url
    answer = plain.get(f"{url}/_emulator/requests", timeout=60)
    assert answer.status_code == 200, answer.text
    return Counter(answer.json())
