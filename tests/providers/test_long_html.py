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


def on_loop_conversions(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The lengths of the markups converted from now on in a thread running an event
    loop."""
    found: list[int] = []
    convert = html_text._convert

    def recording(markup: str) -> str:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            found.append(len(markup))
        return convert(markup)

    monkeypatch.setattr(html_text, "_convert", recording)
    return found


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


async def test_an_answer_read_ahead_is_the_same_json_and_text(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data: dict[str, Any] = {"items": [{"description": LONG_HTML, "summary": "x"}]}
    answer = httpx.Response(200, json=data)
    converted = on_loop_conversions(monkeypatch)
    await api_client.read_ahead([answer])
    read = answer.extensions[api_client._READ]
    assert read == data
    assert html_text.html_to_text(read["items"][0]["description"]) == html_text._convert(LONG_HTML)
    # The one conversion on the loop is the test's own, for comparison.
    assert converted == [len(LONG_HTML)]
