"""JSON batching as Graph runs it: ``POST /v1.0/$batch`` with up to 20 requests.

The body is ``{"requests": [{"id", "method", "url", "headers"?, "body"?,
"dependsOn"?}]}`` with ``url`` relative to ``/v1.0`` (``/me/events`` or
``me/events``). Each request is sent through the app again, so it is
authenticated (with the envelope's ``Authorization`` unless it carries its own),
counted under its own kind, able to take an injected fault or delay, and held to
the per-mailbox concurrency limit, exactly as if it had been sent alone; its
own headers (``Prefer``, ``If-Match`` ...) apply to it alone. The answer is
``200 {"responses": [{"id", "status", "headers", "body"}]}`` even when requests
fail: a throttled one is a 429 inside, with ``Retry-After`` among its headers.

Requests run at most four at a time (Graph runs a batch's Outlook requests
concurrently, four per mailbox), in no promised order, except that a request
runs only after the ones its ``dependsOn`` names; when one of those failed, it
is not run and answers 424 (Failed Dependency). Answers are listed in the order
of the requests. A malformed batch (not JSON, more than 20 requests, ids not
unique, a ``dependsOn`` naming no request or making a cycle, a body without a
``Content-Type``) answers 400 as a whole. The envelope counts as kind
``batch`` and takes no injected fault or delay itself: those are for the calls.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from crmcal.emulators.microsoft.calls import bearer, body_of, state_of
from crmcal.emulators.microsoft.errors import GraphError, bad_request

V1 = "/v1.0"
PATH = V1 + "/$batch"
MAX_REQUESTS = 20
PARALLEL = 4
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
# Headers of an inner answer that describe the HTTP exchange, not the answer.
_EXCHANGE = frozenset({"content-length", "transfer-encoding", "connection", "date", "server"})
_SPELLING = {
    "etag": "ETag",
    "www-authenticate": "WWW-Authenticate",
    "odata-version": "OData-Version",
    "request-id": "request-id",
    "client-request-id": "client-request-id",
}


@dataclass
class Inner:
    """One request of a batch, checked."""

    id: str
    method: str
    url: str  # relative to /v1.0, with its query, starting with "/"
    headers: dict[str, str]
    body: bytes | None
    depends_on: list[str] = field(default_factory=list)  # ids as the batch spells them


def invalid(message: str = "Invalid batch payload format.") -> GraphError:
    return bad_request(message)


def _headers(raw: Any, where: str) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise invalid(f"{where}: headers must be an object of strings.")
    return {str(k): v for k, v in raw.items()}


def _body(raw: Any, headers: dict[str, str], where: str) -> bytes | None:
    if raw is None:
        return None
    if not any(k.lower() == "content-type" for k in headers):
        raise invalid(f"{where}: a request with a body needs a Content-Type header.")
    if isinstance(raw, str):  # Graph reads a string body as base64 (binary content)
        try:
            return base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise invalid(f"{where}: a string body must be base64.") from None
    return json.dumps(raw).encode()


def _url(raw: Any, where: str) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise invalid(f"{where}: url is required.")
    url = raw.strip()
    if "://" in url.split("?", 1)[0]:
        raise invalid(f"{where}: the url must be relative to the version, e.g. /me/events.")
    path = "/" + url.lstrip("/")
    segments = path.split("?", 1)[0].split("/")
    if any(segment in ("..", ".") for segment in segments):
        raise invalid(f"{where}: the url must not hold '.' or '..' segments.")
    if "$batch" in segments:
        raise invalid(f"{where}: a batch cannot hold another batch.")
    return path


def read(data: Any) -> list[Inner]:
    """The requests of a batch body, or a 400 for the whole batch saying what is wrong."""
    seen: dict[str, str] = {}  # ids compare case-insensitively, as Graph's do
    found = [_inner(item, f"requests[{n}]", seen) for n, item in enumerate(_requests(data))]
    _resolve_dependencies(found, seen)
    _no_cycles(found)
    return found


def _requests(data: Any) -> list[Any]:
    """The ``requests`` array of a batch body, between one and ``MAX_REQUESTS`` long."""
    if not isinstance(data, dict) or not isinstance(data.get("requests"), list):
        raise invalid()
    raw: list[Any] = data["requests"]
    if not raw:
        raise invalid("The batch holds no requests.")
    if len(raw) > MAX_REQUESTS:
        raise invalid(f"Number of requests in the batch exceeds the limit of {MAX_REQUESTS}.")
    return raw


def _request_id(item: dict[str, Any], where: str, seen: dict[str, str]) -> str:
    """An inner request's id (a number is read as its digits), recorded in ``seen``."""
    request_id = item.get("id")
    if isinstance(request_id, int) and not isinstance(request_id, bool):
        request_id = str(request_id)
    if not isinstance(request_id, str) or not request_id:
        raise invalid(f"{where}: id is required.")
    if request_id.casefold() in seen:
        raise invalid(f"The batch holds more than one request with the id '{request_id}'.")
    seen[request_id.casefold()] = request_id
    return request_id


def _inner(item: Any, where: str, seen: dict[str, str]) -> Inner:
    """One inner request, checked field by field in the order Graph reports them."""
    if not isinstance(item, dict):
        raise invalid()
    request_id = _request_id(item, where, seen)
    method = item.get("method")
    if not isinstance(method, str) or method.upper() not in METHODS:
        raise invalid(f"{where}: method must be one of {', '.join(sorted(METHODS))}.")
    headers = _headers(item.get("headers"), where)
    depends = item.get("dependsOn") or []
    if not isinstance(depends, list) or not all(isinstance(d, str) for d in depends):
        raise invalid(f"{where}: dependsOn must be a list of request ids.")
    return Inner(
        request_id,
        method.upper(),
        _url(item.get("url"), where),
        headers,
        _body(item.get("body"), headers, where),
        depends,
    )


def _resolve_dependencies(found: list[Inner], seen: dict[str, str]) -> None:
    """Each ``dependsOn`` spelled as its request's id is; an unknown id is refused."""
    for inner in found:
        for name in inner.depends_on:
            if name.casefold() not in seen:
                raise invalid(
                    f"Request '{inner.id}' depends on '{name}', which is not in the batch."
                )
        inner.depends_on = [seen[name.casefold()] for name in inner.depends_on]


def _no_cycles(found: list[Inner]) -> None:
    after = {inner.id: inner.depends_on for inner in found}
    done: set[str] = set()

    def visit(request_id: str, path: tuple[str, ...]) -> None:
        if request_id in path:
            raise invalid(f"The dependsOn of request '{request_id}' make a cycle.")
        if request_id in done:
            return
        for name in after[request_id]:
            visit(name, (*path, request_id))
        done.add(request_id)

    for inner in found:
        visit(inner.id, ())


def _spelled(name: str) -> str:
    low = name.lower()
    return _SPELLING.get(low) or "-".join(part.capitalize() for part in low.split("-"))


def answer_of(inner: Inner, response: httpx.Response) -> dict[str, Any]:
    """One entry of ``responses``: the inner answer's status, headers and body."""
    headers = {_spelled(k): v for k, v in response.headers.items() if k.lower() not in _EXCHANGE}
    found: dict[str, Any] = {"id": inner.id, "status": response.status_code, "headers": headers}
    if response.content:
        if "json" in response.headers.get("content-type", ""):
            found["body"] = response.json()
        else:
            found["body"] = base64.b64encode(response.content).decode()
    return found


def failed_dependency(inner: Inner, failed: str, now: dt.datetime) -> dict[str, Any]:
    request_id = str(uuid.uuid4())
    error = GraphError(
        424, "FailedDependency", f"The request depends on request '{failed}', which failed."
    )
    return {
        "id": inner.id,
        "status": 424,
        "headers": {"Content-Type": "application/json"},
        "body": error.body(request_id, request_id, now),
    }


async def run(
    app: Any,
    base_url: str,
    authorization: str | None,
    requests: list[Inner],
    clock: Any,
) -> list[dict[str, Any]]:
    """Serve the requests through ``app``, four at a time and after their dependencies."""
    answers: dict[str, dict[str, Any]] = {}
    finished = {inner.id: asyncio.Event() for inner in requests}
    slots = asyncio.Semaphore(PARALLEL)
    # Not raising the app's exceptions: an unexpected one answers 500 inside, as at Graph.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:

        async def serve(inner: Inner) -> None:
            try:
                for name in inner.depends_on:
                    await finished[name].wait()
                failed = [
                    n for n in inner.depends_on if answers.get(n, {}).get("status", 500) >= 400
                ]
                if failed:
                    answers[inner.id] = failed_dependency(inner, failed[0], clock())
                    return
                headers = dict(inner.headers)
                if authorization and not any(k.lower() == "authorization" for k in headers):
                    headers["Authorization"] = authorization
                async with slots:
                    response = await client.request(
                        inner.method, V1 + inner.url, headers=headers, content=inner.body
                    )
                answers[inner.id] = answer_of(inner, response)
            finally:
                finished[inner.id].set()

        await asyncio.gather(*(serve(inner) for inner in requests))
    return [answers[inner.id] for inner in requests]


async def batch(request: Request) -> Response:
    state = state_of(request)
    state.count("batch")  # the envelope; each request counts under its own kind too
    state.mailbox_for(bearer(request))
    requests = read(await body_of(request))
    base_url = str(request.base_url)
    answers = await run(
        request.app, base_url, request.headers.get("authorization"), requests, state.clock
    )
    return JSONResponse({"responses": answers})


router = APIRouter()
# A plain route, not an API route: the app's dependencies (the injected delay) are
# for the calls a batch makes, not for the envelope.
router.add_route(PATH, batch, methods=["POST"])
