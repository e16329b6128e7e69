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
* ``refuse``: the connection is dropped without an answer;
* ``lose``: the request is forwarded and done, then its connection dropped without
  an answer (a connection lost while the server answered: the client cannot know
  whether it acted);
* ``fail``: the request is forwarded and done, then answered ``status`` with
  ``body`` in place of its answer (a gateway's 502 or 504, a server's 500, after the
  server acted);
* ``cut``: the answer is forwarded with its full ``Content-Length`` but only the
  first half of its body, and the connection is dropped there (an answer cut off
  mid-way).

A rule matches a method and a regular expression searched in the path and
query; ``skip`` lets that many matching requests through first, ``times`` limits
how often it applies. ``requests`` records what passed.

Batch requests (Google's ``multipart/mixed`` ``/batch/...``, Graph's JSON
``/$batch``) are looked into: each call in one is matched as a request of its
own (Graph's relative URLs read from ``/v1.0``). An ``answer`` rule that picks a
call answers that call alone — the proxy takes it out of the batch, forwards the
rest, and puts its answer among theirs — so one part of a batch fails (a 412, a
404, a 429 with ``headers={"Retry-After": "1"}`` ...) while the others go
through; a ``hold`` rule that picks a call holds the whole batch. ``parts``
records the calls seen inside batches.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

from crmcal.tls import tls
from tests.served import served_app

Action = Literal["truncate", "hold", "answer", "refuse", "cut", "lose", "fail"]


@dataclass
class Rule:
    action: Action
    method: str | None = None  # any method when None
    path: str = ""  # a regular expression searched in "path?query"
    keep: int = 0  # truncate: items kept
    status: int = 500  # answer, fail: the status, body and content type answered
    body: str = ""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)  # answer: more headers
    times: int | None = None  # how many requests it applies to; None: every one
    skip: int = 0  # matching requests let through before it applies
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
        self.parts: list[tuple[str, str]] = []  # calls inside batch requests
        # The client's address of each request: one per TCP connection it came on.
        self.clients: list[tuple[str, int] | None] = []
        self.arrivals: list[float] = []  # when each request came (time.time())
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
        self.arrivals.append(time.time())
        client = scope.get("client")
        self.clients.append((client[0], client[1]) if client else None)
        rule = next((r for r in self.rules if r.matches(method, target)), None)
        if rule is not None and rule.skip:
            rule.skip -= 1
            rule = None
        elif rule is not None:
            rule.hits += 1
        batch = _Batch.read(method, target, scope, body)
        answered: dict[int, Rule] = {}
        if rule is None and batch is not None:
            for n, call in enumerate(batch.calls):
                self.parts.append(call)
                picked = next((r for r in self.rules if r.action in ("answer", "hold")
                               and r.matches(*call)), None)  # fmt: skip
                if picked is None:
                    continue
                picked.hits += 1
                if picked.action == "answer":
                    answered[n] = picked
                elif rule is None:
                    rule = picked  # holds the whole batch
            if answered:
                left = batch.without(answered)
                if left is None:  # every call answered here: nothing to forward
                    content_type, content = batch.answers(None, b"", answered)
                    await _answer(send, 200, content, content_type)
                    return
                body = left
        if rule is not None and rule.action == "refuse":
            await _drop(send, receive)
            return
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
        # A client a request, as before, but not a TLS context each (about 20 ms of CPU).
        async with httpx.AsyncClient(timeout=60, verify=tls()) as client:
            reply = await client.request(
                method, self.upstream + target, headers=headers, content=body
            )
        if rule is not None and rule.action == "lose":
            await _drop(send, receive)
            return
        if rule is not None and rule.action == "fail":
            await _answer(send, rule.status, rule.body.encode(), rule.content_type)
            return
        content = _links_through(reply, self.upstream, scope)
        if rule is not None and rule.action == "truncate":
            content = _truncated(content, reply.headers.get("content-type", ""), rule.keep)
        if answered and batch is not None and reply.status_code == 200:
            _, content = batch.answers(reply.headers.get("content-type"), content, answered)
        out = [
            (k.encode(), v.encode())
            for k, v in reply.headers.items()
            if k.lower() not in ("content-length", "content-encoding", "transfer-encoding")
        ]
        out.append((b"content-length", str(len(content)).encode()))
        await send({"type": "http.response.start", "status": reply.status_code, "headers": out})
        if rule is not None and rule.action == "cut":
            await send({"type": "http.response.body", "body": content[: len(content) // 2],
                        "more_body": True})  # fmt: skip
            raise Dropped(target)
        await send({"type": "http.response.body", "body": content})


def _links_through(reply: httpx.Response, upstream: str, scope: dict[str, Any]) -> bytes:
    """A JSON answer's links to the server rewritten to this proxy's origin, as a reverse
    proxy in front of a server does (nginx's ``sub_filter``, Apache's
    ``ProxyPassReverse``): Graph's next and delta links name the origin the client
    asked, and crmcal follows no link to another one."""
    content = reply.content
    if "json" not in reply.headers.get("content-type", ""):
        return content
    parts = urlsplit(upstream)
    host, port = scope["server"]
    own = f"{scope.get('scheme', 'http')}://{host}:{port}"
    return content.replace(f"{parts.scheme}://{parts.netloc}".encode(), own.encode())


async def _drop(send: Any, receive: Any) -> None:
    """Close the request's connection before any byte of an answer. An app cannot say
    so in ASGI (an exception before the answer starts is answered 500): the server's
    connection object behind ``send`` (uvicorn's) is closed, and its end awaited."""
    cycle = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    assert transport is not None, "the server does not let a test drop a connection"
    transport.abort()
    while (await receive())["type"] != "http.disconnect":
        pass


async def _answer(send: Any, status: int, body: bytes, content_type: str) -> None:
    headers = [(b"content-type", content_type.encode()), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


_REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
            409: "Conflict", 412: "Precondition Failed", 429: "Too Many Requests",
            500: "Internal Server Error", 503: "Service Unavailable"}  # fmt: skip


@dataclass
class _Batch:
    """A batch request's calls: (method, path and query) each, and how to take some out
    of it and answer them in its reply."""

    kind: Literal["google", "graph"]
    calls: list[tuple[str, str]]
    raw: Any  # Google: (boundary, the parts' bytes); Graph: the parsed body

    @classmethod
    def read(cls, method: str, target: str, scope: dict[str, Any], body: bytes) -> _Batch | None:
        if method != "POST":
            return None
        path = target.split("?", 1)[0]
        if path.startswith("/batch/"):
            headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
            boundary = _boundary(headers.get("content-type", ""))
            if boundary is None:
                return None
            chunks = body.split(b"--" + boundary.encode())[1:]
            parts = [c for c in chunks if not c.startswith(b"--")]
            calls = []
            for part in parts:
                inner = part.replace(b"\r\n", b"\n").split(b"\n\n", 1)[-1]
                request_line = inner.split(b"\n", 1)[0].decode("latin-1").split(" ")
                calls.append((request_line[0].upper(), request_line[1]))
            return cls("google", calls, (boundary, parts))
        if path.endswith("/$batch"):
            data = json.loads(body)
            calls = []
            for request in data.get("requests", []):
                url = str(request.get("url", ""))
                url = url if url.startswith("/v1.0") else "/v1.0/" + url.lstrip("/")
                calls.append((str(request.get("method", "")).upper(), url))
            return cls("graph", calls, data)
        return None

    def without(self, answered: dict[int, Rule]) -> bytes | None:
        """The batch's body without the calls answered here; None when none is left."""
        if len(answered) == len(self.calls):
            return None
        if self.kind == "google":
            boundary, parts = self.raw
            kept = [p for n, p in enumerate(parts) if n not in answered]
            delimiter = b"--" + boundary.encode()
            return b"".join(delimiter + p for p in kept) + delimiter + b"--\r\n"
        requests = [r for n, r in enumerate(self.raw["requests"]) if n not in answered]
        return json.dumps({**self.raw, "requests": requests}).encode()

    def answers(
        self, content_type: str | None, content: bytes, answered: dict[int, Rule]
    ) -> tuple[str, bytes]:
        """The batch's reply (``content``, maybe empty) with the answers given here added."""
        if self.kind == "graph":
            data = json.loads(content) if content else {"responses": []}
            for n, rule in answered.items():
                body: Any = rule.body
                if "json" in rule.content_type and rule.body:
                    body = json.loads(rule.body)
                data["responses"].append({
                    "id": self.raw["requests"][n].get("id"), "status": rule.status,
                    "headers": {"Content-Type": rule.content_type, **rule.headers},
                    "body": body,
                })  # fmt: skip
            return "application/json", json.dumps(data).encode()
        boundary = _boundary(content_type or "") or "proxy_batch"
        delimiter = f"--{boundary}".encode()
        head = content.rsplit(delimiter + b"--", 1)[0] if content else b""
        _, parts = self.raw
        added = []
        for n, rule in answered.items():
            found = re.search(rb"content-id:\s*<([^>]*)>", parts[n], re.I)
            content_id = found.group(1).decode() if found else f"item{n}"
            payload = rule.body.encode()
            inner = [f"HTTP/1.1 {rule.status} {_REASONS.get(rule.status, '')}".rstrip(),
                     f"Content-Type: {rule.content_type}",
                     *(f"{k}: {v}" for k, v in rule.headers.items()),
                     f"Content-Length: {len(payload)}"]  # fmt: skip
            added.append(
                delimiter
                + b"\r\nContent-Type: application/http\r\n"
                + f"Content-ID: <response-{content_id}>\r\n\r\n".encode()
                + "\r\n".join(inner).encode()
                + b"\r\n\r\n"
                + payload
                + b"\r\n"
            )
        reply = head + b"".join(added) + delimiter + b"--\r\n"
        return f"multipart/mixed; boundary={boundary}", reply


def _boundary(content_type: str) -> str | None:
    for piece in content_type.split(";")[1:]:
        key, _, value = piece.strip().partition("=")
        if key.lower() == "boundary" and value:
            return value.strip('"')
    return None


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
def fault_proxy(upstream: str, *, keep_alive: int = 5) -> Iterator[tuple[FaultProxy, str]]:
    """A proxy to ``upstream``, served on a free port, and its URL; ``keep_alive``: how
    long an idle client connection stays open."""
    proxy = FaultProxy(upstream)
    with served_app(proxy, keep_alive=keep_alive) as url:
        try:
            yield proxy, url
        finally:
            proxy.clear()
