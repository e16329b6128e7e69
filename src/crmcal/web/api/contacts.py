"""Persons, organizations and deals: list, create, read, change."""

# No "from __future__ import annotations": the route factory annotates with
# schema classes held in variables, which FastAPI must see as real types.

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel

from crmcal.crm import contacts, permissions
from crmcal.crm.errors import Invalid
from crmcal.crm.schemas import (
    MAX_ID,
    DealCreate,
    DealOut,
    DealUpdate,
    Doc,
    Input,
    OrganizationCreate,
    OrganizationOut,
    OrganizationUpdate,
    Page,
    PersonCreate,
    PersonOut,
    PersonUpdate,
    normalise_email,
)
from crmcal.crm.tables import Base, Deal, Organization, Person
from crmcal.web.api.paging import DEFAULT, Cursor, Limit
from crmcal.web.deps import reading, writing
from crmcal.web.openapi import refusals

router = APIRouter()
RecordId = Annotated[int, Path(ge=1, le=MAX_ID)]


def _add_crud(
    path: str,
    model: type[Base],
    create_schema: type[Input],
    update_schema: type[Input],
    out_schema: type[BaseModel],
    tag: str,
) -> None:
    """GET list, POST, GET one and PATCH for one kind of record.

    FastAPI reads the bodies' models from the handlers' annotations at run time, so these
    are the schema classes passed in, which a type checker cannot take as types.
    """

    def out(record: Any) -> Any:
        return out_schema.model_validate(record, from_attributes=True)

    async def create(request: Request, body: create_schema) -> Any:  # type: ignore[valid-type]
        async with writing(request) as (session, user):
            permissions.require(user, permissions.CONTACTS_EDIT)
            return out(await contacts.create(session, model, body, user))

    async def read(request: Request, record_id: RecordId) -> Any:
        async with reading(request) as (session, user):
            permissions.require(user, permissions.CONTACTS_VIEW)
            return out(await contacts.get(session, model, record_id, user))

    async def update(
        request: Request,
        record_id: RecordId,
        body: update_schema,  # type: ignore[valid-type]
    ) -> Any:
        async with writing(request) as (session, user):
            permissions.require(user, permissions.CONTACTS_EDIT)
            record = await contacts.get(session, model, record_id, user)
            return out(await contacts.update(session, record, body, user))

    one = f"{path}/{{record_id}}"
    noun = tag[:-1]
    common: dict[str, Any] = {"response_model": out_schema, "tags": [tag],
                              "responses": refusals(403)}  # fmt: skip
    writes = {**common}
    linked = sorted(field for field in contacts.LINKS if field in create_schema.model_fields)
    if linked:
        names = ", ".join(f"`{field}`" for field in linked)
        clash = f"A record the body names ({names}) does not exist or is hidden from you."
        if model is Person:
            clash = f"Another person has that e-mail address, or: {clash[0].lower()}{clash[1:]}"
        writes["responses"] = refusals(403, 409, s409=clash)
    router.add_api_route(path, create, methods=["POST"], status_code=201,
                         summary=f"Create {noun}", name=f"create_{noun}", **writes)  # fmt: skip
    router.add_api_route(one, read, methods=["GET"], summary=f"Get {noun}",
                         name=f"get_{noun}", **common)  # fmt: skip
    router.add_api_route(one, update, methods=["PATCH"], summary=f"Update {noun}",
                         name=f"update_{noun}", **writes)  # fmt: skip


@router.get("/persons", response_model=Page[PersonOut], tags=["persons"], responses=refusals(403))
async def list_persons(
    request: Request,
    email: Annotated[
        Annotated[str, Doc(format="email")] | None,
        Query(max_length=320, description="Exact, any case."),
    ] = None,
    organization_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    limit: Limit = DEFAULT,
    cursor: Cursor = None,
) -> Page[PersonOut]:
    try:
        email = normalise_email(email) if email is not None else None
    except ValueError as exc:
        raise Invalid(f"email: {exc}") from None
    return await _list(request, Person, PersonOut, limit, cursor,
                       email=email, organization_id=organization_id)  # fmt: skip


@router.get(
    "/organizations",
    response_model=Page[OrganizationOut],
    tags=["organizations"],
    responses=refusals(403),
)
async def list_organizations(
    request: Request, limit: Limit = DEFAULT, cursor: Cursor = None
) -> Page[OrganizationOut]:
    return await _list(request, Organization, OrganizationOut, limit, cursor)


@router.get("/deals", response_model=Page[DealOut], tags=["deals"], responses=refusals(403))
async def list_deals(
    request: Request,
    person_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    organization_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    limit: Limit = DEFAULT,
    cursor: Cursor = None,
) -> Page[DealOut]:
    return await _list(request, Deal, DealOut, limit, cursor,
                       person_id=person_id, organization_id=organization_id)  # fmt: skip


async def _list(
    request: Request,
    model: type[Person] | type[Organization] | type[Deal],
    out_schema: type[BaseModel],
    limit: int,
    cursor: str | None,
    **filters: Any,
) -> Any:
    async with reading(request) as (session, user):
        permissions.require(user, permissions.CONTACTS_VIEW)
        found, next_cursor = await contacts.list_page(
            session, model, limit=limit, cursor=cursor, user=user, **filters
        )
        items = [out_schema.model_validate(r, from_attributes=True) for r in found]
        return {"items": items, "next_cursor": next_cursor}


_add_crud("/persons", Person, PersonCreate, PersonUpdate, PersonOut, "persons")
_add_crud("/organizations", Organization, OrganizationCreate, OrganizationUpdate,
          OrganizationOut, "organizations")  # fmt: skip
_add_crud("/deals", Deal, DealCreate, DealUpdate, DealOut, "deals")
