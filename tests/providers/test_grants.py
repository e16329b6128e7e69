"""A connection of an OAuth kind is refused when it is made, not at its first sync,
when its grant is missing or one the service never issued (through the REST API)."""

from __future__ import annotations

import pytest

from crmcal.providers import kinds
from tests.conftest import Api, sqlite_only
from tests.providers.synced import V1

OAUTH_KINDS = sorted(key for key, kind in kinds.KINDS.items() if kind.oauth)


# The grant is refused before anything of the connection reaches the database.
@sqlite_only
@pytest.mark.parametrize("provider", OAUTH_KINDS)
@pytest.mark.parametrize(
    ("grant", "expected"),
    [({}, "needs a refresh_token"), ({"refresh_token": "never-issued"}, "reconnect required")],
    ids=["none", "never-issued"],
)
def test_bad_grants_are_refused_at_once(
    sam: Api, provider: str, grant: dict[str, str], expected: str
) -> None:
    response = sam.post(f"{V1}/connections", json={"provider": provider, **grant})
    assert response.status_code == 422
    assert expected in response.json()["detail"]
