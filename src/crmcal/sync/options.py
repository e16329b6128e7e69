"""A connection's options (F7 to F12, F20): their shape, defaults and digest."""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ConfigDict, Field

from crmcal.crm.schemas import Input, TypeKey

SyncType = Literal["two_way", "crm_to_calendar", "calendar_to_crm"]


class SyncOptions(Input):
    # Frozen: the options of a connection's stored values are one instance a process
    # (``stored``), shared by its syncs.
    model_config = ConfigDict(frozen=True)

    incoming_activity_type: TypeKey = Field(
        default="meeting", description="Type given to events that come in from the calendar."
    )
    outgoing_activity_types: list[TypeKey] = Field(
        default_factory=lambda: ["call", "meeting", "task", "deadline", "email", "lunch"],
        max_length=200,
        description="Types whose activities go to the calendar.",
    )
    private_events: Literal["everyone", "owner_only", "skip"] = "owner_only"
    default_visibility: Literal["everyone", "owner"] = "everyone"
    attendees_to_contacts: bool = True
    include_deal_and_contact_info: bool = False
    backfill_days: int = Field(default=0, ge=0, le=3650)
    conflict_policy: Literal["latest", "crm", "calendar"] = "latest"

    def digest(self) -> str:
        raw = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(raw.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Stored:
    """A connection's stored options, read, and their digest."""

    options: SyncOptions
    digest: str


# Sets of stored options a process keeps read: most connections keep the defaults, and
# the rest share a few sets.
STORED_KEPT = 256


def stored(raw: dict[str, Any] | None) -> Stored:
    """The options a connection stores (its ``options`` column), read once a process for
    each set of values: every sync reads them and compares their digest with the one
    applied, and a no-change sync spent about a twentieth of its CPU reading the same
    values (a model validated twice, dumped and hashed twice) again each time."""
    return _stored(json.dumps(raw or {}, sort_keys=True))


@functools.lru_cache(maxsize=STORED_KEPT)
def _stored(values: str) -> Stored:
    options = SyncOptions.model_validate(json.loads(values))
    return Stored(options, options.digest())


class SyncOptionsPatch(Input):
    """Options to change; the ones left out keep their value."""

    incoming_activity_type: TypeKey | None = None
    outgoing_activity_types: list[TypeKey] | None = Field(default=None, max_length=200)
    private_events: Literal["everyone", "owner_only", "skip"] | None = None
    default_visibility: Literal["everyone", "owner"] | None = None
    attendees_to_contacts: bool | None = None
    include_deal_and_contact_info: bool | None = None
    backfill_days: int | None = Field(default=None, ge=0, le=3650)
    conflict_policy: Literal["latest", "crm", "calendar"] | None = None


def writes_calendar(sync_type: str) -> bool:
    return sync_type in ("two_way", "crm_to_calendar")


def writes_crm(sync_type: str) -> bool:
    return sync_type in ("two_way", "calendar_to_crm")
