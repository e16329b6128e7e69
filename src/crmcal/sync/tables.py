"""Tables of the sync engine: connections, the link table, recorded conflicts, sync runs."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    false,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from crmcal.crm.tables import Base, BigId, Timestamped, UTCDateTime, utcnow
from crmcal.sync.states import ConnectionState


class Connection(Timestamped, Base):
    """One user's link to one calendar of one account."""

    __tablename__ = "connections"
    __table_args__ = (
        Index("ix_connections_user_state", "user_id", "state"),
        # A poll tick's search for what is due: the connections of a state whose time
        # came, without reading those whose time has not.
        Index("ix_connections_state_next_sync", "state", "next_sync_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    provider: Mapped[str] = mapped_column(String(16))
    # What identifies the account to the user: a CalDAV URL and user name, an e-mail.
    account: Mapped[str] = mapped_column(String(500))
    username: Mapped[str | None] = mapped_column(String(320))
    # Password or refresh token, encrypted with CRMCAL_SECRET_KEY.
    credentials: Mapped[bytes] = mapped_column(LargeBinary)
    calendar_id: Mapped[str] = mapped_column(String(1000))
    calendar_name: Mapped[str] = mapped_column(String(500))
    sync_type: Mapped[str] = mapped_column(String(20), default="two_way")
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # pending (chosen, not started) | active | syncing | stopped | error
    state: Mapped[str] = mapped_column(String(16), default=ConnectionState.ACTIVE)
    connected_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_sync_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    counts: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    # Items the last sync had to leave alone (unreadable events, skipped series).
    problems: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    # How many problems ("problems") and refusals ("refusals") syncs found that
    # ``problems`` had no room for (``sync/run_end``); None: none.
    left_out: Mapped[dict[str, int] | None] = mapped_column(JSON)
    # Where each side's next incremental read starts; saved only after the
    # changes up to it are applied.
    crm_cursor: Mapped[int | None] = mapped_column(BigId)
    remote_cursor: Mapped[str | None] = mapped_column(Text)
    # Digest of the options the last sync ran with; a different one makes the
    # next sync look at every activity again.
    applied_options: Mapped[str | None] = mapped_column(String(64))
    failures: Mapped[int] = mapped_column(Integer, default=0)
    next_sync_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # A lease, so that one sync of a connection runs at a time across processes.
    locked_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # The holder, "host:pid/tag" (a tag per lease taken); see crmcal.sync.lease.
    locked_by: Mapped[str | None] = mapped_column(String(200))
    # The provider's push channel to crmcal's webhook (Google watch channel),
    # with the secret token its notifications carry, renewed before it expires.
    push_channel_id: Mapped[str | None] = mapped_column(String(64), index=True)
    push_resource_id: Mapped[str | None] = mapped_column(String(500))
    push_token: Mapped[str | None] = mapped_column(String(200))
    push_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class SignInUsed(Base):
    """An OAuth sign-in that completed (or was tried): its state is never honoured again."""

    __tablename__ = "oauth_sign_ins"

    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    used_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Link(Base):
    """An activity and the event that mirrors it, with what both looked like when last synced."""

    __tablename__ = "sync_links"
    __table_args__ = (
        Index("ix_sync_links_connection_activity", "connection_id", "activity_id", unique=True),
        Index("ix_sync_links_connection_remote", "connection_id", "remote_id", unique=True),
        # The few links still unconfirmed (see ``unconfirmed``): whether a connection has
        # any is asked at the start of every run, without reading its other links.
        Index(
            "ix_sync_links_unconfirmed",
            "connection_id",
            sqlite_where=text("unconfirmed = 1"),
            postgresql_where=text("unconfirmed"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    connection_id: Mapped[int] = mapped_column(ForeignKey("connections.id", ondelete="CASCADE"))
    activity_id: Mapped[int] = mapped_column(ForeignKey("activities.id", ondelete="CASCADE"))
    remote_id: Mapped[str] = mapped_column(String(1000))
    remote_uid: Mapped[str | None] = mapped_column(String(1000))
    remote_etag: Mapped[str | None] = mapped_column(String(500))
    # content_hash() of the event as last seen or written, and of the event the
    # activity maps to at that moment: each side changed iff its hash moved.
    remote_hash: Mapped[str | None] = mapped_column(String(64))
    crm_hash: Mapped[str | None] = mapped_column(String(64))
    # The same per field, {"crm": {field: digest}, "calendar": {...}} (sync/merge.py):
    # what lets two changes to different fields both be kept. None: not known yet
    # (a link made before, or by relinking): both changed then means the policy.
    field_hashes: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # The crm_hash of a version of the activity the calendar refused to take for good
    # (``ItemRefused``): that version is not sent again; a new one (or the calendar's
    # edit) is synced as any. None: nothing refused.
    refused_hash: Mapped[str | None] = mapped_column(String(64))
    # Where the pair began: a LinkOrigin (sync/states.py).
    origin: Mapped[str] = mapped_column(String(16))
    # An event crmcal made, that no listing since has named and no read has found. The
    # cursor a run keeps is read before its own writes, and a listing from it may leave
    # out an event made and deleted since (RFC 6578 allows it): the next run reads such
    # an event when its listing does not name it (``sync/reading``).
    unconfirmed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    last_synced_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class SyncConflict(Base):
    """Both sides changed the same item between two syncs; how the policy decided."""

    __tablename__ = "sync_conflicts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    connection_id: Mapped[int] = mapped_column(
        ForeignKey("connections.id", ondelete="CASCADE"), index=True
    )
    activity_id: Mapped[int | None] = mapped_column(Integer)
    remote_id: Mapped[str | None] = mapped_column(String(1000))
    policy: Mapped[str] = mapped_column(String(16))
    winner: Mapped[str] = mapped_column(String(16))  # a Winner (sync/states.py)
    crm_version: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    calendar_version: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # The version both sides got, with the fields that collided (``conflicting``).
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    detected_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    resolved: Mapped[bool] = mapped_column(Boolean, default=True)


class SyncRun(Base):
    """One sync of a connection: which process ran it, when, and how it ended."""

    __tablename__ = "sync_runs"
    __table_args__ = (Index("ix_sync_runs_connection_id_id", "connection_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    connection_id: Mapped[int] = mapped_column(ForeignKey("connections.id", ondelete="CASCADE"))
    # "host:pid" of the process that held the lease.
    process: Mapped[str] = mapped_column(String(200))
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # running | ok | error | interrupted (its process stopped it: shutdown, lease not
    # kept) | abandoned (its holder vanished; ended when its lease expired)
    outcome: Mapped[str] = mapped_column(String(16), default="running")
    error: Mapped[str | None] = mapped_column(Text)
    counts: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)


class ProviderSlot(Base):
    """One of the requests (or, for CalDAV, syncs) in flight that a calendar service
    allows an account or server at once, shared by every crmcal process."""

    __tablename__ = "provider_slots"

    # "microsoft:<mailbox>", "google:<account>", "caldav:<host>" ...
    key: Mapped[str] = mapped_column(String(400), primary_key=True)
    slot: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    # "host:pid" of the process using it; free when null or expired (its process died).
    holder: Mapped[str | None] = mapped_column(String(200))
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class ProviderHold(Base):
    """A service asked to slow down for an account (429, ``Retry-After``): until then
    every process waits before its next request for that account, and only for it."""

    __tablename__ = "provider_holds"

    key: Mapped[str] = mapped_column(String(400), primary_key=True)
    until: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class WrittenNote(Base):
    """What a run is about to write for an activity, noted before it writes (see
    crmcal.sync.written)."""

    __tablename__ = "sync_written"

    connection_id: Mapped[int] = mapped_column(
        ForeignKey("connections.id", ondelete="CASCADE"), primary_key=True
    )
    activity_id: Mapped[int] = mapped_column(
        ForeignKey("activities.id", ondelete="CASCADE"), primary_key=True
    )
    crm_hash: Mapped[str | None] = mapped_column(String(64))
    remote_hash: Mapped[str] = mapped_column(String(64))
    written_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
