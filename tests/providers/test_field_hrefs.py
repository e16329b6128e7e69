"""Hrefs as servers in the field write them, through a whole sync.

Radicale and Xandikos serve the calendar; crmcal reaches them through
``tests.caldav_proxy``, which answers every multistatus with hrefs spelt otherwise:
absolute URLs instead of paths, percent-encoded another way than asked (``@`` as
``%40``, lower-case hex for non-ASCII), the collection itself listed among its
members without its trailing slash, and a member on another host. What must hold:
one event is one event however its href is spelt (never two, never gone), the
collection is no event, and nothing is ever asked of another host.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.caldav_proxy import Behaviour
from tests.providers.harness import raw_event
from tests.providers.synced import SOON, Proxied
from tests.served import served_app

LOCAL = "%Y%m%dT%H%M%S"
NAMES = {"space": "team meeting.ics", "at": "ann@example.com.ics", "umlaut": "Müller-Termin ü.ics"}


@pytest.fixture
def elsewhere() -> Iterator[tuple[str, list[str]]]:
    """Another host (its URL), which records every request it gets."""
    asked: list[str] = []

    async def record(request: Request) -> Response:
        asked.append(f"{request.method} {request.url.path}")
        return Response(b"", 404)

    methods = ["GET", "PUT", "DELETE", "PROPFIND", "REPORT", "OPTIONS"]
    app = Starlette(routes=[Route("/{path:path}", record, methods=methods)])
    with served_app(app) as url:
        yield url, asked


def odd_hrefs(behaviour: Behaviour, other_host: str, calendar_path: str, on: bool) -> None:
    behaviour.absolute_hrefs = behaviour.recode_hrefs = behaviour.collection_member = on
    behaviour.foreign_member = f"{other_host}{calendar_path}stolen.ics" if on else None


def quiet(counts: dict[str, object]) -> bool:
    return (counts["created"], counts["updated"], counts["deleted"], counts["problems"]) == (
        0, 0, 0, []
    )  # fmt: skip


async def test_one_event_is_one_event_however_its_href_is_spelt(
    proxied: Proxied,
    behaviour: Behaviour,
    elsewhere: tuple[str, list[str]],
) -> None:
    harness = proxied.harness
    other_host, asked = elsewhere
    calendar_path = urlsplit(harness.calendar_id).path
    start = SOON.astimezone(dt.UTC) + dt.timedelta(days=1)
    ids = {}
    for n, (key, name) in enumerate(NAMES.items()):
        moment = start + dt.timedelta(hours=2 * n)
        ids[key] = await harness.put_raw(raw_event(
            f"odd-{key}", f"SUMMARY:{key}", f"DTSTART:{moment:{LOCAL}}Z",
            f"DTEND:{moment + dt.timedelta(hours=1):{LOCAL}}Z",
        ), name=name)  # fmt: skip
    odd_hrefs(behaviour, other_host, calendar_path, on=True)
    proxied.connect()
    # The first import: one read of the contents (a query or a multiget), no fallback
    # to a listing for the collection's sake.
    counts = proxied.sync_with_problems()
    assert (counts["problems"], counts["deleted"]) == ([], 0)
    assert sum(behaviour.reports.values()) == 1, behaviour.reports
    assert "sync-collection" not in behaviour.reports
    assert sorted(a["subject"] for a in proxied.activities()) == ["at", "space", "umlaut"]
    made = proxied.add_activity("From the CRM", hours=9)
    assert proxied.sync_with_problems()["created"] == 1
    by_subject = {a["subject"]: a for a in proxied.activities()}
    # Nothing changed, however the hrefs are spelt: nothing is read, written or trashed.
    for on in (True, False, True):
        odd_hrefs(behaviour, other_host, calendar_path, on=on)
        behaviour.requests.clear()
        assert quiet(proxied.sync_with_problems())
        assert behaviour.count("PUT") + behaviour.count("DELETE") == 0
    # Changes on both sides reach the right event, once.
    await harness.retitle(ids["space"], "space (calendar)")
    proxied.edit_activity(by_subject["at"]["id"], location="Room 7")
    proxied.edit_activity(made["id"], location="Room 8")
    await harness.remove(ids["umlaut"])
    behaviour.requests.clear()
    counts = proxied.sync_with_problems()
    assert (counts["problems"], counts["created"], counts["deleted"]) == ([], 0, 1)
    assert behaviour.count("PUT") == 2
    assert sorted(a["subject"] for a in proxied.activities()) == [
        "From the CRM", "at", "space (calendar)"
    ]  # fmt: skip
    assert [a["id"] for a in proxied.activities(deleted=True)] == [by_subject["umlaut"]["id"]]
    events = await proxied.events()
    assert len(events) == 3
    assert events[ids["at"]].location == "Room 7"
    assert quiet(proxied.sync_with_problems())
    # The member on another host was never asked for.
    assert asked == []
