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
import uuid
from zoneinfo import ZoneInfo

import icalendar
import pytest

from tests.providers.harness import BERLIN_VTIMEZONE, calendar_text, timed
from tests.providers.synced import SOON, OnCalDAV, unfolded

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
    on_caldav: OnCalDAV,
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


def meant_start(text: str) -> dt.datetime:
    """The moment a resource's (first) DTSTART means, read from the resource alone: a
    TZID no zone database knows by the resource's own VTIMEZONE of that TZID."""
    line = next(line for line in times_of(text) if line.startswith("DTSTART"))
    head, value = line.split(":", 1)
    moment = dt.datetime.strptime(value.rstrip("Z"), "%Y%m%dT%H%M%S")
    if value.endswith("Z"):
        return moment.replace(tzinfo=dt.UTC)
    tzid = head.split("TZID=", 1)[1].strip('"')
    (block,) = (zone for zone in zones_of(text) if f"\nTZID:{tzid}\n" in zone)
    component = icalendar.Timezone.from_ical(block.replace("\n", "\r\n"))
    assert isinstance(component, icalendar.Timezone)
    return moment.replace(tzinfo=component.to_tz(lookup_tzid=False))


@pytest.mark.parametrize("first", ["Berlin-like", "Kathmandu-like"])
async def test_a_tzid_two_resources_define_differently_is_read_in_each_ones_own_zone(
    on_caldav: OnCalDAV,
    first: str,
) -> None:
    """Outlook names every zone it customises "Customized Time Zone": the same TZID
    means another zone in another resource. icalendar keeps the first definition it
    reads of such a TZID for the whole process; each resource's own must be the one
    its times are read and written in, whichever was read first."""
    harness = on_caldav.harness
    on_caldav.connect()
    tzid = f"Customized Time Zone {uuid.uuid4().hex[:8]}"  # first read in this test
    at = dt.datetime.combine(dt.date(SOON.year + 1, 7, 1), dt.time(10))
    texts = {
        "Berlin-like": calendar_text(
            BERLIN_VTIMEZONE.format(tzid=tzid),
            timed(f"berlin-{tzid[-8:]}", "Berlin-like", tzid, at),
        ),
        "Kathmandu-like": calendar_text(
            KATHMANDU_LIKE.replace("Customized Time Zone", tzid),
            timed(f"kathmandu-{tzid[-8:]}", "Kathmandu-like", tzid, at),
        ),
    }
    expected = {
        "Berlin-like": at.replace(tzinfo=BERLIN),
        "Kathmandu-like": at.replace(tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=45))),
    }
    ids: dict[str, str] = {}
    for title in sorted(texts, key=lambda title: title != first):
        ids[title] = await harness.put_raw(texts[title])
        on_caldav.sync()  # the first is read (and its zone cached) before the second
    found = {a["subject"]: a for a in on_caldav.activities()}
    for title, start in expected.items():
        assert dt.datetime.fromisoformat(found[title]["start"]) == start, title
    # Both moved an hour later in the CRM (a Europe/Berlin user): each is written in
    # a zone that means the new time, the Berlin-like one under its own TZID still.
    hour = dt.timedelta(hours=1)
    for title, activity in found.items():
        end = dt.datetime.fromisoformat(activity["end"])
        on_caldav.edit_activity(activity["id"], start=(expected[title] + hour).isoformat(),
                                end=(end + hour).isoformat())  # fmt: skip
    on_caldav.sync()
    for title, event_id in ids.items():
        text = await harness.read_raw(event_id)
        assert meant_start(text) == expected[title] + hour, (title, times_of(text))
    berlin_like = times_of(await harness.read_raw(ids["Berlin-like"]))
    assert berlin_like[0] == f"DTSTART;TZID={tzid}:{at + hour:%Y%m%dT%H%M%S}"
    # Read again, nothing moves back.
    on_caldav.sync()
    for activity in on_caldav.activities():
        title = activity["subject"]
        assert dt.datetime.fromisoformat(activity["start"]) == expected[title] + hour, title


async def test_iana_names_in_any_case_and_display_names_are_read_in_their_zone(
    on_caldav: OnCalDAV,
) -> None:
    """Clients spell IANA names in their own case and write Outlook's display names
    without a VTIMEZONE: each is read in the zone it names (not as floating time in
    the Berlin user's zone), and a CRM edit, of another field or of the times,
    keeps the TZID exactly as spelt."""
    harness = on_caldav.harness
    on_caldav.connect()
    at = dt.datetime.combine(dt.date(SOON.year + 1, 7, 1), dt.time(10))
    zones = {
        "Lower case": ("america/new_york", "America/New_York"),
        "Upper case": ("US/EASTERN", "US/Eastern"),
        "Windows lower case": ("w. europe standard time", "Europe/Berlin"),
        "Brasilia": ('"(UTC-03:00) Brasilia"', "America/Sao_Paulo"),
        "Sri Lanka": ('"(UTC+05:30) Sri Jayawardenepura"', "Asia/Colombo"),
    }
    ids = {
        title: await harness.put_raw(
            calendar_text(timed(f"case-{uuid.uuid4().hex[:8]}", title, tzid, at))
        )
        for title, (tzid, _) in zones.items()
    }
    counts = on_caldav.sync()
    assert counts["created"] == len(zones)
    found = {a["subject"]: a for a in on_caldav.activities()}
    for title, (_, key) in zones.items():
        assert dt.datetime.fromisoformat(found[title]["start"]) == at.replace(tzinfo=ZoneInfo(key))
        assert found[title]["timezone"] == key, title
    spelt = {title: times_of(await harness.read_raw(event_id)) for title, event_id in ids.items()}
    for title, activity in found.items():
        on_caldav.edit_activity(activity["id"], location=f"Room {title}")
    on_caldav.sync()
    for title, event_id in ids.items():
        assert times_of(await harness.read_raw(event_id)) == spelt[title], title
    # Moved an hour later: the same TZID (as the server stored it: Radicale respells
    # an IANA name it knows and adds its VTIMEZONE), an hour later on the wall clock.
    hour = dt.timedelta(hours=1)
    for activity in found.values():
        start = dt.datetime.fromisoformat(activity["start"]) + hour
        end = dt.datetime.fromisoformat(activity["end"]) + hour
        on_caldav.edit_activity(activity["id"], start=start.isoformat(), end=end.isoformat())
    on_caldav.sync()
    later = {"DTSTART": at + hour, "DTEND": at + 2 * hour}
    for title, event_id in ids.items():
        tzid = spelt[title][0].split("TZID=", 1)[1].rsplit(":", 1)[0]
        expected = [f"{name};TZID={tzid}:{moment:%Y%m%dT%H%M%S}" for name, moment in later.items()]
        assert times_of(await harness.read_raw(event_id)) == expected, title
