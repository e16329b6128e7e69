"""The Microsoft provider against the Graph emulator: what is particular to Graph.

The contract suite (``test_contract.py``) runs on the emulator too; these tests
cover the delta window, ``@removed``, throttling and concurrency, ``$batch``,
bodies and replays.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from crmcal.emulators.microsoft import MicrosoftState, create_app
from crmcal.model import RemoteRef
from crmcal.providers import api_client, microsoft
from crmcal.providers.base import PreconditionFailed, Unreachable
from crmcal.providers.html_text import html_to_text
from crmcal.providers.microsoft import MicrosoftProvider
from tests.conftest import recorded_sleeps
from tests.emulators.graph_models import GraphChecked
from tests.providers.harness import meeting

EMULATOR = "http://graph.emulator"


class World:
    """The emulator, one mailbox on it, and a provider for that mailbox."""

    def __init__(self) -> None:
        self.state = MicrosoftState()
        self.problems: list[str] = []
        self.app = GraphChecked(create_app(self.state), self.problems)
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(self.app), base_url=EMULATOR)
        self.email = f"sam-{uuid.uuid4().hex[:6]}@example.test"
        self.token = self.state.create_account(self.email)["access_token"]
        self.provider = self.provider_with()
        self.calendar_id = ""

    def provider_with(self, **kw: Any) -> MicrosoftProvider:
        async def tokens(refresh: bool = False) -> str:
            return self.token

        return MicrosoftProvider(tokens, api_url=EMULATOR, backoff=0.001,
                                 transport=httpx.ASGITransport(self.app), **kw)  # fmt: skip

    async def outlook(self, method: str, path: str, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.token}", "Prefer": 'IdType="ImmutableId"'}
        response = await self.http.request(method, "/v1.0" + path, headers=headers, **kw)
        assert response.status_code < 300, response.text
        return response.json() if response.content else None

    async def admin(self, path: str, body: dict[str, Any]) -> Any:
        response = await self.http.post("/_emulator" + path, json=body)
        assert response.status_code < 300, response.text
        return response.json() if response.content else None

    def requests(self, kind: str) -> int:
        return self.state.requests.get(kind, 0)


@pytest.fixture
async def world() -> AsyncIterator[World]:
    made = World()
    made.calendar_id = (await made.outlook("GET", "/me/calendar"))["id"]
    try:
        yield made
    finally:
        assert not made.problems, made.problems[:5]
        await made.provider.close()
        await made.http.aclose()


def key() -> str:
    return uuid.uuid4().hex


def soon(days: float = 1) -> dt.datetime:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(days=days)).replace(microsecond=0)


def at(moment: dt.datetime) -> dict[str, str]:
    return {"dateTime": moment.astimezone(dt.UTC).replace(tzinfo=None).isoformat(),
            "timeZone": "UTC"}  # fmt: skip


async def test_an_event_that_leaves_the_window_is_not_deleted(world: World) -> None:
    hour = dt.timedelta(hours=1)
    event = await world.outlook("POST", "/me/events", json={
        "subject": "Planning", "start": at(soon()), "end": at(soon() + hour)})  # fmt: skip
    gone = await world.outlook("POST", "/me/events", json={
        "subject": "Cancelled", "start": at(soon(2)), "end": at(soon(2) + hour)})  # fmt: skip
    first = await world.provider.list_changes(world.calendar_id, None)
    assert (first.full, first.complete) == (True, False)  # a window, not the whole calendar
    # Moved seven years ahead: out of every window Graph can answer. Delta says
    # "@removed" for it just as for the deleted one.
    later = soon(7 * 365)
    await world.outlook("PATCH", f"/me/events/{event['id']}", json={
        "start": at(later), "end": at(later + dt.timedelta(hours=1))})  # fmt: skip
    await world.outlook("DELETE", f"/me/events/{gone['id']}")
    changes = await world.provider.list_changes(world.calendar_id, first.cursor)
    # Both listed as removed, neither taken for gone: a read tells them apart (the
    # engine reads those it synced).
    assert sorted(changes.deleted) == sorted([gone["id"], event["id"]])
    assert changes.unconfirmed == {gone["id"], event["id"]}
    assert changes.changed == []
    (fetched,) = await world.provider.fetch(world.calendar_id, [event["id"], gone["id"]])
    assert fetched.event is not None
    assert fetched.event.start == later


async def test_the_window_moves_on_before_it_ends(world: World) -> None:
    made = await world.provider.create(world.calendar_id, key(), meeting(start=soon(), end=None))
    first = await world.provider.list_changes(world.calendar_id, None)
    state = json.loads(first.cursor or "{}")
    start, end = (
        dt.datetime.fromisoformat(state[k].replace("Z", "+00:00")) for k in ("start", "end")
    )
    assert end - start == dt.timedelta(days=microsoft.WINDOW_DAYS - 1)
    assert start < soon(-300)
    assert end > soon(3 * 365)
    # Half a year before the end, the next listing takes a new window: a full one.
    near = {**state, "end": (dt.datetime.now(dt.UTC) + dt.timedelta(days=100)).isoformat()}
    moved = await world.provider.list_changes(world.calendar_id, json.dumps(near))
    assert (moved.full, [r.id for r in moved.changed]) == (True, [made.id])


async def test_at_most_four_requests_at_a_time(world: World) -> None:
    await world.admin("/settings", {"mailbox_concurrency": 4})
    made = await world.provider.create_many(
        world.calendar_id, [(key(), meeting(summary=f"m{n}")) for n in range(3)]
    )
    await world.admin("/faults", {"delay": 0.05, "count": 40})
    ids = [r.id for r in made if isinstance(r, RemoteRef)]
    assert len(ids) == len(made), made
    fetched = await world.provider.fetch(world.calendar_id, ids * 8)
    assert len(fetched) == 3
    assert world.requests("throttled") == 0  # the provider never sends a fifth


async def test_throttling_waits_for_retry_after(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    waits = recorded_sleeps(monkeypatch, api_client)
    await world.admin("/faults", {"status": 429, "count": 2, "retry_after": 1})
    assert await world.provider.list_calendars()
    # Twice Graph's Retry-After, whatever the backoff.
    assert len([w for w in waits if w >= 1]) == 2, waits
    await world.admin("/faults", {"status": 503, "count": 10})
    impatient = world.provider_with(retries=2)
    with pytest.raises(Unreachable, match="busy or failing"):
        await impatient.list_calendars()
    await impatient.close()
    await world.admin("/faults", {"clear": True})


async def test_creates_go_in_batches_of_twenty(world: World) -> None:
    before = (world.requests("batch"), world.requests("events.create"))
    items = [(key(), meeting(summary=f"new {n}")) for n in range(45)]
    results = await world.provider.create_many(world.calendar_id, items)
    assert all(not isinstance(r, Exception) for r in results)
    assert (world.requests("batch") - before[0], world.requests("events.create") - before[1]) == (
        3, 45
    )  # fmt: skip
    listed = await world.provider.list_changes(world.calendar_id, None)
    assert len(listed.changed) == 45
    # Each event carries its CRM id, though delta cannot show it.
    assert {r.event.crm_id for r in listed.changed if r.event} == {"activity-1"}


async def test_a_throttled_part_of_a_batch_is_sent_again(world: World) -> None:
    # Graph runs four parts of a batch at once; two in flight is all this mailbox takes.
    await world.admin("/settings", {"mailbox_concurrency": 2})
    await world.admin("/faults", {"delay": 0.05, "count": 40})  # so the parts overlap
    items = [(key(), meeting(summary=f"new {n}")) for n in range(12)]
    results = await world.provider.create_many(world.calendar_id, items)
    await world.admin("/settings", {"mailbox_concurrency": None})
    assert all(not isinstance(r, Exception) for r in results), results
    assert world.requests("throttled") > 0  # Graph ran parts at once and refused some
    listed = await world.provider.list_changes(world.calendar_id, None)
    assert sorted(r.event.summary or "" for r in listed.changed if r.event) == sorted(
        e.summary or "" for _, e in items
    )  # no copies


async def test_a_replayed_create_answers_the_event_or_refuses(world: World) -> None:
    the_key = key()
    first = await world.provider.create(world.calendar_id, the_key, meeting())
    again = await world.provider.create(world.calendar_id, the_key, meeting())
    assert again.id == first.id  # the same create again: Graph answers what it made
    with pytest.raises(PreconditionFailed):
        await world.provider.create(world.calendar_id, the_key, meeting(summary="other"))
    assert len((await world.provider.list_changes(world.calendar_id, None)).changed) == 1


async def test_html_bodies_read_as_text_and_do_not_grow(world: World) -> None:
    body = {"contentType": "html", "content": "<html><head><style>p{}</style></head><body>"
            "<p>Agenda:</p><ul><li>pricing &amp; terms</li><li>next steps</li></ul>"
            "<div>Bring <b>slides</b><br>and coffee</div></body></html>"}  # fmt: skip
    made = await world.outlook("POST", "/me/events", json={
        "subject": "Review", "body": body, "start": at(soon()),
        "end": at(soon() + dt.timedelta(hours=1))})  # fmt: skip
    (ref,) = await world.provider.fetch(world.calendar_id, [made["id"]])
    assert ref.event is not None
    text = ref.event.description
    assert text == "Agenda:\npricing & terms\nnext steps\nBring slides\nand coffee"
    for _ in range(3):  # written back and read again: the same note
        ref = await world.provider.update(world.calendar_id, ref.id, ref.etag, ref.event)
        (ref,) = await world.provider.fetch(world.calendar_id, [made["id"]])
        assert ref.event is not None
        assert ref.event.description == text


def test_html_to_text_keeps_lines_and_entities() -> None:
    assert html_to_text("a<br/>b<p>c</p>&lt;d&gt;&nbsp;e") == "a\nb\nc\n<d>\xa0e"
    assert html_to_text("<script>x()</script>plain") == "plain"


async def test_times_are_shown_in_the_zone_they_were_written_in(world: World) -> None:
    zone = "W. Europe Standard Time"
    made = await world.outlook("POST", "/me/events", json={
        "subject": "Standup",
        "start": {"dateTime": "2026-12-01T09:30:00", "timeZone": zone},
        "end": {"dateTime": "2026-12-01T09:45:00", "timeZone": zone}})  # fmt: skip
    (ref,) = await world.provider.fetch(world.calendar_id, [made["id"]])
    assert ref.event is not None
    assert ref.event.timezone == "Europe/Berlin"
    assert ref.event.start.isoformat() == "2026-12-01T09:30:00+01:00"
    changed = dataclasses.replace(ref.event, summary="Standup (moved)")
    updated = await world.provider.update(world.calendar_id, ref.id, ref.etag, changed)
    assert updated.event is not None
    assert updated.event.start == ref.event.start
