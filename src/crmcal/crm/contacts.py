"""Persons, organizations and deals: the records activities link to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import ColumnElement, exists, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from crmcal import bulk
from crmcal.crm import changefeed
from crmcal.crm.errors import Conflict, Invalid, NotFound
from crmcal.crm.pagination import page_by_id
from crmcal.crm.schemas import Input
from crmcal.crm.tables import (
    Activity,
    Base,
    Deal,
    Organization,
    Participant,
    Person,
    User,
    table_of,
    utcnow,
)

M = TypeVar("M", bound=Base)

REQUIRED = {"name", "title", "status"}
LINKS: dict[str, type[Base]] = {
    "organization_id": Organization,
    "person_id": Person,
    "deal_id": Deal,
    "owner_id": User,
}


async def check_links(
    session: AsyncSession, values: dict[str, Any], viewer: User | None = None
) -> None:
    """Refuse links to records that do not exist; a person ``viewer`` may not see is
    refused with the very same words, so that linking is no way to learn of it."""
    for field, model in LINKS.items():
        linked = values.get(field)
        if linked is not None and not await _exists_for(session, model, linked, viewer):
            raise Conflict(f"{field}: no {model.__tablename__[:-1]} with id {linked}")


async def _exists_for(
    session: AsyncSession, model: type[Base], record_id: int, viewer: User | None
) -> bool:
    if model is Person:
        return await get_visible(session, record_id, viewer) is not None
    return await session.get(model, record_id) is not None


async def get_visible(session: AsyncSession, person_id: int, viewer: User | None) -> Person | None:
    """The person, or None when there is none or ``viewer`` may not see it."""
    found = await session.get(Person, person_id)
    if found is not None and viewer is not None and not found.explicit:
        query = select(Person.id).where(Person.id == person_id, visible_persons(viewer))
        return found if await session.scalar(query) is not None else None
    return found


async def visible_by_ids(
    session: AsyncSession, person_ids: set[int], viewer: User | None
) -> dict[int, Person]:
    """The persons of ``person_ids`` that exist and ``viewer`` may see (``get_visible``
    for many at once): one query per ``MATCH_CHUNK`` ids, so that an activity's long
    list of participants linked to persons costs a few statements, not one each."""
    wanted = sorted(person_ids)
    found: dict[int, Person] = {}
    for start in range(0, len(wanted), MATCH_CHUNK):
        query = select(Person).where(Person.id.in_(wanted[start : start + MATCH_CHUNK]))
        if viewer is not None:
            query = query.where(visible_persons(viewer))
        found.update((person.id, person) for person in await session.scalars(query))
    return found


async def _check_email_free(
    session: AsyncSession,
    email: str | None,
    person_id: int | None,
    user: User | None,
    *,
    take_over: bool,
) -> Person | None:
    """Refuse an e-mail another person the user sees has, naming that person. One that
    ``user`` may not see (made from a private activity's attendees) is answered when
    ``take_over`` (a create makes it the new person); else it is refused without its
    id or name, which are not the user's to learn."""
    if email is None:
        return None
    other = await session.scalar(select(Person).where(Person.email == email))
    if other is None or other.id == person_id:
        return None
    if user is not None and not await _exists_for(session, Person, other.id, user):
        if take_over:
            return other
        raise Conflict(f"the e-mail {email} is already in use by a person you cannot see")
    raise Conflict(f"person {other.id} already has the e-mail {email}")


def visible_persons(user: User) -> ColumnElement[bool]:
    """Which persons ``user`` may see, as a condition on ``Person``.

    A person made from an activity's attendees (not ``explicit``) is listed only to
    those who may see an activity linking to it (as its person or a participant), or
    to everyone once a deal or an organization links it. So the attendees of a private
    activity stay its owner's; admins too see them no more than the activity itself.
    """
    seen = or_(Activity.visibility == "everyone", Activity.owner_id == user.id)
    return or_(
        Person.explicit,
        Person.organization_id.is_not(None),
        exists().where(Deal.person_id == Person.id),
        exists().where(Activity.person_id == Person.id, seen),
        exists().where(
            Participant.person_id == Person.id, Participant.activity_id == Activity.id, seen
        ),
    )


async def get(session: AsyncSession, model: type[M], record_id: int, user: User | None = None) -> M:
    """The record, or NotFound; a person ``user`` may not see is not found either."""
    found = await session.get(model, record_id)
    if isinstance(found, Person) and user is not None and not found.explicit:
        query = select(Person.id).where(Person.id == record_id, visible_persons(user))
        found = found if await session.scalar(query) is not None else None
    if found is None:
        raise NotFound(f"{model.__tablename__[:-1]} {record_id} not found")
    return found


async def create(
    session: AsyncSession, model: type[Base], data: Input, user: User | None = None
) -> Any:
    """A new record. A person with the e-mail of one ``user`` may not see takes that
    person over (its fields become the ones given, and it is everyone's from then on):
    the answer is the same as when no one had the e-mail, so it reveals nothing."""
    values = data.model_dump()
    await check_links(session, values, user)
    hidden = None
    if model is Person:
        hidden = await _check_email_free(session, values.get("email"), None, user, take_over=True)
    if hidden is not None:
        for field, value in values.items():
            setattr(hidden, field, value)
        hidden.explicit = True
        hidden.created_at = utcnow()  # as new as a record made now, no older
        await session.flush()
        await _announce_to_activities(session, hidden)
        return hidden
    record = model(**values)
    session.add(record)
    await session.flush()
    return record


async def update(session: AsyncSession, record: Any, data: Input, user: User | None = None) -> Any:
    changes = data.model_dump(exclude_unset=True)
    for field in REQUIRED & changes.keys():
        if changes[field] is None:
            raise Invalid(f"{field} cannot be null")
    await check_links(session, changes, user)
    if isinstance(record, Person) and "email" in changes:
        # Two persons cannot become one: the address is refused even when the person
        # holding it is hidden from the user, but then without naming it.
        await _check_email_free(session, changes["email"], record.id, user, take_over=False)
    shown = any(
        getattr(record, f) != v for f, v in changes.items() if f in _SHOWN.get(type(record), ())
    )
    for field, value in changes.items():
        setattr(record, field, value)
    await session.flush()
    if shown:
        await _announce_to_activities(session, record)
    return record


# What calendar events show of a linked record (F11), by the activity column linking it.
_SHOWN: dict[type[Base], tuple[str, ...]] = {
    Deal: ("title",),
    Person: ("name", "email", "phone"),
    Organization: ("name",),
}
_LINKED_BY = {
    Deal: Activity.deal_id,
    Person: Activity.person_id,
    Organization: Activity.organization_id,
}


async def _announce_to_activities(session: AsyncSession, record: Any) -> None:
    """A change feed entry for each live activity linked to ``record``: their events
    may show it, and the feed is how calendar syncs learn of changes."""
    column = _LINKED_BY[type(record)]
    linked = list(
        await session.scalars(
            select(Activity).where(column == record.id, Activity.deleted_at.is_(None))
        )
    )
    if linked:
        await changefeed.record_changes(session, linked, changefeed.UPDATED, "api")


@dataclass(frozen=True)
class Linked:
    """The records an activity links to."""

    deal: Deal | None
    person: Person | None
    organization: Organization | None


async def linked_records(session: AsyncSession, found: list[Activity]) -> dict[int, Linked]:
    """The deal, person and organization of each activity, in three queries."""
    result: dict[int, Linked] = {}
    loaded: dict[type[Base], dict[int, Any]] = {}
    models: tuple[tuple[type[Deal] | type[Person] | type[Organization], str], ...] = (
        (Deal, "deal_id"),
        (Person, "person_id"),
        (Organization, "organization_id"),
    )
    for model, column in models:
        ids = {getattr(a, column) for a in found if getattr(a, column) is not None}
        # Any: selecting from a union of classes is typed as selecting their common base.
        rows: list[Any] = []
        if ids:
            rows = list(await session.scalars(select(model).where(model.id.in_(ids))))
        loaded[model] = {row.id: row for row in rows}
    for activity in found:
        if activity.deal_id or activity.person_id or activity.organization_id:
            result[activity.id] = Linked(
                deal=loaded[Deal].get(activity.deal_id or 0),
                person=loaded[Person].get(activity.person_id or 0),
                organization=loaded[Organization].get(activity.organization_id or 0),
            )
    return result


class Choices(NamedTuple):
    """The records a form offers to link an activity to, by name."""

    deals: list[Deal]
    persons: list[Person]
    organizations: list[Organization]


async def choices(session: AsyncSession, user: User, limit: int = 500) -> Choices:
    """The first ``limit`` deals, persons ``user`` may see and organizations, by name."""
    return Choices(
        list(await session.scalars(select(Deal).order_by(Deal.title).limit(limit))),
        list(
            await session.scalars(
                select(Person).where(visible_persons(user)).order_by(Person.name).limit(limit)
            )
        ),
        list(await session.scalars(select(Organization).order_by(Organization.name).limit(limit))),
    )


async def list_page(
    session: AsyncSession,
    model: type[Person] | type[Organization] | type[Deal],
    *,
    limit: int,
    cursor: str | None,
    user: User | None = None,
    **filters: Any,
) -> tuple[list[Any], str | None]:
    query = select(model)
    if model is Person and user is not None:
        query = query.where(visible_persons(user))
    for field, value in filters.items():
        if value is not None:
            query = query.where(getattr(model, field) == value)
    return await page_by_id(session, query, model.id, limit=limit, cursor=cursor)


class Matched(NamedTuple):
    """What a participant needs of the person its e-mail names."""

    id: int
    name: str


# E-mails per IN (...) when matching: far below any backend's limit on parameters.
MATCH_CHUNK = 1000


async def persons_for_emails(
    session: AsyncSession, wanted: dict[str, str | None]
) -> dict[str, Matched]:
    """The persons with these (normalised) e-mails, creating the missing ones.

    ``wanted`` maps each e-mail to the name a new person gets (else the part
    before the @). New persons are not ``explicit``: see ``visible_persons``.
    For an import's many attendees at once: one query finds the known ones and one
    multi-row INSERT makes the rest (the ORM would insert them one by one).
    """
    if not wanted:
        return {}
    emails = list(wanted)
    found: dict[str, Matched] = {}
    for start in range(0, len(emails), MATCH_CHUNK):
        rows = await session.execute(
            select(Person.email, Person.id, Person.name).where(
                Person.email.in_(emails[start : start + MATCH_CHUNK])
            )
        )
        found.update((str(email), Matched(pid, name)) for email, pid, name in rows)
    now = utcnow()
    new: list[dict[str, Any]] = [
        {"name": (name or "").strip()[:200] or email.split("@", 1)[0], "email": email,
         "explicit": False, "created_at": now, "updated_at": now}
        for email, name in wanted.items()
        if email not in found
    ]  # fmt: skip
    if new:
        # Their ids given (SQLite) or asked back in row order: the rest is what was sent.
        ids = await bulk.insert_many_ids(session, table_of(Person), new)
        found.update(
            (row["email"], Matched(pid, row["name"])) for row, pid in zip(new, ids, strict=True)
        )
    return found
