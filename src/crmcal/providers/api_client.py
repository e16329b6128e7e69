"""Calling a cloud calendar API over httpx: what Google's and Microsoft's providers share.

Each call carries a bearer token from the provider's token source; a 401 gets
one fresh token, a second 401 means the grant is gone (``AuthenticationFailed``:
reconnect). Answers the provider calls retryable (rate limits, overload, server
errors) and transport failures are tried again with truncated exponential
backoff and jitter — never sooner than a ``Retry-After`` the service sends —
then reported as ``Unreachable``. An optional limit keeps the calls in flight
at once under what the service allows per account; a ``SharedLimit`` does the
same across processes, and passes a throttling answer on to all of them. Answers are read the same
way too: JSON or ``NotACalendarServer``, and failures as errors that name what
was being done. An answer longer than ``html_text.OFF_LOOP_ABOVE`` (a description of
a mebibyte that anyone who invites the user can send) is read in a thread before it
is handed over: its JSON, and the text of the long descriptions in it, which the
codecs then find made (``html_text.ReadAhead``), so the event loop never spends a
tenth of a second on one answer. Those texts are the client's, held until it closes
at the end of its sync.

The HTTP clients are shared: one per service host and event loop, kept between
syncs (``shared_client``), so that a worker's syncs reuse their TCP and TLS
connections instead of opening new ones each time; ``close_shared`` closes them
when the process stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

import httpx

from crmcal import metrics
from crmcal.model import RemoteRef
from crmcal.providers import html_text
from crmcal.providers.base import (
    AnswerLost,
    AuthenticationFailed,
    CalendarNotFound,
    EventNotFound,
    ItemRefused,
    NotACalendarServer,
    PreconditionFailed,
    ProviderError,
    Unreachable,
)
from crmcal.providers.kept_http import ONCE, AnswerTooLarge, KeptTransport
from crmcal.tls import tls

# Answers a current access token; ``refresh=True`` after the API refused the last one.
TokenSource = Callable[..., Awaitable[str]]


class SharedLimit(Protocol):
    """The account's limits as every process that calls the service keeps them."""

    def slot(self, cost: int = 1, width: int = 1) -> contextlib.AbstractAsyncContextManager[None]:
        """Held while one request is in flight; ``cost``: the calls it carries (a batch
        request's parts), each counted against the service's quotas; ``width``: how
        many of them the service runs at once, each held to its concurrency limit."""
        ...

    async def throttled(self, seconds: float) -> None:
        """The service asked the account to wait this long before its next request."""
        ...


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """How an ``ApiClient`` calls its service, whichever service it is: made once by
    the provider from its own arguments, so that a new setting is added here and read
    in ``ApiClient`` alone. ``timeout``: seconds per request; ``retries``: tries after
    the first; ``backoff``: the first retry's delay in seconds, doubled each time;
    ``transport``: one of its own (tests), which means a client of its own instead of
    the shared one; ``shared``: the account's limits across processes."""

    timeout: float = 30
    retries: int = 5
    backoff: float = 0.5
    transport: httpx.AsyncBaseTransport | None = None
    shared: SharedLimit | None = None


MAX_DELAY = 32.0
# The longest ``Retry-After`` a call waits for before its next try: a service (or a
# proxy in front of it) that asks for a day or a year holds no sync that long; the
# tries still run out, and the sync is tried again later.
MAX_RETRY_AFTER = 120.0
# Answers to one event's write that refuse it for good (what was sent, or that event):
# sending it again gets the same answer.
REFUSALS = frozenset((400, 403, 422))
# Transport failures that show the request never left: nothing was made by it.
_NOTHING_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)

Part = TypeVar("Part")
# Sends some parts in one batch request: one inner answer per part, in their order
# (None where the service answered nothing for it).
SendBatch = Callable[[list[Part]], Awaitable[list[httpx.Response | None]]]


# The HTTP clients kept between syncs, by (event loop, service origin, timeout): a
# client's connections belong to the loop that opened them. Bounded: the oldest
# goes when more are kept (a process talks to a handful of hosts).
_CLIENTS: OrderedDict[tuple[int, str, float], tuple[asyncio.AbstractEventLoop, httpx.AsyncClient]]
_CLIENTS = OrderedDict()
CLIENTS_KEPT = 32
# Per host and process: enough for every sync a worker runs at once to have its
# requests in flight (the per-account limits keep each account far below it).
POOL_LIMITS = httpx.Limits(max_connections=256, max_keepalive_connections=64, keepalive_expiry=60)


class _Cookies(httpx.Cookies):
    """httpx's cookie store, reading an answer's cookies only when it sets some. httpx
    reads every answer's into the client's store (a urllib request and an email message
    of its headers made each time: 16 µs an answer); the shared clients' transport drops
    ``Set-Cookie`` (``kept_http``), so there they never find one."""

    def extract_cookies(self, response: httpx.Response) -> None:
        if "set-cookie" in response.headers:
            super().extract_cookies(response)


class _SharedClient(httpx.AsyncClient):
    """An ``httpx.AsyncClient`` whose cookie store is ``_Cookies``."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._kept_cookies = _Cookies()

    @property
    def cookies(self) -> httpx.Cookies:
        return self._kept_cookies

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        self._kept_cookies = _Cookies(cookies)


def shared_client(base_url: str, timeout: float) -> httpx.AsyncClient | None:
    """The HTTP client this event loop keeps for ``base_url``'s host (made at first
    use); None outside an event loop."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    parts = urlsplit(base_url)
    key = (id(loop), f"{parts.scheme}://{parts.netloc}".lower(), timeout)
    found = _CLIENTS.pop(key, None)
    if found is None or found[0] is not loop or found[1].is_closed:
        # Connections kept on asyncio's own callbacks (``kept_http``); a proxy named in
        # the environment still gets httpx's own transport, as before.
        client = _SharedClient(timeout=timeout, verify=tls(), limits=POOL_LIMITS,
                               transport=KeptTransport(tls(), POOL_LIMITS))  # fmt: skip
        found = (loop, client)
    _CLIENTS[key] = found
    while len(_CLIENTS) > CLIENTS_KEPT:
        # Not closed: a sync may still use it; its connections go with the last user.
        _CLIENTS.popitem(last=False)
    for stale in [k for k, (owner, _) in _CLIENTS.items() if owner.is_closed()]:
        del _CLIENTS[stale]  # its loop is gone, and its connections with it
    return found[1]


async def close_shared() -> None:
    """Close the HTTP clients this event loop keeps (when the process stops)."""
    loop = asyncio.get_running_loop()
    for key, (owner, client) in list(_CLIENTS.items()):
        if owner is loop:
            del _CLIENTS[key]
            await client.aclose()


def _with_query(url: str, params: dict[str, Any] | None) -> tuple[str, dict[str, Any] | None]:
    """``url`` with ``params`` written into its query as httpx writes them, and no params
    left: httpx checks a URL character by character each time it parses one (some 800
    steps of a generator for a listing's), and a request given params had its URL parsed
    once more for them. Unchanged when the URL has a query of its own (httpx merges the
    two) or the params write none."""
    if not params or "?" in url:
        return url, params
    query = str(httpx.QueryParams(params))
    return (f"{url}?{query}", None) if query else (url, params)


class ApiClient:
    """Calls to one service for one account: ``owner`` names who grants access
    (Google, Microsoft), ``service`` the API in messages (Google Calendar ...),
    ``product`` what users call it (Microsoft 365); ``reason`` reads the service's
    error code from an answer; ``concurrency`` and ``headers`` are the service's own
    (its limit of calls in flight per account, what every request carries);
    ``settings`` how it is called (``ClientSettings``)."""

    def __init__(
        self,
        tokens: TokenSource,
        *,
        base_url: str,
        owner: str,
        service: str,
        product: str | None = None,
        reason: Callable[[httpx.Response], str],
        retryable: Callable[[httpx.Response], bool],
        concurrency: int | None = None,
        headers: dict[str, str] | None = None,
        settings: ClientSettings,
    ) -> None:
        self._tokens = tokens
        self._shared = settings.shared
        self.base_url = base_url.rstrip("/")
        self._owner = owner
        self._service = service
        self._product = product or service
        self._reason = reason
        self._retryable = retryable
        # A transport of its own (tests) means a client of its own; else the shared one.
        transport = settings.transport
        shared_http = None if transport is not None else shared_client(base_url, settings.timeout)
        self._owns_client = shared_http is None
        self._client = shared_http or httpx.AsyncClient(
            timeout=settings.timeout, transport=transport, verify=tls()
        )
        self.retries = settings.retries
        self._backoff = settings.backoff
        self._limit = asyncio.Semaphore(concurrency) if concurrency else None
        self._concurrency = concurrency
        # Taken by a request that needs several units of ``_limit`` while it takes them,
        # so two such requests never each hold some and wait for the rest.
        self._widening = asyncio.Lock()
        self._headers = headers or {}
        # The long descriptions' texts this client's answers brought, for this sync.
        self._texts = html_text.ReadAhead()

    @contextlib.asynccontextmanager
    async def _slot(self, cost: int, width: int = 1) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            if self._limit is not None:
                units = max(1, min(width, self._concurrency or 1))
                if units == 1:
                    await stack.enter_async_context(self._limit)
                else:
                    async with self._widening:
                        for _ in range(units):
                            await stack.enter_async_context(self._limit)
            if self._shared is not None:
                await stack.enter_async_context(self._shared.slot(cost, width))
            yield

    async def send(
        self,
        method: str,
        url: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        cost: int = 1,
        width: int = 1,
        extensions: dict[str, Any] | None = None,
    ) -> httpx.Response:
        """One API call, retried as the module says; any other answer is returned.
        ``cost``: the calls it carries (a batch request's parts), for the quotas;
        ``width``: how many of them the service runs at once (see ``SharedLimit``);
        ``extensions``: what the request's sender knows of repeating it (see
        ``kept_http``). ``REPEATABLE``: a POST the service makes idempotent (a create
        with a client-chosen id or transaction id), which the transport sends again at
        once when a kept connection drops it unanswered. ``ONCE``: a POST that makes
        what the service cannot tell from a second one (a Graph subscription): a
        transport failure after it may have reached the service is not sent again but
        raised as ``AnswerLost``, so that the caller can look for what it made (only a
        failure to connect, which sent nothing, is retried); so is a 5xx answer to it,
        which the service (or a gateway in front of it) may give after acting, where a
        throttled one (403, 429) is retried as any other."""
        once = extensions is not None and extensions.get(ONCE) is True
        url, params = _with_query(url, params)
        refreshed = False
        for attempt in range(self.retries + 1):
            token = await self._tokens(refresh=refreshed)
            sent = {"Authorization": f"Bearer {token}", **self._headers, **(headers or {})}
            if attempt:
                metrics.PROVIDER_RETRIES.labels(self._service).inc()
            try:
                async with self._slot(cost, width):
                    response = await self._client.request(
                        method, url, params=params, json=json, content=content, headers=sent,
                        extensions=extensions,
                    )  # fmt: skip
            except httpx.TransportError as failure:
                metrics.request_done(self._service, None)
                self._check_failure(failure, once=once, last=attempt == self.retries)
                await self.sleep(attempt)
                continue
            metrics.request_done(self._service, response.status_code)
            if response.status_code == 401 and not refreshed:
                refreshed = True
                continue
            if response.status_code == 401:
                raise AuthenticationFailed(f"{self._owner} refused the access: reconnect required")
            if self._retryable(response):
                await self._check_refusal(response, once=once, last=attempt == self.retries)
                await self.sleep(attempt, response.headers.get("Retry-After"))
                continue
            await read_ahead([response], self._texts)
            return response
        raise Unreachable(f"{self._service} did not answer")  # pragma: no cover

    def _check_failure(self, failure: httpx.TransportError, *, once: bool, last: bool) -> None:
        """Raise what a call's transport failure means unless it is tried again:
        ``AnswerLost`` for a ``ONCE`` call that may have reached the service,
        ``Unreachable`` after the ``last`` try, or at once for an answer over the
        transport's size bound."""
        if once and not isinstance(failure, _NOTHING_SENT):
            raise AnswerLost(
                f"{self._service} may have acted on a request whose answer was lost: {failure}"
            ) from None
        if isinstance(failure, AnswerTooLarge):
            # The same request gets the same answer: reading it again costs as much.
            raise Unreachable(f"{self._service} answered too much: {failure}") from None
        if last:
            raise Unreachable(f"cannot reach {self._service}: {failure}") from None

    async def _check_refusal(self, response: httpx.Response, *, once: bool, last: bool) -> None:
        """Take in a retryable answer (throttling, overload), and raise what it means
        unless the call is tried again: ``AnswerLost`` for a 5xx to a ``ONCE`` call,
        ``Unreachable`` after the ``last`` try. A throttling answer slows down every
        process that calls the service for this account, not only this call."""
        status = response.status_code
        if once and status >= 500:
            raise AnswerLost(f"{self._service} may have acted on a request it answered {status}")
        if status in (403, 429):
            metrics.PROVIDER_THROTTLED.labels(self._service).inc()
            if self._shared is not None:
                await self._shared.throttled(_seconds(response.headers.get("Retry-After")))
        if last:
            raise Unreachable(f"{self._service} is busy or failing ({status}); retry later")

    async def send_parts(
        self, parts: Sequence[Part], send: SendBatch[Part], *, size: int
    ) -> list[httpx.Response | ProviderError]:
        """Every part's inner answer, the parts sent in batch requests of ``size``
        (``send`` makes one). A part refused as the service's ``retryable`` says
        (throttled, overloaded) goes again, with the others that were, in a later
        batch after the backoff (at least the longest ``Retry-After`` among them);
        while some parts get through the rest keep trying, and after ``retries``
        rounds in which none did, those left answer ``Unreachable``. Any other
        answer is the part's own to read: one part's failure fails no other."""
        results: list[httpx.Response | ProviderError] = [Unreachable("no answer")] * len(parts)
        for first in range(0, len(parts), size):
            batch = list(range(first, min(first + size, len(parts))))
            await self._send_batch(parts, batch, send, results)
        await read_ahead([r for r in results if isinstance(r, httpx.Response)], self._texts)
        return results

    async def _send_batch(
        self,
        parts: Sequence[Part],
        pending: list[int],
        send: SendBatch[Part],
        results: list[httpx.Response | ProviderError],
    ) -> None:
        """The parts numbered ``pending`` sent in rounds of one batch request, each
        part's answer put in ``results``: the parts to try again go in the next round,
        after the backoff, until none is left or ``retries`` rounds got none through."""
        stalled = 0  # rounds in which nothing got through: what the retries limit
        while pending:
            answers = await send([parts[n] for n in pending])
            retry, wait, throttled = self._read_round(pending, answers, results)
            if not retry:
                return
            if throttled and self._shared is not None:
                # Every process slows down for this account, not only this batch.
                await self._shared.throttled(wait if wait is not None else 1.0)
            if len(retry) == len(pending):
                if stalled == self.retries:
                    for n in retry:
                        results[n] = Unreachable(f"{self._service} is busy or failing; retry later")
                    return
                stalled += 1
            metrics.PROVIDER_RETRIES.labels(self._service).inc(len(retry))
            await self.sleep(stalled, None if wait is None else str(int(wait)))
            pending = retry

    def _read_round(
        self,
        pending: list[int],
        answers: list[httpx.Response | None],
        results: list[httpx.Response | ProviderError],
    ) -> tuple[list[int], float | None, bool]:
        """One round's answers to the parts numbered ``pending``: each part's own put in
        ``results``. Answers the parts to try again (no answer, or one the service's
        ``retryable`` says), the longest ``Retry-After`` among them (None: none said),
        and whether the service throttled any. A part refused with 401 while the
        envelope's token went through: the grant no longer covers the calendar."""
        retry: list[int] = []
        wait: float | None = None
        throttled = False
        for n, answer in zip(pending, answers, strict=True):
            if answer is None or self._retryable(answer):
                retry.append(n)
                if answer is not None and answer.status_code in (403, 429):
                    throttled = True
                    metrics.PROVIDER_THROTTLED.labels(self._service).inc()
                later = _retry_after(answer.headers.get("Retry-After") if answer else None)
                if later is not None:
                    wait = max(wait or 0.0, later)
            elif answer.status_code == 401:
                raise AuthenticationFailed(f"{self._owner} refused the access: reconnect required")
            else:
                results[n] = answer
        return retry, wait, throttled

    async def sleep(self, attempt: int, retry_after: str | None = None) -> None:
        """Wait before try ``attempt + 1``: doubling, with jitter, at least ``Retry-After``."""
        delay = min(self._backoff * (2**attempt), MAX_DELAY) * random.uniform(0.5, 1.0)
        await asyncio.sleep(max(delay, _retry_after(retry_after) or 0.0))

    def json(self, response: httpx.Response) -> Any:
        """An answer's JSON; one that is no JSON (or nested past what the parser takes)
        comes from some other server."""
        read = response.extensions.pop(_READ, _NOT_READ)
        if read is not _NOT_READ:
            return read
        try:
            return response.json()
        except (ValueError, RecursionError):  # deep nesting: RecursionError
            raise self.not_the_service(response) from None

    def not_the_service(self, response: httpx.Response) -> ProviderError:
        kind = response.headers.get("content-type", "no content type")
        return NotACalendarServer(
            f"{self.base_url} does not answer as {self._service} ({response.status_code} {kind})"
        )

    def failure(self, response: httpx.Response, what: str, *, write: bool = False) -> ProviderError:
        """The error an unexpected answer means, naming ``what`` was being done.

        ``write``: the answer to writing one event, where a 400, 403 or 422 refuses that
        write for good (``ItemRefused``; throttling 403s never come here, they are tried
        again before): the same write would get the same answer."""
        if "json" not in response.headers.get("content-type", ""):
            return self.not_the_service(response)
        reason = self._reason(response)
        status = f"{response.status_code} {reason}".rstrip()
        if response.status_code == 404:
            return CalendarNotFound(f"{what}: not found in {self._product} ({status})")
        refused = ItemRefused if write and response.status_code in REFUSALS else ProviderError
        if response.status_code == 403:
            return refused(f"{self._product} does not allow {what} ({status})")
        return refused(f"{self._service} answered {status} to {what}")

    def deleted(
        self, response: httpx.Response, event_id: str, etag: str | None
    ) -> ProviderError | None:
        """What the answer to deleting ``event_id`` means: None when it is gone (an
        event already gone is gone too), else the error."""
        if response.status_code in (200, 204, 404, 410):
            return None
        if response.status_code == 412:
            return PreconditionFailed(f"the event {event_id} changed since {etag}")
        return self.failure(response, "deleting an event", write=True)

    def deletions(
        self,
        items: Sequence[tuple[str, str | None]],
        answers: Sequence[httpx.Response | ProviderError],
    ) -> list[ProviderError | None]:
        """``deleted`` for each (event id, version) and its batch answer, in order."""
        return [
            answer if isinstance(answer, ProviderError) else self.deleted(answer, *item)
            for item, answer in zip(items, answers, strict=True)
        ]

    def refused_update(
        self, response: httpx.Response, event_id: str, etag: str
    ) -> ProviderError | None:
        """The error the answer to updating ``event_id`` means, None when it is written."""
        if response.status_code == 412:
            return PreconditionFailed(f"the event {event_id} changed since {etag}")
        if response.status_code in (404, 410):
            return EventNotFound(f"the event {event_id} does not exist")
        if response.status_code != 200:
            return self.failure(response, "updating an event", write=True)
        return None

    async def close(self) -> None:
        self._texts.close()  # the sync is over: no text read for it stays
        if self._owns_client:
            await self._client.aclose()  # a shared client stays for the next sync


# Where a response read ahead keeps its JSON, for ``json`` to hand over once.
_READ = "crmcal.read_ahead"
_NOT_READ = object()


async def read_ahead(answers: Sequence[httpx.Response], texts: html_text.ReadAhead) -> None:
    """Read the long ones among ``answers`` in a thread: their JSON, and the text of
    the long strings in it, held by ``texts``."""
    long = [a for a in answers if len(a.content) > html_text.OFF_LOOP_ABOVE]
    if long:
        await asyncio.to_thread(_read_now, long, texts)


def _read_now(answers: Sequence[httpx.Response], texts: html_text.ReadAhead) -> None:
    for answer in answers:
        try:
            data = answer.json()
        except (ValueError, RecursionError):
            continue  # no JSON: ``json`` says so where it is asked for
        answer.extensions[_READ] = data
        texts.read(_long_strings(data))


def _long_strings(data: Any) -> list[str]:
    """The strings in decoded JSON long enough to be read ahead, wherever they are."""
    found: list[str] = []
    pending = [data]
    while pending:
        value = pending.pop()
        if isinstance(value, dict):
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
        elif isinstance(value, str) and len(value) > html_text.OFF_LOOP_ABOVE:
            found.append(value)
    return found


def _seconds(retry_after: str | None) -> float:
    """A ``Retry-After`` in seconds (a date, or none, counts as one second)."""
    seconds = _retry_after(retry_after)
    return 1.0 if seconds is None else seconds


def _retry_after(value: str | None) -> float | None:
    """A ``Retry-After`` in seconds, at most ``MAX_RETRY_AFTER``; None for none, a date
    or anything else than a count of seconds (negative, fractional, garbage)."""
    text = (value or "").strip()
    if not text.isascii() or not text.isdigit():
        return None
    return min(float(text[:12]), MAX_RETRY_AFTER)


def next_in_listing(data: Any, key: str, seen: set[str], looping: str) -> str | None:
    """The page after ``data`` as its ``key`` names it (a Google page token, a Graph
    next link; None at the end), remembered in ``seen``: one already followed in this
    listing leads back to a page already read, so it is an error (``looping``), not a
    loop."""
    following = data.get(key) if isinstance(data, dict) else None
    if not following:
        return None
    if not isinstance(following, str) or following in seen:
        raise NotACalendarServer(looping)
    seen.add(following)
    return following


# The ids either service gives its events are a few hundred characters at most.
MAX_ITEM_ID = 1024


def item_id(item: Any, field: str = "id") -> str | None:
    """A listed or read item's id (or the id in its ``field``); None when it has none
    that could be the service's (not an object, no id, an id that is no short string):
    such an item cannot be told apart from any other, nor read again."""
    if not isinstance(item, dict):
        return None
    found = item.get(field)
    if not isinstance(found, str) or not found or len(found) > MAX_ITEM_ID:
        return None
    return found


def nameless(item: Any, service: str) -> RemoteRef:
    """The report of an item without an id (``item_id``): unreadable, under no id."""
    what = "an item" if not isinstance(item, dict) else "an event"
    return RemoteRef("", "", error=f"unreadable event: {service} listed {what} without an id")


def unreadable(failure: Exception) -> str:
    """Why one item could not be read: its parse failure's message, bounded (it may
    quote the garbage)."""
    text = str(failure) or type(failure).__name__
    return "unreadable event: " + (text if len(text) <= 300 else text[:300] + "…")
