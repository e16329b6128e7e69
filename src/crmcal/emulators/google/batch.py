"""Google's batch endpoint for the emulator: ``POST /batch/calendar/v3``, ``multipart/mixed``.

Each part is an ``application/http`` request (request line, headers, body) that
is served as if sent on its own — authenticated, counted, able to fail alone —
and answered as an ``application/http`` part with the same ``Content-ID``
(prefixed ``response-``). At most 1,000 calls per batch, as at Google; the
outer ``Authorization`` header applies to parts that carry none.
"""

from __future__ import annotations

import secrets
from typing import Any

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import Response

from crmcal.emulators.google.calls import state_of
from crmcal.emulators.google.errors import GoogleError, invalid

MAX_CALLS = 1000
_REASONS = {200: "OK", 204: "No Content", 400: "Bad Request", 401: "Unauthorized",
            403: "Forbidden", 404: "Not Found", 409: "Conflict", 410: "Gone",
            412: "Precondition Failed", 429: "Too Many Requests", 500: "Internal Server Error",
            503: "Service Unavailable"}  # fmt: skip


def _boundary(content_type: str) -> str:
    for piece in content_type.split(";")[1:]:
        key, _, value = piece.strip().partition("=")
        if key.lower() == "boundary" and value:
            return value.strip('"')
    raise invalid("A batch request needs a multipart/mixed boundary.")


def _parts(body: bytes, boundary: str) -> list[tuple[dict[str, str], bytes]]:
    """The parts of a multipart body: (headers, content)."""
    delimiter = b"--" + boundary.encode()
    found = []
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break  # the closing delimiter
        chunk = chunk.removeprefix(b"\r\n").removeprefix(b"\n")
        head, _, content = chunk.replace(b"\r\n", b"\n").partition(b"\n\n")
        headers = {}
        for line in head.decode("latin-1").split("\n"):
            name, _, value = line.partition(":")
            if value:
                headers[name.strip().lower()] = value.strip()
        found.append((headers, content.rstrip(b"\n")))
    return found


def _inner_request(content: bytes) -> tuple[str, str, dict[str, str], bytes]:
    head, _, body = content.partition(b"\n\n")
    lines = head.decode("latin-1").split("\n")
    try:
        method, path, *_ = lines[0].split(" ")
    except ValueError:
        raise invalid("A batch part must hold an HTTP request.") from None
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if value:
            headers[name.strip()] = value.strip()
    return method.upper(), path, headers, body


router = APIRouter()


@router.post("/batch/calendar/v3")
async def batch(request: Request) -> Response:
    state_of(request).count("batch")  # the HTTP request; its calls count too
    boundary = _boundary(request.headers.get("content-type", ""))
    parts = _parts(await request.body(), boundary)
    if not parts:
        raise invalid("The batch is empty.")
    if len(parts) > MAX_CALLS:
        raise GoogleError(400, "batchSizeTooLarge", "A batch holds at most 1000 calls.")
    outer_auth = request.headers.get("authorization")
    answer_boundary = "batch_" + secrets.token_hex(12)
    chunks: list[bytes] = []
    transport = httpx.ASGITransport(app=request.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://batch") as inner:
        for headers, content in parts:
            method, path, part_headers, body = _inner_request(content)
            if outer_auth and not any(k.lower() == "authorization" for k in part_headers):
                part_headers["Authorization"] = outer_auth
            if path.startswith("http"):
                path = "/" + path.split("/", 3)[-1]
            response = await inner.request(method, path, headers=part_headers, content=body)
            chunks.append(_answer(headers.get("content-id"), response))
    payload = b"".join(f"--{answer_boundary}\r\n".encode() + c for c in chunks)
    payload += f"--{answer_boundary}--\r\n".encode()
    return Response(payload, media_type=f"multipart/mixed; boundary={answer_boundary}")


def _answer(content_id: str | None, response: httpx.Response) -> bytes:
    part: list[str] = ["Content-Type: application/http"]
    if content_id:
        inner_id = content_id.strip("<>")
        part.append(f"Content-ID: <response-{inner_id}>")
    status = response.status_code
    inner: list[Any] = [f"HTTP/1.1 {status} {_REASONS.get(status, '')}".rstrip()]
    if response.content:
        inner.append(f"Content-Type: {response.headers.get('content-type', 'application/json')}")
    inner.append(f"Content-Length: {len(response.content)}")
    text = "\r\n".join(part) + "\r\n\r\n" + "\r\n".join(inner) + "\r\n\r\n"
    return text.encode() + response.content + b"\r\n"
