"""The OpenAPI document, made to tell the truth about every answer.

FastAPI documents a route's success answer and, for routes with parameters, a 422 in
its own ``HTTPValidationError`` shape, which is not what crmcal answers. Here:

- ``Error`` is the one body of every refusal (``detail``, and ``errors`` for
  validation), and replaces ``HTTPValidationError`` wherever FastAPI put it;
- ``refusals(403, 409)`` is how a route declares the refusals that depend on what it
  does; those every route can answer are added to every operation by ``document``:
  400 (a NUL in the URL, a body that is not JSON), 413 (a body over the limit), 401
  under ``/api/v1``, 422 when the operation takes parameters or a body, 404 when
  its path names a record, and 503 with ``Retry-After`` under ``/api/v1`` (the
  database was busy or out of reach: ``crmcal.db_errors.transient``);
- answers that name a record (a created one, a list's first item, a read or an
  update) link it to the operations on that record, so a client (and a fuzzer's
  stateful phase) can follow from one to the other.
"""

from __future__ import annotations

import copy
import re
import zoneinfo
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field

from crmcal.crm import times
from crmcal.crm.errors import Invalid
from crmcal.crm.schemas import TIME_ZONE_MARK

API_PREFIX = "/api/v1"

WHY = {
    400: "The URL holds a NUL character (`%00`), or the body is not valid JSON.",
    401: "No valid API token: it is missing, malformed, unknown, or its user is deactivated.",
    403: "The token's user may not do this: a permission is missing, or the record is "
    "someone else's.",
    404: "No such record.",
    409: "The request clashes with what is stored.",
    413: "The request body is larger than the limit (1 MiB).",
    422: "A parameter or a field is missing, unknown, of the wrong type or not acceptable.",
    503: "This server cannot store credentials: it runs without `CRMCAL_SECRET_KEY`.",
}

BUSY = (
    "The database is busy or out of reach for the moment: other writers held it (SQLite), "
    "or another transaction a record the request needs (PostgreSQL), for longer than the "
    "server waits; a statement ran past the server's time limit; the request collided "
    "with a change made at the same time, or found no free database connection; or the "
    "database server is starting up, shutting down, or lost the connection. Nothing was "
    "changed (but where `detail` says the outcome is unknown: the connection was lost as "
    "the change was committed); send the request again after `Retry-After` seconds."
)


class ErrorItem(BaseModel):
    """One refused input: where it is and what is wrong with it."""

    loc: list[str | int] = Field(
        description="Where: `body`, `query` or `path`, then the field names and list indexes."
    )
    msg: str


class Error(BaseModel):
    """The body of every refusal (4xx) and of a server error (5xx)."""

    model_config = ConfigDict(
        json_schema_extra={"example": {"detail": "subject: field required"}},
    )

    detail: str = Field(description="What is wrong, in one sentence.")
    errors: list[ErrorItem] = Field(
        default_factory=list,
        description="Validation errors only (422): each refused input.",
    )


ERROR_REF = {"$ref": "#/components/schemas/Error"}


def refusals(*codes: int, **why: str) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` of a route for the refusals ``codes``, answered with ``Error``;
    ``why`` overrides a description, keyed by ``s<code>`` (``s409="..."``)."""
    return {
        code: {"model": Error, "description": why.get(f"s{code}", WHY.get(code, "Refused."))}
        for code in codes
    }


def _response(code: int) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "description": WHY[code],
        "content": {"application/json": {"schema": ERROR_REF}},
    }
    if code == 401:
        answer["headers"] = {
            "WWW-Authenticate": {
                "description": "`Bearer`: the scheme to authenticate with.",
                "schema": {"type": "string"},
            }
        }
    return answer


_PARAM_RE = re.compile(r"\{([^}]+)\}")


def _all_refusals(path: str, operation: dict[str, Any]) -> None:
    responses = operation.setdefault("responses", {})
    for answer in responses.values():
        schema = answer.get("content", {}).get("application/json", {}).get("schema", {})
        if schema.get("$ref", "").endswith("/HTTPValidationError"):
            answer["content"]["application/json"]["schema"] = dict(ERROR_REF)
            answer["description"] = WHY[422]
    wanted = [400, 413]
    if path.startswith(API_PREFIX):
        wanted.append(401)
        if _PARAM_RE.search(path):
            wanted.append(404)
    if operation.get("parameters") or operation.get("requestBody"):
        wanted.append(422)
    for code in wanted:
        responses.setdefault(str(code), _response(code))
    if path.startswith(API_PREFIX):
        _busy(responses)
    operation["responses"] = dict(sorted(responses.items()))


def _busy(responses: dict[str, Any]) -> None:
    """Every API operation reads its caller's token from the database, so any can be
    answered 503 when the database stays busy; an operation's own 503 keeps its reason."""
    answer = responses.setdefault(
        "503", {"description": "", "content": {"application/json": {"schema": ERROR_REF}}}
    )
    answer["description"] = " Or: ".join(d for d in (answer["description"], BUSY) if d)
    answer.setdefault("headers", {})["Retry-After"] = {
        "description": "Seconds to wait before sending the request again (when the "
        "database was busy).",
        "schema": {"type": "integer", "minimum": 0},
    }


def _links(paths: dict[str, Any], schemas: dict[str, Any]) -> None:
    """Link answers that name a record to the operations on it, so a client (and a
    fuzzer's stateful phase) can follow from one to the other. A record's operations
    are those on ``<collection>/{param}`` and below it (``/activities/{id}/restore``);
    the field that fills ``param`` is the answer's field of that name (an activity
    type's ``key``), else its ``id``.

    - A ``POST <collection>`` that creates a record (201), and a ``GET`` or ``PATCH`` of
      the record, link to all of the record's operations;
    - a list (``GET <collection>``) links its first item to them (``GET /me/tokens`` to
      ``DELETE /me/tokens/{token_id}``);
    - an action below the record (``/connections/{id}/stop``) links to them too, unless
      the record's ``DELETE`` keeps it (answers it, 200): then the ``DELETE`` links only
      to the actions below the record (``RestoreActivity``) and an action links nowhere,
      since what a deleted record still answers is no use to follow;
    - a created or read record's field named like the one parameter of another path
      (an activity's ``series_id``, a connection's ``user_id``) links to that path's
      ``GET``, and a series to the list of its occurrences.
    """
    records = _records(paths)
    for record, (param, ops) in records.items():
        for answer, targets, prefix in _sources(paths, record, ops):
            answered = _properties(answer, schemas, listed=bool(prefix))
            field = param if param in answered else "id" if "id" in answered else None
            if field is None:
                continue
            for _, _, target in targets:
                _link(answer, target, {param: f"$response.body#/{prefix}{field}"})
    _field_links(paths, schemas, records)
    # A series' occurrences are the activities of its id.
    series = paths.get(f"{API_PREFIX}/series/{{series_id}}", {}).get("get", {})
    if "200" in series.get("responses", {}):
        series["responses"]["200"].setdefault("links", {})["ListOccurrences"] = {
            "operationId": "list_activities",
            "parameters": {"query.series_id": "$response.body#/id"},
        }


# One operation of the document: (path, method, operation object).
_Operation = tuple[str, str, dict[str, Any]]


def _records(paths: dict[str, Any]) -> dict[str, tuple[str, list[_Operation]]]:
    """Each record's path (``<collection>/{param}``), with its parameter and its
    operations: those on the path and below it."""
    records: dict[str, tuple[str, list[_Operation]]] = {}
    for path in paths:
        found = re.fullmatch(r"(.*)/\{([^}/]+)\}", path)
        if found is not None:
            records[path] = (found.group(2), [])
    for path, item in paths.items():
        for record, (_, ops) in records.items():
            if path == record or path.startswith(record + "/"):
                ops += [
                    (path, method, operation)
                    for method, operation in item.items()
                    if isinstance(operation, dict) and "operationId" in operation
                ]
    return records


def _sources(
    paths: dict[str, Any], record: str, ops: list[_Operation]
) -> list[tuple[dict[str, Any], list[_Operation], str]]:
    """The answers that name a record, each with the operations it links to and where
    the record is in it (a list's first item: ``items/0/``), as ``_links`` says."""
    collection = paths.get(record.rsplit("/", 1)[0], {})
    sources: list[tuple[dict[str, Any], list[_Operation], str]] = []
    created = collection.get("post", {}).get("responses", {}).get("201")
    if created is not None:
        sources.append((created, ops, ""))
    listed = collection.get("get", {}).get("responses", {}).get("200")
    if listed is not None:
        sources.append((listed, ops, "items/0/"))
    kept = any(
        method == "delete" and "200" in operation.get("responses", {})
        for _, method, operation in ops
    )
    actions = [op for op in ops if op[0] != record and op[1] == "post"]
    for path, method, operation in ops:
        answer = operation.get("responses", {}).get("200")
        if answer is None:
            continue
        if method == "delete":
            targets = actions if kept else []
        elif path != record and kept:
            targets = []
        else:
            targets = [op for op in ops if op[2] is not operation]
        sources.append((answer, targets, ""))
    return sources


def _field_links(
    paths: dict[str, Any], schemas: dict[str, Any], records: dict[str, tuple[str, list[_Operation]]]
) -> None:
    """A created or read record's field named like another record's parameter links
    to that record's ``GET``."""
    for path, item in paths.items():
        answer = item.get("post", {}).get("responses", {}).get("201")
        if answer is None and path in records:
            answer = item.get("get", {}).get("responses", {}).get("200")
        if answer is None:
            continue
        answered = _properties(answer, schemas)
        for record, (param, ops) in records.items():
            if param == "id" or param not in answered or record.startswith(path):
                continue
            for target_path, method, target in ops:
                if target_path == record and method == "get":
                    _link(answer, target, {param: f"$response.body#/{param}"})


def _link(answer: dict[str, Any], target: dict[str, Any], parameters: dict[str, str]) -> None:
    """A link from ``answer`` to the operation ``target``, named after it."""
    answer.setdefault("links", {})[_camel(target["operationId"])] = {
        "operationId": target["operationId"],
        "parameters": parameters,
    }


def _properties(answer: dict[str, Any], schemas: dict[str, Any], listed: bool = False) -> set[str]:
    """The fields of an answer's record (of its items', for a list)."""
    schema = answer.get("content", {}).get("application/json", {}).get("schema", {})
    schema = _resolved(schema, schemas)
    if listed:
        schema = _resolved(schema.get("properties", {}).get("items", {}).get("items", {}), schemas)
    return set(schema.get("properties", {}))


def _resolved(schema: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref", "")
    if ref.startswith("#/components/schemas/"):
        return dict(schemas.get(ref.rsplit("/", 1)[1], {}))
    return schema


def _camel(operation_id: str) -> str:
    return "".join(part.capitalize() for part in operation_id.split("_"))


def operation_id(route: APIRoute) -> str:
    """A route's operationId is its name (``list_activities``): what a generated client
    calls the method. Names must be unique; ``test_openapi`` checks that they are."""
    return route.name


def document(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI document; built once and kept, as FastAPI does."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    doc = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
    )
    doc = copy.deepcopy(doc)
    components = doc.setdefault("components", {}).setdefault("schemas", {})
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    components.update(_error_schemas())
    components["TimeZone"] = _time_zones()
    _refer_to_time_zones(doc)
    for schema in components.values():
        _no_null_defaults(schema)
    for path, item in doc.get("paths", {}).items():
        for operation in item.values():
            if isinstance(operation, dict) and "responses" in operation:
                _all_refusals(path, operation)
    _links(doc.get("paths", {}), components)
    app.openapi_schema = doc
    return doc


def _error_schemas() -> dict[str, Any]:
    schema = Error.model_json_schema(ref_template="#/components/schemas/{model}")
    defs = schema.pop("$defs", {})
    return {**defs, "Error": schema}


def _time_zones() -> dict[str, Any]:
    names = []
    for name in sorted(zoneinfo.available_timezones()):
        try:
            times.zone(name)
        except Invalid:
            continue
        names.append(name)
    return {"type": "string", "enum": names, "description": "An IANA time zone name."}


def _refer_to_time_zones(node: Any) -> Any:
    if isinstance(node, list):
        return [_refer_to_time_zones(n) for n in node]
    if not isinstance(node, dict):
        return node
    if node.pop(TIME_ZONE_MARK, False):
        node.pop("type", None)
        node["$ref"] = "#/components/schemas/TimeZone"
    for key, value in node.items():
        node[key] = _refer_to_time_zones(value)
    return node


def _no_null_defaults(schema: dict[str, Any]) -> None:
    """An optional field that may not be null has no default of null to promise."""
    for field in schema.get("properties", {}).values():
        if field.get("default", 0) is None and not _allows_null(field):
            del field["default"]


def _allows_null(schema: dict[str, Any]) -> bool:
    if schema.get("type") == "null":
        return True
    return any(_allows_null(s) for s in schema.get("anyOf", []) + schema.get("oneOf", []))


def install(app: FastAPI) -> None:
    # FastAPI's documented way to replace the document is to assign this method.
    app.openapi = lambda: document(app)  # type: ignore[method-assign]
