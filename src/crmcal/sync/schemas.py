"""The sync layer's input and output shapes (pydantic): connections, their status,
calendars and conflicts, as the REST API and the web pages take and answer them.

The CRM's own shapes are in crm/schemas.py; the sync options in sync/options.py.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import JsonDict

from crmcal.crm.schemas import Doc, Input, Text
from crmcal.providers import kinds
from crmcal.sync.options import SyncOptions, SyncOptionsPatch, SyncType
from crmcal.sync.states import ShownState

# What the document says a connect needs: a CalDAV account's address and credentials, or
# a Google or Microsoft grant. The server says the same in its own words (check_request).
_CONNECT_NEEDS: JsonDict = {
    # if/then/else rather than anyOf: client generators keep one model with every field.
    "if": {"properties": {"provider": {"const": "caldav"}}},
    "then": {
        "properties": {
            "url": {"type": "string"},
            "username": {"type": "string"},
            "password": {"type": "string"},
        },
        "required": ["url", "username", "password"],
    },
    "else": {
        "properties": {"refresh_token": {"type": "string", "minLength": 1}},
        "required": ["refresh_token"],
    },
}
_HTTP_URL = r"^[Hh][Tt][Tt][Pp][Ss]?://[^\x00]+$"


class ConnectionCreate(Input):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_CONNECT_NEEDS)

    provider: Annotated[str, Text(16, 1), Doc(enum=list(kinds.KINDS))]
    url: Annotated[str, Text(2000, 1), Doc(format="uri", pattern=_HTTP_URL)] | None = None
    username: Annotated[str, Text(320)] | None = None
    password: Annotated[str, Text(1000)] | None = Field(
        default=None, description="Never returned or logged."
    )
    refresh_token: Annotated[str, Text(4000)] | None = None
    calendar_id: Annotated[str, Text(1000, 1)] | None = None
    sync_type: SyncType = "two_way"
    options: SyncOptions = Field(default_factory=SyncOptions)
    start: bool = Field(
        default=True,
        description="false: create the connection `pending` (nothing synced; calendar, "
        "sync type and options changeable) until `POST /connections/{id}/start`.",
    )


class ConnectionUpdate(Input):
    calendar_id: Annotated[str, Text(1000, 1)] | None = Field(
        default=None,
        description="Another calendar of the account: on a `pending` connection, or on a "
        "`stopped` one, which then starts over on that calendar when reconnected.",
    )
    sync_type: SyncType | None = None
    options: SyncOptionsPatch | None = None


class Reconnect(Input):
    password: Annotated[str, Text(1000)] | None = Field(
        default=None, description="A new password, if changed."
    )
    refresh_token: Annotated[str, Text(4000)] | None = Field(
        default=None, description="A new OAuth refresh token, if the old grant was revoked."
    )


class ConnectionOut(BaseModel):
    id: int
    user_id: int
    provider: str
    account: str
    username: str | None
    calendar_id: str
    calendar_name: str
    sync_type: str
    options: SyncOptions
    state: ShownState
    previously_synced: bool
    connected_at: Any
    last_sync_at: Any
    last_error: str | None


class SyncRunOut(BaseModel):
    started_at: Any
    ended_at: Any
    outcome: Literal["running", "ok", "error", "interrupted", "abandoned"]
    counts: dict[str, int]
    error: str | None
    process: str = Field(description="host:pid of the process that ran it")


class LeftOut(BaseModel):
    problems: int = Field(
        default=0,
        description="Problems other than refusals that `problems` had no room for (it "
        "keeps the last 200): counted since a sync last listed the whole calendar.",
    )
    refusals: int = Field(
        default=0,
        description="Writes refused for good that `problems` had no room for (it keeps "
        "the last 2000): counted since a sync last looked at every activity.",
    )


class StatusOut(BaseModel):
    state: ShownState
    connected_at: Any
    last_sync_at: Any
    last_error: str | None
    counts: dict[str, int]
    problems: list[dict[str, str]]
    left_out: LeftOut = Field(
        default_factory=LeftOut,
        description="How many problems syncs found beyond what `problems` keeps, "
        "and dropped: when not 0, `problems` is not all there is.",
    )
    next_sync_at: Any
    recent_syncs: list[SyncRunOut] = Field(
        default_factory=list, description="The last few syncs, newest first."
    )


class CalendarOut(BaseModel):
    id: str
    name: str
    writable: bool
    primary: bool


class SyncCounts(BaseModel):
    created: int
    updated: int
    deleted: int
    conflicts: int
    skipped: int
    problems: list[dict[str, str]]


class ConflictOut(BaseModel):
    id: int
    activity_id: int | None
    remote_id: str | None
    policy: str
    winner: str
    crm_version: dict[str, Any] | None
    calendar_version: dict[str, Any] | None
    result: dict[str, Any] | None = None
    detected_at: Any
