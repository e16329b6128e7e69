"""Calendar data as servers in the field encode it, through a CRM edit.

Radicale and Xandikos serve the calendar; crmcal reaches them through
``tests.caldav_proxy``. Another client's event holds what crmcal does not own: X-
properties, two alarms, a large inline attachment (``ATTACH;ENCODING=BASE64``),
non-ASCII text, bare LF line ends. Read from a server that answers in UTF-8, or in
Latin-1 declared only by the ``charset`` of its Content-Type (no XML declaration
says so), or in UTF-8 mislabelled Latin-1, the event reads as written, and a CRM
edit of the place writes the place and leaves every other line as it was spelt. So
does a CRM edit of a whole series whose resource holds the master and a changed
occurrence (two VEVENTs of one UID, one with a ``RECURRENCE-ID``), each with
properties and an alarm of its own.
"""

from __future__ import annotations

import base64
import datetime as dt

import pytest

from tests.caldav_proxy import Behaviour
from tests.providers.harness import raw_event
from tests.providers.synced import SOON, V1, Proxied, unfolded
from tests.providers.test_field_texts import LOCAL, foreign_lines


@pytest.mark.parametrize(
    ("charset", "label_only"), [(None, False), ("iso-8859-1", False), ("iso-8859-1", True)]
)
async def test_an_event_with_what_crmcal_does_not_own_survives_a_crm_edit_in_any_charset(
    proxied: Proxied,
    behaviour: Behaviour,
    charset: str | None,
    label_only: bool,
) -> None:
    harness = proxied.harness
    # In Latin-1 as declared, or in UTF-8 labelled Latin-1 (a framework's default).
    behaviour.charset, behaviour.charset_label_only = charset, label_only
    start = SOON.astimezone(dt.UTC) + dt.timedelta(days=1)
    attachment = base64.b64encode(bytes(range(256)) * 600).decode()  # 150 kB, 200 kB as text
    text = raw_event(
        "encodings-1@elsewhere.example",
        "SUMMARY:Réunion à Köln",
        f"DTSTART:{start:{LOCAL}}Z",
        f"DTEND:{start + dt.timedelta(hours=1):{LOCAL}}Z",
        "DESCRIPTION:Tagesordnung: Grüße\\, Maße und Café",
        "X-CLIENT-NOTE;X-LANG=de:Übersicht für später",
        "X-MOZ-GENERATION:3",
        f"ATTACH;FMTTYPE=application/octet-stream;ENCODING=BASE64;VALUE=BINARY:{attachment}",
        "BEGIN:VALARM",
        "ACTION:DISPLAY",
        "DESCRIPTION:Erinnerung",
        "TRIGGER:-PT15M",
        "END:VALARM",
        "BEGIN:VALARM",
        "ACTION:AUDIO",
        "TRIGGER;RELATED=END:PT5M",
        "END:VALARM",
    ).replace("\r\n", "\n")  # another client's bare line feeds
    event_id = await harness.put_raw(text, name="encodings-1.ics")
    proxied.connect()
    counts = proxied.sync_with_problems()
    assert (counts["problems"], counts["created"]) == ([], 1)
    activity = proxied.only_activity()
    assert activity["subject"] == "Réunion à Köln"
    assert activity["note"].startswith("Tagesordnung: Grüße, Maße und Café")
    before = await harness.read_raw(event_id)
    assert attachment in unfolded(before)
    proxied.edit_activity(activity["id"], location="Raum 5")
    counts = proxied.sync_with_problems()
    assert (counts["problems"], counts["updated"]) == ([], 1)
    after = await harness.read_raw(event_id)
    assert "LOCATION:Raum 5" in unfolded(after)
    assert foreign_lines(after) == foreign_lines(before)
    # Nothing changed since: nothing is written again.
    behaviour.requests.clear()
    counts = proxied.sync_with_problems()
    assert (counts["problems"], counts["created"], counts["updated"]) == ([], 0, 0)
    assert behaviour.count("PUT") == 0


async def test_a_series_with_a_changed_occurrence_keeps_what_crmcal_does_not_own(
    proxied: Proxied,
    behaviour: Behaviour,
) -> None:
    harness = proxied.harness
    start = (SOON.astimezone(dt.UTC) + dt.timedelta(days=1)).replace(tzinfo=None)
    week = dt.timedelta(days=7)
    uid = "series-encodings@elsewhere.example"
    master = [
        f"UID:{uid}", "DTSTAMP:20261101T080000Z", "SUMMARY:Weekly review",
        f"DTSTART:{start:{LOCAL}}Z", f"DTEND:{start + dt.timedelta(hours=1):{LOCAL}}Z",
        "RRULE:FREQ=WEEKLY;COUNT=4", "X-CLIENT-SERIES;X-P=1:kept",
        "BEGIN:VALARM", "ACTION:DISPLAY", "DESCRIPTION:Soon", "TRIGGER:-PT10M", "END:VALARM",
    ]  # fmt: skip
    moved = start + week + dt.timedelta(hours=2)
    override = [
        f"UID:{uid}", "DTSTAMP:20261101T080000Z", f"RECURRENCE-ID:{start + week:{LOCAL}}Z",
        "SUMMARY:Weekly review (moved)", f"DTSTART:{moved:{LOCAL}}Z",
        f"DTEND:{moved + dt.timedelta(hours=1):{LOCAL}}Z", "X-CLIENT-OCCURRENCE:own words",
        "BEGIN:VALARM", "ACTION:AUDIO", "TRIGGER:-PT5M", "END:VALARM",
    ]  # fmt: skip
    text = "\r\n".join([
        "BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//another client//EN",
        "BEGIN:VEVENT", *master, "END:VEVENT", "BEGIN:VEVENT", *override, "END:VEVENT",
        "END:VCALENDAR", "",
    ])  # fmt: skip
    event_id = await harness.put_raw(text, name="series-encodings.ics")
    proxied.connect()
    counts = proxied.sync_with_problems()
    assert counts["problems"] == []
    occurrences = sorted(proxied.activities(), key=lambda a: a["start"])
    assert len(occurrences) == 4
    assert occurrences[1]["subject"] == "Weekly review (moved)"
    before = await harness.read_raw(event_id)
    # The whole series gets a place in the CRM.
    edited = proxied.user.patch(
        f"{V1}/activities/{occurrences[0]['id']}", json={"location": "Room 8", "scope": "series"}
    )
    assert edited.status_code == 200, edited.text
    counts = proxied.sync_with_problems()
    assert counts["problems"] == []
    after = await harness.read_raw(event_id)
    assert "LOCATION:Room 8" in unfolded(after)
    assert foreign_lines(after) == foreign_lines(before)
