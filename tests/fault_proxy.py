"""A fault-injecting HTTP proxy between crmcal and a calendar server, for tests.

It forwards every request to the real server (Radicale, Xandikos, the Google or
Graph emulator) and, for the requests a rule picks, misbehaves the way servers
and middle boxes do in the field:

* ``truncate``: the listing answers with only its first ``keep`` items (CalDAV
  multistatus ``response`` elements; Google ``items``; Graph ``value``), as a
  server that drops items or a proxy that cuts a page does;
* ``hold``: the request waits until the test calls ``release()`` — to act while
  a sync is in the middle of something;
* ``answer``: the request is not forwarded; the proxy answers ``status`` with
  ``body`` (a 403 precondition, a 401, a 500 ...);
* ``refuse``: the connection is dropped without an answer.

A rule matches a method and a regular expression searched in the path and
query; ``times`` limits how often it applies. ``requests`` records what passed.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from tests.served import served_app

Action = Literal["truncate", "hold", "answer", "refuse"]


@dataclass
class Rule:
    action: Action
    method: str | None = None  # any method when None
    path: str = ""  # a regular expression searched in "path?query"
    keep: int = 0  # truncate: items kept
    status: int = 500  # answer: the status, body and content type answered
    body: str = ""
    content_type: str = "application/json"
    times: int | None = None  # how many requests it applies to; None: every one
    hits: int = 0
    released: threading.Event = field(default_factory=threading.Event)

    def matches(self, method: str, target: str) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.method is not None and self.method != method:
            return False
        return re.search(self.path, target) is not None

    def release(self) -> None:
        self.released.set()


class Dropped(Exception):
    """Raised inside the app so that the server closes the connection unanswered."""


class FaultProxy:
    """An ASGI app forwarding to ``upstream`` with the rules in ``rules``."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.rules: list[Rule] = []
        self.requests: list[tuple[str, str]] = []
        self.waiting: list[tuple[str, str]] = []  # held requests, until released

    def add(self, action: Action, **fields: Any) -> Rule:
        rule = Rule(action, **fields)
        self.rules.append(rule)
        return rule

    def clear(self) -> None:
        for rule in self.rules:
            rule.release()
        self.rules = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            while scope["type"] == "lifespan":
                kind = (await receive())["type"]
                await send({"type": f"{kind}.complete"})
                if kind == "lifespan.shutdown":
                    return
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        method = scope["method"]
        query = scope.get("query_string", b"").decode()
        target = scope["raw_path"].decode() + (f"?{query}" if query else "")
        self.requests.append((method, target))
        rule = next((r for r in self.rules if r.matches(method, target)), None)
        if rule is not None:
            rule.hits += 1
        if rule is not None and rule.action == "refuse":
            raise Dropped(target)
        if rule is not None and rule.action == "answer":
            await _answer(send, rule.status, rule.body.encode(), rule.content_type)
            return
        if rule is not None and rule.action == "hold":
            self.waiting.append((method, target))
            await asyncio.to_thread(rule.released.wait)
            self.waiting.remove((method, target))
        headers = [
            (k.decode(), v.decode())
            for k, v in scope["headers"]
            if k.lower() not in (b"host", b"content-length", b"accept-encoding")
        ]
        async with httpx.AsyncClient(timeout=60) as client:
            reply = await client.request(
                method, self.upstream + target, headers=headers, content=body
            )
        content = reply.content
        if rule is not None and rule.action == "truncate":
            content = _truncated(content, reply.headers.get("content-type", ""), rule.keep)
        out = [
            (k.encode(), v.encode())
            for k, v in reply.headers.items()
            if k.lower() not in ("content-length", "content-encoding", "transfer-encoding")
        ]
        out.append((b"content-length", str(len(content)).encode()))
        await send({"type": "http.response.start", "status": reply.status_code, "headers": out})
        await send({"type": "http.response.body", "body": content})


async def _answer(send: Any, status: int, body: bytes, content_type: str) -> None:
    headers = [(b"content-type", content_type.encode()), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


_RESPONSE = re.compile(rb"<(?P<ns>(?:[\w.-]+:)?)response\b.*?</(?P=ns)response>", re.S)
_HREF = re.compile(rb"<(?:[\w.-]+:)?href>([^<]*)<")


def _truncated(content: bytes, content_type: str, keep: int) -> bytes:
    """The listing with only its first ``keep`` items (a collection's own entry stays)."""
    if "json" in content_type:
        data = json.loads(content)
        for name in ("items", "value"):
            if isinstance(data.get(name), list):
                data[name] = data[name][:keep]
        return json.dumps(data).encode()
    kept = 0

    def cut(match: re.Match[bytes]) -> bytes:
        nonlocal kept
        href = _HREF.search(match.group(0))
        if href is not None and href.group(1).endswith(b"/"):
            return match.group(0)  # the collection itself
        if b" 404 " in match.group(0) and b"propstat" not in match.group(0):
            return match.group(0)  # a deleted member, not an item
        kept += 1
        return match.group(0) if kept <= keep else b""

    return _RESPONSE.sub(cut, content)


@contextmanager
def fault_proxy(upstream: str) -> Iterator[tuple[FaultProxy, str]]:
    """A proxy to ``upstream``, served on a free port, and its URL."""
    proxy = FaultProxy(upstream)
    with served_app(proxy) as url:
        try:
            yield proxy, url
        finally:
            proxy.clear()
