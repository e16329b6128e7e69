"""What crmcal does not own survives a CRM edit of another field, to the byte.

The user's own event, written by another client into Radicale or Xandikos, with
an HTML body (``X-ALT-DESC``), a long description with escaped characters,
properties crmcal never reads (IANA ones of RFC 7986, X- ones with parameters)
and an alarm of that client's own. A CRM edit of the place writes the place, and
every other line stays as it was spelt.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter

from tests.providers.harness import raw_event
from tests.providers.synced import SOON, OnCalDAV, unfolded

LOCAL = "%Y%m%dT%H%M%S"
# What a write of crmcal's own may change besides the field it writes.
BOOKKEEPING = ("DTSTAMP", "LAST-MODIFIED", "SEQUENCE", "X-CRMCAL-", "PRODID", "LOCATION")


def foreign_lines(text: str) -> Counter[str]:
    """The resource's lines, unfolded, without crmcal's bookkeeping and the place."""
    return Counter(
        line
        for line in unfolded(text).split("\n")
        if line and not line.upper().startswith(BOOKKEEPING)
    )


async def test_html_bodies_long_texts_and_unknown_properties_survive_a_crm_edit(
    on_caldav: OnCalDAV,
) -> None:
    harness = on_caldav.harness
    on_caldav.connect()
    start = SOON.astimezone(dt.UTC) + dt.timedelta(days=1)
    long_text = "Minutes\\, part one\\; see below.\\n" + "Point of order\\, noted. " * 200
    event_id = await harness.put_raw(raw_event(
        "texts-1@elsewhere.example",
        "SUMMARY:Pricing review",
        f"DTSTART:{start:{LOCAL}}Z",
        f"DTEND:{start + dt.timedelta(hours=1):{LOCAL}}Z",
        f"DESCRIPTION:{long_text}",
        "X-ALT-DESC;FMTTYPE=text/html:<html><body><p>Minutes, <b>part one</b></p></body></html>",
        "CONFERENCE;VALUE=URI;FEATURE=VIDEO;LABEL=Join:https://meet.example/abc",
        "COLOR:turquoise",
        "CATEGORIES:Pricing,Review",
        "ATTACH;FMTTYPE=application/pdf:https://files.example/offer.pdf",
        "X-FIELD-UNKNOWN;X-PARAM=\"a;b\":kept\\, as written",
        "BEGIN:VALARM",
        "ACTION:AUDIO",
        "TRIGGER;RELATED=END:PT5M",
        "X-CLIENT-ALARM:own",
        "END:VALARM",
    ))  # fmt: skip
    on_caldav.sync()
    activity = on_caldav.only_activity()
    assert activity["note"].startswith("Minutes, part one; see below.\n")
    before = await harness.read_raw(event_id)
    on_caldav.edit_activity(activity["id"], location="Room 5")
    on_caldav.sync()
    after = await harness.read_raw(event_id)
    assert "LOCATION:Room 5" in unfolded(after)
    assert foreign_lines(after) == foreign_lines(before)
