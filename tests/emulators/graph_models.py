"""Microsoft's own Kiota models (msgraph-sdk) as the judge of the Graph emulator's bodies.

Each ``/v1.0`` answer is parsed into the model the SDK would parse it into
(``Event``, ``EventCollectionResponse``, the calendar-view ``DeltaGetResponse``,
``ODataError`` for errors ...). Two checks follow, because Kiota is lenient:

- every ``additional_data`` in the parsed tree holds only OData annotations
  (``@odata.*``, ``@removed``): anything else is a property Graph does not define;
- the model, serialised again with Kiota's ``JsonSerializationWriter``, equals the
  original JSON. Kiota maps an enum member it does not know to ``None`` without a
  word, and drops values of the wrong type; both show up as differences here.

Differences that are not the emulator's are normalised away, each for a reason:
``null`` values (Kiota writes no nulls), ``@odata.type`` where the original has
none (Kiota's models carry their type as a default and write it back), and
timestamps that name the same instant (Kiota keeps microseconds and writes
``+00:00`` where Graph writes seven digits and ``Z``).

``GraphChecked`` wraps an ASGI app and checks every answer it sends, so the same
checker serves the emulator's own tests and anything that drives the emulator.

A ``$batch`` answer has no model of its own in msgraph-sdk (msgraph-core's
``BatchResponseContent`` reads bodies as base64 and does not even import
without an extra package), so its envelope is checked here field by field, and
each inner body with the model its request's method and URL call for.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import types
import warnings
from collections.abc import Callable
from typing import Any

from kiota_abstractions.serialization import Parsable, ParseNode
from kiota_serialization_json.json_parse_node import JsonParseNode
from kiota_serialization_json.json_parse_node_factory import JsonParseNodeFactory
from kiota_serialization_json.json_serialization_writer import JsonSerializationWriter
from msgraph.generated.models.calendar import Calendar
from msgraph.generated.models.calendar_collection_response import CalendarCollectionResponse
from msgraph.generated.models.event import Event
from msgraph.generated.models.event_collection_response import EventCollectionResponse
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.subscription import Subscription
from msgraph.generated.models.subscription_collection_response import (
    SubscriptionCollectionResponse,
)
from msgraph.generated.models.user import User
from msgraph.generated.users.item.calendar_view.delta.delta_get_response import (
    DeltaGetResponse as ViewDelta,
)
from msgraph.generated.users.item.calendars.item.calendar_view.delta.delta_get_response import (
    DeltaGetResponse as CalendarViewDelta,
)
from msgraph.generated.users.item.revoke_sign_in_sessions.revoke_sign_in_sessions_post_response import (  # noqa: E501
    RevokeSignInSessionsPostResponse,
)

_ANNOTATION = re.compile(r"@odata\.\w+|@removed")
_EVENT = re.compile(r"/me(/calendar|/calendars/[^/]+)?/events/[^/]+")
_SUBSCRIPTION = re.compile(r"/subscriptions/[^/]+")
BATCH = "/v1.0/$batch"


def model_for(method: str, path: str, status: int) -> type[Parsable] | None:
    """The Kiota model an answer to ``method path`` parses into (None: no Graph body)."""
    if not path.startswith("/v1.0/"):
        return None
    if status >= 400:
        return ODataError
    if status == 204:
        return None
    rest = path.removeprefix("/v1.0")
    if rest == "/me":
        return User
    if rest == "/me/revokeSignInSessions":
        return RevokeSignInSessionsPostResponse
    if rest == "/me/calendars":
        return CalendarCollectionResponse if method == "GET" else Calendar
    if rest == "/me/calendar" or re.fullmatch(r"/me/calendars/[^/]+", rest):
        return Calendar
    if rest.endswith("/calendarView/delta"):
        return CalendarViewDelta if rest.startswith("/me/calendars/") else ViewDelta
    if rest.endswith(("/calendarView", "/instances")):
        return EventCollectionResponse
    if rest.endswith("/events"):
        return EventCollectionResponse if method == "GET" else Event
    if _EVENT.fullmatch(rest):
        return Event
    if rest == "/subscriptions":
        return SubscriptionCollectionResponse if method == "GET" else Subscription
    if _SUBSCRIPTION.fullmatch(rest):
        return Subscription
    return None


# Each model class's field deserializers as its first object made them: Graph's models
# make them anew for every object they read, and ``Entity``'s part alone runs a thousand
# ``from ... import``s (5 ms an event: most of the CPU these checks took).
_DESERIALIZERS: dict[type[Parsable], dict[str, Callable[[ParseNode], None]]] = {}


def _bound_to(deserializer: Callable[[ParseNode], None], item: Parsable) -> Any:
    """``deserializer`` (a closure over the object it was made for, ``self``) made for
    ``item``: the same code, and the same other cells (the classes it reads into)."""
    code = deserializer.__code__
    cells = tuple(
        types.CellType(item) if name == "self" else cell
        for name, cell in zip(code.co_freevars, deserializer.__closure__ or (), strict=True)
    )
    return types.FunctionType(code, deserializer.__globals__, closure=cells)


class _Node(JsonParseNode):
    """Kiota's JSON parse node, reading a model's fields with the deserializers its
    class made once (``_DESERIALIZERS``): what it reads into the model is the same."""

    def _create_new_node(self, node: Any) -> JsonParseNode:
        new_node = super()._create_new_node(node)
        new_node.__class__ = _Node
        return new_node

    def _assign_field_values(self, item: Parsable) -> None:
        # Kiota's own loop (JsonParseNode._assign_field_values), but for where the
        # deserializers come from.
        if not isinstance(self._json_node, dict):
            return
        extra = getattr(item, "additional_data", None)
        if extra is None:
            extra = {}
        model = type(item)
        if model not in _DESERIALIZERS:
            _DESERIALIZERS[model] = item.get_field_deserializers()
        deserializers = _DESERIALIZERS[model]
        for name, value in self._json_node.items():
            if name in deserializers:
                if value is not None:
                    _bound_to(deserializers[name], item)(self._create_new_node(value))
            elif extra is not None:
                extra[name] = self.try_get_anything(value)
            else:  # pragma: no cover - as Kiota: every Graph model keeps additional data
                warnings.warn(f"{name}: no additional data to keep it in", stacklevel=1)


def parse(model: type[Parsable], raw: bytes) -> Any:
    node = JsonParseNodeFactory().get_root_parse_node("application/json", raw)
    node.__class__ = _Node
    # Each model class is a ParsableFactory of itself (a static
    # ``create_from_discriminator_value``), which ``type[Parsable]`` cannot say.
    return node.get_object_value(model)  # type: ignore[arg-type]


def parse_as_kiota(model: type[Parsable], raw: bytes) -> Any:
    """``parse`` with Kiota's own parse node throughout (``_Node`` is checked against it)."""
    node = JsonParseNodeFactory().get_root_parse_node("application/json", raw)
    return node.get_object_value(model)  # type: ignore[arg-type]


def serialise(value: Parsable) -> Any:
    writer = JsonSerializationWriter()
    writer.write_object_value(None, value)
    return json.loads(writer.get_serialized_content())


def _foreign_keys(value: Any, where: str, found: list[str]) -> None:
    """Keys of ``additional_data`` anywhere in a parsed tree that are not annotations."""
    if isinstance(value, list):
        for n, item in enumerate(value):
            _foreign_keys(item, f"{where}[{n}]", found)
        return
    if not isinstance(value, Parsable):
        return
    extra = getattr(value, "additional_data", None) or {}
    found += [f"{where}.{key}" for key in extra if not _ANNOTATION.fullmatch(key)]
    for name, child in vars(value).items():
        if name not in ("additional_data", "backing_store"):
            _foreign_keys(child, f"{where}.{name}", found)


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _instant(text: str) -> dt.datetime | None:
    if not re.match(r"\d{4}-\d{2}-\d{2}T", text):
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))  # 7 digits: cut to 6
    except ValueError:
        return None


def _differences(original: Any, again: Any, where: str, found: list[str]) -> None:
    if isinstance(original, dict) and isinstance(again, dict):
        if "@odata.type" not in original:
            again = {k: v for k, v in again.items() if k != "@odata.type"}
        for key in sorted(set(original) | set(again)):
            if key not in again:
                found.append(f"{where}.{key}: {original[key]!r} is lost by the model")
            elif key not in original:
                found.append(f"{where}.{key}: the model adds {again[key]!r}")
            else:
                _differences(original[key], again[key], f"{where}.{key}", found)
        return
    if isinstance(original, list) and isinstance(again, list):
        if len(original) != len(again):
            found.append(f"{where}: {len(original)} items became {len(again)}")
        for n, (a, b) in enumerate(zip(original, again, strict=False)):
            _differences(a, b, f"{where}[{n}]", found)
        return
    if original == again:
        return
    if isinstance(original, str) and isinstance(again, str):
        first, second = _instant(original), _instant(again)
        if first is not None and second is not None and first == second:
            return
    found.append(f"{where}: {original!r} became {again!r}")


def problems(model: type[Parsable], raw: bytes) -> list[str]:
    """Why ``raw`` is not a body Graph would send as ``model`` (empty: it is)."""
    try:
        original = json.loads(raw)
    except ValueError:
        return ["the body is not JSON"]
    parsed = parse(model, raw)
    found: list[str] = []
    _foreign_keys(parsed, model.__name__, found)
    found = [f"{key}: not a property of Graph's model" for key in found]
    _differences(_without_nulls(original), serialise(parsed), model.__name__, found)
    return found


def check(model: type[Parsable], raw: bytes | str | dict[str, Any]) -> Any:
    """The parsed model of a body Graph could have sent, else an AssertionError saying why."""
    if isinstance(raw, dict):
        raw = json.dumps(raw)
    data = raw.encode() if isinstance(raw, str) else raw
    found = problems(model, data)
    assert not found, "\n".join(found[:15])
    return parse(model, data)


def batch_problems(request: bytes, answer: bytes) -> list[str]:
    """Why ``answer`` is not how Graph answers the ``$batch`` request ``request``: the
    envelope's shape, and each inner body against the model of its request."""
    try:
        sent, got = json.loads(request), json.loads(answer)
    except ValueError:
        return ["the batch or its answer is not JSON"]
    inner = {str(r.get("id")): r for r in sent.get("requests", []) if isinstance(r, dict)}
    if not isinstance(got, dict) or set(got) != {"responses"}:
        return ["the answer must be an object with only 'responses'"]
    found: list[str] = []
    seen: list[str] = []
    for n, item in enumerate(got["responses"]):
        where = f"responses[{n}]"
        if not isinstance(item, dict) or not set(item) <= {"id", "status", "headers", "body"}:
            found.append(f"{where}: holds more than id, status, headers and body")
            continue
        request_id, status, headers = item.get("id"), item.get("status"), item.get("headers")
        if not isinstance(request_id, str) or request_id not in inner:
            found.append(f"{where}: id {request_id!r} is no request's")
            continue
        seen.append(request_id)
        if not isinstance(status, int) or isinstance(status, bool):
            found.append(f"{where}: status {status!r} is not an integer")
            continue
        if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
            found.append(f"{where}: headers must be an object of strings")
        if "body" not in item:
            continue
        url = "/" + str(inner[request_id].get("url", "")).lstrip("/")
        path = "/v1.0" + url.split("?", 1)[0]
        model = model_for(str(inner[request_id].get("method", "GET")).upper(), path, status)
        if model is not None:
            body = json.dumps(item["body"]).encode()
            found += [f"{where} ({request_id}): {p}" for p in problems(model, body)]
    if sorted(seen) != sorted(inner):
        found.append(f"answered {sorted(seen)} for requests {sorted(inner)}")
    return found


class GraphChecked:
    """ASGI wrapper: every ``/v1.0`` answer is checked with Graph's models; what does not
    match is recorded in ``problems`` as ``"METHOD path status: why"``."""

    def __init__(self, app: Any, found: list[str] | None = None) -> None:
        self.app = app
        self.problems: list[str] = found if found is not None else []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1.0/"):
            await self.app(scope, receive, send)
            return
        status, answer, request = 0, b"", b""

        async def received() -> Any:
            nonlocal request
            message = await receive()
            if message["type"] == "http.request":
                request += message.get("body", b"")
            return message

        async def capture(message: Any) -> None:
            nonlocal status, answer
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                answer += message.get("body", b"")
            await send(message)

        await self.app(scope, received, capture)
        where = f"{scope['method']} {scope['path']} {status}"
        if scope["path"] == BATCH and scope["method"] == "POST" and status == 200:
            self.problems += [f"{where}: {p}" for p in batch_problems(request, answer)]
            return
        model = model_for(scope["method"], scope["path"], status)
        if model is not None and answer:
            for problem in problems(model, answer):
                self.problems.append(f"{where}: {problem}")
