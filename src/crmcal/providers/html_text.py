"""HTML event descriptions -> the plain text a CRM note holds, the same way each time.

Calendars store descriptions as HTML when their own editors write them (Outlook
bodies, Google Calendar's web page: ``<b>``, ``<br>``, ``<a href>``, lists,
``&nbsp;``, ``<html-blob>`` wrappers) and as plain text when an API client does.
A note in the CRM is plain text, so whatever reads a description turns markup
into text here. The conversion depends on the markup only: a description that did
not change converts to the same text, so its digest stays put and a sync never
rewrites an event that nobody edited. A link keeps its target visible
("text (url)", or the url alone where the text is the url), so nothing is lost.

Descriptions come from anyone who can invite the user, of any length: the
conversion takes time in proportion to the markup's length, whatever it holds.
Each pattern is applied where it can match at all (a tag needs a ``>`` after it, a
link its closing tag) and its failed attempts are skipped past, not retried at
every character of an unclosed tag (``<a href=x`` repeated, ``<br`` without ``>``),
which would take hours on a mebibyte; what it finds is what the patterns alone find.

Still, a mebibyte of markup takes a tenth of a second or more: too long for the event
loop a sync runs on. Whoever receives a long description reads it ahead in a thread
(a ``ReadAhead``, for the providers' answers longer than ``OFF_LOOP_ABOVE``), and the
conversion on the loop finds the text that was made there, the same text it would
make itself. The texts are held for the sync that read them and let go when it ends
(its provider closes), so a worker that runs for months holds none between syncs.
"""

from __future__ import annotations

import html
import re
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterable

# Markup longer than this is converted ahead, off the event loop (``read_ahead``).
OFF_LOOP_ABOVE = 64 * 1024
# What one reader's texts read ahead may hold of markup at most, the oldest let go
# first: more than the largest answer a provider takes (a miss is converted where it is
# asked for).
READ_AHEAD_MAX = 32 * 1024 * 1024

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


_DROPPED_START = re.compile(r"<(head|style|script)\b", re.IGNORECASE)
_DROPPED_END = {name: re.compile(rf"</{name}\s*>", re.IGNORECASE)
                for name in ("head", "style", "script")}  # fmt: skip
_LINK_START = re.compile(r"<\s*a\b", re.IGNORECASE)
_LINK_END = re.compile(r"<\s*/\s*a\s*>", re.IGNORECASE)
_BLOCK_START = re.compile(r"\s*" + _BLOCKS, re.IGNORECASE)


def _drop_blocks(text: str) -> str:
    """``_DROPPED.sub("", text)``: each element's closing tag looked for once, and a
    name none closes after some point never looked for again."""
    kept: list[str] = []
    done = 0
    unclosed: set[str] = set()
    opening = _DROPPED_START.search(text)
    while opening is not None:
        name = opening.group(1).lower()
        closing = None if name in unclosed else _DROPPED_END[name].search(text, opening.end())
        if closing is None:
            unclosed.add(name)  # nor will any later one of this name be closed
            opening = _DROPPED_START.search(text, opening.start() + 1)
            continue
        kept.append(text[done : opening.start()])
        done = closing.end()
        opening = _DROPPED_START.search(text, done)
    return "".join(kept) + text[done:]


def _links(text: str) -> str:
    """``_LINK.sub(_link, text)``, trying the pattern only where a link opens before a
    closing tag, and past the end of the tag where an attempt failed: a later start
    inside that tag sees less of it, and fails as well."""
    # A link ends with a closing tag: none starts after the last one.
    end = max((closing.end() for closing in _LINK_END.finditer(text)), default=0)
    if not end:
        return text
    kept: list[str] = []
    done = 0
    opening = _LINK_START.search(text, 0, end)
    while opening is not None:
        found = _LINK.match(text, opening.start(), end)
        if found is None:
            tag_end = text.find(">", opening.start())
            opening = _LINK_START.search(text, tag_end + 1, end) if tag_end != -1 else None
            continue
        kept += [text[done : found.start()], _link(found)]
        done = found.end()
        opening = _LINK_START.search(text, done, end)
    return "".join(kept) + text[done:]


def _before_last_tag_end(pattern: re.Pattern[str], replacement: str, text: str) -> str:
    """``pattern.sub(replacement, text)`` for a tag pattern (``<`` … ``[^>]*>``): none
    matches after the last ``>``, where every attempt would run to the text's end."""
    end = text.rfind(">") + 1
    return pattern.sub(replacement, text[:end]) + text[end:]


def _breaks_at_edges(text: str) -> str:
    """``_BREAK_AT_EDGE.sub("", text)``: each break tag read once, then whether a
    block's edge follows it (a start inside a break tag ends where it ends)."""
    end = text.rfind(">") + 1
    kept: list[str] = []
    done = 0
    for found in _BREAK.finditer(text, 0, end):
        if _BLOCK_START.match(text, found.end()):
            kept.append(text[done : found.start()])
            done = found.end()
    return "".join(kept) + text[done:]


def _strip_tags(text: str) -> str:
    """``_TAGS.sub("", text)``: a tag runs from ``<`` to the next ``>``, and where no
    ``>`` follows a ``<``, none follows any later one either."""
    kept: list[str] = []
    done = 0
    start = text.find("<")
    while start != -1:
        close = text.find(">", start + 1)
        if close == -1:
            break
        if close == start + 1:  # "<>" is no tag
            start = text.find("<", start + 1)
            continue
        kept.append(text[done:start])
        done = close + 1
        start = text.find("<", done)
    return "".join(kept) + text[done:]


# The texts read ahead, by their markup: each with how many readers (``ReadAhead``)
# hold it. A text goes when the last of them lets it go, so none outlives the syncs
# that read it.
_read: dict[str, tuple[str, int]] = {}
_read_lock = threading.Lock()


def _hold(markup: str, text: str) -> None:
    """One more reader holds ``markup``'s ``text`` (under ``_read_lock``)."""
    found = _read.get(markup)
    _read[markup] = (text, 1) if found is None else (found[0], found[1] + 1)


def _let_go(markups: Iterable[str]) -> None:
    """A reader no longer holds ``markups`` (under ``_read_lock``)."""
    for markup in markups:
        text, readers = _read[markup]
        if readers == 1:
            del _read[markup]
        else:
            _read[markup] = (text, readers - 1)


def _release(held: OrderedDict[str, None]) -> None:
    with _read_lock:
        _let_go(held)
        held.clear()


class ReadAhead:
    """The long markups one reader converted ahead (a provider's API client, for one
    sync): ``html_to_text`` finds their text while the reader holds it, until ``close``
    (or until the reader is dropped unclosed). A description repeated in the reader's
    answers (each instance of a series carries its master's) is converted once."""

    def __init__(self) -> None:
        # The markups held, the one used last at the end; their length in ``_size``.
        self._held: OrderedDict[str, None] = OrderedDict()
        self._size = 0
        # A reader dropped unclosed lets go too. Not a method of ``self``: the
        # finalizer must not keep the reader alive.
        weakref.finalize(self, _release, self._held)

    def read(self, markups: Iterable[str]) -> None:
        """Convert the long ones among ``markups`` now (called in a thread), for
        ``html_to_text`` to find their text when it is asked for on the event loop."""
        for markup in markups:
            if len(markup) <= OFF_LOOP_ABOVE or "<" not in markup:
                continue  # short, or no markup at all: quick wherever it is converted
            with _read_lock:
                if markup in self._held:
                    self._held.move_to_end(markup)
                    continue
                found = _read.get(markup)
                if found is not None:  # another reader's, held for this one as well
                    self._take(markup, found[0])
                    continue
            text = _convert(markup)
            with _read_lock:
                if markup not in self._held:
                    self._take(markup, text)

    def _take(self, markup: str, text: str) -> None:
        """Hold ``markup``'s text (under ``_read_lock``), within ``READ_AHEAD_MAX``."""
        _hold(markup, text)
        self._held[markup] = None
        self._size += len(markup)
        while self._size > READ_AHEAD_MAX and len(self._held) > 1:
            oldest, _ = self._held.popitem(last=False)
            self._size -= len(oldest)
            _let_go([oldest])

    def close(self) -> None:
        """Let go of every text held: the sync that read them is over."""
        _release(self._held)
        self._size = 0


def html_to_text(markup: str) -> str:
    """The text of HTML: a line per break, one per run of block edges (so nested blocks
    make no blank lines), entities decoded, each link followed by its target."""
    if len(markup) > OFF_LOOP_ABOVE:
        with _read_lock:
            found = _read.get(markup)
        if found is not None:
            return found[0]
    return _convert(markup)


def _convert(markup: str) -> str:
    """``html_to_text``, made here."""
    text = _drop_blocks(markup)
    text = _links(text)
    text = _breaks_at_edges(text)
    text = _before_last_tag_end(_BREAK, "\n", text)
    text = _strip_tags(_before_last_tag_end(_BLOCK, "\x00", text))
    text = html.unescape(_EDGES.sub("\n", text))
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    return "\n".join(lines).strip("\n")


def description_text(description: str) -> str:
    """A description as plain text: converted when it is HTML, else as it is."""
    return html_to_text(description) if looks_like_html(description) else description
