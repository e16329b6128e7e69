"""The registry of provider kinds: what each says it can do is what its class does."""

from __future__ import annotations

import pytest

from crmcal.config import Settings
from crmcal.crm.errors import Invalid
from crmcal.providers import kinds
from crmcal.providers.caldav import CalDAVProvider
from crmcal.providers.google import GoogleProvider
from crmcal.providers.microsoft import MicrosoftProvider
from crmcal.sync import connections
from crmcal.sync.runner import provider_for
from crmcal.sync.schemas import ConnectionCreate

CLASSES = {"caldav": CalDAVProvider, "google": GoogleProvider, "microsoft": MicrosoftProvider}


@pytest.mark.parametrize("key", sorted(kinds.KINDS))
def test_each_kind_builds_its_provider_with_its_capabilities(key: str) -> None:
    provider = provider_for(key, "https://dav.example/", "u", "secret", Settings())
    assert type(provider) is CLASSES[key]
    assert provider.capabilities is kinds.KINDS[key].capabilities


@pytest.mark.parametrize("key", sorted(kinds.KINDS))
def test_capabilities_match_the_methods(key: str) -> None:
    cls, says = CLASSES[key], kinds.KINDS[key].capabilities
    assert hasattr(cls, "create_many") == says.batch_creates
    assert hasattr(cls, "update_many") == hasattr(cls, "delete_many") == says.batch_changes
    assert hasattr(cls, "watch") == hasattr(cls, "stop_watching") == says.push
    assert hasattr(cls, "renew_watch") == says.renews_push


def test_the_registry_is_what_a_connection_may_name() -> None:
    assert kinds.kind_of(" Google ") is kinds.GOOGLE
    assert kinds.kind_of("exchange") is None
    assert {k for k, kind in kinds.KINDS.items() if kind.oauth} == {"google", "microsoft"}


async def test_an_unknown_kind_is_refused_naming_the_known_ones() -> None:
    request = ConnectionCreate(provider="exchange")
    with pytest.raises(Invalid, match="caldav, google, microsoft"):
        await connections.check_request(request, Settings())


def test_graph_declares_what_its_patterns_cannot_hold() -> None:
    graph = kinds.MICROSOFT.capabilities
    assert not graph.rdates
    assert not graph.exrules
    assert not graph.several_rrules
    assert "HOURLY" not in graph.frequencies
    assert "BYHOUR" not in graph.rule_parts
    assert graph.max_count == 999
    assert graph.mails_attendees
    assert kinds.GOOGLE.capabilities.rdates
    assert not kinds.GOOGLE.capabilities.mails_attendees
