"""Persons, organizations and deals: the records activities link to."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from crmcal.crm.errors import Conflict, Invalid, NotFound
from crmcal.crm.pagination import page_by_id
from crmcal.crm.schemas import Input
from crmcal.crm.tables import Base, Deal, Organization, Person, User

M = TypeVar("M", bound=Base)

REQUIRED = {"name", "title", "status"}
LINKS: dict[str, type[Base]] = {
    "organization_id": Organization,
    "person_id": Person,
    "deal_id": Deal,
    "owner_id": User,
}


async def check_links(session: AsyncSession, values: dict[str, Any]) -> None:
    """Refuse links to records that do not exist."""
    for field, model in LINKS.items():
        linked = values.get(field)
        if linked is not None and await session.get(model, linked) is None:
            raise Invalid(f"{field}: no {model.__tablename__[:-1]} with id {linked}")


async def _check_email_free(
    session: AsyncSession, email: str | None, person_id: int | None
) -> None:
    if email is None:
        return
    other = await session.scalar(select(Person.id).where(Person.email == email))
    if other is not None and other != person_id:
        raise Conflict(f"person {other} already has the e-mail {email}")


async def get(session: AsyncSession, model: type[M], record_id: int) -> M:
    found = await session.get(model, record_id)
    if found is None:
        raise NotFound(f"{model.__tablename__[:-1]} {record_id} not found")
    return found


async def create(session: AsyncSession, model: type[Base], data: Input) -> Any:
    values = data.model_dump()
    await check_links(session, values)
    if model is Person:
        await _check_email_free(session, values.get("email"), None)
    record = model(**values)
    session.add(record)
    await session.flush()
    return record


async def update(session: AsyncSession, record: Any, data: Input) -> Any:
    changes = data.model_dump(exclude_unset=True)
    for field in REQUIRED & changes.keys():
        if changes[field] is None:
            raise Invalid(f"{field} cannot be null")
    await check_links(session, changes)
    if isinstance(record, Person) and "email" in changes:
        await _check_email_free(session, changes["email"], record.id)
    for field, value in changes.items():
        setattr(record, field, value)
    await session.flush()
    return record


async def list_page(
    session: AsyncSession, model: type[Base], *, limit: int, cursor: str | None, **filters: Any
) -> tuple[list[Any], str | None]:
    query = select(model)
    for field, value in filters.items():
        if value is not None:
            query = query.where(getattr(model, field) == value)
    return await page_by_id(session, query, model.id, limit=limit, cursor=cursor)  # type: ignore[attr-defined]


async def persons_for_emails(
    session: AsyncSession, wanted: dict[str, str | None]
) -> dict[str, Person]:
    """The persons with these (normalised) e-mails, creating the missing ones.

    ``wanted`` maps each e-mail to the name a new person gets (else the part
    before the @).
    """
    if not wanted:
        return {}
    found = {
        p.email: p
        for p in await session.scalars(select(Person).where(Person.email.in_(list(wanted))))
    }
    new = [
        Person(name=(name or "").strip()[:200] or email.split("@", 1)[0], email=email)
        for email, name in wanted.items()
        if email not in found
    ]
    if new:
        session.add_all(new)
        await session.flush()
        found.update((p.email, p) for p in new)
    return found  # type: ignore[return-value]
