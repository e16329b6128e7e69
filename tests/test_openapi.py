"""The OpenAPI document tells the truth: every refusal is documented, in crmcal's shape.

The outside check is ``test_schemathesis.py``; these are the document's own rules, and
a few answers checked against it.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

from crmcal.config import Settings
from crmcal.sync.states import ConnectionState
from crmcal.web.app import create_app
from tests.conftest import Api

METHODS = {"get", "post", "put", "patch", "delete"}


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    app = create_app(Settings(database_url="sqlite://"), background_jobs=False)
    return app.openapi()


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, item in doc["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


def test_every_refusal_answers_the_error_schema(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    assert "ValidationError" not in schemas
    error = schemas["Error"]
    assert error["required"] == ["detail"]
    assert error["properties"]["detail"]["type"] == "string"
    item = schemas["ErrorItem"]
    assert set(item["required"]) == {"loc", "msg"}
    for method, path, operation in operations(doc):
        for code, answer in operation["responses"].items():
            content = answer.get("content", {}).get("application/json")
            if code.startswith("4") and content is not None and not path.startswith("/web"):
                assert content["schema"] == {"$ref": "#/components/schemas/Error"}, (
                    method,
                    path,
                    code,
                )


def test_every_operation_lists_the_refusals_it_can_answer(doc: dict[str, Any]) -> None:
    for method, path, operation in operations(doc):
        codes = set(operation["responses"])
        assert {"400", "413"} <= codes, (method, path)
        if path.startswith("/api/v1"):
            assert "401" in codes, (method, path)
            assert "WWW-Authenticate" in operation["responses"]["401"]["headers"]
        if path.startswith("/api/v1") and "{" in path:
            assert "404" in codes, (method, path)
        if operation.get("parameters") or operation.get("requestBody"):
            assert "422" in codes, (method, path)


def test_route_specific_refusals_are_declared(doc: dict[str, Any]) -> None:
    paths = doc["paths"]
    assert {"403", "409"} <= set(paths["/api/v1/users"]["post"]["responses"])
    assert "403" in paths["/api/v1/activities"]["get"]["responses"]
    assert "409" in paths["/api/v1/activities/{activity_id}/restore"]["post"]["responses"]
    assert "409" in paths["/api/v1/persons"]["post"]["responses"]
    assert "409" not in paths["/api/v1/persons/{record_id}"]["get"]["responses"]
    assert {"403", "409", "503"} <= set(paths["/api/v1/connections"]["post"]["responses"])
    assert "409" in paths["/api/v1/activity-types/{key}"]["delete"]["responses"]


def test_operation_ids_are_the_route_names(doc: dict[str, Any]) -> None:
    ids = [operation["operationId"] for _, _, operation in operations(doc)]
    assert len(ids) == len(set(ids))
    assert doc["paths"]["/api/v1/activities"]["get"]["operationId"] == "list_activities"
    assert doc["paths"]["/api/v1/persons"]["post"]["operationId"] == "create_person"


def test_created_records_link_to_their_operations(doc: dict[str, Any]) -> None:
    links = doc["paths"]["/api/v1/activities"]["post"]["responses"]["201"]["links"]
    assert links["GetActivity"] == {
        "operationId": "get_activity",
        "parameters": {"activity_id": "$response.body#/id"},
    }
    assert {"UpdateActivity", "DeleteActivity", "RestoreActivity"} <= set(links)
    # A field named like another path's one parameter links there too.
    assert links["GetSeries"]["parameters"] == {"series_id": "$response.body#/series_id"}
    made = doc["paths"]["/api/v1/connections"]["post"]["responses"]["201"]["links"]
    assert {"GetConnection", "UpdateConnection", "DeleteConnection", "StartConnection",
            "SyncConnection", "GetConnectionStatus"} <= set(made)  # fmt: skip
    for kind in ("person", "organization", "deal"):
        made = doc["paths"][f"/api/v1/{kind}s"]["post"]["responses"]["201"]["links"]
        assert {f"Get{kind.capitalize()}", f"Update{kind.capitalize()}"} <= set(made)
    assert "GetPerson" in doc["paths"]["/api/v1/persons"]["post"]["responses"]["201"]["links"]
    types = doc["paths"]["/api/v1/activity-types"]["post"]["responses"]["201"]["links"]
    assert types["UpdateActivityType"]["parameters"] == {"key": "$response.body#/key"}


def test_lists_reads_and_updates_link_to_the_operations_on_their_records(
    doc: dict[str, Any],
) -> None:
    def links(method: str, path: str) -> dict[str, Any]:
        answer = doc["paths"][f"/api/v1{path}"][method]["responses"]
        return dict(answer.get("200", answer.get("201", {})).get("links", {}))

    # A list's first item: the only way to a token, which no operation creates.
    assert links("get", "/me/tokens")["RevokeMyToken"] == {
        "operationId": "revoke_my_token",
        "parameters": {"token_id": "$response.body#/items/0/id"},
    }
    for kind, path in (("Person", "/persons"), ("Organization", "/organizations"),
                       ("Deal", "/deals"), ("User", "/users")):  # fmt: skip
        assert {f"Get{kind}", f"Update{kind}"} <= set(links("get", path))
        param = "user_id" if kind == "User" else "record_id"
        assert links("patch", f"{path}/{{{param}}}")[f"Get{kind}"]["parameters"] == {
            param: "$response.body#/id"
        }
        assert f"Update{kind}" in links("get", f"{path}/{{{param}}}")
    assert {"UpdateActivity", "DeleteActivity", "GetSeries"} <= set(
        links("get", "/activities/{activity_id}")
    )
    # A trashed activity is still answered: after a DELETE only restoring it is of use.
    assert set(links("delete", "/activities/{activity_id}")) == {"RestoreActivity"}
    assert links("post", "/activities/{activity_id}/restore") == {}
    assert links("get", "/series/{series_id}")["ListOccurrences"]["parameters"] == {
        "query.series_id": "$response.body#/id"
    }
    assert {"StartConnection", "GetConnection"} <= set(
        links("post", "/connections/{connection_id}/stop")
    )
    assert "GetUser" in links("get", "/connections/{connection_id}")


def _documented(doc: dict[str, Any], method: str, path: str) -> set[str]:
    return set(doc["paths"][path][method]["responses"])


def test_real_refusals_are_documented(admin: Api, alice: Api, client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    tried = [
        ("get", "/api/v1/users", client.get("/api/v1/users")),
        ("get", "/api/v1/users", alice.get("/api/v1/users")),
        ("get", "/api/v1/activities/{activity_id}", admin.get("/api/v1/activities/42")),
        ("post", "/api/v1/persons", admin.post("/api/v1/persons", json={"name": 3})),
        ("get", "/api/v1/me", admin.get("/api/v1/me?x=%00")),
        (
            "post",
            "/api/v1/activity-types",
            admin.post("/api/v1/activity-types", json={"key": "call", "name": "Call"}),
        ),
    ]
    for method, path, answer in tried:
        assert answer.status_code >= 400
        assert str(answer.status_code) in _documented(doc, method, path), (path, answer.text)
        assert isinstance(answer.json()["detail"], str)


def test_a_405_names_every_method_of_the_path(admin: Api) -> None:
    answer = admin.client.put("/api/v1/users/1", headers={"Authorization": f"Bearer {admin.token}"})
    assert answer.status_code == 405
    assert answer.headers["allow"] == "GET, PATCH"


def test_every_request_body_is_one_model(doc: dict[str, Any]) -> None:
    """What a body needs besides its fields (a participant's e-mail or person, a CalDAV
    account or a grant) is said with if/then, not anyOf: a generated client then has
    one model with every field instead of one per alternative, each missing the rest."""
    schemas = doc["components"]["schemas"]
    bodies = {
        ref["$ref"].rsplit("/", 1)[1]
        for _, _, operation in operations(doc)
        for ref in [operation.get("requestBody", {}).get("content", {})
                    .get("application/json", {}).get("schema", {})]
        if "$ref" in ref
    }  # fmt: skip
    for name in bodies | {"ParticipantIn"}:
        assert "properties" in schemas[name], name
        assert not {"anyOf", "oneOf"} & set(schemas[name]), name
    assert schemas["ConnectionCreate"]["then"]["required"] == ["url", "username", "password"]


def test_links_to_missing_records_are_documented_clashes(admin: Api, doc: dict[str, Any]) -> None:
    """Valid by the document, refused by what is stored: a 409 every such write lists."""
    for path, body in [
        ("/api/v1/activities", {"type": "call", "subject": "x", "start": "2026-12-01",
                                "person_id": 4242}),
        ("/api/v1/activities", {"type": "nosuchtype", "subject": "x", "start": "2026-12-01"}),
        ("/api/v1/deals", {"title": "x", "organization_id": 4242}),
        ("/api/v1/persons", {"name": "x", "organization_id": 4242}),
    ]:  # fmt: skip
        answer = admin.post(path, json=body)
        assert answer.status_code == 409, answer.text
        documented = doc["paths"][path]["post"]["responses"]["409"]["description"]
        assert "does not exist" in documented, path
    for path in ("/api/v1/activities/{activity_id}", "/api/v1/deals/{record_id}"):
        assert "does not exist" in doc["paths"][path]["patch"]["responses"]["409"]["description"]


def test_the_token_in_use_is_not_revoked(admin: Api, doc: dict[str, Any]) -> None:
    (mine,) = admin.get("/api/v1/me/tokens").json()["items"]
    answer = admin.delete(f"/api/v1/me/tokens/{mine['id']}")
    assert answer.status_code == 409, answer.text
    assert "409" in doc["paths"]["/api/v1/me/tokens/{token_id}"]["delete"]["responses"]
    assert admin.get("/api/v1/me").status_code == 200


def test_booleans_are_true_or_false_as_documented(admin: Api) -> None:
    created = admin.post("/api/v1/activity-types", json={"key": "demo", "name": "Demo"})
    assert created.status_code == 201
    answer = admin.patch("/api/v1/activity-types/demo", json={"active": 0})
    assert answer.status_code == 422, answer.text
    assert admin.patch("/api/v1/activity-types/demo", json={"active": False}).status_code == 200


def test_whole_numbers_are_numbers_as_documented(admin: Api, doc: dict[str, Any]) -> None:
    body = {"type": "call", "subject": "x", "start": "2026-12-01T10:00:00Z"}
    for wrong in (False, "5"):
        answer = admin.post("/api/v1/activities", json={**body, "reminder_minutes": wrong})
        assert answer.status_code == 422, answer.text
    made = admin.post("/api/v1/activities", json={**body, "reminder_minutes": 5})
    assert made.status_code == 201, made.text
    # An update may leave start out but not set it to null, as its schema says.
    start = doc["components"]["schemas"]["ActivityUpdate"]["properties"]["start"]
    assert all(s.get("type") != "null" for s in start["anyOf"])
    refused = admin.patch(f"/api/v1/activities/{made.json()['id']}", json={"start": None})
    assert refused.status_code == 422, refused.text


def test_an_admin_cannot_lock_themselves_out(admin: Api, doc: dict[str, Any]) -> None:
    answer = admin.patch(f"/api/v1/users/{admin.id}", json={"active": False})
    assert answer.status_code == 409, answer.text
    assert "409" in doc["paths"]["/api/v1/users/{user_id}"]["patch"]["responses"]
    assert admin.get("/api/v1/me").status_code == 200


def test_cursors_are_what_the_document_says(admin: Api, doc: dict[str, Any]) -> None:
    for name in ("alice", "bob", "carol"):
        assert admin.post("/api/v1/organizations", json={"name": name}).status_code == 201
    page = admin.get("/api/v1/organizations", params={"limit": 1}).json()
    params = doc["paths"]["/api/v1/organizations"]["get"]["parameters"]
    cursor = next(p for p in params if p["name"] == "cursor")["schema"]["anyOf"][0]
    assert re.fullmatch(cursor["pattern"], page["next_cursor"])
    # Any cursor of that pattern is a place in the list, the largest one its end.
    last = admin.get("/api/v1/organizations", params={"cursor": "9999999999"})
    assert last.status_code == 200
    assert last.json()["items"] == []
    assert admin.get("/api/v1/organizations", params={"cursor": "abc"}).status_code == 422


def test_a_connections_state_is_one_the_code_uses(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    for model in ("ConnectionOut", "StatusOut"):
        state = schemas[model]["properties"]["state"]
        assert (state["type"], sorted(state["enum"])) == (
            "string",
            sorted(ConnectionState),
        ), model
