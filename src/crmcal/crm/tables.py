"""SQLAlchemy tables of the CRM core. Migrations in ``crmcal/migrations`` mirror them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    TypeDecorator,
)
from sqlalchemy import false as sa_false
from sqlalchemy import true as sa_true
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Stores naive UTC, hands out aware UTC, on every backend alike."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(dt.UTC).replace(tzinfo=None)

    def bind_processor(self, dialect: Any) -> Callable[[Any], Any] | None:
        """On SQLite, the stored text in one step: an import binds some ten of these per
        activity, and the two steps of a decorated type (this conversion, then SQLite's
        DATETIME formatting each field with ``%``) were its largest per-row cost."""
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        def process(value: dt.datetime | None) -> str | None:
            if value is None:
                return None
            if value.tzinfo is not dt.UTC:  # most are made in UTC already
                if value.tzinfo is None:
                    raise ValueError("naive datetime given to a UTC column")
                value = value.astimezone(dt.UTC)
            # The text SQLAlchemy's SQLite DATETIME stores, "YYYY-MM-DD HH:MM:SS.ffffff"
            # (26 characters), without the "+00:00" isoformat adds.
            return value.isoformat(" ", "microseconds")[:26]

        return process

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        return None if value is None else value.replace(tzinfo=dt.UTC)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def table_of(model: type[Base]) -> Table:
    """A mapped class's table, for plain (Core) inserts of many rows at once.

    ``__table__`` is declared as any FromClause; every class here maps one Table.
    """
    table = model.__table__
    assert isinstance(table, Table)
    return table


class Timestamped:
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class User(Timestamped, Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    permissions: Mapped[list[str]] = mapped_column(JSON, default=list)
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    # The language of the web pages ("de", ...); None: the browser's Accept-Language.
    language: Mapped[str | None] = mapped_column(String(16))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # argon2id hash (crm/passwords.py); None: the user signs in with API tokens only.
    password_hash: Mapped[str | None] = mapped_column(String(200))

    @property
    def has_password(self) -> bool:
        return self.password_hash is not None


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebSession(Base):
    """A signed-in browser: only a SHA-256 hash of the cookie's value is stored, so that a
    copy of the database signs nobody in; signing out deletes the row."""

    __tablename__ = "web_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # The token every form and state-changing request of this session must carry.
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class ActivityType(Timestamped, Base):
    __tablename__ = "activity_types"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    builtin: Mapped[bool] = mapped_column(Boolean, default=False)
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class Organization(Timestamped, Base):
    __tablename__ = "organizations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    address: Mapped[str | None] = mapped_column(String(500))


class Person(Timestamped, Base):
    __tablename__ = "persons"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    # Normalised (trimmed, lower-case) so that matching by e-mail is exact.
    email: Mapped[str | None] = mapped_column(String(320), unique=True)
    phone: Mapped[str | None] = mapped_column(String(50))
    organization_id: Mapped[int | None] = mapped_column(
        ForeignKey("organizations.id", ondelete="SET NULL"), index=True
    )
    # False for a person made from an activity's attendees: listed only to those who
    # may see something linking to it (crm.contacts.visible_persons).
    explicit: Mapped[bool] = mapped_column(Boolean, default=True, server_default=sa_true())


class Deal(Timestamped, Base):
    __tablename__ = "deals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    value: Mapped[Decimal | None] = mapped_column(Numeric(18, 2))
    currency: Mapped[str | None] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(16), default="open")
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    person_id: Mapped[int | None] = mapped_column(ForeignKey("persons.id", ondelete="SET NULL"))
    organization_id: Mapped[int | None] = mapped_column(
        ForeignKey("organizations.id", ondelete="SET NULL")
    )


class Activity(Timestamped, Base):
    __tablename__ = "activities"
    __table_args__ = (
        Index("ix_activities_owner_start", "owner_id", "start_at"),
        Index("ix_activities_start", "start_at", "id"),
        Index("ix_activities_deleted_at", "deleted_at"),
        Index("ix_activities_series", "series_id", "original_start_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Globally unique identity; calendar events carry it so a re-created
    # connection (or another crmcal) can recognise its own events.
    # The sentinel lets a multi-row INSERT ... RETURNING hand rows back in order
    # on SQLite too (otherwise SQLAlchemy sends such an insert row by row).
    uid: Mapped[str] = mapped_column(String(32), unique=True, insert_sentinel=True)
    type: Mapped[str] = mapped_column(ForeignKey("activity_types.key"), index=True)
    subject: Mapped[str] = mapped_column(String(255))
    all_day: Mapped[bool] = mapped_column(Boolean, default=False)
    # The instant the activity starts and ends, in UTC; for all-day activities
    # the midnight of start_date / end_date in ``timezone``. Used for ordering
    # and range filters.
    start_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    end_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    start_date: Mapped[dt.date | None] = mapped_column(Date)
    end_date: Mapped[dt.date | None] = mapped_column(Date)
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    location: Mapped[str | None] = mapped_column(String(500))
    note: Mapped[str | None] = mapped_column(Text)
    done: Mapped[bool] = mapped_column(Boolean, default=False)
    busy: Mapped[bool] = mapped_column(Boolean, default=True)
    visibility: Mapped[str] = mapped_column(String(16), default="everyone")
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    deal_id: Mapped[int | None] = mapped_column(ForeignKey("deals.id", ondelete="SET NULL"))
    person_id: Mapped[int | None] = mapped_column(ForeignKey("persons.id", ondelete="SET NULL"))
    organization_id: Mapped[int | None] = mapped_column(
        ForeignKey("organizations.id", ondelete="SET NULL")
    )
    reminder_minutes: Mapped[int | None] = mapped_column(Integer)
    # Whether the calendar should e-mail invitations to the participants (F10):
    # never unless asked, so that logging a meeting does not spam its guests.
    notify_participants: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=sa_false()
    )
    # An occurrence of a series carries its series' rule (kept equal by crm/series),
    # so any reader sees it belongs to a series without loading the series.
    recurrence: Mapped[str | None] = mapped_column(String(1000))
    series_id: Mapped[int | None] = mapped_column(Integer)
    # Where the series' rule puts this occurrence (its start may have moved since).
    original_start_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # The fields changed on this occurrence alone: edits of the whole series leave
    # them as they are.
    overrides: Mapped[list[str] | None] = mapped_column(JSON)
    # The organizer's address when this is someone else's meeting the owner was
    # invited to: its calendar-owned fields are the organizer's, not the CRM's.
    organizer: Mapped[str | None] = mapped_column(String(320))
    deleted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    participants: Mapped[list[Participant]] = relationship(
        order_by="Participant.position",
        cascade="all, delete-orphan",
        lazy="selectin",
    )


class ActivitySeries(Timestamped, Base):
    """A recurring activity: its rule and the fields of its master; its occurrences are
    activities (``series_id``) made up to a rolling horizon."""

    __tablename__ = "activity_series"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # A sentinel, as Activity.uid: an import inserts many series in one statement.
    uid: Mapped[str] = mapped_column(String(32), unique=True, insert_sentinel=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    rrule: Mapped[str] = mapped_column(String(1000))
    # ISO dates (all-day) or UTC instants: dates added to and left out of the rule.
    rdates: Mapped[list[str]] = mapped_column(JSON, default=list)
    exdates: Mapped[list[str]] = mapped_column(JSON, default=list)
    timezone: Mapped[str] = mapped_column(String(64))
    all_day: Mapped[bool] = mapped_column(Boolean, default=False)
    # The first occurrence's times (DTSTART), in the activity columns' conventions.
    start_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    end_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    start_date: Mapped[dt.date | None] = mapped_column(Date)
    end_date: Mapped[dt.date | None] = mapped_column(Date)
    type: Mapped[str] = mapped_column(ForeignKey("activity_types.key"))
    subject: Mapped[str] = mapped_column(String(255))
    location: Mapped[str | None] = mapped_column(String(500))
    note: Mapped[str | None] = mapped_column(Text)
    busy: Mapped[bool] = mapped_column(Boolean, default=True)
    visibility: Mapped[str] = mapped_column(String(16), default="everyone")
    deal_id: Mapped[int | None] = mapped_column(ForeignKey("deals.id", ondelete="SET NULL"))
    person_id: Mapped[int | None] = mapped_column(ForeignKey("persons.id", ondelete="SET NULL"))
    organization_id: Mapped[int | None] = mapped_column(
        ForeignKey("organizations.id", ondelete="SET NULL")
    )
    reminder_minutes: Mapped[int | None] = mapped_column(Integer)
    notify_participants: Mapped[bool] = mapped_column(Boolean, default=False)
    # [{"email", "name", "person_id"}]: who is invited to every occurrence.
    participants: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    # The organizer's address when the series is someone else's meeting (as
    # Activity.organizer): every occurrence made, now or when the horizon moves, has it.
    organizer: Mapped[str | None] = mapped_column(String(320), default=None)
    # Occurrences starting before this instant exist; None once all of them do.
    materialised_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, index=True)
    deleted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class Participant(Base):
    __tablename__ = "activity_participants"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    activity_id: Mapped[int] = mapped_column(
        ForeignKey("activities.id", ondelete="CASCADE"), index=True
    )
    position: Mapped[int] = mapped_column(Integer)
    email: Mapped[str | None] = mapped_column(String(320))
    name: Mapped[str | None] = mapped_column(String(200))
    person_id: Mapped[int | None] = mapped_column(
        ForeignKey("persons.id", ondelete="SET NULL"), index=True
    )
    # The participant's answer to the invitation, as the calendar reports it.
    status: Mapped[str] = mapped_column(
        String(16), default="needs_action", server_default="needs_action"
    )


class ActivityChange(Base):
    """One row per create/update/delete/restore of an activity: the change feed."""

    __tablename__ = "activity_changes"
    # AUTOINCREMENT: a sequence number is never reused, even after purges.
    __table_args__ = ({"sqlite_autoincrement": True},)

    seq: Mapped[int] = mapped_column(BigId, primary_key=True)
    activity_id: Mapped[int] = mapped_column(Integer, index=True)
    owner_id: Mapped[int] = mapped_column(Integer, index=True)
    kind: Mapped[str] = mapped_column(String(16))
    # Who made the change ("api", "cli", "sync:<connection id>" ...), so a
    # reader can skip the echo of its own writes.
    origin: Mapped[str] = mapped_column(String(64), default="api")
    changed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
