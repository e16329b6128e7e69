"""HTML descriptions turned into note text, and what counts as HTML at all."""

from __future__ import annotations

import dataclasses

import pytest

from crmcal.providers import google_events
from crmcal.providers.html_text import description_text, html_to_text, looks_like_html

START = {"dateTime": "2026-12-01T10:00:00+01:00", "timeZone": "Europe/Berlin"}
END = {"dateTime": "2026-12-01T11:00:00+01:00", "timeZone": "Europe/Berlin"}


@pytest.mark.parametrize(
    "text",
    [
        "a < b and c > d",
        "Mail Ann <ann@acme.test>",
        "See <https://x.example/a>",
        "if x<y then y>x",
        "<3 this & that",
        "1 <2> 3",
    ],
)
def test_plain_text_with_angle_brackets_is_not_html(text: str) -> None:
    assert not looks_like_html(text)
    assert description_text(text) == text


@pytest.mark.parametrize(
    "markup",
    ["<b>x</b>", "a<br>b", "a<br/>b", "<html-blob>x</html-blob>", '<a href="u">t</a>',
     "<ul><li>x</li></ul>", '<span style="color:red">x</span>', "x</i>"],
)  # fmt: skip
def test_editor_markup_is_html(markup: str) -> None:
    assert looks_like_html(markup)


def test_links_keep_their_target() -> None:
    assert html_to_text('see <a href="https://d.example/x?a=1&amp;b=2">the <b>doc</b></a>') == (
        "see the doc (https://d.example/x?a=1&b=2)"
    )
    assert html_to_text('<a href="https://m.example/a">https://m.example/a</a>') == (
        "https://m.example/a"
    )
    assert html_to_text("<a href='mailto:ann@acme.test'>ann@acme.test</a>") == "ann@acme.test"
    assert html_to_text('<a href="https://e.example/"></a>') == "https://e.example/"


def test_google_ui_markup_reads_as_lines() -> None:
    markup = ("<html-blob><u>Agenda</u>&nbsp;<i>today</i><br><ol><li>one</li><li>two</li></ol>"
              "<span>AT&amp;T</span></html-blob>")  # fmt: skip
    assert html_to_text(markup) == "Agenda\xa0today\none\ntwo\nAT&T"


def test_the_google_codec_reads_html_as_text_and_keeps_it_when_the_text_is_unchanged() -> None:
    item = {"id": "e1", "summary": "S", "start": START, "end": END,
            "description": "<b>Agenda</b><br>pricing &amp; terms"}  # fmt: skip
    event = google_events.parse(item)
    assert event.description == "Agenda\npricing & terms"
    # The note did not change: a full write gives the description back as it was.
    assert google_events.body(event, item)["description"] == item["description"]
    # It changed: it is written as plain text.
    edited = google_events.body(dataclasses.replace(event, description="Agenda\nnew terms"), item)
    assert edited["description"] == "Agenda\nnew terms"
    plain = dict(item, description="a < b, <ann@acme.test>")
    assert google_events.parse(plain).description == "a < b, <ann@acme.test>"
