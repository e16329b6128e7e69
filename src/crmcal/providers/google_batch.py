"""Google's batch requests on the wire: many API calls in one ``multipart/mixed`` POST.

``encode`` packs calls as ``application/http`` parts, each with a ``Content-ID``;
``decode`` unpacks the answer into one ``httpx.Response`` per call, in the order
the calls were given (Google answers parts in any order, matched by
``response-`` Content-IDs), so callers treat an inner answer like any other.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx

__all__ = ["Call", "decode", "encode"]


@dataclass(frozen=True)
class Call:
    method: str
    path: str  # from the API root, e.g. /calendar/v3/calendars/x/events
    params: dict[str, str] = field(default_factory=dict)
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


def encode(calls: Sequence[Call]) -> tuple[str, bytes]:
    """(content type, body) of a batch request holding ``calls``."""
    boundary = "crmcal_" + secrets.token_hex(12)
    chunks: list[bytes] = []
    for n, call in enumerate(calls):
        target = call.path + (f"?{urlencode(call.params)}" if call.params else "")
        inner = [f"{call.method} {target} HTTP/1.1"]
        inner += [f"{name}: {value}" for name, value in call.headers.items()]
        payload = b""
        if call.body is not None:
            payload = json.dumps(call.body, separators=(",", ":")).encode()
            inner += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
        head = (
            f"--{boundary}\r\nContent-Type: application/http\r\nContent-ID: <item{n}>\r\n\r\n"
            + "\r\n".join(inner)
            + "\r\n\r\n"
        )
        chunks.append(head.encode() + payload + b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return f"multipart/mixed; boundary={boundary}", b"".join(chunks)


def _boundary(content_type: str) -> str | None:
    for piece in content_type.split(";")[1:]:
        key, _, value = piece.strip().partition("=")
        if key.lower() == "boundary" and value:
            return value.strip('"')
    return None


def _headers(block: str) -> dict[str, str]:
    found = {}
    for line in block.split("\n"):
        name, colon, value = line.partition(":")
        if colon:
            found[name.strip().lower()] = value.strip()
    return found


def decode(response: httpx.Response, count: int) -> list[httpx.Response | None]:
    """The inner answers of a batch answer, by call; None where a call got no answer."""
    boundary = _boundary(response.headers.get("content-type", ""))
    answers: list[httpx.Response | None] = [None] * count
    if boundary is None:
        return answers
    for chunk in response.content.split(b"--" + boundary.encode())[1:]:
        if chunk.startswith(b"--"):
            break
        part = chunk.removeprefix(b"\r\n").removeprefix(b"\n")
        outer, _, inner = part.partition(b"\r\n\r\n")
        content_id = _headers(outer.decode("latin-1")).get("content-id", "")
        index = content_id.strip("<>").removeprefix("response-").removeprefix("item")
        if not index.isdigit() or int(index) >= count:
            continue
        head, _, body = inner.partition(b"\r\n\r\n")
        status_line, _, header_block = head.decode("latin-1").partition("\r\n")
        try:
            status = int(status_line.split(" ")[1])
        except (IndexError, ValueError):
            continue
        headers = _headers(header_block.replace("\r\n", "\n"))
        if body.endswith(b"\r\n"):
            body = body[:-2]
        answers[int(index)] = httpx.Response(status, headers=headers, content=body)
    return answers
