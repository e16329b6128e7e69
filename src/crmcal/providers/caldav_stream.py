"""A multistatus answer read as it arrives, and handed over in parts while the rest comes.

A CalDAV first import reads every event's contents with one ``calendar-query``
(``caldav``). Read whole, that answer grows with the calendar (about 1.8 KB an event),
nothing of it is parsed before all of it is in, and a calendar past the answer cap
could never be read so. Here it is read as a stream instead:

- ``Responses`` feeds the answer's bytes to lxml's pull parser as they arrive and gives
  each ``DAV:response`` as soon as its end tag is in, then drops it from the tree:
  what it holds is the response being read, never more than ``cap`` bytes of it (an
  answer that grows one response past that is refused, ``TooLarge``). Line folds that
  split a UTF-8 sequence are joined as ``caldav`` joins them in a whole answer, piece
  by piece (``_fold_safe``);
- ``parts_as_they_come`` runs the reading in a thread of an executor and each part's
  parsing in another, and yields the parsed parts in order while the next are read:
  at most ``ahead`` parts wait, read or being parsed, for the caller; when it is slow
  the reading waits for it (and the server's sending, through TCP's window) instead of
  holding the whole answer, no longer than the reader's deadline.

What the reader hands over is its own affair (``caldav`` hands over only resources
whose contents came, in the collection); what the stream did not bring (an answer
refused, cut off, malformed, too slow) is for the caller to read otherwise, knowing
exactly which resources were handed over.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import re
import threading
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from lxml import etree

from crmcal import tasks
from crmcal.providers.caldav_wire import DAV

__all__ = ["Found", "Responses", "TooLarge", "parts_as_they_come"]


@dataclass(frozen=True)
class Found:
    """One resource of the answer: its href as the server wrote it, its ETag and its
    calendar data (both as given)."""

    href: str
    etag: str | None
    text: str


class TooLarge(Exception):
    """One response of the answer is larger than what may be held at once."""


_RESPONSE = f"{DAV}response"
# A line that begins with neither a space nor a tab: no line fold (RFC 5545 3.1) starts
# at its line feed, and none before it reaches past it (see ``_fold_safe``).
_UNFOLDED_LINE = re.compile(rb"\n[^ \t\n]")
# Longer than what may come before a fold's line feed (``&#x0D;``, ``&#13;``, a CR).
_NEAR_THE_END = 32


def _fold_safe(data: bytes) -> int:
    """Where ``data`` may be cut so that no line fold inside a UTF-8 sequence (which
    ``join`` removes: a line feed, a CR or a reference to one before it, then a space
    or tab) straddles the cut. Without a line feed near its end, all of it, or up to a
    CR or ``&`` there (a fold's start before a line feed still to come); else at the
    start of its last line that begins with neither a space nor a tab (no fold reaches
    past that line feed); 0 when it has none."""
    tail = data[-_NEAR_THE_END:]
    if b"\n" not in tail:
        start = max(tail.rfind(b"&"), tail.rfind(b"\r"))
        return len(data) if start < 0 else len(data) - len(tail) + start
    begin = max(0, len(data) - 4096)
    while True:
        last = None
        for last in _UNFOLDED_LINE.finditer(data, begin):  # noqa: B007  # the last one
            pass
        if last is not None:
            return last.start() + 1
        if begin == 0:
            return 0
        begin = 0


class Responses:
    """The ``DAV:response`` elements of a multistatus answer fed piece by piece.

    ``join`` is what the whole answer's bytes go through before parsing (the joining of
    folds inside a character); it is given each piece up to a point no fold straddles,
    the rest held for the next. ``cap``: the most bytes fed since the last response
    ended (one response, or the junk between two) before ``TooLarge``."""

    def __init__(self, join: Callable[[bytes], bytes], cap: int) -> None:
        self._parser = etree.XMLPullParser(
            events=("end",), tag=_RESPONSE,
            resolve_entities=False, no_network=True, huge_tree=False,
        )  # fmt: skip
        self._join = join
        self._cap = cap
        self._held = b""  # what may end in a fold: joined with the next piece
        self._since = 0  # bytes fed since the last response ended
        # Malformed XML met: raised at the next call, once the responses ended before
        # it have been given.
        self._broken: etree.XMLSyntaxError | None = None
        self._closed = False

    def feed(self, piece: bytes) -> list[Any]:
        """The responses whose end is in ``piece`` (or held before it), each an element
        the caller reads at once: it leaves the document at the next feed."""
        if self._broken is not None:
            raise self._broken
        data = self._held + piece
        cut = _fold_safe(data) if len(data) < 2 * 1024 * 1024 else len(data)
        self._held = data[cut:]
        self._since += len(piece)
        if cut:
            self._parse(data[:cut])
        return self._ended()

    def close(self) -> list[Any]:
        """The last responses (none when asked again); raises ``etree.XMLSyntaxError``
        for an answer that is malformed or ended before its document did, once the
        responses ended before that have been given."""
        if self._broken is not None:
            raise self._broken
        if self._closed:
            return []
        self._closed = True
        if self._held:
            self._parse(self._held)
            self._held = b""
        if self._broken is None:
            try:
                self._parser.close()
            except etree.XMLSyntaxError as broken:
                self._broken = broken
        ended = self._ended()
        if self._broken is not None and not ended:
            raise self._broken
        return ended

    def _parse(self, data: bytes) -> None:
        try:
            self._parser.feed(self._join(data))
        except etree.XMLSyntaxError as broken:
            self._broken = broken

    def _ended(self) -> list[Any]:
        ended = [element for _, element in self._parser.read_events()]
        if ended:
            self._since = len(self._held)
            # The responses given before (which the caller has read) leave the document.
            first, parent = ended[0], ended[0].getparent()
            while parent is not None and first.getprevious() is not None:
                del parent[0]
        if self._since > self._cap:
            raise TooLarge(f"one response of the answer is larger than {self._cap:,} bytes")
        return ended


@dataclass
class _Stream:
    """What the reading thread and the caller share."""

    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[tuple[list[str], concurrent.futures.Future[Any]] | None]
    room: threading.Semaphore
    stopped: threading.Event
    parsing: list[concurrent.futures.Future[Any]]


async def parts_as_they_come(
    read: Callable[[Callable[[Sequence[Found]], bool]], None],
    parse: Callable[[Sequence[Found]], list[Any]],
    ahead: int,
    executors: tuple[Executor, Executor],
    until: float,
) -> AsyncGenerator[tuple[list[str], list[Any]], None]:
    """Each part the reader hands over, parsed, with the hrefs it held, in order.

    ``read(hand_over)`` runs in a thread of the first of ``executors`` and calls
    ``hand_over(part)`` for each part as it is read; the part is parsed (``parse``) in
    a thread of the second at once. (Not one executor for both: readers waiting for
    their callers would hold every thread, and the parses their callers wait for
    could never run.) ``hand_over`` waits while ``ahead`` parts are waiting for the
    caller (no later than ``until``, a ``time.monotonic()``); it answers False when
    the reader should stop: the caller has gone, or the wait passed ``until``. The
    reader's own failure is not raised: it ends the parts (its ``read`` logs it); a
    part's parse failing is raised in its turn. When the caller stops early, the
    reading and the parses running are waited for before this ends."""
    loop = asyncio.get_running_loop()
    reader, parser = executors
    stream = _Stream(loop, asyncio.Queue(), threading.Semaphore(max(ahead, 1)),
                     threading.Event(), [])  # fmt: skip

    def hand_over(part: Sequence[Found]) -> bool:
        left = until - time.monotonic()
        if stream.stopped.is_set() or not stream.room.acquire(timeout=max(left, 0)):
            return False
        if stream.stopped.is_set():
            return False
        context = contextvars.copy_context()
        future = parser.submit(context.run, parse, part)
        stream.parsing.append(future)
        hrefs = [found.href for found in part]
        loop.call_soon_threadsafe(stream.queue.put_nowait, (hrefs, future))
        return True

    context = contextvars.copy_context()
    reading = loop.run_in_executor(reader, context.run, read, hand_over)
    # After every part the reader queued: its calls came first.
    reading.add_done_callback(lambda _: stream.queue.put_nowait(None))
    try:
        while (item := await stream.queue.get()) is not None:
            hrefs, future = item
            refs = await asyncio.wrap_future(future)
            stream.room.release()
            yield hrefs, refs
    finally:
        stream.stopped.set()
        stream.room.release()  # a reader waiting for room wakes, and stops
        await tasks.to_completion(_ended(reading, stream.parsing))


async def _ended(
    reading: asyncio.Future[None], parsing: list[concurrent.futures.Future[Any]]
) -> None:
    waited = [reading, *(asyncio.wrap_future(future) for future in parsing)]
    await asyncio.wait(waited)
    for future in waited:
        if not future.cancelled():
            future.exception()  # retrieved: the reader logs its own, a parse's was raised
