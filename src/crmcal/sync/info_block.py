"""The deal and contact block in event descriptions (F11): written out, stripped on the way in.

With ``include_deal_and_contact_info`` an event's description is the activity's note
followed by a block between two marker lines::

    Agenda: pricing

    --- crmcal: deal and contacts ---
    Deal: Renewal 2027
    Person: Ann Lee, ann@acme.test, +49 30 1234
    Organization: ACME GmbH
    Activity: https://crm.example/activities/12
    --- end of crmcal block ---

Coming back, the block (and the blank line before it) is cut out, so it never
reaches the note and never grows on a round trip, whatever the calendar user
typed inside it: the CRM owns that text and writes it afresh.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

BEGIN = "--- crmcal: deal and contacts ---"
END = "--- end of crmcal block ---"
# Line breaks and spaces at the markers may change on the way (a provider storing
# CRLF, an editor trimming lines): the markers are matched on lines of their own.
_BEGIN_LINE = re.compile(r"^[ \t]*" + re.escape(BEGIN) + r"[ \t]*\r?$", re.MULTILINE)
_END_LINE = re.compile(r"^[ \t]*" + re.escape(END) + r"[ \t]*(?:\r?\n|\Z)", re.MULTILINE)
_SEPARATOR = re.compile(r"(?:\r?\n){1,2}\Z")


@dataclass(frozen=True)
class LinkedRecords:
    """What an activity links to, as the block shows it."""

    deal: str | None = None
    person: str | None = None
    person_email: str | None = None
    person_phone: str | None = None
    organization: str | None = None


def render(records: LinkedRecords, activity_url: str) -> str:
    lines = [BEGIN]
    if records.deal:
        lines.append(f"Deal: {records.deal}")
    if records.person:
        details = [d for d in (records.person_email, records.person_phone) if d]
        lines.append("Person: " + ", ".join([records.person, *details]))
    if records.organization:
        lines.append(f"Organization: {records.organization}")
    lines.append(f"Activity: {activity_url}")
    lines.append(END)
    return "\n".join(lines)


def with_block(note: str | None, records: LinkedRecords, activity_url: str) -> str:
    block = render(records, activity_url)
    return f"{note}\n\n{block}" if note else block


def without_block(description: str | None) -> str | None:
    """The description as the user wrote it: every crmcal block cut out.

    A block whose end marker was deleted runs to the end of the text.
    """
    if not description or BEGIN not in description:
        return description
    text = description
    while (begin := _BEGIN_LINE.search(text)) is not None:
        end = _END_LINE.search(text, begin.end())
        before = _SEPARATOR.sub("", text[: begin.start()])
        after = text[end.end() :].lstrip("\r\n") if end is not None else ""
        text = f"{before}\n\n{after}" if before and after else before or after
    return text or None
