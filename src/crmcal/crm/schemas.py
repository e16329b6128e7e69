"""The CRM's input and output shapes (pydantic), shared by the REST API and the CLI.

Every input model forbids unknown fields and bounds every string, so a bad request
is refused with a message instead of reaching the database. The limits are
documented in docs/api.md.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Iterable, Iterator
from decimal import Decimal
from types import UnionType
from typing import Annotated, Any, Generic, Literal, TypeVar, Union, cast, get_args, get_origin

from annotated_types import GroupedMetadata
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from crmcal.crm import permissions

MAX_ID = 2**31 - 1
Id = Annotated[int, Field(ge=1, le=MAX_ID)]

# The local part excludes control characters (NUL included) and surrogates, which no
# database column can hold.
_EMAIL_RE = re.compile(
    r"^[^@\s<>\"\x00-\x1f\x7f\ud800-\udfff]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*$"
)
_KEY_RE = r"^[a-z0-9][a-z0-9_-]*$"
# What the OpenAPI document says of text: no NUL character (which no database can store).
NO_NUL = r"^[^\x00]*$"
# The common form of an RRULE, every value of which makes a series whose start is its first
# occurrence. The server reads every RFC 5545 rule; this is what the document promises.
_WEEKDAY = "(MO|TU|WE|TH|FR|SA|SU)"
RRULE_PATTERN = (
    r"^(RRULE:)?FREQ=(DAILY|WEEKLY|MONTHLY|YEARLY)(;INTERVAL=[1-9][0-9]?)?"
    rf"(;COUNT=[1-9][0-9]?)?(;BYDAY={_WEEKDAY}(,{_WEEKDAY}){{0,6}})?$"
)
# RFC 3339, in the years crmcal accepts; days up to 28 are valid in every month, which
# keeps the pattern a promise (a 30 February would match a looser one).
_YEAR = r"(19[0-9]{2}|2[01][0-9]{2})-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])"
DATE_PATTERN = f"^{_YEAR}$"
DATE_TIME_PATTERN = (
    f"^{_YEAR}T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]([.][0-9]{{1,6}})?"
    r"(Z|[+-](0[0-9]|1[0-3]):[0-5][0-9])?$"
)


class Doc:
    """Schema-only: adds ``extra`` to a type's JSON schema (a format, a pattern the
    validators already enforce in their own words), validation unchanged."""

    def __init__(self, **extra: Any) -> None:
        self.extra = extra

    def __get_pydantic_json_schema__(
        self, core: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core)
        schema.update(self.extra)
        return schema


class _NotNull:
    """Schema-only: an optional field of an update that may be left out but not set to
    null (the repository refuses the null with its own message)."""

    def __get_pydantic_json_schema__(
        self, core: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core)
        kept = [s for s in schema.get("anyOf", []) if s.get("type") != "null"]
        rest = {k: v for k, v in schema.items() if k != "anyOf"}
        if len(kept) == 1:
            return {**kept[0], **rest}
        if kept:  # a union of several forms (a date or a date-time), still without null
            return {**rest, "anyOf": kept}
        return schema


NOT_NULL = _NotNull()


def _plain_text(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (no lone surrogates)") from None
    return value


def _is_bool(annotation: Any) -> bool:
    return annotation is bool or bool in get_args(annotation)


def _is_int(annotation: Any) -> bool:
    """Whether a field takes whole numbers (``int``, ``Annotated[int, ...] | None`` ...)."""
    if annotation is int:
        return True
    return any(_is_int(arg) for arg in get_args(annotation) if arg is not bool)


def normalise_email(value: str) -> str:
    """Trimmed and lower-cased; raises ValueError when it is not an address."""
    if len(value) > _REMEMBERED_EMAIL_LENGTH:
        return _normalised_email(value)
    return _remembered_email(value)


# Addresses up to this long are read once a process (an import reads the same
# attendees' addresses in event after event, each twice); longer ones, no address
# anyway, are not kept.
_REMEMBERED_EMAIL_LENGTH = 400


def _normalised_email(value: str) -> str:
    email = value.strip().lower()
    if len(email) > 320 or not _EMAIL_RE.match(email):
        raise ValueError(f"{value!r} is not an e-mail address")
    return email


_remembered_email = functools.lru_cache(maxsize=4096)(_normalised_email)


class Text(GroupedMetadata):
    """Bounded text without NUL or lone surrogates: ``Annotated[str, Text(200, 1)]``.

    Metadata rather than a function returning a type, so that a type checker reads the
    annotation as ``str``; pydantic expands it in place into the same constraints.
    """

    def __init__(self, max_length: int, min_length: int = 0) -> None:
        self.max_length = max_length
        self.min_length = min_length

    def __iter__(self) -> Iterator[object]:
        yield from StringConstraints(max_length=self.max_length, min_length=self.min_length)
        yield AfterValidator(_plain_text)
        yield Doc(pattern=NO_NUL)


# The bounded texts that more than one model uses.
Name = Annotated[str, Text(200, 1)]
TypeName = Annotated[str, Text(100, 1)]
Subject = Annotated[str, Text(255, 1)]
Password = Annotated[str, Text(1000, 8)]


Email = Annotated[
    str,
    StringConstraints(max_length=320),
    AfterValidator(normalise_email),
    Doc(format="email"),
]
# The document lists the names: web/openapi.py turns the marker into a reference to
# components/schemas/TimeZone.
TIME_ZONE_MARK = "x-crmcal-time-zone"
TimeZoneName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64),
    AfterValidator(_plain_text),
    WithJsonSchema({"type": "string", TIME_ZONE_MARK: True}),
]
TypeKey = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=_KEY_RE)]
Permission = Literal[
    "calendar_sync", "activities.view", "activities.create", "activities.edit", "activities.delete",
    "contacts.view", "contacts.edit",
]  # fmt: skip
Visibility = Literal["everyone", "owner"]
# An activity's start or end, parsed by the repository (crm/times.py) against all_day.
# An empty filter filters nothing.
NO_FILTER = {"type": "string", "maxLength": 0}
WHEN_SCHEMA = {
    "anyOf": [
        # Not "format": "date-time": a time without an offset is accepted (read in the
        # activity's zone), which RFC 3339 does not allow.
        {"type": "string", "pattern": DATE_TIME_PATTERN},
        {"type": "string", "format": "date", "pattern": DATE_PATTERN},
    ]
}
When = Annotated[
    str,
    StringConstraints(min_length=1, max_length=40),
    AfterValidator(_plain_text),
    WithJsonSchema(WHEN_SCHEMA),
]


class Input(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    @model_validator(mode="before")
    @classmethod
    def _strict_booleans(cls, data: Any) -> Any:
        """The document says true or false, so 0, 1 and "yes" are refused; and integer,
        so true, false and "5" are refused where a whole number belongs."""
        if isinstance(data, dict):
            for name, boolean, integer in _strict_fields(cls):
                value = data.get(name)
                if value is None:
                    continue
                if boolean and not isinstance(value, bool):
                    raise ValueError(f"{name}: must be true or false")
                if integer and isinstance(value, bool | str):
                    raise ValueError(f"{name}: must be a whole number")
        return data


@functools.cache
def _strict_fields(model: type[BaseModel]) -> tuple[tuple[str, bool, bool], ...]:
    """The fields of ``model`` that take booleans or whole numbers, each with which
    (read once per model: a first import validates thousands of activities)."""
    found = []
    for name, field in model.model_fields.items():
        boolean, integer = _is_bool(field.annotation), _is_int(field.annotation)
        if boolean or integer:
            found.append((name, boolean, integer))
    return tuple(found)


# --- users -----------------------------------------------------------------


class UserCreate(Input):
    email: Email
    name: Name
    is_admin: bool = False
    permissions: list[Permission] | None = Field(
        default=None, description="Defaults to every permission."
    )
    timezone: TimeZoneName = "UTC"
    password: Password | None = Field(
        default=None,
        description="Lets the user sign in to the web pages (at least 8 characters); "
        "stored as an argon2 hash, never returned.",
    )


class UserUpdate(Input):
    name: Annotated[Name | None, NOT_NULL] = None
    is_admin: Annotated[bool | None, NOT_NULL] = None
    permissions: list[Permission] | None = Field(default=None, description="null: none.")
    timezone: Annotated[TimeZoneName | None, NOT_NULL] = None
    active: Annotated[bool | None, NOT_NULL] = None
    password: Annotated[Password | None, NOT_NULL] = Field(
        default=None, description="A new web sign-in password; never returned."
    )


class UserOut(BaseModel):
    id: int
    email: str
    name: str
    is_admin: bool
    permissions: list[str]
    timezone: str
    active: bool
    has_password: bool = Field(default=False, description="Whether the user can sign in.")
    created_at: dt.datetime


class UserCreated(UserOut):
    token: str = Field(description="The API token; shown only once.")


class TokenOut(BaseModel):
    """An API token, without its value (shown only when it was issued)."""

    id: int
    created_at: dt.datetime


def default_permissions() -> list[str]:
    return list(permissions.DEFAULT)


# --- activity types --------------------------------------------------------


class ActivityTypeCreate(Input):
    key: TypeKey
    name: TypeName


class ActivityTypeUpdate(Input):
    name: Annotated[TypeName | None, NOT_NULL] = None
    active: Annotated[bool | None, NOT_NULL] = None


class ActivityTypeOut(BaseModel):
    key: str
    name: str
    builtin: bool
    active: bool


# --- persons, organizations, deals -------------------------------------------


class OrganizationCreate(Input):
    name: Name
    address: Annotated[str, Text(500)] | None = None


class OrganizationUpdate(Input):
    name: Annotated[Name | None, NOT_NULL] = None
    address: Annotated[str, Text(500)] | None = None


class OrganizationOut(BaseModel):
    id: int
    name: str
    address: str | None
    created_at: dt.datetime
    updated_at: dt.datetime


class PersonCreate(Input):
    name: Name
    email: Email | None = None
    phone: Annotated[str, Text(50)] | None = None
    organization_id: Id | None = None


class PersonUpdate(Input):
    name: Annotated[Name | None, NOT_NULL] = None
    email: Email | None = None
    phone: Annotated[str, Text(50)] | None = None
    organization_id: Id | None = None


class PersonOut(BaseModel):
    id: int
    name: str
    email: str | None
    phone: str | None
    organization_id: int | None
    created_at: dt.datetime
    updated_at: dt.datetime


DealStatus = Literal["open", "won", "lost"]
# At most 15 significant digits: SQLite keeps NUMERIC values as doubles, exact only that far.
MAX_MONEY = Decimal("9999999999999.99")


def _cents(value: Decimal) -> Decimal:
    """Always two decimals, so an amount reads the same before and after it is stored."""
    return value.quantize(Decimal("0.01"))


Money = Annotated[
    Decimal,
    Field(ge=0, le=MAX_MONEY, decimal_places=2, allow_inf_nan=False),
    AfterValidator(_cents),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0, "maximum": float(MAX_MONEY), "multipleOf": 0.01},
                {"type": "string", "pattern": r"^[0-9]{1,13}([.][0-9]{1,2})?$"},
            ],
            "description": "An amount with at most two decimals; answered as a string.",
        },
        mode="validation",
    ),
]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]


class DealCreate(Input):
    title: Name
    value: Money | None = None
    currency: Currency | None = None
    status: DealStatus = "open"
    owner_id: Id | None = None
    person_id: Id | None = None
    organization_id: Id | None = None


class DealUpdate(Input):
    title: Annotated[Name | None, NOT_NULL] = None
    value: Money | None = None
    currency: Currency | None = None
    status: Annotated[DealStatus | None, NOT_NULL] = None
    owner_id: Id | None = None
    person_id: Id | None = None
    organization_id: Id | None = None


class DealOut(BaseModel):
    id: int
    title: str
    value: Decimal | None
    currency: str | None
    status: str
    owner_id: int | None
    person_id: int | None
    organization_id: int | None
    created_at: dt.datetime
    updated_at: dt.datetime


# --- activities ------------------------------------------------------------


ParticipantStatus = Literal["needs_action", "accepted", "declined", "tentative"]

# The participants an activity holds at most: a bound against hostile input that real
# meetings never reach (docs/api.md says why 5,000). The same for what a user sends and
# for what a calendar brings in, so that an activity imported with all its attendees
# can be edited and written back whole: no list is ever cut to fit.
MAX_PARTICIPANTS = 5000


class ParticipantIn(Input):
    model_config = ConfigDict(
        # if/else rather than anyOf: client generators keep one model with every field.
        json_schema_extra={
            "if": {"required": ["email"], "properties": {"email": {"type": "string"}}},
            "else": {"required": ["person_id"], "properties": {"person_id": {"type": "integer"}}},
        }
    )

    email: Email | None = None
    name: Annotated[str, Text(200)] | None = None
    person_id: Id | None = None
    status: ParticipantStatus | None = Field(
        default=None, description="The answer to the invitation; default needs_action."
    )

    @model_validator(mode="after")
    def _needs_someone(self) -> ParticipantIn:
        if self.email is None and self.person_id is None:
            raise ValueError("a participant needs an email or a person_id")
        return self


class ParticipantOut(BaseModel):
    email: str | None
    name: str | None
    person_id: int | None
    status: str


class ActivityFields(Input):
    """Fields an activity accepts; times stay text here and are parsed by the repository."""

    type: TypeKey | None = None
    subject: Subject | None = None
    start: When | None = Field(
        default=None,
        description="RFC 3339 date-time, or a date (YYYY-MM-DD) when all_day is true.",
    )
    end: When | None = Field(default=None, description="All-day: exclusive end date.")
    all_day: bool | None = None
    timezone: TimeZoneName | None = Field(
        default=None, description="IANA name; default: the owner's zone."
    )
    location: Annotated[str, Text(500)] | None = None
    note: Annotated[str, Text(65536)] | None = None
    done: bool | None = None
    busy: bool | None = None
    visibility: Visibility | None = None
    owner_id: Id | None = None
    participants: list[ParticipantIn] | None = Field(default=None, max_length=MAX_PARTICIPANTS)
    deal_id: Id | None = None
    person_id: Id | None = None
    organization_id: Id | None = None
    reminder_minutes: int | None = Field(default=None, ge=0, le=40320)
    notify_participants: bool | None = Field(
        default=None,
        description="Let the calendar e-mail invitations to the participants; default false.",
    )
    recurrence: Annotated[str, Text(1000, 1), Doc(pattern=RRULE_PATTERN)] | None = Field(
        default=None,
        description="RFC 5545 RRULE value, e.g. FREQ=WEEKLY;COUNT=10: makes a series. The "
        "pattern is the common form, every value of which is accepted; any RRULE whose "
        "parts hold together is (parts in any order, UNTIL, BYMONTHDAY, BYSETPOS …), and "
        "one that does not is refused with a 422 naming the part.",
    )
    exdates: list[When] | None = Field(
        default=None,
        max_length=1000,
        description="Starts the series leaves out: dates (all-day) or date-times.",
    )
    rdates: list[When] | None = Field(
        default=None,
        max_length=1000,
        description="Starts the series adds to its rule: dates (all-day) or date-times.",
    )


class ActivityCreate(ActivityFields):
    type: TypeKey
    subject: Subject
    start: When


# --- an ActivityCreate's values without the model ----------------------------------
# What ``create_values`` checks of each field, as ``ActivityCreate`` does, read from the
# model's own annotations (``_bounds``), so that the two cannot drift apart: a text's
# bounds, a whole number's bounds, the flags, and the choices of a literal.


def _unpacked(metadata: Iterable[object]) -> Iterator[object]:
    """Constraints as pydantic applies them: groups (``Text``, ``StringConstraints``)
    and a ``Field`` inside ``Annotated`` each give their parts."""
    for item in metadata:
        if isinstance(item, FieldInfo):
            yield from _unpacked(item.metadata)
        elif isinstance(item, GroupedMetadata):
            yield from _unpacked(item)
        else:
            yield item


def _bounds(annotation: object, metadata: Iterable[object]) -> tuple[type, dict[str, Any]]:
    """A field's own type (``X`` of ``X | None`` and of ``Annotated[X, ...]``) and its
    constraints by name (``min_length``, ``max_length``, ``ge``, ``le``, ``pattern``)."""
    found: list[object] = list(metadata)
    args = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) in (Union, UnionType) and len(args) == 1:
        annotation = args[0]
    if get_origin(annotation) is Annotated:
        annotation, *more = get_args(annotation)
        found += more
    limits: dict[str, Any] = {}
    for item in _unpacked(found):
        for name in ("min_length", "max_length", "ge", "le", "pattern"):
            if getattr(item, name, None) is not None:
                limits[name] = getattr(item, name)
    return cast("type", annotation), limits


PlainChecks = tuple[dict[str, tuple[int, int]], frozenset[str], dict[str, tuple[int, int]]]


def _plain_checks(model: type[BaseModel]) -> PlainChecks:
    """``model``'s texts without a pattern (their bounds), flags, and whole numbers (their
    bounds); every other field (a pattern's, a literal's, a list's) is checked apart."""
    texts: dict[str, tuple[int, int]] = {}
    flags: set[str] = set()
    numbers: dict[str, tuple[int, int]] = {}
    for name, info in model.model_fields.items():
        kind, limits = _bounds(info.annotation, info.metadata)
        if kind is str and "pattern" not in limits:
            texts[name] = (limits.get("min_length", 0), limits["max_length"])
        elif kind is bool:
            flags.add(name)
        elif kind is int:
            numbers[name] = (limits["ge"], limits["le"])
    return texts, frozenset(flags), numbers


_TEXTS, _BOOLEANS, _NUMBERS = _plain_checks(ActivityCreate)
_VISIBILITIES = frozenset(get_args(Visibility))
_STATUSES = frozenset(get_args(ParticipantStatus))
_KEY_FULL = re.compile(_KEY_RE[1:-1])
_DATE_LISTS = ("exdates", "rdates")


def _is_text(value: object, low: int, high: int) -> bool:
    """Whether ``value`` passes a ``Text(high, low)`` field as it is (plain ``str``)."""
    if type(value) is not str or not low <= len(value) <= high or "\x00" in value:
        return False
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_number(value: object, low: int, high: int) -> bool:
    return type(value) is int and low <= value <= high


def _participant_values(given: object) -> dict[str, Any] | None:
    """``ParticipantIn(**given).model_dump()`` where it holds, else None."""
    if type(given) is not dict or not given.keys() <= {"email", "name", "person_id", "status"}:
        return None
    email, name = given.get("email"), given.get("name")
    person_id, status = given.get("person_id"), given.get("status")
    if email is not None:
        if type(email) is not str or len(email) > 320:
            return None
        try:
            email = normalise_email(email)
        except ValueError:
            return None
    elif person_id is None:
        return None
    fits = (
        (name is None or _is_text(name, 0, 200))
        and (person_id is None or _is_number(person_id, 1, MAX_ID))
        and (status is None or (type(status) is str and status in _STATUSES))
    )
    return (
        {"email": email, "name": name, "person_id": person_id, "status": status} if fits else None
    )


def _fits(name: str, value: Any) -> bool:
    """Whether the value of the field ``name`` passes ``ActivityCreate`` as it is."""
    if value is None:
        return name not in ("type", "subject", "start")
    if name in _TEXTS:
        low, high = _TEXTS[name]
        return _is_text(value, low, high)
    if name in _BOOLEANS:
        return type(value) is bool
    if name in _NUMBERS:
        return _is_number(value, *_NUMBERS[name])
    if name == "type":
        return type(value) is str and len(value) <= 64 and _KEY_FULL.fullmatch(value) is not None
    if name == "visibility":
        return type(value) is str and value in _VISIBILITIES
    # The lists: dates, or participants (read apart, by ``create_values``).
    return type(value) is list and len(value) <= 1000 and all(_is_text(one, 1, 40) for one in value)


def create_values(fields: dict[str, Any]) -> dict[str, Any] | None:
    """``ActivityCreate(**fields).model_dump()``, for fields of plain values (``str``,
    ``bool``, ``int``, lists and dicts) that the model accepts as they are, without
    building it: a first import checks thousands of events, and the model cost more
    than the rest of their checks. None wherever the model must decide (anything it
    refuses, with its message, or converts, or any other shape): the caller asks it
    then, so what is accepted, and how a refusal reads, is the model's alone."""
    if not fields.keys() <= _CREATE_FIELDS.keys() or not fields.keys() >= _REQUIRED:
        return None
    values: dict[str, Any] = dict(_CREATE_FIELDS)
    for name, value in fields.items():
        if name == "participants" and value is not None:
            if type(value) is not list or len(value) > MAX_PARTICIPANTS:
                return None
            people = [_participant_values(one) for one in value]
            if None in people:
                return None
            values[name] = people
        elif not _fits(name, value):
            return None
        else:
            values[name] = list(value) if name in _DATE_LISTS and value is not None else value
    return values


# Every field of ActivityCreate, in its order, with its default (None for each).
_CREATE_FIELDS: dict[str, None] = dict.fromkeys(ActivityCreate.model_fields)
_REQUIRED = frozenset(n for n, f in ActivityCreate.model_fields.items() if f.is_required())


Scope = Literal["this", "following", "series"]


class ScopeBody(Input):
    scope: Scope | None = None


class ActivityUpdate(ActivityFields):
    """Only the fields present change; ``null`` clears an optional field."""

    type: Annotated[TypeKey | None, NOT_NULL] = None
    subject: Annotated[Subject | None, NOT_NULL] = None
    start: Annotated[When | None, NOT_NULL] = None
    all_day: Annotated[bool | None, NOT_NULL] = None
    timezone: Annotated[TimeZoneName | None, NOT_NULL] = None
    done: Annotated[bool | None, NOT_NULL] = None
    busy: Annotated[bool | None, NOT_NULL] = None
    visibility: Annotated[Visibility | None, NOT_NULL] = None
    notify_participants: Annotated[bool | None, NOT_NULL] = None

    scope: Scope | None = Field(
        default=None,
        description="For an occurrence of a series: this one (the default), this and "
        "every later one, or the whole series.",
    )


class SyncInfo(BaseModel):
    connection_id: int
    event_id: str | None
    state: str
    last_synced_at: dt.datetime | None


class ActivityOut(BaseModel):
    id: int
    type: str
    subject: str
    start: str
    end: str | None
    all_day: bool
    timezone: str
    location: str | None
    note: str | None
    done: bool
    busy: bool
    visibility: str
    owner_id: int
    participants: list[ParticipantOut]
    deal_id: int | None
    person_id: int | None
    organization_id: int | None
    reminder_minutes: int | None
    notify_participants: bool
    recurrence: str | None
    series_id: int | None
    original_start: str | None = Field(
        default=None, description="Where its series' rule puts an occurrence."
    )
    # Set when this is someone else's meeting the owner was invited to: its
    # calendar-owned fields (CALENDAR_OWNED) are the organizer's to change.
    organizer: str | None = None
    sync: SyncInfo | None = None
    created_at: dt.datetime
    updated_at: dt.datetime
    deleted_at: dt.datetime | None


class SeriesParticipantOut(BaseModel):
    email: str | None
    name: str | None
    person_id: int | None


class SeriesOut(BaseModel):
    """A recurring activity: its rule and the fields of its master (its first occurrence)."""

    id: int
    recurrence: str
    exdates: list[str]
    rdates: list[str]
    type: str
    subject: str
    start: str
    end: str | None
    all_day: bool
    timezone: str
    location: str | None
    note: str | None
    busy: bool
    visibility: str
    owner_id: int
    participants: list[SeriesParticipantOut]
    deal_id: int | None
    person_id: int | None
    organization_id: int | None
    reminder_minutes: int | None
    notify_participants: bool
    occurrences_until: dt.datetime | None = Field(
        description="Occurrences starting before this exist as activities; later ones are "
        "made as the horizon moves on."
    )
    created_at: dt.datetime
    updated_at: dt.datetime
    deleted_at: dt.datetime | None


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None
