"""The kinds of calendar service crmcal connects to, and what each can do.

One registry, read by ``sync/`` and ``web/`` instead of branching on a
connection's provider name or probing a provider object for methods. The
provider classes take their ``capabilities`` from here.
"""

from __future__ import annotations

from dataclasses import dataclass

from crmcal.providers.base import Capabilities


@dataclass(frozen=True)
class ProviderKind:
    key: str
    # How the user knows the service ("Google", "Microsoft 365 / Outlook", "CalDAV").
    label: str
    # Whose refusals are shown under its name ("Google refused the connection: ...").
    owner: str
    # Connected with an OAuth refresh token instead of a URL, user name and password.
    oauth: bool
    capabilities: Capabilities


CALDAV = ProviderKind(
    key="caldav",
    label="CalDAV",
    owner="The calendar server",
    oauth=False,
    capabilities=Capabilities(syncs_series=True, lists_in_parts=True),
)
GOOGLE = ProviderKind(
    key="google",
    label="Google",
    owner="Google",
    oauth=True,
    capabilities=Capabilities(
        syncs_series=True,
        batch_creates=True,
        batch_changes=True,
        push=True,
        account_name="primary_calendar",
    ),
)
# Graph's patternedRecurrence: daily, weekly, (relative/absolute) monthly and yearly
# patterns, one day of the month, no RDATE or EXRULE, one rule; Outlook refuses
# numbered series beyond 999 occurrences (PROVIDERS.md 6).
GRAPH_RULE_PARTS = frozenset((
    "FREQ", "UNTIL", "COUNT", "INTERVAL", "BYDAY", "BYMONTHDAY", "BYMONTH", "BYSETPOS", "WKST",
))  # fmt: skip
MICROSOFT = ProviderKind(
    key="microsoft",
    label="Microsoft 365 / Outlook",
    owner="Microsoft",
    oauth=True,
    capabilities=Capabilities(
        syncs_series=True,
        rule_parts=GRAPH_RULE_PARTS,
        frequencies=frozenset(("DAILY", "WEEKLY", "MONTHLY", "YEARLY")),
        rdates=False,
        exrules=False,
        several_rrules=False,
        single_day_of_month=True,
        max_count=999,
        restores_occurrences=False,
        mails_attendees=True,
        batch_creates=True,
        batch_changes=True,
        push=True,
        renews_push=True,
        account_name="mailbox",
    ),
)

KINDS: dict[str, ProviderKind] = {k.key: k for k in (CALDAV, GOOGLE, MICROSOFT)}


def kind_of(key: str) -> ProviderKind | None:
    """The kind called ``key`` (any case), or None for one crmcal does not know."""
    return KINDS.get(key.strip().lower())


def capabilities_of(key: str) -> Capabilities:
    """The capabilities of a known kind (a stored connection's provider)."""
    found = kind_of(key)
    if found is None:
        raise KeyError(f"unknown provider kind {key!r}")
    return found.capabilities
