"""JSON Schemas for the Calendar v3 resources, made from Google's own discovery document.

The document ships inside google-api-python-client. Every property Google does
not define is refused (``additionalProperties: false``), and int64 fields are
strings, as on the wire.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import googleapiclient
from jsonschema import Draft202012Validator

DISCOVERY = Path(googleapiclient.__file__).parent / "discovery_cache/documents/calendar.v3.json"


@functools.cache
def discovery() -> dict[str, Any]:
    return json.loads(DISCOVERY.read_text())


def _convert(node: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        return {"$ref": f"#/$defs/{node['$ref']}"}
    kind = node.get("type")
    if kind == "object":
        out: dict[str, Any] = {"type": "object"}
        if "properties" in node:
            out["properties"] = {k: _convert(v) for k, v in node["properties"].items()}
        extra = node.get("additionalProperties")
        out["additionalProperties"] = _convert(extra) if isinstance(extra, dict) else False
        return out
    if kind == "array":
        return {"type": "array", "items": _convert(node.get("items", {}))}
    if kind == "string":
        return {"type": "string", **({"enum": node["enum"]} if "enum" in node else {})}
    if kind == "integer":
        return {"type": "string"} if node.get("format") in ("int64", "uint64") else {
            "type": "integer"
        }  # fmt: skip
    if kind in ("boolean", "number"):
        return {"type": kind}
    return {}  # "any"


@functools.cache
def validator(name: str) -> Draft202012Validator:
    defs = {key: _convert(schema) for key, schema in discovery()["schemas"].items()}
    return Draft202012Validator({"$defs": defs, "$ref": f"#/$defs/{name}"})


def check(name: str, body: Any) -> Any:
    """``body`` if it is a valid ``name`` (e.g. "Event"), else an AssertionError listing why."""
    problems = sorted(validator(name).iter_errors(body), key=lambda e: list(e.path))
    assert not problems, "\n".join(f"{list(p.path)}: {p.message}" for p in problems[:10])
    return body
