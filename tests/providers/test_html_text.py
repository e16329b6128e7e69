"""HTML descriptions turned into note text, and what counts as HTML at all."""

from __future__ import annotations

import dataclasses
import html

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crmcal.providers import google_events, html_text
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


def _by_the_patterns_alone(markup: str) -> str:
    """``html_to_text`` as its patterns alone say: each applied to the whole text."""
    text = html_text._DROPPED.sub("", markup)
    text = html_text._LINK.sub(html_text._link, text)
    text = html_text._BREAK_AT_EDGE.sub("", text)
    text = html_text._BREAK.sub("\n", text)
    text = html_text._TAGS.sub("", html_text._BLOCK.sub("\x00", text))
    text = html.unescape(html_text._EDGES.sub("\n", text))
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    return "\n".join(lines).strip("\n")


# Pieces of markup, whole and broken, that the patterns treat differently.
PIECES = ["<", ">", "<>", "<a ", "<A\thref=", "href=", '"', "'", "x", " ", "\n", "</a>",
          "< / a >", "<br", "<br/>", "<BR >", "<p>", "</div>", "<li", "<script>", "</script>",
          "<style", "</STYLE >", "<head>", "</head>", "&amp;", "&nbsp;", "\x00", "u:v",
          "javascript:", "mailto:x", "<b>", "</b>", "= ", "<a href=u>t</a>"]  # fmt: skip


@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.sampled_from(PIECES), max_size=40).map("".join))
def test_the_conversion_finds_what_its_patterns_find(markup: str) -> None:
    assert html_to_text(markup) == _by_the_patterns_alone(markup)


@pytest.mark.parametrize(
    "markup",
    [
        '<b>x</b><a href="' + "x" * 1_000_000,  # a link's address never closed
        "<b>x</b>" + "<a href=x>" * 100_000,  # links never closed
        "<b>x</b>" + "<a href=x>" * 100_000 + "</a>",
        "<b>x</b>" + "<a " * 300_000 + "></a>",  # one tag, opened again and again
        "<b>x</b>" + "<br" * 300_000,  # tags never ended
        "<b>x</b>" + "<br" * 300_000 + ">",
        "<b>x</b>" + "<" * 1_000_000,
        "<b>x</b>" + "<script>" * 100_000 + "</style>",  # elements never closed
    ],
    ids=["open-address", "open-links", "links-closed-once", "one-long-tag", "open-breaks",
         "one-long-break", "brackets", "open-scripts"],
)  # fmt: skip
def test_a_mebibyte_of_hostile_markup_converts_in_one_pass(markup: str) -> None:
    """Descriptions come from whoever invites the user: unclosed tags, links and
    elements repeated over a mebibyte took the patterns hours (each attempt ran to the
    text's end, at every character); the conversion reads them in one pass."""
    text = html_to_text(markup)
    assert text.startswith("x")
    assert len(text) <= len(markup)
