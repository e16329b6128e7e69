"""HTML event descriptions -> the plain text a CRM note holds, the same way each time.

Calendars store descriptions as HTML when their own editors write them (Outlook
bodies, Google Calendar's web page: ``<b>``, ``<br>``, ``<a href>``, lists,
``&nbsp;``, ``<html-blob>`` wrappers) and as plain text when an API client does.
A note in the CRM is plain text, so whatever reads a description turns markup
into text here. The conversion depends on the markup only: a description that did
not change converts to the same text, so its digest stays put and a sync never
rewrites an event that nobody edited. A link keeps its target visible
("text (url)", or the url alone where the text is the url), so nothing is lost.
"""

from __future__ import annotations

import html
import re

_BREAK = re.compile(r"<\s*br\b[^>]*>", re.IGNORECASE)
_BLOCKS = r"<\s*/?\s*(?:p|div|li|tr|h[1-6]|ul|ol|table|blockquote)\b[^>]*>"
_BLOCK = re.compile(_BLOCKS, re.IGNORECASE)
# A break right before a block's edge ends a line the edge ends anyway: no blank line.
_BREAK_AT_EDGE = re.compile(r"<\s*br\b[^>]*>(?=\s*" + _BLOCKS + ")", re.IGNORECASE)
_DROPPED = re.compile(r"<(head|style|script)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_TAGS = re.compile(r"<[^>]+>")
_EDGES = re.compile(r"\x00(\s*\x00)*")
_LINK = re.compile(
    r"""<\s*a\b[^>]*?\bhref\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))[^>]*>(.*?)<\s*/\s*a\s*>""",
    re.IGNORECASE | re.DOTALL,
)

# Tags an editor writes into a description. Text counts as HTML only when one of
# them appears whole, its name right after the bracket as HTML has it ("<b>",
# "</li>", "<a href=...>", "<br/>"): a plain note saying "a < b and c > d" or
# "Ann <ann@acme.test>" holds no such tag and is left as it is.
_KNOWN_TAG = re.compile(
    r"</?(?:a|b|i|u|s|em|strong|span|font|br|hr|p|div|ul|ol|li|h[1-6]|blockquote|pre"
    r"|code|table|tbody|thead|tr|td|th|img|sub|sup|strike|del|ins|small|big|html-blob|html"
    r"|body|head|style|script)(?:\s[^<>]*)?/?\s*>",
    re.IGNORECASE,
)


def looks_like_html(text: str) -> bool:
    """Whether ``text`` holds markup an editor wrote, judged conservatively: only a
    whole known tag counts, never a lone angle bracket or an address in brackets."""
    return "<" in text and _KNOWN_TAG.search(text) is not None


def _link(match: re.Match[str]) -> str:
    target = next((g for g in match.groups()[:3] if g is not None), "")
    inner = match.group(4)
    shown = html.unescape(_TAGS.sub("", inner)).strip()
    url = html.unescape(target).strip()
    if not url or url.lower().startswith("javascript:"):
        return inner
    if not shown:
        return html.escape(url, quote=False)
    if shown in (url, url.removeprefix("mailto:"), url.rstrip("/")):
        return inner
    return f"{inner} ({html.escape(url, quote=False)})"


def html_to_text(markup: str) -> str:
    """The text of HTML: a line per break, one per run of block edges (so nested blocks
    make no blank lines), entities decoded, each link followed by its target."""
    text = _DROPPED.sub("", markup)
    text = _LINK.sub(_link, text)
    text = _BREAK_AT_EDGE.sub("", text)
    text = _BREAK.sub("\n", text)
    text = _TAGS.sub("", _BLOCK.sub("\x00", text))
    text = html.unescape(_EDGES.sub("\n", text))
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    return "\n".join(lines).strip("\n")


def description_text(description: str) -> str:
    """A description as plain text: converted when it is HTML, else as it is."""
    return html_to_text(description) if looks_like_html(description) else description
