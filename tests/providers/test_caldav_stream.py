"""A CalDAV first import's contents from one streamed ``calendar-query``: handed over in
parts as the answer arrives, and whatever the stream does not bring (a refusal, an
answer cut off or malformed, members without their data or named elsewhere) read by
name, each event once."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit
from xml.sax.saxutils import escape

import pytest

from crmcal.model import ChangeListing
from crmcal.providers import caldav as caldav_provider
from crmcal.providers import caldav_stream, guarded_http
from crmcal.providers.caldav import CalDAVProvider
from crmcal.providers.caldav_stream import Found
from tests.caldav_proxy import Behaviour, caldav_proxy
from tests.fault_proxy import FaultProxy, fault_proxy
from tests.providers.harness import CalDAVHarness, key, meeting
from tests.providers.test_caldav import recorded_multigets

_DAV = 'xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"'


@pytest.fixture
def caldav(caldav_harness: CalDAVHarness) -> CalDAVHarness:
    return caldav_harness


async def _made(caldav: CalDAVHarness, count: int) -> list[str]:
    return [(await caldav.provider.create(caldav.calendar_id, key(), meeting())).id
            for _ in range(count)]  # fmt: skip


async def _import(provider: CalDAVProvider, calendar: str) -> list[ChangeListing]:
    return [part async for part in provider.list_changes_in_parts(
        calendar, None, with_contents=True)]  # fmt: skip


def _every_event_once(parts: list[ChangeListing], made: Sequence[str]) -> None:
    ids = [ref.id for part in parts for ref in part.changed]
    assert sorted(ids) == sorted(made)  # each once: nothing lost, nothing twice
    assert all(ref.event is not None and ref.error is None for p in parts for ref in p.changed)
    assert len({part.cursor for part in parts}) == 1


@contextlib.asynccontextmanager
async def _through_proxy(
    caldav: CalDAVHarness,
) -> AsyncIterator[tuple[FaultProxy, CalDAVProvider, str]]:
    """A provider reaching the harness's server through a fault proxy, and the
    calendar's URL there; the provider closed after."""
    split = urlsplit(caldav.calendar_id)
    with fault_proxy(f"{split.scheme}://{split.netloc}") as (proxy, url):
        provider = caldav.provider_for(url + "/")
        try:
            yield proxy, provider, url + split.path
        finally:
            await provider.close()


async def test_the_contents_come_from_one_query_after_the_token_and_before_the_names(
    caldav: CalDAVHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(caldav_provider, "PART_SIZE", 3)
    monkeypatch.setattr(caldav_provider, "FIRST_PART_SIZE", 2)
    made = await _made(caldav, 7)
    asked = recorded_multigets(monkeypatch)
    async with _through_proxy(caldav) as (proxy, provider, calendar):
        token = (await provider.list_changes(calendar, None)).cursor
        proxy.requests.clear()
        parts = await _import(provider, calendar)
    # The token (Depth 0) before any contents; the names (Depth 1) after them, to read
    # what the query left out (here nothing).
    assert [method for method, _ in proxy.requests] == ["PROPFIND", "REPORT", "PROPFIND"]
    assert asked == []
    assert [len(part.changed) for part in parts] == [2, 3, 2]
    assert all(part.full and part.cursor == token for part in parts)
    _every_event_once(parts, made)


@pytest.mark.parametrize(
    ("action", "status"),
    [("answer", 507), ("answer", 403), ("answer", 501), ("cut", 0), ("refuse", 0)],
)
async def test_a_query_refused_or_cut_off_leaves_the_rest_to_multigets(
    caldav: CalDAVHarness, monkeypatch: pytest.MonkeyPatch, action: str, status: int
) -> None:
    monkeypatch.setattr(caldav_provider, "PART_SIZE", 2)
    monkeypatch.setattr(caldav_provider, "FIRST_PART_SIZE", 1)
    made = await _made(caldav, 9)
    asked = recorded_multigets(monkeypatch)
    async with _through_proxy(caldav) as (proxy, provider, calendar):
        rule = proxy.add(action, method="REPORT", times=1, status=status)  # type: ignore[arg-type]
        parts = await _import(provider, calendar)
    assert rule.hits == 1
    _every_event_once(parts, made)
    by_name = {href for hrefs in asked for href in hrefs}
    if action == "cut":
        # The half that came was handed over; only the rest was read by name.
        assert 0 < len(by_name) < len(made)
    else:
        assert by_name == set(made)


def _response(href: str, etag: str | None, text: str | None, status: int = 200) -> str:
    props = (f"<D:getetag>{etag}</D:getetag>" if etag else "") + (
        f"<C:calendar-data>{escape(text)}</C:calendar-data>" if text is not None else ""
    )
    if status != 200:
        return f"<D:response><D:href>{href}</D:href><D:status>HTTP/1.1 {status} X</D:status>" \
            "</D:response>"  # fmt: skip
    return (f"<D:response><D:href>{href}</D:href><D:propstat><D:prop>{props}</D:prop>"
            "<D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>")  # fmt: skip


def _answering(proxy: FaultProxy, body: str) -> None:
    proxy.add("answer", method="REPORT", times=1, status=207, body=body,
              content_type="application/xml; charset=utf-8")  # fmt: skip


async def _imported_answering(caldav: CalDAVHarness, body: str) -> list[ChangeListing]:
    """A first import through a proxy that answers its query with ``body``."""
    async with _through_proxy(caldav) as (proxy, provider, calendar):
        _answering(proxy, body)
        return await _import(provider, calendar)


async def test_an_answer_malformed_mid_way_keeps_what_came_before_it(
    caldav: CalDAVHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(caldav_provider, "FIRST_PART_SIZE", 1)
    made = await _made(caldav, 4)
    texts = [await caldav.read_raw(href) for href in made[:2]]
    body = (f'<?xml version="1.0" encoding="utf-8"?><D:multistatus {_DAV}>'
            + _response(made[0], '"first"', texts[0]) + _response(made[1], '"second"', texts[1])
            + "<D:response><D:href>/broken</D:hre></D:response></D:multistatus>")  # fmt: skip
    asked = recorded_multigets(monkeypatch)
    parts = await _imported_answering(caldav, body)
    _every_event_once(parts, made)
    assert sorted(href for hrefs in asked for href in hrefs) == sorted(made[2:])
    streamed = {ref.id: ref.etag for ref in parts[0].changed + parts[1].changed}
    assert streamed == {made[0]: '"first"', made[1]: '"second"'}


async def test_members_without_data_elsewhere_or_in_error_are_read_by_name(
    caldav: CalDAVHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = await _made(caldav, 6)
    texts = [await caldav.read_raw(href) for href in made]
    collection = urlsplit(caldav.calendar_id).path
    elsewhere = f"{collection.rstrip('/')}-other/{uuid.uuid4().hex}.ics"
    name = made[3].rsplit("/", 1)[1]
    body = (f'<?xml version="1.0" encoding="utf-8"?><D:multistatus {_DAV}>'
            + _response(made[0], '"kept"', texts[0])
            + _response(made[1], '"no-data"', None)  # its data left out
            + _response(f"http://elsewhere.example{made[2]}", '"host"', texts[2])
            + _response(f"{collection}sub/{name}", '"deeper"', texts[3])
            + _response(elsewhere, '"other"', texts[3])
            + _response(made[4], None, None, status=500)
            + _response(made[0], '"again"', texts[0])  # a second answer for one href
            + "</D:multistatus>")  # fmt: skip  # made[5] left out without a word
    asked = recorded_multigets(monkeypatch)
    parts = await _imported_answering(caldav, body)
    _every_event_once(parts, made)
    assert sorted(href for hrefs in asked for href in hrefs) == sorted(made[1:])
    assert parts[0].changed[0].etag == '"kept"'


# --- the stream's machinery, on its own ----------------------------------------------


@contextlib.contextmanager
def caldav_stream_pool() -> Iterator[ThreadPoolExecutor]:
    """A thread pool of its own for the machinery's tests."""
    with ThreadPoolExecutor(4) as pool:
        yield pool


def _found(n: int) -> Found:
    return Found(f"/cal/{n}.ics", None, "x")


async def test_a_part_is_handed_over_while_the_answer_is_still_read() -> None:
    """The reader's first part reaches the caller before the reader goes on; and with
    one part allowed to wait, the reader waits for the caller to take it."""
    first_taken = threading.Event()
    handed: list[bool] = []

    def read(hand_over: Any) -> None:
        handed.append(hand_over([_found(0)]))
        # The caller has the first part before anything more is read.
        assert first_taken.wait(30)
        handed.append(hand_over([_found(1)]))
        handed.append(hand_over([_found(2)]))

    with caldav_stream_pool() as pool:
        got = []
        parts = caldav_stream.parts_as_they_come(read, list, 1, (pool, pool), time.monotonic() + 60)
        async for hrefs, _ in parts:
            got.append(hrefs)
            first_taken.set()
    assert got == [["/cal/0.ics"], ["/cal/1.ics"], ["/cal/2.ics"]]
    assert handed == [True, True, True]


async def test_a_reader_kept_waiting_past_its_deadline_stops() -> None:
    parsed = threading.Event()
    tried: list[bool] = []

    def read(hand_over: Any) -> None:
        tried.append(hand_over([_found(0)]))
        tried.append(hand_over([_found(1)]))  # no room, and its deadline has passed
        parsed.set()

    def parse(part: Sequence[Found]) -> list[Found]:
        assert parsed.wait(30)  # the first part is not taken before the second is tried
        return list(part)

    with caldav_stream_pool() as pool:
        parts = caldav_stream.parts_as_they_come(read, parse, 1, (pool, pool), time.monotonic())
        got = [hrefs async for hrefs, _ in parts]
    assert tried == [True, False]
    assert got == [["/cal/0.ics"]]


def test_responses_come_as_their_end_arrives_and_folds_are_joined_across_pieces() -> None:
    text = "BEGIN:VCALENDAR\r\nSUMMARY:Caf\u00e9\r\nEND:VCALENDAR\r\n"
    raw = _response("/cal/a.ics", '"1"', text).encode()
    # A fold at 75 octets, inside the "é" (0xC3 0xA9), split between two pieces.
    folded = raw.replace(b"\xc3\xa9", b"\xc3\r\n \xa9")
    second = raw.replace(b"a.ics", b"b.ics") + b"</D:multistatus>"
    document = f"<D:multistatus {_DAV}>".encode() + folded + second
    cut = document.index(b"\r\n \xa9") + 2
    responses = caldav_stream.Responses(caldav_provider._joined_characters, 1024 * 1024)
    assert responses.feed(document[:cut]) == []
    first = responses.feed(document[cut:])
    assert [e.findtext("{DAV:}href") for e in first] == ["/cal/a.ics", "/cal/b.ics"]
    data = first[0].find("{DAV:}propstat/{DAV:}prop/{urn:ietf:params:xml:ns:caldav}calendar-data")
    assert "Caf\u00e9" in data.text
    assert responses.close() == []


def test_one_response_larger_than_the_cap_is_refused() -> None:
    responses = caldav_stream.Responses(caldav_provider._joined_characters, 1000)
    responses.feed(f"<D:multistatus {_DAV}><D:response><D:href>/cal/a.ics</D:href>".encode())
    with pytest.raises(caldav_stream.TooLarge):
        responses.feed(b"<D:propstat><D:prop><D:getetag>" + b"x" * 2000)


async def test_readers_never_hold_the_threads_their_parts_are_parsed_in() -> None:
    """Reading and parsing in executors of their own: a reader waiting for its caller
    holds none of the threads the parse the caller waits for needs (here, one each)."""
    tried: list[bool] = []

    def read(hand_over: Any) -> None:
        tried.extend(hand_over([_found(n)]) for n in range(3))

    with ThreadPoolExecutor(1) as reading, ThreadPoolExecutor(1) as parsing:
        parts = caldav_stream.parts_as_they_come(
            read, list, 1, (reading, parsing), time.monotonic() + 60
        )
        got = [hrefs async for hrefs, _ in parts]
    assert tried == [True, True, True]
    assert len(got) == 3


async def test_a_compressed_answer_is_decoded_piece_by_piece_as_it_comes(
    caldav: CalDAVHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(caldav_provider, "FIRST_PART_SIZE", 2)
    monkeypatch.setattr(guarded_http, "PIECE", 700)  # many pieces out of each chunk
    made = await _made(caldav, 5)
    behaviour = Behaviour(content_coding="gzip")
    split = urlsplit(caldav.calendar_id)
    with caldav_proxy(f"{split.scheme}://{split.netloc}", behaviour) as url:
        provider = caldav.provider_for(url + "/")
        parts = await _import(provider, url + split.path)
        await provider.close()
    assert dict(behaviour.reports) == {"calendar-query": 1}
    assert [len(part.changed) for part in parts] == [2, 3]
    _every_event_once(parts, made)


async def test_the_names_are_asked_for_once_the_answer_ended_not_once_the_caller_has_all(
    caldav: CalDAVHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The names (to find what the query left out) are read while the caller still
    writes the parts it was handed, not after: the caller holds the first part here
    until they were asked for."""
    monkeypatch.setattr(caldav_provider, "PART_SIZE", 2)
    monkeypatch.setattr(caldav_provider, "FIRST_PART_SIZE", 2)
    made = await _made(caldav, 6)
    names, asked = CalDAVProvider._names, threading.Event()

    def naming(self: CalDAVProvider, calendar: str) -> Any:
        asked.set()
        return names(self, calendar)

    monkeypatch.setattr(CalDAVProvider, "_names", naming)
    parts: list[ChangeListing] = []
    async for part in caldav.provider.list_changes_in_parts(
        caldav.calendar_id, None, with_contents=True
    ):
        if not parts:
            assert await asyncio.to_thread(asked.wait, 30)
        parts.append(part)
    assert len(parts) == 3
    _every_event_once(parts, made)
