"""Whether a calendar service can hold a series rule, from its declared capabilities.

A pure function of a ``Capabilities`` and the rule's lines: the REST API refuses
a series made in the CRM that the user's connected calendar could not hold
(naming the part), instead of the calendar quietly holding something else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from crmcal.crm.errors import Conflict
from crmcal.providers import kinds
from crmcal.providers.base import Capabilities
from crmcal.sync.options import writes_calendar

_MULTI_VALUED_ONCE = ("BYMONTHDAY", "BYMONTH", "BYSETPOS")


@dataclass(frozen=True)
class Unsupported:
    """A part of a rule a service cannot hold: ``part`` names it, ``reason`` says why."""

    part: str
    reason: str

    def __str__(self) -> str:
        return f"{self.part}: {self.reason}"


def _parts(rule: str) -> dict[str, str]:
    text = rule.strip().upper().removeprefix("RRULE:")
    parts: dict[str, str] = {}
    for item in text.split(";"):
        name, _, value = item.partition("=")
        if name.strip():
            parts[name.strip()] = value.strip()
    return parts


def unsupported(
    capabilities: Capabilities,
    rrules: Sequence[str],
    *,
    rdates: int = 0,
    exrules: int = 0,
    service: str = "the calendar",
) -> list[Unsupported]:
    """What of a series ``service`` cannot hold: empty when it can hold all of it.

    ``rrules`` are the series' RRULE values; ``rdates``/``exrules`` how many
    RDATE and EXRULE values it has (EXDATEs every service holds).
    """
    found: list[Unsupported] = []
    if not capabilities.series:
        return [Unsupported("RRULE", f"{service} holds no recurring series")]
    if len(rrules) > 1 and not capabilities.several_rrules:
        found.append(Unsupported("RRULE", f"{service} holds one rule per series, not several"))
    if rdates and not capabilities.rdates:
        found.append(Unsupported("RDATE", f"{service} cannot add single dates to a series"))
    if exrules and not capabilities.exrules:
        found.append(Unsupported("EXRULE", f"{service} cannot leave out dates by a rule"))
    for rule in rrules:
        found += _unsupported_parts(capabilities, _parts(rule), service)
    return found


def _unsupported_parts(
    capabilities: Capabilities, parts: dict[str, str], service: str
) -> list[Unsupported]:
    """What of one rule's ``parts`` ``service`` cannot hold: its frequency, a part it
    has no field for, several values where it takes one, a COUNT beyond its limit."""
    found: list[Unsupported] = []
    freq = parts.get("FREQ", "")
    if freq and freq not in capabilities.frequencies:
        found.append(Unsupported(f"FREQ={freq}", f"{service} has no {freq.lower()} series"))
    for name in parts:
        if name != "FREQ" and name not in capabilities.rule_parts:
            found.append(Unsupported(name, f"{service} cannot hold {name} in a rule"))
    if capabilities.single_day_of_month:
        for name in _MULTI_VALUED_ONCE:
            if "," in parts.get(name, ""):
                found.append(Unsupported(name, f"{service} holds one {name} value only"))
    count = parts.get("COUNT", "")
    if capabilities.max_count and count.isdigit() and int(count) > capabilities.max_count:
        limit = capabilities.max_count
        found.append(Unsupported("COUNT", f"{service} holds at most {limit} occurrences"))
    return found


async def check_for_owner(
    session: AsyncSession, owner_id: int, rrule: str | None, *, rdates: int = 0
) -> None:
    """Refuse (``Conflict``, naming the part) a series made in the CRM that the owner's
    connected calendar could not hold; without a connection that writes to a
    calendar every rule is fine."""
    if not rrule:
        return
    from crmcal.sync.connections import active_connection

    conn = await active_connection(session, owner_id)
    if conn is None or not writes_calendar(conn.sync_type):
        return
    kind = kinds.kind_of(conn.provider)
    if kind is None:
        return
    found = unsupported(kind.capabilities, [rrule], rdates=rdates, service=kind.label)
    if found:
        # A clash with what is stored (the owner's connection), not a malformed rule.
        raise Conflict(f"recurrence: {found[0]} (the calendar this user syncs with)")
