"""Microsoft Graph on the wire for one mailbox: the headers every request carries, the
paths of a calendar's events, paged collections and ``$batch`` requests.

A link Graph answers (``@odata.nextLink``, ``@odata.deltaLink``) is followed only on
Graph's own origin: the bearer token goes nowhere else, whatever an answer names; and
a walk through a collection that is led back to a page it read stops with an error
instead of reading it for ever.

Every request says ``Prefer: IdType="ImmutableId"`` (an event keeps its id when it
moves between calendars), ``outlook.timezone="UTC"`` and
``outlook.body-content-type="text"``; at most ``CONCURRENCY`` requests run at once per
mailbox, as Outlook allows; 429 and 5xx are retried, honouring ``Retry-After``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from crmcal.providers.api_client import ApiClient, ClientSettings, TokenSource, next_in_listing
from crmcal.providers.base import NotACalendarServer, ProviderError
from crmcal.providers.kept_http import REPEATABLE

__all__ = ["BATCH_SIZE", "CONCURRENCY", "PREFER", "Graph", "code", "iso", "read"]

CONCURRENCY = 4
BATCH_SIZE = 20
PREFER = 'IdType="ImmutableId", outlook.timezone="UTC", outlook.body-content-type="text"'
_RETRY = (429, 500, 502, 503, 504)


class Graph:
    """One mailbox's requests to Graph, through an ``ApiClient`` (``api``)."""

    def __init__(
        self,
        tokens: TokenSource,
        *,
        api_url: str,
        settings: ClientSettings,
    ) -> None:
        self.base = api_url.rstrip("/") + "/v1.0"
        self.api = ApiClient(
            tokens, base_url=self.base, owner="Microsoft", service="Microsoft Graph",
            product="Microsoft 365", reason=code,
            retryable=lambda response: response.status_code in _RETRY,
            concurrency=CONCURRENCY, headers={"Prefer": PREFER}, settings=settings,
        )  # fmt: skip

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
        width: int = 1,
        extensions: dict[str, Any] | None = None,
    ) -> httpx.Response:
        url = self.absolute(path)
        return await self.api.send(
            method, url, params=params, json=json, headers=headers, width=width,
            extensions=extensions,
        )  # fmt: skip

    def absolute(self, path: str) -> str:
        """The URL of ``path``: a path under the API's base, or a link Graph answered,
        which must be on the API's origin (the request carries the bearer token)."""
        if not path.startswith(("http:", "https:", "//")):
            return self.base + path
        origin = _origin(path)
        if origin is None or origin != _origin(self.base):
            raise NotACalendarServer(
                f"Microsoft Graph answered a link to another host ({urlsplit(path).netloc[:200]}):"
                " not followed"
            )
        return path

    @staticmethod
    def next_link(data: Any, seen: set[str]) -> str | None:
        """The ``@odata.nextLink`` of a page (None at the end); one that leads back to a
        page already read is an error, not a loop (``next_in_listing``)."""
        looping = "Microsoft Graph answered pages that lead back to each other"
        return next_in_listing(data, "@odata.nextLink", seen, looping)

    @staticmethod
    def calendar(calendar_id: str) -> str:
        return f"/me/calendars/{_segment(calendar_id)}"

    @staticmethod
    def events(calendar_id: str) -> str:
        return f"{Graph.calendar(calendar_id)}/events"

    @staticmethod
    def event(calendar_id: str, event_id: str) -> str:
        # Through the calendar, never ``/me/events/{id}``: that finds an event in any of
        # the mailbox's calendars, so an event moved elsewhere would still be read (and
        # written) as this calendar's.
        return f"{Graph.events(calendar_id)}/{_segment(event_id)}"

    async def pages(self, path: str, params: dict[str, Any] | None, what: str) -> list[Any]:
        """Every item of a collection, following ``@odata.nextLink``."""
        items: list[Any] = []
        url: str | None = path
        query, seen = params, set[str]()
        while url:
            response = await self.request("GET", url, params=query)
            if response.status_code != 200:
                raise self.api.failure(response, what)
            data = self.api.json(response)
            items += data.get("value", [])
            url, query = self.next_link(data, seen), None
        return items

    async def send_all(
        self, requests: list[dict[str, Any]]
    ) -> list[httpx.Response | ProviderError]:
        """Every request's answer, sent in ``$batch`` requests of ``BATCH_SIZE`` (see
        ``ApiClient.send_parts``); a single request goes alone, without an envelope."""
        if len(requests) == 1:
            (request,) = requests
            repeatable = _create_with_transaction(request)
            response = await self.request(request["method"], request["url"],
                                          json=request.get("body"),
                                          headers=request.get("headers"),
                                          extensions={REPEATABLE: repeatable})  # fmt: skip
            return [response]
        return await self.api.send_parts(requests, self._batch, size=BATCH_SIZE)

    async def _batch(self, requests: list[dict[str, Any]]) -> list[httpx.Response | None]:
        """One ``$batch`` request: each request's answer as a response of its own, in
        the order of ``requests`` (None where the envelope holds none)."""
        numbered = [{**r, "id": str(n)} for n, r in enumerate(requests)]
        # Graph runs a batch's requests to one mailbox up to four at a time, each held
        # to the mailbox's limit of four in flight: the batch takes that many slots.
        response = await self.request(
            "POST", "/$batch", json={"requests": numbered}, width=min(len(requests), CONCURRENCY),
            extensions={REPEATABLE: all(_create_with_transaction(r) for r in requests)},
        )  # fmt: skip
        if response.status_code != 200:
            raise self.api.failure(response, "sending a batch")
        envelope = self.api.json(response)
        answers = envelope.get("responses") if isinstance(envelope, dict) else None
        if not isinstance(answers, list):
            raise self.api.not_the_service(response)
        by_id = {str(a.get("id")): a for a in answers if isinstance(a, dict)}
        return [_part(by_id.get(str(n))) for n in range(len(requests))]

    async def close(self) -> None:
        await self.api.close()


def _part(answer: dict[str, Any] | None) -> httpx.Response | None:
    """One answer inside a ``$batch`` envelope as a response of its own; None for none,
    or for one without a status code (no answer either: tried again)."""
    status = answer.get("status") if answer is not None else None
    if answer is None or not isinstance(status, int) or not 100 <= status <= 599:
        return None
    headers = answer.get("headers")
    return httpx.Response(
        status,
        headers={k: str(v) for k, v in headers.items()} if isinstance(headers, dict) else None,
        json=answer.get("body") or {},
    )


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(url: str) -> tuple[str, str, int | None] | None:
    """A URL's origin as compared before sending a token: scheme, host in lower case,
    port with the scheme's default filled in (``https://h:443`` is ``https://h``).
    None for a port that is no number or a user name in the URL: never the API's."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        return None
    if "@" in parts.netloc:
        return None
    scheme = parts.scheme.lower()
    return scheme, parts.hostname or "", _DEFAULT_PORTS.get(scheme) if port is None else port


def _segment(value: str) -> str:
    return quote(value, safe="")


def read(url: str) -> dict[str, Any]:
    """A GET of a ``$batch``: its own ``Prefer`` (a batch's parts do not take the
    envelope's headers), so that it answers immutable ids and UTC times too."""
    return {"method": "GET", "url": url, "headers": {"Prefer": PREFER}}


def code(response: httpx.Response) -> str:
    """The error code Graph answered (``error.code``), or "" when there is none."""
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return ""


def iso(moment: dt.datetime) -> str:
    """A moment as Graph takes it in queries and subscriptions: UTC, to the second."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _create_with_transaction(request: dict[str, Any]) -> bool:
    """Whether ``request`` creates an event with a ``transactionId``: sent twice, Graph
    answers the event the first made."""
    body = request.get("body")
    return (
        request.get("method") == "POST"
        and isinstance(body, dict)
        and bool(body.get("transactionId"))
    )
