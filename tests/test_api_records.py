"""The REST API for users, /me, activity types, persons, organizations and deals."""

from __future__ import annotations

import asyncio
import hashlib
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from crmcal.crm.tables import ApiToken, User
from crmcal.db import Database
from tests.conftest import Api, new_user, sqlite_only

V1 = "/api/v1"
DEFAULT_TYPES = ["call", "meeting", "task", "deadline", "email", "lunch"]
ALL_PERMISSIONS = {
    "calendar_sync",
    "activities.view",
    "activities.create",
    "activities.edit",
    "activities.delete",
    "contacts.view",
    "contacts.edit",
}


def collect(api: Api, path: str, limit: int, **params: Any) -> list[dict[str, Any]]:
    """Every item of a list endpoint, page by page; checks each page's size."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(100):
        query = {**params, "limit": limit, **({"cursor": cursor} if cursor else {})}
        r = api.get(path, params=query)
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page["items"]) <= limit
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items
        assert page["items"], "a page with a next cursor must not be empty"
    raise AssertionError("pagination did not end")


def assert_once(items: list[dict[str, Any]], expected_ids: set[int]) -> None:
    ids = [item["id"] for item in items]
    assert len(ids) == len(set(ids)), f"an item came twice: {ids}"
    assert set(ids) == expected_ids
    assert ids == sorted(ids)


def detail(r: Any) -> str:
    body = r.json()
    assert isinstance(body.get("detail"), str), body
    assert body["detail"], body
    return str(body["detail"])


# --- users and /me -----------------------------------------------------------


def test_admin_creates_user_with_token_that_works_at_once(admin: Api) -> None:
    r = admin.post(
        f"{V1}/users", json={"email": "Carol@CRM.test", "name": "Carol", "timezone": "Asia/Tokyo"}
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["email"] == "carol@crm.test"
    assert body["name"] == "Carol"
    assert body["timezone"] == "Asia/Tokyo"
    assert body["is_admin"] is False
    assert body["active"] is True
    assert set(body["permissions"]) == ALL_PERMISSIONS
    assert body["token"]

    carol = Api(admin.client, body["token"], body["id"])
    me = carol.get(f"{V1}/me")
    assert me.status_code == 200, me.text
    assert me.json()["id"] == body["id"]
    assert me.json()["email"] == "carol@crm.test"
    assert "token" not in me.json()

    got = admin.get(f"{V1}/users/{body['id']}")
    assert got.status_code == 200
    assert "token" not in got.json()
    assert got.json()["email"] == "carol@crm.test"


def test_only_a_sha256_hash_of_the_token_is_stored(admin: Api, db_url: str) -> None:
    r = admin.post(f"{V1}/users", json={"email": "dan@crm.test", "name": "Dan"})
    assert r.status_code == 201, r.text
    token, user_id = r.json()["token"], r.json()["id"]

    async def stored() -> tuple[list[str], str]:
        db = Database(db_url)
        try:
            async with db.read() as session:
                rows = list(await session.scalars(select(ApiToken)))
                hashes = [t.token_hash for t in rows if t.user_id == user_id]
                dump = repr([(t.id, t.user_id, t.token_hash, t.created_at) for t in rows])
                users = list(await session.scalars(select(User)))
                dump += repr([vars(u) for u in users])
                return hashes, dump
        finally:
            await db.dispose()

    hashes, dump = asyncio.run(stored())
    assert hashes == [hashlib.sha256(token.encode()).hexdigest()]
    assert token not in dump
    assert token.split("_", 1)[-1] not in dump


def test_admin_lists_users_page_by_page(admin: Api) -> None:
    created = {new_user(admin, f"user{i}@crm.test").id for i in range(5)}
    items = collect(admin, f"{V1}/users", limit=2)
    assert_once(items, created | {admin.id})
    assert all("token" not in item for item in items)


def test_admin_patches_user(admin: Api, alice: Api) -> None:
    r = admin.patch(
        f"{V1}/users/{alice.id}",
        json={
            "name": "Alice A.",
            "timezone": "America/New_York",
            "permissions": ["activities.view"],
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["name"] == "Alice A."
    assert body["timezone"] == "America/New_York"
    assert body["permissions"] == ["activities.view"]
    assert alice.get(f"{V1}/me").json()["permissions"] == ["activities.view"]

    r = admin.patch(f"{V1}/users/{alice.id}", json={"is_admin": True})
    assert r.status_code == 200
    assert alice.get(f"{V1}/users").status_code == 200


def test_user_created_with_chosen_permissions(admin: Api) -> None:
    r = admin.post(
        f"{V1}/users",
        json={"email": "eve@crm.test", "name": "Eve", "permissions": ["calendar_sync"]},
    )
    assert r.status_code == 201, r.text
    assert r.json()["permissions"] == ["calendar_sync"]
    r = admin.post(f"{V1}/users", json={"email": "fay@crm.test", "name": "Fay", "permissions": []})
    assert r.status_code == 201, r.text
    assert r.json()["permissions"] == []


@pytest.mark.parametrize("email", ["alice@crm.test", "ALICE@crm.test", " Alice@Crm.Test "])
def test_duplicate_user_email_is_a_conflict(admin: Api, alice: Api, email: str) -> None:
    r = admin.post(f"{V1}/users", json={"email": email, "name": "Another Alice"})
    assert r.status_code == 409, r.text
    assert "alice@crm.test" in detail(r)


def test_non_admin_cannot_manage_users(admin: Api, alice: Api, bob: Api) -> None:
    r = alice.get(f"{V1}/users")
    assert r.status_code == 403
    assert "admin" in detail(r)
    r = alice.post(f"{V1}/users", json={"email": "x@crm.test", "name": "X"})
    assert r.status_code == 403
    r = alice.patch(f"{V1}/users/{alice.id}", json={"is_admin": True})
    assert r.status_code == 403
    r = alice.patch(f"{V1}/users/{bob.id}", json={"active": False})
    assert r.status_code == 403
    r = alice.get(f"{V1}/users/{bob.id}")
    assert r.status_code == 403
    r = alice.get(f"{V1}/users/{admin.id}")
    assert r.status_code == 403
    # Nothing changed.
    assert alice.get(f"{V1}/me").json()["is_admin"] is False
    assert bob.get(f"{V1}/me").status_code == 200


def test_user_may_read_own_record(alice: Api) -> None:
    r = alice.get(f"{V1}/users/{alice.id}")
    assert r.status_code == 200, r.text
    assert r.json() == alice.get(f"{V1}/me").json()


def test_deactivated_user_token_stops_working(admin: Api, alice: Api) -> None:
    assert alice.get(f"{V1}/me").status_code == 200
    r = admin.patch(f"{V1}/users/{alice.id}", json={"active": False})
    assert r.status_code == 200, r.text
    assert r.json()["active"] is False
    r = alice.get(f"{V1}/me")
    assert r.status_code == 401
    assert r.headers.get("www-authenticate", "").lower().startswith("bearer")
    assert alice.get(f"{V1}/persons").status_code == 401
    # Reactivated, the same token works again.
    assert admin.patch(f"{V1}/users/{alice.id}", json={"active": True}).status_code == 200
    assert alice.get(f"{V1}/me").status_code == 200


@sqlite_only  # refused by the schema
@pytest.mark.parametrize("timezone", ["Mars/Olympus", "Europe", "", "../etc/passwd", "UTC\\x"])
def test_invalid_timezone_is_refused(admin: Api, alice: Api, timezone: str) -> None:
    r = admin.post(f"{V1}/users", json={"email": "tz@crm.test", "name": "Tz", "timezone": timezone})
    assert r.status_code == 422, r.text
    assert "timezone" in detail(r) or "time zone" in detail(r)
    r = admin.patch(f"{V1}/users/{alice.id}", json={"timezone": timezone})
    assert r.status_code == 422, r.text
    assert alice.get(f"{V1}/me").json()["timezone"] == "Europe/Berlin"


def test_unknown_permission_is_refused(admin: Api, alice: Api) -> None:
    r = admin.post(
        f"{V1}/users",
        json={"email": "p@crm.test", "name": "P", "permissions": ["activities.view", "root"]},
    )
    assert r.status_code == 422, r.text
    assert "permissions" in detail(r)
    r = admin.patch(f"{V1}/users/{alice.id}", json={"permissions": ["superuser"]})
    assert r.status_code == 422, r.text
    assert set(alice.get(f"{V1}/me").json()["permissions"]) == ALL_PERMISSIONS


@sqlite_only  # refused by the schema
@pytest.mark.parametrize("field", ["name", "is_admin", "active", "timezone"])
def test_user_patch_refuses_null_for_required_fields(admin: Api, alice: Api, field: str) -> None:
    r = admin.patch(f"{V1}/users/{alice.id}", json={field: None})
    assert r.status_code == 422, r.text
    assert field in detail(r)


def test_user_create_validation(admin: Api) -> None:
    for body in (
        {"email": "not-an-address", "name": "N"},
        {"email": "n@crm.test", "name": ""},
        {"email": "n@crm.test"},
        {"name": "N"},
        {"email": "n@crm.test", "name": "N", "is_admin": "maybe"},
    ):
        r = admin.post(f"{V1}/users", json=body)
        assert r.status_code == 422, (body, r.text)
        detail(r)


def test_unknown_user_is_404(admin: Api) -> None:
    assert admin.get(f"{V1}/users/999999").status_code == 404
    r = admin.patch(f"{V1}/users/999999", json={"name": "Ghost"})
    assert r.status_code == 404
    assert "999999" in detail(r)


# --- activity types -----------------------------------------------------------


def type_list(api: Api) -> dict[str, dict[str, Any]]:
    r = api.get(f"{V1}/activity-types")
    assert r.status_code == 200, r.text
    assert r.json()["next_cursor"] is None
    return {t["key"]: t for t in r.json()["items"]}


def test_default_activity_types_are_listed(alice: Api) -> None:
    r = alice.get(f"{V1}/activity-types")
    assert r.status_code == 200
    keys = [t["key"] for t in r.json()["items"]]
    assert keys[:6] == DEFAULT_TYPES
    for item in r.json()["items"]:
        assert item["builtin"] is True
        assert item["active"] is True
        assert item["name"]


def test_admin_creates_renames_deactivates_reactivates_type(admin: Api, alice: Api) -> None:
    r = admin.post(f"{V1}/activity-types", json={"key": "site-visit", "name": "Site visit"})
    assert r.status_code == 201, r.text
    assert r.json() == {"key": "site-visit", "name": "Site visit", "builtin": False, "active": True}
    assert type_list(alice)["site-visit"]["name"] == "Site visit"

    r = admin.patch(f"{V1}/activity-types/site-visit", json={"name": "On-site visit"})
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "On-site visit"
    assert r.json()["key"] == "site-visit"

    r = admin.patch(f"{V1}/activity-types/site-visit", json={"active": False})
    assert r.status_code == 200
    assert r.json()["active"] is False
    assert type_list(alice)["site-visit"]["active"] is False
    # A deactivated type cannot be picked for a new activity.
    r = alice.post(
        f"{V1}/activities",
        json={"type": "site-visit", "subject": "S", "start": "2026-12-01T10:00:00+01:00"},
    )
    assert r.status_code == 409, r.text
    assert "deactivated" in detail(r)

    r = admin.patch(f"{V1}/activity-types/site-visit", json={"active": True})
    assert r.status_code == 200
    assert type_list(alice)["site-visit"]["active"] is True
    r = alice.post(
        f"{V1}/activities",
        json={"type": "site-visit", "subject": "S", "start": "2026-12-01T10:00:00+01:00"},
    )
    assert r.status_code == 201, r.text


def test_builtin_type_can_be_renamed_and_deactivated(admin: Api) -> None:
    r = admin.patch(f"{V1}/activity-types/lunch", json={"name": "Business lunch", "active": False})
    assert r.status_code == 200, r.text
    assert r.json() == {"key": "lunch", "name": "Business lunch", "builtin": True, "active": False}


def test_duplicate_type_key_is_a_conflict(admin: Api) -> None:
    assert admin.post(f"{V1}/activity-types", json={"key": "demo", "name": "Demo"}).status_code == (
        201
    )
    r = admin.post(f"{V1}/activity-types", json={"key": "demo", "name": "Demo again"})
    assert r.status_code == 409
    assert "demo" in detail(r)
    r = admin.post(f"{V1}/activity-types", json={"key": "call", "name": "Call"})
    assert r.status_code == 409


@pytest.mark.parametrize(
    "key", ["Demo", "two words", "-lead", "_lead", "ünïcode", "a/b", "", "x" * 65, "a.b"]
)
def test_bad_type_key_is_422(admin: Api, key: str) -> None:
    r = admin.post(f"{V1}/activity-types", json={"key": key, "name": "Name"})
    assert r.status_code == 422, r.text
    assert "key" in detail(r)


def test_type_name_validation(admin: Api) -> None:
    body: dict[str, Any]
    for body in ({"key": "ok"}, {"key": "ok", "name": ""}, {"key": "ok", "name": "n" * 101}):
        r = admin.post(f"{V1}/activity-types", json=body)
        assert r.status_code == 422, (body, r.text)
        assert "name" in detail(r)
    assert admin.post(f"{V1}/activity-types", json={"key": "ok", "name": "Ok"}).status_code == 201
    for body in ({"name": None}, {"active": None}, {"name": ""}, {"key": "other"}):
        r = admin.patch(f"{V1}/activity-types/ok", json=body)
        assert r.status_code == 422, (body, r.text)


def test_non_admin_cannot_change_types(admin: Api, alice: Api) -> None:
    assert admin.post(f"{V1}/activity-types", json={"key": "demo", "name": "Demo"}).status_code == (
        201
    )
    r = alice.post(f"{V1}/activity-types", json={"key": "mine", "name": "Mine"})
    assert r.status_code == 403
    detail(r)
    assert alice.patch(f"{V1}/activity-types/demo", json={"name": "X"}).status_code == 403
    assert alice.patch(f"{V1}/activity-types/call", json={"active": False}).status_code == 403
    assert alice.delete(f"{V1}/activity-types/demo").status_code == 403
    types = type_list(alice)
    assert "mine" not in types
    assert types["demo"] == {"key": "demo", "name": "Demo", "builtin": False, "active": True}
    assert types["call"]["active"] is True


def test_delete_unused_custom_type_removes_it(admin: Api) -> None:
    assert admin.post(f"{V1}/activity-types", json={"key": "demo", "name": "Demo"}).status_code == (
        201
    )
    r = admin.delete(f"{V1}/activity-types/demo")
    assert r.status_code == 204, r.text
    assert r.content == b""
    assert "demo" not in type_list(admin)
    assert admin.delete(f"{V1}/activity-types/demo").status_code == 404
    # The key is free again.
    assert admin.post(f"{V1}/activity-types", json={"key": "demo", "name": "Demo"}).status_code == (
        201
    )


def test_delete_used_custom_type_deactivates_it(admin: Api, alice: Api) -> None:
    assert admin.post(f"{V1}/activity-types", json={"key": "demo", "name": "Demo"}).status_code == (
        201
    )
    r = alice.post(
        f"{V1}/activities",
        json={"type": "demo", "subject": "Demo", "start": "2026-12-01T10:00:00+01:00"},
    )
    assert r.status_code == 201, r.text
    activity_id = r.json()["id"]

    r = admin.delete(f"{V1}/activity-types/demo")
    assert r.status_code == 200, r.text
    assert r.json() == {"key": "demo", "name": "Demo", "builtin": False, "active": False}
    assert type_list(admin)["demo"]["active"] is False
    assert alice.get(f"{V1}/activities/{activity_id}").json()["type"] == "demo"
    # Deleting again keeps it: never hard-deleted while used, even if trashed.
    assert alice.delete(f"{V1}/activities/{activity_id}").status_code == 200
    r = admin.delete(f"{V1}/activity-types/demo")
    assert r.status_code == 200, r.text
    assert "demo" in type_list(admin)


@pytest.mark.parametrize("key", DEFAULT_TYPES)
def test_delete_builtin_type_is_a_conflict(admin: Api, key: str) -> None:
    r = admin.delete(f"{V1}/activity-types/{key}")
    assert r.status_code == 409
    assert "built-in" in detail(r)
    assert type_list(admin)[key]["active"] is True


def test_unknown_type_is_404(admin: Api) -> None:
    assert admin.patch(f"{V1}/activity-types/nope", json={"name": "N"}).status_code == 404
    r = admin.delete(f"{V1}/activity-types/nope")
    assert r.status_code == 404
    assert "nope" in detail(r)


# --- organizations ------------------------------------------------------------


def make_org(api: Api, name: str = "ACME", **fields: Any) -> dict[str, Any]:
    r = api.post(f"{V1}/organizations", json={"name": name, **fields})
    assert r.status_code == 201, r.text
    return dict(r.json())


def make_person(api: Api, name: str = "Ann", **fields: Any) -> dict[str, Any]:
    r = api.post(f"{V1}/persons", json={"name": name, **fields})
    assert r.status_code == 201, r.text
    return dict(r.json())


def test_organization_create_get_patch(alice: Api, bob: Api) -> None:
    org = make_org(alice, "ACME", address="1 Main St")
    assert org["name"] == "ACME"
    assert org["address"] == "1 Main St"
    assert org["created_at"]
    assert org["updated_at"]

    r = bob.get(f"{V1}/organizations/{org['id']}")
    assert r.status_code == 200
    assert r.json() == org

    r = bob.patch(f"{V1}/organizations/{org['id']}", json={"name": "ACME Inc."})
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "ACME Inc."
    assert r.json()["address"] == "1 Main St"
    r = bob.patch(f"{V1}/organizations/{org['id']}", json={"address": None})
    assert r.status_code == 200
    assert r.json()["address"] is None
    assert alice.get(f"{V1}/organizations/{org['id']}").json()["name"] == "ACME Inc."


def test_organization_validation(alice: Api) -> None:
    org = make_org(alice)
    for body in ({}, {"name": ""}, {"name": "n" * 201}, {"name": "A", "address": "a" * 501}):
        r = alice.post(f"{V1}/organizations", json=body)
        assert r.status_code == 422, (body, r.text)
        detail(r)
    r = alice.patch(f"{V1}/organizations/{org['id']}", json={"name": None})
    assert r.status_code == 422
    assert "name" in detail(r)
    assert make_org(alice, "n" * 200)["name"] == "n" * 200


def test_organizations_paginate(alice: Api) -> None:
    created = {make_org(alice, f"Org {i}")["id"] for i in range(7)}
    for limit in (1, 3, 7, 100):
        assert_once(collect(alice, f"{V1}/organizations", limit=limit), created)
    r = alice.get(f"{V1}/organizations", params={"limit": 7})
    assert r.json()["next_cursor"] is None


def test_unknown_organization_is_404(alice: Api) -> None:
    r = alice.get(f"{V1}/organizations/424242")
    assert r.status_code == 404
    assert "424242" in detail(r)
    assert alice.patch(f"{V1}/organizations/424242", json={"name": "X"}).status_code == 404


# --- persons ------------------------------------------------------------------


def test_person_create_get_patch(alice: Api) -> None:
    org = make_org(alice)
    person = make_person(
        alice, "Ann", email=" Ann@ACME.test ", phone="+49 30 1234", organization_id=org["id"]
    )
    assert person["email"] == "ann@acme.test"
    assert person["phone"] == "+49 30 1234"
    assert person["organization_id"] == org["id"]
    assert alice.get(f"{V1}/persons/{person['id']}").json() == person

    r = alice.patch(
        f"{V1}/persons/{person['id']}",
        json={"name": "Ann B.", "email": "ANN.B@acme.test", "organization_id": None},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["name"] == "Ann B."
    assert body["email"] == "ann.b@acme.test"
    assert body["organization_id"] is None
    assert body["phone"] == "+49 30 1234"

    r = alice.patch(f"{V1}/persons/{person['id']}", json={"email": None})
    assert r.status_code == 200
    assert r.json()["email"] is None


def test_person_without_email(alice: Api) -> None:
    first = make_person(alice, "No Mail")
    second = make_person(alice, "No Mail Either")
    assert first["email"] is None
    assert second["email"] is None


def test_person_email_is_unique_in_any_case(alice: Api) -> None:
    ann = make_person(alice, "Ann", email="ann@acme.test")
    r = alice.post(f"{V1}/persons", json={"name": "Ann 2", "email": "ANN@Acme.Test"})
    assert r.status_code == 409, r.text
    assert "ann@acme.test" in detail(r)

    ben = make_person(alice, "Ben", email="ben@acme.test")
    r = alice.patch(f"{V1}/persons/{ben['id']}", json={"email": "Ann@ACME.test"})
    assert r.status_code == 409, r.text
    assert alice.get(f"{V1}/persons/{ben['id']}").json()["email"] == "ben@acme.test"

    # A person keeps its own address whatever the case.
    r = alice.patch(f"{V1}/persons/{ann['id']}", json={"email": "ANN@acme.test"})
    assert r.status_code == 200, r.text
    assert r.json()["email"] == "ann@acme.test"


def test_person_links_to_missing_organization_are_refused(alice: Api) -> None:
    r = alice.post(f"{V1}/persons", json={"name": "Ann", "organization_id": 999})
    assert r.status_code == 409, r.text
    assert "organization_id" in detail(r)
    person = make_person(alice)
    r = alice.patch(f"{V1}/persons/{person['id']}", json={"organization_id": 999})
    assert r.status_code == 409
    assert "organization_id" in detail(r)


def test_person_validation(alice: Api) -> None:
    person = make_person(alice)
    for body in (
        {},
        {"name": ""},
        {"name": "A", "email": "not an address"},
        {"name": "A", "email": "a@"},
        {"name": "A", "email": "a@b@c"},
        {"name": "A", "email": "@acme.test"},
        {"name": "A", "phone": "1" * 51},
        {"name": "A", "organization_id": 0},
        {"name": "A", "organization_id": "one"},
    ):
        r = alice.post(f"{V1}/persons", json=body)
        assert r.status_code == 422, (body, r.text)
        detail(r)
    r = alice.patch(f"{V1}/persons/{person['id']}", json={"name": None})
    assert r.status_code == 422
    assert "name" in detail(r)


def test_persons_paginate_and_filter(alice: Api) -> None:
    acme = make_org(alice, "ACME")
    other = make_org(alice, "Other")
    at_acme = {
        make_person(alice, f"P{i}", email=f"p{i}@acme.test", organization_id=acme["id"])["id"]
        for i in range(5)
    }
    at_other = {make_person(alice, "Q", email="q@other.test", organization_id=other["id"])["id"]}
    loose = {make_person(alice, "R")["id"]}
    everyone = at_acme | at_other | loose

    for limit in (1, 2, 7, 1000):
        assert_once(collect(alice, f"{V1}/persons", limit=limit), everyone)
    assert_once(collect(alice, f"{V1}/persons", limit=2, organization_id=acme["id"]), at_acme)
    assert_once(collect(alice, f"{V1}/persons", limit=2, organization_id=other["id"]), at_other)
    assert collect(alice, f"{V1}/persons", limit=2, organization_id=999) == []

    for email in ("q@other.test", "Q@OTHER.TEST", " q@Other.test "):
        assert_once(collect(alice, f"{V1}/persons", limit=10, email=email), at_other)
    assert collect(alice, f"{V1}/persons", limit=10, email="nobody@acme.test") == []
    found = collect(
        alice, f"{V1}/persons", limit=10, email="P3@acme.test", organization_id=acme["id"]
    )
    assert [p["email"] for p in found] == ["p3@acme.test"]
    r = alice.get(f"{V1}/persons", params={"email": "not-an-address"})
    assert r.status_code == 422
    assert "email" in detail(r)


def test_unknown_person_is_404(alice: Api) -> None:
    r = alice.get(f"{V1}/persons/31337")
    assert r.status_code == 404
    assert "31337" in detail(r)
    assert alice.patch(f"{V1}/persons/31337", json={"name": "X"}).status_code == 404


# --- deals --------------------------------------------------------------------


def test_deal_create_get_patch(alice: Api, bob: Api) -> None:
    org = make_org(alice)
    person = make_person(alice, organization_id=org["id"])
    r = alice.post(
        f"{V1}/deals",
        json={
            "title": "Big one",
            "value": "12500.50",
            "currency": "EUR",
            "owner_id": alice.id,
            "person_id": person["id"],
            "organization_id": org["id"],
        },
    )
    assert r.status_code == 201, r.text
    deal = r.json()
    assert deal["title"] == "Big one"
    assert Decimal(str(deal["value"])) == Decimal("12500.50")
    assert deal["currency"] == "EUR"
    assert deal["status"] == "open"
    assert (deal["owner_id"], deal["person_id"], deal["organization_id"]) == (
        alice.id,
        person["id"],
        org["id"],
    )
    assert bob.get(f"{V1}/deals/{deal['id']}").json() == deal

    r = bob.patch(f"{V1}/deals/{deal['id']}", json={"status": "won", "value": 13000})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "won"
    assert Decimal(str(r.json()["value"])) == Decimal("13000")
    assert r.json()["title"] == "Big one"

    r = bob.patch(f"{V1}/deals/{deal['id']}", json={"value": None, "currency": None})
    assert r.status_code == 200
    assert r.json()["value"] is None
    assert r.json()["currency"] is None

    r = alice.post(f"{V1}/deals", json={"title": "Minimal"})
    assert r.status_code == 201, r.text
    assert r.json()["value"] is None
    assert r.json()["status"] == "open"
    assert r.json()["owner_id"] is None


def test_deal_value_keeps_cents(alice: Api) -> None:
    for value in ("0", "0.01", "9999999999999.99", 42, 19.99, "7.1"):
        r = alice.post(f"{V1}/deals", json={"title": "T", "value": value, "currency": "USD"})
        assert r.status_code == 201, (value, r.text)
        got = r.json()["value"]
        assert Decimal(str(got)) == Decimal(str(value))
        # The answer to the POST reads exactly like the stored record.
        assert alice.get(f"{V1}/deals/{r.json()['id']}").json()["value"] == got


# Values a database stores or compares its own way (amounts past its precision, not
# numbers, negative; a title past its column's length; ids no row can have): both
# backends.
@pytest.mark.parametrize(
    "fields",
    [
        {"value": -1},
        {"value": "-0.01"},
        {"value": "1.234"},
        {"value": "10000000000000"},
        {"value": "9999999999999999.99"},
        {"value": 1e300},
        {"value": "NaN"},
        {"value": "Infinity"},
        {"value": "-Infinity"},
        {"title": "t" * 201},
        {"owner_id": 0},
        {"person_id": -5},
    ],
)
def test_deal_validation(alice: Api, fields: dict[str, Any]) -> None:
    deal_refused(alice, fields)


# Values of the wrong kind or spelling, refused by the schema before anything reaches
# the database: SQLite alone.
@sqlite_only
@pytest.mark.parametrize(
    "fields",
    [
        {"value": "lots"},
        {"value": True},
        {"value": [1]},
        {"currency": "eur"},
        {"currency": "EURO"},
        {"currency": "E1R"},
        {"currency": ""},
        {"currency": 978},
        {"status": "pending"},
        {"status": "OPEN"},
        {"status": None},
        {"title": ""},
        {"title": None},
    ],
)
def test_deal_fields_the_schema_refuses(alice: Api, fields: dict[str, Any]) -> None:
    deal_refused(alice, fields)


def deal_refused(alice: Api, fields: dict[str, Any]) -> None:
    body = {"title": "Deal", **fields}
    r = alice.post(f"{V1}/deals", json=body)
    assert r.status_code == 422, (body, r.text)
    name = next(iter(fields))
    assert name in detail(r)

    deal = alice.post(f"{V1}/deals", json={"title": "Deal", "value": 5, "currency": "EUR"}).json()
    r = alice.patch(f"{V1}/deals/{deal['id']}", json=fields)
    assert r.status_code == 422, (fields, r.text)
    assert name in detail(r)
    after = alice.get(f"{V1}/deals/{deal['id']}").json()
    assert after == deal


@pytest.mark.parametrize("field", ["owner_id", "person_id", "organization_id"])
def test_deal_links_to_missing_records_are_refused(alice: Api, field: str) -> None:
    r = alice.post(f"{V1}/deals", json={"title": "Deal", field: 9999})
    assert r.status_code == 409, r.text
    assert field in detail(r)
    assert "9999" in detail(r)
    deal = alice.post(f"{V1}/deals", json={"title": "Deal"}).json()
    r = alice.patch(f"{V1}/deals/{deal['id']}", json={field: 9999})
    assert r.status_code == 409
    assert field in detail(r)


def test_deals_paginate_and_filter(alice: Api) -> None:
    acme = make_org(alice, "ACME")
    ann = make_person(alice, "Ann", organization_id=acme["id"])
    ben = make_person(alice, "Ben")

    def deal(**fields: Any) -> int:
        r = alice.post(f"{V1}/deals", json={"title": "D", **fields})
        assert r.status_code == 201, r.text
        return int(r.json()["id"])

    with_ann = {deal(person_id=ann["id"]) for _ in range(3)}
    ann_at_acme = {deal(person_id=ann["id"], organization_id=acme["id"]) for _ in range(2)}
    at_acme = {deal(organization_id=acme["id"])}
    with_ben = {deal(person_id=ben["id"])}
    loose = {deal() for _ in range(2)}
    everyone = with_ann | ann_at_acme | at_acme | with_ben | loose

    for limit in (1, 4, 9, 100):
        assert_once(collect(alice, f"{V1}/deals", limit=limit), everyone)
    assert_once(collect(alice, f"{V1}/deals", limit=2, person_id=ann["id"]), with_ann | ann_at_acme)
    assert_once(collect(alice, f"{V1}/deals", limit=2, person_id=ben["id"]), with_ben)
    assert_once(
        collect(alice, f"{V1}/deals", limit=2, organization_id=acme["id"]), ann_at_acme | at_acme
    )
    assert_once(
        collect(alice, f"{V1}/deals", limit=1, organization_id=acme["id"], person_id=ann["id"]),
        ann_at_acme,
    )
    assert collect(alice, f"{V1}/deals", limit=5, person_id=12345) == []


def test_unknown_deal_is_404(alice: Api) -> None:
    r = alice.get(f"{V1}/deals/8888")
    assert r.status_code == 404
    assert "8888" in detail(r)
    assert alice.patch(f"{V1}/deals/8888", json={"title": "X"}).status_code == 404


def test_records_need_a_token(client: TestClient) -> None:
    for path in ("/persons", "/organizations", "/deals", "/users", "/me", "/activity-types"):
        r = client.get(f"{V1}{path}")
        assert r.status_code == 401, path
