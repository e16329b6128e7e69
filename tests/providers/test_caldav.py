"""What is particular to the CalDAV provider: discovery, ids, batching, odd servers."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import http.server
import re
import socket
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import icalendar
import pytest
from lxml import etree

from crmcal.providers import caldav as caldav_provider
from crmcal.providers import caldav_discovery
from crmcal.providers.base import (
    AuthenticationFailed,
    CalendarNotFound,
    EventNotFound,
    NotACalendarServer,
    PreconditionFailed,
    ProviderError,
    Unreachable,
    WritesRefused,
)
from crmcal.providers.caldav import CalDAVProvider, normalize_href
from tests.caldav_proxy import Behaviour, caldav_proxy
from tests.fault_proxy import fault_proxy
from tests.providers.harness import CalDAVHarness, fetch_one, key, meeting, raw_event


@pytest.fixture
def caldav(caldav_harness: CalDAVHarness) -> CalDAVHarness:
    return caldav_harness


@pytest.mark.parametrize(
    ("href", "expected"),
    [
        ("/cal/a b@c.ics", "/cal/a%20b@c.ics"),
        ("/cal/a%20b%40c.ics", "/cal/a%20b@c.ics"),
        ("http://host:1/cal/a%20b@c.ics", "/cal/a%20b@c.ics"),
        ("/cal/%C3%A4+x.ics", "/cal/%C3%A4+x.ics"),
        ("/cal/ä+x.ics", "/cal/%C3%A4+x.ics"),
        ("/cal/x.ics?query#frag", "/cal/x.ics"),
    ],
)
def test_hrefs_have_one_spelling(href: str, expected: str) -> None:
    assert normalize_href(href) == expected


# --- discovery ----------------------------------------------------------------------


async def test_discovery_from_the_server_url(caldav: CalDAVHarness) -> None:
    provider = caldav.provider_for(caldav.server.url)
    await provider.discover()
    assert caldav.calendar_id in {c.id for c in await provider.list_calendars()}


async def test_discovery_from_an_account_or_calendar_url(caldav: CalDAVHarness) -> None:
    principal = caldav.principal_url
    for url in (principal, caldav.calendar_id, caldav.calendar_id.rstrip("/")):
        provider = caldav.provider_for(url)
        await provider.discover()
        assert caldav.calendar_id in {c.id for c in await provider.list_calendars()}


async def test_discovery_through_the_well_known_url(caldav: CalDAVHarness) -> None:
    # A path that is no DAV resource: only /.well-known/caldav leads on.
    provider = caldav.provider_for(caldav.server.url + "no/dav/here/")
    await provider.discover()
    assert caldav.calendar_id in {c.id for c in await provider.list_calendars()}


async def test_discovery_errors(caldav: CalDAVHarness, closed_port_url: str, plain_http: str):
    with pytest.raises(Unreachable):
        await caldav.provider_for(closed_port_url).discover()
    with pytest.raises(NotACalendarServer):
        await caldav.provider_for(plain_http).discover()
    with pytest.raises(Unreachable):
        await caldav.provider_for("http://no-such-host.invalid/").discover()
    wrong = caldav.with_wrong_password()
    if wrong is not None:
        with pytest.raises(AuthenticationFailed):
            await wrong.discover()


@pytest.mark.parametrize("url", ["", "not a url", "http://", "ftp://example.test/", "http://[::1"])
async def test_unusable_urls_are_refused_on_first_use(url: str) -> None:
    provider = CalDAVProvider(url, "u", "p", allow_private=True)
    with pytest.raises(ProviderError, match=r"URL|address"):
        await provider.discover()
    with pytest.raises(ProviderError):
        await provider.list_changes("http://example.test/cal/", None)
    await provider.close()


async def test_a_silent_server_times_out() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()  # connections complete, but nobody ever answers
        port = listener.getsockname()[1]
        provider = CalDAVProvider(
            f"http://127.0.0.1:{port}/", "u", "p", timeout=0.3, allow_private=True
        )
        try:
            with pytest.raises(Unreachable):
                await provider.discover()
        finally:
            await provider.close()


# --- reading ------------------------------------------------------------------------


async def test_fetch_works_in_chunks(caldav: CalDAVHarness, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(caldav_provider, "MULTIGET_CHUNK", 2)
    refs = [await caldav.provider.create(caldav.calendar_id, key(), meeting()) for _ in range(5)]
    ids = [r.id for r in refs]
    missing = ids[0].rsplit("/", 1)[0] + "/missing.ics"
    fetched = await caldav.provider.fetch(caldav.calendar_id, [*ids, missing, ids[0]])
    assert sorted(r.id for r in fetched) == sorted(ids)
    assert all(r.event is not None for r in fetched)


def recorded_multigets(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The hrefs each multiget of the providers asks for, from now on."""
    multiget = CalDAVProvider._multiget
    asked: list[list[str]] = []

    def recorded(self: CalDAVProvider, calendar: str, hrefs: Any) -> Any:
        asked.append(list(hrefs))
        return multiget(self, calendar, hrefs)

    monkeypatch.setattr(CalDAVProvider, "_multiget", recorded)
    return asked


async def test_a_first_import_larger_than_the_answer_cap_comes_whole_in_parts(
    caldav: CalDAVHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The streamed query's answer is under no cap as a whole: the cap bounds what is
    held at once (the parts waiting and the response being read)."""
    monkeypatch.setattr(caldav_provider, "PART_SIZE", 3)
    made = {(await caldav.provider.create(caldav.calendar_id, key(), meeting())).id
            for _ in range(8)}  # fmt: skip
    # Answers capped below what all eight events' contents take in one answer.
    capped = CalDAVProvider(caldav.calendar_id, caldav.server.username, caldav.server.password,
                            allow_private=True, max_response_bytes=8 * 1024)  # fmt: skip
    asked = recorded_multigets(monkeypatch)
    try:
        with pytest.raises(Unreachable, match="larger than"):
            await capped.list_changes(caldav.calendar_id, None, with_contents=True)
        token = (await capped.list_changes(caldav.calendar_id, None)).cursor
        parts = [part async for part in capped.list_changes_in_parts(
            caldav.calendar_id, None, with_contents=True)]  # fmt: skip
    finally:
        await capped.close()
    assert asked == []  # every event came in the stream
    assert all(0 < len(part.changed) <= 3 for part in parts)
    assert all(part.full and part.cursor == token for part in parts)
    refs = [ref for part in parts for ref in part.changed]
    assert sorted(ref.id for ref in refs) == sorted(made)
    assert all(ref.event is not None and ref.etag and ref.error is None for ref in refs)


async def test_a_first_import_hands_over_a_smaller_first_part_then_whole_parts(
    caldav: CalDAVHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The caller waits for the first part with nothing else on its way: it is handed
    over smaller, the later parts whole; the same when the events are read by name."""
    monkeypatch.setattr(caldav_provider, "PART_SIZE", 3)
    monkeypatch.setattr(caldav_provider, "FIRST_PART_SIZE", 1)
    made = {(await caldav.provider.create(caldav.calendar_id, key(), meeting())).id
            for _ in range(8)}  # fmt: skip
    asked = recorded_multigets(monkeypatch)
    parts = [part async for part in caldav.provider.list_changes_in_parts(
        caldav.calendar_id, None, with_contents=True)]  # fmt: skip
    assert [len(part.changed) for part in parts] == [1, 3, 3, 1]
    assert asked == []
    assert {ref.id for part in parts for ref in part.changed} == made
    # A server that will not answer the query: multigets, one a part, each asked at once.
    split = urlsplit(caldav.calendar_id)
    with fault_proxy(f"{split.scheme}://{split.netloc}") as (proxy, url):
        proxy.add("answer", method="REPORT", times=1, status=501)
        provider = caldav.provider_for(url + "/")
        parts = [part async for part in provider.list_changes_in_parts(
            url + split.path, None, with_contents=True)]  # fmt: skip
        await provider.close()
    assert [len(part.changed) for part in parts] == [1, 3, 3, 1]
    assert sorted(len(hrefs) for hrefs in asked) == [1, 1, 3, 3]
    assert {ref.id for part in parts for ref in part.changed} == made
    # A first part no smaller than the others is one of them.
    monkeypatch.setattr(caldav_provider, "FIRST_PART_SIZE", 5)
    parts = [part async for part in caldav.provider.list_changes_in_parts(
        caldav.calendar_id, None, with_contents=True)]  # fmt: skip
    assert [len(part.changed) for part in parts] == [3, 3, 2]


async def test_a_first_import_reads_the_token_alone_then_only_the_names(
    caldav: CalDAVHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = {(await caldav.provider.create(caldav.calendar_id, key(), meeting())).id
            for _ in range(3)}  # fmt: skip
    propfind = CalDAVProvider._propfind
    asked: list[tuple[int, list[str]]] = []

    def recorded(self: CalDAVProvider, url: str, props: Any, depth: int) -> Any:
        asked.append((depth, list(props)))
        return propfind(self, url, props, depth)

    monkeypatch.setattr(CalDAVProvider, "_propfind", recorded)
    parts = [part async for part in caldav.provider.list_changes_in_parts(
        caldav.calendar_id, None, with_contents=True)]  # fmt: skip
    # The token first, for the collection alone; then the members named, with nothing
    # asked of each of them that only the collection has (a server answers every
    # property for every member, and building those answers costs it more than the
    # two requests do).
    assert asked[:2] == [
        (0, ["<D:sync-token/>", "<C:calendar-timezone/>"]),
        (1, ["<D:resourcetype/>"]),
    ]
    assert not [props for depth, props in asked if depth == 1 and "<D:sync-token/>" in props]
    assert {ref.id for part in parts for ref in part.changed if ref.event is not None} == made
    assert all(part.full and part.cursor for part in parts)


async def test_parts_read_at_once_discover_the_account_addresses_once(
    caldav: CalDAVHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each part's first event with an ORGANIZER asks for the account's addresses, in
    the part's own thread: the first to ask discovers them, the others wait for it."""
    for n in range(6):
        await caldav.put_raw(raw_event(
            str(uuid.uuid4()), f"DTSTART:2026120{n + 1}T100000Z",
            "ORGANIZER:mailto:someone@example.com", "ATTENDEE:mailto:me@example.com",
        ))  # fmt: skip
    monkeypatch.setattr(caldav_provider, "PART_SIZE", 1)
    monkeypatch.setattr(caldav_discovery, "_LEARNT", OrderedDict())  # nothing learnt yet
    provider = caldav.provider_for(caldav.calendar_id)
    asking: list[str] = []
    two_ask = threading.Event()
    discovered: list[str] = []
    addresses, discover = CalDAVProvider._account_addresses, CalDAVProvider._discover

    def asked(self: CalDAVProvider) -> frozenset[str]:
        asking.append(threading.current_thread().name)
        if len(asking) >= 2:
            two_ask.set()
        return addresses(self)

    def discovering(self: CalDAVProvider) -> str | None:
        discovered.append(threading.current_thread().name)
        two_ask.wait(30)  # a second part's thread asks meanwhile (with the fix, it waits)
        return discover(self)

    monkeypatch.setattr(CalDAVProvider, "_account_addresses", asked)
    monkeypatch.setattr(CalDAVProvider, "_discover", discovering)
    try:
        parts = [part async for part in provider.list_changes_in_parts(
            caldav.calendar_id, None, with_contents=True)]  # fmt: skip
    finally:
        await provider.close()
    assert len(set(asking)) >= 2  # parts in two threads or more asked at once
    assert len(discovered) == 1
    assert sum(ref.event is not None for part in parts for ref in part.changed) == 6


@pytest.mark.parametrize("names", ["none", "cut short"])
async def test_a_first_import_whose_propfind_names_no_member_for_sure_uses_the_query(
    caldav: CalDAVHarness, monkeypatch: pytest.MonkeyPatch, names: str
) -> None:
    made = {(await caldav.provider.create(caldav.calendar_id, key(), meeting())).id
            for _ in range(3)}  # fmt: skip
    propfind = CalDAVProvider._propfind

    def spoiled(self: CalDAVProvider, url: str, props: Any, depth: int) -> Any:
        reply = propfind(self, url, props, depth)
        if depth != 1 or reply.tree is None:
            return reply
        members = [r for r in reply.tree.findall("{DAV:}response")
                   if not r.findtext("{DAV:}href").endswith("/")]  # fmt: skip
        # It answers for the collection alone, or stops after the first member.
        for response in members if names == "none" else members[1:]:
            reply.tree.remove(response)
        if names == "cut short":  # RFC 4918 507 for the rest of the answer
            reply.tree.append(etree.fromstring(
                f'<D:response xmlns:D="DAV:"><D:href>{urlsplit(url).path}</D:href>'
                "<D:status>HTTP/1.1 507 Insufficient Storage</D:status></D:response>"
            ))  # fmt: skip
        return reply

    monkeypatch.setattr(CalDAVProvider, "_propfind", spoiled)
    parts = [part async for part in caldav.provider.list_changes_in_parts(
        caldav.calendar_id, None, with_contents=True)]  # fmt: skip
    (part,) = parts  # the one calendar-query, whatever the names
    assert part.full
    assert part.cursor
    assert {ref.id for ref in part.changed if ref.event is not None} == made


async def test_ids_do_not_depend_on_how_they_are_spelled(caldav: CalDAVHarness) -> None:
    event_id = await caldav.put_raw(
        raw_event(str(uuid.uuid4()), "DTSTART:20261201T100000Z"), name="x y@z.ics"
    )
    base = event_id.rsplit("/", 1)[0]
    spellings = [f"{base}/x y@z.ics", f"{base}/x%20y%40z.ics", caldav.calendar_id + "x y@z.ics"]
    for spelling in spellings:
        (ref,) = await caldav.provider.fetch(caldav.calendar_id, [spelling])
        assert ref.id == event_id


async def test_a_partial_multiget_answer_names_what_it_left_out(caldav: CalDAVHarness) -> None:
    ids = {}
    for name in ("whole", "left-out", "refused", "failed", "gone"):
        text = raw_event(f"partial-{name}", f"SUMMARY:{name}", "DTSTART:20261201T100000Z")
        ids[name] = await caldav.put_raw(text, name=f"partial-{name}.ics")
    # A multistatus answers each resource on its own (RFC 4918 13): some servers
    # leave hrefs out, or answer them 403, 500 or 507.
    behaviour = Behaviour(partial={("calendar-multiget", "partial-left-out"): None,
                                   ("calendar-multiget", "partial-refused"): 403,
                                   ("calendar-multiget", "partial-failed"): 500,
                                   ("calendar-multiget", "partial-gone"): 404})  # fmt: skip
    parts = urlsplit(caldav.calendar_id)
    with caldav_proxy(f"{parts.scheme}://{parts.netloc}", behaviour) as proxy:
        provider = caldav.provider_for(proxy + "/")
        fetched = await provider.fetch(proxy + parts.path, list(ids.values()))
    refs = {ref.id: ref for ref in fetched}
    whole = refs.pop(ids["whole"])
    assert (whole.event is not None, whole.error, whole.retry) == (True, None, False)
    assert {ref.id: (ref.error, ref.retry) for ref in refs.values()} == {
        ids["left-out"]: ("the server's answer left this event out", True),
        ids["refused"]: ("the server answered 403 for this event", True),
        ids["failed"]: ("the server answered 500 for this event", True),
        # 404: gone since it was listed, and the next listing says so.
    }


async def test_a_listing_member_with_an_error_status_is_read_again(
    caldav: CalDAVHarness,
) -> None:
    listing = await caldav.provider.list_changes(caldav.calendar_id, None)
    event_id = await caldav.put_raw(
        raw_event("listed-403", "SUMMARY:x", "DTSTART:20261201T100000Z"), name="listed-403.ics"
    )
    behaviour = Behaviour(partial={("sync-collection", "listed-403"): 403})
    parts = urlsplit(caldav.calendar_id)
    with caldav_proxy(f"{parts.scheme}://{parts.netloc}", behaviour) as proxy:
        provider = caldav.provider_for(proxy + "/")
        changes = await provider.list_changes(proxy + parts.path, listing.cursor)
    assert not changes.full
    assert changes.deleted == []
    assert [(r.id, r.error, r.retry) for r in changes.changed] == [
        (event_id, "the server answered 403 for this event", True)
    ]


# --- whose meeting it is ------------------------------------------------------------


def test_the_account_addresses_are_its_mailto_addresses() -> None:
    element = etree.fromstring(
        '<C:calendar-user-address-set xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">'
        "<D:href>mailto:Alice@Example.TEST</D:href><D:href>MAILTO:alias%2Bwork@example.test"
        "</D:href><D:href>/principals/alice/</D:href><D:href>urn:uuid:1234</D:href>"
        "<D:href>mailto:</D:href></C:calendar-user-address-set>"
    )
    addresses = caldav_provider.account_addresses(element)
    assert addresses == {"alice@example.test", "alias+work@example.test"}
    assert caldav_provider.account_addresses(None) == frozenset()
    mine = dataclasses.replace(meeting(), organizer="ALIAS+Work@example.test")
    theirs = dataclasses.replace(meeting(), organizer="boss@example.test")
    known = caldav_provider.with_organizer_known
    assert known(mine, addresses).invitation is False
    # Not one of them: left for the engine, which also knows the CRM user's address.
    assert known(theirs, addresses).invitation is None
    assert known(mine, frozenset()).invitation is None
    assert known(dataclasses.replace(mine, invitation=True), addresses).invitation is True


async def test_the_principals_addresses_decide_whose_meeting_it_is(caldav: CalDAVHarness) -> None:
    ics = {
        "alias": raw_event("org-alias", "SUMMARY:mine", "DTSTART:20261201T100000Z",
                           "ORGANIZER;CN=Alice:mailto:Alice.Alias@Elsewhere.test",
                           "ATTENDEE:mailto:ann@acme.test"),
        "boss": raw_event("org-boss", "SUMMARY:theirs", "DTSTART:20261201T100000Z",
                          "ORGANIZER:mailto:boss@elsewhere.test", "ATTENDEE:mailto:ann@acme.test"),
    }  # fmt: skip
    ids = {name: await caldav.put_raw(text) for name, text in ics.items()}
    addresses = ["mailto:alice.work@elsewhere.test", "mailto:alice.alias@elsewhere.test"]
    settable = await caldav.set_addresses(addresses)
    try:
        provider = caldav.provider_for(caldav.server.url)
        read = {r.id: r.event for r in await provider.fetch(caldav.calendar_id, list(ids.values()))}
        invitation = {name: e.invitation for name, i in ids.items() if (e := read[i]) is not None}
        if settable:  # Xandikos
            assert invitation == {"alias": False, "boss": None}
        else:  # Radicale names the principal's path, no address: the engine compares
            assert caldav.kind == "radicale"
            assert invitation == {"alias": None, "boss": None}
        # Read with discovery, from the server's URL or the principal's own.
        for url in (caldav.server.url, caldav.principal_url):
            listed = caldav.provider_for(url)
            await listed.list_calendars()
            assert listed._addresses == ({a[7:] for a in addresses} if settable else set())
    finally:
        await caldav.set_addresses([])


async def test_full_listing_without_sync_collection(
    caldav: CalDAVHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = await caldav.provider.create(caldav.calendar_id, key(), meeting())
    monkeypatch.setattr(CalDAVProvider, "_sync_collection", lambda *args: None)
    listing = await caldav.provider.list_changes(caldav.calendar_id, "some-token")
    assert listing.full
    # Its cursor is the collection's CTag: unchanged, the next listing names nothing.
    assert (listing.cursor or "").startswith("ctag:")
    assert [(r.id, r.etag) for r in listing.changed] == [(ref.id, ref.etag)]
    again = await caldav.provider.list_changes(caldav.calendar_id, listing.cursor)
    assert (again.full, again.changed, again.cursor) == (False, [], listing.cursor)


@pytest.mark.parametrize("answer", ["refused", "truncated", "no sync-token"])
async def test_listing_with_contents_falls_back_to_listing_and_fetching(
    caldav: CalDAVHarness, monkeypatch: pytest.MonkeyPatch, answer: str
) -> None:
    ref = await caldav.provider.create(caldav.calendar_id, key(), meeting())
    report, propfind = CalDAVProvider._report, CalDAVProvider._propfind

    def spoiled_report(self: CalDAVProvider, url: str, body: str, depth: int | None) -> Any:
        reply = report(self, url, body, depth)
        if "calendar-query" not in body:
            return reply
        if answer == "refused":
            return dataclasses.replace(reply, status=501, tree=None)
        path = urlsplit(url).path
        marker = etree.fromstring(
            f'<D:response xmlns:D="DAV:"><D:href>{path}</D:href>'
            "<D:status>HTTP/1.1 507 Insufficient Storage</D:status></D:response>"
        )
        reply.tree.append(marker)
        return reply

    def tokenless_propfind(self: CalDAVProvider, url: str, props: Any, depth: int) -> Any:
        return propfind(self, url, [p for p in props if "sync-token" not in p], depth)

    if answer == "no sync-token":
        monkeypatch.setattr(CalDAVProvider, "_propfind", tokenless_propfind)
    else:
        monkeypatch.setattr(CalDAVProvider, "_report", spoiled_report)
    listing = await caldav.provider.list_changes(caldav.calendar_id, None, with_contents=True)
    assert listing.full
    assert listing.cursor
    assert [(r.id, r.etag, r.event) for r in listing.changed] == [(ref.id, ref.etag, None)]


async def test_floating_times_without_a_calendar_zone_are_marked_floating(
    caldav: CalDAVHarness,
) -> None:
    event_id = await caldav.put_raw(raw_event("floating", "DTSTART:20261201T100000"))
    event = (await fetch_one(caldav, event_id)).event
    assert event is not None
    # Neither server sets a calendar-timezone here: the wall-clock time is left to
    # the CRM, which reads it in its user's zone.
    assert event.floating
    assert event.timezone is None
    assert isinstance(event.start, dt.datetime)
    assert event.start.replace(tzinfo=None) == dt.datetime(2026, 12, 1, 10)


async def test_a_removed_calendar_is_not_found(caldav: CalDAVHarness) -> None:
    second = await caldav.make_second_calendar()
    await caldav.provider.create(second, key(), meeting())
    caldav.request("DELETE", second)
    with pytest.raises(CalendarNotFound):
        await caldav.provider.list_changes(second, None)
    with pytest.raises(CalendarNotFound):
        await caldav.provider.create(second, key(), meeting())


# --- writing ------------------------------------------------------------------------


async def test_update_without_the_text_at_hand_keeps_foreign_properties(
    caldav: CalDAVHarness,
) -> None:
    event_id = await caldav.put_raw(
        raw_event(
            "foreign-2@example.test",
            "SUMMARY:Review",
            "DTSTART:20261203T140000Z",
            "X-OTHER-CLIENT:keep-me",
        )
    )
    listing = await caldav.provider.list_changes(caldav.calendar_id, None)
    fresh = caldav.provider_for(caldav.server.url)  # has fetched nothing
    updated = await fresh.update(caldav.calendar_id, event_id, listing.changed[0].etag, meeting())
    raw = await caldav.read_raw(event_id)
    assert "X-OTHER-CLIENT:keep-me" in raw
    assert "UID:foreign-2@example.test" in raw
    assert "SEQUENCE:1" in raw
    assert "SCHEDULE-AGENT" not in raw  # no attendees
    assert (await fetch_one(caldav, event_id)).etag == updated.etag


async def test_a_new_description_drops_outlooks_html_body_of_the_old_one(
    caldav: CalDAVHarness,
) -> None:
    """Outlook shows X-ALT-DESC in preference to DESCRIPTION: an edit of the
    description in the CRM dropped it, or Outlook went on showing the old text. An
    edit of anything else keeps it as it was."""
    html = "X-ALT-DESC;FMTTYPE=text/html:<html><body><p>Old <b>agenda</b></p></body></html>"
    as_outlook_wrote_it = raw_event(
        "outlook-html@example.test",
        "SUMMARY:Review",
        "DTSTART:20261203T140000Z",
        "DTEND:20261203T150000Z",
        "DESCRIPTION:Old agenda",
        html,
    )
    event_id = await caldav.put_raw(as_outlook_wrote_it, name="outlook-html.ics")
    fetched = await fetch_one(caldav, event_id)
    assert fetched.event is not None
    renamed = dataclasses.replace(fetched.event, summary="Review (renamed)")
    await caldav.provider.update(caldav.calendar_id, event_id, fetched.etag, renamed,
                                 changed=frozenset({"summary"}))  # fmt: skip
    assert html in re.sub(r"\r?\n[ \t]", "", await caldav.read_raw(event_id))
    for changed in (frozenset({"description"}), None):  # a patch, then a whole rewrite
        await caldav.put_raw(as_outlook_wrote_it, name="outlook-html.ics")
        fetched = await fetch_one(caldav, event_id)
        assert fetched.event is not None
        edited = dataclasses.replace(fetched.event, description="New agenda")
        await caldav.provider.update(caldav.calendar_id, event_id, fetched.etag, edited,
                                     changed=changed)  # fmt: skip
        raw = await caldav.read_raw(event_id)
        assert "X-ALT-DESC" not in raw
        again = (await fetch_one(caldav, event_id)).event
        assert again is not None
        assert again.description == "New agenda"


async def test_created_resources_have_deterministic_names(caldav: CalDAVHarness) -> None:
    the_key = key()
    ref = await caldav.provider.create(caldav.calendar_id, the_key, meeting())
    assert ref.id.endswith(f"/crmcal-{the_key}.ics")
    raw = await caldav.read_raw(ref.id)
    assert f"UID:crmcal-{the_key}" in raw
    assert "X-CRMCAL-ACTIVITY-ID:activity-1" in raw


async def test_get_by_key_finds_a_moved_resource(caldav: CalDAVHarness) -> None:
    the_key = key()
    ref = await caldav.provider.create(caldav.calendar_id, the_key, meeting())
    raw = await caldav.read_raw(ref.id)
    await caldav.remove(ref.id)
    moved = await caldav.put_raw(raw, name="renamed-by-someone.ics")
    found = await caldav.provider.get_by_key(caldav.calendar_id, the_key)
    assert found is not None
    assert found.id == moved


async def test_a_create_whose_answer_is_lost_is_sent_again_and_makes_one_event(
    caldav: CalDAVHarness,
) -> None:
    """The server stores the PUT, then the connection drops before its answer: the PUT
    goes once more (``If-None-Match: *`` makes a second event impossible), its 412 says
    the resource is there, and what is there is what was sent: the create is done."""
    parts = urlsplit(caldav.calendar_id)
    with fault_proxy(f"{parts.scheme}://{parts.netloc}") as (proxy, url):
        provider = caldav.provider_for(url + "/")
        lost = proxy.add("lose", method="PUT", times=1)
        ref = await provider.create(url + parts.path, key(), meeting())
    assert lost.hits == 1
    assert [method for method, _ in proxy.requests].count("PUT") == 2
    assert ref.event is not None
    assert ref.event.summary == "Demo with ACME"
    listing = await caldav.provider.list_changes(caldav.calendar_id, None)
    assert [r.id for r in listing.changed] == [ref.id]
    assert (await fetch_one(caldav, ref.id)).etag == ref.etag


async def test_a_create_sent_again_onto_another_version_overwrites_nothing(
    caldav: CalDAVHarness,
) -> None:
    """The PUT is dropped unanswered and sent again; its 412 finds the resource holding
    something else (an earlier run made it, someone edited it since): not taken as this
    create's, and not overwritten: ``PreconditionFailed``, for the caller to pair and
    reconcile."""
    the_key = key()
    made = await caldav.provider.create(caldav.calendar_id, the_key, meeting(summary="Edited"))
    parts = urlsplit(caldav.calendar_id)
    with fault_proxy(f"{parts.scheme}://{parts.netloc}") as (proxy, url):
        provider = caldav.provider_for(url + "/")
        dropped = proxy.add("refuse", method="PUT", times=1)
        with pytest.raises(PreconditionFailed):
            await provider.create(url + parts.path, the_key, meeting())
    assert dropped.hits == 1
    assert [method for method, _ in proxy.requests].count("PUT") == 2
    assert "SUMMARY:Edited" in await caldav.read_raw(made.id)


async def test_reads_and_a_deletion_the_connection_drops_are_sent_again(
    caldav: CalDAVHarness,
) -> None:
    """A listing, a read and a deletion whose answers are lost go once more: a read
    does nothing, and a deletion done the first time is answered 404 the second,
    which is what was wanted."""
    made = await caldav.provider.create(caldav.calendar_id, key(), meeting())
    parts = urlsplit(caldav.calendar_id)
    with fault_proxy(f"{parts.scheme}://{parts.netloc}") as (proxy, url):
        provider = caldav.provider_for(url + "/")
        calendar = url + parts.path
        for method in ("REPORT", "DELETE"):
            proxy.add("lose", method=method, times=1)
        listing = await provider.list_changes(calendar, None)
        assert [ref.id for ref in listing.changed] == [made.id]
        await provider.delete(calendar, made.id, made.etag)
    methods = [method for method, _ in proxy.requests]
    assert (methods.count("DELETE"), methods.count("REPORT")) == (2, 2)
    assert (await caldav.provider.list_changes(caldav.calendar_id, None)).changed == []


async def test_an_update_the_connection_drops_is_not_sent_again(caldav: CalDAVHarness) -> None:
    """Only a create is repeatable: an update's second sending would be refused (412)
    over the version its first wrote, and read as someone else's edit."""
    made = await caldav.provider.create(caldav.calendar_id, key(), meeting())
    parts = urlsplit(caldav.calendar_id)
    with fault_proxy(f"{parts.scheme}://{parts.netloc}") as (proxy, url):
        provider = caldav.provider_for(url + "/")
        proxy.add("lose", method="PUT", times=1)
        with pytest.raises(Unreachable):
            await provider.update(url + parts.path, made.id, made.etag, meeting(summary="New"))
    assert [method for method, _ in proxy.requests].count("PUT") == 1


# --- servers that misbehave ---------------------------------------------------------


async def test_without_etags_in_listings_no_write_goes_over_an_edit_elsewhere(
    caldav: CalDAVHarness,
) -> None:
    """A server whose multistatus answers name no ETag (its GETs do): crmcal's version of
    an event is then a digest of its contents, which no server matches in If-Match. An
    update or deletion over that version reads the event first (an edit since it was
    read is ``PreconditionFailed``, never overwritten), and is sent under the ETag that
    read gave, so an edit between that read and the write is refused too."""
    event_id = await caldav.put_raw(
        raw_event("no-etag@example.test", "SUMMARY:Review", "DTSTART:20261203T140000Z",
                  "DTEND:20261203T150000Z"),
        name="no-etag.ics",
    )  # fmt: skip
    parts = urlsplit(caldav.calendar_id)
    behaviour = Behaviour(listing_etags="missing")
    with caldav_proxy(f"{parts.scheme}://{parts.netloc}", behaviour) as proxy:
        provider = caldav.provider_for(proxy + "/")
        calendar = proxy + parts.path
        (read,) = await provider.fetch(calendar, [event_id])
        assert read.etag.startswith(caldav_provider.CONTENT_VERSION)
        # Edited elsewhere after crmcal read it.
        await caldav.retitle(event_id, "Edited elsewhere")
        with pytest.raises(PreconditionFailed):
            await provider.update(calendar, event_id, read.etag, meeting(summary="Mine"))
        with pytest.raises(PreconditionFailed):
            await provider.delete(calendar, event_id, read.etag)
        assert "SUMMARY:Edited elsewhere" in await caldav.read_raw(event_id)
        # Edited elsewhere between crmcal's read before the write and the write.
        (read,) = await provider.fetch(calendar, [event_id])

        def edit_elsewhere(path: str) -> None:
            text = caldav.request("GET", caldav._url(event_id)).raw
            caldav.request("PUT", caldav._url(event_id), text.replace("SUMMARY:", "SUMMARY:Again "))

        behaviour.before["PUT"] = edit_elsewhere
        with pytest.raises(PreconditionFailed):
            await provider.update(calendar, event_id, read.etag, meeting(summary="Mine"))
        assert "SUMMARY:Again Edited elsewhere" in await caldav.read_raw(event_id)
        (read,) = await provider.fetch(calendar, [event_id])
        behaviour.before["DELETE"] = edit_elsewhere
        with pytest.raises(PreconditionFailed):
            await provider.delete(calendar, event_id, read.etag)
        assert "SUMMARY:Again Again Edited elsewhere" in await caldav.read_raw(event_id)
        (read,) = await provider.fetch(calendar, [event_id])
        # Read again, nobody editing: the update and the deletion go through.
        behaviour.if_matches.clear()
        updated = await provider.update(calendar, event_id, read.etag, meeting(summary="Mine"))
        assert "SUMMARY:Mine" in await caldav.read_raw(event_id)
        (read,) = await provider.fetch(calendar, [event_id])
        assert read.etag.startswith(caldav_provider.CONTENT_VERSION)
        await provider.delete(calendar, event_id, read.etag)
        assert len(behaviour.if_matches) == 2  # the GETs' ETags
        assert await provider.fetch(calendar, [event_id]) == []
    assert updated.id == event_id


async def test_a_412_means_the_same_to_an_update_and_a_deletion(caldav: CalDAVHarness) -> None:
    """A write over an ETag answered 412 is read again to say why, the same way for
    an update and a deletion: the server refusing its own weak tag (unchanged since)
    is ``WritesRefused``, someone's edit is ``PreconditionFailed``, and a resource gone
    is ``EventNotFound`` to an update and done to a deletion."""
    parts = urlsplit(caldav.calendar_id)
    behaviour = Behaviour(all_weak=True)
    with caldav_proxy(f"{parts.scheme}://{parts.netloc}", behaviour) as proxy:
        provider = caldav.provider_for(proxy + "/")
        calendar = proxy + parts.path
        unchanged, edited, gone = [await provider.create(calendar, key(), meeting())
                                   for _ in range(3)]  # fmt: skip
        assert unchanged.etag.startswith('W/"')
        behaviour.weak_if_match_refused = True
        with pytest.raises(WritesRefused, match="weak ETag"):
            await provider.update(calendar, unchanged.id, unchanged.etag, meeting(summary="x"))
        with pytest.raises(WritesRefused, match="weak ETag"):
            await provider.delete(calendar, unchanged.id, unchanged.etag)
        behaviour.weak_if_match_refused = False
        await caldav.retitle(edited.id, "Edited elsewhere")
        with pytest.raises(PreconditionFailed):
            await provider.update(calendar, edited.id, edited.etag, meeting(summary="x"))
        with pytest.raises(PreconditionFailed):
            await provider.delete(calendar, edited.id, edited.etag)
        await caldav.remove(gone.id)
        with pytest.raises(EventNotFound):
            await provider.update(calendar, gone.id, gone.etag, meeting(summary="x"))
        await provider.delete(calendar, gone.id, gone.etag)
    assert "SUMMARY:Demo with ACME" in await caldav.read_raw(unchanged.id)
    assert "SUMMARY:Edited elsewhere" in await caldav.read_raw(edited.id)


class _Fixed(http.server.BaseHTTPRequestHandler):
    status = 500

    def _answer(self) -> None:
        self.send_response(self.status)
        if self.status == 401:
            self.send_header("WWW-Authenticate", 'Basic realm="x"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_PUT = do_DELETE = do_OPTIONS = _answer
    do_PROPFIND = do_REPORT = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet


@contextlib.contextmanager
def answering(status: int) -> Iterator[str]:
    handler = type("Handler", (_Fixed,), {"status": status})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("status", "error"),
    [(500, Unreachable), (502, Unreachable), (503, Unreachable), (401, AuthenticationFailed),
     (405, NotACalendarServer), (404, NotACalendarServer)],
)  # fmt: skip
async def test_error_statuses(status: int, error: type[Exception]) -> None:
    with answering(status) as url:
        provider = CalDAVProvider(url, "u", "p", timeout=30, allow_private=True)
        try:
            with pytest.raises(error):
                await provider.discover()
            if error is not NotACalendarServer:
                with pytest.raises(error):
                    await provider.list_changes(url + "cal/", None)
                with pytest.raises(error):
                    await provider.fetch(url + "cal/", ["/cal/x.ics"])
                with pytest.raises(error):
                    await provider.create(url + "cal/", key(), meeting())
                with pytest.raises(error):
                    await provider.delete(url + "cal/", "/cal/x.ics", '"1"')
        finally:
            await provider.close()


# --- TEXT values (RFC 5545 3.3.11) -------------------------------------------------------


def _backslash_n(caldav: CalDAVHarness) -> str:
    """A backslash followed by "N" or "n", which is text, not a line break; Xandikos
    stores what it is given as icalendar writes it again, which makes a line break of
    that (crmcal writes it right, and nothing it does can keep it there)."""
    return "/N" if caldav.kind == "xandikos" else "\\N"


async def test_text_values_survive_the_server_unchanged(caldav: CalDAVHarness) -> None:
    slash = _backslash_n(caldav)
    text = f"a, b; c\\d — C:{slash}ew folder{slash}otes\n\n  second line 😀, ünïcödé; 中文\\"
    long_text = "  " + f"é😀, x; {slash}\n" * 250  # 2,252 characters, folded many times
    event = meeting(summary=text, location=text, description=long_text)
    ref = await caldav.provider.create(caldav.calendar_id, key(), event)
    fetched = await fetch_one(caldav, ref.id)
    assert fetched.event is not None
    got = fetched.event
    assert (got.summary, got.location, got.description) == (text, text, long_text)
    # Written again over the server's own spelling of it (only the times change).
    later = dataclasses.replace(event, end=event.start + dt.timedelta(hours=2))
    await caldav.provider.update(caldav.calendar_id, ref.id, fetched.etag, later)
    again = (await fetch_one(caldav, ref.id)).event
    assert again is not None
    assert (again.summary, again.location, again.description) == (text, text, long_text)


async def test_an_update_keeps_what_foreign_text_values_say(caldav: CalDAVHarness) -> None:
    slash = _backslash_n(caldav)
    escaped = slash.replace("\\", "\\\\")
    event_id = await caldav.put_raw(
        raw_event(
            "foreign-text@example.test",
            f"SUMMARY:C:{escaped}ew\\, again",
            "DTSTART:20261203T140000Z",
            "DTEND:20261203T150000Z",
            f"COMMENT:C:{escaped}et\\, kept\\; as is",
            f"CATEGORIES:C:{escaped}ice,b\\,c",
            "RESOURCES:EASEL,PROJECTOR\\,BIG",
        )
    )
    held = _resources(await caldav.read_raw(event_id))
    assert held
    fetched = await fetch_one(caldav, event_id)
    assert fetched.event is not None
    assert fetched.event.summary == f"C:{slash}ew, again"
    later = dataclasses.replace(fetched.event, end=fetched.event.start + dt.timedelta(hours=2))
    await caldav.provider.update(caldav.calendar_id, event_id, fetched.etag, later)
    raw = await caldav.read_raw(event_id)
    vevent = next(c for c in icalendar.Calendar.from_ical(raw).walk("VEVENT"))
    assert str(vevent["COMMENT"]) == f"C:{slash}et, kept; as is"
    assert vevent.decoded("CATEGORIES") == [f"C:{slash}ice", "b,c"]
    # As the server had it (Xandikos stores it as icalendar writes it: one resource).
    assert _resources(raw) == held
    again = (await fetch_one(caldav, event_id)).event
    assert again is not None
    assert again.summary == f"C:{slash}ew, again"


def _resources(raw: str) -> list[str]:
    return [line for line in raw.replace("\r\n ", "").splitlines() if line.startswith("RESOURCES")]


async def test_calendar_data_folded_inside_a_character_is_read(caldav: CalDAVHarness) -> None:
    """A server that folds lines at 75 octets wherever that falls splits UTF-8
    sequences (RFC 5545 3.1 asks it not to): as bytes, its answers are no UTF-8 until
    unfolded. Every event is read whole, and one such event costs no other its read."""
    texts = {
        "accents": "é" * 100,  # two octets each: folds fall inside one after another
        "emoji": "x" + "😀" * 40,  # four octets each
        "cjk": "会议" * 40,
    }
    ids = {}
    for name, summary in texts.items():
        text = raw_event(f"octets-{name}", f"SUMMARY:{summary}", "DTSTART:20261201T100000Z",
                         f"DESCRIPTION:{summary}", "DTEND:20261201T110000Z")  # fmt: skip
        # Named as crmcal names what it makes, so that one is also read by a GET.
        ids[name] = await caldav.put_raw(text, name=f"crmcal-octets-{name}.ics")
    parts = urlsplit(caldav.calendar_id)
    with caldav_proxy(f"{parts.scheme}://{parts.netloc}", Behaviour(octet_folds=True)) as proxy:
        provider = caldav.provider_for(proxy + "/")
        calendar = proxy + parts.path
        fetched = await provider.fetch(calendar, list(ids.values()))
        got = await provider.get_by_key(calendar, "octets-emoji")
    assert got is not None
    assert got.event is not None
    assert got.event.summary == texts["emoji"]
    read = {ref.id: ref.event for ref in fetched}
    for name, summary in texts.items():
        event = read[ids[name]]
        assert event is not None
        assert (event.summary, event.description) == (summary, summary)


class _Untouchable:
    """A stand-in for a pattern that must not run."""

    def search(self, *_: Any) -> None:
        raise AssertionError("the unfolding pattern ran over an answer that needs none")

    sub = search


@pytest.mark.parametrize("line_end", [b"\r\n", b"&#13;\n", b"&#x0D;\n", b"\n"])
def test_only_an_answer_with_a_fold_inside_a_character_is_unfolded(
    line_end: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first import's answer is megabytes of text, most of it not ASCII when names
    have accents: it is searched for a fold inside a character at the speed of a byte
    search, and only one that holds such a fold goes through the pattern that removes
    it (which, tried at every byte, cost more than parsing the XML)."""
    folded_between = b"SUMMARY:Gr\xc3\xbc\xc3\x9fe" + line_end + b" M\xc3\xbcller"
    folded_inside = b"SUMMARY:Gr\xc3" + line_end + b" \xbc\xc3\x9fe M\xc3\xbcller"
    whole = b"<x>" + folded_between * 20_000 + b"</x>"
    monkeypatch.setattr(caldav_provider, "_FOLD_IN_A_CHARACTER", _Untouchable())
    assert caldav_provider._joined_characters(whole) is whole
    monkeypatch.undo()
    joined = caldav_provider._joined_characters(b"<x>" + folded_inside + b"</x>")
    assert joined == b"<x>SUMMARY:Gr\xc3\xbc\xc3\x9fe M\xc3\xbcller</x>"


async def test_a_summary_with_unescaped_commas_is_read_as_written(caldav: CalDAVHarness) -> None:
    """Another client that leaves commas and semicolons in a SUMMARY unescaped (RFC
    5545 wants them escaped) is read as the server keeps it, and stays so after crmcal
    writes another field of the event. Radicale keeps such a value only up to its first
    comma (its parser takes the comma for a list separator): the summaries "dropped"
    there came so from other clients; crmcal's own are escaped and kept whole
    (``test_text_values_survive_the_server_unchanged``)."""
    written = "Call Ann, Bob; re: pricing, Q3"
    kept = "Call Ann" if caldav.kind == "radicale" else written
    event_id = await caldav.put_raw(
        raw_event(
            "unescaped@example.test",
            f"SUMMARY:{written}",
            "DTSTART:20261203T140000Z",
            "DTEND:20261203T150000Z",
        )
    )
    fetched = await fetch_one(caldav, event_id)
    assert fetched.event is not None
    assert fetched.event.summary == kept
    later = dataclasses.replace(fetched.event, end=fetched.event.start + dt.timedelta(hours=2))
    await caldav.provider.update(caldav.calendar_id, event_id, fetched.etag, later)
    again = (await fetch_one(caldav, event_id)).event
    assert again is not None
    assert again.summary == kept
    assert again.end == later.end
