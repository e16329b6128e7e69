"""Google's and Microsoft Graph's answers as hostile input, at the wire: what a broken
or malicious service (or something in front of it) answers costs a bounded wait, sends
the bearer token nowhere else, never loops, and ends in a provider error that says
what happened instead of a crash. (Size, pace and compression of an answer are the
transport's: ``test_kept_http``.)"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from crmcal.providers import api_client, oauth2
from crmcal.providers.api_client import ClientSettings
from crmcal.providers.base import NotACalendarServer, ProviderError, Unreachable
from crmcal.providers.google import GoogleProvider
from crmcal.providers.google_api import GoogleApi
from crmcal.providers.google_series import Series
from crmcal.providers.kept_http import AnswerTooLarge
from crmcal.providers.microsoft_graph import Graph
from tests.conftest import recorded_sleeps

BASE = "https://graph.test"
GOOGLE = "https://google.test"


async def token(refresh: bool = False) -> str:
    return "secret-token"


def graph(handler: Callable[[httpx.Request], httpx.Response], retries: int = 2) -> Graph:
    settings = ClientSettings(transport=httpx.MockTransport(handler), retries=retries, backoff=0)
    return Graph(token, api_url=BASE, settings=settings)


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The pauses the API client takes, recorded instead of waited for (its own
    ``asyncio`` replaced: every other sleep of the process stays as it is)."""
    return recorded_sleeps(monkeypatch, api_client)


@pytest.mark.parametrize(
    ("retry_after", "longest"),
    [
        ("31536000", api_client.MAX_RETRY_AFTER),  # a year
        ("9" * 400, api_client.MAX_RETRY_AFTER),
        ("-5", 0.0),
        ("soon", 0.0),
        ("1.5", 0.0),
        ("Wed, 21 Oct 2099 07:28:00 GMT", 0.0),
        (b"\xb2", 0.0),  # "²": a digit to str.isdigit, none to float
    ],
)
async def test_a_retry_after_is_bounded_and_garbage_is_ignored(
    waits: list[float], retry_after: str | bytes, longest: float
) -> None:
    raw = retry_after if isinstance(retry_after, bytes) else retry_after.encode("latin-1")
    answers = iter([httpx.Response(429, headers=[(b"Retry-After", raw)])])

    def handler(request: httpx.Request) -> httpx.Response:
        return next(answers, httpx.Response(200, json={"value": []}))

    assert await graph(handler).pages("/me/calendars", None, "listing calendars") == []
    assert waits == [longest]


async def test_a_batch_parts_retry_after_is_bounded_too(waits: list[float]) -> None:
    rounds = iter([429, 200])

    def handler(request: httpx.Request) -> httpx.Response:
        status = next(rounds)
        headers = {"Retry-After": "31536000"}
        parts = [{"id": str(n), "status": status, "headers": headers, "body": {}} for n in (0, 1)]
        return httpx.Response(200, json={"responses": parts})

    reads = [{"method": "GET", "url": f"/me/events/{n}"} for n in (0, 1)]
    answers = await graph(handler).send_all(reads)
    assert [a.status_code for a in answers if isinstance(a, httpx.Response)] == [200, 200]
    assert max(waits) == api_client.MAX_RETRY_AFTER


@pytest.mark.parametrize(
    "link",
    [
        "https://elsewhere.test/v1.0/me/calendars?$skip=10",
        "http://graph.test/v1.0/me/calendars?$skip=10",  # the token in clear text
        "//elsewhere.test/v1.0/me/calendars",
        "https://graph.test.elsewhere.test/v1.0/me/calendars",
        "https://graph.test:8443/v1.0/me/calendars",
        "https://graph.test:80/v1.0/me/calendars",
        "https://someone@graph.test/v1.0/me/calendars",
    ],
)
async def test_a_next_link_to_another_origin_gets_no_token(link: str) -> None:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json={"value": [{"id": "a"}], "@odata.nextLink": link})

    with pytest.raises(NotACalendarServer, match="another host"):
        await graph(handler).pages("/me/calendars", None, "listing calendars")
    assert [r.url.host for r in sent] == ["graph.test"]


@pytest.mark.parametrize(
    "origin", [BASE, "https://graph.test:443", "HTTPS://Graph.TEST", "https://graph.test:0443"]
)
async def test_a_next_link_on_the_same_origin_is_followed(origin: str) -> None:
    """The same origin however it is spelt: the default port written out, capitals."""

    def handler(request: httpx.Request) -> httpx.Response:
        if "skip" in str(request.url):
            return httpx.Response(200, json={"value": [{"id": "b"}]})
        link = f"{origin}/v1.0/me/calendars?$skip=1"
        return httpx.Response(200, json={"value": [{"id": "a"}], "@odata.nextLink": link})

    items = await graph(handler).pages("/me/calendars", None, "listing calendars")
    assert items == [{"id": "a"}, {"id": "b"}]


async def test_next_links_that_lead_back_are_an_error_not_a_loop() -> None:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        page = len(sent) % 2
        link = f"{BASE}/v1.0/me/calendars?page={1 - page}"
        return httpx.Response(200, json={"value": [], "@odata.nextLink": link})

    with pytest.raises(NotACalendarServer, match="lead back"):
        await graph(handler).pages("/me/calendars", None, "listing calendars")
    assert len(sent) == 3


async def _google_calendars(handler: Callable[[httpx.Request], httpx.Response]) -> Any:
    transport = httpx.MockTransport(handler)
    return await GoogleProvider(token, api_url=GOOGLE, transport=transport).list_calendars()


async def _google_events(handler: Callable[[httpx.Request], httpx.Response]) -> Any:
    transport = httpx.MockTransport(handler)
    return await GoogleProvider(token, api_url=GOOGLE, transport=transport).list_changes("c", None)


async def _google_exceptions(handler: Callable[[httpx.Request], httpx.Response]) -> Any:
    settings = ClientSettings(transport=httpx.MockTransport(handler), backoff=0)
    series = Series(GoogleApi(token, api_url=GOOGLE, settings=settings))
    (found,) = (await series.exceptions_of("c", [{"id": "s", "iCalUID": "s@x"}])).values()
    if isinstance(found, ProviderError):
        raise found
    return found


@pytest.mark.parametrize("listing", [_google_calendars, _google_events, _google_exceptions])
async def test_google_page_tokens_that_lead_back_are_an_error_not_a_loop(
    listing: Callable[[Callable[[httpx.Request], httpx.Response]], Any],
) -> None:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        page = len(sent) % 2
        return httpx.Response(200, json={"items": [], "nextPageToken": f"page-{1 - page}"})

    with pytest.raises(NotACalendarServer, match="lead back"):
        await listing(handler)
    assert len(sent) == 3
    assert [r.url.params.get("pageToken") for r in sent] == [None, "page-0", "page-1"]


async def test_an_answer_over_the_size_bound_is_not_read_again(waits: list[float]) -> None:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        raise AnswerTooLarge("the answer is larger than 67,108,864 bytes")

    with pytest.raises(Unreachable, match=r"answered too much.*larger than"):
        await graph(handler, retries=5).pages("/me/calendars", None, "listing calendars")
    assert len(sent) == 1
    assert waits == []


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,  # nesting past the parser's recursion limit
        b'{"value": "\xff\xfe"}',  # not UTF-8
        b"<html><body>Sign in to continue</body></html>",  # a portal in front
    ],
)
async def test_an_answer_that_is_no_json_is_not_the_service(body: bytes) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"Content-Type": "application/json"})

    with pytest.raises(NotACalendarServer):
        await graph(handler).pages("/me/calendars", None, "listing calendars")


@pytest.mark.parametrize(
    "part",
    [
        {"id": "1", "status": "abc", "body": {}},
        {"id": "1", "body": {}},  # no status at all
        {"id": "1", "status": None},
        {"id": "1", "status": 7000},
    ],
)
async def test_a_batch_part_without_a_status_is_no_answer(
    waits: list[float], part: dict[str, Any]
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        answers: list[dict[str, Any]] = [{"id": "99", "status": 200, "body": {}}]  # unknown
        for asked in reversed(json.loads(request.content)["requests"]):  # out of order
            good = {"status": 200, "body": {"id": "e0"}}
            answers.append({**(good if asked["url"].endswith("/0") else part), "id": asked["id"]})
        return httpx.Response(200, json={"responses": answers})

    reads = [{"method": "GET", "url": f"/me/events/{n}"} for n in (0, 1)]
    first, second = await graph(handler, retries=1).send_all(reads)
    assert isinstance(first, httpx.Response)
    assert first.json() == {"id": "e0"}
    assert isinstance(second, Unreachable)


@pytest.mark.parametrize("envelope", [[], {"responses": "none"}, "text"])
async def test_a_batch_envelope_of_another_shape_is_not_the_service(envelope: Any) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=envelope)

    reads = [{"method": "GET", "url": f"/me/events/{n}"} for n in (0, 1)]
    with pytest.raises(ProviderError):
        await graph(handler).send_all(reads)


@pytest.mark.parametrize(
    ("expires_in", "seconds"),
    [
        (None, oauth2.DEFAULT_LIFETIME),
        ("soon", oauth2.DEFAULT_LIFETIME),
        ("nan", oauth2.DEFAULT_LIFETIME),
        ([1, 2], oauth2.DEFAULT_LIFETIME),
        (10**12, oauth2.LONGEST_LIFETIME),
        ("1e400", oauth2.LONGEST_LIFETIME),
        (-50, 0.0),
        ("1800", 1800.0),
    ],
)
async def test_a_token_lifetime_is_read_within_bounds(expires_in: Any, seconds: float) -> None:
    body = {"access_token": "fresh", **({"expires_in": expires_in} if expires_in else {})}

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=json.dumps(body).encode(),
                              headers={"Content-Type": "application/json"})  # fmt: skip

    tokens = oauth2.RefreshingTokens(
        "Google", "https://oauth.test/token", "refresh", transport=httpx.MockTransport(handler)
    )
    before = asyncio.get_running_loop().time()
    assert await tokens() == "fresh"
    assert tokens._access is not None
    left = tokens._access.expires - before
    assert seconds - 5 <= left <= seconds + 5
