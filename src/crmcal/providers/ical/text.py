"""TEXT values (RFC 5545 3.3.11) both ways: unescaping what is read, escaping what
is written, correctly for backslashes that icalendar's own ``vText`` misreads."""

from __future__ import annotations

import re

from icalendar.prop import vText

_TEXT_ESCAPE = re.compile(r"\\(.)", re.DOTALL)


def unescape_text(value: str) -> str:
    """A TEXT value as read: ``\\n`` or ``\\N`` a line break, any other escaped character itself."""
    if "\\" not in value:
        return value
    return _TEXT_ESCAPE.sub(lambda m: "\n" if m.group(1) in "nN" else m.group(1), value)


# RFC 5545 3.3.11: the characters a TEXT value escapes, all in one pass.
_TEXT_SPECIAL = re.compile(r"\r\n|[\\;,\n\r]")
_TEXT_ESCAPES = {"\\": "\\\\", ";": "\\;", ",": "\\,", "\n": "\\n", "\r\n": "\\n", "\r": "\\n"}


def escape_text(value: str) -> str:
    return _TEXT_SPECIAL.sub(lambda m: _TEXT_ESCAPES[m.group(0)], value)


class EscapedText(vText):
    """A TEXT value escaped as RFC 5545 says, for every TEXT value crmcal writes or
    keeps: icalendar's own ``vText`` first turns a backslash followed by "N" into a
    line break (so "C:\\New" came back as two lines)."""

    __slots__ = ()

    def to_ical(self) -> bytes:
        return escape_text(self).encode("utf-8")


def escaped_text(value: str | None) -> EscapedText | None:
    return None if value is None else EscapedText(value)
