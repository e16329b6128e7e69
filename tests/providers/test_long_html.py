"""A long HTML description from Google or Graph is read off the event loop.

Anyone who invites the user can send a description of a mebibyte or two, and turning
that much markup into a note's text takes a tenth of a second or more. The answer
that brings it is read in a thread (``api_client.read_ahead``), so the conversion the
codec asks for on the loop finds its text made: no long markup is converted where an
event loop runs, and the note is the same as if it were.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import json
from typing import Any

import httpx
import pytest

from crmcal.providers import api_client, html_text
from crmcal.sync.mapping import NOTE_MAX
from tests.providers.synced import SOON, OnGoogle, OnMicrosoft

PARAGRAPH = '<p>Point <b>one</b> &amp; <a href="https://docs.example/q">the doc</a><br>more</p>\n'


def long_html(size: int) -> str:
    return "<html><body>" + PARAGRAPH * (size // len(PARAGRAPH)) + "</body></html>"


LONG_HTML = long_html(2 * 1024 * 1024)
# What Google takes in one request is under a mebibyte.
GOOGLE_HTML = long_html(900 * 1024)


def on_loop_conversions(monkeypatch: pytest.MonkeyPatch, *, anywhere: bool = False) -> list[int]:
    """The lengths of the markups converted from now on in a thread running an event
    loop (``anywhere``: in any thread)."""
    found: list[int] = []
    convert = html_text._convert

    def recording(markup: str) -> str:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            if anywhere:
                found.append(len(markup))
        else:
            found.append(len(markup))
        return convert(markup)

    monkeypatch.setattr(html_text, "_convert", recording)
    return found


def assert_none_held(markup: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing of ``markup``'s text stays in the process: asked for, it is made again."""
    converted = on_loop_conversions(monkeypatch, anywhere=True)
    html_text.html_to_text(markup)
    assert converted == [len(markup)]


def expected_note(markup: str) -> str:
    return html_text.html_to_text(markup)[:NOTE_MAX]


def _start() -> dt.datetime:
    return (SOON + dt.timedelta(hours=2)).replace(tzinfo=None)


async def test_a_long_google_html_description_is_read_off_the_loop(
    on_google: OnGoogle, monkeypatch: pytest.MonkeyPatch
) -> None:
    harness = on_google.harness
    on_google.connect()
    start = _start()
    made = await harness.api("POST", harness._events(), json={
        "summary": "Agenda", "description": GOOGLE_HTML,
        "start": {"dateTime": start.isoformat() + "Z"},
        "end": {"dateTime": (start + dt.timedelta(hours=1)).isoformat() + "Z"}})  # fmt: skip
    note = expected_note(GOOGLE_HTML)
    converted = on_loop_conversions(monkeypatch)
    (warning,) = on_google.sync_warned()
    assert warning.startswith("note cut to 65536"), warning
    assert on_google.only_activity()["note"] == note
    # Moved in the CRM: the HTML stays as it is, read off the loop again.
    on_google.edit_activity(on_google.only_activity()["id"], location="Room 5")
    on_google.sync_warned()
    stored = json.loads(await harness.read_raw(made["id"]))
    assert (stored["location"], stored["description"]) == ("Room 5", GOOGLE_HTML)
    assert [n for n in converted if n > html_text.OFF_LOOP_ABOVE] == []
    # The sync is over, its provider closed: the worker holds none of its texts.
    assert_none_held(GOOGLE_HTML, monkeypatch)


async def test_a_long_graph_html_body_is_read_off_the_loop(
    on_microsoft: OnMicrosoft, monkeypatch: pytest.MonkeyPatch
) -> None:
    harness = on_microsoft.harness
    on_microsoft.connect()
    start = _start()
    made = await harness.api("POST", harness._events(), json={
        "subject": "Agenda", "body": {"contentType": "html", "content": LONG_HTML},
        "start": {"dateTime": start.isoformat(), "timeZone": "UTC"},
        "end": {"dateTime": (start + dt.timedelta(hours=1)).isoformat(), "timeZone": "UTC"},
    })  # fmt: skip
    converted = on_loop_conversions(monkeypatch)
    (warning,) = on_microsoft.sync_warned()
    assert warning.startswith("note cut to 65536"), warning
    # Graph makes the text of the body when asked for text, as crmcal asks.
    note = on_microsoft.only_activity()["note"]
    assert len(note) == NOTE_MAX
    assert note.startswith("Point one & the doc\nmore\n"), note[:80]
    on_microsoft.edit_activity(on_microsoft.only_activity()["id"], location="Room 5")
    on_microsoft.sync_warned()
    stored = json.loads(await harness.read_raw(made["id"]))
    assert stored["location"]["displayName"] == "Room 5"
    assert stored["body"] == {"contentType": "html", "content": LONG_HTML}
    assert [n for n in converted if n > html_text.OFF_LOOP_ABOVE] == []
    assert_none_held(LONG_HTML, monkeypatch)


async def test_an_answer_read_ahead_is_the_same_json_and_text(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data: dict[str, Any] = {"items": [{"description": LONG_HTML, "summary": "x"}]}
    answer = httpx.Response(200, json=data)
    converted = on_loop_conversions(monkeypatch)
    texts = html_text.ReadAhead()
    await api_client.read_ahead([answer], texts)
    read = answer.extensions[api_client._READ]
    assert read == data
    assert html_text.html_to_text(read["items"][0]["description"]) == html_text._convert(LONG_HTML)
    # The one conversion on the loop is the test's own, for comparison.
    assert converted == [len(LONG_HTML)]
    texts.close()


def _answer(*descriptions: str) -> httpx.Response:
    """An answer listing an event for each of ``descriptions``, as a listing brings them
    (each its own string once decoded)."""
    return httpx.Response(200, json={"items": [{"description": d} for d in descriptions]})


async def test_a_description_repeated_in_a_sync_s_answers_is_converted_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A series' instances each carry the master's description, page after page.
    converted = on_loop_conversions(monkeypatch, anywhere=True)
    texts = html_text.ReadAhead()
    await api_client.read_ahead([_answer(LONG_HTML, LONG_HTML)], texts)
    await api_client.read_ahead([_answer(LONG_HTML)], texts)
    assert converted == [len(LONG_HTML)]
    texts.close()


async def test_the_texts_read_for_a_sync_go_when_its_reader_closes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    converted = on_loop_conversions(monkeypatch, anywhere=True)
    one, other = html_text.ReadAhead(), html_text.ReadAhead()
    await api_client.read_ahead([_answer(LONG_HTML)], one)
    await api_client.read_ahead([_answer(LONG_HTML, GOOGLE_HTML)], other)
    assert sorted(converted) == sorted([len(LONG_HTML), len(GOOGLE_HTML)])
    # A text two syncs read stays while either runs.
    other.close()
    assert_none_held(GOOGLE_HTML, monkeypatch)
    converted = on_loop_conversions(monkeypatch, anywhere=True)
    html_text.html_to_text(LONG_HTML)
    assert converted == []
    one.close()
    assert_none_held(LONG_HTML, monkeypatch)


def test_the_texts_of_a_reader_dropped_unclosed_go_with_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    texts = html_text.ReadAhead()
    # Read here, not in a thread that may hold the reader a moment after it answered.
    texts.read([LONG_HTML])
    converted = on_loop_conversions(monkeypatch, anywhere=True)
    html_text.html_to_text(LONG_HTML)
    assert converted == []
    del texts
    gc.collect()
    assert_none_held(LONG_HTML, monkeypatch)


async def test_a_reader_holds_at_most_its_bound_of_markup(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(html_text, "READ_AHEAD_MAX", len(LONG_HTML) + len(GOOGLE_HTML) // 2)
    texts = html_text.ReadAhead()
    await api_client.read_ahead([_answer(LONG_HTML)], texts)
    await api_client.read_ahead([_answer(GOOGLE_HTML)], texts)
    # The oldest is let go; the last one read stays until the reader closes.
    converted = on_loop_conversions(monkeypatch)
    assert html_text.html_to_text(GOOGLE_HTML)
    assert converted == []
    html_text.html_to_text(LONG_HTML)
    assert converted == [len(LONG_HTML)]
    texts.close()
    assert_none_held(GOOGLE_HTML, monkeypatch)
