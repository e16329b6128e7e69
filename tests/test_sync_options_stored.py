"""A connection's stored options are read once a process for each set of values."""

from __future__ import annotations

import pydantic
import pytest

from crmcal.sync import options as options_module
from crmcal.sync.options import SyncOptions, stored


def test_the_same_values_are_read_once_and_shared(monkeypatch: pytest.MonkeyPatch) -> None:
    options_module._stored.cache_clear()
    validated = []
    real = SyncOptions.model_validate

    def counting(values: object) -> SyncOptions:
        validated.append(values)
        return real(values)

    monkeypatch.setattr(SyncOptions, "model_validate", counting)
    first = stored({"backfill_days": 3, "private_events": "skip"})
    # The same values in another order, as another row's column gives them.
    again = stored({"private_events": "skip", "backfill_days": 3})
    assert again is first
    assert len(validated) == 1
    assert stored(None) is stored({})
    assert len(validated) == 2


def test_what_is_read_is_what_the_model_says() -> None:
    values = {"backfill_days": 3, "outgoing_activity_types": ["call"]}
    read = stored(values)
    assert read.options == SyncOptions.model_validate(values)
    assert read.digest == SyncOptions.model_validate(values).digest()
    assert stored({}).digest == SyncOptions().digest()
    with pytest.raises(pydantic.ValidationError):
        stored({"backfill_days": -1})


def test_shared_options_cannot_be_changed() -> None:
    with pytest.raises(pydantic.ValidationError):
        stored({}).options.backfill_days = 5  # type: ignore[misc]
