"""Time zones as clients in the field spell them, through a whole sync.

Radicale and Xandikos store what "another client" wrote: Outlook's display names
and Windows names with their VTIMEZONE dropped on the way (a gateway, a server
that keeps only what it understands), a vendor-prefixed TZID without one, a zone
only its own VTIMEZONE defines under a name nobody knows, floating times and
all-day days. What must hold: the times read are the times meant (a summer date
in its summer offset), and a CRM edit of another field writes the times back
exactly as they were spelt.
"""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo

from tests.providers.test_field_realistic import BERLIN_VTIMEZONE, calendar_text, timed
from tests.providers.test_options import (  # noqa: F401  # fixtures used by name
    SOON,
    admin,
    client,
    sam,
)
from tests.providers.test_writes import (  # noqa: F401  # fixtures used by name
    OnCalDAV,
    on_caldav,
    unfolded,
)

BERLIN = ZoneInfo("Europe/Berlin")
KATHMANDU_LIKE = """BEGIN:VTIMEZONE
TZID:Customized Time Zone
BEGIN:STANDARD
DTSTART:16010101T000000
TZOFFSETFROM:+0545
TZOFFSETTO:+0545
END:STANDARD
END:VTIMEZONE
"""


def times_of(text: str) -> list[str]:
    """The DTSTART and DTEND lines of a resource's events, as spelt."""
    events = re.findall(r"^BEGIN:VEVENT$.*?^END:VEVENT$", unfolded(text), re.M | re.S)
    return [
        line for event in events for line in re.findall(r"^DT(?:START|END)[;:].*$", event, re.M)
    ]


def zones_of(text: str) -> set[str]:
    """The resource's distinct VTIMEZONE blocks. Radicale (vobject) keeps, for the whole
    server process, the first definition it read of a TZID no zone database knows, and
    adds a copy of it to a resource whose own block it takes for another: what other
    calendars on the same server sent decides that, not what crmcal wrote."""
    return set(re.findall(r"^BEGIN:VTIMEZONE$.*?^END:VTIMEZONE$", unfolded(text), re.M | re.S))


async def test_odd_tzids_read_right_and_stay_as_spelt_through_a_crm_edit(
    on_caldav: OnCalDAV,  # noqa: F811
) -> None:
    harness = on_caldav.harness
    on_caldav.connect()
    # A summer day: a zone read at its winter offset is an hour off.
    day = dt.date(SOON.year + 1, 7, 1)
    at = dt.datetime.combine(day, dt.time(10))
    display = '"(UTC+01:00) Amsterdam, Berlin, Bern, Rome, Stockholm, Vienna"'
    texts = {
        "Display name": calendar_text(timed("zone-display", "Display name", display, at)),
        "Windows name": calendar_text(
            timed("zone-windows", "Windows name", '"W. Europe Standard Time"', at)
        ),
        "Mozilla name": calendar_text(
            timed("zone-mozilla", "Mozilla name", "/mozilla.org/20050126_1/Europe/Berlin", at)
        ),
        "Berlin defined": calendar_text(
            BERLIN_VTIMEZONE.format(tzid="Europe/Berlin"),
            timed("zone-berlin", "Berlin defined", "Europe/Berlin", at),
        ),
        "Customized": calendar_text(
            KATHMANDU_LIKE, timed("zone-custom", "Customized", "Customized Time Zone", at)
        ),
        "Floating": calendar_text(timed("zone-floating", "Floating", None, at)),
        "All day": calendar_text(
            "BEGIN:VEVENT\nUID:zone-all-day\nDTSTAMP:20261101T080000Z\nSUMMARY:All day\n"
            f"DTSTART;VALUE=DATE:{day:%Y%m%d}\nDTEND;VALUE=DATE:{day + dt.timedelta(2):%Y%m%d}\n"
            "END:VEVENT\n"
        ),
    }
    ids = {title: await harness.put_raw(text) for title, text in texts.items()}
    counts = on_caldav.user.post(f"/api/v1/connections/{on_caldav.connection_id}/sync").json()
    assert counts["problems"] == []
    assert counts["created"] == len(texts)
    found = {a["subject"]: a for a in on_caldav.activities()}
    summer = at.replace(tzinfo=BERLIN)
    assert summer.utcoffset() == dt.timedelta(hours=2)
    for title in ("Display name", "Windows name", "Mozilla name", "Berlin defined", "Floating"):
        assert dt.datetime.fromisoformat(found[title]["start"]) == summer, title
    custom = at.replace(tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=45)))
    assert dt.datetime.fromisoformat(found["Customized"]["start"]) == custom
    assert found["All day"]["all_day"] is True
    # Another field changed in the CRM: the times go back exactly as they were spelt.
    before = {title: await harness.read_raw(event_id) for title, event_id in ids.items()}
    for title, activity in found.items():
        on_caldav.edit_activity(activity["id"], location=f"Room {title}")
    on_caldav.sync()
    for title, event_id in ids.items():
        after = await harness.read_raw(event_id)
        assert f"LOCATION:Room {title}" in unfolded(after), title
        assert times_of(after) == times_of(before[title]), title
        assert zones_of(after) == zones_of(before[title]), title
